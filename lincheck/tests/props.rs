//! Property tests: histories built from a sequential execution are accepted; a
//! read changed to something that was never current is rejected.

use cluster_mode_lincheck::synthetic::{linearizable_history, Config};
use cluster_mode_lincheck::{check, CheckError, History, Outcome};
use proptest::prelude::*;
use proptest::sample::Index;

fn config(
    clients: usize,
    operations: usize,
    keys: usize,
    values: usize,
    unknown_permille: u32,
    max_duration: u64,
) -> Config {
    Config {
        clients,
        operations,
        keys,
        values,
        unknown_permille,
        failed_permille: 30,
        max_duration,
        max_think: 200,
    }
}

fn reads(h: &History) -> Vec<usize> {
    (0..h.operations.len())
        .filter(|&i| {
            matches!(
                h.operations[i].outcome,
                Outcome::Found { .. } | Outcome::Absent
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random linearization points inside random intervals, with unknown and failed
    /// outcomes: always accepted.
    #[test]
    fn generated_histories_are_accepted(
        seed: u64,
        clients in 1usize..10,
        operations in 0usize..120,
        keys in 1usize..4,
        values in 1usize..4,
        unknown in 0u32..400,
        max_duration in 1u64..2_000,
    ) {
        let h = linearizable_history(seed, &config(clients, operations, keys, values, unknown, max_duration));
        if let Err(e) = check(&h) {
            prop_assert!(false, "rejected a generated history: {}\n{:#?}", e, h);
        }
    }

    /// One client, so no two operations overlap and no outcome is unknown: any change
    /// to one read's outcome is a state that was never current in its window.
    #[test]
    fn a_mutated_read_without_overlap_is_rejected(
        seed: u64,
        operations in 1usize..60,
        keys in 1usize..3,
        values in 1usize..4,
        pick: Index,
        mutation in 0u8..4,
    ) {
        let mut cfg = config(1, operations, keys, values, 0, 100);
        cfg.failed_permille = 0;
        let mut h = linearizable_history(seed, &cfg);
        let candidates = reads(&h);
        prop_assume!(!candidates.is_empty());
        let i = candidates[pick.index(candidates.len())];
        let outcome = &mut h.operations[i].outcome;
        *outcome = match outcome.clone() {
            Outcome::Found { value, mod_revision } => match mutation {
                0 => Outcome::Found { value: [&value[..], b"'"].concat(), mod_revision },
                1 => Outcome::Found { value, mod_revision: mod_revision + 1 },
                2 if mod_revision > 1 => Outcome::Found { value, mod_revision: mod_revision - 1 },
                2 => Outcome::Found { value, mod_revision: mod_revision + 2 },
                _ => Outcome::Absent,
            },
            _ => Outcome::Found { value: b"v0".to_vec(), mod_revision: 1 + u64::from(mutation) },
        };
        match check(&h) {
            Err(CheckError::Violation(_)) => {}
            other => prop_assert!(false, "mutated read #{} not rejected: {:?}\n{:#?}", i, other, h),
        }
    }

    /// Many overlapping clients and unknown outcomes: a read changed to a value that
    /// no operation ever wrote is rejected.
    #[test]
    fn a_read_of_a_value_never_written_is_rejected(
        seed: u64,
        clients in 1usize..10,
        operations in 1usize..120,
        keys in 1usize..4,
        unknown in 0u32..400,
        pick: Index,
    ) {
        let mut h = linearizable_history(seed, &config(clients, operations, keys, 3, unknown, 1_000));
        let candidates = reads(&h);
        prop_assume!(!candidates.is_empty());
        let i = candidates[pick.index(candidates.len())];
        let mod_revision = h.operations[i].observed_revision().max(1);
        h.operations[i].outcome = Outcome::Found { value: b"never written".to_vec(), mod_revision };
        match check(&h) {
            Err(CheckError::Violation(_)) => {}
            other => prop_assert!(false, "mutated read #{} not rejected: {:?}\n{:#?}", i, other, h),
        }
    }
}
