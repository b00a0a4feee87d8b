//! The node's clock: the only place the shell reads time.

use cluster_mode_core::Instant;
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

/// The runtime's monotonic clock (`tokio::time::Instant`, which madsim simulates),
/// counted in nanoseconds from the moment the clock was made.
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
        // Cap far-future instants (Instant::MAX means "never") at a year so the
        // addition cannot overflow the runtime's Instant.
        let nanos = at.as_nanos().min(365 * 24 * 3600 * 1_000_000_000);
        self.origin + Duration::from_nanos(nanos)
    }
}
