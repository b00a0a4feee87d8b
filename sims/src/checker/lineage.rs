//! Clusters across recoveries (P4, P11) and fencing tokens across clusters (P7).
//!
//! A recovery founds a *successor* cluster one epoch higher (the epoch is the top bits
//! of the [`ClusterId`]), so a cluster of a higher epoch is allowed next to the one it
//! replaced, while two clusters of one epoch are two cold starts: a split brain (P4).
//! The one exception is a cold start of processes that were never in any cluster, all
//! of them new since every earlier member stopped (every pod restarted without a data
//! directory): nothing of the old cluster survives to disagree with the new one.
//!
//! Fencing tokens `(cluster, term)` compare by cluster id first, hence by epoch: each
//! new primary must hold a token above the previous primary's, within a cluster (terms
//! rise) and across clusters (a successor's epoch is higher), except the first primary
//! of such a cold start, whose tokens start again (an operator resets the store, as
//! [`cluster_mode_core::FencingToken`] documents).

use super::{LeaseInterval, Violation};
use cluster_mode_core::{ClusterId, NodeId};
use cluster_mode_madsim::{RecordKind, Trace};
use std::collections::{BTreeMap, BTreeSet};

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

fn epoch(c: Option<ClusterId>) -> u32 {
    c.map_or(0, ClusterId::epoch)
}

fn show(c: Option<ClusterId>) -> String {
    c.map_or_else(|| "-".into(), |c| format!("{c} (epoch {})", c.epoch()))
}

/// Checks that no two clusters of one epoch formed (unless the later one is a cold
/// start of new processes only, see the module doc); returns those cold starts, the
/// first cluster included.
pub(super) fn check_clusters(trace: &Trace, out: &mut Vec<Violation>) -> BTreeSet<ClusterId> {
    // The cluster each running process (a slot since its last start) was last in: a
    // process keeps its history while it shows no cluster (leaving, becoming fresh).
    let mut been_in: BTreeMap<usize, ClusterId> = BTreeMap::new();
    let mut seen: BTreeSet<ClusterId> = BTreeSet::new();
    let mut first_of_epoch: BTreeMap<u32, ClusterId> = BTreeMap::new();
    let mut cold = BTreeSet::new();
    for r in &trace.records {
        let view = match &r.kind {
            RecordKind::Started { .. } | RecordKind::Stopped(_) => {
                been_in.remove(&r.slot);
                continue;
            }
            RecordKind::View(v) => v,
            RecordKind::Paused | RecordKind::Resumed | RecordKind::Fault(_) => continue,
        };
        let Some(c) = view.cluster else { continue };
        if seen.insert(c) {
            let veterans: Vec<(usize, ClusterId)> = been_in
                .iter()
                .filter(|(_, x)| **x != c)
                .map(|(s, x)| (*s, *x))
                .collect();
            let fresh_cold_start = c.epoch() == 1 && veterans.is_empty();
            if fresh_cold_start {
                cold.insert(c);
            }
            match first_of_epoch.get(&c.epoch()) {
                Some(first) if !fresh_cold_start => {
                    let who: Vec<String> = veterans
                        .iter()
                        .map(|(s, x)| format!("{} in {x}", trace.name(*s)))
                        .collect();
                    out.push(Violation {
                        at_ms: ms(r.at_ns),
                        what: format!(
                            "two clusters of epoch {}: {c} (first seen at {}) after {first}, while running processes had been in another cluster ({})",
                            c.epoch(),
                            trace.name(r.slot),
                            who.join(", ")
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    first_of_epoch.insert(c.epoch(), c);
                }
            }
        }
        been_in.insert(r.slot, c);
    }
    cold
}

/// Checks that fencing tokens strictly increase from one primary to the next: within
/// a cluster by term (one primary may keep its token), and across clusters by the
/// whole token, except for the first primary of one of the `cold_starts`.
pub(super) fn check_fencing(
    trace: &Trace,
    ivs: &[LeaseInterval],
    cold_starts: &BTreeSet<ClusterId>,
    out: &mut Vec<Violation>,
) {
    let mut last: BTreeMap<Option<ClusterId>, (NodeId, u64)> = BTreeMap::new();
    let mut prev: Option<&LeaseInterval> = None;
    for iv in ivs {
        let first_of_cluster = !last.contains_key(&iv.cluster);
        if let Some(&(id, term)) = last.get(&iv.cluster) {
            let bad = if id == iv.id {
                iv.term < term
            } else {
                iv.term <= term
            };
            if bad {
                out.push(Violation {
                    at_ms: ms(iv.start),
                    what: format!(
                        "fencing token did not increase: {} has term {} after {id} had term {term}",
                        trace.name(iv.slot),
                        iv.term
                    ),
                });
            }
        }
        last.insert(iv.cluster, (iv.id, iv.term));
        if let Some(p) = prev.filter(|p| p.cluster != iv.cluster) {
            let exempt = first_of_cluster && iv.cluster.is_some_and(|c| cold_starts.contains(&c));
            if !exempt && (iv.cluster, iv.term) <= (p.cluster, p.term) {
                out.push(Violation {
                    at_ms: ms(iv.start),
                    what: format!(
                        "fencing token did not increase across clusters: {} is primary of {} in term {} after {} was primary of {} (epoch {}) in term {}",
                        trace.name(iv.slot),
                        show(iv.cluster),
                        iv.term,
                        trace.name(p.slot),
                        p.cluster.map_or_else(|| "-".into(), |c| c.to_string()),
                        epoch(p.cluster),
                        p.term
                    ),
                });
            }
        }
        prev = Some(iv);
    }
}
