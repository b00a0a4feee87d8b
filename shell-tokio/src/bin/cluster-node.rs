//! `cluster-node`: one cluster-mode node as a process. Logs every role change, serves
//! `GET /cluster/v1/status`, and leaves gracefully on SIGTERM or Ctrl-C.
//!
//! ```text
//! cluster-node --listen 127.0.0.1:7001 --peers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
//! ```
//!
//! When a cluster has no primary and its status says a voter is missing with no proof
//! of death (docs/PROTOCOL.md, P11), an operator who knows those processes are gone
//! forces the recovery on one survivor:
//!
//! ```text
//! cluster-node recover 127.0.0.1:7002          # the survivor's listen address
//! cluster-node recover 127.0.0.1:7002 --secret S   # a cluster with a secret
//! ```
//!
//! It shows the survivor's view, asks it to recover, and waits for a primary.
//!
//! On Kubernetes, `--k8s-pods SELECTOR` (feature `kubernetes`) discovers the pods
//! matching a label selector through the API, terminating pods included, so a voter
//! whose pod object is gone is proven dead and the survivors recover by themselves
//! (`Config::discovery_proves_absence`). `--k8s-service NAME` reads the Service's ready
//! endpoints instead, whose absence proves nothing: such a cluster waits for
//! `cluster-node recover` (or a data directory) after losing a majority.
//!
//! Every change is also printed on stdout as one line, for scripts and tests:
//! `EVENT <ms since start> role=<Role> term=<n> primary=<addr|->` and
//! `EVENT <ms> members=<n>` and `EVENT <ms> left`; after a graceful exit (SIGTERM), one
//! line `LEASES <json>`: the intervals during which the process could have answered
//! "primary" (`cluster_mode::lease_log`; also in the status document, field `leases`),
//! then one line `ROLES <json>`: the same for each named role it owned
//! (`cluster_mode::role_log`; field `role_intervals` of the status document).
//!
//! Named roles (docs/PROTOCOL.md, P13), each owned by one member at a time, are
//! declared with `--roles shard-a,shard-b` (`{A..B}` in a name expands to each number:
//! `--roles 'shard-{0..63}'`) or `--roles-count 64 [--roles-prefix shard-]`; every node
//! should declare the same list. The status document shows the committed table
//! (`roles`), the roles this node holds now (`owned_roles`) and their intervals, and
//! each change is printed: `EVENT <ms> acquired role=<name> token=<t>`, `EVENT <ms>
//! releasing role=<name> token=<t>`, `EVENT <ms> lost role=<name> token=<t>`.
//!
//! `--store-load SPEC` runs a load on the replicated key-value store once the node sees
//! an agreed primary and prints its figures as one line `STORE_LOAD <json>` (writes
//! and reads per second, latency percentiles); `on=primary` or `on=follower` in SPEC
//! lets every node be given the same option while one runs it. SPEC and the output
//! are described in `src/bin/cluster-node/store_load.rs`:
//!
//! ```text
//! cluster-node --listen 127.0.0.1:7001 --peers ... --store-load clients=64,secs=10,on=follower
//! ```
//!
//! With `--data-dir PATH` (or `CLUSTER_MODE_DATA_DIR`) the node keeps its id, term,
//! vote and log there and is the same member after a restart. It exits with status 1
//! and a message on stderr if the directory is damaged or in use at start, or if a
//! write to it fails while running.

use clap::{Parser, Subcommand};
use cluster_mode::{ClusterBuilder, ClusterEvent, Config, Discovery, RoleEvent, StaticDiscovery};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[path = "cluster-node/store_load.rs"]
mod store_load;
#[path = "cluster-node/tally.rs"]
mod tally;

#[derive(Parser, Debug)]
#[command(name = "cluster-node", about = "One cluster-mode node")]
struct Args {
    /// Instead of running a node: an operator's command to a running node.
    #[command(subcommand)]
    command: Option<Operator>,
    /// Where to listen for the cluster protocol and the status endpoint.
    #[arg(long, default_value = "0.0.0.0:7946")]
    listen: SocketAddr,
    /// The address peers reach this node at, exactly as discovery lists it
    /// (default: the listen address, if it is not 0.0.0.0).
    #[arg(long)]
    advertise: Option<String>,
    /// Static peer list: comma-separated ip:port (this node may be in it).
    #[arg(long, conflicts_with_all = ["dns", "k8s_service", "k8s_pods"])]
    peers: Option<String>,
    /// DNS discovery: NAME:PORT (A/AAAA records of NAME, on PORT).
    #[arg(long, conflicts_with_all = ["k8s_service", "k8s_pods"])]
    dns: Option<String>,
    /// Kubernetes discovery of a Service's ready endpoints (EndpointSlices; port =
    /// listen port). A pod missing from them may still run, so it proves nothing: after
    /// losing a majority of voters the cluster waits for `cluster-node recover`.
    #[arg(long, conflicts_with = "k8s_pods")]
    k8s_service: Option<String>,
    /// Kubernetes discovery of the Pods matching this label selector (e.g. `app=my-app`;
    /// port = listen port), terminating pods included. Sets
    /// `Config::discovery_proves_absence`: a voter whose pod object is gone is proven
    /// dead, and the survivors recover by themselves. Never force-delete a pod whose
    /// node may still run it. Needs list/watch on pods; advertise the pod IP
    /// (`--advertise $(POD_IP):PORT` or `--listen $(POD_IP):PORT`).
    #[arg(long)]
    k8s_pods: Option<String>,
    /// A human-readable node name (shown in status).
    #[arg(long)]
    name: Option<String>,
    /// Nodes that must see each other before the first primary is elected.
    #[arg(long, default_value_t = NonZeroUsize::new(3).expect("3 > 0"))]
    min_nodes: NonZeroUsize,
    /// Shared secret: sign and verify every message with HMAC-SHA256 (bound to the
    /// sending and receiving process, replays refused). Also signs `recover`.
    #[arg(long, env = "CLUSTER_SECRET", global = true)]
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
    /// The most connections the node's listener keeps open at once; more are closed
    /// at once (`connections_refused`). Each member keeps up to 2 to each node it
    /// sends to: keep it above twice the member count.
    #[arg(long, default_value_t = cluster_mode::server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Keep the node's id, term, vote and log in this directory (created if missing),
    /// so that a restart with the same directory is the same member. Without it
    /// every start is a new member.
    #[arg(long, env = "CLUSTER_MODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Named roles to declare (P13), comma-separated or as several values; `{A..B}` in
    /// a name stands for each number from A to B: `--roles 'shard-{0..63}'`.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    roles: Vec<String>,
    /// Declare this many roles, named `<--roles-prefix>0` to `<prefix>N-1` (besides
    /// any `--roles`).
    #[arg(long)]
    roles_count: Option<usize>,
    /// The name prefix of `--roles-count`'s roles.
    #[arg(long, default_value = "shard-")]
    roles_prefix: String,
    /// Log lines on stderr: `text` (coloured only on a terminal) or `json` (one
    /// object per line). Filter with `RUST_LOG` (default `cluster_mode=info`).
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "CLUSTER_MODE_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,
    /// Threads of the node's tokio runtime. One is plenty for a node's work (tens of
    /// microseconds of CPU per message) and the cheapest at rest: with two, nearly
    /// every message wakes the second thread, about a third more CPU for the same
    /// traffic (shell-tokio/README.md, `bench_messages`). Raise it for a leader of
    /// hundreds of members (tens of thousands of messages a second).
    #[arg(
        long,
        default_value_t = NonZeroUsize::new(1).expect("1 > 0"),
        env = "CLUSTER_MODE_WORKER_THREADS",
        global = true
    )]
    worker_threads: NonZeroUsize,
    /// Once a primary is agreed, run a load on the replicated store and print its
    /// figures as one line `STORE_LOAD <json>`: comma-separated `name=value` among
    /// clients (1), secs (10), read_secs (3), value (100 bytes), keys (1024: the key
    /// space), prefix (load/), reads (linearizable+lease+local, or none), max_lag_ms
    /// (1000, of local reads), on (any, primary or follower: which node of those given
    /// the option runs it). Example: `clients=64,secs=10,on=follower`.
    #[arg(long, value_parser = store_load::LoadSpec::parse)]
    store_load: Option<store_load::LoadSpec>,
}

/// The role names `--roles` and `--roles-count` declare, in order, without repeats.
fn role_names(a: &Args) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for spec in &a.roles {
        names.extend(expand(spec)?);
    }
    if let Some(n) = a.roles_count {
        names.extend((0..n).map(|i| format!("{}{i}", a.roles_prefix)));
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

/// `shard-{0..3}` -> shard-0, shard-1, shard-2, shard-3 (one range per name at most);
/// a name without braces as it is.
fn expand(spec: &str) -> Result<Vec<String>, String> {
    let Some((head, rest)) = spec.split_once('{') else {
        return Ok(vec![spec.to_string()]);
    };
    let bad = || format!("--roles {spec:?}: write a range as {{A..B}} with A <= B");
    let (range, tail) = rest.split_once('}').ok_or_else(bad)?;
    let (lo, hi) = range.split_once("..").ok_or_else(bad)?;
    let lo: u64 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u64 = hi.trim().parse().map_err(|_| bad())?;
    if lo > hi || hi - lo >= cluster_mode_core::MAX_ROLES as u64 {
        return Err(bad());
    }
    Ok((lo..=hi).map(|i| format!("{head}{i}{tail}")).collect())
}

/// Commands to a running node.
#[derive(Subcommand, Debug)]
enum Operator {
    /// Force the recovery of a cluster that has no primary (P11): the node treats
    /// the voters it cannot hear from as gone for good and founds the cluster's
    /// successor with every process that answers. Risk: two primaries if a missing
    /// voter still runs with a majority elsewhere. Read the status it prints first.
    Recover {
        /// The node's listen address (where its status endpoint is).
        node: SocketAddr,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// How long to wait for a primary afterwards, seconds.
        #[arg(long, default_value_t = 15)]
        wait_secs: u64,
    },
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
    // Only the Pods source lists every process that may still run (PROTOCOL.md, A2).
    c.discovery_proves_absence = a.k8s_pods.is_some();
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
    if let Some(s) = &a.k8s_pods {
        #[cfg(feature = "kubernetes")]
        {
            let port = cluster_mode_discovery::PortSelector::Number(a.listen.port());
            return cluster_mode_discovery::KubernetesPodsDiscovery::from_env(s.clone(), port)
                .await
                .map(|d| Arc::new(d) as _)
                .map_err(|e| e.to_string());
        }
        #[cfg(not(feature = "kubernetes"))]
        return Err(format!(
            "--k8s-pods {s}: built without the `kubernetes` feature"
        ));
    }
    Err("give one of --peers, --dns, --k8s-service, --k8s-pods".into())
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.get())
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => {
            eprintln!("cluster-node: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) {
    init_logs(args.log_format);
    if let Some(Operator::Recover {
        node,
        yes,
        wait_secs,
    }) = &args.command
    {
        let secret = args.secret.as_deref().map(cluster_mode::mac::Secret::new);
        let code = recover::run(*node, secret, *yes, Duration::from_secs(*wait_secs)).await;
        std::process::exit(code);
    }
    let disc = match discovery(&args).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cluster-node: {e}");
            std::process::exit(2);
        }
    };
    let roles = match role_names(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cluster-node: {e}");
            std::process::exit(2);
        }
    };
    let declared = roles.len();
    let mut b = ClusterBuilder::new(disc)
        .roles(roles)
        .listen(args.listen)
        .max_connections(args.max_connections)
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
    println!(
        "STARTED id={:?} addr={} roles={declared}",
        cluster.id(),
        cluster.address()
    );
    if let Some(spec) = args.store_load.clone() {
        let (c, min) = (cluster.clone(), args.min_nodes.get());
        tokio::spawn(store_load::run(c, spec, min));
    }
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
                ClusterEvent::Role { event, .. } => match event {
                    RoleEvent::Acquired { role, token } => {
                        println!("EVENT {ms} acquired role={role} token={token}")
                    }
                    RoleEvent::Releasing { role, token, .. } => {
                        println!("EVENT {ms} releasing role={role} token={token}")
                    }
                    RoleEvent::Lost { role, token } => {
                        println!("EVENT {ms} lost role={role} token={token}")
                    }
                    other => println!("EVENT {ms} {other:?}"),
                },
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
    // On SIGTERM or Ctrl-C, leave gracefully (the library's `leave_on_signal`).
    tokio::select! {
        _ = cluster.leave_on_signal() => {}
        failed = &mut printer => {
            // The node stopped itself: it could not persist its state.
            let error = failed.ok().flatten().unwrap_or_else(|| "the node stopped".into());
            eprintln!("cluster-node: {error}");
            std::process::exit(1);
        }
    }
    let leases = cluster.lease_record();
    let roles = cluster.role_record();
    drop(cluster);
    let _ = tokio::time::timeout(Duration::from_millis(200), printer).await;
    // The intervals during which this process could have answered "primary"
    // (`cluster_mode::lease_log`), for tests that gather them after a graceful exit.
    println!(
        "LEASES {}",
        serde_json::to_string(&leases).unwrap_or_default()
    );
    // The same for each named role (`cluster_mode::role_log`).
    println!(
        "ROLES {}",
        serde_json::to_string(&roles).unwrap_or_default()
    );
}

/// `--log-format`: how log lines on stderr are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// One human-readable line per event; coloured only when stderr is a terminal
    /// (and `NO_COLOR` is unset), so a log file or a pod's log holds no escape codes.
    Text,
    /// One JSON object per line (timestamp, level, target, fields, the spans with
    /// node id and term), for log pipelines that parse lines (Kubernetes, Loki,
    /// Elasticsearch).
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` (tracing's `EnvFilter` syntax, for example
/// `RUST_LOG=cluster_mode=debug,cluster_mode_core=info`); without it, `cluster_mode=info`.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "cluster_mode=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// `cluster-node recover`: read a node's status, force its recovery, wait for a
/// primary. Plain HTTP/1.1 over a TCP stream: one request per connection.
mod recover {
    use cluster_mode::mac::{Binding, Purpose, Secret, AUTH_HEADER, EPOCH_HEADER, MAC_HEADER};
    use cluster_mode::server::{recover_body, PATH_RECOVER, PATH_STATUS};
    use cluster_mode::NodeId;
    use serde_json::Value;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends one request; the status code, the body, and the head of the answer.
    async fn request(node: SocketAddr, head: String, body: &[u8]) -> Result<(u16, String), String> {
        request_full(node, head, body)
            .await
            .map(|(code, _, body)| (code, body))
    }

    async fn request_full(
        node: SocketAddr,
        head: String,
        body: &[u8],
    ) -> Result<(u16, String, String), String> {
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(node)
                .await
                .map_err(|e| format!("cannot connect to {node}: {e}"))?;
            s.write_all(head.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(body).await.map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out).into_owned();
            let code = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("not an HTTP answer from {node}"))?;
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            Ok((code, head.to_string(), body.to_string()))
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| format!("{node} did not answer within 5 s"))?
    }

    /// The node's status, and its id (read apart: a `Value` would hold the 128-bit
    /// number as a float).
    async fn status(node: SocketAddr) -> Result<(Value, NodeId, String), String> {
        #[derive(serde::Deserialize)]
        struct IdOnly {
            id: u128,
        }
        let head =
            format!("GET {PATH_STATUS} HTTP/1.1\r\nhost: {node}\r\nconnection: close\r\n\r\n");
        let (code, body) = request(node, head, b"").await?;
        if code != 200 {
            return Err(format!("status endpoint answered {code}: {body}"));
        }
        let v = serde_json::from_str(&body).map_err(|e| format!("status is not JSON: {e}"))?;
        let id = serde_json::from_str::<IdOnly>(&body)
            .map_err(|e| format!("status has no node id: {e}"))?
            .id;
        Ok((v, NodeId(id), body))
    }

    /// One voter of the recovery view (ids read as numbers, shown in hex).
    #[derive(serde::Deserialize)]
    struct Voter {
        id: u128,
        addr: String,
        state: Value,
    }

    fn show(v: &Value, raw: &str) {
        let primary = v["primary"]["addr"].as_str().unwrap_or("none");
        println!("  role {} term {} primary {primary}", v["role"], v["term"]);
        match v.get("recovery").filter(|r| !r.is_null()) {
            None => {}
            Some(r) => {
                #[derive(serde::Deserialize)]
                struct Doc {
                    recovery: Option<Recovery>,
                }
                #[derive(serde::Deserialize)]
                struct Recovery {
                    voters: Vec<Voter>,
                }
                let voters = serde_json::from_str::<Doc>(raw)
                    .ok()
                    .and_then(|d| d.recovery)
                    .map(|r| r.voters)
                    .unwrap_or_default();
                for voter in voters {
                    println!(
                        "  voter {:032x} at {}: {}",
                        voter.id, voter.addr, voter.state
                    );
                }
                println!("  blocked: {}", r["blocked"]);
            }
        }
    }

    /// Posts the recover request for node `id`. With a secret it is signed and bound
    /// to this command's own random incarnation and to the node's epoch, learned
    /// from a first 421 answer (then sent again), so a captured request cannot be
    /// replayed (docs/PROTOCOL.md, "Message authentication and replay").
    async fn post_recover(
        node: SocketAddr,
        id: NodeId,
        secret: Option<&Secret>,
    ) -> Result<(u16, String), String> {
        let body = recover_body(id);
        let mut binding = Binding {
            incarnation: rand::random::<u64>(),
            stream: 0,
            epoch: 0,
            seq: 0,
        };
        for _ in 0..2 {
            let auth = secret
                .map(|s| {
                    format!(
                        "{AUTH_HEADER}: {}\r\n{MAC_HEADER}: {}\r\n",
                        binding.header(),
                        s.sign_request(Purpose::Recover, &binding, body.as_bytes())
                    )
                })
                .unwrap_or_default();
            let head = format!(
                "POST {PATH_RECOVER} HTTP/1.1\r\nhost: {node}\r\ncontent-length: {}\r\n{auth}connection: close\r\n\r\n",
                body.len()
            );
            let (code, answer_head, text) = request_full(node, head, body.as_bytes()).await?;
            let epoch = answer_head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(EPOCH_HEADER))
                .and_then(|(_, v)| secret?.verify_epoch(&binding, v));
            match (code, epoch) {
                (421, Some(epoch)) => {
                    binding.epoch = epoch;
                    binding.seq += 1;
                }
                _ => return Ok((code, text)),
            }
        }
        Err("the node kept naming a new epoch".into())
    }

    /// Runs the command; the process exit code.
    pub(super) async fn run(
        node: SocketAddr,
        secret: Option<Secret>,
        yes: bool,
        wait: Duration,
    ) -> i32 {
        let (before, id, raw) = match status(node).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("cluster-node recover: {e}");
                return 2;
            }
        };
        println!("node {id:?} at {node}:");
        show(&before, &raw);
        if before.get("recovery").is_none_or(Value::is_null) {
            eprintln!("cluster-node recover: {node} is not in a leaderless cluster; nothing to do");
            return 1;
        }
        if !yes {
            eprintln!(
                "Forcing a recovery treats every missing voter above as gone for good. If one \
                 still runs with a majority elsewhere, there will be two primaries. Type `yes` \
                 to go on:"
            );
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() || line.trim() != "yes" {
                eprintln!("cluster-node recover: not confirmed; nothing done");
                return 1;
            }
        }
        match post_recover(node, id, secret.as_ref()).await {
            Ok((202, text)) => print!("{text}"),
            Ok((code, text)) => {
                eprintln!("cluster-node recover: refused ({code}): {text}");
                return 1;
            }
            Err(e) => {
                eprintln!("cluster-node recover: {e}");
                return 2;
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok((v, _, raw)) = status(node).await {
                if !v["primary"].is_null() && v["cluster"] != before["cluster"] {
                    println!("recovered:");
                    show(&v, &raw);
                    return 0;
                }
            }
        }
        eprintln!("cluster-node recover: no primary within {wait:?}; its status now:");
        if let Ok((v, _, raw)) = status(node).await {
            show(&v, &raw);
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_one_worker_thread_unless_asked_for_more() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["cluster-node", "--peers", "127.0.0.1:7001"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv)
        };
        if std::env::var_os("CLUSTER_MODE_WORKER_THREADS").is_none() {
            assert_eq!(parse(&[]).expect("parses").worker_threads.get(), 1);
        }
        let three = parse(&["--worker-threads", "3"]).expect("parses");
        assert_eq!(three.worker_threads.get(), 3);
        assert!(
            parse(&["--worker-threads", "0"]).is_err(),
            "0 threads refused"
        );
    }
}
