//! Leading: heartbeats and appends, commit, the primary lease (P6), CheckQuorum (P5);
//! following: storing what the leader sends.

use super::{ClusterCore, RaftRole};
use crate::id::{Address, ClusterId, NodeId};
use crate::log::Match;
use crate::membership::Change;
use crate::message::{Append, AppendReply, Message, SnapshotMsg, MAX_ENTRIES_PER_APPEND};
use crate::node::Rejected;
use crate::time::Instant;
use std::collections::BTreeMap;
use tracing::{debug, info, warn};

/// What the leader knows of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Where it listens.
    pub(crate) addr: Address,
    /// The next index to send.
    pub(crate) next: u64,
    /// The highest index known to be stored there.
    pub(crate) matched: u64,
    /// The send time (leader's clock) of the latest message it acknowledged.
    pub(crate) acked_sent_at: Option<Instant>,
    /// When the leader last heard from it.
    pub(crate) last_heard: Instant,
}

/// A leader's state for its term.
#[derive(Clone, Debug)]
pub(crate) struct LeaderState {
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) became_at: Instant,
    pub(crate) next_heartbeat: Instant,
    /// The lease: valid while `now < lease_until`.
    pub(crate) lease_until: Instant,
    /// Set when the leader gives up its lease for good (handover on leave).
    pub(crate) lease_revoked: bool,
    /// The lease end still to be reported by a tick (so the role change is emitted).
    pub(crate) lease_timer: Option<Instant>,
}

impl ClusterCore {
    pub(crate) fn become_leader(&mut self, now: Instant) {
        info!(term = self.term, "became leader");
        let last = self.log.last_index();
        let mut state = LeaderState {
            progress: BTreeMap::new(),
            became_at: now,
            next_heartbeat: now,
            lease_until: now,
            lease_revoked: false,
            lease_timer: None,
        };
        for (id, addr) in self.replication_targets() {
            state.progress.insert(
                id,
                Progress {
                    addr,
                    next: last + 1,
                    matched: 0,
                    acked_sent_at: None,
                    last_heard: now,
                },
            );
        }
        self.role = RaftRole::Leader(Box::new(state));
        self.leader = Some((self.me.id, self.me.addr.clone()));
        self.admin.reset_for_new_term();
        // A leader commits an entry of its own term before any configuration change.
        self.log.push(self.term, Change::Noop);
        if self.maybe_commit() {
            self.after_commit(now);
        }
        self.update_lease(now);
        self.broadcast_append(now);
    }

    /// Everyone the leader replicates to: the committed and the effective
    /// configuration (a member being removed still learns of its removal).
    fn replication_targets(&self) -> Vec<(NodeId, Address)> {
        let me = self.me.id;
        let both = self
            .log
            .effective()
            .members
            .iter()
            .chain(self.log.committed().members.iter());
        let mut ids: Vec<(NodeId, Address)> = both
            .filter(|(id, _)| **id != me)
            .map(|(id, m)| (*id, m.addr.clone()))
            .collect();
        ids.sort_unstable_by_key(|(id, _)| *id);
        ids.dedup_by_key(|(id, _)| *id);
        ids
    }

    /// Brings the progress map in line with the configuration after it changed.
    pub(crate) fn sync_progress(&mut self, now: Instant) {
        let targets = self.replication_targets();
        let last = self.log.last_index();
        let RaftRole::Leader(l) = &mut self.role else {
            return;
        };
        l.progress
            .retain(|id, _| targets.binary_search_by_key(id, |(t, _)| *t).is_ok());
        for (id, addr) in targets {
            l.progress.entry(id).or_insert(Progress {
                addr,
                next: last + 1,
                matched: 0,
                acked_sent_at: None,
                last_heard: now,
            });
        }
    }

    pub(crate) fn leader_tick(&mut self, now: Instant) {
        let RaftRole::Leader(l) = &mut self.role else {
            return;
        };
        if l.lease_timer.is_some_and(|t| now >= t) {
            l.lease_timer = None;
        }
        if now < l.next_heartbeat {
            return;
        }
        if !self.has_quorum_contact(now) {
            warn!(
                term = self.term,
                "lost contact with a majority (CheckQuorum); stepping down"
            );
            self.become_follower(now, self.term, None);
            return;
        }
        self.update_lease(now);
        self.propose_next_change(now);
        self.broadcast_append(now);
    }

    /// CheckQuorum: a majority of voters (this node counted if it votes) was heard
    /// from within the minimum election timeout, or the term is younger than that.
    fn has_quorum_contact(&self, now: Instant) -> bool {
        let RaftRole::Leader(l) = &self.role else {
            return false;
        };
        let window = self.cfg.election_timeout_min;
        if now.saturating_duration_since(l.became_at) < window {
            return true;
        }
        let mut heard = 0;
        for id in self.log.voters() {
            if *id == self.me.id {
                heard += 1;
            } else if let Some(p) = l.progress.get(id) {
                if now.saturating_duration_since(p.last_heard) < window {
                    heard += 1;
                }
            }
        }
        heard >= self.log.quorum()
    }

    /// Sends every target what it is missing, or a heartbeat.
    pub(crate) fn broadcast_append(&mut self, now: Instant) {
        let RaftRole::Leader(l) = &mut self.role else {
            return;
        };
        l.next_heartbeat = now + self.cfg.heartbeat_interval;
        // Iterating by index keeps this allocation-free: the map is not changed here.
        let n = l.progress.len();
        for i in 0..n {
            let RaftRole::Leader(l) = &self.role else {
                return;
            };
            let Some((id, _)) = l.progress.iter().nth(i) else {
                break;
            };
            let id = *id;
            self.send_append_to(now, id);
        }
    }

    pub(crate) fn send_append_to(&mut self, now: Instant, id: NodeId) {
        let RaftRole::Leader(l) = &self.role else {
            return;
        };
        let Some(p) = l.progress.get(&id) else { return };
        let addr = p.addr.clone();
        let prev_index = p.next.saturating_sub(1);
        let msg = match self.log.term_at(prev_index) {
            Some(prev_term) if prev_index >= self.log.base_index() => Message::Append(Append {
                term: self.term,
                prev_index,
                prev_term,
                entries: self
                    .log
                    .entries_after(prev_index, MAX_ENTRIES_PER_APPEND)
                    .to_vec(),
                commit: self.log.commit_index(),
                sent_at: now,
            }),
            _ => {
                let snapshot = self.log.committed_snapshot();
                let entries = self
                    .log
                    .entries_after(snapshot.index, MAX_ENTRIES_PER_APPEND)
                    .to_vec();
                Message::Snapshot(SnapshotMsg {
                    term: self.term,
                    snapshot,
                    entries,
                    sent_at: now,
                })
            }
        };
        self.send(addr, Some(id), msg);
    }

    pub(crate) fn on_append_reply(&mut self, now: Instant, from: NodeId, r: AppendReply) {
        if r.term > self.term {
            self.become_follower(now, r.term, None);
            return;
        }
        let last = self.log.last_index();
        let RaftRole::Leader(l) = &mut self.role else {
            return;
        };
        if r.term < self.term {
            return;
        }
        let Some(p) = l.progress.get_mut(&from) else {
            return;
        };
        p.last_heard = now;
        if r.success {
            let matched = r.index.min(last);
            if matched > p.matched {
                p.matched = matched;
            }
            p.next = p.next.max(p.matched + 1);
            // `sent_at` echoes this leader's own clock: only a time between the start
            // of the term and now can be genuine. A later one (forged, or a bug)
            // must never stretch the lease.
            let genuine = r.sent_at >= l.became_at && r.sent_at <= now;
            if genuine && p.acked_sent_at.is_none_or(|t| r.sent_at > t) {
                p.acked_sent_at = Some(r.sent_at);
            }
            self.update_lease(now);
            if self.maybe_commit() {
                self.after_commit(now);
            }
        } else {
            // Step back to the follower's hint, never below what it is known to hold.
            p.next = r
                .index
                .saturating_add(1)
                .min(p.next.saturating_sub(1))
                .max(p.matched + 1)
                .max(1);
            self.send_append_to(now, from);
        }
    }

    /// Lease: the `quorum`-th most recent acknowledged send time among voters (this
    /// node counts as "now" if it votes) plus the lease duration (P6).
    pub(crate) fn update_lease(&mut self, now: Instant) {
        let RaftRole::Leader(l) = &mut self.role else {
            return;
        };
        if l.lease_revoked {
            return;
        }
        self.scratch.clear();
        for id in self.log.voters() {
            if *id == self.me.id {
                self.scratch.push(Instant::MAX);
            } else if let Some(t) = l.progress.get(id).and_then(|p| p.acked_sent_at) {
                self.scratch.push(t);
            }
        }
        let q = self.log.quorum();
        if self.scratch.len() < q {
            return;
        }
        self.scratch.sort_unstable_by(|a, b| b.cmp(a));
        let start = self.scratch[q - 1];
        // A single-voter cluster: nobody else can be elected, so the lease runs from now.
        let start = if start == Instant::MAX { now } else { start };
        let until = start + self.cfg.lease_duration;
        if until > l.lease_until {
            l.lease_until = until;
            l.lease_timer = Some(until);
        }
    }

    /// Commits the highest entry of this term stored on a majority of voters.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let RaftRole::Leader(l) = &self.role else {
            return false;
        };
        let last = self.log.last_index();
        let mut idx = last;
        while idx > self.log.commit_index() {
            if self.log.term_at(idx) != Some(self.term) {
                break;
            }
            let count = self
                .log
                .voters()
                .iter()
                .filter(|id| {
                    **id == self.me.id || l.progress.get(id).is_some_and(|p| p.matched >= idx)
                })
                .count();
            if count >= self.log.quorum() {
                let changed = self.log.commit_to(idx);
                if changed {
                    self.members_dirty = true;
                }
                return true;
            }
            idx -= 1;
        }
        false
    }

    // ----- follower side ------------------------------------------------------------

    /// Common acceptance of a leader's message; `false` when it is stale.
    fn accept_leader(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: &Address,
        term: u64,
    ) -> bool {
        if term < self.term {
            return false;
        }
        if matches!(self.role, RaftRole::Leader(_)) && term == self.term {
            warn!(other = %from, term, "another leader in this term; ignoring it");
            return false;
        }
        self.become_follower(now, term, Some((from, from_addr.clone())));
        self.last_leader_contact = Some(now);
        self.reset_election_timer(now);
        true
    }

    pub(crate) fn on_append(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        cluster: Option<ClusterId>,
        a: Append,
    ) -> Result<(), Rejected> {
        if self.cluster.is_none() {
            // A fresh node has no log: ask for a snapshot, which it will judge.
            if self.may_adopt(cluster) {
                // The leader's term, so that the leader does not discard it as stale.
                self.refuse_append(from, from_addr, a.term, a.sent_at);
            }
            return Ok(());
        }
        if !self.accept_leader(now, from, &from_addr, a.term) {
            self.refuse_append(from, from_addr, self.term, a.sent_at);
            return Ok(());
        }
        let reply = match self.log.matches(a.prev_index, a.prev_term) {
            Match::Yes => {
                let before = self.log.effective().contains(self.me.id);
                self.log.append_from_leader(&a.entries);
                let verified = a.prev_index + a.entries.len() as u64;
                if self.log.commit_to(a.commit.min(verified)) {
                    self.members_dirty = true;
                }
                self.after_follower_update(before);
                AppendReply {
                    term: self.term,
                    success: true,
                    index: verified,
                    sent_at: a.sent_at,
                }
            }
            Match::No { hint } => {
                debug!(
                    prev = a.prev_index,
                    hint, "append does not match; asking for earlier entries"
                );
                AppendReply {
                    term: self.term,
                    success: false,
                    index: hint,
                    sent_at: a.sent_at,
                }
            }
        };
        self.send(from_addr, Some(from), Message::AppendReply(reply));
        Ok(())
    }

    /// Answers an append or snapshot it will not store, asking the sender to start
    /// over from the beginning (or, with a higher term, to step down).
    fn refuse_append(&mut self, to: NodeId, addr: Address, term: u64, sent_at: Instant) {
        let reply = AppendReply {
            term,
            success: false,
            index: 0,
            sent_at,
        };
        self.send(addr, Some(to), Message::AppendReply(reply));
    }

    fn may_adopt(&self, cluster: Option<ClusterId>) -> bool {
        cluster.is_some() && (self.joining == cluster || self.boot.supports.is_some())
    }

    pub(crate) fn on_snapshot(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        cluster: Option<ClusterId>,
        s: SnapshotMsg,
    ) -> Result<(), Rejected> {
        if self.cluster.is_none() {
            let Some(cluster) = cluster else {
                return Ok(());
            };
            let mut m = s.snapshot.membership.clone();
            for e in &s.entries {
                m.apply(&e.change);
            }
            let listed = m.contains(self.me.id) || s.snapshot.membership.contains(self.me.id);
            if !(listed || self.joining == Some(cluster)) {
                debug!(%cluster, "snapshot from a cluster this node did not ask to join; ignored");
                return Ok(());
            }
            info!(%cluster, leader = %from, "joined the cluster");
            self.adopt_cluster(
                now,
                cluster,
                s.term,
                &s.snapshot,
                Some((from, from_addr.clone())),
            );
        }
        if !self.accept_leader(now, from, &from_addr, s.term) {
            self.refuse_append(from, from_addr, self.term, s.sent_at);
            return Ok(());
        }
        let before = self.log.effective().contains(self.me.id);
        if self.log.install(&s.snapshot) {
            self.members_dirty = true;
        }
        self.log.append_from_leader(&s.entries);
        self.after_follower_update(before);
        let index = s.snapshot.index + s.entries.len() as u64;
        let reply = AppendReply {
            term: self.term,
            success: true,
            index,
            sent_at: s.sent_at,
        };
        self.send(from_addr, Some(from), Message::AppendReply(reply));
        Ok(())
    }

    /// After a follower's configuration changed: notice removal (P8).
    fn after_follower_update(&mut self, was_member: bool) {
        let in_committed = self.log.committed().contains(self.me.id);
        if self.leaving.is_some() && !in_committed && !self.log.effective().contains(self.me.id) {
            info!("removal committed; leave finished");
            self.finish_leave();
            return;
        }
        if was_member && !self.log.effective().contains(self.me.id) {
            info!("this node was removed from the configuration; it will ask to rejoin");
        }
    }
}
