//! What a member keeps across a restart when its shell has a data directory (P12).
//!
//! The core never writes anything. A core made [`durable`](crate::ClusterCore::durable)
//! puts a [`Command::Persist`](crate::Command::Persist) at the front of the commands of
//! any input that changed this state; the shell writes it crash-safely before it
//! carries out the commands after it (a vote granted, an append acknowledged). A
//! restarted process hands the last state written to
//! [`ClusterCore::restore`](crate::ClusterCore::restore) and is the same member again.
//! Heartbeats, commit-index moves and lease renewals change none of it, so a steady
//! cluster writes nothing.

use crate::id::{ClusterId, NodeId};
use crate::membership::{Entry, Snapshot};
use crate::message::MAX_COUNTER;
use serde::{Deserialize, Serialize};

/// A member's durable state: Raft's `currentTerm`, `votedFor` and log, plus the
/// identity they belong to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    /// The node's id: a restored process keeps it (P1 with a data directory).
    pub id: NodeId,
    /// The cluster it is a member of, if any.
    pub cluster: Option<ClusterId>,
    /// The current term.
    pub term: u64,
    /// The candidate voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
    /// The compacted, committed base of the configuration log.
    pub base: Snapshot,
    /// The entries after `base`, committed or not.
    pub entries: Vec<Entry>,
}

/// Why a [`DurableState`] cannot be restored. Nothing was started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreError {
    /// What is wrong with it.
    pub reason: String,
}

impl core::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "durable state cannot be restored: {}", self.reason)
    }
}

impl std::error::Error for RestoreError {}

impl DurableState {
    /// Checks what a restore relies on: the id is this node's, counters are in range,
    /// entries follow the base one by one with terms that never decrease and never
    /// exceed the current term, and a vote is only recorded with a cluster.
    pub fn validate(&self, me: NodeId) -> Result<(), RestoreError> {
        let fail = |reason: String| Err(RestoreError { reason });
        if self.id != me {
            return fail(format!(
                "it belongs to node {:?}, not to this node {:?}",
                self.id, me
            ));
        }
        if self.cluster.is_none()
            && (self.term != 0 || self.voted_for.is_some() || !self.entries.is_empty())
        {
            return fail("a term, vote or log without a cluster".into());
        }
        let mut prev = (self.base.index, self.base.term);
        for e in &self.entries {
            if e.index != prev.0 + 1 {
                return fail(format!(
                    "entry {} does not follow entry {}",
                    e.index, prev.0
                ));
            }
            if e.term < prev.1 {
                return fail(format!("entry {} has a term below the one before", e.index));
            }
            prev = (e.index, e.term);
        }
        if prev.1 > self.term {
            return fail(format!(
                "the log has term {} but the current term is {}",
                prev.1, self.term
            ));
        }
        if self.term > MAX_COUNTER || prev.0 > MAX_COUNTER {
            return fail("term or index out of range".into());
        }
        Ok(())
    }
}

/// A cheap summary of a [`DurableState`] that changes whenever the state does: by
/// Raft's log matching, two logs with the same base and the same last entry (index
/// and term) hold the same entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) cluster: Option<ClusterId>,
    pub(crate) term: u64,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) base: (u64, u64),
    pub(crate) last: (u64, u64),
}
