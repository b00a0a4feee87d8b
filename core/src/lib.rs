//! # cluster-mode-core
//!
//! The sans-IO heart of cluster-mode: a state machine that lets the replicas of a
//! service agree on a member list and on one primary, with no external lock service.
//!
//! [`ClusterCore`] owns no clock, socket, task or global random generator. A shell
//! (tokio, madsim, or a test's in-memory network) feeds it [`Input`]s with the
//! instant they happened, carries out the [`Command`]s it emits, and ticks it at
//! [`ClusterCore::poll_timeout`]. Given the same identity, [`Config`], seed and
//! inputs it emits the same commands, so any run can be replayed.
//!
//! The protocol, and the argument for each safety property (P1-P13), is in
//! `docs/PROTOCOL.md` at the repository root.
//!
//! ```
//! use cluster_mode_core::{ClusterCore, Config, Identity, Input, Instant, NodeId, Discovered, Command};
//!
//! let me = Identity::new(NodeId(1), "10.0.0.1:7946");
//! let mut core = ClusterCore::new(me, Config::fast_test(), 42, Instant::ZERO).unwrap();
//! core.handle(Instant::ZERO, Input::Discovery(vec![Discovered::new("10.0.0.2:7946")])).unwrap();
//! // The core probes the newly discovered address.
//! let mut sends = 0;
//! while let Some(cmd) = core.poll_command() {
//!     if let Command::Send { to, .. } = cmd {
//!         assert_eq!(to.as_str(), "10.0.0.2:7946");
//!         sends += 1;
//!     }
//! }
//! assert_eq!(sends, 1);
//! assert!(core.poll_timeout().is_some());
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod durable;
mod error;
mod event;
mod id;
mod log;
mod membership;
pub mod message;
mod node;
mod placement;
mod rng;
mod roles;
mod status;
pub mod store;
mod time;

pub use config::{Config, ConfigError};
pub use durable::{DurableState, RestoreError};
pub use error::Rejected;
pub use event::{Command, Delivery, Discovered, Freshness, Input};
pub use id::{Address, ClusterId, Identity, NodeId, MAX_ADDRESS_LEN};
pub use membership::{Change, Entry, Member, Membership, Snapshot};
pub use message::{DecodeError, Envelope, Message, PROTOCOL_VERSION};
pub use node::ClusterCore;
pub use placement::{cap, plan, Candidate, Move, Placement, RoleInput};
pub use rng::SplitMix64;
pub use roles::{
    check_role_name, OwnedRole, RoleEntry, RoleEvent, RoleOp, RoleStatus, RoleToken, RolesRequest,
    MAX_ROLES, MAX_ROLE_NAME_LEN,
};
pub use status::{
    FencingToken, MemberStatus, PrimaryInfo, RecoveryStatus, Role, Status, VoterEvidence,
    VoterState,
};
pub use time::Instant;
