//! The node's clock: the only place the shell reads time.
//!
//! Two clocks come with the crate:
//!
//! - `BoottimeClock` (Linux, real runs; the default there): `CLOCK_BOOTTIME`, which
//!   keeps counting while the host or VM is suspended. A primary frozen by a suspend
//!   reads a clock that has moved on when it wakes, so its lease has lapsed at once
//!   (docs/PROTOCOL.md, "Pauses and suspends", says which pauses this covers).
//! - [`SystemClock`]: the runtime's clock (`tokio::time::Instant`, `CLOCK_MONOTONIC`
//!   on Linux, which stops during a suspend). The default under madsim (where it is
//!   the simulated clock) and on other systems.
//!
//! [`default_clock`] picks one; [`crate::ClusterBuilder::clock`] overrides it.

use cluster_mode_core::Instant;
use std::sync::Arc;
use std::time::Duration;

/// A node's monotonic clock, as the core sees it.
///
/// The driving loop, the role queries and the status endpoint read time only through
/// this trait, so a simulation can give each node a clock that is offset or runs at
/// its own rate (clock drift), and the lease check of [`crate::Cluster::is_primary`]
/// uses the same clock the core was fed.
pub trait Clock: Send + Sync + 'static {
    /// Now, in the core's time scale.
    fn now(&self) -> Instant;

    /// The tokio deadline (wall time of the runtime, simulated under madsim) at which
    /// this clock will read `at`. Used to sleep until the core's next timeout.
    fn deadline(&self, at: Instant) -> tokio::time::Instant;
}

/// The farthest a deadline is set ahead (`Instant::MAX` means "never"): a year, so the
/// addition cannot overflow the runtime's `Instant`.
const FAR: u64 = 365 * 24 * 3600 * 1_000_000_000;

/// The runtime's monotonic clock (`tokio::time::Instant`, which madsim simulates),
/// counted in nanoseconds from the moment the clock was made.
///
/// On Linux this is `CLOCK_MONOTONIC`, which does not advance while the host or VM is
/// suspended: a primary frozen by a suspend would still believe its lease when it
/// wakes. Real runs on Linux use `BoottimeClock` by default instead.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    origin: tokio::time::Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        let d = tokio::time::Instant::now().saturating_duration_since(self.origin);
        Instant::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.origin + Duration::from_nanos(at.as_nanos().min(FAR))
    }
}

/// `CLOCK_BOOTTIME` (Linux): monotonic, and counting the time the system was
/// suspended, in nanoseconds from the moment the clock was made. The default clock of
/// real (non-madsim) runs on Linux.
///
/// After a suspend (or a VM pause during which the guest's boottime is advanced, see
/// docs/PROTOCOL.md) its reading has jumped by the suspended time, so
/// [`crate::Cluster::is_primary`] answers `false` on the first call after waking if
/// the lease ran out meanwhile, before any timer of the runtime fires.
///
/// The runtime's timers still run on `CLOCK_MONOTONIC`; [`Clock::deadline`] maps an
/// instant onto them relative to now (the time left on this clock, from the runtime's
/// now). After a suspend the loop therefore wakes for its next timeout late by at most
/// the time that was left before the suspend (a heartbeat interval or so); role queries
/// never wait for it, they read this clock at each call.
#[cfg(all(target_os = "linux", not(madsim)))]
#[derive(Clone, Copy, Debug)]
pub struct BoottimeClock {
    origin: u64,
}

#[cfg(all(target_os = "linux", not(madsim)))]
impl BoottimeClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        BoottimeClock {
            origin: boottime_nanos(),
        }
    }
}

#[cfg(all(target_os = "linux", not(madsim)))]
impl Default for BoottimeClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(target_os = "linux", not(madsim)))]
impl Clock for BoottimeClock {
    fn now(&self) -> Instant {
        Instant::from_nanos(boottime_nanos().saturating_sub(self.origin))
    }

    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        // This clock first, the runtime's second: the runtime's now is then no earlier
        // than the moment this clock was read, so the deadline is never early (and
        // `CLOCK_BOOTTIME` advances at least as fast as `CLOCK_MONOTONIC`).
        let now = self.now();
        let base = tokio::time::Instant::now();
        base + Duration::from_nanos(at.as_nanos().saturating_sub(now.as_nanos()).min(FAR))
    }
}

/// `CLOCK_BOOTTIME` now, in nanoseconds since the host booted: one clock for every
/// process of the host (also across network namespaces; a time namespace could offset
/// it). Through rustix's safe `clock_gettime`, which cannot fail for this clock id.
#[cfg(all(target_os = "linux", not(madsim)))]
pub fn boottime_nanos() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// The type of the clock a node gets unless [`crate::ClusterBuilder::clock`] gives
/// one: `BoottimeClock` on Linux outside madsim.
#[cfg(all(target_os = "linux", not(madsim)))]
pub type DefaultClock = BoottimeClock;

/// The type of the clock a node gets unless [`crate::ClusterBuilder::clock`] gives
/// one: [`SystemClock`] off Linux and under madsim (there the simulated clock).
#[cfg(not(all(target_os = "linux", not(madsim))))]
pub type DefaultClock = SystemClock;

/// The clock a node gets unless [`crate::ClusterBuilder::clock`] gives one, a new
/// [`DefaultClock`]: `BoottimeClock` on Linux outside madsim, [`SystemClock`]
/// otherwise (under madsim it is the simulated clock).
pub fn default_clock() -> Arc<dyn Clock> {
    Arc::new(DefaultClock::new())
}

/// The host-wide clock lease intervals are recorded on (see
/// [`crate::lease_log`]): `CLOCK_BOOTTIME` nanoseconds on Linux outside madsim;
/// `None` elsewhere (the intervals are then on the node's own clock).
pub(crate) fn host_nanos() -> Option<u64> {
    #[cfg(all(target_os = "linux", not(madsim)))]
    {
        Some(boottime_nanos())
    }
    #[cfg(not(all(target_os = "linux", not(madsim))))]
    {
        None
    }
}

#[cfg(all(test, target_os = "linux", not(madsim)))]
mod tests {
    use super::*;

    #[test]
    fn boottime_is_monotonic_and_at_least_monotonic_time() {
        let c = BoottimeClock::new();
        let std0 = std::time::Instant::now();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = c.now();
        let std_elapsed = std0.elapsed();
        assert!(b > a);
        // Boottime advances at least as fast as the monotonic clock (they differ only
        // by suspended time).
        assert!(b - a + Duration::from_millis(1) >= Duration::from_millis(20));
        assert!(b - a <= std_elapsed + Duration::from_millis(1));
    }

    #[tokio::test]
    async fn deadline_is_never_early() {
        let c = BoottimeClock::new();
        for ms in [0u64, 1, 5, 17] {
            let at = c.now() + Duration::from_millis(ms);
            tokio::time::sleep_until(c.deadline(at)).await;
            assert!(c.now() >= at, "woke at {} before {}", c.now(), at);
        }
        // "Never" does not overflow.
        let _ = c.deadline(Instant::MAX);
    }
}
