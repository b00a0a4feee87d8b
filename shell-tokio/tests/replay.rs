//! Replayed authenticated requests (docs/PROTOCOL.md, "Message authentication and
//! replay"): a request signed exactly as a node signs it is accepted once; the same
//! bytes sent again are refused with a counted reason and never reach the core, for
//! every message type and for the operator's recover request; a request signed for a
//! previous process at the same address (same id, data directory) is refused too.
//! Two scenarios show what a replay did before: a replayed `Leave` removed its member
//! again, and replayed `AppendReply`s kept an isolated leader from stepping down.
// Real sockets: not under the madsim simulator.
#![cfg(not(madsim))]

mod common;
#[path = "common/http.rs"]
mod http;

use cluster_mode::mac::{Binding, Purpose, Secret, AUTH_HEADER, EPOCH_HEADER, MAC_HEADER};
use cluster_mode::server::{recover_body, PATH_MESSAGE, PATH_RECOVER};
use cluster_mode::{Cluster, ClusterBuilder, Config, StaticDiscovery};
use cluster_mode_core::message::{
    Append, AppendReply, ProbeAck, ProbeState, SnapshotMsg, VoteReply, VoteRequest,
};
use cluster_mode_core::{
    ClusterId, Envelope, Instant, Membership, Message, NodeId, Snapshot, PROTOCOL_VERSION,
};
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "replay-test-secret";

/// One request as it went over the wire: what an eavesdropper captures.
#[derive(Clone, Debug)]
struct Captured {
    path: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An answer: status, head, body.
struct Answer {
    code: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }
}

/// Sends `req` on a fresh connection.
async fn send(addr: SocketAddr, req: &Captured) -> Answer {
    let a = http::raw_request(addr, "POST", req.path, &req.headers, &req.body).await;
    Answer {
        code: a.code,
        head: a.head,
        body: a.body,
    }
}

/// A sender signing the way a node does: one incarnation, one stream, numbered
/// requests, the receiver's epoch learned from its first 421.
struct Signer {
    secret: Secret,
    binding: Binding,
}

impl Signer {
    fn new(incarnation: u64) -> Self {
        Signer {
            secret: Secret::new(SECRET),
            binding: Binding {
                incarnation,
                stream: 1,
                epoch: 0,
                seq: 0,
            },
        }
    }

    fn sign(&mut self, purpose: Purpose, body: Vec<u8>) -> Captured {
        let b = self.binding;
        self.binding.seq += 1;
        Captured {
            path: match purpose {
                Purpose::Message => PATH_MESSAGE,
                Purpose::Recover => PATH_RECOVER,
            },
            headers: vec![
                (AUTH_HEADER.into(), b.header()),
                (
                    MAC_HEADER.into(),
                    self.secret.sign_request(purpose, &b, &body),
                ),
            ],
            body,
        }
    }

    /// Signs and sends `body`, learning the epoch on a 421; returns the request that
    /// was accepted by the authentication layer (the capture) and its answer.
    async fn deliver(
        &mut self,
        addr: SocketAddr,
        purpose: Purpose,
        body: Vec<u8>,
    ) -> (Captured, Answer) {
        for _ in 0..2 {
            let b = self.binding;
            let req = self.sign(purpose, body.clone());
            let a = send(addr, &req).await;
            if a.code == 421 {
                let h = a.header(EPOCH_HEADER).expect("a 421 names the epoch");
                self.binding.epoch = self.secret.verify_epoch(&b, &h).expect("signed epoch");
                continue;
            }
            assert!(
                a.code != 401,
                "a freshly signed request must pass authentication: {}",
                a.body
            );
            return (req, a);
        }
        panic!("the epoch changed twice in a row");
    }
}

fn counters(node: &Cluster) -> (u64, u64, u64) {
    let c = node.counters();
    (c.messages_in, c.rejected_replay, c.rejected_stale_epoch)
}

/// One envelope of every message type, from `from` to `to` in `cluster`.
fn every_message(cluster: ClusterId, from: NodeId, to: NodeId, term: u64) -> Vec<Envelope> {
    let vote = VoteRequest {
        term,
        last_index: 0,
        last_term: 0,
        transfer: false,
    };
    let snapshot = Snapshot {
        index: 0,
        term: 0,
        membership: Membership::default(),
        data: Default::default(),
    };
    let msgs = vec![
        Message::Probe,
        Message::ProbeAck(ProbeAck {
            name: None,
            state: ProbeState::Fresh { supports: None },
        }),
        Message::BootstrapRequest { round: 1 },
        Message::BootstrapReply {
            round: 1,
            granted: false,
        },
        Message::BootstrapWithdraw { round: 1 },
        Message::RecoveryRequest {
            round: 1,
            last_index: 0,
            last_term: 0,
        },
        Message::Join { name: None },
        Message::Leave,
        Message::NotLeader { leader: None },
        Message::PreVote(vote.clone()),
        Message::PreVoteReply(VoteReply {
            term,
            granted: false,
        }),
        Message::Vote(vote),
        Message::VoteReply(VoteReply {
            term,
            granted: false,
        }),
        Message::Append(Append {
            term,
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
            sent_at: Instant::ZERO,
            hold: None,
        }),
        Message::Snapshot(SnapshotMsg {
            term,
            snapshot,
            entries: vec![],
            sent_at: Instant::ZERO,
        }),
        Message::AppendReply(AppendReply {
            term,
            success: false,
            index: 0,
            sent_at: Instant::ZERO,
            at: Default::default(),
            released: Vec::new(),
        }),
        Message::TimeoutNow { term },
    ];
    msgs.into_iter()
        .map(|msg| Envelope {
            version: PROTOCOL_VERSION,
            cluster: Some(cluster),
            from,
            from_addr: "127.0.0.1:9".into(),
            to: Some(to),
            msg,
        })
        .collect()
}

/// A node alone (its peers do not exist), so that nothing but this test's requests
/// reaches its core and `messages_in` counts exactly them.
async fn lone_node(data_dir: Option<&std::path::Path>) -> (Cluster, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let peers = StaticDiscovery::new([addr, "127.0.0.1:1".parse().unwrap()]);
    let mut b = ClusterBuilder::new(Arc::new(peers))
        .listener(l)
        .config(Config::fast_test())
        .secret(SECRET);
    if let Some(d) = data_dir {
        b = b.data_dir(d);
    }
    (b.start().await.unwrap(), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_every_message_type_and_of_recover_is_refused_counted_and_never_delivered() {
    init_tracing();
    let (node, addr) = lone_node(None).await;
    let me = node.id();
    let envs = every_message(ClusterId(7 << 96), NodeId(0xfeed), me, 3);
    assert_eq!(envs.len(), 17, "one per Message variant");
    let mut signer = Signer::new(0x5eed);
    let mut captured = Vec::new();
    for env in &envs {
        let before = counters(&node).0;
        let (req, a) = signer.deliver(addr, Purpose::Message, env.encode()).await;
        // Accepted by the authentication layer and handed to the core (which may
        // refuse it by its own rules: this node is in no cluster).
        assert_eq!(
            counters(&node).0,
            before + 1,
            "{:?}: {} {}",
            env.msg,
            a.code,
            a.body
        );
        captured.push((format!("{:?}", env.msg), req));
    }
    let (req, a) = signer
        .deliver(addr, Purpose::Recover, recover_body(me).into_bytes())
        .await;
    assert!(a.code == 202 || a.code == 503, "{} {}", a.code, a.body);
    captured.push(("recover".into(), req));

    let status_before = node.status();
    for (what, req) in &captured {
        let (delivered, replays, _) = counters(&node);
        let a = send(addr, req).await;
        let (delivered_after, replays_after, _) = counters(&node);
        assert_eq!(
            delivered_after, delivered,
            "replayed {what} reached the core"
        );
        assert_eq!(replays_after, replays + 1, "replayed {what} is counted");
        assert_eq!(a.code, 401, "replayed {what}: {}", a.body);
        assert!(a.body.contains("replayed"), "replayed {what}: {}", a.body);
    }
    let status_after = node.status();
    assert_eq!(status_after.term, status_before.term);
    assert_eq!(status_after.cluster, status_before.cluster);
    assert_eq!(status_after.members, status_before.members);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_signed_for_the_previous_process_at_an_address_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = lone_node(Some(dir.path())).await;
    let me = node.id();
    let mut signer = Signer::new(0xabc);
    let mut captured = Vec::new();
    // Term 0: a fresh durable node that took a term from a stranger's message
    // would persist a state it then refuses to restore (noted in the report).
    for env in every_message(ClusterId(7 << 96), NodeId(0xfeed), me, 0) {
        captured.push(signer.deliver(addr, Purpose::Message, env.encode()).await.0);
    }
    captured.push(
        signer
            .deliver(addr, Purpose::Recover, recover_body(me).into_bytes())
            .await
            .0,
    );
    node.shutdown().await;
    drop(node);
    // The same member (its id is in the data directory) in a new process, at the
    // same address: it has no memory of the requests above.
    let l = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let peers = StaticDiscovery::new([addr, "127.0.0.1:1".parse().unwrap()]);
    let node = ClusterBuilder::new(Arc::new(peers))
        .listener(l)
        .config(Config::fast_test())
        .secret(SECRET)
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    assert_eq!(node.id(), me, "the same member");
    for req in &captured {
        let (delivered, _, stale) = counters(&node);
        let a = send(addr, req).await;
        let (delivered_after, _, stale_after) = counters(&node);
        assert_eq!(
            delivered_after, delivered,
            "a request for the previous process reached the core"
        );
        assert_eq!(stale_after, stale + 1);
        assert_eq!(a.code, 421, "{}", a.body);
    }
    node.shutdown().await;
}

/// The leader, its index, and the cluster id once all three agree.
async fn formed(nodes: &[Cluster]) -> (usize, ClusterId) {
    let refs: Vec<_> = nodes.iter().collect();
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    let cluster = nodes[p].status().cluster.expect("a cluster");
    (p, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_leave_does_not_remove_the_member_again() {
    init_tracing();
    let (nodes, addrs) = start_nodes(3, test_config(), Some(SECRET)).await;
    let (p, cluster) = formed(&nodes).await;
    let x = a_secondary(3, p);
    let all: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let mut all_sorted = all.clone();
    all_sorted.sort();
    let refs: Vec<_> = nodes.iter().collect();
    wait_members(&refs, &all_sorted, Duration::from_secs(10)).await;
    // The member's Leave, signed as its process signs it: the capture. Sent to the
    // leader; if leadership moved before it arrived (a loaded machine with the fast
    // test timings), the leader of the moment gets a new capture.
    let mut signer = Signer::new(0x1ea5e);
    let mut captured = None;
    for attempt in 0..3 {
        let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
        if p == x {
            eprintln!("attempt {attempt}: the member meant to leave is primary now");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let leave = Envelope {
            version: PROTOCOL_VERSION,
            cluster: Some(cluster),
            from: nodes[x].id(),
            from_addr: all[x].as_str().into(),
            to: Some(nodes[p].id()),
            msg: Message::Leave,
        };
        let (capture, a) = signer
            .deliver(addrs[p], Purpose::Message, leave.encode())
            .await;
        assert_eq!(a.code, 204, "{}", a.body);
        // It works once: the member is removed...
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while member_addrs(&nodes[p]).contains(&all[x]) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !member_addrs(&nodes[p]).contains(&all[x]) {
            captured = Some(capture);
            break;
        }
        eprintln!(
            "attempt {attempt}: the Leave removed nobody (leader now: {:?})",
            agreed_primary(&refs)
        );
    }
    let captured = captured.expect("the Leave removed nobody in three attempts");
    // ...and, still running and listed, it joins again.
    wait_members(&refs, &all_sorted, Duration::from_secs(20)).await;
    let p = wait_agreed_primary(&refs, Duration::from_secs(10)).await;
    // The replay, sent to the leader, many times over.
    let replays_before = nodes[p].counters().rejected_replay;
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(send(addrs[p], &captured).await.code);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hold_members(
        &refs,
        &all_sorted,
        Duration::from_millis(1500),
        "after a replayed Leave",
    )
    .await;
    assert_eq!(answers, vec![401; 20], "every replay refused as such");
    assert_eq!(nodes[p].counters().rejected_replay, replays_before + 20);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_append_replies_do_not_keep_an_isolated_leader() {
    init_tracing();
    let (nodes, addrs) = start_nodes(3, test_config(), Some(SECRET)).await;
    let (p, cluster) = formed(&nodes).await;
    let status = nodes[p].status();
    // Each follower's acknowledgement, signed as its process signs it: the capture.
    let mut captured = Vec::new();
    for (i, f) in nodes.iter().enumerate().filter(|(i, _)| *i != p) {
        let reply = Envelope {
            version: PROTOCOL_VERSION,
            cluster: Some(cluster),
            from: f.id(),
            from_addr: addrs[i].to_string().as_str().into(),
            to: Some(nodes[p].id()),
            msg: Message::AppendReply(AppendReply {
                term: status.term,
                success: true,
                index: status.commit_index,
                sent_at: status.lease_until.unwrap_or(Instant::ZERO),
                at: Default::default(),
                released: Vec::new(),
            }),
        };
        let mut signer = Signer::new(0xacc0 + i as u64);
        let (req, a) = signer
            .deliver(addrs[p], Purpose::Message, reply.encode())
            .await;
        assert_eq!(a.code, 204, "{}", a.body);
        captured.push(req);
    }
    // Both followers crash: the leader is alone and must step down (CheckQuorum)
    // within an election timeout, whatever an attacker replays to it meanwhile.
    for (i, n) in nodes.iter().enumerate() {
        if i != p {
            n.shutdown().await;
        }
    }
    let cfg = test_config();
    let started = tokio::time::Instant::now();
    let deadline = started + cfg.election_timeout_max * 2 + Duration::from_millis(500);
    let mut stepped_down = None;
    let mut answers = std::collections::BTreeMap::new();
    while tokio::time::Instant::now() < deadline {
        for req in &captured {
            *answers.entry(send(addrs[p], req).await.code).or_insert(0) += 1;
        }
        if stepped_down.is_none() && !nodes[p].status().is_leader {
            stepped_down = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stepped_down =
        stepped_down.expect("replayed AppendReplies kept the isolated leader leading");
    assert!(!nodes[p].is_primary());
    assert_eq!(
        answers.keys().copied().collect::<Vec<u16>>(),
        vec![401],
        "every replay refused: {answers:?}"
    );
    assert_eq!(nodes[p].counters().rejected_replay, answers[&401]);
    eprintln!("isolated leader stepped down after {stepped_down:?} under replays");
    nodes[p].shutdown().await;
}
