//! Scenarios of P11: a cluster that loses a majority of its voters for good recovers
//! by itself once the loss is proven, a survivor cut off with a stale configuration
//! does not, and the fleet restarting as a whole or pod by pod ends with one primary.
//!
//! Most keep no data directory: every restarted process is a new identity (P1). The
//! `...WithData` variants give every pod one (P12): a restart is the same member again,
//! and no recovery (no successor cluster) may happen.

use super::Ctx;
use cluster_mode_core::{ClusterId, Config, NodeId};
use cluster_mode_madsim::RecordKind;
use std::time::Duration;

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The liveness bound of a recovery, counted from the instant the loss is provable
/// (the dead voters' successors answer, or discovery dropped them):
/// `2 x election_timeout_max` until the survivors count their cluster as leaderless,
/// `4 x probe_interval` for probe answers from every listed address and every missing
/// voter's address (the proof, and the fresh view a candidacy needs), and
/// `2 x election_timeout_max` for the candidacy's round trips, the successor's first
/// lease and every member adopting it: 4.4 s with `Config::datacenter()`.
pub fn recovery_bound_ns(cfg: &Config) -> u64 {
    4 * ns(cfg.election_timeout_max) + 4 * ns(cfg.probe_interval)
}

/// How many probe intervals a probe answer counts as recent in the core (its
/// `FRESH_VIEW_PROBE_ROUNDS`: one sweep of 8 rounds and 2 more).
pub const FRESH_VIEW_PROBE_ROUNDS: u64 = 10;

/// The liveness bound of `MajorityReplacedK8s`, from the replacements' start: the
/// recovery bound, the discovery lag and two polls (the deletions and the new pods
/// reach every node): 5.4-5.7 s with `Config::datacenter()`. (It once had to allow
/// for a candidacy lost to the dead, sims/FINDINGS.md #9, fixed.)
pub fn replaced_bound_ns(cfg: &Config, lag_ms: u64, poll_ms: u64) -> u64 {
    recovery_bound_ns(cfg) + (lag_ms + 2 * poll_ms) * 1_000_000
}

/// One candidacy lost to a rival and retried: the wait for its grants (at most two
/// bootstrap timeouts) and the back-off before the next (at most one).
pub fn lost_candidacy_ns(cfg: &Config) -> u64 {
    3 * ns(cfg.bootstrap_timeout)
}

impl Ctx {
    /// `k` distinct pods: `first`, then others at random.
    fn pick_with(&mut self, first: usize, k: usize) -> Vec<usize> {
        let mut picked = vec![first];
        let mut rest = self.others(first);
        while picked.len() < k && !rest.is_empty() {
            let i = self.range(0, rest.len() as u64) as usize;
            picked.push(rest.remove(i));
        }
        picked
    }

    fn names(&self, slots: &[usize]) -> String {
        let names: Vec<String> = slots.iter().map(|s| self.name(*s)).collect();
        names.join(", ")
    }

    /// The slot of the live node with identity `id`.
    fn slot_of(&self, id: NodeId) -> Option<usize> {
        self.c
            .views()
            .into_iter()
            .find(|(_, v)| v.id == id)
            .map(|(s, _)| s)
    }
}

/// `n` pods; the primary and `k - 1` followers are killed at once and restarted in
/// place (same names and IPs, new identities) after 0-2 s, the pods' restart time.
pub(super) async fn majority_restart_in_place(s: &mut Ctx, n: usize, k: usize) {
    let Some(p) = s.start(n).await else { return };
    s.sleep_rand(0, 1_000).await;
    let victims = s.pick_with(p, k);
    for &v in &victims {
        s.c.kill(v, false);
    }
    s.fault(format!(
        "failover: majority lost: {} killed (the primary {} among them)",
        s.names(&victims),
        s.name(p)
    ));
    s.sleep_rand(0, 2_000).await;
    for &v in &victims {
        s.c.restart(v);
    }
    s.fault(format!(
        "{} restarted in place with new identities: the loss is provable",
        s.names(&victims)
    ));
    s.bound_ns = Some(recovery_bound_ns(&s.c.config()));
    s.sleep(5_000).await;
}

/// 3 or 5 pods (by seed) with `discovery_proves_absence`, discovery lagging 0-300 ms
/// and failing 10% of polls. The primary and followers, a majority, are deleted (their
/// pods vanish from discovery as they die) and replaced after 0-3 s by new pods at
/// new IPs.
pub(super) async fn majority_replaced_k8s(s: &mut Ctx) {
    let n = if s.range(0, 2) == 0 { 3 } else { 5 };
    let lag = s.range(0, 301);
    s.c.registry(|r| {
        r.lag_ms = lag;
        r.error_ppm = 100_000;
    });
    let Some(p) = s.start(n).await else { return };
    s.sleep_rand(0, 1_000).await;
    let victims = s.pick_with(p, n / 2 + 1);
    for &v in &victims {
        s.c.kill(v, true);
    }
    s.pods.retain(|x| !victims.contains(x));
    s.fault(format!(
        "failover: majority deleted: {} (the primary {} among them) killed and unlisted",
        s.names(&victims),
        s.name(p)
    ));
    s.sleep_rand(0, 3_000).await;
    let new: Vec<usize> = victims.iter().map(|_| s.add()).collect();
    s.fault(format!(
        "{} replace them at new IPs (discovery lag {lag} ms)",
        s.names(&new)
    ));
    let poll = s.c.registry(|r| r.interval_ms);
    s.bound_ns = Some(replaced_bound_ns(&s.c.config(), lag, poll));
    s.sleep(5_000).await;
}

/// The configuration of `StaleSurvivor`: 3 voters among 5 pods, and a silent member
/// removed after 3 s.
pub(super) fn stale_survivor_config() -> Config {
    let mut cfg =
        Config::datacenter().with_max_voters(std::num::NonZeroUsize::new(3).expect("3 > 0"));
    cfg.silent_member_timeout = Some(Duration::from_secs(3));
    cfg
}

/// How long the majority side may take to remove the partitioned voter and promote a
/// non-voter in its place.
const REMOVAL_WAIT_MS: u64 = 30_000;

/// 5 pods, voters A, B, C (`max_voters` 3) and non-voters D, E. C is partitioned away;
/// the majority removes it (silent for `silent_member_timeout`) and promotes D. Then
/// A and B are restarted in place, and C reaches their successors (but still not D
/// and E): in C's stale configuration A and B are proven dead, and C, leaderless for
/// long, is the first to see it. D and E stay silent to C, so C must not found a
/// successor (it would drop the configuration D and E committed): asserted on C's
/// records for 8 s (no view of C leads a new cluster). The majority side, with one
/// live voter, waits too (C is listed and silent). Healed, the cluster recovers with
/// C in it.
pub(super) async fn stale_survivor(s: &mut Ctx) {
    let Some(p) = s.start(5).await else { return };
    let Some(primary) = s.c.views().into_iter().find(|(x, _)| *x == p).map(|x| x.1) else {
        return;
    };
    let Some(old) = primary.cluster else { return };
    let voters: Vec<usize> = primary
        .members
        .iter()
        .filter(|(_, voter)| *voter)
        .filter_map(|(id, _)| s.slot_of(*id))
        .collect();
    if voters.len() != 3 {
        s.violation(format!(
            "expected 3 voters (max_voters 3), found {}",
            voters.len()
        ));
        return;
    }
    // C: a voter other than the primary; A and B: the two other voters.
    let followers: Vec<usize> = voters.iter().copied().filter(|v| *v != p).collect();
    let c_slot = followers[s.range(0, 2) as usize];
    let c_id =
        s.c.views()
            .into_iter()
            .find(|(x, _)| *x == c_slot)
            .map(|x| x.1.id);
    let ab: Vec<usize> = voters.iter().copied().filter(|v| *v != c_slot).collect();
    let (a, b) = (ab[0], ab[1]);
    let rest = s.others(c_slot);
    s.c.partition(&[vec![c_slot], rest.clone()]);
    let partitioned_ns = s.c.now_ns();
    s.fault(format!("voter {} partitioned away", s.name(c_slot)));
    // Wait for the majority side to remove C and promote a non-voter.
    let mut waited = 0;
    loop {
        let removed = s.c.views().iter().any(|(_, v)| {
            v.is_leader
                && v.lease_valid
                && !v.members.iter().any(|(id, _)| Some(*id) == c_id)
                && v.members.iter().filter(|(_, voter)| *voter).count() == 3
        });
        if removed {
            break;
        }
        if waited >= REMOVAL_WAIT_MS {
            s.violation(format!(
                "the majority side did not remove {} and promote a non-voter within {REMOVAL_WAIT_MS} ms",
                s.name(c_slot)
            ));
            break;
        }
        s.sleep(100).await;
        waited += 100;
    }
    s.c.restart(a);
    s.c.restart(b);
    s.c.uncut(c_slot, a);
    s.c.uncut(c_slot, b);
    s.fault(format!(
        "old voters {} and {} restarted in place; {} reaches their successors but not the rest",
        s.name(a),
        s.name(b),
        s.name(c_slot)
    ));
    s.sleep(8_000).await;
    founded_nothing(s, c_slot, old, partitioned_ns);
    s.c.heal();
    s.fault("healed");
    let cfg = s.c.config();
    s.bound_ns = Some(recovery_bound_ns(&cfg) + lost_candidacy_ns(&cfg));
    s.sleep(8_000).await;
}

/// Asserts that `slot` founded no cluster from `since_ns` until now: no view of it
/// leads a cluster other than `old` (a founder leads its cluster at once). Leaving
/// `old` to join a successor that others founded is allowed.
fn founded_nothing(s: &mut Ctx, slot: usize, old: ClusterId, since_ns: u64) {
    let trace = s.c.trace();
    let founded = trace.records.iter().find_map(|r| match &r.kind {
        RecordKind::View(v)
            if r.slot == slot && r.at_ns >= since_ns && v.is_leader && v.cluster != Some(old) =>
        {
            Some((r.at_ns, v.cluster))
        }
        _ => None,
    });
    if let Some((at, c)) = founded {
        let c = c.map_or_else(|| "-".into(), |c| format!("{c} (epoch {})", c.epoch()));
        s.violation(format!(
            "the partitioned survivor {} founded cluster {c} at {} ms, while the partition lasted (its cluster {old}, epoch {})",
            s.name(slot),
            at / 1_000_000,
            old.epoch()
        ));
    }
}

/// 5 pods, all killed at once and restarted in place after 0-2 s: a cold start.
pub(super) async fn whole_fleet_restart(s: &mut Ctx) {
    if s.start(5).await.is_none() {
        return;
    }
    s.sleep_rand(0, 1_000).await;
    let all = s.pods.clone();
    for &v in &all {
        s.c.kill(v, false);
    }
    s.fault("failover: every pod killed");
    s.sleep_rand(0, 2_000).await;
    for &v in &all {
        s.c.restart(v);
    }
    s.fault("every pod restarted in place with a new identity: a cold start");
    s.sleep(8_000).await;
}

/// 5 pods, all deleted at once (killed and unlisted) and replaced after 0-2 s by 5
/// new pods at new IPs, without data directories: a cold start of new processes.
pub(super) async fn whole_fleet_replaced(s: &mut Ctx) {
    if s.start(5).await.is_none() {
        return;
    }
    s.sleep_rand(0, 1_000).await;
    let all = s.pods.clone();
    for &v in &all {
        s.c.kill(v, true);
    }
    s.pods.clear();
    s.fault("failover: every pod deleted");
    s.sleep_rand(0, 2_000).await;
    let new: Vec<usize> = all.iter().map(|_| s.add()).collect();
    s.fault(format!(
        "{} replace them at new IPs: a cold start",
        s.names(&new)
    ));
    s.sleep(8_000).await;
}

/// 5 pods; every 2 s for 20 s one pod at random is killed (SIGKILL, no leave) and
/// restarted in place at once.
pub(super) async fn rolling_kill_no_leave(s: &mut Ctx) {
    if s.start(5).await.is_none() {
        return;
    }
    for _ in 0..10 {
        let i = s.range(0, s.pods.len() as u64) as usize;
        let victim = s.pods[i];
        let was_primary =
            s.c.views()
                .iter()
                .any(|(x, v)| *x == victim && v.lease_valid);
        s.c.restart(victim);
        let what = format!("{} killed and restarted in place", s.name(victim));
        s.fault(if was_primary {
            format!("failover: the primary {what}")
        } else {
            what
        });
        s.sleep(2_000).await;
    }
    s.sleep(6_000).await;
}

/// Every pod's view recorded from `since_ns` on is of a cluster of epoch 1: with data
/// directories a restarted voter is the same member, so nothing needs recovering and
/// no successor cluster may be founded (P12).
pub(super) fn no_successor(s: &mut Ctx, since_ns: u64) {
    let trace = s.c.trace();
    let found = trace.records.iter().find_map(|r| match &r.kind {
        RecordKind::View(v) if r.at_ns >= since_ns => v
            .cluster
            .filter(|c| c.epoch() > 1)
            .map(|c| (r.slot, r.at_ns, c)),
        _ => None,
    });
    if let Some((slot, at, c)) = found {
        s.violation(format!(
            "{} is in cluster {c} of epoch {} at {} ms: a recovery ran although every pod keeps its data",
            s.name(slot),
            c.epoch(),
            at / 1_000_000
        ));
    }
}
