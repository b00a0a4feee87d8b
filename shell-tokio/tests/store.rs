//! The replicated key-value store over real sockets on 127.0.0.1 (issue 12).
// Real sockets: not under the madsim simulator.
#![cfg(not(madsim))]

mod common;

use cluster_mode::store::{Consistency, StoreError};
use cluster_mode::{CasOutcome, Config};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_member_are_read_back_at_every_consistency() {
    init_tracing();
    let (nodes, _) = start_nodes(3, test_config(), None).await;
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    let f = (p + 1) % 3;
    let g = (p + 2) % 3;
    let store = nodes[f].store();
    let r1 = store
        .put("flags/dark-mode", b"on".to_vec())
        .await
        .expect("put");
    let v = nodes[g]
        .store()
        .get("flags/dark-mode", Consistency::Linearizable)
        .await
        .expect("get")
        .expect("present");
    assert_eq!((v.value.as_slice(), v.revision), (&b"on"[..], r1));
    let lease = nodes[p]
        .store()
        .get("flags/dark-mode", Consistency::Lease)
        .await;
    assert_eq!(lease.expect("lease read").map(|v| v.revision), Some(r1));

    assert_eq!(
        store
            .compare_and_swap("flags/dark-mode", r1 + 100, "off")
            .await,
        Ok(CasOutcome::Mismatch { current: r1 })
    );
    let swapped = store.compare_and_swap("flags/dark-mode", r1, "off").await;
    let Ok(CasOutcome::Swapped(r2)) = swapped else {
        panic!("swap: {swapped:?}")
    };
    assert!(r2 > r1);
    assert_eq!(
        store.delete("flags/dark-mode").await.map(|(_, e)| e),
        Ok(true)
    );
    let all = nodes[g]
        .store()
        .range("flags/", Consistency::Linearizable)
        .await;
    assert_eq!(all, Ok(Vec::new()));
    let too_big = store
        .put("k", vec![0u8; cluster_mode::store::MAX_VALUE_LEN + 1])
        .await;
    assert!(
        matches!(too_big, Err(StoreError::TooLarge { .. })),
        "{too_big:?}"
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

/// Writers on the two followers keep writing while the primary is shut down: every
/// write acknowledged, before or after, is there afterwards, exactly once (a counter
/// incremented by compare-and-swap ends at the number of acknowledged increments).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_or_doubled_when_the_primary_dies() {
    init_tracing();
    let (nodes, _) = start_nodes(3, test_config(), None).await;
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    let writers: Vec<usize> = (0..3).filter(|i| *i != p).collect();
    let stop_at = tokio::time::Instant::now() + Duration::from_millis(1_500);
    let mut tasks = Vec::new();
    for (w, slot) in writers.iter().enumerate() {
        let store = nodes[*slot].store();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut increments = 0u64;
            let mut i = 0u64;
            while tokio::time::Instant::now() < stop_at {
                let key = format!("w{w}/{i:05}");
                if store
                    .put(key.clone(), i.to_be_bytes().to_vec())
                    .await
                    .is_ok()
                {
                    acked.push(key);
                }
                // A counter shared by both writers, moved by compare-and-swap.
                let cur = store
                    .get("counter", Consistency::Linearizable)
                    .await
                    .ok()
                    .flatten();
                let (rev, n) = cur.map_or((0, 0), |v| {
                    (v.revision, u64::from_be_bytes(v.value.try_into().unwrap()))
                });
                if let Ok(CasOutcome::Swapped(_)) = store
                    .compare_and_swap("counter", rev, (n + 1).to_be_bytes().to_vec())
                    .await
                {
                    increments += 1;
                }
                i += 1;
            }
            (acked, increments)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes[p].shutdown().await;
    let mut acked = Vec::new();
    let mut increments = 0;
    for t in tasks {
        let (a, n) = t.await.expect("writer");
        acked.extend(a);
        increments += n;
    }
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());
    let reader = nodes[writers[0]].store();
    let stored = reader
        .range("w", Consistency::Linearizable)
        .await
        .expect("range");
    let keys: std::collections::BTreeSet<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    for k in &acked {
        assert!(keys.contains(k.as_str()), "acknowledged write {k} lost");
    }
    let counter = reader
        .get("counter", Consistency::Linearizable)
        .await
        .expect("get")
        .map_or(0, |v| u64::from_be_bytes(v.value.try_into().unwrap()));
    assert_eq!(counter, increments, "acknowledged increments");
    for n in &nodes {
        n.shutdown().await;
    }
}

/// Concurrent writes of large values make the primary's appends carry several entries
/// at once, well over 64 KiB (up to 256 KiB of store data): every follower still
/// applies them all. With the body limit once at 64 KiB, a follower refused such an
/// append with 413 and, sent the same append again and again, was cut off for good.
/// Whether the appends here do pass 64 KiB depends on how the puts batch: on a starved
/// machine they did not (this test passed with the limit put back at 64 KiB), so the
/// limit itself is pinned in tests/bad_input.rs, where a body of `MAX_FRAME_LEN` bytes
/// must be read, not refused.
///
/// The default timings (`Config::datacenter()`), not the fast test ones: on a starved
/// machine (this debug build at nice 19 beside two CPU-bound workers) the 60-120 ms
/// election timeout saw leaders lose their quorum over and over (term 50 within
/// 30 s). A put that still meets a change of primary answers
/// `MaybeCommitted` or `NoPrimary`, which is correct, and is retried (the same value
/// again changes nothing). A follower cut off for good still fails: it never holds
/// all 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_keep_up_when_appends_carry_over_64_kib() {
    init_tracing();
    let (nodes, _) = start_nodes(3, Config::datacenter(), None).await;
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    let big = cluster_mode::store::MAX_VALUE_LEN;
    let puts: Vec<_> = (0..16u8)
        .map(|i| {
            let store = nodes[p].store();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    match store.put(format!("big/{i:02}"), vec![i; big]).await {
                        Err(
                            StoreError::MaybeCommitted
                            | StoreError::NoPrimary
                            | StoreError::NotCommitted(_)
                            | StoreError::Busy,
                        ) if tokio::time::Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        r => return r,
                    }
                }
            })
        })
        .collect();
    for put in puts {
        put.await.expect("task").expect("put");
    }
    for f in (0..3).filter(|i| *i != p) {
        let store = nodes[f].store();
        let local = Consistency::Local {
            max_lag: Duration::from_secs(1),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let held = store.range("big/", local).await.map(|v| v.len());
            if held == Ok(16) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "member {f} holds {held:?} of the 16 large values after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

/// A store of several MiB (more than one 1 MiB message) reaches a member that joins
/// later: more writes than the log keeps follow, so the newcomer needs the whole
/// store, and it arrives as a snapshot in pieces of `snapshot_chunk_len` bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_receives_a_store_larger_than_one_message_in_pieces() {
    init_tracing();
    let mut cfg = test_config();
    cfg.min_nodes = std::num::NonZeroUsize::new(3).unwrap();
    let ls = listeners(4).await;
    let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let disc = discovery(&addrs);
    let mut ls = ls.into_iter();
    let mut nodes = Vec::new();
    for l in ls.by_ref().take(3) {
        let b = cluster_mode::ClusterBuilder::new(disc.clone())
            .listener(l)
            .config(cfg.clone());
        nodes.push(b.start().await.unwrap());
    }
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    let big = cluster_mode::store::MAX_VALUE_LEN;
    let keys = 80u32; // 1.25 MiB of values: more than one message holds
    for wave in 0..keys / 16 {
        let puts: Vec<_> = (0..16)
            .map(|i| {
                let store = nodes[p].store();
                let k = wave * 16 + i;
                tokio::spawn(
                    async move { store.put(format!("big/{k:03}"), vec![k as u8; big]).await },
                )
            })
            .collect();
        for put in puts {
            put.await.expect("task").expect("put");
        }
    }
    // The log keeps `store_log_entries` (1,024) committed entries and folds the
    // rest into its base once it holds twice that: small writes push the large
    // values out of it.
    let ticks = 2 * cfg.store_log_entries + 100;
    let writers: Vec<_> = (0..64)
        .map(|w| {
            let store = nodes[p].store();
            tokio::spawn(async move {
                for i in (w..ticks).step_by(64) {
                    store
                        .put(format!("tick/{}", i % 8), vec![1])
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("task");
    }
    let newcomer = cluster_mode::ClusterBuilder::new(disc.clone())
        .listener(ls.next().unwrap())
        .config(cfg.clone())
        .start()
        .await
        .unwrap();
    let local = Consistency::Local {
        max_lag: Duration::from_secs(1),
    };
    // One range answer holds at most MAX_RANGE_ANSWER_BYTES: read by tens.
    let held = |store: cluster_mode::Store| async move {
        let mut all = Vec::new();
        for tens in 0..keys.div_ceil(10) {
            all.extend(store.range(format!("big/{tens:02}"), local).await?);
        }
        Ok::<_, StoreError>(all)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let held = held(newcomer.store()).await;
        if let Ok(v) = &held {
            if v.len() == keys as usize {
                assert!(v.iter().all(|(k, v)| {
                    let n: u32 = k["big/".len()..].parse().unwrap();
                    v.value == vec![n as u8; big]
                }));
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the newcomer holds {:?} of {keys} values after 20 s",
            held.map(|v| v.len())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let whole = newcomer.store().range("big/", local).await;
    assert!(
        matches!(
            whole,
            Err(StoreError::TooLarge {
                what: cluster_mode::store::Oversized::Range,
                ..
            })
        ),
        "a range over the answer limit: {:?}",
        whole.map(|v| v.len())
    );
    // It came in pieces (no single message could carry it).
    let text = cluster_mode::prometheus::encode(&newcomer.service()).expect("encoded");
    let pieces: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("cluster_mode_messages_in") && l.contains("kind=\"snapshot_chunk\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(pieces >= 5.0, "{pieces} snapshot pieces received:\n{text}");
    newcomer.shutdown().await;
    for n in &nodes {
        n.shutdown().await;
    }
}
