//! Role placement: which member owns each named role (for example `shard-0..shard-63`).
//!
//! [`plan`] is a pure function the primary calls each round with the roles, their current
//! owners and the members that may own roles; it returns the [`Move`]s to write to the
//! log. No IO, clock, global randomness or hash-map iteration order: same input, same
//! output. Its rules:
//!
//! 1. **Desired owner** by weighted rendezvous hashing (HRW): each (role, member) pair
//!    gets a score `weight / -ln(u)`, `u` in (0, 1) from a 64-bit hash of the role's name
//!    and the member's id; a role ranks members by score. With equal weights this is
//!    plain HRW, and a member joining or leaving changes only the roles it wins or held.
//! 2. **Bounded load**: the planner never puts a role on a member at or above its [`cap`],
//!    `ceil(1.25 × placeable × weight / total_weight)`, so no member ends above it
//!    (pinned and non-movable roles excepted: they are not the planner's choice).
//! 3. **Orphans** (owner `None` or not a candidate) go to the first member of their
//!    ranking below its cap, always, without counting against `max_moves`.
//! 4. An owned role **keeps its owner**, unless (a) the owner is above its cap: it sheds
//!    the roles that rank it lowest first; (b) it is pinned to another present member, or
//!    a member it prefers over its owner is below its cap; or (c) rebalancing: the first
//!    member of its ranking below cap is not its owner and is *underloaded* (load below
//!    `floor(placeable × weight / total_weight)`), so a new member receives the roles HRW
//!    gives it, up to its fair share. At most `max_moves` such moves per call.
//! 5. A role pinned to an absent member stays where it is (owned or not).
//! 6. A role with `movable == false` is left as it is; its load counts on its owner.
//! 7. Moves are sorted by role name; each role moves at most once per call.
//! 8. A member of weight 0 receives nothing (and sheds what it holds, `max_moves` at a
//!    time: remove it from the candidates to free its roles at once). No members, no moves.
//!
//! Trade-offs. The 25% slack over the fair share keeps moves rare: a member is relieved
//! only when clearly overloaded, at the price of loads up to 1.25× the mean. Rebalancing
//! stops at the floor of the fair share, so a joining member takes about `roles / members`
//! roles, all from others' HRW overflow, and nothing moves between old members; HRW's
//! own spread is corrected only beyond the cap. Scores use `f64::ln`: exact across
//! builds of the same target, but another libm could order a near tie differently. That
//! is harmless because only the primary plans and followers apply the logged moves.
//! Every call is `O(roles × members × log members)`.

use crate::{NodeId, SplitMix64};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a role may be placed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Placement {
    /// Any member, by weighted rendezvous hashing under the caps.
    #[default]
    Any,
    /// Only a member with this name owns it, even above its cap; a role pinned to an
    /// absent member stays where it is (unowned if it was).
    Pinned(String),
    /// The first listed member (by name) that is a candidate and below its cap; otherwise
    /// as [`Placement::Any`].
    Prefer(Vec<String>),
}

/// A member that may own roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Its id; the first candidate of a repeated id wins.
    pub id: NodeId,
    /// The name [`Placement::Pinned`] and [`Placement::Prefer`] refer to, if any.
    pub name: Option<String>,
    /// Its relative capacity; 0 owns nothing.
    pub weight: u32,
}

/// One role as the planner sees it. Role names should be distinct.
#[derive(Clone, Copy, Debug)]
pub struct RoleInput<'a> {
    /// The role's name: the hash key, and the order of the moves.
    pub name: &'a str,
    /// The member that owns it now, if any.
    pub owner: Option<NodeId>,
    /// How it may be placed.
    pub placement: &'a Placement,
    /// False while a move of this role is in flight: the planner leaves it where it is
    /// and counts it on its owner.
    pub movable: bool,
}

/// One decision: `role` is to be owned by `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The role's name.
    pub role: String,
    /// The owner given in the input (possibly a member no longer among the candidates).
    pub from: Option<NodeId>,
    /// The new owner.
    pub to: NodeId,
}

/// The most roles a member of `weight` may be given:
/// `ceil(1.25 × placeable × weight / total_weight)`, at least 1 if `weight > 0`, 0 if
/// `weight` or `total_weight` is 0. Integer arithmetic, no overflow.
pub fn cap(placeable: usize, weight: u32, total_weight: u64) -> usize {
    if weight == 0 || total_weight == 0 {
        return 0;
    }
    let num = 5 * placeable as u128 * u128::from(weight);
    let cap = num.div_ceil(4 * u128::from(total_weight)).max(1);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// `floor(placeable × weight / total_weight)`: below it a member is underloaded.
fn fair_share(placeable: usize, weight: u32, total_weight: u64) -> usize {
    let share = placeable as u128 * u128::from(weight) / u128::from(total_weight.max(1));
    usize::try_from(share).unwrap_or(usize::MAX)
}

/// The weighted HRW score of `node` for `role`: FNV-1a over the name, SplitMix64 mixing
/// with the id's two halves.
fn score(role: &str, node: NodeId, weight: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in role.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let h = SplitMix64::new(h ^ node.0 as u64).next_u64();
    let h = SplitMix64::new(h ^ (node.0 >> 64) as u64).next_u64();
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64; // in (0, 1)
    f64::from(weight) / -u.ln()
}

/// The members (weight > 0) a role may go to, best first, and how many leading ones
/// its placement names (all of them for `Pinned`).
fn ranking(role: &str, placement: &Placement, active: &[&Candidate]) -> (Vec<NodeId>, usize) {
    let mut by_score: Vec<(f64, &Candidate)> = active
        .iter()
        .map(|c| (score(role, c.id, c.weight), *c))
        .collect();
    by_score.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    let ids = |it: &[(f64, &Candidate)]| it.iter().map(|c| c.1.id).collect::<Vec<_>>();
    match placement {
        Placement::Any => (ids(&by_score), 0),
        Placement::Pinned(name) => {
            by_score.retain(|c| c.1.name.as_ref() == Some(name));
            (ids(&by_score), by_score.len())
        }
        Placement::Prefer(names) => {
            let listed = |c: &Candidate| names.iter().position(|n| c.name.as_ref() == Some(n));
            // Stable: listed members in list order, then the rest, each group by score.
            by_score.sort_by_key(|c| listed(c.1).unwrap_or(usize::MAX));
            let named = by_score.iter().filter(|c| listed(c.1).is_some()).count();
            (ids(&by_score), named)
        }
    }
}

/// The mutable part of one planning round.
struct Round<'r, 'a> {
    roles: &'r [RoleInput<'a>],
    caps: BTreeMap<NodeId, usize>,
    owner: Vec<Option<NodeId>>,
    load: BTreeMap<NodeId, usize>,
    moved: Vec<bool>,
    moves: Vec<Move>,
}

impl Round<'_, '_> {
    /// Whether role `i` may be on `id` without `id` going above its cap.
    fn room(&self, i: usize, id: NodeId) -> bool {
        self.load[&id] - usize::from(self.owner[i] == Some(id)) < self.caps[&id]
    }

    /// The first member of `rank` with room for role `i`.
    fn first_with_room(&self, i: usize, rank: &[NodeId]) -> Option<NodeId> {
        rank.iter().copied().find(|&id| self.room(i, id))
    }

    fn apply(&mut self, i: usize, to: NodeId) {
        if let Some(from) = self.owner[i] {
            *self.load.get_mut(&from).expect("owners are present") -= 1;
        }
        *self.load.get_mut(&to).expect("targets are present") += 1;
        self.owner[i] = Some(to);
        self.moved[i] = true;
        let (role, from) = (self.roles[i].name.to_owned(), self.roles[i].owner);
        self.moves.push(Move { role, from, to });
    }
}

/// The moves for one round; see the [module documentation](self) for the rules.
pub fn plan(roles: &[RoleInput<'_>], candidates: &[Candidate], max_moves: usize) -> Vec<Move> {
    let mut present: BTreeMap<NodeId, &Candidate> = BTreeMap::new();
    for c in candidates {
        present.entry(c.id).or_insert(c);
    }
    let total: u64 = present.values().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return Vec::new();
    }
    let active: Vec<&Candidate> = present.values().copied().filter(|c| c.weight > 0).collect();
    let owner: Vec<Option<NodeId>> = roles
        .iter()
        .map(|r| r.owner.filter(|o| present.contains_key(o)))
        .collect();
    let ranks: Vec<(Vec<NodeId>, usize)> = roles
        .iter()
        .map(|r| ranking(r.name, r.placement, &active))
        .collect();
    let pinned = |i: usize| matches!(roles[i].placement, Placement::Pinned(_));
    // Placeable: all but the roles pinned to an absent member that no candidate holds.
    let placeable = (0..roles.len())
        .filter(|&i| !(pinned(i) && ranks[i].0.is_empty() && owner[i].is_none()))
        .count();
    let weight = |id: &NodeId| present[id].weight;
    let mut load: BTreeMap<NodeId, usize> = present.keys().map(|&id| (id, 0)).collect();
    for o in owner.iter().flatten() {
        *load.entry(*o).or_default() += 1;
    }
    let mut r = Round {
        roles,
        caps: present
            .keys()
            .map(|id| (*id, cap(placeable, weight(id), total)))
            .collect(),
        owner,
        load,
        moved: vec![false; roles.len()],
        moves: Vec::new(),
    };
    let mut order: Vec<usize> = (0..roles.len()).collect();
    order.sort_by_key(|&i| roles[i].name);
    let mut budget = max_moves;

    // 3. Orphans, free of charge.
    for &i in &order {
        if roles[i].movable && r.owner[i].is_none() {
            let rank = &ranks[i].0;
            let to = if pinned(i) {
                rank.first().copied()
            } else {
                r.first_with_room(i, rank)
            };
            if let Some(to) = to {
                r.apply(i, to);
            }
        }
    }
    // 4a. Shedding: a member above its cap gives up the roles that rank it lowest.
    for id in present.keys().copied() {
        let mut mine: Vec<(usize, usize)> = (0..roles.len())
            .filter(|&i| r.owner[i] == Some(id) && roles[i].movable && !r.moved[i] && !pinned(i))
            .map(|i| {
                (
                    ranks[i]
                        .0
                        .iter()
                        .position(|&n| n == id)
                        .unwrap_or(usize::MAX),
                    i,
                )
            })
            .collect();
        mine.sort_by(|a, b| b.0.cmp(&a.0).then(roles[a.1].name.cmp(roles[b.1].name)));
        for (_, i) in mine {
            if r.load[&id] <= r.caps[&id] || budget == 0 {
                break;
            }
            if let Some(to) = r.first_with_room(i, &ranks[i].0) {
                r.apply(i, to);
                budget -= 1;
            }
        }
    }
    // 4b (pinned elsewhere, or a preferred member with room) and 4c (rebalancing).
    for &i in &order {
        let Some(o) = r.owner[i] else { continue };
        if budget == 0 || r.moved[i] || !roles[i].movable {
            continue;
        }
        let (rank, named) = (&ranks[i].0, ranks[i].1);
        let pos = rank.iter().position(|&n| n == o).unwrap_or(rank.len());
        let to = if pinned(i) {
            rank.first().copied().filter(|_| pos == rank.len())
        } else {
            let under = |n: &NodeId| r.load[n] < fair_share(placeable, weight(n), total);
            r.first_with_room(i, &rank[..pos])
                .filter(|n| rank[..named].contains(n) || under(n))
        };
        if let Some(to) = to {
            r.apply(i, to);
            budget -= 1;
        }
    }
    let mut moves = r.moves;
    moves.sort_by(|a, b| a.role.cmp(&b.role));
    moves
}
