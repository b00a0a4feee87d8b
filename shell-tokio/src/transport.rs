//! The hyper transport: postcard frames in HTTP/1.1 POST bodies, pooled keep-alive
//! connections, a bounded queue and a bounded number of requests in flight per peer.

use crate::driver::{Inbox, Transport};
use crate::mac::{Secret, MAC_HEADER};
use crate::metrics::{bump, Counters};
use crate::rt::{Connector, Exec, Timer};
use crate::server::PATH_MESSAGE;
use bytes::Bytes;
use cluster_mode_core::{Address, Envelope};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, Instrument};

/// Tuning of [`HttpTransport`].
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Envelopes queued per peer before new ones are dropped (and counted).
    pub queue_len: usize,
    /// Requests in flight per peer (long-lived sender tasks per peer).
    pub in_flight: usize,
    /// Timeout of one request, connect included.
    pub request_timeout: Duration,
    /// A peer's sender tasks end after this long with nothing to send.
    pub idle_exit: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            queue_len: 128,
            in_flight: 2,
            request_timeout: Duration::from_millis(500),
            idle_exit: Duration::from_secs(60),
        }
    }
}

type HttpClient = Client<Connector, Full<Bytes>>;

/// Sends envelopes as `POST /cluster/v1/message` requests over pooled keep-alive
/// HTTP/1.1 connections. [`Transport::send`] never blocks: it pushes into the peer's
/// bounded queue, which `in_flight` long-lived tasks drain.
#[derive(Clone)]
pub struct HttpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    node: cluster_mode_core::NodeId,
    client: HttpClient,
    peers: Mutex<HashMap<Address, mpsc::Sender<Envelope>>>,
    inbox: Inbox,
    counters: Arc<Counters>,
    secret: Option<Secret>,
    opts: TransportOptions,
}

impl HttpTransport {
    /// The transport of node `node`, reporting failed deliveries to `inbox`.
    pub fn new(
        node: cluster_mode_core::NodeId,
        inbox: Inbox,
        counters: Arc<Counters>,
        secret: Option<Secret>,
        opts: TransportOptions,
    ) -> Self {
        let connector = Connector::new(counters.clone(), opts.request_timeout);
        let client = Client::builder(Exec)
            .timer(Timer)
            .pool_timer(Timer)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(opts.in_flight.max(1))
            .build(connector);
        HttpTransport {
            inner: Arc::new(Inner {
                node,
                client,
                peers: Mutex::new(HashMap::new()),
                inbox,
                counters,
                secret,
                opts,
            }),
        }
    }

    fn spawn_peer(&self, to: &Address) -> mpsc::Sender<Envelope> {
        let (tx, rx) = mpsc::channel(self.inner.opts.queue_len.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let uri: Option<hyper::Uri> = format!("http://{to}{PATH_MESSAGE}").parse().ok();
        for _ in 0..self.inner.opts.in_flight.max(1) {
            let inner = self.inner.clone();
            let rx = rx.clone();
            let to = to.clone();
            let uri = uri.clone();
            let span = tracing::debug_span!("cluster_send", node = %self.inner.node, peer = %to);
            tokio::spawn(sender_task(inner, to, uri, rx).instrument(span));
        }
        tx
    }
}

impl Transport for HttpTransport {
    fn send(&self, to: &Address, env: Envelope) {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        let tx = match peers.get(to) {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let tx = self.spawn_peer(to);
                peers.insert(to.clone(), tx.clone());
                tx
            }
        };
        drop(peers);
        match tx.try_send(env) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&self.inner.counters.send_queue_full);
                debug!(%to, "send queue full; envelope dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                bump(&self.inner.counters.send_queue_full);
            }
        }
    }
}

async fn sender_task(
    inner: Arc<Inner>,
    to: Address,
    uri: Option<hyper::Uri>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Envelope>>>,
) {
    let mut buf = Vec::with_capacity(256);
    loop {
        let env = {
            let mut rx = rx.lock().await;
            match tokio::time::timeout(inner.opts.idle_exit, rx.recv()).await {
                Ok(Some(env)) => env,
                // Idle for long, or the transport is gone: end; the next send to this
                // peer starts fresh tasks.
                _ => {
                    rx.close();
                    return;
                }
            }
        };
        let Some(uri) = uri.clone() else {
            bump(&inner.counters.send_failed);
            inner.inbox.unreachable(to.clone());
            continue;
        };
        env.encode_into(&mut buf);
        let body = Bytes::copy_from_slice(&buf);
        inner
            .counters
            .bytes_out
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let mut req = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .header(hyper::header::CONTENT_LENGTH, body.len());
        if let Some(secret) = &inner.secret {
            req = req.header(MAC_HEADER, secret.sign(&body));
        }
        let Ok(req) = req.body(Full::new(body)) else {
            bump(&inner.counters.send_failed);
            continue;
        };
        let attempt = async {
            let resp = inner.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            // Read the (small) answer to the end so the connection goes back to the pool.
            let _ = resp.into_body().collect().await;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(inner.opts.request_timeout, attempt).await {
            Ok(Ok(status)) if status.is_success() => {}
            Ok(Ok(status)) => {
                bump(&inner.counters.send_failed);
                debug!(%to, %status, "peer refused a message");
            }
            Ok(Err(e)) => {
                bump(&inner.counters.send_failed);
                debug!(%to, error = %e, "send failed");
                inner.inbox.unreachable(to.clone());
            }
            Err(_) => {
                bump(&inner.counters.send_failed);
                debug!(%to, "send timed out");
                inner.inbox.unreachable(to.clone());
            }
        }
    }
}
