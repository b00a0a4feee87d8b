//! The scenario catalogue: each one builds a cluster, injects faults and returns when
//! its last fault happened so the checker can apply the liveness bound.

use crate::checker::Violation;
use cluster_mode_core::{Config, SplitMix64};
use cluster_mode_madsim::{SimCluster, SimOptions, TransportKind};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

pub mod lease;
pub mod recovery;
pub mod roles;
pub mod store;

/// A scenario of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Five nodes start at random instants; a primary must emerge.
    ColdStart,
    /// The primary crashes (its pod is gone).
    PrimaryCrash,
    /// The primary is cut off from everyone for 3 s, then healed.
    PrimaryIsolated,
    /// The primary and one follower (a minority) are split from the other three.
    MinorityPartition,
    /// The primary stays in the majority side of a 3/2 split.
    MajorityPartition,
    /// The primary can receive but not send (one-way cut), then healed.
    OneWayPartition,
    /// Links between the primary and two followers flap for 5 s.
    FlappingLink,
    /// 20% packet loss and 1-150 ms latency for 5 s.
    LossDelayStorm,
    /// The primary is paused for longer than the election timeout, then resumed.
    PausedPrimary,
    /// Every pod is replaced by a new identity at a new IP, one at a time.
    RollingRestart,
    /// Three nodes grow to seven, then shrink back to three by graceful leave.
    ScaleUpDown,
    /// Discovery lags, fails and disagrees between nodes during bootstrap.
    DiscoveryChaos,
    /// Clocks at the drift bound (+1% and -1%) while the primary crashes and is paused.
    ClockDrift,
    /// A member leaves while an election runs; then the new primary leaves.
    LeaveDuringElection,
    /// A random mix of faults on five nodes for 30 simulated seconds.
    Chaos,
    /// 100 members with 5 voters; the primary crashes.
    HundredMembers,
    /// 1,000 members (5 voters, 995 non-voters) over the real driving loop: they start
    /// within about a second, a primary is agreed, then it crashes. Minutes per seed:
    /// not in [`ALL`], run by name (`cargo sim run thousand-members`).
    ThousandMembers,
    /// No fault for 10 s over the real hyper transport (madsim TCP).
    HttpSteady,
    /// `PrimaryCrash` over the real hyper transport (madsim TCP).
    HttpPrimaryCrash,
    /// `PrimaryIsolated` over the real hyper transport (madsim TCP).
    HttpPrimaryIsolated,
    /// `PausedPrimary` over the real hyper transport (madsim TCP).
    HttpPausedPrimary,
    /// 3 pods; the primary and a follower are killed and restarted in place (new
    /// identities, no data directory). Once the restarted processes answer, the lost
    /// voters are proven dead and the survivor recovers the cluster (P11): an agreed
    /// primary within [`recovery::recovery_bound_ns`] of the restart (4.4 s).
    MajorityRestartInPlace3,
    /// `MajorityRestartInPlace3` with 5 pods, 3 voters (the primary among them) lost
    /// and restarted in place: a zone loss. Same bound.
    MajorityRestartInPlace5,
    /// 3 or 5 pods with `discovery_proves_absence`; a majority (the primary among them)
    /// is deleted, vanishing from a lagging, failing discovery, and replaced by new pods
    /// at new IPs. Bound: [`recovery::replaced_bound_ns`] from the replacements' start.
    MajorityReplacedK8s,
    /// A voter partitioned away with a stale configuration must not found a successor
    /// while its old fellow voters' successors answer it but the live members do not;
    /// healed, the cluster recovers with it. Bound: [`recovery::recovery_bound_ns`] plus
    /// one lost candidacy ([`recovery::lost_candidacy_ns`]) from the heal (10.4 s).
    StaleSurvivor,
    /// 5 pods all killed and restarted in place at once: a cold start, within the
    /// config-derived bound.
    WholeFleetRestart,
    /// 5 pods; every 2 s for 20 s a random pod is SIGKILLed (no leave) and restarted in
    /// place at once, faster than `removal_grace`. Config-derived bound.
    RollingKillNoLeave,
    /// `MajorityRestartInPlace3` with a data directory on every pod (P12): the
    /// restarted voters are the same members, so an ordinary election follows and no
    /// successor cluster is founded. Bound: the general one.
    MajorityRestartWithData3,
    /// The same with 5 pods and 3 voters lost.
    MajorityRestartWithData5,
    /// `WholeFleetRestart` with data directories: the same cluster elects again (no
    /// cold start, no successor).
    WholeFleetRestartWithData,
    /// `RollingKillNoLeave` with data directories.
    RollingKillWithData,
    /// 5 pods all deleted at once and replaced by new pods at new IPs (no data
    /// directory): a cold start. Config-derived bound.
    WholeFleetReplaced,
    /// The lease at [`Config::max_safe_lease`] of a 10% drift bound, the primary's
    /// clock slow by the bound and the electors' fast; the primary is isolated or
    /// paused four times ([`lease::lease_at_bound`]).
    LeaseAtBound,
    /// Named roles: 5 pods, then a 6th and a 7th join; the roles spread to them, no
    /// member above the placement's cap (`scenarios/roles.rs`, `scale_up`).
    RolesScaleUp,
    /// Named roles: 7 pods down to 4, by graceful leave and by crash
    /// (`scenarios/roles.rs`, `scale_down`).
    RolesScaleDown,
    /// Named roles: a crash of the new owner, an old owner or the primary while roles
    /// move to a newcomer (`scenarios/roles.rs`, `crash_during_handover`).
    RolesCrashDuringHandover,
    /// Named roles declared and removed at run time through non-primary members,
    /// under isolation, pauses and one-way cuts (`scenarios/roles.rs`, `churn`).
    RolesChurn,
    /// Named roles with `role_failover_timeout` (150 ms) below the lease: owners
    /// isolated or paused, failed over while their last hold may still run
    /// (`scenarios/roles.rs`, `fast_failover`).
    RolesFastFailover,
    /// The key-value store (P14) under load while the primary crashes and restarts
    /// with its data, twice; the history must be linearizable
    /// (`scenarios/store.rs`, `primary_crash`).
    StorePrimaryCrash,
    /// The store under load, the config and clocks of `LeaseAtBound`; the primary
    /// split off with a follower, cut off one way, isolated (`scenarios/store.rs`,
    /// `partition`).
    StorePartition,
    /// The store under load, clocks at the drift bound, the primary paused past the
    /// election timeout three times (`scenarios/store.rs`, `paused_primary`).
    StorePausedPrimary,
    /// The store under load through 20 s of random faults: isolation, one-way cuts,
    /// pauses, crashes and restarts with data, loss, clock rate changes
    /// (`scenarios/store.rs`, `chaos`).
    StoreChaos,
}

/// Every scenario, in catalogue order.
pub const ALL: [Scenario; 41] = [
    Scenario::ColdStart,
    Scenario::PrimaryCrash,
    Scenario::PrimaryIsolated,
    Scenario::MinorityPartition,
    Scenario::MajorityPartition,
    Scenario::OneWayPartition,
    Scenario::FlappingLink,
    Scenario::LossDelayStorm,
    Scenario::PausedPrimary,
    Scenario::RollingRestart,
    Scenario::ScaleUpDown,
    Scenario::DiscoveryChaos,
    Scenario::ClockDrift,
    Scenario::LeaveDuringElection,
    Scenario::Chaos,
    Scenario::HundredMembers,
    Scenario::HttpSteady,
    Scenario::HttpPrimaryCrash,
    Scenario::HttpPrimaryIsolated,
    Scenario::HttpPausedPrimary,
    Scenario::MajorityRestartInPlace3,
    Scenario::MajorityRestartInPlace5,
    Scenario::MajorityReplacedK8s,
    Scenario::StaleSurvivor,
    Scenario::WholeFleetRestart,
    Scenario::RollingKillNoLeave,
    Scenario::MajorityRestartWithData3,
    Scenario::MajorityRestartWithData5,
    Scenario::WholeFleetRestartWithData,
    Scenario::RollingKillWithData,
    Scenario::WholeFleetReplaced,
    Scenario::LeaseAtBound,
    Scenario::RolesScaleUp,
    Scenario::RolesScaleDown,
    Scenario::RolesCrashDuringHandover,
    Scenario::RolesChurn,
    Scenario::RolesFastFailover,
    Scenario::StorePrimaryCrash,
    Scenario::StorePartition,
    Scenario::StorePausedPrimary,
    Scenario::StoreChaos,
];

/// Scenarios too slow for `all` (and for CI): run only when named.
pub const BY_NAME: [Scenario; 1] = [Scenario::ThousandMembers];

impl Scenario {
    /// The scenario's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::ColdStart => "cold-start",
            Scenario::PrimaryCrash => "primary-crash",
            Scenario::PrimaryIsolated => "primary-isolated",
            Scenario::MinorityPartition => "minority-partition",
            Scenario::MajorityPartition => "majority-partition",
            Scenario::OneWayPartition => "one-way-partition",
            Scenario::FlappingLink => "flapping-link",
            Scenario::LossDelayStorm => "loss-delay-storm",
            Scenario::PausedPrimary => "paused-primary",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::ScaleUpDown => "scale-3-7-3",
            Scenario::DiscoveryChaos => "discovery-chaos",
            Scenario::ClockDrift => "clock-drift",
            Scenario::LeaveDuringElection => "leave-during-election",
            Scenario::Chaos => "chaos",
            Scenario::HundredMembers => "hundred-members",
            Scenario::ThousandMembers => "thousand-members",
            Scenario::HttpSteady => "http-steady",
            Scenario::HttpPrimaryCrash => "http-primary-crash",
            Scenario::HttpPrimaryIsolated => "http-primary-isolated",
            Scenario::HttpPausedPrimary => "http-paused-primary",
            Scenario::MajorityRestartInPlace3 => "majority-restart-in-place-3",
            Scenario::MajorityRestartInPlace5 => "majority-restart-in-place-5",
            Scenario::MajorityReplacedK8s => "majority-replaced-k8s",
            Scenario::StaleSurvivor => "stale-survivor",
            Scenario::WholeFleetRestart => "whole-fleet-restart",
            Scenario::RollingKillNoLeave => "rolling-kill-no-leave",
            Scenario::MajorityRestartWithData3 => "majority-restart-with-data-3",
            Scenario::MajorityRestartWithData5 => "majority-restart-with-data-5",
            Scenario::WholeFleetRestartWithData => "whole-fleet-restart-with-data",
            Scenario::RollingKillWithData => "rolling-kill-with-data",
            Scenario::WholeFleetReplaced => "whole-fleet-replaced",
            Scenario::LeaseAtBound => "lease-at-bound",
            Scenario::RolesScaleUp => "roles-scale-up",
            Scenario::RolesScaleDown => "roles-scale-down",
            Scenario::RolesCrashDuringHandover => "roles-crash-during-handover",
            Scenario::RolesChurn => "roles-churn",
            Scenario::RolesFastFailover => "roles-fast-failover",
            Scenario::StorePrimaryCrash => "store-primary-crash",
            Scenario::StorePartition => "store-partition",
            Scenario::StorePausedPrimary => "store-paused-primary",
            Scenario::StoreChaos => "store-chaos",
        }
    }

    /// Looks a scenario up by its name.
    pub fn from_name(name: &str) -> Option<Scenario> {
        ALL.iter()
            .chain(BY_NAME.iter())
            .copied()
            .find(|s| s.name() == name)
    }

    /// Its cost relative to an ordinary scenario (a fraction of a second of wall time
    /// per seed): a sweep runs fewer seeds of a slow one and hands them out first.
    pub fn weight(self) -> u64 {
        match self {
            Scenario::HundredMembers => 20,
            Scenario::ThousandMembers => 1_000,
            _ => 1,
        }
    }

    /// The protocol configuration it runs with (the default, `Config::datacenter`).
    pub fn config(self) -> Config {
        match self {
            // P4: min_nodes above half the replicas that can take part in bootstrap.
            Scenario::HundredMembers => Config::datacenter()
                .with_min_nodes(std::num::NonZeroUsize::new(51).expect("51 > 0")),
            Scenario::ThousandMembers => Config::datacenter()
                .with_min_nodes(std::num::NonZeroUsize::new(501).expect("501 > 0")),
            Scenario::MajorityReplacedK8s => {
                let mut cfg = Config::datacenter();
                cfg.discovery_proves_absence = true;
                cfg
            }
            Scenario::StaleSurvivor => recovery::stale_survivor_config(),
            Scenario::LeaseAtBound => lease::lease_at_bound_config(),
            Scenario::StorePartition => store::partition_config(),
            Scenario::StoreChaos => store::chaos_config(),
            Scenario::RolesFastFailover => roles::fast_failover_config(),
            _ => Config::datacenter(),
        }
    }

    /// Recorder options.
    pub fn options(self) -> SimOptions {
        match self {
            Scenario::HundredMembers | Scenario::ThousandMembers => SimOptions {
                sample_ms: 25,
                ..SimOptions::default()
            },
            Scenario::HttpSteady
            | Scenario::HttpPrimaryCrash
            | Scenario::HttpPrimaryIsolated
            | Scenario::HttpPausedPrimary => SimOptions {
                transport: TransportKind::Http,
                ..SimOptions::default()
            },
            Scenario::MajorityRestartWithData3
            | Scenario::MajorityRestartWithData5
            | Scenario::WholeFleetRestartWithData
            | Scenario::RollingKillWithData => SimOptions {
                data_dirs: true,
                ..SimOptions::default()
            },
            // The store scenarios: restarts keep the member and its log; no roles
            // (`SIM_ROLES` adds them).
            Scenario::StorePrimaryCrash
            | Scenario::StorePartition
            | Scenario::StorePausedPrimary
            | Scenario::StoreChaos => SimOptions {
                data_dirs: true,
                roles: 0,
                ..SimOptions::default()
            },
            _ => SimOptions::default(),
        }
    }

    /// Runs the scenario on a fresh cluster; returns when its last fault happened.
    pub async fn run(self, c: SimCluster) -> Plan {
        let mut s = Ctx::new(c);
        match self {
            Scenario::ColdStart => cold_start(&mut s).await,
            Scenario::HttpSteady => steady(&mut s).await,
            Scenario::PrimaryCrash | Scenario::HttpPrimaryCrash => primary_crash(&mut s).await,
            Scenario::PrimaryIsolated | Scenario::HttpPrimaryIsolated => {
                primary_isolated(&mut s).await
            }
            Scenario::MinorityPartition => partition(&mut s, true).await,
            Scenario::MajorityPartition => partition(&mut s, false).await,
            Scenario::OneWayPartition => one_way(&mut s).await,
            Scenario::FlappingLink => flapping(&mut s).await,
            Scenario::LossDelayStorm => storm(&mut s).await,
            Scenario::PausedPrimary | Scenario::HttpPausedPrimary => paused(&mut s).await,
            Scenario::RollingRestart => rolling(&mut s).await,
            Scenario::ScaleUpDown => scale(&mut s).await,
            Scenario::DiscoveryChaos => discovery(&mut s).await,
            Scenario::ClockDrift => drift(&mut s).await,
            Scenario::LeaveDuringElection => leave_election(&mut s).await,
            Scenario::Chaos => chaos(&mut s).await,
            Scenario::HundredMembers => hundred(&mut s).await,
            Scenario::ThousandMembers => thousand(&mut s).await,
            Scenario::MajorityRestartInPlace3 => {
                recovery::majority_restart_in_place(&mut s, 3, 2).await
            }
            Scenario::MajorityRestartInPlace5 => {
                recovery::majority_restart_in_place(&mut s, 5, 3).await
            }
            Scenario::MajorityReplacedK8s => recovery::majority_replaced_k8s(&mut s).await,
            Scenario::StaleSurvivor => recovery::stale_survivor(&mut s).await,
            Scenario::WholeFleetRestart => recovery::whole_fleet_restart(&mut s).await,
            Scenario::RollingKillNoLeave => recovery::rolling_kill_no_leave(&mut s).await,
            Scenario::MajorityRestartWithData3 => {
                recovery::majority_restart_in_place(&mut s, 3, 2).await;
                s.bound_ns = None; // an ordinary election: the general bound
                recovery::no_successor(&mut s, 0);
            }
            Scenario::MajorityRestartWithData5 => {
                recovery::majority_restart_in_place(&mut s, 5, 3).await;
                s.bound_ns = None;
                recovery::no_successor(&mut s, 0);
            }
            Scenario::WholeFleetRestartWithData => {
                recovery::whole_fleet_restart(&mut s).await;
                recovery::no_successor(&mut s, 0);
            }
            Scenario::RollingKillWithData => {
                recovery::rolling_kill_no_leave(&mut s).await;
                recovery::no_successor(&mut s, 0);
            }
            Scenario::WholeFleetReplaced => recovery::whole_fleet_replaced(&mut s).await,
            Scenario::LeaseAtBound => lease::lease_at_bound(&mut s).await,
            Scenario::RolesScaleUp => roles::scale_up(&mut s).await,
            Scenario::RolesScaleDown => roles::scale_down(&mut s).await,
            Scenario::RolesCrashDuringHandover => roles::crash_during_handover(&mut s).await,
            Scenario::RolesChurn => roles::churn(&mut s).await,
            Scenario::RolesFastFailover => roles::fast_failover(&mut s).await,
            Scenario::StorePrimaryCrash => store::primary_crash(&mut s).await,
            Scenario::StorePartition => store::partition(&mut s).await,
            Scenario::StorePausedPrimary => store::paused_primary(&mut s).await,
            Scenario::StoreChaos => store::chaos(&mut s).await,
        }
        s.plan()
    }
}

/// What the checker needs to know about a finished scenario.
#[derive(Clone, Debug)]
pub struct Plan {
    /// When the last fault was injected or cleared (global ns).
    pub last_fault_ns: u64,
    /// Extra time allowed on top of the config-derived liveness bound (ns).
    pub extra_bound_ns: u64,
    /// The scenario's own liveness bound (ns after the last fault), stated in its
    /// doc comment; it replaces the config-derived bound and `extra_bound_ns`.
    pub bound_ns: Option<u64>,
    /// What the scenario's own assertions found wrong (beyond the checker's).
    pub violations: Vec<Violation>,
    /// The named roles that must each have exactly one live owner after the last
    /// fault (within the liveness bound) and at the end: those declared at start
    /// ([`SimOptions::roles`]), with the scenario's run-time additions and removals.
    pub roles: BTreeSet<String>,
    /// The store clients' record (the store scenarios), judged by
    /// `cluster-mode-lincheck` in the runner.
    pub store: Option<crate::store::StoreRecord>,
}

/// Scenario state: the cluster, a deterministic RNG, the pods created.
pub struct Ctx {
    /// The simulated cluster.
    pub c: SimCluster,
    rng: SplitMix64,
    next_ip: u32,
    /// Current pod slots (replaced pods are swapped for their successors).
    pub pods: Vec<usize>,
    drift_bound: i64,
    last_fault_ns: u64,
    extra_bound_ns: u64,
    bound_ns: Option<u64>,
    violations: Vec<Violation>,
    /// The roles that must be owned at the end (see [`Plan::roles`]).
    pub roles: BTreeSet<String>,
    /// What the store clients recorded, if the scenario ran any.
    store: Option<crate::store::StoreRecord>,
}

impl Ctx {
    fn new(c: SimCluster) -> Self {
        let drift_bound = i64::from(c.config().max_clock_drift_ppm);
        let roles = c.declared_roles().into_iter().collect();
        Ctx {
            roles,
            c,
            rng: SplitMix64::new(madsim::rand::random::<u64>()),
            next_ip: 1,
            pods: Vec::new(),
            drift_bound,
            last_fault_ns: 0,
            extra_bound_ns: 0,
            bound_ns: None,
            violations: Vec::new(),
            store: None,
        }
    }

    fn plan(&mut self) -> Plan {
        Plan {
            last_fault_ns: self.last_fault_ns,
            extra_bound_ns: self.extra_bound_ns,
            bound_ns: self.bound_ns,
            violations: std::mem::take(&mut self.violations),
            roles: self.roles.clone(),
            store: self.store.take(),
        }
    }

    /// Records a violation of the scenario's own assertion, now.
    pub fn violation(&mut self, what: impl Into<String>) {
        self.violations.push(Violation {
            at_ms: self.c.now_ns() / 1_000_000,
            what: what.into(),
        });
    }

    /// A uniform random number in `lo..hi` (deterministic per seed).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        // Drawn even for an empty range, so that every seed replays as before.
        let z = self.rng.next_u64();
        if hi <= lo {
            lo
        } else {
            lo + z % (hi - lo)
        }
    }

    fn ip(&mut self) -> Ipv4Addr {
        let n = self.next_ip;
        self.next_ip += 1;
        Ipv4Addr::new(10, 0, (n / 250) as u8, (n % 250 + 1) as u8)
    }

    /// Adds a pod with a random clock drift within the configured bound.
    pub fn add(&mut self) -> usize {
        let b = self.drift_bound as u64;
        let ppm = self.range(0, 2 * b + 1) as i64 - self.drift_bound;
        self.add_with_drift(ppm)
    }

    fn add_with_drift(&mut self, ppm: i64) -> usize {
        let ip = self.ip();
        let name = format!("n{}", self.next_ip - 2);
        let slot = self.c.add_node(&name, ip, ppm);
        self.pods.push(slot);
        slot
    }

    /// Marks a fault (shown in traces), and counts it as the latest fault.
    pub fn fault(&mut self, what: impl Into<String>) {
        self.c.fault(what);
        self.last_fault_ns = self.c.now_ns();
    }

    /// Sleeps `ms` simulated milliseconds.
    pub async fn sleep(&self, ms: u64) {
        self.c.sleep_ms(ms).await;
    }

    /// Sleeps a random number of milliseconds in `lo..hi`.
    pub async fn sleep_rand(&mut self, lo: u64, hi: u64) {
        let ms = self.range(lo, hi);
        self.sleep(ms).await;
    }

    /// Waits up to `max_ms` for a primary every live node agrees on; returns its slot.
    pub async fn wait_primary(&self, max_ms: u64) -> Option<usize> {
        self.wait_primary_every(max_ms, 10).await
    }

    /// [`Ctx::wait_primary`], looking every `step_ms` (every look reads every node's
    /// view: with 1,000 members, a million member entries).
    pub async fn wait_primary_every(&self, max_ms: u64, step_ms: u64) -> Option<usize> {
        let mut waited = 0;
        loop {
            let views = self.c.views();
            let now = self.c.now_ns();
            let live = views.iter().map(|(_, v)| v);
            if let Some(id) = crate::checker::agreed_primary(live, now, true) {
                return views.iter().find(|(_, v)| v.id == id).map(|(s, _)| *s);
            }
            if waited >= max_ms {
                return None;
            }
            self.sleep(step_ms).await;
            waited += step_ms;
        }
    }

    async fn start(&mut self, n: usize) -> Option<usize> {
        for _ in 0..n {
            self.add();
        }
        self.wait_primary(30_000).await
    }

    /// The pod name of `slot`.
    pub fn name(&self, slot: usize) -> String {
        self.c
            .slots()
            .get(slot)
            .map(|s| s.name.clone())
            .unwrap_or_default()
    }

    fn others(&self, slot: usize) -> Vec<usize> {
        self.pods.iter().copied().filter(|s| *s != slot).collect()
    }

    // The faults `chaos` and `store-chaos` both draw from. Each draws from the RNG
    // exactly as the loops did when they were written out in both, so every seed
    // replays as before.

    /// Cuts `victim` off from every other pod.
    fn isolate(&mut self, victim: usize) {
        self.c.isolate(victim);
        self.fault(format!("isolate {}", self.name(victim)));
    }

    /// Cuts the messages from `victim` to a random pod (none if it draws `victim`).
    fn cut_one_way_to_random(&mut self, victim: usize) {
        let k = self.range(0, self.pods.len() as u64) as usize;
        let other = self.pods[k];
        if other != victim {
            self.c.cut_one_way(victim, other);
            self.fault(format!(
                "one-way cut {} -> {}",
                self.name(victim),
                self.name(other)
            ));
        }
    }

    /// Pauses `victim` (SIGSTOP) for `lo..hi` ms, then resumes it.
    async fn pause_for(&mut self, victim: usize, lo: u64, hi: u64) {
        self.c.pause(victim);
        self.fault(format!("pause {}", self.name(victim)));
        self.sleep_rand(lo, hi).await;
        self.c.resume(victim);
        self.fault(format!("resume {}", self.name(victim)));
    }

    /// 10% loss, 1-80 ms latency.
    fn lossy_network(&mut self) {
        self.c
            .set_net(0.1, Duration::from_millis(1)..Duration::from_millis(80));
        self.fault("lossy network");
    }

    /// Heals every cut and puts the network back to no loss, 1-10 ms; marks `what`.
    fn heal_network(&mut self, what: &str) {
        self.c.heal();
        self.c
            .set_net(0.0, Duration::from_millis(1)..Duration::from_millis(10));
        self.fault(what);
    }
}

async fn cold_start(s: &mut Ctx) {
    for _ in 0..5 {
        let d = s.range(0, 500);
        s.sleep(d).await;
        s.add();
    }
    s.fault("all five pods started");
    s.sleep(8_000).await;
}

async fn steady(s: &mut Ctx) {
    if s.start(5).await.is_some() {
        s.fault("cluster formed; no fault from here on");
    }
    s.sleep(10_000).await;
}

async fn primary_crash(s: &mut Ctx) {
    let Some(p) = s.start(5).await else { return };
    s.sleep_rand(0, 1_000).await;
    s.c.kill(p, true);
    s.fault(format!("failover: primary {} crashed", s.name(p)));
    s.sleep(5_000).await;
}

async fn primary_isolated(s: &mut Ctx) {
    let Some(p) = s.start(5).await else { return };
    s.sleep_rand(0, 1_000).await;
    s.c.isolate(p);
    s.fault(format!("failover: primary {} isolated", s.name(p)));
    s.sleep(3_000).await;
    s.c.heal();
    s.fault("healed");
    s.sleep(3_000).await;
}

async fn partition(s: &mut Ctx, primary_in_minority: bool) {
    let Some(p) = s.start(5).await else { return };
    s.sleep_rand(0, 1_000).await;
    let others = s.others(p);
    let (a, b) = if primary_in_minority {
        (vec![p, others[0]], others[1..].to_vec())
    } else {
        (vec![p, others[0], others[1]], others[2..].to_vec())
    };
    s.c.partition(&[a, b]);
    s.fault(if primary_in_minority {
        "failover: partition, primary in the minority"
    } else {
        "partition, primary in the majority"
    });
    s.sleep(3_000).await;
    s.c.heal();
    s.fault("healed");
    s.sleep(3_000).await;
}

async fn one_way(s: &mut Ctx) {
    let Some(p) = s.start(5).await else { return };
    s.sleep_rand(0, 1_000).await;
    let inbound_only = s.range(0, 2) == 0;
    for o in s.others(p) {
        if inbound_only {
            s.c.cut_one_way(p, o);
        } else {
            s.c.cut_one_way(o, p);
        }
    }
    s.fault(if inbound_only {
        "failover: primary cannot send (one-way cut)"
    } else {
        "failover: primary cannot receive (one-way cut)"
    });
    s.sleep(3_000).await;
    s.c.heal();
    s.fault("healed");
    s.sleep(3_000).await;
}

async fn flapping(s: &mut Ctx) {
    let Some(p) = s.start(5).await else { return };
    let others = s.others(p);
    s.fault("links of the primary start flapping");
    let end = s.c.now_ns() + 5_000_000_000;
    let mut cut = false;
    while s.c.now_ns() < end {
        if cut {
            s.c.heal();
        } else {
            s.c.cut(p, others[0]);
            s.c.cut(p, others[1]);
        }
        cut = !cut;
        s.sleep_rand(50, 400).await;
    }
    s.c.heal();
    s.fault("healed");
    s.sleep(3_000).await;
}

async fn storm(s: &mut Ctx) {
    if s.start(5).await.is_none() {
        return;
    }
    s.c.set_net(0.2, Duration::from_millis(1)..Duration::from_millis(150));
    s.fault("storm: 20% loss, 1-150 ms latency");
    s.sleep(5_000).await;
    s.c.set_net(0.0, Duration::from_millis(1)..Duration::from_millis(10));
    s.fault("storm over");
    s.sleep(4_000).await;
}

async fn paused(s: &mut Ctx) {
    let Some(p) = s.start(5).await else { return };
    s.sleep_rand(0, 1_000).await;
    s.c.pause(p);
    s.fault(format!("failover: primary {} paused", s.name(p)));
    let et = s.c.config().election_timeout_max.as_millis() as u64;
    s.sleep_rand(et + 100, 3 * et).await;
    s.c.resume(p);
    s.fault("primary resumed");
    s.sleep(3_000).await;
}

async fn rolling(s: &mut Ctx) {
    if s.start(3).await.is_none() {
        return;
    }
    let grace = s.c.config().removal_grace.as_millis() as u64;
    for i in 0..3 {
        let old = s.pods[i];
        let ip = s.ip();
        let name = format!("r{i}");
        let new = s.c.replace(old, &name, ip);
        s.pods[i] = new;
        s.fault(format!("failover: pod {i} replaced by {name}"));
        // Wait until the replacement joined and the old member is removed.
        s.sleep(grace + 3_000).await;
    }
    s.sleep(2_000).await;
}

async fn scale(s: &mut Ctx) {
    if s.start(3).await.is_none() {
        return;
    }
    for _ in 0..4 {
        s.add();
        s.fault("scale up: pod added");
        s.sleep_rand(300, 1_500).await;
    }
    s.sleep(3_000).await;
    for _ in 0..4 {
        let slot = s.pods.pop().expect("pods");
        s.c.leave(slot);
        s.fault("scale down: pod leaves");
        s.sleep_rand(1_000, 2_000).await;
        s.c.kill(slot, true);
    }
    s.sleep(3_000).await;
}

async fn discovery(s: &mut Ctx) {
    s.c.registry(|r| {
        r.lag_ms = 1_000;
        r.error_ppm = 300_000;
        r.flap_ppm = 200_000;
    });
    for _ in 0..5 {
        s.add();
    }
    let addr = |i: usize| cluster_mode_core::Address::new(format!("10.0.0.{}:7000", i + 2));
    s.c.registry(|r| {
        for n in ["n0", "n1"] {
            r.set_view(n, [addr(0), addr(1), addr(2)]);
        }
        for n in ["n3", "n4"] {
            r.set_view(n, [addr(2), addr(3), addr(4)]);
        }
    });
    s.fault("discovery lags 1 s, fails 30%, flaps 20%, views disagree");
    s.sleep_rand(2_000, 5_000).await;
    s.c.registry(|r| {
        r.clear_views();
        r.lag_ms = 0;
        r.error_ppm = 0;
        r.flap_ppm = 0;
    });
    s.fault("discovery healthy");
    s.sleep(5_000).await;
}

async fn drift(s: &mut Ctx) {
    for i in 0..5 {
        let b = s.drift_bound;
        s.add_with_drift(if i % 2 == 0 { b } else { -b });
    }
    let Some(p) = s.wait_primary(30_000).await else {
        return;
    };
    s.sleep_rand(0, 1_000).await;
    s.c.isolate(p);
    s.fault(format!(
        "failover: primary {} (clock at the drift bound) isolated",
        s.name(p)
    ));
    s.sleep(2_000).await;
    s.c.heal();
    s.fault("healed");
    let Some(p) = s.wait_primary(10_000).await else {
        return;
    };
    s.c.pause(p);
    s.fault(format!("failover: primary {} paused", s.name(p)));
    s.sleep(1_500).await;
    s.c.resume(p);
    s.fault("resumed");
    s.sleep(3_000).await;
}

async fn leave_election(s: &mut Ctx) {
    let Some(p) = s.start(5).await else { return };
    s.c.kill(p, true);
    s.fault(format!("failover: primary {} crashed", s.name(p)));
    let et = s.c.config().election_timeout_min.as_millis() as u64;
    s.sleep_rand(et, 2 * et).await;
    let others: Vec<usize> = s.others(p);
    let leaver = others[s.range(0, others.len() as u64) as usize];
    s.c.leave(leaver);
    s.fault(format!("{} leaves during the election", s.name(leaver)));
    s.pods.retain(|x| *x != p && *x != leaver);
    if let Some(q) = s.wait_primary(10_000).await {
        s.c.leave(q);
        s.fault(format!("failover: the new primary {} leaves", s.name(q)));
    }
    s.sleep(5_000).await;
}

async fn chaos(s: &mut Ctx) {
    if s.start(5).await.is_none() {
        return;
    }
    let end = s.c.now_ns() + 30_000_000_000;
    // A restarted pod leaves its old identity in the configuration until the leader
    // replaces it; restarting a majority of voters before that happens loses quorum for
    // good (outside the liveness assumption), so restarts are spaced out.
    let spacing = u64::try_from(s.c.config().removal_grace.as_nanos()).unwrap_or(0) + 5_000_000_000;
    let mut last_restart: Option<u64> = None;
    while s.c.now_ns() < end {
        let k = s.range(0, s.pods.len() as u64) as usize;
        let victim = s.pods[k];
        match s.range(0, 6) {
            0 => s.isolate(victim),
            1 => s.cut_one_way_to_random(victim),
            2 => s.pause_for(victim, 100, 1_500).await,
            3 if last_restart.is_none_or(|t| s.c.now_ns() > t + spacing) => {
                last_restart = Some(s.c.now_ns());
                s.c.restart(victim);
                s.fault(format!("restart {} (new identity)", s.name(victim)));
            }
            3 => {}
            4 => s.lossy_network(),
            _ => s.heal_network("heal"),
        }
        s.sleep_rand(200, 2_500).await;
    }
    s.heal_network("heal all");
    // Restarted pods leave dead identities behind until the removal grace passes.
    s.extra_bound_ns = u64::try_from(s.c.config().removal_grace.as_nanos()).unwrap_or(0);
    s.sleep(8_000).await;
}

async fn hundred(s: &mut Ctx) {
    for i in 0..100 {
        s.add();
        if i % 10 == 9 {
            s.sleep(50).await;
        }
    }
    s.fault("100 pods started");
    let Some(p) = s.wait_primary(30_000).await else {
        return;
    };
    s.c.kill(p, true);
    s.fault(format!("failover: primary {} crashed", s.name(p)));
    s.extra_bound_ns = 5_000_000_000;
    s.sleep(8_000).await;
}

/// 1,000 pods, 10 every 10 ms (all started within a second, a parallel StatefulSet
/// rollout), `min_nodes` 501 (P4), discovery polled every second (1,000 pods polling
/// a registry every 200 ms would be 5,000 requests a second). Marks `cold start: 1000
/// pods started` at the last start (`cluster-sim stats` measures the time to the first
/// agreed primary from it), waits for a primary every live node agrees on, then
/// crashes it.
async fn thousand(s: &mut Ctx) {
    s.c.registry(|r| r.interval_ms = 1_000);
    for i in 0..1_000 {
        s.add();
        if i % 10 == 9 && i < 999 {
            s.sleep(10).await;
        }
    }
    s.fault("cold start: 1000 pods started");
    let Some(p) = s.wait_primary_every(60_000, 100).await else {
        return;
    };
    s.sleep_rand(0, 1_000).await;
    s.c.kill(p, true);
    s.fault(format!("failover: primary {} crashed", s.name(p)));
    s.extra_bound_ns = 5_000_000_000;
    s.sleep(5_000).await;
}
