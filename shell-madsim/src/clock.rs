//! A node's local clock: simulated time, shifted and running at its own rate.

use cluster_mode_core::Instant;

/// A linear clock: `local = anchor_local + (global - anchor_global) * (1e6 + ppm) / 1e6`.
///
/// `global` is simulated nanoseconds since the simulation started. Changing the rate
/// re-anchors at the current instant, so local time never jumps or goes backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    anchor_global: u64,
    anchor_local: u64,
    ppm: i64,
}

impl Clock {
    /// A clock reading `offset` nanoseconds at global time 0, with rate error `ppm`
    /// (positive: runs fast). `ppm` must be above -1_000_000.
    pub fn new(offset: u64, ppm: i64) -> Self {
        Clock {
            anchor_global: 0,
            anchor_local: offset,
            ppm: ppm.max(-999_999),
        }
    }

    /// The rate error in parts per million.
    pub fn ppm(&self) -> i64 {
        self.ppm
    }

    /// The local reading at global time `global` (ns).
    pub fn local(&self, global: u64) -> Instant {
        let dg = u128::from(global.saturating_sub(self.anchor_global));
        let rate = (1_000_000 + self.ppm) as u128;
        let dl = dg * rate / 1_000_000;
        Instant::from_nanos(self.anchor_local.saturating_add(dl as u64))
    }

    /// The first global time (ns) at which the local clock reads at least `local`.
    pub fn global_of(&self, local: Instant) -> u64 {
        let l = local.as_nanos();
        if l <= self.anchor_local {
            return self.anchor_global;
        }
        let dl = u128::from(l - self.anchor_local);
        let rate = (1_000_000 + self.ppm) as u128;
        let dg = (dl * 1_000_000).div_ceil(rate);
        self.anchor_global
            .saturating_add(u64::try_from(dg).unwrap_or(u64::MAX))
    }

    /// Changes the rate from global time `now` on, keeping the reading continuous.
    pub fn set_ppm(&mut self, now: u64, ppm: i64) {
        let local = self.local(now).as_nanos();
        *self = Clock {
            anchor_global: now,
            anchor_local: local,
            ppm: ppm.max(-999_999),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_monotonic() {
        let mut c = Clock::new(5_000, 10_000);
        assert_eq!(c.local(1_000_000).as_nanos(), 5_000 + 1_010_000);
        let l = c.local(777_777);
        assert!(c.local(c.global_of(l)) >= l);
        let before = c.local(2_000_000);
        c.set_ppm(2_000_000, -10_000);
        assert_eq!(c.local(2_000_000), before);
        assert!(c.local(3_000_000) > before);
    }
}
