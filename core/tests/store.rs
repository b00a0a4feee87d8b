//! The key-value store through the core (issue 12): writes forwarded to the primary
//! and answered at commit, retries applied once, reads at each consistency level,
//! and the answers a node gives when it cannot serve.

mod common;

use cluster_mode_core::store::{
    ClientId, Consistency, Read, ReadAnswer, Revision, StoreAnswer, StoreError, StoreRequest,
    Write, WriteOp, WriteOutcome, MAX_VALUE_LEN,
};
use cluster_mode_core::{Config, Input};
use common::Net;
use std::time::Duration;

type Answer = Result<StoreAnswer, StoreError>;

/// A settled three-node network, its primary and the two followers.
fn settled3(seed: u64) -> (Net, usize, [usize; 2]) {
    settled3_with(seed, Config::fast_test())
}

fn settled3_with(seed: u64, cfg: Config) -> (Net, usize, [usize; 2]) {
    let mut net = Net::with_nodes(seed, cfg, 3);
    net.run_until_settled(3_000).expect("settles");
    net.run_for(100);
    let p = net.the_primary().expect("primary");
    let mut f = (0..3).filter(|s| *s != p);
    (net, p, [f.next().unwrap(), f.next().unwrap()])
}

fn ask(net: &mut Net, slot: usize, id: u64, request: StoreRequest) {
    net.input(slot, Input::Store { id, request });
}

fn answer_of(net: &Net, id: u64) -> Option<Answer> {
    net.store_replies
        .iter()
        .find(|r| r.id == id)
        .map(|r| r.result.clone())
}

/// Runs until request `id` is answered (at most `max_ms`); exactly one answer.
fn wait(net: &mut Net, id: u64, max_ms: u64) -> Answer {
    for _ in 0..max_ms {
        if let Some(a) = answer_of(net, id) {
            let n = net.store_replies.iter().filter(|r| r.id == id).count();
            assert_eq!(n, 1, "request {id} answered {n} times");
            return a;
        }
        net.run_for(1);
    }
    panic!("request {id} unanswered after {max_ms} ms");
}

fn register(net: &mut Net, slot: usize, id: u64) -> ClientId {
    ask(net, slot, id, StoreRequest::Register);
    match wait(net, id, 1_000) {
        Ok(StoreAnswer::Registered(c)) => c,
        other => panic!("registration: {other:?}"),
    }
}

fn put(client: ClientId, seq: u64, key: &str, value: &str) -> StoreRequest {
    StoreRequest::Write(Write {
        client,
        seq,
        acked_below: 1,
        op: WriteOp::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        },
    })
}

fn get(key: &str, consistency: Consistency) -> StoreRequest {
    StoreRequest::Read {
        read: Read::Get { key: key.into() },
        consistency,
    }
}

fn put_revision(a: Answer) -> Revision {
    match a {
        Ok(StoreAnswer::Written(WriteOutcome::Put { revision })) => revision,
        other => panic!("not a committed put: {other:?}"),
    }
}

fn value_read(a: &Answer) -> Option<(Vec<u8>, Revision)> {
    match a {
        Ok(StoreAnswer::Read {
            answer: ReadAnswer::Get(v),
            ..
        }) => v.as_ref().map(|v| (v.value.clone(), v.revision)),
        other => panic!("not a read: {other:?}"),
    }
}

#[test]
fn a_write_through_a_follower_commits_and_every_consistency_reads_it() {
    for seed in 1..=5 {
        let (mut net, p, [f, g]) = settled3(seed);
        let c = register(&mut net, f, 1);
        ask(&mut net, f, 2, put(c, 1, "shard/7", "node-b"));
        let rev = put_revision(wait(&mut net, 2, 1_000));
        assert!(
            rev > c.0,
            "a write's revision is its log index, after the session's"
        );

        ask(&mut net, g, 3, get("shard/7", Consistency::Linearizable));
        let a = wait(&mut net, 3, 1_000);
        assert_eq!(
            value_read(&a),
            Some((b"node-b".to_vec(), rev)),
            "seed {seed}"
        );
        ask(&mut net, p, 4, get("shard/7", Consistency::Lease));
        let a = wait(&mut net, 4, 1_000);
        assert_eq!(
            value_read(&a),
            Some((b"node-b".to_vec(), rev)),
            "seed {seed}"
        );
        // A heartbeat round later every follower holds it.
        net.run_for(50);
        let local = Consistency::Local {
            max_lag: Duration::from_millis(100),
        };
        ask(&mut net, g, 5, get("shard/7", local));
        let a = wait(&mut net, 5, 10);
        assert_eq!(
            value_read(&a),
            Some((b"node-b".to_vec(), rev)),
            "seed {seed}"
        );
        ask(&mut net, g, 6, get("absent", Consistency::Linearizable));
        assert_eq!(value_read(&wait(&mut net, 6, 1_000)), None);
    }
}

#[test]
fn a_retried_write_is_applied_once_whichever_member_forwards_it() {
    for seed in 1..=5 {
        let (mut net, p, [f, g]) = settled3(seed);
        let c = register(&mut net, f, 1);
        ask(&mut net, f, 2, put(c, 1, "k", "first"));
        let rev = put_revision(wait(&mut net, 2, 1_000));
        ask(&mut net, f, 3, put(c, 2, "k", "second"));
        let rev2 = put_revision(wait(&mut net, 3, 1_000));
        // The first write again (a client that never saw its answer), through
        // another member and through the primary: the saved outcome, no new value.
        ask(&mut net, g, 4, put(c, 1, "k", "first"));
        assert_eq!(put_revision(wait(&mut net, 4, 1_000)), rev, "seed {seed}");
        ask(&mut net, p, 5, put(c, 1, "k", "first"));
        assert_eq!(put_revision(wait(&mut net, 5, 1_000)), rev, "seed {seed}");
        ask(&mut net, g, 6, get("k", Consistency::Linearizable));
        let a = wait(&mut net, 6, 1_000);
        assert_eq!(
            value_read(&a),
            Some((b"second".to_vec(), rev2)),
            "seed {seed}"
        );
    }
}

/// The primary is cut off from the others, which elect a new primary and commit a
/// write. Reads asked of the old primary meanwhile (linearizable or lease) must
/// never miss that write once it was acknowledged: they are answered from the old
/// data only while no other primary can exist, or not at all.
#[test]
fn a_cut_off_primary_never_serves_a_read_that_misses_an_acknowledged_write() {
    for seed in 1..=20 {
        let (mut net, p, [f, _]) = settled3(seed);
        let c = register(&mut net, f, 1);
        ask(&mut net, f, 2, put(c, 1, "k", "old"));
        put_revision(wait(&mut net, 2, 1_000));
        net.isolate(p);
        let mut id = 100;
        let mut asked = Vec::new();
        let mut write_acked_at = None;
        let mut seq = 2;
        for step in 0..400u64 {
            // A read of each kind at the old primary every 2 ms.
            if step % 2 == 0 {
                for consistency in [Consistency::Linearizable, Consistency::Lease] {
                    id += 1;
                    asked.push((id, net.now));
                    ask(&mut net, p, id, get("k", consistency));
                }
            }
            // The majority side writes "new" until it commits.
            if write_acked_at.is_none() && step % 20 == 0 {
                id += 1;
                ask(&mut net, f, id, put(c, seq, "k", "new"));
                seq += 1;
            }
            net.run_for(1);
            if write_acked_at.is_none() {
                write_acked_at = net
                    .store_replies
                    .iter()
                    .find(|r| {
                        r.slot == f
                            && matches!(
                                r.result,
                                Ok(StoreAnswer::Written(WriteOutcome::Put { .. }))
                            )
                            && r.id > 2
                    })
                    .map(|r| r.at);
            }
        }
        let acked = write_acked_at.expect("the majority commits a write");
        let mut served_old = 0;
        for (rid, asked_at) in asked {
            let Some(a) = answer_of(&net, rid) else {
                continue;
            };
            if a.is_ok() {
                let (value, _) = value_read(&a).expect("present");
                if value == b"old" {
                    served_old += 1;
                    assert!(
                        asked_at < acked,
                        "seed {seed}: read {rid} asked at {asked_at} ns returned the old value \
                         after the new one was acknowledged at {acked} ns"
                    );
                }
            }
        }
        assert!(
            served_old > 0,
            "seed {seed}: the lease served reads at first"
        );
    }
}

#[test]
fn a_forwarded_request_without_an_answer_ends_maybe_committed_or_no_primary() {
    let (mut net, p, [f, _]) = settled3(7);
    let c = register(&mut net, f, 1);
    net.crash(p);
    let timeout = Config::fast_test().store_request_timeout;
    ask(&mut net, f, 2, put(c, 1, "k", "v"));
    ask(&mut net, f, 3, get("k", Consistency::Linearizable));
    let limit = timeout.as_millis() as u64 + 50;
    // Either the follower gave up on the crashed primary, or a new primary answered.
    let w = wait(&mut net, 2, limit);
    let r = wait(&mut net, 3, limit);
    assert!(
        matches!(w, Err(StoreError::MaybeCommitted) | Ok(_)),
        "write: {w:?}"
    );
    assert!(
        matches!(r, Err(StoreError::NoPrimary) | Ok(_)),
        "read: {r:?}"
    );
}

/// A request timeout far longer than any failover here: an answer that comes in
/// time comes from the follower acting on the leader change, not from the deadline.
fn patient() -> Config {
    Config {
        store_request_timeout: Duration::from_secs(10),
        ..Config::fast_test()
    }
}

/// P14: a follower that loses its leader (no word from it within the election
/// timeout) answers its forwarded requests at once, a write "maybe committed" and a
/// read "no primary", instead of at their deadline. Fails if requests wait for
/// `store_request_timeout`.
#[test]
fn a_follower_that_loses_its_leader_answers_its_forwarded_requests_at_once() {
    for seed in 1..=5 {
        let (mut net, _, [f, _]) = settled3_with(seed, patient());
        let c = register(&mut net, f, 1);
        net.isolate(f);
        let asked = net.now;
        ask(&mut net, f, 2, put(c, 1, "k", "v"));
        ask(&mut net, f, 3, get("k", Consistency::Linearizable));
        // Within the election timeout (at most 120 ms) and a little; not 10 s.
        let max_ms = Config::fast_test().election_timeout_max.as_millis() as u64 + 30;
        assert_eq!(
            wait(&mut net, 2, max_ms),
            Err(StoreError::MaybeCommitted),
            "seed {seed}"
        );
        assert_eq!(
            wait(&mut net, 3, max_ms),
            Err(StoreError::NoPrimary),
            "seed {seed}"
        );
        assert!(net.now - asked <= max_ms * 1_000_000, "seed {seed}");
        // The application retries the same write once the network heals: applied once.
        net.heal();
        net.run_until_settled(net.now / 1_000_000 + 3_000)
            .expect("settles");
        ask(&mut net, f, 4, put(c, 1, "k", "v"));
        let rev = put_revision(wait(&mut net, 4, 1_000));
        ask(&mut net, f, 5, put(c, 1, "k", "v"));
        assert_eq!(put_revision(wait(&mut net, 5, 1_000)), rev, "seed {seed}");
    }
}

/// P14: a follower whose requests went to a leader that stepped down sends them to
/// the next leader as soon as it hears from it; the write commits (once) and the
/// read is served, well before the 10 s deadline. The follower learns the new
/// leader straight from its first append (it missed the election), so it never
/// goes without a leader. Fails if the requests wait for their deadline.
#[test]
fn a_follower_sends_its_waiting_requests_to_the_new_leader_at_once() {
    for seed in 1..=5 {
        let (mut net, p, [f, g]) = settled3_with(seed, patient());
        let c = register(&mut net, f, 1);
        // Nothing from f reaches p any more; p's messages still reach f, which keeps
        // following it. p stops counting f as up to date, so it hands over to g.
        net.cut.insert((f, p));
        net.run_for(200);
        ask(&mut net, f, 2, put(c, 1, "k", "v"));
        ask(&mut net, f, 3, get("k", Consistency::Linearizable));
        net.run_for(2);
        assert!(net.store_replies.iter().all(|r| r.id < 2), "seed {seed}");
        // f misses g's campaign.
        net.cut.insert((g, f));
        net.leave(p);
        for _ in 0..100 {
            if net.nodes[g].core.is_leader() {
                break;
            }
            net.run_for(1);
        }
        assert!(net.nodes[g].core.is_leader(), "seed {seed}: g leads");
        net.cut.remove(&(g, f));
        let rev = put_revision(wait(&mut net, 2, 100));
        match wait(&mut net, 3, 100) {
            Ok(StoreAnswer::Read { .. }) => {}
            other => panic!("seed {seed}: read {other:?}"),
        }
        // Applied once: the same write again gets the same revision.
        ask(&mut net, f, 4, put(c, 1, "k", "v"));
        assert_eq!(put_revision(wait(&mut net, 4, 1_000)), rev, "seed {seed}");
    }
}

/// Many requests asked of a follower at once travel in a few `StoreRequests`
/// batches and come back in a few `StoreReplies`, each answered exactly once.
#[test]
fn a_follower_forwards_concurrent_requests_in_batches() {
    let (mut net, _, [f, _]) = settled3(3);
    let c = register(&mut net, f, 1);
    net.msg_trace = common::MsgTrace::All;
    let first = net.trace.len();
    for i in 0..100u64 {
        ask(&mut net, f, 10 + i, put(c, 1 + i, &format!("k{i}"), "v"));
    }
    for i in 0..100u64 {
        put_revision(wait(&mut net, 10 + i, 1_000));
    }
    let count = |what: &str| {
        net.trace[first..]
            .iter()
            .filter(|l| l.contains(what))
            .count()
    };
    let (requests, replies) = (count("StoreRequests"), count("StoreReplies"));
    // Two single requests go out before the rest queue behind them (two batches in
    // flight at most); the rest go in one batch.
    assert!(requests <= 3, "{requests} StoreRequests messages");
    // Appends carry at most 64 entries: the 98 commit in two rounds or so.
    assert!(replies <= 6, "{replies} StoreReplies messages");
}

/// An empty store batch, or one over `MAX_STORE_BATCH`, is refused with a reason by
/// `decode` and by the core; the largest allowed one is accepted.
#[test]
fn a_store_batch_over_its_limits_is_refused_with_a_reason() {
    use cluster_mode_core::message::{DecodeError, MAX_STORE_BATCH};
    use cluster_mode_core::{Envelope, Message, Rejected, PROTOCOL_VERSION};
    let (mut net, p, [f, _]) = settled3(4);
    let envelope = |net: &Net, msg: Message| {
        let from = &net.nodes[f].core;
        Envelope {
            version: PROTOCOL_VERSION,
            cluster: from.cluster(),
            from: from.identity().id,
            from_addr: from.identity().addr.clone(),
            to: Some(net.nodes[p].core.identity().id),
            msg,
        }
    };
    let reads = |n: usize| Message::StoreRequests {
        requests: (0..n as u64)
            .map(|id| (id, get("k", Consistency::Linearizable)))
            .collect(),
    };
    let answers = |n: usize| Message::StoreReplies {
        replies: (0..n as u64)
            .map(|id| (id, Err(StoreError::NoPrimary)))
            .collect(),
    };
    for msg in [
        reads(0),
        reads(MAX_STORE_BATCH + 1),
        answers(0),
        answers(MAX_STORE_BATCH + 1),
    ] {
        let env = envelope(&net, msg);
        assert!(matches!(
            Envelope::decode(&env.encode()),
            Err(DecodeError::Invalid(_))
        ));
        let now = net.local(p, net.now);
        assert!(matches!(
            net.nodes[p]
                .core
                .handle(now, cluster_mode_core::Input::Message(env)),
            Err(Rejected::Invalid(_))
        ));
    }
    for msg in [reads(MAX_STORE_BATCH), answers(MAX_STORE_BATCH)] {
        let env = envelope(&net, msg);
        assert_eq!(Envelope::decode(&env.encode()), Ok(env));
    }
}

/// FINDINGS #17: a member restarted with its data knows only its base membership until
/// a leader tells it the commit; a request forwarded to it meanwhile by a member
/// added later must be answered "no primary" (ask the next one), never "not
/// committed" (which would also hide an earlier "maybe committed" from the shell).
#[test]
fn a_restarted_member_that_does_not_lead_answers_forwarded_requests_no_primary() {
    let mut answered = 0;
    for seed in 1..=10 {
        let mut net = Net::with_nodes(seed, Config::fast_test(), 0);
        net.durable = true;
        for _ in 0..3 {
            net.add_node();
        }
        net.run_until_settled(3_000).expect("settles");
        let late = net.add_node();
        net.run_until_settled(net.now / 1_000_000 + 3_000)
            .expect("the fourth member joins");
        net.run_for(100);
        let p = net.the_primary().expect("primary");
        if p == late {
            continue;
        }
        let c = register(&mut net, late, 1);
        // The primary's process restarts with its data; the late member still
        // forwards to it.
        net.crash(p);
        net.restart_with_data(p);
        ask(&mut net, late, 2, put(c, 1, "k", "v"));
        ask(&mut net, late, 3, get("k", Consistency::Linearizable));
        for id in [2, 3] {
            let a = wait(&mut net, id, 3_000);
            assert!(
                !matches!(a, Err(StoreError::NotCommitted(_))),
                "seed {seed}: request {id} answered {a:?}"
            );
        }
        answered += 1;
    }
    assert!(
        answered >= 5,
        "only {answered} seeds had a follower primary"
    );
}

#[test]
fn bad_requests_and_nodes_outside_a_cluster_answer_at_once_with_the_reason() {
    let (mut net, _, [f, _]) = settled3(3);
    let c = register(&mut net, f, 1);
    let big = "x".repeat(MAX_VALUE_LEN + 1);
    let sent_before = net.messages;
    ask(&mut net, f, 2, put(c, 1, "k", &big));
    assert!(matches!(
        answer_of(&net, 2),
        Some(Err(StoreError::TooLarge { len, .. })) if len == MAX_VALUE_LEN + 1
    ));
    ask(&mut net, f, 3, put(c, 0, "k", "v"));
    assert!(matches!(
        answer_of(&net, 3),
        Some(Err(StoreError::Invalid(_)))
    ));
    assert_eq!(net.messages, sent_before, "nothing was sent for them");
    // An unregistered session: refused by the state machine, nothing written.
    ask(&mut net, f, 4, put(ClientId(999_999), 1, "k", "v"));
    assert_eq!(wait(&mut net, 4, 1_000), Err(StoreError::SessionExpired));
    ask(&mut net, f, 5, get("k", Consistency::Linearizable));
    assert_eq!(value_read(&wait(&mut net, 5, 1_000)), None);

    let fresh = net.add_node();
    ask(&mut net, fresh, 6, get("k", Consistency::Linearizable));
    assert_eq!(answer_of(&net, 6), Some(Err(StoreError::NoPrimary)));
}

#[test]
fn a_local_read_is_refused_once_the_member_lost_the_primary_for_longer_than_max_lag() {
    let (mut net, _, [f, _]) = settled3(5);
    let c = register(&mut net, f, 1);
    ask(&mut net, f, 2, put(c, 1, "k", "v"));
    wait(&mut net, 2, 1_000).expect("committed");
    net.run_for(30);
    let local = |ms| Consistency::Local {
        max_lag: Duration::from_millis(ms),
    };
    ask(&mut net, f, 3, get("k", local(40)));
    assert!(value_read(&wait(&mut net, 3, 1)).is_some());
    net.isolate(f);
    net.run_for(60);
    ask(&mut net, f, 4, get("k", local(40)));
    assert_eq!(wait(&mut net, 4, 1), Err(StoreError::TooStale));
    ask(&mut net, f, 5, get("k", local(1_000)));
    assert!(
        value_read(&wait(&mut net, 5, 1)).is_some(),
        "within a longer lag"
    );
}

#[test]
fn a_member_added_later_receives_the_data_with_its_snapshot() {
    let (mut net, _, [f, _]) = settled3(9);
    let c = register(&mut net, f, 1);
    for i in 0..100u64 {
        ask(&mut net, f, 10 + i, put(c, 1 + i, &format!("k{i:03}"), "v"));
    }
    for i in 0..100u64 {
        wait(&mut net, 10 + i, 2_000).expect("committed");
    }
    let n = net.add_node();
    net.run_for(2_000);
    let local = Consistency::Local {
        max_lag: Duration::from_millis(100),
    };
    ask(
        &mut net,
        n,
        500,
        StoreRequest::Read {
            read: Read::Range {
                prefix: "k".into(),
                limit: 1_000,
            },
            consistency: local,
        },
    );
    match wait(&mut net, 500, 1) {
        Ok(StoreAnswer::Read {
            answer: ReadAnswer::Range { entries, more },
            ..
        }) => assert_eq!((entries.len(), more), (100, false)),
        other => panic!("range: {other:?}"),
    }
}

/// A snapshot larger than `snapshot_chunk_len` travels in pieces, one in flight at
/// a time; the newcomer installs it whole. Here the pieces are 256 bytes and the
/// store about 20 KiB, so a joiner needs some eighty of them; the same happens with
/// the default 256 KiB pieces and a store of up to `MAX_STORE_BYTES`.
#[test]
fn a_member_added_later_receives_a_large_store_in_pieces() {
    for seed in [9, 10, 11] {
        let mut cfg = Config::fast_test();
        cfg.snapshot_chunk_len = 256;
        let mut net = Net::with_nodes(seed, cfg, 3);
        net.run_until_settled(3_000).expect("settles");
        let f = (0..3).find(|s| Some(*s) != net.the_primary()).unwrap();
        let c = register(&mut net, f, 1);
        // Enough writes for the log to fold its oldest entries into its base: a
        // newcomer then needs the snapshot.
        let writes = 2_200u64;
        let value = "v".repeat(64);
        for wave in (0..writes).collect::<Vec<_>>().chunks(500) {
            for &i in wave {
                let mut w = put(c, 1 + i, &format!("k{:03}", i % 300), &value);
                if let StoreRequest::Write(w) = &mut w {
                    w.acked_below = 1 + wave[0];
                }
                ask(&mut net, f, 10 + i, w);
            }
            for &i in wave {
                wait(&mut net, 10 + i, 5_000).expect("committed");
            }
        }
        let before = net.snapshot_pieces;
        let n = net.add_node();
        net.run_for(3_000);
        let pieces = net.snapshot_pieces - before;
        assert!(pieces >= 50, "seed {seed}: {pieces} pieces");
        let local = Consistency::Local {
            max_lag: Duration::from_millis(100),
        };
        let range = StoreRequest::Read {
            read: Read::Range {
                prefix: "k".into(),
                limit: 1_000,
            },
            consistency: local,
        };
        ask(&mut net, n, 50_000, range);
        match wait(&mut net, 50_000, 1) {
            Ok(StoreAnswer::Read {
                answer: ReadAnswer::Range { entries, more },
                ..
            }) => {
                assert_eq!((entries.len(), more), (300, false), "seed {seed}");
                assert!(entries.iter().all(|(_, v)| v.value == value.as_bytes()));
            }
            other => panic!("seed {seed}: range: {other:?}"),
        }
    }
}

/// A primary paused (a GC stall) while the others elect a new primary and commit a
/// write comes back still believing it leads. A read it is asked before it hears
/// anything must not be served from its old data: a linearizable read waits for a
/// majority's acknowledgement, a lease read finds its lease over.
#[test]
fn a_resumed_primary_does_not_serve_its_old_data_to_a_read_asked_at_once() {
    for seed in 1..=10 {
        let (mut net, p, [f, _]) = settled3(seed);
        let c = register(&mut net, f, 1);
        ask(&mut net, f, 2, put(c, 1, "k", "old"));
        put_revision(wait(&mut net, 2, 1_000));
        net.pause(p);
        net.run_for(400);
        ask(&mut net, f, 3, put(c, 2, "k", "new"));
        put_revision(wait(&mut net, 3, 1_000));
        net.resume(p);
        ask(&mut net, p, 4, get("k", Consistency::Linearizable));
        ask(&mut net, p, 5, get("k", Consistency::Lease));
        for id in [4, 5] {
            let a = wait(&mut net, id, 1_000);
            if a.is_ok() {
                let (value, _) = value_read(&a).expect("present");
                assert_eq!(value, b"new", "seed {seed}: request {id} served stale data");
            } else {
                assert_eq!(a, Err(StoreError::NoPrimary), "seed {seed}");
            }
        }
    }
}

/// Watchers read the changes a node applied, in revision order, without the writes
/// that changed nothing; a node that installed a snapshot has no changes from before
/// it, and says from which revision it has them all.
#[test]
fn applied_changes_are_kept_in_order_for_watchers_and_start_afresh_at_a_snapshot() {
    use cluster_mode_core::store::{DataChange, WATCH_HISTORY};
    let (mut net, _, [f, g]) = settled3(4);
    let c = register(&mut net, f, 1);
    let del = |seq| {
        StoreRequest::Write(Write {
            client: c,
            seq,
            acked_below: 1,
            op: WriteOp::Delete { key: "a".into() },
        })
    };
    let cas_wrong = StoreRequest::Write(Write {
        client: c,
        seq: 4,
        acked_below: 1,
        op: WriteOp::CompareAndSwap {
            key: "b".into(),
            expected: 1,
            value: b"x".to_vec(),
        },
    });
    let requests = [
        put(c, 1, "a", "1"),
        put(c, 2, "b", "2"),
        del(3),
        cas_wrong,
        del(5),
    ];
    for (i, r) in requests.into_iter().enumerate() {
        ask(&mut net, f, 10 + i as u64, r);
        wait(&mut net, 10 + i as u64, 1_000).expect("committed");
    }
    net.run_for(50);
    let seen: Vec<DataChange> = net.nodes[g]
        .core
        .store_changes(c.0)
        .expect("kept")
        .cloned()
        .collect();
    let summary: Vec<(&str, Option<&[u8]>)> = seen
        .iter()
        .map(|c| (c.key.as_str(), c.value.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![("a", Some(&b"1"[..])), ("b", Some(&b"2"[..])), ("a", None)],
        "the mismatched swap and the delete of an absent key change nothing"
    );
    assert!(seen.windows(2).all(|w| w[0].revision < w[1].revision));

    // More changes than are kept: the oldest are gone, and said so.
    let mut id = 100;
    let mut seq = 6;
    while seq < 6 + WATCH_HISTORY as u64 + 10 {
        let batch_start = seq;
        for _ in 0..64 {
            let mut w = put(c, seq, "k", "v");
            if let StoreRequest::Write(w) = &mut w {
                // The batch before this one was answered.
                w.acked_below = batch_start;
            }
            ask(&mut net, f, id, w);
            id += 1;
            seq += 1;
        }
        for i in id - 64..id {
            wait(&mut net, i, 2_000).expect("committed");
        }
    }
    net.run_for(50);
    let oldest = match net.nodes[g].core.store_changes(c.0) {
        Err(oldest) => oldest,
        Ok(_) => panic!("{} changes cannot all be kept", WATCH_HISTORY + 13),
    };
    assert_eq!(
        net.nodes[g]
            .core
            .store_changes(oldest)
            .expect("kept")
            .count(),
        WATCH_HISTORY
    );
    let n = net.add_node();
    net.run_for(2_000);
    let revision = net.nodes[n].core.store_revision();
    assert!(revision > 0, "the new member caught up");
    assert!(
        net.nodes[n].core.store_changes(1).is_err(),
        "a snapshot's changes are unknown to the member that installed it"
    );
}

mod hostile {
    //! Store messages with any content, from members and from strangers, to the
    //! leader and to followers: no panic, no broken invariant, and a member's bad
    //! request is answered with an error rather than applied.

    use super::*;
    use cluster_mode_core::store::{StoreAnswer, StoreError};
    use cluster_mode_core::{Envelope, Message, NodeId, PROTOCOL_VERSION};
    use proptest::prelude::*;

    fn write_op() -> impl Strategy<Value = WriteOp> {
        let key = proptest::collection::vec(any::<char>(), 0..600)
            .prop_map(|c| c.into_iter().collect::<String>());
        let value = (0usize..20_000).prop_map(|n| vec![7u8; n]);
        prop_oneof![
            (key.clone(), value.clone()).prop_map(|(key, value)| WriteOp::Put { key, value }),
            key.clone().prop_map(|key| WriteOp::Delete { key }),
            (key, any::<u64>(), value).prop_map(|(key, expected, value)| {
                WriteOp::CompareAndSwap {
                    key,
                    expected,
                    value,
                }
            }),
        ]
    }

    fn request() -> impl Strategy<Value = StoreRequest> {
        let consistency = prop_oneof![
            Just(Consistency::Linearizable),
            Just(Consistency::Lease),
            any::<u64>().prop_map(|ns| Consistency::Local {
                max_lag: Duration::from_nanos(ns)
            }),
        ];
        prop_oneof![
            Just(StoreRequest::Register),
            (any::<u64>(), any::<u64>(), any::<u64>(), write_op()).prop_map(
                |(client, seq, acked_below, op)| StoreRequest::Write(Write {
                    client: ClientId(client),
                    seq,
                    acked_below,
                    op,
                })
            ),
            ("[a-z/]{0,8}", any::<u32>(), consistency).prop_map(|(prefix, limit, consistency)| {
                StoreRequest::Read {
                    read: Read::Range { prefix, limit },
                    consistency,
                }
            }),
        ]
    }

    fn reply() -> impl Strategy<Value = Result<StoreAnswer, StoreError>> {
        prop_oneof![
            any::<u64>().prop_map(|c| Ok(StoreAnswer::Registered(ClientId(c)))),
            any::<u64>().prop_map(|r| Ok(StoreAnswer::Written(WriteOutcome::Put { revision: r }))),
            Just(Err(StoreError::MaybeCommitted)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_store_message_leaves_every_invariant_intact(
            seed in 1u64..4,
            requests in proptest::collection::vec(
                (0usize..3, any::<bool>(), proptest::collection::vec((any::<u64>(), request()), 0..6)),
                1..8,
            ),
            replies in proptest::collection::vec(
                (0usize..3, proptest::collection::vec((any::<u64>(), reply()), 0..4)),
                0..4,
            ),
        ) {
            let (mut net, p, _) = settled3(seed);
            for (from, stranger, requests) in requests {
                let to = p;
                let f = &net.nodes[from].core;
                let env = Envelope {
                    version: PROTOCOL_VERSION,
                    cluster: f.cluster(),
                    from: if stranger { NodeId(0xdead_beef) } else { f.identity().id },
                    from_addr: f.identity().addr.clone(),
                    to: Some(net.nodes[to].core.identity().id),
                    msg: Message::StoreRequests { requests },
                };
                if from != to {
                    net.input(to, Input::Message(env));
                }
            }
            for (to, replies) in replies {
                let from = (to + 1) % 3;
                let f = &net.nodes[from].core;
                let env = Envelope {
                    version: PROTOCOL_VERSION,
                    cluster: f.cluster(),
                    from: f.identity().id,
                    from_addr: f.identity().addr.clone(),
                    to: Some(net.nodes[to].core.identity().id),
                    msg: Message::StoreReplies { replies },
                };
                net.input(to, Input::Message(env));
            }
            net.run_for(200);
            prop_assert!(net.checker.violations.is_empty(), "{:?}", net.checker.violations);
            // Nothing was answered to this node's application: those were not its requests.
            prop_assert!(net.store_replies.is_empty(), "{:?}", net.store_replies);
            // The data stays within its limits on every member.
            for n in &net.nodes {
                prop_assert!(n.core.store_data().bytes() <= cluster_mode_core::store::MAX_STORE_BYTES);
            }
            prop_assert!(net.settled(), "the cluster still has one agreed primary");
        }

        /// Snapshot pieces with any offsets, lengths and bytes from the leader, and
        /// acknowledgements with any positions from the followers: refused or
        /// dropped with a reason, never a panic, and the cluster keeps its primary.
        #[test]
        fn any_snapshot_piece_or_acknowledgement_leaves_every_invariant_intact(
            seed in 1u64..4,
            pieces in proptest::collection::vec(
                (
                    any::<bool>(),
                    0u64..3,
                    0u64..2,
                    prop_oneof![Just(0u64), Just(300), Just(600), 0u64..4_000],
                    prop_oneof![Just(600u64), Just(1_200), 0u64..5_000],
                    proptest::collection::vec(any::<u8>(), 0..600),
                ),
                1..16,
            ),
            acks in proptest::collection::vec((any::<bool>(), 0u64..4, 0u64..5_000), 0..8),
        ) {
            use cluster_mode_core::message::{SnapshotChunk, SnapshotChunkAck};
            let (mut net, p, fs) = settled3(seed);
            let term = net.nodes[p].core.term();
            let envelope = |net: &Net, from: usize, to: usize, msg: Message| Envelope {
                version: PROTOCOL_VERSION,
                cluster: net.nodes[from].core.cluster(),
                from: net.nodes[from].core.identity().id,
                from_addr: net.nodes[from].core.identity().addr.clone(),
                to: Some(net.nodes[to].core.identity().id),
                msg,
            };
            for (which, index, back, offset, total, bytes) in pieces {
                let to = fs[usize::from(which)];
                let c = SnapshotChunk {
                    term,
                    index,
                    snapshot_term: term.saturating_sub(back),
                    offset,
                    total,
                    bytes,
                    sent_at: cluster_mode_core::Instant::ZERO,
                };
                let env = envelope(&net, p, to, Message::SnapshotChunk(c));
                net.input(to, Input::Message(env));
            }
            for (which, index, received) in acks {
                let from = fs[usize::from(which)];
                let a = SnapshotChunkAck { term, index, received, sent_at: cluster_mode_core::Instant::ZERO };
                let env = envelope(&net, from, p, Message::SnapshotChunkAck(a));
                net.input(p, Input::Message(env));
            }
            net.run_for(300);
            prop_assert!(net.checker.violations.is_empty(), "{:?}", net.checker.violations);
            prop_assert!(net.settled(), "the cluster still has one agreed primary");
        }
    }
}

/// FINDINGS #16 (fixed): a recovery (P11) founded the successor cluster with an
/// empty store, so the data of a cluster that lost most of its voters was lost with
/// them, and the successor's log (its revisions) started again at 1. The founder now
/// carries its data (its whole log's store entries) and the successor's revisions
/// continue above the old ones.
#[test]
fn a_recovered_cluster_keeps_the_data_and_its_revisions_go_on_rising() {
    let (mut net, p, [f, g]) = settled3(2);
    let c = register(&mut net, f, 1);
    ask(&mut net, f, 2, put(c, 1, "k", "before"));
    let rev = put_revision(wait(&mut net, 2, 1_000));
    net.run_for(100);
    // Two of the three voters are lost; new processes come up at their addresses
    // (pods restarted in place, without data): the survivor recovers (P11).
    let survivor = g;
    for s in [p, f] {
        net.crash(s);
        net.restart(s);
    }
    net.run_until_settled(net.now / 1_000_000 + 10_000)
        .expect("the survivor recovers with the new processes");
    ask(&mut net, survivor, 3, get("k", Consistency::Linearizable));
    let a = wait(&mut net, 3, 2_000);
    assert_eq!(
        value_read(&a).map(|(v, _)| v),
        Some(b"before".to_vec()),
        "the data survives"
    );
    let c2 = register(&mut net, survivor, 4);
    ask(&mut net, survivor, 5, put(c2, 1, "k", "after"));
    assert!(
        put_revision(wait(&mut net, 5, 2_000)) > rev,
        "revisions keep rising"
    );
}

fn cas(client: ClientId, seq: u64, key: &str, expected: Revision, value: &str) -> StoreRequest {
    StoreRequest::Write(Write {
        client,
        seq,
        acked_below: 1,
        op: WriteOp::CompareAndSwap {
            key: key.into(),
            expected,
            value: value.as_bytes().to_vec(),
        },
    })
}

/// A write's outcome, whatever it is.
fn outcome(a: Answer) -> WriteOutcome {
    match a {
        Ok(StoreAnswer::Written(o)) => o,
        other => panic!("not a write outcome: {other:?}"),
    }
}

/// Two of three voters lost without data (new processes at their addresses): the
/// third recovers with them (P11).
fn lose_the_majority(net: &mut Net, lost: [usize; 2]) {
    for s in lost {
        net.crash(s);
    }
    net.heal();
    for s in lost {
        net.restart(s);
    }
    net.run_until_settled(net.now / 1_000_000 + 10_000)
        .expect("the survivor recovers with the new processes");
}

/// FINDINGS #16: after a recovery every revision is above every revision seen before
/// it (registrations and writes), so a compare-and-swap expecting a pre-recovery
/// revision matches only if the key was not written since. "j" is written again after
/// the recovery until a write of it reaches j's old revision: with revisions starting
/// again at 1 that write takes the old number and a swap expecting it matches; here it
/// is refused. "k", untouched since, swaps. The pre-recovery session survives too: a
/// retry of its first write is answered with the saved outcome, not applied again.
#[test]
fn revisions_after_a_recovery_rise_above_every_earlier_one_and_old_compare_and_swaps_hold() {
    for seed in [2, 3, 4] {
        let (mut net, p, [f, g]) = settled3(seed);
        let mut seen = Vec::new();
        let c = register(&mut net, f, 1);
        seen.push(c.0);
        let mut id = 10;
        let mut seq = 0;
        // Several writes of "k" first, so that "j"'s revision is well above 1.
        let mut k_revs = Vec::new();
        for _ in 0..8 {
            id += 1;
            seq += 1;
            ask(&mut net, f, id, put(c, seq, "k", &format!("k{seq}")));
            k_revs.push(put_revision(wait(&mut net, id, 1_000)));
        }
        seen.extend(&k_revs);
        id += 1;
        seq += 1;
        ask(&mut net, f, id, put(c, seq, "j", "j-before"));
        let j_rev = put_revision(wait(&mut net, id, 1_000));
        seen.push(j_rev);
        net.run_for(100);
        let before = *seen.iter().max().expect("revisions");

        lose_the_majority(&mut net, [p, f]);
        let s = g;
        // The session came through: the retry of write 1 is answered as before.
        id += 1;
        ask(&mut net, s, id, put(c, 1, "k", "k1"));
        assert_eq!(
            outcome(wait(&mut net, id, 2_000)),
            WriteOutcome::Put {
                revision: k_revs[0]
            },
            "seed {seed}: the retried write is answered with its saved outcome"
        );
        let mut after = Vec::new();
        loop {
            id += 1;
            seq += 1;
            ask(&mut net, s, id, put(c, seq, "j", &format!("j{seq}")));
            after.push(put_revision(wait(&mut net, id, 2_000)));
            if after.last() >= Some(&j_rev) || after.len() > 2 * j_rev as usize {
                break;
            }
        }
        let j_last = *after.last().expect("writes");
        id += 1;
        seq += 1;
        ask(&mut net, s, id, cas(c, seq, "j", j_rev, "j-stale"));
        assert_eq!(
            outcome(wait(&mut net, id, 2_000)),
            WriteOutcome::Mismatch { current: j_last },
            "seed {seed}: a swap expecting j's pre-recovery revision {j_rev}, after j was written again"
        );
        // A swap expecting "k"'s pre-recovery revision: "k" was not written since.
        let k_rev = *k_revs.last().expect("writes");
        id += 1;
        seq += 1;
        ask(&mut net, s, id, cas(c, seq, "k", k_rev, "k-swapped"));
        let swapped = outcome(wait(&mut net, id, 2_000));
        let WriteOutcome::Swapped { revision } = swapped else {
            panic!("seed {seed}: the swap expecting k's revision {k_rev}: {swapped:?}");
        };
        after.push(revision);
        after.push(register(&mut net, s, 1_000).0);
        for r in &after {
            assert!(
                *r > before,
                "seed {seed}: revision {r} after the recovery is not above {before}, the last before it"
            );
        }
        assert!(
            after.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: revisions rise: {after:?}"
        );
        assert!(
            net.checker.violations.is_empty(),
            "{:?}",
            net.checker.violations
        );
    }
}

/// FINDINGS #16: a write the old primary committed and acknowledged, which the
/// survivor holds but had not yet learnt was committed when the primary died, is in
/// the successor's data: the founder applies every store entry of its log, not only
/// the committed ones.
#[test]
fn a_write_acknowledged_before_the_survivor_knew_it_committed_survives_the_recovery() {
    for seed in [2, 3, 4] {
        let (mut net, p, [f, g]) = settled3(seed);
        let c = register(&mut net, g, 1);
        net.run_for(100);
        // f never sees the write: only p and g hold it, and p crashes as soon as it
        // answered, before its next append tells g the write committed.
        net.cut_link(p, f);
        ask(&mut net, p, 2, put(c, 1, "u", "acknowledged"));
        let rev = put_revision(wait(&mut net, 2, 1_000));
        assert!(
            net.nodes[g].core.commit_index() < rev,
            "seed {seed}: the survivor already knew the write committed; the test needs it not to"
        );
        assert!(
            net.nodes[g].core.last_log_id().1 >= rev,
            "seed {seed}: the survivor holds the write"
        );
        lose_the_majority(&mut net, [p, f]);
        ask(&mut net, g, 3, get("u", Consistency::Linearizable));
        assert_eq!(
            value_read(&wait(&mut net, 3, 2_000)),
            Some((b"acknowledged".to_vec(), rev)),
            "seed {seed}: an acknowledged write is lost"
        );
    }
}
