//! Graceful leave (P8): a leader hands over first; every member then asks the leader
//! to remove it and finishes when the removal is committed.

use super::joining::MAX_REDIRECTS_PER_ROUND;
use super::role::RaftRole;
use super::timers::Timer;
use super::ClusterCore;
use crate::event::Command;
use crate::id::{Address, NodeId};
use crate::message::Message;
use crate::time::Instant;
use tracing::info;

/// A leave in progress (its deadline is [`Timer::Leave`]).
#[derive(Clone, Debug)]
pub(super) struct Leaving {
    /// Redirects followed since the last retry.
    redirects: u32,
    /// The latest handover attempt of this node as a leaving leader.
    handover: Option<Handover>,
}

/// One handover attempt: one `TimeoutNow`, sent in `term`.
#[derive(Clone, Copy, Debug)]
struct Handover {
    term: u64,
    /// Before this instant the attempt may still be running: its target may be a
    /// candidate whose vote requests have not reached this node yet, and a second
    /// `TimeoutNow` would start a rival transfer election in the same term (a split
    /// vote). The target's transfer candidacy lasts at most `election_timeout_max`;
    /// a leader that still leads its term after that heard of no such election.
    retry_at: Instant,
}

/// Where this node is in leaving.
#[derive(Clone, Debug, Default)]
pub(super) struct LeaveState {
    pub(super) leaving: Option<Leaving>,
    /// Finished: the node handles nothing more.
    pub(super) left: bool,
}

impl ClusterCore {
    pub(super) fn start_leave(&mut self, now: Instant) {
        if self.leave.leaving.is_some() {
            return;
        }
        let alone = self
            .log
            .committed()
            .members
            .keys()
            .all(|id| *id == self.me.id);
        if self.hard.cluster.is_none() || alone {
            info!("leaving: not in a cluster with others; done");
            if self.hard.cluster.is_some() {
                self.become_follower(now, self.hard.term, None);
            }
            self.finish_leave();
            return;
        }
        info!("leaving the cluster");
        self.leave.leaving = Some(Leaving {
            redirects: 0,
            handover: None,
        });
        self.timers.set(Timer::Leave, now + self.cfg.leave_timeout);
        if let Some(l) = self.role.leading_mut() {
            // Give the lease up first: from here on this node is never primary again,
            // which is what lets the successor skip leader stickiness.
            l.lease_revoked = true;
            self.hand_over(now);
        } else {
            self.retry_leave(now);
        }
    }

    /// Hands leadership over: one `TimeoutNow` per attempt, to a voter heard from
    /// recently that stores this leader's whole log (Raft thesis 3.10: a target that
    /// lacks an entry the leavers hold is refused by them and cannot win). With no
    /// such voter yet, it waits: every acknowledgement and every housekeeping round
    /// asks again. A new attempt is made only when the previous one has provably
    /// failed: this node still leads the term it sent in after the target's transfer
    /// candidacy would have ended. A leaving node that is elected again (it may hold
    /// the longest log) leads a new term, which is a new attempt.
    pub(super) fn hand_over(&mut self, now: Instant) {
        let Some(l) = self.role.leading() else {
            return;
        };
        let term = self.hard.term;
        let Some(leaving) = &self.leave.leaving else {
            return;
        };
        if leaving
            .handover
            .is_some_and(|h| h.term == term && now < h.retry_at)
        {
            return;
        }
        let last = self.log.last_index();
        // A voter known to be leaving refuses `TimeoutNow`: never a target.
        let leavers = &self.admin.leaves;
        let target = self
            .log
            .effective()
            .voters()
            .filter(|id| *id != self.me.id && !leavers.contains(id))
            .filter_map(|id| l.progress.get(&id).map(|p| (id, p)))
            .filter(|(_, p)| {
                p.matched >= last && p.heard_within(now, self.cfg.election_timeout_min)
            })
            .max_by_key(|(id, p)| (p.last_heard, core::cmp::Reverse(*id)))
            .map(|(id, _)| id);
        let Some(target) = target else {
            self.promote_successor(now);
            return;
        };
        let Some(addr) = self
            .log
            .effective()
            .members
            .get(&target)
            .map(|m| m.addr.clone())
        else {
            return;
        };
        info!(to = %target, "handing leadership over (TimeoutNow)");
        if let Some(leaving) = &mut self.leave.leaving {
            leaving.handover = Some(Handover {
                term,
                retry_at: now + self.cfg.election_timeout_max,
            });
        }
        self.send(addr, Some(target), Message::TimeoutNow { term });
    }

    /// Asks the current leader to remove this node (again).
    fn retry_leave(&mut self, now: Instant) {
        if self.role.is_leader() {
            // Still leader: the handover has not happened yet (no target was caught
            // up, or the attempt failed); `hand_over` decides whether to try now.
            self.hand_over(now);
            return;
        }
        if let Some((id, addr)) = self.role.leader.clone() {
            self.send(addr, Some(id), Message::Leave);
        }
    }

    /// The housekeeping round of a leaving node: retry.
    pub(super) fn leave_housekeeping(&mut self, now: Instant) {
        if let Some(l) = &mut self.leave.leaving {
            l.redirects = 0;
        }
        self.retry_leave(now);
    }

    /// A non-leader pointed at the leader: ask it instead (a bounded number of times
    /// per round).
    pub(super) fn follow_leave_redirect(&mut self, id: NodeId, addr: Address) {
        let Some(l) = &mut self.leave.leaving else {
            return;
        };
        if l.redirects < MAX_REDIRECTS_PER_ROUND {
            l.redirects += 1;
            self.send(addr, Some(id), Message::Leave);
        }
    }

    pub(super) fn finish_leave(&mut self) {
        if self.leave.left {
            return;
        }
        self.leave.left = true;
        self.leave.leaving = None;
        self.set_role(RaftRole::Follower);
        self.role.leader = None;
        self.timers.stop_all();
        self.out.commands.push_back(Command::LeaveFinished);
    }
}
