//! Simulated data directories: a majority of the voters restarted at once comes back
//! as the same members and elects a primary. Run with
//! `cargo simtest -p cluster-mode-madsim --test data_dirs`.
#![cfg(madsim)]

use cluster_mode_core::{Config, Role};
use cluster_mode_madsim::{NodeView, SimCluster, SimOptions};
use std::net::Ipv4Addr;

/// The slot every live node names as primary, if one of them is primary.
fn agreed(views: &[(usize, NodeView)], n: usize) -> Option<usize> {
    if views.len() != n {
        return None;
    }
    let (p, pv) = views.iter().find(|(_, v)| v.role == Role::Primary)?;
    views
        .iter()
        .all(|(_, v)| v.primary == Some(pv.id))
        .then_some(*p)
}

async fn wait_agreed(c: &SimCluster, n: usize, within_ms: u64) -> Option<usize> {
    for _ in 0..within_ms / 10 {
        if let Some(p) = agreed(&c.views(), n) {
            return Some(p);
        }
        c.sleep_ms(10).await;
    }
    None
}

#[madsim::test]
async fn majority_restarted_with_disks_keeps_ids_and_elects() {
    let c = SimCluster::new(
        Config::datacenter(),
        SimOptions {
            data_dirs: true,
            ..SimOptions::default()
        },
    );
    for i in 1..=3u8 {
        c.add_node(&format!("pod-{i}"), Ipv4Addr::new(10, 0, 0, i), 0);
    }
    let p = wait_agreed(&c, 3, 20_000).await.expect("no primary");
    let ids: Vec<_> = (0..3).map(|s| c.disk_state(s).expect("state").id).collect();
    let term = c.disk_state(p).unwrap().term;
    let follower = (p + 1) % 3;
    c.restart(p);
    c.restart(follower);
    let again = wait_agreed(&c, 3, 10_000)
        .await
        .expect("no primary after restarting a majority with their disks");
    let mut now: Vec<_> = c.views().into_iter().map(|(s, v)| (s, v.id)).collect();
    now.sort();
    assert_eq!(
        now.into_iter().map(|(_, id)| id).collect::<Vec<_>>(),
        ids,
        "a restarted node changed its id"
    );
    assert!(c.disk_state(again).unwrap().term > term);
}
