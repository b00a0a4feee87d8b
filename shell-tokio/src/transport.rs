//! The hyper transport: postcard frames in HTTP/1.1 POST bodies, pooled keep-alive
//! connections, a bounded queue and a bounded number of requests in flight per peer.
//!
//! # Staleness
//!
//! A peer's link can be slower than the rate the core sends at (a slow or lossy
//! network, a peer that answers slowly, a request that takes several round trips).
//! A plain FIFO then fills up with old heartbeats, every acknowledgement is for a
//! heartbeat sent long ago, and the leader's lease (timed from the *send* time the
//! follower echoes, P6) lapses although every message arrives. The protocol tolerates
//! loss and reordering, so each peer's send queue bounds staleness instead:
//!
//! - **coalescing**: the core gives every send a [`Delivery`] class; a new envelope
//!   whose class [supersedes](Delivery::supersedes) a queued one's replaces it (a
//!   heartbeat replaces older heartbeats to the same node, an acknowledgement older
//!   ones, unless the older says more). The queue never looks inside a message;
//!   counted in `send_coalesced`;
//! - **drop oldest when full**: a full queue drops its oldest envelope, not the new
//!   one; counted in `send_queue_full`;
//! - **maximum age**: an envelope that waited longer than
//!   [`TransportOptions::max_age`] is dropped when a sender task takes it; counted
//!   in `send_expired`.
//!
//! Every transport queues through the same per-peer queues (the simulator's datagram
//! transport too), so these rules hold the same everywhere.

use crate::driver::{Inbox, Transport};
use crate::mac::{Secret, MAC_HEADER};
use crate::metrics::{bump, Counters};
use crate::queue::{PeerQueue, PeerQueues};
use crate::rt::{Connector, Exec, Timer};
use crate::server::PATH_MESSAGE;
use bytes::Bytes;
use cluster_mode_core::{Address, Delivery, Envelope};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, Instrument};

/// Tuning of the node's transport (the hyper one, and a simulator's datagram one).
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Envelopes queued per peer; when full, the oldest is dropped (and counted in
    /// `send_queue_full`).
    pub queue_len: usize,
    /// Requests in flight per peer (long-lived sender tasks per peer).
    pub in_flight: usize,
    /// Timeout of one request, connect included.
    pub request_timeout: Duration,
    /// A peer's sender tasks end after this long with nothing to send.
    pub idle_exit: Duration,
    /// An envelope that waited longer than this in a peer's queue is dropped instead
    /// of sent (counted in `send_expired`): an acknowledgement of a heartbeat older
    /// than the lease renews nothing, and every other message is retried by the
    /// protocol. `None` (the default) means the cluster's `lease_duration` when the
    /// node is started with [`ClusterBuilder`](crate::ClusterBuilder) (for example
    /// 250 ms with `Config::datacenter()`).
    pub max_age: Option<Duration>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            queue_len: 128,
            in_flight: 2,
            request_timeout: Duration::from_millis(500),
            idle_exit: Duration::from_secs(60),
            max_age: None,
        }
    }
}

type HttpClient = Client<Connector, Full<Bytes>>;

/// Sends envelopes as `POST /cluster/v1/message` requests over pooled keep-alive
/// HTTP/1.1 connections. [`Transport::send`] never blocks: it pushes into the peer's
/// bounded queue, which `in_flight` long-lived tasks drain.
#[derive(Clone)]
pub(crate) struct HttpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    node: cluster_mode_core::NodeId,
    client: HttpClient,
    queues: PeerQueues,
    inbox: Inbox,
    counters: Arc<Counters>,
    secret: Option<Secret>,
    opts: TransportOptions,
}

impl HttpTransport {
    /// The transport of node `node`, reporting failed deliveries to `inbox`.
    pub(crate) fn new(
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
                queues: PeerQueues::new(opts.queue_len, counters.clone()),
                inbox,
                counters,
                secret,
                opts,
            }),
        }
    }
}

impl Transport for HttpTransport {
    fn send(&self, to: &Address, env: Envelope, class: Delivery) {
        let inner = &self.inner;
        inner.queues.push(to, env, class, |queue| {
            let uri: Option<hyper::Uri> = format!("http://{to}{PATH_MESSAGE}").parse().ok();
            for _ in 0..inner.opts.in_flight.max(1) {
                let span = tracing::debug_span!("cluster_send", node = %inner.node, peer = %to);
                tokio::spawn(
                    sender_task(self.inner.clone(), to.clone(), uri.clone(), queue.clone())
                        .instrument(span),
                );
            }
        });
    }
}

async fn sender_task(
    inner: Arc<Inner>,
    to: Address,
    uri: Option<hyper::Uri>,
    queue: Arc<PeerQueue>,
) {
    let mut buf = Vec::with_capacity(256);
    loop {
        // Idle for long: end; the next send to this peer starts fresh tasks.
        let Some(env) = queue
            .next(
                Some(inner.opts.idle_exit),
                inner.opts.max_age,
                &inner.counters,
            )
            .await
        else {
            return;
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
