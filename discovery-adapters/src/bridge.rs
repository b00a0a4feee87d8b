//! Both directions between this crate's [`Discovery`] and
//! [`rust_cloud_discovery::DiscoveryService`].

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use rust_cloud_discovery::{DiscoveryService, Port, ServiceInstance};

use crate::{
    normalize, BoxFuture, Discovery, DiscoveryError, DiscoveryResult, Instance,
    DEFAULT_POLL_INTERVAL,
};

/// Which port of a `rust_cloud_discovery::ServiceInstance` is the cluster port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CloudPortSelector {
    /// The first port the instance lists.
    #[default]
    First,
    /// The port with this name; instances without it are skipped.
    Named(String),
    /// Always this port number, whatever the instance lists (the host is still taken
    /// from the instance).
    Fixed(u16),
}

/// Uses any `rust_cloud_discovery::DiscoveryService` (for example an existing
/// `cloud-discovery-kubernetes` setup) as a [`Discovery`] source.
///
/// Each snapshot calls `discover_instances` once. A service error becomes
/// [`DiscoveryError::Backend`] with the service's message (the non-`Send`
/// `Box<dyn Error>` is turned into a `String` before any further await). Instances
/// without an `instance_id`, without a host that parses as an IP address, or without a
/// usable port are skipped with a `warn` log line; they are never guessed.
#[derive(Debug)]
pub struct CloudDiscoveryBridge<T> {
    service: T,
    port: CloudPortSelector,
    poll_interval: Duration,
}

impl<T: DiscoveryService> CloudDiscoveryBridge<T> {
    /// Bridges `service`, taking each instance's first port.
    pub fn new(service: T) -> Self {
        Self {
            service,
            port: CloudPortSelector::First,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// Chooses which port of each instance is the cluster port.
    #[must_use]
    pub fn with_port(mut self, port: CloudPortSelector) -> Self {
        self.port = port;
        self
    }

    /// Sets the poll interval suggested to callers (default 5 s).
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The bridged service.
    pub fn inner(&self) -> &T {
        &self.service
    }

    fn convert(&self, si: &ServiceInstance) -> Option<Instance> {
        let Some(id) = si.instance_id().clone() else {
            tracing::warn!(host = ?si.host(), "rust-cloud-discovery instance without instance_id skipped");
            return None;
        };
        let ip = match si
            .host()
            .as_deref()
            .map(str::trim)
            .map(str::parse::<IpAddr>)
        {
            Some(Ok(ip)) => ip,
            Some(Err(_)) => {
                tracing::warn!(instance = %id, host = ?si.host(), "rust-cloud-discovery instance skipped: host is not an IP address");
                return None;
            }
            None => {
                tracing::warn!(instance = %id, "rust-cloud-discovery instance skipped: no host");
                return None;
            }
        };
        let ports: &[Port] = si.get_ports().as_deref().unwrap_or(&[]);
        let port = match &self.port {
            CloudPortSelector::Fixed(p) => u32::from(*p),
            CloudPortSelector::First => match ports.first() {
                Some(p) => p.get_port(),
                None => {
                    tracing::warn!(instance = %id, "rust-cloud-discovery instance skipped: no port");
                    return None;
                }
            },
            CloudPortSelector::Named(name) => {
                match ports
                    .iter()
                    .find(|p| p.get_name().as_deref() == Some(name.as_str()))
                {
                    Some(p) => p.get_port(),
                    None => {
                        tracing::warn!(instance = %id, port = %name, "rust-cloud-discovery instance skipped: no port with that name");
                        return None;
                    }
                }
            }
        };
        let port = match u16::try_from(port) {
            Ok(p) if p != 0 => p,
            _ => {
                tracing::warn!(instance = %id, port, "rust-cloud-discovery instance skipped: port out of range");
                return None;
            }
        };
        let mut metadata: BTreeMap<String, String> = si
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(service_id) = si.service_id() {
            metadata.insert("cloud.service_id".into(), service_id.clone());
        }
        if let Some(scheme) = si.scheme() {
            metadata.insert("cloud.scheme".into(), scheme.clone());
        }
        Some(Instance {
            addr: SocketAddr::new(ip, port),
            name: Some(id),
            metadata,
            ready: true,
        })
    }
}

impl<T> Discovery for CloudDiscoveryBridge<T>
where
    T: DiscoveryService + Send + Sync,
{
    fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult> {
        Box::pin(async move {
            // The service's error is a non-Send Box<dyn Error>: make it a String right
            // here, in the same statement as the await, so it never lives across one.
            let listed = self
                .service
                .discover_instances()
                .await
                .map_err(|e| e.to_string());
            match listed {
                Ok(list) => Ok(normalize(
                    list.iter().filter_map(|si| self.convert(si)).collect(),
                )),
                Err(message) => {
                    tracing::warn!(error = %message, "rust-cloud-discovery service failed");
                    Err(DiscoveryError::Backend(message))
                }
            }
        })
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

/// Exposes any [`Discovery`] as a `rust_cloud_discovery::DiscoveryService`, for code
/// written against that crate (such as the seed's `DiscoveryClient`).
///
/// Only ready instances are returned. Each becomes a `ServiceInstance` with
/// `instance_id` = the instance's name (or its address when it has none), `host` = the
/// IP, one `TCP` port, and the metadata. Errors are returned as the
/// [`DiscoveryError`] itself (boxed), never as an empty list.
#[derive(Debug, Clone)]
pub struct AsDiscoveryService<D> {
    inner: D,
    service_id: Option<String>,
}

impl<D: Discovery> AsDiscoveryService<D> {
    /// Wraps `inner`.
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            service_id: None,
        }
    }

    /// Sets the `service_id` reported on every instance.
    #[must_use]
    pub fn with_service_id(mut self, service_id: impl Into<String>) -> Self {
        self.service_id = Some(service_id.into());
        self
    }

    /// The wrapped source.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

#[async_trait]
impl<D: Discovery> DiscoveryService for AsDiscoveryService<D> {
    async fn discover_instances(&self) -> Result<Vec<ServiceInstance>, Box<dyn Error>> {
        let snapshot = self.inner.snapshot().await?;
        Ok(snapshot
            .into_iter()
            .filter(|i| i.ready)
            .map(|i| {
                let metadata: HashMap<String, String> = i.metadata.into_iter().collect();
                ServiceInstance::new(
                    Some(i.name.unwrap_or_else(|| i.addr.to_string())),
                    self.service_id.clone(),
                    Some(i.addr.ip().to_string()),
                    Some(vec![Port::new(
                        None,
                        u32::from(i.addr.port()),
                        "TCP".to_string(),
                        None,
                    )]),
                    false,
                    None,
                    metadata,
                    None,
                )
            })
            .collect())
    }
}
