//! Named-roles benchmark (P13) with real `cluster-node` processes on 127.0.0.1, 64
//! roles, default (datacenter) timings. Not a test: it prints a table, and exits 1 if
//! two processes could ever have answered "mine" for one role at the same instant.
//!
//! ```text
//! cargo build --release -p cluster-mode --bin cluster-node --example bench_roles
//! target/release/examples/bench_roles [TRIALS=30] [--roles N=64] [--steady-trials K=2]
//!     [--window-secs S=5]
//! ```
//!
//! Per trial, a fresh fleet: seven addresses in every node's `--peers`, five processes
//! started with `--roles-count N`, two spare addresses. Between steps the fleet is
//! *settled*: one agreed primary, every role owned by a running process and none being
//! moved, the same table on every node, unchanged for 500 ms (polled every 50 ms).
//!
//! 1. settled (cold start);
//! 2. a sixth process joins at the first spare address: the roles that moved, the
//!    largest load after, and the time until settled;
//! 3. SIGTERM to the follower owning the most roles (a graceful leave);
//! 4. SIGTERM to the primary;
//! 5. a process joins at the second spare address (five running again);
//! 6. SIGKILL to the follower owning the most roles;
//! 7. SIGKILL to the primary (its roles wait for the election);
//! 8. every survivor's record is read and the survivors are killed.
//!
//! The figures come from the role intervals every process records on the host's
//! `CLOCK_BOOTTIME` (`cluster_mode::role_log`: the `ROLES` line of a graceful exit, the
//! status endpoint otherwise; see `tests/common/roles.rs` for the records of killed
//! processes): for a leave, per role of the leaver, the **handover gap** = the next
//! owner's first interval start - the leaver's last interval end (negative: an
//! overlap); for a kill, per role of the victim, the **reassignment time** = the next
//! owner's first interval start - the host clock read just before the SIGKILL. Every
//! trial's records are compared with `role_log::overlaps`.
//!
//! In the first K trials, before the fleet with roles, a fleet of the same shape
//! without roles is settled too, and each one's messages and bytes sent per second
//! (the node counters `messages_out`, `bytes_out`, `wire_bytes_out`, summed over the
//! five nodes) are measured over S seconds in steady state.
#![cfg_attr(madsim, allow(dead_code, unused_imports))]

#[cfg(not(madsim))]
#[path = "../tests/common/procs.rs"]
mod procs;
#[cfg(not(madsim))]
#[path = "../tests/common/roles.rs"]
mod roles;

#[cfg(not(madsim))]
use procs::{node_bin, pct};
#[cfg(not(madsim))]
use roles::{Fleet, Settled};
use std::time::{Duration, Instant};

/// Addresses per fleet: five running, two spares for the joins.
const SLOTS: usize = 7;
const RUNNING: usize = 5;
const QUIET: Duration = Duration::from_millis(500);
const EVERY: Duration = Duration::from_millis(50);
const WITHIN: Duration = Duration::from_secs(30);

struct Args {
    trials: usize,
    roles: usize,
    steady_trials: usize,
    window: Duration,
}

fn args() -> Args {
    let usage =
        "usage: bench_roles [TRIALS=30] [--roles N=64] [--steady-trials K=2] [--window-secs S=5]";
    let mut a = Args {
        trials: 30,
        roles: 64,
        steady_trials: 2,
        window: Duration::from_secs(5),
    };
    let fail = |what: &str| -> ! {
        eprintln!("bench_roles: {what}\n{usage}");
        std::process::exit(2)
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| fail(&format!("{name} wants a number")))
        };
        match arg.as_str() {
            "--roles" => a.roles = num("--roles"),
            "--steady-trials" => a.steady_trials = num("--steady-trials"),
            "--window-secs" => a.window = Duration::from_secs(num("--window-secs") as u64),
            n => a.trials = n.parse().unwrap_or_else(|_| fail(&format!("unknown {n}"))),
        }
    }
    a
}

/// Messages, body bytes and wire bytes sent per second by the running nodes.
#[derive(Clone, Copy, Debug, Default)]
struct Rates {
    messages: f64,
    bytes: f64,
    wire: f64,
}

/// Everything one trial measured.
#[derive(Default)]
struct Trial {
    cold_ms: f64,
    join_moves: usize,
    /// Of those, the moves to the newcomer.
    join_to_new: usize,
    join_max_load: usize,
    join_ms: f64,
    /// Handover gaps (ms) per role: follower leave, primary leave.
    gaps_follower: Vec<f64>,
    gaps_primary: Vec<f64>,
    /// Reassignment times (ms) per role: follower kill, primary kill.
    kill_follower: Vec<f64>,
    kill_primary: Vec<f64>,
    overlaps: Vec<String>,
    steady: Option<(Rates, Rates)>,
}

#[cfg(not(madsim))]
fn extra(roles: usize) -> Vec<String> {
    if roles == 0 {
        Vec::new()
    } else {
        vec!["--roles-count".into(), roles.to_string()]
    }
}

/// Counters summed over the running nodes.
#[cfg(not(madsim))]
async fn sums(f: &mut Fleet) -> Result<roles::Counters, String> {
    let mut s = roles::Counters::default();
    let views = f.views().await;
    for i in f.running() {
        let c = views[i]
            .as_ref()
            .ok_or_else(|| format!("{} does not answer", Fleet::name(i)))?
            .counters;
        s.messages_out += c.messages_out;
        s.bytes_out += c.bytes_out;
        s.wire_bytes_out += c.wire_bytes_out;
    }
    Ok(s)
}

/// Sends per second over `window`, in steady state, with no status polling meanwhile.
#[cfg(not(madsim))]
async fn rates(f: &mut Fleet, window: Duration) -> Result<Rates, String> {
    let a = sums(f).await?;
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let b = sums(f).await?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Rates {
        messages: (b.messages_out - a.messages_out) as f64 / secs,
        bytes: (b.bytes_out - a.bytes_out) as f64 / secs,
        wire: (b.wire_bytes_out - a.wire_bytes_out) as f64 / secs,
    })
}

/// A fleet without roles, settled, measured.
#[cfg(not(madsim))]
async fn steady_without_roles(window: Duration) -> Result<Rates, String> {
    let mut f = Fleet::start(SLOTS, RUNNING, &[]);
    f.wait_settled(0, QUIET, EVERY, WITHIN).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = rates(&mut f, window).await;
    let _ = f.finish().await;
    r
}

/// The running follower (not the primary) owning the most roles.
#[cfg(not(madsim))]
fn busiest_follower(s: &Settled) -> Result<usize, String> {
    s.load()
        .into_iter()
        .filter(|(slot, _)| *slot != s.primary)
        .max_by_key(|(_, r)| r.len())
        .map(|(slot, _)| slot)
        .ok_or_else(|| "no follower owns a role".to_string())
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// Figures of one kind (gaps or reassignment times), failing on a role nobody took.
#[cfg(not(madsim))]
fn figures(v: Vec<Result<(String, i64, String), String>>) -> Result<Vec<f64>, String> {
    v.into_iter().map(|r| r.map(|(_, ns, _)| ms(ns))).collect()
}

#[cfg(not(madsim))]
async fn trial(a: &Args, steady: bool) -> Result<Trial, String> {
    let mut t = Trial::default();
    let without = if steady {
        Some(steady_without_roles(a.window).await?)
    } else {
        None
    };
    let mut f = Fleet::start(SLOTS, RUNNING, &extra(a.roles));
    let t0 = Instant::now();
    let s0 = f.wait_settled(a.roles, QUIET, EVERY, WITHIN).await?;
    t.cold_ms = t0.elapsed().saturating_sub(QUIET).as_secs_f64() * 1e3;
    if let Some(without) = without {
        tokio::time::sleep(Duration::from_secs(1)).await;
        t.steady = Some((rates(&mut f, a.window).await?, without));
    }
    let mut records = Vec::new();

    // 2. A sixth process joins.
    let t1 = Instant::now();
    f.spawn(5);
    let s1 = f.wait_settled(a.roles, QUIET, EVERY, WITHIN).await?;
    t.join_ms = t1.elapsed().saturating_sub(QUIET).as_secs_f64() * 1e3;
    let moved = s0.moved_to(&s1);
    t.join_moves = moved.len();
    t.join_to_new = moved.iter().filter(|r| s1.owner[*r] == 5).count();
    t.join_max_load = s1.load().values().map(Vec::len).max().unwrap_or(0);

    // 3. Graceful leave of the busiest follower.
    let leaver = busiest_follower(&s1)?;
    let follower_roles = s1.roles_of(leaver);
    let (_, rec) = f.leave(leaver).await?;
    records.push((Fleet::name(leaver), rec));
    let s2 = f.wait_settled(a.roles, QUIET, EVERY, WITHIN).await?;

    // 4. Graceful leave of the primary.
    let primary = s2.primary;
    let primary_roles = s2.roles_of(primary);
    let (_, rec) = f.leave(primary).await?;
    records.push((Fleet::name(primary), rec));
    f.wait_settled(a.roles, QUIET, EVERY, WITHIN).await?;

    // 5. Five again.
    f.spawn(6);
    let s4 = f.wait_settled(a.roles, QUIET, EVERY, WITHIN).await?;

    // 6. SIGKILL of the busiest follower.
    let victim = busiest_follower(&s4)?;
    let victim_roles = s4.roles_of(victim);
    let (victim_at, rec) = f.kill(victim).await?;
    records.push((Fleet::name(victim), rec));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s5 = f.wait_settled(a.roles, QUIET, EVERY, WITHIN).await?;

    // 7. SIGKILL of the primary.
    let dead_primary = s5.primary;
    let dead_primary_roles = s5.roles_of(dead_primary);
    let (dead_primary_at, rec) = f.kill(dead_primary).await?;
    records.push((Fleet::name(dead_primary), rec));
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.wait_settled(a.roles, QUIET, EVERY, WITHIN).await?;

    // 8. The survivors' records.
    records.extend(f.finish().await?);
    t.overlaps = roles::overlap_lines(&records)?;
    t.gaps_follower = figures(roles::handover_gaps(
        &records,
        &Fleet::name(leaver),
        &follower_roles,
    ))?;
    t.gaps_primary = figures(roles::handover_gaps(
        &records,
        &Fleet::name(primary),
        &primary_roles,
    ))?;
    t.kill_follower = figures(roles::reassignment_times(
        &records,
        &Fleet::name(victim),
        &victim_roles,
        victim_at,
    ))?;
    t.kill_primary = figures(roles::reassignment_times(
        &records,
        &Fleet::name(dead_primary),
        &dead_primary_roles,
        dead_primary_at,
    ))?;
    Ok(t)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[cfg(not(madsim))]
fn row(name: &str, v: &mut [f64], aim: &str) {
    let max = v.iter().copied().fold(f64::NAN, f64::max);
    let n = v.len();
    println!(
        "| {name} | {n} | {:.1} | {:.1} | {:.1} | {aim} |",
        pct(v, 50.0),
        pct(v, 99.0),
        max
    );
}

#[cfg(not(madsim))]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let bin = node_bin();
    assert!(
        bin.exists(),
        "build the node first: cargo build --release -p cluster-mode --bin cluster-node ({})",
        bin.display()
    );
    let load_before = load();
    let started = Instant::now();
    let mut all = Trial::default();
    let (mut cold, mut join_ms, mut moves, mut to_new, mut max_load) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut steady = Vec::new();
    let mut failed = 0;
    for n in 0..a.trials {
        match trial(&a, n < a.steady_trials).await {
            Ok(t) => {
                let worst = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
                let least = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::min);
                eprintln!(
                    "trial {n:>2}: cold {:6.0} ms, join {} moved ({} to it), max load {}, settled {:5.0} ms; \
                     leave gap follower [{:.1}, {:.1}] ms, primary [{:.1}, {:.1}] ms; \
                     kill follower max {:.0} ms, primary max {:.0} ms; load {}{}",
                    t.cold_ms,
                    t.join_moves,
                    t.join_to_new,
                    t.join_max_load,
                    t.join_ms,
                    least(&t.gaps_follower),
                    worst(&t.gaps_follower),
                    least(&t.gaps_primary),
                    worst(&t.gaps_primary),
                    worst(&t.kill_follower),
                    worst(&t.kill_primary),
                    load(),
                    if t.overlaps.is_empty() {
                        ""
                    } else {
                        "  TWO OWNERS"
                    }
                );
                for o in &t.overlaps {
                    eprintln!("  {o}");
                }
                cold.push(t.cold_ms);
                join_ms.push(t.join_ms);
                moves.push(t.join_moves as f64);
                to_new.push(t.join_to_new as f64);
                max_load.push(t.join_max_load as f64);
                steady.extend(t.steady);
                all.gaps_follower.extend(t.gaps_follower);
                all.gaps_primary.extend(t.gaps_primary);
                all.kill_follower.extend(t.kill_follower);
                all.kill_primary.extend(t.kill_primary);
                all.overlaps.extend(t.overlaps);
            }
            Err(e) => {
                failed += 1;
                eprintln!("trial {n:>2}: FAILED: {e}");
            }
        }
    }
    let ok = cold.len();
    println!(
        "\n5 node processes on 127.0.0.1, {} roles, Config::datacenter(), {ok} trials ({failed} failed), {:.0} s; \
         load average before {load_before}, after {}\n",
        a.roles,
        started.elapsed().as_secs_f64(),
        load()
    );
    let negative = all
        .gaps_follower
        .iter()
        .chain(&all.gaps_primary)
        .filter(|g| **g < 0.0)
        .count();
    if !all.overlaps.is_empty() || negative > 0 {
        println!(
            "TWO OWNERS: {} overlapping intervals, {negative} negative handover gaps\n",
            all.overlaps.len()
        );
    }
    let aim_moves = a.roles.div_ceil(6) + 2;
    let aim_load = 1.25 * a.roles as f64 / 6.0;
    println!("| figure | samples | p50 | p99 | max | aim |");
    println!("|---|---|---|---|---|---|");
    row(
        "graceful leave of a follower: handover gap per role (ms)",
        &mut all.gaps_follower,
        "p99 <= 50 ms",
    );
    row(
        "graceful leave of the primary: handover gap per role (ms)",
        &mut all.gaps_primary,
        "",
    );
    row(
        "SIGKILL of a follower: kill to owned elsewhere, per role (ms)",
        &mut all.kill_follower,
        "p99 <= 1500 ms",
    );
    row(
        "SIGKILL of the primary: kill to owned elsewhere, per role (ms)",
        &mut all.kill_primary,
        "p99 <= 1500 ms",
    );
    row(
        "a sixth node joins: roles moved",
        &mut moves,
        &format!("<= {aim_moves}"),
    );
    row(
        "a sixth node joins: of those, moved to the newcomer",
        &mut to_new,
        "",
    );
    row(
        "a sixth node joins: largest load after",
        &mut max_load,
        &format!("<= {aim_load:.1}"),
    );
    row("a sixth node joins: until settled (ms)", &mut join_ms, "");
    row("cold start until settled (ms)", &mut cold, "");
    if !steady.is_empty() {
        let k = steady.len() as f64;
        let mean = |f: &dyn Fn(&(Rates, Rates)) -> f64| steady.iter().map(f).sum::<f64>() / k;
        println!(
            "\nsteady state, 5 nodes, sent per second summed over the nodes ({} windows of {} s each):\n",
            steady.len(),
            a.window.as_secs()
        );
        println!("| | messages/s | body bytes/s | wire bytes/s |");
        println!("|---|---|---|---|");
        println!(
            "| {} roles | {:.0} | {:.0} | {:.0} |",
            a.roles,
            mean(&|s| s.0.messages),
            mean(&|s| s.0.bytes),
            mean(&|s| s.0.wire)
        );
        println!(
            "| no roles | {:.0} | {:.0} | {:.0} |",
            mean(&|s| s.1.messages),
            mean(&|s| s.1.bytes),
            mean(&|s| s.1.wire)
        );
    }
    if !all.overlaps.is_empty() || negative > 0 {
        for o in &all.overlaps {
            println!("{o}");
        }
        std::process::exit(1);
    }
    if ok == 0 {
        std::process::exit(2);
    }
}

/// Real sockets and processes only: nothing to run under the madsim simulator.
#[cfg(madsim)]
fn main() {}
