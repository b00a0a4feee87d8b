//! Recovery trials with real `cluster-node` processes on 127.0.0.1 (issue 9): form a
//! fleet, SIGKILL the primary and some followers at once, restart them at the same
//! addresses, and time the way back to an agreed primary while every node's status
//! endpoint is sampled for two primaries at once.
//!
//! Shared by `examples/bench_recovery.rs` (the benchmark) and
//! `tests/recovery_processes.rs` (the CI-sized test), each of which includes this file
//! with `#[path]`.
//!
//! # The overlap rule
//!
//! Every node is polled by its own task, one request about every millisecond. A status
//! answer is judged by the node at some unknown instant `t` between the moment the
//! request was sent (`sent`) and the moment the answer was read (`recv`), all on this
//! host's monotonic clock, which the node processes share.
//!
//! A *run* is a maximal sequence of consecutive answers of one process (one node
//! index and one incarnation: a restart starts a new one) that all say
//! `role: Primary` in the same term; a failed or timed-out request, an answer of
//! another role or of another term ends it. A run from answer `f` to answer `l` is
//! taken to prove its process primary throughout `[t_f, t_l]`. That is sound for
//! telling overlaps: a process answering Primary in term T at `t_f` and `t_l` while
//! another process was primary at some instant in between breaks the rule that
//! primaries follow each other in term order (whichever of the two terms is lower, its
//! primary held a lease while or after the higher term's primary held one), so any
//! overlap found this way is a real safety violation, never an artefact.
//!
//! Two runs `A` and `B` of different processes overlap *for certain* when every choice
//! of the unknown instants gives intersecting intervals: `A` starts no later than `B`
//! ends and `B` starts no later than `A` ends, even with each start taken as late
//! (`recv` of the first answer) and each end as early (`sent` of the last answer) as
//! possible. Their **gap** is therefore
//!
//! ```text
//! gap(A, B) = max(A.first.recv - B.last.sent, B.first.recv - A.last.sent)
//! ```
//!
//! For `B` after `A` it is the upper bound on the time without a primary between them
//! (`B.first.recv - A.last.sent`, the handover gap of `bench_failover`); a negative gap
//! is an overlap that certainly happened, and `-gap` is the least time both were
//! primary. Only negative gaps are reported as overlaps: overlaps shorter than the
//! sampling uncertainty (a request's round trip) go unseen, none is invented.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One recovery scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// Its name on the command line and in the table.
    pub name: &'static str,
    /// Fleet size.
    pub nodes: usize,
    /// How many processes are SIGKILLed at once: the primary and `lose - 1` followers.
    pub lose: usize,
    /// Whether every process runs with `--data-dir` (kept across its restart).
    pub data_dir: bool,
}

/// Every scenario, in the order the benchmark runs them.
pub const CASES: &[Case] = &[
    Case {
        name: "3-lose-2",
        nodes: 3,
        lose: 2,
        data_dir: false,
    },
    Case {
        name: "3-lose-2+data-dir",
        nodes: 3,
        lose: 2,
        data_dir: true,
    },
    Case {
        name: "5-lose-3",
        nodes: 5,
        lose: 3,
        data_dir: false,
    },
    Case {
        name: "5-lose-3+data-dir",
        nodes: 5,
        lose: 3,
        data_dir: true,
    },
    Case {
        name: "whole-fleet",
        nodes: 3,
        lose: 3,
        data_dir: false,
    },
    Case {
        name: "whole-fleet+data-dir",
        nodes: 3,
        lose: 3,
        data_dir: true,
    },
];

/// The case called `name`.
pub fn case(name: &str) -> Option<Case> {
    CASES.iter().copied().find(|c| c.name == name)
}

/// The cases a filter selects: for each pattern, the case named exactly so if there is
/// one, else every case whose name contains it. No pattern selects every case.
pub fn select(patterns: &[String]) -> Vec<Case> {
    if patterns.is_empty() {
        return CASES.to_vec();
    }
    CASES
        .iter()
        .copied()
        .filter(|c| {
            patterns.iter().any(|p| {
                if case(p).is_some() {
                    c.name == p
                } else {
                    c.name.contains(p.as_str())
                }
            })
        })
        .collect()
}

/// How trials run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `cluster-node` binary.
    pub bin: PathBuf,
    /// `--fast` timings (`Config::fast_test`) instead of `Config::datacenter`.
    pub fast: bool,
    /// How long the fresh fleet may take to agree on a primary with every node a voter.
    pub form_timeout: Duration,
    /// How long after the last restart the fleet may take to agree on a primary; a
    /// trial that takes longer has failed.
    pub recover_timeout: Duration,
    /// The pause between two status requests of one sampler.
    pub sample_gap: Duration,
    /// How long the samplers keep going after the agreed primary, to catch an old
    /// primary that comes back.
    pub hold: Duration,
}

impl Settings {
    /// The defaults: 30 s to form and to recover, samples ~1 ms apart, 300 ms of hold.
    pub fn new(bin: PathBuf, fast: bool) -> Settings {
        Settings {
            bin,
            fast,
            form_timeout: Duration::from_secs(30),
            recover_timeout: Duration::from_secs(30),
            sample_gap: Duration::from_millis(1),
            hold: Duration::from_millis(300),
        }
    }
}

/// What one trial measured.
#[derive(Clone, Debug)]
pub struct Trial {
    /// The time from the last restart to the agreed primary, or why there was none.
    pub recovery: Result<Duration, String>,
    /// Pairs of primary runs that certainly overlapped (negative gap), in ms of
    /// certain overlap.
    pub overlaps: Vec<f64>,
    /// The smallest gap between primary runs of two processes, ms (negative: overlap).
    pub min_gap_ms: Option<f64>,
    /// Status answers the samplers got.
    pub answers: usize,
    /// Status requests of the samplers that failed (refused while a node was down,
    /// timed out).
    pub failed_requests: usize,
    /// The trial's work directory (logs, data dirs), kept when the trial failed.
    pub kept_dir: Option<PathBuf>,
}

impl Trial {
    /// Whether the fleet recovered and no overlap was seen.
    pub fn ok(&self) -> bool {
        self.recovery.is_ok() && self.overlaps.is_empty()
    }
}

/// A node's status answer, reduced to what the trials judge.
#[derive(Clone, Debug)]
pub struct View {
    /// `role` is `Primary` (the node holds a valid lease at the instant it answered).
    pub primary: bool,
    /// The role as reported.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The address of the primary it knows of.
    pub primary_addr: Option<String>,
    /// The committed members that are voters.
    pub voters: usize,
}

/// `GET /cluster/v1/status` of `addr`, or `None` if it fails within `timeout`.
pub async fn status(addr: SocketAddr, timeout: Duration) -> Option<View> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req =
            format!("GET /cluster/v1/status HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out);
        let v: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()?;
        let role = v["role"].as_str()?.to_owned();
        Some(View {
            primary: role == "Primary",
            role,
            term: v["term"].as_u64()?,
            primary_addr: v["primary"]["addr"].as_str().map(str::to_owned),
            voters: v["members"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["voter"] == true).count()),
        })
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}

/// The status of every node, in order.
async fn views(addrs: &[SocketAddr]) -> Vec<Option<View>> {
    let mut v = Vec::with_capacity(addrs.len());
    for a in addrs {
        v.push(status(*a, Duration::from_millis(300)).await);
    }
    v
}

/// The agreed primary: every node answered, exactly one says `Primary`, and every node
/// names that one's address as the primary. `voters`: also require that every node
/// counts that many voters.
fn agreed(addrs: &[SocketAddr], views: &[Option<View>], voters: Option<usize>) -> Option<usize> {
    let views: Vec<&View> = views.iter().map(Option::as_ref).collect::<Option<_>>()?;
    let mut prim = (0..views.len()).filter(|&i| views[i].primary);
    let p = prim.next()?;
    if prim.next().is_some() {
        return None;
    }
    let pa = addrs[p].to_string();
    let named = views
        .iter()
        .all(|v| v.primary_addr.as_deref() == Some(pa.as_str()));
    let counted = voters.is_none_or(|n| views.iter().all(|v| v.voters == n));
    (named && counted).then_some(p)
}

/// One line per node: what it said last.
fn describe(addrs: &[SocketAddr], views: &[Option<View>]) -> String {
    addrs
        .iter()
        .zip(views)
        .map(|(a, v)| match v {
            Some(v) => format!(
                "{a}: {} term {} primary {} voters {}",
                v.role,
                v.term,
                v.primary_addr.as_deref().unwrap_or("-"),
                v.voters
            ),
            None => format!("{a}: no answer"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Free loopback addresses (bound, then released).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("local addr"))
        .collect()
}

/// A fresh work directory under the system's temporary directory.
fn work_dir(case: &Case) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "cluster-mode-recovery-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        case.name.replace('+', "-")
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the work directory");
    d
}

/// The fleet's processes, SIGKILLed on drop; the work directory is removed on drop
/// unless `keep` is set.
struct Fleet {
    addrs: Vec<SocketAddr>,
    peers: String,
    dir: PathBuf,
    data_dirs: Option<Vec<PathBuf>>,
    fast: bool,
    bin: PathBuf,
    children: Vec<Option<Child>>,
    /// Per node, how many processes were started at its address so far; the samplers
    /// read it to tell one process's answers from its successor's.
    incarnation: Arc<Vec<AtomicU32>>,
    keep: bool,
}

impl Fleet {
    /// Starts `case.nodes` processes on free loopback ports, each listing all of them.
    fn start(case: &Case, s: &Settings) -> Fleet {
        let addrs = free_addrs(case.nodes);
        let dir = work_dir(case);
        let data_dirs = case.data_dir.then(|| {
            (0..case.nodes)
                .map(|i| {
                    let d = dir.join(format!("data{i}"));
                    std::fs::create_dir_all(&d).expect("create a data dir");
                    d
                })
                .collect()
        });
        let mut f = Fleet {
            peers: addrs
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(","),
            addrs,
            dir,
            data_dirs,
            fast: s.fast,
            bin: s.bin.clone(),
            children: (0..case.nodes).map(|_| None).collect(),
            incarnation: Arc::new((0..case.nodes).map(|_| AtomicU32::new(0)).collect()),
            keep: false,
        };
        for i in 0..case.nodes {
            f.spawn(i);
        }
        f
    }

    /// The log file of node `i`'s current process (stdout and stderr).
    fn log(&self, i: usize) -> PathBuf {
        let run = self.incarnation[i].load(Ordering::SeqCst);
        self.dir.join(format!("node{i}.run{run}.log"))
    }

    /// Starts a process for node `i` at its address (and with its data dir, if any).
    fn spawn(&mut self, i: usize) {
        let log = std::fs::File::create(self.log(i)).expect("create a log file");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--listen")
            .arg(self.addrs[i].to_string())
            .arg("--peers")
            .arg(&self.peers);
        if self.fast {
            cmd.arg("--fast");
        }
        if let Some(d) = &self.data_dirs {
            cmd.arg("--data-dir").arg(&d[i]);
        }
        // The flag alone decides: the binary also reads the directory from this variable.
        let child = cmd
            .env_remove("CLUSTER_MODE_DATA_DIR")
            .env("RUST_LOG", "cluster_mode=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.children[i] = Some(child);
    }

    /// SIGKILLs the processes of `nodes`, all signals first, then reaps them; each
    /// node's next answers belong to a new incarnation.
    fn kill(&mut self, nodes: &[usize]) {
        for &i in nodes {
            if let Some(c) = self.children[i].as_mut() {
                let _ = c.kill();
            }
        }
        for &i in nodes {
            if let Some(mut c) = self.children[i].take() {
                let _ = c.wait();
            }
            self.incarnation[i].fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A process that has exited although it was not killed: which, how, and the end
    /// of its log.
    fn exited(&mut self) -> Option<String> {
        for i in 0..self.children.len() {
            let Some(c) = self.children[i].as_mut() else {
                continue;
            };
            if let Ok(Some(st)) = c.try_wait() {
                let log = std::fs::read_to_string(self.log(i)).unwrap_or_default();
                let mut tail: Vec<&str> = log
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .rev()
                    .take(4)
                    .collect();
                tail.reverse();
                return Some(format!(
                    "node {i} ({}) exited ({st}): {}",
                    self.addrs[i],
                    tail.join(" | ")
                ));
            }
        }
        None
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits until the fleet agrees on a primary (every node a voter when `voters`);
/// returns its index and the instant the agreeing round ended, or why not.
async fn wait_agreed(
    fleet: &mut Fleet,
    voters: Option<usize>,
    within: Duration,
) -> Result<(usize, Instant), String> {
    let start = Instant::now();
    loop {
        if let Some(why) = fleet.exited() {
            return Err(why);
        }
        let last = views(&fleet.addrs).await;
        if let Some(p) = agreed(&fleet.addrs, &last, voters) {
            return Ok((p, Instant::now()));
        }
        if start.elapsed() > within {
            return Err(format!(
                "no agreed primary within {within:?}: {}",
                describe(&fleet.addrs, &last)
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One status request of a sampler.
#[derive(Clone, Copy, Debug)]
struct Sample {
    node: usize,
    incarnation: u32,
    sent: Instant,
    recv: Instant,
    /// The answer: `Some(Some(term))` primary in `term`, `Some(None)` another role,
    /// `None` no answer.
    answer: Option<Option<u64>>,
}

/// Starts one sampler per node, each polling its node until `stop` is set.
fn start_samplers(
    fleet: &Fleet,
    gap: Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Sample>>> {
    fleet
        .addrs
        .iter()
        .copied()
        .enumerate()
        .map(|(node, addr)| {
            let stop = stop.clone();
            let inc = fleet.incarnation.clone();
            tokio::spawn(async move {
                let mut v = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let incarnation = inc[node].load(Ordering::SeqCst);
                    let sent = Instant::now();
                    let answer = status(addr, Duration::from_millis(300))
                        .await
                        .map(|s| s.primary.then_some(s.term));
                    v.push(Sample {
                        node,
                        incarnation,
                        sent,
                        recv: Instant::now(),
                        answer,
                    });
                    tokio::time::sleep(gap).await;
                }
                v
            })
        })
        .collect()
}

/// A run of primary answers of one process (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Run {
    process: (usize, u32),
    first: (Instant, Instant),
    last: (Instant, Instant),
}

/// The primary runs in one sampler's samples (in the order they were taken).
fn runs(samples: &[Sample]) -> Vec<Run> {
    let mut out = Vec::new();
    let mut cur: Option<(Run, u64)> = None;
    for s in samples {
        let process = (s.node, s.incarnation);
        match (s.answer, cur.as_mut()) {
            (Some(Some(term)), Some((run, t))) if run.process == process && *t == term => {
                run.last = (s.sent, s.recv);
            }
            (Some(Some(term)), _) => {
                out.extend(cur.take().map(|(r, _)| r));
                let at = (s.sent, s.recv);
                cur = Some((
                    Run {
                        process,
                        first: at,
                        last: at,
                    },
                    term,
                ));
            }
            _ => out.extend(cur.take().map(|(r, _)| r)),
        }
    }
    out.extend(cur.map(|(r, _)| r));
    out
}

/// `a - b` in milliseconds, signed.
fn ms_between(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64() * 1e3
    } else {
        -(b - a).as_secs_f64() * 1e3
    }
}

/// The gap between two runs of different processes (see the module docs): negative
/// when they certainly overlapped.
fn gap_ms(a: &Run, b: &Run) -> f64 {
    ms_between(a.first.1, b.last.0).max(ms_between(b.first.1, a.last.0))
}

/// The gaps between every two runs of different processes.
fn gaps(runs: &[Run]) -> Vec<f64> {
    let mut v = Vec::new();
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            if a.process != b.process {
                v.push(gap_ms(a, b));
            }
        }
    }
    v
}

/// Runs one trial of `case`: start the fleet, wait for a primary that every node
/// follows with every node a voter, SIGKILL the primary and `lose - 1` followers at
/// once, restart them at the same addresses (with the same data dirs, if the case has
/// them), and time from the last restart to the agreed primary, sampling every node
/// throughout for overlapping primaries.
pub async fn run_trial(case: &Case, s: &Settings) -> Trial {
    let mut fleet = Fleet::start(case, s);
    let mut trial = Trial {
        recovery: Err(String::new()),
        overlaps: Vec::new(),
        min_gap_ms: None,
        answers: 0,
        failed_requests: 0,
        kept_dir: None,
    };
    let first = match wait_agreed(&mut fleet, Some(case.nodes), s.form_timeout).await {
        Ok((p, _)) => p,
        Err(why) => {
            trial.recovery = Err(format!("the fleet never formed: {why}"));
            fleet.keep = true;
            trial.kept_dir = Some(fleet.dir.clone());
            return trial;
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let samplers = start_samplers(&fleet, s.sample_gap, &stop);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let victims: Vec<usize> = (0..case.lose).map(|j| (first + j) % case.nodes).collect();
    fleet.kill(&victims);
    for &i in &victims {
        fleet.spawn(i);
    }
    let restarted = Instant::now();
    trial.recovery = wait_agreed(&mut fleet, None, s.recover_timeout)
        .await
        .map(|(_, at)| at - restarted);
    if trial.recovery.is_ok() {
        tokio::time::sleep(s.hold).await;
    }
    stop.store(true, Ordering::SeqCst);

    let mut all = Vec::new();
    for t in samplers {
        let samples = t.await.expect("a sampler panicked");
        trial.answers += samples.iter().filter(|x| x.answer.is_some()).count();
        trial.failed_requests += samples.iter().filter(|x| x.answer.is_none()).count();
        all.extend(runs(&samples));
    }
    let gaps = gaps(&all);
    trial.min_gap_ms = gaps.iter().copied().reduce(f64::min);
    trial.overlaps = gaps.into_iter().filter(|g| *g < 0.0).map(|g| -g).collect();
    if !trial.ok() {
        fleet.keep = true;
        trial.kept_dir = Some(fleet.dir.clone());
    }
    trial
}

/// The `p`th percentile (nearest rank) of `v`, which it sorts.
pub fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let last = v.len().checked_sub(1)?;
    let i = ((p / 100.0) * last as f64).round() as usize;
    Some(v[i.min(last)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn run(base: Instant, node: usize, first: (u64, u64), last: (u64, u64)) -> Run {
        Run {
            process: (node, 0),
            first: (at(base, first.0), at(base, first.1)),
            last: (at(base, last.0), at(base, last.1)),
        }
    }

    #[test]
    fn gap_rule() {
        let t = Instant::now();
        // B's first answer came back 5 ms after A's last request went out: gap 5.
        let a = run(t, 0, (0, 1), (10, 11));
        let b = run(t, 1, (14, 15), (30, 31));
        assert_eq!(gap_ms(&a, &b), 5.0);
        assert_eq!(gap_ms(&b, &a), 5.0);
        // Answer windows that merely intersect are no proof of an overlap.
        let c = run(t, 1, (10, 12), (10, 12));
        assert!(gap_ms(&a, &c) > 0.0);
        // B primary from at most 5 until at least 20, A from at most 1 until at least
        // 10: certainly both between 5 and 10.
        let d = run(t, 1, (4, 5), (20, 21));
        assert_eq!(gap_ms(&a, &d), -5.0);
    }

    #[test]
    fn runs_end_on_anything_but_the_same_primary() {
        let t = Instant::now();
        let s = |ms: u64, incarnation: u32, answer: Option<Option<u64>>| Sample {
            node: 0,
            incarnation,
            sent: at(t, ms),
            recv: at(t, ms + 1),
            answer,
        };
        let samples = [
            s(0, 0, Some(Some(3))),
            s(2, 0, Some(Some(3))),
            s(4, 0, Some(Some(4))), // another term
            s(6, 0, None),          // no answer
            s(8, 0, Some(Some(4))),
            s(10, 0, Some(None)), // another role
            s(12, 0, Some(Some(4))),
            s(14, 1, Some(Some(4))), // the next process
        ];
        let r = runs(&samples);
        let spans: Vec<_> = r
            .iter()
            .map(|r| (r.process.1, r.first.0 - t, r.last.0 - t))
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(
            spans,
            [
                (0, ms(0), ms(2)),
                (0, ms(4), ms(4)),
                (0, ms(8), ms(8)),
                (0, ms(12), ms(12)),
                (1, ms(14), ms(14)),
            ]
        );
    }
}
