//! A partition between node processes placed in network namespaces (needs root,
//! iproute2 and nftables: `shell-tokio/ci-deps.sh`).
//!
//! When it runs: as root, or whenever the `CI` environment variable is set. Then every
//! failure, a missing tool or a namespace that cannot be made included, fails the test.
//! It skips only on a developer's machine (not root, `CI` unset), saying so on stderr;
//! `CLUSTER_MODE_SKIP_NETNS=1` also skips it as root (a container without
//! `CAP_NET_ADMIN`), never in CI.
//!
//! Three namespaces, each with one `cluster-node`, joined by a bridge in a fourth; the
//! test process reaches them through a veth of its own. The primary's namespace then
//! drops all traffic from and to the other nodes (nftables); the other two elect a new
//! primary, the isolated one stops being primary. After healing, the cluster agrees
//! on one primary again. Then every node's lease intervals (`cluster_mode::lease_log`,
//! on `CLOCK_BOOTTIME`, one clock for the whole host whatever the network namespace)
//! are read and compared: two that overlap are two primaries at once, and fail the
//! test; every "primary" answer seen while polling must fall in the answering node's
//! intervals.
// Real namespaces and processes: not under the madsim simulator.
#![cfg(not(madsim))]

#[path = "common/host.rs"]
mod host;
#[path = "common/leases.rs"]
mod leases;
#[path = "common/procs.rs"]
mod procs;

use procs::{raw_status, status};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

use host::is_root;

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !is_root() {
        return Some("not root".into());
    }
    for tool in [["ip", "-V"], ["nft", "--version"]] {
        if !sh(&tool) {
            return Some(format!(
                "`{}` missing (run shell-tokio/ci-deps.sh)",
                tool[0]
            ));
        }
    }
    None
}

/// Whether the test must run: in CI (`CI` set) or as root; else it may skip.
fn required() -> bool {
    if std::env::var_os("CI").is_some() {
        return true;
    }
    is_root() && std::env::var_os("CLUSTER_MODE_SKIP_NETNS").is_none()
}

/// `Some(reason)` if the test skips here; panics if it cannot run where it must.
fn skip_reason() -> Option<String> {
    let missing = missing();
    match (required(), missing) {
        (true, Some(why)) => {
            panic!("the netns partition test must run here (root or CI) but cannot: {why}")
        }
        (true, None) => None,
        (false, None) => Some("CLUSTER_MODE_SKIP_NETNS is set".into()),
        (false, Some(why)) => Some(why),
    }
}

struct Net {
    prefix: String,
    children: Vec<Option<Child>>,
}

impl Net {
    fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..3 {
            sh(&["ip", "netns", "del", &self.ns(i)]);
        }
        sh(&["ip", "netns", "del", &format!("{}-br", self.prefix)]);
        sh(&["ip", "link", "del", &format!("{}-h", self.prefix)]);
    }
}

fn ip_of(i: usize) -> String {
    format!("10.77.{}.{}", std::process::id() % 200, i + 1)
}

fn setup(prefix: &str) -> Net {
    let net = Net {
        prefix: prefix.into(),
        children: Vec::new(),
    };
    let br = format!("{prefix}-br");
    let sub = std::process::id() % 200;
    must(&["ip", "netns", "add", &br]);
    must(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
    must(&["ip", "-n", &br, "link", "set", "br0", "up"]);
    for i in 0..3 {
        let ns = net.ns(i);
        let v = format!("{prefix}-v{i}");
        let p = format!("{prefix}-p{i}");
        must(&["ip", "netns", "add", &ns]);
        must(&["ip", "link", "add", &v, "type", "veth", "peer", "name", &p]);
        must(&["ip", "link", "set", &v, "netns", &ns]);
        must(&["ip", "link", "set", &p, "netns", &br]);
        must(&["ip", "-n", &br, "link", "set", &p, "master", "br0"]);
        must(&["ip", "-n", &br, "link", "set", &p, "up"]);
        must(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", ip_of(i)),
            "dev",
            &v,
        ]);
        must(&["ip", "-n", &ns, "link", "set", &v, "up"]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    }
    // The test process's own way in.
    let h = format!("{prefix}-h");
    let hp = format!("{prefix}-hp");
    must(&["ip", "link", "add", &h, "type", "veth", "peer", "name", &hp]);
    must(&["ip", "link", "set", &hp, "netns", &br]);
    must(&["ip", "-n", &br, "link", "set", &hp, "master", "br0"]);
    must(&["ip", "-n", &br, "link", "set", &hp, "up"]);
    must(&[
        "ip",
        "addr",
        "add",
        &format!("10.77.{sub}.100/24"),
        "dev",
        &h,
    ]);
    must(&["ip", "link", "set", &h, "up"]);
    net
}

fn isolate(net: &Net, i: usize, on: bool) {
    let ns = net.ns(i);
    if !on {
        must(&[
            "ip", "netns", "exec", &ns, "nft", "delete", "table", "inet", "cut",
        ]);
        return;
    }
    let others: Vec<String> = (0..3).filter(|&j| j != i).map(ip_of).collect();
    let set = format!("{{ {} }}", others.join(", "));
    let script = format!(
        "table inet cut {{\n chain cin {{ type filter hook input priority 0; ip saddr {set} drop; }}\n chain cout {{ type filter hook output priority 0; ip daddr {set} drop; }}\n}}\n"
    );
    let path = std::env::temp_dir().join(format!("{}-cut.nft", net.prefix));
    std::fs::write(&path, script).unwrap();
    must(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "nft",
        "-f",
        path.to_str().unwrap(),
    ]);
}

async fn agreed(addrs: &[SocketAddr], which: &[usize]) -> Option<(usize, u64)> {
    let mut prim = Vec::new();
    let mut named = Vec::new();
    for &i in which {
        let s = status(addrs[i], Duration::from_millis(200)).await?;
        if s.primary {
            prim.push((i, s.term));
        }
        named.push(s.primary_addr);
    }
    if prim.len() != 1 {
        return None;
    }
    let pa = addrs[prim[0].0].to_string();
    named
        .iter()
        .all(|n| n.as_deref() == Some(pa.as_str()))
        .then_some(prim[0])
}

async fn wait_agreed(addrs: &[SocketAddr], which: &[usize], within: Duration) -> (usize, u64) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(p) = agreed(addrs, which).await {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no agreed primary among {which:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// (node id, request sent, answer received) of a "primary" answer, on the host's
/// boottime.
type Obs = (String, u64, u64);

fn boottime() -> u64 {
    cluster_mode::clock::boottime_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_primary_is_replaced_and_heals() {
    if let Some(why) = skip_reason() {
        // Straight to the process's stderr: the test harness captures `eprintln!`.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "******** SKIPPED: the netns partition test did not run: {why}\n\
             ******** (it runs, and fails on any setup error, as root or with CI set)"
        );
        return;
    }
    let prefix = format!("cm{}", std::process::id() % 100_000);
    let mut net = setup(&prefix);
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| format!("{}:7946", ip_of(i)).parse().unwrap())
        .collect();
    let peers = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for (i, a) in addrs.iter().enumerate() {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.ns(i),
                env!("CARGO_BIN_EXE_cluster-node"),
            ])
            .args(["--fast", "--listen", &a.to_string(), "--peers", &peers])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn node in namespace");
        net.children.push(Some(child));
    }
    let (first, term1) = wait_agreed(&addrs, &[0, 1, 2], Duration::from_secs(15)).await;

    // Observe every node continuously while the primary is cut off and healed.
    let obs: Arc<Mutex<Vec<Obs>>> = Arc::default();
    let stop = Arc::new(Mutex::new(false));
    let mut pollers = Vec::new();
    for addr in addrs.iter().copied() {
        let (obs, stop) = (obs.clone(), stop.clone());
        pollers.push(tokio::spawn(async move {
            while !*stop.lock().unwrap() {
                let sent = boottime();
                if let Some(s) = status(addr, Duration::from_millis(200)).await {
                    if s.primary {
                        obs.lock()
                            .unwrap()
                            .push((format!("{:032x}", s.id), sent, boottime()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    isolate(&net, first, true);
    let rest: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let (second, term2) = wait_agreed(&addrs, &rest, Duration::from_secs(10)).await;
    assert!(term2 > term1);
    // The isolated node steps down (CheckQuorum) and its lease lapses.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = status(addrs[first], Duration::from_millis(500))
        .await
        .expect("isolated node answers the host");
    assert!(
        !s.primary,
        "isolated old primary still claims to be primary"
    );

    isolate(&net, first, false);
    let (third, _) = wait_agreed(&addrs, &[0, 1, 2], Duration::from_secs(15)).await;
    *stop.lock().unwrap() = true;
    for p in pollers {
        p.await.unwrap();
    }
    let obs = obs.lock().unwrap().clone();
    // Every node's lease intervals, read now that the partition has healed.
    let mut recs = Vec::new();
    for a in &addrs {
        let raw = raw_status(*a).await.expect("status answer");
        recs.push(leases::from_status(&raw).expect("a lease record in the status"));
    }
    let compared = leases::assert_no_overlap(&recs);
    for (who, sent, recv) in &obs {
        assert!(
            recs.iter().any(|(w, r)| w == who
                && r.intervals
                    .iter()
                    .any(|iv| iv.from <= *recv && *sent < iv.until)),
            "a primary answer of {who} at [{sent}, {recv}] outside its record: {recs:?}"
        );
    }
    assert!(
        recs.iter().filter(|(_, r)| !r.intervals.is_empty()).count() >= 2,
        "fewer than two nodes were ever primary: {recs:?}"
    );
    eprintln!("primary {first} (term {term1}) cut off -> {second} (term {term2}); healed -> {third}; {} primary answers, {compared} lease intervals compared", obs.len());
}
