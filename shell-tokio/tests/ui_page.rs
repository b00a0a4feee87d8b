//! The status page without a browser: what `GET /cluster/v1/ui` answers, on the
//! node's own listener and mounted in an application under another prefix, and that
//! the page refers to nothing outside its own origin. (The page running in a real
//! browser: tests/ui_chromium.rs.)
// Real sockets: not under the madsim simulator.
#![cfg(not(madsim))]

mod common;
#[path = "common/http.rs"]
mod http;

use cluster_mode::server::{PATH_STATUS, PATH_UI};
use cluster_mode::ui::PAGE;
use common::*;
use http::raw_request;

const NO_HEADERS: &[(&str, &str)] = &[];

/// The value of header `name` (lower case) in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Checks one answer for the page: 200, HTML, the policy, the page itself.
fn assert_page(what: &str, code: u16, head: &str, body: &str) {
    assert_eq!(code, 200, "{what}: {head}");
    assert_eq!(
        header(head, "content-type"),
        Some("text/html; charset=utf-8"),
        "{what}"
    );
    let csp = header(head, "content-security-policy").unwrap_or_default();
    for part in [
        "default-src 'none'",
        "connect-src 'self'",
        "script-src 'sha256-",
        "style-src 'sha256-",
    ] {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part:?}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(body, PAGE, "{what}: the body is the page");
}

#[tokio::test]
async fn ui_is_served_as_html_with_a_strict_policy() {
    init_tracing();
    let (nodes, addrs) = start_nodes(1, test_config(), None).await;
    let a = raw_request(addrs[0], "GET", PATH_UI, NO_HEADERS, b"").await;
    assert_page(PATH_UI, a.code, &a.head, &a.body);
    // The path used under `nest_service("/cluster/v1", ..)`.
    let a = raw_request(addrs[0], "GET", "/ui", NO_HEADERS, b"").await;
    assert_page("/ui", a.code, &a.head, &a.body);
    // Anything but GET or HEAD is refused, and counted.
    let before = nodes[0].counters().rejected_route;
    let a = raw_request(addrs[0], "POST", PATH_UI, NO_HEADERS, b"x").await;
    assert_eq!(a.code, 405, "POST {PATH_UI}: {}", a.head);
    assert_eq!(nodes[0].counters().rejected_route, before + 1);
    // A path beside it is not the page.
    let a = raw_request(addrs[0], "GET", "/cluster/v1/ui/x", NO_HEADERS, b"").await;
    assert_eq!(a.code, 404);
    for n in nodes {
        n.shutdown().await;
    }
}

/// Mounted under another prefix, the page and the status it polls (the relative URL
/// `status`) are both there.
#[tokio::test]
async fn ui_and_its_status_are_served_under_a_nested_prefix() {
    init_tracing();
    let (nodes, _) = start_nodes(1, test_config(), None).await;
    let app = axum::Router::new().nest_service("/ops/cluster", nodes[0].service());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let a = raw_request(app_addr, "GET", "/ops/cluster/ui", NO_HEADERS, b"").await;
    assert_page("/ops/cluster/ui", a.code, &a.head, &a.body);
    // The page asks for "status", relative to /ops/cluster/ui.
    assert!(PAGE.contains(r#"const STATUS_URL = "status";"#));
    let a = raw_request(app_addr, "GET", "/ops/cluster/status", NO_HEADERS, b"").await;
    assert_eq!(a.code, 200, "{}", a.head);
    let doc: serde_json::Value = serde_json::from_str(&a.body).expect("status JSON");
    assert!(doc["members"].is_array() && doc["address"].is_string());
    // The node's own status path answers the same document.
    assert!(PATH_STATUS.ends_with("/status"));
    server.abort();
    for n in nodes {
        n.shutdown().await;
    }
}

/// The page loads nothing and sends nothing outside its origin: no absolute or
/// protocol-relative URL anywhere, no element that loads a resource, and its one
/// request (`fetch`) goes to the relative `STATUS_URL`.
#[test]
fn the_page_refers_only_to_relative_urls() {
    let lower = PAGE.to_ascii_lowercase();
    for needle in [
        "http:",
        "https:",
        "ws:",
        "wss:",
        "//cdn",
        "src=",
        "href=",
        "url(",
        "@import",
        "<link",
        "<iframe",
        "<img",
        "<object",
        "<embed",
        "<form",
        "xmlhttprequest",
        "websocket",
        "eventsource",
        "sendbeacon",
        "import(",
    ] {
        assert!(
            !lower.contains(needle),
            "the page contains {needle:?}: it must load and send nothing outside its origin"
        );
    }
    // Every fetch goes to STATUS_URL, which is relative.
    let fetches: Vec<&str> = PAGE
        .match_indices("fetch(")
        .map(|(i, _)| &PAGE[i..])
        .collect();
    assert_eq!(fetches.len(), 1, "one fetch call");
    assert!(
        fetches[0].starts_with("fetch(STATUS_URL,"),
        "{}",
        &fetches[0][..40]
    );
    assert!(!PAGE.contains("STATUS_URL = \"/"), "relative, not rooted");
}
