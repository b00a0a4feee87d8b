//! `GET /cluster/v1/ready`, the readiness probe of deploy/kubernetes/: 503 while a node
//! is not a voter of a cluster with a primary (alone, or left without a majority), 200
//! once it is; the status endpoint meanwhile answers 200 whatever the state, which is
//! why it serves as the liveness probe and not as the readiness probe.
#![cfg(not(madsim))]

mod common;
#[path = "common/http.rs"]
mod http;

use cluster_mode::server::{PATH_READY, PATH_STATUS};
use cluster_mode::ClusterBuilder;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let a = http::raw_request::<&str, &str>(addr, method, path, &[], b"").await;
    (a.code, a.body)
}

/// Polls `path` until it answers `code`; the body of that answer.
async fn wait_code(addr: SocketAddr, path: &str, code: u16, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (c, body) = get(addr, "GET", path).await;
        if c == code {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr}{path} still answers {c} ({body:?}), not {code}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_is_alive_but_not_ready() {
    init_tracing();
    // Its peers' addresses are listed but nobody listens there: min_nodes (3) is never
    // reached, so it never founds or joins a cluster.
    let mut ls = listeners(3).await;
    let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let mine = ls.remove(0);
    drop(ls);
    let node = ClusterBuilder::new(discovery(&addrs))
        .listener(mine)
        .config(test_config())
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, body) = get(addrs[0], "GET", PATH_READY).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not in a cluster"), "{body}");
    // The nested path (under nest_service("/cluster/v1", ..)) answers the same.
    assert_eq!(get(addrs[0], "GET", "/ready").await.0, 503);
    // The status endpoint is 200 all the same: fine for liveness, useless for readiness.
    let (code, body) = get(addrs[0], "GET", PATH_STATUS).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"role\":\"Inactive\""), "{body}");
    // Only GET.
    assert_eq!(get(addrs[0], "POST", PATH_READY).await.0, 405);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_with_a_primary_are_ready_until_the_majority_is_lost() {
    init_tracing();
    let (nodes, addrs) = start_nodes(3, test_config(), None).await;
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    for a in &addrs {
        let body = wait_code(*a, PATH_READY, 200, Duration::from_secs(5)).await;
        assert!(body.starts_with("ready: voter"), "{body}");
        assert!(body.contains(&format!("primary {}", addrs[p])), "{body}");
    }
    // Two of three crash: the survivor keeps its membership but has no primary.
    let survivor = a_secondary(3, p);
    for (i, n) in nodes.iter().enumerate() {
        if i != survivor {
            n.shutdown().await;
        }
    }
    let body = wait_code(addrs[survivor], PATH_READY, 503, Duration::from_secs(5)).await;
    assert!(body.contains("no primary known"), "{body}");
    assert_eq!(get(addrs[survivor], "GET", PATH_STATUS).await.0, 200);
    nodes[survivor].shutdown().await;
}
