//! Recovery after losing the primary and more followers at once (issue 9), with the
//! `cluster-node` binary as separate processes on 127.0.0.1 and `--fast` timings: a
//! CI-sized run of `examples/bench_recovery.rs` (same trials, `tests/common/recovery.rs`).
//! Every trial must reach an agreed primary within [`BOUND`] of the last restart, and
//! the samplers must never see two processes primary at once.
// Real sockets and processes: not under the madsim simulator.
#![cfg(not(madsim))]

#[path = "common/recovery.rs"]
mod recovery;

use std::time::Duration;

/// The longest a trial may take from the last restart to the agreed primary (the
/// `--fast` profile elects within a few hundred milliseconds; the rest is slack for a
/// loaded CI machine).
const BOUND: Duration = Duration::from_secs(10);

/// One test at a time: each runs up to five processes plus a sampler per node polling
/// every millisecond, and the 45 ms leases of `--fast` should not compete with another
/// test's fleet for the CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `trials` trials of the case called `name` and asserts each one recovered
/// within [`BOUND`] without an overlap.
async fn recovers(name: &str, trials: usize) {
    let _one = SERIAL.lock().await;
    let case = recovery::case(name).expect("a case of tests/common/recovery.rs");
    let mut s = recovery::Settings::new(env!("CARGO_BIN_EXE_cluster-node").into(), true);
    s.form_timeout = Duration::from_secs(15);
    s.recover_timeout = BOUND;
    for t in 0..trials {
        let r = recovery::run_trial(&case, &s).await;
        eprintln!(
            "{name} trial {t}: {:?}, min gap {:?} ms, {} answers, {} failed requests, logs: {:?}",
            r.recovery, r.min_gap_ms, r.answers, r.failed_requests, r.kept_dir
        );
        assert!(
            r.overlaps.is_empty(),
            "{name} trial {t}: two primaries at once, certainly for {:?} ms",
            r.overlaps
        );
        if let Err(why) = &r.recovery {
            panic!("{name} trial {t}: {why}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_lose_two_without_data_dir() {
    recovers("3-lose-2", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_lose_three_without_data_dir() {
    recovers("5-lose-3", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_lose_two_with_data_dir() {
    recovers("3-lose-2+data-dir", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_lose_three_with_data_dir() {
    recovers("5-lose-3+data-dir", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_fleet_without_data_dir() {
    recovers("whole-fleet", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_fleet_with_data_dir() {
    recovers("whole-fleet+data-dir", 2).await;
}

#[path = "common/procs.rs"]
mod procs;

/// Two of three nodes are killed and nothing answers at their addresses again: no
/// proof of death, so the survivor does not recover by itself; its status says why.
/// `cluster-node recover` forces it, and the survivor becomes primary of the
/// successor cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_recover_forces_a_stuck_survivor() {
    force_a_stuck_survivor(None).await;
}

/// The same with a cluster secret: the command signs its request and binds it to the
/// node's epoch (docs/PROTOCOL.md, "Message authentication and replay"); signed
/// with another secret it is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_recover_signs_its_request_with_the_secret() {
    force_a_stuck_survivor(Some("recover-secret")).await;
}

fn run_recover(addr: std::net::SocketAddr, secret: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cluster-node"));
    cmd.args(["recover", &addr.to_string(), "--yes", "--wait-secs", "10"]);
    if let Some(s) = secret {
        cmd.args(["--secret", s]);
    }
    cmd.output().expect("run cluster-node recover")
}

async fn force_a_stuck_survivor(secret: Option<&'static str>) {
    let _one = SERIAL.lock().await;
    let mut args = vec!["--fast"];
    if let Some(s) = secret {
        args.extend(["--secret", s]);
    }
    let mut p = procs::Procs::start(3, &args);
    let primary = procs::wait_agreed(&p.addrs, Duration::from_secs(15))
        .await
        .expect("a primary");
    let survivor = (0..3).find(|i| *i != primary).unwrap();
    for i in (0..3).filter(|i| *i != survivor) {
        p.kill(i);
    }
    // Stuck, and it says why.
    let addr = p.addrs[survivor];
    let why = procs::status_containing(addr, "no proof of death").await;
    assert!(
        why.contains("\"Missing\""),
        "the status names the missing voters: {why}"
    );
    assert!(procs::status(addr, Duration::from_secs(1))
        .await
        .is_some_and(|s| !s.primary));
    if secret.is_some() {
        let out = tokio::task::spawn_blocking(move || run_recover(addr, Some("wrong")))
            .await
            .expect("join");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("401"), "{stderr}");
        assert!(procs::status(addr, Duration::from_secs(1))
            .await
            .is_some_and(|s| !s.primary));
    }
    let out = tokio::task::spawn_blocking(move || run_recover(addr, secret))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cluster-node recover failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("recovered"), "{stdout}");
    let s = procs::status(addr, Duration::from_secs(1))
        .await
        .expect("status");
    assert!(s.primary, "the survivor is primary of the successor");
}
