//! The sequential model of one key: a register with revisions.

use std::collections::BTreeMap;

use crate::bounds::Bounds;
use crate::history::{Op, Operation, Outcome};

/// Whether the key is present, as far as the model knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Presence {
    /// Nothing known (the start of a sub-history cut from a longer one).
    Unknown,
    /// The key is absent.
    Absent,
    /// The key is present with this value (an interned id), or with a value not
    /// known yet.
    Present(Option<u32>),
}

/// The key's revision, as far as the model knows (meaningless when absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Rev {
    /// Exactly this revision.
    Known(u64),
    /// Set by a write whose revision was not reported: some revision in `lo..below`.
    Between {
        /// Smallest possible revision.
        lo: u64,
        /// Every possible revision is below this.
        below: u64,
    },
}

/// The model state of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct State {
    presence: Presence,
    rev: Rev,
    /// The next write to this key has a revision `>= min_next`.
    min_next: u64,
    /// The highest reported revision of a write linearized so far (0: none).
    last_known: u64,
}

impl State {
    /// An absent key before any write.
    pub(crate) fn empty() -> Self {
        State {
            presence: Presence::Absent,
            rev: Rev::Known(0),
            min_next: 1,
            last_known: 0,
        }
    }

    /// A key of which nothing is known.
    pub(crate) fn unknown() -> Self {
        State {
            presence: Presence::Unknown,
            rev: Rev::Between {
                lo: 1,
                below: u64::MAX,
            },
            min_next: 1,
            last_known: 0,
        }
    }
}

/// What an operation does to its key, in model terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Sets the value; `rev` is `None` when the outcome is unknown.
    Put { val: u32, rev: Option<u64> },
    /// Removes the key; `existed` is `None` when the outcome is unknown.
    Delete {
        rev: Option<u64>,
        existed: Option<bool>,
    },
    /// A compare-and-swap that swapped (`rev` known) or may have (`rev` None).
    Swap {
        expected: u64,
        val: u32,
        rev: Option<u64>,
    },
    /// A compare-and-swap that reported a mismatch.
    Mismatch { expected: u64, current: u64 },
    /// A read that found a value.
    Found { val: u32, rev: u64 },
    /// A read that found nothing.
    Absent,
}

impl Step {
    /// Whether the operation is a write whose effect and outcome do not depend on
    /// the key's state: a put, or a delete with an unknown outcome.
    pub(crate) fn blind(&self) -> bool {
        matches!(self, Step::Put { .. } | Step::Delete { existed: None, .. })
    }

    /// Whether the operation must be linearized (its outcome is definite).
    pub(crate) fn definite(&self) -> bool {
        match *self {
            Step::Put { rev, .. } | Step::Delete { rev, .. } | Step::Swap { rev, .. } => {
                rev.is_some()
            }
            Step::Mismatch { .. } | Step::Found { .. } | Step::Absent => true,
        }
    }
}

/// One operation of a per-key search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyOp {
    /// Its index in the operations given to [`key_ops`].
    pub index: usize,
    pub step: Step,
    pub invoke: u64,
    /// `u64::MAX` for an unknown outcome.
    pub ret: u64,
    /// Every write to this key with a revision `<= floor` precedes it.
    pub floor: u64,
    /// The highest reported revision of a write to this key `<= floor` (0: none).
    pub need_rev: u64,
    /// Every write with a revision `>= ceil` follows it.
    pub ceil: u64,
}

/// Whether the history operation takes part in its key's search: failed
/// operations and reads with an unknown outcome constrain nothing.
pub(crate) fn takes_part(op: &Operation) -> bool {
    match op.outcome {
        Outcome::Failed => false,
        Outcome::Unknown => op.op.is_write(),
        _ => true,
    }
}

/// Builds the search input for the operations `members` of one key (indices into
/// `ops`, each passing [`takes_part`]) with their `bounds`. `reported` holds (sorted)
/// revisions reported by committed writes of the whole history, any key: no
/// unknown-outcome write can have one of them. Values are interned in a `BTreeMap`,
/// so ids do not depend on hashing.
pub(crate) fn key_ops<'a>(
    ops: &'a [Operation],
    members: &[usize],
    bounds: &[Bounds],
    reported: &[u64],
) -> Vec<KeyOp> {
    let mut values: BTreeMap<&'a [u8], u32> = BTreeMap::new();
    let mut intern = |v: &'a [u8]| -> u32 {
        let next = values.len() as u32;
        *values.entry(v).or_insert(next)
    };
    let mut known_revs: Vec<u64> = members
        .iter()
        .filter_map(|&i| ops[i].written_revision())
        .collect();
    known_revs.sort_unstable();
    let all: Vec<KeyOp> = members
        .iter()
        .zip(bounds)
        .map(|(&i, b)| {
            let o = &ops[i];
            let step = match (&o.op, &o.outcome) {
                (Op::Put { value, .. }, Outcome::Put { revision }) => Step::Put {
                    val: intern(value),
                    rev: Some(*revision),
                },
                (Op::Put { value, .. }, _) => Step::Put {
                    val: intern(value),
                    rev: None,
                },
                (Op::Delete { .. }, Outcome::Deleted { revision, existed }) => Step::Delete {
                    rev: Some(*revision),
                    existed: Some(*existed),
                },
                (Op::Delete { .. }, _) => Step::Delete {
                    rev: None,
                    existed: None,
                },
                (
                    Op::CompareAndSwap {
                        expected_revision, ..
                    },
                    Outcome::Mismatch { current_revision },
                ) => Step::Mismatch {
                    expected: *expected_revision,
                    current: *current_revision,
                },
                (
                    Op::CompareAndSwap {
                        expected_revision,
                        value,
                        ..
                    },
                    outcome,
                ) => Step::Swap {
                    expected: *expected_revision,
                    val: intern(value),
                    rev: match outcome {
                        Outcome::Swapped { revision } => Some(*revision),
                        _ => None,
                    },
                },
                (
                    Op::Get { .. },
                    Outcome::Found {
                        value,
                        mod_revision,
                    },
                ) => Step::Found {
                    val: intern(value),
                    rev: *mod_revision,
                },
                (Op::Get { .. }, _) => Step::Absent,
            };
            let below = known_revs.partition_point(|&r| r <= b.floor);
            KeyOp {
                index: i,
                step,
                invoke: o.invoke,
                ret: o.effective_return(),
                floor: b.floor,
                need_rev: if below == 0 { 0 } else { known_revs[below - 1] },
                ceil: b.ceil,
            }
        })
        .collect();
    let known = |r: u64| known_revs.binary_search(&r).is_ok() || reported.binary_search(&r).is_ok();
    all.iter()
        .filter(|u| u.step.definite() || observable(u, &all, &known))
        .copied()
        .collect()
}

/// Whether some operation could observe the effect of `u`, a write with an unknown
/// outcome. If none can, leaving `u` out (deciding it never took effect) keeps a
/// linearizable history linearizable, so the search need not try it.
///
/// Why: in a linearization where `u` took effect, look at the operations between
/// `u` and the next write to the key, and that write. A read found `u`'s value at a
/// revision that no reported write has (the revision of `u` is one of them), or a
/// compare-and-swap saw or expected such a revision, or a delete saw the key present
/// (after a put) or absent (after a delete), or a read saw it absent. Only those
/// depend on `u`; without them the same order minus `u` is a linearization (revision
/// bounds only loosen). An operation that returned before `u` was invoked comes
/// before `u` and cannot observe it.
fn observable(u: &KeyOp, all: &[KeyOp], known: &impl Fn(u64) -> bool) -> bool {
    let unknown_rev = |r: u64| r != 0 && !known(r);
    let sees: &dyn Fn(&Step) -> bool = match u.step {
        Step::Put { val, .. } | Step::Swap { val, .. } => &move |o: &Step| match *o {
            Step::Found { val: v, rev } => v == val && unknown_rev(rev),
            Step::Mismatch { current, .. } => unknown_rev(current),
            Step::Swap { expected, .. } => unknown_rev(expected),
            Step::Delete { existed, .. } => existed == Some(true),
            Step::Put { .. } | Step::Absent => false,
        },
        Step::Delete { .. } => &|o: &Step| match *o {
            Step::Absent => true,
            Step::Mismatch { current, .. } => current == 0,
            Step::Swap { expected, .. } => expected == 0,
            Step::Delete { existed, .. } => existed == Some(false),
            Step::Put { .. } | Step::Found { .. } => false,
        },
        Step::Mismatch { .. } | Step::Found { .. } | Step::Absent => return true,
    };
    all.iter()
        .any(|o| !std::ptr::eq(o, u) && o.ret >= u.invoke && sees(&o.step))
}

/// Binds the key's current revision to `r` (> 0), asserting the key is present.
fn bind(mut s: State, r: u64) -> Option<State> {
    match s.presence {
        Presence::Absent => return None,
        Presence::Unknown => s.presence = Presence::Present(None),
        Presence::Present(_) => {}
    }
    match s.rev {
        Rev::Known(k) if k == r => {}
        Rev::Known(_) => return None,
        Rev::Between { lo, below } => {
            if r < lo || r >= below {
                return None;
            }
            s.rev = Rev::Known(r);
            s.min_next = s.min_next.max(r + 1);
        }
    }
    Some(s)
}

/// Asserts the key is absent.
fn absent(mut s: State) -> Option<State> {
    match s.presence {
        Presence::Present(_) => None,
        Presence::Absent | Presence::Unknown => {
            s.presence = Presence::Absent;
            s.rev = Rev::Known(0);
            Some(s)
        }
    }
}

/// Asserts the key's current revision is `r` (0: absent).
fn current_is(s: State, r: u64) -> Option<State> {
    if r == 0 {
        absent(s)
    } else {
        bind(s, r)
    }
}

/// Applies a write that leaves the key `presence`, at revision `rev` (None: not
/// reported, but after `floor`).
fn write(mut s: State, presence: Presence, rev: Option<u64>, floor: u64) -> Option<State> {
    match rev {
        Some(r) => {
            if r < s.min_next {
                return None;
            }
            s.rev = Rev::Known(r);
            s.min_next = r + 1;
            s.last_known = r;
        }
        None => {
            let lo = s.min_next.max(floor.saturating_add(1));
            s.rev = Rev::Between {
                lo,
                below: u64::MAX,
            };
            // Strictly, the next write's revision is above this one's, so >= lo + 1;
            // keeping lo makes states after one or several unknown writes equal,
            // which the search needs to stay small (see the crate docs).
            s.min_next = lo;
        }
    }
    s.presence = presence;
    if presence == Presence::Absent {
        s.rev = Rev::Known(0);
    }
    Some(s)
}

/// The state after linearizing `op` in state `s`, or `None` if `op` cannot take
/// effect (with its reported outcome) at this point.
pub(crate) fn step(s: State, op: &KeyOp) -> Option<State> {
    // Real-time bounds: after the writes up to its floor, before those from its
    // ceiling on (every write linearized so far has a revision >= min_next - 1).
    if s.last_known < op.need_rev || s.min_next > op.ceil {
        return None;
    }
    let mut s = s;
    if let Rev::Between { lo, below } = s.rev {
        if s.presence != Presence::Absent && op.ceil < below {
            if lo < op.ceil {
                s.rev = Rev::Between { lo, below: op.ceil };
            } else if s.presence == Presence::Unknown {
                // No revision fits: the key can only be absent.
                s = absent(s)?;
            } else {
                return None;
            }
        }
    }
    match op.step {
        Step::Found { val, rev } => {
            let mut s = bind(s, rev)?;
            match s.presence {
                Presence::Present(Some(v)) if v != val => return None,
                _ => s.presence = Presence::Present(Some(val)),
            }
            Some(s)
        }
        Step::Absent => absent(s),
        Step::Put { val, rev } => write(s, Presence::Present(Some(val)), rev, op.floor),
        Step::Delete { rev, existed } => {
            match (existed, s.presence) {
                (Some(true), Presence::Absent) | (Some(false), Presence::Present(_)) => {
                    return None
                }
                _ => {}
            }
            write(s, Presence::Absent, rev, op.floor)
        }
        Step::Swap { expected, val, rev } => {
            let s = current_is(s, expected)?;
            write(s, Presence::Present(Some(val)), rev, op.floor)
        }
        Step::Mismatch { expected, current } => {
            if expected == current {
                return None;
            }
            current_is(s, current)
        }
    }
}
