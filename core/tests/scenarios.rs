//! Scripted scenarios on the in-memory network. Each writes a readable protocol trace
//! and compares it with `tests/traces/NAME.txt` (run with `UPDATE_TRACES=1` to
//! rewrite them after an intended change, then read the diff). Each also asserts the
//! outcome directly, so a trace rewritten carelessly still cannot hide a failure.

mod common;

use cluster_mode_core::Config;
use common::Net;

fn check_trace(name: &str, net: &Net) {
    assert!(
        net.checker.violations.is_empty(),
        "seed {}: {:?}",
        net.seed,
        net.checker.violations
    );
    let path = format!("{}/tests/traces/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    let actual = net.trace_text();
    if std::env::var_os("UPDATE_TRACES").is_some() {
        std::fs::create_dir_all(format!("{}/tests/traces", env!("CARGO_MANIFEST_DIR"))).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {path}; run with UPDATE_TRACES=1 to create it"));
    if expected != actual {
        let diff_at = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b);
        panic!(
            "trace {name} differs (first differing line {diff_at:?}); rerun with UPDATE_TRACES=1 and review the diff.\n--- actual ---\n{actual}"
        );
    }
}

#[test]
fn cold_start_of_three_elects_one_primary() {
    let mut net = Net::with_nodes(1, Config::fast_test(), 3);
    let t = net.run_until_settled(3_000).expect("settles");
    assert!(t < 2_000, "took {t} ms");
    assert_eq!(net.checker.clusters(), 1);
    check_trace("cold_start_3", &net);
}

#[test]
fn cold_start_of_five_elects_one_primary_with_five_voters() {
    let cfg = Config::fast_test().with_min_nodes(3);
    let mut net = Net::with_nodes(2, cfg, 5);
    net.run_until_settled(3_000).expect("settles");
    // Late starters join; voters fill up to max_voters.
    net.run_for(500);
    assert!(net.settled());
    let p = net.the_primary().unwrap();
    assert_eq!(net.nodes[p].core.members().voter_count(), 5);
    check_trace("cold_start_5", &net);
}

#[test]
fn primary_crash_fails_over_to_a_new_primary_with_a_higher_term() {
    let mut net = Net::with_nodes(3, Config::fast_test(), 3);
    net.run_until_settled(3_000).expect("settles");
    let old = net.the_primary().unwrap();
    let old_term = net.nodes[old].core.term();
    net.crash(old);
    let took = net.run_until_settled(3_000);
    // The crashed node is still a member (discovery lists it), so "settled" needs the
    // two live nodes to agree: quorum is 2 of 3.
    assert!(took.is_some(), "no failover");
    let new = net.the_primary().unwrap();
    assert_ne!(new, old);
    assert!(net.nodes[new].core.term() > old_term);
    check_trace("primary_crash", &net);
}

#[test]
fn isolated_primary_steps_down_and_the_majority_elects_another() {
    let mut net = Net::with_nodes(4, Config::fast_test(), 3);
    net.run_until_settled(3_000).expect("settles");
    let old = net.the_primary().unwrap();
    net.isolate(old);
    net.run_for(400);
    let others: Vec<usize> = (0..3).filter(|s| *s != old).collect();
    assert!(
        !net.nodes[old].core.is_leader(),
        "isolated leader must step down (CheckQuorum)"
    );
    let primaries = net.primaries();
    assert_eq!(primaries.len(), 1);
    assert!(others.contains(&primaries[0]));
    net.heal();
    net.run_until_settled(2_000).expect("settles after heal");
    check_trace("primary_isolated", &net);
}

#[test]
fn healed_minority_does_not_disrupt_the_primary() {
    let mut net = Net::with_nodes(5, Config::fast_test().with_min_nodes(3), 5);
    net.run_until_settled(3_000).expect("settles");
    net.run_for(300);
    let p = net.the_primary().unwrap();
    let term = net.nodes[p].core.term();
    let follower = (0..5).find(|s| *s != p).unwrap();
    net.isolate(follower);
    net.run_for(1_000); // many election timeouts: PreVote keeps its term unchanged
    assert_eq!(
        net.nodes[follower].core.term(),
        term,
        "pre-vote must not raise the term"
    );
    net.heal();
    net.run_for(500);
    assert_eq!(
        net.the_primary(),
        Some(p),
        "the primary must survive the heal"
    );
    assert_eq!(net.nodes[p].core.term(), term);
    assert!(net.settled());
    check_trace("minority_healed", &net);
}

#[test]
fn graceful_leave_of_the_primary_hands_over_and_removes_it() {
    let mut net = Net::with_nodes(6, Config::fast_test(), 3);
    net.run_until_settled(3_000).expect("settles");
    net.run_for(200);
    let p = net.the_primary().unwrap();
    let pid = net.nodes[p].core.identity().id;
    net.leave(p);
    net.unlist(p);
    net.run_for(300);
    assert!(net.nodes[p].left, "leave must finish");
    let new = net.the_primary().expect("a new primary");
    assert_ne!(new, p);
    assert!(
        !net.nodes[new].core.members().contains(pid),
        "the leaver must be removed"
    );
    assert!(net.settled());
    check_trace("primary_leave", &net);
}

#[test]
fn rolling_restart_replaces_every_node_one_at_a_time() {
    let mut cfg = Config::fast_test();
    cfg.removal_grace = std::time::Duration::from_millis(300);
    let mut net = Net::with_nodes(7, cfg, 3);
    net.run_until_settled(3_000).expect("settles");
    for slot in 0..3 {
        net.replace(slot);
        // Like a rolling update gated on readiness: the next pod goes only once the
        // cluster has settled and removed the replaced identity.
        let gone = net.nodes[slot].core.identity().id;
        let mut waited = 0;
        let done = |net: &Net| {
            net.settled()
                && !net.nodes[net.the_primary().unwrap()]
                    .core
                    .members()
                    .contains(gone)
        };
        while !done(&net) {
            net.run_for(10);
            waited += 10;
            assert!(
                waited < 5_000,
                "did not settle after replacing n{}\n{}",
                slot + 1,
                net.trace_text()
            );
        }
    }
    let p = net.the_primary().unwrap();
    let members = net.nodes[p].core.members();
    assert_eq!(members.members.len(), 3, "old identities removed");
    for old in 0..3 {
        assert!(!members.contains(net.nodes[old].core.identity().id));
    }
    check_trace("rolling_restart", &net);
}

#[test]
fn skewed_discovery_at_bootstrap_still_forms_exactly_one_cluster() {
    let mut net = Net::new(8, Config::fast_test().with_min_nodes(3), Default::default());
    for _ in 0..5 {
        net.add_node();
    }
    // Each node sees only some of the others at first.
    let views: [&[usize]; 5] = [&[0, 1, 2], &[1, 2, 3], &[2, 3, 4], &[3, 4, 0], &[4, 0, 1]];
    for (slot, v) in views.iter().enumerate() {
        net.nodes[slot].discovery_view = Some(v.to_vec());
    }
    net.run_for(1_500);
    for slot in 0..5 {
        net.nodes[slot].discovery_view = None;
    }
    if net.run_until_settled(5_000).is_none() {
        panic!("did not settle\n{}", net.trace_text());
    }
    assert_eq!(net.checker.clusters(), 1, "exactly one cluster");
    check_trace("skewed_bootstrap", &net);
}

#[test]
fn a_new_node_joins_an_existing_cluster_instead_of_bootstrapping() {
    let mut net = Net::with_nodes(9, Config::fast_test(), 3);
    net.run_until_settled(3_000).expect("settles");
    let cluster = net.nodes[0].core.cluster();
    let newcomer = net.add_node();
    net.run_until_settled(3_000).expect("settles");
    net.run_for(200);
    assert_eq!(net.nodes[newcomer].core.cluster(), cluster);
    let p = net.the_primary().unwrap();
    let m = net.nodes[p].core.members();
    // A fourth voter would tolerate no more failures than three: it stays a
    // non-voter until a fifth node can be promoted with it.
    assert!(m.contains(net.nodes[newcomer].core.identity().id));
    assert_eq!(m.voter_count(), 3);
    assert_eq!(net.checker.clusters(), 1);
    check_trace("join_existing", &net);
}

#[test]
fn discovery_errors_and_empty_answers_remove_nobody() {
    let mut cfg = Config::fast_test();
    cfg.removal_grace = std::time::Duration::from_millis(200);
    let mut net = Net::with_nodes(10, cfg, 3);
    net.run_until_settled(3_000).expect("settles");
    for slot in 0..3 {
        net.nodes[slot].discovery_fails = true;
    }
    net.note("discovery fails everywhere".into());
    net.run_for(1_000);
    for slot in 0..3 {
        net.nodes[slot].discovery_fails = false;
        net.nodes[slot].discovery_view = Some(Vec::new());
    }
    net.note("discovery answers empty everywhere".into());
    net.run_for(1_000);
    let p = net.the_primary().expect("primary kept");
    assert_eq!(
        net.nodes[p].core.members().members.len(),
        3,
        "nobody removed"
    );
    assert!(net.settled());
    check_trace("discovery_errors", &net);
}

fn big_cluster(n: usize, seed: u64) -> (Net, u64) {
    // The data-centre profile: 50 ms heartbeats keep a thousand members affordable.
    // min_nodes above half the replicas: the assumption that rules out two clusters.
    let cfg = Config::datacenter().with_min_nodes(n / 2 + 1);
    let netcfg = common::NetConfig {
        discovery_interval: std::time::Duration::from_secs(5),
        ..Default::default()
    };
    let mut net = Net::new(seed, cfg, netcfg);
    net.record_trace = false;
    for _ in 0..n {
        net.add_node();
    }
    let Some(took) = net.run_until_settled(60_000) else {
        let in_cluster = net
            .nodes
            .iter()
            .filter(|n| n.core.cluster().is_some())
            .count();
        let leaders: Vec<String> = net
            .nodes
            .iter()
            .filter(|n| n.core.is_leader())
            .map(|n| {
                format!(
                    "{} {} members {}",
                    n.name,
                    n.core.term(),
                    n.core.members().members.len()
                )
            })
            .collect();
        let mut views: Vec<(usize, u64)> = net
            .nodes
            .iter()
            .map(|n| (n.core.members().members.len(), n.core.commit_index()))
            .collect();
        views.sort();
        views.dedup();
        panic!("not settled: {in_cluster}/{n} in a cluster, primaries {:?}, leaders {leaders:?}, views {views:?}", net.primaries());
    };
    let p = net.the_primary().unwrap();
    let m = net.nodes[p].core.members();
    assert_eq!(m.members.len(), n);
    assert_eq!(m.voter_count(), 5);
    assert_eq!(net.checker.clusters(), 1);
    assert!(
        net.checker.violations.is_empty(),
        "{:?}",
        net.checker.violations
    );
    (net, took)
}

#[test]
fn hundred_members_keep_five_voters() {
    let (_, took) = big_cluster(100, 12);
    println!("100 members settled after {took} ms");
}

/// About 40 s in release mode, minutes in debug: `.ci/run` runs it with
/// `cargo test --release -p cluster-mode-core --test scenarios -- --ignored`.
#[test]
#[ignore = "slow in debug builds; run in release"]
fn thousand_members_keep_five_voters() {
    let (mut net, took) = big_cluster(1000, 11);
    println!("1000 members settled after {took} ms");
    net.record_trace = true;
    net.note(format!("settled: 1000 members, 5 voters, after {took}ms"));
    check_trace("thousand_members", &net);
}
