//! Replays the committed fuzz corpus (`fuzz/regressions/`) through the same harness
//! code the cargo-fuzz targets run (`fuzz/harness/mod.rs`), on the stable toolchain,
//! so `cargo test` keeps exercising what the fuzzer found without cargo-fuzz. The
//! harness asserts the node's own invariants after every step; a violation panics.
//!
//! `cargo test -p cluster-mode-core --test fuzz_replay -- --ignored write_seeds`
//! writes the seed corpus that `fuzz/README.md` starts the fuzzer from.

#[path = "../../fuzz/harness/mod.rs"]
mod harness;

use cluster_mode_core::message::{
    Append, AppendReply, ProbeAck, ProbeState, VoteReply, VoteRequest,
};
use cluster_mode_core::{
    Address, Change, ClusterId, Entry, Envelope, Instant, Member, Membership, Message, NodeId,
    Snapshot, SplitMix64, PROTOCOL_VERSION,
};
use harness::{Src, Start, World};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("regressions").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable corpus file");
            (p, bytes)
        })
        .collect()
}

#[test]
fn the_decoder_corpus_replays_without_a_panic() {
    let corpus = inputs("decode");
    assert!(corpus.len() >= 10, "the committed decode corpus is missing");
    let mut decoded = 0;
    for (path, bytes) in &corpus {
        eprintln!("{}", path.display());
        harness::decode_one(bytes);
        let mut fixed = bytes.clone();
        if let Some(b) = fixed.first_mut() {
            *b = PROTOCOL_VERSION as u8;
        }
        decoded += usize::from(Envelope::decode(&fixed).is_ok());
    }
    // The corpus is only worth replaying if it reaches past the parser.
    assert!(
        decoded * 3 >= corpus.len(),
        "{decoded} of {} decode",
        corpus.len()
    );
}

#[test]
fn the_core_corpus_replays_without_a_broken_invariant() {
    let corpus = inputs("core_steps");
    assert!(corpus.len() >= 10, "the committed core corpus is missing");
    let mut accepted = 0;
    let mut starts = std::collections::BTreeSet::new();
    for (path, bytes) in &corpus {
        eprintln!("{}", path.display());
        let mut src = Src::new(bytes);
        let (mut w, start) = World::new(&mut src);
        w.run(&mut src);
        accepted += w.accepted;
        starts.insert(format!("{start:?}"));
    }
    // The replay reaches the core's handlers from every starting state.
    assert_eq!(starts.len(), 5, "starts covered: {starts:?}");
    assert!(
        accepted >= corpus.len() * 3,
        "only {accepted} messages accepted"
    );
}

#[test]
fn every_scripted_start_reaches_its_state() {
    for (i, want) in [
        Start::Fresh,
        Start::Follower,
        Start::Candidate,
        Start::Leader,
        Start::Joining,
    ]
    .into_iter()
    .enumerate()
    {
        for flags in [0u8, 1, 2, 4, 8, 15] {
            for durable in [0u8, 1] {
                let bytes = [i as u8, flags, durable, 7, 0];
                let mut src = Src::new(&bytes);
                let (w, start) = World::new(&mut src);
                assert_eq!(start, want);
                assert!(w.is_in(want), "{want:?} flags {flags} durable {durable}");
            }
        }
    }
}

/// Random step programs from a fixed seed: a little fuzzing on every `cargo test`.
#[test]
fn random_programs_keep_the_invariants() {
    let mut rng = SplitMix64::new(0xf022);
    let mut accepted = 0;
    for _ in 0..400 {
        let len = 5 + rng.range(0, 600) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let mut src = Src::new(&bytes);
        let (mut w, _) = World::new(&mut src);
        w.run(&mut src);
        accepted += w.accepted;
        harness::decode_one(&bytes[..len.min(64)]);
    }
    assert!(accepted > 1000, "only {accepted} messages accepted");
}

// ----- the seed corpus ---------------------------------------------------------------

fn seed_envelopes() -> Vec<Envelope> {
    let a = Address::new("10.0.0.1:7946");
    let mut m = Membership::default();
    for k in 1..=3u128 {
        m.members.insert(
            NodeId(k),
            Member {
                addr: Address::new(format!("10.0.0.{k}:7946")),
                name: Some(format!("pod-{k}")),
                voter: k < 3,
            },
        );
    }
    let snap = Snapshot {
        index: 9,
        term: 4,
        membership: m,
        data: Default::default(),
    };
    let entries = vec![
        Entry {
            term: 5,
            index: 10,
            change: Change::AddLearner {
                id: NodeId(4),
                addr: Address::new("10.0.0.4:7946"),
                name: None,
            },
        },
        Entry {
            term: 5,
            index: 11,
            change: Change::Promote { id: NodeId(4) },
        },
        Entry {
            term: 5,
            index: 12,
            change: Change::Remove { id: NodeId(2) },
        },
    ];
    let vote = VoteRequest {
        term: 5,
        last_index: 9,
        last_term: 4,
        transfer: true,
    };
    let reply = VoteReply {
        term: 5,
        granted: true,
    };
    let sent_at = Instant::from_millis(1234);
    let msgs = vec![
        Message::Probe,
        Message::ProbeAck(ProbeAck {
            name: Some("pod-1".into()),
            state: ProbeState::Fresh {
                supports: Some(NodeId(2)),
            },
        }),
        Message::ProbeAck(ProbeAck {
            name: None,
            state: ProbeState::Member {
                term: 5,
                leader: Some((NodeId(1), a.clone())),
                last_index: 9,
                last_term: 4,
                your_config: Some(snap.clone()),
            },
        }),
        Message::BootstrapRequest { round: 3 },
        Message::BootstrapReply {
            round: 3,
            granted: true,
        },
        Message::BootstrapWithdraw { round: 3 },
        Message::RecoveryRequest {
            round: 1,
            last_index: 9,
            last_term: 4,
        },
        Message::Join {
            name: Some("pod-4".into()),
        },
        Message::Leave,
        Message::NotLeader {
            leader: Some((NodeId(1), a.clone())),
        },
        Message::PreVote(vote.clone()),
        Message::PreVoteReply(reply.clone()),
        Message::Vote(vote),
        Message::VoteReply(reply),
        Message::Append(Append {
            term: 5,
            prev_index: 9,
            prev_term: 4,
            entries: entries.clone(),
            commit: 9,
            sent_at,
            hold: None,
        }),
        Message::Snapshot(cluster_mode_core::message::SnapshotMsg {
            term: 5,
            snapshot: snap,
            entries,
            sent_at,
        }),
        Message::AppendReply(AppendReply {
            term: 5,
            success: true,
            index: 12,
            sent_at,
            at: Default::default(),
            released: Vec::new(),
        }),
        Message::TimeoutNow { term: 5 },
    ];
    msgs.into_iter()
        .enumerate()
        .map(|(i, msg)| Envelope {
            version: PROTOCOL_VERSION,
            cluster: (i % 5 != 0).then_some(ClusterId((1 << 96) | 0xfeed)),
            from: NodeId(1),
            from_addr: a.clone(),
            to: (i % 3 != 0).then_some(NodeId(2)),
            msg,
        })
        .collect()
}

/// Step programs: every start, followed by heartbeat rounds, ticks at the deadline,
/// cooperative answers and structured messages.
fn seed_programs() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for start in 0..5u8 {
        for flags in [0u8, 8] {
            let head = [start, flags, 1, 42, 0];
            let bodies: [&[u8]; 4] = [
                &[15, 3, 9, 15, 3, 5, 0, 0, 9, 15, 3],
                &[9, 5, 0, 0, 9, 5, 1, 0, 9, 5, 2, 0, 15, 3, 15, 3],
                &[12, 7, 9, 9, 9, 5, 0, 0, 5, 1, 0, 9, 9, 15, 3, 14, 0, 15, 3],
                &[
                    0, 0, 0, 0, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 2, 11, 4,
                ],
            ];
            for body in bodies {
                let mut p = head.to_vec();
                p.extend_from_slice(body);
                out.push(p);
            }
        }
    }
    out
}

/// Writes the seed corpus into `fuzz/corpus/<target>/` (ignored by git).
#[test]
#[ignore = "writes files; run by hand before fuzzing (fuzz/README.md)"]
fn write_seeds() {
    let write = |target: &str, items: Vec<Vec<u8>>| {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for (i, bytes) in items.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), bytes).expect("write seed");
        }
        eprintln!("{} seeds in {}", items.len(), dir.display());
    };
    let frames: Vec<Vec<u8>> = seed_envelopes().iter().map(Envelope::encode).collect();
    for f in &frames {
        assert!(Envelope::decode(f).is_ok(), "a seed frame does not decode");
    }
    write("decode", frames);
    write("core_steps", seed_programs());
}

/// Replays one input with every step printed:
/// `FUZZ_INPUT=fuzz/artifacts/core_steps/crash-... FUZZ_TRACE=1 cargo test -p cluster-mode-core --test fuzz_replay -- --ignored replay_one --nocapture`.
#[test]
#[ignore = "debug tool: set FUZZ_INPUT (and FUZZ_TRACE=1)"]
fn replay_one() {
    let path = std::env::var("FUZZ_INPUT").expect("FUZZ_INPUT names a file");
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path))
        .expect("readable input");
    harness::decode_one(&bytes);
    harness::run_core(&bytes);
}
