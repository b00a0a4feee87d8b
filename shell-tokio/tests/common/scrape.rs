//! Reading a node's `GET /cluster/v1/metrics` answer (Prometheus text format 0.0.4):
//! just enough of a parser for the tests to compare values.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample: the metric name, its labels as written (`kind="heartbeat"`, empty when
/// none) and its value.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: String,
    pub value: f64,
}

/// A parsed scrape, with the answer's content type.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub content_type: String,
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The value of `name` with exactly `labels` (as written, e.g. `state="primary"`);
    /// panics if absent, naming it.
    pub fn get(&self, name: &str, labels: &str) -> f64 {
        self.try_get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in:\n{}", self.text))
    }

    pub fn try_get(&self, name: &str, labels: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .map(|s| s.value)
    }

    /// Every sample of `name`.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

/// Parses the sample lines of a text-format answer; panics on a line it cannot read.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut v = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}")),
            ),
            None => (series, ""),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        v.push(Sample {
            name: name.to_string(),
            labels: labels.to_string(),
            value,
        });
    }
    v
}

/// `GET path` on `addr` over a fresh connection: the status code, the content type
/// and the body; `None` if no answer came within `timeout`.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        let ctype = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        Some((code, ctype, body.to_string()))
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}

/// Scrapes `addr`'s metrics endpoint; panics unless it answers 200 in time.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let (code, content_type, text) = get(addr, "/cluster/v1/metrics", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no metrics answer from {addr}"));
    assert_eq!(code, 200, "metrics of {addr}: {text}");
    let samples = parse(&text);
    Scrape {
        content_type,
        text,
        samples,
    }
}
