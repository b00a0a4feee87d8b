//! KubernetesDiscovery (EndpointSlices) and KubernetesPodsDiscovery (Pods) with kube-rs's
//! real client against a fake API server speaking HTTP/1.1 on loopback (list, chunked
//! watch streams, errors, dropped connections).
#![cfg(feature = "kubernetes")]

use std::time::{Duration, Instant};

use cluster_mode_discovery::{
    Discovery, DiscoveryError, DiscoveryResult, Instance, KubernetesConfig, KubernetesDiscovery,
    KubernetesPodsConfig, KubernetesPodsDiscovery, PortSelector, SnapshotStream,
};
use tokio::sync::oneshot;

#[path = "support/fake_k8s.rs"]
mod fake_k8s;
use fake_k8s::{not_ready, pod, slice, terminating, FakeApi, NS, POD_SELECTOR, SVC, WAIT};

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

// ---------------------------------------------------------------------------------------
// Pods: every pod whose containers may run is listed, so absence proves death.

fn meta<'a>(snap: &'a [Instance], addr: &str, key: &str) -> Option<&'a str> {
    snap.iter()
        .find(|i| i.addr.to_string() == addr)
        .and_then(|i| i.metadata.get(key))
        .map(String::as_str)
}

#[tokio::test]
async fn pods_running_and_terminating_are_listed_stopped_and_ip_less_are_not() {
    init_tracing();
    let api = FakeApi::start().await;
    api.apply_pod(pod("web-1", Some("10.0.0.1"), "Running"));
    api.apply_pod(not_ready(pod("web-2", Some("10.0.0.2"), "Running")));
    api.apply_pod(pod("web-3", None, "Pending"));
    api.apply_pod(pod("web-4", Some("10.0.0.4"), "Succeeded"));
    api.apply_pod(pod("web-5", Some("10.0.0.5"), "Failed"));
    api.apply_pod(terminating(pod("web-6", Some("10.0.0.6"), "Running")));
    api.apply_pod(pod("web-7", Some("10.0.0.7"), "Pending"));
    api.apply_pod(pod("web-8", Some("10.0.0.8"), "Unknown"));
    // A terminal phase written while a container still runs: listed until it stops.
    let mut early = pod("web-9", Some("10.0.0.9"), "Failed");
    early["status"]["containerStatuses"][0]["state"] =
        serde_json::json!({"running":{"startedAt":"2026-01-01T00:00:00Z"}});
    api.apply_pod(early);
    let discovery = api.pods_discovery();
    let mut stream = discovery.watch().expect("pods are pushed");

    let listed = [
        "10.0.0.1:7000",
        "10.0.0.2:7000",
        "10.0.0.6:7000",
        "10.0.0.7:7000",
        "10.0.0.8:7000",
        "10.0.0.9:7000",
    ];
    expect_addrs(&mut stream, &listed).await;
    let snap = discovery.snapshot().await.unwrap();
    assert_eq!(addrs(&snap), listed);
    // Every listed pod is `ready` (it may run): the shell hands only ready instances to
    // the core, and an address it does not get counts as absent.
    assert!(snap.iter().all(|i| i.ready));
    assert_eq!(snap[0].name.as_deref(), Some("web-1"));
    assert_eq!(meta(&snap, "10.0.0.1:7000", "k8s.ready"), Some("true"));
    assert_eq!(meta(&snap, "10.0.0.2:7000", "k8s.ready"), Some("false"));
    assert_eq!(
        meta(&snap, "10.0.0.6:7000", "k8s.terminating"),
        Some("true")
    );
    assert_eq!(
        meta(&snap, "10.0.0.1:7000", "k8s.terminating"),
        Some("false")
    );
    assert_eq!(meta(&snap, "10.0.0.8:7000", "k8s.phase"), Some("Unknown"));
    assert_eq!(meta(&snap, "10.0.0.1:7000", "k8s.uid"), Some("uid-web-1"));
    assert_eq!(meta(&snap, "10.0.0.1:7000", "k8s.node"), Some("node-1"));
    assert_eq!(meta(&snap, "10.0.0.1:7000", "k8s.namespace"), Some(NS));
    api.wait_watchers(1).await;

    // web-1 is deleted gracefully: terminating, its container still runs, still listed.
    api.apply_pod(terminating(pod("web-1", Some("10.0.0.1"), "Running")));
    // web-3 got its IP; web-7 failed; web-9's container stopped.
    api.apply_pod(pod("web-3", Some("10.0.0.3"), "Running"));
    api.apply_pod(pod("web-7", Some("10.0.0.7"), "Failed"));
    api.apply_pod(pod("web-9", Some("10.0.0.9"), "Failed"));
    let now = [
        "10.0.0.1:7000",
        "10.0.0.2:7000",
        "10.0.0.3:7000",
        "10.0.0.6:7000",
        "10.0.0.8:7000",
    ];
    expect_addrs(&mut stream, &now).await;
    let snap = discovery.snapshot().await.unwrap();
    assert_eq!(
        meta(&snap, "10.0.0.1:7000", "k8s.terminating"),
        Some("true")
    );

    // The kubelet confirmed that web-1's containers stopped: the object is gone, and so
    // is its address.
    api.delete_pod("web-1");
    expect_addrs(
        &mut stream,
        &[
            "10.0.0.2:7000",
            "10.0.0.3:7000",
            "10.0.0.6:7000",
            "10.0.0.8:7000",
        ],
    )
    .await;

    // 410 Gone relists, a dropped watch resumes: the same answer, never an empty one.
    let lists = api.list_requests();
    api.set_list_failure(None);
    api.gone();
    api.wait_list_requests(lists + 1).await;
    api.wait_watchers(1).await;
    api.drop_watchers();
    api.delete_pod("web-6");
    expect_addrs(
        &mut stream,
        &["10.0.0.2:7000", "10.0.0.3:7000", "10.0.0.8:7000"],
    )
    .await;

    let st = api.lock();
    assert!(st.bad_requests.is_empty(), "{:?}", st.bad_requests);
}

#[tokio::test]
async fn pods_api_errors_are_errors_not_empty_answers() {
    init_tracing();
    let api = FakeApi::start().await;
    api.apply_pod(pod("web-1", Some("10.0.0.1"), "Running"));
    api.set_list_failure(Some(500));
    let discovery = api.pods_discovery();
    let mut stream = discovery.watch().unwrap();
    match next(&mut stream).await {
        Err(DiscoveryError::Api { status: 500, .. }) => {}
        other => panic!("expected a typed 500, got {other:?}"),
    }
    assert!(matches!(
        discovery.snapshot().await,
        Err(DiscoveryError::Api { status: 500, .. })
    ));
    api.set_list_failure(Some(403));
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no 403 surfaced");
        match next(&mut stream).await {
            Err(DiscoveryError::Unauthorized { status: 403, .. }) => break,
            Err(DiscoveryError::Api { status: 500, .. }) => continue,
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }
    // Fixed: the pod list arrives; nothing empty was pushed in between.
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
    // Broken again after a good answer (410, then 500 on every relist): an error is
    // pushed, not an empty list, and the next good answer is the real state.
    api.wait_watchers(1).await;
    api.set_list_failure(Some(500));
    api.gone();
    match next(&mut stream).await {
        Err(DiscoveryError::Api { status: 500, .. }) => {}
        other => panic!("expected a typed 500, got {other:?}"),
    }
    api.set_list_failure(None);
    loop {
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
async fn pods_label_selector_is_sent() {
    init_tracing();
    let api = FakeApi::start().await;
    api.apply_pod(pod("web-1", Some("10.0.0.1"), "Running"));
    let discovery = api.pods_discovery();
    let mut stream = discovery.watch().unwrap();
    expect_addrs(&mut stream, &["10.0.0.1:7000"]).await;
    api.wait_watchers(1).await;
    {
        let st = api.lock();
        // The list and the watch, each with the selector exactly as configured
        // (commas, spaces and parentheses survive the URL encoding).
        assert!(st.pod_selectors.len() >= 2, "{:?}", st.pod_selectors);
        assert!(
            st.pod_selectors.iter().all(|s| s == POD_SELECTOR),
            "{:?}",
            st.pod_selectors
        );
        assert!(st.bad_requests.is_empty(), "{:?}", st.bad_requests);
    }

    // Another selector reaches the server as given (the fake answers 400 to it): an
    // error, never an empty answer.
    let other = KubernetesPodsDiscovery::new(
        api.client(),
        KubernetesPodsConfig::new(NS, "app=other", PortSelector::Number(7000)),
    )
    .unwrap();
    match other.snapshot().await {
        Err(DiscoveryError::Api { status: 400, .. }) => {}
        got => panic!("expected the fake's 400, got {got:?}"),
    }
    assert!(api.lock().pod_selectors.iter().any(|s| s == "app=other"));
}

#[tokio::test]
async fn pods_port_by_container_port_name() {
    init_tracing();
    let api = FakeApi::start().await;
    api.apply_pod(pod("web-1", Some("10.0.0.1"), "Running"));
    api.apply_pod(pod("web-2", Some("fd00::2"), "Running"));
    let by_name = api.pods_discovery_on(PortSelector::Name("metrics".into()));
    let snap = by_name.snapshot().await.unwrap();
    assert_eq!(addrs(&snap), ["10.0.0.1:9090", "[fd00::2]:9090"]);
    // No container port of that name: not listed (with a warning).
    let missing = api.pods_discovery_on(PortSelector::Name("nope".into()));
    assert_eq!(missing.snapshot().await.unwrap(), Vec::new());
}

/// A watch connection that hangs (no data, no end, no error) is given up 10 s after
/// its server-side timeout, and the relist finds what the hung watch never delivered.
#[tokio::test]
async fn pods_hung_watch_is_relisted() {
    init_tracing();
    let api = FakeApi::start().await;
    api.apply_pod(pod("web-1", Some("10.0.0.1"), "Running"));
    let config = KubernetesPodsConfig::new(NS, POD_SELECTOR, PortSelector::Number(7000))
        .with_retry(Duration::from_millis(50), Duration::from_millis(400))
        .with_watch_timeout(Duration::from_secs(1));
    let discovery = KubernetesPodsDiscovery::new(api.client(), config).unwrap();
    let mut stream = discovery.watch().unwrap();
    expect_addrs(&mut stream, &["10.0.0.1:7000"]).await;
    api.wait_watchers(1).await;
    let lists = api.list_requests();
    let hung_at = Instant::now();
    api.hang_watchers();
    api.delete_pod("web-1");
    api.apply_pod(pod("web-2", Some("10.0.0.2"), "Running"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        assert!(
            Instant::now() < deadline,
            "the hung watch was never given up"
        );
        let snap = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("no snapshot")
            .expect("stream closed")
            .expect("no error expected");
        if addrs(&snap) == ["10.0.0.2:7000"] {
            break hung_at.elapsed();
        }
    };
    assert!(api.list_requests() > lists, "found by a relist");
    println!("hung pod watch (timeout 1 s) given up and relisted after {seen:?}");
    assert!(seen >= Duration::from_secs(10), "{seen:?}");
}

#[tokio::test]
async fn pods_invalid_config_is_rejected() {
    let api = FakeApi::start().await;
    for config in [
        KubernetesPodsConfig::new("", POD_SELECTOR, PortSelector::Number(1)),
        KubernetesPodsConfig::new(NS, " ", PortSelector::Number(1)),
        KubernetesPodsConfig::new(NS, POD_SELECTOR, PortSelector::Number(0)),
        KubernetesPodsConfig::new(NS, POD_SELECTOR, PortSelector::Name(String::new())),
        KubernetesPodsConfig::new(NS, POD_SELECTOR, PortSelector::Number(1))
            .with_watch_timeout(Duration::from_secs(300)),
    ] {
        let err = KubernetesPodsDiscovery::new(api.client(), config).unwrap_err();
        assert!(
            matches!(err, DiscoveryError::InvalidConfig { .. }),
            "{err:?}"
        );
    }
}
