//! Discovery sources for cluster-mode.
//!
//! A discovery source answers one question: *which instances of my service exist right
//! now?* The answer is a [`Vec<Instance>`] snapshot, or a typed [`DiscoveryError`]. The
//! cluster core treats every snapshot as a **hint** (design property P3): a discovery
//! error, or an empty answer after a non-empty one, removes nobody by itself. For that to
//! work a source must never turn a failure into an empty list, and no source in this
//! crate does.
//!
//! Sources:
//!
//! | source | feature | pull ([`Discovery::snapshot`]) | push ([`Discovery::watch`]) |
//! |---|---|---|---|
//! | [`StaticDiscovery`] | always | yes | no |
//! | `DnsDiscovery` (A/AAAA + port, or SRV) | `dns` | yes, TTL-cached | no |
//! | `KubernetesDiscovery` (EndpointSlices) | `kubernetes` | yes, from the watch cache | yes |
//! | `KubernetesPodsDiscovery` (Pods; absence proves death) | `kubernetes` | yes, from the watch cache | yes |
//! | [`CloudDiscoveryBridge`] (any `rust_cloud_discovery::DiscoveryService`) | always | yes | no |
//!
//! [`AsDiscoveryService`] goes the other way: it exposes any [`Discovery`] as a
//! `rust_cloud_discovery::DiscoveryService`.
//!
//! Every snapshot is sorted by address and holds at most one [`Instance`] per address
//! (see [`normalize`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bridge;
mod error;
mod instance;
mod static_source;
mod stream;

#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "kubernetes")]
mod kubernetes;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use bridge::{AsDiscoveryService, CloudDiscoveryBridge, CloudPortSelector};
pub use error::DiscoveryError;
pub use instance::{normalize, Instance};
pub use static_source::StaticDiscovery;
pub use stream::{SnapshotSender, SnapshotStream};

#[cfg(feature = "dns")]
pub use dns::{DnsConfig, DnsDiscovery, DnsQuery, IpFamily};
/// The kube-rs crate the Kubernetes source is built on, re-exported so an application
/// (or a test) can build a `kube::Client` of exactly the version
/// [`KubernetesDiscovery::new`] takes.
#[cfg(feature = "kubernetes")]
pub use kube;
#[cfg(feature = "kubernetes")]
pub use kubernetes::{
    KubernetesConfig, KubernetesDiscovery, KubernetesPodsConfig, KubernetesPodsDiscovery,
    PortSelector,
};

/// The result of one discovery round: every instance the source lists, or why it could
/// not say.
pub type DiscoveryResult = Result<Vec<Instance>, DiscoveryError>;

/// A boxed, `Send` future, as returned by [`Discovery::snapshot`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The poll interval suggested by sources that do not override
/// [`Discovery::poll_interval`]: 5 seconds.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// A source of peer instances.
///
/// The trait is object safe: a shell holds an `Arc<dyn Discovery>` and either polls
/// [`snapshot`](Discovery::snapshot) every [`poll_interval`](Discovery::poll_interval), or,
/// when [`watch`](Discovery::watch) returns a stream, takes snapshots as they are pushed
/// (and may still poll as a fallback).
///
/// Contract for implementors:
/// * a failure is an `Err`, never an empty `Ok`; an `Ok(vec![])` means the source
///   positively answered "no instances";
/// * snapshots are complete (not diffs), sorted, one entry per address ([`normalize`]);
/// * `snapshot` must not panic on any input it receives from the backend.
pub trait Discovery: Send + Sync {
    /// Returns the current list of instances, or a typed error.
    ///
    /// Sources may answer from a cache (DNS honours record TTLs; Kubernetes answers from
    /// its watch), so calling this often is cheap.
    fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult>;

    /// A push stream of snapshots, for sources that can push (Kubernetes).
    ///
    /// Returns `None` for pull-only sources; then the caller polls
    /// [`snapshot`](Discovery::snapshot). Each call returns an independent stream that
    /// first yields the current state (once one is known), then every change. The
    /// stream keeps only the latest value: a slow reader skips intermediate snapshots
    /// but never misses the newest one.
    fn watch(&self) -> Option<SnapshotStream> {
        None
    }

    /// How often a caller should poll [`snapshot`](Discovery::snapshot) when it does not
    /// use [`watch`](Discovery::watch) (or as a safety net when it does).
    fn poll_interval(&self) -> Duration {
        DEFAULT_POLL_INTERVAL
    }
}

impl<D: Discovery + ?Sized> Discovery for Arc<D> {
    fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult> {
        (**self).snapshot()
    }
    fn watch(&self) -> Option<SnapshotStream> {
        (**self).watch()
    }
    fn poll_interval(&self) -> Duration {
        (**self).poll_interval()
    }
}

impl<D: Discovery + ?Sized> Discovery for Box<D> {
    fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult> {
        (**self).snapshot()
    }
    fn watch(&self) -> Option<SnapshotStream> {
        (**self).watch()
    }
    fn poll_interval(&self) -> Duration {
        (**self).poll_interval()
    }
}
