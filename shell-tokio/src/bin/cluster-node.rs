//! `cluster-node`: one cluster-mode node as a process. Logs every role change, serves
//! `GET /cluster/v1/status`, and leaves gracefully on SIGTERM or Ctrl-C.
//!
//! ```text
//! cluster-node --listen 127.0.0.1:7001 --peers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
//! ```
//!
//! Every change is also printed on stdout as one line, for scripts and tests:
//! `EVENT <ms since start> role=<Role> term=<n> primary=<addr|->` and
//! `EVENT <ms> members=<n>` and `EVENT <ms> left`.
//!
//! With `--data-dir PATH` (or `CLUSTER_MODE_DATA_DIR`) the node keeps its id, term,
//! vote and log there and is the same member after a restart. It exits with status 1
//! and a message on stderr if the directory is damaged or in use at start, or if a
//! write to it fails while running.

use clap::Parser;
use cluster_mode::{ClusterBuilder, ClusterEvent, Config, Discovery, StaticDiscovery};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "cluster-node", about = "One cluster-mode node")]
struct Args {
    /// Where to listen for the cluster protocol and the status endpoint.
    #[arg(long, default_value = "0.0.0.0:7946")]
    listen: SocketAddr,
    /// The address peers reach this node at, exactly as discovery lists it
    /// (default: the listen address, if it is not 0.0.0.0).
    #[arg(long)]
    advertise: Option<String>,
    /// Static peer list: comma-separated ip:port (this node may be in it).
    #[arg(long, conflicts_with_all = ["dns", "k8s_service"])]
    peers: Option<String>,
    /// DNS discovery: NAME:PORT (A/AAAA records of NAME, on PORT).
    #[arg(long)]
    dns: Option<String>,
    /// Kubernetes discovery: the Service name (EndpointSlices; port = listen port).
    #[arg(long)]
    k8s_service: Option<String>,
    /// A human-readable node name (shown in status).
    #[arg(long)]
    name: Option<String>,
    /// Nodes that must see each other before the first primary is elected.
    #[arg(long, default_value_t = NonZeroUsize::new(3).expect("3 > 0"))]
    min_nodes: NonZeroUsize,
    /// Shared secret: sign and verify every message with HMAC-SHA256.
    #[arg(long, env = "CLUSTER_SECRET")]
    secret: Option<String>,
    /// Use the fast test timing profile (10 ms heartbeats) as the base.
    #[arg(long)]
    fast: bool,
    /// Leader heartbeat interval, ms.
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Election timeout lower bound, ms. Heartbeat and lease are rescaled with it
    /// (`Config::with_election_timeout`) unless given too.
    #[arg(long)]
    election_min_ms: Option<u64>,
    /// Election timeout upper bound, ms (default with --election-min-ms: twice it).
    #[arg(long)]
    election_max_ms: Option<u64>,
    /// Primary lease, ms (must stay below the election timeout less the drift margin).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Discovery poll interval, ms (default: the source's own).
    #[arg(long)]
    discovery_ms: Option<u64>,
    /// Keep the node's id, term, vote and log in this directory (created if missing),
    /// so that a restart with the same directory is the same member. Without it
    /// every start is a new member.
    #[arg(long, env = "CLUSTER_MODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

fn config(a: &Args) -> Config {
    let mut c = if a.fast {
        Config::fast_test()
    } else {
        Config::datacenter()
    };
    c.min_nodes = a.min_nodes;
    // The election timeout first, through the one call that rescales the heartbeat and
    // the lease derived from it; explicit heartbeat and lease values then override.
    if a.election_min_ms.is_some() || a.election_max_ms.is_some() {
        let min = a
            .election_min_ms
            .map_or(c.election_timeout_min, Duration::from_millis);
        let max = a.election_max_ms.map_or(min * 2, Duration::from_millis);
        c = c.with_election_timeout(min, max);
    }
    if let Some(v) = a.heartbeat_ms {
        c.heartbeat_interval = Duration::from_millis(v);
    }
    if let Some(v) = a.lease_ms {
        c.lease_duration = Duration::from_millis(v);
    }
    c
}

async fn discovery(a: &Args) -> Result<Arc<dyn Discovery>, String> {
    if let Some(p) = &a.peers {
        return StaticDiscovery::parse_list(p)
            .map(|d| Arc::new(d) as _)
            .map_err(|e| e.to_string());
    }
    if let Some(d) = &a.dns {
        #[cfg(feature = "dns")]
        {
            let (name, port) = d.rsplit_once(':').ok_or("--dns wants NAME:PORT")?;
            let port: u16 = port.parse().map_err(|e| format!("--dns port: {e}"))?;
            let cfg = cluster_mode_discovery::DnsConfig::host(name, port);
            return cluster_mode_discovery::DnsDiscovery::new(cfg)
                .map(|d| Arc::new(d) as _)
                .map_err(|e| e.to_string());
        }
        #[cfg(not(feature = "dns"))]
        return Err(format!("--dns {d}: built without the `dns` feature"));
    }
    if let Some(s) = &a.k8s_service {
        #[cfg(feature = "kubernetes")]
        {
            let port = cluster_mode_discovery::PortSelector::Number(a.listen.port());
            return cluster_mode_discovery::KubernetesDiscovery::from_env(s.clone(), port)
                .await
                .map(|d| Arc::new(d) as _)
                .map_err(|e| e.to_string());
        }
        #[cfg(not(feature = "kubernetes"))]
        return Err(format!(
            "--k8s-service {s}: built without the `kubernetes` feature"
        ));
    }
    Err("give one of --peers, --dns, --k8s-service".into())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cluster_mode=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let disc = match discovery(&args).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cluster-node: {e}");
            std::process::exit(2);
        }
    };
    let mut b = ClusterBuilder::new(disc)
        .listen(args.listen)
        .config(config(&args));
    if let Some(a) = &args.advertise {
        b = b.advertise(a.clone());
    }
    if let Some(n) = &args.name {
        b = b.name(n.clone());
    }
    if let Some(s) = &args.secret {
        b = b.secret(s);
    }
    if let Some(ms) = args.discovery_ms {
        b = b.discovery_interval(Duration::from_millis(ms));
    }
    if let Some(d) = &args.data_dir {
        b = b.data_dir(d.clone());
    }
    let cluster = match b.start().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cluster-node: {e}");
            std::process::exit(1);
        }
    };
    println!("STARTED id={:?} addr={}", cluster.id(), cluster.address());
    let mut events = cluster.subscribe();
    let mut printer = tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let ms = ev.at().as_nanos() / 1_000_000;
            match ev {
                ClusterEvent::RoleChanged {
                    role,
                    term,
                    primary,
                    ..
                } => {
                    let p = primary
                        .map(|p| p.addr.to_string())
                        .unwrap_or_else(|| "-".into());
                    println!("EVENT {ms} role={role:?} term={term} primary={p}");
                }
                ClusterEvent::MembersChanged { members, .. } => {
                    println!("EVENT {ms} members={}", members.len());
                }
                ClusterEvent::LeaveFinished { .. } => println!("EVENT {ms} left"),
                ClusterEvent::Failed { error, .. } => {
                    println!("EVENT {ms} failed");
                    return Some(error);
                }
                other => println!("EVENT {ms} {other:?}"),
            }
        }
        None
    });
    tokio::select! {
        _ = wait_for_signal() => {}
        failed = &mut printer => {
            // The node stopped itself: it could not persist its state.
            let error = failed.ok().flatten().unwrap_or_else(|| "the node stopped".into());
            eprintln!("cluster-node: {error}");
            std::process::exit(1);
        }
    }
    eprintln!("cluster-node: leaving");
    cluster.leave().await;
    drop(cluster);
    let _ = tokio::time::timeout(Duration::from_millis(200), printer).await;
}

#[cfg(not(madsim))]
async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(madsim)]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
