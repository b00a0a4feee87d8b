//! Why the core refused an input.

use crate::id::ClusterId;
use crate::message::PROTOCOL_VERSION;

/// Why [`ClusterCore::handle`](crate::ClusterCore::handle) refused a message. Nothing
/// observable changed: no command was queued, no state was touched, and the reason
/// has been logged. Shells count these and answer 4xx.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// The envelope's protocol version is not ours.
    Version(u16),
    /// The sender belongs to another cluster (P10).
    ForeignCluster {
        /// Ours.
        ours: ClusterId,
        /// Theirs.
        theirs: ClusterId,
    },
    /// Addressed to another node id: a previous process at this address.
    NotForMe,
    /// The message breaks a protocol rule (for example entries that do not follow
    /// each other).
    Invalid(&'static str),
    /// This node has left; it handles nothing more.
    Left,
}

impl core::fmt::Display for Rejected {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Rejected::Version(v) => write!(f, "protocol version {v}, expected {PROTOCOL_VERSION}"),
            Rejected::ForeignCluster { ours, theirs } => {
                write!(
                    f,
                    "message from cluster {theirs}, this node is in cluster {ours}"
                )
            }
            Rejected::NotForMe => write!(f, "addressed to a previous process at this address"),
            Rejected::Invalid(why) => write!(f, "invalid message: {why}"),
            Rejected::Left => write!(f, "this node has left the cluster"),
        }
    }
}

impl std::error::Error for Rejected {}
