//! Fuzz target 1: `Envelope::decode` on any bytes, and the round trip of whatever
//! decodes. The logic is in `harness/mod.rs`, shared with the stable replay test.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::decode_one(data));
