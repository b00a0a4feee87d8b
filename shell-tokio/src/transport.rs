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
//!
//! # Bounds
//!
//! The core answers a probe at the address the probe names, so anyone who can reach
//! a node without a secret can make it send to addresses of their choosing. The
//! transport bounds what that costs: a peer's queue and sender tasks are dropped
//! when they end idle; at most [`TransportOptions::max_peers`] peers have a queue;
//! and at most [`TransportOptions::max_new_peers`] of them may be addresses that
//! have not answered a request yet, whose tasks end after
//! [`NEW_PEER_IDLE`] instead of `idle_exit`. A send beyond either bound is dropped
//! and counted in `send_peer_limit` (the protocol retries). Requests to a peer that
//! has not accepted a message yet say `connection: close`, so the connection pool
//! keeps connections only to peers that answered 2xx (at most `max_peers` ×
//! `in_flight`).
//!
//! # Authentication
//!
//! With a secret, each peer's queue is one stream of [`crate::mac`]: requests are
//! numbered in the order they are signed and bound to the peer's epoch, learned from
//! its first 421 answer (then the request is sent again at once, counted in
//! `send_epoch_retries`).

use crate::driver::{Inbox, Transport};
use crate::mac::{Binding, Purpose, Secret, AUTH_HEADER, EPOCH_HEADER, MAC_HEADER};
use crate::metrics::{bump, Counters};
use crate::queue::{PeerQueue, PeerQueues};
use crate::rt::{Connector, Exec, Timer};
use crate::server::PATH_MESSAGE;
use bytes::Bytes;
use cluster_mode_core::{Address, Delivery, Envelope};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    /// The most peers with a send queue (and its sender tasks) at once. A send to a
    /// new address beyond it is dropped (`send_peer_limit`). Each member of a
    /// cluster is one peer of its leader, so keep it above the largest membership
    /// you run; each costs a queue, `in_flight` tasks and pooled connections.
    pub max_peers: usize,
    /// The most peers at once that have not answered a request yet: a probe from
    /// an unknown address is answered there, so this bounds what probes naming
    /// random addresses cost (their tasks also end after [`NEW_PEER_IDLE`]). Too low
    /// slows a large cluster's cold start (the leader's first heartbeats to many new
    /// members are dropped and sent again); too high lets a flood of probes hold
    /// more tasks and connection attempts.
    pub max_new_peers: usize,
}

/// The idle time after which the sender tasks of a peer that never answered end.
pub const NEW_PEER_IDLE: Duration = Duration::from_secs(2);

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            queue_len: 128,
            in_flight: 2,
            request_timeout: Duration::from_millis(500),
            idle_exit: Duration::from_secs(60),
            max_age: None,
            max_peers: 4096,
            max_new_peers: 256,
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
    /// This process's incarnation (random, per start): the sender in every binding.
    incarnation: u64,
    /// The last stream number given to a peer's queue.
    streams: AtomicU64,
    /// Peers with running sender tasks that have not answered a request yet.
    new_peers: Arc<AtomicUsize>,
}

/// What one peer's sender tasks share: the stream's authentication state and
/// whether the peer ever answered.
struct PeerLink {
    stream: u64,
    /// (the peer's epoch as learned, `0` before; the next sequence number)
    auth: Mutex<(u64, u64)>,
    answered: AtomicBool,
    new_peers: Arc<AtomicUsize>,
}

impl PeerLink {
    /// The binding of the next request.
    fn next_binding(&self, incarnation: u64) -> Binding {
        let mut a = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        let b = Binding {
            incarnation,
            stream: self.stream,
            epoch: a.0,
            seq: a.1,
        };
        a.1 += 1;
        b
    }

    fn learn_epoch(&self, epoch: u64) {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).0 = epoch;
    }

    fn mark_answered(&self) {
        if !self.answered.swap(true, Ordering::Relaxed) {
            self.new_peers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        if !self.answered.load(Ordering::Relaxed) {
            self.new_peers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl HttpTransport {
    /// The transport of node `node` (process incarnation `incarnation`), reporting
    /// failed deliveries to `inbox`.
    pub(crate) fn new(
        node: cluster_mode_core::NodeId,
        incarnation: u64,
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
                incarnation,
                streams: AtomicU64::new(0),
                new_peers: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }
}

impl Transport for HttpTransport {
    fn send(&self, to: &Address, env: Envelope, class: Delivery) {
        let inner = &self.inner;
        // Called by the node's loop alone, so these checks and the push that
        // follows cannot interleave with another send.
        if !inner.queues.is_open(to) {
            let reason = if inner.queues.len() >= inner.opts.max_peers {
                Some("max_peers")
            } else if inner.new_peers.load(Ordering::Relaxed) >= inner.opts.max_new_peers {
                Some("max_new_peers")
            } else {
                None
            };
            if let Some(limit) = reason {
                bump(&inner.counters.send_peer_limit);
                debug!(%to, limit, "send to a new peer dropped: too many peers");
                return;
            }
        }
        inner.queues.push(to, env, class, |queue| {
            let uri: Option<hyper::Uri> = format!("http://{to}{PATH_MESSAGE}").parse().ok();
            inner.new_peers.fetch_add(1, Ordering::Relaxed);
            let link = Arc::new(PeerLink {
                stream: inner.streams.fetch_add(1, Ordering::Relaxed) + 1,
                auth: Mutex::new((0, 0)),
                answered: AtomicBool::new(false),
                new_peers: inner.new_peers.clone(),
            });
            for _ in 0..inner.opts.in_flight.max(1) {
                let span = tracing::debug_span!("cluster_send", node = %inner.node, peer = %to);
                tokio::spawn(
                    sender_task(
                        self.inner.clone(),
                        to.clone(),
                        uri.clone(),
                        queue.clone(),
                        link.clone(),
                    )
                    .instrument(span),
                );
            }
        });
    }
}

/// One attempt's outcome.
enum Sent {
    Answered(StatusCode, Option<String>),
    Failed(String),
}

async fn send_once(
    inner: &Inner,
    uri: hyper::Uri,
    body: Bytes,
    link: &PeerLink,
) -> (Sent, Option<Binding>) {
    let mut req = hyper::Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .header(hyper::header::CONTENT_LENGTH, body.len());
    if !link.answered() {
        // Until the peer accepts a message, its connection is not pooled: an address
        // a probe named may be any server that accepts connections, and the pool
        // would keep one idle connection (a task, buffers, a descriptor) per such
        // address for `pool_idle_timeout` (see "Bounds").
        req = req.header(hyper::header::CONNECTION, "close");
    }
    let mut binding = None;
    if let Some(secret) = &inner.secret {
        // Signed as late as possible, so numbers follow the order of sending.
        let b = link.next_binding(inner.incarnation);
        req = req
            .header(AUTH_HEADER, b.header())
            .header(MAC_HEADER, secret.sign_request(Purpose::Message, &b, &body));
        binding = Some(b);
    }
    let Ok(req) = req.body(Full::new(body)) else {
        return (Sent::Failed("cannot build the request".into()), binding);
    };
    let attempt = async {
        let resp = inner.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let epoch = resp
            .headers()
            .get(EPOCH_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Read the (small) answer to the end so the connection goes back to the pool.
        let _ = resp.into_body().collect().await;
        Ok::<_, String>((status, epoch))
    };
    let sent = match tokio::time::timeout(inner.opts.request_timeout, attempt).await {
        Ok(Ok((status, epoch))) => Sent::Answered(status, epoch),
        Ok(Err(e)) => Sent::Failed(e),
        Err(_) => Sent::Failed("timed out".into()),
    };
    (sent, binding)
}

async fn sender_task(
    inner: Arc<Inner>,
    to: Address,
    uri: Option<hyper::Uri>,
    queue: Arc<PeerQueue>,
    link: Arc<PeerLink>,
) {
    let mut buf = Vec::with_capacity(256);
    loop {
        // Idle for long: end; the next send to this peer starts fresh tasks. A peer
        // that never answered is given up sooner (see "Bounds").
        let idle = if link.answered() {
            inner.opts.idle_exit
        } else {
            inner.opts.idle_exit.min(NEW_PEER_IDLE)
        };
        let Some(env) = queue
            .next(Some(idle), inner.opts.max_age, &inner.counters)
            .await
        else {
            inner.queues.forget_closed(&to, &queue);
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
        let (mut sent, binding) = send_once(&inner, uri.clone(), body.clone(), &link).await;
        // A 421 with a signed epoch: the peer's epoch was unknown or has changed.
        // Learn it and send again, once.
        if let (Sent::Answered(StatusCode::MISDIRECTED_REQUEST, Some(h)), Some(b), Some(secret)) =
            (&sent, &binding, &inner.secret)
        {
            if let Some(epoch) = secret.verify_epoch(b, h) {
                link.learn_epoch(epoch);
                bump(&inner.counters.send_epoch_retries);
                sent = send_once(&inner, uri, body, &link).await.0;
            }
        }
        match sent {
            Sent::Answered(status, _) if status.is_success() => link.mark_answered(),
            Sent::Answered(status, _) => {
                bump(&inner.counters.send_failed);
                debug!(%to, %status, "peer refused a message");
            }
            Sent::Failed(e) => {
                bump(&inner.counters.send_failed);
                debug!(%to, error = %e, "send failed");
                inner.inbox.unreachable(to.clone());
            }
        }
    }
}
