//! Kubernetes discovery of Pods (`v1`): every pod matching a label selector whose
//! containers may still run, terminating pods included, so that a pod missing from an
//! answer is a pod whose containers have stopped.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::{Api, Client};

use super::list_watch::{self, Reflected, Timing};
use super::PortSelector;
use crate::{BoxFuture, Discovery, DiscoveryError, DiscoveryResult, Instance, SnapshotStream};

/// Configuration of a [`KubernetesPodsDiscovery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesPodsConfig {
    /// The namespace of the pods (in a pod: the downward API's `metadata.namespace`,
    /// see the README).
    pub namespace: String,
    /// The label selector of the pods, as `kubectl get pods -l` takes it (`app=my-app`,
    /// `app=my-app,tier in (a,b)`). It must match every replica that may hold cluster
    /// state, old and new ones alike during a rollout: use a label every pod template
    /// of the service carries, never `pod-template-hash`. Must not be empty.
    pub selector: String,
    /// The cluster port: a number (the same on every pod), or a container port name.
    pub port: PortSelector,
    /// How long [`Discovery::snapshot`] waits for the first list before it fails with
    /// [`DiscoveryError::Timeout`]. Default 10 s.
    pub first_snapshot_timeout: Duration,
    /// First delay before retrying a failed list; doubled on each failure. Default 200 ms.
    pub retry_min: Duration,
    /// Largest retry delay. Default 30 s.
    pub retry_max: Duration,
    /// Server-side timeout of one watch request; the watch is then resumed from the last
    /// resourceVersion without a relist. A watch still open 10 s after it is taken for a
    /// hung connection and the pods are relisted, so while no error is reported an
    /// answer is never behind the API server by more than this plus 10 s. Default 60 s
    /// (at most 290 s).
    pub watch_timeout: Duration,
}

impl KubernetesPodsConfig {
    /// The pods matching `selector` in `namespace`, cluster port `port`.
    pub fn new(
        namespace: impl Into<String>,
        selector: impl Into<String>,
        port: PortSelector,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            selector: selector.into(),
            port,
            first_snapshot_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(60),
        }
    }

    /// Sets the retry delays of failed lists.
    #[must_use]
    pub fn with_retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max;
        self
    }

    /// Sets the server-side timeout of one watch request (see
    /// [`watch_timeout`](Self::watch_timeout)).
    #[must_use]
    pub fn with_watch_timeout(mut self, timeout: Duration) -> Self {
        self.watch_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<(), DiscoveryError> {
        if self.namespace.trim().is_empty() {
            return Err(DiscoveryError::invalid(
                "kubernetes_pods.namespace",
                "empty",
            ));
        }
        if self.selector.trim().is_empty() {
            return Err(DiscoveryError::invalid(
                "kubernetes_pods.selector",
                "empty (it would list every pod of the namespace)",
            ));
        }
        self.port.validate("kubernetes_pods.port")?;
        self.timing().validate("kubernetes_pods")
    }

    fn timing(&self) -> Timing {
        Timing {
            retry_min: self.retry_min,
            retry_max: self.retry_max,
            watch_timeout: self.watch_timeout,
        }
    }
}

/// Discovery through the Kubernetes API's Pods (feature `kubernetes`): the source whose
/// answers prove absence, for automatic recovery (docs/PROTOCOL.md, P11).
///
/// A background task lists the pods matching a label selector in one namespace, then
/// watches them, and answers with one [`Instance`] per pod that has a pod IP and whose
/// containers may still run:
///
/// * listed: pods of every phase but `Succeeded` and `Failed` (`Pending`, `Running`,
///   `Unknown`), **terminating pods included** (`metadata.deletionTimestamp` set), and a
///   `Succeeded`/`Failed` pod whose status still shows a running container;
/// * not listed: pods without a pod IP (not started yet), pods that reached
///   `Succeeded` or `Failed` with no container running, and, with
///   [`PortSelector::Name`], pods without a container port of that name.
///
/// Each instance is the pod IP and the cluster port, named by the pod name, with
/// metadata `k8s.namespace`, `k8s.pod`, `k8s.uid`, `k8s.node`, `k8s.phase`, `k8s.ready`
/// (the pod's `Ready` condition, `"true"` or `"false"`) and `k8s.terminating`
/// (`"true"` or `"false"`). [`Instance::ready`] is `true` for **every** listed pod, ready
/// or not: it means "may run", since a shell hands only ready instances to the core,
/// and an address the core is not given counts as absent.
///
/// Answers, errors and retries work as in [`KubernetesDiscovery`](super::KubernetesDiscovery):
/// list, then watch with bookmarks; `410 Gone` or a broken watch relists; a failed list
/// (401/403, 500, a refused connection, no answer within 30 s) is published as a typed
/// error, never as an empty snapshot; a watch still open 10 s past its
/// [`watch_timeout`](KubernetesPodsConfig::watch_timeout) is dropped and the pods
/// relisted.
///
/// # Why absence from an answer proves death (PROTOCOL.md, A2)
///
/// Set `Config::discovery_proves_absence = true` with this source (and only with a
/// source like it). It holds because of how Kubernetes deletes a pod:
///
/// 1. **A pod object outlives its containers.** Every graceful deletion (`kubectl
///    delete pod`, a rollout or scale-down, an eviction, a namespace deletion, the
///    node controller evicting the pods of an unreachable node) only sets
///    `deletionTimestamp`: the pod is *terminating*, and listed here. The object is
///    removed when the kubelet of its node has stopped every container and confirms
///    with a final delete. A pod on a node that stopped answering therefore stays
///    terminating, and listed, for as long as the node is silent. Finalizers only
///    delay the removal further.
/// 2. **A terminal phase is final.** `Succeeded` and `Failed` mean every container
///    terminated and none will restart. The kubelet reports them once the containers
///    stopped; as a guard against a status written before that (older kubelets), a pod
///    whose status still shows a running container stays listed.
/// 3. **Answers are consistent snapshots.** Each answer is the state of the selected
///    pods at one resourceVersion of the API server: the list (a quorum read), then the
///    watch events applied in order; a relist replaces the whole state at once. So an
///    answer never misses a pod that existed at that version, and the API server never
///    shows a deleted object again.
/// 4. **A pod keeps its IP for its lifetime** (A1), and no other pod gets that IP
///    before the pod's containers stopped: the IP is released with the pod's sandbox.
///    A container restarted in its pod is a new process at the same IP; the core
///    proves the old one dead by the new one's different id, not by this source.
///    (`hostNetwork` pods share their node's IP: one replica per node then.)
///
/// So a voter's address missing from an answer means its pod object is gone, hence
/// its containers stopped: it holds no lease and will never vote again.
///
/// **The one way to break it: force deletion.** `kubectl delete pod NAME --force
/// --grace-period=0` removes the object at once, without the kubelet's confirmation;
/// the container may still run on a node the control plane cannot reach. The same
/// happens when the control plane is told a node is down: deleting the Node object
/// (the pod garbage collector then deletes its pods) or tainting it
/// `node.kubernetes.io/out-of-service`. Each of these is an operator asserting that
/// the node's processes are dead, exactly what `cluster-node recover` asserts. If the
/// node is only partitioned and its pods hold a majority of the voters, a recovery on
/// the other side makes a second primary until the partition heals. Force-delete a pod
/// only when its node is known to be down (powered off, its containers gone).
///
/// RBAC: `list` and `watch` on `pods` (API group `""`) in the namespace; the README
/// has a Role.
///
/// The task stops when this value is dropped.
#[derive(Debug)]
pub struct KubernetesPodsDiscovery {
    inner: Reflected,
    config: KubernetesPodsConfig,
}

impl KubernetesPodsDiscovery {
    /// Starts discovery with `client`. Must be called inside a tokio runtime.
    pub fn new(client: Client, config: KubernetesPodsConfig) -> Result<Self, DiscoveryError> {
        config.validate()?;
        let api: Api<Pod> = Api::namespaced(client, &config.namespace);
        let what = format!("Pods {} in {}", config.selector, config.namespace);
        let span = tracing::info_span!(
            "k8s_pods_discovery",
            namespace = %config.namespace,
            selector = %config.selector
        );
        let pod_config = config.clone();
        let inner = Reflected::spawn(
            api,
            config.selector.clone(),
            what,
            config.timing(),
            config.first_snapshot_timeout,
            move |pod: &Pod| pod_instance(pod, &pod_config).into_iter().collect(),
            span,
        )?;
        Ok(Self { inner, config })
    }

    /// Starts discovery of the pods matching `selector` from inside a pod: the client
    /// comes from the in-cluster (or kubeconfig) environment, the namespace from
    /// `POD_NAMESPACE` if set, else from that environment.
    pub async fn from_env(
        selector: impl Into<String>,
        port: PortSelector,
    ) -> Result<Self, DiscoveryError> {
        let (client, namespace) = list_watch::client_from_env().await?;
        Self::new(client, KubernetesPodsConfig::new(namespace, selector, port))
    }

    /// The configuration.
    pub fn config(&self) -> &KubernetesPodsConfig {
        &self.config
    }
}

impl Discovery for KubernetesPodsDiscovery {
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

/// The instance a pod lists, if its containers may run and it has an address. Never
/// panics on any pod content.
fn pod_instance(pod: &Pod, config: &KubernetesPodsConfig) -> Option<Instance> {
    let name = list_watch::key(pod);
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) && !status.is_some_and(any_running) {
        tracing::debug!(pod = %name, ?phase, "pod has stopped; not listed");
        return None;
    }
    let ip_text = status.and_then(|s| {
        s.pod_ip
            .as_deref()
            .filter(|ip| !ip.is_empty())
            .or_else(|| s.pod_ips.iter().flatten().map(|p| p.ip.as_str()).next())
    });
    let Some(ip_text) = ip_text else {
        tracing::debug!(pod = %name, "pod has no IP yet; not listed");
        return None;
    };
    let Ok(ip) = ip_text.trim().parse::<IpAddr>() else {
        tracing::warn!(pod = %name, ip = %ip_text, "pod IP is not an IP address; not listed");
        return None;
    };
    let port = match &config.port {
        PortSelector::Number(n) => *n,
        PortSelector::Name(wanted) => {
            let spec = pod.spec.as_ref();
            let found = spec
                .into_iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(wanted.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .filter(|p| *p != 0);
            match found {
                Some(p) => p,
                None => {
                    tracing::warn!(pod = %name, port = %wanted, "pod has no container port with that name; not listed");
                    return None;
                }
            }
        }
    };
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let mut instance = Instance::new(SocketAddr::new(ip, port))
        .with_name(name.clone())
        .with_meta("k8s.namespace", &config.namespace)
        .with_meta("k8s.pod", &name)
        .with_meta("k8s.ready", ready.to_string())
        .with_meta("k8s.terminating", terminating.to_string());
    if let Some(phase) = phase {
        instance = instance.with_meta("k8s.phase", phase);
    }
    if let Some(uid) = &pod.metadata.uid {
        instance = instance.with_meta("k8s.uid", uid);
    }
    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) {
        instance = instance.with_meta("k8s.node", node);
    }
    Some(instance)
}

/// Whether the status shows any container (regular, init or ephemeral) running.
fn any_running(status: &PodStatus) -> bool {
    [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}
