//! The node's timers: one table, one entry per [`Timer`], so that
//! [`ClusterCore::poll_timeout`] is a lookup and a tick serves exactly the timers
//! that expired, in a fixed order.

use super::ClusterCore;
use crate::time::Instant;
use tracing::warn;

/// Every timer the core can run. Each is set and stopped by the file that owns its
/// concern; a tick serves expired ones in the order listed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// A follower or candidate with no word from a leader starts a pre-vote
    /// (`election.rs`). Runs only in a cluster and never while leading.
    Election,
    /// The leader's next heartbeat round (`leader.rs`). Runs only while leading.
    Heartbeat,
    /// The instant the leader's lease ends unless renewed, so that the role change
    /// is reported when it happens (`leader.rs`). Runs only while leading.
    LeaseEnd,
    /// A bootstrap candidacy gives up and frees its supporters (`bootstrap.rs`).
    Candidacy,
    /// A graceful leave gives up waiting for its removal (`leave.rs`).
    Leave,
    /// Probes, join retries and other periodic work (`joining.rs`). Runs until the
    /// node has left.
    Housekeeping,
    /// A role hold or drain runs out, so that the change is reported when it happens
    /// (`roles.rs`).
    Roles,
    Store,
}

impl Timer {
    const COUNT: usize = 8;

    fn slot(self) -> usize {
        self as usize
    }
}

/// When each [`Timer`] fires next; `None` when it is stopped.
#[derive(Clone, Debug, Default)]
pub(super) struct TimerTable {
    at: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    pub(super) fn get(&self, t: Timer) -> Option<Instant> {
        self.at[t.slot()]
    }

    pub(super) fn set(&mut self, t: Timer, at: Instant) {
        self.at[t.slot()] = Some(at);
    }

    /// Moves `t` to `at` if that is earlier (or starts it).
    pub(super) fn set_earlier(&mut self, t: Timer, at: Instant) {
        let slot = &mut self.at[t.slot()];
        *slot = Some(slot.map_or(at, |old| old.min(at)));
    }

    pub(super) fn stop(&mut self, t: Timer) {
        self.at[t.slot()] = None;
    }

    pub(super) fn stop_all(&mut self) {
        self.at = [None; Timer::COUNT];
    }

    pub(super) fn expired(&self, t: Timer, now: Instant) -> bool {
        self.get(t).is_some_and(|at| now >= at)
    }

    /// The earliest running timer.
    pub(super) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

impl ClusterCore {
    /// Serves every expired timer. Each one served moves on or stops, so after a tick
    /// [`poll_timeout`](ClusterCore::poll_timeout) is later than `now` (a property
    /// test checks it).
    pub(super) fn on_tick(&mut self, now: Instant) {
        if self.role.is_leader() {
            if self.timers.expired(Timer::LeaseEnd, now) {
                // Nothing to do but let `emit_changes` report the role change.
                self.timers.stop(Timer::LeaseEnd);
            }
            if self.timers.expired(Timer::Heartbeat, now) {
                self.on_heartbeat_timer(now);
            }
        } else if self.hard.cluster.is_some() && self.timers.expired(Timer::Election, now) {
            self.on_election_timeout(now);
        }
        if self.timers.expired(Timer::Candidacy, now) {
            self.withdraw_candidacy(now);
        }
        if self.timers.expired(Timer::Store, now) {
            self.on_store_timer(now);
        }
        if self.timers.expired(Timer::Leave, now) {
            warn!("leave timed out before the removal was committed; finishing anyway");
            self.finish_leave();
            return;
        }
        if self.timers.expired(Timer::Housekeeping, now) {
            self.timers
                .set(Timer::Housekeeping, now + self.cfg.probe_interval);
            self.housekeeping(now);
            self.forward_role_requests(now);
        }
        if self.timers.expired(Timer::Roles, now) {
            // `refresh_roles`, after every input, lets go and reports, and re-arms it.
            self.timers.stop(Timer::Roles);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Timer, TimerTable};
    use crate::time::Instant;
    use std::time::Duration;

    #[test]
    fn next_is_the_earliest_running_timer() {
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        let at = |ms| Instant::ZERO + Duration::from_millis(ms);
        t.set(Timer::Housekeeping, at(50));
        t.set(Timer::Election, at(30));
        assert_eq!(t.next(), Some(at(30)));
        t.set_earlier(Timer::Housekeeping, at(20));
        t.set_earlier(Timer::Election, at(40));
        assert_eq!(t.next(), Some(at(20)));
        assert_eq!(t.get(Timer::Election), Some(at(30)));
        t.stop(Timer::Housekeeping);
        assert_eq!(t.next(), Some(at(30)));
        assert!(t.expired(Timer::Election, at(30)));
        assert!(!t.expired(Timer::Election, at(29)));
        assert!(!t.expired(Timer::Leave, at(1000)));
        t.stop_all();
        assert_eq!(t.next(), None);
    }
}
