//! Linearizability of the key-value store under faults (issue 12, P14): random
//! schedules on the in-memory network (partitions, pauses, crashes and restarts with
//! data, loss, duplication, clock drift, primary changes) with clients that read and
//! write through every member, every operation recorded with its real-time interval
//! and outcome, and the history judged by `cluster-mode-lincheck` (Wing-Gong-Lowe per
//! key). The protocol invariants of the other schedule tests are checked after every
//! event as well.
//!
//! Each case is one `u64` seed. A failure prints the seed, the violating
//! sub-history and the command that replays it:
//!
//! ```text
//! HISTORY_SEED=<seed> cargo test -p cluster-mode-core --test store_histories replay -- --ignored --nocapture
//! ```
//!
//! The fixed sweep covers seeds `0..60`; `HISTORY_SEEDS=N` widens it and
//! `HISTORY_FROM=F` starts it at F:
//!
//! ```text
//! HISTORY_FROM=0 HISTORY_SEEDS=10000 cargo test --release -p cluster-mode-core --test store_histories fixed -- --nocapture
//! ```

mod common;

use cluster_mode_core::store::{
    ClientId, Consistency, Read, ReadAnswer, StoreAnswer, StoreError, StoreRequest, Write, WriteOp,
    WriteOutcome,
};
use cluster_mode_core::{Config, Input};
use cluster_mode_lincheck::{check, History, Op, Outcome};
use common::net::Rng;
use common::{Net, NetConfig};
use std::collections::BTreeMap;
use std::time::Duration;

/// Faults happen in [0, FAULT_WINDOW_MS); then the network heals.
const FAULT_WINDOW_MS: u64 = 2_500;
/// Clients stop starting operations at this time; the run ends when all are done.
const CLIENTS_UNTIL_MS: u64 = 3_000;
/// How long a client retries one operation (the shell's `StoreOptions::retry_for`).
const RETRY_FOR_MS: u64 = 1_000;
/// Seeds of the fixed sweep (CI).
const FIXED_SEEDS: u64 = 60;
const KEYS: [&str; 3] = ["a", "b", "c"];

/// What a client is doing.
struct Pending {
    /// The current attempt's request id.
    id: u64,
    request: StoreRequest,
    /// The operation as recorded (None: a registration, not recorded).
    op: Option<Op>,
    invoked_ns: u64,
    give_up_ms: u64,
    /// Some attempt may have been appended.
    maybe: bool,
    /// Retry at this time (after a refusal), instead of waiting for an answer.
    retry_at_ms: Option<u64>,
}

struct Client {
    slot: usize,
    /// Only reads (with no session): a reader is idle, ready to ask, far more often
    /// than a writer, which waits for commits.
    reader: bool,
    session: Option<ClientId>,
    next_seq: u64,
    /// The last revision this client saw for each key (its compare-and-swap guess).
    seen: BTreeMap<&'static str, u64>,
    pending: Option<Pending>,
    count: u64,
}

struct World {
    net: Net,
    rng: Rng,
    clients: Vec<Client>,
    history: History,
    next_id: u64,
    /// Answers not yet taken, by request id.
    answers: BTreeMap<u64, Result<StoreAnswer, StoreError>>,
    taken: usize,
}

impl World {
    fn ask(&mut self, slot: usize, request: StoreRequest) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.net.input(slot, Input::Store { id, request });
        id
    }

    fn collect_answers(&mut self) {
        for r in &self.net.store_replies[self.taken..] {
            self.answers.insert(r.id, r.result.clone());
        }
        self.taken = self.net.store_replies.len();
    }

    fn new_op(&mut self, c: usize) -> (StoreRequest, Option<Op>) {
        let key = KEYS[self.rng.range(0, KEYS.len() as u64) as usize];
        let client = &mut self.clients[c];
        if client.reader {
            return read_of(&mut self.rng, key);
        }
        let Some(session) = client.session else {
            return (StoreRequest::Register, None);
        };
        client.count += 1;
        let value = format!("c{c}-{}", client.count).into_bytes();
        let kb = key.as_bytes().to_vec();
        let write = |client: &mut Client, op: WriteOp| {
            let seq = client.next_seq;
            client.next_seq += 1;
            StoreRequest::Write(Write {
                client: session,
                seq,
                // One operation at a time: every earlier write was answered.
                acked_below: seq,
                op,
            })
        };
        match self.rng.range(0, 20) {
            0..=7 => {
                let op = WriteOp::Put {
                    key: key.into(),
                    value: value.clone(),
                };
                (write(client, op), Some(Op::Put { key: kb, value }))
            }
            8..=13 => read_of(&mut self.rng, key),
            14..=16 => {
                let expected = client.seen.get(key).copied().unwrap_or(0);
                let op = WriteOp::CompareAndSwap {
                    key: key.into(),
                    expected,
                    value: value.clone(),
                };
                let rec = Op::CompareAndSwap {
                    key: kb,
                    expected_revision: expected,
                    value,
                };
                (write(client, op), Some(rec))
            }
            _ => {
                let op = WriteOp::Delete { key: key.into() };
                (write(client, op), Some(Op::Delete { key: kb }))
            }
        }
    }

    /// One millisecond of client work: take answers, retry, start operations.
    fn step_clients(&mut self) {
        self.collect_answers();
        let now_ms = self.net.now / 1_000_000;
        for c in 0..self.clients.len() {
            if let Some(p) = self.clients[c].pending.take() {
                let next = self.advance(c, p, now_ms);
                self.clients[c].pending = next;
            }
            if self.clients[c].pending.is_none() && now_ms < CLIENTS_UNTIL_MS {
                let (request, op) = self.new_op(c);
                let slot = self.clients[c].slot;
                let id = self.ask(slot, request.clone());
                self.clients[c].pending = Some(Pending {
                    id,
                    request,
                    op,
                    invoked_ns: self.net.now,
                    give_up_ms: now_ms + RETRY_FOR_MS,
                    maybe: false,
                    retry_at_ms: None,
                });
            }
        }
        self.collect_answers();
    }

    /// Moves one pending operation on; `None` once it ended (and was recorded).
    fn advance(&mut self, c: usize, mut p: Pending, now_ms: u64) -> Option<Pending> {
        if let Some(at) = p.retry_at_ms {
            if now_ms < at {
                return Some(p);
            }
            p.retry_at_ms = None;
            let slot = self.clients[c].slot;
            p.id = self.ask(slot, p.request.clone());
            return Some(p);
        }
        let Some(answer) = self.answers.remove(&p.id) else {
            if now_ms >= p.give_up_ms {
                // No answer at all (the member crashed or was cut off): a write may
                // have been appended before.
                let maybe = p.maybe || matches!(p.request, StoreRequest::Write(_));
                self.finish(c, p, None, maybe);
                return None;
            }
            return Some(p);
        };
        match answer {
            Ok(a) => {
                self.finish(c, p, Some(a), false);
                None
            }
            Err(e @ (StoreError::NoPrimary | StoreError::MaybeCommitted)) => {
                p.maybe |= e == StoreError::MaybeCommitted;
                if now_ms >= p.give_up_ms {
                    let maybe = p.maybe;
                    self.finish(c, p, None, maybe);
                    return None;
                }
                p.retry_at_ms = Some(now_ms + 5);
                Some(p)
            }
            Err(StoreError::SessionExpired) => {
                let maybe = p.maybe;
                self.clients[c].session = None;
                self.finish(c, p, None, maybe);
                None
            }
            Err(e) => panic!("client {c}: unexpected error {e:?} for {:?}", p.request),
        }
    }

    fn finish(&mut self, c: usize, p: Pending, answer: Option<StoreAnswer>, maybe: bool) {
        let client = &mut self.clients[c];
        let Some(op) = p.op else {
            if let Some(StoreAnswer::Registered(id)) = answer {
                client.session = Some(id);
                client.next_seq = 1;
            }
            return;
        };
        let key = KEYS
            .iter()
            .find(|k| k.as_bytes() == op.key())
            .copied()
            .unwrap_or("a");
        let outcome = match answer {
            None if maybe => Outcome::Unknown,
            None => Outcome::Failed,
            Some(StoreAnswer::Written(o)) => match o {
                WriteOutcome::Put { revision } => Outcome::Put { revision },
                WriteOutcome::Deleted { revision, existed } => {
                    Outcome::Deleted { revision, existed }
                }
                WriteOutcome::Swapped { revision } => Outcome::Swapped { revision },
                WriteOutcome::Mismatch { current } => Outcome::Mismatch {
                    current_revision: current,
                },
                WriteOutcome::Full => panic!("a three-key store is never full"),
            },
            Some(StoreAnswer::Read {
                answer: ReadAnswer::Get(v),
                ..
            }) => match v {
                Some(v) => Outcome::Found {
                    value: v.value,
                    mod_revision: v.revision,
                },
                None => Outcome::Absent,
            },
            Some(other) => panic!("client {c}: unexpected answer {other:?}"),
        };
        let seen = match &outcome {
            Outcome::Put { revision } | Outcome::Swapped { revision } => Some(*revision),
            Outcome::Found { mod_revision, .. } => Some(*mod_revision),
            Outcome::Mismatch { current_revision } => Some(*current_revision),
            Outcome::Absent | Outcome::Deleted { .. } => Some(0),
            _ => None,
        };
        if let Some(r) = seen {
            client.seen.insert(key, r);
        }
        let ret = if outcome == Outcome::Unknown {
            u64::MAX
        } else {
            self.net.now
        };
        self.history.push(c as u64, p.invoked_ns, ret, op, outcome);
    }
}

/// A linearizable read of `key` (or, three times in ten, a lease read).
fn read_of(rng: &mut Rng, key: &str) -> (StoreRequest, Option<Op>) {
    let consistency = if rng.chance(300_000) {
        Consistency::Lease
    } else {
        Consistency::Linearizable
    };
    let req = StoreRequest::Read {
        read: Read::Get { key: key.into() },
        consistency,
    };
    (
        req,
        Some(Op::Get {
            key: key.as_bytes().to_vec(),
        }),
    )
}

fn build(seed: u64, trace: bool) -> (World, Vec<(u64, Fault)>) {
    let mut rng = Rng::new(seed);
    let mut cfg = Config::fast_test();
    let n = rng.range(3, 6) as usize;
    cfg.min_nodes = std::num::NonZeroUsize::new(n).expect("n > 0");
    // Odd seeds keep a short log and send snapshots in 64-byte pieces: a follower
    // a little behind then gets the whole store, in pieces, under the same faults.
    // From the seed, not drawn, so that the even seeds run as before.
    if seed % 2 == 1 {
        cfg.store_log_entries = 32;
        cfg.snapshot_chunk_len = 64;
    }
    let netcfg = NetConfig {
        min_latency: Duration::from_millis(1),
        max_latency: Duration::from_millis(rng.range(2, 12)),
        loss_ppm: rng.range(0, 30_000),
        dup_ppm: rng.range(0, 20_000),
        discovery_interval: Duration::from_millis(100),
    };
    let mut net = Net::new(seed, cfg.clone(), netcfg);
    net.record_trace = trace;
    net.random_drift_ppm = cfg.max_clock_drift_ppm as i64;
    // Restarts keep the node's data (P12): crashes of a minority lose nothing.
    net.durable = true;
    for _ in 0..n {
        net.add_node();
    }
    let clients = (0..rng.range(3, 9) as usize)
        .map(|i| Client {
            slot: i % n,
            reader: i % 3 == 2,
            session: None,
            next_seq: 1,
            seen: BTreeMap::new(),
            pending: None,
            count: 0,
        })
        .collect();
    let mut faults: Vec<(u64, Fault)> = (0..rng.range(1, 8))
        .map(|_| {
            let at = rng.range(300, FAULT_WINDOW_MS);
            let slot = rng.range(0, n as u64) as usize;
            let f = match rng.range(0, 6) {
                0 => Fault::CrashRestart(slot, rng.range(50, 600)),
                1 => Fault::Isolate(slot),
                2 => Fault::Split(rng.range(1, n as u64) as usize),
                3 => Fault::Heal,
                4 => Fault::Pause(slot, rng.range(50, 600)),
                _ => Fault::PrimaryPause(rng.range(50, 400)),
            };
            (at, f)
        })
        .collect();
    faults.sort_by_key(|(at, _)| *at);
    let world = World {
        net,
        rng: Rng::new(seed ^ 0x5eed_c11e),
        clients,
        history: History::new(),
        next_id: 0,
        answers: BTreeMap::new(),
        taken: 0,
    };
    (world, faults)
}

#[derive(Debug)]
enum Fault {
    /// Crash a node, restart it with its data this many ms later.
    CrashRestart(usize, u64),
    Isolate(usize),
    Split(usize),
    Heal,
    /// Pause a node for this many ms.
    Pause(usize, u64),
    /// Pause whoever is primary for this many ms.
    PrimaryPause(u64),
}

fn run(seed: u64, trace: bool) -> (World, Vec<String>) {
    let (mut w, faults) = build(seed, trace);
    let mut log = Vec::new();
    let mut faults = faults.into_iter().peekable();
    // (time ms, slot, restart?) : resumes and restarts due.
    let mut due: Vec<(u64, usize, bool)> = Vec::new();
    let mut ms = 0;
    loop {
        while let Some((at, _)) = faults.peek() {
            if *at > ms {
                break;
            }
            let (at, f) = faults.next().expect("peeked");
            log.push(format!("{at}ms {f:?}"));
            let count = w.net.nodes.len();
            match f {
                Fault::CrashRestart(s, d) if w.net.nodes[s].alive => {
                    w.net.crash(s);
                    due.push((at + d, s, true));
                }
                Fault::CrashRestart(..) => {}
                Fault::Isolate(s) => w.net.isolate(s),
                Fault::Split(k) => {
                    let a: Vec<usize> = (0..k).collect();
                    let b: Vec<usize> = (k..count).collect();
                    w.net.partition(&[&a, &b]);
                }
                Fault::Heal => w.net.heal(),
                Fault::Pause(s, d) if !w.net.nodes[s].paused && w.net.nodes[s].alive => {
                    w.net.pause(s);
                    due.push((at + d, s, false));
                }
                Fault::Pause(..) => {}
                Fault::PrimaryPause(d) => {
                    if let Some(p) = w.net.the_primary().filter(|p| !w.net.nodes[*p].paused) {
                        w.net.pause(p);
                        due.push((at + d, p, false));
                    }
                }
            }
        }
        due.retain(|(at, s, restart)| {
            if *at > ms {
                return true;
            }
            if *restart {
                w.net.restart_with_data(*s);
            } else {
                w.net.resume(*s);
            }
            false
        });
        if ms == FAULT_WINDOW_MS {
            for (_, s, restart) in due.drain(..) {
                if restart {
                    w.net.restart_with_data(s);
                } else {
                    w.net.resume(s);
                }
            }
            w.net.heal();
            w.net.net.loss_ppm = 0;
            w.net.net.dup_ppm = 0;
        }
        w.step_clients();
        let busy = w.clients.iter().any(|c| c.pending.is_some());
        if ms >= CLIENTS_UNTIL_MS && !busy {
            break;
        }
        assert!(
            ms < CLIENTS_UNTIL_MS + 2 * RETRY_FOR_MS,
            "clients never finished"
        );
        ms += 1;
        w.net.run_until(ms);
    }
    (w, log)
}

/// Runs one seed; `Err` explains a violation with the replay command.
fn check_seed(seed: u64) -> Result<(usize, usize, u64), String> {
    let (w, log) = run(seed, false);
    if let Some(v) = w.net.checker.violations.first() {
        return Err(format!(
            "seed {seed}: protocol invariant broken: {v:?}\nfaults: {log:?}\n{}",
            replay_command(seed)
        ));
    }
    let ops = w.history.operations.len();
    let definite = w
        .history
        .operations
        .iter()
        .filter(|o| o.outcome.is_definite())
        .count();
    check(&w.history).map_err(|e| {
        format!(
            "seed {seed}: the store's history is not linearizable:\n{e}\nfaults: {log:?}\n{}",
            replay_command(seed)
        )
    })?;
    if std::env::var_os("HISTORY_VERBOSE").is_some() {
        let n = &w.net;
        println!(
            "seed {seed}: {} whole snapshots, {} pieces",
            n.snapshots, n.snapshot_pieces
        );
    }
    Ok((ops, definite, w.net.snapshot_pieces))
}

fn replay_command(seed: u64) -> String {
    format!(
        "replay: HISTORY_SEED={seed} cargo test -p cluster-mode-core --test store_histories replay -- --ignored --nocapture"
    )
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn fixed_seeds_give_linearizable_histories() {
    let from = env_u64("HISTORY_FROM").unwrap_or(0);
    let seeds = env_u64("HISTORY_SEEDS").unwrap_or(FIXED_SEEDS);
    let (mut ops, mut definite, mut pieces) = (0, 0, 0);
    for seed in from..from + seeds {
        match check_seed(seed) {
            Ok((o, d, p)) => {
                ops += o;
                definite += d;
                pieces += p;
            }
            Err(e) => panic!("{e}"),
        }
    }
    println!(
        "{seeds} seeds from {from}: {ops} operations ({definite} with a definite outcome), \
         {pieces} snapshot pieces delivered, all linearizable"
    );
    assert!(
        definite * 2 > ops,
        "most operations must complete: {definite} of {ops}"
    );
}

#[test]
#[ignore]
fn replay() {
    let seed = env_u64("HISTORY_SEED").expect("set HISTORY_SEED");
    let (w, log) = run(seed, true);
    println!("{}", w.net.trace_text());
    println!("faults: {log:?}");
    for o in &w.history.operations {
        println!("{o:?}");
    }
    match check_seed(seed) {
        Ok((ops, definite, pieces)) => {
            println!("seed {seed}: {ops} operations ({definite} definite, {pieces} snapshot pieces), linearizable")
        }
        Err(e) => panic!("{e}"),
    }
}
