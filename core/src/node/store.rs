//! The key-value store's requests: forwarding to the primary, appending writes,
//! confirming linearizable reads with a majority (ReadIndex), serving lease and local
//! reads, and answering each request exactly once.
//!
//! A request comes from the application of this node ([`Waiter::Local`], answered
//! with `Command::StoreReply`) or from another member that forwarded it here
//! ([`Waiter::Remote`], answered in a `Message::StoreReplies`). Only the leader appends
//! writes and confirms reads; it keeps the waiters in [`LeaderStore`], which lives in
//! the leader role, so stepping down answers them all (a write "maybe committed", a
//! read "no primary": retrying either is safe).
//!
//! Forwarding (P14): a follower sends its application's requests to the leader it
//! follows in batches (`Message::StoreRequests`), with at most
//! [`MAX_BATCHES_IN_FLIGHT`] batches unanswered; requests that arrive meanwhile wait
//! and go together in the next one. The leader gathers the answers each input
//! produces for a member into one `Message::StoreReplies`. When the leader followed
//! changes, waiting requests go to the new one at once (this node serves them
//! itself if it now leads); when it has none, they are answered at once.

use super::role::RaftRole;
use super::timers::Timer;
use super::ClusterCore;
use crate::event::Command;
use crate::id::{Address, NodeId};
use crate::membership::Change;
use crate::message::{Message, MAX_STORE_BATCH, STORE_BATCH_BYTES};
use crate::store::{
    Consistency, DataEntry, Read, ReadAnswer, StoreAnswer, StoreError, StoreRequest,
};
use crate::time::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tracing::debug;

/// The most batches of forwarded requests a follower keeps unanswered at once. A
/// batch stops counting once the leader answered one of its requests (the leader
/// handles a batch in one go, so it has them all), once the leader changes, or
/// `heartbeat_interval` after it was sent (a lost message holds nothing up for
/// longer). Two rather than one: the requests of the clients answered by one batch
/// then go while the other batch is still out, instead of waiting a whole round.
pub(super) const MAX_BATCHES_IN_FLIGHT: usize = 2;

type StoreResult = Result<StoreAnswer, StoreError>;

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

/// A request this node forwards to the leader and still waits for.
#[derive(Clone, Debug)]
struct Forwarded {
    deadline: Instant,
    /// Kept to send it again to the next leader.
    request: StoreRequest,
    /// Sent to the leader followed now ([`StoreState::target`]) in batch `batch`;
    /// false while it waits to be sent.
    sent: bool,
    /// Sent to some leader at least once: a write may have been appended.
    tried: bool,
    batch: u64,
}

impl Forwarded {
    /// The answer when giving up on it: a write that reached a leader may have
    /// committed; anything else changed nothing.
    fn give_up(&self) -> StoreError {
        if self.tried && is_write(&self.request) {
            StoreError::MaybeCommitted
        } else {
            StoreError::NoPrimary
        }
    }
}

/// A batch sent and not answered yet.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    batch: u64,
    /// When it stops counting as in flight even without an answer.
    until: Instant,
}

/// The store state every node keeps.
#[derive(Clone, Debug, Default)]
pub(super) struct StoreState {
    forwarded: BTreeMap<u64, Forwarded>,
    /// Ids of forwarded requests waiting to be sent, in order (some may have been
    /// answered meanwhile: skipped when met).
    unsent: VecDeque<u64>,
    /// The leader the sent requests went to. Whenever requests are forwarded, it is
    /// the leader followed after each input.
    target: Option<NodeId>,
    in_flight: Vec<InFlight>,
    /// Batches numbered so far.
    batches: u64,
    /// Answers to other members' requests made during this input, sent together at
    /// its end.
    replies: BTreeMap<NodeId, (Address, Vec<(u64, StoreResult)>)>,
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

/// Bytes a request adds to a `StoreRequests` message, at most (its id included).
fn request_len(request: &StoreRequest) -> usize {
    match request {
        StoreRequest::Register => 16,
        // The id, the client, sequence and `acked_below` (varints of at most 10
        // bytes), a compare-and-swap's expected revision, tags and lengths.
        StoreRequest::Write(w) => 64 + w.op.key().len() + w.op.value().map_or(0, <[u8]>::len),
        StoreRequest::Read { read, .. } => {
            48 + match read {
                Read::Get { key } => key.len(),
                Read::Range { prefix, .. } => prefix.len(),
            }
        }
    }
}

/// Bytes an answer adds to a `StoreReplies` message, at most (its id included).
fn answer_len(result: &StoreResult) -> usize {
    let versioned = |v: &crate::store::Versioned| 32 + v.value.len();
    48 + match result {
        Ok(StoreAnswer::Read { answer, .. }) => match answer {
            ReadAnswer::Get(v) => v.as_ref().map_or(0, versioned),
            ReadAnswer::Range { entries, .. } => entries
                .iter()
                .map(|(k, v)| 8 + k.len() + versioned(v))
                .sum(),
        },
        Err(StoreError::Invalid(why) | StoreError::NotCommitted(why)) => why.len(),
        _ => 0,
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
            if self.lead_store_request(now, Waiter::Local(id), request) {
                self.replicate_store_entries(now);
            }
            return;
        }
        match &self.role.leader {
            Some((leader, _)) if *leader != self.me.id => {
                // Sent at the end of this input (`flush_store`), with any others
                // waiting, unless too many batches are out already.
                let deadline = now + self.cfg.store_request_timeout;
                self.store.forwarded.insert(
                    id,
                    Forwarded {
                        deadline,
                        request,
                        sent: false,
                        tried: false,
                        batch: 0,
                    },
                );
                self.store.unsent.push_back(id);
            }
            _ => self.answer_store(Waiter::Local(id), Err(StoreError::NoPrimary)),
        }
    }

    /// Requests another member forwarded to this node as leader.
    pub(super) fn on_store_requests(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        requests: Vec<(u64, StoreRequest)>,
    ) {
        let member = self.log.committed().contains(from);
        if !member && self.role.is_leader() {
            debug!(%from, "store requests from a non-member; refused");
        }
        let mut appended = false;
        for (id, request) in requests {
            let waiter = Waiter::Remote {
                node: from,
                addr: from_addr.clone(),
                id,
            };
            let refused = if !self.role.is_leader() {
                // Nothing was appended here: the sender may retry with the next leader.
                // Checked before membership: only a leader's committed membership is
                // current (a member restarted with its data knows only its base's
                // until a leader tells it the commit: FINDINGS #17).
                Some(StoreError::NoPrimary)
            } else if !member {
                Some(StoreError::NotCommitted(
                    "the sender is not a member".into(),
                ))
            } else if matches!(
                request,
                StoreRequest::Read {
                    consistency: Consistency::Local { .. },
                    ..
                }
            ) {
                Some(StoreError::Invalid("a local read is not forwarded".into()))
            } else {
                precheck(&request).err()
            };
            match refused {
                Some(e) => self.answer_store(waiter, Err(e)),
                None => appended |= self.lead_store_request(now, waiter, request),
            }
        }
        // The whole batch's entries go in one append.
        if appended {
            self.replicate_store_entries(now);
        }
    }

    /// The leader's answers to requests this node forwarded.
    pub(super) fn on_store_replies(&mut self, from: NodeId, replies: Vec<(u64, StoreResult)>) {
        for (id, result) in replies {
            let Some(f) = self.store.forwarded.get(&id) else {
                debug!(%from, id, "store answer for no waiting request (late or foreign); ignored");
                continue;
            };
            let from_target = f.sent && self.store.target == Some(from);
            if result.is_err() && !from_target {
                // A leader this request no longer waits on gave up on it (it stepped
                // down): the request went to the next leader, which will answer. A
                // success from it stands: it committed or was served.
                debug!(%from, id, "store error from an earlier leader; the request went on");
                continue;
            }
            if from_target {
                let batch = f.batch;
                self.store.in_flight.retain(|b| b.batch != batch);
            }
            self.store.forwarded.remove(&id);
            self.out
                .commands
                .push_back(Command::StoreReply { id, result });
        }
    }

    /// After every input: when the leader followed is no longer the one the waiting
    /// forwarded requests went to, they go to the new leader (sent again at the end of
    /// this input), or to this node if it leads now; with no leader they are answered
    /// now. Sending a request again is safe: a write carries its session and number,
    /// so a second copy in the log is not applied again (P14, exactly once), and a
    /// read or registration changes no data.
    pub(super) fn follow_store_leader(&mut self, now: Instant) {
        if self.store.forwarded.is_empty() {
            return;
        }
        let leader = self
            .role
            .leader
            .as_ref()
            .map(|(id, _)| *id)
            .filter(|_| self.hard.cluster.is_some() && !self.leave.left);
        if leader.is_some() && leader == self.store.target {
            return;
        }
        self.store.in_flight.clear();
        match leader {
            Some(l) if l != self.me.id => {
                debug!(leader = %l, "the leader changed; forwarded requests go to it");
                self.store.target = Some(l);
                let resend: Vec<u64> = self
                    .store
                    .forwarded
                    .iter_mut()
                    .filter(|(_, f)| f.sent)
                    .map(|(id, f)| {
                        f.sent = false;
                        *id
                    })
                    .collect();
                // Ahead of those not sent yet, in order.
                for id in resend.into_iter().rev() {
                    self.store.unsent.push_front(id);
                }
            }
            lead => {
                self.store.target = None;
                self.store.unsent.clear();
                let pending = std::mem::take(&mut self.store.forwarded);
                if lead == Some(self.me.id) && self.role.is_leader() {
                    debug!(
                        count = pending.len(),
                        "leading now; serving the forwarded requests here"
                    );
                    let mut appended = false;
                    for (id, f) in pending {
                        appended |= self.lead_store_request(now, Waiter::Local(id), f.request);
                    }
                    if appended {
                        self.replicate_store_entries(now);
                    }
                } else {
                    debug!(
                        count = pending.len(),
                        "no leader; forwarded requests answered"
                    );
                    for (id, f) in pending {
                        self.answer_store(Waiter::Local(id), Err(f.give_up()));
                    }
                }
            }
        }
    }

    /// At the end of every input: sends the next batch of forwarded requests if
    /// fewer than [`MAX_BATCHES_IN_FLIGHT`] are out, sends the answers this input
    /// made for other members, and sets the store timer.
    pub(super) fn flush_store(&mut self, now: Instant) {
        if self.store.in_flight.len() < MAX_BATCHES_IN_FLIGHT && !self.store.unsent.is_empty() {
            self.send_forwarded(now);
        }
        if !self.store.replies.is_empty() {
            self.send_store_replies();
        }
        let next = self
            .store
            .forwarded
            .values()
            .map(|f| f.deadline)
            .chain(self.store.in_flight.iter().map(|b| b.until))
            .min();
        match next {
            Some(at) => self.timers.set(Timer::Store, at),
            None => self.timers.stop(Timer::Store),
        }
    }

    /// One batch of the waiting requests, bounded by [`MAX_STORE_BATCH`] and
    /// [`STORE_BATCH_BYTES`], to the leader followed.
    fn send_forwarded(&mut self, now: Instant) {
        let Some((leader, addr)) = self.role.leader.clone() else {
            return;
        };
        if leader == self.me.id || self.store.target != Some(leader) {
            return; // `follow_store_leader` has not run: not reached
        }
        let batch = self.store.batches + 1;
        let mut requests = Vec::new();
        let mut bytes = 0;
        while let Some(&id) = self.store.unsent.front() {
            let Some(f) = self.store.forwarded.get_mut(&id).filter(|f| !f.sent) else {
                self.store.unsent.pop_front();
                continue;
            };
            let len = request_len(&f.request);
            if !requests.is_empty()
                && (requests.len() >= MAX_STORE_BATCH || bytes + len > STORE_BATCH_BYTES)
            {
                break;
            }
            bytes += len;
            f.sent = true;
            f.tried = true;
            f.batch = batch;
            requests.push((id, f.request.clone()));
            self.store.unsent.pop_front();
        }
        if requests.is_empty() {
            return;
        }
        self.store.batches = batch;
        self.store.in_flight.push(InFlight {
            batch,
            until: now + self.cfg.heartbeat_interval,
        });
        self.send(addr, Some(leader), Message::StoreRequests { requests });
    }

    /// The answers gathered for each member, in batches bounded by [`MAX_STORE_BATCH`]
    /// and [`STORE_BATCH_BYTES`] (a single answer may exceed the latter: a range read
    /// of the whole store, under 1 MiB by [`MAX_STORE_BYTES`](crate::store::MAX_STORE_BYTES)).
    fn send_store_replies(&mut self) {
        for (node, (addr, answers)) in std::mem::take(&mut self.store.replies) {
            let mut replies = Vec::new();
            let mut bytes = 0;
            for (id, result) in answers {
                let len = answer_len(&result);
                if !replies.is_empty()
                    && (replies.len() >= MAX_STORE_BATCH || bytes + len > STORE_BATCH_BYTES)
                {
                    let full = std::mem::take(&mut replies);
                    self.send(
                        addr.clone(),
                        Some(node),
                        Message::StoreReplies { replies: full },
                    );
                    bytes = 0;
                }
                bytes += len;
                replies.push((id, result));
            }
            if !replies.is_empty() {
                self.send(addr, Some(node), Message::StoreReplies { replies });
            }
        }
    }

    /// Takes a request as leader; returns whether it appended an entry (then call
    /// [`replicate_store_entries`](Self::replicate_store_entries), once for a batch).
    fn lead_store_request(&mut self, now: Instant, waiter: Waiter, request: StoreRequest) -> bool {
        let term = self.hard.term;
        match request {
            StoreRequest::Register => {
                let index = self.log.push(term, Change::Data(DataEntry::Register));
                self.wait_for_entry(index, waiter);
                true
            }
            StoreRequest::Write(w) => {
                if let Some(saved) = self.log.data().saved_outcome(w.client, w.seq) {
                    // A retry of a committed write: its outcome, without a new entry.
                    let answer = Ok(StoreAnswer::Written(saved.clone()));
                    self.answer_store(waiter, answer);
                    return false;
                }
                let index = self.log.push(term, Change::Data(DataEntry::Write(w)));
                self.wait_for_entry(index, waiter);
                true
            }
            StoreRequest::Read { read, consistency } => {
                if consistency == Consistency::Lease
                    && self.lease_valid(now)
                    && self.committed_in_term()
                {
                    let answer = self.read_now(&read);
                    self.answer_store(waiter, Ok(answer));
                    return false;
                }
                let Some(l) = self.role.leading_mut() else {
                    return false;
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
                false
            }
        }
    }

    fn wait_for_entry(&mut self, index: u64, waiter: Waiter) {
        if let Some(l) = self.role.leading_mut() {
            l.store.writes.entry(index).or_default().push(waiter);
            l.store.last_data_index = index;
        }
    }

    /// After appending store entries: commits them at once with a single voter, and
    /// sends them to every follower with nothing in flight.
    fn replicate_store_entries(&mut self, now: Instant) {
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

    /// Forwarded requests past their deadline (a write that reached a leader may
    /// have committed, anything else changed nothing), and batches out for too long.
    /// The timer is set again at the end of the input (`flush_store`).
    pub(super) fn on_store_timer(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .store
            .forwarded
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(f) = self.store.forwarded.remove(&id) {
                self.answer_store(Waiter::Local(id), Err(f.give_up()));
            }
        }
        self.store.in_flight.retain(|b| b.until > now);
    }

    fn answer_store(&mut self, waiter: Waiter, result: Result<StoreAnswer, StoreError>) {
        match waiter {
            Waiter::Local(id) => self
                .out
                .commands
                .push_back(Command::StoreReply { id, result }),
            // Sent with the other answers of this input (`flush_store`).
            Waiter::Remote { node, addr, id } => {
                let (to, answers) = self
                    .store
                    .replies
                    .entry(node)
                    .or_insert_with(|| (addr.clone(), Vec::new()));
                *to = addr;
                answers.push((id, result));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{answer_len, request_len, StoreResult};
    use crate::id::{Address, NodeId};
    use crate::message::{Envelope, Message, MAX_FRAME_LEN, PROTOCOL_VERSION, STORE_BATCH_BYTES};
    use crate::store::{
        ClientId, Consistency, Read, ReadAnswer, StoreAnswer, StoreRequest, Versioned, Write,
        WriteOp, MAX_KEY_LEN, MAX_VALUE_LEN,
    };

    fn frame_len(msg: Message) -> usize {
        Envelope {
            version: PROTOCOL_VERSION,
            cluster: Some(crate::id::ClusterId(u128::MAX)),
            from: NodeId(u128::MAX),
            from_addr: Address::new("a".repeat(253)),
            to: Some(NodeId(u128::MAX)),
            msg,
        }
        .encode()
        .len()
    }

    /// The batch budget holds: each request's and answer's estimate is at least its
    /// encoded size, and the largest batch a sender makes (the budget filled with the
    /// largest requests, or one range answer of the whole store plus the budget)
    /// encodes under the frame limit.
    #[test]
    fn the_estimates_bound_the_encoded_size_and_batches_fit_a_frame() {
        let write = StoreRequest::Write(Write {
            client: ClientId(u64::MAX),
            seq: u64::MAX,
            acked_below: u64::MAX,
            op: WriteOp::CompareAndSwap {
                key: "k".repeat(MAX_KEY_LEN),
                expected: u64::MAX,
                value: vec![7; MAX_VALUE_LEN],
            },
        });
        let read = StoreRequest::Read {
            read: Read::Range {
                prefix: "p".repeat(MAX_KEY_LEN),
                limit: u32::MAX,
            },
            consistency: Consistency::Linearizable,
        };
        let empty = frame_len(Message::StoreRequests {
            requests: vec![(0, StoreRequest::Register)],
        });
        for r in [write.clone(), read, StoreRequest::Register] {
            let one = frame_len(Message::StoreRequests {
                requests: vec![(u64::MAX, r.clone()), (u64::MAX, r.clone())],
            });
            assert!(one - empty <= 2 * request_len(&r), "{r:?}");
        }
        let n = STORE_BATCH_BYTES / request_len(&write) + 1;
        let full = frame_len(Message::StoreRequests {
            requests: vec![(u64::MAX, write); n],
        });
        assert!(full < MAX_FRAME_LEN, "{full}");

        // The largest range answer: entries of the largest values up to the answer's
        // limit, and the one that passes it.
        let key_len = 8;
        let count = crate::store::MAX_RANGE_ANSWER_BYTES / (key_len + MAX_VALUE_LEN) + 1;
        let v = Versioned {
            value: vec![7; MAX_VALUE_LEN],
            revision: u64::MAX,
            created: u64::MAX,
        };
        let range: StoreResult = Ok(StoreAnswer::Read {
            answer: ReadAnswer::Range {
                entries: (0..count).map(|i| (format!("{i:08}"), v.clone())).collect(),
                more: false,
            },
            revision: u64::MAX,
        });
        let one = frame_len(Message::StoreReplies {
            replies: vec![(u64::MAX, range.clone())],
        });
        assert!(one <= answer_len(&range) + 400, "{one}");
        let big = (u64::MAX, range);
        let mut replies = vec![big.clone()];
        // The budget spent on further answers after a first large one.
        let small = (u64::MAX, Err(crate::store::StoreError::MaybeCommitted));
        replies.extend(vec![small; STORE_BATCH_BYTES / 48]);
        let full = frame_len(Message::StoreReplies { replies });
        assert!(full < MAX_FRAME_LEN, "{full}");
    }
}
