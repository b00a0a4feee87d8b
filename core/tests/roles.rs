//! Named roles (P13) in the in-memory network: placement, holds, moves.

mod common;

use cluster_mode_core::{Config, Input, Placement};
use common::net::Net;

fn declare(net: &mut Net, slot: usize, n: usize) {
    let roles = (0..n)
        .map(|i| (format!("shard-{i}"), Placement::Any))
        .collect();
    net.input(slot, Input::DeclareRoles(roles));
}

#[test]
fn declared_roles_are_placed() {
    let mut net = Net::with_nodes(7, Config::fast_test(), 3);
    for s in 0..3 {
        declare(&mut net, s, 8);
    }
    net.run_until_settled(5_000).expect("settles");
    net.run_for(1_000);
    for s in 0..3 {
        let now = net.local(s, net.now);
        let st = net.nodes[s].core.status(now);
        eprintln!(
            "n{s}: table {:?} owned {:?} hold {:?}",
            st.roles.len(),
            st.owned_roles.iter().map(|o| &o.role).collect::<Vec<_>>(),
            st.role_hold_until
        );
    }
}

/// Roles held at this instant by live nodes: role -> slots.
fn holders(net: &Net) -> std::collections::BTreeMap<String, Vec<usize>> {
    let mut m: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for s in net.live() {
        let now = net.local(s, net.now);
        for o in net.nodes[s].core.owned_roles(now) {
            m.entry(o.role).or_default().push(s);
        }
    }
    m
}

/// A leaving primary's roles are granted elsewhere at once, not when its leave
/// request reaches the new leader (a housekeeping round later): its replies release
/// every role it owns, which tells the new leader it is leaving. (Without that
/// inference the roles waited about 1 s here, for the leave request.)
#[test]
fn a_leaving_primarys_roles_move_before_its_request_reaches_the_new_leader() {
    let mut cfg = Config::fast_test();
    cfg.probe_interval = std::time::Duration::from_secs(2);
    let mut net = Net::with_nodes(11, cfg, 3);
    for s in 0..3 {
        declare(&mut net, s, 12);
    }
    net.run_until_settled(10_000).expect("settles");
    net.run_for(3_000);
    let held = holders(&net);
    assert_eq!(held.len(), 12, "{held:?}");
    let p = net.the_primary().expect("a primary");
    let mine: Vec<String> = held
        .iter()
        .filter(|(_, s)| s.as_slice() == [p])
        .map(|(r, _)| r.clone())
        .collect();
    assert!(!mine.is_empty(), "the primary owns some roles: {held:?}");
    net.leave(p);
    let start = net.now;
    loop {
        net.run_for(5);
        let held = holders(&net);
        let moved = mine
            .iter()
            .all(|r| held.get(r).is_some_and(|s| s.len() == 1 && s[0] != p));
        if moved {
            break;
        }
        if net.now - start >= 300_000_000 {
            for s in 0..3 {
                let now = net.local(s, net.now);
                let st = net.nodes[s].core.status(now);
                eprintln!(
                    "n{s}: {:?} leader {} commit {} last {:?} members {} roles {:?}",
                    st.role,
                    st.is_leader,
                    st.commit_index,
                    net.nodes[s].core.last_log_id(),
                    st.members.len(),
                    st.roles
                        .iter()
                        .map(|r| (r.role.clone(), r.owner, r.releasing))
                        .collect::<Vec<_>>()
                );
            }
            panic!("the leaving primary's roles {mine:?} not moved within 300 ms: {held:?}");
        }
    }
    eprintln!(
        "moved {} roles in {} ms",
        mine.len(),
        (net.now - start) / 1_000_000
    );
}

/// A follower that leaves lets go of its roles before it sends `Leave`: its request
/// confirms the release, and its roles are granted elsewhere within a few round trips,
/// also once its removal is committed and its replies stop (they used to wait for its
/// last hold to run out, a lease: the bench measured 308 ms per role).
#[test]
fn a_leaving_followers_roles_move_within_round_trips_not_a_lease() {
    let mut net = Net::with_nodes(5, Config::datacenter(), 3);
    for s in 0..3 {
        declare(&mut net, s, 12);
    }
    net.run_until_settled(20_000).expect("settles");
    net.run_for(5_000);
    let p = net.the_primary().expect("a primary");
    let held = holders(&net);
    assert_eq!(held.len(), 12, "{held:?}");
    let f = (0..3)
        .find(|s| *s != p && held.values().any(|h| h.as_slice() == [*s]))
        .expect("a follower with roles");
    let mine: Vec<String> = held
        .iter()
        .filter(|(_, s)| s.as_slice() == [f])
        .map(|(r, _)| r.clone())
        .collect();
    net.leave(f);
    let start = net.now;
    loop {
        net.run_for(1);
        if std::env::var("ROLES_DEBUG").is_ok() {
            let lp = net.local(p, net.now);
            eprintln!(
                "{} ms: leader log {:?} commit {}",
                (net.now - start) / 1_000_000,
                net.nodes[p].core.last_log_id(),
                net.nodes[p].core.status(lp).commit_index
            );
        }
        let held = holders(&net);
        if mine
            .iter()
            .all(|r| held.get(r).is_some_and(|s| s.len() == 1 && s[0] != f))
        {
            break;
        }
        let waited_ms = (net.now - start) / 1_000_000;
        assert!(
            waited_ms < 150,
            "the leaving follower's roles {mine:?} not moved within 150 ms: {held:?}"
        );
    }
    eprintln!(
        "moved {} roles in {} ms",
        mine.len(),
        (net.now - start) / 1_000_000
    );
}

/// The owner of every role in the committed table of `slot`.
fn table(
    net: &Net,
    slot: usize,
) -> std::collections::BTreeMap<String, Option<cluster_mode_core::NodeId>> {
    let now = net.local(slot, net.now);
    net.nodes[slot]
        .core
        .status(now)
        .roles
        .into_iter()
        .map(|r| (r.role, r.owner))
        .collect()
}

/// Issue 11's join aims, over 20 seeds: when a sixth member joins five that own 64
/// roles, at most ceil(64/6) + 2 = 13 roles change owner and no member ends above
/// 1.25 x the mean (13.3). (Before a role being released counted at its destination,
/// later rounds asked more roles back for the newcomer than it could take, and the
/// surplus went to old members: up to 18 moves on real processes.)
#[test]
fn a_sixth_member_takes_about_its_share_and_little_else_moves() {
    let mut worst = (0, 0);
    for seed in 0..20 {
        let mut net = Net::with_nodes(100 + seed, Config::fast_test(), 5);
        for s in 0..5 {
            declare(&mut net, s, 64);
        }
        net.run_until_settled(20_000).expect("settles");
        net.run_for(2_000);
        let p = net.the_primary().expect("a primary");
        let before = table(&net, p);
        assert!(
            before.values().all(Option::is_some),
            "all placed: {before:?}"
        );
        let new = net.add_node();
        declare(&mut net, new, 64);
        net.run_for(3_000);
        let p = net.the_primary().expect("a primary");
        let after = table(&net, p);
        let moved = before
            .iter()
            .filter(|(r, o)| after.get(*r) != Some(o))
            .count();
        let mut load: std::collections::BTreeMap<_, usize> = Default::default();
        for o in after.values().flatten() {
            *load.entry(*o).or_default() += 1;
        }
        let max = load.values().copied().max().unwrap_or(0);
        assert_eq!(load.len(), 6, "the newcomer got roles: {load:?}");
        eprintln!("seed {seed}: {moved} moved, max load {max}");
        worst = (worst.0.max(moved), worst.1.max(max));
    }
    eprintln!("worst of 20: {} moved, max load {}", worst.0, worst.1);
    assert!(worst.0 <= 13, "{} roles moved", worst.0);
    assert!(worst.1 <= 13, "max load {}", worst.1);
}
