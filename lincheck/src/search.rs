//! Wing-Gong-Lowe search with memoisation over the operations of one key.
//!
//! The operations' invocations and returns form one list in time order. The search
//! walks it: at an invocation it tries to linearize that operation now (the model
//! accepts it and the resulting search state was not seen before), removing the
//! operation's entries from the list and starting over at the head; at a return it
//! is stuck (an operation returned without being linearized) and undoes the last
//! choice. An operation with an unknown outcome has no return entry: it may be
//! linearized at any point after its invocation, or never; the search succeeds once
//! every operation with a definite outcome is linearized.
//!
//! Unknown-outcome writes are what makes the search expensive: any subset of them
//! may have taken effect. Two passes keep that in check:
//!
//! 1. **Relaxed**: each unknown-outcome write may take effect any number of times.
//!    The search state is then (definite operations linearized, model state) and the
//!    memo is a plain set. This admits more histories than the real store, so when
//!    it finds no linearization, none exists.
//! 2. **Exact**: each unknown-outcome write takes effect at most once. The memo maps
//!    (definite operations linearized, model state) to the sets of unknown-outcome
//!    writes used on the way to states that failed; a new state with a superset of
//!    one of those fails too (same future, fewer writes left), so it is skipped.
//!    Operations with a definite outcome are tried before unknown-outcome writes, so
//!    the states with fewer writes used come first and prune the others.

use std::collections::{HashMap, HashSet};

use crate::model::{step, KeyOp, State};

/// How a per-key search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable,
    /// The state budget ran out first.
    TooExpensive,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// Searches for a linearization of `ops` from `initial`: the relaxed pass, then
/// (unless `relaxed_only`) the exact pass if the relaxed one found a linearization
/// and some operation has an unknown outcome. Each pass explores at most
/// `max_states` states. Returns the verdict and the number of states explored. With
/// `relaxed_only`, `Linearizable` means only "linearizable if unknown-outcome writes
/// may take effect more than once".
pub(crate) fn search(
    ops: &[KeyOp],
    initial: State,
    max_states: u64,
    relaxed_only: bool,
) -> (Verdict, u64) {
    let mut s = Search::new(ops);
    if s.nu == 0 {
        return s.run(initial, max_states, false);
    }
    let (relaxed, n1) = s.run(initial, max_states, true);
    if relaxed != Verdict::Linearizable || relaxed_only || !s.reused {
        // Not linearizable even relaxed; or the relaxed linearization found used
        // each unknown-outcome write at most once, so it is a real one.
        return (relaxed, n1);
    }
    let (exact, n2) = Search::new(ops).run(initial, max_states, false);
    (exact, n1 + n2)
}

/// The entry list and the bit positions of one search.
struct Search<'a> {
    ops: &'a [KeyOp],
    next: Vec<usize>,
    prev: Vec<usize>,
    is_return: Vec<bool>,
    op_of: Vec<usize>,
    call_entry: Vec<usize>,
    ret_entry: Vec<usize>,
    /// Bit position of each operation among the definite ones, or among the others.
    bit: Vec<usize>,
    nd: usize,
    nu: usize,
    /// After a relaxed pass that found a linearization: whether it used some
    /// unknown-outcome write more than once.
    reused: bool,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp]) -> Self {
        // Entries 1..: (time, is_return, op). Invocations sort before returns at the
        // same instant, so operations that touch in time count as concurrent.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke, false, i));
            if op.step.definite() {
                events.push((op.ret, true, i));
            }
        }
        events.sort_unstable();
        let n = events.len() + 1;
        let mut s = Search {
            ops,
            next: vec![NIL; n],
            prev: vec![NIL; n],
            is_return: vec![false; n],
            op_of: vec![0; n],
            call_entry: vec![NIL; ops.len()],
            ret_entry: vec![NIL; ops.len()],
            bit: vec![0; ops.len()],
            nd: 0,
            nu: 0,
            reused: false,
        };
        for (k, &(_, ret, i)) in events.iter().enumerate() {
            let e = k + 1;
            s.prev[e] = e - 1;
            s.next[e - 1] = e;
            s.is_return[e] = ret;
            s.op_of[e] = i;
            if ret {
                s.ret_entry[i] = e;
            } else {
                s.call_entry[i] = e;
            }
        }
        for (i, op) in ops.iter().enumerate() {
            if op.step.definite() {
                s.bit[i] = s.nd;
                s.nd += 1;
            } else {
                s.bit[i] = s.nu;
                s.nu += 1;
            }
        }
        s
    }

    fn unlink(&mut self, e: usize) {
        let (p, q) = (self.prev[e], self.next[e]);
        self.next[p] = q;
        if q != NIL {
            self.prev[q] = p;
        }
    }

    /// Re-links `e` where it was; entries are re-linked in the reverse order of their
    /// unlinking, so its neighbours are the same.
    fn relink(&mut self, e: usize) {
        let (p, q) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if q != NIL {
            self.prev[q] = e;
        }
    }

    /// One pass; `relaxed`: unknown-outcome writes may take effect repeatedly.
    fn run(&mut self, initial: State, max_states: u64, relaxed: bool) -> (Verdict, u64) {
        let flip = |bits: &mut [u64], b: usize| bits[b / 64] ^= 1 << (b % 64);
        let mut done = vec![0u64; self.nd.div_ceil(64).max(1)];
        let mut used = vec![0u64; self.nu.div_ceil(64).max(1)];
        let mut done_count = 0usize;
        // Relaxed: every state seen. Exact: states that failed, with the sets of
        // unknown-outcome writes used to reach them.
        let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
        let mut failed: HashMap<(Vec<u64>, State), Vec<Vec<u64>>> = HashMap::new();
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut state = initial;
        let mut states = 0u64;
        // At each node the candidates are tried in passes over the entries before the
        // first pending return: 0, definite operations; 1, unknown-outcome writes not
        // used yet on this path; 2 (relaxed only), those already used. So a relaxed
        // linearization that uses each of them once is found first when there is one.
        let mut phase = 0u8;
        let mut uses = vec![0u32; self.nu];
        let mut e = self.next[HEAD];
        loop {
            if done_count == self.nd {
                if relaxed {
                    let mut times = vec![0u8; self.nu];
                    for &(i, _) in &stack {
                        if !self.ops[i].step.definite() {
                            times[self.bit[i]] += 1;
                            self.reused |= times[self.bit[i]] > 1;
                        }
                    }
                }
                return (Verdict::Linearizable, states);
            }
            if e == NIL || self.is_return[e] {
                if self.nu > 0 && (phase == 0 || (phase == 1 && relaxed)) {
                    phase += 1;
                    e = self.next[HEAD];
                    continue;
                }
                // Every candidate failed: undo the last choice.
                if !relaxed {
                    failed
                        .entry((done.clone(), state))
                        .or_default()
                        .push(used.clone());
                }
                let Some((i, before)) = stack.pop() else {
                    return (Verdict::NotLinearizable, states);
                };
                state = before;
                if self.ops[i].step.definite() {
                    flip(&mut done, self.bit[i]);
                    done_count -= 1;
                    self.relink(self.ret_entry[i]);
                    self.relink(self.call_entry[i]);
                    phase = 0;
                } else {
                    if !relaxed {
                        flip(&mut used, self.bit[i]);
                        self.relink(self.call_entry[i]);
                    }
                    uses[self.bit[i]] -= 1;
                    phase = if uses[self.bit[i]] == 0 { 1 } else { 2 };
                }
                e = self.next[self.call_entry[i]];
                continue;
            }
            let i = self.op_of[e];
            let definite = self.ops[i].step.definite();
            // Right after an unknown-outcome write, a write that ignores the state
            // (a put, a delete that reports nothing) would erase it unobserved: a
            // linearization that does so is still one without that unknown write, so
            // the search skips such orders.
            let after_unknown = stack
                .last()
                .is_some_and(|&(top, _)| !self.ops[top].step.definite());
            let in_phase = match phase {
                0 => definite,
                1 => !definite && uses[self.bit[i]] == 0,
                _ => !definite && uses[self.bit[i]] > 0,
            };
            if !in_phase || (after_unknown && self.ops[i].step.blind()) {
                e = self.next[e];
                continue;
            }
            let Some(after) = step(state, &self.ops[i]) else {
                e = self.next[e];
                continue;
            };
            if definite {
                flip(&mut done, self.bit[i]);
            } else if !relaxed {
                flip(&mut used, self.bit[i]);
            }
            let fresh = if relaxed {
                seen.insert((done.clone(), after))
            } else {
                !failed.get(&(done.clone(), after)).is_some_and(|sets| {
                    sets.iter()
                        .any(|u| u.iter().zip(&used).all(|(a, b)| a & !b == 0))
                })
            };
            if !fresh {
                if definite {
                    flip(&mut done, self.bit[i]);
                } else if !relaxed {
                    flip(&mut used, self.bit[i]);
                }
                e = self.next[e];
                continue;
            }
            states += 1;
            if states > max_states {
                return (Verdict::TooExpensive, states);
            }
            stack.push((i, state));
            state = after;
            if definite {
                done_count += 1;
                self.unlink(self.call_entry[i]);
                self.unlink(self.ret_entry[i]);
            } else {
                uses[self.bit[i]] += 1;
                if !relaxed {
                    self.unlink(self.call_entry[i]);
                }
            }
            phase = 0;
            e = self.next[HEAD];
        }
    }
}
