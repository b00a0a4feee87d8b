//! Messages handled per second by one core, at a follower and at a leader, with 5 and
//! 1,000 members, and heap allocations per steady-state heartbeat; then a leader's
//! work per acknowledgement and per heartbeat sent with 5 to 5,000 members (flat when
//! nothing on those paths walks the member list).
//!
//! Run: `cargo bench -p cluster-mode-core --bench throughput`
//! (prints a table; no timing is asserted anywhere).

use cluster_mode_core::message::{Append, AppendReply, SnapshotMsg, VoteReply};
use cluster_mode_core::{
    Address, ClusterCore, ClusterId, Config, Envelope, Identity, Input, Instant, Member,
    Membership, Message, NodeId, Snapshot, PROTOCOL_VERSION,
};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::time::Duration;

// stats_alloc counts allocations without any unsafe code of ours.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations() -> u64 {
    let s = GLOBAL.stats();
    (s.allocations + s.reallocations) as u64
}

const CLUSTER: ClusterId = ClusterId(0xC1);
const ME: NodeId = NodeId(1);

fn id(i: usize) -> NodeId {
    NodeId(i as u128 + 1)
}

fn addr(i: usize) -> Address {
    Address::new(format!("10.0.{}.{}:7946", i / 250, i % 250))
}

fn env(from: usize, msg: Message) -> Envelope {
    Envelope {
        version: PROTOCOL_VERSION,
        cluster: Some(CLUSTER),
        from: id(from),
        from_addr: addr(from),
        to: Some(ME),
        msg,
    }
}

/// A follower (member 0) of a cluster of `n` members led by member 1.
fn follower(n: usize) -> ClusterCore {
    let mut membership = Membership::default();
    for i in 0..n {
        membership.members.insert(
            id(i),
            Member {
                addr: addr(i),
                name: None,
                voter: i < 5,
            },
        );
    }
    let mut core = ClusterCore::new(
        Identity::new(ME, addr(0)),
        Config::datacenter(),
        7,
        Instant::ZERO,
    )
    .unwrap();
    let snap = SnapshotMsg {
        term: 1,
        snapshot: Snapshot {
            index: 1,
            term: 1,
            membership,
            data: Default::default(),
        },
        entries: Vec::new(),
        sent_at: Instant::ZERO,
    };
    core.handle(
        Instant::ZERO,
        Input::Message(env(1, Message::Snapshot(snap))),
    )
    .unwrap();
    while core.poll_command().is_some() {}
    core
}

/// Member 0 elected leader of a cluster of `n` members.
fn leader(n: usize) -> (ClusterCore, Instant) {
    let mut core = follower(n);
    let mut now = Instant::from_millis(2_000); // past any election timeout
    core.handle(now, Input::Tick).unwrap();
    for v in 1..5 {
        let r = VoteReply {
            term: core.term() + 1,
            granted: true,
        };
        core.handle(now, Input::Message(env(v, Message::PreVoteReply(r))))
            .unwrap();
    }
    for v in 1..5 {
        let r = VoteReply {
            term: core.term(),
            granted: true,
        };
        core.handle(now, Input::Message(env(v, Message::VoteReply(r))))
            .unwrap();
    }
    assert!(core.is_leader(), "bench setup: election failed");
    // Let everyone acknowledge the new term's entry.
    let last = core.commit_index() + 1;
    for m in 1..n {
        let r = AppendReply {
            term: core.term(),
            success: true,
            index: last,
            sent_at: now,
            at: Default::default(),
            released: Vec::new(),
        };
        core.handle(now, Input::Message(env(m, Message::AppendReply(r))))
            .unwrap();
    }
    while core.poll_command().is_some() {}
    now = now + Duration::from_millis(1);
    (core, now)
}

fn drain(core: &mut ClusterCore) -> u64 {
    let mut n = 0;
    while let Some(c) = core.poll_command() {
        std::hint::black_box(&c);
        n += 1;
    }
    n
}

fn bench_follower(n: usize) -> (f64, f64) {
    let mut core = follower(n);
    let hb = |t: Instant| {
        env(
            1,
            Message::Append(Append {
                term: 1,
                prev_index: 1,
                prev_term: 1,
                entries: Vec::new(),
                commit: 1,
                sent_at: t,
                hold: None,
            }),
        )
    };
    let mut now = Instant::from_millis(1);
    let msg = hb(now);
    // Warm up (queues reach their steady capacity).
    for _ in 0..1_000 {
        core.handle(now, Input::Message(msg.clone())).unwrap();
        drain(&mut core);
    }
    let iters = 2_000_000u64;
    let a0 = allocations();
    let start = std::time::Instant::now();
    for _ in 0..iters {
        now = now + Duration::from_micros(10);
        core.handle(now, Input::Message(msg.clone())).unwrap();
        drain(&mut core);
    }
    let secs = start.elapsed().as_secs_f64();
    let allocs = (allocations() - a0) as f64 / iters as f64;
    (iters as f64 / secs, allocs)
}

/// An accepting reply to the leader's latest append from each of the `n - 1` followers.
fn acks(core: &ClusterCore, n: usize, now: Instant) -> Vec<Envelope> {
    let (term, commit) = (core.term(), core.commit_index());
    (1..n)
        .map(|m| {
            env(
                m,
                Message::AppendReply(AppendReply {
                    term,
                    success: true,
                    index: commit,
                    sent_at: now,
                    at: Default::default(),
                    released: Vec::new(),
                }),
            )
        })
        .collect()
}

fn bench_leader(n: usize) -> (f64, f64) {
    let (mut core, mut now) = leader(n);
    let mut replies = acks(&core, n, now);
    let rounds = (2_000_000 / n).max(20) as u64;
    let mut handled = 0u64;
    let a0 = allocations();
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        // One heartbeat round: a tick that sends to every member, then every reply.
        now = now + Duration::from_millis(50);
        core.handle(now, Input::Tick).unwrap();
        handled += drain(&mut core);
        for r in &mut replies {
            if let Message::AppendReply(a) = &mut r.msg {
                a.sent_at = now; // the echo of this round's heartbeat
            }
            core.handle(now, Input::Message(r.clone())).unwrap();
            handled += 1;
        }
        drain(&mut core);
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(core.is_primary(now), "bench: the leader lost its lease");
    let allocs = (allocations() - a0) as f64 / handled as f64;
    (handled as f64 / secs, allocs)
}

/// A leader of `n` members: nanoseconds per acknowledgement handled (an `AppendReply`
/// echoing the round's heartbeat, no tick in the timed part), the same with the view
/// refreshed after each (`refresh_status`, as the shell does after every input), and
/// per heartbeat sent (a tick's round divided by the `n - 1` sends it makes). Each is
/// the median of several timed passes, so a descheduled pass does not skew it.
fn bench_leader_per_member(n: usize) -> (f64, f64, f64) {
    let (mut core, mut now) = leader(n);
    let mut replies = acks(&core, n, now);
    // About 200,000 acknowledgements per pass, whatever the member count.
    let rounds = (200_000 / (n - 1)).max(4);
    let (mut per_ack, mut per_send, mut per_view) = (Vec::new(), Vec::new(), Vec::new());
    let mut view = core.status(now);
    for pass in 0..14 {
        // Odd passes refresh the view after every input, as the shell does.
        let refresh = pass % 2 == 1;
        let (mut ack_ns, mut send_ns, mut acks, mut sends) = (0u128, 0u128, 0u64, 0u64);
        for _ in 0..rounds {
            now = now + Duration::from_millis(50);
            let t = std::time::Instant::now();
            core.handle(now, Input::Tick).unwrap();
            sends += drain(&mut core);
            send_ns += t.elapsed().as_nanos();
            for r in &mut replies {
                if let Message::AppendReply(a) = &mut r.msg {
                    a.sent_at = now;
                }
            }
            // The clones are made before the clock starts: only `handle` is timed.
            let batch: Vec<Envelope> = replies.clone();
            let t = std::time::Instant::now();
            for r in batch {
                core.handle(now, Input::Message(r)).unwrap();
                if refresh {
                    std::hint::black_box(core.refresh_status(now, &mut view));
                }
                acks += 1;
            }
            drain(&mut core);
            ack_ns += t.elapsed().as_nanos();
        }
        if refresh {
            per_view.push(ack_ns as f64 / acks as f64);
        } else {
            per_ack.push(ack_ns as f64 / acks as f64);
            per_send.push(send_ns as f64 / sends.max(1) as f64);
        }
    }
    assert!(core.is_primary(now), "bench: the leader lost its lease");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(per_ack), median(per_view), median(per_send))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    println!(
        "{:<34} {:>16} {:>18}",
        "case", "messages/s", "allocs/message"
    );
    for n in [5, 1000] {
        let (rate, allocs) = bench_follower(n);
        println!(
            "{:<34} {:>16.0} {:>18.3}",
            format!("follower heartbeat, {n} members"),
            rate,
            allocs
        );
    }
    for n in [5, 1000] {
        let (rate, allocs) = bench_leader(n);
        println!(
            "{:<34} {:>16.0} {:>18.3}",
            format!("leader round (send + ack), {n} members"),
            rate,
            allocs
        );
    }
    println!();
    println!(
        "{:<18} {:>14} {:>22} {:>18}",
        "leader, members", "ns per ack", "ns per ack + refresh", "ns per heartbeat"
    );
    for n in [5, 50, 500, 5000] {
        let (ack, view, send) = bench_leader_per_member(n);
        println!("{:<18} {:>14.0} {:>22.0} {:>18.0}", n, ack, view, send);
    }
    // Frame size with realistic ids: random 128-bit node and cluster ids.
    let hb = Envelope {
        version: PROTOCOL_VERSION,
        cluster: Some(ClusterId(0x9f3a_61c2_7d4e_88b1_02fa_c3d9_5e71_a6b4)),
        from: NodeId(0xd1e2_73a4_95b6_c7d8_e9f0_0a1b_2c3d_4e5f),
        from_addr: Address::new("10.12.34.56:7946"),
        to: Some(NodeId(0x7a8b_9cad_becf_d0e1_f203_1425_3647_5869)),
        msg: Message::Append(Append {
            term: 3,
            prev_index: 17,
            prev_term: 3,
            entries: Vec::new(),
            commit: 17,
            sent_at: Instant::from_nanos(86_400_000_000_000),
            hold: None,
        }),
    };
    println!(
        "heartbeat frame: {} bytes (postcard, random 128-bit ids)",
        hb.encode().len()
    );
}
