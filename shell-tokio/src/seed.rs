//! The API of the published cluster-mode 0.3, kept working on the new engine.
//!
//! Code written against 0.3 compiles after changing its imports from `cluster_mode::`
//! to `cluster_mode::seed::`:
//!
//! ```no_run
//! use std::sync::Arc;
//! use rust_cloud_discovery::DiscoveryClient;
//! use cluster_mode::seed::{start_cluster, Cluster, ClusterConfig};
//! # struct KubernetesDiscoverService;
//! # impl KubernetesDiscoverService {
//! #     async fn init(_: String, _: String) -> Result<Self, ()> { Ok(Self) }
//! # }
//! # #[async_trait::async_trait]
//! # impl rust_cloud_discovery::DiscoveryService for KubernetesDiscoverService {
//! #     async fn discover_instances(&self) -> Result<Vec<rust_cloud_discovery::ServiceInstance>, Box<dyn std::error::Error>> { Ok(vec![]) }
//! # }
//!
//! #[tokio::main]
//! async fn main() {
//!     let result = KubernetesDiscoverService::init("demo".to_string(), "default".to_string())
//!         .await;
//!     if let Ok(k8s) = result {
//!         let cluster = Arc::new(Cluster::default());
//!         let client = DiscoveryClient::new(k8s);
//!         let config = ClusterConfig::default();
//!         tokio::spawn(start_cluster(cluster.clone(), client, config));
//!         if cluster.is_primary().await { /* ... */ }
//!     }
//! }
//! ```
//!
//! Differences from 0.3, all for the better:
//! - no endpoints to write: [`start_cluster`] serves the protocol on its own port,
//!   [`ClusterConfig::listen_addr`] (default `0.0.0.0:7946`, or `CLUSTER_MODE_LISTEN`),
//!   and peers are reached at each discovered host on that port;
//! - the timing fields of [`ClusterConfig`] are ignored: the datacenter profile
//!   ([`crate::Config::datacenter`]) fails over in well under a second instead of the
//!   seed's 30-60 s; `min_node` and `update_interval` are honoured;
//! - on SIGTERM or Ctrl-C the node leaves gracefully, then the process exits with
//!   status 143 / 130 ([`ClusterConfig::leave_on_signal`], default on);
//! - `is_primary()` is true only while the primary's lease is valid;
//! - optionally, [`ClusterConfig::data_dir`] (or `CLUSTER_MODE_DATA_DIR`) keeps the
//!   node's identity across restarts.

use crate::{Config, Role};
use async_trait::async_trait;
use cluster_mode_discovery::{CloudDiscoveryBridge, CloudPortSelector, Discovery};
use rust_cloud_discovery::{DiscoveryClient, DiscoveryService, Port, ServiceInstance};
use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The seed's operating mode of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstanceMode {
    /// Not in a cluster yet.
    Inactive,
    /// The primary.
    Primary,
    /// A secondary.
    Secondary,
}

/// The seed's cluster handle. Create it with [`Cluster::default`], pass it to
/// [`start_cluster`], and query it; before the node has started every query answers
/// as an inactive node.
#[derive(Debug)]
pub struct Cluster {
    inner: OnceLock<crate::Cluster>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            inner: OnceLock::new(),
        }
    }
}

impl Cluster {
    /// Same as [`Cluster::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The new-style handle, once [`start_cluster`] has started the node.
    pub fn handle(&self) -> Option<&crate::Cluster> {
        self.inner.get()
    }

    /// The node's mode now.
    pub fn mode(&self) -> InstanceMode {
        match self.inner.get() {
            Some(c) if c.is_primary() => InstanceMode::Primary,
            Some(c) if c.role() == Role::Secondary => InstanceMode::Secondary,
            _ => InstanceMode::Inactive,
        }
    }

    /// The secondaries, if this node is primary (the set can be empty).
    pub async fn secondaries(&self) -> Option<Arc<HashSet<RestClusterNode>>> {
        let c = self.inner.get()?;
        if !c.is_primary() {
            return None;
        }
        Some(Arc::new(
            c.secondaries()
                .iter()
                .map(RestClusterNode::from_member)
                .collect(),
        ))
    }

    /// The primaries (at most one), if this node is a secondary.
    pub async fn primaries(&self) -> Option<HashSet<RestClusterNode>> {
        let c = self.inner.get()?;
        if c.role() != Role::Secondary {
            return None;
        }
        let status = c.status();
        let primary = status.primary?;
        let member = status
            .members
            .iter()
            .find(|m| m.id == primary.id)
            .cloned()
            .unwrap_or(crate::MemberStatus {
                id: primary.id,
                addr: primary.addr,
                name: None,
                voter: true,
            });
        Some(std::iter::once(RestClusterNode::from_member(&member)).collect())
    }

    /// Whether this node is primary (holding a valid lease now).
    pub async fn is_primary(&self) -> bool {
        self.mode() == InstanceMode::Primary
    }

    /// Whether this node is a secondary.
    pub async fn is_secondary(&self) -> bool {
        self.mode() == InstanceMode::Secondary
    }

    /// Whether this node is primary or secondary.
    pub async fn is_active(&self) -> bool {
        self.mode() != InstanceMode::Inactive
    }

    /// This node as a `ServiceInstance` (host and cluster port), once started.
    pub async fn get_service_instance(&self) -> Option<ServiceInstance> {
        let c = self.inner.get()?;
        let name = c
            .status()
            .members
            .into_iter()
            .find(|m| m.id == c.id())
            .and_then(|m| m.name);
        Some(instance_of(&format!("{:?}", c.id()), c.address(), name))
    }
}

fn instance_of(id: &str, addr: &str, name: Option<String>) -> ServiceInstance {
    let (host, port) = match addr.parse::<SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => (addr.to_string(), 0),
    };
    let mut meta = HashMap::new();
    if let Some(n) = name {
        meta.insert("name".to_string(), n);
    }
    ServiceInstance::new(
        Some(id.to_string()),
        None,
        Some(host),
        Some(vec![Port::new(
            Some("cluster".into()),
            u32::from(port),
            "TCP".into(),
            None,
        )]),
        false,
        Some(format!("http://{addr}")),
        meta,
        Some("http".into()),
    )
}

/// A member of the cluster, as the seed showed it.
#[derive(Debug, Clone)]
pub struct RestClusterNode {
    node_id: String,
    inner: ServiceInstance,
}

impl RestClusterNode {
    /// A node with this id and instance.
    pub fn new(node_id: String, instance: ServiceInstance) -> Self {
        RestClusterNode {
            node_id,
            inner: instance,
        }
    }

    fn from_member(m: &crate::MemberStatus) -> Self {
        let id = format!("{:?}", m.id);
        RestClusterNode {
            inner: instance_of(&id, m.addr.as_str(), m.name.clone()),
            node_id: id,
        }
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The instance (host and cluster port).
    pub fn service_instance(&self) -> &ServiceInstance {
        &self.inner
    }
}

impl PartialEq for RestClusterNode {
    fn eq(&self, other: &Self) -> bool {
        self.node_id == other.node_id
    }
}

impl Eq for RestClusterNode {}

impl Hash for RestClusterNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.node_id.hash(state);
    }
}

/// The seed's configuration, plus where to listen.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Ignored (every request has its own short timeout now).
    pub connection_timeout: u64,
    /// Ignored: the datacenter timing profile is used.
    pub election_timeout: u64,
    /// Interval between discovery calls, in milliseconds.
    pub update_interval: u64,
    /// Ignored: there is no cap on members; past 5 voters members join as non-voters.
    pub max_node: NonZeroUsize,
    /// How many nodes must see each other before the first primary is elected.
    pub min_node: NonZeroUsize,
    /// Where the cluster protocol listens (default `CLUSTER_MODE_LISTEN` or
    /// `0.0.0.0:7946`). Peers are reached at each discovered host on this port.
    pub listen_addr: SocketAddr,
    /// The `ip:port` peers reach this node at. Default: `CLUSTER_MODE_ADVERTISE`, else
    /// `POD_IP` with the listen port, else the listen address if it is not 0.0.0.0,
    /// else the discovered host that is an address of this machine.
    pub advertise_addr: Option<SocketAddr>,
    /// An optional shared secret (HMAC-SHA256 on every message).
    pub secret: Option<String>,
    /// Where the node keeps its id, term, vote and log across restarts (default:
    /// `CLUSTER_MODE_DATA_DIR`, else none). With it, a replica restarted with the same
    /// directory (a pod with its volume) is the same member; without it, every start
    /// is a new member. See [`crate::ClusterBuilder::data_dir`]. A damaged directory
    /// makes [`start_cluster`] log the error and return without starting.
    pub data_dir: Option<PathBuf>,
    /// Leave gracefully on SIGTERM or Ctrl-C, then end the process with status 143
    /// or 130 (default `true`; [`crate::Cluster::leave_on_shutdown_signal`]). 0.3 had
    /// no handler, so the signal killed the process and the others waited out an
    /// election; now a rolling update hands over instead. Set `false` if the
    /// application handles these signals itself (and then exits on its own).
    pub leave_on_signal: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        let listen_addr = std::env::var("CLUSTER_MODE_LISTEN")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7946)));
        ClusterConfig {
            connection_timeout: 10 * 1000,
            election_timeout: 30 * 1000,
            update_interval: 10 * 1000,
            max_node: NonZeroUsize::new(20).unwrap_or(NonZeroUsize::MIN),
            min_node: NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN),
            listen_addr,
            advertise_addr: None,
            secret: None,
            data_dir: std::env::var_os("CLUSTER_MODE_DATA_DIR")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            leave_on_signal: true,
        }
    }
}

struct ClientService<T>(DiscoveryClient<T>);

#[async_trait]
impl<T: DiscoveryService + Send + Sync> DiscoveryService for ClientService<T> {
    async fn discover_instances(&self) -> Result<Vec<ServiceInstance>, Box<dyn Error>> {
        self.0.get_instances().await
    }
}

/// Starts the node and runs until the process ends, as the seed's did (spawn it).
/// Errors are logged and end the future.
pub async fn start_cluster<T>(
    cluster: Arc<Cluster>,
    discovery_service: DiscoveryClient<T>,
    config: ClusterConfig,
) where
    T: DiscoveryService + Send + Sync + 'static,
{
    let port = config.listen_addr.port();
    let bridge = CloudDiscoveryBridge::new(ClientService(discovery_service))
        .with_port(CloudPortSelector::Fixed(port))
        .with_poll_interval(Duration::from_millis(config.update_interval.max(100)));
    let discovery: Arc<dyn Discovery> = Arc::new(bridge);
    let Some(advertise) = advertise_addr(&config, &discovery).await else {
        tracing::error!("cluster-mode: cannot tell this node's address; set ClusterConfig::advertise_addr or CLUSTER_MODE_ADVERTISE");
        return;
    };
    let mut b = crate::ClusterBuilder::new(discovery)
        .listen(config.listen_addr)
        .advertise(advertise.to_string())
        .config(Config::datacenter().with_min_nodes(config.min_node));
    if let Some(s) = &config.secret {
        b = b.secret(s);
    }
    if let Some(d) = &config.data_dir {
        b = b.data_dir(d.clone());
    }
    if config.leave_on_signal {
        b = b.leave_on_shutdown_signal();
    }
    match b.start().await {
        Ok(c) => {
            if cluster.inner.set(c).is_err() {
                tracing::error!("cluster-mode: start_cluster called twice on one Cluster");
                return;
            }
            std::future::pending::<()>().await;
        }
        Err(e) => tracing::error!(error = %e, "cluster-mode: cannot start"),
    }
}

async fn advertise_addr(
    config: &ClusterConfig,
    discovery: &Arc<dyn Discovery>,
) -> Option<SocketAddr> {
    if let Some(a) = config.advertise_addr {
        return Some(a);
    }
    let port = config.listen_addr.port();
    if let Some(a) = std::env::var("CLUSTER_MODE_ADVERTISE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return Some(a);
    }
    if let Some(ip) = std::env::var("POD_IP")
        .ok()
        .and_then(|s| s.parse::<IpAddr>().ok())
    {
        return Some(SocketAddr::new(ip, port));
    }
    if !config.listen_addr.ip().is_unspecified() {
        return Some(config.listen_addr);
    }
    // The discovered host that is an address of this machine: binding to it works.
    for _ in 0..30 {
        if let Ok(list) = discovery.snapshot().await {
            for i in list {
                if std::net::UdpSocket::bind(SocketAddr::new(i.addr.ip(), 0)).is_ok() {
                    return Some(SocketAddr::new(i.addr.ip(), port));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(
            config.update_interval.clamp(100, 2000),
        ))
        .await;
    }
    None
}

/// The seed's summary of a node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterInfo {
    /// The node id (hex), or empty before the node started.
    pub node_id: String,
    /// This node as a `ServiceInstance`, once started.
    pub instance: Option<ServiceInstance>,
}

/// The seed's `get_cluster_info`: this node's id and instance.
pub async fn get_cluster_info(cluster: Arc<Cluster>) -> ClusterInfo {
    ClusterInfo {
        node_id: cluster
            .handle()
            .map(|c| format!("{:?}", c.id()))
            .unwrap_or_default(),
        instance: cluster.get_service_instance().await,
    }
}
