//! Named roles (P13) across real `cluster-node` processes on 127.0.0.1: graceful
//! leaves (of a follower and of the primary), joins and SIGKILLs, with every
//! process's role intervals on the host's `CLOCK_BOOTTIME` (`cluster_mode::role_log`)
//! compared at the end: two processes whose intervals of one role overlap were two
//! owners at once. Default (datacenter) timings; about 10 s.
// Real sockets and processes: not under the madsim simulator.
#![cfg(not(madsim))]

#[path = "common/procs.rs"]
mod procs;
#[path = "common/roles.rs"]
mod roles;

use roles::{Fleet, Settled};
use std::time::Duration;

const ROLES: usize = 24;
const QUIET: Duration = Duration::from_millis(400);
const EVERY: Duration = Duration::from_millis(40);
const WITHIN: Duration = Duration::from_secs(20);

fn busiest_follower(s: &Settled) -> usize {
    s.load()
        .into_iter()
        .filter(|(slot, _)| *slot != s.primary)
        .max_by_key(|(_, r)| r.len())
        .map(|(slot, _)| slot)
        .expect("a follower owns roles")
}

async fn settled(f: &mut Fleet, step: &str) -> Settled {
    let s = f
        .wait_settled(ROLES, QUIET, EVERY, WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{step}: {e}"));
    let load: Vec<(String, usize)> = s
        .load()
        .iter()
        .map(|(slot, r)| (Fleet::name(*slot), r.len()))
        .collect();
    eprintln!(
        "{step}: primary {}, roles per node {load:?}",
        Fleet::name(s.primary)
    );
    s
}

/// Five processes declaring 24 roles: a follower leaves, the primary leaves, two new
/// processes join, a follower is SIGKILLed, then the primary. Every role is owned again after each step,
/// no role ever had two owners (from every process's record), and every "owned"
/// answer the status endpoint gave falls in the answering process's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_never_have_two_owners_across_leaves_joins_and_kills() {
    let extra = vec!["--roles-count".to_string(), ROLES.to_string()];
    let mut f = Fleet::start(7, 5, &extra);
    let mut records = Vec::new();
    let s0 = settled(&mut f, "cold start").await;

    let leaver = busiest_follower(&s0);
    let leaver_roles = s0.roles_of(leaver);
    let (_, rec) = f.leave(leaver).await.expect("follower leaves");
    records.push((Fleet::name(leaver), rec));
    let s1 = settled(&mut f, "after a follower left").await;

    let primary = s1.primary;
    let primary_roles = s1.roles_of(primary);
    let (_, rec) = f.leave(primary).await.expect("primary leaves");
    records.push((Fleet::name(primary), rec));
    settled(&mut f, "after the primary left").await;

    f.spawn(5);
    let s3 = settled(&mut f, "after a join").await;
    assert!(
        s3.load().contains_key(&5),
        "the new process got no role: {:?}",
        s3.load()
    );

    f.spawn(6);
    let s4 = settled(&mut f, "after a second join").await;

    let victim = busiest_follower(&s4);
    let victim_roles = s4.roles_of(victim);
    let (killed_at, rec) = f.kill(victim).await.expect("kill");
    records.push((Fleet::name(victim), rec));
    let s5 = settled(&mut f, "after a SIGKILL of a follower").await;

    // Three of the five voters left: the primary's roles wait for the election.
    let dead_primary = s5.primary;
    let dead_primary_roles = s5.roles_of(dead_primary);
    let (primary_killed_at, rec) = f.kill(dead_primary).await.expect("kill");
    records.push((Fleet::name(dead_primary), rec));
    settled(&mut f, "after a SIGKILL of the primary").await;

    records.extend(f.finish().await.expect("survivors' records"));
    let overlaps = roles::overlap_lines(&records).expect("comparable records");
    let intervals: usize = records.iter().map(|(_, r)| r.intervals.len()).sum();
    eprintln!(
        "{intervals} role intervals of {} processes compared, {} status answers checked",
        records.len(),
        f.samples.len()
    );
    assert!(
        overlaps.is_empty(),
        "{} overlap(s):\n{}",
        overlaps.len(),
        overlaps.join("\n")
    );
    let uncovered = roles::uncovered(&f.samples, &records);
    assert!(uncovered.is_empty(), "{}", uncovered.join("\n"));
    // Every role of the leavers and of the victim was owned again, after it.
    for (who, roles) in [(leaver, &leaver_roles), (primary, &primary_roles)] {
        for g in roles::handover_gaps(&records, &Fleet::name(who), roles) {
            let (role, gap, next) = g.unwrap_or_else(|e| panic!("{e}"));
            assert!(gap >= 0, "{role}: gap {gap} ns to {next}");
            eprintln!(
                "{role}: {} -> {next} after a gap of {:.1} ms",
                Fleet::name(who),
                gap as f64 / 1e6
            );
        }
    }
    for (who, roles, at) in [
        (victim, &victim_roles, killed_at),
        (dead_primary, &dead_primary_roles, primary_killed_at),
    ] {
        for r in roles::reassignment_times(&records, &Fleet::name(who), roles, at) {
            let (role, ns, next) = r.unwrap_or_else(|e| panic!("{e}"));
            eprintln!(
                "{role}: {} SIGKILLed, owned by {next} {:.0} ms later",
                Fleet::name(who),
                ns as f64 / 1e6
            );
        }
    }
}
