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

/// The committed member addresses in `node`'s view, sorted.
pub fn member_addrs(node: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = node
        .members()
        .into_iter()
        .map(|m| m.addr.to_string())
        .collect();
    v.sort();
    v
}

/// Waits until every one of `nodes` lists exactly `want` (sorted addresses) as members;
/// returns how long it took.
pub async fn wait_members(nodes: &[&Cluster], want: &[String], within: Duration) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        if nodes.iter().all(|n| member_addrs(n) == want) {
            return start.elapsed();
        }
        if start.elapsed() > within {
            let views: Vec<_> = nodes.iter().map(|n| member_addrs(n)).collect();
            panic!("members never became {want:?} within {within:?}: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Asserts that every one of `nodes` lists exactly `want` as members, checked every few
/// milliseconds for `period`.
pub async fn hold_members(nodes: &[&Cluster], want: &[String], period: Duration, what: &str) {
    let start = tokio::time::Instant::now();
    while start.elapsed() < period {
        for n in nodes {
            let got = member_addrs(n);
            assert_eq!(
                got,
                want,
                "{what}: members changed after {:?}",
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `Config::fast_test()` with `min_nodes = 3`, `removal_grace` = `grace` and no removal
/// on silence alone, so the only way out of the member list is "missing from the
/// leader's discovery answers and silent for `removal_grace`".
pub fn discovery_config(grace: Duration) -> Config {
    let mut c = Config::fast_test();
    c.min_nodes = std::num::NonZeroUsize::new(3).expect("3 > 0");
    c.removal_grace = grace;
    c.silent_member_timeout = None;
    c
}

/// One listener on each of `ips` (loopback addresses), all on the same port: A records
/// carry no port, so DNS A and EndpointSlice tests give each node its own loopback IP.
pub async fn listeners_same_port(ips: &[&str]) -> (u16, Vec<tokio::net::TcpListener>) {
    'again: for _ in 0..50 {
        let first = tokio::net::TcpListener::bind((ips[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut v = vec![first];
        for ip in &ips[1..] {
            match tokio::net::TcpListener::bind((*ip, port)).await {
                Ok(l) => v.push(l),
                Err(_) => continue 'again,
            }
        }
        return (port, v);
    }
    panic!("no port free on all of {ips:?}");
}

/// Index of some node other than `primary`.
pub fn a_secondary(n: usize, primary: usize) -> usize {
    (primary + 1) % n
}
