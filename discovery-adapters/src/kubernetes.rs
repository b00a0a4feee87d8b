//! Kubernetes discovery: the EndpointSlices (`discovery.k8s.io/v1`) of a Service,
//! listed then watched.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::{
    normalize, BoxFuture, Discovery, DiscoveryError, DiscoveryResult, Instance, SnapshotSender,
    SnapshotStream,
};

/// The label every EndpointSlice of a Service carries.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Which port of the EndpointSlices is the cluster port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortSelector {
    /// The Service port with this name (`ports[].name` of the Service); slices without
    /// such a port contribute nothing (with a `warn` log line).
    Name(String),
    /// This port number, whatever the slices list (headless Services without ports
    /// have slices without ports).
    Number(u16),
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
    /// resourceVersion without a relist. Default 290 s.
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
        match &self.port {
            PortSelector::Number(0) => {
                return Err(DiscoveryError::invalid("kubernetes.port", "port 0"))
            }
            PortSelector::Name(n) if n.is_empty() => {
                return Err(DiscoveryError::invalid(
                    "kubernetes.port",
                    "empty port name",
                ))
            }
            _ => {}
        }
        if self.retry_min.is_zero() || self.retry_min > self.retry_max {
            return Err(DiscoveryError::invalid(
                "kubernetes.retry_min",
                "must be > 0 and <= retry_max",
            ));
        }
        if self.watch_timeout < Duration::from_secs(1) {
            return Err(DiscoveryError::invalid(
                "kubernetes.watch_timeout",
                "below 1 s",
            ));
        }
        Ok(())
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
/// refused...) is published as a typed error, never as an empty snapshot, and retried
/// with exponential backoff.
///
/// The task stops when this value is dropped.
#[derive(Debug)]
pub struct KubernetesDiscovery {
    sender: SnapshotSender,
    task: AbortHandle,
    config: KubernetesConfig,
}

impl Drop for KubernetesDiscovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KubernetesDiscovery {
    /// Starts discovery with `client`. Must be called inside a tokio runtime.
    pub fn new(client: Client, config: KubernetesConfig) -> Result<Self, DiscoveryError> {
        config.validate()?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            DiscoveryError::invalid("runtime", "KubernetesDiscovery::new needs a tokio runtime")
        })?;
        let sender = SnapshotSender::new();
        let api: Api<EndpointSlice> = Api::namespaced(client, &config.namespace);
        let task = handle
            .spawn(
                run(api, config.clone(), sender.clone()).instrument(tracing::info_span!(
                    "k8s_discovery",
                    namespace = %config.namespace,
                    service = %config.service
                )),
            )
            .abort_handle();
        Ok(Self {
            sender,
            task,
            config,
        })
    }

    /// Starts discovery for `service` from inside a pod: the client comes from the
    /// in-cluster (or kubeconfig) environment, the namespace from `POD_NAMESPACE` if
    /// set, else from that environment.
    pub async fn from_env(
        service: impl Into<String>,
        port: PortSelector,
    ) -> Result<Self, DiscoveryError> {
        let kube_config = kube::Config::infer()
            .await
            .map_err(|e| DiscoveryError::invalid("kubernetes.config", e.to_string()))?;
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|ns| !ns.trim().is_empty())
            .unwrap_or_else(|| kube_config.default_namespace.clone());
        let client = Client::try_from(kube_config)
            .map_err(|e| DiscoveryError::invalid("kubernetes.client", e.to_string()))?;
        Self::new(client, KubernetesConfig::new(namespace, service, port))
    }

    /// The configuration.
    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }
}

impl Discovery for KubernetesDiscovery {
    fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult> {
        Box::pin(async move {
            let mut stream = self.sender.subscribe();
            match tokio::time::timeout(self.config.first_snapshot_timeout, stream.next()).await {
                Ok(Some(result)) => result,
                Ok(None) => Err(DiscoveryError::Closed),
                Err(_) => Err(DiscoveryError::Timeout {
                    target: format!(
                        "first EndpointSlice list of {}/{}",
                        self.config.namespace, self.config.service
                    ),
                }),
            }
        })
    }

    fn watch(&self) -> Option<SnapshotStream> {
        Some(self.sender.subscribe())
    }

    /// 30 s: only a safety net, changes are pushed.
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// The list-then-watch loop. Never returns; aborted when the discovery is dropped.
async fn run(api: Api<EndpointSlice>, config: KubernetesConfig, sender: SnapshotSender) {
    let selector = format!("{SERVICE_NAME_LABEL}={}", config.service);
    let target = format!("EndpointSlices of {}/{}", config.namespace, config.service);
    let mut delay = config.retry_min;
    loop {
        // LIST: the complete state, replacing whatever we had.
        let list = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            Err(e) => {
                let error = map_kube_error(&target, e);
                tracing::warn!(error = %error, retry_in = ?delay, "EndpointSlice list failed");
                sender.publish(Err(error));
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(config.retry_max);
                continue;
            }
        };
        delay = config.retry_min;
        let mut slices: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for slice in &list.items {
            slices.insert(slice_key(slice), slice_instances(slice, &config));
        }
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        tracing::debug!(slices = slices.len(), %version, "EndpointSlices listed");
        sender.publish(Ok(union(&slices)));

        // WATCH from the list's resourceVersion until an error asks for a relist.
        let mut idle_rewatch = config.retry_min;
        'watch: loop {
            let params = WatchParams::default()
                .labels(&selector)
                .timeout(u32::try_from(config.watch_timeout.as_secs()).unwrap_or(290));
            let stream = match api.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(e) => {
                    let error = map_kube_error(&target, e);
                    tracing::warn!(error = %error, "EndpointSlice watch failed to start; relisting");
                    tokio::time::sleep(config.retry_min).await;
                    break 'watch;
                }
            };
            let mut stream = pin!(stream);
            let mut events = 0u64;
            while let Some(event) = stream.next().await {
                events += 1;
                match event {
                    Ok(WatchEvent::Added(slice)) | Ok(WatchEvent::Modified(slice)) => {
                        if let Some(v) = &slice.metadata.resource_version {
                            version.clone_from(v);
                        }
                        slices.insert(slice_key(&slice), slice_instances(&slice, &config));
                        sender.publish(Ok(union(&slices)));
                    }
                    Ok(WatchEvent::Deleted(slice)) => {
                        if let Some(v) = &slice.metadata.resource_version {
                            version.clone_from(v);
                        }
                        slices.remove(&slice_key(&slice));
                        sender.publish(Ok(union(&slices)));
                    }
                    Ok(WatchEvent::Bookmark(bookmark)) => {
                        version = bookmark.metadata.resource_version;
                    }
                    Ok(WatchEvent::Error(status)) => {
                        if status.code == 410 {
                            tracing::debug!("watch resourceVersion expired (410 Gone); relisting");
                        } else {
                            tracing::warn!(code = status.code, message = %status.message, "watch error event; relisting");
                            tokio::time::sleep(config.retry_min).await;
                        }
                        break 'watch;
                    }
                    Err(e) => {
                        let error = map_kube_error(&target, e);
                        tracing::warn!(error = %error, "watch stream broke; relisting");
                        tokio::time::sleep(config.retry_min).await;
                        break 'watch;
                    }
                }
            }
            // The server ended the watch (its timeout): resume from `version`. A watch
            // that keeps ending at once is slowed down.
            if events == 0 {
                tokio::time::sleep(idle_rewatch).await;
                idle_rewatch = idle_rewatch.saturating_mul(2).min(config.retry_max);
            } else {
                idle_rewatch = config.retry_min;
            }
        }
    }
}

fn slice_key(slice: &EndpointSlice) -> String {
    slice
        .metadata
        .name
        .clone()
        .or_else(|| slice.metadata.uid.clone())
        .unwrap_or_default()
}

fn union(slices: &BTreeMap<String, Vec<Instance>>) -> Vec<Instance> {
    normalize(slices.values().flatten().cloned().collect())
}

/// The listed instances of one slice. Never panics on any slice content.
fn slice_instances(slice: &EndpointSlice, config: &KubernetesConfig) -> Vec<Instance> {
    let name = slice_key(slice);
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

fn map_kube_error(target: &str, error: kube::Error) -> DiscoveryError {
    match error {
        kube::Error::Api(status) => match status.code {
            401 | 403 => DiscoveryError::Unauthorized {
                status: status.code,
                message: status.message,
            },
            code => DiscoveryError::Api {
                status: code,
                reason: status.reason,
                message: status.message,
            },
        },
        kube::Error::HyperError(e) if e.is_timeout() => DiscoveryError::Timeout {
            target: target.to_string(),
        },
        kube::Error::HyperError(e) => DiscoveryError::Connection {
            target: target.to_string(),
            detail: e.to_string(),
        },
        kube::Error::Service(e) => {
            let detail = error_chain(e.as_ref());
            if detail.contains("timed out") || detail.contains("deadline") {
                DiscoveryError::Timeout {
                    target: target.to_string(),
                }
            } else {
                DiscoveryError::Connection {
                    target: target.to_string(),
                    detail,
                }
            }
        }
        kube::Error::ReadEvents(e) => DiscoveryError::Connection {
            target: target.to_string(),
            detail: e.to_string(),
        },
        kube::Error::SerdeError(e) => DiscoveryError::Malformed(format!("{target}: {e}")),
        kube::Error::FromUtf8(e) => DiscoveryError::Malformed(format!("{target}: {e}")),
        kube::Error::LinesCodecMaxLineLengthExceeded => {
            DiscoveryError::Malformed(format!("{target}: watch line too long"))
        }
        other => DiscoveryError::Backend(format!("{target}: {}", error_chain(&other))),
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
