//! Roles and terms: the one path every role change goes through (`set_role`), and
//! the transitions built on it, as etcd's `becomeFollower`/`reset`.
//!
//! State owned here: [`HardState`] (what Raft would persist: cluster, term, vote) and
//! [`RoleState`] (the Raft role, the leader followed, when it was last heard).

use super::leader::LeaderState;
use super::timers::Timer;
use super::ClusterCore;
use crate::id::{Address, ClusterId, NodeId};
use crate::log::Log;
use crate::membership::{Membership, Snapshot};
use crate::time::{duration_nanos, Instant};
use std::collections::BTreeSet;
use std::time::Duration;
use tracing::{debug, info};

/// What Raft keeps across restarts of a member: its cluster, its term and its vote
/// in that term. Changed only through the methods below.
#[derive(Clone, Debug, Default)]
pub(super) struct HardState {
    pub(super) cluster: Option<ClusterId>,
    pub(super) term: u64,
    pub(super) voted_for: Option<NodeId>,
}

impl HardState {
    /// Moves to a later term, with no vote cast in it yet.
    fn advance_to(&mut self, term: u64) {
        debug_assert!(term > self.term);
        self.term = term;
        self.voted_for = None;
    }
}

/// The Raft role.
#[derive(Clone, Debug)]
pub(super) enum RaftRole {
    Follower,
    PreCandidate { granted: BTreeSet<NodeId> },
    Candidate { granted: BTreeSet<NodeId> },
    Leader(Box<LeaderState>),
}

impl RaftRole {
    fn name(&self) -> &'static str {
        match self {
            RaftRole::Follower => "follower",
            RaftRole::PreCandidate { .. } => "pre-candidate",
            RaftRole::Candidate { .. } => "candidate",
            RaftRole::Leader(_) => "leader",
        }
    }
}

/// The role and the leader this node follows.
#[derive(Clone, Debug)]
pub(super) struct RoleState {
    pub(super) raft: RaftRole,
    /// The leader of the current term, once known (this node while it leads).
    pub(super) leader: Option<(NodeId, Address)>,
    /// When a leader's message was last accepted.
    pub(super) last_leader_contact: Option<Instant>,
    /// A member restored from its data directory refuses votes until then, as if it
    /// had just heard from a leader (P12).
    pub(super) refuse_votes_until: Option<Instant>,
}

impl Default for RoleState {
    fn default() -> Self {
        RoleState {
            raft: RaftRole::Follower,
            leader: None,
            last_leader_contact: None,
            refuse_votes_until: None,
        }
    }
}

impl RoleState {
    pub(super) fn is_leader(&self) -> bool {
        matches!(self.raft, RaftRole::Leader(_))
    }

    pub(super) fn leading(&self) -> Option<&LeaderState> {
        match &self.raft {
            RaftRole::Leader(l) => Some(l),
            _ => None,
        }
    }

    pub(super) fn leading_mut(&mut self) -> Option<&mut LeaderState> {
        match &mut self.raft {
            RaftRole::Leader(l) => Some(l),
            _ => None,
        }
    }
}

impl ClusterCore {
    /// The one place the Raft role is assigned. Timers that belong to a role start
    /// and stop here: leaving the leader role stops the heartbeat and lease timers,
    /// taking it stops the election timer.
    pub(super) fn set_role(&mut self, to: RaftRole) {
        let from = self.role.raft.name();
        if from != to.name() {
            debug!(from, to = to.name(), "raft role");
        }
        if self.role.is_leader() {
            self.fail_store_waiters(&to);
            self.timers.stop(Timer::Heartbeat);
            self.timers.stop(Timer::LeaseEnd);
        }
        if matches!(to, RaftRole::Leader(_)) {
            self.timers.stop(Timer::Election);
        }
        self.role.raft = to;
    }

    pub(super) fn random_election_timeout(&mut self) -> Duration {
        let lo = duration_nanos(self.cfg.election_timeout_min);
        let hi = duration_nanos(self.cfg.election_timeout_max);
        Duration::from_nanos(self.rng.range(lo, hi))
    }

    pub(super) fn reset_election_timer(&mut self, now: Instant) {
        let t = self.random_election_timeout();
        self.timers.set(Timer::Election, now + t);
    }

    /// Steps down (or stays) as follower in `term`, following `leader` if known.
    pub(super) fn become_follower(
        &mut self,
        now: Instant,
        term: u64,
        leader: Option<(NodeId, Address)>,
    ) {
        if term > self.hard.term {
            self.hard.advance_to(term);
            self.role.leader = None;
        }
        if self.role.is_leader() {
            info!(term, "stepping down");
            self.role.leader = None;
            self.reset_election_timer(now);
        }
        if !matches!(self.role.raft, RaftRole::Follower) {
            self.set_role(RaftRole::Follower);
        }
        if leader.is_some() {
            self.role.leader = leader;
        }
    }

    /// Starts a pre-vote: no term change, this node's own grant counted.
    pub(super) fn become_pre_candidate(&mut self) {
        let granted = BTreeSet::from([self.me.id]);
        self.set_role(RaftRole::PreCandidate { granted });
    }

    /// Starts an election in the next term, voting for itself.
    pub(super) fn become_candidate(&mut self, now: Instant) {
        self.hard.advance_to(self.hard.term + 1);
        self.hard.voted_for = Some(self.me.id);
        self.role.leader = None;
        self.reset_election_timer(now);
        let granted = BTreeSet::from([self.me.id]);
        self.set_role(RaftRole::Candidate { granted });
    }

    /// Records a vote granted to `candidate` in the current term.
    pub(super) fn record_vote(&mut self, candidate: NodeId) {
        self.hard.voted_for = Some(candidate);
    }

    /// Becomes a follower in `cluster` with the given committed configuration.
    pub(super) fn adopt_cluster(
        &mut self,
        now: Instant,
        cluster: ClusterId,
        term: u64,
        snap: &Snapshot,
        leader: Option<(NodeId, Address)>,
    ) {
        self.hard.cluster = Some(cluster);
        self.join.joining = None;
        self.clear_bootstrap();
        self.log.install(snap);
        if term > self.hard.term {
            self.hard.advance_to(term);
        }
        self.set_role(RaftRole::Follower);
        self.role.leader = leader.filter(|(id, _)| *id != self.me.id);
        self.reset_election_timer(now);
        self.out.members_dirty = true;
    }

    /// Forgets the cluster: back to a fresh node with the same id.
    pub(super) fn become_fresh(&mut self) {
        let empty = Snapshot {
            index: 0,
            term: 0,
            membership: Membership::default(),
            data: Default::default(),
        };
        // Terms and votes belong to the cluster left behind; the next cluster's terms
        // start afresh for this node (it has cast no vote in them).
        self.hard = HardState::default();
        self.log = Log::new(empty).keep_with_data(self.cfg.store_log_entries);
        self.store.fresh_at = None;
        self.snap_in.clear();
        self.set_role(RaftRole::Follower);
        self.role.leader = None;
        self.timers.stop(Timer::Election);
        self.role.last_leader_contact = None;
        self.clear_bootstrap();
        self.out.members_dirty = true;
    }
}
