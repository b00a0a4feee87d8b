//! The leader's membership decisions: admitting joiners, promoting non-voters,
//! removing members that left, were replaced, or vanished (P2, P3, P8, P9).
//!
//! The leader proposes one change at a time, and only when everything in its log is
//! committed, so the voter set changes by at most one member per committed entry.

use super::ClusterCore;
use crate::id::{Address, NodeId};
use crate::membership::Change;
use crate::message::Message;
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info, warn};

/// The most uncommitted admissions of non-voters the leader keeps in its log.
const MAX_LEARNERS_IN_FLIGHT: u64 = 64;

/// Requests waiting for the leader.
#[derive(Clone, Debug, Default)]
pub(super) struct AdminQueue {
    /// Nodes that asked to join, with their address and name.
    pub(super) joins: BTreeMap<NodeId, (Address, Option<String>)>,
    /// Members that asked to leave.
    pub(super) leaves: BTreeSet<NodeId>,
    /// Members replaced by a new process at their address.
    pub(super) replaced: BTreeSet<NodeId>,
}

impl AdminQueue {
    pub(super) fn reset_for_new_term(&mut self) {
        // Requests made to a previous leader are re-sent by their senders.
        self.joins.clear();
        self.leaves.clear();
        self.replaced.clear();
    }
}

impl ClusterCore {
    fn not_leader_reply(&mut self, to: NodeId, addr: Address) {
        let leader = self.role.leader.clone().filter(|(id, _)| *id != self.me.id);
        self.send(addr, Some(to), Message::NotLeader { leader });
    }

    pub(super) fn on_join(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        name: Option<String>,
    ) {
        if self.hard.cluster.is_none() {
            return;
        }
        if !self.role.is_leader() {
            self.not_leader_reply(from, from_addr);
            return;
        }
        let effective = self.log.effective();
        if effective.contains(from) {
            // Already a member (perhaps it missed the news): replicate to it now.
            self.send_append_to(now, from);
            return;
        }
        if let Some(old) = effective.by_addr(&from_addr) {
            info!(old = %old, new = %from, addr = %from_addr, "a new process took a member's address; replacing it");
            self.admin.replaced.insert(old);
        }
        self.admin.joins.insert(from, (from_addr, name));
        self.propose_next_change(now);
    }

    pub(super) fn on_leave_request(&mut self, now: Instant, from: NodeId, from_addr: Address) {
        if self.hard.cluster.is_none() {
            return;
        }
        if !self.role.is_leader() {
            self.not_leader_reply(from, from_addr);
            return;
        }
        if self.log.effective().contains(from) {
            self.admin.leaves.insert(from);
            self.note_leave_request(from);
            self.propose_next_change(now);
        } else {
            // Already out: send the committed configuration so it sees its removal.
            self.send_final_snapshot(now, from, from_addr);
        }
    }

    fn send_final_snapshot(&mut self, now: Instant, id: NodeId, addr: Address) {
        // Whole, or the next piece (the node resends its request until it sees
        // its removal).
        self.send_snapshot_to(now, id, addr, false);
    }

    /// Proposes the most urgent change if the log is fully committed. While entries
    /// are in flight, only admissions of non-voters are added: they change no quorum,
    /// so a thousand joiners need not wait for one commit each.
    pub(super) fn propose_next_change(&mut self, now: Instant) {
        let Some(l) = self.role.leading() else {
            return;
        };
        if l.lease_revoked {
            return;
        }
        // Role entries change no member: they go beside configuration changes, and
        // only other entries count as a change in flight (a role entry waiting to
        // commit once held up the promotion that replaces a leaving voter, and a
        // cluster whose last voters left lost its quorum for good: FINDINGS #12).
        let placed = self.place_roles(now);
        let in_flight = self.changes_in_flight();
        if in_flight == 0 {
            match self.next_change(now) {
                Some(change) => {
                    info!(?change, "proposing configuration change");
                    self.log.push(self.hard.term, change);
                }
                None if !placed && !self.take_role_commit_news() => return,
                None => {}
            }
        }
        let mut admitted = 0;
        while in_flight + admitted < MAX_LEARNERS_IN_FLIGHT && self.admin.leaves.is_empty() {
            let effective = self.log.effective();
            self.admin.joins.retain(|id, _| !effective.contains(*id));
            let Some((id, (addr, name))) = self.admin.joins.pop_first() else {
                break;
            };
            self.log
                .push(self.hard.term, Change::AddLearner { id, addr, name });
            admitted += 1;
        }
        if admitted > 0 {
            info!(admitted, "admitting non-voting members");
        }
        self.sync_progress(now);
        if self.maybe_commit() {
            self.after_commit(now);
        }
        self.broadcast_append(now);
    }

    fn next_change(&mut self, now: Instant) -> Option<Change> {
        let l = self.role.leading()?;
        let me = self.me.id;
        let cfg = self.log.effective();
        self.admin.leaves.retain(|id| cfg.contains(*id));
        self.admin.replaced.retain(|id| cfg.contains(*id));
        self.admin.joins.retain(|id, _| !cfg.contains(*id));
        // Members replaced by a new process go first: they are certainly dead, and
        // removing them restores fault tolerance.
        if let Some(id) = self.admin.replaced.first() {
            return Some(Change::Remove { id: *id });
        }
        // Members gone from discovery and silent for the grace period, or silent for
        // far longer; voters first, since they hold the quorum.
        let grace = self.cfg.removal_grace;
        let mut dead: Option<(bool, NodeId)> = None;
        for (id, m) in &cfg.members {
            if *id == me {
                continue;
            }
            let silent_for = l
                .progress
                .get(id)
                .map_or(grace, |p| now.saturating_duration_since(p.last_heard));
            let unlisted_for = match self.peers.get(&m.addr) {
                Some(p) if p.listed => None,
                Some(p) => Some(
                    p.unlisted_since
                        .map_or(grace, |t| now.saturating_duration_since(t)),
                ),
                None => Some(now.saturating_duration_since(l.became_at)),
            };
            let gone = unlisted_for.is_some_and(|u| u >= grace) && silent_for >= grace;
            let silent = self
                .cfg
                .silent_member_timeout
                .is_some_and(|t| silent_for >= t);
            if (gone || silent) && dead.is_none_or(|(voter, _)| m.voter && !voter) {
                dead = Some((m.voter, *id));
            }
        }
        if let Some((_, id)) = dead {
            return Some(Change::Remove { id });
        }
        // Promotion candidates: caught-up, responsive non-voters, while there is room
        // for another voter (P9).
        let voters = cfg.voter_count();
        let window = self.cfg.election_timeout_min;
        let log = &self.log;
        let mut ready = cfg.members.iter().filter(|(id, m)| {
            !m.voter
                && l.progress
                    .get(id)
                    .is_some_and(|p| caught_up(log, p.matched) && p.heard_within(now, window))
        });
        let first = ready
            .next()
            .map(|(id, _)| *id)
            .filter(|_| voters < self.cfg.max_voters.get());
        let second = ready.next().is_some();
        // A leaving voter is replaced before it is removed: promote a ready non-voter
        // first, so that a voter that died unnoticed just before cannot leave the
        // remaining voters without a live majority (the simulator found this race).
        let leaver = self.admin.leaves.first().copied();
        if let (Some(leaving), Some(id)) = (leaver, first) {
            if cfg.is_voter(leaving) {
                return Some(Change::Promote { id });
            }
        }
        // Then the leaver goes, unless the voters left would have no live majority
        // while a join could still restore one (it keeps answering until then).
        if let Some(id) = leaver.filter(|id| self.removal_keeps_live_quorum(now, *id)) {
            return Some(Change::Remove { id });
        }
        // Otherwise promote, keeping the voter count odd: an even count tolerates no
        // more failures than one fewer, and a promotion that cannot commit (the
        // promoted member dies at once) leaves a majority harder to reach. So a
        // promotion to an even count happens only when a second candidate can follow.
        let to_odd = (voters + 1) % 2 == 1;
        let pair_fits = second && voters + 2 <= self.cfg.max_voters.get();
        if let Some(id) = first.filter(|_| to_odd || pair_fits) {
            return Some(Change::Promote { id });
        }
        if let Some((id, (addr, name))) = self.admin.joins.pop_first() {
            return Some(Change::AddLearner { id, addr, name });
        }
        // Last, the leaver goes even though the voters left would have no live
        // majority: nothing can restore one. Unless a responsive non-voter could still
        // be promoted once it has caught up (a round trip, typically): then the leaver
        // keeps answering a little longer, as above (FINDINGS #12).
        let promotable = voters < self.cfg.max_voters.get()
            && cfg.members.iter().any(|(id, m)| {
                !m.voter
                    && !self.admin.leaves.contains(id)
                    && l.progress
                        .get(id)
                        .is_some_and(|p| p.heard_within(now, window))
            });
        leaver
            .filter(|_| !promotable)
            .map(|id| Change::Remove { id })
    }

    /// The one change a leaving leader proposes (its successor makes the others):
    /// when no other voter can succeed it, every one of them leaving too or silent
    /// for the minimum election timeout, it promotes a caught-up, responsive
    /// non-voter, which the handover then targets. Without it, a primary that left
    /// while the only other live voter was leaving as well left the cluster's
    /// non-voters without a voter (FINDINGS #12). Nothing if a change other than
    /// roles or data is uncommitted, or the voters are at `max_voters` (P9).
    pub(super) fn promote_successor(&mut self, now: Instant) {
        let Some(l) = self.role.leading() else {
            return;
        };
        let window = self.cfg.election_timeout_min;
        let cfg = self.log.effective();
        let successor_exists = cfg.voters().any(|id| {
            id != self.me.id
                && !self.admin.leaves.contains(&id)
                && l.progress
                    .get(&id)
                    .is_some_and(|p| p.heard_within(now, window))
        });
        let in_flight = self.changes_in_flight() > 0;
        if successor_exists || in_flight || cfg.voter_count() >= self.cfg.max_voters.get() {
            return;
        }
        let log = &self.log;
        let Some(id) = cfg
            .members
            .iter()
            .filter(|(id, m)| !m.voter && !self.admin.leaves.contains(*id))
            .find(|(id, _)| {
                l.progress
                    .get(id)
                    .is_some_and(|p| caught_up(log, p.matched) && p.heard_within(now, window))
            })
            .map(|(id, _)| *id)
        else {
            return;
        };
        info!(%id, "no voter can succeed this leaving leader: promoting a non-voter");
        self.log.push(self.hard.term, Change::Promote { id });
        self.sync_progress(now);
        if self.maybe_commit() {
            self.after_commit(now);
        }
        self.broadcast_append(now);
    }

    /// Uncommitted entries other than role and data entries: the configuration
    /// changes in flight (role entries change no member and go beside them).
    fn changes_in_flight(&self) -> u64 {
        self.log
            .entries_after(self.log.commit_index(), usize::MAX)
            .iter()
            .filter(|e| !matches!(e.change, Change::Roles(_) | Change::Data(_)))
            .count() as u64
    }

    /// Whether the voters left after removing `id` would still have a majority that
    /// the leader heard from within the minimum election timeout.
    fn removal_keeps_live_quorum(&self, now: Instant, id: NodeId) -> bool {
        let Some(l) = self.role.leading() else {
            return false;
        };
        let cfg = self.log.effective();
        let window = self.cfg.election_timeout_min;
        let remaining: Vec<NodeId> = cfg.voters().filter(|v| *v != id).collect();
        let live = remaining
            .iter()
            .filter(|v| {
                **v == self.me.id
                    || l.progress
                        .get(v)
                        .is_some_and(|p| p.acked_sent_at.is_some() && p.heard_within(now, window))
            })
            .count();
        live > remaining.len() / 2
    }

    /// After the leader's commit index moved.
    pub(super) fn after_commit(&mut self, now: Instant) {
        let committed = self.log.committed().clone();
        // Members the committed configuration dropped learn of it once more, then the
        // leader stops replicating to them.
        let dropped: Vec<(NodeId, Address)> = match self.role.leading() {
            Some(l) => l
                .progress
                .iter()
                .filter(|(id, _)| !self.log.effective().contains(**id) && !committed.contains(**id))
                .map(|(id, p)| (*id, p.addr.clone()))
                .collect(),
            None => Vec::new(),
        };
        for (id, addr) in dropped {
            self.send_final_snapshot(now, id, addr);
        }
        self.sync_progress(now);
        if !committed.contains(self.me.id) {
            warn!("this leader is no longer in the committed configuration; stepping down");
            self.become_follower(now, self.hard.term, None);
            if self.leave.leaving.is_some() {
                self.finish_leave();
            }
            return;
        }
        self.propose_next_change(now);
    }
}

/// Whether a member that stores the log up to `matched` is caught up enough to be
/// promoted: it stores every committed entry except, perhaps, role entries at the end
/// of the committed prefix. Those change no member, and while roles move one commits
/// every heartbeat round or two, so a non-voter's acknowledgement (a round trip old)
/// was often one role entry behind; requiring every committed entry kept the promotion
/// that replaces a lost voter waiting a round or more, long enough for a second fault
/// to leave the voters without a majority for good (FINDINGS #14).
fn caught_up(log: &crate::log::Log, matched: u64) -> bool {
    let commit = log.commit_index();
    if matched >= commit {
        return true;
    }
    // Entries folded into the snapshot are not at hand: not caught up. Store entries
    // change no member either, but a member far behind on data is not caught up: at
    // most one append's worth of them may be missing.
    if matched < log.base_index() {
        return false;
    }
    let mut data = 0;
    log.entries_after(matched, (commit - matched) as usize)
        .iter()
        .all(|e| match e.change {
            Change::Roles(_) => true,
            Change::Data(_) => {
                data += 1;
                data <= crate::message::MAX_ENTRIES_PER_APPEND
            }
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::caught_up;
    use crate::id::NodeId;
    use crate::log::Log;
    use crate::membership::{Change, Membership, Snapshot};

    fn empty_log() -> Log {
        Log::new(Snapshot {
            index: 0,
            term: 0,
            membership: Membership::default(),
            data: Default::default(),
        })
    }

    /// A member that stores every committed entry but role entries at the end of the
    /// committed prefix is ready for promotion (FINDINGS #14); one that misses a
    /// membership change, or entries folded into the snapshot, is not.
    #[test]
    fn a_member_behind_only_by_role_entries_is_caught_up() {
        let mut log = empty_log();
        log.push(1, Change::Noop);
        log.push(1, Change::Remove { id: NodeId(9) });
        log.push(1, Change::Roles(Vec::new()));
        log.push(1, Change::Roles(Vec::new()));
        log.push(1, Change::Noop); // not committed: it does not count
        log.commit_to(4);
        for matched in [2, 3, 4, 5] {
            assert!(caught_up(&log, matched), "matched {matched}");
        }
        assert!(!caught_up(&log, 1), "it misses the removal at 2");
        assert!(!caught_up(&log, 0));

        let mut folded = empty_log();
        for _ in 0..300 {
            folded.push(1, Change::Roles(Vec::new()));
        }
        folded.commit_to(300);
        let base = folded.base_index();
        assert!(
            base > 0,
            "the committed prefix was folded into the snapshot"
        );
        assert!(caught_up(&folded, base));
        assert!(
            !caught_up(&folded, base - 1),
            "entries before the base are not at hand"
        );
    }
}
