//! "A discovery failure leaves the member list as it was", through the real shell, for
//! the sources that need no external server: the rust-cloud-discovery bridge (a user
//! `DiscoveryService` that starts failing, or answers empty) and the static list (which
//! has no failure mode: the test pins that down). DNS: `tests/dns_e2e.rs`; Kubernetes:
//! `tests/k8s_e2e.rs`.
#![cfg(not(madsim))]

mod common;

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cluster_mode::{Cluster, ClusterBuilder, Discovery, StaticDiscovery};
use cluster_mode_discovery::CloudDiscoveryBridge;
use common::*;
use rust_cloud_discovery::{DiscoveryService, Port, ServiceInstance};

const GRACE: Duration = Duration::from_millis(500);

const OK: u8 = 0;
const FAIL: u8 = 1;
const EMPTY: u8 = 2;

/// What the test switches: the listed addresses and the answer mode.
struct Knobs {
    addrs: Mutex<Vec<SocketAddr>>,
    mode: AtomicU8,
}

/// A user's `DiscoveryService` whose answers the test switches.
struct UserService(Arc<Knobs>);

#[async_trait]
impl DiscoveryService for UserService {
    async fn discover_instances(&self) -> Result<Vec<ServiceInstance>, Box<dyn Error>> {
        match self.0.mode.load(Ordering::SeqCst) {
            FAIL => Err("endpoints API unavailable".into()),
            EMPTY => Ok(Vec::new()),
            _ => Ok(self
                .0
                .addrs
                .lock()
                .unwrap()
                .iter()
                .map(|a| {
                    ServiceInstance::new(
                        Some(format!("pod-{}", a.port())),
                        Some("web".into()),
                        Some(a.ip().to_string()),
                        Some(vec![Port::new(
                            Some("cluster".into()),
                            a.port() as u32,
                            "TCP".into(),
                            None,
                        )]),
                        false,
                        None,
                        HashMap::new(),
                        None,
                    )
                })
                .collect()),
        }
    }
}

fn sorted(addrs: &[SocketAddr]) -> Vec<String> {
    let mut v: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    v.sort();
    v
}

/// Three nodes on 127.0.0.1 found through `source`, formed into one cluster; a
/// secondary then crashed. Returns the nodes, the crashed index, all addresses.
async fn formed_then_crash(
    source: Arc<dyn Discovery>,
    ls: Vec<tokio::net::TcpListener>,
) -> (Vec<Cluster>, usize) {
    init_tracing();
    let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut nodes = Vec::new();
    for l in ls {
        nodes.push(
            ClusterBuilder::new(source.clone())
                .listener(l)
                .config(discovery_config(GRACE))
                .discovery_interval(Duration::from_millis(50))
                .start()
                .await
                .unwrap(),
        );
    }
    let refs: Vec<&Cluster> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(15)).await;
    wait_members(&refs, &sorted(&addrs), Duration::from_secs(10)).await;
    let v = a_secondary(3, p);
    nodes[v].shutdown().await;
    (nodes, v)
}

fn survivors(nodes: &[Cluster], v: usize) -> Vec<&Cluster> {
    (0..nodes.len())
        .filter(|&i| i != v)
        .map(|i| &nodes[i])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_failure_and_empty_answer_leave_members_unchanged() {
    let ls = listeners(3).await;
    let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let user = Arc::new(Knobs {
        addrs: Mutex::new(addrs.clone()),
        mode: AtomicU8::new(OK),
    });
    let source = Arc::new(CloudDiscoveryBridge::new(UserService(user.clone())));
    let (nodes, v) = formed_then_crash(source, ls).await;
    let rest = survivors(&nodes, v);
    let all = sorted(&addrs);

    let before: u64 = rest.iter().map(|n| n.counters().discovery_failures).sum();
    user.mode.store(FAIL, Ordering::SeqCst);
    hold_members(&rest, &all, 4 * GRACE, "user DiscoveryService failing").await;
    let after: u64 = rest.iter().map(|n| n.counters().discovery_failures).sum();
    assert!(after > before, "no discovery failure reached the shell");

    user.mode.store(EMPTY, Ordering::SeqCst);
    hold_members(
        &rest,
        &all,
        4 * GRACE,
        "user DiscoveryService answering empty",
    )
    .await;

    // Control: the service lists the survivors only; the crashed node is removed.
    let kept: Vec<SocketAddr> = (0..3).filter(|&i| i != v).map(|i| addrs[i]).collect();
    *user.addrs.lock().unwrap() = kept.clone();
    user.mode.store(OK, Ordering::SeqCst);
    wait_members(&rest, &sorted(&kept), Duration::from_secs(10)).await;
    for n in &rest {
        n.shutdown().await;
    }
}

/// The static source has no failure mode: a valid list is checked once, in
/// `StaticDiscovery::new`/`parse_list`, and every `snapshot()` after that answers the
/// same list. So the only thing to show is that it never errs and that a crashed node
/// it still lists is never removed by discovery (removal needs "missing from
/// discovery").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_source_never_fails_and_keeps_members() {
    let ls = listeners(3).await;
    let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let list = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let source = Arc::new(StaticDiscovery::parse_list(&list).expect("a valid list"));
    for _ in 0..1000 {
        let snap = source
            .snapshot()
            .await
            .expect("a static source never fails");
        let got: Vec<SocketAddr> = snap.iter().map(|i| i.addr).collect();
        assert_eq!(sorted(&got), sorted(&addrs));
    }
    let (nodes, v) = formed_then_crash(source, ls).await;
    let rest = survivors(&nodes, v);
    hold_members(&rest, &sorted(&addrs), 4 * GRACE, "static list").await;
    for n in &rest {
        assert_eq!(n.counters().discovery_failures, 0);
        n.shutdown().await;
    }
}
