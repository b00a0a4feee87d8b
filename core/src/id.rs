//! Identities: nodes, clusters, addresses.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// A node's identity for one process lifetime (P1).
///
/// The shell draws a fresh random id at every process start, so a restarted pod is a
/// new member: it has cast no vote and holds no term, and nothing is persisted.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u128);

/// The id of one cluster, drawn by the node that bootstraps it (P10).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u128);

macro_rules! hex_id {
    ($t:ty) => {
        impl core::fmt::Display for $t {
            /// The first 8 hex digits: enough to tell nodes apart in a log.
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{:08x}", (self.0 >> 96) as u32)
            }
        }
        impl core::fmt::Debug for $t {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }
    };
}
hex_id!(NodeId);
hex_id!(ClusterId);

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
