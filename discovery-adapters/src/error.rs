//! The typed discovery error.

/// Why a discovery source could not produce a snapshot.
///
/// A source returns one of these instead of an empty list whenever it does not know the
/// answer; callers (the cluster core) then keep the member list they had (P3). Every
/// variant carries enough context to say *what* failed in a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The name does not exist (DNS NXDOMAIN).
    #[error("{name}: name does not exist (NXDOMAIN)")]
    NotFound {
        /// The name that was looked up.
        name: String,
    },
    /// The name exists but has no record of the requested type (DNS NOERROR, no data).
    #[error("{name}: no {record_type} records")]
    NoRecords {
        /// The name that was looked up.
        name: String,
        /// The record type that was asked for (`A`, `AAAA`, `SRV`...).
        record_type: String,
    },
    /// The backend did not answer in time.
    #[error("{target}: timed out")]
    Timeout {
        /// What was being asked (a DNS name, an API URL, "first snapshot"...).
        target: String,
    },
    /// The server answered with a failure (DNS SERVFAIL or REFUSED, ...).
    #[error("{target}: server failure: {detail}")]
    ServerFailure {
        /// What was being asked.
        target: String,
        /// The server's response code or message.
        detail: String,
    },
    /// The backend could not be reached (connection refused, reset, no route...).
    #[error("{target}: connection failed: {detail}")]
    Connection {
        /// What was being contacted.
        target: String,
        /// The transport error.
        detail: String,
    },
    /// The API refused our credentials (HTTP 401) or our permissions (HTTP 403).
    /// For Kubernetes: check the ServiceAccount and its Role (list, watch on
    /// `endpointslices`).
    #[error("unauthorized (HTTP {status}): {message}")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The API answered with another error status.
    #[error("API error (HTTP {status}, {reason}): {message}")]
    Api {
        /// The HTTP status code.
        status: u16,
        /// The machine-readable reason (Kubernetes `Status.reason`), may be empty.
        reason: String,
        /// The server's message.
        message: String,
    },
    /// The backend answered something we could not understand.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// Any other backend failure, with the backend's own message (for example the error
    /// returned by a bridged `rust_cloud_discovery::DiscoveryService`).
    #[error("discovery backend error: {0}")]
    Backend(String),
    /// The source was configured wrongly; retrying will not help.
    #[error("invalid discovery configuration: {field}: {reason}")]
    InvalidConfig {
        /// The configuration field or entry at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The source's background task has stopped; it will produce no further snapshot.
    #[error("discovery source closed")]
    Closed,
}

impl DiscoveryError {
    /// Whether retrying later may succeed. `InvalidConfig` and `Closed` are permanent;
    /// `Unauthorized` may be fixed by an operator (RBAC) without a restart, so it counts
    /// as transient.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::InvalidConfig { .. } | Self::Closed)
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
