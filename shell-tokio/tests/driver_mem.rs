//! The driving loop over an in-memory transport, plugged the way a simulation plugs
//! its own (feature `sim`): nodes assembled by `ClusterBuilder`, nothing listening;
//! durable nodes on in-memory disks.

use cluster_mode::sim::{Inbox, MemoryDisk, TransportContext};
use cluster_mode::{
    Cluster, ClusterBuilder, ClusterEvent, Config, Role, StaticDiscovery, Transport,
};
use cluster_mode_core::{Address, Delivery, Envelope};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct MemNet {
    nodes: Mutex<HashMap<Address, Inbox>>,
}

struct MemTransport(Arc<MemNet>);

impl Transport for MemTransport {
    fn send(&self, to: &Address, env: Envelope, _class: Delivery) {
        let inbox = self.0.nodes.lock().unwrap().get(to).cloned();
        if let Some(inbox) = inbox {
            inbox.try_deliver(env);
        }
    }
}

async fn node(net: &Arc<MemNet>, addr: &str, peers: &StaticDiscovery) -> Cluster {
    let net = net.clone();
    let me = Address::from(addr);
    ClusterBuilder::new(Arc::new(peers.clone()))
        .mounted()
        .advertise(addr)
        .config(Config::fast_test())
        .with_transport(move |cx: TransportContext| {
            net.nodes.lock().unwrap().insert(me, cx.inbox);
            Arc::new(MemTransport(net))
        })
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn three_nodes_elect_one_primary_in_memory() {
    let net = Arc::new(MemNet::default());
    let addrs = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
    let peers = StaticDiscovery::parse(addrs).unwrap();
    let mut nodes = Vec::new();
    for a in addrs {
        nodes.push(node(&net, a, &peers).await);
    }
    let mut events = nodes[0].subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let primaries = nodes.iter().filter(|c| c.role() == Role::Primary).count();
        let secondaries = nodes.iter().filter(|c| c.role() == Role::Secondary).count();
        if primaries == 1 && secondaries == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no primary elected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for c in &nodes {
        c.shutdown().await;
    }
    let ev = events.next().await;
    assert!(
        matches!(
            ev,
            Some(ClusterEvent::RoleChanged { .. } | ClusterEvent::MembersChanged { .. }) | None
        ),
        "{ev:?}"
    );
}

/// A node on the in-memory network with its durable state on `disk`.
async fn durable_node(
    net: &Arc<MemNet>,
    addr: &str,
    peers: &StaticDiscovery,
    disk: &MemoryDisk,
) -> Cluster {
    let net = net.clone();
    let me = Address::from(addr);
    ClusterBuilder::new(Arc::new(peers.clone()))
        .mounted()
        .advertise(addr)
        .config(Config::fast_test())
        .memory_disk(disk.clone())
        .with_transport(move |cx: TransportContext| {
            net.nodes.lock().unwrap().insert(me, cx.inbox);
            Arc::new(MemTransport(net))
        })
        .start()
        .await
        .unwrap()
}

async fn wait_agreed(nodes: &[&Cluster], within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let prim: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].is_primary())
            .collect();
        if let [p] = prim[..] {
            let id = nodes[p].id();
            if nodes.iter().all(|n| n.primary().map(|x| x.id) == Some(id)) {
                return p;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed primary within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn durable_nodes_write_nothing_in_steady_state_and_restart_as_themselves() {
    let net = Arc::new(MemNet::default());
    let addrs = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
    let peers = StaticDiscovery::parse(addrs).unwrap();
    let disks: Vec<MemoryDisk> = addrs.iter().map(|_| MemoryDisk::new()).collect();
    let mut nodes = Vec::new();
    for (a, d) in addrs.iter().zip(&disks) {
        nodes.push(durable_node(&net, a, &peers, d).await);
    }
    let refs: Vec<&Cluster> = nodes.iter().collect();
    wait_agreed(&refs, Duration::from_secs(10)).await;
    // Every node wrote its id at start, then its cluster, terms and votes.
    for (n, d) in nodes.iter().zip(&disks) {
        assert!(n.counters().persist_writes >= 2, "{:?}", n.counters());
        let state = d.state().expect("state stored");
        assert_eq!(state.id, n.id());
        assert!(state.cluster.is_some());
    }
    // Steady state: heartbeats only, no write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<u64> = nodes.iter().map(|n| n.counters().persist_writes).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Vec<u64> = nodes.iter().map(|n| n.counters().persist_writes).collect();
    assert_eq!(before, after, "writes in steady state");
    // All three restarted at once on their disks: the same members, a primary again.
    let ids: Vec<_> = nodes.iter().map(Cluster::id).collect();
    let term = nodes.iter().map(|n| n.status().term).max().unwrap();
    for n in &nodes {
        n.shutdown().await;
    }
    let mut again = Vec::new();
    for (a, d) in addrs.iter().zip(&disks) {
        again.push(durable_node(&net, a, &peers, d).await);
    }
    assert_eq!(again.iter().map(Cluster::id).collect::<Vec<_>>(), ids);
    let refs: Vec<&Cluster> = again.iter().collect();
    let p = wait_agreed(&refs, Duration::from_secs(10)).await;
    assert!(again[p].status().term > term);
    assert_eq!(again[p].members().len(), 3);
    for n in &again {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_failed_write_stops_the_node_with_an_error() {
    let net = Arc::new(MemNet::default());
    let addrs = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
    let peers = StaticDiscovery::parse(addrs).unwrap();
    let disks: Vec<MemoryDisk> = addrs.iter().map(|_| MemoryDisk::new()).collect();
    let mut nodes = Vec::new();
    for (a, d) in addrs.iter().zip(&disks) {
        nodes.push(durable_node(&net, a, &peers, d).await);
    }
    let refs: Vec<&Cluster> = nodes.iter().collect();
    let p = wait_agreed(&refs, Duration::from_secs(10)).await;
    let stored = disks.iter().map(MemoryDisk::state).collect::<Vec<_>>();
    // Every follower's disk fails; the primary goes: the first follower to stand
    // for election changes its term and vote, which it cannot write. (The other then
    // has no majority to change its own term with.)
    let followers: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    let mut events: Vec<_> = followers.iter().map(|&i| nodes[i].subscribe()).collect();
    for &i in &followers {
        disks[i].fail_writes(true);
    }
    nodes[p].shutdown().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let k = loop {
        if let Some(k) = (0..2).find(|&k| nodes[followers[k]].failure().is_some()) {
            break k;
        }
        assert!(tokio::time::Instant::now() < deadline, "no node failed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let i = followers[k];
    let error = nodes[i].failure().unwrap();
    assert!(error.contains("simulated write failure"), "{error}");
    assert!(!nodes[i].is_active(), "node {i} still active");
    let mut failed_event = None;
    while let Some(ev) = events[k].try_next() {
        if let ClusterEvent::Failed { error, .. } = ev {
            failed_event = Some(error);
        }
    }
    assert_eq!(failed_event, Some(error));
    // What was written before the failure is intact.
    assert_eq!(disks[i].state(), stored[i]);
}
