//! Prometheus metrics: `GET /cluster/v1/metrics` answers a node's view and the
//! shell's counters in the Prometheus text exposition format (version 0.0.4), built
//! with the Prometheus project's Rust client, `prometheus-client`.
//!
//! Nothing is counted twice: the values come, at each scrape, from the node's view
//! (judged at the moment of the request, like the status JSON) and from the shell's
//! [`Counters`] (the same atomics the status JSON shows). What only the metrics
//! show (messages by kind, the heartbeat round trips) lives in [`Counters`] too, in
//! a part the status JSON leaves out.
//!
//! An application with a `prometheus-client` registry of its own can add the
//! cluster's metrics to it ([`register`]) and serve one endpoint for both; the
//! trade-off is that this ties the application to the `prometheus-client` version
//! this crate uses (a breaking change of that crate is one of this crate's too).
//!
//! Every metric is named `cluster_mode_*` and described in the README ("Metrics").
//! The heartbeat round trip ([`ROUND_TRIP`]) is measured on the leader: from the
//! send time an append (or heartbeat) carries to the arrival of the reply that
//! echoes it, on the node's clock. It includes both queues and both HTTP requests
//! (a reply is a request of its own), and is what the lease is timed from (P6).

use crate::metrics::Counters;
use crate::server::ClusterService;
use bytes::Bytes;
use cluster_mode_core::{Instant, Message, Role, Status};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE as CONTENT_TYPE_HEADER};
use hyper::{Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The content type of the answer: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The prefix of every metric name.
pub const PREFIX: &str = "cluster_mode";

/// The name of the heartbeat round-trip histogram (without the prefix).
pub const ROUND_TRIP: &str = "heartbeat_round_trip_seconds";

/// The upper bounds of the round-trip histogram's buckets, in seconds: from half a
/// millisecond (loopback) to the longest leases worth running.
const ROUND_TRIP_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The values of the `kind` label: one per protocol message, with `append` split
/// into `heartbeat` (no entries) and `append` (entries), as the core's delivery
/// classes do. `other` is for a message kind a newer core may add.
pub const KINDS: [&str; 24] = [
    "probe",
    "probe_ack",
    "bootstrap_request",
    "bootstrap_reply",
    "bootstrap_withdraw",
    "recovery_request",
    "join",
    "leave",
    "not_leader",
    "pre_vote",
    "pre_vote_reply",
    "vote",
    "vote_reply",
    "heartbeat",
    "append",
    "snapshot",
    "append_reply",
    "timeout_now",
    "roles",
    "snapshot_chunk",
    "snapshot_chunk_ack",
    "store_requests",
    "store_replies",
    "other",
];

/// The index in [`KINDS`] of `msg`'s kind.
fn kind_index(msg: &Message) -> usize {
    match msg {
        Message::Probe => 0,
        Message::ProbeAck(_) => 1,
        Message::BootstrapRequest { .. } => 2,
        Message::BootstrapReply { .. } => 3,
        Message::BootstrapWithdraw { .. } => 4,
        Message::RecoveryRequest { .. } => 5,
        Message::Join { .. } => 6,
        Message::Leave => 7,
        Message::NotLeader { .. } => 8,
        Message::PreVote(_) => 9,
        Message::PreVoteReply(_) => 10,
        Message::Vote(_) => 11,
        Message::VoteReply(_) => 12,
        Message::Append(a) if a.entries.is_empty() => 13,
        Message::Append(_) => 14,
        Message::Snapshot(_) => 15,
        Message::AppendReply(_) => 16,
        Message::TimeoutNow { .. } => 17,
        Message::Roles(_) => 18,
        Message::SnapshotChunk(_) => 19,
        Message::SnapshotChunkAck(_) => 20,
        Message::StoreRequests { .. } => 21,
        Message::StoreReplies { .. } => 22,
        _ => 23,
    }
}

/// The kind of `msg` as the `kind` label says it.
pub fn kind_name(msg: &Message) -> &'static str {
    KINDS[kind_index(msg)]
}

/// What the metrics show beyond the status JSON's counters: messages by kind and
/// the heartbeat round trips. Part of [`Counters`]; bumped by the node's loop.
#[derive(Debug)]
pub(crate) struct Detail {
    messages_in: [AtomicU64; KINDS.len()],
    messages_out: [AtomicU64; KINDS.len()],
    round_trip: Histogram,
}

impl Default for Detail {
    fn default() -> Self {
        Detail {
            messages_in: Default::default(),
            messages_out: Default::default(),
            round_trip: Histogram::new(ROUND_TRIP_BUCKETS),
        }
    }
}

impl Detail {
    /// Counts a message handed to the core.
    pub(crate) fn count_in(&self, msg: &Message) {
        self.messages_in[kind_index(msg)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message the core asked to send.
    pub(crate) fn count_out(&self, msg: &Message) {
        self.messages_out[kind_index(msg)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one leader-side round trip (send time echoed to reply arrival).
    pub(crate) fn observe_round_trip(&self, d: Duration) {
        self.round_trip.observe(d.as_secs_f64());
    }
}

/// The cluster's metrics as a `prometheus-client` [`Collector`]: every scrape reads
/// the node's view and counters at that moment.
#[derive(Clone)]
pub struct ClusterCollector {
    service: ClusterService,
}

impl fmt::Debug for ClusterCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCollector").finish_non_exhaustive()
    }
}

impl ClusterCollector {
    /// The collector of the node that `service` serves.
    pub fn new(service: ClusterService) -> Self {
        ClusterCollector { service }
    }
}

/// Adds the cluster's metrics of the node that `service` serves to an application's
/// registry, under the prefix `cluster_mode`, so that its own endpoint shows them.
pub fn register(registry: &mut Registry, service: ClusterService) {
    registry
        .sub_registry_with_prefix(PREFIX)
        .register_collector(Box::new(ClusterCollector::new(service)));
}

/// The body of `GET /cluster/v1/metrics` for the node that `service` serves.
pub fn encode(service: &ClusterService) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    register(&mut registry, service.clone());
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The answer to `GET /cluster/v1/metrics`: 200 with the metrics, or 500 (logged)
/// if they could not be encoded (a formatting error; not expected).
pub(crate) fn answer(service: &ClusterService) -> Response<Full<Bytes>> {
    let (code, ctype, body) = match encode(service) {
        Ok(text) => (StatusCode::OK, CONTENT_TYPE, text),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "cannot encode the metrics\n".to_string(),
            )
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(ctype));
    resp
}

impl Collector for ClusterCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let (status, now, stopped) = self.service.metrics_view();
        let counters = self.service.counters();
        encode_view(&mut enc, &status, now, stopped)?;
        encode_counters(&mut enc, counters)
    }
}

/// The `state` label of the role gauge for `role`.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Inactive => "inactive",
        Role::Candidate => "candidate",
        Role::Primary => "primary",
        Role::Secondary => "secondary",
        Role::Leaving => "leaving",
        _ => "other",
    }
}

const ROLES: [&str; 6] = [
    "inactive",
    "candidate",
    "primary",
    "secondary",
    "leaving",
    "other",
];

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: impl EncodeCounterValue,
) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, unit, MetricType::Counter)?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: impl EncodeGaugeValue,
) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// A counter with one label, one series per `(label value, count)`.
fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in series {
        let labels = [(label, *value)];
        ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

fn encode_view(
    enc: &mut DescriptorEncoder,
    s: &Status,
    now: Instant,
    stopped: bool,
) -> fmt::Result {
    let current = role_name(s.role);
    {
        let mut m = enc.encode_descriptor(
            "role",
            "The node's role at the scrape: 1 for the current state, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for r in ROLES {
            let labels = [("state", r)];
            ConstGauge::new(flag(r == current)).encode(m.encode_family(&labels)?)?;
        }
    }
    let primary = s.role == Role::Primary && s.lease_valid;
    gauge(
        enc,
        "is_primary",
        "1 while the node is primary (the leader, holding a valid lease at the scrape), else 0.",
        None,
        flag(primary),
    )?;
    gauge(
        enc,
        "is_leader",
        "1 while the node is the Raft leader, with or without a valid lease, else 0.",
        None,
        flag(s.is_leader),
    )?;
    gauge(
        enc,
        "stopped",
        "1 once the node's loop has stopped (left, shut down, or failed to persist), else 0.",
        None,
        flag(stopped),
    )?;
    gauge(enc, "term", "The node's current term.", None, s.term)?;
    let remaining = match (primary, s.lease_until) {
        (true, Some(until)) => until.saturating_duration_since(now).as_secs_f64(),
        _ => 0.0,
    };
    gauge(
        enc,
        "lease_remaining",
        "Seconds left of the node's primary lease at the scrape, unless renewed; 0 when not primary.",
        Some(&Unit::Seconds),
        remaining,
    )?;
    gauge(
        enc,
        "members",
        "Members of the committed configuration, voters and learners.",
        None,
        s.members.len() as u64,
    )?;
    gauge(
        enc,
        "voters",
        "Voting members of the committed configuration.",
        None,
        s.members.iter().filter(|m| m.voter).count() as u64,
    )?;
    gauge(
        enc,
        "commit_index",
        "The index of the committed configuration.",
        None,
        s.commit_index,
    )?;
    gauge(
        enc,
        "leaderless",
        "1 while the node is a member that has heard from no leader for two maximum election timeouts (the status shows `recovery`), else 0.",
        None,
        flag(s.recovery.is_some()),
    )?;
    gauge(
        enc,
        "roles_declared",
        "Named roles in the committed role table.",
        None,
        s.roles.len() as u64,
    )?;
    gauge(
        enc,
        "roles_owned",
        "Named roles this node holds at the scrape.",
        None,
        s.owned_roles.len() as u64,
    )
}

fn encode_counters(enc: &mut DescriptorEncoder, counters: &Counters) -> fmt::Result {
    let c = counters.snapshot();
    let d = &counters.detail;
    counter(
        enc,
        "elections_started",
        "Elections this node started (term increases after which it had voted for itself; pre-votes not counted).",
        None,
        c.elections_started,
    )?;
    counter(
        enc,
        "primary_changes",
        "Times the primary this node knows of became another node (the first one it learned counts).",
        None,
        c.primary_changes,
    )?;
    let by_kind = |a: &[AtomicU64; KINDS.len()]| -> Vec<(&str, u64)> {
        KINDS
            .iter()
            .zip(a.iter())
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .collect()
    };
    counter_family(
        enc,
        "messages_in",
        "Protocol messages handed to the core from the network, by kind (accepted or rejected by the core).",
        "kind",
        &by_kind(&d.messages_in),
    )?;
    counter_family(
        enc,
        "messages_out",
        "Protocol messages the core asked to send, by kind (queued; some may be dropped, see send_drops).",
        "kind",
        &by_kind(&d.messages_out),
    )?;
    counter_family(
        enc,
        "rejections",
        "Requests and messages refused, by reason (each also logged with a warning).",
        "reason",
        &[
            ("too_large", c.rejected_too_large),
            ("malformed", c.rejected_malformed),
            ("version", c.rejected_version),
            ("mac", c.rejected_mac),
            ("replay", c.rejected_replay),
            ("stale_epoch", c.rejected_stale_epoch),
            ("foreign_cluster", c.rejected_foreign_cluster),
            ("not_for_me", c.rejected_not_for_me),
            ("invalid", c.rejected_invalid),
            ("left", c.rejected_left),
            ("route", c.rejected_route),
        ],
    )?;
    counter(
        enc,
        "send_failures",
        "Sends that failed: connect error, timeout, or a non-2xx answer.",
        None,
        c.send_failed,
    )?;
    counter_family(
        enc,
        "send_drops",
        "Envelopes dropped before sending, by reason: full queue (oldest dropped), coalesced (superseded by a newer one), expired (waited past the maximum age), peer_limit (too many peers).",
        "reason",
        &[
            ("full", c.send_queue_full),
            ("coalesced", c.send_coalesced),
            ("expired", c.send_expired),
            ("peer_limit", c.send_peer_limit),
        ],
    )?;
    counter(
        enc,
        "send_epoch_retries",
        "Sends retried at once because the peer named a new epoch (with a secret).",
        None,
        c.send_epoch_retries,
    )?;
    counter(
        enc,
        "sent_envelope",
        "Bytes of envelope bodies sent, without HTTP headers.",
        Some(&Unit::Bytes),
        c.bytes_out,
    )?;
    counter(
        enc,
        "wire_sent",
        "Bytes written on this node's outgoing peer connections (HTTP requests).",
        Some(&Unit::Bytes),
        c.wire_bytes_out,
    )?;
    counter(
        enc,
        "wire_received",
        "Bytes read on this node's outgoing peer connections (HTTP responses).",
        Some(&Unit::Bytes),
        c.wire_bytes_in,
    )?;
    counter(
        enc,
        "connections_opened",
        "TCP connections this node opened to peers.",
        None,
        c.connections_opened,
    )?;
    counter(
        enc,
        "connections_accepted",
        "TCP connections accepted by the node's own listener.",
        None,
        c.connections_accepted,
    )?;
    counter(
        enc,
        "connections_refused",
        "TCP connections closed at once because max_connections were open.",
        None,
        c.connections_refused,
    )?;
    counter(
        enc,
        "persist_writes",
        "Durable state writes to the data directory.",
        None,
        c.persist_writes,
    )?;
    counter_family(
        enc,
        "discovery_answers",
        "Discovery answers (lists of instances), by source: poll (a snapshot the node asked for) or push (the source's watch stream).",
        "source",
        &[
            ("poll", c.discovery_poll_answers),
            ("push", c.discovery_push_answers),
        ],
    )?;
    counter_family(
        enc,
        "discovery_errors",
        "Discovery answers that failed, by source (poll: an error or no answer in time; push).",
        "source",
        &[
            ("poll", c.discovery_poll_failures),
            ("push", c.discovery_push_failures),
        ],
    )?;
    counter(
        enc,
        "tick_not_advanced",
        "Ticks after which the core's next timeout did not move past the tick (a core bug).",
        None,
        c.tick_not_advanced,
    )?;
    d.round_trip.encode(enc.encode_descriptor(
        "heartbeat_round_trip",
        "On the leader: from the send time an append or heartbeat carries to the arrival of the reply echoing it (queues and both HTTP requests included), in seconds.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?)
}
