//! Simulation scenarios, the invariant checker, seed sweeps, statistics and timelines
//! for cluster-mode, run inside madsim.
//!
//! Built only with `--cfg madsim` (`cargo simtest -p cluster-mode-sims`, `cargo sim`).
//! A plain build of this crate is empty, and its tests fail loudly.
#![cfg(madsim)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checker;
pub mod log;
pub mod runner;
pub mod scenarios;
pub mod stats;
pub mod store;
pub mod sweep;
pub mod timeline;

pub use runner::{replay_command, run_seed, RunResult};
pub use scenarios::{Scenario, ALL, BY_NAME};
