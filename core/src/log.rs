//! The replicated log: a compacted base, a tail of recent entries, a commit index.
//!
//! The log carries configuration changes and the key-value store's entries; the
//! store's data is applied when an entry commits, never before. Committed entries are folded into the
//! base once the tail grows past [`KEEP_COMMITTED`], so it stays short while lagging
//! followers can still be caught up with ordinary appends rather than snapshots. The
//! configuration in force is the whole log applied (a server uses the latest
//! configuration in its log, committed or not); the committed one is what
//! applications see.

use crate::membership::{Change, Entry, Membership, Snapshot};
use crate::store::{DataChange, StoreAnswer, StoreData, StoreError, WATCH_HISTORY};
use std::collections::VecDeque;

/// Bytes of store data one append carries at most (beyond its first entry), so an
/// append stays well under the frame limit.
pub(crate) const MAX_APPEND_DATA_BYTES: usize = 256 * 1024;

/// Committed entries kept after compaction, for followers that are a little behind.
pub(crate) const KEEP_COMMITTED: usize = 32;

/// Committed entries kept once the log has carried store entries, unless the node
/// says otherwise (`Config::store_log_entries`): under a write load a follower trails
/// by many entries, and a snapshot costs the whole store (and ends the watches on
/// that follower), so the log keeps more (up to 16 MiB of values).
pub(crate) const KEEP_COMMITTED_WITH_DATA: usize = 1024;

#[derive(Clone, Debug)]
pub(crate) struct Log {
    base: Snapshot,
    tail: Vec<Entry>,
    commit: u64,
    committed: Membership,
    effective: Membership,
    /// The effective configuration's voters, cached: read on every acknowledgement.
    voters: Vec<crate::id::NodeId>,
    /// The key-value store at the commit index.
    data: StoreData,
    /// Store entries applied since the node last took them: index and answer.
    applied: Vec<(u64, Result<StoreAnswer, StoreError>)>,
    /// The latest changes to the data, oldest first, for watchers.
    history: VecDeque<DataChange>,
    /// Every change at or after this revision is in `history`.
    history_from: u64,
    /// Whether this log has carried a store entry (it then keeps
    /// `keep_with_data` committed entries).
    carries_data: bool,
    /// Committed entries kept once the log carries data.
    keep_with_data: usize,
}

/// Whether an append's previous entry is in this log.
pub(crate) enum Match {
    /// It is.
    Yes,
    /// It is not; where the leader should retry from.
    No { hint: u64 },
}

impl Log {
    pub(crate) fn new(base: Snapshot) -> Self {
        let m = base.membership.clone();
        let voters = m.voters().collect();
        Log {
            data: base.data.clone(),
            applied: Vec::new(),
            history: VecDeque::new(),
            history_from: base.index + 1,
            carries_data: false,
            keep_with_data: KEEP_COMMITTED_WITH_DATA,
            commit: base.index,
            base,
            tail: Vec::new(),
            committed: m.clone(),
            effective: m,
            voters,
        }
    }

    /// A log restored from durable state: `base` committed, `entries` after it (their
    /// commitment unknown until a leader says).
    pub(crate) fn restore(base: Snapshot, entries: Vec<Entry>) -> Self {
        let mut log = Log::new(base);
        log.append_from_leader(&entries);
        log
    }

    /// Keeps `n` committed entries (at least [`KEEP_COMMITTED`]) once the log carries
    /// store data.
    pub(crate) fn keep_with_data(mut self, n: usize) -> Self {
        self.keep_with_data = n.max(KEEP_COMMITTED);
        self
    }

    /// The compacted base.
    pub(crate) fn base(&self) -> &Snapshot {
        &self.base
    }

    /// The entries after the base.
    pub(crate) fn tail(&self) -> &[Entry] {
        &self.tail
    }

    /// The effective configuration's voters, in id order.
    pub(crate) fn voters(&self) -> &[crate::id::NodeId] {
        &self.voters
    }

    /// A majority of the effective voters.
    pub(crate) fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn refresh_voters(&mut self) {
        self.voters.clear();
        self.voters.extend(self.effective.voters());
    }

    /// The committed configuration as a snapshot, for a follower too far behind.
    pub(crate) fn committed_snapshot(&self) -> Snapshot {
        Snapshot {
            index: self.commit,
            term: self.term_at(self.commit).unwrap_or(self.base.term),
            membership: self.committed.clone(),
            data: self.data.clone(),
        }
    }

    /// The key-value store at the commit index.
    pub(crate) fn data(&self) -> &StoreData {
        &self.data
    }

    /// The data a successor cluster founded by this node starts from (P11 x P14): the
    /// committed store with every later store entry of this log applied too, in order,
    /// up to [`last_index`](Self::last_index). The founder holds the most up-to-date
    /// log of the survivors, so an entry the old majority committed (and perhaps
    /// acknowledged) is in it; one that was never committed takes effect late, as a
    /// pending write may. The answers are dropped: the leader that appended an entry
    /// is gone, so its client is told "maybe committed" (by that leader stepping down
    /// or by a forwarding member's timeout), and a retry finds the outcome in its
    /// session.
    pub(crate) fn data_through_last(&self) -> StoreData {
        let mut data = self.data.clone();
        for e in self.entries_after(self.commit, usize::MAX) {
            if let Change::Data(d) = &e.change {
                let _ = data.apply(e.index, d);
            }
        }
        data
    }

    /// Takes the answers of the store entries applied since the last call.
    pub(crate) fn take_applied(&mut self) -> Vec<(u64, Result<StoreAnswer, StoreError>)> {
        std::mem::take(&mut self.applied)
    }

    /// The changes to the data at or after `from`, oldest first; or, if some of them
    /// are no longer kept, the oldest revision from which they all are.
    pub(crate) fn changes_since(
        &self,
        from: u64,
    ) -> Result<impl Iterator<Item = &DataChange>, u64> {
        if from < self.history_from {
            return Err(self.history_from);
        }
        let skip = self.history.partition_point(|c| c.revision < from);
        Ok(self.history.range(skip..))
    }

    /// Whether store entries were applied since [`take_applied`](Self::take_applied).
    pub(crate) fn has_applied(&self) -> bool {
        !self.applied.is_empty()
    }

    pub(crate) fn base_index(&self) -> u64 {
        self.base.index
    }

    pub(crate) fn committed(&self) -> &Membership {
        &self.committed
    }

    pub(crate) fn commit_index(&self) -> u64 {
        self.commit
    }

    pub(crate) fn effective(&self) -> &Membership {
        &self.effective
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.tail.last().map_or(self.base.index, |e| e.index)
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.tail.last().map_or(self.base.term, |e| e.term)
    }

    fn pos(&self, index: u64) -> Option<usize> {
        index.checked_sub(self.base.index + 1).map(|p| p as usize)
    }

    /// The term of the entry at `index`, if the log holds it.
    pub(crate) fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.tail.get(self.pos(index)?).map(|e| e.term)
    }

    /// Entries after `index` (at least the base index), at most `max` of them.
    pub(crate) fn entries_after(&self, index: u64, max: usize) -> &[Entry] {
        let skip = index.saturating_sub(self.base.index) as usize;
        let rest = self.tail.get(skip..).unwrap_or(&[]);
        &rest[..rest.len().min(max)]
    }

    /// Entries after `index` for one append: at most `max` of them, and no more store
    /// data than [`MAX_APPEND_DATA_BYTES`] beyond the first entry.
    pub(crate) fn entries_for_append(&self, index: u64, max: usize) -> &[Entry] {
        let rest = self.entries_after(index, max);
        let mut bytes = 0;
        let mut n = 0;
        for e in rest {
            if let Change::Data(d) = &e.change {
                bytes += d.wire_len();
            }
            if n > 0 && bytes > MAX_APPEND_DATA_BYTES {
                break;
            }
            n += 1;
        }
        &rest[..n]
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date
    /// as this one (Raft's election restriction).
    pub(crate) fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    pub(crate) fn matches(&self, prev_index: u64, prev_term: u64) -> Match {
        if prev_index < self.base.index {
            // Below our base everything is committed, hence identical in every log.
            return Match::Yes;
        }
        match self.term_at(prev_index) {
            Some(t) if t == prev_term => Match::Yes,
            Some(_) => Match::No {
                hint: prev_index.saturating_sub(1).max(self.commit),
            },
            None => Match::No {
                hint: self.last_index(),
            },
        }
    }

    /// Stores a leader's entries that follow a matching previous entry, replacing any
    /// conflicting uncommitted suffix. Returns whether the log changed.
    pub(crate) fn append_from_leader(&mut self, entries: &[Entry]) -> bool {
        let mut changed = false;
        // Whether the effective configuration must be recomputed: not when only store
        // entries were added at the end (they change no member).
        let mut reconfigure = false;
        for e in entries {
            if e.index <= self.commit {
                continue;
            }
            match self.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    let keep = self.pos(e.index).unwrap_or(0);
                    self.tail.truncate(keep);
                    self.tail.push(e.clone());
                    changed = true;
                    reconfigure = true;
                }
                None if e.index == self.last_index() + 1 => {
                    self.tail.push(e.clone());
                    changed = true;
                    reconfigure |= !matches!(e.change, Change::Data(_));
                }
                None => break,
            }
        }
        if reconfigure {
            let mut effective = self.committed.clone();
            for e in self.entries_after(self.commit, usize::MAX) {
                effective.apply(&e.change);
            }
            self.effective = effective;
            self.refresh_voters();
        }
        changed
    }

    /// The leader appends an entry of its own; returns its index.
    pub(crate) fn push(&mut self, term: u64, change: Change) -> u64 {
        let index = self.last_index() + 1;
        self.effective.apply(&change);
        if !matches!(
            change,
            Change::Noop | Change::AddLearner { .. } | Change::Roles(_) | Change::Data(_)
        ) {
            self.refresh_voters();
        }
        self.tail.push(Entry {
            term,
            index,
            change,
        });
        index
    }

    /// Marks entries up to `index` committed. Returns whether the committed
    /// configuration changed.
    pub(crate) fn commit_to(&mut self, index: u64) -> bool {
        let upto = index.min(self.last_index());
        if upto <= self.commit {
            return false;
        }
        let from = self.pos(self.commit + 1).unwrap_or(0);
        let to = self.pos(upto).unwrap_or(0);
        // Only a configuration entry can change the configuration: a run of store
        // entries (and no-ops) skips the copy and comparison.
        let configures = self.tail[from..=to]
            .iter()
            .any(|e| !matches!(e.change, Change::Data(_) | Change::Noop));
        let before = configures.then(|| self.committed.clone());
        for e in &self.tail[from..=to] {
            match &e.change {
                Change::Data(d) => {
                    self.carries_data = true;
                    let answer = self.data.apply(e.index, d);
                    if let Ok(StoreAnswer::Written(o)) = &answer {
                        if let Some(change) = DataChange::of(d, o) {
                            if self.history.len() == WATCH_HISTORY {
                                if let Some(old) = self.history.pop_front() {
                                    self.history_from = old.revision + 1;
                                }
                            }
                            self.history.push_back(change);
                        }
                    }
                    self.applied.push((e.index, answer));
                }
                change => self.committed.apply(change),
            }
        }
        self.commit = upto;
        self.compact();
        before.is_some_and(|b| b != self.committed)
    }

    fn compact(&mut self) {
        let keep = if self.carries_data {
            self.keep_with_data
        } else {
            KEEP_COMMITTED
        };
        let committed_in_tail = (self.commit - self.base.index) as usize;
        if committed_in_tail <= 2 * keep {
            return;
        }
        let fold = committed_in_tail - keep;
        for e in self.tail.drain(..fold) {
            match &e.change {
                // The base keeps the store as of its index for the durable state; the
                // answers were given when the entry committed.
                Change::Data(d) => {
                    let _ = self.base.data.apply(e.index, d);
                }
                change => self.base.membership.apply(change),
            }
            self.base.index = e.index;
            self.base.term = e.term;
        }
    }

    /// Takes a leader's committed snapshot if it is ahead of our commit index, keeping
    /// our entries after it when they agree. Returns whether anything changed.
    pub(crate) fn install(&mut self, snap: &Snapshot) -> bool {
        if snap.index <= self.commit {
            return false;
        }
        let keep: Vec<Entry> = if self.term_at(snap.index) == Some(snap.term) {
            self.entries_after(snap.index, usize::MAX).to_vec()
        } else {
            Vec::new()
        };
        self.base = snap.clone();
        self.commit = snap.index;
        self.committed = snap.membership.clone();
        self.effective = snap.membership.clone();
        self.data = snap.data.clone();
        // The changes folded into the snapshot are unknown here.
        self.history.clear();
        self.history_from = snap.index + 1;
        for e in &keep {
            self.effective.apply(&e.change);
        }
        self.tail = keep;
        self.refresh_voters();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Address, NodeId};

    fn add(id: u128) -> Change {
        Change::AddLearner {
            id: NodeId(id),
            addr: Address::new(format!("n{id}")),
            name: None,
        }
    }

    fn empty() -> Log {
        Log::new(Snapshot {
            index: 1,
            term: 1,
            membership: Membership::default(),
            data: Default::default(),
        })
    }

    #[test]
    fn effective_config_includes_uncommitted_entries_and_commit_applies_them() {
        let mut log = empty();
        log.push(1, add(5));
        assert!(log.effective().contains(NodeId(5)));
        assert!(!log.committed().contains(NodeId(5)));
        assert!(log.commit_to(2));
        assert!(log.committed().contains(NodeId(5)));
        assert_eq!(
            (log.last_index(), log.last_term(), log.commit_index()),
            (2, 1, 2)
        );
    }

    #[test]
    fn conflicting_uncommitted_entry_is_replaced_and_config_rolls_back() {
        let mut log = empty();
        log.push(1, add(5));
        let from_new_leader = [Entry {
            term: 2,
            index: 2,
            change: Change::Noop,
        }];
        assert!(log.append_from_leader(&from_new_leader));
        assert!(!log.effective().contains(NodeId(5)));
        assert_eq!(log.last_term(), 2);
    }

    #[test]
    fn committed_entries_are_never_truncated() {
        let mut log = empty();
        log.push(1, add(5));
        log.commit_to(2);
        let bogus = [Entry {
            term: 9,
            index: 2,
            change: Change::Noop,
        }];
        assert!(!log.append_from_leader(&bogus));
        assert!(log.committed().contains(NodeId(5)));
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let mut log = empty();
        log.push(3, Change::Noop);
        assert!(log.is_up_to_date(2, 3));
        assert!(!log.is_up_to_date(9, 2));
        assert!(log.is_up_to_date(1, 4));
    }

    #[test]
    fn compaction_keeps_recent_committed_entries() {
        let mut log = empty();
        for i in 0..200 {
            log.push(1, add(i));
        }
        log.commit_to(201);
        assert_eq!(log.base_index(), 201 - KEEP_COMMITTED as u64);
        assert_eq!(log.committed().members.len(), 200);
        assert_eq!(
            log.entries_after(log.base_index(), usize::MAX).len(),
            KEEP_COMMITTED
        );
    }

    #[test]
    fn snapshot_install_keeps_matching_tail_and_ignores_stale_ones() {
        let mut log = empty();
        log.push(1, add(5));
        log.push(1, add(6));
        let mut m = Membership::default();
        m.apply(&add(5));
        assert!(log.install(&Snapshot {
            index: 2,
            term: 1,
            membership: m,
            data: Default::default(),
        }));
        assert_eq!(log.last_index(), 3);
        assert!(log.effective().contains(NodeId(6)));
        assert!(!log.committed().contains(NodeId(6)));
        let stale = Snapshot {
            index: 2,
            term: 1,
            membership: Membership::default(),
            data: Default::default(),
        };
        assert!(!log.install(&stale));
    }
}
