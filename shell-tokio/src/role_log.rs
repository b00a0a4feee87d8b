//! A record of when this node could have answered "I own role r": per named role
//! (P13), the intervals of a host-wide clock during which [`crate::Cluster::owns`]
//! (or `role_token`, `owned_roles`, the status endpoint) could return `true`, with the
//! token the node held, and [`overlaps`], the check that compares the records of
//! several processes: two intervals of one role in two processes that overlap are
//! two owners at once.
//!
//! The construction is the one of [`crate::lease_log`], taken at the same place (each
//! publication of the node's view), so each interval is a superset of the moments at
//! which a role query could say yes:
//!
//! - **from**: the host clock read *before* the publication of the first view in
//!   which the node holds the role with this token;
//! - **until**: the end of that hold as last published (the earlier of the node's
//!   hold end, `Status::role_hold_until`, and the role's `release_by`), mapped onto
//!   the host clock so that it is never early, or, if earlier, the host clock read
//!   *after* the publication of the first view in which the node no longer holds it
//!   (moved, released, removed, left, hold lapsed, node stopped).
//!
//! A publication that renews the hold before it ran out extends the open interval;
//! a hold that lapsed and came back (or a new grant of the role to the same node,
//! with a new token) starts a new interval. The last [`KEPT`] intervals are kept;
//! [`RoleRecord::dropped`] counts the older ones dropped.
//!
//! The host clock is `CLOCK_BOOTTIME` on Linux outside madsim (one clock for every
//! process of the host); elsewhere the node's own clock, and [`overlaps`] refuses to
//! compare such records.

use crate::clock::host_nanos;
use crate::driver::NodeState;
use cluster_mode_core::RoleToken;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// How many intervals a node keeps, open ones included (the oldest closed ones are
/// dropped first).
pub const KEPT: usize = 4096;

/// One interval during which the node could have answered that it owns `role`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleInterval {
    /// The role.
    pub role: String,
    /// The node's token for the role during the interval.
    pub token: RoleToken,
    /// The start, in nanoseconds of [`RoleRecord::clock`].
    pub from: u64,
    /// The end (exclusive), in nanoseconds of [`RoleRecord::clock`]. While `open`,
    /// the end of the hold as last published (it moves on with each renewal).
    pub until: u64,
    /// The node still held the role at its last publication.
    pub open: bool,
}

/// The intervals a node reports (field `role_intervals` of the status document, line
/// `ROLES <json>` of `cluster-node` after a graceful exit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    /// The clock of `from`, `until` and `now`: `"boottime"` (`CLOCK_BOOTTIME`, shared
    /// by the processes of a host) or `"node"` (the node's own clock).
    pub clock: String,
    /// That clock when this record was read.
    pub now: u64,
    /// How many older intervals were dropped to keep [`KEPT`].
    pub dropped: u64,
    /// The last intervals, in order of `from`.
    pub intervals: Vec<RoleInterval>,
}

/// The roles a published view holds: each with its token and the end of its hold,
/// on the node's clock.
pub(crate) type HeldView = Vec<(String, RoleToken, cluster_mode_core::Instant)>;

/// The roles `s` holds (before the instant is judged): what a role query reading
/// this view could answer `true` for, until each one's end.
pub(crate) fn held_view(s: &NodeState) -> HeldView {
    let Some(hold) = hold_until(s) else {
        return Vec::new();
    };
    s.status
        .owned_roles
        .iter()
        .map(|o| (o.role.clone(), o.token, held_until(o, hold)))
        .collect()
}

/// The node's hold on its roles, if it runs and holds any.
fn hold_until(s: &NodeState) -> Option<cluster_mode_core::Instant> {
    s.status.role_hold_until.filter(|_| !s.stopped)
}

/// Until when a role is held: the hold end, or its release deadline if sooner.
fn held_until(
    o: &cluster_mode_core::OwnedRole,
    hold: cluster_mode_core::Instant,
) -> cluster_mode_core::Instant {
    o.release_by.map_or(hold, |by| by.min(hold))
}

/// A node-clock instant on the host's clock: `before` (host) was read just after
/// `node_before` (node).
fn host_time(
    end: cluster_mode_core::Instant,
    node_before: cluster_mode_core::Instant,
    before: u64,
) -> u64 {
    before.saturating_add(end.as_nanos().saturating_sub(node_before.as_nanos()))
}

/// The intervals, written by the loop at each publication (through
/// [`crate::lease_log`]'s publication hook) and read by the handles.
#[derive(Debug, Default)]
pub(crate) struct RoleLog {
    /// Intervals of roles the node held at its last publication, by role.
    open: BTreeMap<String, RoleInterval>,
    /// Closed intervals, oldest first.
    closed: VecDeque<RoleInterval>,
    /// Closed intervals dropped to keep [`KEPT`].
    dropped: u64,
}

impl RoleLog {
    /// Records a publication that only renews: the view in `s` holds exactly the
    /// roles of the open intervals, with their tokens, and each is still open at
    /// `before`; every end moves as [`publish`](Self::publish) would move it, and no
    /// role name is copied (most publications of a node that holds roles are these).
    /// Returns `false`, changing nothing, for any other view.
    pub(crate) fn renew(
        &mut self,
        s: &NodeState,
        node_before: cluster_mode_core::Instant,
        before: u64,
    ) -> bool {
        let Some(hold) = hold_until(s) else {
            return false;
        };
        let owned = &s.status.owned_roles;
        let renews = !self.open.is_empty()
            && owned.len() == self.open.len()
            && self.open.iter().zip(owned).all(|((role, iv), o)| {
                *role == o.role && iv.token == o.token && iv.until >= before
            });
        if !renews {
            return false;
        }
        for (iv, o) in self.open.values_mut().zip(owned) {
            iv.until = iv
                .until
                .max(host_time(held_until(o, hold), node_before, before));
        }
        true
    }

    /// Records one publication: `view` is what the new view holds, `node_before`
    /// the node's clock read before `before` (the host clock read before the
    /// publication), `after` the host clock read after it.
    pub(crate) fn publish(
        &mut self,
        view: HeldView,
        node_before: cluster_mode_core::Instant,
        before: u64,
        after: u64,
    ) {
        let mapped = |end| host_time(end, node_before, before);
        let mut next: BTreeMap<String, (RoleToken, u64)> = view
            .into_iter()
            .map(|(role, token, end)| (role, (token, mapped(end))))
            .collect();
        // Renewed (same token, not yet run out): extend. Otherwise close.
        let mut closing = Vec::new();
        for (role, iv) in self.open.iter_mut() {
            match next.get(role) {
                Some(&(token, end)) if token == iv.token && iv.until >= before => {
                    iv.until = iv.until.max(end);
                    next.remove(role);
                }
                _ => closing.push(role.clone()),
            }
        }
        for role in closing {
            if let Some(mut iv) = self.open.remove(&role) {
                iv.open = false;
                iv.until = iv.until.min(after);
                self.closed.push_back(iv);
            }
        }
        for (role, (token, until)) in next {
            self.open.insert(
                role.clone(),
                RoleInterval {
                    role,
                    token,
                    from: before,
                    until,
                    open: true,
                },
            );
        }
        while !self.closed.is_empty() && self.closed.len() + self.open.len() > KEPT {
            self.closed.pop_front();
            self.dropped += 1;
        }
    }

    /// The record now, on the host clock (`now_node` if there is none).
    pub(crate) fn record(&self, now_node: u64) -> RoleRecord {
        let host = host_nanos();
        let mut intervals: Vec<RoleInterval> = self
            .closed
            .iter()
            .chain(self.open.values())
            .cloned()
            .collect();
        intervals.sort_by(|a, b| (a.from, &a.role).cmp(&(b.from, &b.role)));
        RoleRecord {
            clock: if host.is_some() { "boottime" } else { "node" }.to_string(),
            now: host.unwrap_or(now_node),
            dropped: self.dropped,
            intervals,
        }
    }
}

/// Two intervals of one role, in two processes, that overlap in time: two owners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleOverlap {
    /// The role.
    pub role: String,
    /// The first process (as named in the input) and its interval.
    pub a: (String, RoleInterval),
    /// The second process and its interval.
    pub b: (String, RoleInterval),
    /// How long they overlap, in nanoseconds.
    pub nanos: u64,
}

impl std::fmt::Display for RoleOverlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (wa, a) = &self.a;
        let (wb, b) = &self.b;
        write!(
            f,
            "TWO OWNERS of {}: {wa} token {} [{}, {}) and {wb} token {} [{}, {}) overlap for {:.3} ms",
            self.role,
            a.token,
            a.from,
            a.until,
            b.token,
            b.from,
            b.until,
            self.nanos as f64 / 1e6
        )
    }
}

/// Every pair of intervals of the same role in two different processes that overlap
/// in time (touching, `a.until == b.from`, is not an overlap). Each record is named by
/// its process (one name per process: a restarted node is a new process). Fails on a
/// record that cannot be compared: not on the host-wide clock, with dropped
/// intervals, or with an interval that ends before it starts.
pub fn overlaps(records: &[(String, RoleRecord)]) -> Result<Vec<RoleOverlap>, String> {
    let mut by_role: BTreeMap<&str, Vec<(&str, &RoleInterval)>> = BTreeMap::new();
    for (who, r) in records {
        if r.clock != "boottime" {
            return Err(format!(
                "{who}: role intervals on clock {:?}, not comparable",
                r.clock
            ));
        }
        if r.dropped > 0 {
            return Err(format!(
                "{who}: {} older role intervals were dropped",
                r.dropped
            ));
        }
        for iv in &r.intervals {
            if iv.until < iv.from {
                return Err(format!("{who}: interval ends before it starts: {iv:?}"));
            }
            by_role
                .entry(iv.role.as_str())
                .or_default()
                .push((who.as_str(), iv));
        }
    }
    let mut found = Vec::new();
    for (role, mut ivs) in by_role {
        ivs.sort_by_key(|(_, iv)| iv.from);
        for (i, (wa, a)) in ivs.iter().enumerate() {
            // Sorted by start: only the following intervals that start before `a`
            // ends can overlap it.
            for (wb, b) in ivs[i + 1..].iter().take_while(|(_, b)| b.from < a.until) {
                if wa != wb && b.from < b.until {
                    found.push(RoleOverlap {
                        role: role.to_string(),
                        a: (wa.to_string(), (*a).clone()),
                        b: (wb.to_string(), (*b).clone()),
                        nanos: a.until.min(b.until) - b.from,
                    });
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_mode_core::{ClusterId, Instant};

    fn token(index: u64) -> RoleToken {
        RoleToken {
            cluster: ClusterId(7),
            index,
        }
    }

    fn iv(role: &str, index: u64, from: u64, until: u64) -> RoleInterval {
        RoleInterval {
            role: role.into(),
            token: token(index),
            from,
            until,
            open: false,
        }
    }

    fn rec(who: &str, intervals: Vec<RoleInterval>) -> (String, RoleRecord) {
        (
            who.into(),
            RoleRecord {
                clock: "boottime".into(),
                now: 0,
                dropped: 0,
                intervals,
            },
        )
    }

    #[test]
    fn checker_accepts_disjoint_touching_and_other_roles() {
        let recs = [
            rec("a", vec![iv("r0", 1, 0, 10), iv("r1", 1, 0, 100)]),
            // r0 handed over exactly at 10 and back later; r1 overlaps a's r1 only
            // in time, never the same role.
            rec("b", vec![iv("r0", 2, 10, 30), iv("r2", 3, 5, 50)]),
            rec("c", vec![iv("r0", 4, 40, 50)]),
        ];
        assert_eq!(overlaps(&recs).unwrap(), vec![]);
        // One process's own consecutive or overlapping intervals of a role are not
        // two owners.
        let own = [rec("a", vec![iv("r0", 1, 0, 10), iv("r0", 2, 5, 20)])];
        assert_eq!(overlaps(&own).unwrap(), vec![]);
    }

    #[test]
    fn checker_fails_on_an_overlap() {
        for (x, y) in [
            ((0, 11), (10, 30)),  // partial
            ((0, 100), (10, 30)), // containment
            ((5, 6), (5, 6)),     // equal
            ((10, 30), (29, 31)), // the later one first in the input
        ] {
            let recs = [
                rec("a", vec![iv("r0", 1, x.0, x.1)]),
                rec("b", vec![iv("r0", 2, y.0, y.1)]),
            ];
            let found = overlaps(&recs).unwrap();
            assert_eq!(found.len(), 1, "{x:?} {y:?} not caught");
            assert_eq!(found[0].role, "r0");
            assert!(found[0].nanos > 0);
            assert!(found[0].to_string().starts_with("TWO OWNERS of r0"));
        }
        // Among many roles and three processes, only the overlapping pair is found.
        let recs = [
            rec("a", vec![iv("r0", 1, 0, 10), iv("r1", 1, 0, 10)]),
            rec("b", vec![iv("r0", 2, 10, 20), iv("r1", 2, 20, 30)]),
            rec("c", vec![iv("r1", 3, 25, 40)]),
        ];
        let found = overlaps(&recs).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].a.0.as_str(), found[0].b.0.as_str()), ("b", "c"));
        assert_eq!(found[0].nanos, 5);
        // A long interval overlapping one that starts after a short one in between.
        let recs = [
            rec("a", vec![iv("r0", 1, 0, 100)]),
            rec("b", vec![iv("r0", 2, 1, 2), iv("r0", 3, 50, 60)]),
        ];
        assert_eq!(overlaps(&recs).unwrap().len(), 2);
    }

    #[test]
    fn checker_refuses_records_it_cannot_compare() {
        let mut own = rec("a", vec![iv("r0", 1, 0, 10)]);
        own.1.clock = "node".into();
        assert!(overlaps(&[own]).is_err());
        let mut dropped = rec("a", vec![iv("r0", 1, 0, 10)]);
        dropped.1.dropped = 1;
        assert!(overlaps(&[dropped]).is_err());
        assert!(overlaps(&[rec("a", vec![iv("r0", 1, 10, 5)])]).is_err());
    }

    fn at(ns: u64) -> Instant {
        Instant::from_nanos(ns)
    }

    #[test]
    fn log_opens_extends_and_closes_intervals() {
        let mut log = RoleLog::default();
        // Node clock 1000 behind the host clock.
        log.publish(
            vec![("r0".into(), token(1), at(1_100))],
            at(1_000),
            2_000,
            2_005,
        );
        log.publish(
            vec![("r0".into(), token(1), at(1_150))],
            at(1_050),
            2_050,
            2_055,
        );
        let r = log.record(0);
        assert_eq!(
            r.intervals,
            vec![RoleInterval {
                open: true,
                ..iv("r0", 1, 2_000, 2_150)
            }]
        );
        // Lapsed before the renewal: a new interval.
        log.publish(
            vec![("r0".into(), token(1), at(1_400))],
            at(1_300),
            2_300,
            2_305,
        );
        // Moved to a new token and another role gained.
        log.publish(
            vec![
                ("r0".into(), token(2), at(1_500)),
                ("r1".into(), token(2), at(1_500)),
            ],
            at(1_350),
            2_350,
            2_352,
        );
        // Dropped at once (a revoke): closed at the read after the publication.
        log.publish(vec![], at(1_360), 2_360, 2_361);
        let r = log.record(0);
        assert_eq!(
            r.intervals,
            vec![
                iv("r0", 1, 2_000, 2_150),
                iv("r0", 1, 2_300, 2_352),
                iv("r0", 2, 2_350, 2_361),
                iv("r1", 2, 2_350, 2_361),
            ]
        );
        assert_eq!(r.dropped, 0);
    }

    #[test]
    fn log_keeps_the_last_intervals() {
        let mut log = RoleLog::default();
        for i in 0..(KEPT as u64 + 10) {
            log.publish(
                vec![("r".into(), token(i + 1), at(i * 10 + 5))],
                at(i * 10),
                i * 10,
                i * 10,
            );
        }
        let r = log.record(0);
        assert_eq!(r.intervals.len(), KEPT);
        assert_eq!(r.dropped, 10);
        assert!(r.intervals.last().unwrap().open);
    }

    fn state(hold_ms: u64, roles: &[(&str, u64, Option<u64>)]) -> NodeState {
        use cluster_mode_core::{ClusterCore, Config, Identity, NodeId};
        let core = ClusterCore::new(
            Identity::new(NodeId(1), "a:1"),
            Config::default(),
            1,
            Instant::from_millis(0),
        )
        .expect("valid config");
        let mut status = core.status(Instant::from_millis(0));
        status.role_hold_until = Some(Instant::from_millis(hold_ms));
        status.owned_roles = roles
            .iter()
            .map(|(role, index, by)| cluster_mode_core::OwnedRole {
                role: (*role).into(),
                token: token(*index),
                release_by: by.map(Instant::from_millis),
            })
            .collect();
        NodeState {
            status,
            stopped: false,
            failure: None,
        }
    }

    /// `renew` records exactly what `publish` of the same view records, and takes
    /// nothing but a pure renewal.
    #[test]
    fn a_renewal_moves_the_ends_as_a_publication_would() {
        let ms = |m: u64| m * 1_000_000;
        // What the log holds (the record's `now` is the host's clock).
        let held = |l: &RoleLog| {
            let r = l.record(0);
            (r.dropped, r.intervals)
        };
        let first = state(100, &[("a", 1, None), ("b", 2, None)]);
        let (mut fast, mut slow) = (RoleLog::default(), RoleLog::default());
        for log in [&mut fast, &mut slow] {
            log.publish(held_view(&first), Instant::from_millis(0), ms(0), ms(1));
        }
        // Renewed at 50 ms, "b" now with a release deadline before the hold end.
        let renewed = state(150, &[("a", 1, None), ("b", 2, Some(120))]);
        let at = Instant::from_millis(50);
        assert!(fast.renew(&renewed, at, ms(50)));
        slow.publish(held_view(&renewed), at, ms(50), ms(51));
        assert_eq!(held(&fast), held(&slow));
        assert_eq!(fast.open["a"].until, ms(150));
        assert_eq!(fast.open["b"].until, ms(120));
        // Not renewals: another token, a role more, a role less, no hold.
        for other in [
            state(200, &[("a", 1, None), ("b", 3, None)]),
            state(200, &[("a", 1, None), ("b", 2, None), ("c", 4, None)]),
            state(200, &[("a", 1, None)]),
            NodeState {
                stopped: true,
                ..state(200, &[("a", 1, None), ("b", 2, None)])
            },
        ] {
            let before = held(&fast);
            assert!(!fast.renew(&other, Instant::from_millis(60), ms(60)));
            assert_eq!(held(&fast), before, "nothing changed");
        }
        // An interval that ended before this publication is not renewed either.
        assert!(!fast.renew(&renewed, Instant::from_millis(500), ms(500)));
    }
}
