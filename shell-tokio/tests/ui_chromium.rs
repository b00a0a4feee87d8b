//! The status page (`GET /cluster/v1/ui`) in a real headless Chromium, on a real
//! failover: three `cluster-node` processes on 127.0.0.1 declaring six named roles,
//! the primary SIGKILLed, then the page of each survivor rendered (its script run for
//! a few seconds of the browser's virtual time) and its DOM read: it must name the new
//! primary as primary and never the killed one, and show the roles moved off it. The
//! new primary's page is also screenshotted, to `$CARGO_TARGET_TMPDIR/ui-screenshot.png`,
//! or to the committed `docs/ui-screenshot.png` when `UPDATE_SCREENSHOT=1` (and
//! likewise `ui-unreachable.png`, the page below that lost its node). A page
//! kept open on a survivor through the failover (behind a slow link, see `SlowLink`)
//! must list the change of primary it saw, then, its node cut off, say since when
//! the node is unreachable while still showing the last answer.
//!
//! Needs Chromium (Debian package `chromium`, installed by shell-tokio/ci-deps.sh;
//! `CHROMIUM=/path` names another binary). Missing, it skips on a developer's machine
//! (not root, `CI` unset), saying so on stderr; as root or with `CI` set it fails.
//! About 10 s (default timings: the first election waits for the bootstrap timeout).
// Real sockets and processes: not under the madsim simulator.
#![cfg(not(madsim))]

#[path = "common/host.rs"]
mod host;
#[path = "common/procs.rs"]
mod procs;

use procs::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The browser: `$CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// The browser, or `None` (with the reason printed) where the test may skip; panics
/// where it must run (root or `CI`) and cannot.
fn browser_or_skip() -> Option<PathBuf> {
    host::required(
        chromium(),
        "the Chromium status-page test",
        "chromium is missing (run shell-tokio/ci-deps.sh as root, or apt-get install chromium)",
    )
}

/// Renders `url` in headless Chromium, lets its script run for `budget_ms` of virtual
/// time, and returns the DOM; with `shot`, also writes a 1200x900 screenshot there.
fn render(browser: &Path, url: &str, budget_ms: u64, shot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().expect("a temporary profile directory");
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1200,900",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={budget_ms}"))
    .arg("--dump-dom");
    if let Some(p) = shot {
        cmd.arg(format!("--screenshot={}", p.display()));
    }
    let mut child = cmd
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    // Read both pipes on threads so neither fills; the browser gets 30 s.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.try_wait().expect("wait for chromium") {
            Some(s) => break s,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within 30 s on {url}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let dom = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    assert!(
        status.success() && dom.contains("</html>"),
        "chromium failed on {url} ({status}); stderr:\n{err}"
    );
    dom
}

/// The id of the node at `addr` as the decimal digits of its status document (the
/// first field), as it appears in other nodes' documents (`"owner":<id>`).
async fn id_digits(addr: SocketAddr) -> String {
    let raw = raw_status(addr).await.expect("a status answer");
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.strip_prefix("{\"id\":")
        .map(|r| r.chars().take_while(char::is_ascii_digit).collect())
        .filter(|d: &String| !d.is_empty())
        .unwrap_or_else(|| panic!("no id first in {body:.80}"))
}

/// The `<tr>` of member `addr` in the page's members table, if listed.
fn member_row<'a>(dom: &'a str, addr: &str) -> Option<&'a str> {
    let start = dom.find(&format!("data-addr=\"{addr}\""))?;
    let row = &dom[start..];
    Some(&row[..row.find("</tr>").unwrap_or(row.len())])
}

/// What every survivor's page must show after the failover.
fn assert_page_after_failover(dom: &str, me: SocketAddr, new: SocketAddr, killed: SocketAddr) {
    let ctx = format!("page of {me}:\n{dom}");
    assert!(
        dom.contains(&format!("id=\"self-addr\">{me}<")),
        "the page names its node: {ctx}"
    );
    assert!(
        dom.contains("id=\"conn\" class=\"live\""),
        "the page is live (its script ran and read the status): {ctx}"
    );
    assert!(
        dom.contains(&format!("id=\"primary-addr\">{new}<")),
        "the page names the new primary {new}: {ctx}"
    );
    let row = member_row(dom, &new.to_string()).unwrap_or_else(|| panic!("{new} listed: {ctx}"));
    assert!(
        row.contains("data-state=\"primary\""),
        "{new} primary in the table: {row}"
    );
    assert!(
        !dom.contains(&format!("data-addr=\"{killed}\" data-state=\"primary\"")),
        "the killed {killed} shown as primary: {ctx}"
    );
    // Still listed until it is removed (30 s of silence): then without roles.
    if let Some(row) = member_row(dom, &killed.to_string()) {
        assert!(
            !row.contains("class=\"chip"),
            "the killed {killed} still owns roles: {row}"
        );
    }
    assert!(dom.contains("every one owned"), "every role owned: {ctx}");
}

/// Width and height of a PNG file (from its IHDR chunk).
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

/// A slow link in front of a node, so that a page's polls take real time (the
/// browser's virtual time stands still while a request is out: without it the page
/// would run through its whole budget before the failover): each status request
/// waits `DELAY` and then goes to the node over its own connection; once `down` is
/// set every connection is closed at once (the node looks unreachable).
struct SlowLink {
    addr: SocketAddr,
    polls: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

const DELAY: Duration = Duration::from_millis(150);

impl SlowLink {
    async fn start(node: SocketAddr) -> SlowLink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let polls = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (p, d) = (polls.clone(), down.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (p, d) = (p.clone(), d.clone());
                tokio::spawn(async move { SlowLink::serve(conn, node, &p, &d).await });
            }
        });
        SlowLink {
            addr,
            polls,
            down,
            task,
        }
    }

    /// One request per connection (answered with `connection: close`).
    async fn serve(mut conn: TcpStream, node: SocketAddr, polls: &AtomicUsize, down: &AtomicBool) {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        if down.load(Ordering::SeqCst) {
            return; // closed without an answer
        }
        let line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        if path.ends_with("/status") {
            tokio::time::sleep(DELAY).await;
            if down.load(Ordering::SeqCst) {
                return;
            }
            polls.fetch_add(1, Ordering::SeqCst);
        }
        let Ok(mut up) = TcpStream::connect(node).await else {
            return;
        };
        let req = format!("GET {path} HTTP/1.1\r\nhost: {node}\r\nconnection: close\r\n\r\n");
        let mut answer = Vec::new();
        if up.write_all(req.as_bytes()).await.is_ok() && up.read_to_end(&mut answer).await.is_ok() {
            let _ = conn.write_all(&answer).await;
        }
    }

    /// Waits until `n` more status requests have been answered.
    async fn polls_after(&self, n: usize) {
        let goal = self.polls.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.polls.load(Ordering::SeqCst) < goal {
            assert!(Instant::now() < deadline, "the page stopped polling");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_chromium_follows_a_failover() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let t0 = Instant::now();
    let mut p = Procs::start(3, &["--roles", "shard-{0..5}"]);
    let first = wait_agreed(&p.addrs, Duration::from_secs(20))
        .await
        .expect("no primary");
    let killed = p.addrs[first];
    let killed_id = id_digits(killed).await;
    // A page open through the failover, on a node that survives it (through a slow
    // link, so that its polls span the failover; see `SlowLink`).
    let watched = p.addrs[(first + 1) % 3];
    let link = SlowLink::start(watched).await;
    let url = format!("http://{}/cluster/v1/ui", link.addr);
    let b = browser.clone();
    let update = std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let live_shot = if update { &docs } else { tmp }.join("ui-unreachable.png");
    let s = live_shot.clone();
    let live = tokio::task::spawn_blocking(move || render(&b, &url, 60_000, Some(&s)));
    link.polls_after(3).await;
    p.kill(first);
    let rest: Vec<SocketAddr> = p.addrs.iter().copied().filter(|a| *a != killed).collect();
    let next = wait_agreed(&rest, Duration::from_secs(20))
        .await
        .expect("no failover");
    let new = rest[next];
    let follower = rest[1 - next];
    // Wait until the killed node's roles have moved (role_failover_timeout, 500 ms).
    let owner = format!("\"owner\":{killed_id}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let term = loop {
        let raw = raw_status(new).await.unwrap_or_default();
        if !raw.contains(&owner) && !raw.contains("\"owner\":null") && raw.contains("\"roles\":[{")
        {
            break status(new, Duration::from_secs(1))
                .await
                .expect("status")
                .term;
        }
        assert!(
            Instant::now() < deadline,
            "the roles never left {killed}: {raw}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "failover {killed} -> {new} (term {term}) in {:?}",
        t0.elapsed()
    );
    // The watched page saw the new primary; then its node becomes unreachable.
    link.polls_after(3).await;
    link.down.store(true, Ordering::SeqCst);
    let dom = live.await.unwrap();
    let ctx = format!("page of {watched} open through the failover:\n{dom}");
    assert!(
        dom.contains(&format!("page opened: primary {killed} (term ")),
        "it saw the first primary: {ctx}"
    );
    assert!(
        dom.contains(&format!("{killed} \u{2192} {new} (term {term})"))
            || dom.contains(&format!("none \u{2192} {new} (term {term})")),
        "it saw the change to {new}: {ctx}"
    );
    assert!(
        dom.contains("id=\"conn\" class=\"down\">unreachable since "),
        "it says the node is unreachable: {ctx}"
    );
    assert!(dom.contains("Showing its last answer"), "{ctx}");
    assert!(
        dom.contains(&format!("id=\"primary-addr\">{new}<")),
        "its last answer names {new}: {ctx}"
    );
    eprintln!("the page that lost its node: {}", live_shot.display());
    drop(link);

    let shot = if update { &docs } else { tmp }.join("ui-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let (b, s) = (browser.clone(), shot.clone());
    let url = format!("http://{new}/cluster/v1/ui");
    let t1 = Instant::now();
    let dom = tokio::task::spawn_blocking(move || render(&b, &url, 4000, Some(&s)))
        .await
        .unwrap();
    eprintln!("rendered the new primary's page in {:?}", t1.elapsed());
    assert_page_after_failover(&dom, new, new, killed);
    // From the node's lease record: when it became primary, in this term.
    assert!(
        dom.contains(&format!("this node became primary, term {term} ")),
        "the primary's page lists its lease record:\n{dom}"
    );
    assert!(
        dom.contains("id=\"fencing\">("),
        "a fencing token shown:\n{dom}"
    );
    assert_eq!(png_size(&shot), (1200, 900), "the screenshot's size");
    eprintln!("screenshot: {}", shot.display());

    let url = format!("http://{follower}/cluster/v1/ui");
    let dom = tokio::task::spawn_blocking(move || render(&browser, &url, 2000, None))
        .await
        .unwrap();
    assert_page_after_failover(&dom, follower, new, killed);
    assert!(
        dom.contains("id=\"fencing\">none<"),
        "a follower holds no token:\n{dom}"
    );
    eprintln!("whole test {:?}", t0.elapsed());
}
