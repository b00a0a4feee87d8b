//! Shrinking a violating key history to a short sub-history that still violates.
//!
//! Every move is *sound*: if the smaller sub-history has no linearization, neither
//! has the whole history, so what is shown is a real witness, not an artefact of
//! the shrinking. The moves:
//!
//! - **End cut** at instant `t`: drop the operations invoked at or after `t` and the
//!   reads still in flight at `t`; a committed write still in flight at `t` is kept
//!   with its outcome taken as unknown (it may or may not have taken effect by `t`).
//! - **Start cut** at instant `s`: drop the operations that returned before `s` and
//!   the reads in flight at `s`, take a committed write in flight at `s` as unknown,
//!   keep the unknown-outcome writes (they may take effect later), and start from a
//!   state of which nothing is known.
//! - **Drop a read** (a get, or a compare-and-swap that reported a mismatch): reads
//!   change nothing, so removing one only removes constraints.
//! - **Drop a witness**: an operation of another key that only bounds the position
//!   of this key's operations in the revision order.
//! - **Drop an unknown-outcome write that nothing could observe** (see
//!   `model::observable`).
//!
//! Writes in the middle are never dropped: removing a write can create a violation
//! that the history does not have.

use crate::bounds::bounds;
use crate::history::{Operation, Outcome};
use crate::model::{key_ops, State};
use crate::search::{search, Verdict};
use crate::Role;

/// A candidate sub-history of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sub {
    /// The key's operations that are checked (indices into the history).
    pub checked: Vec<usize>,
    /// Operations that only bound positions in the revision order.
    pub witnesses: Vec<usize>,
    /// Start cut: see the module documentation.
    pub start: Option<u64>,
    /// End cut: see the module documentation.
    pub end: Option<u64>,
}

impl Sub {
    /// The operations the sub-history really holds, after its cuts: (index in the
    /// history, role, operation as checked).
    pub(crate) fn materialise(&self, ops: &[Operation]) -> Vec<(usize, Role, Operation)> {
        let mut out = Vec::with_capacity(self.checked.len() + self.witnesses.len());
        for &i in &self.checked {
            let o = &ops[i];
            let definite = o.outcome.is_definite();
            let ret = o.effective_return();
            let mut in_flight = false;
            if let Some(t) = self.end {
                if o.invoke >= t {
                    continue;
                }
                in_flight |= definite && ret >= t;
            }
            if let Some(s) = self.start {
                if definite && ret < s {
                    continue;
                }
                in_flight |= definite && o.invoke < s;
            }
            if in_flight {
                if o.op.is_write() {
                    let mut unknown = o.clone();
                    unknown.outcome = Outcome::Unknown;
                    out.push((i, Role::CutInFlight, unknown));
                }
                continue;
            }
            out.push((i, Role::Checked, o.clone()));
        }
        out.extend(
            self.witnesses
                .iter()
                .map(|&i| (i, Role::Witness, ops[i].clone())),
        );
        out
    }
}

/// `reported` less the revisions of the writes that `local` takes as unknown because
/// a cut falls inside them (those revisions are unknown-outcome writes' now).
fn reported_in(
    reported: &[u64],
    local: &[(usize, Role, Operation)],
    ops: &[Operation],
) -> Vec<u64> {
    let cut: Vec<u64> = local
        .iter()
        .filter(|(_, role, _)| *role == Role::CutInFlight)
        .filter_map(|&(i, _, _)| ops[i].written_revision())
        .collect();
    reported
        .iter()
        .copied()
        .filter(|r| !cut.contains(r))
        .collect()
}

/// Whether the materialised sub-history `local` (checked operations first, then
/// witnesses) has no linearization, within `max_states`; also the states explored
/// and the positions in `local` of the checked operations the search kept.
fn judge(
    local: &[(usize, Role, Operation)],
    reported: &[u64],
    unknown_start: bool,
    max_states: u64,
    relaxed_only: bool,
) -> (bool, u64, Vec<usize>) {
    let ops: Vec<Operation> = local.iter().map(|(_, _, o)| o.clone()).collect();
    let members: Vec<usize> = (0..local.len())
        .filter(|&k| local[k].1 != Role::Witness)
        .collect();
    let sources: Vec<usize> = (0..local.len()).collect();
    let b = bounds(&ops, &sources, &members);
    let kops = key_ops(&ops, &members, &b, reported);
    let initial = if unknown_start {
        State::unknown()
    } else {
        State::empty()
    };
    let (verdict, states) = search(&kops, initial, max_states, relaxed_only);
    let kept = kops.iter().map(|k| k.index).collect();
    (verdict == Verdict::NotLinearizable, states, kept)
}

struct Shrinker<'a> {
    ops: &'a [Operation],
    reported: &'a [u64],
    searches_left: usize,
    /// States left for all remaining searches.
    states_left: u64,
    /// Judge with the relaxed search only (see `search`): cheaper, and enough when
    /// the relaxed search already rejects the starting sub-history.
    relaxed_only: bool,
}

impl Shrinker<'_> {
    fn violates(&mut self, sub: &Sub) -> bool {
        if self.searches_left == 0 || self.states_left == 0 {
            return false;
        }
        self.searches_left -= 1;
        let local = sub.materialise(self.ops);
        let (violates, states, _) = judge(
            &local,
            &reported_in(self.reported, &local, self.ops),
            sub.start.is_some(),
            self.states_left,
            self.relaxed_only,
        );
        self.states_left = self.states_left.saturating_sub(states);
        violates
    }

    /// The first candidate whose sub-history violates, by bisection, assuming that
    /// once one violates all later ones do (each is a sound shrink of the next, so
    /// this holds unless a budget runs out).
    fn bisect(&mut self, candidates: &[Sub]) -> Option<Sub> {
        let (mut lo, mut hi) = (0, candidates.len());
        let mut best = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.violates(&candidates[mid]) {
                best = Some(mid);
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        best.map(|k| candidates[k].clone())
    }

    /// Instants where a cut changes something: invocations and just after returns.
    fn instants(&self, sub: &Sub) -> Vec<u64> {
        let mut times: Vec<u64> = sub
            .checked
            .iter()
            .flat_map(|&i| {
                let o = &self.ops[i];
                [o.invoke, o.effective_return().saturating_add(1)]
            })
            .filter(|&t| t != u64::MAX)
            .collect();
        times.sort_unstable();
        times.dedup();
        times
    }

    fn end_cut(&mut self, sub: Sub) -> Sub {
        let candidates: Vec<Sub> = self
            .instants(&sub)
            .into_iter()
            .filter(|&t| sub.start.is_none_or(|s| t > s))
            .map(|t| Sub {
                end: Some(t),
                ..sub.clone()
            })
            .collect();
        self.bisect(&candidates).unwrap_or(sub)
    }

    fn start_cut(&mut self, sub: Sub) -> Sub {
        let mut times = self.instants(&sub);
        // Latest cut first: the first violating candidate is the shortest.
        times.reverse();
        let candidates: Vec<Sub> = times
            .into_iter()
            .filter(|&s| sub.end.is_none_or(|t| s < t))
            .map(|s| Sub {
                start: Some(s),
                ..sub.clone()
            })
            .collect();
        self.bisect(&candidates).unwrap_or(sub)
    }

    /// Keeps in `checked` only what the cuts and the search keep.
    fn normalise(&self, mut sub: Sub) -> Sub {
        let local = sub.materialise(self.ops);
        let reported = reported_in(self.reported, &local, self.ops);
        let (_, _, kept) = judge(&local, &reported, sub.start.is_some(), 0, true);
        sub.checked = kept.into_iter().map(|k| local[k].0).collect();
        sub
    }

    fn drop_reads_and_witnesses(&mut self, mut sub: Sub) -> Sub {
        let is_read = |o: &Operation| {
            matches!(
                o.outcome,
                Outcome::Found { .. } | Outcome::Absent | Outcome::Mismatch { .. }
            )
        };
        let mut k = 0;
        while k < sub.checked.len() {
            if is_read(&self.ops[sub.checked[k]]) {
                let mut smaller = sub.clone();
                smaller.checked.remove(k);
                if self.violates(&smaller) {
                    sub = smaller;
                    continue;
                }
            }
            k += 1;
        }
        let mut k = 0;
        while k < sub.witnesses.len() {
            let mut smaller = sub.clone();
            smaller.witnesses.remove(k);
            if self.violates(&smaller) {
                sub = smaller;
                continue;
            }
            k += 1;
        }
        sub
    }
}

/// Shrinks `sub` (which must violate) with at most `max_searches` searches that
/// explore at most `max_states` states in all. Returns `sub` itself if it does not
/// violate within that budget.
pub(crate) fn minimise(
    ops: &[Operation],
    reported: &[u64],
    sub: Sub,
    max_searches: usize,
    max_states: u64,
) -> Sub {
    let mut s = Shrinker {
        ops,
        reported,
        searches_left: max_searches,
        states_left: max_states,
        relaxed_only: true,
    };
    if !s.violates(&sub) {
        s.relaxed_only = false;
        if !s.violates(&sub) {
            return sub;
        }
    }
    let sub = s.end_cut(sub);
    let sub = s.start_cut(sub);
    let sub = s.normalise(sub);
    let sub = s.drop_reads_and_witnesses(sub);
    s.normalise(sub)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{linearizable_history, Config};
    use crate::{check, CheckError};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

        /// The witness a violation shows, judged on its own (with its cuts), has no
        /// linearization; and it is no longer than the key's history.
        #[test]
        fn the_witness_itself_violates(seed: u64, clients in 1usize..8, unknown in 0u32..300, pick: prop::sample::Index) {
            let config = Config { clients, operations: 80, keys: 2, unknown_permille: unknown, ..Config::default() };
            let mut h = linearizable_history(seed, &config);
            let reads: Vec<usize> = (0..h.operations.len())
                .filter(|&i| matches!(h.operations[i].outcome, Outcome::Found { .. }))
                .collect();
            prop_assume!(!reads.is_empty());
            let i = reads[pick.index(reads.len())];
            let mod_revision = h.operations[i].observed_revision();
            h.operations[i].outcome = Outcome::Found { value: b"never".to_vec(), mod_revision };
            let Err(CheckError::Violation(v)) = check(&h) else {
                return Err(TestCaseError::fail("not rejected"));
            };
            if v.kind == crate::ViolationKind::NotLinearizable {
                let mut reported: Vec<u64> =
                    h.operations.iter().filter_map(Operation::written_revision).collect();
                reported.sort_unstable();
                let reported = reported_in(&reported, &v.operations, &h.operations);
                let (violates, _, _) =
                    judge(&v.operations, &reported, v.elided_before.is_some(), 1_000_000, false);
                prop_assert!(violates, "{}", v);
                prop_assert!(v.operations.iter().any(|(k, _, _)| *k == i), "{}", v);
            }
        }
    }
}
