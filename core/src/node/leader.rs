//! Leading: heartbeats and appends, commit, the primary lease (P6), CheckQuorum (P5).
//!
//! [`LeaderState`] lives inside the leader role, so it exists exactly while this node
//! leads. The judgements (lease, quorum contact, commit) are methods of it that take
//! only what they need.

use super::role::RaftRole;
use super::timers::Timer;
use super::ClusterCore;
use crate::id::{Address, NodeId};
use crate::membership::Change;
use crate::message::{Append, AppendReply, Message, MAX_ENTRIES_PER_APPEND};
use crate::time::Instant;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;
use tracing::{info, warn};

/// What the leader knows of one follower.
#[derive(Clone, Debug)]
pub(super) struct Progress {
    /// Where it listens.
    pub(super) addr: Address,
    /// The next index to send.
    pub(super) next: u64,
    /// The highest index known to be stored there.
    pub(super) matched: u64,
    /// The send time (leader's clock) of the latest message it acknowledged.
    pub(super) acked_sent_at: Option<Instant>,
    /// When the leader last heard from it.
    pub(super) last_heard: Instant,
    /// Its own clock in its latest reply, echoed by the next hold renewal (P13).
    pub(super) reply_at: Option<Instant>,
    /// It replied since its last hold renewal.
    pub(super) fresh_reply: bool,
    /// The last index sent in an append or snapshot (0: none): entries up to it are
    /// in flight while `matched` is below it. Store writes wait for the previous
    /// append to be acknowledged and then go together (`store.rs`).
    pub(super) inflight_to: u64,
    /// The roles its latest reply says it released for good.
    pub(super) released: Vec<(String, u64)>,
}

impl Progress {
    fn new(addr: Address, last: u64, now: Instant) -> Self {
        Progress {
            addr,
            next: last + 1,
            matched: 0,
            acked_sent_at: None,
            last_heard: now,
            reply_at: None,
            fresh_reply: false,
            inflight_to: 0,
            released: Vec::new(),
        }
    }

    /// Whether it was heard from less than `window` ago.
    pub(super) fn heard_within(&self, now: Instant, window: Duration) -> bool {
        now.saturating_duration_since(self.last_heard) < window
    }
}

/// A leader's state for its term.
#[derive(Clone, Debug)]
pub(super) struct LeaderState {
    pub(super) progress: BTreeMap<NodeId, Progress>,
    pub(super) became_at: Instant,
    /// The lease: valid while `now < lease_until`.
    pub(super) lease_until: Instant,
    /// Set when the leader gives up its lease for good (handover on leave).
    pub(super) lease_revoked: bool,
    /// Reused by the lease computation, so that it allocates nothing per message.
    scratch: Vec<Instant>,
    /// Placement and hold renewals (P13, `roles.rs`).
    pub(super) roles: super::roles::LeaderRoles,
    /// The store's waiting writes and reads.
    pub(super) store: super::store::LeaderStore,
    /// Snapshots being sent in pieces.
    pub(super) transfers: super::snapshot::Transfers,
}

impl LeaderState {
    /// CheckQuorum: a majority of `voters` (`me` counted if it votes) was heard from
    /// within `window`, or the term is younger than that.
    fn has_quorum_contact(
        &self,
        now: Instant,
        window: Duration,
        me: NodeId,
        voters: &[NodeId],
        quorum: usize,
    ) -> bool {
        if now.saturating_duration_since(self.became_at) < window {
            return true;
        }
        let heard = voters
            .iter()
            .filter(|id| {
                **id == me
                    || self
                        .progress
                        .get(id)
                        .is_some_and(|p| p.heard_within(now, window))
            })
            .count();
        heard >= quorum
    }

    /// The lease (P6): the `quorum`-th most recent acknowledged send time among
    /// `voters` (`me` counts as "now" if it votes) plus `lease`. Returns the new end
    /// if the lease grew.
    fn renew_lease(
        &mut self,
        now: Instant,
        lease: Duration,
        me: NodeId,
        voters: &[NodeId],
        quorum: usize,
    ) -> Option<Instant> {
        if self.lease_revoked {
            return None;
        }
        self.scratch.clear();
        for id in voters {
            if *id == me {
                self.scratch.push(Instant::MAX);
            } else if let Some(t) = self.progress.get(id).and_then(|p| p.acked_sent_at) {
                self.scratch.push(t);
            }
        }
        if self.scratch.len() < quorum {
            return None;
        }
        self.scratch.sort_unstable_by(|a, b| b.cmp(a));
        let start = self.scratch[quorum - 1];
        // A single-voter cluster: nobody else can be elected, so the lease runs from now.
        let start = if start == Instant::MAX { now } else { start };
        let until = start + lease;
        if until > self.lease_until {
            self.lease_until = until;
            return Some(until);
        }
        None
    }

    /// Whether `index` is stored on a majority of `voters` (`me` always has it).
    fn stored_on_majority(&self, index: u64, me: NodeId, voters: &[NodeId], quorum: usize) -> bool {
        let count = voters
            .iter()
            .filter(|id| **id == me || self.progress.get(id).is_some_and(|p| p.matched >= index))
            .count();
        count >= quorum
    }
}

impl ClusterCore {
    pub(super) fn become_leader(&mut self, now: Instant) {
        info!(term = self.hard.term, "became leader");
        let last = self.log.last_index();
        let progress = self
            .replication_targets()
            .into_iter()
            .map(|(id, addr)| (id, Progress::new(addr, last, now)))
            .collect();
        let state = LeaderState {
            progress,
            became_at: now,
            lease_until: now,
            // A leaving node can be elected (it may hold the longest log, and the
            // others need it to lead once): it is never primary again and hands the
            // leadership over as soon as a voter has caught up.
            lease_revoked: self.leave.leaving.is_some(),
            scratch: Vec::with_capacity(16),
            roles: super::roles::LeaderRoles::default(),
            store: super::store::LeaderStore::default(),
            transfers: Default::default(),
        };
        self.set_role(RaftRole::Leader(Box::new(state)));
        self.timers.set(Timer::Heartbeat, now);
        self.role.leader = Some((self.me.id, self.me.addr.clone()));
        self.admin.reset_for_new_term();
        // A leader commits an entry of its own term before any configuration change.
        self.log.push(self.hard.term, Change::Noop);
        if self.maybe_commit() {
            self.after_commit(now);
        }
        self.update_lease(now);
        self.broadcast_append(now);
        if self.leave.leaving.is_some() {
            self.hand_over(now);
        }
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
    pub(super) fn sync_progress(&mut self, now: Instant) {
        let targets = self.replication_targets();
        let last = self.log.last_index();
        let Some(l) = self.role.leading_mut() else {
            return;
        };
        l.progress
            .retain(|id, _| targets.binary_search_by_key(id, |(t, _)| *t).is_ok());
        for (id, addr) in targets {
            l.progress
                .entry(id)
                .or_insert_with(|| Progress::new(addr, last, now));
        }
    }

    /// The heartbeat round: CheckQuorum, then renew the lease, propose what is
    /// pending and send every follower what it misses (or a heartbeat).
    pub(super) fn on_heartbeat_timer(&mut self, now: Instant) {
        let Some(l) = self.role.leading() else {
            return;
        };
        let window = self.cfg.election_timeout_min;
        let (voters, quorum) = (self.log.voters(), self.log.quorum());
        if !l.has_quorum_contact(now, window, self.me.id, voters, quorum) {
            warn!(
                term = self.hard.term,
                "lost contact with a majority (CheckQuorum); stepping down"
            );
            self.become_follower(now, self.hard.term, None);
            return;
        }
        self.update_lease(now);
        self.propose_next_change(now);
        self.prune_transfers(now);
        self.broadcast_append(now);
    }

    /// Sends every target what it is missing, or a heartbeat.
    pub(super) fn broadcast_append(&mut self, now: Instant) {
        let Some(l) = self.role.leading() else {
            return;
        };
        let mut next = l.progress.keys().next().copied();
        self.timers
            .set(Timer::Heartbeat, now + self.cfg.heartbeat_interval);
        // A cursor over the map in id order: allocation-free, and O(log n) per step
        // (`keys().nth(i)` walked i entries each time: quadratic in members).
        while let Some(id) = next {
            self.send_append_to(now, id);
            next = self.role.leading().and_then(|l| {
                l.progress
                    .range((Bound::Excluded(id), Bound::Unbounded))
                    .next()
                    .map(|(id, _)| *id)
            });
        }
    }

    pub(super) fn send_append_to(&mut self, now: Instant, id: NodeId) {
        let Some(p) = self.role.leading().and_then(|l| l.progress.get(&id)) else {
            return;
        };
        let addr = p.addr.clone();
        let prev_index = p.next.saturating_sub(1);
        let term = self.hard.term;
        let hold = self.hold_grant_for(now, id);
        let sent_to = match self.log.term_at(prev_index) {
            Some(prev_term) if prev_index >= self.log.base_index() => {
                let append = Append {
                    term,
                    prev_index,
                    prev_term,
                    entries: self
                        .log
                        .entries_for_append(prev_index, MAX_ENTRIES_PER_APPEND)
                        .to_vec(),
                    commit: self.log.commit_index(),
                    sent_at: now,
                    hold,
                };
                let sent_to = prev_index + append.entries.len() as u64;
                self.send(addr, Some(id), Message::Append(append));
                sent_to
            }
            _ => self.send_snapshot_to(now, id, addr, true),
        };
        if let Some(p) = self
            .role
            .leading_mut()
            .and_then(|l| l.progress.get_mut(&id))
        {
            p.inflight_to = sent_to;
        }
    }

    pub(super) fn on_append_reply(&mut self, now: Instant, from: NodeId, r: AppendReply) {
        if r.term > self.hard.term {
            self.become_follower(now, r.term, None);
            return;
        }
        let last = self.log.last_index();
        if r.term < self.hard.term || !self.role.is_leader() {
            return;
        }
        if r.success {
            self.end_transfer(from, r.index);
        }
        let Some(l) = self.role.leading_mut() else {
            return;
        };
        let became_at = l.became_at;
        let Some(p) = l.progress.get_mut(&from) else {
            return;
        };
        p.last_heard = now;
        let released_news = r.success && self.note_role_reply(from, r.at, r.released);
        let Some(p) = self
            .role
            .leading_mut()
            .and_then(|l| l.progress.get_mut(&from))
        else {
            return;
        };
        if r.success {
            let matched = r.index.min(last);
            if matched > p.matched {
                p.matched = matched;
            }
            p.next = p.next.max(p.matched + 1);
            // `sent_at` echoes this leader's own clock: only a time between the start
            // of the term and now can be genuine. A later one (forged, or a bug)
            // must never stretch the lease.
            let genuine = r.sent_at >= became_at && r.sent_at <= now;
            if genuine && p.acked_sent_at.is_none_or(|t| r.sent_at > t) {
                p.acked_sent_at = Some(r.sent_at);
            }
            self.update_lease(now);
            if self.maybe_commit() {
                self.after_commit(now);
            }
            if self.leave.leaving.is_some() {
                // A leaving leader waits for a caught-up target: this may be it.
                self.hand_over(now);
            }
            // A release confirmed: grant the role now rather than a round later.
            if released_news && self.place_roles(now) {
                self.broadcast_append(now);
            }
            self.send_waiting_data(now, from);
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

    /// Renews the lease from the latest acknowledgements (see
    /// [`LeaderState::renew_lease`]) and times its end.
    pub(super) fn update_lease(&mut self, now: Instant) {
        let (lease, me) = (self.cfg.lease_duration, self.me.id);
        let (voters, quorum) = (self.log.voters(), self.log.quorum());
        let Some(l) = self.role.leading_mut() else {
            return;
        };
        // A lease renewed from old acknowledgements can end before `now`: it is over
        // already and needs no timer (arming one in the past was the "core bug" the
        // tokio driver's tick floor used to hide; the schedule property found it,
        // seed 46712).
        if let Some(until) = l
            .renew_lease(now, lease, me, voters, quorum)
            .filter(|until| *until > now)
        {
            self.timers.set(Timer::LeaseEnd, until);
        }
    }

    /// Commits the highest entry of this term stored on a majority of voters.
    pub(super) fn maybe_commit(&mut self) -> bool {
        let Some(l) = self.role.leading() else {
            return false;
        };
        let (me, term) = (self.me.id, self.hard.term);
        let (voters, quorum) = (self.log.voters(), self.log.quorum());
        let mut idx = self.log.last_index();
        while idx > self.log.commit_index() {
            if self.log.term_at(idx) != Some(term) {
                break;
            }
            if l.stored_on_majority(idx, me, voters, quorum) {
                let from = self.log.commit_index();
                let roles = self
                    .log
                    .entries_after(from, (idx - from) as usize)
                    .iter()
                    .any(|e| matches!(e.change, Change::Roles(_)));
                if self.log.commit_to(idx) {
                    self.out.members_dirty = true;
                }
                if let Some(l) = self.role.leading_mut().filter(|_| roles) {
                    // A role moved: tell the new owner now, not at the next
                    // heartbeat (it is part of the handover gap).
                    l.roles.commit_news = true;
                }
                return true;
            }
            idx -= 1;
        }
        false
    }
}
