//! Nodes on real sockets on 127.0.0.1, in one process.
// Real sockets and processes: not under the madsim simulator.
#![cfg(not(madsim))]

mod common;

use cluster_mode::{ClusterBuilder, ClusterEvent, Role};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_three() {
    init_tracing();
    let (nodes, _) = start_nodes(3, test_config(), None).await;
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    assert!(nodes[p].fencing_token().is_some());
    assert_eq!(nodes[p].members().len(), 3);
    assert_eq!(nodes[p].secondaries().len(), 2);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_five() {
    init_tracing();
    let (nodes, _) = start_nodes(5, test_config(), None).await;
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    // All five become members.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while nodes[p].members().len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "members: {:?}",
            nodes[p].members()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_crash_fails_over() {
    init_tracing();
    let (nodes, _) = start_nodes(3, test_config(), None).await;
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    let old_token = nodes[p].fencing_token().unwrap();
    nodes[p].shutdown().await;
    assert!(!nodes[p].is_primary());
    let rest: Vec<_> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != p)
        .map(|(_, n)| n)
        .collect();
    let q = wait_agreed_primary(&rest, Duration::from_secs(10)).await;
    let new_token = rest[q].fencing_token().unwrap();
    assert!(new_token > old_token, "{new_token:?} > {old_token:?}");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_hands_over() {
    init_tracing();
    let (nodes, _) = start_nodes(3, test_config(), None).await;
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    let mut events = nodes[p].subscribe();
    let rest: Vec<_> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != p)
        .map(|(_, n)| n)
        .collect();
    nodes[p].leave().await;
    assert!(!nodes[p].is_primary());
    let q = wait_agreed_primary(&rest, Duration::from_secs(5)).await;
    // The leaver is removed from the configuration.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rest[q].members().iter().any(|m| m.id == nodes[p].id()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "leaver still a member"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut saw_finished = false;
    while let Some(ev) = events.try_next() {
        if matches!(ev, ClusterEvent::LeaveFinished { .. }) {
            saw_finished = true;
        }
    }
    assert!(saw_finished);
    for n in &nodes {
        n.shutdown().await;
    }
}

/// `is_primary()` read from another thread, as an application does, never answers
/// `true` on two nodes at once across graceful handovers: the loop publishes the
/// leaver's revoked lease before it sends `TimeoutNow` to the successor. A sampler
/// thread reads every node of the current cluster in a tight loop through
/// `ROUNDS` clusters of five with three handovers each. Shown to fail (two primaries
/// sampled) with publication moved back after the sends and a 20 ms stall after a
/// `TimeoutNow` (issue 10 report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handovers_never_show_two_primaries_to_other_threads() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    const ROUNDS: usize = 8;
    const HANDOVERS: usize = 3;
    init_tracing();
    let current: Arc<Mutex<Vec<cluster_mode::Cluster>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (samples, with_primary, overlaps) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let sampler = {
        let (current, stop, samples, with_primary, overlaps) = (
            current.clone(),
            stop.clone(),
            samples.clone(),
            with_primary.clone(),
            overlaps.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // The nodes are read one after another, not at one instant: a read
                // of the old primary, then (the sampler descheduled meanwhile) a read
                // of its successor, is no overlap. So the nodes are read forwards and
                // then backwards, and a node counts as primary only if both reads say
                // so: two such nodes were primary at once, at the instant of the later
                // one's forward read (the earlier one was primary before and after it;
                // a primary that left is never primary again).
                let primaries = {
                    let nodes = current.lock().unwrap();
                    let forward: Vec<bool> = nodes.iter().map(|n| n.is_primary()).collect();
                    let mut both = 0;
                    for (n, f) in nodes.iter().zip(&forward).rev() {
                        if n.is_primary() && *f {
                            both += 1;
                        }
                    }
                    both
                };
                samples.fetch_add(1, Ordering::Relaxed);
                if primaries >= 1 {
                    with_primary.fetch_add(1, Ordering::Relaxed);
                }
                if primaries >= 2 {
                    overlaps.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::yield_now();
            }
        })
    };
    for _ in 0..ROUNDS {
        let (nodes, _) = start_nodes(5, test_config(), None).await;
        *current.lock().unwrap() = nodes.clone();
        let mut present: Vec<usize> = (0..nodes.len()).collect();
        for _ in 0..HANDOVERS {
            let refs: Vec<_> = present.iter().map(|i| &nodes[*i]).collect();
            let p = present[wait_agreed_primary(&refs, Duration::from_secs(10)).await];
            nodes[p].leave().await;
            present.retain(|i| *i != p);
        }
        let refs: Vec<_> = present.iter().map(|i| &nodes[*i]).collect();
        wait_agreed_primary(&refs, Duration::from_secs(10)).await;
        current.lock().unwrap().clear();
        for n in &nodes {
            n.shutdown().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let (samples, with_primary, overlaps) = (
        samples.load(Ordering::Relaxed),
        with_primary.load(Ordering::Relaxed),
        overlaps.load(Ordering::Relaxed),
    );
    eprintln!(
        "{} handovers: {samples} samples, {with_primary} with a primary, {overlaps} with two",
        ROUNDS * HANDOVERS
    );
    assert!(
        with_primary > 0 && samples > with_primary,
        "{with_primary} of {samples} samples saw a primary"
    );
    assert_eq!(overlaps, 0, "samples with two primaries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_rejoins_with_new_identity() {
    init_tracing();
    let (nodes, addrs) = start_nodes(3, test_config(), None).await;
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    // Restart a secondary at the same address.
    let s = (p + 1) % 3;
    let old_id = nodes[s].id();
    nodes[s].shutdown().await;
    let mut listener = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(addrs[s]).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let fresh = ClusterBuilder::new(discovery(&addrs))
        .listener(listener.expect("rebind"))
        .config(test_config())
        .start()
        .await
        .unwrap();
    assert_ne!(fresh.id(), old_id);
    let all: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| if i == s { &fresh } else { n })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(q) = agreed_primary(&all) {
            let m = all[q].members();
            if m.len() == 3
                && m.iter().any(|m| m.id == fresh.id())
                && !m.iter().any(|m| m.id == old_id)
            {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fresh node did not rejoin: {:?}",
            fresh.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fresh.role(),
        if fresh.is_primary() {
            Role::Primary
        } else {
            Role::Secondary
        }
    );
    fresh.shutdown().await;
    for n in &nodes {
        n.shutdown().await;
    }
}

/// A clock that can be pushed forward, as if the process had been paused.
struct JumpClock {
    base: cluster_mode::SystemClock,
    offset_ms: std::sync::atomic::AtomicU64,
}

impl cluster_mode::Clock for JumpClock {
    fn now(&self) -> cluster_mode_core::Instant {
        let off = Duration::from_millis(self.offset_ms.load(std::sync::atomic::Ordering::SeqCst));
        self.base.now() + off
    }
    fn deadline(&self, at: cluster_mode_core::Instant) -> tokio::time::Instant {
        let off = Duration::from_millis(self.offset_ms.load(std::sync::atomic::Ordering::SeqCst));
        self.base.deadline(at.saturating_sub(off))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_primary_checks_the_lease_at_call_time() {
    init_tracing();
    let ls = listeners(3).await;
    let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let disc = discovery(&addrs);
    let clocks: Vec<std::sync::Arc<JumpClock>> = (0..3)
        .map(|_| {
            std::sync::Arc::new(JumpClock {
                base: cluster_mode::SystemClock::new(),
                offset_ms: 0.into(),
            })
        })
        .collect();
    let mut nodes = Vec::new();
    for (l, c) in ls.into_iter().zip(&clocks) {
        nodes.push(
            ClusterBuilder::new(disc.clone())
                .listener(l)
                .config(test_config())
                .clock(c.clone())
                .start()
                .await
                .unwrap(),
        );
    }
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    assert!(nodes[p].is_primary());
    // The primary's clock jumps past its lease (a pause the loop has not yet seen):
    // the very next call says no, with no help from the loop.
    clocks[p]
        .offset_ms
        .store(1_000, std::sync::atomic::Ordering::SeqCst);
    assert!(!nodes[p].is_primary());
    assert!(nodes[p].fencing_token().is_none());
    assert_ne!(nodes[p].status().role, Role::Primary);
    for n in &nodes {
        n.shutdown().await;
    }
}
