//! KubernetesDiscovery with kube-rs's real client against a fake API server speaking
//! HTTP/1.1 on loopback (list, chunked watch streams, errors, dropped connections).
#![cfg(feature = "kubernetes")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_mode_discovery::{
    Discovery, DiscoveryError, DiscoveryResult, Instance, KubernetesConfig, KubernetesDiscovery,
    PortSelector, SnapshotStream,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const NS: &str = "prod";
const SVC: &str = "web";
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The fake API server.

enum Cmd {
    Line(String, Option<oneshot::Sender<Instant>>),
    End,
    Drop,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Watches from below this resourceVersion get 410 Gone (history compacted).
    compacted: u64,
    slices: BTreeMap<String, Value>,
    history: Vec<(u64, String)>,
    list_fail: Option<u16>,
    list_requests: u64,
    watch_requests: Vec<String>,
    bad_requests: Vec<String>,
    watchers: Vec<mpsc::UnboundedSender<Cmd>>,
}

#[derive(Clone)]
struct FakeApi {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
           "message":message,"reason":reason,"code":code})
}

impl FakeApi {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeApi {
            state: Arc::new(Mutex::new(State {
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

    fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn discovery(&self) -> KubernetesDiscovery {
        let config = KubernetesConfig::new(NS, SVC, PortSelector::Name("cluster".into()))
            .with_retry(Duration::from_millis(50), Duration::from_millis(400));
        KubernetesDiscovery::new(self.client(), config).unwrap()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// ADDED or MODIFIED, pushed to the watchers. Returns when the first watcher wrote it.
    fn apply(&self, mut slice: Value) -> Option<oneshot::Receiver<Instant>> {
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
        Self::broadcast(&mut st, rv, line)
    }

    fn delete(&self, name: &str) -> Option<oneshot::Receiver<Instant>> {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        let mut slice = st.slices.remove(name).expect("no such slice");
        slice["metadata"]["resourceVersion"] = json!(rv.to_string());
        let line = json!({"type": "DELETED", "object": slice}).to_string();
        Self::broadcast(&mut st, rv, line)
    }

    fn broadcast(st: &mut State, rv: u64, line: String) -> Option<oneshot::Receiver<Instant>> {
        st.history.push((rv, line.clone()));
        st.watchers.retain(|w| !w.is_closed());
        let mut first = None;
        for w in &st.watchers {
            let (tx, rx) = oneshot::channel();
            if w.send(Cmd::Line(line.clone(), Some(tx))).is_ok() && first.is_none() {
                first = Some(rx);
            }
        }
        first
    }

    /// Changes state without any event and compacts history: only a relist sees it.
    fn set_silently(&self, mut slice: Value) {
        let mut st = self.lock();
        st.rv += 1;
        slice["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let name = slice["metadata"]["name"].as_str().unwrap().to_string();
        st.slices.insert(name, slice);
        st.compacted = st.rv;
        st.history.clear();
    }

    fn send_to_watchers(&self, make: impl Fn() -> Cmd) {
        let mut st = self.lock();
        st.watchers.retain(|w| !w.is_closed());
        for w in &st.watchers {
            let _ = w.send(make());
        }
    }

    fn gone(&self) {
        let line =
            json!({"type":"ERROR","object":status_json(410,"Expired","too old resource version")})
                .to_string();
        self.send_to_watchers(|| Cmd::Line(line.clone(), None));
        self.send_to_watchers(|| Cmd::End);
    }

    fn bookmark_and_end(&self) -> u64 {
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

    fn drop_watchers(&self) {
        self.send_to_watchers(|| Cmd::Drop);
    }

    fn set_list_failure(&self, code: Option<u16>) {
        self.lock().list_fail = code;
    }

    fn list_requests(&self) -> u64 {
        self.lock().list_requests
    }

    fn watch_requests(&self) -> Vec<String> {
        self.lock().watch_requests.clone()
    }

    async fn wait_watchers(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let mut st = self.lock();
                st.watchers.retain(|w| !w.is_closed());
                if st.watchers.len() >= n {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no watch request arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn wait_list_requests(&self, n: u64) {
        let deadline = Instant::now() + WAIT;
        while self.list_requests() < n {
            assert!(Instant::now() < deadline, "expected {n} list requests");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn serve(&self, conn: TcpStream) -> std::io::Result<()> {
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
            let query = query.replace("%2F", "/").replace("%3D", "=");
            let params: BTreeMap<&str, &str> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let expected_path = format!("/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices");
            let selector_ok =
                query.contains(&format!("labelSelector=kubernetes.io/service-name={SVC}"));
            if path != expected_path || !selector_ok {
                self.lock().bad_requests.push(target.clone());
                let body = status_json(400, "BadRequest", "unexpected request").to_string();
                respond(&mut write, 400, &body).await?;
                continue;
            }
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
                        st.watchers.push(tx);
                        Ok(st
                            .history
                            .iter()
                            .filter(|(rv, _)| *rv > from)
                            .map(|(_, l)| l.clone())
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
                        None => (
                            200,
                            json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSliceList",
                            "metadata":{"resourceVersion": st.rv.to_string()},
                            "items": st.slices.values().cloned().collect::<Vec<_>>()}),
                        ),
                    }
                };
                respond(&mut write, code, &body.to_string()).await?;
            }
        }
    }
}

async fn respond(
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

async fn write_chunk(w: &mut tokio::net::tcp::OwnedWriteHalf, line: &str) -> std::io::Result<()> {
    let data = format!("{line}\n");
    w.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await?;
    w.flush().await
}

/// (ip, pod, ready, terminating)
fn slice(name: &str, endpoints: &[(&str, &str, bool, bool)]) -> Value {
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
           "ports":[{"name":"metrics","port":9090,"protocol":"TCP"},{"name":"cluster","port":7000,"protocol":"TCP"}],
           "endpoints":endpoints})
}

fn addrs(snapshot: &[Instance]) -> Vec<String> {
    snapshot.iter().map(|i| i.addr.to_string()).collect()
}

/// Next pushed value; fails the test on timeout or a closed stream.
async fn next(stream: &mut SnapshotStream) -> DiscoveryResult {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no snapshot pushed in time")
        .expect("stream closed")
}

/// Waits for a pushed snapshot with exactly these addresses; every value seen on the way
/// must be a successful, non-empty snapshot (errors and empty lists fail the test).
async fn expect_addrs(stream: &mut SnapshotStream, want: &[&str]) -> Instant {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "never saw {want:?}");
        let snap = next(stream).await.expect("unexpected discovery error");
        assert!(!snap.is_empty(), "an empty snapshot was pushed");
        if addrs(&snap) == want {
            return Instant::now();
        }
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn list_watch_scale_slices_bookmark_gone_and_drop() {
    init_tracing();
    let api = FakeApi::start().await;
    api.apply(slice(
        "web-a",
        &[
            ("10.0.0.1", "web-1", true, false),
            ("10.0.0.2", "web-2", true, false),
        ],
    ));
    let discovery = api.discovery();
    let mut stream = discovery.watch().expect("kubernetes pushes");

    // Initial list.
    expect_addrs(&mut stream, &["10.0.0.1:7000", "10.0.0.2:7000"]).await;
    let snap = discovery.snapshot().await.unwrap();
    assert_eq!(snap[0].name.as_deref(), Some("web-1"));
    assert_eq!(
        snap[0].metadata.get("k8s.pod").map(String::as_str),
        Some("web-1")
    );
    assert_eq!(
        snap[0].metadata.get("k8s.node").map(String::as_str),
        Some("node-1")
    );
    assert!(snap.iter().all(|i| i.ready));
    api.wait_watchers(1).await;

    let mut latencies = Vec::new();

    // Scale up.
    let w = api.apply(slice(
        "web-a",
        &[
            ("10.0.0.1", "web-1", true, false),
            ("10.0.0.2", "web-2", true, false),
            ("10.0.0.3", "web-3", true, false),
        ],
    ));
    let t = expect_addrs(
        &mut stream,
        &["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"],
    )
    .await;
    latencies.push(latency(w, t).await);

    // A not-ready endpoint and a terminating one are not listed.
    let w = api.apply(slice(
        "web-a",
        &[
            ("10.0.0.1", "web-1", true, false),
            ("10.0.0.2", "web-2", false, false),
            ("10.0.0.3", "web-3", true, true),
        ],
    ));
    let t = expect_addrs(&mut stream, &["10.0.0.1:7000"]).await;
    latencies.push(latency(w, t).await);

    // A second slice: union.
    let w = api.apply(slice("web-b", &[("10.0.1.1", "web-4", true, false)]));
    let t = expect_addrs(&mut stream, &["10.0.0.1:7000", "10.0.1.1:7000"]).await;
    latencies.push(latency(w, t).await);

    // The first slice deleted.
    let w = api.delete("web-a");
    let t = expect_addrs(&mut stream, &["10.0.1.1:7000"]).await;
    latencies.push(latency(w, t).await);

    // A BOOKMARK then a clean end of the watch: re-watch from the bookmark's version,
    // without a relist.
    let lists_before = api.list_requests();
    let bookmark_rv = api.bookmark_and_end();
    let deadline = Instant::now() + WAIT;
    while !api.watch_requests().contains(&bookmark_rv.to_string()) {
        assert!(
            Instant::now() < deadline,
            "no re-watch from the bookmark: {:?}",
            api.watch_requests()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        api.list_requests(),
        lists_before,
        "a bookmark must not cause a relist"
    );
    api.wait_watchers(1).await;

    // Changes the watch never reports (history compacted), then 410 Gone: only a relist
    // can find them.
    api.set_silently(slice(
        "web-b",
        &[
            ("10.0.1.1", "web-4", true, false),
            ("10.0.1.2", "web-5", true, false),
        ],
    ));
    api.gone();
    expect_addrs(&mut stream, &["10.0.1.1:7000", "10.0.1.2:7000"]).await;
    assert!(
        api.list_requests() > lists_before,
        "410 Gone must cause a relist"
    );

    // The connection dropped mid-stream, a change made while nobody watches: the watch
    // resumes from the last resourceVersion and the server replays what was missed.
    api.wait_watchers(1).await;
    api.drop_watchers();
    api.apply(slice(
        "web-b",
        &[
            ("10.0.1.1", "web-4", true, false),
            ("10.0.1.2", "web-5", true, false),
            ("10.0.1.3", "web-7", true, false),
        ],
    ));
    expect_addrs(
        &mut stream,
        &["10.0.1.1:7000", "10.0.1.2:7000", "10.0.1.3:7000"],
    )
    .await;

    // Dropped mid-stream while the history was compacted: the resumed watch gets 410,
    // which relists; the state is still right.
    api.wait_watchers(1).await;
    let lists_before = api.list_requests();
    api.set_silently(slice("web-b", &[("10.0.1.2", "web-5", true, false)]));
    api.drop_watchers();
    expect_addrs(&mut stream, &["10.0.1.2:7000"]).await;
    assert!(
        api.list_requests() > lists_before,
        "a compacted resume must cause a relist"
    );

    // And the watch works again afterwards.
    api.wait_watchers(1).await;
    let w = api.apply(slice("web-c", &[("10.0.2.1", "web-6", true, false)]));
    let t = expect_addrs(&mut stream, &["10.0.1.2:7000", "10.0.2.1:7000"]).await;
    latencies.push(latency(w, t).await);

    assert!(
        api.lock().bad_requests.is_empty(),
        "{:?}",
        api.lock().bad_requests
    );
    latencies.sort();
    let max = *latencies.last().unwrap();
    let median = latencies[latencies.len() / 2];
    println!(
        "k8s watch event written -> snapshot received: n={} median={median:?} max={max:?} all={latencies:?}",
        latencies.len()
    );
    assert!(
        max < Duration::from_secs(2),
        "event->snapshot latency {max:?}"
    );
}

/// From the instant the fake server flushed the event to the instant the snapshot was
/// received.
async fn latency(written: Option<oneshot::Receiver<Instant>>, arrived: Instant) -> Duration {
    let written = written
        .expect("a watcher was connected")
        .await
        .expect("event written");
    arrived.saturating_duration_since(written)
}

#[tokio::test]
async fn unauthorized_then_fixed_never_pushes_empty() {
    init_tracing();
    let api = FakeApi::start().await;
    api.apply(slice("web-a", &[("10.0.0.1", "web-1", true, false)]));
    api.set_list_failure(Some(401));
    let discovery = api.discovery();
    let mut stream = discovery.watch().unwrap();
    match next(&mut stream).await {
        Err(DiscoveryError::Unauthorized { status: 401, .. }) => {}
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    match discovery.snapshot().await {
        Err(DiscoveryError::Unauthorized { status: 401, .. }) => {}
        other => panic!("expected Unauthorized from snapshot, got {other:?}"),
    }
    // Retried with backoff while failing.
    api.wait_list_requests(3).await;
    // RBAC fixed: the real list arrives; nothing empty was pushed in between.
    api.set_list_failure(None);
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline);
        match next(&mut stream).await {
            Ok(snap) => {
                assert_eq!(addrs(&snap), ["10.0.0.1:7000"]);
                break;
            }
            Err(DiscoveryError::Unauthorized { .. }) => continue,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn server_error_on_relist_is_surfaced_not_empty() {
    init_tracing();
    let api = FakeApi::start().await;
    api.apply(slice("web-a", &[("10.0.0.1", "web-1", true, false)]));
    let discovery = api.discovery();
    let mut stream = discovery.watch().unwrap();
    expect_addrs(&mut stream, &["10.0.0.1:7000"]).await;
    api.wait_watchers(1).await;

    // The API server breaks: the watch ends with 410 Gone and every list answers 500.
    api.set_list_failure(Some(500));
    api.gone();
    match next(&mut stream).await {
        Err(DiscoveryError::Api {
            status: 500,
            reason,
            ..
        }) => assert_eq!(reason, "InternalError"),
        other => panic!("expected a typed 500, got {other:?}"),
    }
    assert!(matches!(
        discovery.snapshot().await,
        Err(DiscoveryError::Api { status: 500, .. })
    ));

    // Recovery: the old state comes back, never an empty list.
    api.set_list_failure(None);
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline);
        match next(&mut stream).await {
            Ok(snap) => {
                assert_eq!(addrs(&snap), ["10.0.0.1:7000"]);
                break;
            }
            Err(DiscoveryError::Api { status: 500, .. }) => continue,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn unreachable_api_server_is_a_connection_error() {
    init_tracing();
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let discovery = KubernetesDiscovery::new(
        client,
        KubernetesConfig::new(NS, SVC, PortSelector::Number(7000)),
    )
    .unwrap();
    match discovery.snapshot().await {
        Err(DiscoveryError::Connection { detail, .. }) => println!("connection error: {detail}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let api = FakeApi::start().await;
    for config in [
        KubernetesConfig::new("", SVC, PortSelector::Number(1)),
        KubernetesConfig::new(NS, "", PortSelector::Number(1)),
        KubernetesConfig::new(NS, SVC, PortSelector::Number(0)),
        KubernetesConfig::new(NS, SVC, PortSelector::Name(String::new())),
    ] {
        let err = KubernetesDiscovery::new(api.client(), config).unwrap_err();
        assert!(
            matches!(err, DiscoveryError::InvalidConfig { .. }),
            "{err:?}"
        );
    }
}
