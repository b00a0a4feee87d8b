//! Node processes (the `cluster-node` binary) and a tiny status client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Free loopback addresses (bound then released).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// The `--peers` value listing `addrs`.
pub fn peer_list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Node processes, killed on drop.
pub struct Procs {
    pub addrs: Vec<SocketAddr>,
    pub children: Vec<Option<Child>>,
    /// The `--peers` list every node was given.
    pub peers: String,
}

impl Procs {
    pub fn start(n: usize, extra: &[&str]) -> Procs {
        Self::start_each(n, |_| extra.iter().map(|s| s.to_string()).collect())
    }

    /// Like `start`, with arguments of each node's own (`extra(i)` for node `i`).
    pub fn start_each(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Procs {
        let addrs = free_addrs(n);
        let peers = peer_list(&addrs);
        let children = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Some(spawn_node(*a, &peers, &extra(i))))
            .collect();
        Procs {
            addrs,
            children,
            peers,
        }
    }

    /// Starts node `i` again (after `kill`) at the same address.
    pub fn respawn(&mut self, i: usize, extra: &[String]) {
        assert!(self.children[i].is_none(), "node {i} is running");
        self.children[i] = Some(spawn_node(self.addrs[i], &self.peers, extra));
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().unwrap().id()
    }

    pub fn signal(&self, i: usize, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid(i).to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `cluster-node` binary: the one cargo built for this test, or, in an example
/// (cargo names no binary there), the one beside the example's directory
/// (`target/<profile>/cluster-node` for `target/<profile>/examples/<name>`).
pub fn node_bin() -> std::path::PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_cluster-node") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    dir.join("cluster-node")
}

/// The `p`-th percentile (nearest rank on the sorted values; NaN if empty). Sorts `v`.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}

fn node_command<S: AsRef<std::ffi::OsStr>>(addr: SocketAddr, peers: &str, extra: &[S]) -> Command {
    let mut c = Command::new(node_bin());
    c.arg("--listen")
        .arg(addr.to_string())
        .arg("--peers")
        .arg(peers)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

pub fn spawn_node<S: AsRef<std::ffi::OsStr>>(addr: SocketAddr, peers: &str, extra: &[S]) -> Child {
    node_command(addr, peers, extra)
        .spawn()
        .expect("spawn cluster-node")
}

/// Child processes, killed on drop.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A node process whose stdout lines are sent to `lines` as `(i, line)` as they come
/// (by a thread, so the pipe never fills). The caller kills it (see [`Children`]).
pub fn spawn_node_lines<S: AsRef<std::ffi::OsStr>>(
    i: usize,
    addr: SocketAddr,
    peers: &str,
    extra: &[S],
    lines: std::sync::mpsc::Sender<(usize, String)>,
) -> Child {
    let mut child = node_command(addr, peers, extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cluster-node");
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send((i, line)).is_err() {
                break;
            }
        }
    });
    child
}

/// A node process whose stdout is collected (by a thread, so the pipe never fills),
/// for the `LEASES` line it prints when it exits gracefully. Killed on drop.
pub struct Piped {
    pub child: Child,
    out: Option<std::thread::JoinHandle<String>>,
}

pub fn spawn_node_piped<S: AsRef<std::ffi::OsStr>>(
    addr: SocketAddr,
    peers: &str,
    extra: &[S],
) -> Piped {
    let mut child = node_command(addr, peers, extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cluster-node");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    Piped {
        child,
        out: Some(out),
    }
}

impl Piped {
    /// SIGTERM (the node leaves gracefully), then waits up to `within` for it to exit;
    /// its whole stdout, or `Err` if it did not exit in time (it is then killed).
    pub fn terminate(mut self, within: Duration) -> Result<String, String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => return Err(format!("node {pid} did not exit within {within:?}")),
            }
        }
        let out = self.out.take().expect("read once");
        out.join().map_err(|_| "stdout reader panicked".to_string())
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one status request said.
#[derive(Clone, Debug)]
pub struct Sample {
    pub primary: bool,
    pub term: u64,
    pub primary_addr: Option<String>,
    /// The node id (a u128: read apart, since `serde_json::Value` holds it as f64).
    pub id: u128,
    /// Writes to its data directory so far.
    pub persist_writes: u64,
    /// Committed members in its view.
    pub members: usize,
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: u128,
}

/// The raw answer (headers and JSON) to GET /cluster/v1/status.
pub async fn raw_status(addr: SocketAddr) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req =
        format!("GET /cluster/v1/status HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// GET /cluster/v1/status as JSON, with a timeout. (A 128-bit id in it is a float:
/// read ids apart, as [`status`] does.)
pub async fn status_json(addr: SocketAddr, timeout: Duration) -> Option<serde_json::Value> {
    let fut = async {
        let text = raw_status(addr).await?;
        serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}

/// Polls the status every 100 ms for up to 10 s until it contains `needle`; the last
/// status read that did (empty if none did).
pub async fn status_containing(addr: SocketAddr, needle: &str) -> String {
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(text) = raw_status(addr).await {
            if text.contains(needle) {
                return text;
            }
        }
    }
    String::new()
}

/// GET /cluster/v1/status with a timeout.
pub async fn status(addr: SocketAddr, timeout: Duration) -> Option<Sample> {
    let fut = async {
        let text = raw_status(addr).await?;
        let body = text.split("\r\n\r\n").nth(1)?;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let id = serde_json::from_str::<IdOnly>(body).ok()?.id;
        Some(Sample {
            primary: v["role"] == "Primary" && v["lease_valid"] == true,
            term: v["term"].as_u64()?,
            primary_addr: v["primary"]["addr"].as_str().map(str::to_owned),
            id,
            persist_writes: v["counters"]["persist_writes"].as_u64()?,
            members: v["members"].as_array().map_or(0, Vec::len),
        })
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}

/// Waits until one node says it is primary and every other listed one names it.
pub async fn wait_agreed(addrs: &[SocketAddr], within: Duration) -> Option<usize> {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let mut samples = Vec::new();
        for a in addrs {
            samples.push(status(*a, Duration::from_millis(200)).await);
        }
        let prim: Vec<usize> = (0..addrs.len())
            .filter(|&i| samples[i].as_ref().is_some_and(|s| s.primary))
            .collect();
        if prim.len() == 1 {
            let p = prim[0];
            let paddr = addrs[p].to_string();
            if samples.iter().all(|s| {
                s.as_ref()
                    .is_some_and(|s| s.primary_addr.as_deref() == Some(paddr.as_str()))
            }) {
                return Some(p);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}
