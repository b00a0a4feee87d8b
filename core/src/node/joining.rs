//! Joining an existing cluster, and the periodic housekeeping that retries it (and
//! probing, leaving, bootstrapping) once per `probe_interval`.

use super::timers::Timer;
use super::ClusterCore;
use crate::id::{Address, ClusterId, NodeId};
use crate::message::Message;
use crate::time::Instant;
use tracing::{info, warn};

/// The most `NotLeader` redirects a node follows between two housekeeping rounds (for
/// a join or a leave), so that two nodes pointing at each other cannot loop.
pub(super) const MAX_REDIRECTS_PER_ROUND: u32 = 8;
/// A joiner gives up on a cluster none of whose members answered a probe for this
/// many bootstrap timeouts (every member was replaced at once).
const JOIN_ABANDON_BOOTSTRAP_TIMEOUTS: u32 = 2;
/// A member that heard from no leader for this many maximum election timeouts asks
/// to join again, in case it was removed while it was away.
const REJOIN_QUIET_ELECTION_TIMEOUTS: u32 = 4;

/// A joiner's bookkeeping.
#[derive(Clone, Debug, Default)]
pub(super) struct Joiner {
    /// A cluster this node asked to join.
    pub(super) joining: Option<ClusterId>,
    /// Where a joiner sends its join.
    hint: Option<(NodeId, Address)>,
    /// Redirects followed since the last housekeeping round.
    redirects: u32,
    /// When a member of the cluster being joined last answered a probe.
    pub(super) member_seen_at: Option<Instant>,
}

impl ClusterCore {
    pub(super) fn housekeeping(&mut self, now: Instant) {
        self.join.redirects = 0;
        self.forget_unlisted_peers(now);
        if self.leave.leaving.is_some() {
            self.leave_housekeeping(now);
            return;
        }
        if self.hard.cluster.is_none() {
            self.probe_round(now);
            // A cluster none of whose members has answered for a while is gone (every
            // member was replaced at once): stop waiting to join it.
            let abandon = self.cfg.bootstrap_timeout * JOIN_ABANDON_BOOTSTRAP_TIMEOUTS;
            if self.join.joining.is_some()
                && self
                    .join
                    .member_seen_at
                    .is_none_or(|t| now.saturating_duration_since(t) > abandon)
            {
                warn!(cluster = ?self.join.joining, "no member of the cluster being joined answers; giving up on it");
                self.join.joining = None;
                self.join.hint = None;
            }
            self.release_gone_candidate(now);
            self.resend_grant();
            if let (Some(_), Some((id, addr))) = (self.join.joining, self.join.hint.clone()) {
                self.send_join(id, addr);
            } else if now >= self.boot.next_eval {
                self.evaluate_bootstrap(now);
            }
            return;
        }
        if self.orphaned(now) {
            self.probe_round(now);
        }
        let log = &self.log;
        self.peers.retain_routes(|id| log.effective().contains(id));
        self.recovery_housekeeping(now);
        if self.wants_to_join(now) {
            // In a cluster: the leader it follows or, failing that, every member it
            // knows (non-leaders redirect). A joiner's old hint may be long dead.
            let targets: Vec<(NodeId, Address)> = match self.role.leader.clone() {
                Some(leader) => vec![leader],
                None => self
                    .log
                    .effective()
                    .members
                    .iter()
                    .filter(|(id, _)| **id != self.me.id)
                    .map(|(id, m)| (*id, m.addr.clone()))
                    .collect(),
            };
            for (id, addr) in targets {
                self.send_join(id, addr);
            }
        }
    }

    /// Whether this member has heard from no leader for `silent_member_timeout`: its
    /// cluster may be gone for good (most of its voters replaced while it was cut
    /// off). Such a member probes its peers and moves to a cluster that has a leader.
    pub(super) fn orphaned(&self, now: Instant) -> bool {
        let Some(limit) = self.cfg.silent_member_timeout else {
            return false;
        };
        self.hard.cluster.is_some()
            && !self.role.is_leader()
            && self.leave.leaving.is_none()
            && self
                .role
                .last_leader_contact
                .is_none_or(|t| now.saturating_duration_since(t) >= limit)
    }

    /// A node in a cluster wants to (re-)join when it is not in the configuration it
    /// knows, or it has heard from no leader for a long while (it may have been
    /// removed while it was away).
    pub(super) fn wants_to_join(&self, now: Instant) -> bool {
        if self.hard.cluster.is_none() {
            return self.join.joining.is_some();
        }
        if self.role.is_leader() || self.leave.leaving.is_some() {
            return false;
        }
        if !self.log.effective().contains(self.me.id) {
            return true;
        }
        // Removed while away, it would never hear of it: a leader answers the join of
        // a current member with an append, so asking is harmless.
        let quiet = self.cfg.election_timeout_max * REJOIN_QUIET_ELECTION_TIMEOUTS;
        self.role
            .last_leader_contact
            .is_none_or(|t| now.saturating_duration_since(t) > quiet)
    }

    fn send_join(&mut self, id: NodeId, addr: Address) {
        let name = self.me.name.clone();
        self.send(addr, Some(id), Message::Join { name });
    }

    pub(super) fn request_join(
        &mut self,
        now: Instant,
        cluster: ClusterId,
        leader: (NodeId, Address),
    ) {
        let first = self.join.joining != Some(cluster);
        self.join.joining = Some(cluster);
        self.join.hint = Some(leader.clone());
        if first {
            info!(%cluster, leader = %leader.0, "found an existing cluster; asking to join");
            self.send_join(leader.0, leader.1);
            self.timers
                .set_earlier(Timer::Housekeeping, now + self.cfg.probe_interval);
        }
    }

    pub(super) fn on_not_leader(&mut self, now: Instant, leader: Option<(NodeId, Address)>) {
        let Some((id, addr)) = leader else { return };
        if id == self.me.id {
            return;
        }
        if self.leave.leaving.is_some() {
            self.follow_leave_redirect(id, addr);
        } else if self.wants_to_join(now) && self.join.redirects < MAX_REDIRECTS_PER_ROUND {
            self.join.redirects += 1;
            self.send_join(id, addr);
        }
    }
}
