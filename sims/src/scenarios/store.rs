//! Scenarios of the replicated key-value store (issue 12, P14): store clients
//! ([`crate::store`]) write and read through the shell's own store handle of every
//! pod while faults hit the cluster; the recorded history must be linearizable
//! (`cluster-mode-lincheck`), besides the checker's usual invariants. Every pod has a
//! data directory ([`cluster_mode_madsim::SimOptions::data_dirs`]), so a restarted
//! process is the same member with its log, and no named roles (the store is the
//! subject; `SIM_ROLES=64` adds them).
//!
//! Each scenario forms a 5-pod cluster, starts 4 writers and 2 readers (one or two
//! per pod), injects its faults, heals, lets the clients run 2 more seconds and stops
//! them.

use super::Ctx;
use crate::store::{LoadOptions, StoreLoad};
use cluster_mode_core::Config;
use std::time::Duration;

/// The drift bound of [`partition_config`]: 20%.
pub const PARTITION_DRIFT_PPM: u32 = 200_000;

/// The config of `store-partition`: `Config::datacenter()` with a 20% drift bound,
/// an election timeout of 300-360 ms, the largest lease `validate` accepts
/// (`max_safe_lease() - 1 ns`, 200 ms), as `lease-at-bound` does with 10%; and
/// `store_request_timeout` at 150 ms, so that a request a follower forwarded to the old
/// primary ends soon after the failover and the client's retry reaches the new one.
/// With the primary's clock slow by the bound and the electors' fast, the old primary
/// keeps leading (until CheckQuorum, 300 ms of its clock: 375-440 ms real) well after
/// a successor is elected (300-360 ms of theirs: 250-300 ms real) and commits
/// writes: the window in which a read it served without a majority's confirmation
/// would be stale. Within the bound the config allows, it must not serve one.
pub fn partition_config() -> Config {
    let mut cfg = Config::datacenter();
    cfg.max_clock_drift_ppm = PARTITION_DRIFT_PPM;
    cfg.election_timeout_max = cfg.election_timeout_min + Duration::from_millis(60);
    cfg.lease_duration = cfg.max_safe_lease() - Duration::from_nanos(1);
    cfg.store_request_timeout = Duration::from_millis(150);
    cfg
}

/// The config of `store-chaos`: `Config::datacenter()` with a short log (32 committed
/// entries kept) and snapshots in 64-byte pieces, so that a member back from a
/// fault gets the whole store, in pieces, while the clients keep writing.
pub fn chaos_config() -> Config {
    let mut cfg = Config::datacenter();
    cfg.store_log_entries = 32;
    cfg.snapshot_chunk_len = 64;
    cfg
}

impl Ctx {
    /// Starts the store clients on the current pods.
    fn start_store(&mut self) -> StoreLoad {
        let seed = self.rng.next_u64();
        let pods = self.pods.clone();
        StoreLoad::start(&self.c, &pods, &LoadOptions::default(), seed)
    }

    /// Stops the clients and keeps their history for the checker.
    async fn stop_store(&mut self, load: StoreLoad) {
        self.store = Some(load.stop(&self.c).await);
    }

    /// Sleeps 2 s after the heal with the clients still running, then stops them.
    async fn finish_store(&mut self, load: StoreLoad) {
        self.sleep(2_000).await;
        self.stop_store(load).await;
    }
}

/// The primary crashes (SIGKILL, its pod stays) and is restarted with its data
/// directory after 0.3-3 s, twice; writes in flight at the crash end unknown.
pub(super) async fn primary_crash(s: &mut Ctx) {
    if s.start(5).await.is_none() {
        return;
    }
    let load = s.start_store();
    s.sleep_rand(500, 1_500).await;
    for _ in 0..2 {
        let Some(p) = s.wait_primary(10_000).await else {
            break;
        };
        s.c.kill(p, false);
        s.fault(format!("failover: primary {} crashed", s.name(p)));
        s.sleep_rand(300, 3_000).await;
        s.c.restart(p);
        s.fault(format!("{} restarted with its data", s.name(p)));
        s.sleep_rand(1_000, 2_500).await;
    }
    s.finish_store(load).await;
}

/// With [`partition_config`] (a 20% drift bound, the lease at `max_safe_lease`,
/// election timeout 300-360 ms, forwarded requests timing out after 150 ms), three
/// rounds: once a primary is
/// agreed, its clock is set slow by the bound and every other clock fast by it (the
/// old primary believes in its lease and its leadership longest in real time, the
/// electors time out soonest); 150-400 ms later the primary is split off with one
/// follower (round 1), cut off one way (it cannot send, round 2) or isolated (round
/// 3) for 1.5-3 s, then healed. Its clients (in-process, so never cut off) keep
/// asking it, and the follower beside it forwards to it: a stale leader that served
/// reads without a majority's confirmation, or a lease read past the lease, would
/// answer with data the new primary has already overwritten.
pub(super) async fn partition(s: &mut Ctx) {
    let d = s.drift_bound;
    for _ in 0..5 {
        s.add_with_drift(d);
    }
    if s.wait_primary(30_000).await.is_none() {
        return;
    }
    let load = s.start_store();
    s.sleep_rand(500, 1_500).await;
    for round in 0..3 {
        let Some(p) = s.wait_primary(10_000).await else {
            break;
        };
        for q in s.pods.clone() {
            s.c.set_drift(q, if q == p { -d } else { d });
        }
        s.sleep_rand(150, 400).await;
        let others = s.others(p);
        let what = match round {
            0 => {
                s.c.partition(&[vec![p, others[0]], others[1..].to_vec()]);
                "split off with one follower"
            }
            1 => {
                for o in others {
                    s.c.cut_one_way(p, o);
                }
                "cut off one way (cannot send)"
            }
            _ => {
                s.c.isolate(p);
                "isolated"
            }
        };
        s.fault(format!(
            "failover: primary {} (clock slow by the bound, electors fast) {what}",
            s.name(p)
        ));
        s.sleep_rand(1_500, 3_000).await;
        s.c.heal();
        s.fault("healed");
        s.sleep_rand(500, 1_500).await;
    }
    s.finish_store(load).await;
}

/// Clocks at the drift bound, alternately fast and slow; three times the primary is
/// paused (SIGSTOP) for longer than the election timeout and resumed: it wakes up
/// believing it leads, with clients' reads (linearizable and lease) waiting for it.
pub(super) async fn paused_primary(s: &mut Ctx) {
    for i in 0..5 {
        let b = s.drift_bound;
        s.add_with_drift(if i % 2 == 0 { b } else { -b });
    }
    if s.wait_primary(30_000).await.is_none() {
        return;
    }
    let load = s.start_store();
    s.sleep_rand(500, 1_500).await;
    let et = s.c.config().election_timeout_max.as_millis() as u64;
    for _ in 0..3 {
        let Some(p) = s.wait_primary(10_000).await else {
            break;
        };
        s.c.pause(p);
        s.fault(format!("failover: primary {} paused", s.name(p)));
        s.sleep_rand(et + 100, 3 * et).await;
        s.c.resume(p);
        s.fault(format!("{} resumed", s.name(p)));
        s.sleep_rand(500, 2_000).await;
    }
    s.finish_store(load).await;
}

/// 20 simulated seconds of random faults under store load: isolation, one-way cuts,
/// pauses, crashes with a restart (with data) at once or after up to 2 s, a lossy
/// and slow network, clock rates changed within the drift bound, heals.
pub(super) async fn chaos(s: &mut Ctx) {
    if s.start(5).await.is_none() {
        return;
    }
    let load = s.start_store();
    let end = s.c.now_ns() + 20_000_000_000;
    while s.c.now_ns() < end {
        let k = s.range(0, s.pods.len() as u64) as usize;
        let victim = s.pods[k];
        match s.range(0, 7) {
            0 => s.isolate(victim),
            1 => s.cut_one_way_to_random(victim),
            2 => s.pause_for(victim, 100, 1_500).await,
            3 => {
                s.c.kill(victim, false);
                s.fault(format!("crash {}", s.name(victim)));
                s.sleep_rand(0, 2_000).await;
                s.c.restart(victim);
                s.fault(format!("restart {} with its data", s.name(victim)));
            }
            4 => s.lossy_network(),
            5 => {
                let b = s.drift_bound;
                let ppm = s.range(0, 2 * b as u64 + 1) as i64 - b;
                s.c.set_drift(victim, ppm);
                s.fault(format!("clock of {} at {ppm} ppm", s.name(victim)));
            }
            _ => s.heal_network("heal"),
        }
        s.sleep_rand(200, 2_500).await;
    }
    s.heal_network("heal all");
    s.finish_store(load).await;
}
