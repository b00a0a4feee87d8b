//! Following: accepting a leader, storing what it sends, noticing a removal (P8).

use super::ClusterCore;
use crate::id::{Address, ClusterId, NodeId};
use crate::log::Match;
use crate::message::{Append, AppendReply, Message, SnapshotMsg};
use crate::time::Instant;
use tracing::{debug, info, warn};

impl ClusterCore {
    /// Common acceptance of a leader's message; `false` when it is stale.
    pub(super) fn accept_leader(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: &Address,
        term: u64,
    ) -> bool {
        if term < self.hard.term {
            return false;
        }
        if self.role.is_leader() && term == self.hard.term {
            warn!(other = %from, term, "another leader in this term; ignoring it");
            return false;
        }
        self.become_follower(now, term, Some((from, from_addr.clone())));
        self.role.last_leader_contact = Some(now);
        if self.boot.supports.is_some() {
            // The cluster has a leader after all: a recovery it supported is moot.
            info!("heard from a leader; support for a recovery released");
            self.clear_bootstrap();
        }
        self.reset_election_timer(now);
        true
    }

    pub(super) fn on_append(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        cluster: Option<ClusterId>,
        a: Append,
    ) {
        if self.hard.cluster.is_some() && cluster != self.hard.cluster {
            // The successor this node supports (let through by dispatch): ask for its
            // snapshot as a fresh node would, and keep this cluster's state until the
            // snapshot arrives, for its founder may die before sending it.
            let reply = AppendReply {
                term: a.term,
                success: false,
                index: 0,
                sent_at: a.sent_at,
                at: a.sent_at,
                released: Vec::new(),
            };
            self.send_in(None, from_addr, Some(from), Message::AppendReply(reply));
            return;
        }
        if self.hard.cluster.is_none() {
            // A fresh node has no log: ask for a snapshot, which it will judge.
            if self.may_adopt(cluster) {
                // The leader's term, so that the leader does not discard it as stale.
                self.refuse_append(from, from_addr, a.term, a.sent_at);
            }
            return;
        }
        if !self.accept_leader(now, from, &from_addr, a.term) {
            let term = self.hard.term;
            self.refuse_append(from, from_addr, term, a.sent_at);
            return;
        }
        let reply = match self.log.matches(a.prev_index, a.prev_term) {
            Match::Yes => {
                let before = self.log.effective().contains(self.me.id);
                self.log.append_from_leader(&a.entries);
                let verified = a.prev_index + a.entries.len() as u64;
                if self.log.commit_to(a.commit.min(verified)) {
                    self.out.members_dirty = true;
                }
                self.after_follower_update(before);
                // A hold renewal counts only if this log has everything the leader
                // had committed when it sent it: every grant that moved a role away
                // from this node is then in the table (P13).
                if self.log.commit_index() >= a.commit {
                    // Everything the leader had committed when it sent: data this
                    // fresh may be read locally (`Consistency::Local`).
                    self.store.fresh_at = Some(now);
                }
                if let Some(grant) = a.hold.filter(|_| a.commit <= verified) {
                    self.take_hold(now, grant);
                }
                // Let go of roles asked back before answering, so that this reply
                // confirms the release (the handover gap is then two round trips).
                self.refresh_roles(now);
                AppendReply {
                    term: self.hard.term,
                    success: true,
                    index: verified,
                    sent_at: a.sent_at,
                    at: now,
                    released: self.released_roles(),
                }
            }
            Match::No { hint } => {
                debug!(
                    prev = a.prev_index,
                    hint, "append does not match; asking for earlier entries"
                );
                AppendReply {
                    term: self.hard.term,
                    success: false,
                    index: hint,
                    sent_at: a.sent_at,
                    at: now,
                    released: Vec::new(),
                }
            }
        };
        self.send(from_addr, Some(from), Message::AppendReply(reply));
    }

    /// Answers an append or snapshot it will not store, asking the sender to start
    /// over from the beginning (or, with a higher term, to step down).
    pub(super) fn refuse_append(&mut self, to: NodeId, addr: Address, term: u64, sent_at: Instant) {
        let reply = AppendReply {
            term,
            success: false,
            index: 0,
            sent_at,
            at: sent_at,
            released: Vec::new(),
        };
        self.send(addr, Some(to), Message::AppendReply(reply));
    }

    pub(super) fn may_adopt(&self, cluster: Option<ClusterId>) -> bool {
        cluster.is_some() && (self.join.joining == cluster || self.boot.supports.is_some())
    }

    pub(super) fn on_snapshot(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        cluster: Option<ClusterId>,
        s: SnapshotMsg,
    ) {
        if self.hard.cluster.is_some() && cluster != self.hard.cluster {
            self.move_to_successor(cluster); // let through by dispatch
        }
        if self.hard.cluster.is_none() {
            let Some(cluster) = cluster else {
                return;
            };
            if self.was_replaced(cluster) {
                debug!(%cluster, "snapshot from a cluster this node left; ignored");
                return;
            }
            let mut m = s.snapshot.membership.clone();
            for e in &s.entries {
                m.apply(&e.change);
            }
            let listed = m.contains(self.me.id) || s.snapshot.membership.contains(self.me.id);
            if !(listed || self.join.joining == Some(cluster)) {
                debug!(%cluster, "snapshot from a cluster this node did not ask to join; ignored");
                return;
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
            let term = self.hard.term;
            self.refuse_append(from, from_addr, term, s.sent_at);
            return;
        }
        let before = self.log.effective().contains(self.me.id);
        if self.log.install(&s.snapshot) {
            self.out.members_dirty = true;
        }
        self.log.append_from_leader(&s.entries);
        self.after_follower_update(before);
        let index = s.snapshot.index + s.entries.len() as u64;
        let reply = AppendReply {
            term: self.hard.term,
            success: true,
            index,
            sent_at: s.sent_at,
            at: now,
            released: self.released_roles(),
        };
        self.send(from_addr, Some(from), Message::AppendReply(reply));
    }

    /// After a follower's configuration changed: notice removal (P8).
    fn after_follower_update(&mut self, was_member: bool) {
        let in_committed = self.log.committed().contains(self.me.id);
        if self.leave.leaving.is_some()
            && !in_committed
            && !self.log.effective().contains(self.me.id)
        {
            info!("removal committed; leave finished");
            self.finish_leave();
            return;
        }
        if was_member && !self.log.effective().contains(self.me.id) {
            info!("this node was removed from the configuration; it will ask to rejoin");
        }
    }
}
