//! Recovering a cluster that lost a majority of its voters for good (P11).
//!
//! A member of a cluster with no leader probes every listed address and every voter.
//! When each voter it cannot hear from is proven dead (another process answered at
//! its address, or authoritative discovery dropped it), every listed address answered
//! and none follows a leader, the survivor with the most up-to-date log asks every
//! process it heard from, and every live voter, to support it. With every grant it
//! founds the cluster's successor: a new cluster id one epoch higher, its members the
//! processes that granted. Supports are the bootstrap's (one candidate at a time), so
//! two recoveries that share a supporter cannot both succeed. The argument is in
//! docs/PROTOCOL.md, P11.

use super::bootstrap::FRESH_VIEW_PROBE_ROUNDS;
use super::ClusterCore;
use crate::id::{Address, ClusterId, NodeId};
use crate::message::Message;
use crate::status::{RecoveryStatus, VoterEvidence, VoterState};
use crate::time::Instant;
use std::collections::BTreeMap;
use tracing::{info, warn};

/// A member that heard from no leader for this many maximum election timeouts counts
/// its cluster as leaderless and starts gathering evidence.
const LEADERLESS_ELECTION_TIMEOUTS: u32 = 2;
/// While a cluster stays stuck, its members repeat their warning every this many
/// probe intervals.
const WARN_EVERY_PROBE_ROUNDS: u32 = 10;

/// Recovery bookkeeping of a member.
#[derive(Clone, Debug, Default)]
pub(super) struct RecoveryState {
    /// An operator forced the recovery (`Input::ForceRecover`): voters with no proof
    /// of death and silent listed peers no longer block it.
    forced: bool,
    /// When the stuck warning was last logged.
    last_warn: Option<Instant>,
    /// Clusters this node left, for their successor or, orphaned, for another cluster
    /// of the service (the latest few): it never adopts or joins one of them again,
    /// whatever a late probe answer or snapshot says. A stale answer once took a
    /// supporter back to the cluster replaced and stranded the successor (seed 10449
    /// of `majority-replaced-k8s`); and a node that left forgot its term and vote
    /// there, so re-adopting the cluster could vote twice in a term or issue a lower
    /// fencing token (fuzz/README.md, finding 3).
    replaced: Vec<ClusterId>,
}

/// How many replaced clusters a node remembers.
const REMEMBERED_REPLACED: usize = 4;

impl RecoveryState {
    fn remember_replaced(&mut self, cluster: ClusterId) {
        if !self.replaced.contains(&cluster) {
            if self.replaced.len() == REMEMBERED_REPLACED {
                self.replaced.remove(0);
            }
            self.replaced.push(cluster);
        }
    }
}

impl ClusterCore {
    /// The leader this node follows, if it heard from it within the maximum election
    /// timeout (itself while it leads): what a probe answer reports.
    pub(super) fn live_leader(&self, now: Instant) -> Option<(NodeId, Address)> {
        if self.role.is_leader() {
            return Some((self.me.id, self.me.addr.clone()));
        }
        let recent = self
            .role
            .last_leader_contact
            .is_some_and(|t| now.saturating_duration_since(t) <= self.cfg.election_timeout_max);
        self.role.leader.clone().filter(|_| recent)
    }

    /// Whether this member supports a recovery of its cluster (its own or another
    /// survivor's): until it moves to the successor or the support ends, it neither
    /// campaigns nor votes in the cluster being replaced.
    pub(super) fn supports_recovery(&self) -> bool {
        self.hard.cluster.is_some() && self.boot.supports.is_some()
    }

    /// Whether this node is a member of a cluster that has had no leader for a while
    /// (or, once an operator forced it, no live leader at all).
    fn leaderless(&self, now: Instant) -> bool {
        if self.hard.cluster.is_none()
            || self.role.is_leader()
            || self.leave.leaving.is_some()
            || !self.log.effective().contains(self.me.id)
        {
            return false;
        }
        if self.recovery.forced {
            return self.live_leader(now).is_none();
        }
        let quiet = self.cfg.election_timeout_max * LEADERLESS_ELECTION_TIMEOUTS;
        self.role
            .last_leader_contact
            .is_none_or(|t| now.saturating_duration_since(t) >= quiet)
    }

    /// What this node knows of each other voter of its configuration.
    fn voter_evidence(&self, now: Instant) -> Vec<VoterEvidence> {
        let Some(cluster) = self.hard.cluster else {
            return Vec::new();
        };
        let recent = self.cfg.probe_interval * FRESH_VIEW_PROBE_ROUNDS;
        let absence_proves = self.cfg.discovery_proves_absence && self.peers.discovery_answered();
        self.log
            .effective()
            .members
            .iter()
            .filter(|(id, m)| m.voter && **id != self.me.id)
            .map(|(id, m)| {
                let addr = self.peers.route(*id).unwrap_or(&m.addr);
                let peer = self.peers.get(addr);
                let answered_recently = peer
                    .and_then(|p| p.answered_at)
                    .is_some_and(|t| now.saturating_duration_since(t) <= recent);
                let state = match peer.and_then(|p| p.id) {
                    Some(at_addr) if at_addr != *id => VoterState::ProvenDead {
                        successor: Some(at_addr),
                    },
                    // Dropped by authoritative discovery: dead, even if it answered
                    // a probe a moment before it died.
                    _ if absence_proves && !peer.is_some_and(|p| p.listed) => {
                        VoterState::ProvenDead { successor: None }
                    }
                    Some(_)
                        if answered_recently
                            && peer
                                .and_then(|p| p.member)
                                .is_some_and(|a| a.cluster == cluster) =>
                    {
                        VoterState::Live
                    }
                    _ => VoterState::Missing,
                };
                VoterEvidence {
                    id: *id,
                    addr: addr.clone(),
                    state,
                }
            })
            .collect()
    }

    /// Who must support this node's recovery, or why it must not stand.
    fn recovery_plan(
        &self,
        now: Instant,
        voters: &[VoterEvidence],
    ) -> Result<BTreeMap<NodeId, Address>, String> {
        let Some(cluster) = self.hard.cluster else {
            return Err("not in a cluster".into());
        };
        let forced = self.recovery.forced;
        if !self.cfg.auto_recover && !forced {
            return Err("automatic recovery is off (Config::auto_recover)".into());
        }
        let live: Vec<&VoterEvidence> = voters
            .iter()
            .filter(|v| v.state == VoterState::Live)
            .collect();
        let i_vote = self.log.effective().is_voter(self.me.id);
        let live_voters = live.len() + usize::from(i_vote);
        if live_voters >= self.log.quorum() {
            return Err(format!(
                "{live_voters} of {} voters answer, a majority: an election should elect a primary",
                self.log.voters().len()
            ));
        }
        let missing: Vec<String> = voters
            .iter()
            .filter(|v| v.state == VoterState::Missing)
            .map(|v| format!("{} at {}", v.id, v.addr))
            .collect();
        if !missing.is_empty() && !forced {
            let how = if self.cfg.discovery_proves_absence {
                "no other process answered at its address and discovery still lists it"
            } else {
                "no other process answered at its address"
            };
            return Err(format!(
                "voters missing with no proof of death ({how}): {}",
                missing.join(", ")
            ));
        }
        let recent = self.cfg.probe_interval * FRESH_VIEW_PROBE_ROUNDS;
        let mine = (self.log.last_term(), self.log.last_index());
        let mut asked: BTreeMap<NodeId, Address> =
            live.iter().map(|v| (v.id, v.addr.clone())).collect();
        // Voters already proven dead are not asked, even if they answered before
        // they died (sims/FINDINGS.md #9): they would never grant.
        let dead: Vec<NodeId> = voters
            .iter()
            .filter(|v| matches!(v.state, VoterState::ProvenDead { .. }))
            .map(|v| v.id)
            .collect();
        let absence_proves = self.cfg.discovery_proves_absence && self.peers.discovery_answered();
        for (addr, p) in self.peers.iter() {
            if absence_proves && !p.listed {
                continue; // gone for good (A2)
            }
            let answered = p
                .answered_at
                .is_some_and(|t| now.saturating_duration_since(t) <= recent);
            if !answered {
                if p.listed && !forced {
                    return Err(format!(
                        "{addr} is listed but has not answered: it may be a member that knows a newer configuration"
                    ));
                }
                continue;
            }
            let Some(id) = p.id.filter(|id| !dead.contains(id)) else {
                continue;
            };
            match p.member {
                None => {
                    asked.insert(id, addr.clone());
                }
                Some(m) if m.has_leader => {
                    return Err(format!(
                        "{id} at {addr} follows a leader of cluster {}",
                        m.cluster
                    ));
                }
                Some(m) if m.cluster.epoch() > cluster.epoch() => {
                    return Err(format!(
                        "{id} at {addr} is in cluster {}, a later epoch than this one",
                        m.cluster
                    ));
                }
                Some(m) if m.cluster == cluster => {
                    // The most up-to-date log stands, then the smallest id, whatever
                    // this node's configuration says of the other: a stale one may
                    // call a newer voter a non-voter (sims/FINDINGS.md #8).
                    if claim_beats((m.last, id), (mine, self.me.id)) {
                        return Err(format!(
                            "waiting for {id}, whose log is at least as up to date, to recover the cluster"
                        ));
                    }
                    asked.insert(id, addr.clone());
                }
                Some(_) => {} // another cluster of the service without a leader
            }
        }
        if let Some(s) = self.boot.supports.as_ref().filter(|s| s.id != self.me.id) {
            return Err(format!("supporting {}'s recovery", s.id));
        }
        Ok(asked)
    }

    /// Recovery's part of a member's housekeeping: probe, judge, stand or warn.
    pub(super) fn recovery_housekeeping(&mut self, now: Instant) {
        if !self.leaderless(now) {
            self.recovery.forced = false;
            return;
        }
        self.probe_round(now);
        // Voters' own addresses too: discovery may no longer list them.
        let silent: Vec<Address> = self
            .voter_evidence(now)
            .into_iter()
            .filter(|v| v.state == VoterState::Missing && !self.peers.is_listed(&v.addr))
            .map(|v| v.addr)
            .collect();
        for addr in silent {
            self.probe(now, addr);
        }
        self.release_gone_candidate(now);
        if let Some(c) = &self.boot.candidacy {
            if c.replaces.is_some() {
                // Ask again those that have not granted: one that refused while it
                // supported a rival is free once the rival withdrew (FINDINGS #8).
                let again: Vec<(NodeId, Address)> = c
                    .asked
                    .iter()
                    .filter(|(id, _)| !c.grants.contains_key(id))
                    .map(|(id, a)| (*id, a.clone()))
                    .collect();
                let round = c.round;
                self.send_recovery_requests(round, again);
            }
            return;
        }
        if now < self.boot.next_eval {
            return; // backing off after a withdrawn candidacy (FINDINGS #8)
        }
        let voters = self.voter_evidence(now);
        match self.recovery_plan(now, &voters) {
            Ok(asked) => self.stand_for_recovery(now, asked),
            Err(why) => {
                let due = self.recovery.last_warn.is_none_or(|t| {
                    now.saturating_duration_since(t)
                        >= self.cfg.probe_interval * WARN_EVERY_PROBE_ROUNDS
                });
                if due {
                    self.recovery.last_warn = Some(now);
                    warn!(
                        blocked = %why,
                        "no primary: this cluster has no leader and cannot recover by itself; \
                         if the missing voters are gone for good, force the recovery on one survivor \
                         (`cluster-node recover <status address>` or `Cluster::force_recover()`; \
                         risk: two primaries if they still run elsewhere)"
                    );
                }
            }
        }
    }

    fn stand_for_recovery(&mut self, now: Instant, asked: BTreeMap<NodeId, Address>) {
        let Some(cluster) = self.hard.cluster else {
            return;
        };
        let round = self.begin_candidacy(now, asked.clone(), Some(cluster));
        info!(%cluster, round, asked = asked.len(), forced = self.recovery.forced, "standing as recovery candidate");
        self.send_recovery_requests(round, asked);
        self.maybe_found(now);
        if self.hard.cluster != Some(cluster) {
            self.recovery.forced = false;
        }
    }

    fn send_recovery_requests(
        &mut self,
        round: u64,
        to: impl IntoIterator<Item = (NodeId, Address)>,
    ) {
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for (id, addr) in to {
            self.send(
                addr,
                Some(id),
                Message::RecoveryRequest {
                    round,
                    last_index,
                    last_term,
                },
            );
        }
    }

    /// A recovery candidate asks this node for support.
    pub(super) fn on_recovery_request(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        cluster: Option<ClusterId>,
        round: u64,
        last: (u64, u64),
    ) {
        let Some(theirs) = cluster else { return };
        let may_grant = match self.hard.cluster {
            // A fresh node, or one waiting to join that very cluster.
            None => self.join.joining.is_none_or(|c| c == theirs),
            // A member of it (dispatch let no other cluster through) that has no
            // live leader either. Which survivor stands is a preference (rule 5),
            // not a safety condition: every live member must grant and then abstain.
            Some(_) => {
                !self.role.is_leader()
                    && self.leave.leaving.is_none()
                    && self.live_leader(now).is_none()
            }
        };
        let mine = (self.log.last_term(), self.log.last_index());
        let standing = self
            .boot
            .candidacy
            .as_ref()
            .is_some_and(|c| c.replaces.is_some());
        if may_grant && standing && claim_beats((last, from), (mine, self.me.id)) {
            info!(candidate = %from, "a survivor with a better claim stands; yielding to it");
            self.withdraw_candidacy(now);
        }
        self.answer_support_request(now, from, from_addr, round, may_grant, "recovery");
    }

    /// Whether a message from another cluster is the first news of the successor
    /// founded by the recovery candidate this member supports: it is let through so
    /// that this node moves to it.
    pub(super) fn is_supported_successor(
        &self,
        from: NodeId,
        theirs: ClusterId,
        msg: &Message,
    ) -> bool {
        matches!(
            msg,
            Message::Append(_) | Message::Snapshot(_) | Message::SnapshotChunk(_)
        ) && self.boot.supports.as_ref().is_some_and(|s| s.id == from)
            && self
                .hard
                .cluster
                .is_some_and(|ours| theirs.epoch() > ours.epoch())
    }

    /// Leaves the cluster replaced by the successor this node supported, keeping its
    /// support so that it can adopt the successor's configuration.
    pub(super) fn move_to_successor(&mut self, successor: Option<ClusterId>) {
        if let Some(old) = self.hard.cluster {
            self.recovery.remember_replaced(old);
        }
        let support = self.boot.supports.take();
        info!(from = ?self.hard.cluster, to = ?successor, "the recovery this node supported founded the cluster's successor; moving to it");
        self.become_fresh();
        self.boot.supports = support;
    }

    /// Leaves `ours`, a cluster with no leader for `silent_member_timeout`, to join
    /// another cluster of the service that has one; `ours` is never adopted again
    /// (see `RecoveryState::replaced`).
    pub(super) fn leave_orphaned_cluster(&mut self, ours: ClusterId) {
        self.recovery.remember_replaced(ours);
        self.become_fresh();
    }

    /// Whether this node left `cluster`: for a successor it moved to or founded, or
    /// orphaned, for another cluster.
    pub(super) fn was_replaced(&self, cluster: ClusterId) -> bool {
        self.recovery.replaced.contains(&cluster)
    }

    /// Records that this node founded the successor of `old`.
    pub(super) fn founded_successor_of(&mut self, old: ClusterId) {
        self.recovery.remember_replaced(old);
    }

    /// `Input::ForceRecover`: an operator says the voters this node cannot hear from
    /// are gone for good.
    pub(super) fn force_recover(&mut self, now: Instant) {
        if self.hard.cluster.is_none() || self.live_leader(now).is_some() {
            warn!("force_recover ignored: this node is not in a cluster without a leader");
            return;
        }
        warn!("recovery forced by an operator: voters with no proof of death are treated as dead");
        self.recovery.forced = true;
        self.recovery_housekeeping(now);
    }

    /// The recovery view for status, while this node's cluster is leaderless.
    pub(super) fn recovery_status(&self, now: Instant) -> Option<RecoveryStatus> {
        if !self.leaderless(now) {
            return None;
        }
        let voters = self.voter_evidence(now);
        let blocked = match &self.boot.candidacy {
            Some(c) if c.replaces.is_some() => None,
            _ => Some(match self.recovery_plan(now, &voters) {
                Ok(_) => "about to stand as recovery candidate".to_string(),
                Err(why) => why,
            }),
        };
        Some(RecoveryStatus {
            leader_last_heard: self.role.last_leader_contact,
            voters,
            blocked,
            forced: self.recovery.forced,
        })
    }
}

/// Whether survivor `a` (its last log entry as (term, index), its id) has a better
/// claim to stand for recovery than `b` (rule 5): the more up-to-date log, then the
/// smaller id.
fn claim_beats(a: ((u64, u64), NodeId), b: ((u64, u64), NodeId)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}
