//! Timing and membership settings, with the trade-off of each.

use core::num::NonZeroUsize;
use core::time::Duration;

/// How a node times its protocol. Every field states its trade-off; [`Config::validate`]
/// checks the relations between them that safety depends on.
///
/// Two named profiles: [`Config::datacenter`] (the default: one data centre, a 1-10 ms
/// network, failover well under a second) and [`Config::fast_test`] (for tests and
/// simulations: elections five times faster, probing and removal ten times faster).
///
/// To change how fast failover is, change the election timeout in one place,
/// [`Config::with_election_timeout`]: it rescales the heartbeat and the lease that
/// depend on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How often the leader sends a heartbeat (an empty append) to every member.
    ///
    /// Shorter: the lease is renewed more often, so a brief loss of one heartbeat does
    /// not interrupt `is_primary()`, at the cost of more messages (one per member per
    /// interval). Must be well below `lease_duration`; at least three heartbeats per
    /// lease is a good rule.
    pub heartbeat_interval: Duration,
    /// The lower end of the randomised election timeout: how long a follower waits
    /// without hearing from a leader before it starts a pre-vote, and how long a
    /// follower that heard from a leader refuses to vote for anyone else (leader
    /// stickiness). It also bounds how long an isolated leader keeps leading
    /// (CheckQuorum).
    ///
    /// Shorter: faster failover. Too short for the network's worst round trip: spurious
    /// elections. Safety caveat: the primary lease is derived from it (see
    /// `lease_duration`).
    pub election_timeout_min: Duration,
    /// The upper end of the randomised election timeout. A wider range makes split
    /// votes rarer; a narrower one makes failover time more predictable.
    pub election_timeout_max: Duration,
    /// How long a majority's acknowledgement of a heartbeat keeps the leader primary,
    /// counted from when that heartbeat was sent (P6).
    ///
    /// Longer: the primary survives longer gaps in acknowledgements. Safety caveat: it
    /// must stay below `election_timeout_min * (1 - drift) / (1 + drift)` so that a
    /// new leader can never be elected while the old lease is valid, even when clocks
    /// run at different rates within `max_clock_drift_ppm`. `validate` enforces it.
    pub lease_duration: Duration,
    /// The largest rate difference between any node's clock and real time, in parts
    /// per million (10_000 = 1%). Commodity clocks drift well under 100 ppm; the margin
    /// also covers scheduling noise in measuring intervals.
    ///
    /// Safety caveat: if real drift exceeds this bound, two primaries may overlap
    /// briefly. Larger values shorten the longest allowed lease.
    pub max_clock_drift_ppm: u32,
    /// How many fresh nodes must see each other before the first configuration forms
    /// (P4).
    ///
    /// Safety caveat: set it above half the number of replicas that can take part in
    /// bootstrap (for 3 replicas: 2 or 3; for 5: 3 to 5). Smaller values let two
    /// disjoint groups form two clusters. Larger values wait for more replicas before
    /// anyone is primary.
    pub min_nodes: NonZeroUsize,
    /// The most voting members (P9). Past it, members join as non-voters that follow
    /// the primary and are promoted when a voter is removed.
    ///
    /// More voters: more failures tolerated, more acknowledgements per heartbeat and
    /// slower commits. 3 or 5 suits nearly everyone.
    pub max_voters: NonZeroUsize,
    /// How often a node retries a probe of a discovered address that has not answered,
    /// and re-asks the leader to admit it while it is not yet a member.
    pub probe_interval: Duration,
    /// How long a bootstrap candidate waits for enough grants before it withdraws and
    /// frees its supporters (randomised between 1x and 2x). Shorter: faster recovery
    /// from a split bootstrap; too short for the network: bootstrap never completes.
    pub bootstrap_timeout: Duration,
    /// How long a member must be both missing from the leader's discovery answers and
    /// silent to the leader before the leader removes it (P3).
    ///
    /// Shorter: a crashed pod leaves the quorum sooner, so the next crash is survived.
    /// Longer: a pod that discovery briefly forgets stays a member. It never applies
    /// to a discovery error or an empty answer.
    pub removal_grace: Duration,
    /// How long a member may be silent to the leader, even while discovery still lists
    /// its address, before it is removed; also how long a fresh node keeps supporting
    /// a bootstrap candidate it cannot hear from. `None`: never act on silence alone
    /// (a new process at the same address, or discovery dropping the address, still
    /// counts).
    ///
    /// Shorter: a dead machine in a static peer list stops holding a voter seat
    /// sooner. Safety caveat for bootstrap: a candidate partitioned away from its
    /// supporters for longer than this could found a cluster they have left, so keep
    /// it well above any partition you expect during a cold start.
    pub silent_member_timeout: Option<Duration>,
    /// How long `leave` waits for its removal to be committed before it reports
    /// finished anyway.
    pub leave_timeout: Duration,
    /// Whether members recover their cluster by themselves once every voter they
    /// cannot hear from is proven dead (P11): the survivors and the processes that
    /// replaced the dead voters found the cluster's successor, with no operator.
    ///
    /// `false`: such a cluster waits for `Input::ForceRecover` (an operator), as a
    /// cluster whose missing voters are not proven dead always does. Recovery never
    /// runs while any listed peer is silent or follows a leader, so leaving it on is
    /// safe under the assumptions of P11.
    pub auto_recover: bool,
    /// Whether an address missing from a discovery answer proves that the process
    /// that listened there is gone for good (P11).
    ///
    /// Set it only for a source that lists every process that may still run, and
    /// whose every answer is a consistent snapshot (the Kubernetes API's Pods, which
    /// keep a terminating pod until its containers stopped). Leave it `false` (the
    /// default) for DNS, EndpointSlices' ready endpoints and static lists: there an
    /// address can vanish while its process runs, and only another process answering
    /// at the address proves the old one gone. A wrong `true` can let a partitioned
    /// minority recover beside a live majority.
    pub discovery_proves_absence: bool,
    /// How long the primary waits, with no reply from a role owner, before it treats
    /// the owner as failed and moves its roles (P13). The move also waits until the
    /// owner's last hold has provably ended (at most `lease_duration` after the
    /// primary last renewed it), so a role is unowned for about this plus the lease
    /// after its owner dies.
    ///
    /// Shorter: faster reassignment after a crash. Longer: a pause or a slow link of
    /// the owner (a GC stall, a burst of loss) moves fewer roles for nothing. Must
    /// exceed twice `heartbeat_interval`.
    pub role_failover_timeout: Duration,
    /// How long an owner asked to give a role back may keep it to drain its work
    /// before it lets go by itself (P13). `0` (the default): it lets go at once,
    /// and the handover gap is a couple of commits. Longer: the application gets a
    /// `RoleEvent::Releasing` with this deadline and releases the role when done
    /// (`Input::ReleaseRole`); the role has no owner from then until its new grant.
    pub role_drain_timeout: Duration,
    /// The most roles the primary moves away from live owners per placement round
    /// (roles of failed or leaving owners are not counted). Smaller: a join or a
    /// new pin disturbs fewer owners at a time, and rebalancing takes more rounds
    /// (one round is at least a commit). At least 1.
    pub max_role_moves: usize,
    /// How long a member waits for the primary's answer to a key-value store request
    /// it forwarded. Past it, a write is answered "maybe committed" (retrying it is
    /// safe) and a read "no primary". Shorter: an application learns sooner that the
    /// primary is gone. Longer than a failover (election timeout plus a few round
    /// trips), or requests sent just before a crash fail rather than wait. Not 0.
    pub store_request_timeout: Duration,
    /// The most bytes of an encoded snapshot the leader sends in one message. A
    /// snapshot that fits goes whole with the entries after it; a larger one (a big
    /// key-value store) goes in pieces of this size, one in flight per follower, the
    /// next sent when the previous is acknowledged. Larger: fewer round trips to
    /// catch a follower up. Smaller: a smaller burst per message on a slow link, and
    /// heartbeats to that follower wait behind less. From 64 bytes (tests use tiny
    /// pieces to exercise the transfer) to `message::MAX_SNAPSHOT_CHUNK_LEN`.
    pub snapshot_chunk_len: usize,
    /// How many committed entries a log that carries key-value store entries keeps
    /// after compaction, for followers a little behind. More: a follower further
    /// behind (a slow one under a write load, one back from a short partition)
    /// still catches up with ordinary appends and its watches go on, at the cost of
    /// memory (each entry holds up to 16 KiB of value). Fewer: less memory, more
    /// whole-store snapshots. From 32 (what a log without store entries keeps).
    pub store_log_entries: usize,
}

const THREE: NonZeroUsize = NonZeroUsize::new(3).unwrap();
const FIVE: NonZeroUsize = NonZeroUsize::new(5).unwrap();

/// `validate` requires the minimum election timeout to exceed this many heartbeats, so
/// that one lost heartbeat never triggers an election.
const MIN_HEARTBEATS_PER_ELECTION_TIMEOUT: u32 = 2;

/// The smallest `snapshot_chunk_len`.
const MIN_SNAPSHOT_CHUNK_LEN: usize = 64;

impl Default for Config {
    fn default() -> Self {
        Config::datacenter()
    }
}

impl Config {
    /// One data centre, a 1-10 ms network: 50 ms heartbeats, 300-600 ms election
    /// timeout, 250 ms lease, 1% drift bound. Failover after a crash takes roughly the
    /// election timeout plus two round trips.
    pub fn datacenter() -> Self {
        Config {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            lease_duration: Duration::from_millis(250),
            max_clock_drift_ppm: 10_000,
            min_nodes: THREE,
            max_voters: FIVE,
            probe_interval: Duration::from_millis(500),
            bootstrap_timeout: Duration::from_secs(2),
            removal_grace: Duration::from_secs(10),
            silent_member_timeout: Some(Duration::from_secs(30)),
            leave_timeout: Duration::from_secs(5),
            auto_recover: true,
            discovery_proves_absence: false,
            role_failover_timeout: Duration::from_millis(500),
            role_drain_timeout: Duration::ZERO,
            max_role_moves: 8,
            store_request_timeout: Duration::from_secs(2),
            snapshot_chunk_len: 256 * 1024,
            store_log_entries: 1024,
        }
    }

    /// A faster profile than [`Config::datacenter`], for tests and simulations on a
    /// fast network: heartbeat, election timeout and lease five times shorter
    /// (10 ms, 60-120 ms, 45 ms), probing, bootstrap, removal and leave timeouts ten
    /// times shorter (50 ms, 300 ms, 1 s and 3 s, 1 s).
    pub fn fast_test() -> Self {
        Config {
            heartbeat_interval: Duration::from_millis(10),
            election_timeout_min: Duration::from_millis(60),
            election_timeout_max: Duration::from_millis(120),
            lease_duration: Duration::from_millis(45),
            max_clock_drift_ppm: 10_000,
            min_nodes: THREE,
            max_voters: FIVE,
            probe_interval: Duration::from_millis(50),
            bootstrap_timeout: Duration::from_millis(300),
            removal_grace: Duration::from_secs(1),
            silent_member_timeout: Some(Duration::from_secs(3)),
            leave_timeout: Duration::from_secs(1),
            auto_recover: true,
            discovery_proves_absence: false,
            role_failover_timeout: Duration::from_millis(100),
            role_drain_timeout: Duration::ZERO,
            max_role_moves: 8,
            store_request_timeout: Duration::from_millis(500),
            snapshot_chunk_len: 256 * 1024,
            store_log_entries: 1024,
        }
    }

    /// Sets `min_nodes`.
    #[must_use]
    pub fn with_min_nodes(mut self, n: NonZeroUsize) -> Self {
        self.min_nodes = n;
        self
    }

    /// Sets `max_voters`.
    #[must_use]
    pub fn with_max_voters(mut self, n: NonZeroUsize) -> Self {
        self.max_voters = n;
        self
    }

    /// Sets the election timeout range to `min..max` and rescales what is derived
    /// from it, keeping their proportions to `election_timeout_min`:
    /// `heartbeat_interval`, `lease_duration` and `role_failover_timeout` (so the lease stays below
    /// [`max_safe_lease`](Self::max_safe_lease) if it was), and raises
    /// `silent_member_timeout` to `max` if it was shorter. Other fields (probing,
    /// removal, leave) do not depend on it and are kept.
    ///
    /// ```
    /// # use cluster_mode_core::Config;
    /// # use std::time::Duration;
    /// let c = Config::datacenter().with_election_timeout(Duration::from_millis(150), Duration::from_millis(300));
    /// assert_eq!(c.heartbeat_interval, Duration::from_millis(25));
    /// assert_eq!(c.lease_duration, Duration::from_millis(125));
    /// assert!(c.validate().is_ok());
    /// ```
    ///
    /// Nothing is checked here; [`validate`](Self::validate) (called by
    /// `ClusterCore::new`) names the field if `max` is not above `min` or `min` is
    /// too short for the result.
    #[must_use]
    pub fn with_election_timeout(mut self, min: Duration, max: Duration) -> Self {
        let old = self.election_timeout_min.as_nanos().max(1);
        let new = min.as_nanos();
        let scale = |d: Duration| {
            let nanos = d.as_nanos() * new / old;
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        };
        self.heartbeat_interval = scale(self.heartbeat_interval);
        self.lease_duration = scale(self.lease_duration);
        self.role_failover_timeout = scale(self.role_failover_timeout);
        self.election_timeout_min = min;
        self.election_timeout_max = max;
        if let Some(t) = &mut self.silent_member_timeout {
            *t = (*t).max(max);
        }
        self
    }

    /// The longest lease that is safe with this election timeout and drift bound:
    /// `election_timeout_min * (1 - d) / (1 + d)`.
    pub fn max_safe_lease(&self) -> Duration {
        let d = u128::from(self.max_clock_drift_ppm);
        let et = self.election_timeout_min.as_nanos();
        let nanos = et * (1_000_000 - d.min(1_000_000)) / (1_000_000 + d);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Checks every field and the relations between them. The error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, reason: String| Err(ConfigError { field, reason });
        if self.heartbeat_interval.is_zero() {
            return err("heartbeat_interval", "must be greater than zero".into());
        }
        if self.election_timeout_min
            <= self.heartbeat_interval * MIN_HEARTBEATS_PER_ELECTION_TIMEOUT
        {
            return err(
                "election_timeout_min",
                format!(
                    "{:?} must exceed twice heartbeat_interval ({:?})",
                    self.election_timeout_min, self.heartbeat_interval
                ),
            );
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return err(
                "election_timeout_max",
                format!(
                    "{:?} must exceed election_timeout_min ({:?})",
                    self.election_timeout_max, self.election_timeout_min
                ),
            );
        }
        if self.max_clock_drift_ppm >= 500_000 {
            return err("max_clock_drift_ppm", "must be below 500000 (50%)".into());
        }
        if self.lease_duration <= self.heartbeat_interval {
            return err(
                "lease_duration",
                format!(
                    "{:?} must exceed heartbeat_interval ({:?})",
                    self.lease_duration, self.heartbeat_interval
                ),
            );
        }
        if self.lease_duration >= self.max_safe_lease() {
            return err(
                "lease_duration",
                format!(
                    "{:?} must be below election_timeout_min * (1 - drift) / (1 + drift) = {:?}",
                    self.lease_duration,
                    self.max_safe_lease()
                ),
            );
        }
        for (field, d) in [
            ("probe_interval", self.probe_interval),
            ("bootstrap_timeout", self.bootstrap_timeout),
            ("removal_grace", self.removal_grace),
            ("leave_timeout", self.leave_timeout),
        ] {
            if d.is_zero() {
                return err(field, "must be greater than zero".into());
            }
        }
        if self.role_failover_timeout <= self.heartbeat_interval * 2 {
            return err(
                "role_failover_timeout",
                format!(
                    "{:?} must exceed twice heartbeat_interval ({:?})",
                    self.role_failover_timeout, self.heartbeat_interval
                ),
            );
        }
        if self.max_role_moves == 0 {
            return err("max_role_moves", "must be at least 1".into());
        }
        if self.store_request_timeout.is_zero() {
            return err("store_request_timeout", "must be more than 0".into());
        }
        if self.store_log_entries < 32 {
            return err(
                "store_log_entries",
                format!("{} must be at least 32", self.store_log_entries),
            );
        }
        let chunk = crate::message::MAX_SNAPSHOT_CHUNK_LEN;
        if !(MIN_SNAPSHOT_CHUNK_LEN..=chunk).contains(&self.snapshot_chunk_len) {
            return err(
                "snapshot_chunk_len",
                format!(
                    "{} must be from {MIN_SNAPSHOT_CHUNK_LEN} to {chunk} bytes",
                    self.snapshot_chunk_len
                ),
            );
        }
        if let Some(t) = self.silent_member_timeout {
            if t < self.election_timeout_max {
                return err(
                    "silent_member_timeout",
                    format!("{t:?} must be at least election_timeout_max"),
                );
            }
        }
        Ok(())
    }
}

/// A configuration that [`Config::validate`] refused. Nothing was started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// Why, with the values involved.
    pub reason: String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "invalid config field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changing_the_election_timeout_keeps_the_config_valid() {
        for base in [Config::datacenter(), Config::fast_test()] {
            for ms in [20u64, 61, 150, 299, 301, 1000, 10_000] {
                let min = Duration::from_millis(ms);
                let c = base.clone().with_election_timeout(min, min * 2);
                assert_eq!(c.validate(), Ok(()), "{ms} ms from {base:?}");
                assert_eq!(c.election_timeout_min, min);
                assert!(c.lease_duration < c.max_safe_lease());
                assert!(c.silent_member_timeout.is_none_or(|t| t >= min * 2));
            }
        }
        // Without the rescaling a shorter election timeout is refused for the lease.
        let mut raw = Config::datacenter();
        raw.election_timeout_min = Duration::from_millis(150);
        assert_eq!(raw.validate().unwrap_err().field, "lease_duration");
    }

    #[test]
    fn named_profiles_are_valid() {
        Config::datacenter().validate().unwrap();
        Config::fast_test().validate().unwrap();
    }

    #[test]
    fn lease_at_or_above_the_safe_bound_is_refused_and_names_the_field() {
        let mut c = Config::datacenter();
        c.lease_duration = c.max_safe_lease();
        assert_eq!(c.validate().unwrap_err().field, "lease_duration");
        c.lease_duration = c.max_safe_lease() - Duration::from_millis(1);
        c.validate().unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        type Case = (fn(&mut Config), &'static str);
        let cases: Vec<Case> = vec![
            (
                |c| c.heartbeat_interval = Duration::ZERO,
                "heartbeat_interval",
            ),
            (
                |c| c.election_timeout_max = c.election_timeout_min,
                "election_timeout_max",
            ),
            (
                |c| c.election_timeout_min = c.heartbeat_interval,
                "election_timeout_min",
            ),
            (|c| c.max_clock_drift_ppm = 600_000, "max_clock_drift_ppm"),
            (|c| c.removal_grace = Duration::ZERO, "removal_grace"),
            (
                |c| c.silent_member_timeout = Some(Duration::from_millis(1)),
                "silent_member_timeout",
            ),
            (|c| c.snapshot_chunk_len = 63, "snapshot_chunk_len"),
            (|c| c.snapshot_chunk_len = 1 << 20, "snapshot_chunk_len"),
            (|c| c.store_log_entries = 31, "store_log_entries"),
        ];
        for (mutate, field) in cases {
            let mut c = Config::datacenter();
            mutate(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }
}
