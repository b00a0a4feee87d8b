//! Fuzz target 2: a `ClusterCore` started as a fresh node, follower, candidate,
//! leader or joiner, then driven by a step program read from the input (structured
//! messages from peers through the wire format, cooperative replies, ticks,
//! discovery, leave), with the node's own invariants checked after every step. The
//! logic is in `harness/mod.rs`, shared with the stable replay test.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run_core(data));
