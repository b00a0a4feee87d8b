//! One-shot raw HTTP/1.1 requests over a fresh connection, for tests that send what a
//! well-behaved client would not (junk, replays, oversized bodies).
#![allow(dead_code)]

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What came back: the status code (0 if none could be read), the head and the body.
pub struct RawAnswer {
    pub code: u16,
    pub head: String,
    pub body: String,
}

/// Sends one request with `connection: close` and reads the answer for up to 5 s.
pub async fn raw_request<K: Display, V: Display>(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(K, V)],
    body: &[u8],
) -> RawAnswer {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    // A peer may answer 413 before reading the whole body and close: the answer, not
    // the write, is what the tests judge.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    RawAnswer {
        code,
        head: head.to_string(),
        body: body.to_string(),
    }
}
