//! The `cluster-node` binary as separate processes on 127.0.0.1.
// Real sockets and processes: not under the madsim simulator.
#![cfg(not(madsim))]

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

#[derive(Clone, Debug)]
struct Obs {
    node: usize,
    sent: Instant,
    recv: Instant,
    term: u64,
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
                let sent = Instant::now();
                if let Some(s) = status(addr, Duration::from_millis(300)).await {
                    answers.lock().unwrap()[node] += 1;
                    if s.primary {
                        obs.lock().unwrap().push(Obs {
                            node,
                            sent,
                            recv: Instant::now(),
                            term: s.term,
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.signal(first, "STOP");
    // Much longer than the election timeout (60-120 ms) and the lease (45 ms).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    p.signal(first, "CONT");
    for t in pollers {
        t.await.unwrap();
    }
    let obs = obs.lock().unwrap().clone();
    // A later primary observation (strictly after an earlier one) of another node
    // must carry a higher term; an old primary that reports primary again in its old
    // term after another node did is two primaries.
    for a in &obs {
        for b in &obs {
            if a.node != b.node && a.recv < b.sent {
                assert!(
                    a.term < b.term,
                    "node {} primary in term {} then node {} primary in term {}",
                    a.node,
                    a.term,
                    b.node,
                    b.term
                );
            }
        }
    }
    let others: Vec<_> = obs.iter().filter(|o| o.node != first).collect();
    assert!(
        !others.is_empty(),
        "nobody took over while the primary was stopped"
    );
    let answers = answers.lock().unwrap().clone();
    eprintln!(
        "status answers per node: {answers:?}, primary observations: {}",
        obs.len()
    );
    assert!(
        answers.iter().all(|&n| n > 50),
        "too few samples: {answers:?}"
    );
    // The resumed node does not claim its old term's primacy after the takeover.
    let takeover = others.iter().map(|o| o.recv).min().unwrap();
    let old_term = obs
        .iter()
        .filter(|o| o.node == first)
        .map(|o| o.term)
        .min()
        .unwrap_or(0);
    assert!(!obs
        .iter()
        .any(|o| o.node == first && o.term == old_term && o.sent > takeover));
}
