//! Recovery benchmark (issue 9): `cluster-node` processes on 127.0.0.1 with a static
//! peer list lose the primary and some followers to SIGKILL at once, get them back at
//! the same addresses, and must agree on a primary again. Not a test: it prints a
//! table, and exits non-zero if any trial did not recover or any overlap was seen.
//!
//! ```text
//! cargo build --release -p cluster-mode --bin cluster-node --example bench_recovery
//! target/release/examples/bench_recovery [TRIALS=20] [--case PATTERN[,PATTERN..]]
//!     [--fast] [--timeout SECS=30]
//! ```
//!
//! Cases (`--case` takes an exact name, or else a part of names: `lose` runs the four
//! `*-lose-*` cases, `data-dir` the three with data dirs; default: all):
//!
//! | case | fleet | SIGKILLed and restarted | durable state |
//! |---|---|---|---|
//! | `3-lose-2` | 3 | the primary and 1 follower | none |
//! | `3-lose-2+data-dir` | 3 | the primary and 1 follower | `--data-dir`, kept |
//! | `5-lose-3` | 5 | the primary and 2 followers | none |
//! | `5-lose-3+data-dir` | 5 | the primary and 2 followers | `--data-dir`, kept |
//! | `whole-fleet` | 3 | all 3 | none |
//! | `whole-fleet+data-dir` | 3 | all 3 | `--data-dir`, kept |
//!
//! Per trial: start the fleet on free ports (default `Config::datacenter()` timings,
//! `Config::fast_test()` with `--fast`); wait until every node names the same primary,
//! that node says `Primary`, and every node counts the whole fleet as voters; start one
//! sampler per node polling `GET /cluster/v1/status` about every millisecond; SIGKILL
//! the victims (all signals sent before any is reaped), restart them at the same
//! addresses (with the same data dirs in the `+data-dir` cases, without `--data-dir`
//! otherwise), and time from the last restart to an agreed primary (every node names
//! the same primary and that node says `Primary`). A trial that takes longer than
//! `--timeout` has failed. The samplers run on for 300 ms after the agreement; their
//! answers are checked for two processes being `Primary` at the same instant, by the
//! rule in `tests/common/recovery.rs` (an overlap is a negative gap between two
//! processes' runs of primary answers, reported only when certain).
//!
//! The work directory of a failed trial (every process's log, the data dirs) is kept
//! under the system's temporary directory and its path printed.
// Under `--cfg madsim` (`cargo simclippy`) only the empty `main` below is compiled.
#![cfg_attr(madsim, allow(dead_code, unused_imports))]

#[cfg(not(madsim))]
#[path = "../tests/common/recovery.rs"]
mod recovery;

/// The command line.
#[cfg(not(madsim))]
struct Args {
    trials: usize,
    patterns: Vec<String>,
    fast: bool,
    timeout_secs: u64,
}

/// Parses the command line (see the module docs); exits with a usage line on error.
#[cfg(not(madsim))]
fn args() -> Args {
    let usage = "usage: bench_recovery [TRIALS=20] [--case PATTERN[,PATTERN..]] [--fast] [--timeout SECS=30]";
    let fail = |what: String| -> ! {
        eprintln!("bench_recovery: {what}\n{usage}");
        std::process::exit(2)
    };
    let mut a = Args {
        trials: 20,
        patterns: Vec::new(),
        fast: false,
        timeout_secs: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--fast" => a.fast = true,
            "--case" => {
                let v = it
                    .next()
                    .unwrap_or_else(|| fail("--case wants a value".into()));
                a.patterns.extend(v.split(',').map(str::to_owned));
            }
            "--timeout" => {
                let v = it.next().unwrap_or_default();
                a.timeout_secs = v
                    .parse()
                    .unwrap_or_else(|_| fail(format!("--timeout {v:?}: not a number")));
            }
            "--trials" => {
                let v = it.next().unwrap_or_default();
                a.trials = v
                    .parse()
                    .unwrap_or_else(|_| fail(format!("--trials {v:?}: not a number")));
            }
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other => {
                a.trials = other
                    .parse()
                    .unwrap_or_else(|_| fail(format!("unknown argument {other:?}")));
            }
        }
    }
    a
}

/// The `cluster-node` binary next to this example's directory (`target/<profile>/`).
#[cfg(not(madsim))]
fn node_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    dir.join("cluster-node")
}

/// What the trials of one case gave.
#[cfg(not(madsim))]
struct Summary {
    case: recovery::Case,
    trials: usize,
    times_ms: Vec<f64>,
    overlaps: usize,
    min_gap_ms: Option<f64>,
}

#[cfg(not(madsim))]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let bin = node_binary();
    assert!(
        bin.exists(),
        "build the node first: cargo build --release -p cluster-mode --bin cluster-node ({})",
        bin.display()
    );
    let cases = recovery::select(&a.patterns);
    if cases.is_empty() {
        let names: Vec<_> = recovery::CASES.iter().map(|c| c.name).collect();
        eprintln!(
            "bench_recovery: no case matches {:?}; cases: {names:?}",
            a.patterns
        );
        std::process::exit(2);
    }
    let mut settings = recovery::Settings::new(bin, a.fast);
    settings.recover_timeout = std::time::Duration::from_secs(a.timeout_secs);

    let mut summaries = Vec::new();
    for case in cases {
        let mut s = Summary {
            case,
            trials: a.trials,
            times_ms: Vec::new(),
            overlaps: 0,
            min_gap_ms: None,
        };
        for t in 0..a.trials {
            let r = recovery::run_trial(&case, &settings).await;
            let gap = r.min_gap_ms.map_or("-".into(), |g| format!("{g:.2} ms"));
            match &r.recovery {
                Ok(d) => {
                    let ms = d.as_secs_f64() * 1e3;
                    s.times_ms.push(ms);
                    eprintln!(
                        "{} trial {t:>2}: agreed primary {ms:8.1} ms after the last restart; \
                         min gap {gap}; {} answers, {} failed requests",
                        case.name, r.answers, r.failed_requests
                    );
                }
                Err(why) => eprintln!("{} trial {t:>2}: FAILED: {why}", case.name),
            }
            if !r.overlaps.is_empty() {
                eprintln!(
                    "{} trial {t:>2}: OVERLAP: two primaries at once, certainly for {:?} ms",
                    case.name, r.overlaps
                );
            }
            if let Some(d) = &r.kept_dir {
                eprintln!("{} trial {t:>2}: logs kept in {}", case.name, d.display());
            }
            s.overlaps += r.overlaps.len();
            s.min_gap_ms = match (s.min_gap_ms, r.min_gap_ms) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
        }
        summaries.push(s);
    }

    println!(
        "\ncluster-node processes on 127.0.0.1, {}, recovery timeout {} s\n",
        if a.fast {
            "Config::fast_test() (--fast)"
        } else {
            "Config::datacenter()"
        },
        a.timeout_secs
    );
    println!("time to agreed primary, from the last restart:\n");
    println!(
        "| case | trials | recovered | p50 (ms) | p99 (ms) | max (ms) | overlaps | min gap (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.1}"));
    let mut ok = true;
    for s in &mut summaries {
        let recovered = s.times_ms.len();
        ok &= recovered == s.trials && s.overlaps == 0;
        let max = s.times_ms.iter().copied().reduce(f64::max);
        println!(
            "| {} | {} | {recovered} | {} | {} | {} | {} | {} |",
            s.case.name,
            s.trials,
            fmt(recovery::percentile(&mut s.times_ms, 50.0)),
            fmt(recovery::percentile(&mut s.times_ms, 99.0)),
            fmt(max),
            s.overlaps,
            s.min_gap_ms.map_or("-".to_owned(), |g| format!("{g:.2}")),
        );
    }
    println!(
        "\nmin gap: the smallest gap between two processes' primary answers (negative: \
         an overlap)"
    );
    if !ok {
        eprintln!("bench_recovery: FAILED (a trial did not recover, or an overlap was seen)");
        std::process::exit(1);
    }
}

/// Real sockets and processes only: nothing to run under the madsim simulator.
#[cfg(madsim)]
fn main() {}
