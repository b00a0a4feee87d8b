//! End to end through kube-rs's real client and a fake Kubernetes API server (the
//! fixture of `discovery-adapters/tests/kubernetes.rs`): a failing API server or a
//! slice with no ready endpoint leaves the member list as it was; and the time from a
//! watch event to the core acting on it.
//!
//! Nodes listen on 127.0.0.1..3 with one port: an EndpointSlice gives one port for all
//! its endpoints.
#![cfg(all(feature = "kubernetes", not(madsim)))]

mod common;
#[path = "../../discovery-adapters/tests/support/fake_k8s.rs"]
mod fake_k8s;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_mode::{Cluster, ClusterBuilder};
use common::*;
use fake_k8s::{slice_with_port, FakeApi};
use serde_json::Value;
use tokio::io::AsyncReadExt;

const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
const GRACE: Duration = Duration::from_millis(500);

/// A slice listing `ips` on `port`, each ready or not.
fn pods(ips: &[&str], port: u16, ready: bool) -> Value {
    let eps: Vec<(&str, String)> = ips.iter().map(|ip| (*ip, format!("pod-{ip}"))).collect();
    let eps: Vec<(&str, &str, bool, bool)> = eps
        .iter()
        .map(|(ip, pod)| (*ip, pod.as_str(), ready, false))
        .collect();
    slice_with_port("web-a", &eps, port)
}

async fn formed() -> (FakeApi, u16, Vec<Cluster>, Vec<String>) {
    init_tracing();
    let api = FakeApi::start().await;
    let (port, ls) = listeners_same_port(&IPS).await;
    api.apply(pods(&IPS, port, true));
    let mut nodes = Vec::new();
    for l in ls {
        nodes.push(
            ClusterBuilder::new(Arc::new(api.discovery()))
                .listener(l)
                .config(discovery_config(GRACE))
                .start()
                .await
                .unwrap(),
        );
    }
    let all: Vec<String> = IPS.iter().map(|ip| format!("{ip}:{port}")).collect();
    let refs: Vec<&Cluster> = nodes.iter().collect();
    wait_agreed_primary(&refs, Duration::from_secs(15)).await;
    wait_members(&refs, &all, Duration::from_secs(10)).await;
    (api, port, nodes, all)
}

/// Crashes a secondary; returns the survivors and the crashed node's IP.
async fn crash_a_secondary(nodes: &[Cluster]) -> (Vec<&Cluster>, &'static str) {
    let refs: Vec<&Cluster> = nodes.iter().collect();
    let p = agreed_primary(&refs).expect("an agreed primary");
    let v = a_secondary(nodes.len(), p);
    nodes[v].shutdown().await;
    let rest = (0..nodes.len())
        .filter(|&i| i != v)
        .map(|i| &nodes[i])
        .collect();
    (rest, IPS[v])
}

fn failures(nodes: &[&Cluster]) -> u64 {
    nodes.iter().map(|n| n.counters().discovery_failures).sum()
}

/// Control for the tests below: when the API server lists the survivors only, the
/// crashed node is removed (so the holds above were not just slow removal).
async fn control_removal(api: &FakeApi, rest: &[&Cluster], crashed: &str, port: u16) {
    let kept: Vec<&str> = IPS.iter().copied().filter(|ip| *ip != crashed).collect();
    api.apply(pods(&kept, port, true));
    let want: Vec<String> = kept.iter().map(|ip| format!("{ip}:{port}")).collect();
    wait_members(rest, &want, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_api_failures_leave_members_unchanged() {
    let (api, port, nodes, all) = formed().await;
    let (rest, crashed) = crash_a_secondary(&nodes).await;

    // A watch connection dropped mid-stream (kube resumes the watch).
    api.drop_watchers();
    hold_members(&rest, &all, 2 * GRACE, "watch dropped").await;

    // 410 Gone forces a relist, which answers 500, then 401.
    let before = failures(&rest);
    api.set_list_failure(Some(500));
    api.gone();
    hold_members(&rest, &all, 4 * GRACE, "API server answering 500").await;
    assert!(
        failures(&rest) > before,
        "no discovery failure reached the shell"
    );
    let before = failures(&rest);
    api.set_list_failure(Some(401));
    hold_members(&rest, &all, 4 * GRACE, "API server answering 401").await;
    assert!(failures(&rest) > before, "no 401 reached the shell");

    api.set_list_failure(None);
    control_removal(&api, &rest, crashed, port).await;
    for n in &rest {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_no_ready_endpoint_leaves_members_unchanged() {
    let (api, port, nodes, all) = formed().await;
    let (rest, crashed) = crash_a_secondary(&nodes).await;
    // Every endpoint not ready (a failing readiness probe everywhere): an empty answer.
    api.apply(pods(&IPS, port, false));
    hold_members(&rest, &all, 4 * GRACE, "all endpoints not ready").await;
    control_removal(&api, &rest, crashed, port).await;
    for n in &rest {
        n.shutdown().await;
    }
}

/// Time from the fake API server writing a watch event (a pod became ready) to the
/// core acting on the new address. A node not yet in a cluster probes a newly
/// discovered address at once (core `on_discovery`), so the first bytes arriving at the
/// new pod's listener mark the moment the snapshot went through the driver's push path
/// into the core and out as a probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_watch_event_to_core_latency() {
    init_tracing();
    let api = FakeApi::start().await;
    let new_pods = [
        "127.0.0.11",
        "127.0.0.12",
        "127.0.0.13",
        "127.0.0.14",
        "127.0.0.15",
    ];
    let mut ips = vec!["127.0.0.1"];
    ips.extend(new_pods);
    let (port, mut ls) = listeners_same_port(&ips).await;
    let pod_listeners = ls.split_off(1);
    api.apply(pods(&ips[..1], port, true));
    // min_nodes = 3 and one node listed: it stays out of any cluster and keeps probing.
    let node = ClusterBuilder::new(Arc::new(api.discovery()))
        .listener(ls.pop().unwrap())
        .config(discovery_config(GRACE))
        .start()
        .await
        .unwrap();
    api.wait_watchers(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut lat = Vec::new();
    for (i, l) in pod_listeners.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel::<Instant>();
        tokio::spawn(async move {
            let (mut conn, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1];
            conn.read_exact(&mut buf).await.unwrap();
            let _ = tx.send(Instant::now());
            // Keep the connection open (never answer) until the test ends.
            let mut sink = Vec::new();
            let _ = conn.read_to_end(&mut sink).await;
        });
        let written = api
            .apply(pods(&ips[..i + 2], port, true))
            .expect("the node is watching");
        let written = written.await.expect("event written");
        let arrived = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the new pod was never probed")
            .unwrap();
        lat.push(arrived.saturating_duration_since(written));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sorted = lat.clone();
    sorted.sort();
    println!(
        "k8s watch event -> core probe at the new pod (shell push path): median {:?}, max {:?}, all {lat:?}",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    assert!(
        sorted[sorted.len() - 1] < Duration::from_millis(500),
        "a watch event took {:?} to reach the core (goal: 100 ms)",
        sorted[sorted.len() - 1]
    );
    node.shutdown().await;
}
