//! KubernetesDiscovery with kube-rs's real client against a fake API server speaking
//! HTTP/1.1 on loopback (list, chunked watch streams, errors, dropped connections).
#![cfg(feature = "kubernetes")]

use std::time::{Duration, Instant};

use cluster_mode_discovery::{
    Discovery, DiscoveryError, DiscoveryResult, Instance, KubernetesConfig, KubernetesDiscovery,
    PortSelector, SnapshotStream,
};
use tokio::sync::oneshot;

#[path = "support/fake_k8s.rs"]
mod fake_k8s;
use fake_k8s::{slice, FakeApi, NS, SVC, WAIT};

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
