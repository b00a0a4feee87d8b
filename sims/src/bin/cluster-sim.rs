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
    use cluster_mode_sims::{run_seed, runner::run_seed_with, timeline, Scenario, ALL};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

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
        /// Lists the scenarios.
        List,
    }

    fn scenarios(name: &str) -> Result<Vec<Scenario>, String> {
        if name == "all" {
            return Ok(ALL.to_vec());
        }
        name.split(',')
            .map(|n| {
                Scenario::from_name(n).ok_or_else(|| {
                    let names: Vec<_> = ALL.iter().map(|s| s.name()).collect();
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

    pub fn main() -> i32 {
        let cli = Cli::parse();
        match cli.cmd {
            Cmd::List => {
                for s in ALL {
                    println!("{}", s.name());
                }
                0
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
