//! What a shell or an application may ask of the core: its view at an instant.

use super::role::RaftRole;
use super::roles::{role_status, role_status_is};
use super::ClusterCore;
use crate::config::Config;
use crate::id::{ClusterId, Identity, NodeId};
use crate::membership::Membership;
use crate::roles::OwnedRole;
use crate::status::{FencingToken, MemberStatus, PrimaryInfo, Role, Status};
use crate::time::Instant;

impl ClusterCore {
    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This node's view at `now`.
    pub fn status(&self, now: Instant) -> Status {
        let (lease_until, lease_valid) = match self.role.leading() {
            Some(l) => (Some(l.lease_until), self.lease_valid(now)),
            None => (None, false),
        };
        Status {
            id: self.me.id,
            cluster: self.hard.cluster,
            role: self.app_role(now),
            term: self.hard.term,
            is_leader: self.role.is_leader(),
            primary: self.primary_info(now),
            members: self
                .log
                .committed()
                .members
                .iter()
                .map(|(id, m)| MemberStatus::new(*id, m))
                .collect(),
            commit_index: self.log.commit_index(),
            lease_valid,
            lease_until,
            fencing_token: self.fencing_token(now),
            recovery: self.recovery_status(now),
            roles: self.role_statuses(),
            owned_roles: self.owned_roles(now),
            role_hold_until: self.hold_end(),
        }
    }

    /// Makes `out` this node's view at `now`, exactly what [`status`](Self::status)
    /// returns, reusing what `out` already holds: the member and role lists are
    /// compared in place and only rows that differ are rebuilt. Returns whether `out`
    /// changed.
    ///
    /// For a shell that publishes the view after every input: with named roles, most
    /// inputs change nothing in the lists, and building a new `Status` (a string per
    /// role and per member) and comparing it with the last one cost more than the
    /// input itself.
    ///
    /// `out` must be a view of this node (from [`status`](Self::status) or an earlier
    /// refresh, or `Status::default()`): the member and role lists are compared only
    /// when its node id, cluster or commit index differs from this node's, since one
    /// committed configuration stands at each index of a cluster (P2). Otherwise a
    /// leader would walk its whole member list after every acknowledgement.
    pub fn refresh_status(&self, now: Instant, out: &mut Status) -> bool {
        let (lease_until, lease_valid) = match self.role.leading() {
            Some(l) => (Some(l.lease_until), self.lease_valid(now)),
            None => (None, false),
        };
        let cluster = self.hard.cluster;
        // Every field named (no `..`): a field added to `Status` fails to compile
        // here until it is refreshed too.
        let Status {
            id,
            cluster: out_cluster,
            role,
            term,
            is_leader,
            primary,
            members,
            commit_index,
            lease_valid: out_lease_valid,
            lease_until: out_lease_until,
            fencing_token,
            recovery,
            roles,
            owned_roles,
            role_hold_until,
        } = out;
        // The committed configuration (members, role table) is the same at the same
        // commit index of the same cluster: its rows are compared only when either
        // moved (with 64 roles, comparing the role names after every input was a
        // tenth of a simulated run).
        let same_config = *id == self.me.id
            && *out_cluster == cluster
            && *commit_index == self.log.commit_index();
        let mut changed = false;
        set(id, self.me.id, &mut changed);
        set(out_cluster, cluster, &mut changed);
        set(role, self.app_role(now), &mut changed);
        set(term, self.hard.term, &mut changed);
        set(is_leader, self.role.is_leader(), &mut changed);
        set(primary, self.primary_info(now), &mut changed);
        changed |= !same_config
            && sync_list(
                members,
                self.log.committed().members.iter(),
                |row, (id, m)| {
                    row.id == **id
                        && row.addr == m.addr
                        && row.name == m.name
                        && row.voter == m.voter
                },
                |(id, m)| MemberStatus::new(*id, m),
            );
        set(commit_index, self.log.commit_index(), &mut changed);
        set(out_lease_valid, lease_valid, &mut changed);
        set(out_lease_until, lease_until, &mut changed);
        set(fencing_token, self.fencing_token(now), &mut changed);
        set(recovery, self.recovery_status(now), &mut changed);
        changed |= !same_config
            && sync_list(
                roles,
                self.log.committed().roles.iter(),
                |row, (name, e)| role_status_is(row, cluster, name, e),
                |(name, e)| role_status(cluster, name, e),
            );
        changed |= sync_list(
            owned_roles,
            self.owned_role_parts(now),
            |row, (name, token, release_by)| {
                row.role == **name && row.token == *token && row.release_by == *release_by
            },
            |(name, token, release_by)| OwnedRole {
                role: name.clone(),
                token,
                release_by,
            },
        );
        set(role_hold_until, self.hold_end(), &mut changed);
        changed
    }

    /// Whether this node is primary at `now`: the leader, holding a lease that a
    /// majority acknowledged within the lease window (P6).
    pub fn is_primary(&self, now: Instant) -> bool {
        self.lease_valid(now)
    }

    /// The fencing token at `now`, if this node is primary (P7).
    pub fn fencing_token(&self, now: Instant) -> Option<FencingToken> {
        match (self.hard.cluster, self.lease_valid(now)) {
            (Some(cluster), true) => Some(FencingToken {
                cluster,
                term: self.hard.term,
            }),
            _ => None,
        }
    }

    /// Whether this node is the Raft leader of its term (with or without a lease).
    pub fn is_leader(&self) -> bool {
        self.role.is_leader()
    }

    /// The leader this node follows (itself if it leads), if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.role.leader.as_ref().map(|l| l.0)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.hard.term
    }

    /// The key-value store as this node has applied it (its committed prefix; a
    /// follower's may lag the primary's). For reads with a guarantee, send
    /// `Input::Store`.
    pub fn store_data(&self) -> &crate::store::StoreData {
        self.log.data()
    }

    /// The revision up to which this node has applied the store: its commit index.
    pub fn store_revision(&self) -> crate::store::Revision {
        self.log.commit_index()
    }

    /// The changes to the store this node applied at or after revision `from`,
    /// oldest first (the last [`WATCH_HISTORY`](crate::store::WATCH_HISTORY) are
    /// kept, and none from before a snapshot this node installed); or
    /// `Err(oldest)`, the revision from which they are all kept, if some are not.
    pub fn store_changes(
        &self,
        from: crate::store::Revision,
    ) -> Result<impl Iterator<Item = &crate::store::DataChange>, crate::store::Revision> {
        self.log.changes_since(from)
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> Option<ClusterId> {
        self.hard.cluster
    }

    /// The committed configuration.
    pub fn members(&self) -> &Membership {
        self.log.committed()
    }

    /// The configuration in force (the whole log, committed or not).
    pub fn effective_members(&self) -> &Membership {
        self.log.effective()
    }

    /// The committed configuration's index: two nodes with the same cluster and index
    /// must have the same member list (P2).
    pub fn commit_index(&self) -> u64 {
        self.log.commit_index()
    }

    /// The (term, index) of the last entry in this node's log, committed or not: the
    /// position Raft's election restriction compares.
    pub fn last_log_id(&self) -> (u64, u64) {
        (self.log.last_term(), self.log.last_index())
    }

    /// Whether this node has finished leaving.
    pub fn has_left(&self) -> bool {
        self.leave.left
    }

    // ----- the judgements the answers above share -------------------------------

    pub(super) fn lease_valid(&self, now: Instant) -> bool {
        self.role
            .leading()
            .is_some_and(|l| !l.lease_revoked && now < l.lease_until)
    }

    pub(super) fn app_role(&self, now: Instant) -> Role {
        if self.leave.left || self.hard.cluster.is_none() {
            return Role::Inactive;
        }
        if self.leave.leaving.is_some() {
            return Role::Leaving;
        }
        if self.lease_valid(now) {
            return Role::Primary;
        }
        match (&self.role.raft, &self.role.leader) {
            (RaftRole::Follower, Some((id, _))) if *id != self.me.id => Role::Secondary,
            _ => Role::Candidate,
        }
    }

    pub(super) fn primary_info(&self, now: Instant) -> Option<PrimaryInfo> {
        if self.lease_valid(now) {
            return Some(PrimaryInfo {
                id: self.me.id,
                addr: self.me.addr.clone(),
            });
        }
        match (&self.role.raft, &self.role.leader) {
            (RaftRole::Follower, Some((id, addr))) if *id != self.me.id => Some(PrimaryInfo {
                id: *id,
                addr: addr.clone(),
            }),
            _ => None,
        }
    }
}

/// Sets `*field` to `value`, noting in `changed` whether it differed.
fn set<T: PartialEq>(field: &mut T, value: T, changed: &mut bool) {
    if *field != value {
        *field = value;
        *changed = true;
    }
}

/// Makes `out` the list `items` describes: a row equal to its item (`same`) is kept,
/// any other is replaced by `make(item)`, surplus rows are dropped. Returns whether
/// `out` changed.
fn sync_list<T, I>(
    out: &mut Vec<T>,
    items: impl Iterator<Item = I>,
    same: impl Fn(&T, &I) -> bool,
    make: impl Fn(I) -> T,
) -> bool {
    let mut changed = false;
    let mut n = 0;
    for item in items {
        match out.get_mut(n) {
            Some(row) if same(row, &item) => {}
            Some(row) => {
                *row = make(item);
                changed = true;
            }
            None => {
                out.push(make(item));
                changed = true;
            }
        }
        n += 1;
    }
    if out.len() > n {
        out.truncate(n);
        changed = true;
    }
    changed
}
