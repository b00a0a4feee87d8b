//! A node's view of the cluster, for applications and status endpoints.

use crate::id::{Address, ClusterId, NodeId};
use crate::membership::Member;
use crate::roles::{OwnedRole, RoleStatus};
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

/// The fencing token of a primary (P7): its cluster and its term. Tokens compare
/// (derived `Ord`) by the cluster's epoch, then its random bits, then the term; they
/// strictly increase from one primary to the next within a cluster and across a
/// recovery (whose cluster has a higher epoch), so an external store that remembers
/// the highest token it saw can refuse writes from a deposed primary. Two clusters of
/// the same epoch come from separate cold starts (no common history): a store that
/// sees one should be reset by an operator, as after any cold start without data
/// directories.
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
    /// While this member's cluster has had no leader for a while: why, and what would
    /// recover it (P11).
    pub recovery: Option<RecoveryStatus>,
    /// The committed role table (P13), in name order.
    pub roles: Vec<RoleStatus>,
    /// The roles this node holds at the instant asked.
    pub owned_roles: Vec<OwnedRole>,
    /// When this node's hold on its roles ends unless renewed (its lease end while
    /// it is primary). A shell that answers role queries later from this status
    /// must check the instant against it (and each role's `release_by`).
    pub role_hold_until: Option<Instant>,
}

/// Why a member of a cluster without a leader has no primary, and what would end it
/// (P11). Shown in [`Status::recovery`] while the node has heard from no leader for
/// two maximum election timeouts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecoveryStatus {
    /// When this node last heard from a leader (`None`: never, since it started).
    pub leader_last_heard: Option<Instant>,
    /// The voters of its configuration other than itself, with what is known of each.
    pub voters: Vec<VoterEvidence>,
    /// Why automatic recovery does not go ahead, in words; `None` while this node is
    /// recovering the cluster (it stands as its recovery candidate).
    pub blocked: Option<String>,
    /// Whether an operator forced the recovery (`Input::ForceRecover`).
    pub forced: bool,
}

/// One voter, as seen by a member recovering its cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VoterEvidence {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: Address,
    /// What is known of it.
    pub state: VoterState,
}

/// What a recovering member knows of one voter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum VoterState {
    /// It answered a probe recently as a member of this cluster.
    Live,
    /// Its process is gone for good: another process (`successor`) answered at its
    /// address, or authoritative discovery no longer lists it (`successor: None`).
    ProvenDead {
        /// The process that answered at its address, if that is the proof.
        successor: Option<NodeId>,
    },
    /// It does not answer, and nothing proves it dead: it may be partitioned or
    /// paused, and may still lead a configuration this node does not know.
    Missing,
}
