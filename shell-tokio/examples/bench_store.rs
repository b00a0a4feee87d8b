//! The replicated key-value store (P14) under load, with `cluster-node` processes on
//! 127.0.0.1 (`Config::datacenter()`), side by side with a 3-member etcd cluster on
//! 127.0.0.1 in the same run if `etcd` is installed (Debian: `etcd-server`, and
//! `etcd-client` for `etcdctl`). Not a test: it prints a markdown table.
//!
//! ```text
//! cargo build --release -p cluster-mode --bin cluster-node --example bench_store
//! target/release/examples/bench_store [name=value ...]
//! ```
//!
//! Options (defaults in brackets): `sizes=3,5` (cluster sizes), `clients=1,64`,
//! `secs=10` (write phase), `read_secs=3` (each read phase), `value=100` (bytes),
//! `keys=1024` (key space), `dirs=mem,disk` (our nodes without, then with a data
//! directory under the temp dir), `on=follower,primary` (which node's application runs
//! the load), `etcd=auto|no`, `etcd_dirs=disk,tmpfs` (etcd's data directories under the
//! temp dir, or /dev/shm), `etcd_perf=s,m,l,xl` (`etcdctl check perf` loads; `none`),
//! `node_args="..."` (extra arguments for every node, split on spaces).
//!
//! Ours: each row is a fresh cluster whose nodes are all given `--store-load ...,on=X`
//! (`src/bin/cluster-node/store_load.rs`): once the primary is agreed, the chosen node
//! runs `clients` concurrent sessions of `cluster.store()` in its own process (the
//! application's side of the API), each putting `value` bytes to its own keys in turn
//! (`keys` keys in all), then reading them back at each consistency, and prints its
//! figures. A follower's writes and linearizable reads are forwarded to the primary.
//!
//! etcd: the same puts and reads through etcd's HTTP/JSON gateway (`POST /v3/kv/put`,
//! `/v3/kv/range`), one HTTP/1.1 connection per client, from this process, to the leader
//! and to a follower; then `etcdctl check perf` (gRPC, etcd's own load model) for each
//! load. The gateway turns each request into a gRPC call inside etcd, which costs etcd
//! some CPU: `check perf` is the figure etcd's own client reaches. etcd 3.4 has no
//! `--unsafe-no-fsync`; a data directory on tmpfs (/dev/shm) makes its fsyncs free.
#![cfg_attr(madsim, allow(dead_code, unused_imports))]

#[cfg(not(madsim))]
#[path = "../tests/common/procs.rs"]
mod procs;
#[cfg(not(madsim))]
#[path = "../src/bin/cluster-node/tally.rs"]
mod tally;

/// Real processes and sockets only: nothing to run under the madsim simulator.
#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench::main());
}

#[cfg(not(madsim))]
mod bench {
    use super::procs::{free_addrs, node_bin, peer_list, spawn_node_lines, Children};
    use super::tally::Tally;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// The options, as `name=value` arguments.
    struct Opts {
        sizes: Vec<usize>,
        clients: Vec<usize>,
        secs: f64,
        read_secs: f64,
        value: usize,
        keys: usize,
        dirs: Vec<String>,
        on: Vec<String>,
        etcd: bool,
        etcd_dirs: Vec<String>,
        etcd_perf: Vec<String>,
        node_args: Vec<String>,
    }

    fn list<T: std::str::FromStr>(name: &str, v: &str) -> Vec<T> {
        v.split(',')
            .filter(|s| !s.is_empty() && *s != "none")
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: cannot read {s:?}"))
            })
            .collect()
    }

    fn opts() -> Opts {
        let mut kv = BTreeMap::new();
        for a in std::env::args().skip(1) {
            let (k, v) = a
                .split_once('=')
                .unwrap_or_else(|| panic!("{a:?}: write name=value (see the example's doc)"));
            kv.insert(k.to_string(), v.to_string());
        }
        let mut take = |k: &str, d: &str| kv.remove(k).unwrap_or_else(|| d.to_string());
        let o = Opts {
            sizes: list("sizes", &take("sizes", "3,5")),
            clients: list("clients", &take("clients", "1,64")),
            secs: take("secs", "10").parse().expect("secs: seconds"),
            read_secs: take("read_secs", "3").parse().expect("read_secs: seconds"),
            value: take("value", "100").parse().expect("value: bytes"),
            keys: take("keys", "1024").parse().expect("keys: a number"),
            dirs: list("dirs", &take("dirs", "mem,disk")),
            on: list("on", &take("on", "follower,primary")),
            etcd: match take("etcd", "auto").as_str() {
                "auto" | "yes" => true,
                "no" => false,
                v => panic!("etcd={v}: auto or no"),
            },
            etcd_dirs: list("etcd_dirs", &take("etcd_dirs", "disk,tmpfs")),
            etcd_perf: list("etcd_perf", &take("etcd_perf", "s,m,l,xl")),
            node_args: take("node_args", "")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        };
        if let Some(k) = kv.keys().next() {
            panic!("unknown option {k:?} (see the example's doc)");
        }
        o
    }

    /// One row of the table.
    struct Row {
        system: String,
        members: usize,
        data: String,
        clients: usize,
        on: String,
        writes: Value,
        /// (column name, figures) of each read phase.
        reads: Vec<(String, Value)>,
        /// The 1-minute load average when the row started.
        load: String,
        note: String,
    }

    fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".into())
    }

    fn temp_dir(kind: &str, what: &str) -> PathBuf {
        let base = if kind == "tmpfs" {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!(
            "cluster-mode-bench-{what}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    /// One fresh cluster of `n` nodes with the load on `on`; the chosen node's figures.
    fn run_ours(o: &Opts, n: usize, clients: usize, on: &str, dir: &str) -> Result<Value, String> {
        let addrs = free_addrs(n);
        let peers = peer_list(&addrs);
        let data = (dir == "disk").then(|| temp_dir("disk", "node"));
        let spec = format!(
            "clients={clients},secs={},read_secs={},value={},keys={},on={on}",
            o.secs, o.read_secs, o.value, o.keys
        );
        let (tx, rx) = mpsc::channel();
        let mut kids = Children(Vec::new());
        for (i, a) in addrs.iter().enumerate() {
            let mut args: Vec<std::ffi::OsString> = vec![
                "--min-nodes".into(),
                n.to_string().into(),
                "--store-load".into(),
                spec.clone().into(),
            ];
            args.extend(o.node_args.iter().map(Into::into));
            if let Some(d) = &data {
                args.push("--data-dir".into());
                args.push(d.join(format!("n{i}")).into());
            }
            kids.0
                .push(spawn_node_lines(i, *a, &peers, &args, tx.clone()));
        }
        let budget = Duration::from_secs_f64(90.0 + o.secs + 4.0 * o.read_secs);
        let deadline = Instant::now() + budget;
        let mut skipped = 0;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((_, line)) => {
                    let Some(j) = line.strip_prefix("STORE_LOAD ") else {
                        continue;
                    };
                    let v: Value = serde_json::from_str(j).map_err(|e| format!("{e}: {j}"))?;
                    if v.get("skipped").is_some() {
                        skipped += 1;
                        if skipped == n {
                            break Err("every node skipped the load".to_string());
                        }
                        continue;
                    }
                    if let Some(e) = v.get("error") {
                        break Err(e.to_string());
                    }
                    break Ok(v);
                }
                Err(_) => break Err(format!("no figures within {budget:?}")),
            }
        };
        drop(kids);
        if let Some(d) = data {
            let _ = std::fs::remove_dir_all(d);
        }
        result
    }

    // ---- etcd, through its HTTP/JSON gateway -------------------------------------

    type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

    async fn connect(addr: SocketAddr) -> Result<Sender, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// One request on the connection; the answer's body if its status is 2xx.
    async fn call(
        s: &mut Sender,
        addr: SocketAddr,
        path: &str,
        body: String,
    ) -> Result<Value, String> {
        use http_body_util::BodyExt;
        s.ready().await.map_err(|e| e.to_string())?;
        let req = http::Request::post(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }

    fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
                if k <= chunk.len() {
                    out.push(A[((n >> shift) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[derive(Clone, Copy)]
    enum EtcdOp {
        Put,
        Range { serializable: bool },
    }

    /// `clients` connections to `addr`, each doing `op` on its own keys for `secs`.
    async fn etcd_phase(
        o: &Opts,
        addr: SocketAddr,
        clients: usize,
        op: EtcdOp,
        secs: f64,
    ) -> Value {
        let per_client = (o.keys / clients).max(1);
        let value = b64(&vec![b'v'; o.value]);
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(clients + 1));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (start, value) = (start.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                let mut t = Tally::default();
                let mut conn = connect(addr).await;
                start.wait().await;
                let s = match conn.as_mut() {
                    Ok(s) => s,
                    Err(e) => {
                        t.error(e);
                        return t;
                    }
                };
                let deadline = Instant::now() + Duration::from_secs_f64(secs);
                let mut i = 0;
                while Instant::now() < deadline {
                    let key = b64(format!("load/{c}/{}", i % per_client).as_bytes());
                    let (path, body) = match op {
                        EtcdOp::Put => ("/v3/kv/put", json!({"key": key, "value": value})),
                        EtcdOp::Range { serializable } => (
                            "/v3/kv/range",
                            json!({"key": key, "serializable": serializable}),
                        ),
                    };
                    let began = Instant::now();
                    match call(s, addr, path, body.to_string()).await {
                        Ok(_) => t.ok(began.elapsed()),
                        Err(e) => {
                            t.error(e);
                            // A broken connection: a new one.
                            if let Ok(n) = connect(addr).await {
                                *s = n;
                            }
                        }
                    }
                    i += 1;
                }
                t
            }));
        }
        start.wait().await;
        let began = Instant::now();
        let mut all = Tally::default();
        for t in tasks {
            if let Ok(t) = t.await {
                all.merge(t);
            }
        }
        all.report(began.elapsed())
    }

    /// A 3-member etcd cluster on 127.0.0.1 with its data under `dir`.
    struct Etcd {
        client: Vec<SocketAddr>,
        _kids: Children,
    }

    fn start_etcd(dir: &Path) -> Result<Etcd, String> {
        let a = free_addrs(6);
        let (client, peer) = (a[..3].to_vec(), a[3..].to_vec());
        let initial = (0..3)
            .map(|i| format!("m{i}=http://{}", peer[i]))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("bench-{}-{}", std::process::id(), rand::random::<u32>());
        let mut kids = Children(Vec::new());
        for i in 0..3 {
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("m{i}")))
                .args(["--listen-client-urls", &format!("http://{}", client[i])])
                .args(["--advertise-client-urls", &format!("http://{}", client[i])])
                .args(["--listen-peer-urls", &format!("http://{}", peer[i])])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://{}", peer[i]),
                ])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", &token])
                .args(["--initial-cluster-state", "new"])
                .args(["--logger", "zap", "--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("spawn etcd: {e}"))?;
            kids.0.push(child);
        }
        Ok(Etcd {
            client,
            _kids: kids,
        })
    }

    /// Waits until every member answers its status and one leader is named; the
    /// leader's and a follower's client address.
    async fn etcd_roles(e: &Etcd) -> Result<(SocketAddr, SocketAddr), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ids = Vec::new();
            for a in &e.client {
                let st = async {
                    let mut s = connect(*a).await?;
                    call(&mut s, *a, "/v3/maintenance/status", "{}".into()).await
                };
                match tokio::time::timeout(Duration::from_secs(2), st).await {
                    Ok(Ok(v)) => ids.push((
                        v["header"]["member_id"].as_str().map(str::to_string),
                        v["leader"].as_str().map(str::to_string),
                    )),
                    _ => ids.push((None, None)),
                }
            }
            let leader = ids[0].1.clone();
            let agreed = leader.is_some()
                && leader != Some("0".into())
                && ids.iter().all(|(m, l)| m.is_some() && *l == leader);
            if agreed {
                let li = ids.iter().position(|(m, _)| *m == leader);
                if let Some(li) = li {
                    return Ok((e.client[li], e.client[(li + 1) % 3]));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no agreed etcd leader within 30 s: {ids:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `etcdctl check perf --load=<load>`: its output, without the progress bar.
    fn check_perf(e: &Etcd, load: &str) -> String {
        let eps = e
            .client
            .iter()
            .map(|a| format!("http://{a}"))
            .collect::<Vec<_>>()
            .join(",");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &eps,
                "check",
                "perf",
                &format!("--load={load}"),
            ])
            .output();
        match out {
            Err(e) => format!("etcdctl: {e}"),
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                // The verdict lines, cut from the progress bar they may share a line with.
                const WORDS: [&str; 6] =
                    ["PASS", "FAIL", "Throughput", "Slowest", "Stddev", "Error"];
                text.split(['\n', '\r'])
                    .filter_map(|l| {
                        WORDS
                            .iter()
                            .filter_map(|w| l.find(w))
                            .min()
                            .map(|i| &l[i..])
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }

    /// Milliseconds with three significant digits or so.
    fn ms(x: f64) -> String {
        if x < 1.0 {
            format!("{x:.3}")
        } else if x < 10.0 {
            format!("{x:.2}")
        } else {
            format!("{x:.1}")
        }
    }

    fn cell(v: &Value, rate: bool) -> String {
        let f = |k: &str| v[k].as_f64().map_or("-".to_string(), ms);
        if v.is_null() {
            return "-".into();
        }
        let mut s = if rate {
            format!("{} / {} / {}", f("p50_ms"), f("p99_ms"), f("max_ms"))
        } else {
            format!(
                "{} / {} ({}/s)",
                f("p50_ms"),
                f("p99_ms"),
                v["ops_per_s"].as_f64().unwrap_or(0.0)
            )
        };
        if v["errors"].as_u64().unwrap_or(0) > 0 {
            s += &format!(" [{} errors]", v["errors"]);
        }
        s
    }

    fn print_table(rows: &[Row]) {
        println!(
            "| system | members | data | clients | load on | writes/s | write ms p50 / p99 / max \
             | linearizable read ms p50 / p99 (reads/s) | lease read | local (etcd: serializable) read \
             | load avg | note |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in rows {
            let read = |name: &str| {
                r.reads
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("-".to_string(), |(_, v)| cell(v, false))
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.system,
                r.members,
                r.data,
                r.clients,
                r.on,
                r.writes["ops_per_s"]
                    .as_f64()
                    .map_or("-".into(), |x| format!("{x:.0}")),
                cell(&r.writes, true),
                read("linearizable"),
                read("lease"),
                read("local"),
                r.load,
                r.note,
            );
        }
    }

    pub async fn main() {
        let o = opts();
        let bin = node_bin();
        assert!(
            bin.exists(),
            "build the node first: cargo build --release -p cluster-mode --bin cluster-node ({})",
            bin.display()
        );
        let mut rows = Vec::new();
        for dir in &o.dirs {
            for &n in &o.sizes {
                for &c in &o.clients {
                    for on in &o.on {
                        let load = loadavg();
                        let started = Instant::now();
                        let r = run_ours(&o, n, c, on, dir);
                        eprintln!(
                            "cluster-mode n={n} dir={dir} clients={c} on={on} ({:.0} s): {}",
                            started.elapsed().as_secs_f64(),
                            match &r {
                                Ok(v) => v.to_string(),
                                Err(e) => format!("FAILED: {e}"),
                            }
                        );
                        let (writes, reads, note) = match r {
                            Ok(v) => {
                                let reads = v["reads"]
                                    .as_object()
                                    .map(|m| {
                                        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                                    })
                                    .unwrap_or_default();
                                let note = if v["primary_changed"] == true {
                                    "primary changed".into()
                                } else {
                                    String::new()
                                };
                                (v["writes"].clone(), reads, note)
                            }
                            Err(e) => (Value::Null, Vec::new(), format!("failed: {e}")),
                        };
                        rows.push(Row {
                            system: "cluster-mode".into(),
                            members: n,
                            data: if dir == "disk" {
                                "data dir (disk)"
                            } else {
                                "memory"
                            }
                            .into(),
                            clients: c,
                            on: on.clone(),
                            writes,
                            reads,
                            load,
                            note,
                        });
                    }
                }
            }
        }

        let mut perf = Vec::new();
        let have_etcd = o.etcd
            && Command::new("etcd")
                .arg("--version")
                .output()
                .is_ok_and(|x| x.status.success());
        if o.etcd && !have_etcd {
            eprintln!(
                "etcd is not installed (Debian: apt-get install etcd-server etcd-client): skipped"
            );
        }
        if have_etcd {
            for kind in &o.etcd_dirs {
                let dir = temp_dir(kind, "etcd");
                let data = if kind == "tmpfs" {
                    "tmpfs (/dev/shm)".to_string()
                } else {
                    "disk".to_string()
                };
                let e = match start_etcd(&dir) {
                    Ok(e) => e,
                    Err(err) => {
                        eprintln!("etcd: {err}");
                        continue;
                    }
                };
                match etcd_roles(&e).await {
                    Err(err) => eprintln!("etcd: {err}"),
                    Ok((leader, follower)) => {
                        for &c in &o.clients {
                            for on in &o.on {
                                let addr = if on == "primary" { leader } else { follower };
                                let load = loadavg();
                                let writes = etcd_phase(&o, addr, c, EtcdOp::Put, o.secs).await;
                                let mut reads = Vec::new();
                                if o.read_secs > 0.0 {
                                    for (name, serializable) in
                                        [("linearizable", false), ("local", true)]
                                    {
                                        let op = EtcdOp::Range { serializable };
                                        let v = etcd_phase(&o, addr, c, op, o.read_secs).await;
                                        reads.push((name.to_string(), v));
                                    }
                                }
                                let r: serde_json::Map<_, _> = reads.iter().cloned().collect();
                                eprintln!(
                                    "etcd {data} clients={c} on={on}: {}",
                                    json!({"writes": writes, "reads": r})
                                );
                                rows.push(Row {
                                    system: "etcd 3.4 (HTTP/JSON gateway)".into(),
                                    members: 3,
                                    data: data.clone(),
                                    clients: c,
                                    on: if on == "primary" {
                                        "leader".into()
                                    } else {
                                        on.clone()
                                    },
                                    writes,
                                    reads,
                                    load,
                                    note: String::new(),
                                });
                            }
                        }
                        for l in &o.etcd_perf {
                            let load = loadavg();
                            let out = check_perf(&e, l);
                            eprintln!("etcd {data} check perf --load={l}:\n{out}");
                            perf.push((data.clone(), l.clone(), load, out));
                        }
                    }
                }
                drop(e);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }

        println!(
            "\nReplicated store: {} s of puts ({} B values, {} keys), then {} s of reads per \
             consistency; {} cores; load average before each row.\n",
            o.secs,
            o.value,
            o.keys,
            o.read_secs,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        print_table(&rows);
        if !perf.is_empty() {
            println!("\n`etcdctl check perf` (3 members on 127.0.0.1):\n");
            for (data, l, load, out) in &perf {
                println!("- data {data}, --load={l} (load avg {load}):");
                for line in out.lines() {
                    println!("  - {line}");
                }
            }
        }
    }
}
