//! End to end through kube-rs's real client and a fake Kubernetes API server (the
//! fixture of `discovery-adapters/tests/kubernetes.rs`): a failing API server or a
//! slice with no ready endpoint leaves the member list as it was; the time from a
//! watch event to the core acting on it; and, with `cluster-node` processes, automatic
//! recovery after losing two of three voters with `--k8s-pods` (the pod objects gone
//! prove them dead), none with `--k8s-service`.
//!
//! Nodes listen on 127.0.0.1..5 with one port: an EndpointSlice gives one port for all
//! its endpoints, and the nodes' pods share the port too.
#![cfg(all(feature = "kubernetes", not(madsim)))]

mod common;
#[path = "../../discovery-adapters/tests/support/fake_k8s.rs"]
mod fake_k8s;
#[path = "common/procs.rs"]
mod procs;

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

// ---------------------------------------------------------------------------------------
// `cluster-node` processes: recovery after losing a majority, by discovery source.

/// One process test at a time: `--fast` leases (45 ms) should not compete with another
/// fleet for the two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the survivors may take from the replacement processes' start to a primary
/// they all agree on (`--fast` recovers within about a second; the rest is slack for a
/// loaded machine).
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

/// `cluster-node` processes configured through the fake API server: a kubeconfig
/// pointing at it and `POD_NAMESPACE`, as in a pod. Killed on drop.
struct K8sNodes {
    dir: tempfile::TempDir,
    children: Vec<(String, std::process::Child)>,
}

impl K8sNodes {
    fn new(api: &FakeApi) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {}\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            api.addr,
            fake_k8s::NS
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        K8sNodes {
            dir,
            children: Vec::new(),
        }
    }

    /// Starts `cluster-node --listen ip:port --fast` with the discovery flags `flags`.
    fn spawn(&mut self, ip: &str, port: u16, flags: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{ip}.log"))).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cluster-node"))
            .args(["--listen", &format!("{ip}:{port}"), "--fast"])
            .args(flags)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("POD_NAMESPACE", fake_k8s::NS)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "warn,cluster_mode=info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cluster-node");
        self.children.push((ip.to_string(), child));
    }

    /// SIGKILL.
    fn kill(&mut self, ip: &str) {
        let i = self.children.iter().position(|(a, _)| a == ip).unwrap();
        let (_, mut child) = self.children.remove(i);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The node logs, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (ip, _) in &self.children {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{ip}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {ip} (last lines)\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for K8sNodes {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Forms three `cluster-node` processes on 127.0.0.1..3 with `flags`; returns them, the
/// port, and the index of a secondary (the survivor-to-be).
async fn three_processes(api: &FakeApi, flags: &[&str], port: u16) -> (K8sNodes, usize) {
    let mut nodes = K8sNodes::new(api);
    for ip in &IPS {
        nodes.spawn(ip, port, flags);
    }
    let addrs: Vec<std::net::SocketAddr> = IPS
        .iter()
        .map(|ip| format!("{ip}:{port}").parse().unwrap())
        .collect();
    let Some(primary) = procs::wait_agreed(&addrs, Duration::from_secs(20)).await else {
        panic!("three nodes never agreed on a primary\n{}", nodes.logs());
    };
    (nodes, a_secondary(3, primary))
}

const NEW_IPS: [&str; 2] = ["127.0.0.4", "127.0.0.5"];

/// Two of three nodes are SIGKILLed (the primary among them). Like a Deployment: two
/// new pods at new IPs run new processes, and the old pods are terminating until the
/// kubelet confirms their containers stopped. While they are listed (terminating),
/// nothing proves the old voters dead and the survivor waits; once their pod objects
/// are gone, `--k8s-pods` takes that as proof, and the survivor recovers with the new
/// processes: a primary agreed by the three live nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_pods_survivor_recovers_after_losing_two_of_three() {
    let _one = SERIAL.lock().await;
    init_tracing();
    let api = FakeApi::start().await;
    let all: Vec<&str> = IPS.iter().chain(&NEW_IPS).copied().collect();
    let (port, ls) = listeners_same_port(&all).await;
    drop(ls);
    for (i, ip) in IPS.iter().enumerate() {
        api.apply_pod(fake_k8s::pod(&format!("web-{i}"), Some(ip), "Running"));
    }
    let (mut nodes, survivor) =
        three_processes(&api, &["--k8s-pods", fake_k8s::POD_SELECTOR], port).await;

    let dead: Vec<usize> = (0..3).filter(|i| *i != survivor).collect();
    for &i in &dead {
        nodes.kill(IPS[i]);
        api.apply_pod(fake_k8s::terminating(fake_k8s::pod(
            &format!("web-{i}"),
            Some(IPS[i]),
            "Running",
        )));
    }
    for (i, ip) in NEW_IPS.iter().enumerate() {
        api.apply_pod(fake_k8s::pod(&format!("web-new-{i}"), Some(ip), "Running"));
        nodes.spawn(ip, port, &["--k8s-pods", fake_k8s::POD_SELECTOR]);
    }
    let live: Vec<std::net::SocketAddr> = std::iter::once(IPS[survivor])
        .chain(NEW_IPS)
        .map(|ip| format!("{ip}:{port}").parse().unwrap())
        .collect();

    // Terminating pods are listed: their processes may still run. No recovery.
    let why = procs::status_containing(live[0], "discovery still lists it").await;
    assert!(
        why.contains("\"Missing\""),
        "the survivor waits while the old pods terminate: {why}\n{}",
        nodes.logs()
    );
    assert_eq!(
        procs::wait_agreed(&live, Duration::from_secs(2)).await,
        None,
        "recovered while the old pods were still listed (terminating)"
    );

    // The kubelet confirmed: the pod objects are gone.
    for &i in &dead {
        api.delete_pod(&format!("web-{i}"));
    }
    let started = tokio::time::Instant::now();
    let Some(primary) = procs::wait_agreed(&live, RECOVERY_BOUND).await else {
        panic!(
            "no primary agreed by the survivor and the new pods within {RECOVERY_BOUND:?}\n{}",
            nodes.logs()
        );
    };
    println!(
        "k8s pods: survivor {} recovered with 2 new pods, primary {} agreed by all 3 live nodes {:?} after the old pod objects were deleted",
        live[0],
        live[primary],
        started.elapsed()
    );
    let st = api.lock();
    assert!(st.bad_requests.is_empty(), "{:?}", st.bad_requests);
    assert!(st.pod_selectors.iter().all(|s| s == fake_k8s::POD_SELECTOR));
}

/// The same loss with `--k8s-service`: the dead pods' endpoints are gone too, but
/// endpoints list ready pods only, so their absence proves nothing
/// (`discovery_proves_absence` stays false). The survivor does not recover and its
/// status says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_service_survivor_waits_for_an_operator() {
    let _one = SERIAL.lock().await;
    init_tracing();
    let api = FakeApi::start().await;
    let all: Vec<&str> = IPS.iter().chain(&NEW_IPS).copied().collect();
    let (port, ls) = listeners_same_port(&all).await;
    drop(ls);
    api.apply(pods(&IPS, port, true));
    let (mut nodes, survivor) =
        three_processes(&api, &["--k8s-service", fake_k8s::SVC], port).await;

    for ip in IPS
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != survivor)
        .map(|(_, ip)| ip)
    {
        nodes.kill(ip);
    }
    api.apply(pods(&[IPS[survivor], NEW_IPS[0], NEW_IPS[1]], port, true));
    for ip in NEW_IPS {
        nodes.spawn(ip, port, &["--k8s-service", fake_k8s::SVC]);
    }
    let addr: std::net::SocketAddr = format!("{}:{port}", IPS[survivor]).parse().unwrap();
    let why = procs::status_containing(addr, "no proof of death").await;
    assert!(
        why.contains("\"Missing\""),
        "the survivor's status names the missing voters: {why}\n{}",
        nodes.logs()
    );
    let live: Vec<std::net::SocketAddr> = std::iter::once(IPS[survivor])
        .chain(NEW_IPS)
        .map(|ip| format!("{ip}:{port}").parse().unwrap())
        .collect();
    assert_eq!(
        procs::wait_agreed(&live, Duration::from_secs(3)).await,
        None,
        "recovered without a proof of death"
    );
}
