//! Failover benchmark with 5 `cluster-node` processes on 127.0.0.1, default
//! (datacenter) config. Not a test: it prints a table.
//!
//! ```text
//! cargo build --release -p cluster-mode --bin cluster-node --example bench_failover
//! target/release/examples/bench_failover [TRIALS=20]
//! ```
//!
//! Per trial: start 5 fresh processes; time until all 5 agree on a primary (cold
//! start, from the instant before the first process is spawned, so it includes the
//! few milliseconds spawning the five takes, also printed; measured from the last
//! spawn it would be that much shorter); SIGKILL the primary and time until another node reports primary
//! (failover); SIGTERM the new primary (graceful leave) and measure the gap between
//! its last "primary" answer and the next node's first (handover gap). Every node's
//! status endpoint is polled by its own task about every millisecond. In trial 1 it
//! also measures, in steady state, new peer TCP connections per second and bytes on
//! the wire per heartbeat message.
#![cfg_attr(madsim, allow(dead_code, unused_imports))]

#[cfg(not(madsim))]
#[path = "../tests/common/procs.rs"]
mod procs;

#[cfg(not(madsim))]
use procs::{node_bin, pct, status_json, Procs};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const N: usize = 5;

/// A node's status document, or `None` if it did not answer within 300 ms.
#[cfg(not(madsim))]
async fn get_json(addr: SocketAddr) -> Option<serde_json::Value> {
    status_json(addr, Duration::from_millis(300)).await
}

fn is_primary(v: &serde_json::Value) -> bool {
    v["role"] == "Primary" && v["lease_valid"] == true
}

#[derive(Clone, Copy)]
struct Obs {
    node: usize,
    sent: Instant,
    recv: Instant,
    primary: bool,
}

/// Polls every node until `stop` is set; returns all observations.
#[cfg(not(madsim))]
fn start_pollers(
    addrs: &[SocketAddr],
    stop: Arc<Mutex<bool>>,
) -> Vec<tokio::task::JoinHandle<Vec<Obs>>> {
    addrs
        .iter()
        .copied()
        .enumerate()
        .map(|(node, addr)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut v = Vec::new();
                while !*stop.lock().unwrap() {
                    let sent = Instant::now();
                    if let Some(j) = get_json(addr).await {
                        v.push(Obs {
                            node,
                            sent,
                            recv: Instant::now(),
                            primary: is_primary(&j),
                        });
                    }
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                v
            })
        })
        .collect()
}

#[cfg(not(madsim))]
async fn agreed(addrs: &[SocketAddr], alive: &[bool]) -> Option<usize> {
    let mut prim = None;
    let mut views = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        if !alive[i] {
            continue;
        }
        let v = get_json(*a).await?;
        if is_primary(&v) {
            if prim.is_some() {
                return None;
            }
            prim = Some(i);
        }
        views.push(v["primary"]["addr"].as_str().map(str::to_owned));
    }
    let p = prim?;
    let pa = addrs[p].to_string();
    views
        .iter()
        .all(|v| v.as_deref() == Some(pa.as_str()))
        .then_some(p)
}

struct Trial {
    cold: f64,
    spawn: f64,
    failover: f64,
    handover: f64,
}

#[cfg(not(madsim))]
async fn trial(steady: bool) -> Option<(Trial, Option<(f64, f64, f64)>)> {
    let t0 = Instant::now();
    let mut procs = Procs::start(N, &[] as &[&str]);
    let spawn = t0.elapsed().as_secs_f64() * 1000.0;
    let addrs = procs.addrs.clone();
    let mut alive = vec![true; N];
    let first = loop {
        if let Some(p) = agreed(&addrs, &alive).await {
            break p;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let cold = t0.elapsed().as_secs_f64() * 1000.0;

    // Steady state: all five members, then count over 5 s.
    let mut steady_figs = None;
    if steady {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut before = Vec::new();
        for a in &addrs {
            before.push(get_json(*a).await?);
        }
        let w = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut after = Vec::new();
        for a in &addrs {
            after.push(get_json(*a).await?);
        }
        let secs = w.elapsed().as_secs_f64();
        let d = |i: usize, k: &str| {
            after[i]["counters"][k].as_f64().unwrap_or(0.0)
                - before[i]["counters"][k].as_f64().unwrap_or(0.0)
        };
        let conns: f64 = (0..N).map(|i| d(i, "connections_opened")).sum::<f64>() / secs;
        let body = d(first, "bytes_out") / d(first, "messages_out").max(1.0);
        let wire = (d(first, "wire_bytes_out") + d(first, "wire_bytes_in"))
            / d(first, "messages_out").max(1.0);
        steady_figs = Some((conns, body, wire));
    }

    // SIGKILL the primary.
    let stop = Arc::new(Mutex::new(false));
    let pollers = start_pollers(&addrs, stop.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let killed_at = Instant::now();
    procs.kill(first);
    alive[first] = false;
    let second = loop {
        if let Some(p) = agreed(&addrs, &alive).await {
            break p;
        }
        if killed_at.elapsed() > Duration::from_secs(20) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Graceful leave of the new primary.
    let leave_at = Instant::now();
    let pid = procs.pid(second);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    loop {
        let others: Vec<bool> = (0..N).map(|i| alive[i] && i != second).collect();
        let mut any = false;
        for (i, a) in addrs.iter().enumerate() {
            if others[i] && get_json(*a).await.is_some_and(|v| is_primary(&v)) {
                any = true;
            }
        }
        if any || leave_at.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    *stop.lock().unwrap() = true;
    let mut obs = Vec::new();
    for p in pollers {
        obs.extend(p.await.ok()?);
    }
    // Failover: from the kill to the first answer of another node saying primary.
    let failover = obs
        .iter()
        .filter(|o| o.node != first && o.primary && o.recv > killed_at)
        .map(|o| o.recv)
        .min()?
        .duration_since(killed_at)
        .as_secs_f64()
        * 1000.0;
    // Handover gap: last "primary" answer of the leaver (its request sent time) to
    // the first "primary" answer of another node after the leave began (received).
    let last_old = obs
        .iter()
        .filter(|o| o.node == second && o.primary)
        .map(|o| o.sent)
        .max()?;
    let first_new = obs
        .iter()
        .filter(|o| o.node != second && o.node != first && o.primary && o.sent >= leave_at)
        .map(|o| o.recv)
        .min()?;
    // Signed: a new primary's answer received before the leaver's last "primary"
    // answer was even asked for is an overlap of two primaries, reported as a negative
    // gap rather than hidden as 0.
    let handover = if first_new >= last_old {
        first_new.duration_since(last_old).as_secs_f64() * 1000.0
    } else {
        -(last_old.duration_since(first_new).as_secs_f64() * 1000.0)
    };
    Some((
        Trial {
            cold,
            spawn,
            failover,
            handover,
        },
        steady_figs,
    ))
}

#[cfg(not(madsim))]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let bin = node_bin();
    assert!(
        bin.exists(),
        "build the node first: cargo build --release -p cluster-mode --bin cluster-node ({})",
        bin.display()
    );
    let (mut cold, mut spawn, mut fo, mut ho) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut steady = None;
    let mut failed = 0;
    for t in 0..trials {
        match trial(t == 0).await {
            Some((tr, s)) => {
                eprintln!(
                    "trial {t:>2}: cold {:7.1} ms (spawning {:5.1} ms)  failover {:7.1} ms  handover gap {:6.2} ms",
                    tr.cold, tr.spawn, tr.failover, tr.handover
                );
                cold.push(tr.cold);
                spawn.push(tr.spawn);
                fo.push(tr.failover);
                ho.push(tr.handover);
                if s.is_some() {
                    steady = s;
                }
            }
            None => {
                failed += 1;
                eprintln!("trial {t:>2}: FAILED");
            }
        }
    }
    println!(
        "\n5 node processes on 127.0.0.1, Config::datacenter(), {} trials ({failed} failed)\n",
        cold.len()
    );
    let overlaps = ho.iter().filter(|g| **g < 0.0).count();
    if overlaps > 0 {
        println!("TWO PRIMARIES: {overlaps} handovers overlapped (negative gaps)\n");
    }
    println!("| figure | p50 | p99 | max |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("cold start to agreed primary (ms)", &mut cold),
        ("of which spawning the 5 processes (ms)", &mut spawn),
        ("SIGKILL failover (ms)", &mut fo),
        ("graceful handover gap (ms)", &mut ho),
    ] {
        let max = v.iter().copied().fold(f64::NAN, f64::max);
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            pct(v, 50.0),
            pct(v, 99.0),
            max
        );
    }
    if let Some((conns, body, wire)) = steady {
        println!("\nsteady state (5 s window, trial 0):");
        println!("- new peer TCP connections per second, all nodes: {conns:.2}");
        println!("- heartbeat body (postcard frame), bytes: {body:.1}");
        println!("- heartbeat on the wire (HTTP request + response), bytes: {wire:.1}");
    }
    if overlaps > 0 {
        std::process::exit(1);
    }
}

/// Real sockets and processes only: nothing to run under the madsim simulator.
#[cfg(madsim)]
fn main() {}
