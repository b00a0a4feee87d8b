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
//! loss and reordering, so the per-peer [`Backlog`] bounds staleness instead:
//!
//! - **coalescing**: a new empty `Append` (heartbeat) replaces the queued heartbeats to
//!   the same node, and a new `AppendReply` replaces the queued replies to the same
//!   node, unless the queued one says more (a higher term, commit or matched index);
//!   counted in `send_coalesced`;
//! - **drop oldest when full**: a full queue drops its oldest envelope, not the new
//!   one; counted in `send_queue_full`;
//! - **maximum age**: an envelope that waited longer than
//!   [`TransportOptions::max_age`] is dropped when a sender task takes it; counted
//!   in `send_expired`.

use crate::driver::{Inbox, Transport};
use crate::mac::{Secret, MAC_HEADER};
use crate::metrics::{bump, Counters};
use crate::rt::{Connector, Exec, Timer};
use crate::server::PATH_MESSAGE;
use bytes::Bytes;
use cluster_mode_core::Message;
use cluster_mode_core::{Address, Envelope};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, Instrument};

/// Tuning of [`HttpTransport`].
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
    /// 250 ms with `Config::datacenter()`), and no limit for an [`HttpTransport`]
    /// built by hand.
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
pub struct HttpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    node: cluster_mode_core::NodeId,
    client: HttpClient,
    peers: Mutex<HashMap<Address, Arc<PeerQueue>>>,
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

    fn spawn_peer(&self, to: &Address) -> Arc<PeerQueue> {
        let queue = Arc::new(PeerQueue::new(self.inner.opts.queue_len));
        let uri: Option<hyper::Uri> = format!("http://{to}{PATH_MESSAGE}").parse().ok();
        for _ in 0..self.inner.opts.in_flight.max(1) {
            let inner = self.inner.clone();
            let queue = queue.clone();
            let to = to.clone();
            let uri = uri.clone();
            let span = tracing::debug_span!("cluster_send", node = %self.inner.node, peer = %to);
            tokio::spawn(sender_task(inner, to, uri, queue).instrument(span));
        }
        queue
    }
}

impl Transport for HttpTransport {
    fn send(&self, to: &Address, env: Envelope) {
        let now = Instant::now();
        let mut peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut env = Some(env);
        // At most twice: a queue whose tasks just ended idle is replaced by a fresh one.
        for _ in 0..2 {
            let queue = match peers.get(to) {
                Some(q) => q.clone(),
                None => {
                    let q = self.spawn_peer(to);
                    peers.insert(to.clone(), q.clone());
                    q
                }
            };
            match queue.push(&mut env, now) {
                Some(pushed) => {
                    let c = &self.inner.counters;
                    c.send_coalesced
                        .fetch_add(pushed.coalesced as u64, Ordering::Relaxed);
                    if pushed.dropped_oldest {
                        bump(&c.send_queue_full);
                        debug!(%to, "send queue full; oldest envelope dropped");
                    }
                    return;
                }
                None => {
                    peers.remove(to);
                }
            }
        }
        bump(&self.inner.counters.send_queue_full);
    }
}

/// What [`Backlog::push`] did besides queueing the new envelope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Queued envelopes the new one superseded (removed).
    pub coalesced: usize,
    /// Whether the queue was full and its oldest envelope was dropped.
    pub dropped_oldest: bool,
}

/// One peer's queue of envelopes waiting to be sent, with the time each was queued.
/// Bounds staleness (see the [module docs](self)): coalesces superseded heartbeats and
/// replies, drops the oldest when full, and drops envelopes older than a maximum age
/// when they are taken.
#[derive(Debug)]
pub struct Backlog {
    items: VecDeque<(Instant, Envelope)>,
    capacity: usize,
}

impl Backlog {
    /// An empty backlog holding at most `capacity` envelopes (at least one).
    pub fn new(capacity: usize) -> Self {
        Backlog {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Envelopes queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `env` (queued at `now`), first removing the queued envelopes it
    /// supersedes, then the oldest one if the backlog is still full.
    pub fn push(&mut self, env: Envelope, now: Instant) -> Pushed {
        let before = self.items.len();
        self.items.retain(|(_, old)| !supersedes(&env, old));
        let mut pushed = Pushed {
            coalesced: before - self.items.len(),
            dropped_oldest: false,
        };
        if self.items.len() >= self.capacity {
            self.items.pop_front();
            pushed.dropped_oldest = true;
        }
        self.items.push_back((now, env));
        pushed
    }

    /// The oldest envelope queued at or after `now - max_age` (all of them with no
    /// maximum age), and how many older ones were dropped to reach it.
    pub fn pop(&mut self, now: Instant, max_age: Option<Duration>) -> (Option<Envelope>, usize) {
        let mut expired = 0;
        while let Some((at, env)) = self.items.pop_front() {
            match max_age {
                Some(max) if now.saturating_duration_since(at) > max => expired += 1,
                _ => return (Some(env), expired),
            }
        }
        (None, expired)
    }
}

/// Whether `new` makes the queued `old` (to the same peer) useless: a heartbeat
/// replaces an older heartbeat, a reply an older reply, for the same node and unless
/// the older one carries more (a higher term, a higher commit index, a success or a
/// higher matched index). Entries, snapshots and every other message are never
/// coalesced.
fn supersedes(new: &Envelope, old: &Envelope) -> bool {
    if new.to != old.to || new.from != old.from || new.cluster != old.cluster {
        return false;
    }
    match (&new.msg, &old.msg) {
        (Message::Append(n), Message::Append(o)) => {
            n.entries.is_empty() && o.entries.is_empty() && n.term >= o.term && n.commit >= o.commit
        }
        (Message::AppendReply(n), Message::AppendReply(o)) => {
            n.term > o.term
                || (n.term == o.term
                    && match (n.success, o.success) {
                        (true, true) => n.index >= o.index,
                        (_, false) => true,
                        (false, true) => false,
                    })
        }
        _ => false,
    }
}

/// A [`Backlog`] shared by one peer's sender tasks.
struct PeerQueue {
    state: Mutex<QueueState>,
    ready: Notify,
}

struct QueueState {
    backlog: Backlog,
    /// The sender tasks ended (idle): pushes are refused, the transport starts anew.
    closed: bool,
}

impl PeerQueue {
    fn new(capacity: usize) -> Self {
        PeerQueue {
            state: Mutex::new(QueueState {
                backlog: Backlog::new(capacity),
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `env` out of its option and queues it, unless the queue's tasks have
    /// ended (`None`; `env` is then left in place).
    fn push(&self, env: &mut Option<Envelope>, now: Instant) -> Option<Pushed> {
        let pushed = {
            let mut st = self.lock();
            if st.closed {
                return None;
            }
            st.backlog.push(env.take()?, now)
        };
        self.ready.notify_one();
        Some(pushed)
    }

    /// The next envelope young enough to send; `None` once idle for `idle` (the queue
    /// is then closed and the task should end).
    async fn next(
        &self,
        idle: Duration,
        max_age: Option<Duration>,
        counters: &Counters,
    ) -> Option<Envelope> {
        loop {
            let notified = self.ready.notified();
            {
                let mut st = self.lock();
                let (env, expired) = st.backlog.pop(Instant::now(), max_age);
                if expired > 0 {
                    counters
                        .send_expired
                        .fetch_add(expired as u64, Ordering::Relaxed);
                }
                if let Some(env) = env {
                    if !st.backlog.is_empty() {
                        // Let another sender task take the next one.
                        self.ready.notify_one();
                    }
                    return Some(env);
                }
                if st.closed {
                    return None;
                }
            }
            if tokio::time::timeout(idle, notified).await.is_err() {
                let mut st = self.lock();
                if st.backlog.is_empty() {
                    st.closed = true;
                    drop(st);
                    self.ready.notify_waiters();
                    return None;
                }
            }
        }
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
            .next(inner.opts.idle_exit, inner.opts.max_age, &inner.counters)
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

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_mode_core::message::{Append, AppendReply};
    use cluster_mode_core::{Instant as CoreInstant, NodeId};

    const TO: NodeId = NodeId(2);

    fn env(to: NodeId, msg: Message) -> Envelope {
        Envelope {
            version: cluster_mode_core::message::PROTOCOL_VERSION,
            cluster: None,
            from: NodeId(1),
            from_addr: Address::from("10.0.0.1:7946"),
            to: Some(to),
            msg,
        }
    }

    fn heartbeat(to: NodeId, term: u64, commit: u64, sent_ms: u64) -> Envelope {
        env(
            to,
            Message::Append(Append {
                term,
                prev_index: 3,
                prev_term: 1,
                entries: Vec::new(),
                commit,
                sent_at: CoreInstant::from_nanos(sent_ms * 1_000_000),
            }),
        )
    }

    fn reply(term: u64, success: bool, index: u64, sent_ms: u64) -> Envelope {
        env(
            TO,
            Message::AppendReply(AppendReply {
                term,
                success,
                index,
                sent_at: CoreInstant::from_nanos(sent_ms * 1_000_000),
            }),
        )
    }

    fn sent_at(e: &Envelope) -> u64 {
        match &e.msg {
            Message::Append(a) => a.sent_at.as_nanos() / 1_000_000,
            Message::AppendReply(r) => r.sent_at.as_nanos() / 1_000_000,
            _ => u64::MAX,
        }
    }

    fn drain(b: &mut Backlog, now: Instant, max_age: Option<Duration>) -> Vec<Envelope> {
        std::iter::from_fn(|| b.pop(now, max_age).0).collect()
    }

    #[test]
    fn a_heartbeat_replaces_queued_heartbeats_to_the_same_node() {
        let t = Instant::now();
        let mut b = Backlog::new(128);
        for i in 0..10 {
            b.push(heartbeat(TO, 1, 5, i * 50), t);
        }
        // Another node behind the same address (a restarted process) keeps its own.
        let pushed = b.push(heartbeat(NodeId(3), 1, 5, 600), t);
        assert_eq!(pushed.coalesced, 0);
        let out = drain(&mut b, t, None);
        assert_eq!(out.len(), 2, "one heartbeat per node: {out:?}");
        assert_eq!(
            sent_at(&out[0]),
            450,
            "the newest heartbeat to node 2 is kept"
        );
        assert_eq!(out[1].to, Some(NodeId(3)));
    }

    #[test]
    fn entries_and_more_informative_messages_are_never_coalesced() {
        let t = Instant::now();
        let mut b = Backlog::new(128);
        let mut with_entries = heartbeat(TO, 1, 5, 0);
        if let Message::Append(a) = &mut with_entries.msg {
            a.entries.push(cluster_mode_core::Entry {
                term: 1,
                index: 4,
                change: cluster_mode_core::Change::Noop,
            });
        }
        b.push(with_entries.clone(), t);
        // A heartbeat of a higher commit is not replaced by one of a lower commit.
        b.push(heartbeat(TO, 1, 6, 10), t);
        assert_eq!(b.push(heartbeat(TO, 1, 5, 20), t).coalesced, 0);
        assert_eq!(b.push(heartbeat(TO, 1, 6, 30), t).coalesced, 2);
        let out = drain(&mut b, t, None);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], with_entries);
        assert_eq!(sent_at(&out[1]), 30);
    }

    #[test]
    fn a_reply_replaces_older_replies_unless_they_say_more() {
        let t = Instant::now();
        let mut b = Backlog::new(128);
        b.push(reply(1, true, 7, 0), t);
        // A failure does not replace a success; a lower match does not replace a higher.
        assert_eq!(b.push(reply(1, false, 2, 10), t).coalesced, 0);
        assert_eq!(
            b.push(reply(1, true, 5, 20), t).coalesced,
            1,
            "the failure goes"
        );
        assert_eq!(b.push(reply(1, true, 7, 30), t).coalesced, 2);
        // A higher term replaces everything before it, a failure of a higher term too.
        b.push(env(TO, Message::Leave), t);
        b.push(reply(1, true, 9, 40), t);
        assert_eq!(b.push(reply(2, false, 0, 50), t).coalesced, 1);
        let out = drain(&mut b, t, None);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].msg, Message::Leave, "other messages stay, in order");
        assert_eq!(sent_at(&out[1]), 50);
    }

    #[test]
    fn a_full_backlog_drops_its_oldest() {
        let t = Instant::now();
        let mut b = Backlog::new(3);
        // Votes are never coalesced: only the capacity limits them.
        let vote = |term| env(TO, Message::TimeoutNow { term });
        for term in 1..=3 {
            assert!(!b.push(vote(term), t).dropped_oldest);
        }
        assert!(b.push(vote(4), t).dropped_oldest);
        let terms: Vec<u64> = drain(&mut b, t, None)
            .into_iter()
            .map(|e| match e.msg {
                Message::TimeoutNow { term } => term,
                _ => 0,
            })
            .collect();
        assert_eq!(terms, vec![2, 3, 4], "the newest are kept");
    }

    #[test]
    fn envelopes_older_than_the_maximum_age_are_dropped_when_taken() {
        let t0 = Instant::now();
        let mut b = Backlog::new(128);
        b.push(reply(1, true, 1, 0), t0);
        b.push(
            env(TO, Message::TimeoutNow { term: 1 }),
            t0 + Duration::from_millis(100),
        );
        b.push(env(TO, Message::Leave), t0 + Duration::from_millis(200));
        let now = t0 + Duration::from_millis(350);
        let max = Some(Duration::from_millis(200));
        let (first, expired) = b.pop(now, max);
        assert_eq!(expired, 2, "queued 350 ms and 250 ms ago");
        assert_eq!(first.map(|e| e.msg), Some(Message::Leave));
        assert!(b.is_empty());
        // No maximum age: nothing expires.
        b.push(env(TO, Message::Leave), t0);
        assert_eq!(b.pop(now, None).1, 0);
    }
}
