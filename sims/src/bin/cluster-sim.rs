//! `cluster-sim`: run scenario seed sweeps, replay a seed, draw a timeline, print
//! failover statistics. Build with `--cfg madsim` (the `cargo sim` alias).

#[cfg(not(madsim))]
fn main() {
    eprintln!(
        "cluster-sim must be built with --cfg madsim: use `cargo sim ...` \
         (and make sure RUSTFLAGS is not set in the environment)"
    );
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(madsim)]
mod cli {
    use clap::{Parser, Subcommand};
    use cluster_mode_sims::checker::first_agreement_ns;
    use cluster_mode_sims::stats::{seed_stats, Summary};
    use cluster_mode_sims::sweep::{SeedRecord, SweepSummary};
    use cluster_mode_sims::{
        replay_command, run_seed, runner::run_seed_with, timeline, Scenario, ALL, BY_NAME,
    };
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// One seed's result: scenario, seed, violations, failure report.
    type Outcome = (Scenario, u64, Vec<String>, String);

    /// One seed's settling: scenario, seed, ns from the last fault to agreement (none
    /// within twice the bound), the bound.
    type Settled = (Scenario, u64, Option<u64>, u64);

    /// `name: p50 p90 p99 max (bound), over the bound, the slowest seeds`.
    fn settle_line(name: &str, runs: &[&Settled]) -> String {
        let mut times: Vec<u64> = runs.iter().map(|r| r.2.unwrap_or(u64::MAX)).collect();
        times.sort_unstable();
        let ms = |t: u64| {
            if t == u64::MAX {
                "never".to_string()
            } else {
                format!("{} ms", t / 1_000_000)
            }
        };
        let pct = |p: usize| times.get((times.len() * p / 100).min(times.len().saturating_sub(1)));
        let bound = runs.first().map_or(0, |r| r.3);
        let over = runs.iter().filter(|r| r.2.is_none_or(|t| t > r.3)).count();
        let mut slow: Vec<&&Settled> = runs.iter().collect();
        slow.sort_by_key(|r| std::cmp::Reverse(r.2.unwrap_or(u64::MAX)));
        let slowest: Vec<String> = slow
            .iter()
            .take(3)
            .map(|r| format!("{} ({})", r.1, ms(r.2.unwrap_or(u64::MAX))))
            .collect();
        format!(
            "{name:<28} p50 {} p90 {} p99 {} max {} (bound {}), {over} of {} over; slowest seeds {}",
            pct(50).map_or("-".into(), |t| ms(*t)),
            pct(90).map_or("-".into(), |t| ms(*t)),
            pct(99).map_or("-".into(), |t| ms(*t)),
            times.last().map_or("-".into(), |t| ms(*t)),
            ms(bound),
            runs.len(),
            slowest.join(", ")
        )
    }

    #[derive(Parser)]
    #[command(
        name = "cluster-sim",
        about = "Deterministic simulations of cluster-mode"
    )]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Runs a scenario (or `all`) over a seed range and checks every invariant.
        Run {
            /// Scenario name, a comma-separated list, or `all`.
            scenario: String,
            /// First seed.
            #[arg(long, default_value_t = 0)]
            from: u64,
            /// Number of seeds.
            #[arg(long, default_value_t = 100)]
            seeds: u64,
            /// Worker threads.
            #[arg(long, default_value_t = 1)]
            jobs: usize,
            /// Check only safety, not the liveness bound.
            #[arg(long)]
            no_liveness: bool,
            /// Stop at the first failing seed.
            #[arg(long)]
            fail_fast: bool,
        },
        /// Replays one seed and prints its trace, violations and trace hash.
        Replay {
            /// Scenario name.
            scenario: String,
            /// The seed.
            #[arg(long)]
            seed: u64,
            /// Also print the nodes' log lines to stderr (filter: `RUST_LOG`, default
            /// `info`), stamped with simulated time like the trace.
            #[arg(long)]
            log: bool,
            /// The store scenarios: also print every store operation the clients
            /// recorded (client, invoke and return in ns, operation, outcome).
            #[arg(long)]
            history: bool,
        },
        /// Writes an SVG timeline of one seed.
        Timeline {
            /// Scenario name.
            scenario: String,
            /// The seed.
            #[arg(long)]
            seed: u64,
            /// Output file.
            #[arg(long, default_value = "timeline.svg")]
            out: String,
        },
        /// Failover time, share of time without a primary, messages per node per second.
        Stats {
            /// Scenario name, or `all`.
            scenario: String,
            /// First seed.
            #[arg(long, default_value_t = 0)]
            from: u64,
            /// Number of seeds.
            #[arg(long, default_value_t = 100)]
            seeds: u64,
            /// Worker threads.
            #[arg(long, default_value_t = 1)]
            jobs: usize,
        },
        /// Time from the last fault to agreement (what the liveness bound limits):
        /// percentiles, the bound, and the slowest seeds.
        Settle {
            /// Scenario name, a comma-separated list, or `all`.
            scenario: String,
            /// First seed.
            #[arg(long, default_value_t = 0)]
            from: u64,
            /// Number of seeds.
            #[arg(long, default_value_t = 100)]
            seeds: u64,
            /// Worker threads.
            #[arg(long, default_value_t = 1)]
            jobs: usize,
        },
        /// Runs N seeds of every scenario (or a list) on every core: a progress line,
        /// a stop at the first failure with its replay command, and a summary (seeds,
        /// failures, seeds/s, per scenario wall time, failover and settle percentiles).
        Sweep {
            /// Scenario name, a comma-separated list, or `all` (the default).
            #[arg(default_value = "all")]
            scenario: String,
            /// First seed of every scenario.
            #[arg(long, default_value_t = 0)]
            from: u64,
            /// Seeds per scenario (a slow scenario runs fewer: `--slow-weight`).
            #[arg(long, default_value_t = 100)]
            seeds: u64,
            /// A slow scenario (`hundred-members`, `thousand-members`: seconds per
            /// seed instead of a fraction of one) runs `ceil(seeds / weight)` seeds.
            #[arg(long, default_value_t = 20)]
            slow_weight: u64,
            /// Seeds of one scenario, overriding the two options above
            /// (`--seeds-of chaos=5000`, repeatable).
            #[arg(long, value_name = "NAME=N")]
            seeds_of: Vec<String>,
            /// Worker threads (default: one per core).
            #[arg(long)]
            jobs: Option<usize>,
            /// Run every planned seed even after a failure (all failures listed).
            #[arg(long)]
            keep_going: bool,
            /// Check only safety, not the liveness bound.
            #[arg(long)]
            no_liveness: bool,
            /// Also write the summary to this file: JSON if it ends in `.json`, else
            /// markdown.
            #[arg(long, value_name = "PATH")]
            summary: Option<String>,
            /// Seconds between two progress lines (stderr).
            #[arg(long, default_value_t = 10)]
            progress: u64,
        },
        /// Lists the scenarios (`all` runs those of the first column; the ones marked
        /// `(by name only)` run only when named).
        List,
    }

    fn scenarios(name: &str) -> Result<Vec<Scenario>, String> {
        if name == "all" {
            return Ok(ALL.to_vec());
        }
        let known = || ALL.iter().chain(BY_NAME.iter());
        name.split(',')
            .map(|n| {
                Scenario::from_name(n).ok_or_else(|| {
                    let names: Vec<_> = known().map(|s| s.name()).collect();
                    format!("unknown scenario {n:?}; one of: all {}", names.join(" "))
                })
            })
            .collect()
    }

    /// What a sweep keeps of one seed: nothing on the heap for a seed that passed
    /// (a sweep of a million seeds keeps a million of these).
    fn outcome(r: &cluster_mode_sims::RunResult) -> Outcome {
        let violations: Vec<String> = r.violations.iter().map(|v| v.to_string()).collect();
        let report = if violations.is_empty() {
            String::new()
        } else {
            r.report()
        };
        (r.scenario, r.seed, violations, report)
    }

    /// The process's resident memory (`VmRSS` and its peak `VmHWM` from
    /// `/proc/self/status`), for the progress line: a sweep must stay flat
    /// (FINDINGS.md #7). `rss ?` where there is no procfs.
    fn resident() -> String {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return "rss ?".into();
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or("?".to_string(), |kb| format!("{} MB", kb / 1024))
        };
        format!("rss {} (peak {})", field("VmRSS:"), field("VmHWM:"))
    }

    /// Runs `f` over every (scenario, seed) on `jobs` threads, in a deterministic order
    /// of results.
    fn sweep<T: Send + 'static>(
        list: &[Scenario],
        from: u64,
        seeds: u64,
        jobs: usize,
        f: fn(Scenario, u64) -> T,
        on_done: &(dyn Fn(u64, u64, &T) + Sync),
    ) -> Vec<T> {
        let work: Vec<(Scenario, u64)> = list
            .iter()
            .flat_map(|s| (from..from + seeds).map(move |k| (*s, k)))
            .collect();
        let total = work.len() as u64;
        let next = AtomicU64::new(0);
        let done = AtomicU64::new(0);
        let results: Mutex<Vec<Option<T>>> = Mutex::new((0..work.len()).map(|_| None).collect());
        std::thread::scope(|sc| {
            for _ in 0..jobs.max(1) {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let Some(&(s, k)) = work.get(i) else { break };
                    let r = f(s, k);
                    let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                    on_done(d, total, &r);
                    results.lock().expect("results")[i] = Some(r);
                });
            }
        });
        results
            .into_inner()
            .expect("results")
            .into_iter()
            .flatten()
            .collect()
    }

    /// One seed of a sweep: run, check, its figures. A panic is a failure too (its
    /// message as the violation). Returns the record and, for a failure, the full
    /// report (violations and replay command).
    fn sweep_seed(s: Scenario, seed: u64, liveness: bool) -> (SeedRecord, Option<String>) {
        let t0 = Instant::now();
        let run = std::panic::catch_unwind(|| {
            let r = run_seed_with(s, seed, liveness);
            let st = seed_stats(&r.trace);
            let last = r.plan.last_fault_ns;
            let settle_ns = first_agreement_ns(&r.trace, last).map(|t| t - last);
            let violation = r.violations.first().map(|v| v.to_string());
            let report = violation.is_some().then(|| r.report());
            (
                st.failovers_ns,
                st.cold_starts_ns,
                settle_ns,
                violation,
                report,
            )
        });
        let (failovers_ns, cold_starts_ns, settle_ns, violation, report) = match run {
            Ok(x) => x,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|m| m.to_string()))
                    .unwrap_or_else(|| "(no message)".into());
                let what = format!("panicked: {msg}");
                let report = format!(
                    "FAILED scenario={} seed={seed} (panic)\n  {what}\n  replay: {}\n",
                    s.name(),
                    replay_command(s, seed)
                );
                (Vec::new(), Vec::new(), None, Some(what), Some(report))
            }
        };
        let rec = SeedRecord {
            scenario: s.name(),
            seed,
            wall: t0.elapsed(),
            failovers_ns,
            cold_starts_ns,
            settle_ns,
            violation,
        };
        (rec, report)
    }

    /// `1h02m03s`, `4m05s` or `6s`.
    fn hms(secs: f64) -> String {
        let s = secs.max(0.0).round() as u64;
        match (s / 3600, s / 60 % 60, s % 60) {
            (0, 0, x) => format!("{x}s"),
            (0, m, x) => format!("{m}m{x:02}s"),
            (h, m, x) => format!("{h}h{m:02}m{x:02}s"),
        }
    }

    /// Options of [`run_sweep`].
    struct SweepOpts {
        from: u64,
        jobs: usize,
        liveness: bool,
        keep_going: bool,
        progress: Duration,
    }

    /// Runs every (scenario, seed count) of `plan` from `o.from` on `o.jobs` worker
    /// threads (each seed in its own madsim runtime, on a fresh thread: see
    /// `run_seed_with`). Slow scenarios are handed out first so that they do not
    /// finish alone at the end. Prints a progress line every `o.progress` and each
    /// failure's report as it happens; unless `keep_going`, no seed starts after the
    /// first failure.
    fn run_sweep(plan: &[(Scenario, u64)], o: &SweepOpts) -> SweepSummary {
        let names: Vec<(&'static str, u64)> = plan.iter().map(|(s, k)| (s.name(), *k)).collect();
        let mut order: Vec<&(Scenario, u64)> = plan.iter().collect();
        order.sort_by_key(|(s, _)| std::cmp::Reverse(s.weight())); // stable
        let work: Vec<(Scenario, u64)> = order
            .iter()
            .flat_map(|(s, k)| (o.from..o.from + k).map(move |seed| (*s, seed)))
            .collect();
        let summary = Mutex::new(SweepSummary::new(&names, o.from, o.jobs, o.liveness));
        let next = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        let total = work.len() as u64;
        let line = |sum: &SweepSummary| {
            let el = start.elapsed().as_secs_f64();
            let t = sum.total();
            // ETA: the seeds left of each scenario at its own mean worker time so far
            // (a scenario not started yet: its weight times the mean of a weight-1
            // seed), over the workers.
            let unit = {
                let (w, k) = sum.scenarios.iter().fold((0.0, 0u64), |(w, k), (n, _, s)| {
                    let wt = Scenario::from_name(n).map_or(1, |x| x.weight());
                    (w + s.wall.as_secs_f64(), k + s.seeds * wt)
                });
                if k == 0 {
                    0.0
                } else {
                    w / k as f64
                }
            };
            let left: f64 = sum
                .scenarios
                .iter()
                .map(|(n, planned, s)| {
                    let wt = Scenario::from_name(n).map_or(1, |x| x.weight()) as f64;
                    let mean = if s.seeds > 0 {
                        s.wall.as_secs_f64() / s.seeds as f64
                    } else {
                        unit * wt
                    };
                    planned.saturating_sub(s.seeds) as f64 * mean
                })
                .sum::<f64>()
                / o.jobs as f64;
            format!(
                "[sweep {}] {}/{} seeds ({:.1}%), {} failed, {:.1} seeds/s, ETA {}, {}",
                hms(el),
                t.seeds,
                total,
                100.0 * t.seeds as f64 / total.max(1) as f64,
                t.failed,
                t.seeds as f64 / el.max(1e-9),
                if t.seeds == 0 { "?".into() } else { hms(left) },
                resident()
            )
        };
        let (tick, ticks) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|sc| {
            let (line, summary) = (&line, &summary);
            sc.spawn(move || loop {
                // Wakes every `progress`; ends when every worker has dropped its sender.
                match ticks.recv_timeout(o.progress) {
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    _ => eprintln!("{}", line(&summary.lock().expect("summary"))),
                }
            });
            for _ in 0..o.jobs {
                let tick = tick.clone();
                let (work, next, stop) = (&work, &next, &stop);
                sc.spawn(move || {
                    let _tick = tick;
                    while !stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                        let Some(&(s, seed)) = work.get(i) else { break };
                        let (rec, report) = sweep_seed(s, seed, o.liveness);
                        let mut sum = summary.lock().expect("summary");
                        if let Some(report) = report {
                            eprint!("{report}");
                            if !o.keep_going {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                        sum.add(&rec);
                    }
                });
            }
            drop(tick);
        });
        let mut sum = summary.into_inner().expect("summary");
        eprintln!("{}", line(&sum));
        sum.wall = start.elapsed();
        sum.stopped_early = sum.total().seeds < total;
        sum
    }

    /// The seed count of each scenario of a sweep.
    fn sweep_plan(
        list: &[Scenario],
        seeds: u64,
        slow_weight: u64,
        seeds_of: &[String],
    ) -> Result<Vec<(Scenario, u64)>, String> {
        let mut plan: Vec<(Scenario, u64)> = list
            .iter()
            .map(|s| {
                let k = if s.weight() > 1 {
                    seeds.div_ceil(slow_weight.max(1))
                } else {
                    seeds
                };
                (*s, k)
            })
            .collect();
        for o in seeds_of {
            let (name, k) = o
                .split_once('=')
                .and_then(|(n, k)| Some((n, k.parse::<u64>().ok()?)))
                .ok_or_else(|| format!("--seeds-of {o:?}: expected NAME=N"))?;
            let s = scenarios(name)?;
            for p in plan.iter_mut().filter(|p| s.contains(&p.0)) {
                p.1 = k;
            }
        }
        Ok(plan)
    }

    pub fn main() -> i32 {
        let cli = Cli::parse();
        match cli.cmd {
            Cmd::List => {
                for s in ALL {
                    println!("{}", s.name());
                }
                for s in BY_NAME {
                    println!("{} (by name only)", s.name());
                }
                0
            }
            Cmd::Sweep {
                scenario,
                from,
                seeds,
                slow_weight,
                seeds_of,
                jobs,
                keep_going,
                no_liveness,
                summary,
                progress,
            } => {
                let plan = match scenarios(&scenario)
                    .and_then(|l| sweep_plan(&l, seeds, slow_weight, &seeds_of))
                {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("{e}");
                        return 2;
                    }
                };
                let jobs = jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                    .max(1);
                let opts = SweepOpts {
                    from,
                    jobs,
                    liveness: !no_liveness,
                    keep_going,
                    progress: Duration::from_secs(progress.max(1)),
                };
                let sum = run_sweep(&plan, &opts);
                let md = sum.markdown();
                print!("{md}");
                if let Some(f) = sum.failures.first() {
                    println!(
                        "\nfirst failure: {} seed {}; replay it with:\n  {}",
                        f.scenario,
                        f.seed,
                        f.replay()
                    );
                }
                if let Some(path) = summary {
                    let text = if path.ends_with(".json") {
                        sum.json()
                    } else {
                        md
                    };
                    if let Err(e) = std::fs::write(&path, text) {
                        eprintln!("cannot write {path}: {e}");
                        return 2;
                    }
                }
                i32::from(!sum.failures.is_empty())
            }
            Cmd::Run {
                scenario,
                from,
                seeds,
                jobs,
                no_liveness,
                fail_fast,
            } => {
                let list = match scenarios(&scenario) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("{e}");
                        return 2;
                    }
                };
                let start = Instant::now();
                let failed = Arc::new(AtomicU64::new(0));
                let stop = fail_fast;
                let f: fn(Scenario, u64) -> Outcome = if no_liveness {
                    |s, k| outcome(&run_seed_with(s, k, false))
                } else {
                    |s, k| outcome(&run_seed(s, k))
                };
                let failed2 = failed.clone();
                let progress =
                    move |d: u64, total: u64, r: &(Scenario, u64, Vec<String>, String)| {
                        if !r.2.is_empty() {
                            failed2.fetch_add(1, Ordering::SeqCst);
                            eprint!("{}", r.3);
                            if stop {
                                std::process::exit(1);
                            }
                        }
                        if d.is_multiple_of(50) || d == total {
                            let el = start.elapsed().as_secs_f64();
                            eprintln!(
                                "[{d}/{total}] {:.1}s elapsed, {:.1} seeds/s, {} failed, {}",
                                el,
                                d as f64 / el,
                                failed2.load(Ordering::SeqCst),
                                resident()
                            );
                        }
                    };
                let results = sweep(&list, from, seeds, jobs, f, &progress);
                let el = start.elapsed().as_secs_f64();
                let bad: Vec<_> = results.iter().filter(|r| !r.2.is_empty()).collect();
                println!(
                    "{} seeds, {} failed, {:.1}s wall, {:.1} seeds/s on {} thread(s)",
                    results.len(),
                    bad.len(),
                    el,
                    results.len() as f64 / el,
                    jobs
                );
                for r in &bad {
                    println!(
                        "  {} seed {}: {}",
                        r.0.name(),
                        r.1,
                        r.2.first().cloned().unwrap_or_default()
                    );
                }
                i32::from(!bad.is_empty())
            }
            Cmd::Replay {
                scenario,
                seed,
                log,
                history,
            } => {
                let Some(s) = Scenario::from_name(&scenario) else {
                    eprintln!("unknown scenario {scenario:?}");
                    return 2;
                };
                if log {
                    cluster_mode_sims::log::install();
                }
                let r = run_seed(s, seed);
                print!("{}", r.trace.text());
                println!("trace hash {:016x}", r.trace.hash());
                if let Some(st) = &r.plan.store {
                    if history {
                        for (i, o) in st.history.operations.iter().enumerate() {
                            println!("#{i} {o:?}");
                        }
                    }
                    println!("store: {}", st.summary());
                }
                if r.violations.is_empty() {
                    println!("no violation");
                    0
                } else {
                    print!("{}", r.report());
                    1
                }
            }
            Cmd::Timeline {
                scenario,
                seed,
                out,
            } => {
                let Some(s) = Scenario::from_name(&scenario) else {
                    eprintln!("unknown scenario {scenario:?}");
                    return 2;
                };
                let r = run_seed(s, seed);
                let title = format!("cluster-mode: {} seed {}", s.name(), seed);
                if let Err(e) = std::fs::write(&out, timeline::svg(&r.trace, &title)) {
                    eprintln!("cannot write {out}: {e}");
                    return 2;
                }
                println!("wrote {out} ({} violation(s))", r.violations.len());
                0
            }
            Cmd::Settle {
                scenario,
                from,
                seeds,
                jobs,
            } => {
                let list = match scenarios(&scenario) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("{e}");
                        return 2;
                    }
                };
                let f: fn(Scenario, u64) -> Settled = |s, k| {
                    let r = run_seed(s, k);
                    let at = first_agreement_ns(&r.trace, r.plan.last_fault_ns);
                    (s, k, at.map(|t| t - r.plan.last_fault_ns), r.bound_ns)
                };
                let results = sweep(&list, from, seeds, jobs, f, &|_, _, _| {});
                for s in &list {
                    let mine: Vec<&Settled> = results.iter().filter(|r| r.0 == *s).collect();
                    println!("{}", settle_line(s.name(), &mine));
                }
                0
            }
            Cmd::Stats {
                scenario,
                from,
                seeds,
                jobs,
            } => {
                let list = match scenarios(&scenario) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("{e}");
                        return 2;
                    }
                };
                let start = Instant::now();
                let f: fn(Scenario, u64) -> (Scenario, cluster_mode_sims::stats::SeedStats) =
                    |s, k| (s, seed_stats(&run_seed_with(s, k, false).trace));
                let progress =
                    move |d: u64,
                          total: u64,
                          _: &(Scenario, cluster_mode_sims::stats::SeedStats)| {
                        if d.is_multiple_of(100) || d == total {
                            eprintln!("[{d}/{total}] {:.1}s", start.elapsed().as_secs_f64());
                        }
                    };
                let results = sweep(&list, from, seeds, jobs, f, &progress);
                let mut all = Summary::default();
                for s in &list {
                    let mut sum = Summary::default();
                    for (_, st) in results.iter().filter(|r| r.0 == *s) {
                        sum.add(st);
                        all.add(st);
                    }
                    println!("{:<22} {}", s.name(), sum.text());
                }
                if list.len() > 1 {
                    println!("{:<22} {}", "ALL", all.text());
                }
                0
            }
        }
    }
}
