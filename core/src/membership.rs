//! The agreed member list and the changes the leader replicates to it (P2, P9).

use crate::id::{Address, NodeId};
use crate::roles::{RoleEntry, RoleOp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One member of a cluster configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The member's address.
    pub addr: Address,
    /// Its optional human-readable name.
    pub name: Option<String>,
    /// Whether it votes and counts towards quorum. Non-voters follow the primary (P9).
    pub voter: bool,
}

/// A cluster configuration: who is a member, who of them votes, and the role table
/// (who owns which named role, P13).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// Members by id (ordered, so iteration is deterministic).
    pub members: BTreeMap<NodeId, Member>,
    /// Named roles by name (ordered).
    pub roles: BTreeMap<String, RoleEntry>,
}

impl Membership {
    /// Whether `id` is a member (voter or not).
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// Whether `id` is a voting member.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.voter)
    }

    /// The voting members' ids, in order.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.voter)
            .map(|(id, _)| *id)
    }

    /// How many members vote.
    pub fn voter_count(&self) -> usize {
        self.members.values().filter(|m| m.voter).count()
    }

    /// The smallest number of voters that is a majority.
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }

    /// The member whose address is `addr`, if any.
    pub fn by_addr(&self, addr: &Address) -> Option<NodeId> {
        self.members
            .iter()
            .find(|(_, m)| &m.addr == addr)
            .map(|(id, _)| *id)
    }

    /// Applies one change. Changes that do not apply (adding a present member,
    /// promoting an absent one) leave the configuration as it was.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Noop => {}
            Change::AddLearner { id, addr, name } => {
                self.members.entry(*id).or_insert_with(|| Member {
                    addr: addr.clone(),
                    name: name.clone(),
                    voter: false,
                });
            }
            Change::Promote { id } => {
                if let Some(m) = self.members.get_mut(id) {
                    m.voter = true;
                }
            }
            Change::Remove { id } => {
                self.members.remove(id);
            }
            Change::Roles(ops) => ops.iter().for_each(|op| self.apply_role_op(op)),
            // The data is not part of the configuration: the log applies it to its
            // store when the entry commits.
            Change::Data(_) => {}
        }
    }

    fn apply_role_op(&mut self, op: &RoleOp) {
        match op {
            RoleOp::Add { role, placement } => {
                if self.roles.len() < crate::roles::MAX_ROLES {
                    self.roles.entry(role.clone()).or_insert_with(|| RoleEntry {
                        placement: placement.clone(),
                        ..RoleEntry::default()
                    });
                }
            }
            RoleOp::Remove { role } => {
                self.roles.remove(role);
            }
            RoleOp::Grant { role, owner, index } => {
                if let Some(r) = self.roles.get_mut(role).filter(|r| *index > r.granted_at) {
                    r.owner = Some(*owner);
                    r.granted_at = *index;
                    r.releasing = false;
                }
            }
            RoleOp::Revoke { role } => {
                if let Some(r) = self.roles.get_mut(role).filter(|r| r.owner.is_some()) {
                    r.releasing = true;
                }
            }
        }
    }
}

/// One change to the configuration. The leader proposes at most one at a time and only
/// once everything before it is committed, and each change alters the voter set by at
/// most one member: the single-server changes of the Raft thesis, chapter 4.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Change {
    /// Nothing; the entry a new leader commits at the start of its term.
    Noop,
    /// Adds a non-voting member.
    AddLearner {
        /// Its id.
        id: NodeId,
        /// Its address.
        addr: Address,
        /// Its name.
        name: Option<String>,
    },
    /// Makes a non-voter vote.
    Promote {
        /// The member promoted.
        id: NodeId,
    },
    /// Removes a member, voter or not.
    Remove {
        /// The member removed.
        id: NodeId,
    },
    /// Edits the role table (P13): any number of role operations in one entry. It
    /// changes no member, so it is not bound by the one-change-at-a-time rule.
    Roles(Vec<RoleOp>),
    /// A key-value store entry (a client session or a write). It changes no member
    /// and is applied to the store when it commits.
    Data(crate::store::DataEntry),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: u64,
    /// Its position, from 1.
    pub index: u64,
    /// The change it carries.
    pub change: Change,
}

/// The committed prefix of the log, folded into one configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The index of the last entry folded in.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// The configuration after it.
    pub membership: Membership,
    /// The key-value store after it.
    pub data: crate::store::StoreData,
}
