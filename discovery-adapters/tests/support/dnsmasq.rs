//! A real dnsmasq on a free loopback port, for DNS discovery tests. Shared by
//! `discovery-adapters/tests/dns.rs` and the shell's end-to-end tests
//! (`shell-tokio/tests/discovery_e2e.rs`, through `#[path]`): test-only code, so it is
//! a source file both test crates include rather than public API of either crate.
//!
//! dnsmasq must be installed (`discovery-adapters/ci-deps.sh`); without it the tests
//! fail on purpose, they do not skip.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A dnsmasq process, killed (and its files removed) on drop.
pub struct Dnsmasq {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub hosts: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

pub fn dnsmasq_binary() -> PathBuf {
    for candidate in ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in path.split(':') {
            let p = Path::new(dir).join("dnsmasq");
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "dnsmasq is not installed: the DNS discovery tests need a real DNS server. \
         Install it with `apt-get install -y --no-install-recommends dnsmasq-base` \
         (or run discovery-adapters/ci-deps.sh as root)."
    );
}

impl Dnsmasq {
    pub fn start(hosts: &str, extra: &[String]) -> Self {
        Self::start_at(hosts, extra, None)
    }

    /// Like [`Dnsmasq::start`], on the given port (e.g. a server restarted where its
    /// clients expect it) instead of a free one.
    pub fn start_on_port(hosts: &str, extra: &[String], port: u16) -> Self {
        Self::start_at(hosts, extra, Some(port))
    }

    fn start_at(hosts: &str, extra: &[String], fixed_port: Option<u16>) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cm-dnsmasq-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let hosts_path = dir.join("hosts");
        std::fs::write(&hosts_path, hosts).unwrap();
        let binary = dnsmasq_binary();
        let mut last_log = Vec::new();
        for _attempt in 0..5 {
            let port = fixed_port.unwrap_or_else(free_port);
            let mut child = Command::new(&binary)
                .args([
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    "--log-queries",
                    "--log-facility=-",
                    "--local=/cluster.local/",
                    "--local-ttl=1",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", hosts_path.display()))
                .arg(format!("--pid-file={}", dir.join("pid").display()))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let log = Arc::new(Mutex::new(Vec::new()));
            let stderr = child.stderr.take().unwrap();
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if log
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("started, version"))
                {
                    // Give it a moment to read the hosts file.
                    std::thread::sleep(Duration::from_millis(50));
                    return Dnsmasq {
                        child,
                        port,
                        dir,
                        hosts: hosts_path,
                        log,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken in between, most likely: try another
                }
                assert!(
                    Instant::now() < deadline,
                    "dnsmasq did not start: {:?}",
                    log.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(50));
            last_log = log.lock().unwrap().clone();
        }
        panic!("dnsmasq failed to start: {last_log:?}");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Rewrites the hosts file and makes dnsmasq reread it (SIGHUP), waiting until it did.
    pub fn set_hosts(&self, hosts: &str) {
        let reads_before = self.count(&format!("read {}", self.hosts.display()));
        std::fs::write(&self.hosts, hosts).unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count(&format!("read {}", self.hosts.display())) <= reads_before {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not reload: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Log lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    // A port free for both UDP and TCP right now.
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
