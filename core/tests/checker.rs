//! Self-tests of the invariant checker (`common/checker.rs`) on hand-made histories:
//! each rule must flag the history that breaks it, or the suites that rely on it
//! prove nothing.

mod common;

use cluster_mode_core::{ClusterId, FencingToken, NodeId, RoleToken};
use common::checker::{token_across_recovery, Checker, World};

fn token(epoch: u32, random: u128, term: u64) -> FencingToken {
    FencingToken {
        cluster: ClusterId::with_epoch(epoch, random),
        term,
    }
}

#[test]
fn a_recovered_cluster_must_start_above_the_cluster_it_replaced() {
    let old = token(1, 0xffff, 9);
    // A successor one epoch up is above every token of its predecessor, whatever its
    // random bits and its term.
    assert_eq!(token_across_recovery(Some(old), token(2, 0, 1)), None);
    // A successor that kept the old epoch (a broken recovery) and drew smaller random
    // bits is flagged.
    let why = token_across_recovery(Some(old), token(1, 0x1, 1));
    assert!(
        why.is_some_and(|w| w.contains("did not increase across a recovery")),
        "a token below the replaced cluster's must be flagged"
    );
    // A successor below its predecessor's epoch (a stale survivor's lower epoch).
    assert!(token_across_recovery(Some(token(3, 0x5, 2)), token(2, 0x9, 7)).is_some());
    // A cold start has no predecessor.
    assert_eq!(token_across_recovery(None, token(1, 2, 1)), None);
}

/// One node of a hand-made history, as the checker reads it.
#[derive(Clone)]
struct HandNode {
    name: String,
    alive: bool,
    id: NodeId,
    cluster: Option<ClusterId>,
    term: u64,
    is_leader: bool,
    primary: bool,
    commit_index: u64,
    members_hash: u64,
    /// The roles it holds at this instant, with their grant indices.
    roles: Vec<(String, u64)>,
}

/// A hand-made history: the test sets a node's state, then tells the checker that
/// this node had an event (as the in-memory network does after every input).
struct Hand {
    nodes: Vec<HandNode>,
    checker: Checker,
    now_ms: u64,
}

impl World for Hand {
    fn name(&self, slot: usize) -> &str {
        &self.nodes[slot].name
    }
    fn alive(&self, slot: usize) -> bool {
        self.nodes[slot].alive
    }
    fn id(&self, slot: usize) -> NodeId {
        self.nodes[slot].id
    }
    fn cluster(&self, slot: usize) -> Option<ClusterId> {
        self.nodes[slot].cluster
    }
    fn term(&self, slot: usize) -> u64 {
        self.nodes[slot].term
    }
    fn is_leader(&self, slot: usize) -> bool {
        self.nodes[slot].is_leader
    }
    fn is_primary(&self, slot: usize) -> bool {
        self.nodes[slot].primary
    }
    fn fencing_token(&self, slot: usize) -> Option<FencingToken> {
        let n = &self.nodes[slot];
        match (n.primary, n.cluster) {
            (true, Some(cluster)) => Some(FencingToken {
                cluster,
                term: n.term,
            }),
            _ => None,
        }
    }
    fn commit_index(&self, slot: usize) -> u64 {
        self.nodes[slot].commit_index
    }
    fn members_hash(&self, slot: usize) -> u64 {
        self.nodes[slot].members_hash
    }
    fn for_each_owned_role(&self, slot: usize, f: &mut dyn FnMut(&str, RoleToken)) {
        let n = &self.nodes[slot];
        if let Some(cluster) = n.cluster {
            for (role, index) in &n.roles {
                f(
                    role,
                    RoleToken {
                        cluster,
                        index: *index,
                    },
                );
            }
        }
    }
    fn owns(&self, slot: usize, role: &str) -> Option<RoleToken> {
        let n = &self.nodes[slot];
        let cluster = n.cluster?;
        n.roles
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, index)| RoleToken {
                cluster,
                index: *index,
            })
    }
}

impl Hand {
    /// `count` followers of cluster `X` in term 1, every one with the same committed
    /// list (hash 100) at index 1.
    fn new(count: usize) -> Self {
        let mut h = Hand {
            nodes: (0..count)
                .map(|s| HandNode {
                    name: format!("n{}", s + 1),
                    alive: true,
                    id: NodeId(10 + s as u128),
                    cluster: Some(ClusterId::with_epoch(1, 7)),
                    term: 1,
                    is_leader: false,
                    primary: false,
                    commit_index: 1,
                    members_hash: 100,
                    roles: Vec::new(),
                })
                .collect(),
            checker: Checker::default(),
            now_ms: 0,
        };
        for s in 0..count {
            h.event(s);
        }
        h
    }

    /// An event on `slot`, 10 ms after the previous one.
    fn event(&mut self, slot: usize) {
        self.now_ms += 10;
        let mut checker = std::mem::take(&mut self.checker);
        checker.observe(self.now_ms * 1_000_000, slot, self);
        self.checker = checker;
    }

    /// `slot` wins `term` and holds a lease.
    fn lead(&mut self, slot: usize, term: u64) {
        let n = &mut self.nodes[slot];
        n.term = term;
        n.is_leader = true;
        n.primary = true;
        self.event(slot);
    }

    /// `slot` learns of `term` and follows.
    fn follow(&mut self, slot: usize, term: u64) {
        let n = &mut self.nodes[slot];
        n.term = term;
        n.is_leader = false;
        n.primary = false;
        self.event(slot);
    }

    /// `slot` commits the list `hash` at `index`.
    fn commit(&mut self, slot: usize, index: u64, hash: u64) {
        let n = &mut self.nodes[slot];
        n.commit_index = index;
        n.members_hash = hash;
        self.event(slot);
    }

    /// `slot` holds exactly `roles` (name, grant index) from now on.
    fn hold(&mut self, slot: usize, roles: &[(&str, u64)]) {
        self.nodes[slot].roles = roles.iter().map(|(r, i)| (r.to_string(), *i)).collect();
        self.event(slot);
    }

    fn violations(&self) -> Vec<String> {
        self.checker
            .violations
            .iter()
            .map(|v| v.what.clone())
            .collect()
    }

    fn assert_clean(&self) {
        assert!(self.violations().is_empty(), "{:?}", self.violations());
    }

    fn assert_caught(&self, what: &str) {
        let v = self.violations();
        assert!(
            v.iter().any(|x| x.contains(what)),
            "expected a violation containing {what:?}, got {v:?}"
        );
    }
}

#[test]
fn a_clean_history_of_handovers_passes() {
    let mut h = Hand::new(3);
    h.lead(0, 2);
    h.commit(0, 2, 200);
    h.follow(1, 2);
    h.commit(1, 2, 200);
    // n2 takes over only after n1's lease is gone: n1 steps down first.
    h.follow(0, 3);
    h.lead(1, 3);
    h.follow(2, 3);
    h.commit(2, 2, 200);
    // A primary that stays primary across its own events keeps its token.
    h.event(1);
    h.event(1);
    h.assert_clean();
    assert_eq!(h.checker.primaries_seen, 2);
}

#[test]
fn two_overlapping_primaries_are_caught() {
    let mut h = Hand::new(3);
    h.lead(0, 2);
    // n2 is elected in term 3 while n1 still holds its lease of term 2 (a lease
    // measured on a clock that ran slow, or never revoked).
    h.lead(1, 3);
    h.assert_caught("2 primaries at once");
    // The overlap is seen at any node's event, not only the new primary's.
    let mut h = Hand::new(3);
    h.lead(0, 2);
    h.nodes[1].term = 3;
    h.nodes[1].is_leader = true;
    h.event(1);
    h.assert_clean();
    h.nodes[1].primary = true;
    h.event(2);
    h.assert_caught("2 primaries at once");
}

#[test]
fn a_crashed_primary_does_not_overlap_its_successor() {
    let mut h = Hand::new(3);
    h.lead(0, 2);
    h.nodes[0].alive = false;
    h.checker.node_stopped(0);
    h.lead(1, 3);
    h.assert_clean();
}

#[test]
fn a_falling_fencing_token_is_caught() {
    // A successor whose term is not above its predecessor's: a store fenced by term 3
    // would accept the new primary's writes in term 2.
    let mut h = Hand::new(3);
    h.lead(0, 3);
    h.follow(0, 3);
    h.lead(1, 2);
    h.assert_caught("fencing token did not increase: 2 after 3");
    // The same term twice, by two nodes (also two leaders in one term).
    let mut h = Hand::new(3);
    h.lead(0, 3);
    h.follow(0, 3);
    h.lead(1, 3);
    h.assert_caught("fencing token did not increase: 3 after 3");
    h.assert_caught("two leaders in term 3");
    // One primary whose own token goes back.
    let mut h = Hand::new(3);
    h.lead(0, 3);
    h.nodes[0].term = 2;
    h.event(0);
    h.assert_caught("fencing token went backwards");
}

#[test]
fn two_leaders_in_one_term_are_caught() {
    // Neither holds a lease: the rule is about Raft leadership alone.
    let mut h = Hand::new(3);
    for s in [0, 1] {
        h.nodes[s].term = 4;
        h.nodes[s].is_leader = true;
        h.event(s);
    }
    h.assert_caught("two leaders in term 4");
    assert!(h.violations().iter().all(|v| !v.contains("primaries")));
}

#[test]
fn diverged_member_lists_are_caught() {
    let mut h = Hand::new(3);
    h.lead(0, 2);
    h.commit(0, 2, 200);
    h.commit(1, 2, 200);
    h.assert_clean();
    // n3 committed another list at the same index of the same cluster.
    h.commit(2, 2, 300);
    h.assert_caught("n3 committed a different member list at index 2");
    // The same index in another cluster is another log: no violation.
    let mut h = Hand::new(2);
    h.nodes[1].cluster = Some(ClusterId::with_epoch(2, 1));
    h.commit(0, 2, 200);
    h.commit(1, 2, 300);
    assert!(
        h.violations()
            .iter()
            .all(|v| !v.contains("different member list")),
        "{:?}",
        h.violations()
    );
}

#[test]
fn a_clean_history_of_role_moves_passes() {
    let mut h = Hand::new(3);
    h.hold(0, &[("shard-0", 5), ("shard-1", 5)]);
    h.hold(1, &[("shard-2", 5)]);
    // shard-1 moves from n1 to n2: n1 lets go first, n2 takes it with a later grant.
    h.hold(0, &[("shard-0", 5)]);
    h.hold(1, &[("shard-2", 5), ("shard-1", 8)]);
    // A holder keeps its token across its own events.
    h.event(1);
    h.hold(1, &[("shard-2", 5), ("shard-1", 8)]);
    // A crashed holder holds nothing: its role may go elsewhere.
    h.nodes[0].alive = false;
    h.checker.node_stopped(0);
    h.hold(2, &[("shard-0", 9)]);
    h.assert_clean();
    assert_eq!(h.checker.role_owners_seen, 5);
}

#[test]
fn two_holders_of_a_role_and_a_falling_role_token_are_caught() {
    // The bad history holds both kinds: n2 takes shard-1 while n1 still holds it, and
    // later n3 takes shard-0 with a token below n1's.
    let mut h = Hand::new(3);
    h.hold(0, &[("shard-0", 7), ("shard-1", 7)]);
    h.hold(1, &[("shard-1", 9)]);
    h.assert_caught("role shard-1 held by two nodes at once: n1 and n2");
    h.hold(0, &[]);
    h.hold(2, &[("shard-0", 6)]);
    h.assert_caught("role token did not increase: shard-0 held by n3 with 6 after 7");
    assert_eq!(h.violations().len(), 2, "{:?}", h.violations());

    // The overlap is caught at the event of whichever holder comes second, even when
    // the first one's hold was taken long before.
    let mut h = Hand::new(3);
    h.hold(2, &[("shard-3", 4)]);
    h.event(0);
    h.event(1);
    h.hold(1, &[("shard-3", 11)]);
    h.assert_caught("role shard-3 held by two nodes at once: n3 and n2");

    // The same token on two nodes one after the other (a grant replayed).
    let mut h = Hand::new(2);
    h.hold(0, &[("shard-0", 7)]);
    h.hold(0, &[]);
    h.hold(1, &[("shard-0", 7)]);
    h.assert_caught("role token did not increase: shard-0 held by n2 with 7 after 7");

    // One holder whose own token goes back.
    let mut h = Hand::new(2);
    h.hold(0, &[("shard-0", 7)]);
    h.hold(0, &[("shard-0", 3)]);
    h.assert_caught("role token went backwards: shard-0 held by n1 with 3 after 7");
}

#[test]
fn a_role_token_must_rise_across_a_recovery() {
    let mut h = Hand::new(2);
    h.hold(0, &[("shard-0", 40)]);
    h.nodes[0].alive = false;
    h.checker.node_stopped(0);
    // n2 founds a successor that kept epoch 1 and drew smaller random bits (a broken
    // recovery): its first holder's token, (epoch 1, 3, 2), is below (epoch 1, 7, 40).
    h.nodes[1].cluster = Some(ClusterId::with_epoch(1, 3));
    h.nodes[1].commit_index = 2;
    h.hold(1, &[("shard-0", 2)]);
    h.assert_caught("role token did not increase across a recovery: shard-0");
    // A successor one epoch up is above, whatever its index.
    let mut h = Hand::new(2);
    h.hold(0, &[("shard-0", 40)]);
    h.nodes[0].alive = false;
    h.checker.node_stopped(0);
    h.nodes[1].cluster = Some(ClusterId::with_epoch(2, 3));
    h.nodes[1].commit_index = 2;
    h.hold(1, &[("shard-0", 2)]);
    h.assert_clean();
}
