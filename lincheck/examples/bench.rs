//! Times the checker on a large generated history: 64 clients, 20,000 operations
//! over 50 keys, 10% unknown outcomes (half of those writes took effect).
//!
//! ```text
//! cargo run --release -p cluster-mode-lincheck --example bench [seeds] [values] [keys]
//! ```
//!
//! `values` (default 1,000) is how many distinct values writes draw from: fewer
//! values make unknown-outcome writes harder to tell apart. `keys` (default 50):
//! fewer keys mean more operations on one key overlapping in time.
//!
//! For each seed it prints the check time of the linearizable history, and of the
//! same history with one read changed to a value never written (which must be
//! rejected).

use std::time::Instant;

use cluster_mode_lincheck::synthetic::{linearizable_history, Config};
use cluster_mode_lincheck::{check, Outcome};

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let config = Config {
        clients: 64,
        operations: 20_000,
        keys: std::env::args()
            .nth(3)
            .and_then(|s| s.parse().ok())
            .unwrap_or(50),
        values: std::env::args()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000),
        unknown_permille: 100,
        failed_permille: 20,
        max_duration: 2_000_000,
        max_think: 500_000,
    };
    println!("{config:?}");
    let mut worst = 0.0f64;
    for seed in 0..seeds {
        let mut history = linearizable_history(seed, &config);
        let started = Instant::now();
        let report = match check(&history) {
            Ok(report) => report,
            Err(e) => panic!("seed {seed}: a generated history was rejected: {e}"),
        };
        let pass = started.elapsed().as_secs_f64();
        // Change the last read to a value never written.
        let read = (0..history.operations.len())
            .rev()
            .find(|&i| matches!(history.operations[i].outcome, Outcome::Found { .. }))
            .expect("a read");
        let mod_revision = history.operations[read].observed_revision();
        history.operations[read].outcome = Outcome::Found {
            value: b"never written".to_vec(),
            mod_revision,
        };
        let started = Instant::now();
        let verdict = check(&history);
        let fail = started.elapsed().as_secs_f64();
        let violation = verdict
            .as_ref()
            .err()
            .and_then(|e| e.violation())
            .unwrap_or_else(|| {
                panic!("seed {seed}: the mutated history was not rejected: {verdict:?}")
            });
        worst = worst.max(pass).max(fail);
        println!(
            "seed {seed}: accepted in {:.1} ms ({} ops, {} unknown writes, {} keys, {} states, max {} per key); \
             mutated read rejected in {:.1} ms, witness of {} operations",
            pass * 1e3,
            report.operations,
            report.unknown_writes,
            report.keys,
            report.states,
            report.max_key_states,
            fail * 1e3,
            violation.operations.len(),
        );
    }
    println!("worst: {:.1} ms", worst * 1e3);
}
