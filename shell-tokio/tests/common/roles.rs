//! Named roles (P13) over real `cluster-node` processes on 127.0.0.1: a fleet whose
//! nodes declare roles, waits for a settled role table, graceful leaves (SIGTERM,
//! the `ROLES` line collected), SIGKILLs, joins, and the figures taken from every
//! process's role intervals (`cluster_mode::role_log`): handover gaps, reassignment
//! times, and the overlap check.
//!
//! Shared by `examples/bench_roles.rs` (the benchmark) and `tests/role_processes.rs`
//! (the CI-sized test), each of which includes it with `#[path]` beside
//! `common/procs.rs` as module `procs`.
//!
//! # Records of killed processes
//!
//! A process that exits gracefully prints its whole record. One that is SIGKILLed
//! cannot: its record is read from its status endpoint just before the kill (in a
//! settled state, with no role moving), and each interval still open then is taken
//! to run until the host clock read after the process was reaped. That is a superset
//! of what it could have answered (it answered nothing once dead), so the overlap
//! check stays sound; it could only report an overlap that did not happen if a role
//! moved to the process between the read and the kill, which a settled fleet does not
//! do.
#![allow(dead_code)]

use super::procs::{free_addrs, raw_status, spawn_node_piped, Piped};
use cluster_mode::clock::boottime_nanos;
use cluster_mode::role_log::{overlaps, RoleInterval, RoleRecord};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One row of a node's committed role table.
#[derive(Clone, Debug, Deserialize)]
pub struct TableRow {
    pub role: String,
    pub owner: Option<u128>,
    pub releasing: bool,
}

/// A role the node holds at the moment of the request.
#[derive(Clone, Debug, Deserialize)]
pub struct Held {
    pub role: String,
}

/// The primary a node names.
#[derive(Clone, Debug, Deserialize)]
pub struct Named {
    pub addr: String,
}

/// The shell's counters this module reads.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct Counters {
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
    pub wire_bytes_out: u64,
    pub wire_bytes_in: u64,
}

/// What one status answer says (ids read as numbers: a `serde_json::Value` would
/// hold a 128-bit id as a float).
#[derive(Clone, Debug, Deserialize)]
pub struct View {
    pub id: u128,
    pub role: String,
    pub lease_valid: bool,
    pub primary: Option<Named>,
    pub members: Vec<serde::de::IgnoredAny>,
    pub roles: Vec<TableRow>,
    pub owned_roles: Vec<Held>,
    pub counters: Counters,
    pub role_intervals: RoleRecord,
}

impl View {
    /// Primary with a valid lease at the moment of the request.
    pub fn is_primary(&self) -> bool {
        self.role == "Primary" && self.lease_valid
    }
}

/// A node's status, with a timeout.
pub async fn view(addr: SocketAddr, timeout: Duration) -> Option<View> {
    let raw = tokio::time::timeout(timeout, raw_status(addr))
        .await
        .ok()
        .flatten()?;
    serde_json::from_str(raw.split("\r\n\r\n").nth(1)?).ok()
}

/// The role record in `cluster-node`'s stdout (its `ROLES <json>` line).
pub fn from_stdout(out: &str) -> Option<RoleRecord> {
    let line = out.lines().rev().find(|l| l.starts_with("ROLES "))?;
    serde_json::from_str(&line["ROLES ".len()..]).ok()
}

/// Closes every interval still open in the record of a process that died at `dead_at`
/// (see the module docs).
pub fn close_at(rec: &mut RoleRecord, dead_at: u64) {
    for iv in rec.intervals.iter_mut().filter(|iv| iv.open) {
        iv.open = false;
        iv.until = dead_at.max(iv.from);
    }
}

/// A settled fleet: one agreed primary, every role owned by a running process, none
/// being moved, the same table on every running node, unchanged for a while.
#[derive(Clone, Debug)]
pub struct Settled {
    /// The slot of the primary.
    pub primary: usize,
    /// Each role's owner (slot).
    pub owner: BTreeMap<String, usize>,
}

impl Settled {
    /// The roles of each slot that owns any.
    pub fn load(&self) -> BTreeMap<usize, Vec<String>> {
        let mut m: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (r, o) in &self.owner {
            m.entry(*o).or_default().push(r.clone());
        }
        m
    }

    /// The roles of `slot`.
    pub fn roles_of(&self, slot: usize) -> Vec<String> {
        self.load().remove(&slot).unwrap_or_default()
    }

    /// How many roles own a different slot in `later`.
    pub fn moved_to(&self, later: &Settled) -> Vec<String> {
        later
            .owner
            .iter()
            .filter(|(r, o)| self.owner.get(*r) != Some(*o))
            .map(|(r, _)| r.clone())
            .collect()
    }
}

/// Node processes in slots (one address each; a slot is started at most once, so a
/// slot names one process). Killed on drop.
///
/// The nodes started first list each other (`--peers`); a slot started later lists
/// those, the later slots before it, and itself, and joins. (Listing an address where
/// nothing ever answered would hold the first founding back for
/// `silent_member_timeout`, docs/PROTOCOL.md P4 rule 2.)
pub struct Fleet {
    pub addrs: Vec<SocketAddr>,
    /// How many slots were started first.
    pub first: usize,
    pub nodes: Vec<Option<Piped>>,
    /// The id of each slot's process, once seen.
    pub ids: Vec<Option<u128>>,
    /// Every status answer [`views`](Self::views) read: the slot, the host clock
    /// when the request was sent and when the answer was read, and the roles it said
    /// the node owned (at some instant in between).
    pub samples: Vec<Sample>,
    extra: Vec<String>,
}

/// One status answer's owned roles (see [`Fleet::samples`]).
#[derive(Clone, Debug)]
pub struct Sample {
    pub slot: usize,
    pub sent: u64,
    pub recv: u64,
    pub owned: Vec<String>,
}

impl Fleet {
    /// `slots` addresses; the first `running` started now with `extra` arguments
    /// (roles, timings).
    pub fn start(slots: usize, running: usize, extra: &[String]) -> Fleet {
        let addrs = free_addrs(slots);
        let mut f = Fleet {
            addrs,
            first: running,
            nodes: (0..slots).map(|_| None).collect(),
            ids: vec![None; slots],
            samples: Vec::new(),
            extra: extra.to_vec(),
        };
        for i in 0..running {
            f.spawn(i);
        }
        f
    }

    /// The process name of slot `i` in records and messages.
    pub fn name(i: usize) -> String {
        format!("node{i}")
    }

    /// Starts slot `i` (never started before).
    pub fn spawn(&mut self, i: usize) {
        assert!(
            self.nodes[i].is_none() && self.ids[i].is_none(),
            "slot {i} was used"
        );
        let peers = self.addrs[..self.first.max(i + 1)]
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        self.nodes[i] = Some(spawn_node_piped(self.addrs[i], &peers, &self.extra));
    }

    /// The slots running now.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Each running slot's status (`None` for a slot not running or not answering).
    pub async fn views(&mut self) -> Vec<Option<View>> {
        let mut out = Vec::new();
        for i in 0..self.addrs.len() {
            let sent = boottime_nanos();
            let v = match self.nodes[i] {
                Some(_) => view(self.addrs[i], Duration::from_millis(500)).await,
                None => None,
            };
            if let Some(v) = &v {
                self.ids[i] = Some(v.id);
                self.samples.push(Sample {
                    slot: i,
                    sent,
                    recv: boottime_nanos(),
                    owned: v.owned_roles.iter().map(|h| h.role.clone()).collect(),
                });
            }
            out.push(v);
        }
        out
    }

    /// The settled state now, if the running nodes are in one.
    fn settled_now(&self, views: &[Option<View>], roles: usize) -> Result<Settled, String> {
        let running = self.running();
        let mut primary = None;
        for &i in &running {
            let v = views[i]
                .as_ref()
                .ok_or_else(|| format!("{} does not answer", Self::name(i)))?;
            if v.is_primary() {
                if primary.is_some() {
                    return Err("two nodes say primary".into());
                }
                primary = Some(i);
            }
        }
        let p = primary.ok_or("no primary")?;
        let paddr = self.addrs[p].to_string();
        let table = &views[p].as_ref().expect("answered").roles;
        if table.len() != roles {
            return Err(format!("{} roles in the table, not {roles}", table.len()));
        }
        let mut owner = BTreeMap::new();
        for row in table {
            if row.releasing {
                return Err(format!("{} is being moved", row.role));
            }
            let o = row
                .owner
                .ok_or_else(|| format!("{} has no owner", row.role))?;
            let slot = running
                .iter()
                .copied()
                .find(|i| self.ids[*i] == Some(o))
                .ok_or_else(|| format!("{} is owned by a node not running", row.role))?;
            owner.insert(row.role.clone(), slot);
        }
        for &i in &running {
            let v = views[i].as_ref().expect("answered");
            if v.primary.as_ref().map(|n| n.addr.as_str()) != Some(paddr.as_str()) {
                return Err(format!("{} names another primary", Self::name(i)));
            }
            let same = v.roles.len() == table.len()
                && v.roles
                    .iter()
                    .zip(table)
                    .all(|(a, b)| a.role == b.role && a.owner == b.owner);
            if !same {
                return Err(format!("{} has another table", Self::name(i)));
            }
        }
        Ok(Settled { primary: p, owner })
    }

    /// Waits until the running nodes are settled (see [`Settled`]) with `roles` roles,
    /// the same owners for `quiet`; polled every `every`. The settled state, or why
    /// not within `within`.
    pub async fn wait_settled(
        &mut self,
        roles: usize,
        quiet: Duration,
        every: Duration,
        within: Duration,
    ) -> Result<Settled, String> {
        let deadline = Instant::now() + within;
        let mut stable: Option<(Settled, Instant)> = None;
        loop {
            let views = self.views().await;
            match self.settled_now(&views, roles) {
                Ok(s) => match &stable {
                    Some((prev, since)) if prev.primary == s.primary && prev.owner == s.owner => {
                        if since.elapsed() >= quiet {
                            return Ok(s);
                        }
                    }
                    _ => stable = Some((s, Instant::now())),
                },
                Err(why) => {
                    stable = None;
                    if Instant::now() >= deadline {
                        return Err(format!("not settled within {within:?}: {why}"));
                    }
                }
            }
            if Instant::now() >= deadline + quiet {
                return Err(format!("owners kept changing for {within:?}"));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// SIGTERM to slot `i` (it leaves gracefully); waits for it to exit and returns the
    /// host clock read just before the signal and the process's role record.
    pub async fn leave(&mut self, i: usize) -> Result<(u64, RoleRecord), String> {
        let p = self.nodes[i].take().ok_or("not running")?;
        let at = boottime_nanos();
        let out = tokio::task::spawn_blocking(move || p.terminate(Duration::from_secs(15)))
            .await
            .map_err(|e| e.to_string())??;
        let rec =
            from_stdout(&out).ok_or_else(|| format!("no ROLES line from {}", Self::name(i)))?;
        Ok((at, rec))
    }

    /// SIGKILL to slot `i`, its record read just before (see the module docs); returns
    /// the host clock read just before the kill and the record.
    pub async fn kill(&mut self, i: usize) -> Result<(u64, RoleRecord), String> {
        let v = view(self.addrs[i], Duration::from_millis(500))
            .await
            .ok_or_else(|| format!("{} does not answer before its kill", Self::name(i)))?;
        let mut p = self.nodes[i].take().ok_or("not running")?;
        let at = boottime_nanos();
        let _ = p.child.kill();
        let _ = p.child.wait();
        let dead = boottime_nanos();
        let mut rec = v.role_intervals;
        close_at(&mut rec, dead);
        Ok((at, rec))
    }

    /// Reads every running process's record, then kills them all; the records
    /// (intervals still open closed at the kill, see the module docs), by name.
    pub async fn finish(&mut self) -> Result<Vec<(String, RoleRecord)>, String> {
        let mut recs = Vec::new();
        for i in self.running() {
            let v = view(self.addrs[i], Duration::from_millis(500))
                .await
                .ok_or_else(|| format!("{} does not answer at the end", Self::name(i)))?;
            recs.push((i, v.role_intervals));
        }
        for i in self.running() {
            if let Some(mut p) = self.nodes[i].take() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        let dead = boottime_nanos();
        Ok(recs
            .into_iter()
            .map(|(i, mut r)| {
                close_at(&mut r, dead);
                (Self::name(i), r)
            })
            .collect())
    }
}

/// The last interval of `role` in the record named `who`, and the first interval of
/// `role` in another process that starts no earlier than it.
fn old_and_next<'a>(
    records: &'a [(String, RoleRecord)],
    who: &str,
    role: &str,
) -> Result<(&'a RoleInterval, (&'a str, &'a RoleInterval)), String> {
    let old = records
        .iter()
        .filter(|(w, _)| w == who)
        .flat_map(|(_, r)| &r.intervals)
        .filter(|iv| iv.role == role)
        .max_by_key(|iv| iv.from)
        .ok_or_else(|| format!("{who} has no interval of {role}"))?;
    let next = records
        .iter()
        .filter(|(w, _)| w != who)
        .flat_map(|(w, r)| r.intervals.iter().map(move |iv| (w.as_str(), iv)))
        .filter(|(_, iv)| iv.role == role && iv.from >= old.from)
        .min_by_key(|(_, iv)| iv.from)
        .ok_or_else(|| format!("{role} of {who}: nobody owned it after"))?;
    Ok((old, next))
}

/// For each of `roles` (held by the process `who` when it left): the gap, in ns,
/// between the end of its last interval and the start of the next owner's first
/// interval (negative: both could answer "mine" at once), and the next owner.
pub fn handover_gaps(
    records: &[(String, RoleRecord)],
    who: &str,
    roles: &[String],
) -> Vec<Result<(String, i64, String), String>> {
    roles
        .iter()
        .map(|role| {
            let (old, (w, next)) = old_and_next(records, who, role)?;
            Ok((
                role.clone(),
                next.from as i64 - old.until as i64,
                w.to_string(),
            ))
        })
        .collect()
}

/// For each of `roles` (held by the process `who`, killed at `killed_at`): the time,
/// in ns, from the kill to the start of the next owner's first interval.
pub fn reassignment_times(
    records: &[(String, RoleRecord)],
    who: &str,
    roles: &[String],
    killed_at: u64,
) -> Vec<Result<(String, i64, String), String>> {
    roles
        .iter()
        .map(|role| {
            let (_, (w, next)) = old_and_next(records, who, role)?;
            Ok((
                role.clone(),
                next.from as i64 - killed_at as i64,
                w.to_string(),
            ))
        })
        .collect()
}

/// Every overlap of one role's intervals in two processes, as lines (`Err` if the
/// records cannot be compared).
pub fn overlap_lines(records: &[(String, RoleRecord)]) -> Result<Vec<String>, String> {
    Ok(overlaps(records)?.iter().map(|o| o.to_string()).collect())
}

/// The samples (see [`Fleet::samples`]) in which a process said it owned a role
/// that no interval of its record covers (`from <= recv` and `sent < until`): the
/// record must be a superset of what the process answered.
pub fn uncovered(samples: &[Sample], records: &[(String, RoleRecord)]) -> Vec<String> {
    let mut out = Vec::new();
    for s in samples {
        let name = Fleet::name(s.slot);
        for role in &s.owned {
            let covered = records.iter().filter(|(w, _)| *w == name).any(|(_, r)| {
                r.intervals
                    .iter()
                    .any(|iv| iv.role == *role && iv.from <= s.recv && s.sent < iv.until)
            });
            if !covered {
                out.push(format!(
                    "{name} said it owned {role} between {} and {}, outside its record",
                    s.sent, s.recv
                ));
            }
        }
    }
    out
}

/// The role names `--roles-count n` declares.
pub fn role_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("shard-{i}")).collect()
}
