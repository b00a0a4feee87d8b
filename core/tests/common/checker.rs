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

use super::net::Node;
use cluster_mode_core::{ClusterId, FencingToken, Instant, NodeId};
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
    pub violations: Vec<Violation>,
    /// Counts, for statistics.
    pub primaries_seen: u64,
}

impl Checker {
    pub fn node_started(&mut self, slot: usize, _id: NodeId) {
        self.seen_commit.remove(&slot);
    }

    pub fn node_stopped(&mut self, slot: usize) {
        self.leader_slots.remove(&slot);
    }

    fn violate(&mut self, real: u64, what: String) {
        self.violations.push(Violation {
            at_ms: real / 1_000_000,
            what,
        });
    }

    pub fn after_event(
        &mut self,
        real: u64,
        slot: usize,
        nodes: &[Node],
        local: &dyn Fn(usize) -> Instant,
    ) {
        let node = &nodes[slot];
        let core = &node.core;
        let id = core.identity().id;
        if let Some(cluster) = core.cluster() {
            // One leader per term.
            if core.is_leader() {
                self.leader_slots.insert(slot);
                let prev = *self.leaders.entry((cluster, core.term())).or_insert(id);
                if prev != id {
                    self.violate(
                        real,
                        format!("two leaders in term {}: {prev} and {id}", core.term()),
                    );
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
            let idx = core.commit_index();
            if self.seen_commit.get(&slot) != Some(&(cluster, idx)) {
                self.seen_commit.insert(slot, (cluster, idx));
                let mut h = DefaultHasher::new();
                core.members().hash(&mut h);
                let hash = h.finish();
                let prev = *self.committed.entry((cluster, idx)).or_insert(hash);
                if prev != hash {
                    self.violate(
                        real,
                        format!(
                            "{} committed a different member list at index {idx}",
                            node.name
                        ),
                    );
                }
            }
        }
        // At most one primary at this instant, fencing tokens increase.
        let mut primaries = Vec::new();
        for &s in &self.leader_slots {
            let n = &nodes[s];
            if n.alive && n.core.is_primary(local(s)) {
                primaries.push(s);
            }
        }
        if primaries.len() > 1 {
            let names: Vec<&str> = primaries.iter().map(|s| nodes[*s].name.as_str()).collect();
            self.violate(
                real,
                format!("{} primaries at once: {names:?}", primaries.len()),
            );
        }
        for s in primaries {
            let c = &nodes[s].core;
            let Some(token) = c.fencing_token(local(s)) else {
                continue;
            };
            let pid = c.identity().id;
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
                .retain(|s| nodes[*s].alive && nodes[*s].core.is_leader());
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
