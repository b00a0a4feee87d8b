//! `ClusterCore::refresh_status` (the view refreshed in place, what the shell
//! publishes after every input) always equals `ClusterCore::status`, and says
//! whether it changed, at every step of runs with named roles, crashes, restarts,
//! a partition and leaves.

mod common;

use cluster_mode_core::{Config, Status};
use common::net::{shards, Net, NetConfig};

/// Runs `net` for `ms` milliseconds in 1 ms steps; after each step every node's kept
/// view is refreshed and compared with a freshly built one. Returns how many
/// refreshes reported a change.
fn run_checked(net: &mut Net, kept: &mut Vec<Status>, ms: u64) -> usize {
    let mut changes = 0;
    for _ in 0..ms {
        net.run_for(1);
        for s in 0..net.nodes.len() {
            let now = net.local(s, net.now);
            let fresh = net.nodes[s].core.status(now);
            if kept.len() <= s {
                kept.push(fresh.clone());
                continue;
            }
            let before = kept[s].clone();
            let changed = net.nodes[s].core.refresh_status(now, &mut kept[s]);
            assert_eq!(kept[s], fresh, "node {s} at {} ns", net.now);
            assert_eq!(changed, before != fresh, "node {s} at {} ns", net.now);
            changes += usize::from(changed);
        }
    }
    changes
}

#[test]
fn refresh_status_is_status_through_faults_with_roles() {
    for seed in [1, 2] {
        let mut net = Net::new(seed, Config::fast_test(), NetConfig::default());
        net.roles_on_start = shards(16);
        let mut kept = Vec::new();
        for _ in 0..5 {
            net.add_node();
        }
        let mut changes = run_checked(&mut net, &mut kept, 1_500);
        let p = net.the_primary().expect("a primary after 1.5 s");
        net.crash(p);
        changes += run_checked(&mut net, &mut kept, 1_000);
        net.restart(p);
        changes += run_checked(&mut net, &mut kept, 800);
        let p = net.the_primary().expect("a primary after the restart");
        let others: Vec<usize> = (0..net.nodes.len()).filter(|s| *s != p).collect();
        net.partition(&[&[p], &others]);
        changes += run_checked(&mut net, &mut kept, 600);
        net.heal();
        changes += run_checked(&mut net, &mut kept, 600);
        net.declare_roles(0, 24);
        let leaver = (p + 1) % net.nodes.len();
        net.leave(leaver);
        changes += run_checked(&mut net, &mut kept, 1_000);
        // The views changed many times (roles placed, a failover, a leave), and the
        // unchanged steps were reported unchanged (checked at every step above).
        assert!(changes > 50, "seed {seed}: only {changes} changes seen");
    }
}
