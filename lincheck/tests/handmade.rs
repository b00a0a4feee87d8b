//! Hand-made histories: non-linearizable ones the checker must reject, linearizable
//! ones it must accept.

use cluster_mode_lincheck::{
    check, check_with, CheckError, History, Op, Options, Outcome, Role, Violation, ViolationKind,
};

/// A small builder: `b.put(client, invoke, ret, key, value, revision)` and so on.
#[derive(Default)]
struct B(History);

impl B {
    fn put(&mut self, c: u64, i: u64, r: u64, k: &str, v: &str, rev: u64) -> &mut Self {
        self.0
            .push(c, i, r, put(k, v), Outcome::Put { revision: rev });
        self
    }
    fn put_unknown(&mut self, c: u64, i: u64, r: u64, k: &str, v: &str) -> &mut Self {
        self.0.push(c, i, r, put(k, v), Outcome::Unknown);
        self
    }
    fn get(&mut self, c: u64, i: u64, r: u64, k: &str, v: &str, rev: u64) -> &mut Self {
        self.0.push(
            c,
            i,
            r,
            get(k),
            Outcome::Found {
                value: v.as_bytes().to_vec(),
                mod_revision: rev,
            },
        );
        self
    }
    fn absent(&mut self, c: u64, i: u64, r: u64, k: &str) -> &mut Self {
        self.0.push(c, i, r, get(k), Outcome::Absent);
        self
    }
    fn delete(&mut self, c: u64, i: u64, r: u64, k: &str, rev: u64, existed: bool) -> &mut Self {
        self.0.push(
            c,
            i,
            r,
            Op::Delete {
                key: k.as_bytes().to_vec(),
            },
            Outcome::Deleted {
                revision: rev,
                existed,
            },
        );
        self
    }
    #[allow(clippy::too_many_arguments)]
    fn cas(
        &mut self,
        c: u64,
        i: u64,
        r: u64,
        k: &str,
        expected: u64,
        v: &str,
        outcome: Outcome,
    ) -> &mut Self {
        self.0.push(
            c,
            i,
            r,
            Op::CompareAndSwap {
                key: k.as_bytes().to_vec(),
                expected_revision: expected,
                value: v.as_bytes().to_vec(),
            },
            outcome,
        );
        self
    }
    fn history(&self) -> &History {
        &self.0
    }
}

fn put(k: &str, v: &str) -> Op {
    Op::Put {
        key: k.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
    }
}

fn get(k: &str) -> Op {
    Op::Get {
        key: k.as_bytes().to_vec(),
    }
}

fn rejected(h: &History, kind: ViolationKind) -> Violation {
    match check(h) {
        Ok(report) => panic!("accepted a non-linearizable history: {report:?}\n{h:#?}"),
        Err(CheckError::Violation(v)) => {
            println!("{v}");
            assert_eq!(v.kind, kind, "{v}");
            *v
        }
        Err(e) => panic!("expected a violation, got {e}"),
    }
}

fn accepted(h: &History) {
    if let Err(e) = check(h) {
        panic!("rejected a linearizable history:\n{e}");
    }
}

fn checked_indices(v: &Violation) -> Vec<usize> {
    v.operations
        .iter()
        .filter(|(_, role, _)| *role == Role::Checked)
        .map(|(i, _, _)| *i)
        .collect()
}

// ---------------------------------------------------------------- rejected

#[test]
fn stale_read_after_primary_change() {
    // The old primary acknowledged a; the new primary acknowledged b; a read that
    // began after b returned, served by the deposed primary, still sees a.
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 3)
        .put(2, 20, 30, "x", "b", 7)
        .get(3, 40, 50, "x", "a", 3);
    let v = rejected(b.history(), ViolationKind::NotLinearizable);
    assert_eq!(v.key.as_deref(), Some(&b"x"[..]));
    // The shortest witness: b and the stale read (a is cut away, the state before b
    // taken as unknown).
    assert_eq!(checked_indices(&v), vec![1, 2], "{v}");
    assert!(v.elided_before.is_some(), "{v}");
}

#[test]
fn concurrent_writes_follow_their_revisions() {
    // Two concurrent puts commit at 5 and 6: the log says b is last. A read after
    // both returned that sees a (at 5) is stale, though a order "b then a" would
    // explain the value.
    let mut b = B::default();
    b.put(1, 0, 100, "x", "a", 5)
        .put(2, 10, 90, "x", "b", 6)
        .get(3, 200, 210, "x", "a", 5);
    rejected(b.history(), ViolationKind::NotLinearizable);
    // All concurrent, so real time orders nothing: only the revisions do. The swap
    // expected revision 5 and committed at 7, so nothing was written at 6 between
    // them; but a was.
    let mut b = B::default();
    b.put(1, 0, 100, "x", "b", 5)
        .put(2, 0, 100, "x", "a", 6)
        .cas(3, 0, 100, "x", 5, "c", Outcome::Swapped { revision: 7 });
    rejected(b.history(), ViolationKind::NotLinearizable);
    // Seeing b at 6 is fine.
    let mut b = B::default();
    b.put(1, 0, 100, "x", "a", 5)
        .put(2, 10, 90, "x", "b", 6)
        .get(3, 200, 210, "x", "b", 6);
    accepted(b.history());
}

#[test]
fn stale_read_shown_by_a_write_to_another_key() {
    // The write of b to x is still in flight when the read starts, but a write to y
    // at a later revision returned before the read began: the read comes after
    // revision 8 > 7, so it must see b.
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 3)
        .put(2, 5, 100, "x", "b", 7)
        .put(3, 20, 30, "y", "c", 8)
        .get(4, 40, 50, "x", "a", 3);
    let v = rejected(b.history(), ViolationKind::NotLinearizable);
    assert!(
        v.operations
            .iter()
            .any(|(i, role, _)| *i == 2 && *role == Role::Witness),
        "{v}"
    );
    // Without the write to y the same history is linearizable.
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 3)
        .put(2, 5, 100, "x", "b", 7)
        .get(4, 40, 50, "x", "a", 3);
    accepted(b.history());
}

#[test]
fn lost_acknowledged_write() {
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 4).absent(2, 20, 30, "x");
    rejected(b.history(), ViolationKind::NotLinearizable);
    // Lost behind an older value.
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 4)
        .put(1, 20, 30, "x", "b", 6)
        .get(2, 40, 50, "x", "a", 4)
        .get(3, 60, 70, "x", "a", 4);
    rejected(b.history(), ViolationKind::NotLinearizable);
}

#[test]
fn write_applied_twice() {
    // A put retried after a primary change (recorded as one operation, from the first
    // attempt to the acknowledgement) is applied again after a later write: a read
    // sees the old value again, with a new revision.
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 3)
        .put(2, 20, 30, "x", "b", 4)
        .get(3, 40, 50, "x", "a", 6);
    rejected(b.history(), ViolationKind::NotLinearizable);
}

#[test]
fn cas_succeeds_against_a_wrong_revision() {
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 3)
        .put(2, 20, 30, "x", "b", 5)
        .cas(3, 40, 50, "x", 3, "c", Outcome::Swapped { revision: 7 });
    rejected(b.history(), ViolationKind::NotLinearizable);
    // A mismatch that reports a stale current revision.
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 3)
        .put(2, 20, 30, "x", "b", 5)
        .cas(
            3,
            40,
            50,
            "x",
            1,
            "c",
            Outcome::Mismatch {
                current_revision: 3,
            },
        );
    rejected(b.history(), ViolationKind::NotLinearizable);
    // A swap of an absent key (expected 0) while it is present.
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 3)
        .cas(3, 40, 50, "x", 0, "c", Outcome::Swapped { revision: 7 });
    rejected(b.history(), ViolationKind::NotLinearizable);
}

#[test]
fn non_monotonic_revisions_in_real_time() {
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 10).put(2, 20, 30, "y", "b", 5);
    let v = rejected(b.history(), ViolationKind::RevisionOrder);
    assert_eq!(checked_indices(&v), vec![0, 1]);
    // Through a read: the read saw revision 10, then a write commits at 8.
    let mut b = B::default();
    b.put(1, 0, 100, "x", "a", 10)
        .get(2, 20, 30, "x", "a", 10)
        .put(3, 40, 50, "y", "b", 8);
    rejected(b.history(), ViolationKind::RevisionOrder);
}

#[test]
fn duplicate_and_foreign_revisions() {
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 3).put(2, 0, 10, "y", "b", 3);
    rejected(b.history(), ViolationKind::DuplicateRevision);
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 3)
        .put(2, 0, 10, "y", "b", 4)
        .get(3, 20, 30, "x", "a", 4);
    rejected(b.history(), ViolationKind::ForeignRevision);
}

#[test]
fn delete_that_misreports_existence() {
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 3)
        .delete(2, 20, 30, "x", 4, false);
    rejected(b.history(), ViolationKind::NotLinearizable);
    let mut b = B::default();
    b.delete(2, 20, 30, "x", 4, true);
    rejected(b.history(), ViolationKind::NotLinearizable);
}

#[test]
fn unknown_write_revealed_below_its_floor() {
    // y committed at 3 before the maybe-committed put of x was invoked, so if that
    // put took effect its revision is above 3; a read reporting it at 2 is wrong.
    let mut b = B::default();
    b.put(1, 0, 10, "y", "c", 3)
        .put_unknown(2, 20, 25, "x", "a")
        .get(3, 40, 50, "x", "a", 2);
    rejected(b.history(), ViolationKind::NotLinearizable);
}

#[test]
fn unknown_write_applied_twice() {
    // A maybe-committed put is seen at revision 5, overwritten at 6, then seen again
    // at 8: it would have to take effect twice. (Only the exact pass of the search
    // catches this; the relaxed pass lets unknown writes repeat.)
    let mut b = B::default();
    b.put_unknown(1, 0, 5, "x", "a")
        .get(2, 10, 20, "x", "a", 5)
        .put(3, 30, 40, "x", "b", 6)
        .get(2, 50, 60, "x", "a", 8);
    rejected(b.history(), ViolationKind::NotLinearizable);
    // Two maybe-committed puts of the same value make it linearizable.
    b.put_unknown(4, 1, 5, "x", "a");
    accepted(b.history());
}

#[test]
fn violation_is_shrunk_from_a_long_history() {
    // 200 correct write/read pairs on x and y, then a stale read of x at the end.
    let mut b = B::default();
    let mut rev = 0;
    let mut t = 0;
    for n in 0..200 {
        let key = if n % 2 == 0 { "x" } else { "y" };
        rev += 1;
        let v = format!("v{n}");
        b.put(1, t, t + 10, key, &v, rev)
            .get(2, t + 20, t + 30, key, &v, rev);
        t += 40;
    }
    // x was last written with v198 at revision 199; v196 at 197 is stale.
    b.get(3, t, t + 10, "x", "v196", 197);
    let v = rejected(b.history(), ViolationKind::NotLinearizable);
    assert!(v.operations.len() <= 3, "{v}");
    let text = v.to_string();
    assert!(text.contains("key \"x\""), "{text}");
    assert!(
        text.contains("get \"x\"  -> found \"v196\" rev 197"),
        "{text}"
    );
}

// ---------------------------------------------------------------- accepted

#[test]
fn empty_history() {
    let report = check(&History::new()).unwrap();
    assert_eq!(report.operations, 0);
}

#[test]
fn concurrent_overlapping_operations() {
    let mut b = B::default();
    // A long put overlaps reads that see before and after it, and a second put.
    b.put(1, 0, 100, "x", "a", 5)
        .absent(2, 10, 20, "x")
        .get(3, 30, 40, "x", "a", 5)
        .put(4, 35, 90, "x", "b", 6)
        .get(2, 50, 60, "x", "a", 5)
        .get(3, 70, 80, "x", "b", 6)
        .get(2, 85, 95, "x", "b", 6)
        // Concurrent writes may commit in the other order than they were invoked.
        .put(1, 200, 300, "y", "p", 12)
        .put(2, 210, 250, "y", "q", 10)
        .get(3, 310, 320, "y", "p", 12);
    accepted(b.history());
}

#[test]
fn unknown_outcome_writes_that_did_and_did_not_take_effect() {
    let mut b = B::default();
    // Did take effect, and its revision shows up in a later read.
    b.put_unknown(1, 0, 10, "x", "a")
        .get(2, 100, 110, "x", "a", 4)
        // Did not take effect.
        .put_unknown(1, 120, 130, "x", "z")
        .get(2, 140, 150, "x", "a", 4)
        // Took effect after its client gave up and after a later write.
        .put(3, 200, 210, "y", "b", 9)
        .put_unknown(4, 205, 208, "y", "c")
        .get(5, 220, 230, "y", "b", 9)
        .get(5, 240, 250, "y", "c", 11)
        // A read of a value written by an unknown write, before its revision is known,
        // then a compare-and-swap against that revision.
        .put_unknown(6, 300, 310, "w", "m")
        .cas(7, 400, 410, "w", 20, "n", Outcome::Swapped { revision: 21 })
        .get(7, 420, 430, "w", "n", 21);
    accepted(b.history());
    // An unknown delete.
    let mut b = B::default();
    b.put(1, 0, 10, "x", "a", 1);
    b.0.push(
        2,
        20,
        30,
        Op::Delete { key: b"x".to_vec() },
        Outcome::Unknown,
    );
    b.get(3, 40, 50, "x", "a", 1).absent(3, 60, 70, "x");
    accepted(b.history());
}

#[test]
fn cas_delete_and_failed_operations() {
    let mut b = B::default();
    b.delete(1, 0, 10, "x", 2, false)
        .cas(1, 20, 30, "x", 0, "a", Outcome::Swapped { revision: 4 })
        .cas(
            2,
            40,
            50,
            "x",
            0,
            "b",
            Outcome::Mismatch {
                current_revision: 4,
            },
        )
        .cas(2, 60, 70, "x", 4, "b", Outcome::Swapped { revision: 8 })
        .delete(3, 80, 90, "x", 9, true)
        .absent(3, 100, 110, "x");
    // A failed write and an unknown read are left out.
    b.0.push(4, 0, 200, put("x", "never"), Outcome::Failed);
    b.0.push(4, 0, 200, get("x"), Outcome::Unknown);
    let report = check(b.history()).unwrap();
    assert_eq!(report.operations, 6);
    assert_eq!(report.keys, 1);
}

// ---------------------------------------------------------------- budget, malformed

#[test]
fn budget_gives_up_explicitly() {
    // Many concurrent unknown writes, each seen by a read, in the reverse order of
    // their invocations: more than a handful of states.
    let mut b = B::default();
    for c in 0..8 {
        b.put_unknown(c, c, 1_000, "x", &format!("v{c}"));
    }
    for c in 0..8 {
        let t = 2_000 + 20 * c;
        b.get(99, t, t + 10, "x", &format!("v{}", 7 - c), 100 + c);
    }
    let options = Options {
        max_states_per_key: 5,
        ..Options::default()
    };
    match check_with(b.history(), &options) {
        Err(CheckError::TooExpensive { key, states }) => {
            assert_eq!(key, b"x".to_vec());
            assert!(states > 5);
        }
        other => panic!("expected TooExpensive, got {other:?}"),
    }
    accepted(b.history());
}

#[test]
fn malformed_operations_are_named() {
    let mut h = History::new();
    h.push(1, 10, 5, get("x"), Outcome::Absent);
    assert!(matches!(
        check(&h),
        Err(CheckError::Malformed { index: 0, .. })
    ));
    let mut h = History::new();
    h.push(1, 0, 5, get("x"), Outcome::Put { revision: 1 });
    assert!(matches!(
        check(&h),
        Err(CheckError::Malformed { index: 0, .. })
    ));
    let mut h = History::new();
    h.push(1, 0, 5, put("x", "a"), Outcome::Put { revision: 0 });
    assert!(matches!(
        check(&h),
        Err(CheckError::Malformed { index: 0, .. })
    ));
}
