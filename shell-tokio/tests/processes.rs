//! The `cluster-node` binary as separate processes on 127.0.0.1.
// Real sockets and processes: not under the madsim simulator.
#![cfg(not(madsim))]

#[path = "common/leases.rs"]
mod leases;
#[path = "common/procs.rs"]
mod procs;

use procs::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_primary_fails_over() {
    let mut p = Procs::start(3, &["--fast"]);
    let first = wait_agreed(&p.addrs, Duration::from_secs(15))
        .await
        .expect("no primary");
    let t0 = Instant::now();
    p.kill(first);
    let rest: Vec<_> = p
        .addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, a)| *a)
        .collect();
    let next = wait_agreed(&rest, Duration::from_secs(15))
        .await
        .expect("no failover");
    eprintln!("failover to {} in {:?}", rest[next], t0.elapsed());
}

/// A "primary" answer of a status request: who, and the host clock (boottime)
/// when the request was sent and the answer read.
#[derive(Clone, Debug)]
struct Obs {
    who: String,
    sent: u64,
    recv: u64,
}

fn boottime() -> u64 {
    cluster_mode::clock::boottime_nanos()
}

/// Each node's lease record, read from its status endpoint.
async fn records(addrs: &[std::net::SocketAddr]) -> Vec<(String, leases::Record)> {
    let mut v = Vec::new();
    for a in addrs {
        let raw = raw_status(*a).await.expect("status answer");
        v.push(leases::from_status(&raw).expect("a lease record in the status"));
    }
    v
}

/// Every "primary" answer falls in one of the answering node's recorded intervals:
/// the record is a superset of what the node said (checked on the answers seen).
fn assert_answers_covered(obs: &[Obs], records: &[(String, leases::Record)]) {
    for o in obs {
        let covered = records.iter().any(|(who, r)| {
            *who == o.who
                && r.intervals
                    .iter()
                    .any(|iv| iv.from <= o.recv && o.sent < iv.until)
        });
        assert!(covered, "a primary answer outside the node's record: {o:?}");
    }
}

#[test]
fn overlap_checker_self_test() {
    leases::self_test();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_primary_never_two_primaries() {
    let p = Procs::start(3, &["--fast"]);
    let first = wait_agreed(&p.addrs, Duration::from_secs(15))
        .await
        .expect("no primary");
    let obs: Arc<Mutex<Vec<Obs>>> = Arc::default();
    let answers = Arc::new(Mutex::new(vec![0usize; 3]));
    let stop_at = Instant::now() + Duration::from_millis(2500);
    let mut pollers = Vec::new();
    for (node, addr) in p.addrs.iter().copied().enumerate() {
        let obs = obs.clone();
        let answers = answers.clone();
        pollers.push(tokio::spawn(async move {
            while Instant::now() < stop_at {
                let sent = boottime();
                if let Some(s) = status(addr, Duration::from_millis(300)).await {
                    answers.lock().unwrap()[node] += 1;
                    if s.primary {
                        obs.lock().unwrap().push(Obs {
                            who: format!("{:032x}", s.id),
                            sent,
                            recv: boottime(),
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = boottime();
    p.signal(first, "STOP");
    // Much longer than the election timeout (60-120 ms) and the lease (45 ms).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    p.signal(first, "CONT");
    for t in pollers {
        t.await.unwrap();
    }
    // Every node's record, the resumed one's included: no two intervals of different
    // nodes overlap in real time (the host's boottime).
    let recs = records(&p.addrs).await;
    let compared = leases::assert_no_overlap(&recs);
    let obs = obs.lock().unwrap().clone();
    assert_answers_covered(&obs, &recs);
    // The stopped node was primary before the stop, another one after it.
    let first_id = &recs[first].0;
    assert!(
        recs[first]
            .1
            .intervals
            .iter()
            .any(|iv| iv.from < stopped_at),
        "the stopped node has no interval before the stop: {:?}",
        recs[first].1
    );
    assert!(
        recs.iter()
            .filter(|(who, _)| who != first_id)
            .flat_map(|(_, r)| &r.intervals)
            .any(|iv| iv.from > stopped_at),
        "nobody took over while the primary was stopped: {recs:?}"
    );
    let answers = answers.lock().unwrap().clone();
    eprintln!(
        "status answers per node: {answers:?}, primary answers: {}, lease intervals compared: {compared}",
        obs.len()
    );
    assert!(
        answers.iter().all(|&n| n > 50),
        "too few samples: {answers:?}"
    );
}

/// Waits until one node is primary, every node names it, and it has `members`
/// members; its index.
async fn wait_settled(
    addrs: &[std::net::SocketAddr],
    members: usize,
    within: Duration,
) -> Option<usize> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(p) = wait_agreed(addrs, Duration::from_millis(500)).await {
            if status(addrs[p], Duration::from_millis(200))
                .await
                .is_some_and(|s| s.primary && s.members == members)
            {
                return Some(p);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Graceful handovers between real processes: the primary leaves (SIGTERM: it hands
/// leadership to an up-to-date member, then is removed), a fresh process takes its
/// address and joins, and again, `HANDOVERS` times (default 50). Every process's
/// lease intervals (printed on exit, or read from the status endpoint of those still
/// running) are compared: two that overlap are two primaries at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_handovers_never_two_primaries() {
    let rounds: usize = std::env::var("HANDOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let addrs = free_addrs(3);
    let peers = peer_list(&addrs);
    let extra = ["--fast", "--discovery-ms", "50"];
    let mut nodes: Vec<Option<Piped>> = addrs
        .iter()
        .map(|a| Some(spawn_node_piped(*a, &peers, &extra)))
        .collect();
    let mut recs: Vec<(String, leases::Record)> = Vec::new();
    let t0 = Instant::now();
    for round in 0..rounds {
        let p = wait_settled(&addrs, 3, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("round {round}: no settled cluster of 3"));
        let leaver = nodes[p].take().expect("running");
        let out = tokio::task::spawn_blocking(move || leaver.terminate(Duration::from_secs(10)))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let rec = leases::from_stdout(&out)
            .unwrap_or_else(|| panic!("round {round}: no LEASES line in {out:?}"));
        assert!(
            !rec.intervals.is_empty(),
            "round {round}: the leaving primary recorded no interval"
        );
        recs.push((format!("process {round} (node {p})"), rec));
        nodes[p] = Some(spawn_node_piped(addrs[p], &peers, &extra));
    }
    wait_settled(&addrs, 3, Duration::from_secs(20))
        .await
        .expect("no settled cluster after the last handover");
    recs.extend(records(&addrs).await);
    let elapsed = t0.elapsed();
    // The gaps between one primary's end and the next one's start, in real time: a
    // negative gap is an overlap (reported, with every other, by the check below).
    let mut all: Vec<(&str, leases::Interval)> = recs
        .iter()
        .flat_map(|(w, r)| r.intervals.iter().map(move |iv| (w.as_str(), *iv)))
        .collect();
    all.sort_by_key(|(_, iv)| iv.from);
    let mut gaps_us: Vec<i64> = all
        .windows(2)
        .filter(|w| w[0].0 != w[1].0)
        .map(|w| (w[1].1.from as i64 - w[0].1.until as i64) / 1000)
        .collect();
    gaps_us.sort();
    eprintln!(
        "{rounds} handovers in {elapsed:?}; {} intervals of {} processes; gaps between primaries (us): min {:?}, median {:?}, max {:?}",
        all.len(),
        recs.len(),
        gaps_us.first(),
        gaps_us.get(gaps_us.len() / 2),
        gaps_us.last()
    );
    leases::assert_no_overlap(&recs);
}

/// `--store-load` (the load of `examples/bench_store.rs`), given to every node with
/// `on=follower`: exactly one node, a follower, runs it and prints figures for writes
/// and for reads at each consistency; the others say they skipped it.
#[test]
fn store_load_runs_on_one_follower_and_prints_its_figures() {
    let addrs = free_addrs(3);
    let peers = peer_list(&addrs);
    let (tx, rx) = std::sync::mpsc::channel();
    let spec = "clients=4,secs=0.3,read_secs=0.1,keys=64,on=follower";
    let args = ["--fast", "--store-load", spec];
    let _kids = Children(
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| spawn_node_lines(i, *a, &peers, &args, tx.clone()))
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut figures = Vec::new();
    let mut skipped = 0;
    while figures.len() + skipped < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((_, line)) = rx.recv_timeout(left) else {
            panic!("within 20 s: figures {figures:?}, {skipped} skipped")
        };
        let Some(json) = line.strip_prefix("STORE_LOAD ") else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(json).expect("one JSON line");
        if v.get("skipped").is_some() {
            skipped += 1;
        } else {
            figures.push(v);
        }
    }
    assert_eq!(figures.len(), 1, "one node runs the load: {figures:?}");
    let v = &figures[0];
    assert_eq!(v["role"], "follower", "{v}");
    assert_eq!(v["clients"], 4, "{v}");
    assert!(v["writes"]["ops"].as_u64() > Some(0), "{v}");
    assert_eq!(v["writes"]["errors"], 0, "{v}");
    for read in ["linearizable", "lease", "local"] {
        assert!(v["reads"][read]["ops"].as_u64() > Some(0), "{read}: {v}");
        assert!(v["reads"][read]["p99_ms"].as_f64().is_some(), "{read}: {v}");
    }
}
