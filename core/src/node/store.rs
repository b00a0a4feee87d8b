//! The key-value store's requests: forwarding to the primary, appending writes,
//! confirming linearizable reads with a majority (ReadIndex), serving lease and local
//! reads, and answering each request exactly once.
//!
//! A request comes from the application of this node ([`Waiter::Local`], answered
//! with `Command::StoreReply`) or from another member that forwarded it here
//! ([`Waiter::Remote`], answered with `Message::StoreReply`). Only the leader appends
//! writes and confirms reads; it keeps the waiters in [`LeaderStore`], which lives in
//! the leader role, so stepping down answers them all (a write "maybe committed", a
//! read "no primary": retrying either is safe).

use super::role::RaftRole;
use super::timers::Timer;
use super::ClusterCore;
use crate::event::Command;
use crate::id::{Address, NodeId};
use crate::membership::Change;
use crate::message::Message;
use crate::store::{Consistency, DataEntry, Read, StoreAnswer, StoreError, StoreRequest};
use crate::time::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tracing::debug;

/// Who waits for an answer.
#[derive(Clone, Debug)]
pub(super) enum Waiter {
    /// This node's application, by its request id.
    Local(u64),
    /// Another member, which forwarded its request `id` here.
    Remote {
        node: NodeId,
        addr: Address,
        id: u64,
    },
}

/// A request this node forwarded to the leader and still waits for.
#[derive(Clone, Debug)]
struct Forwarded {
    deadline: Instant,
    /// A write (its answer on timeout is "maybe committed"), or a read or
    /// registration ("no primary": nothing was changed by it).
    write: bool,
}

/// The store state every node keeps.
#[derive(Clone, Debug, Default)]
pub(super) struct StoreState {
    forwarded: BTreeMap<u64, Forwarded>,
    /// When this node last held everything a leader had committed when that leader
    /// sent an append (the age of its data, for local reads).
    pub(super) fresh_at: Option<Instant>,
}

#[derive(Clone, Debug)]
struct PendingRead {
    waiter: Waiter,
    read: Read,
    /// When the read reached the leader: a majority must acknowledge an append sent
    /// at or after it.
    arrived: Instant,
}

/// The store state of the leader role.
#[derive(Clone, Debug, Default)]
pub(super) struct LeaderStore {
    /// Waiters for the entry at each index.
    writes: BTreeMap<u64, Vec<Waiter>>,
    /// Reads waiting for a majority's confirmation, in arrival order.
    reads: VecDeque<PendingRead>,
    /// When the last append round was started for waiting reads.
    read_round_at: Option<Instant>,
    /// The index of the last store entry appended in this term (0: none).
    last_data_index: u64,
}

impl LeaderStore {
    pub(super) fn is_idle(&self) -> bool {
        self.writes.is_empty() && self.reads.is_empty()
    }
}

fn is_write(request: &StoreRequest) -> bool {
    matches!(request, StoreRequest::Write(_))
}

/// What can be refused before the request goes anywhere.
fn precheck(request: &StoreRequest) -> Result<(), StoreError> {
    match request {
        StoreRequest::Write(w) => {
            if w.seq == 0 {
                return Err(StoreError::Invalid("sequence numbers start at 1".into()));
            }
            w.op.check_limits()
        }
        StoreRequest::Read {
            read: Read::Get { key },
            ..
        } if key.len() > crate::store::MAX_KEY_LEN => Err(StoreError::TooLarge {
            what: crate::store::Oversized::Key,
            len: key.len(),
            max: crate::store::MAX_KEY_LEN,
        }),
        _ => Ok(()),
    }
}

impl ClusterCore {
    /// A request from this node's application.
    pub(super) fn on_store_input(&mut self, now: Instant, id: u64, request: StoreRequest) {
        if let Err(e) = precheck(&request) {
            return self.answer_store(Waiter::Local(id), Err(e));
        }
        if self.store.forwarded.contains_key(&id) {
            let e = StoreError::Invalid(format!("request id {id} is already waiting"));
            return self.answer_store(Waiter::Local(id), Err(e));
        }
        if self.hard.cluster.is_none() || self.leave.left {
            return self.answer_store(Waiter::Local(id), Err(StoreError::NoPrimary));
        }
        if let StoreRequest::Read {
            read,
            consistency: Consistency::Local { max_lag },
        } = &request
        {
            let answer = self.local_read(now, read, *max_lag);
            return self.answer_store(Waiter::Local(id), answer);
        }
        if self.role.is_leader() {
            return self.lead_store_request(now, Waiter::Local(id), request);
        }
        match self.role.leader.clone() {
            Some((leader, addr)) if leader != self.me.id => {
                let deadline = now + self.cfg.store_request_timeout;
                let write = is_write(&request);
                self.store
                    .forwarded
                    .insert(id, Forwarded { deadline, write });
                self.timers.set_earlier(Timer::Store, deadline);
                self.send(addr, Some(leader), Message::StoreRequest { id, request });
            }
            _ => self.answer_store(Waiter::Local(id), Err(StoreError::NoPrimary)),
        }
    }

    /// A request another member forwarded to this node as leader.
    pub(super) fn on_store_request(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        id: u64,
        request: StoreRequest,
    ) {
        let waiter = Waiter::Remote {
            node: from,
            addr: from_addr,
            id,
        };
        if !self.role.is_leader() {
            // Nothing was appended here: the sender may retry with the next leader.
            // Checked before membership: only a leader's committed membership is
            // current (a member restarted with its data knows only its base's until
            // a leader tells it the commit: FINDINGS #17).
            return self.answer_store(waiter, Err(StoreError::NoPrimary));
        }
        if !self.log.committed().contains(from) {
            debug!(%from, "store request from a non-member; refused");
            let e = StoreError::NotCommitted("the sender is not a member".into());
            return self.answer_store(waiter, Err(e));
        }
        if matches!(
            request,
            StoreRequest::Read {
                consistency: Consistency::Local { .. },
                ..
            }
        ) {
            let e = StoreError::Invalid("a local read is not forwarded".into());
            return self.answer_store(waiter, Err(e));
        }
        if let Err(e) = precheck(&request) {
            return self.answer_store(waiter, Err(e));
        }
        self.lead_store_request(now, waiter, request);
    }

    /// The answer to a request this node forwarded.
    pub(super) fn on_store_reply(
        &mut self,
        from: NodeId,
        id: u64,
        result: Result<StoreAnswer, StoreError>,
    ) {
        if self.store.forwarded.remove(&id).is_none() {
            debug!(%from, id, "store answer for no waiting request (late or foreign); ignored");
            return;
        }
        self.out
            .commands
            .push_back(Command::StoreReply { id, result });
    }

    fn lead_store_request(&mut self, now: Instant, waiter: Waiter, request: StoreRequest) {
        let term = self.hard.term;
        match request {
            StoreRequest::Register => {
                let index = self.log.push(term, Change::Data(DataEntry::Register));
                self.wait_for_entry(now, index, waiter);
            }
            StoreRequest::Write(w) => {
                if let Some(saved) = self.log.data().saved_outcome(w.client, w.seq) {
                    // A retry of a committed write: its outcome, without a new entry.
                    let answer = Ok(StoreAnswer::Written(saved.clone()));
                    return self.answer_store(waiter, answer);
                }
                let index = self.log.push(term, Change::Data(DataEntry::Write(w)));
                self.wait_for_entry(now, index, waiter);
            }
            StoreRequest::Read { read, consistency } => {
                if consistency == Consistency::Lease
                    && self.lease_valid(now)
                    && self.committed_in_term()
                {
                    let answer = self.read_now(&read);
                    return self.answer_store(waiter, Ok(answer));
                }
                let Some(l) = self.role.leading_mut() else {
                    return;
                };
                l.store.reads.push_back(PendingRead {
                    waiter,
                    read,
                    arrived: now,
                });
                let round_started = l.store.read_round_at == Some(now);
                l.store.read_round_at = Some(now);
                // A single voter confirms alone; others need an append sent from now.
                self.serve_store_reads();
                if !round_started
                    && self
                        .role
                        .leading()
                        .is_some_and(|l| !l.store.reads.is_empty())
                {
                    self.broadcast_append(now);
                }
            }
        }
    }

    fn wait_for_entry(&mut self, now: Instant, index: u64, waiter: Waiter) {
        if let Some(l) = self.role.leading_mut() {
            l.store.writes.entry(index).or_default().push(waiter);
            l.store.last_data_index = index;
        }
        // A single voter commits at once.
        if self.maybe_commit() {
            self.after_commit(now);
        }
        // Replicate now rather than at the next heartbeat, to every follower that has
        // nothing in flight; the others get this entry with everything appended
        // meanwhile as soon as they acknowledge (`send_waiting_data`): one append per
        // round trip per follower carries a whole batch of writes.
        let idle: Vec<NodeId> = self
            .role
            .leading()
            .map(|l| {
                l.progress
                    .iter()
                    .filter(|(_, p)| p.inflight_to <= p.matched)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        for id in idle {
            self.send_append_to(now, id);
        }
    }

    /// After a follower's successful acknowledgement: if nothing is in flight to it
    /// and store entries wait for it, send them now.
    pub(super) fn send_waiting_data(&mut self, now: Instant, to: NodeId) {
        let waiting = self.role.leading().is_some_and(|l| {
            l.progress
                .get(&to)
                .is_some_and(|p| p.inflight_to <= p.matched && l.store.last_data_index > p.matched)
        });
        if waiting {
            self.send_append_to(now, to);
        }
    }

    /// Whether the leader has committed an entry of its own term: only then does its
    /// committed data include everything any earlier leader committed.
    fn committed_in_term(&self) -> bool {
        self.log.term_at(self.log.commit_index()) == Some(self.hard.term)
    }

    fn read_now(&self, read: &Read) -> StoreAnswer {
        StoreAnswer::Read {
            answer: self.log.data().read(read),
            revision: self.log.commit_index(),
        }
    }

    fn local_read(
        &self,
        now: Instant,
        read: &Read,
        max_lag: Duration,
    ) -> Result<StoreAnswer, StoreError> {
        let fresh_at = if self.role.is_leader() {
            // The leader's data is current while a majority follows it: as fresh as
            // the start of its lease.
            self.role
                .leading()
                .filter(|_| self.committed_in_term())
                .map(|l| l.lease_until.saturating_sub(self.cfg.lease_duration))
        } else {
            self.store.fresh_at
        };
        match fresh_at {
            Some(t) if now.saturating_duration_since(t) <= max_lag => Ok(self.read_now(read)),
            _ => Err(StoreError::TooStale),
        }
    }

    /// Serves the waiting reads that a majority has confirmed: each voter (this one
    /// included) acknowledged an append of this term sent at or after the read
    /// arrived, so no other leader was elected before then; the data is the
    /// committed data of now, which includes everything committed before the read.
    pub(super) fn serve_store_reads(&mut self) {
        if !self.committed_in_term() {
            return;
        }
        let me = self.me.id;
        let (voters, quorum) = (self.log.voters(), self.log.quorum());
        let Some(l) = self.role.leading() else {
            return;
        };
        let Some(first) = l.store.reads.front() else {
            return;
        };
        let mut acks: Vec<Instant> = voters
            .iter()
            .filter_map(|id| {
                if *id == me {
                    Some(Instant::MAX)
                } else {
                    l.progress.get(id).and_then(|p| p.acked_sent_at)
                }
            })
            .collect();
        if acks.len() < quorum || quorum == 0 {
            return;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acks[quorum - 1];
        if first.arrived > confirmed {
            return;
        }
        let mut ready = Vec::new();
        if let Some(l) = self.role.leading_mut() {
            while l
                .store
                .reads
                .front()
                .is_some_and(|r| r.arrived <= confirmed)
            {
                ready.extend(l.store.reads.pop_front());
            }
        }
        for r in ready {
            let answer = self.read_now(&r.read);
            self.answer_store(r.waiter, Ok(answer));
        }
    }

    /// Answers the waiters of store entries that committed. Runs after every input.
    pub(super) fn answer_committed_store_entries(&mut self) {
        if !self.log.has_applied() {
            return;
        }
        let applied = self.log.take_applied();
        if self
            .role
            .leading()
            .is_none_or(|l| l.store.writes.is_empty())
        {
            return;
        }
        for (index, result) in applied {
            let waiters = self
                .role
                .leading_mut()
                .and_then(|l| l.store.writes.remove(&index))
                .unwrap_or_default();
            for w in waiters {
                self.answer_store(w, result.clone());
            }
        }
    }

    /// Answers every waiter of a leader that steps down: a write may have committed
    /// (or may still, under the next leader), a read was not served.
    pub(super) fn fail_store_waiters(&mut self, to: &RaftRole) {
        if matches!(to, RaftRole::Leader(_)) {
            return;
        }
        let Some(l) = self.role.leading_mut() else {
            return;
        };
        if l.store.is_idle() {
            return;
        }
        let pending = std::mem::take(&mut l.store);
        for w in pending.writes.into_values().flatten() {
            self.answer_store(w, Err(StoreError::MaybeCommitted));
        }
        for r in pending.reads {
            self.answer_store(r.waiter, Err(StoreError::NoPrimary));
        }
    }

    /// Forwarded requests past their deadline: a write may have committed, anything
    /// else changed nothing.
    pub(super) fn on_store_timer(&mut self, now: Instant) {
        let expired: Vec<(u64, bool)> = self
            .store
            .forwarded
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, f)| (*id, f.write))
            .collect();
        for (id, write) in expired {
            self.store.forwarded.remove(&id);
            let e = if write {
                StoreError::MaybeCommitted
            } else {
                StoreError::NoPrimary
            };
            self.answer_store(Waiter::Local(id), Err(e));
        }
        match self.store.forwarded.values().map(|f| f.deadline).min() {
            Some(next) => self.timers.set(Timer::Store, next),
            None => self.timers.stop(Timer::Store),
        }
    }

    fn answer_store(&mut self, waiter: Waiter, result: Result<StoreAnswer, StoreError>) {
        match waiter {
            Waiter::Local(id) => self
                .out
                .commands
                .push_back(Command::StoreReply { id, result }),
            Waiter::Remote { node, addr, id } => {
                self.send(addr, Some(node), Message::StoreReply { id, result })
            }
        }
    }
}
