//! The bounds of docs/PROTOCOL.md "Bounded resources" that a stranger without the
//! secret can push against: probes naming made-up addresses make a node send there
//! (bounded by `TransportOptions::max_new_peers`), and idle connections pile up
//! (bounded by `ClusterBuilder::max_connections`). The memory figures under a flood
//! are in tests/flood_mem.rs.
// Real sockets: not under the madsim simulator.
#![cfg(not(madsim))]

mod common;

use cluster_mode::server::PATH_MESSAGE;
use cluster_mode::transport::TransportOptions;
use cluster_mode::{Cluster, ClusterBuilder, Config, StaticDiscovery};
use cluster_mode_core::{Envelope, Message, NodeId, PROTOCOL_VERSION};
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn lone_node(opts: TransportOptions, max_connections: usize) -> (Cluster, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let peers = StaticDiscovery::new([addr, "127.0.0.1:1".parse().unwrap()]);
    let node = ClusterBuilder::new(Arc::new(peers))
        .listener(l)
        .config(Config::fast_test())
        .transport_options(opts)
        .max_connections(max_connections)
        .start()
        .await
        .unwrap();
    (node, addr)
}

/// POSTs `body` on a fresh connection; the status code.
async fn post(addr: SocketAddr, body: &[u8]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {PATH_MESSAGE} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_naming_made_up_addresses_reach_at_most_max_new_peers_of_them() {
    init_tracing();
    let opts = TransportOptions {
        max_new_peers: 8,
        ..TransportOptions::default()
    };
    let (node, addr) = lone_node(opts, 64).await;
    let probes = 200u32;
    for i in 0..probes {
        let probe = Envelope {
            version: PROTOCOL_VERSION,
            cluster: None,
            from: NodeId(1000 + u128::from(i)),
            // TEST-NET-2: nothing answers, so each stays a peer that never answered.
            from_addr: format!("198.51.100.{}:{}", i % 256, 7000 + i)
                .as_str()
                .into(),
            to: None,
            msg: Message::Probe,
        };
        assert_eq!(post(addr, &probe.encode()).await, 204);
    }
    let c = node.counters();
    // The node's own probes to its one unreachable listed peer take a slot too.
    assert!(
        c.send_peer_limit >= u64::from(probes) - 8,
        "answers to made-up addresses were not bounded: {c:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_and_counted() {
    init_tracing();
    let (node, addr) = lone_node(TransportOptions::default(), 4).await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while node.counters().connections_refused < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections past the bound were kept: {:?}",
            node.counters()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node.counters().connections_accepted, 4);
    // Once they are closed, new connections are served again.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let garbage = post(addr, &[PROTOCOL_VERSION as u8, 0xff, 0xff]).await;
    assert_eq!(garbage, 400);
    node.shutdown().await;
}
