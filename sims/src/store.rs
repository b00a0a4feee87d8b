//! Store clients (issue 12, P14) over the real driving loop: tasks that use the
//! shell's own store handle ([`SimCluster::store`], `Cluster::store_with`, with its
//! session and its retries) of the simulated nodes, record every operation with its
//! interval in global simulated time and its outcome, and hand the history to
//! `cluster-mode-lincheck` ([`StoreRecord::check`]).
//!
//! How an answer is recorded (as `core/tests/store_histories.rs` does for the core):
//!
//! | answer | write | read |
//! |---|---|---|
//! | `Ok` | its outcome (revision, existed, swapped or mismatch) | found (value, revision) or absent |
//! | `MaybeCommitted`, `SessionExpired` (an earlier attempt may have been applied), no answer within [`op_timeout`] (the node was killed or paused under the client) | unknown | left out |
//! | `NoPrimary`, `NotCommitted`, `Busy` | left out (it did not take effect) | left out |
//! | anything else (`Full`, `Invalid`, ...) | unknown, and a violation of the scenario | left out, and a violation |
//!
//! A client whose operation did not end definitely takes a new handle (a new session,
//! perhaps of a restarted process) before its next one.

use crate::checker::Violation;
use cluster_mode_core::store::{Consistency, StoreError};
use cluster_mode_core::{Config, SplitMix64};
use cluster_mode_lincheck::{check, History, Op, Outcome};
use cluster_mode_madsim::{CasOutcome, SimCluster, Store, StoreOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The keys every client uses: few keys, far below the store's size limit, and many
/// operations per key.
pub const KEYS: [&str; 3] = ["k0", "k1", "k2"];

/// The load the clients put on the store.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Clients that write (put, compare-and-swap, delete) and read, each through its
    /// own session.
    pub writers: usize,
    /// Clients that only read (get and single-key range): the first and every other
    /// one with lease reads only, the others with linearizable reads only.
    pub readers: usize,
    /// The handle's `StoreOptions::retry_for`: short, so that operations end during
    /// a failover and the next one starts.
    pub retry_for: Duration,
    /// The pause between a client's operations, a random number of ms in this range.
    pub think_ms: (u64, u64),
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            writers: 4,
            readers: 2,
            retry_for: Duration::from_millis(1_000),
            think_ms: (0, 30),
        }
    }
}

/// How long a client waits for one operation before it records it as unknown (a
/// write) or failed (a read): the handle's own bound (its retries, then one more
/// attempt of up to `store_request_timeout`) and a margin. Only a killed or paused
/// node keeps a client waiting that long.
pub fn op_timeout(cfg: &Config, load: &LoadOptions) -> Duration {
    load.retry_for + 2 * cfg.store_request_timeout + Duration::from_millis(500)
}

/// What the clients recorded.
#[derive(Clone, Debug, Default)]
pub struct StoreRecord {
    /// Every operation, with its interval in global simulated ns and its outcome.
    pub history: History,
    /// Answers the store must never give (an unexpected error kind).
    pub violations: Vec<Violation>,
    /// Operations that timed out in the client (no answer within [`op_timeout`]).
    pub timeouts: u64,
}

impl StoreRecord {
    /// A one-line summary: operations, how many ended definitely, unknown, failed.
    pub fn summary(&self) -> String {
        let ops = &self.history.operations;
        let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|o| f(&o.outcome)).count();
        let writes = ops
            .iter()
            .filter(|o| o.op.is_write() && o.outcome.is_definite())
            .count();
        format!(
            "{} operations: {} definite ({} writes), {} unknown, {} failed; {} timed out in the client",
            ops.len(),
            count(Outcome::is_definite),
            writes,
            count(|o| *o == Outcome::Unknown),
            count(|o| *o == Outcome::Failed),
            self.timeouts
        )
    }

    /// The scenario's store violations: unexpected answers, and the history judged by
    /// `cluster-mode-lincheck` (the violation shows the shortest sub-history that
    /// cannot be linearized). With `liveness`, the clients must also have completed
    /// at least one write and one read.
    pub fn check(&self, liveness: bool) -> Vec<Violation> {
        let mut out = self.violations.clone();
        let ops = &self.history.operations;
        if let Err(e) = check(&self.history) {
            let at_ns = e
                .violation()
                .and_then(|v| v.operations.iter().map(|(_, _, o)| o.invoke).min())
                .unwrap_or(0);
            out.push(Violation {
                at_ms: at_ns / 1_000_000,
                what: format!(
                    "the store's history is not linearizable ({}):\n    {}",
                    self.summary(),
                    e.to_string().trim_end().replace('\n', "\n    ")
                ),
            });
        }
        let done = |write: bool| {
            ops.iter()
                .any(|o| o.op.is_write() == write && o.outcome.is_definite())
        };
        if liveness && !(done(true) && done(false)) {
            out.push(Violation {
                at_ms: ops.iter().map(|o| o.invoke).max().unwrap_or(0) / 1_000_000,
                what: format!(
                    "the store clients completed no write or no read ({})",
                    self.summary()
                ),
            });
        }
        out
    }
}

#[derive(Default)]
struct LoadState {
    record: StoreRecord,
    running: usize,
    stop: bool,
}

/// Running store clients; [`StoreLoad::stop`] ends them and returns the record.
pub struct StoreLoad {
    state: Arc<Mutex<LoadState>>,
    timeout: Duration,
}

fn lock(s: &Mutex<LoadState>) -> std::sync::MutexGuard<'_, LoadState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl StoreLoad {
    /// Starts `load.writers + load.readers` clients, client `i` on `slots[i %
    /// slots.len()]` (moving to a running pod if that one is gone), each with its own
    /// deterministic random choices drawn from `seed`.
    pub fn start(c: &SimCluster, slots: &[usize], load: &LoadOptions, seed: u64) -> StoreLoad {
        let state = Arc::new(Mutex::new(LoadState::default()));
        let timeout = op_timeout(&c.config(), load);
        let mut seeds = SplitMix64::new(seed);
        for i in 0..load.writers + load.readers {
            let client = Client {
                c: c.clone(),
                id: i,
                reader: i >= load.writers,
                reader_index: i.checked_sub(load.writers),
                slot: slots.get(i % slots.len().max(1)).copied().unwrap_or(0),
                store: None,
                options: StoreOptions {
                    retry_for: load.retry_for,
                    ..StoreOptions::default()
                },
                rng: SplitMix64::new(seeds.next_u64()),
                seen: BTreeMap::new(),
                count: 0,
                think_ms: load.think_ms,
                timeout,
                state: state.clone(),
            };
            lock(&state).running += 1;
            madsim::task::spawn(client.run());
        }
        StoreLoad { state, timeout }
    }

    /// Lets every client finish its current operation (at most [`op_timeout`]), then
    /// returns what they recorded.
    pub async fn stop(self, c: &SimCluster) -> StoreRecord {
        lock(&self.state).stop = true;
        let limit = c.now_ns() + 2 * u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        while lock(&self.state).running > 0 {
            if c.now_ns() > limit {
                let at_ms = c.now_ns() / 1_000_000;
                let mut g = lock(&self.state);
                let what = format!("{} store client(s) never finished", g.running);
                g.record.violations.push(Violation { at_ms, what });
                break;
            }
            c.sleep_ms(10).await;
        }
        std::mem::take(&mut lock(&self.state).record)
    }
}

/// What a client did, before it is recorded.
enum Done {
    /// A definite outcome.
    Definite(Outcome),
    /// No definite outcome; `maybe`: a write that may have been applied.
    Indefinite { maybe: bool },
}

struct Client {
    c: SimCluster,
    id: usize,
    reader: bool,
    /// Which reader this is (`None`: a writer).
    reader_index: Option<usize>,
    slot: usize,
    /// The handle (session) in use; `None`: take a new one.
    store: Option<Store>,
    options: StoreOptions,
    rng: SplitMix64,
    /// The last revision this client saw of each key (its compare-and-swap guess).
    seen: BTreeMap<usize, u64>,
    count: u64,
    think_ms: (u64, u64),
    timeout: Duration,
    state: Arc<Mutex<LoadState>>,
}

impl Client {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    /// The handle to use: the current one, or a new session through this client's
    /// pod, or through a running pod if that one is not running.
    fn handle(&mut self) -> Option<Store> {
        if self.store.is_none() {
            self.store = self.c.store(self.slot, self.options.clone());
        }
        if self.store.is_none() {
            let running: Vec<usize> = self
                .c
                .slots()
                .iter()
                .enumerate()
                .filter(|(_, s)| s.alive && !s.left)
                .map(|(i, _)| i)
                .collect();
            if !running.is_empty() {
                self.slot = running[self.below(running.len() as u64) as usize];
                self.store = self.c.store(self.slot, self.options.clone());
            }
        }
        self.store.clone()
    }

    fn unexpected(&self, what: String) {
        let at_ms = self.c.now_ns() / 1_000_000;
        let what = format!("store client {} (via slot {}): {what}", self.id, self.slot);
        lock(&self.state)
            .record
            .violations
            .push(Violation { at_ms, what });
    }

    /// Records the outcome of a write that ended with `e`.
    fn write_error(&self, e: StoreError) -> Done {
        match e {
            StoreError::MaybeCommitted | StoreError::SessionExpired => {
                Done::Indefinite { maybe: true }
            }
            StoreError::NoPrimary | StoreError::NotCommitted(_) | StoreError::Busy => {
                Done::Indefinite { maybe: false }
            }
            e => {
                self.unexpected(format!("unexpected answer to a write: {e:?}"));
                Done::Indefinite { maybe: true }
            }
        }
    }

    fn read_error(&self, e: StoreError) -> Done {
        // `NotCommitted`: the primary refuses a member its committed configuration
        // does not hold (one being removed). Up to FINDINGS.md #17's fix a member
        // restarted with its data also answered so; it now answers `NoPrimary`.
        if !matches!(e, StoreError::NoPrimary | StoreError::NotCommitted(_)) {
            self.unexpected(format!("unexpected answer to a read: {e:?}"));
        }
        Done::Indefinite { maybe: false }
    }

    async fn timed<T>(&self, f: impl std::future::Future<Output = T>) -> Option<T> {
        madsim::time::timeout(self.timeout, f).await.ok()
    }

    async fn run(mut self) {
        loop {
            if lock(&self.state).stop {
                break;
            }
            let Some(store) = self.handle() else {
                self.c.sleep_ms(50).await;
                continue;
            };
            let k = self.below(KEYS.len() as u64) as usize;
            let key = KEYS[k];
            let kb = key.as_bytes().to_vec();
            // Readers keep one consistency each (the first and every other one lease,
            // the rest linearizable), so that a reader of the lease path is not held
            // up by a linearizable read waiting for a confirmation; writers mix them
            // (30% lease).
            let lease = match self.reader_index {
                Some(r) => r % 2 == 0,
                None => self.below(10) < 3,
            };
            let consistency = if lease {
                Consistency::Lease
            } else {
                Consistency::Linearizable
            };
            // Writers: 40% put, 15% compare-and-swap, 10% delete, 10% range, 25% get;
            // readers: 2/7 range, 5/7 get.
            let choice = if self.reader {
                13 + self.below(7)
            } else {
                self.below(20)
            };
            self.count += 1;
            let value = format!("c{}-{}", self.id, self.count).into_bytes();
            let invoke = self.c.now_ns();
            let (op, done) = match choice {
                0..=7 => {
                    let op = Op::Put {
                        key: kb,
                        value: value.clone(),
                    };
                    let done = match self.timed(store.put(key, value)).await {
                        Some(Ok(revision)) => Done::Definite(Outcome::Put { revision }),
                        Some(Err(e)) => self.write_error(e),
                        None => Done::Indefinite { maybe: true },
                    };
                    (op, done)
                }
                8..=10 => {
                    let expected = self.seen.get(&k).copied().unwrap_or(0);
                    let op = Op::CompareAndSwap {
                        key: kb,
                        expected_revision: expected,
                        value: value.clone(),
                    };
                    let r = self
                        .timed(store.compare_and_swap(key, expected, value))
                        .await;
                    let done = match r {
                        Some(Ok(CasOutcome::Swapped(revision))) => {
                            Done::Definite(Outcome::Swapped { revision })
                        }
                        Some(Ok(CasOutcome::Mismatch { current })) => {
                            Done::Definite(Outcome::Mismatch {
                                current_revision: current,
                            })
                        }
                        Some(Err(e)) => self.write_error(e),
                        None => Done::Indefinite { maybe: true },
                    };
                    (op, done)
                }
                11..=12 => {
                    let op = Op::Delete { key: kb };
                    let done = match self.timed(store.delete(key)).await {
                        Some(Ok((revision, existed))) => {
                            Done::Definite(Outcome::Deleted { revision, existed })
                        }
                        Some(Err(e)) => self.write_error(e),
                        None => Done::Indefinite { maybe: true },
                    };
                    (op, done)
                }
                // A single-key range: no other key starts with a key of KEYS.
                13..=14 => {
                    let done = match self.timed(store.range(key, consistency)).await {
                        Some(Ok(entries)) => match entries.as_slice() {
                            [] => Done::Definite(Outcome::Absent),
                            [(name, v)] if name == key => Done::Definite(Outcome::Found {
                                value: v.value.clone(),
                                mod_revision: v.revision,
                            }),
                            other => {
                                self.unexpected(format!(
                                    "range {key:?} answered other keys: {other:?}"
                                ));
                                Done::Indefinite { maybe: false }
                            }
                        },
                        Some(Err(e)) => self.read_error(e),
                        None => Done::Indefinite { maybe: false },
                    };
                    (Op::Get { key: kb }, done)
                }
                _ => {
                    let done = match self.timed(store.get(key, consistency)).await {
                        Some(Ok(Some(v))) => Done::Definite(Outcome::Found {
                            value: v.value,
                            mod_revision: v.revision,
                        }),
                        Some(Ok(None)) => Done::Definite(Outcome::Absent),
                        Some(Err(e)) => self.read_error(e),
                        None => Done::Indefinite { maybe: false },
                    };
                    (Op::Get { key: kb }, done)
                }
            };
            let ret = self.c.now_ns();
            let timed_out = ret.saturating_sub(invoke)
                >= u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
            let outcome = match done {
                Done::Definite(o) => o,
                Done::Indefinite { maybe } => {
                    // A new session next time (perhaps of a restarted process).
                    self.store = None;
                    if maybe && op.is_write() {
                        Outcome::Unknown
                    } else {
                        Outcome::Failed
                    }
                }
            };
            let seen = match &outcome {
                Outcome::Put { revision } | Outcome::Swapped { revision } => Some(*revision),
                Outcome::Found { mod_revision, .. } => Some(*mod_revision),
                Outcome::Mismatch { current_revision } => Some(*current_revision),
                Outcome::Absent | Outcome::Deleted { .. } => Some(0),
                Outcome::Unknown | Outcome::Failed => None,
            };
            if let Some(r) = seen {
                self.seen.insert(k, r);
            }
            {
                let mut g = lock(&self.state);
                g.record.timeouts += u64::from(timed_out);
                g.record
                    .history
                    .push(self.id as u64, invoke, ret, op, outcome);
            }
            let (lo, hi) = self.think_ms;
            let mut pause = lo + self.below(hi.saturating_sub(lo).max(1));
            if self.store.is_none() {
                // An answer without delay (a refusal) must not spin without time passing.
                pause = pause.max(10);
            }
            if pause > 0 {
                self.c.sleep_ms(pause).await;
            }
        }
        lock(&self.state).running -= 1;
    }
}
