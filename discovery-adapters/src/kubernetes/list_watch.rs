//! The list-then-watch loop shared by the Kubernetes sources (a reflector's store kept
//! as instances), and the handle that owns its task.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::{
    normalize, BoxFuture, DiscoveryError, DiscoveryResult, Instance, SnapshotSender, SnapshotStream,
};

/// A list (or the start of a watch) that has not answered within this long is given up
/// with [`DiscoveryError::Timeout`] and retried: kube's client has no read timeout of
/// its own, and a connection that hangs must not freeze the published state silently.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A watch still open this long after its server-side timeout (`timeoutSeconds`) is
/// taken for a hung connection: it is dropped and the state relisted.
const WATCH_GRACE: Duration = Duration::from_secs(10);

/// Retry and watch timings of the loop.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) retry_min: Duration,
    pub(super) retry_max: Duration,
    pub(super) watch_timeout: Duration,
}

impl Timing {
    pub(super) fn validate(&self, prefix: &str) -> Result<(), DiscoveryError> {
        if self.retry_min.is_zero() || self.retry_min > self.retry_max {
            return Err(DiscoveryError::invalid(
                format!("{prefix}.retry_min"),
                "must be > 0 and <= retry_max",
            ));
        }
        if self.watch_timeout < Duration::from_secs(1) || self.watch_timeout > MAX_WATCH_TIMEOUT {
            return Err(DiscoveryError::invalid(
                format!("{prefix}.watch_timeout"),
                "must be within 1 s..=290 s",
            ));
        }
        Ok(())
    }
}

/// kube refuses watch timeouts of 295 s and more.
const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(290);

/// The client and namespace of a source started from inside a pod: the in-cluster (or
/// kubeconfig) environment, the namespace from `POD_NAMESPACE` if set.
pub(super) async fn client_from_env() -> Result<(Client, String), DiscoveryError> {
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| DiscoveryError::invalid("kubernetes.config", e.to_string()))?;
    let namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.trim().is_empty())
        .unwrap_or_else(|| kube_config.default_namespace.clone());
    let client = Client::try_from(kube_config)
        .map_err(|e| DiscoveryError::invalid("kubernetes.client", e.to_string()))?;
    Ok((client, namespace))
}

/// A running list-watch loop: its latest result, and its task (aborted on drop).
#[derive(Debug)]
pub(super) struct Reflected {
    sender: SnapshotSender,
    task: AbortHandle,
    first_snapshot_timeout: Duration,
    what: String,
}

impl Drop for Reflected {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reflected {
    /// Spawns the loop on the current tokio runtime. `what` names the listed objects in
    /// errors and logs; `instances` maps one object to the instances it lists.
    pub(super) fn spawn<K, F>(
        api: Api<K>,
        selector: String,
        what: String,
        timing: Timing,
        first_snapshot_timeout: Duration,
        instances: F,
        span: tracing::Span,
    ) -> Result<Self, DiscoveryError>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
        F: Fn(&K) -> Vec<Instance> + Send + 'static,
    {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            DiscoveryError::invalid("runtime", "Kubernetes discovery needs a tokio runtime")
        })?;
        let sender = SnapshotSender::new();
        let task = handle
            .spawn(
                run(
                    api,
                    selector,
                    what.clone(),
                    timing,
                    instances,
                    sender.clone(),
                )
                .instrument(span),
            )
            .abort_handle();
        Ok(Self {
            sender,
            task,
            first_snapshot_timeout,
            what,
        })
    }

    /// The latest result; waits up to `first_snapshot_timeout` for the first one.
    pub(super) fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult> {
        Box::pin(async move {
            let mut stream = self.sender.subscribe();
            match tokio::time::timeout(self.first_snapshot_timeout, stream.next()).await {
                Ok(Some(result)) => result,
                Ok(None) => Err(DiscoveryError::Closed),
                Err(_) => Err(DiscoveryError::Timeout {
                    target: format!("first list of {}", self.what),
                }),
            }
        })
    }

    /// A stream of every change.
    pub(super) fn watch(&self) -> SnapshotStream {
        self.sender.subscribe()
    }
}

/// The list-then-watch loop. Never returns; aborted when its [`Reflected`] is dropped.
///
/// Each published snapshot is the state of the selected objects at one
/// resourceVersion: the list's, then each watch event's, applied in order; a relist
/// replaces the whole state at once.
async fn run<K, F>(
    api: Api<K>,
    selector: String,
    what: String,
    timing: Timing,
    instances: F,
    sender: SnapshotSender,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: Fn(&K) -> Vec<Instance>,
{
    let mut delay = timing.retry_min;
    loop {
        // LIST: the complete state, replacing whatever we had. No resourceVersion:
        // the API server answers with its most recent state (a quorum read).
        let listed = tokio::time::timeout(
            REQUEST_TIMEOUT,
            api.list(&ListParams::default().labels(&selector)),
        )
        .await;
        let outcome = match listed {
            Ok(Ok(list)) => Ok(list),
            Ok(Err(e)) => Err(map_kube_error(&what, e)),
            Err(_) => Err(DiscoveryError::Timeout {
                target: what.clone(),
            }),
        };
        let list = match outcome {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(error = %error, retry_in = ?delay, "list failed");
                sender.publish(Err(error));
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(timing.retry_max);
                continue;
            }
        };
        delay = timing.retry_min;
        let mut objects: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for object in &list.items {
            objects.insert(key(object), instances(object));
        }
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        tracing::debug!(objects = objects.len(), %version, "listed");
        sender.publish(Ok(union(&objects)));

        // WATCH from the list's resourceVersion until an error asks for a relist.
        let mut idle_rewatch = timing.retry_min;
        'watch: loop {
            let params = WatchParams::default()
                .labels(&selector)
                .timeout(u32::try_from(timing.watch_timeout.as_secs()).unwrap_or(290));
            let deadline = tokio::time::Instant::now() + timing.watch_timeout + WATCH_GRACE;
            let started = tokio::time::timeout(REQUEST_TIMEOUT, api.watch(&params, &version)).await;
            let stream = match started {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let error = map_kube_error(&what, e);
                    tracing::warn!(error = %error, "watch failed to start; relisting");
                    tokio::time::sleep(timing.retry_min).await;
                    break 'watch;
                }
                Err(_) => {
                    tracing::warn!("watch did not start within {REQUEST_TIMEOUT:?}; relisting");
                    break 'watch;
                }
            };
            let mut stream = pin!(stream);
            let mut events = 0u64;
            loop {
                let event = match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(_) => {
                        tracing::warn!(
                            "watch still open {WATCH_GRACE:?} after its timeout (a hung connection?); relisting"
                        );
                        break 'watch;
                    }
                };
                events += 1;
                match event {
                    Ok(WatchEvent::Added(object)) | Ok(WatchEvent::Modified(object)) => {
                        if let Some(v) = &object.meta().resource_version {
                            version.clone_from(v);
                        }
                        objects.insert(key(&object), instances(&object));
                        sender.publish(Ok(union(&objects)));
                    }
                    Ok(WatchEvent::Deleted(object)) => {
                        if let Some(v) = &object.meta().resource_version {
                            version.clone_from(v);
                        }
                        objects.remove(&key(&object));
                        sender.publish(Ok(union(&objects)));
                    }
                    Ok(WatchEvent::Bookmark(bookmark)) => {
                        version = bookmark.metadata.resource_version;
                    }
                    Ok(WatchEvent::Error(status)) => {
                        if status.code == 410 {
                            tracing::debug!("watch resourceVersion expired (410 Gone); relisting");
                        } else {
                            tracing::warn!(code = status.code, message = %status.message, "watch error event; relisting");
                            tokio::time::sleep(timing.retry_min).await;
                        }
                        break 'watch;
                    }
                    Err(e) => {
                        let error = map_kube_error(&what, e);
                        tracing::warn!(error = %error, "watch stream broke; relisting");
                        tokio::time::sleep(timing.retry_min).await;
                        break 'watch;
                    }
                }
            }
            // The server ended the watch (its timeout): resume from `version`. A watch
            // that keeps ending at once is slowed down.
            if events == 0 {
                tokio::time::sleep(idle_rewatch).await;
                idle_rewatch = idle_rewatch.saturating_mul(2).min(timing.retry_max);
            } else {
                idle_rewatch = timing.retry_min;
            }
        }
    }
}

/// An object's key in the store: its name (unique in a namespace), else its uid.
pub(super) fn key<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    meta.name
        .clone()
        .or_else(|| meta.uid.clone())
        .unwrap_or_default()
}

fn union(objects: &BTreeMap<String, Vec<Instance>>) -> Vec<Instance> {
    normalize(objects.values().flatten().cloned().collect())
}

/// A kube-rs error as a typed discovery error about `target`.
pub(super) fn map_kube_error(target: &str, error: kube::Error) -> DiscoveryError {
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
