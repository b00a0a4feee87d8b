//! Self-tests of the invariant checker (`common/checker.rs`) on hand-made histories:
//! each rule must flag the history that breaks it, or the suites that rely on it
//! prove nothing.

mod common;

use cluster_mode_core::{ClusterId, FencingToken};
use common::checker::token_across_recovery;

fn token(epoch: u32, random: u128, term: u64) -> FencingToken {
    FencingToken {
        cluster: ClusterId::with_epoch(epoch, random),
        term,
    }
}

#[test]
fn a_recovered_cluster_must_start_above_the_cluster_it_replaced() {
    let old = token(1, 0xffff, 9);
    // A successor one epoch up is above every token of its predecessor, whatever its
    // random bits and its term.
    assert_eq!(token_across_recovery(Some(old), token(2, 0, 1)), None);
    // A successor that kept the old epoch (a broken recovery) and drew smaller random
    // bits is flagged.
    let why = token_across_recovery(Some(old), token(1, 0x1, 1));
    assert!(
        why.is_some_and(|w| w.contains("did not increase across a recovery")),
        "a token below the replaced cluster's must be flagged"
    );
    // A successor below its predecessor's epoch (a stale survivor's lower epoch).
    assert!(token_across_recovery(Some(token(3, 0x5, 2)), token(2, 0x9, 7)).is_some());
    // A cold start has no predecessor.
    assert_eq!(token_across_recovery(None, token(1, 2, 1)), None);
}
