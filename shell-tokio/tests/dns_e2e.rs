//! End to end through a real dnsmasq: three `Cluster`s find each other by DNS, form one
//! cluster, scale down; and a DNS failure (server killed, server silent, name without
//! records) leaves the member list as it was.
//!
//! A records carry no port, so the three nodes listen on 127.0.0.1, 127.0.0.2 and
//! 127.0.0.3 with one port (all of 127/8 is loopback on Linux). dnsmasq rereads its hosts
//! file on SIGHUP but not its `--srv-host` options, so scaling by editing the hosts file
//! needs A records.
//!
//! dnsmasq must be installed (`discovery-adapters/ci-deps.sh`): these tests fail without
//! it, they do not skip.
#![cfg(all(feature = "dns", not(madsim)))]

mod common;
#[path = "../../discovery-adapters/tests/support/dnsmasq.rs"]
mod dnsmasq;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster_mode::{Cluster, ClusterBuilder};
use cluster_mode_discovery::{DnsConfig, DnsDiscovery};
use common::*;
use dnsmasq::Dnsmasq;

const NAME: &str = "peers.cluster.local";
const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
const GRACE: Duration = Duration::from_millis(500);

fn hosts(ips: &[&str]) -> String {
    ips.iter().map(|ip| format!("{ip} {NAME}\n")).collect()
}

/// Each node has its own resolver, as each pod would.
fn dns_source(server: SocketAddr, port: u16) -> Arc<DnsDiscovery> {
    Arc::new(
        DnsDiscovery::new(
            DnsConfig::host(NAME, port)
                .with_name_server(server)
                .with_ttl_bounds(Duration::from_millis(100), Duration::from_secs(1))
                .with_timeout(Duration::from_millis(200), 1),
        )
        .unwrap(),
    )
}

/// dnsmasq listing the three IPs, and three nodes formed into one cluster through it.
async fn formed() -> (Dnsmasq, u16, Vec<Cluster>, Vec<String>) {
    init_tracing();
    let dns = Dnsmasq::start(&hosts(&IPS), &[]);
    let (port, ls) = listeners_same_port(&IPS).await;
    let mut nodes = Vec::new();
    for l in ls {
        nodes.push(
            ClusterBuilder::new(dns_source(dns.addr(), port))
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
    (dns, port, nodes, all)
}

/// Crashes a secondary; returns the surviving nodes (primary first) and the index of
/// the crashed one.
async fn crash_a_secondary(nodes: &[Cluster]) -> (Vec<&Cluster>, usize) {
    let refs: Vec<&Cluster> = nodes.iter().collect();
    let p = agreed_primary(&refs).expect("an agreed primary");
    let v = a_secondary(nodes.len(), p);
    nodes[v].shutdown().await;
    let rest = (0..nodes.len())
        .filter(|&i| i != v)
        .map(|i| &nodes[i])
        .collect();
    (rest, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_through_dnsmasq_then_scale_down() {
    let (dns, port, nodes, all) = formed().await;
    let refs: Vec<&Cluster> = nodes.iter().collect();
    let p = agreed_primary(&refs).expect("one primary all agree on");
    for n in &nodes {
        assert_eq!(n.primary().map(|x| x.id), Some(nodes[p].id()));
        assert_eq!(n.status().members.len(), 3);
    }

    // Scale down: the pod goes away and its record with it.
    let v = a_secondary(3, p);
    let removed = format!("{}:{port}", IPS[v]);
    let kept_ips: Vec<&str> = (0..3).filter(|&i| i != v).map(|i| IPS[i]).collect();
    nodes[v].shutdown().await;
    dns.set_hosts(&hosts(&kept_ips));
    let t0 = tokio::time::Instant::now();
    let rest: Vec<&Cluster> = (0..3).filter(|&i| i != v).map(|i| &nodes[i]).collect();
    let want: Vec<String> = all.iter().filter(|a| **a != removed).cloned().collect();
    wait_members(&rest, &want, Duration::from_secs(10)).await;
    let took = t0.elapsed();
    println!("DNS scale-down: {removed} left the member list {took:?} after the SIGHUP (removal_grace {GRACE:?})");
    assert!(
        took >= GRACE,
        "removed after {took:?}, before the removal grace {GRACE:?}"
    );
    // Still one primary, agreed by both survivors.
    wait_agreed_primary(&rest, Duration::from_secs(5)).await;
    for n in &rest {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_server_killed_then_silent_leaves_members_unchanged() {
    let (dns, port, nodes, all) = formed().await;
    let dns_port = dns.port;
    let (rest, v) = crash_a_secondary(&nodes).await;
    let failures_before: u64 = rest.iter().map(|n| n.counters().discovery_failures).sum();

    // 1. The server is gone (queries get ICMP port unreachable).
    drop(dns);
    hold_members(&rest, &all, 4 * GRACE, "dnsmasq killed").await;

    // 2. A server that never answers (UDP bound and TCP listening, silent).
    let udp = std::net::UdpSocket::bind(("127.0.0.1", dns_port)).unwrap();
    let tcp = std::net::TcpListener::bind(("127.0.0.1", dns_port)).unwrap();
    hold_members(&rest, &all, 4 * GRACE, "DNS server silent").await;
    let failures: u64 = rest.iter().map(|n| n.counters().discovery_failures).sum();
    assert!(
        failures > failures_before,
        "discovery never failed: the test proved nothing"
    );
    drop((udp, tcp));

    // Control: once DNS answers again without the crashed node, it is removed.
    let kept_ips: Vec<&str> = (0..3).filter(|&i| i != v).map(|i| IPS[i]).collect();
    let _dns = Dnsmasq::start_on_port(&hosts(&kept_ips), &[], dns_port);
    let want: Vec<String> = kept_ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    wait_members(&rest, &want, Duration::from_secs(10)).await;
    for n in &rest {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_name_without_records_leaves_members_unchanged() {
    let (dns, port, nodes, all) = formed().await;
    let (rest, v) = crash_a_secondary(&nodes).await;
    let failures_before: u64 = rest.iter().map(|n| n.counters().discovery_failures).sum();
    // The name has no records any more (NXDOMAIN in dnsmasq's local domain).
    dns.set_hosts("127.0.0.9 other.cluster.local\n");
    hold_members(&rest, &all, 4 * GRACE, "name without records").await;
    let failures: u64 = rest.iter().map(|n| n.counters().discovery_failures).sum();
    assert!(failures > failures_before, "discovery never failed");

    // Control: the records come back without the crashed node; it is removed.
    let kept_ips: Vec<&str> = (0..3).filter(|&i| i != v).map(|i| IPS[i]).collect();
    dns.set_hosts(&hosts(&kept_ips));
    let want: Vec<String> = kept_ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    wait_members(&rest, &want, Duration::from_secs(10)).await;
    for n in &rest {
        n.shutdown().await;
    }
}
