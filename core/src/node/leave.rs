//! Graceful leave (P8): a leader hands over first; every member then asks the leader
//! to remove it and finishes when the removal is committed.

use super::{ClusterCore, RaftRole};
use crate::event::Command;
use crate::id::NodeId;
use crate::message::Message;
use crate::time::Instant;
use tracing::info;

/// A leave in progress.
#[derive(Clone, Debug)]
pub(crate) struct Leaving {
    /// When to give up waiting and finish anyway.
    pub(crate) deadline: Instant,
    /// Redirects followed since the last retry.
    pub(crate) redirects: u32,
}

impl ClusterCore {
    pub(crate) fn start_leave(&mut self, now: Instant) {
        if self.leaving.is_some() {
            return;
        }
        let alone = self
            .log
            .committed()
            .members
            .keys()
            .all(|id| *id == self.me.id);
        if self.cluster.is_none() || alone {
            info!("leaving: not in a cluster with others; done");
            if self.cluster.is_some() {
                self.become_follower(now, self.term, None);
            }
            self.finish_leave();
            return;
        }
        info!("leaving the cluster");
        self.leaving = Some(Leaving {
            deadline: now + self.cfg.leave_timeout,
            redirects: 0,
        });
        if let RaftRole::Leader(l) = &mut self.role {
            // Give the lease up first: from here on this node is never primary again,
            // which is what lets the successor skip leader stickiness.
            l.lease_revoked = true;
            if let Some(target) = self.transfer_target(now) {
                info!(to = %target, "handing leadership over (TimeoutNow)");
                let addr = self
                    .log
                    .effective()
                    .members
                    .get(&target)
                    .map(|m| m.addr.clone());
                if let Some(addr) = addr {
                    self.send(addr, Some(target), Message::TimeoutNow { term: self.term });
                }
            }
        } else {
            self.retry_leave(now);
        }
    }

    /// The most up-to-date voter heard from recently.
    fn transfer_target(&self, now: Instant) -> Option<NodeId> {
        let RaftRole::Leader(l) = &self.role else {
            return None;
        };
        let cfg = self.log.effective();
        cfg.voters()
            .filter(|id| *id != self.me.id)
            .filter_map(|id| l.progress.get(&id).map(|p| (id, p)))
            .filter(|(_, p)| {
                now.saturating_duration_since(p.last_heard) < self.cfg.election_timeout_min
            })
            .max_by_key(|(id, p)| (p.matched, p.last_heard, core::cmp::Reverse(*id)))
            .map(|(id, _)| id)
    }

    /// Asks the current leader to remove this node (again).
    pub(crate) fn retry_leave(&mut self, now: Instant) {
        if let RaftRole::Leader(_) = self.role {
            // Still leader: the handover has not happened yet; try another target.
            if let Some(target) = self.transfer_target(now) {
                if let Some(m) = self.log.effective().members.get(&target) {
                    let addr = m.addr.clone();
                    self.send(addr, Some(target), Message::TimeoutNow { term: self.term });
                }
            }
            return;
        }
        if let Some((id, addr)) = self.leader.clone() {
            self.send(addr, Some(id), Message::Leave);
        }
    }

    pub(crate) fn finish_leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        self.leaving = None;
        self.role = RaftRole::Follower;
        self.leader = None;
        self.commands.push_back(Command::LeaveFinished);
    }
}
