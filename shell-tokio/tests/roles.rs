//! Named roles (P13) on real sockets on 127.0.0.1, in one process: every role gets
//! exactly one owner, a crashed owner's roles move, and a sampler never sees two
//! owners of one role at once.
#![cfg(not(madsim))]

mod common;

use cluster_mode::{Cluster, ClusterBuilder};
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const ROLES: usize = 16;

fn names() -> Vec<String> {
    (0..ROLES).map(|i| format!("shard-{i}")).collect()
}

async fn start_with_roles(n: usize) -> Vec<Cluster> {
    let ls = listeners(n).await;
    let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let disc = discovery(&addrs);
    let mut nodes = Vec::new();
    for l in ls {
        let b = ClusterBuilder::new(disc.clone())
            .listener(l)
            .config(test_config())
            .roles(names());
        nodes.push(b.start().await.unwrap());
    }
    nodes
}

/// Owners per role among `nodes` right now (index of each node that says it owns it).
fn owners(nodes: &[&Cluster]) -> BTreeMap<String, Vec<usize>> {
    let mut m: BTreeMap<String, Vec<usize>> = names().into_iter().map(|r| (r, vec![])).collect();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.owned_roles() {
            m.entry(o.role).or_default().push(i);
        }
    }
    m
}

async fn wait_all_owned(nodes: &[&Cluster], within: Duration) -> BTreeMap<String, usize> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = owners(nodes);
        for (role, o) in &m {
            assert!(o.len() <= 1, "two owners of {role}: {o:?}");
        }
        if m.values().all(|o| o.len() == 1) {
            return m.into_iter().map(|(r, o)| (r, o[0])).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every role owned within {within:?}: {m:?}; tables: {:?}",
            nodes
                .iter()
                .map(|n| (n.roles(), n.status().role_hold_until, n.role()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_one_owner_and_a_crashed_owners_roles_move() {
    init_tracing();
    let nodes = start_with_roles(3).await;
    let refs: Vec<_> = nodes.iter().collect();
    wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    let placed = wait_all_owned(&refs, Duration::from_secs(10)).await;
    let mut load = [0usize; 3];
    for i in placed.values() {
        load[*i] += 1;
    }
    // ceil(1.25 * 16 / 3) = 7.
    assert!(load.iter().all(|l| *l <= 7), "load {load:?}");
    // Tokens and owners agree across nodes.
    for n in &nodes {
        for o in n.owned_roles() {
            assert_eq!(nodes[0].owner_of(&o.role), Some(n.id()), "{}", o.role);
        }
    }
    // Crash the node with the most roles that is not the primary.
    let victim = (0..3)
        .filter(|i| !nodes[*i].is_primary())
        .max_by_key(|i| load[*i])
        .unwrap();
    let before: BTreeMap<String, _> = nodes[victim]
        .owned_roles()
        .into_iter()
        .map(|o| (o.role, o.token))
        .collect();
    assert!(!before.is_empty());
    nodes[victim].shutdown().await;
    let rest: Vec<_> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    let after = wait_all_owned(&rest, Duration::from_secs(10)).await;
    for (role, token) in &before {
        let owner = rest[after[role]];
        let new = owner.role_token(role).expect("owned");
        assert!(new > *token, "{role}: token {new} after {token}");
    }
    for n in &nodes {
        n.shutdown().await;
    }
}
