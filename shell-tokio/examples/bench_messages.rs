//! Per-message cost of the shell over real loopback HTTP (hyper server, postcard
//! frames, the driving loop, the core, the hyper transport back), and the CPU a
//! 5-node cluster uses at rest. Not a test: it prints tables.
//!
//! ```text
//! cargo build --release -p cluster-mode --bin cluster-node --example bench_messages
//! target/release/examples/bench_messages [--seconds 5] [--connections 32]
//!     [--heartbeat-connections 2] [--rest-seconds 20] [--only load|rest]
//! ```
//!
//! **Load** (one node under test, a child process of this benchmark running the
//! library with the default configuration, a counting allocator and the same log
//! filter as `cluster-node`): the benchmark plays the node's leader. It places the
//! node in a two-member cluster with a snapshot, then sends it, from several
//! keep-alive connections at once, raw HTTP/1.1 requests each carrying one postcard
//! frame (each connection sends its next request when the last was answered), and runs the leader's own listener, which receives the node's replies. A
//! heartbeat keeps the node a follower throughout (20 a second, counted). Phases:
//!
//! - `receive` (`--connections`): late acknowledgements (`AppendReply` of the current
//!   term), which a follower accepts (204) and acts on no further: the receive path
//!   alone;
//! - `heartbeat` (`--heartbeat-connections`): heartbeats, each answered by an
//!   acknowledgement that the node's transport sends back (per-peer queue, 2 requests
//!   in flight, newer replies superseding queued ones, as in production);
//! - `ping-pong`: one heartbeat at a time, the next sent when its acknowledgement
//!   reached the leader's listener: the round trip through both paths, unbatched.
//!
//! For each: requests answered per second, the node's messages in per second (its
//! own counter), the acknowledgements it sent that reached the leader and those a newer
//! one superseded in its queue (`send_coalesced`), its CPU (`/proc/PID/stat`, utime + stime) and its heap
//! allocations (the counting allocator) per message. The receive and heartbeat phases
//! give two equations (cost = in x R + out x S), solved for R (receive path, per
//! message received) and S (send path, per message sent).
//!
//! **Rest**: 5 `cluster-node` processes with default timings and a static peer list on
//! 127.0.0.1; once they agree on a primary and 3 s more have passed, each process's
//! CPU over `--rest-seconds`, as a percentage of one core, and the messages it sent
//! and received per second.
#![cfg_attr(madsim, allow(dead_code, unused_imports))]

#[cfg(not(madsim))]
#[path = "../tests/common/procs.rs"]
mod procs;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

// Counts every allocation of the process (stats_alloc: no unsafe code of ours).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[cfg(not(madsim))]
mod bench {
    use super::procs::{self, status_json, wait_agreed, Procs};
    use super::GLOBAL;
    use cluster_mode::{ClusterBuilder, Config, StaticDiscovery};
    use cluster_mode_core::message::{Append, AppendReply, SnapshotMsg};
    use cluster_mode_core::{
        Address, ClusterId, Envelope, Instant as CoreInstant, Member, Membership, Message, NodeId,
        Snapshot, PROTOCOL_VERSION,
    };
    use std::io::{BufRead, BufReader, Write};
    use std::net::SocketAddr;
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;

    // ---------------------------------------------------------------- node mode

    /// `bench_messages node LISTEN PEERS`: one node, as `cluster-node` runs it, that
    /// prints `READY <id>` once started and answers each line on stdin with
    /// `ALLOC <allocations> <bytes>` (this process's heap allocations so far).
    pub fn node_main(listen: SocketAddr, peers: String) {
        // The filter `cluster-node` gets from the tests and benchmarks (RUST_LOG=warn).
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(std::io::stderr)
            .init();
        // The runtime `cluster-node` runs on: one worker unless
        // CLUSTER_MODE_WORKER_THREADS says otherwise.
        let workers = std::env::var("CLUSTER_MODE_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1usize)
            .max(1);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let disc = StaticDiscovery::parse_list(&peers).expect("--peers");
            let cluster = ClusterBuilder::new(Arc::new(disc))
                .listen(listen)
                .config(Config::default())
                .start()
                .await
                .expect("start the node");
            println!("READY {}", cluster.id().0);
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    if line.is_err() {
                        break;
                    }
                    let s = GLOBAL.stats();
                    println!(
                        "ALLOC {} {}",
                        s.allocations + s.reallocations,
                        s.bytes_allocated + s.bytes_reallocated.max(0) as usize
                    );
                }
                drop(tx);
            });
            // Runs until stdin closes (the benchmark ended or died).
            let _ = rx.recv().await;
            cluster.shutdown().await;
        });
    }

    /// The node under test, a child process running [`node_main`].
    struct NodeProc {
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
        id: NodeId,
    }

    impl NodeProc {
        fn start(listen: SocketAddr, peers: &str) -> NodeProc {
            let exe = std::env::current_exe().expect("current exe");
            let mut child = Command::new(exe)
                .args(["node", &listen.to_string(), peers])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the node");
            let stdin = child.stdin.take().expect("stdin");
            let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
            let mut line = String::new();
            stdout.read_line(&mut line).expect("READY line");
            let id = line
                .strip_prefix("READY ")
                .and_then(|s| s.trim().parse::<u128>().ok())
                .unwrap_or_else(|| panic!("node said {line:?}"));
            NodeProc {
                child,
                stdin,
                stdout,
                id: NodeId(id),
            }
        }

        /// (allocations, bytes allocated) so far.
        fn allocs(&mut self) -> (u64, u64) {
            writeln!(self.stdin).expect("node stdin");
            let mut line = String::new();
            self.stdout.read_line(&mut line).expect("ALLOC line");
            let mut it = line
                .split_whitespace()
                .skip(1)
                .map(|v| v.parse().unwrap_or(0));
            (it.next().unwrap_or(0), it.next().unwrap_or(0))
        }
    }

    impl Drop for NodeProc {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    // ---------------------------------------------------------------- measuring

    /// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`, else 100).
    fn clk_tck() -> f64 {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    }

    /// CPU time (user + system) of process `pid` so far, in seconds; `pid` 0 is this
    /// process.
    fn cpu_secs(pid: u32) -> f64 {
        let path = if pid == 0 {
            "/proc/self/stat".to_string()
        } else {
            format!("/proc/{pid}/stat")
        };
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        // Fields after the command name (which may hold spaces), from field 3 on.
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        ticks as f64 / clk_tck()
    }

    /// One status counter of the node at `addr`.
    async fn counters(addr: SocketAddr) -> serde_json::Value {
        for _ in 0..50 {
            if let Some(v) = status_json(addr, Duration::from_secs(1)).await {
                return v["counters"].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no status from {addr}");
    }

    fn counter(v: &serde_json::Value, name: &str) -> f64 {
        v[name].as_u64().unwrap_or(0) as f64
    }

    // ---------------------------------------------------------------- raw HTTP

    /// Reads HTTP/1.1 messages (requests or responses) with a `content-length` body
    /// (or none) from a stream.
    struct HttpReader {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl HttpReader {
        /// The next message's first line and body; `None` at the end of the stream.
        async fn next(&mut self) -> Option<(String, Vec<u8>, bool)> {
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    let mut len = 0usize;
                    let mut close = false;
                    for h in head.lines().skip(1) {
                        let Some((k, v)) = h.split_once(':') else {
                            continue;
                        };
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if k.eq_ignore_ascii_case("connection") && v.trim() == "close" {
                            close = true;
                        }
                    }
                    let total = end + 4 + len;
                    while self.buf.len() < total {
                        self.fill().await?;
                    }
                    let body = self.buf[end + 4..total].to_vec();
                    self.buf.drain(..total);
                    let first = head.lines().next().unwrap_or("").to_string();
                    return Some((first, body, close));
                }
                self.fill().await?;
            }
        }

        async fn fill(&mut self) -> Option<()> {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }

    /// A whole `POST /cluster/v1/message` request carrying `env`.
    fn request(to: SocketAddr, env: &Envelope) -> Vec<u8> {
        let body = env.encode();
        let mut r = format!(
            "POST /cluster/v1/message HTTP/1.1\r\nhost: {to}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(&body);
        r
    }

    // ---------------------------------------------------------------- the leader

    const CLUSTER: ClusterId = ClusterId(0x0000_0001_5eed_0000_0000_0000_0000_00c1);
    const LEADER: NodeId = NodeId(0x7a8b_9cad_becf_d0e1_f203_1425_3647_5869);

    /// What the fake leader's listener received.
    #[derive(Default)]
    struct Received {
        /// Acknowledgements (`AppendReply`).
        acks: AtomicU64,
        /// Anything else (probes...).
        other: AtomicU64,
    }

    /// The leader's listener: answers every request 204 and counts what it carried;
    /// `echo` gets the largest `sent_at` acknowledged.
    async fn leader_listener(
        listener: TcpListener,
        received: Arc<Received>,
        echo: watch::Sender<u64>,
    ) {
        let echo = Arc::new(echo);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (received, echo) = (received.clone(), echo.clone());
            tokio::spawn(async move {
                let mut r = HttpReader {
                    stream,
                    buf: Vec::new(),
                };
                while let Some((_, body, close)) = r.next().await {
                    match Envelope::decode(&body).map(|e| e.msg) {
                        Ok(Message::AppendReply(a)) => {
                            received.acks.fetch_add(1, Ordering::Relaxed);
                            let t = a.sent_at.as_nanos();
                            echo.send_if_modified(|v| {
                                let newer = t > *v;
                                *v = (*v).max(t);
                                newer
                            });
                        }
                        _ => {
                            received.other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let resp: &[u8] = if close {
                        b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
                    } else {
                        b"HTTP/1.1 204 No Content\r\n\r\n"
                    };
                    if r.stream.write_all(resp).await.is_err() || close {
                        break;
                    }
                }
            });
        }
    }

    fn envelope(node: NodeId, leader_addr: &str, msg: Message) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            cluster: Some(CLUSTER),
            from: LEADER,
            from_addr: Address::new(leader_addr),
            to: Some(node),
            msg,
        }
    }

    fn heartbeat(sent_at: u64) -> Message {
        Message::Append(Append {
            term: 1,
            prev_index: 1,
            prev_term: 1,
            entries: Vec::new(),
            commit: 1,
            sent_at: CoreInstant::from_nanos(sent_at),
            hold: None,
        })
    }

    /// Sends one request on a fresh connection; the status line of the answer.
    async fn send_one(to: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(to).await.expect("connect to the node");
        s.write_all(req).await.expect("write");
        let mut r = HttpReader {
            stream: s,
            buf: Vec::new(),
        };
        r.next().await.map(|m| m.0).unwrap_or_default()
    }

    /// `conns` connections sending `req` back to back until `stop`; answers 2xx are
    /// counted in `ok`, others in `bad`.
    fn flood(
        to: SocketAddr,
        req: Arc<Vec<u8>>,
        conns: usize,
        stop: Arc<AtomicBool>,
        ok: Arc<AtomicU64>,
        bad: Arc<AtomicU64>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..conns)
            .map(|_| {
                let (req, stop, ok, bad) = (req.clone(), stop.clone(), ok.clone(), bad.clone());
                tokio::spawn(async move {
                    let s = TcpStream::connect(to).await.expect("connect to the node");
                    let _ = s.set_nodelay(true);
                    let mut r = HttpReader {
                        stream: s,
                        buf: Vec::new(),
                    };
                    while !stop.load(Ordering::Relaxed) {
                        if r.stream.write_all(&req).await.is_err() {
                            break;
                        }
                        match r.next().await {
                            Some((line, _, _)) if line.contains(" 20") => {
                                ok.fetch_add(1, Ordering::Relaxed)
                            }
                            Some(_) => bad.fetch_add(1, Ordering::Relaxed),
                            None => break,
                        };
                    }
                })
            })
            .collect()
    }

    /// Sends heartbeat `req` (carrying `seq`) and waits for its answer and for the
    /// leader's listener to receive its acknowledgement; the round trip, or `None`.
    async fn ping(
        r: &mut HttpReader,
        req: &[u8],
        seq: u64,
        echo: &mut watch::Receiver<u64>,
        answered: &AtomicU64,
    ) -> Option<Duration> {
        let t = Instant::now();
        r.stream.write_all(req).await.ok()?;
        let ok = r.next().await.is_some_and(|m| m.0.contains(" 204"));
        if ok {
            answered.fetch_add(1, Ordering::Relaxed);
        }
        let waited =
            tokio::time::timeout(Duration::from_secs(1), echo.wait_for(|v| *v >= seq)).await;
        (ok && matches!(waited, Ok(Ok(_)))).then(|| t.elapsed())
    }

    /// Readings at one instant.
    #[derive(Clone, Copy)]
    struct Reading {
        at: Instant,
        node_cpu: f64,
        own_cpu: f64,
        allocs: u64,
        bytes: u64,
        msgs_in: f64,
        coalesced: f64,
        acks: u64,
        answered: u64,
    }

    /// What one phase measured (differences of two readings).
    struct Phase {
        name: &'static str,
        secs: f64,
        answered: f64,
        msgs_in: f64,
        coalesced: f64,
        acks: f64,
        node_cpu: f64,
        own_cpu: f64,
        allocs: f64,
        bytes: f64,
    }

    struct Rig {
        node: NodeProc,
        node_addr: SocketAddr,
        received: Arc<Received>,
        answered: Arc<AtomicU64>,
    }

    impl Rig {
        async fn read(&mut self) -> Reading {
            // The status request itself is a message of sorts: read it first.
            let c = counters(self.node_addr).await;
            let (allocs, bytes) = self.node.allocs();
            Reading {
                at: Instant::now(),
                node_cpu: cpu_secs(self.node.child.id()),
                own_cpu: cpu_secs(0),
                allocs,
                bytes,
                msgs_in: counter(&c, "messages_in"),
                coalesced: counter(&c, "send_coalesced"),
                acks: self.received.acks.load(Ordering::Relaxed),
                answered: self.answered.load(Ordering::Relaxed),
            }
        }
    }

    fn phase(name: &'static str, a: Reading, b: Reading) -> Phase {
        Phase {
            name,
            secs: b.at.duration_since(a.at).as_secs_f64(),
            answered: (b.answered - a.answered) as f64,
            msgs_in: b.msgs_in - a.msgs_in,
            coalesced: b.coalesced - a.coalesced,
            acks: (b.acks - a.acks) as f64,
            node_cpu: b.node_cpu - a.node_cpu,
            own_cpu: b.own_cpu - a.own_cpu,
            allocs: (b.allocs - a.allocs) as f64,
            bytes: (b.bytes - a.bytes) as f64,
        }
    }

    pub struct Opts {
        pub seconds: u64,
        pub connections: usize,
        pub heartbeat_connections: usize,
        pub rest_seconds: u64,
        pub load: bool,
        pub rest: bool,
    }

    pub async fn run(o: Opts) {
        let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "{} CPUs, load average at start: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_avg
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        if o.load {
            load(&o).await;
        }
        if o.rest {
            rest(&o).await;
        }
    }

    async fn load(o: &Opts) {
        let leader_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let leader_addr = leader_l.local_addr().expect("addr").to_string();
        let received = Arc::new(Received::default());
        let (echo_tx, mut echo_rx) = watch::channel(0u64);
        tokio::spawn(leader_listener(leader_l, received.clone(), echo_tx));
        let node_addr = procs::free_addrs(1)[0];
        let node = NodeProc::start(node_addr, &format!("{node_addr},{leader_addr}"));
        let id = node.id;
        // Wait for the listener, then make the node a follower of this leader.
        let mut membership = Membership::default();
        for (nid, addr) in [(id, node_addr.to_string()), (LEADER, leader_addr.clone())] {
            membership.members.insert(
                nid,
                Member {
                    addr: Address::new(addr),
                    name: None,
                    voter: true,
                },
            );
        }
        let snap = envelope(
            id,
            &leader_addr,
            Message::Snapshot(SnapshotMsg {
                term: 1,
                snapshot: Snapshot {
                    index: 1,
                    term: 1,
                    membership,
                    data: Default::default(),
                },
                entries: Vec::new(),
                sent_at: CoreInstant::from_nanos(1),
            }),
        );
        let mut placed = false;
        for _ in 0..100 {
            if TcpStream::connect(node_addr).await.is_ok() {
                let line = send_one(node_addr, &request(node_addr, &snap)).await;
                let v = status_json(node_addr, Duration::from_secs(1)).await;
                if line.contains(" 204") && v.is_some_and(|v| v["role"] == "Secondary") {
                    placed = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            placed,
            "the node did not become a follower of the benchmark"
        );
        // The leader's own heartbeat, 20 a second, on a connection of its own.
        let hb_stop = Arc::new(AtomicBool::new(false));
        {
            let stop = hb_stop.clone();
            let req = request(node_addr, &envelope(id, &leader_addr, heartbeat(2)));
            tokio::spawn(async move {
                let s = TcpStream::connect(node_addr).await.expect("connect");
                let _ = s.set_nodelay(true);
                let mut r = HttpReader {
                    stream: s,
                    buf: Vec::new(),
                };
                while !stop.load(Ordering::Relaxed) {
                    if r.stream.write_all(&req).await.is_err() || r.next().await.is_none() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let answered = Arc::new(AtomicU64::new(0));
        let mut rig = Rig {
            node,
            node_addr,
            received: received.clone(),
            answered: answered.clone(),
        };
        let bad = Arc::new(AtomicU64::new(0));
        let window = Duration::from_secs(o.seconds);
        let warm = Duration::from_secs(1);
        let mut phases = Vec::new();

        // Phase 1 and 2: floods.
        let late_ack = envelope(
            id,
            &leader_addr,
            Message::AppendReply(AppendReply {
                term: 1,
                success: true,
                index: 1,
                sent_at: CoreInstant::from_nanos(1),
                at: CoreInstant::from_nanos(1),
                released: Vec::new(),
            }),
        );
        let hb = envelope(id, &leader_addr, heartbeat(3));
        // The heartbeat flood uses few connections: the node sends its replies to the
        // one leader with 2 requests in flight, and a faster flood would mostly
        // measure replies superseded in its queue, never sent.
        for (name, env, conns) in [
            ("receive", &late_ack, o.connections),
            ("heartbeat", &hb, o.heartbeat_connections),
        ] {
            let stop = Arc::new(AtomicBool::new(false));
            let tasks = flood(
                node_addr,
                Arc::new(request(node_addr, env)),
                conns,
                stop.clone(),
                answered.clone(),
                bad.clone(),
            );
            tokio::time::sleep(warm).await;
            let a = rig.read().await;
            tokio::time::sleep(window).await;
            let b = rig.read().await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = t.await;
            }
            phases.push(phase(name, a, b));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }

        // Phase 3: ping-pong, one heartbeat at a time.
        let mut rtts = Vec::new();
        {
            let s = TcpStream::connect(node_addr).await.expect("connect");
            let _ = s.set_nodelay(true);
            let mut r = HttpReader {
                stream: s,
                buf: Vec::new(),
            };
            let mut seq = 1_000_000u64;
            let hb_req = |seq: u64| request(node_addr, &envelope(id, &leader_addr, heartbeat(seq)));
            let until = Instant::now() + warm;
            while Instant::now() < until {
                seq += 1;
                ping(&mut r, &hb_req(seq), seq, &mut echo_rx, &answered).await;
            }
            let a = rig.read().await;
            let until = Instant::now() + window;
            while Instant::now() < until {
                seq += 1;
                if let Some(d) = ping(&mut r, &hb_req(seq), seq, &mut echo_rx, &answered).await {
                    rtts.push(d.as_secs_f64() * 1e6);
                }
            }
            let b = rig.read().await;
            phases.push(phase("ping-pong", a, b));
        }
        hb_stop.store(true, Ordering::Relaxed);

        println!();
        println!(
            "One node under load over loopback ({} connections for the receive flood, {} for heartbeats, {} s windows):",
            o.connections, o.heartbeat_connections, o.seconds
        );
        println!(
            "{:<10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}",
            "phase",
            "answers/s",
            "in/s",
            "sent/s",
            "coal./s",
            "node CPU",
            "us/msg in",
            "allocs/in",
            "bytes/in",
            "bench CPU"
        );
        for p in &phases {
            println!(
                "{:<10} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>8.0}% {:>10.1} {:>10.1} {:>10.0} {:>8.0}%",
                p.name,
                p.answered / p.secs,
                p.msgs_in / p.secs,
                p.acks / p.secs,
                p.coalesced / p.secs,
                100.0 * p.node_cpu / p.secs,
                1e6 * p.node_cpu / p.msgs_in.max(1.0),
                p.allocs / p.msgs_in.max(1.0),
                p.bytes / p.msgs_in.max(1.0),
                100.0 * p.own_cpu / p.secs,
            );
        }
        // Two equations, cost = in x R + sent x S, from the two floods (sent: the
        // requests that reached the leader's listener; a reply superseded in the
        // queue costs the node little and is not counted).
        let (r, h) = (&phases[0], &phases[1]);
        let solve = |cr: f64, ch: f64| {
            let det = r.msgs_in * h.acks - r.acks * h.msgs_in;
            let rr = (cr * h.acks - r.acks * ch) / det;
            let ss = (r.msgs_in * ch - h.msgs_in * cr) / det;
            (rr, ss)
        };
        let (cpu_r, cpu_s) = solve(r.node_cpu, h.node_cpu);
        let (al_r, al_s) = solve(r.allocs, h.allocs);
        let (by_r, by_s) = solve(r.bytes, h.bytes);
        println!(
            "receive path, per message received: {:.1} us CPU, {:.1} allocations, {:.0} bytes",
            cpu_r * 1e6,
            al_r,
            by_r
        );
        println!(
            "send path, per message sent:        {:.1} us CPU, {:.1} allocations, {:.0} bytes",
            cpu_s * 1e6,
            al_s,
            by_s
        );
        let pp = &phases[2];
        let mut rtts2 = rtts.clone();
        println!(
            "ping-pong: {:.0} round trips/s, round trip p50 {:.0} us, p99 {:.0} us; per round trip (1 in + 1 out): {:.1} us node CPU, {:.1} allocations",
            rtts.len() as f64 / pp.secs,
            procs::pct(&mut rtts, 50.0),
            procs::pct(&mut rtts2, 99.0),
            1e6 * pp.node_cpu / pp.msgs_in.max(1.0),
            pp.allocs / pp.msgs_in.max(1.0),
        );
        println!(
            "non-2xx answers: {}; acknowledgements received by the leader: {}; other messages: {}",
            bad.load(Ordering::Relaxed),
            received.acks.load(Ordering::Relaxed),
            received.other.load(Ordering::Relaxed)
        );
        drop(rig);
    }

    async fn rest(o: &Opts) {
        let procs = Procs::start(5, &[] as &[&str]);
        let Some(p) = wait_agreed(&procs.addrs, Duration::from_secs(20)).await else {
            println!("rest: no agreed primary within 20 s");
            return;
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pids: Vec<u32> = (0..5).map(|i| procs.pid(i)).collect();
        let mut before = Vec::new();
        for (i, a) in procs.addrs.iter().enumerate() {
            before.push((counters(*a).await, cpu_secs(pids[i])));
        }
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(o.rest_seconds)).await;
        let mut after = Vec::new();
        for (i, a) in procs.addrs.iter().enumerate() {
            after.push((counters(*a).await, cpu_secs(pids[i])));
        }
        let secs = t0.elapsed().as_secs_f64();
        let still = wait_agreed(&procs.addrs, Duration::from_secs(2)).await;
        println!();
        println!(
            "5 cluster-node processes at rest, default timings, {secs:.1} s after settling (primary: node {p}{}):",
            if still == Some(p) { "" } else { ", CHANGED during the window" }
        );
        println!(
            "{:<6} {:<9} {:>12} {:>10} {:>10} {:>12}",
            "node", "role", "CPU % core", "in/s", "out/s", "us CPU/msg"
        );
        let mut total = 0.0;
        for i in 0..5 {
            let cpu = after[i].1 - before[i].1;
            let msgs_in =
                counter(&after[i].0, "messages_in") - counter(&before[i].0, "messages_in");
            let out = counter(&after[i].0, "messages_out") - counter(&before[i].0, "messages_out");
            total += cpu;
            println!(
                "{:<6} {:<9} {:>11.2}% {:>10.1} {:>10.1} {:>12.1}",
                i,
                if i == p { "primary" } else { "secondary" },
                100.0 * cpu / secs,
                msgs_in / secs,
                out / secs,
                1e6 * cpu / (msgs_in + out).max(1.0)
            );
        }
        println!(
            "mean {:.2}% of one core per node (CPU time from /proc/PID/stat, {} ticks a second)",
            100.0 * total / secs / 5.0,
            clk_tck()
        );
    }
}

#[cfg(not(madsim))]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("node") {
        let listen = args
            .get(2)
            .and_then(|a| a.parse().ok())
            .expect("node LISTEN PEERS");
        bench::node_main(listen, args.get(3).cloned().unwrap_or_default());
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let value = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let opts = bench::Opts {
        seconds: value("--seconds", 5),
        connections: value("--connections", 32) as usize,
        heartbeat_connections: value("--heartbeat-connections", 2) as usize,
        rest_seconds: value("--rest-seconds", 20),
        load: only.as_deref() != Some("rest"),
        rest: only.as_deref() != Some("load"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench::run(opts));
}

#[cfg(madsim)]
fn main() {}
