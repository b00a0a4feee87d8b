//! What goes into the core ([`Input`]) and what comes out ([`Command`]).

use crate::id::{Address, NodeId};
use crate::membership::Member;
use crate::message::Envelope;
use crate::status::{PrimaryInfo, Role};

/// One address found by discovery.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Discovered {
    /// Where it listens.
    pub addr: Address,
    /// Its stable name, if discovery knows one (a pod name).
    pub name: Option<String>,
}

impl Discovered {
    /// A discovered address without a name.
    pub fn new(addr: impl Into<Address>) -> Self {
        Discovered {
            addr: addr.into(),
            name: None,
        }
    }
}

/// An event the shell hands to [`crate::ClusterCore::handle`].
// The envelope is stored inline on purpose: boxing it would cost an allocation per
// message on the hot path, which the core avoids.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Input {
    /// A complete discovery answer: every instance discovery lists now. The core diffs
    /// it against the previous one. An empty answer after a non-empty one is treated
    /// as "no information" and removes nobody (P3).
    Discovery(Vec<Discovered>),
    /// Discovery failed. Nothing is removed; the reason is logged.
    DiscoveryFailed(String),
    /// A message arrived.
    Message(Envelope),
    /// A message to this address could not be delivered (connection refused, timeout).
    /// Its decisions rest on silence (missing acknowledgements and probe answers),
    /// which a delivery failure confirms but never replaces; the one use is timing:
    /// a fresh node probes again after a quarter of `probe_interval` instead of a
    /// whole one (a peer not yet listening at a cold start). A shell that cannot tell
    /// need not send it.
    Unreachable(Address),
    /// A timer fired: at or after the instant [`crate::ClusterCore::poll_timeout`]
    /// gave, or at any other time (spurious ticks are harmless).
    Tick,
    /// Leave the cluster gracefully (P8). [`Command::LeaveFinished`] follows.
    Leave,
}

/// Something the shell must do, drained with [`crate::ClusterCore::poll_command`] in
/// order.
// Inline envelope, as in `Input`: no allocation per command.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Send this envelope to this address. Delivery is best effort: the protocol
    /// tolerates loss, duplication and reordering.
    Send {
        /// Where.
        to: Address,
        /// What.
        msg: Envelope,
    },
    /// The application-facing role or the known primary changed.
    RoleChanged {
        /// The new role (as of the instant of the input that caused it).
        role: Role,
        /// The term.
        term: u64,
        /// The primary (leader) this node knows of, if any.
        primary: Option<PrimaryInfo>,
    },
    /// The committed member list changed; the full new list.
    MembersChanged(Vec<(NodeId, Member)>),
    /// `leave` finished: the node is out of the configuration (or gave up waiting).
    /// The shell may stop now.
    LeaveFinished,
}
