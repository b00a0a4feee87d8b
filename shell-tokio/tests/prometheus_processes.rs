//! The metrics endpoint read by the real Prometheus tools: `promtool check metrics`
//! accepts a `cluster-node` process's answer, and a Prometheus server scraping three
//! `cluster-node` processes sees exactly one primary, then, after the primary is
//! killed (SIGKILL), exactly one other primary and the change of primary counted.
//!
//! Needs `promtool` and `prometheus` (Debian package `prometheus`, installed by
//! shell-tokio/ci-deps.sh). As root or with `CI` set a missing tool fails the test;
//! otherwise it prints why and skips.
// Real sockets and processes: not under the madsim simulator.
#![cfg(not(madsim))]

#[path = "common/host.rs"]
mod host;
#[path = "common/procs.rs"]
mod procs;
#[path = "common/scrape.rs"]
mod scrape;

use procs::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The path of `tool` if it runs (`tool --version`).
fn tool(name: &str) -> Option<PathBuf> {
    let ok = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| PathBuf::from(name))
}

/// The two tools, or `None` when the test may skip here (saying why); panics when a
/// tool is missing where the test must run (root or `CI`).
fn tools() -> Option<(PathBuf, PathBuf)> {
    host::required(
        tool("promtool").zip(tool("prometheus")),
        "the Prometheus metrics test",
        "promtool or prometheus is missing (apt-get install prometheus, or run shell-tokio/ci-deps.sh as root)",
    )
}

/// A Prometheus server in a temporary directory, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `bin` scraping `targets`' metrics endpoint every 250 ms, and waits until
    /// it says it is ready.
    async fn start(bin: &Path, targets: &[SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n\
             scrape_configs:\n  - job_name: cluster\n    metrics_path: /cluster/v1/metrics\n\
             \x20   static_configs:\n      - targets: [{list}]\n"
        );
        let cfg = dir.path().join("prometheus.yml");
        std::fs::File::create(&cfg)
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .expect("write the config");
        let addr = free_addrs(1)[0];
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let p = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = scrape::get(addr, "/-/ready", Duration::from_secs(1)).await;
            if ready.is_some_and(|(code, _, _)| code == 200) {
                return p;
            }
            if Instant::now() > deadline {
                panic!("prometheus not ready within 15 s\n{}", p.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("prometheus.log"))
            .unwrap_or_else(|e| format!("(no log: {e})"));
        format!("---- prometheus log ----\n{text}---- end of log ----")
    }

    /// The result of an instant query: (labels, value) per series.
    async fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let Some((code, _, body)) = scrape::get(self.addr, &path, Duration::from_secs(2)).await
        else {
            return Vec::new();
        };
        assert_eq!(code, 200, "query {promql}: {body}\n{}", self.log());
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        v["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| {
                        let value = s["value"][1].as_str()?.parse().ok()?;
                        Some((s["metric"].clone(), value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The value of each series of `promql` by its `instance` label.
    async fn by_instance(&self, promql: &str) -> Vec<(String, f64)> {
        self.query(promql)
            .await
            .into_iter()
            .map(|(m, v)| (m["instance"].as_str().unwrap_or("").to_string(), v))
            .collect()
    }

    /// The single value of an aggregating query, if it has one.
    async fn scalar(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql).await;
        (r.len() == 1).then(|| r[0].1)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Polls `check` every 100 ms until it returns `Some`, for up to `within`; panics
/// with `what` and Prometheus's log otherwise.
async fn wait_for<T, F, Fut>(prom: &Prometheus, within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {within:?}; last: {last}\n{}",
                prom.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one instance whose `cluster_mode_is_primary` is 1, when the sum over every
/// instance is 1 too.
async fn the_primary(prom: &Prometheus) -> Result<String, String> {
    let sum = prom.scalar("sum(cluster_mode_is_primary)").await;
    let ones = prom.by_instance("cluster_mode_is_primary == 1").await;
    match (sum, ones.as_slice()) {
        (Some(1.0), [(who, _)]) => Ok(who.clone()),
        _ => Err(format!("sum {sum:?}, primaries {ones:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_three_processes_through_a_failover() {
    let Some((promtool, prometheus)) = tools() else {
        return;
    };
    let t0 = Instant::now();
    let mut p = Procs::start(3, &["--fast"]);
    let first = wait_agreed(&p.addrs, Duration::from_secs(15))
        .await
        .expect("no primary");

    // promtool accepts what each node answers (syntax and naming conventions).
    for a in &p.addrs {
        let m = scrape::scrape(*a).await;
        let mut check = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn promtool");
        check
            .stdin
            .take()
            .expect("stdin")
            .write_all(m.text.as_bytes())
            .expect("write to promtool");
        let out = check.wait_with_output().expect("promtool output");
        assert!(
            out.status.success(),
            "promtool check metrics refused {a}'s metrics: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            m.text
        );
    }

    let prom = Prometheus::start(&prometheus, &p.addrs).await;
    // Every target scraped (the first scrapes of the three do not come at once), and
    // one primary among them.
    let old = wait_for(
        &prom,
        Duration::from_secs(10),
        "three targets up and one primary in Prometheus",
        || async {
            let up = prom.scalar("sum(up)").await;
            if up != Some(3.0) {
                return Err(format!("sum(up) = {up:?}"));
            }
            the_primary(&prom).await
        },
    )
    .await;
    assert_eq!(
        old,
        p.addrs[first].to_string(),
        "Prometheus names the primary the status names"
    );
    let changes_before = prom.by_instance("cluster_mode_primary_changes_total").await;
    let terms_before = prom.by_instance("cluster_mode_term").await;

    let t_kill = Instant::now();
    p.kill(first);
    // A failed scrape marks the killed node's series stale: the sum and the single
    // primary then come from the survivors alone.
    let new = wait_for(
        &prom,
        Duration::from_secs(15),
        "the killed target down and a new primary in Prometheus",
        || async {
            let who = the_primary(&prom).await?;
            if who == old {
                return Err(format!("still {who}"));
            }
            let down = prom.scalar(&format!("up{{instance=\"{old}\"}}")).await;
            if down != Some(0.0) {
                return Err(format!(
                    "new primary {who}, but up of the killed one is {down:?}"
                ));
            }
            Ok(who)
        },
    )
    .await;
    let failover = t_kill.elapsed();
    // Every survivor counted the change of primary, and its term went up.
    let survivors: Vec<String> = p
        .addrs
        .iter()
        .map(|a| a.to_string())
        .filter(|a| *a != old)
        .collect();
    wait_for(
        &prom,
        Duration::from_secs(5),
        "the change counted",
        || async {
            let now = prom.by_instance("cluster_mode_primary_changes_total").await;
            let terms = prom.by_instance("cluster_mode_term").await;
            for s in &survivors {
                let get = |v: &[(String, f64)]| v.iter().find(|(i, _)| i == s).map(|x| x.1);
                match (
                    get(&changes_before),
                    get(&now),
                    get(&terms_before),
                    get(&terms),
                ) {
                    (Some(b), Some(n), Some(tb), Some(t)) if n > b && t > tb => {}
                    other => {
                        return Err(format!(
                            "{s}: (changes before, now, term before, now) {other:?}"
                        ))
                    }
                }
            }
            Ok(())
        },
    )
    .await;
    let changes = prom
        .scalar("sum(changes(cluster_mode_is_primary[1m]))")
        .await
        .unwrap_or(0.0);
    assert!(
        changes >= 1.0,
        "is_primary changed on some node\n{}",
        prom.log()
    );
    eprintln!(
        "prometheus saw the failover from {old} to {new} in {failover:?} (test {:?})",
        t0.elapsed()
    );
}
