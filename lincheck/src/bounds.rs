//! Real-time bounds on where an operation sits in the global revision order.
//!
//! Revisions are log indices, shared by all keys, so a linearization orders every
//! committed write by its revision. If operation `a` returned before `b` was invoked,
//! `a` precedes `b`; `a` sits at or after the revision it observed (its own revision
//! for a write, the `mod_revision` it read, the `current_revision` of a mismatch),
//! so `b` comes after every write with a revision up to that one (its *floor*).
//! Likewise, if a write at revision `r` was invoked after `a` returned, `a` comes
//! before every write at `r` or later (its *ceiling*).

use crate::history::Operation;

/// The bounds of one operation, with the operations that impose them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// The operation comes after every write with a revision `<= floor` (0: none).
    pub floor: u64,
    /// The operation that imposes `floor`.
    pub floor_by: Option<usize>,
    /// The operation comes before every write with a revision `>= ceil`
    /// (`u64::MAX`: none).
    pub ceil: u64,
    /// The operation that imposes `ceil`.
    pub ceil_by: Option<usize>,
}

/// The bounds of each of `targets`, imposed by the operations in `sources` (indices
/// into `ops`; the caller leaves out failed operations). O((s + t) log s).
pub(crate) fn bounds(ops: &[Operation], sources: &[usize], targets: &[usize]) -> Vec<Bounds> {
    // Floors: the sources that returned, by return time, with the running maximum of
    // what they observed.
    let mut returned: Vec<(u64, usize)> = sources
        .iter()
        .copied()
        .filter(|&i| ops[i].outcome.is_definite() && ops[i].observed_revision() > 0)
        .map(|i| (ops[i].ret, i))
        .collect();
    returned.sort_unstable();
    let mut prefix_max: Vec<(u64, usize)> = Vec::with_capacity(returned.len());
    for &(_, i) in &returned {
        let obs = ops[i].observed_revision();
        match prefix_max.last() {
            Some(&(m, by)) if m >= obs => prefix_max.push((m, by)),
            _ => prefix_max.push((obs, i)),
        }
    }
    // Ceilings: the committed writes by invocation time, with the running minimum
    // (from the right) of their revisions.
    let mut writes: Vec<(u64, usize)> = sources
        .iter()
        .copied()
        .filter(|&i| ops[i].written_revision().is_some())
        .map(|i| (ops[i].invoke, i))
        .collect();
    writes.sort_unstable();
    let mut suffix_min: Vec<(u64, usize)> = vec![(u64::MAX, usize::MAX); writes.len() + 1];
    for (k, &(_, i)) in writes.iter().enumerate().rev() {
        let rev = ops[i].written_revision().unwrap_or(u64::MAX);
        suffix_min[k] = if rev < suffix_min[k + 1].0 {
            (rev, i)
        } else {
            suffix_min[k + 1]
        };
    }
    targets
        .iter()
        .map(|&t| {
            let op = &ops[t];
            let before = returned.partition_point(|&(ret, _)| ret < op.invoke);
            let (floor, floor_by) = if before == 0 {
                (0, None)
            } else {
                let (m, by) = prefix_max[before - 1];
                (m, Some(by))
            };
            let (ceil, ceil_by) = if op.outcome.is_definite() {
                let after = writes.partition_point(|&(inv, _)| inv <= op.ret);
                let (c, by) = suffix_min[after];
                (c, (by != usize::MAX).then_some(by))
            } else {
                (u64::MAX, None)
            };
            Bounds {
                floor,
                floor_by,
                ceil,
                ceil_by,
            }
        })
        .collect()
}
