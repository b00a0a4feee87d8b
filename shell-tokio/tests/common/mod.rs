//! Helpers shared by the integration tests.
#![allow(dead_code)]

use cluster_mode::{Cluster, ClusterBuilder, Config, Role, StaticDiscovery};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cluster_mode=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn listeners(n: usize) -> Vec<tokio::net::TcpListener> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    v
}

pub fn discovery(addrs: &[SocketAddr]) -> Arc<StaticDiscovery> {
    Arc::new(StaticDiscovery::new(addrs.iter().copied()))
}

/// Starts `n` nodes on loopback that list each other.
pub async fn start_nodes(
    n: usize,
    cfg: Config,
    secret: Option<&str>,
) -> (Vec<Cluster>, Vec<SocketAddr>) {
    let ls = listeners(n).await;
    let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let disc = discovery(&addrs);
    let mut nodes = Vec::new();
    for l in ls {
        let mut b = ClusterBuilder::new(disc.clone())
            .listener(l)
            .config(cfg.clone());
        if let Some(s) = secret {
            b = b.secret(s);
        }
        nodes.push(b.start().await.unwrap());
    }
    (nodes, addrs)
}

/// Waits until exactly one of `nodes` is primary and every other one is a
/// secondary following it; returns its index.
pub async fn wait_agreed_primary(nodes: &[&Cluster], within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(i) = agreed_primary(nodes) {
            return i;
        }
        if tokio::time::Instant::now() > deadline {
            let roles: Vec<_> = nodes.iter().map(|n| (n.role(), n.status().term)).collect();
            panic!("no agreed primary within {within:?}: {roles:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn agreed_primary(nodes: &[&Cluster]) -> Option<usize> {
    let prim: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].is_primary())
        .collect();
    if prim.len() != 1 {
        return None;
    }
    let p = prim[0];
    let pid = nodes[p].id();
    let ok = nodes.iter().enumerate().all(|(i, n)| {
        i == p || (n.role() == Role::Secondary && n.primary().map(|x| x.id) == Some(pid))
    });
    ok.then_some(p)
}

pub fn test_config() -> Config {
    Config::fast_test()
}
