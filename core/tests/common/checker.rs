//! Safety invariants, checked after every event of the in-memory network.
//!
//! The simulator has a checker of its own (`sims/src/checker.rs`), on purpose: this
//! one runs inside the core's pure network and reads each `ClusterCore` directly after
//! every event (its Raft leadership, term and committed list, its lease judged on its
//! own exact clock), so it catches a bug at the event that causes it, in tests that
//! build without madsim. The simulator's judges a recorded history of what the shells
//! published (views, lease ends converted from drifting clocks to global time, process
//! starts and stops), so it checks what an application could observe, liveness
//! included. The rules are the same (one leader per term, never two valid leases at
//! one instant, rising fencing tokens, committed lists that never diverge); sharing
//! code would make the core's tests depend on the simulator's record types.
//!
//! Named roles (P13) add two rules, checked the same way: no role has two holders at
//! one instant (each node asked `owns` on its own clock), and the token of each new
//! holder of a role is above the last token seen for it.

use super::net::Node;
use cluster_mode_core::{ClusterId, FencingToken, Instant, NodeId, RoleToken};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

#[derive(Clone, Debug)]
pub struct Violation {
    pub at_ms: u64,
    pub what: String,
}

#[derive(Default)]
pub struct Checker {
    /// (cluster, term) -> the leader seen in it.
    leaders: BTreeMap<(ClusterId, u64), NodeId>,
    /// Slots that have led at some point and may hold a lease.
    leader_slots: BTreeSet<usize>,
    /// cluster -> (primary id, term) of the latest primary.
    last_primary: BTreeMap<ClusterId, (NodeId, u64)>,
    /// cluster founded by a node that was in another cluster -> that cluster (a
    /// recovery's successor -> the cluster it replaced, P11).
    predecessor: BTreeMap<ClusterId, ClusterId>,
    /// (cluster, commit index) -> hash of the committed member list.
    committed: BTreeMap<(ClusterId, u64), u64>,
    /// slot -> (cluster, commit index) last recorded.
    seen_commit: BTreeMap<usize, (ClusterId, u64)>,
    /// role -> the slots that may hold it: every slot that held it at a check of its
    /// own, until a check finds it no longer holds it or its process ends (a superset
    /// of the role's holders at any instant, see `check_roles`).
    role_claims: BTreeMap<String, BTreeSet<usize>>,
    /// slot -> the roles it may hold, each with the token it held it with (`slot` is
    /// in `role_claims[role]` exactly when `role` is in `slot_roles[slot]`).
    slot_roles: BTreeMap<usize, BTreeMap<String, RoleToken>>,
    /// cluster -> role -> (holder, token) of the role's latest holder.
    last_role_owner: BTreeMap<ClusterId, BTreeMap<String, (NodeId, RoleToken)>>,
    pub violations: Vec<Violation>,
    /// Counts, for statistics.
    pub primaries_seen: u64,
    /// Role holders seen (a node holding a role with a token not seen before).
    pub role_owners_seen: u64,
}

impl Checker {
    pub fn node_started(&mut self, slot: usize, _id: NodeId) {
        self.seen_commit.remove(&slot);
        self.forget_roles(slot);
    }

    pub fn node_stopped(&mut self, slot: usize) {
        self.leader_slots.remove(&slot);
        self.forget_roles(slot);
    }

    /// The process in `slot` is gone: it holds nothing any more.
    fn forget_roles(&mut self, slot: usize) {
        for role in self
            .slot_roles
            .remove(&slot)
            .unwrap_or_default()
            .into_keys()
        {
            if let Some(c) = self.role_claims.get_mut(&role) {
                c.remove(&slot);
            }
        }
    }

    fn violate(&mut self, real: u64, what: String) {
        self.violations.push(Violation {
            at_ms: real / 1_000_000,
            what,
        });
    }

    /// Checks every rule after an event of the in-memory network at real time `real`
    /// on `slot`; `local(s)` is node `s`'s own clock at that instant.
    pub fn after_event(
        &mut self,
        real: u64,
        slot: usize,
        nodes: &[Node],
        local: &dyn Fn(usize) -> Instant,
    ) {
        self.observe(real, slot, &Live { nodes, local });
    }

    /// Checks every rule after an event on `slot` at real time `real`, reading the
    /// nodes through `world`: the live network's cores, or a hand-made history in the
    /// checker's self-tests (`tests/checker.rs`).
    pub fn observe(&mut self, real: u64, slot: usize, world: &dyn World) {
        let id = world.id(slot);
        if let Some(cluster) = world.cluster(slot) {
            // One leader per term.
            if world.is_leader(slot) {
                self.leader_slots.insert(slot);
                let term = world.term(slot);
                let prev = *self.leaders.entry((cluster, term)).or_insert(id);
                if prev != id {
                    self.violate(real, format!("two leaders in term {term}: {prev} and {id}"));
                }
            }
            // A cluster first seen on a node that was in another one: that node founded
            // it by a recovery.
            if let Some(&(prev, _)) = self.seen_commit.get(&slot) {
                if prev != cluster && !self.committed.keys().any(|(c, _)| *c == cluster) {
                    self.predecessor.insert(cluster, prev);
                }
            }
            // Committed member lists never diverge.
            let idx = world.commit_index(slot);
            if self.seen_commit.get(&slot) != Some(&(cluster, idx)) {
                self.seen_commit.insert(slot, (cluster, idx));
                let hash = world.members_hash(slot);
                let prev = *self.committed.entry((cluster, idx)).or_insert(hash);
                if prev != hash {
                    self.violate(
                        real,
                        format!(
                            "{} committed a different member list at index {idx}",
                            world.name(slot)
                        ),
                    );
                }
            }
        }
        // At most one primary at this instant, fencing tokens increase.
        let mut primaries = Vec::new();
        for &s in &self.leader_slots {
            if world.alive(s) && world.is_primary(s) {
                primaries.push(s);
            }
        }
        if primaries.len() > 1 {
            let names: Vec<&str> = primaries.iter().map(|s| world.name(*s)).collect();
            self.violate(
                real,
                format!("{} primaries at once: {names:?}", primaries.len()),
            );
        }
        for s in primaries {
            let Some(token) = world.fencing_token(s) else {
                continue;
            };
            let pid = world.id(s);
            match self.last_primary.get(&token.cluster) {
                Some(&(last_id, last_term)) if last_id != pid && token.term <= last_term => {
                    self.violate(
                        real,
                        format!(
                            "fencing token did not increase: {} after {last_term}",
                            token.term
                        ),
                    );
                }
                Some(&(last_id, last_term)) if last_id == pid && token.term < last_term => {
                    self.violate(real, "fencing token went backwards".into());
                }
                Some(&(last_id, last_term)) if last_id == pid && token.term == last_term => {}
                _ => {
                    self.primaries_seen += 1;
                    self.last_primary.insert(token.cluster, (pid, token.term));
                    let before = self.predecessor.get(&token.cluster).map(|p| FencingToken {
                        cluster: *p,
                        term: self.last_primary.get(p).map_or(0, |l| l.1),
                    });
                    if let Some(why) = token_across_recovery(before, token) {
                        self.violate(real, why);
                    }
                }
            }
        }
        if !self.leader_slots.is_empty() {
            self.leader_slots
                .retain(|s| world.alive(*s) && world.is_leader(*s));
        }
        self.check_roles(real, slot, world);
    }

    /// The role rules after an event on `slot`: no role held by two nodes at this
    /// instant, and each new holder's token above the last one of the role.
    ///
    /// `slot_roles[slot]` keeps the roles `slot` held at a check of its own, with their
    /// tokens, until a check of another holder of the role finds `slot` no longer
    /// holding it (or `slot`'s process ends); `role_claims` is the same relation by
    /// role. A role `slot` holds that is not in `slot_roles[slot]` with the same token
    /// is *fresh*: only fresh roles are checked against the other claimants, and only
    /// they can carry a new token. That is enough because between two events of a
    /// node its holds can only run out (a hold, a lease and a drain deadline each end
    /// at an instant of its clock): if A and B hold a role at one instant, look at the
    /// last fresh checks of the role by each, say B's came second. A was a claimant
    /// then (it held the role from its own fresh check on; had a check found it not
    /// holding in between, its role would have been fresh again later), so B's check
    /// asked A, on A's clock, and A held it: the overlap is reported at that event.
    fn check_roles(&mut self, real: u64, slot: usize, world: &dyn World) {
        if !world.alive(slot) {
            return;
        }
        // Allocation-free unless a role is fresh.
        let mut fresh: Vec<(String, RoleToken)> = Vec::new();
        {
            let known = self.slot_roles.get(&slot);
            world.for_each_owned_role(slot, &mut |role, token| {
                if known.and_then(|k| k.get(role)) != Some(&token) {
                    fresh.push((role.to_string(), token));
                }
            });
        }
        if fresh.is_empty() {
            return;
        }
        // One holder at a time: every other claimant must have let go by now (on its
        // own clock).
        let mut overlaps: Vec<(usize, String)> = Vec::new();
        let mut pruned: Vec<(usize, String)> = Vec::new();
        for (role, _) in &fresh {
            for &o in self.role_claims.get(role).into_iter().flatten() {
                if o == slot {
                    continue;
                }
                if world.alive(o) && world.owns(o, role).is_some() {
                    overlaps.push((o, role.clone()));
                } else {
                    pruned.push((o, role.clone()));
                }
            }
        }
        for (o, role) in overlaps {
            let what = format!(
                "role {role} held by two nodes at once: {} and {}",
                world.name(o),
                world.name(slot)
            );
            self.violate(real, what);
        }
        for (o, role) in pruned {
            self.unclaim(o, &role);
        }
        let id = world.id(slot);
        let who = world.name(slot);
        for (role, token) in fresh {
            // Rising tokens.
            let prev = self
                .last_role_owner
                .get(&token.cluster)
                .and_then(|m| m.get(&role))
                .copied();
            match prev {
                Some((owner, t)) if owner != id && token <= t => self.violate(
                    real,
                    format!(
                        "role token did not increase: {role} held by {who} with {} after {}",
                        token.index, t.index
                    ),
                ),
                Some((owner, t)) if owner == id && token < t => self.violate(
                    real,
                    format!(
                        "role token went backwards: {role} held by {who} with {} after {}",
                        token.index, t.index
                    ),
                ),
                Some((owner, t)) if owner == id && token == t => {}
                _ => {
                    self.role_owners_seen += 1;
                    // The first holder of the role in a cluster founded by a recovery:
                    // above every token of the cluster it replaced (P11).
                    let replaced = self
                        .predecessor
                        .get(&token.cluster)
                        .filter(|_| prev.is_none())
                        .and_then(|p| self.last_role_owner.get(p))
                        .and_then(|m| m.get(&role))
                        .map(|(_, t)| *t);
                    if let Some(b) = replaced.filter(|b| token <= *b) {
                        self.violate(
                            real,
                            format!(
                                "role token did not increase across a recovery: {role} {token} after {b}"
                            ),
                        );
                    }
                    self.last_role_owner
                        .entry(token.cluster)
                        .or_default()
                        .insert(role.clone(), (id, token));
                }
            }
            self.role_claims
                .entry(role.clone())
                .or_default()
                .insert(slot);
            self.slot_roles.entry(slot).or_default().insert(role, token);
        }
    }

    /// `slot` no longer holds `role` (it let go, or a check found its hold over).
    fn unclaim(&mut self, slot: usize, role: &str) {
        if let Some(c) = self.role_claims.get_mut(role) {
            c.remove(&slot);
        }
        if let Some(r) = self.slot_roles.get_mut(&slot) {
            r.remove(role);
            if r.is_empty() {
                self.slot_roles.remove(&slot);
            }
        }
    }

    /// The number of distinct clusters ever formed.
    pub fn clusters(&self) -> usize {
        self.committed
            .keys()
            .map(|(c, _)| *c)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// What the checker reads of node `slot` at the instant it checks. Each node's
/// primacy is judged on its own clock.
pub trait World {
    /// The node's trace name.
    fn name(&self, slot: usize) -> &str;
    /// Whether the process runs (a crashed node holds no lease).
    fn alive(&self, slot: usize) -> bool;
    /// Its identity.
    fn id(&self, slot: usize) -> NodeId;
    /// The cluster it belongs to, if any.
    fn cluster(&self, slot: usize) -> Option<ClusterId>;
    /// Its current term.
    fn term(&self, slot: usize) -> u64;
    /// Whether it is the Raft leader of its term.
    fn is_leader(&self, slot: usize) -> bool;
    /// Whether it is primary now (a valid lease on its own clock).
    fn is_primary(&self, slot: usize) -> bool;
    /// Its fencing token now, if primary.
    fn fencing_token(&self, slot: usize) -> Option<FencingToken>;
    /// Its committed configuration's index.
    fn commit_index(&self, slot: usize) -> u64;
    /// A hash of its committed member list (only asked when the index moved).
    fn members_hash(&self, slot: usize) -> u64;
    /// Calls `f` with each role it holds now (its own clock) and its token.
    fn for_each_owned_role(&self, slot: usize, f: &mut dyn FnMut(&str, RoleToken));
    /// Its token for `role` if it holds it now.
    fn owns(&self, slot: usize, role: &str) -> Option<RoleToken>;
}

/// The in-memory network's nodes, each read at its own local clock.
struct Live<'a> {
    nodes: &'a [Node],
    local: &'a dyn Fn(usize) -> Instant,
}

impl World for Live<'_> {
    fn name(&self, slot: usize) -> &str {
        &self.nodes[slot].name
    }
    fn alive(&self, slot: usize) -> bool {
        self.nodes[slot].alive
    }
    fn id(&self, slot: usize) -> NodeId {
        self.nodes[slot].core.identity().id
    }
    fn cluster(&self, slot: usize) -> Option<ClusterId> {
        self.nodes[slot].core.cluster()
    }
    fn term(&self, slot: usize) -> u64 {
        self.nodes[slot].core.term()
    }
    fn is_leader(&self, slot: usize) -> bool {
        self.nodes[slot].core.is_leader()
    }
    fn is_primary(&self, slot: usize) -> bool {
        self.nodes[slot].core.is_primary((self.local)(slot))
    }
    fn fencing_token(&self, slot: usize) -> Option<FencingToken> {
        self.nodes[slot].core.fencing_token((self.local)(slot))
    }
    fn commit_index(&self, slot: usize) -> u64 {
        self.nodes[slot].core.commit_index()
    }
    fn members_hash(&self, slot: usize) -> u64 {
        let mut h = DefaultHasher::new();
        self.nodes[slot].core.members().hash(&mut h);
        h.finish()
    }
    fn for_each_owned_role(&self, slot: usize, f: &mut dyn FnMut(&str, RoleToken)) {
        // Asks `owns` for each role the committed table gives it: the same answer as
        // `owned_roles`, without an allocation per event.
        let core = &self.nodes[slot].core;
        let me = Some(core.identity().id);
        let now = (self.local)(slot);
        for (role, e) in &core.members().roles {
            if e.owner == me {
                if let Some(token) = core.owns(now, role) {
                    f(role, token);
                }
            }
        }
    }
    fn owns(&self, slot: usize, role: &str) -> Option<RoleToken> {
        self.nodes[slot].core.owns((self.local)(slot), role)
    }
}

/// A primary of a cluster founded by a recovery must hold a token above every token
/// of the cluster it replaced (`before`: that cluster with the last term a primary of
/// it held), so that a store fenced by the old cluster accepts the successor (P7,
/// P11). `None` when the rule holds or there is no predecessor (a cold start).
pub fn token_across_recovery(before: Option<FencingToken>, new: FencingToken) -> Option<String> {
    match before {
        Some(b) if new <= b => Some(format!(
            "fencing token did not increase across a recovery: {:?} term {} after {:?} term {}",
            new.cluster, new.term, b.cluster, b.term
        )),
        _ => None,
    }
}
