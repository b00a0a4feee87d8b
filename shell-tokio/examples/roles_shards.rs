//! 64 named roles ("shards") over 5 nodes in one process on 127.0.0.1, default
//! (datacenter) timings: who owns what, then what moves when one node crashes, when a
//! new node joins, and when a node leaves gracefully, with the time each move took.
//!
//! ```text
//! cargo run --release -p cluster-mode --example roles_shards
//! ```
//!
//! The times come from each node's role record (`Cluster::role_record`, on the host's
//! `CLOCK_BOOTTIME`): a move "took" from the event (crash, start of the joiner, call
//! of `leave`) to the first instant the new owner's `owns()` could answer `true`; for
//! the graceful leave, the gap is from the last instant the old owner could answer
//! `true` to that first instant. At the end every node's record is compared: no role
//! ever had two owners at once.
#![cfg_attr(madsim, allow(dead_code, unused_imports))]

use cluster_mode::{Cluster, ClusterBuilder, Config, NodeId, StaticDiscovery};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

fn shards() -> Vec<String> {
    (0..SHARDS).map(|i| format!("shard-{i}")).collect()
}

/// A node of the example: its name, its handle, and whether it still runs.
struct Node {
    name: String,
    cluster: Cluster,
    up: bool,
}

async fn start(name: &str, listener: tokio::net::TcpListener, peers: &[SocketAddr]) -> Cluster {
    ClusterBuilder::new(Arc::new(StaticDiscovery::new(peers.iter().copied())))
        .listener(listener)
        .name(name)
        .config(Config::datacenter())
        .roles(shards())
        .start()
        .await
        .expect("start")
}

/// Each shard's owner (index into `nodes`) once the running nodes agree on a table in
/// which every shard is owned by a running node that holds it, unchanged for 500 ms.
async fn settled(nodes: &[Node]) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stable: Option<(BTreeMap<String, usize>, Instant)> = None;
    loop {
        let now = owners(nodes);
        match (&stable, now) {
            (Some((prev, since)), Some(m)) if *prev == m => {
                if since.elapsed() >= Duration::from_millis(500) {
                    return m;
                }
            }
            (_, Some(m)) => stable = Some((m, Instant::now())),
            (_, None) => stable = None,
        }
        if Instant::now() > deadline {
            eprintln!("the shards did not settle within 30 s");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn owners(nodes: &[Node]) -> Option<BTreeMap<String, usize>> {
    let up: Vec<usize> = (0..nodes.len()).filter(|i| nodes[*i].up).collect();
    let by_id: BTreeMap<NodeId, usize> = up.iter().map(|i| (nodes[*i].cluster.id(), *i)).collect();
    let table = nodes[*up.first()?].cluster.roles();
    if table.len() != SHARDS {
        return None;
    }
    let mut m = BTreeMap::new();
    for row in &table {
        let owner = *by_id.get(&row.owner?)?;
        if row.releasing || !nodes[owner].cluster.owns(&row.role) {
            return None;
        }
        m.insert(row.role.clone(), owner);
    }
    // Every running node has the same table.
    up.iter()
        .all(|i| {
            let t = nodes[*i].cluster.roles();
            t.len() == table.len()
                && t.iter()
                    .zip(&table)
                    .all(|(a, b)| a.role == b.role && a.owner == b.owner)
        })
        .then_some(m)
}

/// The running follower owning the most shards.
fn busiest(nodes: &[Node], owner: &BTreeMap<String, usize>) -> usize {
    (0..nodes.len())
        .filter(|i| nodes[*i].up && !nodes[*i].cluster.is_primary())
        .max_by_key(|i| owner.values().filter(|o| **o == *i).count())
        .expect("a follower")
}

/// "node-0 (primary)  13  0 5 9 ..." per node.
fn print_table(nodes: &[Node], owner: &BTreeMap<String, usize>) {
    for (i, n) in nodes.iter().enumerate().filter(|(_, n)| n.up) {
        let mut mine: Vec<usize> = owner
            .iter()
            .filter(|(_, o)| **o == i)
            .filter_map(|(r, _)| r.strip_prefix("shard-")?.parse().ok())
            .collect();
        mine.sort_unstable();
        let list: Vec<String> = mine.iter().map(|s| s.to_string()).collect();
        let primary = if n.cluster.is_primary() {
            " (primary)"
        } else {
            ""
        };
        println!(
            "  {:<18} {:>2} shards: {}",
            format!("{}{primary}", n.name),
            mine.len(),
            list.join(" ")
        );
    }
}

/// The first instant (host clock, ns) at or after `since` from which `node` could
/// answer that it owns `role`.
#[cfg(not(madsim))]
fn first_owned(node: &Cluster, role: &str, since: u64) -> Option<u64> {
    node.role_record()
        .intervals
        .iter()
        .filter(|iv| iv.role == role && iv.until > since)
        .map(|iv| iv.from)
        .min()
}

/// The last instant (host clock, ns) at which `node` could answer that it owns `role`.
#[cfg(not(madsim))]
fn last_owned(node: &Cluster, role: &str) -> Option<u64> {
    node.role_record()
        .intervals
        .iter()
        .filter(|iv| iv.role == role)
        .map(|iv| iv.until)
        .max()
}

/// Prints the shards that moved between `before` and `after`, each with the time from
/// `event_at` (and the gap since the old owner's last instant, for a leave).
#[cfg(not(madsim))]
fn print_moves(
    nodes: &[Node],
    before: &BTreeMap<String, usize>,
    after: &BTreeMap<String, usize>,
    event_at: u64,
    gap: bool,
) {
    let mut moved: Vec<(usize, String)> = after
        .iter()
        .filter(|(r, o)| before.get(*r) != Some(*o))
        .map(|(r, _)| {
            (
                r.strip_prefix("shard-")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
                r.clone(),
            )
        })
        .collect();
    moved.sort();
    println!("  {} shards moved:", moved.len());
    let mut took = Vec::new();
    for (_, role) in &moved {
        let (from, to) = (&nodes[before[role]], &nodes[after[role]]);
        let start = first_owned(&to.cluster, role, event_at).unwrap_or(event_at);
        let ms = (start as f64 - event_at as f64) / 1e6;
        took.push(ms);
        let extra = if gap {
            let end = last_owned(&from.cluster, role).unwrap_or(start);
            format!(", gap {:.1} ms", (start as f64 - end as f64) / 1e6)
        } else {
            String::new()
        };
        println!(
            "    {role:<9} {} -> {}  in {ms:6.1} ms{extra}",
            from.name, to.name
        );
    }
    if !took.is_empty() {
        let max = took.iter().copied().fold(0.0, f64::max);
        println!("  slowest move: {max:.1} ms");
    }
}

#[cfg(not(madsim))]
#[tokio::main]
async fn main() {
    use cluster_mode::clock::boottime_nanos;

    let mut listeners = Vec::new();
    for _ in 0..6 {
        listeners.push(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let spare = listeners.pop().expect("six listeners");
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let name = format!("node-{i}");
        nodes.push(Node {
            cluster: start(&name, l, &addrs[..5]).await,
            name,
            up: true,
        });
    }
    // Ctrl-C during the demo: every node leaves, then the process ends.
    cluster_mode::shutdown::leave_all_on_shutdown_signal(nodes.iter().map(|n| n.cluster.clone()));
    let t0 = Instant::now();
    let placed = settled(&nodes).await;
    println!(
        "64 shards over 5 nodes, placed {:.0} ms after the start:",
        t0.elapsed()
            .saturating_sub(Duration::from_millis(500))
            .as_secs_f64()
            * 1e3
    );
    print_table(&nodes, &placed);

    // A crash: the follower owning the most shards stops without a word.
    let victim = busiest(&nodes, &placed);
    println!("\n{} crashes (no goodbye):", nodes[victim].name);
    let crash_at = boottime_nanos();
    nodes[victim].cluster.shutdown().await;
    nodes[victim].up = false;
    let after_crash = settled(&nodes).await;
    print_moves(&nodes, &placed, &after_crash, crash_at, false);
    print_table(&nodes, &after_crash);

    // A join: a new node at a new address.
    println!("\nnode-5 joins:");
    let join_at = boottime_nanos();
    nodes.push(Node {
        cluster: start("node-5", spare, &addrs).await,
        name: "node-5".into(),
        up: true,
    });
    let after_join = settled(&nodes).await;
    print_moves(&nodes, &after_crash, &after_join, join_at, false);
    print_table(&nodes, &after_join);

    // A graceful leave of the follower owning the most shards.
    let leaver = busiest(&nodes, &after_join);
    println!("\n{} leaves gracefully:", nodes[leaver].name);
    let leave_at = boottime_nanos();
    nodes[leaver].cluster.leave().await;
    nodes[leaver].up = false;
    let after_leave = settled(&nodes).await;
    print_moves(&nodes, &after_join, &after_leave, leave_at, true);
    print_table(&nodes, &after_leave);

    // Every node's record, the stopped ones' included: no shard had two owners.
    let records: Vec<(String, cluster_mode::role_log::RoleRecord)> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.cluster.role_record()))
        .collect();
    let compared: usize = records.iter().map(|(_, r)| r.intervals.len()).sum();
    match cluster_mode::role_log::overlaps(&records) {
        Ok(found) if found.is_empty() => {
            println!("\nno shard ever had two owners ({compared} ownership intervals compared)")
        }
        Ok(found) => {
            for o in &found {
                println!("{o}");
            }
            std::process::exit(1);
        }
        Err(e) => println!("\nrecords not comparable: {e}"),
    }
    for n in nodes.iter().filter(|n| n.up) {
        n.cluster.shutdown().await;
    }
}

/// Reads the host's `CLOCK_BOOTTIME`: nothing to show under the madsim simulator.
#[cfg(madsim)]
fn main() {}
