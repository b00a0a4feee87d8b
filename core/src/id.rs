//! Identities: nodes, clusters, addresses.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// A node's identity for one process lifetime (P1).
///
/// The shell draws a fresh random id at every process start, so a restarted pod is a
/// new member: it has cast no vote and holds no term, and nothing is persisted.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u128);

/// The id of one cluster, drawn by the node that founds it (P10).
///
/// Its top 32 bits are the cluster's **epoch**: 1 for a cluster founded by a cold start,
/// one more than the cluster it replaces for a cluster founded by a recovery (P11).
/// The other 96 bits are random. Ids compare by epoch first, so a recovered cluster's
/// fencing tokens are above every token of the cluster it replaced (P7).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u128);

impl ClusterId {
    const EPOCH_SHIFT: u32 = 96;

    /// An id of the given epoch, its other bits from `random`.
    pub fn with_epoch(epoch: u32, random: u128) -> Self {
        let low = random & ((1u128 << Self::EPOCH_SHIFT) - 1);
        ClusterId((u128::from(epoch) << Self::EPOCH_SHIFT) | low)
    }

    /// The epoch: how many clusters, this one included, the lineage has had.
    pub fn epoch(self) -> u32 {
        (self.0 >> Self::EPOCH_SHIFT) as u32
    }
}

macro_rules! hex_id {
    ($t:ty, $shift:expr) => {
        impl core::fmt::Display for $t {
            /// 8 hex digits: enough to tell them apart in a log.
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{:08x}", (self.0 >> $shift) as u32)
            }
        }
        impl core::fmt::Debug for $t {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }
    };
}
hex_id!(NodeId, 96);
// A cluster id's top 32 bits are its epoch: show the random bits below them.
hex_id!(ClusterId, 64);

/// The network address of a node, opaque to the core (for example `10.0.0.7:7946`).
///
/// Cloning is a reference-count increment, so commands that carry an address do not
/// allocate.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(Arc<str>);

/// The longest address the core accepts from the network or from discovery.
pub const MAX_ADDRESS_LEN: usize = 253;

impl Address {
    /// Wraps a string as an address.
    pub fn new(s: impl AsRef<str>) -> Self {
        Address(Arc::from(s.as_ref()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Address {
    fn from(s: &str) -> Self {
        Address::new(s)
    }
}

impl From<String> for Address {
    fn from(s: String) -> Self {
        Address(Arc::from(s))
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::fmt::Debug for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.len() > MAX_ADDRESS_LEN {
            return Err(serde::de::Error::custom("address empty or too long"));
        }
        Ok(Address::from(s))
    }
}

/// Who this node is: its fresh id, the address peers reach it at, and an optional
/// human-readable name (a pod name, say) shown in status and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Fresh for every process start (P1).
    pub id: NodeId,
    /// The address other nodes send messages to.
    pub addr: Address,
    /// Optional stable name, for people; never used for protocol decisions.
    pub name: Option<String>,
}

impl Identity {
    /// An identity without a name.
    pub fn new(id: NodeId, addr: impl Into<Address>) -> Self {
        Identity {
            id,
            addr: addr.into(),
            name: None,
        }
    }

    /// Sets the human-readable name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}
