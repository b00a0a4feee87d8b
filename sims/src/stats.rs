//! Failover time, time without a primary, message rate.

use crate::checker::lease_intervals;
use cluster_mode_core::NodeId;
use cluster_mode_madsim::{NodeView, RecordKind, Trace};
use std::collections::{BTreeMap, BTreeSet};

/// Figures of one seed.
#[derive(Clone, Debug, Default)]
pub struct SeedStats {
    /// For each fault marked `failover:`: ns from the fault until another node holds the
    /// lease and a majority of the live cluster nodes name it as primary.
    pub failovers_ns: Vec<u64>,
    /// For each fault marked `cold start:` (the last pod of a cold start started): ns
    /// from it until a node holds the lease and a majority of the live cluster nodes
    /// name it as primary.
    pub cold_starts_ns: Vec<u64>,
    /// ns, after the first primary appeared, during which no node held a valid lease.
    pub no_primary_ns: u64,
    /// ns from the first primary to the end of the run.
    pub observed_ns: u64,
    /// Messages sent by all nodes.
    pub messages: u64,
    /// Sum over pods of the simulated seconds they existed (for messages per node per s).
    pub node_seconds: f64,
}

/// The primary a majority of live cluster members name at `t`, if one node holds a
/// valid lease.
fn majority_primary(
    views: &BTreeMap<usize, NodeView>,
    paused: &BTreeSet<usize>,
    t: u64,
) -> Option<NodeId> {
    let live: Vec<&NodeView> = views
        .iter()
        .filter(|(s, v)| !paused.contains(s) && v.cluster.is_some())
        .map(|(_, v)| v)
        .collect();
    let mut p = live
        .iter()
        .filter(|v| v.lease_valid && v.lease_end_ns.is_some_and(|e| e > t));
    let p = p.next()?;
    let naming = live
        .iter()
        .filter(|v| v.id == p.id || v.primary == Some(p.id))
        .count();
    (naming * 2 > live.len()).then_some(p.id)
}

/// Computes the figures of one recorded run.
pub fn seed_stats(trace: &Trace) -> SeedStats {
    let mut st = SeedStats::default();
    // Timeline of the majority-agreed primary.
    let mut views: BTreeMap<usize, NodeView> = BTreeMap::new();
    let mut paused = BTreeSet::new();
    let mut agreed: Vec<(u64, Option<NodeId>)> = Vec::new();
    let mut faults: Vec<u64> = Vec::new();
    let mut cold: Vec<u64> = Vec::new();
    let mut started: BTreeMap<usize, u64> = BTreeMap::new();
    let mut lived_ns: u64 = 0;
    for r in &trace.records {
        match &r.kind {
            RecordKind::View(v) => {
                views.insert(r.slot, v.clone());
            }
            RecordKind::Started { .. } => {
                started.insert(r.slot, r.at_ns);
            }
            RecordKind::Stopped(_) => {
                views.remove(&r.slot);
                paused.remove(&r.slot);
                if let Some(s) = started.remove(&r.slot) {
                    lived_ns += r.at_ns - s;
                }
            }
            RecordKind::Paused => {
                paused.insert(r.slot);
            }
            RecordKind::Resumed => {
                paused.remove(&r.slot);
            }
            RecordKind::Fault(f) => {
                if f.starts_with("failover:") {
                    faults.push(r.at_ns);
                } else if f.starts_with("cold start:") {
                    cold.push(r.at_ns);
                }
            }
        }
        let a = majority_primary(&views, &paused, r.at_ns);
        if agreed.last().map(|l| l.1) != Some(a) {
            agreed.push((r.at_ns, a));
        }
    }
    for s in started.values() {
        lived_ns += trace.end_ns.saturating_sub(*s);
    }
    for (i, &tf) in faults.iter().enumerate() {
        let until = faults.get(i + 1).copied().unwrap_or(u64::MAX);
        let old = agreed
            .iter()
            .take_while(|(t, _)| *t <= tf)
            .last()
            .and_then(|x| x.1);
        let new = agreed
            .iter()
            .find(|(t, p)| *t >= tf && *t < until && p.is_some() && *p != old);
        if let Some((t, _)) = new {
            st.failovers_ns.push(t - tf);
        }
    }
    for &tc in &cold {
        if let Some((t, _)) = agreed.iter().find(|(t, p)| *t >= tc && p.is_some()) {
            st.cold_starts_ns.push(t - tc);
        } else if agreed
            .iter()
            .take_while(|(t, _)| *t <= tc)
            .last()
            .is_some_and(|a| a.1.is_some())
        {
            st.cold_starts_ns.push(0);
        }
    }
    let ivs = lease_intervals(trace);
    if let Some(first) = ivs.first() {
        let mut covered = 0u64;
        let mut cur: Option<(u64, u64)> = None;
        for iv in &ivs {
            match cur {
                Some((s, e)) if iv.start <= e => cur = Some((s, e.max(iv.end))),
                Some((s, e)) => {
                    covered += e - s;
                    cur = Some((iv.start, iv.end));
                }
                None => cur = Some((iv.start, iv.end)),
            }
        }
        if let Some((s, e)) = cur {
            covered += e.min(trace.end_ns).saturating_sub(s);
        }
        st.observed_ns = trace.end_ns.saturating_sub(first.start);
        st.no_primary_ns = st.observed_ns.saturating_sub(covered);
    }
    st.messages = trace.sent.iter().sum();
    st.node_seconds = lived_ns as f64 / 1e9;
    st
}

/// Aggregated figures over many seeds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Every failover time, ns.
    pub failovers_ns: Vec<u64>,
    /// Every cold start time, ns.
    pub cold_starts_ns: Vec<u64>,
    /// Seeds added.
    pub seeds: u64,
    /// Total time without a primary, ns.
    pub no_primary_ns: u64,
    /// Total observed time, ns.
    pub observed_ns: u64,
    /// Total messages.
    pub messages: u64,
    /// Total node-seconds.
    pub node_seconds: f64,
}

impl Summary {
    /// Adds one seed.
    pub fn add(&mut self, s: &SeedStats) {
        self.seeds += 1;
        self.failovers_ns.extend_from_slice(&s.failovers_ns);
        self.cold_starts_ns.extend_from_slice(&s.cold_starts_ns);
        self.no_primary_ns += s.no_primary_ns;
        self.observed_ns += s.observed_ns;
        self.messages += s.messages;
        self.node_seconds += s.node_seconds;
    }

    /// The `q` quantile (0.0-1.0) of failover times, ms.
    pub fn failover_ms(&self, q: f64) -> Option<f64> {
        if self.failovers_ns.is_empty() {
            return None;
        }
        let mut v = self.failovers_ns.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        Some(v[i] as f64 / 1e6)
    }

    /// A readable summary.
    pub fn text(&self) -> String {
        let f = |q| {
            self.failover_ms(q)
                .map_or("-".to_string(), |x| format!("{x:.0} ms"))
        };
        let cold = match crate::sweep::percentiles(&self.cold_starts_ns) {
            Some([a, b, c]) => format!(
                " | cold starts={} to a primary p50={} ms p99={} ms max={} ms",
                self.cold_starts_ns.len(),
                a / 1_000_000,
                b / 1_000_000,
                c / 1_000_000
            ),
            None => String::new(),
        };
        format!(
            "seeds={} failovers={} failover p50={} p99={} max={} | no-primary share={:.2}% | messages/node/s={:.1}{cold}",
            self.seeds,
            self.failovers_ns.len(),
            f(0.5),
            f(0.99),
            f(1.0),
            if self.observed_ns == 0 { 0.0 } else { 100.0 * self.no_primary_ns as f64 / self.observed_ns as f64 },
            if self.node_seconds == 0.0 { 0.0 } else { self.messages as f64 / self.node_seconds },
        )
    }
}
