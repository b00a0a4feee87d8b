//! Leaving on SIGTERM or Ctrl-C, so that a rolling update is a graceful handover per
//! pod rather than a crash per pod.
//!
//! Kubernetes (and systemd, and most supervisors) ask a process to stop with SIGTERM
//! and kill it for good after a grace period. A node that simply dies makes the
//! others wait out an election timeout before a new primary is elected; a node that
//! leaves hands its leadership and its named roles over first (a few milliseconds).
//!
//! Two ways, both on [`Cluster`]:
//!
//! - [`Cluster::leave_on_shutdown_signal`]: one line after `start()`. On the first
//!   SIGTERM or SIGINT the node leaves, then the process exits with status
//!   128 + the signal number (143 or 130), as a shell reports a process ended by that
//!   signal. The exit is needed: once a handler is installed the signal no longer ends
//!   the process by itself. [`ClusterBuilder::leave_on_shutdown_signal`] does the same
//!   from the builder.
//! - [`Cluster::leave_on_signal`]: a future that waits for the signal, leaves and
//!   returns which signal came, for applications that run their own graceful
//!   shutdown afterwards (for example axum's `with_graceful_shutdown`). It does not
//!   exit.
//!
//! The leave itself is bounded by `Config::leave_timeout`, so it fits in a
//! termination grace period longer than that (Kubernetes' default is 30 s).
//!
//! [`ClusterBuilder::leave_on_shutdown_signal`]: crate::ClusterBuilder::leave_on_shutdown_signal

use crate::Cluster;

/// The signal that asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownSignal {
    /// SIGTERM: what Kubernetes, systemd and `kill` send.
    Terminate,
    /// SIGINT: Ctrl-C in a terminal.
    Interrupt,
}

impl ShutdownSignal {
    /// The exit status a shell reports for a process ended by this signal:
    /// 128 + its number (143 for SIGTERM, 130 for SIGINT).
    pub fn exit_code(self) -> i32 {
        match self {
            ShutdownSignal::Terminate => 128 + 15,
            ShutdownSignal::Interrupt => 128 + 2,
        }
    }
}

/// Waits for the first SIGTERM or SIGINT (Ctrl-C) after the call. Only SIGINT is
/// watched where SIGTERM does not exist (not Unix) or cannot be watched (its handler
/// could not be installed; the reason is logged).
pub async fn shutdown_signal() -> ShutdownSignal {
    #[cfg(all(unix, not(madsim)))]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                return tokio::select! {
                    _ = term.recv() => ShutdownSignal::Terminate,
                    _ = ctrl_c() => ShutdownSignal::Interrupt,
                };
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C will make the node leave")
            }
        }
    }
    ctrl_c().await
}

async fn ctrl_c() -> ShutdownSignal {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::warn!(error = %e, "cannot watch Ctrl-C; the node will not leave on it");
        std::future::pending::<()>().await;
    }
    ShutdownSignal::Interrupt
}

impl Cluster {
    /// Waits for SIGTERM or Ctrl-C, then leaves gracefully ([`Cluster::leave`]) and
    /// returns the signal. Does not end the process: run the rest of your shutdown
    /// after it, or hand it to your server's graceful shutdown:
    ///
    /// ```ignore
    /// let c = cluster.clone();
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async move { c.leave_on_signal().await; })
    ///     .await?;
    /// ```
    pub async fn leave_on_signal(&self) -> ShutdownSignal {
        let signal = shutdown_signal().await;
        tracing::info!(node = %self.id(), ?signal, "shutdown signal: leaving the cluster");
        self.leave().await;
        tracing::info!(node = %self.id(), "left the cluster");
        signal
    }

    /// The one-line graceful exit: spawns a task that, on the first SIGTERM or
    /// Ctrl-C, leaves gracefully and then ends the process with status 128 + the
    /// signal number (143 for SIGTERM, 130 for Ctrl-C). Call it once, right after
    /// `start()`. Abort the returned task to cancel it.
    ///
    /// Use [`leave_on_signal`](Self::leave_on_signal) instead if the application has
    /// its own shutdown to run after the leave: this one exits the process, without
    /// running destructors of other tasks.
    pub fn leave_on_shutdown_signal(&self) -> tokio::task::JoinHandle<()> {
        leave_all_on_shutdown_signal([self.clone()])
    }
}

/// [`Cluster::leave_on_shutdown_signal`] for a process that runs several nodes (a
/// demo, a test harness): on the first SIGTERM or Ctrl-C every node leaves, one after
/// the other, then the process exits with status 128 + the signal number.
pub fn leave_all_on_shutdown_signal(
    nodes: impl IntoIterator<Item = Cluster>,
) -> tokio::task::JoinHandle<()> {
    let nodes: Vec<Cluster> = nodes.into_iter().collect();
    tokio::spawn(async move {
        let signal = shutdown_signal().await;
        for node in &nodes {
            tracing::info!(node = %node.id(), ?signal, "shutdown signal: leaving the cluster");
            node.leave().await;
        }
        std::process::exit(signal.exit_code());
    })
}

#[cfg(test)]
mod tests {
    use super::ShutdownSignal;

    #[test]
    fn exit_codes_are_what_a_shell_reports_for_the_signal() {
        assert_eq!(ShutdownSignal::Terminate.exit_code(), 143);
        assert_eq!(ShutdownSignal::Interrupt.exit_code(), 130);
    }
}
