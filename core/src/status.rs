//! A node's view of the cluster, for applications and status endpoints.

use crate::id::{Address, ClusterId, NodeId};
use crate::membership::Member;
use crate::time::Instant;
use serde::Serialize;

/// The role an application sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Role {
    /// Not (yet) in a cluster: discovering, bootstrapping or joining, or left.
    Inactive,
    /// In a cluster that has no primary this node knows of (an election is running,
    /// or this node leads without a valid lease).
    Candidate,
    /// The primary: the leader, holding a valid lease at the instant asked (P6).
    Primary,
    /// A member that follows a known primary.
    Secondary,
    /// Leaving gracefully.
    Leaving,
}

/// The primary a node knows of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrimaryInfo {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: Address,
}

/// The fencing token of a primary (P7): its term within its cluster. It strictly
/// increases from one primary to the next, so an external store that remembers the
/// highest token it saw can refuse writes from a deposed primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FencingToken {
    /// The cluster.
    pub cluster: ClusterId,
    /// The primary's term.
    pub term: u64,
}

/// One member, as shown in status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: Address,
    /// Its name.
    pub name: Option<String>,
    /// Whether it votes.
    pub voter: bool,
}

impl MemberStatus {
    pub(crate) fn new(id: NodeId, m: &Member) -> Self {
        MemberStatus {
            id,
            addr: m.addr.clone(),
            name: m.name.clone(),
            voter: m.voter,
        }
    }
}

/// A node's view at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its cluster, once it has one.
    pub cluster: Option<ClusterId>,
    /// The role at the instant asked.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// Whether this node is the Raft leader (with or without a valid lease).
    pub is_leader: bool,
    /// The primary it knows of.
    pub primary: Option<PrimaryInfo>,
    /// The committed members.
    pub members: Vec<MemberStatus>,
    /// The index of the committed configuration.
    pub commit_index: u64,
    /// Whether this node holds a valid primary lease at the instant asked.
    pub lease_valid: bool,
    /// When the lease ends, if this node leads.
    pub lease_until: Option<Instant>,
    /// The fencing token, while this node is primary.
    pub fencing_token: Option<FencingToken>,
}
