//! Kubernetes discovery: the EndpointSlices (`discovery.k8s.io/v1`) of a Service
//! ([`KubernetesDiscovery`]), or the Pods matching a label selector
//! ([`KubernetesPodsDiscovery`]), each listed then watched.

mod list_watch;
mod pods;

pub use pods::{KubernetesPodsConfig, KubernetesPodsDiscovery};

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};

use crate::{BoxFuture, Discovery, DiscoveryError, DiscoveryResult, Instance, SnapshotStream};
use list_watch::{Reflected, Timing};

/// The label every EndpointSlice of a Service carries.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Which port of the listed objects is the cluster port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortSelector {
    /// By name. For [`KubernetesDiscovery`]: the Service port with this name
    /// (`ports[].name` of the Service); slices without such a port contribute nothing.
    /// For [`KubernetesPodsDiscovery`]: the container port with this name
    /// (`spec.containers[].ports[].name`); pods without one are not listed. Either way
    /// with a `warn` log line.
    Name(String),
    /// This port number, whatever the objects list (headless Services without ports
    /// have slices without ports; pods need not declare their ports).
    Number(u16),
}

impl PortSelector {
    fn validate(&self, field: &str) -> Result<(), DiscoveryError> {
        match self {
            PortSelector::Number(0) => Err(DiscoveryError::invalid(field, "port 0")),
            PortSelector::Name(n) if n.is_empty() => {
                Err(DiscoveryError::invalid(field, "empty port name"))
            }
            _ => Ok(()),
        }
    }
}

/// Configuration of a [`KubernetesDiscovery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// The namespace of the Service (in a pod: the downward API's
    /// `metadata.namespace`, see the README).
    pub namespace: String,
    /// The Service name: slices are selected by `kubernetes.io/service-name=<service>`.
    pub service: String,
    /// The cluster port.
    pub port: PortSelector,
    /// List endpoints that are not ready too (with `ready: false`). Default `false`:
    /// only ready endpoints are listed. Terminating endpoints are never listed.
    pub include_not_ready: bool,
    /// How long [`Discovery::snapshot`] waits for the first list before it fails with
    /// [`DiscoveryError::Timeout`]. Default 10 s.
    pub first_snapshot_timeout: Duration,
    /// First delay before retrying a failed list; doubled on each failure. Default 200 ms.
    pub retry_min: Duration,
    /// Largest retry delay. Default 30 s.
    pub retry_max: Duration,
    /// Server-side timeout of one watch request; the watch is then resumed from the last
    /// resourceVersion without a relist. A watch still open 10 s after it is taken for a
    /// hung connection and the slices are relisted. Default 290 s (at most 290 s).
    pub watch_timeout: Duration,
}

impl KubernetesConfig {
    /// The slices of Service `service` in `namespace`, cluster port `port`.
    pub fn new(
        namespace: impl Into<String>,
        service: impl Into<String>,
        port: PortSelector,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            service: service.into(),
            port,
            include_not_ready: false,
            first_snapshot_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(290),
        }
    }

    /// Sets the retry delays of failed lists.
    #[must_use]
    pub fn with_retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max;
        self
    }

    /// Lists not-ready endpoints too, with `ready: false`.
    #[must_use]
    pub fn with_not_ready(mut self, include: bool) -> Self {
        self.include_not_ready = include;
        self
    }

    fn validate(&self) -> Result<(), DiscoveryError> {
        if self.namespace.trim().is_empty() {
            return Err(DiscoveryError::invalid("kubernetes.namespace", "empty"));
        }
        if self.service.trim().is_empty() {
            return Err(DiscoveryError::invalid("kubernetes.service", "empty"));
        }
        self.port.validate("kubernetes.port")?;
        self.timing().validate("kubernetes")
    }

    fn timing(&self) -> Timing {
        Timing {
            retry_min: self.retry_min,
            retry_max: self.retry_max,
            watch_timeout: self.watch_timeout,
        }
    }
}

/// Discovery through Kubernetes EndpointSlices (feature `kubernetes`).
///
/// A background task lists the Service's slices, then watches them (with bookmarks),
/// and keeps the union of their endpoints: ready ones only by default, terminating ones
/// never. Each change is pushed to [`Discovery::watch`] streams as a complete snapshot;
/// [`Discovery::snapshot`] answers from the same state. A watch `ERROR` event (`410
/// Gone` when the resourceVersion is too old, or any other) and a watch request or
/// stream that fails lead to a fresh list. A watch that ends (server timeout, or a
/// connection dropped mid-stream, which kube reports as an end) is resumed from the last
/// resourceVersion seen (bookmarks included): the API server then replays what was
/// missed, or answers 410, which relists. A failed list (401/403, 500, connection
/// refused, no answer within 30 s...) is published as a typed error, never as an empty
/// snapshot, and retried with exponential backoff. A watch still open 10 s past its
/// `watch_timeout` (a hung connection) is dropped and the slices relisted.
///
/// Its answers list ready endpoints: a pod that is not ready or terminating may still
/// run while it is missing from them. So absence from these answers proves nothing;
/// leave `Config::discovery_proves_absence` off with this source, or use
/// [`KubernetesPodsDiscovery`] for automatic recovery (docs/PROTOCOL.md, P11).
///
/// The task stops when this value is dropped.
#[derive(Debug)]
pub struct KubernetesDiscovery {
    inner: Reflected,
    config: KubernetesConfig,
}

impl KubernetesDiscovery {
    /// Starts discovery with `client`. Must be called inside a tokio runtime.
    pub fn new(client: Client, config: KubernetesConfig) -> Result<Self, DiscoveryError> {
        config.validate()?;
        let api: Api<EndpointSlice> = Api::namespaced(client, &config.namespace);
        let selector = format!("{SERVICE_NAME_LABEL}={}", config.service);
        let what = format!("EndpointSlices of {}/{}", config.namespace, config.service);
        let span = tracing::info_span!(
            "k8s_discovery",
            namespace = %config.namespace,
            service = %config.service
        );
        let slice_config = config.clone();
        let inner = Reflected::spawn(
            api,
            selector,
            what,
            config.timing(),
            config.first_snapshot_timeout,
            move |slice: &EndpointSlice| slice_instances(slice, &slice_config),
            span,
        )?;
        Ok(Self { inner, config })
    }

    /// Starts discovery for `service` from inside a pod: the client comes from the
    /// in-cluster (or kubeconfig) environment, the namespace from `POD_NAMESPACE` if
    /// set, else from that environment.
    pub async fn from_env(
        service: impl Into<String>,
        port: PortSelector,
    ) -> Result<Self, DiscoveryError> {
        let (client, namespace) = list_watch::client_from_env().await?;
        Self::new(client, KubernetesConfig::new(namespace, service, port))
    }

    /// The configuration.
    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }
}

impl Discovery for KubernetesDiscovery {
    fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult> {
        self.inner.snapshot()
    }

    fn watch(&self) -> Option<SnapshotStream> {
        Some(self.inner.watch())
    }

    /// 30 s: only a safety net, changes are pushed.
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// The listed instances of one slice. Never panics on any slice content.
fn slice_instances(slice: &EndpointSlice, config: &KubernetesConfig) -> Vec<Instance> {
    let name = list_watch::key(slice);
    if slice.address_type == "FQDN" {
        tracing::warn!(slice = %name, "FQDN EndpointSlice ignored (only IPv4/IPv6 are supported)");
        return Vec::new();
    }
    let port = match &config.port {
        PortSelector::Number(n) => *n,
        PortSelector::Name(wanted) => {
            let found = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(wanted.as_str()))
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0);
            match found {
                Some(p) => p,
                None => {
                    if slice.endpoints.as_ref().is_some_and(|e| !e.is_empty()) {
                        tracing::warn!(slice = %name, port = %wanted, "EndpointSlice has no port with that name; its endpoints are ignored");
                    }
                    return Vec::new();
                }
            }
        }
    };
    let mut out = Vec::new();
    for endpoint in slice.endpoints.iter().flatten() {
        let conditions = endpoint.conditions.as_ref();
        // Kubernetes: a nil `ready` means ready, a nil `terminating` means not terminating.
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        if terminating || (!ready && !config.include_not_ready) {
            continue;
        }
        let Some(ip) = endpoint
            .addresses
            .iter()
            .find_map(|a| a.trim().parse::<IpAddr>().ok())
        else {
            tracing::warn!(slice = %name, addresses = ?endpoint.addresses, "endpoint without a usable IP address ignored");
            continue;
        };
        let mut instance = Instance::new(SocketAddr::new(ip, port))
            .with_ready(ready)
            .with_meta("k8s.namespace", &config.namespace)
            .with_meta("k8s.slice", &name);
        if let Some(target) = &endpoint.target_ref {
            if let Some(pod) = &target.name {
                instance = instance.with_name(pod.clone()).with_meta("k8s.pod", pod);
            }
            if let Some(uid) = &target.uid {
                instance = instance.with_meta("k8s.uid", uid);
            }
        }
        if let Some(hostname) = &endpoint.hostname {
            if instance.name.is_none() {
                instance.name = Some(hostname.clone());
            }
            instance = instance.with_meta("k8s.hostname", hostname);
        }
        if let Some(node) = &endpoint.node_name {
            instance = instance.with_meta("k8s.node", node);
        }
        if let Some(zone) = &endpoint.zone {
            instance = instance.with_meta("k8s.zone", zone);
        }
        out.push(instance);
    }
    out
}
