//! Named roles (P13): one owner per role at any instant, role tokens that rise from
//! one owner to the next, and (liveness) every declared role owned once the cluster
//! has settled.
//!
//! Like the primary leases, holds are judged in global simulated time: a view that
//! says a node holds a role holds it from the view's record time until the node's hold
//! end ([`NodeView::role_hold_end_ns`], its own clock converted) or the role's release
//! deadline, whichever is first, cut short by the node's next view that speaks of roles
//! or by its stop. A role claimed at or past those ends (or with no hold end) is held
//! until the node's next record says otherwise: the claim is what matters.

use super::Violation;
use cluster_mode_core::{ClusterId, NodeId, RoleToken};
use cluster_mode_madsim::{HeldRole, NodeView, RecordKind, Trace};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// A half-open interval of global time during which one node held one named role
/// with one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleInterval {
    /// Slot of the node.
    pub slot: usize,
    /// Its identity.
    pub id: NodeId,
    /// The role.
    pub role: String,
    /// The node's token for it.
    pub token: RoleToken,
    /// Start, global ns.
    pub start: u64,
    /// End (exclusive), global ns.
    pub end: u64,
}

/// When a role a view claims stops being held: its hold end or release deadline,
/// whichever is first; `u64::MAX` (until the next record) if that is not after `at`.
fn claim_end(v: &NodeView, release_by_ns: Option<u64>, at: u64) -> u64 {
    let end = match (v.role_hold_end_ns, release_by_ns) {
        (Some(h), Some(b)) => Some(h.min(b)),
        (h, b) => h.or(b),
    };
    end.filter(|e| *e > at).unwrap_or(u64::MAX)
}

/// Whether `held` (a view of node `id` at `at`) renews each running interval of
/// `was` and claims nothing else: pairwise the same role, token and node, every
/// interval still running at `at`.
fn renews_all(
    was: &BTreeMap<String, RoleInterval>,
    held: &[HeldRole],
    id: NodeId,
    at: u64,
) -> bool {
    was.len() == held.len()
        && was.iter().zip(held).all(|((role, iv), h)| {
            *role == h.role && iv.token == h.token && iv.id == id && iv.end >= at
        })
}

/// The role intervals of the records, sorted by start (then slot and role). A view
/// that holds a role with the same token as the node's running interval extends it.
pub fn role_intervals(trace: &Trace) -> Vec<RoleInterval> {
    let mut open: BTreeMap<usize, BTreeMap<String, RoleInterval>> = BTreeMap::new();
    let mut out = Vec::new();
    let close = |ivs: BTreeMap<String, RoleInterval>, at: u64, out: &mut Vec<RoleInterval>| {
        for mut iv in ivs.into_values() {
            iv.end = iv.end.min(at);
            if iv.end > iv.start {
                out.push(iv);
            }
        }
    };
    for r in &trace.records {
        if r.slot == usize::MAX {
            continue;
        }
        match &r.kind {
            RecordKind::Stopped(_) | RecordKind::Started { .. } => {
                if let Some(ivs) = open.remove(&r.slot) {
                    close(ivs, r.at_ns, &mut out);
                }
            }
            RecordKind::View(v) => {
                let Some(held) = v.roles.as_deref() else {
                    continue;
                };
                // Most views of a run renew every running hold of the node: the same
                // roles (in name order, as the map keeps them), tokens and identity.
                // Their ends move in place, as the general path below would move them.
                if let Some(was) = open.get_mut(&r.slot) {
                    if renews_all(was, held, v.id, r.at_ns) {
                        for (iv, h) in was.values_mut().zip(held) {
                            iv.end = claim_end(v, h.release_by_ns, r.at_ns);
                        }
                        continue;
                    }
                }
                let mut was = open.remove(&r.slot).unwrap_or_default();
                let mut now = BTreeMap::new();
                for h in held {
                    let end = claim_end(v, h.release_by_ns, r.at_ns);
                    // The running interval's key moves over (no string copied for a
                    // hold renewed: most views of a run).
                    let (key, iv) = match was.remove_entry(&h.role) {
                        // Still running with the same token: the same hold, renewed.
                        Some((key, mut iv))
                            if iv.token == h.token && iv.id == v.id && iv.end >= r.at_ns =>
                        {
                            iv.end = end;
                            (key, iv)
                        }
                        other => {
                            if let Some((_, mut iv)) = other {
                                iv.end = iv.end.min(r.at_ns);
                                if iv.end > iv.start {
                                    out.push(iv);
                                }
                            }
                            let iv = RoleInterval {
                                slot: r.slot,
                                id: v.id,
                                role: h.role.clone(),
                                token: h.token,
                                start: r.at_ns,
                                end,
                            };
                            (h.role.clone(), iv)
                        }
                    };
                    now.insert(key, iv);
                }
                close(was, r.at_ns, &mut out);
                if !now.is_empty() {
                    open.insert(r.slot, now);
                }
            }
            RecordKind::Paused | RecordKind::Resumed | RecordKind::Fault(_) => {}
        }
    }
    for ivs in open.into_values() {
        for mut iv in ivs.into_values() {
            iv.end = iv.end.min(trace.end_ns.max(iv.start + 1));
            out.push(iv);
        }
    }
    out.sort_by(|a, b| (a.start, a.slot, &a.role).cmp(&(b.start, b.slot, &b.role)));
    out
}

/// At most one owner of a role at any instant, and role tokens strictly rising from
/// one owner to the next (one owner may keep its token over several intervals), except
/// the first owner of a role in one of the `cold_starts` (tokens start again there, as
/// for primaries).
pub(super) fn check_roles(
    trace: &Trace,
    ivs: &[RoleInterval],
    cold_starts: &BTreeSet<ClusterId>,
    out: &mut Vec<Violation>,
) {
    let mut by_role: BTreeMap<&str, Vec<&RoleInterval>> = BTreeMap::new();
    for iv in ivs {
        by_role.entry(iv.role.as_str()).or_default().push(iv);
    }
    for (role, list) in by_role {
        // Overlap: the furthest-reaching interval of each identity seen so far.
        let mut reach: BTreeMap<NodeId, &RoleInterval> = BTreeMap::new();
        for iv in &list {
            reach.retain(|_, o| o.end > iv.start);
            if let Some(o) = reach.values().find(|o| o.id != iv.id) {
                out.push(Violation {
                    at_ms: ms(iv.start),
                    what: format!(
                        "two owners of role {role} at once: {} (token {}) from {} ms while {} (token {}) holds it from {} ms until {} ms",
                        trace.name(iv.slot),
                        iv.token,
                        ms(iv.start),
                        trace.name(o.slot),
                        o.token,
                        ms(o.start),
                        ms(o.end)
                    ),
                });
            }
            match reach.get(&iv.id) {
                Some(o) if o.end >= iv.end => {}
                _ => {
                    reach.insert(iv.id, iv);
                }
            }
        }
        // Tokens rise.
        let mut prev: Option<&RoleInterval> = None;
        let mut clusters: BTreeSet<ClusterId> = BTreeSet::new();
        for iv in &list {
            let first_in_cluster = clusters.insert(iv.token.cluster);
            if let Some(p) = prev {
                let bad = if p.id == iv.id {
                    iv.token < p.token
                } else {
                    iv.token <= p.token
                };
                let exempt = first_in_cluster
                    && p.token.cluster != iv.token.cluster
                    && cold_starts.contains(&iv.token.cluster);
                if bad && !exempt {
                    out.push(Violation {
                        at_ms: ms(iv.start),
                        what: format!(
                            "role token did not rise: {} holds role {role} with token {} (epoch {}) from {} ms after {} held it with token {} (epoch {})",
                            trace.name(iv.slot),
                            iv.token,
                            iv.token.cluster.epoch(),
                            ms(iv.start),
                            trace.name(p.slot),
                            p.token,
                            p.token.cluster.epoch()
                        ),
                    });
                }
            }
            prev = Some(iv);
        }
    }
}

/// Why the given live (running, unpaused) views do not own every role of `expected`
/// exactly once at `t`: no live view, or the first role without an owner or with
/// several. `None`: they do (or nothing is expected).
pub fn roles_unsettled<'a>(
    live: impl Iterator<Item = &'a NodeView>,
    t: u64,
    expected: &BTreeSet<String>,
) -> Option<String> {
    if expected.is_empty() {
        return None;
    }
    let mut owners: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    let mut any = false;
    for v in live {
        any = true;
        for h in v.roles_held_at(t) {
            owners.entry(h.role.as_str()).or_default().push(v.id);
        }
    }
    if !any {
        return Some("no live member".into());
    }
    for role in expected {
        match owners.get(role.as_str()).map(Vec::as_slice) {
            None | Some([]) => return Some(format!("role {role} has no owner")),
            Some([_]) => {}
            Some(many) => {
                let ids: Vec<String> = many.iter().map(NodeId::to_string).collect();
                return Some(format!(
                    "role {role} has {} owners ({})",
                    many.len(),
                    ids.join(", ")
                ));
            }
        }
    }
    None
}

/// For each record instant at or after the last one not after `from_ns`: `(t_ns, why
/// the roles are unsettled, or None)`, whenever that changes. Views that say nothing
/// about roles keep the node's previous roles.
pub fn roles_timeline(
    trace: &Trace,
    expected: &BTreeSet<String>,
    from_ns: u64,
) -> Vec<(u64, Option<String>)> {
    // Per running slot: its latest view that speaks of roles (None: none yet).
    let mut alive: BTreeMap<usize, Option<&NodeView>> = BTreeMap::new();
    let mut paused: BTreeSet<usize> = BTreeSet::new();
    let mut out: Vec<(u64, Option<String>)> = Vec::new();
    let empty = empty_view();
    let recs = &trace.records;
    // The verdict last computed (the last of `out`) stands while no live node starts,
    // stops, pauses or resumes, no view changes which roles a node holds, and no
    // deadline of a live view passes (`valid_until`): most instants of a run are
    // renewals that change none of it, and judging 64 roles at each was a tenth of a
    // run's time.
    let mut dirty = true;
    let mut valid_until = 0u64;
    let mut i = 0;
    while i < recs.len() {
        let t = recs[i].at_ns;
        while i < recs.len() && recs[i].at_ns == t {
            let r = &recs[i];
            i += 1;
            if r.slot == usize::MAX {
                continue;
            }
            match &r.kind {
                RecordKind::View(v) => match alive.entry(r.slot) {
                    Entry::Vacant(e) => {
                        e.insert(v.roles.is_some().then_some(v));
                        dirty = true;
                    }
                    Entry::Occupied(mut e) => {
                        if v.roles.is_some() {
                            let before = (*e.get()).unwrap_or(&empty);
                            if !same_holds(before, v, t) {
                                dirty = true;
                            }
                            valid_until = valid_until.min(next_deadline(v, t));
                            e.insert(Some(v));
                        }
                    }
                },
                RecordKind::Stopped(_) | RecordKind::Started { .. } => {
                    alive.remove(&r.slot);
                    paused.remove(&r.slot);
                    dirty = true;
                }
                RecordKind::Paused => {
                    paused.insert(r.slot);
                    dirty = true;
                }
                RecordKind::Resumed => {
                    paused.remove(&r.slot);
                    dirty = true;
                }
                RecordKind::Fault(_) => {}
            }
        }
        let next_t = recs.get(i).map_or(u64::MAX, |r| r.at_ns);
        if next_t <= from_ns {
            continue; // not the state in force at `from_ns` yet
        }
        if !dirty && t < valid_until {
            continue; // the verdict stands
        }
        let live = || {
            alive
                .iter()
                .filter(|(s, _)| !paused.contains(s))
                .map(|(_, v)| v.unwrap_or(&empty))
        };
        let why = roles_unsettled(live(), t, expected);
        valid_until = live()
            .map(|v| next_deadline(v, t))
            .min()
            .unwrap_or(u64::MAX);
        dirty = false;
        if out.last().is_none_or(|l| l.1 != why) {
            out.push((t, why));
        }
    }
    out
}

/// Whether two views of one slot say the same node holds the same roles at `t`.
fn same_holds(a: &NodeView, b: &NodeView, t: u64) -> bool {
    a.id == b.id
        && a.roles_held_at(t)
            .map(|h| &h.role)
            .eq(b.roles_held_at(t).map(|h| &h.role))
}

/// The first deadline of a view after `t` (its hold end, a role's release
/// deadline) at which the roles it holds change; `u64::MAX` if none.
fn next_deadline(v: &NodeView, t: u64) -> u64 {
    v.roles
        .iter()
        .flat_map(|l| l.iter())
        .filter_map(|r| r.release_by_ns)
        .chain(v.role_hold_end_ns)
        .filter(|d| *d > t)
        .min()
        .unwrap_or(u64::MAX)
}

/// A view that holds nothing (a running node that said nothing about roles yet).
fn empty_view() -> NodeView {
    NodeView {
        id: cluster_mode_core::NodeId(0),
        cluster: None,
        role: cluster_mode_core::Role::Inactive,
        term: 0,
        is_leader: false,
        primary: None,
        commit_index: 0,
        members: Vec::new().into(),
        members_hash: 0,
        lease_valid: false,
        lease_end_ns: None,
        fencing_term: None,
        roles: None,
        role_hold_end_ns: None,
    }
}
