//! The nodes' own log lines during a replay, stamped with simulated time.

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::EnvFilter;

/// Simulated milliseconds since the simulation started (`-` outside a simulation).
struct SimTime;

impl FormatTime for SimTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        match madsim::time::TimeHandle::try_current() {
            Some(h) => {
                let ns = h.elapsed().as_nanos();
                write!(w, "{:>6}.{:06}ms", ns / 1_000_000, ns % 1_000_000)
            }
            None => write!(w, "-"),
        }
    }
}

/// Sends every log line of the simulated nodes to stderr, filtered by `RUST_LOG`
/// (default `info`), in the format of the trace's time column. Call once per process,
/// before the run.
pub fn install() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(SimTime)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}
