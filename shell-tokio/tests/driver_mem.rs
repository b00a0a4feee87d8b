//! The driving loop over an in-memory transport: what a simulation would plug in.

use cluster_mode::driver::{
    spawn_driver, DriverHandle, DriverParts, Inbox, Subscribers, Transport,
};
use cluster_mode::metrics::Counters;
use cluster_mode::{Clock, ClusterEvent, Config, StaticDiscovery, SystemClock};
use cluster_mode_core::{Address, ClusterCore, Envelope, Identity, Role};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct MemNet {
    nodes: Mutex<HashMap<Address, Inbox>>,
}

struct MemTransport(Arc<MemNet>);

impl Transport for MemTransport {
    fn send(&self, to: &Address, env: Envelope) {
        let inbox = self.0.nodes.lock().unwrap().get(to).cloned();
        if let Some(inbox) = inbox {
            inbox.try_deliver(env);
        }
    }
}

fn node(net: &Arc<MemNet>, addr: &str, peers: &StaticDiscovery) -> (DriverHandle, Subscribers) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let id = Identity::new(cluster_mode::fresh_node_id(), addr);
    let core = ClusterCore::new(id, Config::fast_test(), rand_seed(addr), clock.now()).unwrap();
    let (inbox, rx) = Inbox::channel(1024);
    net.nodes.lock().unwrap().insert(Address::from(addr), inbox);
    let subs = Subscribers::default();
    let h = spawn_driver(DriverParts {
        core,
        clock,
        transport: Arc::new(MemTransport(net.clone())),
        discovery: Arc::new(peers.clone()),
        discovery_interval: None,
        inbox: rx,
        counters: Arc::new(Counters::default()),
        subscribers: subs.clone(),
    });
    (h, subs)
}

fn rand_seed(addr: &str) -> u64 {
    addr.bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)))
}

#[tokio::test]
async fn three_nodes_elect_one_primary_in_memory() {
    let net = Arc::new(MemNet::default());
    let addrs = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
    let peers = StaticDiscovery::parse(addrs).unwrap();
    let nodes: Vec<_> = addrs.iter().map(|a| node(&net, a, &peers)).collect();
    let mut events = nodes[0].1.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let primaries = nodes
            .iter()
            .filter(|(h, _)| h.state.borrow().status.role == Role::Primary)
            .count();
        let secondaries = nodes
            .iter()
            .filter(|(h, _)| h.state.borrow().status.role == Role::Secondary)
            .count();
        if primaries == 1 && secondaries == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no primary elected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ev = events.recv().await.unwrap();
    assert!(matches!(
        ev,
        ClusterEvent::RoleChanged { .. } | ClusterEvent::MembersChanged { .. }
    ));
}
