//! A counter in the replicated key-value store, shared by three processes, with the
//! primary killed mid-stream: no acknowledged increment is lost.
//!
//! ```text
//! cargo run --release -p cluster-mode --example store_counter
//! ```
//!
//! The example starts three copies of itself as separate processes on 127.0.0.1
//! (static discovery). Each one increments `demo/counter` with compare-and-swap (read
//! the counter linearizably, swap in the value plus one at that revision) as fast as
//! it can, and writes every increment the store acknowledged to a file. After 2.5 s
//! the example kills the primary's process with SIGKILL; the two others go on
//! through the failover. At the end the survivors read the counter, and the example
//! compares it with the acknowledged increments of all three processes:
//!
//! - the counter is never below them: that would be an acknowledged write lost;
//! - it may be above them by what the killed process had in flight (its last swap,
//!   committed or not, or acknowledged but not yet written down when it died);
//! - every acknowledged increment took a different value (a swap applied twice, or
//!   two swaps from the same read, would show as a repeated value).
//!
//! It exits with status 1 if a check fails.

use cluster_mode::store::Consistency;
use cluster_mode::{CasOutcome, ClusterBuilder, Config, StaticDiscovery};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "demo/counter";
const RUN: Duration = Duration::from_millis(6_000);
const KILL_AFTER: Duration = Duration::from_millis(2_500);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("node") {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(node(&args[2..]));
    } else {
        std::process::exit(demo());
    }
}

/// The parent: starts three nodes, kills the primary, checks the counter.
fn demo() -> i32 {
    let dir = std::env::temp_dir().join(format!("store_counter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Free ports: bound and released here, then bound by the children.
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        })
        .collect();
    let exe = std::env::current_exe().expect("own path");
    let t0 = Instant::now();
    let mut children: Vec<Option<Child>> = (0..3)
        .map(|i| {
            let mut cmd = Command::new(&exe);
            cmd.arg("node").arg(i.to_string()).arg(&dir);
            cmd.args(ports.iter().map(u16::to_string));
            Some(cmd.spawn().expect("spawn a node"))
        })
        .collect();
    std::thread::sleep(KILL_AFTER);
    let primary = (0..3).find(|i| {
        std::fs::read_to_string(dir.join(format!("{i}.role"))).is_ok_and(|r| r.trim() == "primary")
    });
    match primary {
        Some(p) => {
            if let Some(mut c) = children[p].take() {
                c.kill().expect("kill");
                let _ = c.wait();
            }
            println!(
                "{:>6.3}s killed node {p} (the primary) with SIGKILL",
                t0.elapsed().as_secs_f64()
            );
        }
        None => println!("no primary after {KILL_AFTER:?}; nothing killed"),
    }
    for c in children.iter_mut().flatten() {
        let _ = c.wait();
    }
    report(&dir, primary)
}

/// Compares the acknowledged increments with the counter the survivors read.
fn report(dir: &Path, killed: Option<usize>) -> i32 {
    let mut acked: Vec<u64> = Vec::new();
    for i in 0..3 {
        let text = std::fs::read_to_string(dir.join(format!("{i}.acks"))).unwrap_or_default();
        let mine: Vec<u64> = text.lines().filter_map(|l| l.parse().ok()).collect();
        println!("node {i}: {} increments acknowledged", mine.len());
        acked.extend(mine);
    }
    let finals: Vec<u64> = (0..3)
        .filter_map(|i| std::fs::read_to_string(dir.join(format!("{i}.final"))).ok())
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let Some(counter) = finals.iter().copied().max() else {
        println!("FAILED: no survivor could read the counter");
        return 1;
    };
    let n = acked.len() as u64;
    acked.sort_unstable();
    let distinct = acked.windows(2).all(|w| w[0] != w[1]);
    let slack = if killed.is_some() { 2 } else { 0 };
    println!("acknowledged increments: {n}, counter: {counter}");
    let mut ok = true;
    if counter < n {
        println!("FAILED: {} acknowledged increments lost", n - counter);
        ok = false;
    }
    if counter > n + slack {
        println!("FAILED: {} increments more than acknowledged", counter - n);
        ok = false;
    }
    if !distinct {
        println!("FAILED: two acknowledged increments produced the same value");
        ok = false;
    }
    if ok {
        println!(
            "ok: no acknowledged increment lost, none applied twice ({} in flight at the kill)",
            counter - n
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    if ok {
        0
    } else {
        1
    }
}

/// A child: one cluster member that increments the counter until `RUN` is over.
async fn node(args: &[String]) {
    let i: usize = args[0].parse().expect("node index");
    let dir = PathBuf::from(&args[1]);
    let addrs: Vec<SocketAddr> = args[2..]
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().expect("port"))
        .collect();
    let listener = tokio::net::TcpListener::bind(addrs[i]).await.expect("bind");
    let cluster = ClusterBuilder::new(Arc::new(StaticDiscovery::new(addrs.iter().copied())))
        .listener(listener)
        .name(format!("node-{i}"))
        .config(Config::datacenter())
        .start()
        .await
        .expect("start");
    let store = cluster.store();
    let mut acks = std::fs::File::create(dir.join(format!("{i}.acks"))).expect("acks file");
    let role_file = dir.join(format!("{i}.role"));
    let started = Instant::now();
    let mut was_primary = None;
    while started.elapsed() < RUN {
        let primary = cluster.is_primary();
        if was_primary != Some(primary) {
            was_primary = Some(primary);
            let role = if primary { "primary" } else { "secondary" };
            std::fs::write(&role_file, role).expect("role file");
        }
        let (revision, value) = match store.get(KEY, Consistency::Linearizable).await {
            Ok(Some(v)) => (v.revision, parse(&v.value)),
            Ok(None) => (0, 0),
            Err(e) => {
                eprintln!("node {i}: read failed: {e}");
                continue;
            }
        };
        match store
            .compare_and_swap(KEY, revision, (value + 1).to_string())
            .await
        {
            Ok(CasOutcome::Swapped(_)) => {
                writeln!(acks, "{}", value + 1).expect("write ack");
                acks.flush().expect("flush");
            }
            Ok(CasOutcome::Mismatch { .. }) => {}
            Err(e) => eprintln!("node {i}: increment failed: {e}"),
        }
    }
    // Let the other nodes finish their last increment, then read the result.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Ok(v) = store.get(KEY, Consistency::Linearizable).await {
        let value = v.map_or(0, |v| parse(&v.value));
        std::fs::write(dir.join(format!("{i}.final")), value.to_string()).expect("final");
    }
    cluster.shutdown().await;
}

fn parse(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
