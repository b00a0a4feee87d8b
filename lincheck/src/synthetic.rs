//! Linearizable histories made up from a seed, for tests and benchmarks.
//!
//! Clients issue operations one after another with random think times and
//! durations. Each operation that takes effect gets a linearization point inside its
//! interval (an unknown-outcome write may take effect later than its recorded
//! return, or not at all); executing the operations in the order of their points on
//! a sequential store gives the outcomes and revisions. The result is linearizable
//! by construction. Deterministic: a small built-in generator, no thread RNG.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{History, Op, Outcome, Value};

/// The shape of a made-up history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Concurrent clients (each has one operation in flight at a time).
    pub clients: usize,
    /// Operations in the history.
    pub operations: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Distinct values a write may write.
    pub values: usize,
    /// Per thousand operations, how many end with an unknown outcome (half of those
    /// writes take effect).
    pub unknown_permille: u32,
    /// Per thousand operations, how many fail for sure (not applied).
    pub failed_permille: u32,
    /// The longest operation, in nanoseconds (`>= 1`).
    pub max_duration: u64,
    /// The longest pause of a client between two operations, in nanoseconds (`>= 1`).
    pub max_think: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            clients: 4,
            operations: 100,
            keys: 3,
            values: 4,
            unknown_permille: 100,
            failed_permille: 20,
            max_duration: 1_000,
            max_think: 300,
        }
    }
}

/// SplitMix64: small, fast, deterministic.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n >= 1`; the tiny modulo bias does not matter here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn permille(&mut self, p: u32) -> bool {
        self.below(1000) < u64::from(p)
    }
}

/// The kind of operation a client picked, before the store answers it.
enum Planned {
    Put(Value),
    Delete,
    Cas { value: Value, fresh: bool },
    Get,
}

/// A linearizable history of the given shape, the same for the same `seed`.
pub fn linearizable_history(seed: u64, config: &Config) -> History {
    let mut rng = Rng::new(seed);
    let clients = config.clients.max(1);
    // (free at, client): the client that is free first issues the next operation.
    let mut free: BTreeSet<(u64, usize)> = (0..clients).map(|c| (0, c)).collect();
    struct Pending {
        client: u64,
        invoke: u64,
        ret: u64,
        key: Vec<u8>,
        plan: Planned,
        /// Linearization point, if the operation takes effect.
        point: Option<u64>,
        unknown: bool,
        failed: bool,
    }
    let mut pending = Vec::with_capacity(config.operations);
    for _ in 0..config.operations {
        let Some((at, c)) = free.pop_first() else {
            break;
        };
        let invoke = at + 1 + rng.below(config.max_think.max(1));
        let duration = rng.below(config.max_duration.max(1)) + 1;
        let ret = invoke + duration;
        let key = format!("k{}", rng.below(config.keys.max(1) as u64)).into_bytes();
        let value = format!("v{}", rng.below(config.values.max(1) as u64)).into_bytes();
        let plan = match rng.below(20) {
            0..=6 => Planned::Put(value),
            7..=8 => Planned::Delete,
            9..=12 => Planned::Cas {
                value,
                fresh: rng.below(2) == 0,
            },
            _ => Planned::Get,
        };
        let unknown = rng.permille(config.unknown_permille);
        let failed = !unknown && rng.permille(config.failed_permille);
        let point = if failed || (unknown && rng.below(2) == 0) {
            None
        } else if unknown {
            // Maybe committed: possibly well after the client gave up.
            Some(invoke + rng.below(3 * duration + 1))
        } else {
            Some(invoke + rng.below(duration + 1))
        };
        free.insert((ret, c));
        pending.push(Pending {
            client: c as u64,
            invoke,
            ret,
            key,
            plan,
            point,
            unknown,
            failed,
        });
    }
    // Execute in linearization order on a sequential store.
    let mut order: Vec<usize> = (0..pending.len())
        .filter(|&i| pending[i].point.is_some())
        .collect();
    order.sort_by_key(|&i| (pending[i].point, i));
    let mut store: BTreeMap<Vec<u8>, (Value, u64)> = BTreeMap::new();
    let mut revision = 0u64;
    let mut results: Vec<Option<(Op, Outcome)>> = (0..pending.len()).map(|_| None).collect();
    // Other log entries (configuration changes) take indices too: gaps.
    let commit = |rng: &mut Rng, revision: &mut u64| {
        *revision += 1 + if rng.below(8) == 0 { rng.below(3) } else { 0 };
        *revision
    };
    for &i in &order {
        let p = &pending[i];
        let key = p.key.clone();
        let current = store.get(&key).map(|(_, r)| *r).unwrap_or(0);
        let (op, outcome) = match &p.plan {
            Planned::Put(value) => {
                let r = commit(&mut rng, &mut revision);
                store.insert(key.clone(), (value.clone(), r));
                (
                    Op::Put {
                        key,
                        value: value.clone(),
                    },
                    Outcome::Put { revision: r },
                )
            }
            Planned::Delete => {
                let r = commit(&mut rng, &mut revision);
                let existed = store.remove(&key).is_some();
                (
                    Op::Delete { key },
                    Outcome::Deleted {
                        revision: r,
                        existed,
                    },
                )
            }
            Planned::Cas { value, fresh } => {
                let expected = if *fresh {
                    current
                } else {
                    rng.below(revision + 2)
                };
                let outcome = if expected == current {
                    let r = commit(&mut rng, &mut revision);
                    store.insert(key.clone(), (value.clone(), r));
                    Outcome::Swapped { revision: r }
                } else {
                    Outcome::Mismatch {
                        current_revision: current,
                    }
                };
                (
                    Op::CompareAndSwap {
                        key,
                        expected_revision: expected,
                        value: value.clone(),
                    },
                    outcome,
                )
            }
            Planned::Get => {
                let outcome = match store.get(&key) {
                    Some((value, r)) => Outcome::Found {
                        value: value.clone(),
                        mod_revision: *r,
                    },
                    None => Outcome::Absent,
                };
                (Op::Get { key }, outcome)
            }
        };
        results[i] = Some((op, outcome));
    }
    let mut history = History::new();
    for (i, p) in pending.into_iter().enumerate() {
        let (op, outcome) = match results[i].take() {
            Some(done) => done,
            None => {
                let op = match p.plan {
                    Planned::Put(value) => Op::Put { key: p.key, value },
                    Planned::Delete => Op::Delete { key: p.key },
                    Planned::Cas { value, .. } => Op::CompareAndSwap {
                        key: p.key,
                        expected_revision: rng.below(revision + 2),
                        value,
                    },
                    Planned::Get => Op::Get { key: p.key },
                };
                (op, Outcome::Failed)
            }
        };
        let outcome = if p.unknown {
            Outcome::Unknown
        } else if p.failed {
            Outcome::Failed
        } else {
            outcome
        };
        history.push(p.client, p.invoke, p.ret, op, outcome);
    }
    history
}
