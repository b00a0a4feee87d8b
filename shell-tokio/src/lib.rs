//! # cluster-mode
//!
//! Lets the N replicas of a service elect one primary, with no external lock service.
//! Embed a [`Cluster`] in each replica; it finds the peers through a discovery source,
//! elects a primary (Raft-style election with PreVote, CheckQuorum and a primary
//! lease), keeps an agreed member list, and tells the application about every change.
//!
//! The protocol lives in the sans-IO crate `cluster-mode-core`; this crate is the
//! shell that drives it on tokio: one loop owning the core, the hyper transport (tuned
//! with [`transport::TransportOptions`]), the [`server`] (one tower service for
//! messages, status and [`prometheus`] metrics), and the [`Cluster`] handle built by [`ClusterBuilder`].
//! With [`ClusterBuilder::data_dir`] a node keeps its id, term, vote and log in a
//! [`data_dir`] across restarts, so a process restarted in place is the same member.
//! The loop and the transport also run unchanged under madsim (`--cfg madsim`); the
//! `sim` feature adds the few hooks a simulator needs to plug its own transport and
//! an in-memory disk (see `sim`), and nothing else.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use rand::Rng;

pub mod clock;
mod cluster;
pub mod data_dir;
mod driver;
pub mod lease_log;
pub mod mac;
pub mod metrics;
pub mod prometheus;
mod queue;
pub mod role_log;
mod rt;
pub mod seed;
pub mod server;
pub mod shutdown;
#[cfg(feature = "sim")]
pub mod sim;
mod storage;
pub mod store;
pub mod transport;
pub mod ui;

#[cfg(all(target_os = "linux", not(madsim)))]
pub use clock::BoottimeClock;
pub use clock::{Clock, SystemClock};
pub use cluster::{Cluster, ClusterBuilder, RoleError, StartError, Subscription};
pub use cluster_mode_core::{
    Address, ClusterId, Config, FencingToken, Member, MemberStatus, NodeId, OwnedRole, Placement,
    PrimaryInfo, Role, RoleEvent, RoleStatus, RoleToken, Status,
};
pub use cluster_mode_discovery::{Discovery, Instance, StaticDiscovery};
pub use data_dir::{DataDir, DataDirError};
pub use driver::{ClusterEvent, NodeState, Transport};
pub use server::ClusterService;
pub use shutdown::ShutdownSignal;
pub use store::{CasOutcome, Store, StoreOptions, Watch};

/// A fresh random node id, drawn at every process start of a node without a data
/// directory, and at the first start of one with (P1). Deterministic under
/// madsim (getrandom 0.3 is simulated).
pub fn fresh_node_id() -> NodeId {
    NodeId(fresh_rng().random::<u128>())
}

/// A generator seeded from the OS at every call, not the thread-local one: rand's
/// `ThreadRng` keeps its state across madsim runs on the same thread, so the second
/// simulation of a seed on a thread drew other ids than the first (the sims'
/// `replay_gives_identical_trace` failed on `http-primary-crash`).
pub(crate) fn fresh_rng() -> rand::rngs::StdRng {
    use rand::SeedableRng;
    rand::rngs::StdRng::from_os_rng()
}
