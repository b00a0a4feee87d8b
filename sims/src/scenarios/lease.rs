//! The lease at its safety bound (P6): the longest lease the config accepts for its
//! drift bound, clocks at that bound in the worst direction, and failovers that only
//! the lease keeps from overlapping.
//!
//! The other scenarios run `Config::datacenter()`: a 250 ms lease against a
//! 300 ms election timeout and a 1% drift bound, far below the 294 ms that 1% allows,
//! so a core that forgot the drift margin (a lease up to the election timeout) would
//! pass them. Here the lease is [`Config::max_safe_lease`] less one nanosecond and the
//! drift bound is 10%: a core that ignores the margin holds its lease 60 ms (real
//! time) longer than the earliest successor can be elected, more than the message
//! delays of an election, so it is caught (sims/README.md, "Catching a broken lease
//! rule", gives the measured rate). With the 1% default, the margin (6 ms) is smaller
//! than the one-way delays an election needs (seven at 1-10 ms), so no schedule could
//! show that mistake.

use super::Ctx;
use cluster_mode_core::Config;
use std::time::Duration;

/// The drift bound of [`lease_at_bound_config`]: 10%.
pub const DRIFT_PPM: u32 = 100_000;

/// `Config::datacenter()` with a 10% drift bound, an election timeout of 300-360 ms
/// (narrow, so that a follower times out close to the earliest instant it may) and
/// the largest lease `validate` accepts: `max_safe_lease() - 1 ns` (245.45 ms).
pub fn lease_at_bound_config() -> Config {
    let mut cfg = Config::datacenter();
    cfg.max_clock_drift_ppm = DRIFT_PPM;
    cfg.election_timeout_max = cfg.election_timeout_min + Duration::from_millis(60);
    cfg.lease_duration = cfg.max_safe_lease() - Duration::from_nanos(1);
    cfg
}

/// How many failovers one seed runs.
const ROUNDS: usize = 4;

/// Five pods. Four times: once a primary is agreed, its clock is set to run slow by
/// the drift bound and every other clock fast by it (the worst case: the old
/// primary's lease lasts longest in real time, the electors' timeouts shortest);
/// after a random 150-400 ms (so that the lease was renewed on the new rates and
/// the fault falls anywhere in a heartbeat interval) the primary is isolated (even
/// rounds) or paused (odd rounds) for 1.5 s while the others elect a successor, then
/// healed or resumed. The checker requires the old lease, converted to global time
/// from the slow clock, to end before the successor's begins.
pub async fn lease_at_bound(s: &mut Ctx) {
    let d = i64::from(DRIFT_PPM);
    for _ in 0..5 {
        s.add_with_drift(d);
    }
    for round in 0..ROUNDS {
        let Some(p) = s.wait_primary(10_000).await else {
            return;
        };
        for q in s.pods.clone() {
            s.c.set_drift(q, if q == p { -d } else { d });
        }
        s.sleep_rand(150, 400).await;
        if round % 2 == 0 {
            s.c.isolate(p);
            s.fault(format!(
                "failover: primary {} (clock slow by the bound, electors fast) isolated",
                s.name(p)
            ));
            s.sleep(1_500).await;
            s.c.heal();
            s.fault("healed");
        } else {
            s.c.pause(p);
            s.fault(format!(
                "failover: primary {} (clock slow by the bound, electors fast) paused",
                s.name(p)
            ));
            s.sleep(1_500).await;
            s.c.resume(p);
            s.fault("resumed");
        }
    }
    s.sleep(1_000).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_the_largest_the_config_accepts() {
        let cfg = lease_at_bound_config();
        assert!(cfg.validate().is_ok(), "{:?}", cfg.validate());
        let mut longer = cfg.clone();
        longer.lease_duration += Duration::from_nanos(1);
        assert_eq!(
            longer.validate().map_err(|e| e.field),
            Err("lease_duration")
        );
        // 300 ms * 0.9 / 1.1.
        assert_eq!(cfg.max_safe_lease(), Duration::from_nanos(245_454_545));
    }
}
