//! The wire format: every byte string decodes to an envelope or an error, never a
//! panic; valid frames round-trip; mutated frames are either rejected or decode to
//! something the core then judges on its own.

use cluster_mode_core::message::{
    Append, AppendReply, ProbeAck, ProbeState, SnapshotChunk, SnapshotChunkAck, VoteRequest,
};
use cluster_mode_core::{
    Address, Change, ClusterId, DecodeError, Entry, Envelope, Instant, Member, Membership, Message,
    NodeId, Snapshot, PROTOCOL_VERSION,
};
use proptest::prelude::*;

fn sample_messages() -> Vec<Message> {
    let mut m = Membership::default();
    m.members.insert(
        NodeId(3),
        Member {
            addr: Address::new("10.0.0.3:7946"),
            name: Some("pod-3".into()),
            voter: true,
        },
    );
    vec![
        Message::Probe,
        Message::ProbeAck(ProbeAck {
            name: Some("pod-1".into()),
            state: ProbeState::Member {
                term: 4,
                leader: Some((NodeId(3), Address::new("10.0.0.3:7946"))),
                last_index: 9,
                last_term: 4,
                your_config: Some(Snapshot {
                    index: 9,
                    term: 4,
                    membership: m,
                    data: Default::default(),
                }),
            },
        }),
        Message::Vote(VoteRequest {
            term: 5,
            last_index: 9,
            last_term: 4,
            transfer: false,
        }),
        Message::Append(Append {
            term: 5,
            prev_index: 9,
            prev_term: 4,
            entries: vec![Entry {
                term: 5,
                index: 10,
                change: Change::Promote { id: NodeId(8) },
            }],
            commit: 9,
            sent_at: Instant::from_millis(1234),
            hold: None,
        }),
        Message::AppendReply(AppendReply {
            term: 5,
            success: true,
            index: 10,
            sent_at: Instant::from_millis(1234),
            at: Default::default(),
            released: Vec::new(),
        }),
        Message::TimeoutNow { term: 5 },
        Message::Join { name: None },
        Message::SnapshotChunk(piece()),
        Message::SnapshotChunkAck(SnapshotChunkAck {
            term: 5,
            index: 9,
            received: 300,
            sent_at: Instant::from_millis(1234),
        }),
    ]
}

fn piece() -> SnapshotChunk {
    SnapshotChunk {
        term: 5,
        index: 9,
        snapshot_term: 4,
        offset: 300,
        total: 1_000,
        bytes: vec![7; 300],
        sent_at: Instant::from_millis(1234),
    }
}

#[test]
fn a_snapshot_piece_outside_its_limits_is_refused_with_the_reason() {
    use cluster_mode_core::message::{MAX_SNAPSHOT_CHUNK_LEN, MAX_SNAPSHOT_LEN};
    type Case = (fn(&mut SnapshotChunk), &'static str);
    let cases: Vec<Case> = vec![
        (|c| c.bytes.clear(), "empty snapshot chunk"),
        (
            |c| c.offset = 701,
            "snapshot chunk beyond the snapshot's end",
        ),
        (
            |c| c.offset = u64::MAX - 10,
            "snapshot chunk beyond the snapshot's end",
        ),
        (
            |c| c.total = MAX_SNAPSHOT_LEN + 1,
            "snapshot over its limit",
        ),
        (
            |c| c.snapshot_term = 6,
            "snapshot from a later term than the leader's",
        ),
        (
            |c| {
                c.bytes = vec![0; MAX_SNAPSHOT_CHUNK_LEN + 1];
                c.total = MAX_SNAPSHOT_LEN;
            },
            "snapshot chunk over its limit",
        ),
    ];
    for (mutate, why) in cases {
        let mut c = piece();
        mutate(&mut c);
        assert_eq!(
            Envelope::decode(&envelope(Message::SnapshotChunk(c)).encode()),
            Err(DecodeError::Invalid(why))
        );
    }
    // The last piece of a snapshot ends at its end.
    let mut c = piece();
    c.offset = 700;
    let env = envelope(Message::SnapshotChunk(c));
    assert_eq!(Envelope::decode(&env.encode()), Ok(env));
}

fn envelope(msg: Message) -> Envelope {
    Envelope {
        version: PROTOCOL_VERSION,
        cluster: Some(ClusterId(0xfeed)),
        from: NodeId(u128::MAX - 1),
        from_addr: Address::new("10.0.0.1:7946"),
        to: Some(NodeId(2)),
        msg,
    }
}

#[test]
fn every_message_round_trips() {
    for msg in sample_messages() {
        let env = envelope(msg);
        assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
    }
}

#[test]
fn a_frame_from_a_newer_protocol_says_so() {
    let mut env = envelope(Message::Probe);
    env.version = PROTOCOL_VERSION + 1;
    assert_eq!(
        Envelope::decode(&env.encode()),
        Err(DecodeError::UnsupportedVersion(PROTOCOL_VERSION + 1))
    );
}

#[test]
fn an_oversized_frame_is_refused_before_parsing() {
    let big = vec![0u8; cluster_mode_core::message::MAX_FRAME_LEN + 1];
    assert!(matches!(
        Envelope::decode(&big),
        Err(DecodeError::TooLarge(_))
    ));
}

#[test]
fn a_truncated_frame_is_malformed() {
    let mut bytes = envelope(Message::Probe).encode();
    // Half a frame, and a bare version byte.
    bytes.truncate(bytes.len() / 2);
    assert!(matches!(
        Envelope::decode(&bytes),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        Envelope::decode(&[cluster_mode_core::PROTOCOL_VERSION as u8]),
        Err(DecodeError::Malformed(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in 0usize..7,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = envelope(sample_messages()[which].clone()).encode();
        for (pos, val) in flips {
            let i = pos % bytes.len();
            bytes[i] ^= val;
        }
        let _ = Envelope::decode(&bytes);
        let keep = cut % (bytes.len() + 1);
        let _ = Envelope::decode(&bytes[..keep]);
    }
}
