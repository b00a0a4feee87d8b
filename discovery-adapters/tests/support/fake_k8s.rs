//! A fake Kubernetes API server for EndpointSlice and Pod discovery tests: HTTP/1.1 on
//! loopback, list and chunked watch streams with ADDED/MODIFIED/DELETED/BOOKMARK/ERROR,
//! failing lists, dropped connections. It serves the EndpointSlices of Service [`SVC`]
//! and the Pods matching [`POD_SELECTOR`] in namespace [`NS`] (or the namespace and
//! Service given to [`FakeApi::start_serving`]); any other path or label
//! selector gets a 400 and is recorded in `bad_requests`. Shared by `discovery-adapters/tests/kubernetes.rs`
//! and the shell's end-to-end tests (`shell-tokio/tests/k8s_e2e.rs`, through
//! `#[path]`): test-only code, so it is a source file both test crates include rather
//! than public API of either crate.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_mode_discovery::{
    kube, KubernetesConfig, KubernetesDiscovery, KubernetesPodsConfig, KubernetesPodsDiscovery,
    PortSelector,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

pub const NS: &str = "prod";
pub const SVC: &str = "web";
/// The label selector the fake serves Pods for.
pub const POD_SELECTOR: &str = "app=web,tier in (cluster)";
pub const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The fake API server.

pub enum Cmd {
    Line(String, Option<oneshot::Sender<Instant>>),
    End,
    Drop,
    /// The connection stays open and says nothing more, whatever happens (a peer that
    /// vanished without a FIN or RST).
    Hang,
}

/// Which collection a request or an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Slices,
    Pods,
}

#[derive(Default)]
pub struct State {
    /// The namespace served ([`NS`] unless started with [`FakeApi::start_serving`]).
    pub ns: String,
    /// The Service whose EndpointSlices are served ([`SVC`] unless started otherwise).
    pub svc: String,
    pub rv: u64,
    /// Watches from below this resourceVersion get 410 Gone (history compacted).
    pub compacted: u64,
    pub slices: BTreeMap<String, Value>,
    pub pods: BTreeMap<String, Value>,
    pub history: Vec<(u64, Kind, String)>,
    pub list_fail: Option<u16>,
    pub list_requests: u64,
    pub watch_requests: Vec<String>,
    pub bad_requests: Vec<String>,
    /// The decoded `labelSelector` of every Pod request (list and watch).
    pub pod_selectors: Vec<String>,
    pub watchers: Vec<(Kind, mpsc::UnboundedSender<Cmd>)>,
}

#[derive(Clone)]
pub struct FakeApi {
    pub state: Arc<Mutex<State>>,
    pub addr: SocketAddr,
}

pub fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
           "message":message,"reason":reason,"code":code})
}

impl FakeApi {
    pub async fn start() -> Self {
        Self::start_serving(NS, SVC).await
    }

    /// Like [`start`](Self::start), serving the EndpointSlices of Service `svc` and the
    /// Pods in namespace `ns`.
    pub async fn start_serving(ns: &str, svc: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeApi {
            state: Arc::new(Mutex::new(State {
                ns: ns.to_string(),
                svc: svc.to_string(),
                rv: 100,
                ..State::default()
            })),
            addr,
        };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                // Like the real API server (Go sets TCP_NODELAY): no Nagle delay on events.
                conn.set_nodelay(true).unwrap();
                let server = server.clone();
                tokio::spawn(async move {
                    let _ = server.serve(conn).await;
                });
            }
        });
        fake
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    pub fn discovery(&self) -> KubernetesDiscovery {
        let config = KubernetesConfig::new(NS, SVC, PortSelector::Name("cluster".into()))
            .with_retry(Duration::from_millis(50), Duration::from_millis(400));
        KubernetesDiscovery::new(self.client(), config).unwrap()
    }

    /// Pod discovery of [`POD_SELECTOR`] in [`NS`], cluster port 7000, fast retries.
    pub fn pods_discovery(&self) -> KubernetesPodsDiscovery {
        self.pods_discovery_on(PortSelector::Number(7000))
    }

    /// Like [`pods_discovery`](Self::pods_discovery) with another port selector.
    pub fn pods_discovery_on(&self, port: PortSelector) -> KubernetesPodsDiscovery {
        let config = KubernetesPodsConfig::new(NS, POD_SELECTOR, port)
            .with_retry(Duration::from_millis(50), Duration::from_millis(400));
        KubernetesPodsDiscovery::new(self.client(), config).unwrap()
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// ADDED or MODIFIED, pushed to the watchers. Returns when the first watcher wrote it.
    pub fn apply(&self, mut slice: Value) -> Option<oneshot::Receiver<Instant>> {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        slice["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = slice["metadata"]["name"].as_str().unwrap().to_string();
        let kind = if st.slices.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.slices.insert(name, slice.clone());
        let line = json!({"type": kind, "object": slice}).to_string();
        Self::broadcast(&mut st, Kind::Slices, rv, line)
    }

    pub fn delete(&self, name: &str) -> Option<oneshot::Receiver<Instant>> {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        let mut slice = st.slices.remove(name).expect("no such slice");
        slice["metadata"]["resourceVersion"] = json!(rv.to_string());
        let line = json!({"type": "DELETED", "object": slice}).to_string();
        Self::broadcast(&mut st, Kind::Slices, rv, line)
    }

    /// A pod ADDED or MODIFIED, pushed to the Pod watchers.
    pub fn apply_pod(&self, mut pod: Value) -> Option<oneshot::Receiver<Instant>> {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        let kind = if st.pods.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.pods.insert(name, pod.clone());
        let line = json!({"type": kind, "object": pod}).to_string();
        Self::broadcast(&mut st, Kind::Pods, rv, line)
    }

    /// The pod object removed (what the API server does once the kubelet confirmed
    /// that its containers stopped, or at once on a forced deletion).
    pub fn delete_pod(&self, name: &str) -> Option<oneshot::Receiver<Instant>> {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        let mut pod = st.pods.remove(name).expect("no such pod");
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let line = json!({"type": "DELETED", "object": pod}).to_string();
        Self::broadcast(&mut st, Kind::Pods, rv, line)
    }

    pub fn broadcast(
        st: &mut State,
        kind: Kind,
        rv: u64,
        line: String,
    ) -> Option<oneshot::Receiver<Instant>> {
        st.history.push((rv, kind, line.clone()));
        st.watchers.retain(|(_, w)| !w.is_closed());
        let mut first = None;
        for (_, w) in st.watchers.iter().filter(|(k, _)| *k == kind) {
            let (tx, rx) = oneshot::channel();
            if w.send(Cmd::Line(line.clone(), Some(tx))).is_ok() && first.is_none() {
                first = Some(rx);
            }
        }
        first
    }

    /// Changes state without any event and compacts history: only a relist sees it.
    pub fn set_silently(&self, mut slice: Value) {
        let mut st = self.lock();
        st.rv += 1;
        slice["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let name = slice["metadata"]["name"].as_str().unwrap().to_string();
        st.slices.insert(name, slice);
        st.compacted = st.rv;
        st.history.clear();
    }

    pub fn send_to_watchers(&self, make: impl Fn() -> Cmd) {
        let mut st = self.lock();
        st.watchers.retain(|(_, w)| !w.is_closed());
        for (_, w) in &st.watchers {
            let _ = w.send(make());
        }
    }

    pub fn gone(&self) {
        let line =
            json!({"type":"ERROR","object":status_json(410,"Expired","too old resource version")})
                .to_string();
        self.send_to_watchers(|| Cmd::Line(line.clone(), None));
        self.send_to_watchers(|| Cmd::End);
    }

    pub fn bookmark_and_end(&self) -> u64 {
        let rv = {
            let mut st = self.lock();
            st.rv += 1;
            st.rv
        };
        let line = json!({"type":"BOOKMARK","object":{"kind":"EndpointSlice",
            "apiVersion":"discovery.k8s.io/v1","metadata":{"resourceVersion": rv.to_string()}}})
        .to_string();
        self.send_to_watchers(|| Cmd::Line(line.clone(), None));
        self.send_to_watchers(|| Cmd::End);
        rv
    }

    pub fn hang_watchers(&self) {
        self.send_to_watchers(|| Cmd::Hang);
    }

    pub fn drop_watchers(&self) {
        self.send_to_watchers(|| Cmd::Drop);
    }

    pub fn set_list_failure(&self, code: Option<u16>) {
        self.lock().list_fail = code;
    }

    pub fn list_requests(&self) -> u64 {
        self.lock().list_requests
    }

    pub fn watch_requests(&self) -> Vec<String> {
        self.lock().watch_requests.clone()
    }

    pub async fn wait_watchers(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let mut st = self.lock();
                st.watchers.retain(|(_, w)| !w.is_closed());
                if st.watchers.len() >= n {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no watch request arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn wait_list_requests(&self, n: u64) {
        let deadline = Instant::now() + WAIT;
        while self.list_requests() < n {
            assert!(Instant::now() < deadline, "expected {n} list requests");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn serve(&self, conn: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = conn.into_split();
        let mut read = BufReader::new(read);
        loop {
            let mut request_line = String::new();
            if read.read_line(&mut request_line).await? == 0 {
                return Ok(());
            }
            loop {
                let mut header = String::new();
                if read.read_line(&mut header).await? == 0 {
                    return Ok(());
                }
                if header == "\r\n" || header == "\n" {
                    break;
                }
            }
            let target = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let params: BTreeMap<String, String> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                .collect();
            let params: BTreeMap<&str, &str> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let selector = params.get("labelSelector").copied().unwrap_or("");
            let (ns, svc) = {
                let st = self.lock();
                (st.ns.clone(), st.svc.clone())
            };
            let kind = if path
                == format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices")
                && selector == format!("kubernetes.io/service-name={svc}")
            {
                Some(Kind::Slices)
            } else if path == format!("/api/v1/namespaces/{ns}/pods") {
                self.lock().pod_selectors.push(selector.to_string());
                (selector == POD_SELECTOR).then_some(Kind::Pods)
            } else {
                None
            };
            let Some(kind) = kind else {
                self.lock().bad_requests.push(target.clone());
                let body = status_json(400, "BadRequest", "unexpected request").to_string();
                respond(&mut write, 400, &body).await?;
                continue;
            };
            if params.get("watch") == Some(&"true") {
                let from: u64 = params
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let (tx, mut rx) = mpsc::unbounded_channel();
                let replay: Result<Vec<String>, ()> = {
                    let mut st = self.lock();
                    st.watch_requests.push(from.to_string());
                    if from < st.compacted {
                        Err(())
                    } else {
                        st.watchers.push((kind, tx));
                        Ok(st
                            .history
                            .iter()
                            .filter(|(rv, k, _)| *rv > from && *k == kind)
                            .map(|(_, _, l)| l.clone())
                            .collect())
                    }
                };
                write
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await?;
                match replay {
                    Err(()) => {
                        let line = json!({"type":"ERROR","object":status_json(410,"Expired","too old resource version")}).to_string();
                        write_chunk(&mut write, &line).await?;
                        write.write_all(b"0\r\n\r\n").await?;
                        continue;
                    }
                    Ok(lines) => {
                        for line in lines {
                            write_chunk(&mut write, &line).await?;
                        }
                    }
                }
                loop {
                    match rx.recv().await {
                        Some(Cmd::Line(line, done)) => {
                            write_chunk(&mut write, &line).await?;
                            if let Some(done) = done {
                                let _ = done.send(Instant::now());
                            }
                        }
                        Some(Cmd::End) => {
                            write.write_all(b"0\r\n\r\n").await?;
                            write.flush().await?;
                            break;
                        }
                        Some(Cmd::Hang) => std::future::pending::<()>().await,
                        Some(Cmd::Drop) | None => {
                            // Half a chunk, then the connection goes away.
                            write.write_all(b"40\r\n{\"type\":\"MOD").await?;
                            write.flush().await?;
                            return Ok(());
                        }
                    }
                }
            } else {
                let (code, body) = {
                    let mut st = self.lock();
                    st.list_requests += 1;
                    match st.list_fail {
                        Some(401) => (401, status_json(401, "Unauthorized", "Unauthorized")),
                        Some(code) => (code, status_json(code, "InternalError", "etcd is on fire")),
                        None if kind == Kind::Slices => (
                            200,
                            json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSliceList",
                            "metadata":{"resourceVersion": st.rv.to_string()},
                            "items": st.slices.values().cloned().collect::<Vec<_>>()}),
                        ),
                        None => (
                            200,
                            json!({"apiVersion":"v1","kind":"PodList",
                            "metadata":{"resourceVersion": st.rv.to_string()},
                            "items": st.pods.values().cloned().collect::<Vec<_>>()}),
                        ),
                    }
                };
                respond(&mut write, code, &body.to_string()).await?;
            }
        }
    }
}

/// `%XX` escapes and `+` (a space in a query) decoded.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn respond(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    code: u16,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body.as_bytes()).await?;
    w.flush().await
}

pub async fn write_chunk(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    line: &str,
) -> std::io::Result<()> {
    let data = format!("{line}\n");
    w.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await?;
    w.flush().await
}

/// (ip, pod, ready, terminating)
pub fn slice(name: &str, endpoints: &[(&str, &str, bool, bool)]) -> Value {
    slice_with_port(name, endpoints, 7000)
}

/// Like [`slice`], with the `cluster` port set to `port`.
pub fn slice_with_port(name: &str, endpoints: &[(&str, &str, bool, bool)], port: u16) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, pod, ready, terminating)| {
            json!({"addresses":[ip],
                   "conditions":{"ready":ready,"serving":ready,"terminating":terminating},
                   "targetRef":{"kind":"Pod","name":pod,"namespace":NS,"uid":format!("uid-{pod}")},
                   "nodeName":"node-1"})
        })
        .collect();
    json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
           "metadata":{"name":name,"namespace":NS,"labels":{"kubernetes.io/service-name":SVC}},
           "addressType":"IPv4",
           "ports":[{"name":"metrics","port":9090,"protocol":"TCP"},{"name":"cluster","port":port,"protocol":"TCP"}],
           "endpoints":endpoints})
}

/// A pod matching [`POD_SELECTOR`] in `phase`, at `ip` (`None`: no IP yet), with a
/// container port named `cluster` = 7000. `Running` pods are ready and their container
/// runs; `Succeeded`/`Failed` pods' container terminated; others' container waits.
pub fn pod(name: &str, ip: Option<&str>, phase: &str) -> Value {
    let running = phase == "Running";
    let state = match phase {
        "Running" => json!({"running":{"startedAt":"2026-01-01T00:00:00Z"}}),
        "Succeeded" | "Failed" => {
            json!({"terminated":{"exitCode": if phase == "Failed" {1} else {0}}})
        }
        _ => json!({"waiting":{"reason":"ContainerCreating"}}),
    };
    let mut status = json!({
        "phase": phase,
        "conditions": [{"type":"Ready","status": if running {"True"} else {"False"}}],
        "containerStatuses": [{"name":"app","ready":running,"restartCount":0,
            "image":"my-app:1","imageID":"sha256:1","state":state}],
    });
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    json!({"apiVersion":"v1","kind":"Pod",
           "metadata":{"name":name,"namespace":NS,"uid":format!("uid-{name}"),
                       "labels":{"app":"web","tier":"cluster"}},
           "spec":{"nodeName":"node-1","containers":[{"name":"app","image":"my-app:1",
                   "ports":[{"name":"metrics","containerPort":9090},
                            {"name":"cluster","containerPort":7000}]}]},
           "status":status})
}

/// `pod` being deleted gracefully: `deletionTimestamp` set, its containers still
/// running until the kubelet stops them.
pub fn terminating(mut pod: Value) -> Value {
    pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    pod
}

/// `pod` with its `Ready` condition false (a failing readiness probe).
pub fn not_ready(mut pod: Value) -> Value {
    pod["status"]["conditions"] = json!([{"type":"Ready","status":"False"}]);
    pod
}
