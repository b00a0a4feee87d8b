//! Counters of what the shell did and refused, shown in the status JSON and, with
//! the counts by message kind and the heartbeat round trips kept in
//! a part of [`Counters`] the status leaves out, on the Prometheus endpoint ([`crate::prometheus`]).

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {
        /// Monotonic counters of one node's shell. Cheap to bump from any task.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(#[$doc] pub $name: AtomicU64,)*
            /// Counts by message kind and the heartbeat round trips: on the metrics
            /// endpoint only (not in the status JSON).
            pub(crate) detail: crate::prometheus::Detail,
        }

        /// A copy of [`Counters`] at one moment, for the status JSON.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct CounterSnapshot {
            $(#[$doc] pub $name: u64,)*
        }

        impl Counters {
            /// Reads every counter.
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Envelopes handed to the core from the network.
    messages_in,
    /// Envelopes the core asked to send.
    messages_out,
    /// Envelopes dropped because the peer's send queue was full (the oldest queued).
    send_queue_full,
    /// Queued heartbeats and append replies dropped: a newer one to the same node superseded them.
    send_coalesced,
    /// Queued envelopes dropped because they waited longer than the maximum age.
    send_expired,
    /// Sends that failed (connect error, timeout, non-2xx answer).
    send_failed,
    /// Bytes of envelope bodies sent (without HTTP headers).
    bytes_out,
    /// Bytes this node wrote on its outgoing peer connections (HTTP requests).
    wire_bytes_out,
    /// Bytes this node read on its outgoing peer connections (HTTP responses).
    wire_bytes_in,
    /// TCP connections this node opened to peers.
    connections_opened,
    /// TCP connections accepted by the node's own listener.
    connections_accepted,
    /// TCP connections closed at once because `max_connections` were open.
    connections_refused,
    /// Sends dropped because the destination had no queue and `TransportOptions::max_peers`, or `max_new_peers` not yet answering ones, were reached.
    send_peer_limit,
    /// Sends retried at once because the peer named a new epoch (a first contact, or the peer restarted).
    send_epoch_retries,
    /// Requests refused: body over the size limit (413).
    rejected_too_large,
    /// Requests refused: not a valid frame (400).
    rejected_malformed,
    /// Requests refused: another protocol version (400).
    rejected_version,
    /// Requests refused: missing or wrong MAC or binding while a secret is set (401).
    rejected_mac,
    /// Authenticated requests refused as replays: accepted before, or too far behind their stream's newest (401).
    rejected_replay,
    /// Authenticated requests refused for naming another epoch of this node: signed for an earlier process at this address (a replay across a restart), an epoch left, or before the sender knew it (421; one per new sender stream is normal, the sender retries at once).
    rejected_stale_epoch,
    /// Messages the core refused: from another cluster (409).
    rejected_foreign_cluster,
    /// Messages the core refused: meant for a previous process at this address (403).
    rejected_not_for_me,
    /// Messages the core refused: breaking a protocol rule (400).
    rejected_invalid,
    /// Messages refused because this node has left or stopped (410/503).
    rejected_left,
    /// Requests to an unknown path or with a wrong method (404/405).
    rejected_route,
    /// Durable state writes to the data directory (only on a term, vote or log change: none in a steady cluster).
    persist_writes,
    /// Discovery answers that failed (polled and pushed).
    discovery_failures,
    /// Discovery answers (a list) from polling the source.
    discovery_poll_answers,
    /// Discovery answers (a list) pushed by the source's watch stream.
    discovery_push_answers,
    /// Polled discovery answers that failed (an error or no answer in time).
    discovery_poll_failures,
    /// Pushed discovery answers that failed.
    discovery_push_failures,
    /// Elections this node started: term increases after which it had voted for itself (not pre-votes).
    elections_started,
    /// Times the primary this node knows of became a node other than the last one it knew (the first one learned counts).
    primary_changes,
    /// Ticks after which the core's next timeout was not later than the tick (a core bug; fatal in debug builds).
    tick_not_advanced,
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
