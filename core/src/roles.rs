//! Named roles: the replicated role table, the changes that edit it, and what an
//! application is told about the roles it owns.
//!
//! A role (`"shard-7"`, `"queue-eu"`) has at most one owner at any instant. The table
//! lives in the replicated log beside the member list ([`Membership::roles`]), so it
//! survives a primary failover unchanged. The primary places roles
//! ([`crate::placement`]) and writes [`RoleOp`]s; an owner holds a role only while its
//! grant is committed and it has a recent hold from a primary with a valid lease (the
//! rules and their argument: `docs/PROTOCOL.md`, P13).
//!
//! [`Membership::roles`]: crate::Membership::roles

use crate::id::{ClusterId, NodeId};
use crate::placement::Placement;
use crate::time::Instant;
use serde::{Deserialize, Serialize};

/// The longest role name, in bytes.
pub const MAX_ROLE_NAME_LEN: usize = 128;

/// The most roles one cluster keeps. Each role costs an entry in every snapshot and a
/// line in every status, and the primary plans them all each round.
pub const MAX_ROLES: usize = 4096;

/// The most role operations one log entry carries (a frame of 64 entries stays far
/// below the 1 MiB limit).
pub(crate) const MAX_ROLES_PER_ENTRY: usize = 64;

/// Why a role name is refused.
pub fn check_role_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a role name must not be empty".into());
    }
    if name.len() > MAX_ROLE_NAME_LEN {
        return Err(format!(
            "role name is {} bytes; at most {MAX_ROLE_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "role name {name:?} contains {c:?}; use letters, digits and punctuation"
        ));
    }
    Ok(())
}

/// One role in the replicated table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoleEntry {
    /// How the primary may place it.
    pub placement: Placement,
    /// Its owner, once granted. It *holds* the role only under the rules of P13.
    pub owner: Option<NodeId>,
    /// The index of the log entry that granted it to `owner` (0: never granted). It
    /// strictly increases from one grant of the role to the next.
    pub granted_at: u64,
    /// The primary asked the owner to let it go: the owner drains, confirms, and only
    /// then is the role granted elsewhere.
    pub releasing: bool,
}

/// One edit of the role table, carried by [`crate::Change::Roles`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RoleOp {
    /// Declares a role (no effect if it exists).
    Add {
        /// Its name.
        role: String,
        /// Its placement.
        placement: Placement,
    },
    /// Forgets a role. The primary writes it only once nobody can hold the role.
    Remove {
        /// Its name.
        role: String,
    },
    /// Gives a role to `owner`. The primary writes it only once the previous owner's
    /// hold has provably ended (it confirmed the release, or its last hold expired).
    Grant {
        /// The role.
        role: String,
        /// Its new owner.
        owner: NodeId,
        /// The index of the entry that carries this grant; a grant whose index is not
        /// above the role's current one is ignored, so tokens only rise.
        index: u64,
    },
    /// Asks the owner to release the role (graceful move).
    Revoke {
        /// The role.
        role: String,
    },
}

/// A role owner's fencing token: the cluster and the index of the grant. Tokens of one
/// role strictly increase from one owner to the next (log indices only grow, and a
/// recovered cluster has a higher epoch, as for [`crate::FencingToken`]); a store that
/// remembers the highest token per role refuses a deposed owner's writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoleToken {
    /// The cluster.
    pub cluster: ClusterId,
    /// The index of the log entry that granted the role.
    pub index: u64,
}

impl std::fmt::Display for RoleToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.cluster, self.index)
    }
}

/// A role this node holds at the instant asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnedRole {
    /// The role.
    pub role: String,
    /// Its fencing token.
    pub token: RoleToken,
    /// Set while the primary asked for it back: the node holds it until it releases
    /// it ([`crate::Input::ReleaseRole`]) or until this instant, whichever is first.
    pub release_by: Option<Instant>,
}

/// One role, as a node's committed table shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleStatus {
    /// The role.
    pub role: String,
    /// Its owner, once granted (it may not hold it at this instant).
    pub owner: Option<NodeId>,
    /// The owner's token.
    pub token: Option<RoleToken>,
    /// Whether the primary is moving it.
    pub releasing: bool,
    /// How it is placed.
    pub placement: Placement,
}

/// A change of the roles this node holds, reported by [`crate::Command::Role`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum RoleEvent {
    /// This node now holds the role.
    Acquired {
        /// The role.
        role: String,
        /// Its token.
        token: RoleToken,
    },
    /// The primary asked for the role back: finish (drain) by `deadline` and call
    /// release; the node keeps holding it until then.
    Releasing {
        /// The role.
        role: String,
        /// Its token.
        token: RoleToken,
        /// The node lets go at this instant (its clock) at the latest.
        deadline: Instant,
    },
    /// This node no longer holds the role: released, moved, removed, or its hold
    /// expired (no recent word from a primary).
    Lost {
        /// The role.
        role: String,
        /// The token it held.
        token: RoleToken,
    },
}

/// A request, forwarded to the primary, to declare or remove roles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolesRequest {
    /// Roles to declare, if absent.
    pub add: Vec<(String, Placement)>,
    /// Roles to remove, if present.
    pub remove: Vec<String>,
}

impl RolesRequest {
    /// Whether it asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}
