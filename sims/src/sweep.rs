//! What a seed sweep (`cluster-sim sweep`) keeps and reports: one small record per
//! seed folded into per-scenario tallies, and the summary printed at the end (markdown,
//! or JSON for `--summary file.json`).
//!
//! A sweep of a million seeds keeps, per scenario, only its counters and the failover
//! and settle times (8 bytes each), never the traces.

use std::fmt::Write as _;
use std::time::Duration;

/// What one finished seed contributes to a sweep.
#[derive(Clone, Debug, Default)]
pub struct SeedRecord {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The seed.
    pub seed: u64,
    /// Wall time the seed took on its worker.
    pub wall: Duration,
    /// Failover times of the seed ([`SeedStats::failovers_ns`](crate::stats::SeedStats)).
    pub failovers_ns: Vec<u64>,
    /// Cold start times of the seed ([`SeedStats::cold_starts_ns`](crate::stats::SeedStats)).
    pub cold_starts_ns: Vec<u64>,
    /// Time from the last fault to agreement
    /// ([`first_agreement_ns`](crate::checker::first_agreement_ns)); `None`: no
    /// agreement before the run ended.
    pub settle_ns: Option<u64>,
    /// The first broken invariant (or the panic), if the seed failed.
    pub violation: Option<String>,
}

/// The running totals of one scenario.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScenarioTally {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds that failed.
    pub failed: u64,
    /// Wall time summed over the seeds (worker time, not elapsed time).
    pub wall: Duration,
    /// Every failover time, ns.
    pub failovers_ns: Vec<u64>,
    /// Every cold start time, ns.
    pub cold_starts_ns: Vec<u64>,
    /// Every settle time, ns (seeds that settled).
    pub settle_ns: Vec<u64>,
    /// Seeds that never settled within the run.
    pub unsettled: u64,
}

impl ScenarioTally {
    fn add(&mut self, r: &SeedRecord) {
        self.seeds += 1;
        self.failed += u64::from(r.violation.is_some());
        self.wall += r.wall;
        self.failovers_ns.extend_from_slice(&r.failovers_ns);
        self.cold_starts_ns.extend_from_slice(&r.cold_starts_ns);
        match r.settle_ns {
            Some(t) => self.settle_ns.push(t),
            None => self.unsettled += 1,
        }
    }

    fn merge(&mut self, o: &ScenarioTally) {
        self.seeds += o.seeds;
        self.failed += o.failed;
        self.wall += o.wall;
        self.failovers_ns.extend_from_slice(&o.failovers_ns);
        self.cold_starts_ns.extend_from_slice(&o.cold_starts_ns);
        self.settle_ns.extend_from_slice(&o.settle_ns);
        self.unsettled += o.unsettled;
    }

    /// p50, p99 and max of the failover times (ns), if any.
    pub fn failover_percentiles(&self) -> Option<[u64; 3]> {
        percentiles(&self.failovers_ns)
    }

    /// p50, p99 and max of the cold start times (ns), if any.
    pub fn cold_start_percentiles(&self) -> Option<[u64; 3]> {
        percentiles(&self.cold_starts_ns)
    }

    /// p50, p99 and max of the settle times (ns), if any.
    pub fn settle_percentiles(&self) -> Option<[u64; 3]> {
        percentiles(&self.settle_ns)
    }
}

/// The nearest-rank `q` quantile (0 < q <= 1) of `sorted` (ascending): the smallest
/// value with at least `q` of the values at or below it. `None` for no value.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p99 and max of `values` (any order), or `None` for no value.
pub fn percentiles(values: &[u64]) -> Option<[u64; 3]> {
    let mut v = values.to_vec();
    v.sort_unstable();
    Some([quantile(&v, 0.5)?, quantile(&v, 0.99)?, *v.last()?])
}

/// A failed seed, as the summary lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The seed.
    pub seed: u64,
    /// The first broken invariant (or the panic).
    pub what: String,
}

impl Failure {
    /// The one command that replays it.
    pub fn replay(&self) -> String {
        crate::runner::replay_command_of(self.scenario, self.seed)
    }
}

/// A sweep's summary: per-scenario tallies in the order given, and the failures.
#[derive(Clone, Debug)]
pub struct SweepSummary {
    /// The first seed of every scenario.
    pub from: u64,
    /// Worker threads.
    pub jobs: usize,
    /// Seeds planned over all scenarios.
    pub planned: u64,
    /// Elapsed wall time of the sweep.
    pub wall: Duration,
    /// Whether liveness was checked (not only safety).
    pub liveness: bool,
    /// Whether the sweep stopped at a failure before running every planned seed.
    pub stopped_early: bool,
    /// Per scenario: its name, its planned seed count, its tally.
    pub scenarios: Vec<(&'static str, u64, ScenarioTally)>,
    /// The failed seeds, in the order they finished.
    pub failures: Vec<Failure>,
}

impl SweepSummary {
    /// An empty summary of `plan` (scenario names with their seed counts).
    pub fn new(plan: &[(&'static str, u64)], from: u64, jobs: usize, liveness: bool) -> Self {
        SweepSummary {
            from,
            jobs,
            planned: plan.iter().map(|p| p.1).sum(),
            wall: Duration::ZERO,
            liveness,
            stopped_early: false,
            scenarios: plan
                .iter()
                .map(|&(n, k)| (n, k, ScenarioTally::default()))
                .collect(),
            failures: Vec::new(),
        }
    }

    /// Folds one seed in. A record of a scenario not in the plan gets its own row.
    pub fn add(&mut self, r: &SeedRecord) {
        let i = match self.scenarios.iter().position(|s| s.0 == r.scenario) {
            Some(i) => i,
            None => {
                self.scenarios
                    .push((r.scenario, 0, ScenarioTally::default()));
                self.scenarios.len() - 1
            }
        };
        self.scenarios[i].2.add(r);
        if let Some(what) = &r.violation {
            self.failures.push(Failure {
                scenario: r.scenario,
                seed: r.seed,
                what: what.clone(),
            });
        }
    }

    /// Every scenario's tally merged.
    pub fn total(&self) -> ScenarioTally {
        let mut t = ScenarioTally::default();
        for s in &self.scenarios {
            t.merge(&s.2);
        }
        t
    }

    /// Seeds per second of elapsed wall time.
    pub fn seeds_per_sec(&self) -> f64 {
        let el = self.wall.as_secs_f64();
        if el > 0.0 {
            self.total().seeds as f64 / el
        } else {
            0.0
        }
    }

    /// The summary as markdown: a headline, a table per scenario plus a total row,
    /// and the failures with their replay commands.
    pub fn markdown(&self) -> String {
        let t = self.total();
        let mut out = String::new();
        let _ = writeln!(out, "# cluster-sim sweep\n");
        let _ = writeln!(
            out,
            "{} of {} seeds (each scenario from seed {}), **{} failed**, {:.1} s wall on {} worker(s), **{:.1} seeds/s**{}{}\n",
            t.seeds,
            self.planned,
            self.from,
            t.failed,
            self.wall.as_secs_f64(),
            self.jobs,
            self.seeds_per_sec(),
            if self.liveness { "" } else { ", safety only (no liveness)" },
            if self.stopped_early { ", stopped at the first failure" } else { "" },
        );
        let _ = writeln!(
            out,
            "| scenario | seeds | failed | worker s | s/seed | failovers | failover p50 / p99 / max | settle p50 / p99 / max | unsettled |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        let ms3 = |p: Option<[u64; 3]>| {
            p.map_or("-".to_string(), |[a, b, c]| {
                format!(
                    "{} / {} / {} ms",
                    a / 1_000_000,
                    b / 1_000_000,
                    c / 1_000_000
                )
            })
        };
        let row = |out: &mut String, name: &str, s: &ScenarioTally| {
            let per = if s.seeds == 0 {
                0.0
            } else {
                s.wall.as_secs_f64() / s.seeds as f64
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {:.1} | {per:.3} | {} | {} | {} | {} |",
                s.seeds,
                s.failed,
                s.wall.as_secs_f64(),
                s.failovers_ns.len(),
                ms3(s.failover_percentiles()),
                ms3(s.settle_percentiles()),
                s.unsettled
            );
        };
        for (name, _, s) in &self.scenarios {
            row(&mut out, name, s);
        }
        row(&mut out, "**all**", &t);
        for (name, _, s) in &self.scenarios {
            if !s.cold_starts_ns.is_empty() {
                let _ = writeln!(
                    out,
                    "\n{name}: {} cold start(s), from the last pod's start to a primary a majority names: p50 / p99 / max {}",
                    s.cold_starts_ns.len(),
                    ms3(s.cold_start_percentiles())
                );
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\nFailures:\n");
            for f in &self.failures {
                let _ = writeln!(
                    out,
                    "- {} seed {}: {}; replay: `{}`",
                    f.scenario,
                    f.seed,
                    f.what,
                    f.replay()
                );
            }
        }
        out
    }

    /// The summary as one JSON object (the same figures as [`SweepSummary::markdown`],
    /// times in ms).
    pub fn json(&self) -> String {
        let pct = |p: Option<[u64; 3]>| {
            p.map_or("null".to_string(), |[a, b, c]| {
                format!(
                    "{{\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{}}}",
                    ms(a),
                    ms(b),
                    ms(c)
                )
            })
        };
        let tally = |name: &str, s: &ScenarioTally| {
            format!(
                "{{\"scenario\":{},\"seeds\":{},\"failed\":{},\"worker_s\":{:.3},\"failovers\":{},\"failover\":{},\"cold_start\":{},\"settle\":{},\"unsettled\":{}}}",
                json_str(name),
                s.seeds,
                s.failed,
                s.wall.as_secs_f64(),
                s.failovers_ns.len(),
                pct(s.failover_percentiles()),
                pct(s.cold_start_percentiles()),
                pct(s.settle_percentiles()),
                s.unsettled
            )
        };
        let t = self.total();
        let rows: Vec<String> = self.scenarios.iter().map(|s| tally(s.0, &s.2)).collect();
        let fails: Vec<String> = self
            .failures
            .iter()
            .map(|f| {
                format!(
                    "{{\"scenario\":{},\"seed\":{},\"what\":{},\"replay\":{}}}",
                    json_str(f.scenario),
                    f.seed,
                    json_str(&f.what),
                    json_str(&f.replay())
                )
            })
            .collect();
        format!(
            "{{\"seeds\":{},\"planned\":{},\"failed\":{},\"from\":{},\"jobs\":{},\"wall_s\":{:.3},\"seeds_per_s\":{:.3},\"liveness\":{},\"stopped_early\":{},\"total\":{},\"scenarios\":[{}],\"failures\":[{}]}}\n",
            t.seeds,
            self.planned,
            t.failed,
            self.from,
            self.jobs,
            self.wall.as_secs_f64(),
            self.seeds_per_sec(),
            self.liveness,
            self.stopped_early,
            tally("all", &t),
            rows.join(","),
            fails.join(",")
        )
    }
}

/// ns as whole milliseconds with three decimals, for JSON.
fn ms(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000, ns % 1_000_000 / 1_000)
}

/// A JSON string literal of `s`.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.99), Some(990));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
        // Order does not matter to `percentiles`.
        assert_eq!(percentiles(&[30, 10, 20]), Some([20, 30, 30]));
        assert_eq!(percentiles(&[]), None);
    }

    fn rec(
        scenario: &'static str,
        seed: u64,
        failovers_ms: &[u64],
        settle_ms: Option<u64>,
    ) -> SeedRecord {
        SeedRecord {
            scenario,
            seed,
            wall: Duration::from_millis(250),
            failovers_ns: failovers_ms.iter().map(|m| m * MS).collect(),
            cold_starts_ns: Vec::new(),
            settle_ns: settle_ms.map(|m| m * MS),
            violation: None,
        }
    }

    #[test]
    fn tallies_per_scenario_and_in_total() {
        let mut s = SweepSummary::new(&[("a", 100), ("b", 2)], 10, 2, true);
        for k in 0..100 {
            s.add(&rec("a", 10 + k, &[k + 1], Some(1000 - k)));
        }
        let mut bad = rec("b", 10, &[400, 600], None);
        bad.violation = Some("two primaries at once: \"n1\"".into());
        s.add(&bad);
        s.wall = Duration::from_secs(5);

        let a = &s.scenarios[0].2;
        assert_eq!((a.seeds, a.failed, a.unsettled), (100, 0, 0));
        assert_eq!(a.wall, Duration::from_millis(25_000));
        assert_eq!(a.failover_percentiles(), Some([50 * MS, 99 * MS, 100 * MS]));
        assert_eq!(
            a.settle_percentiles(),
            Some([950 * MS, 999 * MS, 1000 * MS])
        );
        let b = &s.scenarios[1].2;
        assert_eq!((b.seeds, b.failed, b.unsettled), (1, 1, 1));
        assert_eq!(b.settle_percentiles(), None);

        let t = s.total();
        assert_eq!((t.seeds, t.failed, t.unsettled), (101, 1, 1));
        assert_eq!(t.failovers_ns.len(), 102);
        assert_eq!(t.settle_percentiles(), a.settle_percentiles());
        assert_eq!(t.wall, Duration::from_millis(25_250));
        // 102 values 1..=100 ms, 400, 600: p99 is the 101st.
        assert_eq!(
            t.failover_percentiles(),
            Some([51 * MS, 400 * MS, 600 * MS])
        );
        assert!((s.seeds_per_sec() - 101.0 / 5.0).abs() < 1e-9);
        assert_eq!(
            s.failures,
            vec![Failure {
                scenario: "b",
                seed: 10,
                what: "two primaries at once: \"n1\"".into()
            }]
        );

        let md = s.markdown();
        assert!(
            md.contains("101 of 102 seeds (each scenario from seed 10), **1 failed**"),
            "{md}"
        );
        assert!(
            md.contains(
                "| a | 100 | 0 | 25.0 | 0.250 | 100 | 50 / 99 / 100 ms | 950 / 999 / 1000 ms | 0 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| b | 1 | 1 | 0.2 | 0.250 | 2 | 400 / 600 / 600 ms | - | 1 |"),
            "{md}"
        );
        assert!(
            md.contains("replay: `cargo sim replay b --seed 10`"),
            "{md}"
        );

        let js = s.json();
        assert!(
            js.contains("\"seeds\":101,\"planned\":102,\"failed\":1"),
            "{js}"
        );
        assert!(
            js.contains("\"failover\":{\"p50_ms\":50.000,\"p99_ms\":99.000,\"max_ms\":100.000}"),
            "{js}"
        );
        assert!(
            js.contains("\"what\":\"two primaries at once: \\\"n1\\\"\""),
            "{js}"
        );
        assert!(js.contains("\"settle\":null,\"unsettled\":1"), "{js}");
    }

    #[test]
    fn unplanned_scenario_gets_a_row() {
        let mut s = SweepSummary::new(&[("a", 1)], 0, 1, false);
        let mut r = rec("z", 3, &[], Some(5));
        r.cold_starts_ns = vec![1_200 * MS];
        s.add(&r);
        assert_eq!(s.scenarios.len(), 2);
        assert_eq!(s.scenarios[1].0, "z");
        let md = s.markdown();
        assert!(md.contains("safety only"), "{md}");
        assert!(md.contains("z: 1 cold start(s), from the last pod's start to a primary a majority names: p50 / p99 / max 1200 / 1200 / 1200 ms"), "{md}");
        assert!(s.json().contains("\"cold_start\":{\"p50_ms\":1200.000"));
    }
}
