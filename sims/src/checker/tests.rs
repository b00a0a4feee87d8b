//! Self-tests of the checker: hand-made histories, bad ones caught and good ones passed.

use super::{check, Violation};
use cluster_mode_core::{ClusterId, NodeId, Role};
use cluster_mode_madsim::{NodeView, Record, RecordKind, Trace};

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

    fn check(mut self, end_ms: u64) -> Vec<Violation> {
        self.records.sort_by_key(|r| r.at_ns);
        let trace = Trace {
            records: self.records,
            names: self.names,
            sent: Vec::new(),
            end_ns: end_ms * MS,
        };
        check(&trace, None)
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
        members: Vec::new(),
        members_hash: 0,
        lease_valid: false,
        lease_end_ns: None,
        fencing_term: None,
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
