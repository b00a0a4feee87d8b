//! Three nodes in one process on 127.0.0.1 with static discovery.
//!
//! Prints every role change with a timestamp; after a few seconds kills the primary
//! (no goodbye, like a crash) and prints the measured failover time; then makes the
//! new primary leave gracefully and prints the handover gap (the time with no
//! primary between the old one stepping down and the next one taking over).
//!
//! ```text
//! cargo run -p cluster-mode --example local_cluster
//! ```

use cluster_mode::{Cluster, ClusterBuilder, ClusterEvent, Config, StaticDiscovery};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn stamp(t0: Instant) -> String {
    format!("{:>8.3}s", t0.elapsed().as_secs_f64())
}

async fn wait_new_primary(nodes: &[Cluster], exclude: &[usize], within: Duration) -> Option<usize> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let p: Vec<usize> = (0..nodes.len())
            .filter(|i| !exclude.contains(i) && nodes[*i].is_primary())
            .collect();
        if p.len() == 1 {
            return Some(p[0]);
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    None
}

#[tokio::main]
async fn main() {
    let t0 = Instant::now();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
    }
    let addrs: Vec<_> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let discovery = Arc::new(StaticDiscovery::new(addrs.iter().copied()));
    // The datacenter profile, with silent members removed after 2 s instead of 120 s
    // (static discovery keeps listing the killed node) so the demo does not wait long
    // before the graceful leave.
    let mut config = Config::datacenter();
    config.silent_member_timeout = Some(Duration::from_secs(2));
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let c = ClusterBuilder::new(discovery.clone())
            .listener(l)
            .name(format!("node-{i}"))
            .config(config.clone())
            .start()
            .await
            .expect("start");
        let mut events = c.subscribe();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                match ev {
                    ClusterEvent::RoleChanged {
                        role,
                        term,
                        primary,
                        ..
                    } => println!(
                        "{} node-{i}: {role:?} (term {term}, primary {})",
                        stamp(t0),
                        primary
                            .map(|p| p.addr.to_string())
                            .unwrap_or_else(|| "none".into())
                    ),
                    ClusterEvent::MembersChanged { members, .. } => {
                        println!("{} node-{i}: {} members", stamp(t0), members.len())
                    }
                    ClusterEvent::LeaveFinished { .. } => println!("{} node-{i}: left", stamp(t0)),
                    // Events added in later versions.
                    _ => {}
                }
            }
        });
        nodes.push(c);
    }
    // Ctrl-C during the demo: every node still running leaves, then the process ends.
    cluster_mode::shutdown::leave_all_on_shutdown_signal(nodes.clone());
    println!("{} started 3 nodes: {addrs:?}", stamp(t0));

    let Some(first) = wait_new_primary(&nodes, &[], Duration::from_secs(10)).await else {
        eprintln!("no primary elected");
        std::process::exit(1);
    };
    println!("{} primary is node-{first}", stamp(t0));
    tokio::time::sleep(Duration::from_secs(3)).await;

    println!("{} killing node-{first} (no goodbye)", stamp(t0));
    let killed = Instant::now();
    nodes[first].shutdown().await;
    let Some(second) = wait_new_primary(&nodes, &[first], Duration::from_secs(10)).await else {
        eprintln!("no failover");
        std::process::exit(1);
    };
    println!(
        "{} FAILOVER: node-{second} is primary {:?} after the kill",
        stamp(t0),
        killed.elapsed()
    );
    // Wait until the dead node is removed from the configuration: with it still a
    // member, two live nodes of three could not lose one more and keep a majority.
    let dead = nodes[first].id();
    while nodes[second].members().iter().any(|m| m.id == dead) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{} node-{first} removed from the configuration", stamp(t0));
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("{} node-{second} leaves gracefully", stamp(t0));
    let leaver = nodes[second].clone();
    let leave = tokio::spawn(async move { leaver.leave().await });
    // The gap: from the last instant the leaver answers is_primary() to the first
    // instant the next node does.
    let mut last_primary = Instant::now();
    while nodes[second].is_primary() {
        last_primary = Instant::now();
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
    let third = loop {
        if let Some(t) = (0..3).find(|i| *i != first && *i != second && nodes[*i].is_primary()) {
            break t;
        }
        if last_primary.elapsed() > Duration::from_secs(10) {
            eprintln!("no handover");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
    };
    println!(
        "{} HANDOVER: node-{third} is primary; gap without a primary {:?}",
        stamp(t0),
        last_primary.elapsed()
    );
    let _ = leave.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!(
        "{} node-{third} sees {} members",
        stamp(t0),
        nodes[third].members().len()
    );
    for n in &nodes {
        n.shutdown().await;
    }
}
