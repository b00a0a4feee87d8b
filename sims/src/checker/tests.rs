//! Self-tests of the checker: hand-made histories, bad ones caught and good ones passed.

use super::{check, Liveness, Violation};
use cluster_mode_core::{ClusterId, NodeId, Role, RoleToken};
use cluster_mode_madsim::{HeldRole, NodeView, Record, RecordKind, Trace};

const MS: u64 = 1_000_000;

/// A hand-made history, one record at a time.
#[derive(Default)]
struct History {
    records: Vec<Record>,
    names: Vec<String>,
}

impl History {
    fn push(&mut self, at_ms: u64, slot: usize, kind: RecordKind) {
        if self.names.len() <= slot {
            self.names.resize_with(slot + 1, String::new);
            self.names[slot] = format!("n{slot}");
        }
        self.records.push(Record {
            at_ns: at_ms * MS,
            slot,
            kind,
        });
    }

    fn start(&mut self, at_ms: u64, slot: usize, id: u128) {
        let kind = RecordKind::Started {
            name: format!("n{slot}"),
            id: NodeId(id),
            addr: format!("10.0.0.{slot}:7000"),
        };
        self.push(at_ms, slot, kind);
    }

    fn stop(&mut self, at_ms: u64, slot: usize) {
        self.push(at_ms, slot, RecordKind::Stopped("killed".into()));
    }

    /// A secondary of `cluster` following `primary`.
    fn follow(&mut self, at_ms: u64, slot: usize, id: u128, cluster: ClusterId, primary: u128) {
        let mut v = view(id, cluster, 1);
        v.role = Role::Secondary;
        v.primary = Some(NodeId(primary));
        self.push(at_ms, slot, RecordKind::View(v));
    }

    /// The primary of `cluster` in `term`, its lease until `until_ms`.
    fn lead(
        &mut self,
        at_ms: u64,
        slot: usize,
        id: u128,
        cluster: ClusterId,
        term: u64,
        until_ms: u64,
    ) {
        let mut v = view(id, cluster, term);
        v.role = Role::Primary;
        v.is_leader = true;
        v.primary = Some(NodeId(id));
        v.lease_valid = true;
        v.lease_end_ns = Some(until_ms * MS);
        v.fencing_term = Some(term);
        self.push(at_ms, slot, RecordKind::View(v));
    }

    /// The same process, no longer primary (a candidate of its cluster).
    fn step_down(&mut self, at_ms: u64, slot: usize, id: u128, cluster: ClusterId, term: u64) {
        let mut v = view(id, cluster, term);
        v.role = Role::Candidate;
        self.push(at_ms, slot, RecordKind::View(v));
    }

    /// A secondary of `cluster` following `primary`, holding `roles` (name, grant
    /// index, release deadline in ms) until `until_ms` (`None`: a hold with no end).
    #[allow(clippy::too_many_arguments)]
    fn hold(
        &mut self,
        at_ms: u64,
        slot: usize,
        id: u128,
        cluster: ClusterId,
        primary: u128,
        roles: &[(&str, u64, Option<u64>)],
        until_ms: Option<u64>,
    ) {
        let mut v = view(id, cluster, 1);
        v.role = Role::Secondary;
        v.primary = Some(NodeId(primary));
        v.roles = Some(
            roles
                .iter()
                .map(|(role, index, by)| HeldRole {
                    role: (*role).to_string(),
                    token: RoleToken {
                        cluster,
                        index: *index,
                    },
                    release_by_ns: by.map(|b| b * MS),
                })
                .collect(),
        );
        v.role_hold_end_ns = until_ms.map(|u| u * MS);
        self.push(at_ms, slot, RecordKind::View(v));
    }

    fn trace(mut self, end_ms: u64) -> Trace {
        self.records.sort_by_key(|r| r.at_ns);
        Trace {
            records: self.records,
            names: self.names,
            sent: Vec::new(),
            end_ns: end_ms * MS,
        }
    }

    fn check(self, end_ms: u64) -> Vec<Violation> {
        check(&self.trace(end_ms), None)
    }
}

fn view(id: u128, cluster: ClusterId, term: u64) -> NodeView {
    NodeView {
        id: NodeId(id),
        cluster: Some(cluster),
        role: Role::Candidate,
        term,
        is_leader: false,
        primary: None,
        commit_index: 1,
        members: Vec::new().into(),
        members_hash: 0,
        lease_valid: false,
        lease_end_ns: None,
        fencing_term: None,
        roles: Some(Vec::new().into()),
        role_hold_end_ns: None,
    }
}

fn cluster(epoch: u32, random: u128) -> ClusterId {
    ClusterId::with_epoch(epoch, random)
}

fn assert_caught(v: &[Violation], what: &str) {
    assert!(
        v.iter().any(|x| x.what.contains(what)),
        "expected a violation containing {what:?}, got {v:?}"
    );
}

/// Three nodes in cluster `x` (epoch 1), n0 primary in term 1 until 100 ms; then n0
/// and n1 are killed at 100 ms.
fn majority_lost(x: ClusterId) -> History {
    let mut h = History::default();
    for s in 0..3 {
        h.start(0, s, 10 + s as u128);
    }
    h.lead(10, 0, 10, x, 1, 100);
    h.follow(10, 1, 11, x, 10);
    h.follow(10, 2, 12, x, 10);
    h.stop(100, 0);
    h.stop(100, 1);
    h.start(100, 0, 20);
    h.start(100, 1, 21);
    h
}

#[test]
fn a_recovery_one_epoch_higher_passes() {
    let x = cluster(1, 0xffff);
    let y = cluster(2, 1);
    let mut h = majority_lost(x);
    h.lead(2_000, 2, 12, y, 1, 2_500);
    h.follow(2_010, 0, 20, y, 12);
    h.follow(2_010, 1, 21, y, 12);
    let v = h.check(3_000);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn a_recovered_cluster_whose_token_is_not_above_the_previous_primarys_is_caught() {
    // The survivor was in an epoch-3 cluster and founds an epoch-2 one: a new epoch,
    // but its tokens are below those of the primary before it.
    let x = cluster(3, 5);
    let y = cluster(2, 9);
    let mut h = majority_lost(x);
    h.lead(2_000, 2, 12, y, 1, 2_500);
    let v = h.check(3_000);
    assert_caught(&v, "fencing token did not increase across clusters");
    // A replaced cluster electing a primary after its successor's: tokens go back.
    let (x, y) = (cluster(1, 5), cluster(2, 1));
    let mut h = majority_lost(x);
    h.lead(2_000, 2, 12, y, 1, 2_200);
    h.step_down(2_200, 2, 12, y, 1);
    h.lead(2_300, 0, 20, x, 2, 2_500);
    let v = h.check(3_000);
    assert_caught(&v, "fencing token did not increase across clusters");
}

#[test]
fn two_clusters_of_epoch_one_are_caught() {
    // The survivor founds an epoch-1 cluster (a recovery that forgot the epoch).
    let mut h = majority_lost(cluster(1, 5));
    h.lead(2_000, 2, 12, cluster(1, 9), 1, 2_500);
    assert_caught(&h.check(3_000), "two clusters of epoch 1");
    // Two cold starts side by side, n0 and n1 both fresh, while n2 is in the first.
    let mut h = majority_lost(cluster(1, 5));
    h.lead(2_000, 0, 20, cluster(1, 9), 1, 2_500);
    assert_caught(&h.check(3_000), "two clusters of epoch 1");
    // Two recoveries of one cluster.
    let mut h = majority_lost(cluster(1, 5));
    h.lead(2_000, 2, 12, cluster(2, 1), 1, 2_100);
    h.follow(2_200, 0, 20, cluster(2, 7), 12);
    assert_caught(&h.check(3_000), "two clusters of epoch 2");
}

#[test]
fn a_cold_start_after_the_whole_fleet_restarted_passes() {
    let x = cluster(1, 0xffff);
    let z = cluster(1, 1);
    let mut h = majority_lost(x);
    h.stop(200, 2);
    h.start(200, 2, 22);
    h.lead(3_000, 1, 21, z, 1, 3_500);
    h.follow(3_010, 0, 20, z, 21);
    h.follow(3_010, 2, 22, z, 21);
    let v = h.check(4_000);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn two_primaries_of_different_clusters_at_once_are_caught() {
    let x = cluster(1, 5);
    let y = cluster(2, 1);
    let mut h = History::default();
    for s in 0..3 {
        h.start(0, s, 10 + s as u128);
    }
    // n0 still holds its lease of x until 2,100 ms when n2 founds y at 2,000 ms.
    h.lead(1_900, 0, 10, x, 1, 2_100);
    h.lead(2_000, 2, 12, y, 1, 2_500);
    let v = h.check(3_000);
    assert_caught(&v, "two primaries at once");
}

/// Three nodes of cluster `x` (epoch 1), started at 0 ms, none yet primary.
fn three(x: ClusterId) -> History {
    let mut h = History::default();
    for s in 0..3 {
        h.start(0, s, 10 + s as u128);
        h.follow(5, s, 10 + s as u128, x, 10);
    }
    h
}

#[test]
fn a_handover_after_the_lease_ends_passes() {
    let x = cluster(1, 5);
    let mut h = three(x);
    h.lead(10, 0, 10, x, 2, 300);
    // n1 is elected at 400 ms: n0's lease ran out at 300 ms, though n0 published no
    // view since (a paused or partitioned primary whose lease lapsed on its own).
    h.lead(400, 1, 11, x, 3, 800);
    // n1 again, after stepping down at 700 ms with its lease end still ahead: the
    // step-down ends its interval.
    h.step_down(700, 1, 11, x, 3);
    h.lead(750, 2, 12, x, 4, 1_000);
    let v = h.check(1_000);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn two_overlapping_primaries_of_one_cluster_are_caught() {
    let x = cluster(1, 5);
    let mut h = three(x);
    // n0's lease runs until 500 ms; n1 becomes primary at 400 ms.
    h.lead(10, 0, 10, x, 2, 500);
    h.lead(400, 1, 11, x, 3, 800);
    assert_caught(
        &h.check(1_000),
        "two primaries at once: n1 (term 3) from 400 ms",
    );
    // An overlap of 1 ms is an overlap.
    let mut h = three(x);
    h.lead(10, 0, 10, x, 2, 401);
    h.lead(400, 1, 11, x, 3, 800);
    assert_caught(&h.check(1_000), "two primaries at once");
    // A primary that claims a valid lease with no end holds it until its next view.
    let mut h = three(x);
    h.lead(10, 0, 10, x, 2, 500);
    let mut bad = view(10, x, 2);
    bad.role = Role::Primary;
    bad.is_leader = true;
    bad.lease_valid = true;
    bad.lease_end_ns = None;
    bad.fencing_term = Some(2);
    h.push(20, 0, RecordKind::View(bad));
    h.lead(900, 1, 11, x, 3, 1_200);
    assert_caught(&h.check(1_500), "two primaries at once");
}

#[test]
fn a_falling_fencing_token_in_one_cluster_is_caught() {
    let x = cluster(1, 5);
    // n1's lease in term 2 follows n0's in term 3, without overlap.
    let mut h = three(x);
    h.lead(10, 0, 10, x, 3, 300);
    h.lead(400, 1, 11, x, 2, 800);
    assert_caught(
        &h.check(1_000),
        "fencing token did not increase: n1 has term 2",
    );
    // Two primaries in turn with the same term (also two leaders of one term).
    let mut h = three(x);
    h.lead(10, 0, 10, x, 3, 300);
    h.lead(400, 1, 11, x, 3, 800);
    let v = h.check(1_000);
    assert_caught(&v, "fencing token did not increase: n1 has term 3");
    assert_caught(&v, "two leaders in term 3");
    // One primary whose own token falls.
    let mut h = three(x);
    h.lead(10, 0, 10, x, 3, 300);
    h.lead(300, 0, 10, x, 2, 600);
    assert_caught(
        &h.check(1_000),
        "fencing token did not increase: n0 has term 2",
    );
}

#[test]
fn two_leaders_in_one_term_are_caught() {
    let x = cluster(1, 5);
    let mut h = three(x);
    let mut a = view(10, x, 4);
    a.is_leader = true;
    let mut b = view(11, x, 4);
    b.is_leader = true;
    h.push(10, 0, RecordKind::View(a));
    h.push(20, 1, RecordKind::View(b));
    let v = h.check(100);
    assert_caught(&v, "two leaders in term 4");
    assert!(v.iter().all(|x| !x.what.contains("primaries")), "{v:?}");
}

#[test]
fn diverged_member_lists_are_caught() {
    let x = cluster(1, 5);
    let commit = |h: &mut History, at_ms: u64, slot: usize, index: u64, hash: u64| {
        let mut v = view(10 + slot as u128, x, 2);
        v.role = Role::Secondary;
        v.commit_index = index;
        v.members_hash = hash;
        h.push(at_ms, slot, RecordKind::View(v));
    };
    let agreeing = |h: &mut History| {
        commit(h, 10, 0, 2, 200);
        commit(h, 20, 1, 2, 200);
        commit(h, 30, 1, 3, 300);
    };
    let mut h = three(x);
    agreeing(&mut h);
    let v = h.check(100);
    assert!(v.is_empty(), "{v:?}");
    // n2 committed another list at index 2.
    let mut h = three(x);
    agreeing(&mut h);
    commit(&mut h, 40, 2, 2, 999);
    assert_caught(&h.check(100), "committed different member lists at index 2");
}

// ----- named roles (P13) -------------------------------------------------------------

/// Three nodes of cluster `x`, n0 primary in term 2 with its lease renewed until
/// 10 s (so that only roles are at stake), n1 and n2 following it.
fn roles_base(x: ClusterId) -> History {
    let mut h = History::default();
    for s in 0..3 {
        h.start(0, s, 10 + s as u128);
    }
    h.lead(5, 0, 10, x, 2, 10_000);
    h
}

#[test]
fn two_owners_of_one_role_at_once_are_caught() {
    let x = cluster(1, 5);
    // n1 holds shard-1 until 300 ms; n2 is granted it at 200 ms.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 5, None)], Some(300));
    h.hold(200, 2, 12, x, 10, &[("shard-1", 9, None)], Some(500));
    let v = h.check(1_000);
    assert_caught(
        &v,
        "two owners of role shard-1 at once: n2 (token 00000000/9) from 200 ms while n1",
    );
    assert!(v.iter().all(|x| !x.what.contains("token did not")), "{v:?}");
    // An overlap of 1 ms is an overlap.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 5, None)], Some(201));
    h.hold(200, 2, 12, x, 10, &[("shard-1", 9, None)], Some(500));
    assert_caught(&h.check(1_000), "two owners of role shard-1");
    // A renewal extends the hold: n1 renewed at 150 ms until 400 ms.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 5, None)], Some(190));
    h.hold(150, 1, 11, x, 10, &[("shard-1", 5, None)], Some(400));
    h.hold(300, 2, 12, x, 10, &[("shard-1", 9, None)], Some(500));
    assert_caught(&h.check(1_000), "two owners of role shard-1");
    // A hold claimed with no end lasts until the node's next view.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 5, None)], None);
    h.hold(900, 2, 12, x, 10, &[("shard-1", 9, None)], Some(1_200));
    assert_caught(&h.check(1_500), "two owners of role shard-1");
    // A view that says nothing about roles (from a RoleChanged event) does not end
    // the hold.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 5, None)], Some(300));
    let mut silent = view(11, x, 1);
    silent.role = Role::Secondary;
    silent.roles = None;
    h.push(100, 1, RecordKind::View(silent));
    h.hold(200, 2, 12, x, 10, &[("shard-1", 9, None)], Some(500));
    assert_caught(&h.check(1_000), "two owners of role shard-1");
    // A stopped node holds nothing.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 5, None)], Some(300));
    h.stop(150, 1);
    h.hold(200, 2, 12, x, 10, &[("shard-1", 9, None)], Some(500));
    let v = h.check(1_000);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn role_handovers_after_the_hold_or_the_release_deadline_pass() {
    let x = cluster(1, 5);
    let mut h = roles_base(x);
    // n1 holds shard-1 and shard-2, renewed; its hold ends at 300 ms.
    h.hold(
        10,
        1,
        11,
        x,
        10,
        &[("shard-1", 5, None), ("shard-2", 5, None)],
        Some(200),
    );
    h.hold(
        100,
        1,
        11,
        x,
        10,
        &[("shard-1", 5, None), ("shard-2", 5, None)],
        Some(300),
    );
    // shard-1 to n2 once n1's hold ran out (no view of n1 in between).
    h.hold(300, 2, 12, x, 10, &[("shard-1", 9, None)], Some(600));
    // n1 again, renewed, asked to release shard-2 by 450 ms; n2 takes it at 450 ms.
    h.hold(400, 1, 11, x, 10, &[("shard-2", 5, Some(450))], Some(700));
    h.hold(
        450,
        2,
        12,
        x,
        10,
        &[("shard-1", 9, None), ("shard-2", 12, None)],
        Some(700),
    );
    // n1 gives up shard-2 (a view holding nothing), then gets shard-1 back with a
    // higher token.
    h.hold(460, 1, 11, x, 10, &[], Some(700));
    h.hold(650, 2, 12, x, 10, &[("shard-2", 12, None)], Some(900));
    h.hold(660, 1, 11, x, 10, &[("shard-1", 14, None)], Some(900));
    // The same owner keeping its token over two intervals (a gap) is fine.
    h.hold(950, 2, 12, x, 10, &[("shard-2", 12, None)], Some(1_200));
    let v = h.check(1_500);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn a_falling_role_token_is_caught() {
    let x = cluster(1, 5);
    // n2 takes shard-1 after n1's hold ended, with a lower token.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 9, None)], Some(100));
    h.hold(150, 2, 12, x, 10, &[("shard-1", 5, None)], Some(400));
    let v = h.check(1_000);
    assert_caught(
        &v,
        "role token did not rise: n2 holds role shard-1 with token 00000000/5",
    );
    assert!(v.iter().all(|x| !x.what.contains("two owners")), "{v:?}");
    // The same token for another owner is no rise either.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 9, None)], Some(100));
    h.hold(150, 2, 12, x, 10, &[("shard-1", 9, None)], Some(400));
    assert_caught(&h.check(1_000), "role token did not rise");
    // One owner whose own token falls.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 9, None)], Some(100));
    h.hold(150, 1, 11, x, 10, &[("shard-1", 7, None)], Some(400));
    assert_caught(&h.check(1_000), "role token did not rise: n1");
    // Across clusters: a recovery one epoch lower (not a cold start) is caught.
    let (a, b) = (cluster(3, 5), cluster(2, 1));
    let mut h = History::default();
    for s in 0..3 {
        h.start(0, s, 10 + s as u128);
    }
    h.lead(5, 0, 10, a, 2, 200);
    h.hold(10, 1, 11, a, 10, &[("shard-1", 9, None)], Some(100));
    h.lead(300, 2, 12, b, 1, 900);
    h.hold(400, 1, 11, b, 12, &[("shard-1", 30, None)], Some(600));
    assert_caught(&h.check(1_000), "role token did not rise");
}

#[test]
fn roles_not_owned_after_the_bound_fail_liveness() {
    let x = cluster(1, 5);
    // The role violations only (these hand-made views carry no member lists, so the
    // primary's part of the liveness check fails on them).
    let check = |t: &Trace, l: Liveness| -> Vec<Violation> {
        check(t, Some(l))
            .into_iter()
            .filter(|v| v.what.contains("role"))
            .collect()
    };
    let live = |roles: &[&str]| Liveness {
        last_fault_ns: 0,
        bound_ns: 500 * MS,
        roles: roles.iter().map(|r| (*r).to_string()).collect(),
    };
    // shard-1 owned by n1, shard-2 by nobody.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 5, None)], Some(2_000));
    h.hold(10, 2, 12, x, 10, &[], Some(2_000));
    let t = h.trace(1_000);
    let v = check(&t, live(&["shard-1", "shard-2"]));
    assert_caught(&v, "role shard-2 has no owner");
    assert!(check(&t, live(&["shard-1"])).is_empty());
    // shard-1 owned twice at the end (and also a safety violation).
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 5, None)], Some(2_000));
    h.hold(10, 2, 12, x, 10, &[], Some(2_000));
    h.hold(800, 2, 12, x, 10, &[("shard-1", 9, None)], Some(2_000));
    let v = check(&h.trace(1_000), live(&["shard-1"]));
    assert_caught(
        &v,
        "roles no longer settled at the end: role shard-1 has 2 owners",
    );
    // Owned only after the bound.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[], Some(2_000));
    h.hold(700, 1, 11, x, 10, &[("shard-1", 5, None)], Some(2_000));
    let v = check(&h.trace(1_000), live(&["shard-1"]));
    assert_caught(&v, "every role owned once only 700 ms after the last fault");
    // A hold that runs out by time alone (no later view) at the end.
    let mut h = roles_base(x);
    h.hold(10, 1, 11, x, 10, &[("shard-1", 5, None)], Some(300));
    h.hold(900, 2, 12, x, 10, &[], Some(2_000));
    let v = check(&h.trace(1_000), live(&["shard-1"]));
    assert_caught(
        &v,
        "roles no longer settled at the end: role shard-1 has no owner",
    );
}
