//! # cluster-mode-lincheck
//!
//! Judges whether a recorded history of client operations on cluster-mode's
//! replicated key-value store is *linearizable*: whether there is one total order of
//! the operations, consistent with their real-time intervals (if `a` returned before
//! `b` was invoked, `a` comes first), in which every outcome is what a single,
//! sequential store would have answered.
//!
//! ```
//! use cluster_mode_lincheck::{check, History, Op, Outcome};
//!
//! let k = b"k".to_vec();
//! let mut h = History::new();
//! h.push(1, 0, 10, Op::Put { key: k.clone(), value: b"a".to_vec() }, Outcome::Put { revision: 3 });
//! h.push(2, 20, 30, Op::Put { key: k.clone(), value: b"b".to_vec() }, Outcome::Put { revision: 4 });
//! // A read after both writes returned sees the first one: a stale read.
//! h.push(3, 40, 50, Op::Get { key: k.clone() }, Outcome::Found { value: b"a".to_vec(), mod_revision: 3 });
//! let err = check(&h).unwrap_err();
//! println!("{err}"); // the key, and the two operations that cannot be ordered
//! ```
//!
//! ## The model
//!
//! Each key is a register with a revision. Every committed write (put, delete, a
//! compare-and-swap that swapped) has a *revision*: the log index at which it
//! committed, unique and shared by all keys, so the linearization orders all writes by
//! revision. A get returns the value and the revision of the last write to its key
//! (or absent); a compare-and-swap swaps when the key's revision equals the expected
//! one (0: the key is absent) and otherwise reports the current revision, writing
//! nothing; a delete reports whether the key existed.
//!
//! An operation with an [`Outcome::Unknown`] outcome may have taken effect at any
//! instant after its invocation, or never (it is treated as returning at infinity,
//! as Porcupine does). An [`Outcome::Failed`] operation is left out.
//!
//! ## How it checks
//!
//! 1. **Global revision checks**, over all keys at once: committed writes have
//!    distinct revisions; no revision reported by a read or a compare-and-swap
//!    belongs to a committed write of another key; and real time agrees with
//!    revision order: if an operation that observed revision `r` (wrote it, or read
//!    it) returned before a write was invoked, that write's revision is above `r`.
//! 2. **Per key**, a Wing-Gong-Lowe search with memoisation (the set of linearized
//!    operations, as a bitset, plus the model state; a pair seen before is not
//!    explored again), one key at a time as Porcupine splits a history
//!    (P-compositionality of registers). The per-key model also enforces the global
//!    order where it touches the key: writes to the key are linearized in increasing
//!    revision order; an operation is linearized after every write to its key whose
//!    revision is at most the highest revision observed by any operation (of any key)
//!    that returned before it was invoked (its *floor*), and before every write whose
//!    revision is at least the lowest revision of a write invoked after it returned
//!    (its *ceiling*).
//! 3. **Unknown-outcome writes**, which make a naive search exponential (any subset
//!    of them may have taken effect, anywhere after their invocation), are handled
//!    by three exact reductions and one relaxation:
//!    - a write that no operation could observe (no read of its value at a revision
//!      no committed write reported, no delete or compare-and-swap that depends on
//!      the state it leaves, and so on; see `model::observable`) is left out;
//!    - the search never linearizes an unknown-outcome write right before a write
//!      that ignores the state (a put, or a delete with unknown outcome) or at the
//!      end: such a linearization stays one without that write;
//!    - a **relaxed** pass first lets unknown-outcome writes take effect any number
//!      of times, with a plain memo; if even that finds no linearization, none
//!      exists. If it finds one that uses each of them at most once, that is a real
//!      linearization. Only otherwise does an **exact** pass run, whose memo
//!      compares the unknown-outcome writes used by inclusion (a state reached with
//!      more of them used is no better than one that failed with fewer).
//! 4. **A budget**: a key whose search needs more than
//!    [`Options::max_states_per_key`] states (per pass) ends the check with
//!    [`CheckError::TooExpensive`], never a pass. A violation found in another key
//!    still wins.
//!
//! ## Soundness and precision
//!
//! The checker is *sound*: it never rejects a linearizable history; every
//! constraint above holds in any linearization, and every reduction keeps a
//! linearization if there is one. It is not *complete*; it may accept a history
//! that is not linearizable in these cases:
//!
//! - **Revisions of unknown-outcome writes.** Their revision is unknown. The model
//!   gives the key an unknown revision at or above the next one free on that key
//!   (and above the write's floor), binds it when a later read or compare-and-swap
//!   reports it, and bounds it by the ceilings of the operations linearized after
//!   it. It does not check that this revision differs from other keys' revisions,
//!   and it does not count log indices: after an unknown-outcome write at `>= r`,
//!   the next write to the key may be at `r` too (strictly it needs `> r`). Keeping
//!   that count would make the states after one or several such writes differ, and
//!   the search far larger.
//! - **Cross-key order beyond real time.** Keys are checked separately; only the
//!   real-time floors and ceilings tie them together. A history whose keys are each
//!   linearizable and whose revisions agree with real time, but whose per-key
//!   orders cannot be merged into one order by revision through a chain of
//!   concurrent operations on different keys, is accepted.
//! - **Timestamps that touch** (`a.ret == b.invoke`) count as concurrent.
//!
//! A write retried by the client (after a primary change, say) must be recorded as
//! *one* operation, from the first attempt's invocation to the final outcome: two
//! records would let the checker apply it twice.
//!
//! ## Reading a violation
//!
//! A [`Violation`] names its [`ViolationKind`], the key (for a per-key violation)
//! and a short sub-history printed one operation per line: the operation's index in
//! the history (`#12`), client, `[invoke, return]` (`inf` for an unknown outcome),
//! operation, outcome. For a per-key violation the sub-history was shrunk from the
//! key's history by moves that keep it a real witness: *these* operations alone
//! cannot be linearized, so neither can the whole history. The moves are cutting
//! the history before an instant ([`Violation::elided_before`]: the key's state
//! there is taken as unknown) or after one ([`Violation::elided_after`]), dropping
//! reads, and dropping operations of other keys. Lines marked `witness` are
//! operations of other keys that bound this key's operations in the revision order
//! by real time; lines marked `at a cut` are committed writes in flight at a cut,
//! checked as if their outcome were unknown. Writes in the middle are never
//! dropped (dropping a write can create a violation), so a witness can hold more
//! than the two or three operations a reader would pick.
//!
//! ## Complexity
//!
//! Linearizability checking is NP-complete in general; the memoised search is fast
//! when few operations on one key overlap in time. `examples/bench.rs` checks a
//! 64-client, 20,000-operation history over 50 keys with 10% unknown outcomes in
//! about 40 ms, and rejects it with one read changed in 0.1 to 0.2 s, shrinking
//! included (release build; see the README). With the same 64 clients on 10 keys
//! (about 6 operations on one key in flight at once, 2,000 per key) the exact pass
//! runs out of the default budget and the check answers
//! [`CheckError::TooExpensive`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bounds;
mod history;
mod minimise;
mod model;
mod search;
pub mod synthetic;

use std::collections::BTreeMap;
use std::fmt;

pub use history::{History, Key, Op, Operation, Outcome, Value};

use history::Bytes;
use minimise::{minimise, Sub};
use model::{key_ops, takes_part, State};
use search::{search, Verdict};

/// Limits of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The most states (distinct pairs of linearized set and model state) one key's
    /// search may explore before the check gives up with
    /// [`CheckError::TooExpensive`].
    pub max_states_per_key: u64,
    /// Whether to shrink a per-key violation to a short sub-history.
    pub minimise: bool,
    /// The most searches the shrinking may run.
    pub max_minimise_searches: usize,
    /// The most states those searches may explore in all.
    pub max_minimise_states: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_states_per_key: 2_000_000,
            minimise: true,
            max_minimise_searches: 1_000,
            max_minimise_states: 2_000_000,
        }
    }
}

/// What a passing check looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Operations checked (failed operations and reads with an unknown outcome are
    /// not counted).
    pub operations: usize,
    /// Writes with an unknown outcome among them.
    pub unknown_writes: usize,
    /// Distinct keys.
    pub keys: usize,
    /// States explored by all the per-key searches.
    pub states: u64,
    /// The most states one key's search explored.
    pub max_key_states: u64,
}

/// Which rule a history breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// Two committed writes report the same revision.
    DuplicateRevision,
    /// A write's revision is not above a revision observed by an operation that
    /// returned before the write was invoked.
    RevisionOrder,
    /// A read or a compare-and-swap reports, for its key, a revision that belongs to
    /// a committed write of another key.
    ForeignRevision,
    /// The operations on one key have no linearization.
    NotLinearizable,
}

/// The part an operation plays in a [`Violation`]'s sub-history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// One of the operations that cannot be ordered.
    Checked,
    /// An operation of another key that only bounds, by real time, where the checked
    /// operations sit in the revision order.
    Witness,
    /// A committed write in flight at one of the cuts ([`Violation::elided_before`],
    /// [`Violation::elided_after`]): checked as if its outcome were unknown, since
    /// it may have taken effect on either side of the cut.
    CutInFlight,
}

/// A history that is not linearizable, with a short witness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub kind: ViolationKind,
    /// The key, for a per-key violation.
    pub key: Option<Key>,
    /// What is wrong, in words.
    pub explanation: String,
    /// The sub-history: index in the history, its role, and the operation, ordered
    /// by invocation.
    pub operations: Vec<(usize, Role, Operation)>,
    /// For a per-key violation: the key's operations that returned before this
    /// instant are left out of the sub-history, and the key's state at that point is
    /// taken as unknown (any value or absent, any earlier revision).
    pub elided_before: Option<u64>,
    /// For a per-key violation: the key's operations invoked at or after this instant
    /// are left out of the sub-history.
    pub elided_after: Option<u64>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not linearizable ({:?})", self.kind)?;
        if let Some(key) = &self.key {
            write!(f, " on key {}", Bytes(key))?;
        }
        writeln!(f, ": {}", self.explanation)?;
        if let Some(t) = self.elided_before {
            writeln!(
                f,
                "  (operations on this key that returned before t={t} are left out; its state then is unknown)"
            )?;
        }
        if let Some(t) = self.elided_after {
            writeln!(
                f,
                "  (operations on this key invoked at or after t={t} are left out)"
            )?;
        }
        for (index, role, op) in &self.operations {
            let mark = match role {
                Role::Checked => "        ",
                Role::Witness => "witness ",
                Role::CutInFlight => "at a cut",
            };
            writeln!(f, "  {mark} #{index:<6} {op}")?;
        }
        Ok(())
    }
}

/// Why a check did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// The history is not linearizable.
    Violation(Box<Violation>),
    /// A key's search ran out of its state budget: the history is neither accepted
    /// nor rejected.
    TooExpensive {
        /// The key.
        key: Key,
        /// States explored before giving up.
        states: u64,
    },
    /// An operation is not well formed.
    Malformed {
        /// Its index in the history.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl CheckError {
    /// The violation, if the history was found not linearizable.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            CheckError::Violation(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(v) => v.fmt(f),
            CheckError::TooExpensive { key, states } => write!(
                f,
                "unknown: checking key {} needs more than {states} states (raise Options::max_states_per_key)",
                Bytes(key)
            ),
            CheckError::Malformed { index, reason } => {
                write!(f, "malformed history: operation #{index} {reason}")
            }
        }
    }
}

impl std::error::Error for CheckError {}

/// Checks `history` with the default [`Options`].
pub fn check(history: &History) -> Result<Report, CheckError> {
    check_with(history, &Options::default())
}

/// Checks `history`: `Ok` if it is linearizable (within the precision the crate
/// documentation states), a [`CheckError`] otherwise. Deterministic: the same history
/// and options give the same answer.
pub fn check_with(history: &History, options: &Options) -> Result<Report, CheckError> {
    let ops = &history.operations;
    for (index, op) in ops.iter().enumerate() {
        if let Some(reason) = op.malformed() {
            return Err(CheckError::Malformed { index, reason });
        }
    }
    let parts: Vec<usize> = (0..ops.len()).filter(|&i| takes_part(&ops[i])).collect();
    let all_bounds = bounds::bounds(ops, &parts, &parts);
    global_checks(ops, &parts, &all_bounds)?;

    let reported = reported_revisions(ops);
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (k, &i) in parts.iter().enumerate() {
        by_key.entry(ops[i].op.key()).or_default().push(k);
    }
    let mut report = Report {
        operations: parts.len(),
        unknown_writes: parts
            .iter()
            .filter(|&&i| !ops[i].outcome.is_definite())
            .count(),
        keys: by_key.len(),
        ..Report::default()
    };
    let mut too_expensive = None;
    for (key, positions) in &by_key {
        let members: Vec<usize> = positions.iter().map(|&k| parts[k]).collect();
        let key_bounds: Vec<bounds::Bounds> = positions.iter().map(|&k| all_bounds[k]).collect();
        let kops = key_ops(ops, &members, &key_bounds, &reported);
        let (verdict, states) = search(&kops, State::empty(), options.max_states_per_key, false);
        report.states += states;
        report.max_key_states = report.max_key_states.max(states);
        match verdict {
            Verdict::Linearizable => {}
            Verdict::TooExpensive => {
                too_expensive.get_or_insert(CheckError::TooExpensive {
                    key: key.to_vec(),
                    states,
                });
            }
            Verdict::NotLinearizable => {
                let mut witnesses: Vec<usize> = key_bounds
                    .iter()
                    .flat_map(|b| [b.floor_by, b.ceil_by])
                    .flatten()
                    .filter(|&w| ops[w].op.key() != *key)
                    .collect();
                witnesses.sort_unstable();
                witnesses.dedup();
                let mut sub = Sub {
                    checked: members,
                    witnesses,
                    start: None,
                    end: None,
                };
                if options.minimise {
                    sub = minimise(
                        ops,
                        &reported,
                        sub,
                        options.max_minimise_searches,
                        options.max_minimise_states,
                    );
                }
                return Err(per_key_violation(ops, key, sub));
            }
        }
    }
    match too_expensive {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// The revisions of all committed writes, sorted.
fn reported_revisions(ops: &[Operation]) -> Vec<u64> {
    let mut revs: Vec<u64> = ops.iter().filter_map(Operation::written_revision).collect();
    revs.sort_unstable();
    revs
}

fn per_key_violation(ops: &[Operation], key: &[u8], sub: Sub) -> CheckError {
    let mut shown = sub.materialise(ops);
    shown.sort_by_key(|(i, _, o)| (o.invoke, *i));
    let checked = shown.iter().filter(|(_, r, _)| *r != Role::Witness).count();
    CheckError::Violation(Box::new(Violation {
        kind: ViolationKind::NotLinearizable,
        key: Some(key.to_vec()),
        explanation: format!(
            "no order of these {checked} operations agrees with their intervals, their revisions and a register's semantics"
        ),
        operations: shown,
        elided_before: sub.start,
        elided_after: sub.end,
    }))
}

fn pair_violation(
    ops: &[Operation],
    kind: ViolationKind,
    key: Option<&[u8]>,
    pair: [usize; 2],
    explanation: String,
) -> CheckError {
    let mut shown: Vec<(usize, Role, Operation)> = pair
        .iter()
        .map(|&i| (i, Role::Checked, ops[i].clone()))
        .collect();
    shown.sort_by_key(|(i, _, o)| (o.invoke, *i));
    CheckError::Violation(Box::new(Violation {
        kind,
        key: key.map(<[u8]>::to_vec),
        explanation,
        operations: shown,
        elided_before: None,
        elided_after: None,
    }))
}

/// The checks that span keys: distinct revisions, revisions that belong to their key,
/// and revision order that agrees with real time.
fn global_checks(
    ops: &[Operation],
    parts: &[usize],
    all_bounds: &[bounds::Bounds],
) -> Result<(), CheckError> {
    let mut writer: BTreeMap<u64, usize> = BTreeMap::new();
    for &i in parts {
        if let Some(r) = ops[i].written_revision() {
            if let Some(&j) = writer.get(&r) {
                return Err(pair_violation(
                    ops,
                    ViolationKind::DuplicateRevision,
                    None,
                    [j, i],
                    format!("two committed writes report revision {r}"),
                ));
            }
            writer.insert(r, i);
        }
    }
    for (&i, b) in parts.iter().zip(all_bounds) {
        if let (Some(r), Some(by)) = (ops[i].written_revision(), b.floor_by) {
            if b.floor >= r {
                return Err(pair_violation(
                    ops,
                    ViolationKind::RevisionOrder,
                    None,
                    [by, i],
                    format!(
                        "#{by} observed revision {} and returned before #{i} was invoked, yet #{i} committed at revision {r}",
                        b.floor
                    ),
                ));
            }
        }
    }
    for &i in parts {
        let o = &ops[i];
        let reported = match (&o.op, &o.outcome) {
            (_, Outcome::Found { mod_revision, .. }) => *mod_revision,
            (_, Outcome::Mismatch { current_revision }) => *current_revision,
            (
                Op::CompareAndSwap {
                    expected_revision, ..
                },
                Outcome::Swapped { .. },
            ) => *expected_revision,
            _ => 0,
        };
        if reported == 0 {
            continue;
        }
        if let Some(&w) = writer.get(&reported) {
            if ops[w].op.key() != o.op.key() {
                return Err(pair_violation(
                    ops,
                    ViolationKind::ForeignRevision,
                    Some(o.op.key()),
                    [w, i],
                    format!(
                        "#{i} reports revision {reported} for key {}, but #{w} wrote key {} at that revision",
                        Bytes(o.op.key()),
                        Bytes(ops[w].op.key())
                    ),
                ));
            }
        }
    }
    Ok(())
}
