//! Named roles (P13): the hold a member keeps on the roles it owns, the primary's
//! placement rounds, and the role events.
//!
//! State owned here: [`RolesState`] (every node: its hold, what it drains and
//! released, the application's requests, what it reported) and [`LeaderRoles`]
//! (inside `LeaderState`: the requests members forwarded, how long the holds this
//! leader granted may run).
//!
//! The rules, and why no role ever has two holders at an instant, are in
//! `docs/PROTOCOL.md`, P13. In short: a node holds a role while its committed table
//! names it owner and it has a hold from a primary with a valid lease (the primary's
//! own lease for the primary); the primary grants a role elsewhere only once the
//! owner confirmed the release or every hold it could have is over.

use super::timers::Timer;
use super::ClusterCore;
use crate::event::Command;
use crate::id::{ClusterId, NodeId};
use crate::membership::Change;
use crate::message::{HoldGrant, Message};
use crate::placement::{plan, Candidate, Placement, RoleInput};
use crate::roles::{
    check_role_name, OwnedRole, RoleEntry, RoleEvent, RoleOp, RoleStatus, RoleToken, RolesRequest,
    MAX_ROLES, MAX_ROLES_PER_ENTRY,
};
use crate::time::{duration_nanos, Instant};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tracing::{debug, info, warn};

/// Every node's role state.
#[derive(Clone, Debug, Default)]
pub(super) struct RolesState {
    /// The hold from the latest [`HoldGrant`], on this node's clock (a follower's).
    hold_until: Option<Instant>,
    /// Roles asked back while this node held them: (grant index, let go by).
    draining: BTreeMap<String, (u64, Instant)>,
    /// Roles (name, grant index) this node let go for good.
    released: BTreeSet<(String, u64)>,
    /// The application's requests, until the committed table shows them.
    pending: RolesRequest,
    /// Roles last reported held: token, and whether `Releasing` was reported.
    reported: BTreeMap<String, (RoleToken, bool)>,
    /// What the held set depended on when it was last reported; while it is the
    /// same, so is the set, and the report is skipped (it runs after every input).
    reported_key: Option<HeldKey>,
    /// The last log index this process restored from its data directory (P12), 0 if
    /// it started fresh. Its previous process may have let go of any grant up to
    /// there (released after a drain, or every role while leaving) and the primary
    /// may have given the role to someone else on that word; the restart forgot it.
    /// So this process never holds a grant with an index up to this one, and confirms
    /// each as released: the primary grants the role again, to it or to another.
    restored_through: u64,
}

/// Everything the set of held roles depends on, but the clock (which only matters
/// through whether the hold is valid, and each drain's deadline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeldKey {
    commit: u64,
    last: u64,
    cluster: Option<crate::id::ClusterId>,
    may_hold: bool,
    hold_valid: bool,
    released: usize,
    draining: usize,
}

/// A leader's role state for its term.
#[derive(Clone, Debug, Default)]
pub(super) struct LeaderRoles {
    /// Requests forwarded by members (and this node's own).
    requests: RolesRequest,
    /// Per member, the leader's clock by which every hold this leader granted it has
    /// ended (its lease end when it sent the grant).
    hold_bound: BTreeMap<NodeId, Instant>,
    /// Members that asked this leader to remove them: a node lets go of every role
    /// before it sends `Leave` and never holds one again, so the request confirms
    /// the release of all its roles (kept after its removal, when its replies
    /// stop). A reply that releases nothing (a process restarted from its data
    /// directory, no longer leaving) takes it out again, before it can get a hold.
    left: BTreeSet<NodeId>,
    /// A role entry committed since the last broadcast: the next proposal round
    /// sends the commit index at once.
    pub(super) commit_news: bool,
    /// Bumped whenever `requests` changes (part of [`PlanKey`]: the request lists
    /// stay long after the table shows them, too long to compare every round).
    requests_version: u64,
    /// The inputs of the last placement round, if it planned nothing: while they
    /// are the same, so is the (empty) plan, and the round is skipped. The leader
    /// runs a round every heartbeat, and planning 64 roles was the largest single
    /// cost of a simulated run (sims/README.md, "Where the time goes").
    quiet: Option<PlanKey>,
}

/// Everything a placement round ([`ClusterCore::plan_round`]) reads, with the clock
/// reduced to the comparisons the round makes with it. Equal keys, equal plans.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PlanKey {
    /// The committed configuration (members, role table) and the effective one.
    commit: u64,
    last: u64,
    /// Per follower: heard within `role_failover_timeout`.
    live: Vec<(NodeId, bool)>,
    /// Per member with a recorded hold bound: whether it passed.
    past_bound: Vec<(NodeId, bool)>,
    /// Whether holds of earlier terms are over (the bound of members without one).
    past_term_bound: bool,
    /// Per follower that released roles: which (its latest reply).
    released: Vec<(NodeId, Vec<(String, u64)>)>,
    /// Members leaving: this node, those that asked, those that left.
    leaving_me: bool,
    leaves: Vec<NodeId>,
    left: Vec<NodeId>,
    requests: u64,
    /// What this node let go of (see [`ClusterCore::let_go`]): the set only grows
    /// while the table (`commit`) stays the same.
    let_go: (usize, u64),
}

impl LeaderRoles {
    /// Adds a member's requests to those this leader serves (the only way they change).
    fn merge(&mut self, req: RolesRequest) {
        merge_requests(&mut self.requests, req);
        self.requests_version += 1;
    }
}

impl ClusterCore {
    // ----- the application's requests --------------------------------------------

    pub(super) fn declare_roles(&mut self, now: Instant, roles: Vec<(String, Placement)>) {
        for (name, placement) in roles {
            if let Err(e) = check_role_name(&name) {
                warn!(reason = %e, "role not declared");
                continue;
            }
            self.roles.pending.remove.retain(|r| *r != name);
            if !self.roles.pending.add.iter().any(|(r, _)| *r == name) {
                self.roles.pending.add.push((name, placement));
            }
        }
        self.forward_role_requests(now);
    }

    pub(super) fn remove_roles(&mut self, now: Instant, roles: Vec<String>) {
        for name in roles {
            self.roles.pending.add.retain(|(r, _)| *r != name);
            if !self.roles.pending.remove.contains(&name) {
                self.roles.pending.remove.push(name);
            }
        }
        self.forward_role_requests(now);
    }

    pub(super) fn release_role(&mut self, now: Instant, name: &str) {
        if let Some((index, _)) = self.roles.draining.remove(name) {
            info!(role = name, "role released");
            self.roles.released.insert((name.to_string(), index));
        } else {
            debug!(
                role = name,
                "release of a role this node is not draining; ignored"
            );
        }
        // `handle` refreshes the roles after every input: the release is reported and
        // confirmed from there.
        let _ = now;
    }

    /// Drops requests the committed table shows done, and sends the rest to the
    /// leader (or queues them, on the leader). Called on each request and each
    /// housekeeping round, so a lost request is resent.
    pub(super) fn forward_role_requests(&mut self, _now: Instant) {
        let table = &self.log.committed().roles;
        let p = &mut self.roles.pending;
        p.add.retain(|(r, _)| !table.contains_key(r));
        p.remove.retain(|r| table.contains_key(r));
        if p.is_empty() || self.hard.cluster.is_none() {
            return;
        }
        let req = p.clone();
        if let Some(l) = self.role.leading_mut() {
            l.roles.merge(req);
        } else if let Some((id, addr)) = self.role.leader.clone() {
            self.send(addr, Some(id), Message::Roles(req));
        }
    }

    /// Whether a role entry committed since the last time this was asked.
    pub(super) fn take_role_commit_news(&mut self) -> bool {
        self.role
            .leading_mut()
            .is_some_and(|l| std::mem::take(&mut l.roles.commit_news))
    }

    /// A member asked this leader to remove it (P8): it holds no role any more.
    pub(super) fn note_leave_request(&mut self, from: NodeId) {
        if let Some(l) = self.role.leading_mut() {
            l.roles.left.insert(from);
        }
    }

    pub(super) fn on_roles_request(&mut self, from: NodeId, req: RolesRequest) {
        let Some(l) = self.role.leading_mut() else {
            debug!(%from, "roles request, and this node does not lead; the sender will resend");
            return;
        };
        let valid = req.add.iter().all(|(r, _)| check_role_name(r).is_ok());
        if !valid {
            warn!(%from, "roles request with an invalid name; ignored");
            return;
        }
        l.roles.merge(req);
    }

    /// After a restore from the data directory: forget every grant the restored log
    /// holds (see [`RolesState::restored_through`]).
    pub(super) fn roles_after_restore(&mut self) {
        self.roles.restored_through = self.log.last_index();
    }

    /// Whether this node let go of its grant `e` of `name` for good: released it, or
    /// the grant is older than this process's restore.
    fn let_go(&self, name: &str, e: &RoleEntry) -> bool {
        e.granted_at <= self.roles.restored_through
            || self
                .roles
                .released
                .contains(&(name.to_string(), e.granted_at))
    }

    // ----- the hold ---------------------------------------------------------------

    /// Takes a hold renewal from an append this node stored, caught up with the
    /// leader's commit index as of its sending (so its table has every grant the
    /// leader had committed).
    pub(super) fn take_hold(&mut self, now: Instant, grant: HoldGrant) {
        if grant.echo > now {
            warn!("hold renewal echoes a time after now; ignored");
            return;
        }
        let d = u128::from(self.cfg.max_clock_drift_ppm);
        let scaled = u128::from(grant.valid_for_nanos) * (1_000_000 - d) / (1_000_000 + d);
        let until = grant.echo + Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX));
        if self.roles.hold_until.is_none_or(|h| until > h) {
            self.roles.hold_until = Some(until);
        }
    }

    /// Whether this node has a hold at `now`: the lease while it leads, the latest
    /// renewal otherwise.
    fn hold_valid(&self, now: Instant) -> bool {
        if self.role.is_leader() {
            self.lease_valid(now)
        } else {
            self.roles.hold_until.is_some_and(|h| now < h)
        }
    }

    /// When this node's hold ends, as a shell should time it.
    pub(super) fn hold_end(&self) -> Option<Instant> {
        match self.role.leading() {
            Some(l) if !l.lease_revoked => Some(l.lease_until),
            Some(_) => None,
            None => self.roles.hold_until,
        }
    }

    /// Whether this node may hold any role: a member of its committed and effective
    /// configuration, not leaving.
    fn may_hold_roles(&self) -> bool {
        self.hard.cluster.is_some()
            && !self.leave.left
            && self.leave.leaving.is_none()
            && self.log.committed().contains(self.me.id)
            && self.log.effective().contains(self.me.id)
    }

    /// Whether this node holds `name` (described by `e`) at `now`, ignoring the hold
    /// itself (checked once by the callers).
    fn owns_entry(&self, now: Instant, name: &str, e: &RoleEntry) -> bool {
        if e.owner != Some(self.me.id) || self.let_go(name, e) {
            return false;
        }
        !e.releasing
            || self
                .roles
                .draining
                .get(name)
                .is_some_and(|(i, by)| *i == e.granted_at && now < *by)
    }

    /// The roles this node holds at `now`.
    pub fn owned_roles(&self, now: Instant) -> Vec<OwnedRole> {
        self.owned_role_parts(now)
            .map(|(name, token, release_by)| OwnedRole {
                role: name.clone(),
                token,
                release_by,
            })
            .collect()
    }

    /// [`owned_roles`](Self::owned_roles) without the copies: name, token and
    /// release deadline of each role held at `now`, in name order.
    pub(super) fn owned_role_parts(
        &self,
        now: Instant,
    ) -> impl Iterator<Item = (&String, RoleToken, Option<Instant>)> + '_ {
        let cluster = self
            .hard
            .cluster
            .filter(|_| self.may_hold_roles() && self.hold_valid(now));
        cluster.into_iter().flat_map(move |cluster| {
            self.log
                .committed()
                .roles
                .iter()
                .filter(move |(name, e)| self.owns_entry(now, name, e))
                .map(move |(name, e)| {
                    let token = RoleToken {
                        cluster,
                        index: e.granted_at,
                    };
                    let release_by = self
                        .roles
                        .draining
                        .get(name)
                        .filter(|_| e.releasing)
                        .map(|(_, by)| *by);
                    (name, token, release_by)
                })
        })
    }

    /// This node's token for `role` if it holds the role at `now`.
    pub fn owns(&self, now: Instant, role: &str) -> Option<RoleToken> {
        let cluster = self.hard.cluster?;
        let e = self.log.committed().roles.get(role)?;
        let held = self.may_hold_roles() && self.hold_valid(now) && self.owns_entry(now, role, e);
        held.then_some(RoleToken {
            cluster,
            index: e.granted_at,
        })
    }

    /// The committed owner of `role` (it may be releasing it, or its hold may have
    /// lapsed: only [`owns`](Self::owns) on that node answers for the instant).
    pub fn owner_of(&self, role: &str) -> Option<NodeId> {
        self.log.committed().roles.get(role)?.owner
    }

    /// The committed role table as status lines.
    pub(super) fn role_statuses(&self) -> Vec<RoleStatus> {
        let cluster = self.hard.cluster;
        self.log
            .committed()
            .roles
            .iter()
            .map(|(name, e)| role_status(cluster, name, e))
            .collect()
    }

    /// The releases this node confirms to the leader: roles asked back that it let
    /// go, grants older than its restore (or, while leaving, every role the table
    /// gives it: a leaving node holds none and never will again).
    pub(super) fn released_roles(&self) -> Vec<(String, u64)> {
        let leaving = self.leave.leaving.is_some();
        self.log
            .committed()
            .roles
            .iter()
            .filter(|(name, e)| {
                e.owner == Some(self.me.id)
                    && (leaving
                        || e.granted_at <= self.roles.restored_through
                        || (e.releasing
                            && self
                                .roles
                                .released
                                .contains(&((*name).clone(), e.granted_at))))
            })
            .map(|(name, e)| (name.clone(), e.granted_at))
            .collect()
    }

    /// After every input: starts draining roles asked back, lets go of drains that
    /// ran out, reports what changed, and times the next change.
    pub(super) fn refresh_roles(&mut self, now: Instant) {
        let table = &self.log.committed().roles;
        if table.is_empty() && self.roles.reported.is_empty() {
            return;
        }
        let me = Some(self.me.id);
        // Forget what the table no longer asks about.
        self.roles.released.retain(|(name, i)| {
            table
                .get(name)
                .is_some_and(|e| e.owner == me && e.granted_at == *i)
        });
        self.roles.draining.retain(|name, (i, _)| {
            table
                .get(name)
                .is_some_and(|e| e.owner == me && e.granted_at == *i && e.releasing)
        });
        // Roles asked back: drain those this node reported held, let go of the rest.
        let drain = self.cfg.role_drain_timeout;
        let mut let_go = Vec::new();
        for (name, e) in table.iter().filter(|(_, e)| e.owner == me && e.releasing) {
            let key = (name.clone(), e.granted_at);
            if self.roles.released.contains(&key) {
                continue;
            }
            match self.roles.draining.get(name) {
                Some((_, by)) if now >= *by => let_go.push(key),
                Some(_) => {}
                None => {
                    let held = self
                        .roles
                        .reported
                        .get(name)
                        .is_some_and(|(t, _)| t.index == e.granted_at);
                    if held && !drain.is_zero() {
                        self.roles
                            .draining
                            .insert(name.clone(), (e.granted_at, now + drain));
                    } else {
                        let_go.push(key);
                    }
                }
            }
        }
        for key in let_go {
            debug!(role = %key.0, "role let go");
            self.roles.draining.remove(&key.0);
            self.roles.released.insert(key);
        }
        let key = HeldKey {
            commit: self.log.commit_index(),
            last: self.log.last_index(),
            cluster: self.hard.cluster,
            may_hold: self.may_hold_roles(),
            hold_valid: self.hold_valid(now),
            released: self.roles.released.len(),
            draining: self.roles.draining.len(),
        };
        // A drain running out changes `draining` (it moves to `released`) first.
        if self.roles.reported_key != Some(key) {
            self.roles.reported_key = Some(key);
            self.report_role_changes(now);
        }
        // Wake when a hold or a drain runs out, to report it.
        let next = self
            .roles
            .draining
            .values()
            .map(|(_, by)| *by)
            .chain(self.hold_end().filter(|_| !self.roles.reported.is_empty()))
            .filter(|t| *t > now)
            .min();
        match next {
            Some(t) => self.timers.set(Timer::Roles, t),
            None => self.timers.stop(Timer::Roles),
        }
    }

    fn report_role_changes(&mut self, now: Instant) {
        let owned = self.owned_roles(now);
        let mut events = Vec::new();
        let reported = &mut self.roles.reported;
        for o in &owned {
            match reported.get(&o.role).copied() {
                Some((t, announced)) if t == o.token => {
                    if let (Some(deadline), false) = (o.release_by, announced) {
                        events.push(RoleEvent::Releasing {
                            role: o.role.clone(),
                            token: o.token,
                            deadline,
                        });
                        reported.insert(o.role.clone(), (t, true));
                    }
                }
                was => {
                    if let Some((t, _)) = was {
                        events.push(RoleEvent::Lost {
                            role: o.role.clone(),
                            token: t,
                        });
                    }
                    events.push(RoleEvent::Acquired {
                        role: o.role.clone(),
                        token: o.token,
                    });
                    if let Some(deadline) = o.release_by {
                        events.push(RoleEvent::Releasing {
                            role: o.role.clone(),
                            token: o.token,
                            deadline,
                        });
                    }
                    reported.insert(o.role.clone(), (o.token, o.release_by.is_some()));
                }
            }
        }
        if reported.len() > owned.len() {
            let held: BTreeSet<&str> = owned.iter().map(|o| o.role.as_str()).collect();
            let gone: Vec<String> = reported
                .keys()
                .filter(|r| !held.contains(r.as_str()))
                .cloned()
                .collect();
            for role in gone {
                if let Some((token, _)) = reported.remove(&role) {
                    events.push(RoleEvent::Lost { role, token });
                }
            }
        }
        for e in events {
            match &e {
                RoleEvent::Acquired { role, token } => info!(%role, %token, "role acquired"),
                RoleEvent::Lost { role, token } => info!(%role, %token, "role lost"),
                RoleEvent::Releasing { role, .. } => info!(%role, "role asked back; draining"),
            }
            self.out.commands.push_back(Command::Role(e));
        }
    }

    /// The role table of a cluster this node founds by a recovery (P11): every role
    /// of the cluster it replaces, as this node committed it, with no owner, so that
    /// the successor's primary places them again (under tokens of the successor's
    /// higher epoch). Without it the roles were gone after a recovery: every member
    /// had dropped its declaration once the old table showed it. No hold of the
    /// replaced cluster is left to wait for: a recovery needs that cluster to have had
    /// no leader for a while, every hold ends before the lease of the primary that
    /// granted it, and the successor's primary places roles only while its own lease
    /// is valid, which P11 orders after every lease of the cluster replaced.
    pub(super) fn roles_for_successor(&self) -> BTreeMap<String, RoleEntry> {
        self.log
            .committed()
            .roles
            .iter()
            .map(|(name, e)| {
                let entry = RoleEntry {
                    placement: e.placement.clone(),
                    ..RoleEntry::default()
                };
                (name.clone(), entry)
            })
            .collect()
    }

    // ----- the primary's side -------------------------------------------------------

    /// The hold renewal for an append to `id`, if it gets one: this node is primary,
    /// the table has roles, `id` replied since its last renewal and is not withheld.
    /// Records how long the hold may run.
    pub(super) fn hold_grant_for(&mut self, now: Instant, id: NodeId) -> Option<HoldGrant> {
        if self.log.committed().roles.is_empty() || !self.lease_valid(now) {
            return None;
        }
        if self.loses_role_in_flight(id) {
            return None;
        }
        let l = self.role.leading_mut()?;
        let until = l.lease_until;
        let p = l.progress.get_mut(&id)?;
        if !p.fresh_reply {
            return None;
        }
        let echo = p.reply_at?;
        p.fresh_reply = false;
        let bound = l.roles.hold_bound.entry(id).or_insert(until);
        *bound = (*bound).max(until);
        Some(HoldGrant {
            echo,
            valid_for_nanos: duration_nanos(until.saturating_duration_since(now)),
        })
    }

    /// Whether an uncommitted entry of this leader's log takes a role away from `id`
    /// (granted to another node, or removed) without its confirmation: `id` then gets
    /// no hold renewal until that entry commits, so that no hold outlives the
    /// decision that it was over. Read from the log, not from what this leader
    /// decided: a new leader may inherit such an entry from the leader before it.
    fn loses_role_in_flight(&self, id: NodeId) -> bool {
        let committed = &self.log.committed().roles;
        let owned_by = |role: &str| committed.get(role).and_then(|e| e.owner) == Some(id);
        self.log
            .entries_after(self.log.commit_index(), usize::MAX)
            .iter()
            .any(|e| match &e.change {
                Change::Roles(ops) => ops.iter().any(|op| match op {
                    RoleOp::Grant { role, owner, .. } => *owner != id && owned_by(role),
                    RoleOp::Remove { role } => owned_by(role),
                    _ => false,
                }),
                _ => false,
            })
    }

    /// A placement round of the primary (each heartbeat round and after each
    /// commit): declares and removes what members asked for, asks owners to release
    /// roles placement moves, and grants every role nobody can hold any more. At
    /// most one role entry is in flight. Returns whether it appended one.
    pub(super) fn place_roles(&mut self, now: Instant) -> bool {
        if !self.lease_valid(now) {
            return false;
        }
        // One role entry in flight at a time, also one inherited from an earlier
        // leader: a round plans from the committed table, which must already show
        // every earlier move.
        let in_flight = self
            .log
            .entries_after(self.log.commit_index(), usize::MAX)
            .iter()
            .any(|e| matches!(e.change, Change::Roles(_)));
        if in_flight || !self.role.is_leader() {
            return false;
        }
        // Let go of this node's own roles asked back, so this round can grant them.
        self.refresh_roles(now);
        let key = self.plan_key(now);
        if key.is_some() && key == self.role.leading().and_then(|l| l.roles.quiet.clone()) {
            debug_assert!(
                self.plan_round(now).is_empty(),
                "a placement round skipped as unchanged would plan something: PlanKey misses an input"
            );
            return false;
        }
        let ops = self.plan_round(now);
        if let Some(l) = self.role.leading_mut() {
            l.roles.quiet = if ops.is_empty() { key } else { None };
        }
        if ops.is_empty() {
            return false;
        }
        info!(ops = ops.len(), "proposing role changes");
        debug!(?ops, "role changes");
        self.log.push(self.hard.term, Change::Roles(ops));
        true
    }

    /// What [`plan_round`](Self::plan_round) reads, as of `now` (`None` unless leader).
    fn plan_key(&self, now: Instant) -> Option<PlanKey> {
        let l = self.role.leading()?;
        let window = self.cfg.role_failover_timeout;
        let since_term = l.became_at + self.cfg.lease_duration;
        Some(PlanKey {
            commit: self.log.commit_index(),
            last: self.log.last_index(),
            live: l
                .progress
                .iter()
                .map(|(id, p)| (*id, p.heard_within(now, window)))
                .collect(),
            past_bound: l
                .roles
                .hold_bound
                .iter()
                .map(|(id, b)| (*id, now >= (*b).max(since_term)))
                .collect(),
            past_term_bound: now >= since_term,
            released: l
                .progress
                .iter()
                .filter(|(_, p)| !p.released.is_empty())
                .map(|(id, p)| (*id, p.released.clone()))
                .collect(),
            leaving_me: self.leave.leaving.is_some(),
            leaves: self.admin.leaves.iter().copied().collect(),
            left: l.roles.left.iter().copied().collect(),
            requests: l.roles.requests_version,
            let_go: (self.roles.released.len(), self.roles.restored_through),
        })
    }

    /// The role operations of one round. An owner whose role it takes without its
    /// confirmation gets no hold renewal until the entry commits
    /// ([`loses_role_in_flight`](Self::loses_role_in_flight)).
    fn plan_round(&self, now: Instant) -> Vec<RoleOp> {
        let mut ops = Vec::new();
        let Some(l) = self.role.leading() else {
            return ops;
        };
        let me = self.me.id;
        let cfg = self.log.committed();
        let eff = self.log.effective();
        let table = &cfg.roles;
        let window = self.cfg.role_failover_timeout;
        let live = |id: NodeId| {
            id == me
                || l.progress
                    .get(&id)
                    .is_some_and(|p| p.heard_within(now, window))
        };
        let member = |id: NodeId| cfg.contains(id) && eff.contains(id);
        // A member leaves once it asked this leader, or once its replies release a
        // role nobody asked back: only a leaving node does that (the request to an
        // earlier leader is re-sent to this one only on its next housekeeping round).
        let leaving = |id: NodeId| {
            if id == me {
                return self.leave.leaving.is_some();
            }
            self.admin.leaves.contains(&id)
                || l.roles.left.contains(&id)
                || l.progress.get(&id).is_some_and(|p| {
                    p.released.iter().any(|(r, i)| {
                        table
                            .get(r)
                            .is_some_and(|e| !e.releasing && e.granted_at == *i)
                    })
                })
        };
        // Holds granted in earlier terms end within a lease of this term's start
        // (P13); holds this leader granted end by the bound it recorded.
        let since_term = l.became_at + self.cfg.lease_duration;
        let bound = |id: NodeId| {
            l.roles
                .hold_bound
                .get(&id)
                .map_or(since_term, |b| (*b).max(since_term))
        };
        let confirmed = |name: &str, e: &RoleEntry| match e.owner {
            None => true,
            Some(o) if l.roles.left.contains(&o) => true,
            Some(o) if o == me => self.let_go(name, e),
            Some(o) => l.progress.get(&o).is_some_and(|p| {
                p.released
                    .iter()
                    .any(|(r, i)| r == name && *i == e.granted_at)
            }),
        };
        // Nobody can hold it: never granted, released, or its owner failed and every
        // hold it could have has ended.
        let free = |name: &str, e: &RoleEntry| match e.owner {
            None => true,
            Some(o) => {
                confirmed(name, e) || (o != me && !(live(o) && member(o)) && now >= bound(o))
            }
        };
        let mut count = table.len();
        for (name, placement) in &l.roles.requests.add {
            if !table.contains_key(name) && count < MAX_ROLES {
                ops.push(RoleOp::Add {
                    role: name.clone(),
                    placement: placement.clone(),
                });
                count += 1;
            }
        }
        let removing: BTreeSet<&str> = l
            .roles
            .requests
            .remove
            .iter()
            .map(String::as_str)
            .filter(|r| table.contains_key(*r))
            .collect();
        for name in &removing {
            let e = &table[*name];
            if free(name, e) {
                ops.push(RoleOp::Remove {
                    role: name.to_string(),
                });
            } else if !e.releasing && e.owner.is_some_and(live) {
                ops.push(RoleOp::Revoke {
                    role: name.to_string(),
                });
            }
        }
        let candidates: Vec<Candidate> = cfg
            .members
            .iter()
            .filter(|(id, _)| member(**id) && live(**id) && !leaving(**id))
            .map(|(id, m)| Candidate {
                id: *id,
                name: m.name.clone(),
                weight: 1,
            })
            .collect();
        let inputs: Vec<RoleInput<'_>> = table
            .iter()
            .filter(|(name, _)| !removing.contains(name.as_str()))
            // A role being released is planned as if it were free already, so that
            // its move counts on the member it goes to, not on the owner letting go
            // of it: counted on its owner, a newcomer still looked underloaded in
            // the rounds (one per commit) before the release landed, and each round
            // asked more owners for roles, which then went back to their owners or
            // elsewhere. Until the release is confirmed (`free`), no grant is
            // written for it below.
            // So is a role its owner let go of without being asked (a restarted
            // owner's old grant, or a leaver's).
            .map(|(name, e)| RoleInput {
                name,
                owner: if e.releasing || confirmed(name, e) {
                    None
                } else {
                    e.owner
                },
                placement: &e.placement,
                movable: true,
                // Until it confirms, the owner letting go still counts it.
                releasing_from: e.owner.filter(|_| e.releasing && !confirmed(name, e)),
            })
            .collect();
        let index = self.log.last_index() + 1;
        for mv in plan(&inputs, &candidates, self.cfg.max_role_moves) {
            if ops.len() >= MAX_ROLES_PER_ENTRY {
                break;
            }
            let Some(e) = table.get(&mv.role) else {
                continue;
            };
            if e.owner == Some(mv.to) && !e.releasing && !confirmed(&mv.role, e) {
                continue;
            }
            if free(&mv.role, e) {
                ops.push(RoleOp::Grant {
                    role: mv.role.clone(),
                    owner: mv.to,
                    index,
                });
            } else if !e.releasing && e.owner.is_some_and(live) {
                ops.push(RoleOp::Revoke { role: mv.role });
            }
            // Otherwise: its failed owner's last hold has not ended yet; a later
            // round grants it.
        }
        ops
    }

    /// Records what a follower's reply says for roles: its clock (echoed by the
    /// next renewal) and the roles it released. Returns whether it confirmed a
    /// release it had not before.
    pub(super) fn note_role_reply(
        &mut self,
        from: NodeId,
        at: Instant,
        released: Vec<(String, u64)>,
    ) -> bool {
        let Some(l) = self.role.leading_mut() else {
            return false;
        };
        if released.is_empty() {
            l.roles.left.remove(&from);
        }
        let Some(p) = l.progress.get_mut(&from) else {
            return false;
        };
        p.reply_at = Some(at);
        p.fresh_reply = true;
        let news = released.iter().any(|r| !p.released.contains(r));
        p.released = released;
        news
    }
}

fn merge_requests(into: &mut RolesRequest, req: RolesRequest) {
    for (name, placement) in req.add {
        into.remove.retain(|r| *r != name);
        if !into.add.iter().any(|(r, _)| *r == name) {
            into.add.push((name, placement));
        }
    }
    for name in req.remove {
        into.add.retain(|(r, _)| *r != name);
        if !into.remove.contains(&name) {
            into.remove.push(name);
        }
    }
}

/// One row of the role table as [`Status::roles`](crate::Status::roles) shows it.
pub(super) fn role_status(cluster: Option<ClusterId>, name: &str, e: &RoleEntry) -> RoleStatus {
    RoleStatus {
        role: name.to_string(),
        owner: e.owner,
        token: role_token(cluster, e),
        releasing: e.releasing,
        placement: e.placement.clone(),
    }
}

/// Whether `row` is what [`role_status`] makes of `name` and `e` (compared without
/// building it).
pub(super) fn role_status_is(
    row: &RoleStatus,
    cluster: Option<ClusterId>,
    name: &str,
    e: &RoleEntry,
) -> bool {
    row.role == name
        && row.owner == e.owner
        && row.token == role_token(cluster, e)
        && row.releasing == e.releasing
        && row.placement == e.placement
}

/// The token a role row shows: the grant's, while the role has an owner.
fn role_token(cluster: Option<ClusterId>, e: &RoleEntry) -> Option<RoleToken> {
    cluster
        .filter(|_| e.owner.is_some())
        .map(|cluster| RoleToken {
            cluster,
            index: e.granted_at,
        })
}
