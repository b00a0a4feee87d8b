//! The status page: `GET /cluster/v1/ui`, one self-contained HTML page (inline style
//! and script, no external fetch, no build step) that polls the node's status
//! document every 500 ms and shows the members with the named roles each owns, the
//! primary, term and lease, the fencing token, the node itself, and a timeline of the
//! last changes (primaries, role owners, members), accumulated by the page across
//! polls and completed with the node's own lease and role records. When the node
//! stops answering the page says since when, and keeps its last answer, greyed.
//!
//! The page is [`PAGE`] (the file `ui.html` beside this one, compiled in). It asks
//! for `status`, a URL relative to its own, so it works on the node's own listener
//! and wherever an application mounts the service (`nest_service("/ops/cluster", ..)`
//! serves it at `/ops/cluster/ui`, polling `/ops/cluster/status`).
//!
//! Trade-offs: the page shows one node's view (another node may know better: a
//! follower cannot see what remains of the primary's lease, only the primary's page
//! can); the changes it lists between polls are what that view showed at each poll,
//! so a change that came and went within 500 ms is seen only through the node's
//! records (its own lease and role intervals). It needs no authentication, like the
//! status endpoint it reads: mount it only where the status may be seen.
//!
//! Headers: `text/html; charset=utf-8`, `cache-control: no-cache`, and a
//! Content-Security-Policy that lets only the page's own inline style and script run
//! (by their SHA-256 hashes, computed once from [`PAGE`]) and lets them connect only
//! to the page's own origin (`connect-src 'self'`): no other script, frame, form,
//! image or font.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The path of the status page.
pub const PATH_UI: &str = "/cluster/v1/ui";

/// The page, as served.
pub const PAGE: &str = include_str!("ui.html");

/// The text between the first `<tag>` and the next `</tag>` of [`PAGE`]: what a
/// browser hashes for a CSP source of that inline element.
fn inline(tag: &str) -> &'static str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    PAGE.split_once(open.as_str())
        .and_then(|(_, rest)| rest.split_once(close.as_str()))
        .map_or("", |(body, _)| body)
}

/// `'sha256-<base64>'` of `text`.
fn csp_hash(text: &str) -> String {
    format!("'sha256-{}'", base64(&Sha256::digest(text.as_bytes())))
}

/// Standard base64 with padding (RFC 4648), for the CSP hashes.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The page's Content-Security-Policy: its own inline style and script (by hash),
/// requests to its own origin only, nothing else.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            csp_hash(inline("script")),
            csp_hash(inline("style")),
        )
    })
}

/// The answer to `GET /cluster/v1/ui`.
pub(crate) fn page_response() -> Response<Full<Bytes>> {
    Response::builder()
        .header(hyper::header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(hyper::header::CACHE_CONTROL, "no-cache")
        .header(
            hyper::header::CONTENT_SECURITY_POLICY,
            content_security_policy(),
        )
        .header(hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(hyper::header::REFERRER_POLICY, "no-referrer")
        .body(Full::new(Bytes::from_static(PAGE.as_bytes())))
        .unwrap_or_else(|_| {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc, "{raw:?}");
        }
    }

    #[test]
    fn the_policy_hashes_the_one_inline_script_and_style() {
        assert_eq!(PAGE.matches("<script").count(), 1, "one inline script");
        assert_eq!(PAGE.matches("<style").count(), 1, "one inline style");
        let script = inline("script");
        assert!(script.contains("function poll()"), "the script found");
        assert!(inline("style").contains("--primary"), "the style found");
        let csp = content_security_policy();
        assert!(csp.contains(&format!("script-src {}", csp_hash(script))));
        assert!(csp.contains("connect-src 'self'"));
        assert!(!csp.contains("unsafe"), "{csp}");
        // sha256("") as a known vector of the hash format (`openssl dgst -sha256 -binary | base64`).
        assert_eq!(
            csp_hash(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
    }
}
