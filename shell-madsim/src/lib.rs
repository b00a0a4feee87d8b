//! Runs real `cluster-mode-core` nodes inside the madsim deterministic simulator.
//!
//! Everything here only exists when built with `--cfg madsim` (the `cargo simtest`
//! alias): a plain build of this crate is empty, so madsim is never compiled into a
//! production binary.
//!
//! - [`SimCluster`]: create, kill, restart, replace, pause and resume nodes; partition
//!   the network (groups, one-way cuts, isolation); change loss and latency; give each
//!   node a drifting clock; drive the simulated discovery [`Registry`].
//! - [`Recorder`]: every node's status at every change and at a fine sampling interval,
//!   plus the faults that were injected: the input of the invariant checker in
//!   `cluster-mode-sims`.
#![cfg(madsim)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod clock;
mod cluster;
mod node;
mod recorder;
mod registry;
mod world;

pub use clock::Clock;
pub use cluster::{role_names, SimCluster, SimOptions, SlotInfo};
/// The shell's store handle and its options, as [`SimCluster::store`] hands them out.
pub use cluster_mode::{CasOutcome, Store, StoreOptions};
pub use recorder::{
    fnv1a, HeldRole, MemberList, NodeView, Record, RecordKind, Recorder, RoleList, Trace,
};
pub use registry::Registry;
pub use world::TransportKind;
