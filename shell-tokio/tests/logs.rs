//! The node binary's logs, as a log collector reads them: stderr redirected to a file
//! holds no ANSI escape codes, `--log-format json` writes one JSON object per line
//! (with the node id in its spans), and `RUST_LOG` filters.
// Real processes: not under the madsim simulator.
#![cfg(all(unix, not(madsim)))]

#[path = "common/procs.rs"]
mod procs;

use procs::{free_addrs, node_bin, peer_list, wait_agreed};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_logging(addr: &str, peers: &str, log: &Path, extra: &[&str], rust_log: &str) -> Child {
    Command::new(node_bin())
        .args(["--listen", addr, "--peers", peers])
        .args(extra)
        .env("RUST_LOG", rust_log)
        .env_remove("NO_COLOR")
        .env_remove("CLUSTER_MODE_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn terminate(mut c: Child) {
    let pid = c.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "node {pid} did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_files_have_no_escape_codes_and_json_lines_parse() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let peers = peer_list(&addrs);
    let logs: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("node{i}.log")))
        .collect();
    let children = vec![
        spawn_logging(
            &addrs[0].to_string(),
            &peers,
            &logs[0],
            &[],
            "cluster_mode=info",
        ),
        spawn_logging(
            &addrs[1].to_string(),
            &peers,
            &logs[1],
            &["--log-format", "json"],
            "cluster_mode=info",
        ),
        // RUST_LOG=error: a healthy node has nothing to say at that level.
        spawn_logging(&addrs[2].to_string(), &peers, &logs[2], &[], "error"),
    ];
    assert!(
        wait_agreed(&addrs, Duration::from_secs(15)).await.is_some(),
        "no agreed primary"
    );
    for c in children {
        terminate(c);
    }

    let text = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(
        text.contains("INFO"),
        "the text log has no INFO line:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a log written to a file: {:?}",
        text.lines().next()
    );

    let json = std::fs::read_to_string(&logs[1]).unwrap();
    assert!(!json.contains('\u{1b}'), "escape codes in the JSON log");
    let mut lines = 0;
    let mut with_node_span = 0;
    for line in json.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string(), "no level: {line}");
        assert!(v["timestamp"].is_string(), "no timestamp: {line}");
        assert!(v["fields"].is_object(), "no fields: {line}");
        let spans = v["spans"].as_array().cloned().unwrap_or_default();
        if spans.iter().any(|s| s["node"].is_string()) {
            with_node_span += 1;
        }
        // One `cluster` span per line: the span of a new term replaces the old one
        // (it once nested in it, one level more per term).
        let nested = spans.iter().filter(|s| s["name"] == "cluster").count();
        assert!(nested <= 1, "{nested} nested cluster spans: {line}");
        lines += 1;
    }
    assert!(lines > 0, "the JSON log is empty");
    assert!(
        with_node_span > 0,
        "no JSON line carries the node span:\n{json}"
    );

    let quiet = std::fs::read_to_string(&logs[2]).unwrap();
    assert!(
        !quiet.contains("INFO"),
        "RUST_LOG=error let INFO lines through:\n{quiet}"
    );
}
