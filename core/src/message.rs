//! Wire messages: a versioned envelope around every message, encoded with postcard.
//!
//! The first bytes of a frame are the protocol version (a postcard varint), so a node
//! can tell "a newer protocol" from "garbage" before it parses the rest (P10).

use crate::id::{Address, ClusterId, NodeId};
use crate::membership::{Entry, Snapshot};
use crate::roles::RolesRequest;
use crate::time::Instant;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. Frames with another version are rejected.
pub const PROTOCOL_VERSION: u16 = 5;

/// The first allocation of [`Envelope::encode`]: room for a heartbeat, its reply or a
/// probe with a few hundred bytes to spare.
const ENCODE_START_CAPACITY: usize = 256;

/// The largest frame [`Envelope::decode`] accepts, in bytes.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// The most entries one append may carry.
pub const MAX_ENTRIES_PER_APPEND: usize = 64;

/// The most bytes one [`SnapshotChunk`] may carry (half a frame, so the envelope
/// around it always fits).
pub const MAX_SNAPSHOT_CHUNK_LEN: usize = MAX_FRAME_LEN / 2;

/// The largest encoded snapshot a follower assembles from chunks: eight times the
/// store's limit ([`crate::store::MAX_STORE_BYTES`]), room for the data, the sessions'
/// saved outcomes (up to [`crate::store::MAX_SESSIONS`] times
/// [`crate::store::MAX_IN_FLIGHT`]), the members and the roles. A transfer announcing
/// more is refused, so a peer cannot make a follower buffer without bound.
pub const MAX_SNAPSHOT_LEN: u64 = 8 * crate::store::MAX_STORE_BYTES as u64;

/// The largest term or log index a message may carry (2^62). Real values never come
/// near it (a term a second for 10^11 years); refusing larger ones keeps every `+ 1`
/// in the core far from overflow, whatever a peer sends.
pub const MAX_COUNTER: u64 = 1 << 62;

/// Every message on the wire, with who sent it to whom in which cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// The sender's cluster, or `None` before it has one (P10).
    pub cluster: Option<ClusterId>,
    /// The sender.
    pub from: NodeId,
    /// Where the sender listens; replies go there.
    pub from_addr: Address,
    /// The node the message is meant for, or `None` when the sender only knows an
    /// address (a probe). A node drops messages meant for another id: that is a
    /// previous process at the same address.
    pub to: Option<NodeId>,
    /// The message.
    pub msg: Message,
}

/// The protocol's messages. `docs/PROTOCOL.md` describes each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// "Who are you?", sent to a discovered address.
    Probe,
    /// The answer to a probe.
    ProbeAck(ProbeAck),
    /// A fresh node asks another fresh node to support it founding the cluster.
    BootstrapRequest {
        /// The candidate's attempt number.
        round: u64,
    },
    /// The answer to a bootstrap request.
    BootstrapReply {
        /// The round answered.
        round: u64,
        /// Whether the sender now supports the candidate (and no other).
        granted: bool,
    },
    /// A candidate that did not gather enough support releases its supporters.
    BootstrapWithdraw {
        /// The round withdrawn.
        round: u64,
    },
    /// A member of a cluster that lost its voters asks a process to support it in
    /// founding the cluster's successor (P11). Answered with `BootstrapReply`, freed
    /// with `BootstrapWithdraw`, as a bootstrap request.
    RecoveryRequest {
        /// The candidate's attempt number.
        round: u64,
        /// The index of the candidate's last log entry.
        last_index: u64,
        /// The term of the candidate's last log entry.
        last_term: u64,
    },
    /// A node outside the configuration asks the leader to admit it.
    Join {
        /// The joiner's human-readable name.
        name: Option<String>,
    },
    /// A member asks the leader to remove it (graceful leave).
    Leave,
    /// The receiver is not the leader; it points at the one it knows.
    NotLeader {
        /// The leader the sender knows of.
        leader: Option<(NodeId, Address)>,
    },
    /// A pre-vote: "would you vote for me?" without changing anyone's term.
    PreVote(VoteRequest),
    /// The answer to a pre-vote.
    PreVoteReply(VoteReply),
    /// A vote request.
    Vote(VoteRequest),
    /// The answer to a vote request.
    VoteReply(VoteReply),
    /// Log entries, or a heartbeat when empty.
    Append(Append),
    /// The committed configuration plus the tail, for a follower too far behind.
    Snapshot(SnapshotMsg),
    /// A piece of a snapshot too large for one message (`Config::snapshot_chunk_len`),
    /// sent one at a time; the follower installs it when it has every byte.
    SnapshotChunk(SnapshotChunk),
    /// A follower has the first `received` bytes of the snapshot being sent.
    SnapshotChunkAck(SnapshotChunkAck),
    /// The answer to an append or a snapshot.
    AppendReply(AppendReply),
    /// The leader tells an up-to-date voter to start an election at once (P8).
    TimeoutNow {
        /// The leader's term.
        term: u64,
    },
    /// A member forwards an application's request to declare or remove roles to the
    /// leader (P13). Resent until the committed table shows it done.
    Roles(RolesRequest),
    /// Key-value store requests forwarded to the leader by the member their
    /// application asked, each with that member's id for it: 1 to
    /// [`MAX_STORE_BATCH`] of them (P14).
    StoreRequests {
        /// The requests, with the asking member's ids.
        requests: Vec<(u64, crate::store::StoreRequest)>,
    },
    /// The leader's answers to forwarded store requests: 1 to [`MAX_STORE_BATCH`].
    StoreReplies {
        /// The answers, with the asking member's ids for the requests.
        replies: Vec<(
            u64,
            Result<crate::store::StoreAnswer, crate::store::StoreError>,
        )>,
    },
}

/// The most roles one [`Message::Roles`] may name.
pub const MAX_ROLES_PER_REQUEST: usize = 1024;

/// The most requests (answers) one [`Message::StoreRequests`]
/// ([`Message::StoreReplies`]) may carry.
pub const MAX_STORE_BATCH: usize = 256;

/// A sender adds no further store request or answer to a batch past this many bytes
/// (its own upper estimate), so that a batch stays under [`MAX_FRAME_LEN`] (a request
/// is at most about 17 KiB, an answer, a range read of the whole store, 512 KiB) and
/// does not hold the messages queued behind it to the same peer for long.
pub const STORE_BATCH_BYTES: usize = 64 * 1024;

/// A primary's renewal of a member's hold on the roles it owns (P13): the member
/// holds them until `echo + valid_for * (1 - ρ) / (1 + ρ)` on its own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldGrant {
    /// The member's clock when it sent the reply this answers ([`AppendReply::at`]):
    /// the hold is timed from the member's own send, so a delayed message can never
    /// stretch it.
    pub echo: Instant,
    /// What was left of the primary's lease when it sent this, in nanoseconds.
    pub valid_for_nanos: u64,
}

/// What a probed node says of itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeAck {
    /// Its human-readable name.
    pub name: Option<String>,
    /// Its state.
    pub state: ProbeState,
}

/// A probed node's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ProbeState {
    /// Not in a cluster yet.
    Fresh {
        /// The candidate it supports, if any.
        supports: Option<NodeId>,
    },
    /// A member of the cluster named in the envelope.
    Member {
        /// Its term.
        term: u64,
        /// The leader it follows, if it heard from it within the maximum election
        /// timeout (or itself, while it leads).
        leader: Option<(NodeId, Address)>,
        /// The index of its last log entry.
        last_index: u64,
        /// The term of its last log entry.
        last_term: u64,
        /// Its committed configuration, sent only when the prober is in it, so that a
        /// member which missed the news can take its place.
        your_config: Option<Snapshot>,
    },
}

/// A (pre-)vote request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// The term the candidate asks for (for a pre-vote: the term it would start).
    pub term: u64,
    /// The index of its last log entry.
    pub last_index: u64,
    /// The term of its last log entry.
    pub last_term: u64,
    /// Set when the candidate campaigns on the leader's `TimeoutNow`: voters then
    /// ignore leader stickiness, because that leader has already given up its lease.
    pub transfer: bool,
}

/// The answer to a (pre-)vote request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteReply {
    /// The voter's term; for a granted pre-vote, the term asked about (a refused
    /// pre-vote carries the voter's own term, so that a candidate behind it catches up).
    pub term: u64,
    /// Whether the vote is granted.
    pub granted: bool,
}

/// Entries to append, or a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append {
    /// The leader's term.
    pub term: u64,
    /// The index of the entry before `entries`.
    pub prev_index: u64,
    /// Its term.
    pub prev_term: u64,
    /// The entries, often none.
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub commit: u64,
    /// When the leader sent it, on the leader's clock; echoed in the reply so the
    /// leader can time its lease from the send (P6).
    pub sent_at: Instant,
    /// A renewal of the receiver's role hold (P13), sent by a primary with a valid
    /// lease to a member that replied since the last one.
    pub hold: Option<HoldGrant>,
}

/// A snapshot and the tail after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMsg {
    /// The leader's term.
    pub term: u64,
    /// The committed configuration.
    pub snapshot: Snapshot,
    /// Uncommitted entries after it.
    pub entries: Vec<Entry>,
    /// As in [`Append::sent_at`].
    pub sent_at: Instant,
}

/// A piece of an encoded [`Snapshot`] (postcard, as [`Snapshot`] serialises on its
/// own). The pieces of one snapshot share `term`, `index`, `snapshot_term` and `total`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The leader's term.
    pub term: u64,
    /// The snapshot's index.
    pub index: u64,
    /// The snapshot's term.
    pub snapshot_term: u64,
    /// Where `bytes` start in the encoded snapshot.
    pub offset: u64,
    /// The encoded snapshot's length, at most [`MAX_SNAPSHOT_LEN`].
    pub total: u64,
    /// The piece, not empty, at most [`MAX_SNAPSHOT_CHUNK_LEN`] bytes.
    pub bytes: Vec<u8>,
    /// As in [`Append::sent_at`].
    pub sent_at: Instant,
}

impl SnapshotChunk {
    /// Whether the piece is well-formed: not empty, not over its limits, inside its
    /// snapshot, which is not from a term after the leader's.
    pub fn check(&self) -> Result<(), &'static str> {
        let end = self.offset.checked_add(self.bytes.len() as u64);
        if self.bytes.is_empty() {
            Err("empty snapshot chunk")
        } else if self.bytes.len() > MAX_SNAPSHOT_CHUNK_LEN {
            Err("snapshot chunk over its limit")
        } else if self.total > MAX_SNAPSHOT_LEN {
            Err("snapshot over its limit")
        } else if end.is_none_or(|end| end > self.total) {
            Err("snapshot chunk beyond the snapshot's end")
        } else if self.snapshot_term > self.term {
            Err("snapshot from a later term than the leader's")
        } else {
            Ok(())
        }
    }
}

/// The answer to a [`SnapshotChunk`] that did not complete its snapshot (the last one
/// is answered with an [`AppendReply`] once installed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunkAck {
    /// The follower's term.
    pub term: u64,
    /// The snapshot's index.
    pub index: u64,
    /// How many bytes of it the follower holds: the next chunk starts there.
    pub received: u64,
    /// The `sent_at` of the chunk answered.
    pub sent_at: Instant,
}

/// The answer to an append or snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendReply {
    /// The follower's term.
    pub term: u64,
    /// Whether the entries matched and were stored.
    pub success: bool,
    /// On success the follower's last matching index; otherwise where to retry.
    pub index: u64,
    /// The `sent_at` of the message answered.
    pub sent_at: Instant,
    /// The follower's own clock when it sent this reply, echoed in the next
    /// [`HoldGrant`].
    pub at: Instant,
    /// Roles (with the grant index) the follower was asked to release and has let go
    /// for good: the leader may grant them elsewhere (P13).
    pub released: Vec<(String, u64)>,
}

/// Why a frame could not be decoded. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than [`MAX_FRAME_LEN`].
    TooLarge(usize),
    /// Another protocol version.
    UnsupportedVersion(u16),
    /// Not a valid frame.
    Malformed(String),
    /// Well-formed but breaking a protocol limit.
    Invalid(&'static str),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds {MAX_FRAME_LEN}"),
            DecodeError::UnsupportedVersion(v) => {
                write!(f, "protocol version {v} is not {PROTOCOL_VERSION}")
            }
            DecodeError::Malformed(e) => write!(f, "malformed frame: {e}"),
            DecodeError::Invalid(why) => write!(f, "invalid message: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Envelope {
    /// Encodes to a postcard frame.
    pub fn encode(&self) -> Vec<u8> {
        // Most frames (heartbeats, their replies, probes) fit in the first allocation;
        // grown from empty, a frame was reallocated four or five times.
        let mut buf = Vec::with_capacity(ENCODE_START_CAPACITY);
        self.encode_into(&mut buf);
        buf
    }

    /// Encodes into `buf`, reusing its allocation.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        // Serialising these types into a Vec cannot fail: no map keys or lengths that
        // postcard refuses, and no I/O.
        buf.clear();
        let taken = core::mem::take(buf);
        *buf = postcard::to_extend(self, taken).unwrap_or_default();
    }

    /// Decodes a frame. Any byte string gives either an envelope or an error, never a
    /// panic; the version is checked first so a newer peer gets a clear reason.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        if bytes.len() > MAX_FRAME_LEN {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let (version, _) = postcard::take_from_bytes::<u16>(bytes)
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let env: Envelope =
            postcard::from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        env.check_limits()?;
        Ok(env)
    }

    /// The protocol limits a decoded envelope must keep (checked by
    /// [`decode`](Self::decode), and by the core for envelopes handed to it).
    pub(crate) fn check_limits(&self) -> Result<(), DecodeError> {
        let entries = match &self.msg {
            Message::Append(a) => a.entries.len(),
            Message::Snapshot(s) => s.entries.len(),
            _ => 0,
        };
        if entries > MAX_ENTRIES_PER_APPEND {
            return Err(DecodeError::Invalid("too many entries in one append"));
        }
        if let Message::SnapshotChunk(c) = &self.msg {
            c.check().map_err(DecodeError::Invalid)?;
        }
        let roles = match &self.msg {
            Message::Roles(r) => r.add.len() + r.remove.len(),
            Message::AppendReply(r) => r.released.len(),
            _ => 0,
        };
        if roles > MAX_ROLES_PER_REQUEST {
            return Err(DecodeError::Invalid("too many roles in one message"));
        }
        let store_batch = match &self.msg {
            Message::StoreRequests { requests } => Some(requests.len()),
            Message::StoreReplies { replies } => Some(replies.len()),
            _ => None,
        };
        if store_batch.is_some_and(|n| n == 0 || n > MAX_STORE_BATCH) {
            return Err(DecodeError::Invalid(
                "a store batch is empty or over MAX_STORE_BATCH",
            ));
        }
        if self.largest_counter() > MAX_COUNTER {
            return Err(DecodeError::Invalid("term or index out of range"));
        }
        Ok(())
    }

    /// The largest term or log index anywhere in the message.
    pub fn largest_counter(&self) -> u64 {
        let entries = |es: &[Entry]| es.iter().map(|e| e.term.max(e.index)).max().unwrap_or(0);
        match &self.msg {
            Message::PreVote(v) | Message::Vote(v) => v.term.max(v.last_index).max(v.last_term),
            Message::PreVoteReply(r) | Message::VoteReply(r) => r.term,
            Message::Append(a) => a
                .term
                .max(a.prev_index)
                .max(a.prev_term)
                .max(a.commit)
                .max(entries(&a.entries)),
            Message::Snapshot(s) => s
                .term
                .max(s.snapshot.index)
                .max(s.snapshot.term)
                .max(entries(&s.entries)),
            Message::SnapshotChunk(c) => c.term.max(c.index).max(c.snapshot_term),
            Message::SnapshotChunkAck(a) => a.term.max(a.index),
            Message::AppendReply(r) => r.term.max(r.index),
            Message::TimeoutNow { term } => *term,
            Message::ProbeAck(ProbeAck {
                state:
                    ProbeState::Member {
                        term,
                        your_config,
                        last_index,
                        last_term,
                        ..
                    },
                ..
            }) => (*term)
                .max(*last_index)
                .max(*last_term)
                .max(your_config.as_ref().map_or(0, |c| c.index.max(c.term))),
            Message::RecoveryRequest {
                last_index,
                last_term,
                ..
            } => (*last_index).max(*last_term),
            _ => 0,
        }
    }
}
