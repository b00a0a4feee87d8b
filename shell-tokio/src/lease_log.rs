//! A record of when this node could have answered "primary": the intervals, on a
//! host-wide clock, during which [`crate::Cluster::is_primary`] could return `true`.
//!
//! Tests (and an operator looking for the cause of a double primary) compare the
//! intervals of several processes of one host: two that overlap are two primaries at
//! once. The record is taken where the loop publishes its view, so each interval is a
//! superset of the moments at which `is_primary` (or `fencing_token`, or the status
//! endpoint) could say yes:
//!
//! - **from**: the host clock read *before* the publication that made the node primary
//!   (no reader can see that view earlier);
//! - **until**: the lease end as last published, mapped onto the host clock (the node's
//!   clock is read first, the host clock second, so the mapped end is never early), or,
//!   if earlier, the host clock read *after* the publication that revoked it (step
//!   down, lease renewal refused, stop). A role query reads the clock while it holds
//!   the published view (see `Cluster::is_primary`), so its reading falls between those
//!   two publications and before the lease end.
//!
//! A renewal published while the interval is still running extends it; a lease that
//! lapsed before it was renewed (the node was primary again later) starts a new
//! interval. The last [`KEPT`] intervals are kept.
//!
//! The host clock is `CLOCK_BOOTTIME` on Linux outside madsim: one clock for every
//! process of the host, also across network namespaces. Elsewhere (madsim, other
//! systems) the intervals are on the node's own clock and comparable only within it.
//! Mapping the lease end onto the host clock assumes the node's clock runs at the host
//! clock's rate between the publication and the lease end: exact for the default clock
//! (`clock::BoottimeClock` is the host clock from an origin).
//!
//! The same publications feed the named roles' record ([`crate::role_log`]).

use crate::clock::{host_nanos, Clock};
use crate::driver::NodeState;
use crate::role_log::{held_view, RoleLog, RoleRecord};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How many intervals a node keeps (the oldest are dropped).
pub const KEPT: usize = 64;

/// One interval during which the node could have answered "primary".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseInterval {
    /// The term of the lease.
    pub term: u64,
    /// The start, in nanoseconds of [`LeaseRecord::clock`].
    pub from: u64,
    /// The end (exclusive), in nanoseconds of [`LeaseRecord::clock`]. While `open`,
    /// the end of the lease as last published (it moves on with each renewal).
    pub until: u64,
    /// The node was still primary at its last publication.
    pub open: bool,
}

/// The intervals a node reports (field `leases` of the status document).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    /// The clock of `from`, `until` and `now`: `"boottime"` (`CLOCK_BOOTTIME`, shared by
    /// the processes of a host) or `"node"` (the node's own clock).
    pub clock: &'static str,
    /// That clock when this record was read.
    pub now: u64,
    /// The last [`KEPT`] intervals, oldest first.
    pub intervals: Vec<LeaseInterval>,
}

/// Shared between the loop (which writes it when it publishes) and the handles.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseLog {
    inner: Arc<Mutex<VecDeque<LeaseInterval>>>,
    /// The named roles' intervals, recorded at the same publications.
    roles: Arc<Mutex<RoleLog>>,
}

/// The term and lease end of a view in which `is_primary` can be true.
fn primary_view(s: &NodeState) -> Option<(u64, cluster_mode_core::Instant)> {
    if s.stopped || !s.status.lease_valid {
        return None;
    }
    s.status.lease_until.map(|until| (s.status.term, until))
}

impl LeaseLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<LeaseInterval>> {
        // Every update leaves the deque consistent: a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the view through `tx` (`modify` edits it and says whether it changed,
    /// as in `watch::Sender::send_if_modified`) and records the interval it opens,
    /// extends or closes. Returns whether it changed.
    pub(crate) fn publish(
        &self,
        tx: &watch::Sender<NodeState>,
        clock: &dyn Clock,
        modify: impl FnOnce(&mut NodeState) -> bool,
    ) -> bool {
        // The node's clock first, then the host's: the mapped lease end is never early.
        let node_before = clock.now();
        let before = host_nanos().unwrap_or_else(|| node_before.as_nanos());
        let mut view = None;
        let mut held = None;
        let changed = tx.send_if_modified(|s| {
            let changed = modify(s);
            if changed {
                view = primary_view(s);
                // A renewal of every hold moves the ends at once (it needs no
                // `after`); any other view is copied and recorded below.
                let mut roles = self.roles.lock().unwrap_or_else(|e| e.into_inner());
                if !roles.renew(s, node_before, before) {
                    held = Some(held_view(s));
                }
            }
            changed
        });
        if !changed {
            return false;
        }
        let after = host_nanos().unwrap_or_else(|| clock.now().as_nanos());
        if let Some(held) = held {
            self.roles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .publish(held, node_before, before, after);
        }
        let lease_end = view.map(|(term, until)| {
            let left = until.as_nanos().saturating_sub(node_before.as_nanos());
            (term, before.saturating_add(left))
        });
        let mut log = self.lock();
        let open = log.back_mut().filter(|iv| iv.open);
        match (open, lease_end) {
            // Renewed in the same term before the lease ran out: the same interval.
            (Some(iv), Some((term, end))) if iv.term == term && iv.until >= before => {
                iv.until = iv.until.max(end);
            }
            (open, next) => {
                if let Some(iv) = open {
                    iv.open = false;
                    iv.until = iv.until.min(after);
                }
                if let Some((term, end)) = next {
                    if log.len() == KEPT {
                        log.pop_front();
                    }
                    log.push_back(LeaseInterval {
                        term,
                        from: before,
                        until: end,
                        open: true,
                    });
                }
            }
        }
        true
    }

    /// The record now.
    pub(crate) fn record(&self, clock: &dyn Clock) -> LeaseRecord {
        let host = host_nanos();
        LeaseRecord {
            clock: if host.is_some() { "boottime" } else { "node" },
            now: host.unwrap_or_else(|| clock.now().as_nanos()),
            intervals: self.lock().iter().copied().collect(),
        }
    }

    /// The named roles' record now ([`crate::role_log`]).
    pub(crate) fn role_record(&self, clock: &dyn Clock) -> RoleRecord {
        self.roles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(clock.now().as_nanos())
    }
}
