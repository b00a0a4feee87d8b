//! Regression tests for what the fuzzer found (`fuzz/README.md`, "Findings"). Each
//! drives a durable core by hand: the finding was a state the core accepted that its
//! own `DurableState::validate` refuses, so the node could not restart.

use cluster_mode_core::message::{
    Append, AppendReply, ProbeAck, ProbeState, SnapshotMsg, VoteReply,
};
use cluster_mode_core::{
    Address, Change, ClusterCore, ClusterId, Command, Config, DurableState, Entry, Envelope,
    Identity, Input, Instant, Member, Membership, Message, NodeId, Rejected, Snapshot,
    PROTOCOL_VERSION,
};

const ME: NodeId = NodeId(1);
const LEADER: NodeId = NodeId(2);
const CLUSTER: ClusterId = ClusterId((1 << 96) | 7);
const TERM: u64 = 5;

fn addr(id: NodeId) -> Address {
    Address::new(format!("10.0.0.{}:7946", id.0))
}

fn membership() -> Membership {
    let mut m = Membership::default();
    for id in [ME, LEADER, NodeId(3)] {
        m.members.insert(
            id,
            Member {
                addr: addr(id),
                name: None,
                voter: true,
            },
        );
    }
    m
}

/// A durable follower in term 5 whose log ends at (term 4, index 4).
fn follower() -> ClusterCore {
    let state = DurableState {
        id: ME,
        cluster: Some(CLUSTER),
        term: TERM,
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
    let me = Identity::new(ME, addr(ME));
    let mut core = ClusterCore::restore(me, Config::fast_test(), 1, Instant::ZERO, state)
        .expect("valid state");
    drain_and_check(&mut core);
    core
}

fn fresh() -> ClusterCore {
    let me = Identity::new(ME, addr(ME));
    let mut core = ClusterCore::new(me, Config::fast_test(), 1, Instant::ZERO)
        .expect("valid config")
        .durable();
    drain_and_check(&mut core);
    core
}

/// Drains the commands; every persisted state must be restorable.
fn drain_and_check(core: &mut ClusterCore) {
    while let Some(c) = core.poll_command() {
        if let Command::Persist(state) = c {
            if let Err(e) = state.validate(ME) {
                panic!("persisted a state that cannot be restored: {e}");
            }
        }
    }
    let state = core.durable_state();
    if let Err(e) = state.validate(ME) {
        panic!("durable state cannot be restored: {e}");
    }
}

fn from_leader(cluster: Option<ClusterId>, msg: Message) -> Input {
    Input::Message(Envelope {
        version: PROTOCOL_VERSION,
        cluster,
        from: LEADER,
        from_addr: addr(LEADER),
        to: Some(ME),
        msg,
    })
}

fn append(entries: &[(u64, u64)]) -> Message {
    Message::Append(Append {
        term: TERM,
        prev_index: 4,
        prev_term: 4,
        entries: entries
            .iter()
            .map(|&(index, term)| Entry {
                term,
                index,
                change: Change::Noop,
            })
            .collect(),
        commit: 3,
        sent_at: Instant::ZERO,
        hold: None,
    })
}

fn invalid(r: Result<(), Rejected>) -> bool {
    matches!(r, Err(Rejected::Invalid(_)))
}

#[test]
fn an_append_whose_entry_terms_decrease_is_refused_and_the_log_stays_restorable() {
    let mut core = follower();
    let now = Instant::from_millis(1);
    // Entry 6 has a term below entry 5's, and entry 5's a term below prev_term.
    for bad in [&[(5, 5), (6, 4)][..], &[(5, 3)][..]] {
        let r = core.handle(now, from_leader(Some(CLUSTER), append(bad)));
        assert!(invalid(r.clone()), "{bad:?}: {r:?}");
        drain_and_check(&mut core);
    }
    assert_eq!(core.last_log_id(), (4, 4), "nothing stored");
    // The honest append is still taken.
    core.handle(now, from_leader(Some(CLUSTER), append(&[(5, 5), (6, 5)])))
        .expect("accepted");
    drain_and_check(&mut core);
    assert_eq!(core.last_log_id(), (5, 6));
}

#[test]
fn an_append_with_an_entry_from_a_later_term_than_the_leaders_is_refused() {
    let mut core = follower();
    let r = core.handle(
        Instant::from_millis(1),
        from_leader(Some(CLUSTER), append(&[(5, TERM + 1)])),
    );
    assert!(invalid(r.clone()), "{r:?}");
    drain_and_check(&mut core);
    assert!(core.last_log_id().0 <= core.term());
}

#[test]
fn a_snapshot_or_probe_answer_from_a_later_term_than_its_own_is_refused() {
    let snapshot = Snapshot {
        index: 8,
        term: TERM + 3,
        membership: membership(),
        data: Default::default(),
    };
    let mut core = follower();
    let snap = Message::Snapshot(SnapshotMsg {
        term: TERM,
        snapshot: snapshot.clone(),
        entries: Vec::new(),
        sent_at: Instant::ZERO,
    });
    let r = core.handle(Instant::from_millis(1), from_leader(Some(CLUSTER), snap));
    assert!(invalid(r.clone()), "{r:?}");
    drain_and_check(&mut core);

    // A fresh node that a probed member tells "you are in my configuration".
    let mut core = fresh();
    let ack = Message::ProbeAck(ProbeAck {
        name: None,
        state: ProbeState::Member {
            term: TERM,
            leader: Some((LEADER, addr(LEADER))),
            last_index: 8,
            last_term: TERM + 3,
            your_config: Some(snapshot),
        },
    });
    let r = core.handle(Instant::from_millis(1), from_leader(Some(CLUSTER), ack));
    assert!(invalid(r.clone()), "{r:?}");
    drain_and_check(&mut core);
    assert_eq!(core.cluster(), None);
}

#[test]
fn a_node_in_no_cluster_takes_no_term_from_a_late_reply() {
    let mut core = fresh();
    let now = Instant::from_millis(1);
    let replies = [
        Message::AppendReply(AppendReply {
            term: 9,
            success: false,
            index: 0,
            sent_at: Instant::ZERO,
            at: Default::default(),
            released: Vec::new(),
        }),
        Message::VoteReply(VoteReply {
            term: 9,
            granted: false,
        }),
        Message::PreVoteReply(VoteReply {
            term: 9,
            granted: false,
        }),
    ];
    for msg in replies {
        // From the cluster it left, or from a sender that names none.
        for cluster in [Some(CLUSTER), None] {
            let _ = core.handle(now, from_leader(cluster, msg.clone()));
            drain_and_check(&mut core);
            assert_eq!(
                core.term(),
                0,
                "{msg:?} gave a node outside any cluster a term"
            );
        }
    }
}
