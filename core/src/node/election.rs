//! Electing a leader (P5): randomised timeouts, PreVote, leader stickiness, and the
//! handover path of `TimeoutNow` (P8).

use super::role::RaftRole;
use super::ClusterCore;
use crate::id::{Address, NodeId};
use crate::log::Log;
use crate::message::{Message, VoteReply, VoteRequest};
use crate::time::Instant;
use std::collections::BTreeSet;
use tracing::{debug, info};

impl ClusterCore {
    /// Whether this node heard from a live leader less than the minimum election
    /// timeout ago; such a node refuses (pre-)votes (leader stickiness). A leader is
    /// its own live leader; a member restored from its data directory counts as
    /// having heard from one at its restart.
    fn heard_from_leader_recently(&self, now: Instant) -> bool {
        if self.role.is_leader() || self.role.refuse_votes_until.is_some_and(|t| now < t) {
            return true;
        }
        self.role.leader.is_some()
            && self
                .role
                .last_leader_contact
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.election_timeout_min)
    }

    pub(super) fn on_election_timeout(&mut self, now: Instant) {
        self.reset_election_timer(now);
        if self.role.leader.is_some() {
            info!(leader = ?self.role.leader.as_ref().map(|l| l.0), "no word from the leader within the election timeout");
        }
        // Every follower, voter or not, stops trusting a silent leader.
        self.role.leader = None;
        // A leaving voter campaigns too: until its removal commits it is a voter, and
        // it may hold entries the others lack (its own removal, uncommitted), so they
        // cannot win without its vote and it refuses them. If elected it never
        // becomes primary and hands over at once (`become_leader`, `hand_over`); a
        // leaver that only waited would stall the cluster until its leave timed out,
        // and for good if that left too few voters (simulation leave-during-election
        // seed 10102).
        if !self.log.effective().is_voter(self.me.id) {
            return;
        }
        if self.supports_recovery() {
            return; // it abstains from this cluster's elections (P11)
        }
        debug!("starting pre-vote");
        self.become_pre_candidate();
        let req = self.vote_request(self.hard.term + 1, false);
        self.broadcast_to_voters(|| Message::PreVote(req.clone()));
        self.check_votes(now);
    }

    fn start_election(&mut self, now: Instant, transfer: bool) {
        self.become_candidate(now);
        info!(term = self.hard.term, transfer, "starting election");
        let req = self.vote_request(self.hard.term, transfer);
        self.broadcast_to_voters(|| Message::Vote(req.clone()));
        self.check_votes(now);
    }

    fn vote_request(&self, term: u64, transfer: bool) -> VoteRequest {
        VoteRequest {
            term,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            transfer,
        }
    }

    fn broadcast_to_voters(&mut self, msg: impl Fn() -> Message) {
        let voters: Vec<(NodeId, Address)> = self
            .log
            .effective()
            .members
            .iter()
            .filter(|(id, m)| m.voter && **id != self.me.id)
            .map(|(id, m)| (*id, m.addr.clone()))
            .collect();
        for (id, addr) in voters {
            self.send(addr, Some(id), msg());
        }
    }

    pub(super) fn on_vote_request(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        req: VoteRequest,
        pre: bool,
    ) {
        if self.hard.cluster.is_none() {
            return;
        }
        // A member that supports a recovery abstains (P11): the cluster it would elect
        // a leader of is being replaced.
        let sticky =
            (!req.transfer && self.heard_from_leader_recently(now)) || self.supports_recovery();
        let up_to_date = self.log.is_up_to_date(req.last_index, req.last_term);
        let reply = if pre {
            let granted = req.term > self.hard.term && up_to_date && !sticky;
            VoteReply {
                term: if granted { req.term } else { self.hard.term },
                granted,
            }
        } else if sticky {
            // Ignore the term too: a live leader must not be disrupted (P5).
            VoteReply {
                term: self.hard.term,
                granted: false,
            }
        } else {
            if req.term > self.hard.term {
                self.become_follower(now, req.term, None);
            }
            // Granted without consulting this node's own configuration (Raft thesis
            // 4.2.2): a member promoted in the candidate's log may not know it yet,
            // and the candidate counts only the voters of its own configuration.
            let granted = req.term == self.hard.term
                && self.hard.voted_for.is_none_or(|v| v == from)
                && up_to_date;
            if granted {
                self.record_vote(from);
                self.reset_election_timer(now);
                info!(candidate = %from, term = self.hard.term, "vote granted");
            }
            VoteReply {
                term: self.hard.term,
                granted,
            }
        };
        debug!(pre, candidate = %from, granted = reply.granted, "answering vote request");
        let msg = if pre {
            Message::PreVoteReply(reply)
        } else {
            Message::VoteReply(reply)
        };
        self.send(from_addr, Some(from), msg);
    }

    pub(super) fn on_vote_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        reply: VoteReply,
        pre: bool,
    ) {
        let term = self.hard.term;
        if reply.term > term && !reply.granted {
            self.become_follower(now, reply.term, None);
            return;
        }
        let voter = self.log.effective().is_voter(from);
        let counts = match &mut self.role.raft {
            RaftRole::PreCandidate { granted }
                if pre && reply.granted && reply.term == term + 1 =>
            {
                granted
            }
            RaftRole::Candidate { granted } if !pre && reply.granted && reply.term == term => {
                granted
            }
            _ => return,
        };
        if voter {
            counts.insert(from);
        }
        self.check_votes(now);
    }

    /// Moves on once a majority of the configuration's voters granted: from
    /// pre-candidate to candidate, from candidate to leader.
    fn check_votes(&mut self, now: Instant) {
        match &self.role.raft {
            RaftRole::PreCandidate { granted } if has_majority(&self.log, granted) => {
                self.start_election(now, false);
            }
            RaftRole::Candidate { granted } if has_majority(&self.log, granted) => {
                self.become_leader(now);
            }
            _ => {}
        }
    }

    pub(super) fn on_timeout_now(&mut self, now: Instant, term: u64) {
        if term != self.hard.term
            || self.role.is_leader()
            || self.leave.leaving.is_some()
            || !self.log.effective().is_voter(self.me.id)
        {
            return;
        }
        info!("leader handed over leadership (TimeoutNow)");
        self.start_election(now, true);
    }
}

/// Whether the voters among `granted` are a majority of `log`'s configuration.
fn has_majority(log: &Log, granted: &BTreeSet<NodeId>) -> bool {
    let voters = log.voters();
    let count = granted
        .iter()
        .filter(|id| voters.binary_search(id).is_ok())
        .count();
    count >= log.quorum()
}
