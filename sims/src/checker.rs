//! The invariant checker over a recorded history ([`Trace`]).
//!
//! Safety (every instant): one leader per term; at most one node holding a valid
//! primary lease at any global simulated instant (P6, with each node's lease end
//! converted from its own drifting clock); fencing tokens strictly increase across
//! primaries (P7), within a cluster and across the successor clusters recoveries found
//! (P11); two nodes that committed the same index of one cluster committed the same
//! member list (P2); no two clusters of one epoch (P4: a recovery's successor is one
//! epoch higher), except an epoch-1 cluster formed when no running process had ever
//! been in another cluster (a cold start after every pod restarted without a data
//! directory), whose first primary's token also starts again.
//!
//! Named roles (P13, [`roles`]): at most one owner of a role at any global instant
//! (each node's hold end and release deadlines converted from its own clock), and a
//! role's token (cluster, grant index) strictly rising from one owner to the next.
//!
//! Liveness: after the last fault, exactly one primary that every live member agrees
//! on (and the same member list), reached within a bound derived from the config (or
//! stated by the scenario) and still holding at the end of the run; and, within the
//! same bound, every role the scenario expects owned by exactly one live member, still
//! so at the end.

use cluster_mode_core::{ClusterId, Config, NodeId};
use cluster_mode_madsim::{NodeView, RecordKind, Trace};
pub use roles::{role_intervals, roles_unsettled, RoleInterval};
use std::collections::{BTreeMap, BTreeSet};

mod lineage;
pub mod roles;
#[cfg(test)]
mod tests;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Global simulated time, ms.
    pub at_ms: u64,
    /// Which invariant and how.
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {} ms: {}", self.at_ms, self.what)
    }
}

/// A half-open interval of global time during which one node held a valid lease.
#[derive(Clone, Copy, Debug)]
pub struct LeaseInterval {
    /// Slot of the node.
    pub slot: usize,
    /// Its identity.
    pub id: NodeId,
    /// Its cluster.
    pub cluster: Option<ClusterId>,
    /// Its term (the fencing token).
    pub term: u64,
    /// Start, global ns.
    pub start: u64,
    /// End (exclusive), global ns.
    pub end: u64,
}

/// Lease intervals from the records: a view with a valid lease holds from its record
/// time to its lease end, cut short by the slot's next view or its stop.
pub fn lease_intervals(trace: &Trace) -> Vec<LeaseInterval> {
    let mut open: BTreeMap<usize, LeaseInterval> = BTreeMap::new();
    let mut out = Vec::new();
    for r in &trace.records {
        if r.slot == usize::MAX {
            continue;
        }
        let cut = match &r.kind {
            RecordKind::View(_) | RecordKind::Stopped(_) | RecordKind::Started { .. } => true,
            RecordKind::Paused | RecordKind::Resumed | RecordKind::Fault(_) => false,
        };
        if cut {
            if let Some(mut iv) = open.remove(&r.slot) {
                iv.end = iv.end.min(r.at_ns);
                if iv.end > iv.start {
                    out.push(iv);
                }
            }
        }
        if let RecordKind::View(v) = &r.kind {
            if v.lease_valid {
                // A lease claimed at or past its end (or with no end) is held until the
                // node's next record says otherwise: the claim is what matters.
                let end = v.lease_end_ns.filter(|e| *e > r.at_ns).unwrap_or(u64::MAX);
                {
                    open.insert(
                        r.slot,
                        LeaseInterval {
                            slot: r.slot,
                            id: v.id,
                            cluster: v.cluster,
                            term: v.term,
                            start: r.at_ns,
                            end,
                        },
                    );
                }
            }
        }
    }
    out.extend(open.into_values().map(|mut iv| {
        iv.end = iv.end.min(trace.end_ns.max(iv.start + 1));
        iv
    }));
    out.sort_by_key(|iv| (iv.start, iv.slot));
    out
}

/// Timing bounds of the liveness check.
#[derive(Clone, Debug)]
pub struct Liveness {
    /// When the last fault was injected or cleared (global ns).
    pub last_fault_ns: u64,
    /// How long after it an agreed primary must exist (ns).
    pub bound_ns: u64,
    /// The named roles that must each be owned by exactly one live member within the
    /// same bound, and still at the end (empty: no role check). A scenario leaves out
    /// roles it pinned to an absent member: those stay unowned.
    pub roles: BTreeSet<String>,
}

/// The liveness bound derived from the config: two bootstrap rounds, four election
/// timeouts, two probe intervals and two discovery polls.
pub fn liveness_bound_ns(cfg: &Config, discovery_interval_ms: u64) -> u64 {
    let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    2 * ns(cfg.bootstrap_timeout)
        + 4 * ns(cfg.election_timeout_max)
        + 2 * ns(cfg.probe_interval)
        + 2 * discovery_interval_ms * 1_000_000
}

/// The state of the cluster as seen by the live nodes at one instant.
#[derive(Default)]
struct World {
    views: BTreeMap<usize, NodeView>,
    paused: BTreeSet<usize>,
}

impl World {
    fn apply(&mut self, slot: usize, kind: &RecordKind) {
        match kind {
            RecordKind::View(v) => {
                self.views.insert(slot, v.clone());
            }
            RecordKind::Stopped(_) | RecordKind::Started { .. } => {
                self.views.remove(&slot);
                self.paused.remove(&slot);
            }
            RecordKind::Paused => {
                self.paused.insert(slot);
            }
            RecordKind::Resumed => {
                self.paused.remove(&slot);
            }
            RecordKind::Fault(_) => {}
        }
    }

    fn agreed_primary(&self, t: u64, require_members: bool) -> Option<NodeId> {
        let live = self
            .views
            .iter()
            .filter(|(s, _)| !self.paused.contains(s))
            .map(|(_, v)| v);
        agreed_primary(live, t, require_members)
    }
}

/// The primary that every given (live, unpaused) node agrees on at `t`, if exactly one
/// node holds a valid lease. `require_members` also demands that every node is in the
/// primary's cluster, has its member list, and is listed in it.
pub fn agreed_primary<'a>(
    live: impl Iterator<Item = &'a NodeView>,
    t: u64,
    require_members: bool,
) -> Option<NodeId> {
    let live: Vec<&NodeView> = live.collect();
    let mut primaries = live
        .iter()
        .filter(|v| v.lease_valid && v.lease_end_ns.is_some_and(|e| e > t));
    let p = primaries.next()?;
    if primaries.next().is_some() {
        return None;
    }
    for v in &live {
        if require_members {
            if v.cluster != p.cluster || v.members_hash != p.members_hash {
                return None;
            }
            // Sorted by id (the core lists its members in id order).
            if p.members.binary_search_by_key(&v.id, |m| m.0).is_err() {
                return None;
            }
        }
        if v.cluster == p.cluster && v.id != p.id && v.primary != Some(p.id) {
            return None;
        }
    }
    Some(p.id)
}

/// For each instant at which the agreed primary changes: `(t_ns, agreed primary)`.
/// `require_members` also demands one member list that contains every live node.
pub fn agreement_timeline(trace: &Trace, require_members: bool) -> Vec<(u64, Option<NodeId>)> {
    let mut w = World::default();
    let mut out: Vec<(u64, Option<NodeId>)> = Vec::new();
    let recs = &trace.records;
    let mut i = 0;
    while i < recs.len() {
        let t = recs[i].at_ns;
        while i < recs.len() && recs[i].at_ns == t {
            w.apply(recs[i].slot, &recs[i].kind);
            i += 1;
        }
        let a = w.agreed_primary(t, require_members);
        if out.last().map(|l| l.1) != Some(a) {
            out.push((t, a));
        }
    }
    out
}

/// The first instant at or after `last_fault_ns` at which every live member agrees on
/// one primary and one member list containing them all (an agreement already in force
/// at the fault counts from the fault): what the liveness bound limits.
pub fn first_agreement_ns(trace: &Trace, last_fault_ns: u64) -> Option<u64> {
    first_agreement_in(&agreement_timeline(trace, true), last_fault_ns)
}

fn first_agreement_in(tl: &[(u64, Option<NodeId>)], last_fault_ns: u64) -> Option<u64> {
    tl.iter()
        .enumerate()
        .filter(|(i, (t, a))| {
            a.is_some()
                && (*t >= last_fault_ns || tl.get(i + 1).is_none_or(|n| n.0 > last_fault_ns))
        })
        .map(|(_, (t, _))| (*t).max(last_fault_ns))
        .next()
}

/// Checks every safety invariant and, if `liveness` is given, the liveness bound.
pub fn check(trace: &Trace, liveness: Option<Liveness>) -> Vec<Violation> {
    let mut v = Vec::new();
    let ms = |ns: u64| ns / 1_000_000;
    // One leader per term; committed member lists never diverge.
    let mut leaders: BTreeMap<(Option<ClusterId>, u64), NodeId> = BTreeMap::new();
    let mut committed: BTreeMap<(ClusterId, u64), (u64, NodeId)> = BTreeMap::new();
    for r in &trace.records {
        let RecordKind::View(view) = &r.kind else {
            continue;
        };
        if view.is_leader {
            let prev = *leaders.entry((view.cluster, view.term)).or_insert(view.id);
            if prev != view.id {
                v.push(Violation {
                    at_ms: ms(r.at_ns),
                    what: format!("two leaders in term {}: {prev} and {}", view.term, view.id),
                });
            }
        }
        if let Some(c) = view.cluster {
            let (h, who) = *committed
                .entry((c, view.commit_index))
                .or_insert((view.members_hash, view.id));
            if h != view.members_hash {
                v.push(Violation {
                    at_ms: ms(r.at_ns),
                    what: format!(
                        "{} and {who} committed different member lists at index {}",
                        view.id, view.commit_index
                    ),
                });
            }
        }
    }
    // No two clusters of one epoch.
    let cold_starts = lineage::check_clusters(trace, &mut v);
    // At most one valid lease at any instant, whatever the cluster.
    let ivs = lease_intervals(trace);
    let mut best: Option<LeaseInterval> = None;
    let mut second_end: u64 = 0;
    for iv in &ivs {
        if let Some(b) = best {
            let overlap = if b.id != iv.id {
                iv.start < b.end
            } else {
                iv.start < second_end
            };
            if overlap {
                v.push(Violation {
                    at_ms: ms(iv.start),
                    what: format!(
                        "two primaries at once: {} (term {}) from {} ms while {} (term {}) holds a lease until {} ms",
                        trace.name(iv.slot),
                        iv.term,
                        ms(iv.start),
                        trace.name(b.slot),
                        b.term,
                        ms(b.end.max(second_end))
                    ),
                });
            }
        }
        match best {
            Some(b) if b.id == iv.id => {
                if iv.end > b.end {
                    best = Some(LeaseInterval {
                        start: b.start,
                        ..*iv
                    });
                }
            }
            Some(b) => {
                if iv.end > b.end {
                    second_end = second_end.max(b.end);
                    best = Some(*iv);
                } else {
                    second_end = second_end.max(iv.end);
                }
            }
            None => best = Some(*iv),
        }
    }
    // Fencing tokens increase, within a cluster and across clusters.
    lineage::check_fencing(trace, &ivs, &cold_starts, &mut v);
    // Named roles: one owner at a time, tokens rising.
    roles::check_roles(trace, &role_intervals(trace), &cold_starts, &mut v);
    if let Some(l) = liveness {
        check_roles_settle(trace, &l, &mut v);
        let tl = agreement_timeline(trace, true);
        let first = first_agreement_in(&tl, l.last_fault_ns);
        match first {
            Some(t) if t > l.last_fault_ns + l.bound_ns => v.push(Violation {
                at_ms: ms(t),
                what: format!(
                    "liveness: agreed primary only {} ms after the last fault (bound {} ms)",
                    ms(t - l.last_fault_ns),
                    ms(l.bound_ns)
                ),
            }),
            Some(_) => {}
            None => v.push(Violation {
                at_ms: ms(trace.end_ns),
                what: format!(
                    "liveness: no primary agreed by every live member within {} ms after the last fault (bound {} ms)",
                    ms(trace.end_ns.saturating_sub(l.last_fault_ns)),
                    ms(l.bound_ns)
                ),
            }),
        }
        if first.is_some() && tl.last().is_none_or(|x| x.1.is_none()) {
            v.push(Violation {
                at_ms: ms(trace.end_ns),
                what: "liveness: the live members no longer agree on one primary and member list at the end"
                    .into(),
            });
        }
    }
    v
}

/// The role part of the liveness check: every expected role owned by exactly one live
/// member at some record instant within the bound after the last fault (an ownership
/// already in force at the fault counts from the fault), and still at the end.
fn check_roles_settle(trace: &Trace, l: &Liveness, v: &mut Vec<Violation>) {
    if l.roles.is_empty() {
        return;
    }
    let ms = |ns: u64| ns / 1_000_000;
    let tl = roles::roles_timeline(trace, &l.roles, l.last_fault_ns);
    let first = tl
        .iter()
        .find(|(_, why)| why.is_none())
        .map(|(t, _)| (*t).max(l.last_fault_ns));
    match first {
        Some(t) if t > l.last_fault_ns + l.bound_ns => v.push(Violation {
            at_ms: ms(t),
            what: format!(
                "liveness: every role owned once only {} ms after the last fault (bound {} ms)",
                ms(t - l.last_fault_ns),
                ms(l.bound_ns)
            ),
        }),
        Some(_) => {}
        None => v.push(Violation {
            at_ms: ms(trace.end_ns),
            what: format!(
                "liveness: the {} roles were never each owned by exactly one live member within {} ms after the last fault (bound {} ms); at the end: {}",
                l.roles.len(),
                ms(trace.end_ns.saturating_sub(l.last_fault_ns)),
                ms(l.bound_ns),
                tl.last().and_then(|x| x.1.clone()).unwrap_or_else(|| "-".into())
            ),
        }),
    }
    if first.is_some() {
        if let Some((_, Some(why))) = tl.last() {
            v.push(Violation {
                at_ms: ms(trace.end_ns),
                what: format!("liveness: roles no longer settled at the end: {why}"),
            });
        }
    }
}
