//! The replicated key-value store (issue 12): a small map kept next to the member
//! list, written through the primary and read at a chosen [`Consistency`].
//!
//! Writes are entries of the same log as membership and role changes, so members,
//! roles and data share one order. The state machine ([`StoreData`]) is applied when
//! an entry commits; it depends on nothing but the entries (never on a node's local
//! configuration), so every member holds the same data at the same index. The
//! *revision* of a write is the index of its log entry.
//!
//! Exactly-once writes: a client first registers (a log entry whose index becomes its
//! [`ClientId`]); each write then carries the client's id and a sequence number, and
//! the state machine remembers the outcome of every write the client has not yet
//! acknowledged. A retry after a primary change gets the saved outcome instead of
//! applying the write twice. A client whose session was evicted (more than
//! [`MAX_SESSIONS`] clients) gets [`StoreError::SessionExpired`], never a second
//! application.
//!
//! Limits are protocol constants, not configuration, because the state machine must
//! reject the same writes on every member: keys up to [`MAX_KEY_LEN`] bytes, values up
//! to [`MAX_VALUE_LEN`], all keys and values together up to [`MAX_STORE_BYTES`] (a
//! follower far behind receives the whole store in pieces, `Message::SnapshotChunk`).

mod data;

pub use data::{StoreData, Versioned};

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The revision of a write: the index of its log entry. 0 means "no write" (an absent
/// key, or the expected revision of a compare-and-swap that creates the key).
pub type Revision = u64;

/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// The longest value, in bytes.
pub const MAX_VALUE_LEN: usize = 16 * 1024;
/// The most bytes all keys and values may hold together (with 64 bytes counted per
/// key for bookkeeping). The store lives in memory on every member (twice: the data
/// at the commit index and the log's base), and a follower far behind receives it
/// as a snapshot in pieces of `Config::snapshot_chunk_len` bytes.
pub const MAX_STORE_BYTES: usize = 8 * 1024 * 1024;
/// The most client sessions the store remembers; the least recently active one is
/// evicted past it.
pub const MAX_SESSIONS: usize = 1024;
/// The most writes of one client that may be unacknowledged at once.
pub const MAX_IN_FLIGHT: u64 = 1024;
/// Bookkeeping bytes counted per stored key towards [`MAX_STORE_BYTES`].
pub const PER_KEY_OVERHEAD: usize = 64;

/// How many recent changes every node keeps for watchers
/// ([`ClusterCore::store_changes`](crate::ClusterCore::store_changes)).
pub const WATCH_HISTORY: usize = 4096;

/// One change to the data, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataChange {
    /// The write's revision.
    pub revision: Revision,
    /// The key.
    pub key: String,
    /// The new value, or `None` if the key was deleted.
    pub value: Option<Vec<u8>>,
}

impl DataChange {
    /// The change a committed write made, if it changed anything (a mismatched
    /// compare-and-swap, a delete of an absent key or a write to a full store did
    /// not).
    pub fn of(entry: &DataEntry, outcome: &WriteOutcome) -> Option<DataChange> {
        let DataEntry::Write(w) = entry else {
            return None;
        };
        let (revision, value) = match outcome {
            WriteOutcome::Put { revision } | WriteOutcome::Swapped { revision } => {
                (*revision, w.op.value().map(<[u8]>::to_vec))
            }
            WriteOutcome::Deleted {
                revision,
                existed: true,
            } => (*revision, None),
            _ => return None,
        };
        Some(DataChange {
            revision,
            key: w.op.key().to_owned(),
            value,
        })
    }
}

/// A client session's id: the revision at which the client registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// One change to the data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes `key` (a committed write even if the key was absent).
    Delete {
        /// The key.
        key: String,
    },
    /// Sets `key` to `value` only if its revision is `expected` (0: only if absent).
    CompareAndSwap {
        /// The key.
        key: String,
        /// The revision the key must have.
        expected: Revision,
        /// The new value.
        value: Vec<u8>,
    },
}

impl WriteOp {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Put { key, .. }
            | WriteOp::Delete { key }
            | WriteOp::CompareAndSwap { key, .. } => key,
        }
    }

    /// The value written, if any.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            WriteOp::Put { value, .. } | WriteOp::CompareAndSwap { value, .. } => Some(value),
            WriteOp::Delete { .. } => None,
        }
    }

    /// Checks the size limits; the error names what is too large.
    pub fn check_limits(&self) -> Result<(), StoreError> {
        let key = self.key();
        if key.is_empty() {
            return Err(StoreError::Invalid("the key is empty".into()));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(StoreError::TooLarge {
                what: Oversized::Key,
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        if let Some(v) = self.value().filter(|v| v.len() > MAX_VALUE_LEN) {
            return Err(StoreError::TooLarge {
                what: Oversized::Value,
                len: v.len(),
                max: MAX_VALUE_LEN,
            });
        }
        Ok(())
    }
}

/// A client's write, as the log carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The client's session.
    pub client: ClientId,
    /// The write's number in the session, from 1.
    pub seq: u64,
    /// Every write of the session numbered below this has its answer: the store may
    /// forget their outcomes.
    pub acked_below: u64,
    /// The change.
    pub op: WriteOp,
}

/// A log entry of the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataEntry {
    /// Opens a client session; its id is this entry's index.
    Register,
    /// A client's write.
    Write(Write),
}

impl DataEntry {
    /// Bytes this entry adds to an append message, roughly.
    pub fn wire_len(&self) -> usize {
        match self {
            DataEntry::Register => 16,
            DataEntry::Write(w) => 40 + w.op.key().len() + w.op.value().map_or(0, <[u8]>::len),
        }
    }
}

/// What a committed write did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// The key holds the value from `revision` on.
    Put {
        /// The write's revision.
        revision: Revision,
    },
    /// The key is absent from `revision` on.
    Deleted {
        /// The write's revision.
        revision: Revision,
        /// Whether the key was present.
        existed: bool,
    },
    /// The compare-and-swap matched; the key holds the value from `revision` on.
    Swapped {
        /// The write's revision.
        revision: Revision,
    },
    /// The compare-and-swap did not match and changed nothing.
    Mismatch {
        /// The key's revision when it was applied (0: absent).
        current: Revision,
    },
    /// The store was full; nothing changed (the entry still took a log index).
    Full,
}

/// A read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Read {
    /// One key.
    Get {
        /// The key.
        key: String,
    },
    /// Every key that starts with `prefix`, in key order, at most `limit` of them and
    /// at most about [`MAX_RANGE_ANSWER_BYTES`] of keys and values (the answer of a
    /// forwarded read travels in one message).
    Range {
        /// The prefix ("" for all keys).
        prefix: String,
        /// The most entries returned.
        limit: u32,
    },
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Linearizable, without relying on clocks: the primary confirms with a majority
    /// that it still leads after the read arrived (ReadIndex), one round trip.
    #[default]
    Linearizable,
    /// Linearizable while the primary's lease holds, with no round trip: relies on the
    /// bound on clock drift that the lease relies on (P6). Falls back to
    /// [`Linearizable`](Self::Linearizable) when the lease is not held.
    Lease,
    /// Served by the member asked, from data at most `max_lag` old: the member heard
    /// from a primary within `max_lag` and had applied everything that primary had
    /// committed when it sent. May be stale; never from a cluster this member left.
    Local {
        /// How old the data may be.
        max_lag: Duration,
    },
}

/// The answer to a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadAnswer {
    /// The key's value, or `None` if absent.
    Get(Option<Versioned>),
    /// The keys in the range, in order, and whether more were left out.
    Range {
        /// The entries.
        entries: Vec<(String, Versioned)>,
        /// Whether the limit (or [`MAX_RANGE_ANSWER_BYTES`]) cut the list.
        more: bool,
    },
}

/// A request to the store, from the application to its core.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreRequest {
    /// Open a session (needed before writing).
    Register,
    /// Write.
    Write(Write),
    /// Read.
    Read {
        /// What to read.
        read: Read,
        /// How fresh.
        consistency: Consistency,
    },
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreAnswer {
    /// The new session.
    Registered(ClientId),
    /// The write committed with this outcome.
    Written(WriteOutcome),
    /// The read, served at `revision` (everything up to it applied).
    Read {
        /// The data read.
        answer: ReadAnswer,
        /// The store's revision (commit index) at which it was served.
        revision: Revision,
    },
}

/// The keys and values one range answer holds at most (it stops after the entry that
/// reaches it, and says `more`): half a frame, so the answer to a forwarded read fits
/// one message whatever the store holds.
pub const MAX_RANGE_ANSWER_BYTES: usize = 512 * 1024;

/// What a [`StoreError::TooLarge`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Oversized {
    /// A key.
    Key,
    /// A value.
    Value,
    /// A range's answer: the keys with the prefix hold more than
    /// [`MAX_RANGE_ANSWER_BYTES`]; read a narrower prefix.
    Range,
}

impl core::fmt::Display for Oversized {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Oversized::Key => "key",
            Oversized::Value => "value",
            Oversized::Range => "range answer",
        })
    }
}

/// Why a store request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreError {
    /// No primary is known: nothing was done. Retry later.
    NoPrimary,
    /// The request was refused before anything was written: it did not commit.
    NotCommitted(String),
    /// The primary changed (or stopped answering) after the write was handed to it: it
    /// may or may not have committed. Retrying the same write (same client and
    /// sequence number) is safe: it is applied at most once and returns its outcome.
    MaybeCommitted,
    /// A key or value is over its limit.
    TooLarge {
        /// What is too large.
        what: Oversized,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The store holds [`MAX_STORE_BYTES`] already: the write committed but changed
    /// nothing. Delete keys to make room.
    Full,
    /// The session is unknown (evicted, or never registered): the write was not
    /// applied now; an earlier attempt of it may have been. Register again, re-read and
    /// decide.
    SessionExpired,
    /// Too many writes of this session are unacknowledged.
    Busy,
    /// A local read: this member's data is older than the `max_lag` asked for.
    TooStale,
    /// A watch asked for changes older than the oldest one kept: re-read the keys
    /// (`range`) and watch from the revision of that read.
    Compacted {
        /// The oldest revision from which changes are still kept.
        oldest: Revision,
    },
    /// The request itself is invalid (the reason says how).
    Invalid(String),
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StoreError::NoPrimary => write!(f, "no primary is known; nothing was written"),
            StoreError::NotCommitted(why) => write!(f, "not committed: {why}"),
            StoreError::MaybeCommitted => write!(
                f,
                "the primary changed after the write was sent: it may have committed; \
                 retrying it is safe (it is applied at most once)"
            ),
            StoreError::TooLarge { what, len, max } => {
                write!(f, "{what} of {len} bytes exceeds the limit of {max}")
            }
            StoreError::Full => write!(
                f,
                "the store is full ({MAX_STORE_BYTES} bytes): the write changed nothing"
            ),
            StoreError::SessionExpired => write!(
                f,
                "the client session is unknown or expired: the write was not applied now; \
                 register again, re-read and decide"
            ),
            StoreError::Busy => write!(f, "too many unacknowledged writes in this session"),
            StoreError::TooStale => write!(f, "this member's data is older than max_lag"),
            StoreError::Compacted { oldest } => write!(
                f,
                "changes before revision {oldest} are no longer kept: re-read and watch from there"
            ),
            StoreError::Invalid(why) => write!(f, "invalid request: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}
