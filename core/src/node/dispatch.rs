//! Which messages are accepted (version, addressee, cluster, sane counters), and the
//! handler each one goes to.

use super::ClusterCore;
use crate::error::Rejected;
use crate::membership::Entry;
use crate::message::{Envelope, Message, ProbeAck, ProbeState, MAX_COUNTER, PROTOCOL_VERSION};
use crate::time::Instant;
use tracing::{debug, warn};

impl ClusterCore {
    pub(super) fn on_message(&mut self, now: Instant, env: Envelope) -> Result<(), Rejected> {
        if let Err(r) = self.check_envelope(&env) {
            warn!(from = %env.from, addr = %env.from_addr, reason = %r, "message rejected");
            return Err(r);
        }
        let Envelope {
            from,
            from_addr,
            cluster,
            msg,
            ..
        } = env;
        if cluster.is_some() && cluster == self.hard.cluster {
            self.note_member_address(from, &from_addr);
        }
        match msg {
            // A node outside any cluster has no term to step up: a late reply from the
            // cluster it left (or junk) must not give it one, or its durable state
            // could not be restored and the next cluster it joins would inherit the
            // term (fuzzing found it; fuzz/README.md).
            Message::PreVoteReply(_) | Message::VoteReply(_) | Message::AppendReply(_)
                if self.hard.cluster.is_none() =>
            {
                debug!(%from, "reply to a member's message, and this node is in no cluster; ignored");
            }
            Message::Probe => self.on_probe(now, from, from_addr),
            Message::ProbeAck(ack) => self.on_probe_ack(now, from, from_addr, cluster, ack),
            Message::BootstrapRequest { round } => {
                self.on_bootstrap_request(now, from, from_addr, round)
            }
            Message::BootstrapReply { round, granted } => {
                self.on_bootstrap_reply(now, from, from_addr, round, granted)
            }
            Message::BootstrapWithdraw { round } => self.on_bootstrap_withdraw(from, round),
            Message::RecoveryRequest {
                round,
                last_index,
                last_term,
            } => self.on_recovery_request(
                now,
                from,
                from_addr,
                cluster,
                round,
                (last_term, last_index),
            ),
            Message::Join { name } => self.on_join(now, from, from_addr, name),
            Message::Leave => self.on_leave_request(now, from, from_addr),
            Message::NotLeader { leader } => self.on_not_leader(now, leader),
            Message::PreVote(req) => self.on_vote_request(now, from, from_addr, req, true),
            Message::Vote(req) => self.on_vote_request(now, from, from_addr, req, false),
            Message::PreVoteReply(r) => self.on_vote_reply(now, from, r, true),
            Message::VoteReply(r) => self.on_vote_reply(now, from, r, false),
            Message::Append(a) => self.on_append(now, from, from_addr, cluster, a),
            Message::Snapshot(s) => self.on_snapshot(now, from, from_addr, cluster, s),
            Message::SnapshotChunk(c) => self.on_snapshot_chunk(now, from, from_addr, cluster, c),
            Message::SnapshotChunkAck(a) => self.on_snapshot_chunk_ack(now, from, a),
            Message::AppendReply(r) => self.on_append_reply(now, from, r),
            Message::TimeoutNow { term } => self.on_timeout_now(now, term),
            Message::Roles(req) => self.on_roles_request(from, req),
            Message::StoreRequests { requests } => {
                self.on_store_requests(now, from, from_addr, requests)
            }
            Message::StoreReplies { replies } => self.on_store_replies(from, replies),
        }
        Ok(())
    }

    /// Refuses, without touching any state, a message this node must not act on.
    fn check_envelope(&self, env: &Envelope) -> Result<(), Rejected> {
        if env.version != PROTOCOL_VERSION {
            return Err(Rejected::Version(env.version));
        }
        if env.to.is_some_and(|to| to != self.me.id) {
            return Err(Rejected::NotForMe);
        }
        if env.from == self.me.id {
            return Err(Rejected::Invalid("message claims to come from this node"));
        }
        let informational = matches!(env.msg, Message::Probe | Message::ProbeAck(_));
        if let (Some(ours), Some(theirs), false) = (self.hard.cluster, env.cluster, informational) {
            if ours != theirs && !self.is_supported_successor(env.from, theirs, &env.msg) {
                return Err(Rejected::ForeignCluster { ours, theirs });
            }
        }
        if env.largest_counter() > MAX_COUNTER {
            return Err(Rejected::Invalid("term or index out of range"));
        }
        // The limits `Envelope::decode` checks, for an envelope that was not decoded.
        if let Err(crate::message::DecodeError::Invalid(why)) = env.check_limits() {
            return Err(Rejected::Invalid(why));
        }
        // Below MAX_COUNTER, `prev + 1 + i` cannot overflow.
        let contiguous = |prev: u64, entries: &[Entry]| {
            entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == prev + 1 + i as u64)
        };
        // Terms along a log never decrease, and no entry (nor a snapshot) is from a
        // term after the sender's: an honest leader's log is like that, and a node
        // that stored anything else would hold a log whose term is above its current
        // term, which breaks the election restriction and makes its durable state
        // unrestorable (fuzzing found it; FINDINGS in fuzz/README.md).
        let ordered = |mut prev: u64, entries: &[Entry], term: u64| {
            prev <= term
                && entries.iter().all(|e| {
                    let ok = prev <= e.term && e.term <= term;
                    prev = e.term;
                    ok
                })
        };
        match &env.msg {
            Message::Append(a) if !contiguous(a.prev_index, &a.entries) => {
                Err(Rejected::Invalid("append entries do not follow prev_index"))
            }
            Message::Snapshot(s) if !contiguous(s.snapshot.index, &s.entries) => Err(
                Rejected::Invalid("snapshot entries do not follow the snapshot"),
            ),
            Message::Append(a) if !ordered(a.prev_term, &a.entries, a.term) => Err(
                Rejected::Invalid("append terms decrease or exceed the leader's term"),
            ),
            Message::Snapshot(s) if !ordered(s.snapshot.term, &s.entries, s.term) => Err(
                Rejected::Invalid("snapshot terms decrease or exceed the leader's term"),
            ),
            Message::ProbeAck(ProbeAck {
                state:
                    ProbeState::Member {
                        term,
                        your_config: Some(c),
                        ..
                    },
                ..
            }) if c.term > *term => Err(Rejected::Invalid(
                "probe answer's configuration is from a later term than its own",
            )),
            // A fresh node may answer an append (asking for a snapshot), but only a
            // member of a cluster sends one.
            Message::Append(_)
            | Message::Snapshot(_)
            | Message::SnapshotChunk(_)
            | Message::TimeoutNow { .. }
                if env.cluster.is_none() =>
            {
                Err(Rejected::Invalid(
                    "replication message without a cluster id",
                ))
            }
            _ => Ok(()),
        }
    }
}
