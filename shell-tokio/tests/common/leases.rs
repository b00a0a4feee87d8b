//! The lease intervals nodes report (`cluster_mode::lease_log`: field `leases` of the
//! status document, or the `LEASES <json>` line `cluster-node` prints when it exits
//! gracefully) and the check that no two processes were primary at once.
#![allow(dead_code)]

use serde::Deserialize;

/// One interval during which a node could have answered "primary" (ns, host clock).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct Interval {
    pub term: u64,
    pub from: u64,
    pub until: u64,
    pub open: bool,
}

/// A node's record.
#[derive(Clone, Debug, Deserialize)]
pub struct Record {
    pub clock: String,
    pub now: u64,
    pub intervals: Vec<Interval>,
}

/// How many intervals a node keeps (`cluster_mode::lease_log::KEPT`).
pub const KEPT: usize = cluster_mode::lease_log::KEPT;

/// The record in a raw status answer (headers and JSON), with the node's id.
pub fn from_status(raw: &str) -> Option<(String, Record)> {
    let body = raw.split("\r\n\r\n").nth(1)?;
    #[derive(Deserialize)]
    struct Doc {
        id: u128,
        leases: Record,
    }
    let d: Doc = serde_json::from_str(body).ok()?;
    Some((format!("{:032x}", d.id), d.leases))
}

/// The record in `cluster-node`'s stdout (its `LEASES <json>` line).
pub fn from_stdout(out: &str) -> Option<Record> {
    let line = out.lines().rev().find(|l| l.starts_with("LEASES "))?;
    serde_json::from_str(&line["LEASES ".len()..]).ok()
}

/// Every pair of intervals of different owners that overlap in time (touching,
/// `a.until == b.from`, is not an overlap), described with the overlap's length.
/// Fails on a record not on the host-wide clock, or one that may have dropped
/// intervals (it holds `KEPT`).
pub fn overlaps(records: &[(String, Record)]) -> Result<Vec<String>, String> {
    let mut all = Vec::new();
    for (who, r) in records {
        if r.clock != "boottime" {
            return Err(format!(
                "{who}: intervals on clock {:?}, not comparable",
                r.clock
            ));
        }
        if r.intervals.len() >= KEPT {
            return Err(format!(
                "{who}: {} intervals, older ones may be lost",
                r.intervals.len()
            ));
        }
        for iv in &r.intervals {
            if iv.until < iv.from {
                return Err(format!("{who}: interval ends before it starts: {iv:?}"));
            }
            all.push((who.as_str(), *iv));
        }
    }
    let mut found = Vec::new();
    for (i, (wa, a)) in all.iter().enumerate() {
        for (wb, b) in &all[i + 1..] {
            if wa != wb && a.from < b.until && b.from < a.until {
                let len = a.until.min(b.until) - a.from.max(b.from);
                found.push(format!(
                    "{wa} term {} [{}, {}) and {wb} term {} [{}, {}) overlap for {:.3} ms",
                    a.term,
                    a.from,
                    a.until,
                    b.term,
                    b.from,
                    b.until,
                    len as f64 / 1e6
                ));
            }
        }
    }
    Ok(found)
}

/// Panics (with every overlap) if two processes were primary at once; returns how
/// many intervals were compared.
pub fn assert_no_overlap(records: &[(String, Record)]) -> usize {
    match overlaps(records) {
        Ok(found) if found.is_empty() => records.iter().map(|(_, r)| r.intervals.len()).sum(),
        Ok(found) => panic!(
            "two primaries at once, {} overlap(s):\n{}",
            found.len(),
            found.join("\n")
        ),
        Err(e) => panic!("lease records unusable: {e}"),
    }
}

/// A hand-made record on the host clock.
pub fn record(intervals: &[(u64, u64, u64)]) -> Record {
    Record {
        clock: "boottime".into(),
        now: 0,
        intervals: intervals
            .iter()
            .map(|&(term, from, until)| Interval {
                term,
                from,
                until,
                open: false,
            })
            .collect(),
    }
}

/// The checker's self-test on hand-made records: overlaps caught, touching and
/// disjoint intervals accepted, unusable records refused.
pub fn self_test() {
    let a = |iv: &[(u64, u64, u64)]| ("a".to_string(), record(iv));
    let b = |iv: &[(u64, u64, u64)]| ("b".to_string(), record(iv));
    // Disjoint, touching, and one node's own consecutive intervals: accepted.
    assert_eq!(
        overlaps(&[
            a(&[(1, 0, 10), (3, 30, 40)]),
            b(&[(2, 10, 30), (4, 40, 50)])
        ])
        .unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(overlaps(&[a(&[(1, 0, 10), (1, 10, 20)])]).unwrap().len(), 0);
    // A partial overlap, containment, and an equal interval: each caught.
    for (x, y) in [
        ((1, 0, 11), (2, 10, 30)),
        ((1, 0, 100), (2, 10, 30)),
        ((1, 5, 6), (2, 5, 6)),
        ((2, 10, 30), (1, 29, 31)),
    ] {
        let found = overlaps(&[a(&[x]), b(&[y])]).unwrap();
        assert_eq!(found.len(), 1, "{x:?} {y:?} not caught");
    }
    // Three nodes: only the pair that overlaps is reported.
    let c = ("c".to_string(), record(&[(3, 25, 35)]));
    assert_eq!(
        overlaps(&[a(&[(1, 0, 10)]), b(&[(2, 20, 30)]), c])
            .unwrap()
            .len(),
        1
    );
    // A record on a node's own clock, or one that may have lost intervals: refused.
    let mut own = record(&[(1, 0, 10)]);
    own.clock = "node".into();
    assert!(overlaps(&[("a".into(), own)]).is_err());
    let full: Vec<_> = (0..KEPT as u64).map(|i| (i, i * 10, i * 10 + 5)).collect();
    assert!(overlaps(&[a(&full)]).is_err());
    assert!(overlaps(&[a(&[(1, 10, 5)])]).is_err());
}
