//! Latencies and errors of one load phase, and the phase as JSON. The node's
//! `--store-load` (store_load.rs) and `examples/bench_store.rs` (which includes this
//! file by path) both report through it, so our rows and etcd's are computed alike.

use serde_json::{json, Value};
use std::time::Duration;

/// Latencies (microseconds) of the requests answered, and the errors, of one phase.
#[derive(Default)]
pub(crate) struct Tally {
    micros: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    /// A request answered after `took`.
    pub(crate) fn ok(&mut self, took: Duration) {
        self.micros.push(took.as_micros() as u64);
    }

    /// A request failed; the first failure's text is kept.
    pub(crate) fn error(&mut self, e: impl ToString) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    /// Adds another client's tally (its first error counts only if this has none).
    pub(crate) fn merge(&mut self, other: Tally) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The phase as JSON: `ops` (answered), `secs` (`elapsed`), `ops_per_s`, latency
    /// `p50_ms`, `p99_ms` and `max_ms` (nearest rank; null with no answer), `errors`
    /// and `first_error`.
    pub(crate) fn report(mut self, elapsed: Duration) -> Value {
        self.micros.sort_unstable();
        let ms = |p: f64| -> Value {
            if self.micros.is_empty() {
                return Value::Null;
            }
            let i = ((p / 100.0) * (self.micros.len() - 1) as f64).round() as usize;
            json!(self.micros[i] as f64 / 1000.0)
        };
        let secs = elapsed.as_secs_f64();
        json!({
            "ops": self.micros.len(),
            "secs": (secs * 1000.0).round() / 1000.0,
            "ops_per_s": (self.micros.len() as f64 / secs.max(1e-9)).round(),
            "p50_ms": ms(50.0),
            "p99_ms": ms(99.0),
            "max_ms": ms(100.0),
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_nearest_rank_percentiles_and_the_first_error() {
        let mut a = Tally::default();
        for ms in 1..=100 {
            a.ok(Duration::from_millis(ms));
        }
        let mut b = Tally::default();
        b.error("refused");
        b.error("timed out");
        a.merge(b);
        let r = a.report(Duration::from_secs(2));
        assert_eq!(r["ops"], 100);
        assert_eq!(r["ops_per_s"], 50.0);
        assert_eq!(
            (r["p50_ms"].clone(), r["p99_ms"].clone()),
            (json!(51.0), json!(99.0))
        );
        assert_eq!(r["max_ms"], 100.0);
        assert_eq!(
            (r["errors"].clone(), r["first_error"].clone()),
            (json!(2), json!("refused"))
        );
        let empty = Tally::default().report(Duration::ZERO);
        assert!(empty["p50_ms"].is_null() && empty["ops"] == 0, "{empty}");
    }
}
