//! `GET /cluster/v1/metrics` of three in-process nodes agrees with their status: one
//! primary in all, the same term, role, members and counters as the status says; and
//! after the primary shuts down, the survivors count the change of primary.
// Real sockets: not under the madsim simulator.
#![cfg(not(madsim))]

mod common;
#[path = "common/scrape.rs"]
mod scrape;

use cluster_mode::{Cluster, Role};
use common::*;
use scrape::{get, scrape, Scrape};
use std::net::SocketAddr;
use std::time::Duration;

fn role_label(r: Role) -> &'static str {
    match r {
        Role::Inactive => "inactive",
        Role::Candidate => "candidate",
        Role::Primary => "primary",
        Role::Secondary => "secondary",
        Role::Leaving => "leaving",
        _ => "other",
    }
}

/// What the metrics show of a status, less the lease ends (they move with every
/// renewal): equal before and after a scrape means it held still meanwhile.
fn key(n: &Cluster) -> (bool, Role, u64, bool, usize, u64, usize) {
    let s = n.status();
    let primary = n.is_primary();
    (
        primary,
        s.role,
        s.term,
        s.is_leader,
        s.members.len(),
        s.commit_index,
        s.owned_roles.len(),
    )
}

/// Scrapes `node` at `addr` while what the metrics show of its status stays the
/// same (read before and after the scrape: a steady cluster changes none of it),
/// then checks that the metrics say what the status says. Returns the scrape.
async fn scrape_agreeing(node: &Cluster, addr: SocketAddr) -> Scrape {
    for _ in 0..20 {
        let before = key(node);
        let primary_before = before.0;
        let m = scrape(addr).await;
        if before != key(node) {
            continue; // changed during the scrape: read again
        }
        let s = node.status();
        assert!(
            m.content_type.starts_with("text/plain; version=0.0.4"),
            "content type {:?}",
            m.content_type
        );
        assert_eq!(m.get("cluster_mode_term", ""), s.term as f64, "term");
        assert_eq!(
            m.get("cluster_mode_is_primary", ""),
            if primary_before { 1.0 } else { 0.0 },
            "is_primary"
        );
        assert_eq!(
            m.get("cluster_mode_is_leader", ""),
            if s.is_leader { 1.0 } else { 0.0 }
        );
        let roles = m.all("cluster_mode_role");
        assert_eq!(roles.iter().map(|r| r.value).sum::<f64>(), 1.0, "one role");
        let want = format!("state=\"{}\"", role_label(s.role));
        assert_eq!(m.get("cluster_mode_role", &want), 1.0, "role {:?}", s.role);
        assert_eq!(m.get("cluster_mode_members", ""), s.members.len() as f64);
        let voters = s.members.iter().filter(|m| m.voter).count();
        assert_eq!(m.get("cluster_mode_voters", ""), voters as f64);
        assert_eq!(
            m.get("cluster_mode_commit_index", ""),
            s.commit_index as f64
        );
        assert_eq!(
            m.get("cluster_mode_roles_owned", ""),
            s.owned_roles.len() as f64
        );
        let lease = m.get("cluster_mode_lease_remaining_seconds", "");
        if primary_before {
            let cfg = test_config();
            assert!(
                lease > 0.0 && lease <= cfg.lease_duration.as_secs_f64(),
                "lease remaining {lease} with a lease of {:?}",
                cfg.lease_duration
            );
        } else {
            assert_eq!(lease, 0.0);
        }
        return m;
    }
    panic!("the status of {addr} never held still for a scrape");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_status_and_count_a_failover() {
    init_tracing();
    let (nodes, addrs) = start_nodes(3, test_config(), None).await;
    let refs: Vec<&Cluster> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    // Let some heartbeats go round, so the counts by kind are not all zero.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut sum = 0.0;
    let mut scrapes = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let m = scrape_agreeing(n, addrs[i]).await;
        sum += m.get("cluster_mode_is_primary", "");
        scrapes.push(m);
    }
    assert_eq!(sum, 1.0, "exactly one primary in the metrics");
    assert_eq!(scrapes[p].get("cluster_mode_is_primary", ""), 1.0);

    let hb = "kind=\"heartbeat\"";
    let reply = "kind=\"append_reply\"";
    let prim = &scrapes[p];
    assert!(prim.get("cluster_mode_messages_out_total", hb) > 0.0);
    assert!(prim.get("cluster_mode_messages_in_total", reply) > 0.0);
    let rtt = prim.get("cluster_mode_heartbeat_round_trip_seconds_count", "");
    assert!(rtt > 0.0, "no round trip measured on the primary");
    assert_eq!(
        prim.get(
            "cluster_mode_heartbeat_round_trip_seconds_bucket",
            "le=\"+Inf\""
        ),
        rtt
    );
    for (i, m) in scrapes.iter().enumerate() {
        assert!(
            m.get("cluster_mode_primary_changes_total", "") >= 1.0,
            "node {i} learned a primary"
        );
        if i != p {
            assert!(m.get("cluster_mode_messages_in_total", hb) > 0.0);
            assert!(m.get("cluster_mode_messages_out_total", reply) > 0.0);
            assert_eq!(
                m.get("cluster_mode_heartbeat_round_trip_seconds_count", ""),
                0.0,
                "a secondary measures no round trip"
            );
        }
    }

    // A refused request shows in the rejections, as in the status JSON's counters.
    let s = (p + 1) % 3;
    let (code, _, _) = get(addrs[s], "/cluster/v1/nothing-here", Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(code, 404);
    let m = scrape(addrs[s]).await;
    let route = m.get("cluster_mode_rejections_total", "reason=\"route\"");
    assert_eq!(route, 1.0);
    assert_eq!(nodes[s].counters().rejected_route, 1);
    // The short path (under nest_service) answers the same metrics.
    let (code, ctype, body) = get(addrs[s], "/metrics", Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(code, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"));
    assert!(body.contains("# HELP cluster_mode_term "));

    // The primary shuts down: a survivor is elected, and both survivors count it.
    let elections_before: Vec<f64> = scrapes
        .iter()
        .map(|m| m.get("cluster_mode_elections_started_total", ""))
        .collect();
    let changes_before: Vec<f64> = scrapes
        .iter()
        .map(|m| m.get("cluster_mode_primary_changes_total", ""))
        .collect();
    nodes[p].shutdown().await;
    let rest: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    let rest_refs: Vec<&Cluster> = rest.iter().map(|&i| &nodes[i]).collect();
    let q = rest[wait_agreed_primary(&rest_refs, Duration::from_secs(10)).await];
    let mut sum = 0.0;
    for &i in &rest {
        let m = scrape_agreeing(&nodes[i], addrs[i]).await;
        sum += m.get("cluster_mode_is_primary", "");
        assert!(
            m.get("cluster_mode_primary_changes_total", "") > changes_before[i],
            "node {i} did not count the change of primary"
        );
        if i == q {
            assert!(
                m.get("cluster_mode_elections_started_total", "") > elections_before[i],
                "the new primary {i} did not count its election"
            );
        }
    }
    assert_eq!(sum, 1.0, "exactly one primary among the survivors");
    // Its listener is closed: read its metrics through the public encoder.
    let text = cluster_mode::prometheus::encode(&nodes[p].service()).expect("encoded");
    let stopped = scrape::parse(&text);
    let value = |name: &str| {
        stopped
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.value)
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(value("cluster_mode_stopped"), 1.0);
    assert_eq!(value("cluster_mode_is_primary"), 0.0);
    for n in &nodes {
        n.shutdown().await;
    }
}
