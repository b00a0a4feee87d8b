//! The host a test runs on, for tests that need an external tool (a browser,
//! Prometheus, root for network namespaces): they run as root or with `CI` set, and
//! only skip, saying why, on a developer's machine.
#![allow(dead_code)]

/// Whether this process runs as root (effective uid 0, from /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Whether a test that needs an external tool must run here: as root (a CI machine,
/// where scripts/test-all.sh installs the tools) or with `CI` set.
pub fn must_run() -> bool {
    is_root() || std::env::var_os("CI").is_some()
}

/// `found`, or `None` after printing on stderr why `test` skips where it may; panics
/// where it must run ([`must_run`]) but `found` is `None`.
pub fn required<T>(found: Option<T>, test: &str, why: &str) -> Option<T> {
    if found.is_some() {
        return found;
    }
    if must_run() {
        panic!("{test} must run here (root or CI) but cannot: {why}");
    }
    eprintln!(
        "******** SKIPPED: {test} did not run: {why}\n\
         ******** (it runs, and fails without the tool, as root or with CI set)"
    );
    None
}
