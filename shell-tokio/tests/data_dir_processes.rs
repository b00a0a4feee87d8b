//! `cluster-node --data-dir` as separate processes on 127.0.0.1: a majority SIGKILLed
//! and restarted in place comes back as the same members; a damaged or shared data
//! directory stops the process with a message naming it.
// Real sockets, processes and files: not under the madsim simulator.
#![cfg(not(madsim))]

#[path = "common/procs.rs"]
mod procs;

use procs::*;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn args(dir: &Path) -> Vec<String> {
    vec![
        "--fast".into(),
        "--data-dir".into(),
        dir.display().to_string(),
    ]
}

async fn samples(p: &Procs) -> Vec<Sample> {
    let mut v = Vec::new();
    for a in &p.addrs {
        let s = status(*a, Duration::from_millis(500))
            .await
            .unwrap_or_else(|| panic!("no status from {a}"));
        v.push(s);
    }
    v
}

async fn ids(p: &Procs) -> Vec<u128> {
    samples(p).await.into_iter().map(|s| s.id).collect()
}

async fn writes(p: &Procs) -> Vec<u64> {
    samples(p)
        .await
        .into_iter()
        .map(|s| s.persist_writes)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_killed_and_restarted_in_place_keeps_ids_and_elects() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("node{i}")))
        .collect();
    let mut p = Procs::start_each(3, |i| args(&dirs[i]));
    let primary = wait_agreed(&p.addrs, Duration::from_secs(15))
        .await
        .expect("no primary");
    let before = ids(&p).await;
    // Steady state: heartbeats and lease renewals only, no write.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let w0 = writes(&p).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w1 = writes(&p).await;
    eprintln!("writes per node after cold start: {w0:?}; 1 s later: {w1:?}");
    assert!(w0.iter().all(|&w| w >= 2), "{w0:?}");
    assert_eq!(w0, w1, "data directory writes in steady state");
    let term = status(p.addrs[primary], Duration::from_millis(500))
        .await
        .expect("status")
        .term;
    // The primary and one follower at once: a majority of the voters. With new
    // identities this would leave the survivor without a quorum for good.
    let follower = (primary + 1) % 3;
    p.kill(primary);
    p.kill(follower);
    let t0 = Instant::now();
    p.respawn(primary, &args(&dirs[primary]));
    p.respawn(follower, &args(&dirs[follower]));
    let again = wait_agreed(&p.addrs, Duration::from_secs(10)).await;
    let took = t0.elapsed();
    let again = again.expect("no primary agreed by all 3 within 10 s");
    eprintln!("primary agreed by all 3 again {took:?} after the restart");
    assert_eq!(ids(&p).await, before, "a restarted node changed its id");
    let new_term = status(p.addrs[again], Duration::from_millis(500))
        .await
        .expect("status")
        .term;
    assert!(new_term > term, "term {new_term} after {term}");
}

/// Runs cluster-node on `dir` and waits for it to exit; returns its status and stderr.
fn run_until_exit(dir: &Path) -> (std::process::ExitStatus, String) {
    let addr = free_addrs(1)[0];
    let mut child = Command::new(env!("CARGO_BIN_EXE_cluster-node"))
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--peers")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cluster-node");
    // A node that wrongly started would run forever: kill it after a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn damaged_state_file_makes_cluster_node_exit_nonzero_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("state");
    std::fs::write(&file, b"CLMODEST\x01\x00 not a real state").unwrap();
    let (status, stderr) = run_until_exit(tmp.path());
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("damaged"),
        "{stderr}"
    );
    // Nothing was overwritten.
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"CLMODEST\x01\x00 not a real state"
    );
}

#[test]
fn data_dir_in_use_by_a_live_process_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let held = cluster_mode::DataDir::open(tmp.path()).unwrap();
    let (status, stderr) = run_until_exit(tmp.path());
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    drop(held);
}
