//! # cluster-mode
//!
//! Lets the N replicas of a service elect one primary, with no external lock service.
//! Embed a [`Cluster`] in each replica; it finds the peers through a discovery source,
//! elects a primary (Raft-style election with PreVote, CheckQuorum and a primary
//! lease), keeps an agreed member list, and tells the application about every change.
//!
//! The protocol lives in the sans-IO crate `cluster-mode-core`; this crate is the
//! shell that drives it on tokio: the [`driver`] loop, the hyper [`transport`], the
//! [`server`] (one tower service for messages and status), and the [`Cluster`] handle.
//! The loop and the transport also run unchanged under madsim (`--cfg madsim`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
mod cluster;
pub mod driver;
pub mod mac;
pub mod metrics;
pub mod rt;
pub mod seed;
pub mod server;
pub mod transport;

pub use clock::{Clock, SystemClock};
pub use cluster::{Cluster, ClusterBuilder, StartError, Subscription};
pub use cluster_mode_core::{
    Address, ClusterId, Config, FencingToken, Member, MemberStatus, NodeId, PrimaryInfo, Role,
    Status,
};
pub use cluster_mode_discovery::{Discovery, Instance, StaticDiscovery};
pub use driver::{ClusterEvent, NodeState, Transport};
pub use server::ClusterService;

/// A fresh random node id, drawn at every process start (P1). Deterministic under
/// madsim (rand 0.9 over getrandom 0.3).
pub fn fresh_node_id() -> NodeId {
    NodeId(rand::random::<u128>())
}
