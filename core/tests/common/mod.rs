//! A deterministic in-memory network for the core's tests: every delay, loss,
//! duplication, partition, crash and clock drift comes from one seed.

#![allow(dead_code, unused_imports)]

pub mod checker;
pub mod net;
pub mod script;

pub use checker::{Checker, Violation};
pub use net::{MsgTrace, Net, NetConfig};
