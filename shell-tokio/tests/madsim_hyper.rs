//! The production shell, hyper transport included, inside the madsim simulator:
//! three simulated hosts elect a primary, the primary's host is killed, the others
//! fail over. Run with `cargo simtest -p cluster-mode --test madsim_hyper`.
#![cfg(madsim)]

use cluster_mode::{Cluster, ClusterBuilder, Config, StaticDiscovery};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn agreed(nodes: &[Cluster]) -> Option<usize> {
    let p: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].is_primary())
        .collect();
    if p.len() != 1 {
        return None;
    }
    let id = nodes[p[0]].id();
    nodes
        .iter()
        .all(|n| n.primary().map(|x| x.id) == Some(id))
        .then_some(p[0])
}

#[madsim::test]
async fn hyper_transport_elects_and_fails_over_in_simulation() {
    let handle = madsim::runtime::Handle::current();
    let addrs: Vec<SocketAddr> = (1..=3)
        .map(|i| format!("10.0.0.{i}:7946").parse().unwrap())
        .collect();
    let disc = Arc::new(StaticDiscovery::new(addrs.iter().copied()));
    let mut nodes = Vec::new();
    let mut hosts = Vec::new();
    for a in &addrs {
        let host = handle.create_node().name(a.to_string()).ip(a.ip()).build();
        let disc = disc.clone();
        let addr = *a;
        let c = host
            .spawn(async move {
                ClusterBuilder::new(disc)
                    .listen(addr)
                    .config(Config::datacenter())
                    .start()
                    .await
                    .unwrap()
            })
            .await
            .unwrap();
        nodes.push(c);
        hosts.push(host.id());
    }
    let mut first = None;
    for _ in 0..1000 {
        if let Some(p) = agreed(&nodes) {
            first = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = first.expect("no primary in simulation");
    let t0 = tokio::time::Instant::now();
    handle.kill(hosts[first]);
    let rest: Vec<Cluster> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, n)| n.clone())
        .collect();
    let mut ok = false;
    for _ in 0..1000 {
        if agreed(&rest).is_some() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ok, "no failover in simulation");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "failover took {took:?}");
}
