//! The driving loop over an in-memory transport, plugged the way a simulation plugs
//! its own (feature `sim`): nodes assembled by `ClusterBuilder`, nothing listening.

use cluster_mode::sim::{Inbox, TransportContext};
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
