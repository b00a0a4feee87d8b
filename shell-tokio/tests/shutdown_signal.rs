//! `ClusterBuilder::leave_on_shutdown_signal`: a process that embeds the library and
//! gets SIGTERM leaves the cluster gracefully (the others drop it from the agreed
//! members at once, as they never would for a crash) and then exits with status 143.
//!
//! The embedding process is this test binary itself, run again with the ignored test
//! `embedded_node` selected and its address in the environment.
// Real sockets, processes and signals: not under the madsim simulator.
#![cfg(all(unix, not(madsim)))]

#[path = "common/procs.rs"]
mod procs;

use cluster_mode::{ClusterBuilder, StaticDiscovery};
use procs::{free_addrs, peer_list, spawn_node, status, wait_agreed};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADDR_ENV: &str = "SHUTDOWN_SIGNAL_TEST_ADDR";
const PEERS_ENV: &str = "SHUTDOWN_SIGNAL_TEST_PEERS";

/// The embedding application: one node with the one-line graceful exit, then
/// nothing else to do. Runs only when started by the test below.
#[tokio::test]
#[ignore = "the child process of sigterm_leaves_then_exits_143"]
async fn embedded_node() {
    let (Ok(addr), Ok(peers)) = (std::env::var(ADDR_ENV), std::env::var(PEERS_ENV)) else {
        panic!("run by sigterm_leaves_then_exits_143, which sets {ADDR_ENV} and {PEERS_ENV}");
    };
    let addr: SocketAddr = addr.parse().unwrap();
    let peers = StaticDiscovery::parse_list(&peers).unwrap();
    let _cluster = ClusterBuilder::new(Arc::new(peers))
        .listen(addr)
        .advertise(addr.to_string())
        .config(cluster_mode::Config::default())
        .leave_on_shutdown_signal()
        .start()
        .await
        .unwrap();
    std::future::pending::<()>().await;
}

fn spawn_embedded(addr: SocketAddr, peers: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["embedded_node", "--exact", "--ignored", "--nocapture"])
        .env(ADDR_ENV, addr.to_string())
        .env(PEERS_ENV, peers)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_then_exits_143() {
    let addrs = free_addrs(3);
    let peers = peer_list(&addrs);
    let mut others: Vec<Child> = addrs[..2]
        .iter()
        .map(|a| spawn_node(*a, &peers, &[] as &[&str]))
        .collect();
    let mut child = spawn_embedded(addrs[2], &peers);
    let agreed = wait_agreed(&addrs, Duration::from_secs(15)).await;
    assert!(agreed.is_some(), "no agreed primary among the three");
    for a in &addrs {
        let s = status(*a, Duration::from_secs(1)).await.unwrap();
        assert_eq!(s.members, 3, "{a} does not list three members yet");
    }

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the embedding process did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Killed by the signal itself, `code()` would be None: the handler did not run.
    assert_eq!(
        exit.code(),
        Some(143),
        "exit status after SIGTERM: {exit:?}"
    );

    // A graceful leave removed it from the agreed members (the survivors learn the
    // commit with the next heartbeat); a crash would not have.
    for a in &addrs[..2] {
        let mut members = 0;
        for _ in 0..40 {
            members = status(*a, Duration::from_secs(1))
                .await
                .map_or(0, |s| s.members);
            if members == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(members, 2, "{a} still lists the node that got SIGTERM");
    }
    let survivors = wait_agreed(&addrs[..2], Duration::from_secs(5)).await;
    assert!(
        survivors.is_some(),
        "the two survivors did not agree on a primary"
    );
    for c in &mut others {
        let _ = c.kill();
        let _ = c.wait();
    }
}
