//! Electing a leader (P5): randomised timeouts, PreVote, leader stickiness, and the
//! handover path of `TimeoutNow` (P8).

use super::{ClusterCore, RaftRole};
use crate::id::{Address, NodeId};
use crate::message::{Message, VoteReply, VoteRequest};
use crate::time::Instant;
use std::collections::BTreeSet;
use tracing::{debug, info};

impl ClusterCore {
    /// Whether this node heard from a live leader less than the minimum election
    /// timeout ago; such a node refuses (pre-)votes (leader stickiness). A leader is
    /// its own live leader.
    pub(crate) fn heard_from_leader_recently(&self, now: Instant) -> bool {
        if matches!(self.role, RaftRole::Leader(_)) {
            return true;
        }
        self.leader.is_some()
            && self
                .last_leader_contact
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.election_timeout_min)
    }

    pub(crate) fn reset_election_timer(&mut self, now: Instant) {
        let t = self.random_election_timeout();
        self.election_deadline = now + t;
    }

    pub(crate) fn on_election_timeout(&mut self, now: Instant) {
        self.reset_election_timer(now);
        if self.leader.is_some() {
            info!(leader = ?self.leader.as_ref().map(|l| l.0), "no word from the leader within the election timeout");
        }
        // Every follower, voter or not, stops trusting a silent leader.
        self.leader = None;
        let me = self.me.id;
        if self.leaving.is_some() || !self.log.effective().is_voter(me) {
            return;
        }
        self.start_pre_vote(now);
    }

    fn start_pre_vote(&mut self, now: Instant) {
        debug!("starting pre-vote");
        let mut granted = BTreeSet::new();
        granted.insert(self.me.id);
        self.role = RaftRole::PreCandidate { granted };
        let req = VoteRequest {
            term: self.term + 1,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            transfer: false,
        };
        self.broadcast_to_voters(|| Message::PreVote(req.clone()));
        self.check_votes(now);
    }

    pub(crate) fn start_election(&mut self, now: Instant, transfer: bool) {
        self.term += 1;
        self.voted_for = Some(self.me.id);
        self.leader = None;
        self.reset_election_timer(now);
        info!(term = self.term, transfer, "starting election");
        let mut granted = BTreeSet::new();
        granted.insert(self.me.id);
        self.role = RaftRole::Candidate { granted };
        let req = VoteRequest {
            term: self.term,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            transfer,
        };
        self.broadcast_to_voters(|| Message::Vote(req.clone()));
        self.check_votes(now);
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

    pub(crate) fn on_vote_request(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        req: VoteRequest,
        pre: bool,
    ) {
        if self.cluster.is_none() {
            return;
        }
        let sticky = !req.transfer && self.heard_from_leader_recently(now);
        let up_to_date = self.log.is_up_to_date(req.last_index, req.last_term);
        let reply = if pre {
            let granted = req.term > self.term && up_to_date && !sticky;
            VoteReply {
                term: if granted { req.term } else { self.term },
                granted,
            }
        } else if sticky {
            // Ignore the term too: a live leader must not be disrupted (P5).
            VoteReply {
                term: self.term,
                granted: false,
            }
        } else {
            if req.term > self.term {
                self.become_follower(now, req.term, None);
            }
            // Granted without consulting this node's own configuration (Raft thesis
            // 4.2.2): a member promoted in the candidate's log may not know it yet,
            // and the candidate counts only the voters of its own configuration.
            let granted =
                req.term == self.term && self.voted_for.is_none_or(|v| v == from) && up_to_date;
            if granted {
                self.voted_for = Some(from);
                self.reset_election_timer(now);
                info!(candidate = %from, term = self.term, "vote granted");
            }
            VoteReply {
                term: self.term,
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

    pub(crate) fn on_vote_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        reply: VoteReply,
        pre: bool,
    ) {
        if reply.term > self.term && !reply.granted {
            self.become_follower(now, reply.term, None);
            return;
        }
        let voter = self.log.effective().is_voter(from);
        match &mut self.role {
            RaftRole::PreCandidate { granted }
                if pre && reply.granted && reply.term == self.term + 1 =>
            {
                if voter {
                    granted.insert(from);
                }
            }
            RaftRole::Candidate { granted } if !pre && reply.granted && reply.term == self.term => {
                if voter {
                    granted.insert(from);
                }
            }
            _ => return,
        }
        self.check_votes(now);
    }

    fn check_votes(&mut self, now: Instant) {
        let quorum = self.log.quorum();
        let voters = self.log.voters();
        let count = |g: &BTreeSet<NodeId>| {
            g.iter()
                .filter(|id| voters.binary_search(id).is_ok())
                .count()
        };
        match &self.role {
            RaftRole::PreCandidate { granted } if count(granted) >= quorum => {
                self.start_election(now, false);
            }
            RaftRole::Candidate { granted } if count(granted) >= quorum => {
                self.become_leader(now);
            }
            _ => {}
        }
    }

    pub(crate) fn on_timeout_now(&mut self, now: Instant, term: u64) {
        if term != self.term
            || matches!(self.role, RaftRole::Leader(_))
            || self.leaving.is_some()
            || !self.log.effective().is_voter(self.me.id)
        {
            return;
        }
        info!("leader handed over leadership (TimeoutNow)");
        self.start_election(now, true);
    }

    /// Steps down (or stays) as follower in `term`, following `leader` if known.
    pub(crate) fn become_follower(
        &mut self,
        now: Instant,
        term: u64,
        leader: Option<(NodeId, Address)>,
    ) {
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.leader = None;
        }
        if let RaftRole::Leader(_) = self.role {
            info!(term, "stepping down");
            self.leader = None;
            self.reset_election_timer(now);
        }
        if !matches!(self.role, RaftRole::Follower) {
            self.role = RaftRole::Follower;
        }
        if leader.is_some() {
            self.leader = leader;
        }
    }
}
