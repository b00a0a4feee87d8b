//! The fuzz harnesses, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and by
//! the stable replay test (`core/tests/fuzz_replay.rs`), which both include this file
//! with `#[path]`. It depends on `cluster-mode-core` only: the step program is read
//! from the raw fuzz input by [`Src`] (no `arbitrary` crate), so the replay test needs
//! no extra dev-dependency and runs on the stable toolchain.
//!
//! Every check is an `assert!`: a violated invariant panics, which libFuzzer reports as
//! a crash and `cargo test` as a failure.

#![allow(dead_code)]

use cluster_mode_core::message::{
    Append, AppendReply, ProbeAck, ProbeState, SnapshotMsg, VoteReply, VoteRequest,
};
use cluster_mode_core::{
    Address, Change, ClusterCore, ClusterId, Command, Config, Discovered, DurableState, Entry,
    Envelope, FencingToken, Identity, Input, Instant, Member, Membership, Message, NodeId, Role,
    Snapshot, PROTOCOL_VERSION,
};
use std::collections::BTreeMap;
use std::time::Duration;

// ----- target 1: the decoder ------------------------------------------------------

/// Decodes `data` as a frame, and again with its first byte replaced by the protocol
/// version (random bytes almost never start with it, so without this the parser
/// behind the version check is rarely reached). Whatever decodes must re-encode
/// (with both encoders) to a frame that decodes to the same envelope.
pub fn decode_one(data: &[u8]) {
    round_trip(data);
    if let Some((_, rest)) = data.split_first() {
        let mut fixed = Vec::with_capacity(data.len());
        fixed.push(PROTOCOL_VERSION as u8);
        fixed.extend_from_slice(rest);
        round_trip(&fixed);
    }
}

fn round_trip(data: &[u8]) {
    let Ok(env) = Envelope::decode(data) else {
        return;
    };
    assert_eq!(env.version, PROTOCOL_VERSION, "decoded another version");
    let bytes = env.encode();
    let mut again = vec![0xAA; 3];
    env.encode_into(&mut again);
    assert_eq!(bytes, again, "encode and encode_into differ");
    match Envelope::decode(&bytes) {
        Ok(back) => assert_eq!(back, env, "re-encoded envelope decodes differently"),
        Err(e) => panic!("a decoded envelope re-encodes to a frame that fails: {e}; {env:?}"),
    }
}

// ----- the input reader ------------------------------------------------------------

/// Reads small values from the fuzz input; an exhausted input reads as zeros, so every
/// byte string is a valid program.
pub struct Src<'a> {
    data: &'a [u8],
}

impl<'a> Src<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Src { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A value below `n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        self.u8() as usize % n
    }

    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = self.below(max + 1).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

// ----- target 2: a core driven by a step program -----------------------------------

/// The node under test.
pub const ME: NodeId = NodeId(0x1000_0000_0000_0000_0000_0000_0000_0001);
const ME_ADDR: &str = "10.0.0.100:7946";
/// The peers: 0-2 are voters of the starting cluster, 3 a learner, 4 a stranger.
pub const PEERS: usize = 5;
/// The starting cluster (epoch 1).
pub const CLUSTER: ClusterId = ClusterId((1u128 << 96) | 0xc1);
/// Another cluster of the same epoch, and a successor (epoch 2).
const OTHER: ClusterId = ClusterId((1u128 << 96) | 0x0e);
const SUCCESSOR: ClusterId = ClusterId((2u128 << 96) | 0x5c);
/// The term of the restored member at the start.
const START_TERM: u64 = 5;
/// The most steps one input runs (keeps one execution short).
const MAX_STEPS: usize = 48;

fn peer_id(k: usize) -> NodeId {
    NodeId(0x2000_0000_0000_0000_0000_0000_0000_0000 + k as u128)
}

fn peer_addr(k: usize) -> Address {
    Address::new(format!("10.0.0.{}:7946", k + 1))
}

/// How the node under test starts. Each needs a short scripted prefix; the replay
/// test asserts that each script reaches the state it is named for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Not in a cluster, discovery lists the peers: bootstrap is reachable.
    Fresh,
    /// A restored voter of a three-voter cluster (plus a learner), following nobody.
    Follower,
    /// As `Follower`, after its election timer fired and a pre-vote was granted.
    Candidate,
    /// As `Candidate`, after a vote was granted: the leader, no lease yet.
    Leader,
    /// Fresh, after a probed member of `CLUSTER` answered: it asked to join.
    Joining,
}

const STARTS: [Start; 5] = [
    Start::Fresh,
    Start::Follower,
    Start::Candidate,
    Start::Leader,
    Start::Joining,
];

/// The node under test, what the harness knows of the run, and the checks.
pub struct World {
    core: ClusterCore,
    now: Instant,
    cfg: Config,
    /// Messages the core sent, newest last (bounded), for cooperative replies.
    sent: Vec<(Address, Envelope)>,
    /// The votes this node cast, per cluster and term (its own when it campaigns).
    votes: BTreeMap<(ClusterId, u64), NodeId>,
    /// The (cluster, term, commit index) after the last step.
    last: Option<(ClusterId, u64, u64)>,
    /// The highest fencing token seen, per cluster.
    tokens: BTreeMap<ClusterId, FencingToken>,
    /// Whether the core is durable (Persist commands are checked).
    durable: bool,
    /// Messages delivered and accepted, for the replay test's coverage report.
    pub accepted: usize,
    /// Print every input and command (`FUZZ_TRACE=1`), to read a failing input.
    trace: bool,
}

fn membership() -> Membership {
    let mut m = Membership::default();
    let member = |addr: Address, voter| Member {
        addr,
        name: None,
        voter,
    };
    m.members.insert(ME, member(Address::new(ME_ADDR), true));
    for k in 0..2 {
        m.members.insert(peer_id(k), member(peer_addr(k), true));
    }
    m.members.insert(peer_id(3), member(peer_addr(3), false));
    m
}

fn base_config(src: &mut Src<'_>) -> Config {
    let mut cfg = Config::fast_test();
    let flags = src.u8();
    cfg.auto_recover = flags & 1 == 0;
    cfg.discovery_proves_absence = flags & 2 != 0;
    if flags & 4 != 0 {
        cfg.silent_member_timeout = None;
    }
    if flags & 8 != 0 {
        cfg.min_nodes = std::num::NonZeroUsize::new(1).unwrap();
    }
    cfg
}

impl World {
    /// Builds the node for the start named by the input's first byte.
    pub fn new(src: &mut Src<'_>) -> (World, Start) {
        let start = STARTS[src.below(STARTS.len())];
        let cfg = base_config(src);
        let durable = src.bool();
        let seed = u64::from(src.u16());
        let me = Identity::new(ME, ME_ADDR);
        let now = Instant::from_millis(1_000);
        let core = match start {
            Start::Fresh | Start::Joining => {
                let c = ClusterCore::new(me, cfg.clone(), seed, now).expect("valid config");
                if durable {
                    c.durable()
                } else {
                    c
                }
            }
            _ => {
                let state = DurableState {
                    id: ME,
                    cluster: Some(CLUSTER),
                    term: START_TERM,
                    voted_for: None,
                    base: Snapshot {
                        index: 3,
                        term: 2,
                        membership: membership(),
                        data: Default::default(),
                    },
                    entries: vec![Entry {
                        term: 4,
                        index: 4,
                        change: Change::Noop,
                    }],
                };
                ClusterCore::restore(me, cfg.clone(), seed, now, state).expect("valid state")
            }
        };
        let mut w = World {
            core,
            now,
            cfg,
            sent: Vec::new(),
            votes: BTreeMap::new(),
            last: None,
            tokens: BTreeMap::new(),
            durable: durable || !matches!(start, Start::Fresh | Start::Joining),
            accepted: 0,
            trace: std::env::var_os("FUZZ_TRACE").is_some(),
        };
        w.drain();
        w.script(start);
        (w, start)
    }

    fn script(&mut self, start: Start) {
        match start {
            Start::Fresh | Start::Follower => {}
            Start::Joining => {
                let list = (0..3).map(|k| Discovered::new(peer_addr(k))).collect();
                self.input(Input::Discovery(list));
                let ack = Message::ProbeAck(ProbeAck {
                    name: None,
                    state: ProbeState::Member {
                        term: START_TERM,
                        leader: Some((peer_id(0), peer_addr(0))),
                        last_index: 4,
                        last_term: 4,
                        your_config: None,
                    },
                });
                self.deliver_env(self.envelope(0, Some(CLUSTER), Some(ME), ack));
            }
            Start::Candidate | Start::Leader => {
                // The restored member refuses votes and waits an election timeout.
                self.advance(self.cfg.election_timeout_max * 2);
                self.input(Input::Tick);
                let pre = Message::PreVoteReply(VoteReply {
                    term: START_TERM + 1,
                    granted: true,
                });
                self.deliver_env(self.envelope(0, Some(CLUSTER), Some(ME), pre));
                if start == Start::Leader {
                    let term = self.core.term();
                    let vote = Message::VoteReply(VoteReply {
                        term,
                        granted: true,
                    });
                    self.deliver_env(self.envelope(1, Some(CLUSTER), Some(ME), vote));
                }
            }
        }
    }

    /// Whether the node is in the state `start` names (the replay test asserts it).
    pub fn is_in(&self, start: Start) -> bool {
        let s = self.core.status(self.now);
        match start {
            Start::Fresh => s.cluster.is_none(),
            Start::Follower => s.cluster == Some(CLUSTER) && !s.is_leader && s.term == START_TERM,
            Start::Candidate => s.term == START_TERM + 1 && !s.is_leader,
            Start::Leader => s.is_leader && s.term == START_TERM + 1,
            Start::Joining => {
                s.cluster.is_none()
                    && self
                        .sent
                        .iter()
                        .any(|(_, e)| matches!(e.msg, Message::Join { .. }))
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }

    fn envelope(
        &self,
        k: usize,
        cluster: Option<ClusterId>,
        to: Option<NodeId>,
        msg: Message,
    ) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            cluster,
            from: peer_id(k),
            from_addr: peer_addr(k),
            to,
            msg,
        }
    }

    /// Runs the rest of the input as steps, checking the invariants after each.
    pub fn run(&mut self, src: &mut Src<'_>) {
        for _ in 0..MAX_STEPS {
            if src.is_empty() || self.core.has_left() {
                break;
            }
            self.step(src);
        }
    }

    fn step(&mut self, src: &mut Src<'_>) {
        match src.below(16) {
            0..=4 => {
                let env = self.structured(src);
                self.deliver_frame(env, src);
            }
            5..=7 => self.cooperate(src),
            8 => {
                // A raw frame with the right version byte: the decoder's and the
                // core's view of junk.
                let mut frame = vec![PROTOCOL_VERSION as u8];
                frame.extend_from_slice(src.bytes(48));
                if let Ok(env) = Envelope::decode(&frame) {
                    self.deliver_env(env);
                }
            }
            9 | 10 => {
                // Tick at the core's own deadline (how a shell drives it).
                if let Some(t) = self.core.poll_timeout() {
                    self.now = self.now.max(t);
                }
                self.input(Input::Tick);
            }
            11 => {
                let d = match src.below(6) {
                    0 => Duration::ZERO,
                    1 => Duration::from_millis(1),
                    2 => self.cfg.heartbeat_interval,
                    3 => self.cfg.lease_duration,
                    4 => self.cfg.election_timeout_max,
                    _ => Duration::from_micros(u64::from(src.u16()) * 50),
                };
                self.advance(d);
                self.input(Input::Tick);
            }
            12 => {
                let mask = src.u8();
                let mut list: Vec<Discovered> = (0..PEERS)
                    .filter(|k| mask & (1 << k) != 0)
                    .map(|k| Discovered::new(peer_addr(k)))
                    .collect();
                if mask & 0x20 != 0 {
                    list.push(Discovered::new(ME_ADDR));
                }
                if mask & 0x40 != 0 {
                    list.push(Discovered::new("10.9.9.9:7946"));
                }
                self.input(Input::Discovery(list));
            }
            13 => {
                let k = src.below(PEERS + 1);
                let addr = if k == PEERS {
                    Address::new("10.9.9.9:7946")
                } else {
                    peer_addr(k)
                };
                self.input(Input::Unreachable(addr));
            }
            14 => match src.below(4) {
                0 => self.input(Input::Leave),
                1 => self.input(Input::ForceRecover),
                _ => self.input(Input::DiscoveryFailed("fuzz".into())),
            },
            _ => {
                // Several heartbeat rounds answered by every voter: drives a leader
                // to a lease and its commits, a follower to its election timer.
                let rounds = 1 + src.below(3);
                for _ in 0..rounds {
                    self.advance(self.cfg.heartbeat_interval);
                    self.input(Input::Tick);
                    self.answer_recent(true, 6);
                }
            }
        }
    }

    /// A term near the node's: most handlers compare with it.
    fn term(&self, src: &mut Src<'_>) -> u64 {
        let t = self.core.term();
        match src.below(8) {
            0 | 1 => t,
            2 | 3 => t + 1,
            4 => t.saturating_sub(1),
            5 => t + 2,
            6 => u64::from(src.u8()),
            _ => src.u64() >> src.below(64),
        }
    }

    /// An index near the node's log.
    fn index(&self, src: &mut Src<'_>) -> u64 {
        let (_, last) = self.core.last_log_id();
        let commit = self.core.commit_index();
        match src.below(8) {
            0 | 1 => last,
            2 => last + 1,
            3 => commit,
            4 => last.saturating_sub(1),
            5 => 0,
            6 => u64::from(src.u8()),
            _ => src.u64() >> src.below(64),
        }
    }

    fn node(&self, src: &mut Src<'_>) -> NodeId {
        match src.below(PEERS + 2) {
            k if k < PEERS => peer_id(k),
            k if k == PEERS => ME,
            _ => NodeId(0x3000 + u128::from(src.u8())),
        }
    }

    fn addr(&self, src: &mut Src<'_>) -> Address {
        match src.below(PEERS + 2) {
            k if k < PEERS => peer_addr(k),
            k if k == PEERS => Address::new(ME_ADDR),
            _ => Address::new("10.9.9.9:7946"),
        }
    }

    fn change(&self, src: &mut Src<'_>) -> Change {
        match src.below(4) {
            0 => Change::Noop,
            1 => Change::AddLearner {
                id: self.node(src),
                addr: self.addr(src),
                name: src.bool().then(|| "pod".to_string()),
            },
            2 => Change::Promote { id: self.node(src) },
            _ => Change::Remove { id: self.node(src) },
        }
    }

    /// Entries that usually follow `prev` (the core refuses the others).
    fn entries(&self, src: &mut Src<'_>, prev: u64) -> Vec<Entry> {
        let n = src.below(4);
        let term = self.core.term();
        let contiguous = src.u8() < 230;
        (0..n)
            .map(|i| Entry {
                term: if src.u8() < 200 { term } else { self.term(src) },
                index: if contiguous {
                    prev + 1 + i as u64
                } else {
                    self.index(src)
                },
                change: self.change(src),
            })
            .collect()
    }

    fn snapshot(&self, src: &mut Src<'_>) -> Snapshot {
        let mut m = Membership::default();
        let mask = src.u8();
        for k in 0..PEERS {
            if mask & (1 << k) != 0 {
                m.members.insert(
                    peer_id(k),
                    Member {
                        addr: peer_addr(k),
                        name: None,
                        voter: src.u8() < 200,
                    },
                );
            }
        }
        if mask & 0x80 != 0 {
            m.members.insert(
                ME,
                Member {
                    addr: Address::new(ME_ADDR),
                    name: None,
                    voter: mask & 0x40 != 0,
                },
            );
        }
        Snapshot {
            index: self.index(src),
            term: self.term(src),
            membership: m,
            data: Default::default(),
        }
    }

    fn sent_at(&self, src: &mut Src<'_>) -> Instant {
        // Usually an instant this node used; sometimes anything (a lying peer).
        match src.below(4) {
            0 => self.now,
            1 => Instant::ZERO,
            2 => self
                .sent
                .iter()
                .rev()
                .find_map(|(_, e)| match &e.msg {
                    Message::Append(a) => Some(a.sent_at),
                    _ => None,
                })
                .unwrap_or(self.now),
            _ => Instant::from_nanos(src.u64()),
        }
    }

    /// A message from a peer, its fields near the node's own state.
    fn structured(&self, src: &mut Src<'_>) -> Envelope {
        let k = src.below(PEERS);
        let cluster = match src.below(8) {
            0..=4 => self.core.cluster().or(Some(CLUSTER)),
            5 => None,
            6 => Some(OTHER),
            _ => Some(SUCCESSOR),
        };
        let to = match src.below(6) {
            0..=3 => Some(ME),
            4 => None,
            _ => Some(peer_id(0)),
        };
        let vote = |s: &mut Src<'_>| VoteRequest {
            term: self.term(s),
            last_index: self.index(s),
            last_term: self.term(s),
            transfer: s.u8() < 40,
        };
        let reply = |s: &mut Src<'_>| VoteReply {
            term: self.term(s),
            granted: s.u8() < 200,
        };
        let leader = |s: &mut Src<'_>| {
            s.bool().then(|| {
                let j = s.below(PEERS);
                (peer_id(j), peer_addr(j))
            })
        };
        let msg = match src.below(18) {
            0 => Message::Probe,
            1 => Message::ProbeAck(ProbeAck {
                name: src.bool().then(|| "pod".to_string()),
                state: if src.u8() < 80 {
                    ProbeState::Fresh {
                        supports: src.bool().then(|| self.node(src)),
                    }
                } else {
                    ProbeState::Member {
                        term: self.term(src),
                        leader: leader(src),
                        last_index: self.index(src),
                        last_term: self.term(src),
                        your_config: src.bool().then(|| self.snapshot(src)),
                    }
                },
            }),
            2 => Message::BootstrapRequest {
                round: u64::from(src.u8()),
            },
            3 => Message::BootstrapReply {
                round: u64::from(src.u8()),
                granted: src.u8() < 200,
            },
            4 => Message::BootstrapWithdraw {
                round: u64::from(src.u8()),
            },
            5 => Message::RecoveryRequest {
                round: u64::from(src.u8()),
                last_index: self.index(src),
                last_term: self.term(src),
            },
            6 => Message::Join {
                name: src.bool().then(|| "joiner".to_string()),
            },
            7 => Message::Leave,
            8 => Message::NotLeader {
                leader: leader(src),
            },
            9 => Message::PreVote(vote(src)),
            10 => Message::PreVoteReply(reply(src)),
            11 => Message::Vote(vote(src)),
            12 => Message::VoteReply(reply(src)),
            13 => {
                let prev_index = self.index(src);
                Message::Append(Append {
                    term: self.term(src),
                    prev_index,
                    prev_term: self.term(src),
                    entries: self.entries(src, prev_index),
                    commit: self.index(src),
                    sent_at: self.sent_at(src),
                    hold: None,
                })
            }
            14 => {
                let snapshot = self.snapshot(src);
                let entries = self.entries(src, snapshot.index);
                Message::Snapshot(SnapshotMsg {
                    term: self.term(src),
                    snapshot,
                    entries,
                    sent_at: self.sent_at(src),
                })
            }
            15 | 16 => Message::AppendReply(AppendReply {
                term: self.term(src),
                success: src.u8() < 200,
                index: self.index(src),
                sent_at: self.sent_at(src),
                at: Default::default(),
                released: Vec::new(),
            }),
            _ => Message::TimeoutNow {
                term: self.term(src),
            },
        };
        self.envelope(k, cluster, to, msg)
    }

    /// Sends `env` through the wire format: encoded, sometimes with one byte changed
    /// (never the version byte), decoded, and handed to the core if it decodes.
    fn deliver_frame(&mut self, env: Envelope, src: &mut Src<'_>) {
        let mut frame = env.encode();
        if src.u8() < 16 && frame.len() > 1 {
            let i = 1 + src.below(255) % (frame.len() - 1);
            frame[i] ^= src.u8() | 1;
        }
        if let Ok(env) = Envelope::decode(&frame) {
            self.deliver_env(env);
        }
    }

    /// The answer a well-behaved peer would give to one of the core's recent sends
    /// (chosen by the input), granting or refusing as the input says.
    fn cooperate(&mut self, src: &mut Src<'_>) {
        if self.sent.is_empty() {
            self.advance(self.cfg.heartbeat_interval);
            self.input(Input::Tick);
            return;
        }
        let i = self.sent.len() - 1 - src.below(self.sent.len().min(8));
        let ok = src.u8() < 220;
        self.answer(i, ok);
    }

    /// Answers the last `n` sends.
    fn answer_recent(&mut self, ok: bool, n: usize) {
        let from = self.sent.len().saturating_sub(n);
        let upto = self.sent.len();
        for i in from..upto {
            if self.core.has_left() {
                return;
            }
            self.answer(i, ok);
        }
    }

    fn answer(&mut self, i: usize, ok: bool) {
        let Some((addr, sent)) = self.sent.get(i).cloned() else {
            return;
        };
        let Some(k) = (0..PEERS).find(|k| peer_addr(*k) == addr) else {
            return;
        };
        let term = self.core.term();
        let msg = match &sent.msg {
            Message::Probe => Message::ProbeAck(ProbeAck {
                name: None,
                state: if self.core.cluster().is_some() && k < 4 {
                    ProbeState::Member {
                        term,
                        leader: None,
                        last_index: self.core.last_log_id().1,
                        last_term: self.core.last_log_id().0,
                        your_config: None,
                    }
                } else {
                    ProbeState::Fresh {
                        supports: ok.then_some(ME),
                    }
                },
            }),
            Message::BootstrapRequest { round } => Message::BootstrapReply {
                round: *round,
                granted: ok,
            },
            Message::RecoveryRequest { round, .. } => Message::BootstrapReply {
                round: *round,
                granted: ok,
            },
            Message::PreVote(r) => Message::PreVoteReply(VoteReply {
                term: r.term,
                granted: ok,
            }),
            Message::Vote(r) => Message::VoteReply(VoteReply {
                term: r.term,
                granted: ok,
            }),
            Message::Append(a) => Message::AppendReply(AppendReply {
                term: a.term,
                success: ok,
                index: if ok {
                    a.prev_index + a.entries.len() as u64
                } else {
                    a.prev_index.saturating_sub(1)
                },
                sent_at: a.sent_at,
                at: Default::default(),
                released: Vec::new(),
            }),
            Message::Snapshot(s) => Message::AppendReply(AppendReply {
                term: s.term,
                success: ok,
                index: s.snapshot.index + s.entries.len() as u64,
                sent_at: s.sent_at,
                at: Default::default(),
                released: Vec::new(),
            }),
            Message::Join { .. } | Message::Leave => Message::NotLeader {
                leader: Some((peer_id(0), peer_addr(0))),
            },
            Message::TimeoutNow { term } => Message::Vote(VoteRequest {
                term: term + 1,
                last_index: self.core.last_log_id().1,
                last_term: self.core.last_log_id().0,
                transfer: true,
            }),
            _ => return,
        };
        let env = self.envelope(k, sent.cluster, Some(ME), msg);
        self.deliver_env(env);
    }

    // ----- feeding the core and checking it ------------------------------------------

    fn deliver_env(&mut self, env: Envelope) {
        if self.trace {
            eprintln!("{} <- {env:?}", self.now);
        }
        let before = self.core.status(self.now);
        let timeout = self.core.poll_timeout();
        match self.core.handle(self.now, Input::Message(env)) {
            Ok(()) => {
                self.accepted += 1;
                self.drain();
                self.check(false);
            }
            Err(_) => {
                // A refused message changes nothing observable.
                assert!(
                    self.core.poll_command().is_none(),
                    "a refused message queued a command"
                );
                assert_eq!(
                    self.core.status(self.now),
                    before,
                    "a refused message changed the status"
                );
                assert_eq!(
                    self.core.poll_timeout(),
                    timeout,
                    "a refused message moved a timer"
                );
            }
        }
    }

    fn input(&mut self, input: Input) {
        let tick = matches!(input, Input::Tick);
        if self.trace {
            eprintln!("{} <- {input:?}", self.now);
        }
        let r = self.core.handle(self.now, input);
        assert!(r.is_ok(), "only messages are refused: {r:?}");
        self.drain();
        self.check(tick);
    }

    /// Drains the commands, checking each.
    fn drain(&mut self) {
        while let Some(cmd) = self.core.poll_command() {
            if self.trace {
                eprintln!("    -> {cmd:?}");
            }
            match cmd {
                Command::Send { to, msg, .. } => {
                    self.check_sent(&to, &msg);
                    if self.sent.len() >= 64 {
                        self.sent.drain(..32);
                    }
                    self.sent.push((to, msg));
                }
                Command::RoleChanged {
                    role,
                    lease_until,
                    fencing_token,
                    ..
                } => {
                    // A primary reports both; a node that reports a lease end is the
                    // primary; the token is there exactly while the node is primary
                    // (a leaving leader may still hold its lease: role Leaving).
                    if role == Role::Primary {
                        assert!(lease_until.is_some(), "a primary without a lease end");
                    }
                    if let Some(until) = lease_until {
                        assert_eq!(role, Role::Primary, "a lease end for a {role:?}");
                        assert!(until > self.now, "reported a lease that has ended");
                    }
                    assert_eq!(
                        fencing_token,
                        self.core.fencing_token(self.now),
                        "the reported fencing token is not the node's"
                    );
                }
                Command::Persist(state) => {
                    assert!(self.durable, "a core that is not durable asked to persist");
                    if let Err(e) = state.validate(ME) {
                        panic!("persisted a state that cannot be restored: {e}");
                    }
                }
                Command::MembersChanged(list) => {
                    assert!(
                        list.windows(2).all(|w| w[0].0 < w[1].0),
                        "member list not sorted or has duplicates"
                    );
                }
                _ => {}
            }
        }
    }

    /// Every envelope the core sends is a valid frame from this node, and its votes
    /// are one per term.
    fn check_sent(&mut self, to: &Address, msg: &Envelope) {
        assert_eq!(msg.version, PROTOCOL_VERSION);
        assert_eq!(msg.from, ME, "sent under another id");
        assert_eq!(msg.from_addr.as_str(), ME_ADDR);
        // A message to this node's own address happens (left alone, fuzz/README.md):
        // a stale member of the configuration (a previous process at this address)
        // is asked to join or to vote; this process refuses it as NotForMe. Never
        // addressed to this node's own id, though.
        assert_ne!(msg.to, Some(ME), "sent a message to itself");
        assert!(!to.as_str().is_empty(), "sent to an empty address");
        match Envelope::decode(&msg.encode()) {
            Ok(back) => assert_eq!(&back, msg, "sent frame does not round-trip"),
            Err(e) => panic!("the core sent a frame a peer would refuse: {e}; {msg:?}"),
        }
        let (Some(cluster), voted, term) = (
            msg.cluster,
            match &msg.msg {
                Message::Vote(_) => Some(ME),
                Message::VoteReply(r) if r.granted => msg.to,
                _ => None,
            },
            match &msg.msg {
                Message::Vote(r) => r.term,
                Message::VoteReply(r) => r.term,
                _ => 0,
            },
        ) else {
            return;
        };
        if let Some(cand) = voted {
            let prev = *self.votes.entry((cluster, term)).or_insert(cand);
            assert_eq!(
                prev, cand,
                "two votes in term {term} of cluster {cluster:?}: {prev:?} and {cand:?}"
            );
        }
    }

    /// The invariants a node can check on its own, after every step.
    fn check(&mut self, after_tick: bool) {
        let now = self.now;
        let c = &self.core;
        let s = c.status(now);
        let primary = c.is_primary(now);
        assert_eq!(primary, s.lease_valid);
        assert_eq!(
            s.role == Role::Primary,
            primary && !matches!(s.role, Role::Leaving | Role::Inactive)
        );
        if primary {
            assert!(c.is_leader(), "primary but not leader");
            assert!(s.cluster.is_some(), "primary without a cluster");
            assert_eq!(c.leader(), Some(ME), "primary follows another leader");
            let until = s.lease_until.expect("a primary has a lease end");
            assert!(until > now, "primary after its lease ended");
            assert!(
                until <= now + self.cfg.lease_duration,
                "lease ends later than lease_duration from now"
            );
            let token = c.fencing_token(now).expect("a primary has a fencing token");
            assert_eq!(Some(token.cluster), s.cluster);
            assert_eq!(token.term, s.term);
            let seen = self.tokens.entry(token.cluster).or_insert(token);
            assert!(token >= *seen, "fencing token went down");
            *seen = token;
            assert!(
                c.members().is_voter(ME) || c.effective_members().is_voter(ME),
                "primary but not a voter"
            );
        } else {
            assert!(c.fencing_token(now).is_none());
        }
        if s.is_leader {
            assert_eq!(c.leader(), Some(ME), "leader follows another");
        }
        if s.cluster.is_none() {
            assert_eq!(s.role, Role::Inactive);
            assert!(!s.is_leader, "leader without a cluster");
        }
        let (last_term, last_index) = c.last_log_id();
        assert!(last_term <= s.term, "log term above the current term");
        assert!(s.commit_index <= last_index, "commit beyond the log");
        if let Some(cluster) = s.cluster {
            if let Some((prev_cluster, prev_term, prev_commit)) = self.last {
                if prev_cluster == cluster {
                    assert!(s.term >= prev_term, "term went down in one cluster");
                    assert!(s.commit_index >= prev_commit, "commit index went down");
                }
            }
            self.last = Some((cluster, s.term, s.commit_index));
        } else {
            self.last = None;
        }
        match c.poll_timeout() {
            None => assert!(c.has_left(), "no timer while running"),
            Some(t) => {
                assert!(!c.has_left(), "a timer after leaving");
                if after_tick {
                    assert!(t > now, "after a tick the next timeout is not later");
                }
            }
        }
    }
}

/// Runs one step program: the core target's whole body.
pub fn run_core(data: &[u8]) {
    let mut src = Src::new(data);
    let (mut w, _) = World::new(&mut src);
    w.run(&mut src);
}
