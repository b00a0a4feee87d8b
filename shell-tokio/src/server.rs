//! The server side: one tower [`Service`](tower_service::Service) answering
//! `POST /cluster/v1/message` (a postcard frame from a peer),
//! `GET /cluster/v1/status` (this node's view as JSON, always 200 while it serves),
//! `GET /cluster/v1/ready` (200 while this node is a voter of a cluster with a primary,
//! 503 otherwise: a readiness probe, see [`readiness`]),
//! `GET /cluster/v1/metrics` (the same view and the counters for Prometheus, see
//! [`crate::prometheus`]) and
//! `POST /cluster/v1/recover` (an operator forces a recovery, P11). It runs on the library's own
//! listener or mounted in the application's axum/hyper server. `GET /cluster/v1/ui`
//! is a live status page over the status endpoint ([`crate::ui`]).
//!
//! Refusals, each with a `warn!` line giving the reason and a counter in the status
//! JSON, and no change to the node's state:
//!
//! | case | status |
//! |---|---|
//! | body over the size limit | 413 |
//! | not a frame (malformed postcard, limits broken) | 400 |
//! | another protocol version | 400, reason in the body |
//! | missing or wrong `x-cluster-auth` / `x-cluster-mac` while a secret is set | 401 |
//! | signed for another epoch of this node (an earlier process, or before the sender learned it) | 421, the current epoch in `x-cluster-epoch` |
//! | a replay: an authenticated request accepted before, or too far behind its stream | 401 |
//! | from another cluster | 409 |
//! | meant for a previous process at this address | 403 |
//! | breaks a protocol rule | 400 |
//! | this node has left or stopped | 410 / 503 |
//! | unknown path / wrong method | 404 / 405 |
//! | a recover request whose body is not `force-recover <this node's id>` | 400 |

use crate::clock::Clock;
use crate::driver::{DeliverError, Inbox, NodeState};
use crate::lease_log::{LeaseLog, LeaseRecord};
use crate::mac::{
    Binding, Purpose, Refusal, ReplayGuard, Secret, AUTH_HEADER, EPOCH_HEADER, MAC_HEADER,
};
use crate::metrics::{bump, CounterSnapshot, Counters};
use crate::role_log::RoleRecord;
use bytes::Bytes;
use cluster_mode_core::{DecodeError, Envelope, Rejected, Status};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// The path peers post messages to.
pub const PATH_MESSAGE: &str = "/cluster/v1/message";
/// The path of the status endpoint.
pub const PATH_STATUS: &str = "/cluster/v1/status";
/// The path of the Prometheus metrics endpoint ([`crate::prometheus`]).
pub const PATH_METRICS: &str = "/cluster/v1/metrics";
/// The path of the readiness endpoint: 200 while the node is a voting member that
/// knows a primary, 503 with the reason otherwise ([`readiness`]).
pub const PATH_READY: &str = "/cluster/v1/ready";
/// The path an operator posts to force a recovery (P11, [`recover_body`]).
pub const PATH_RECOVER: &str = "/cluster/v1/recover";
pub use crate::ui::PATH_UI;

/// The body `POST /cluster/v1/recover` must carry for node `id` (signed with the
/// cluster's secret, if it has one, for [`Purpose::Recover`] and bound to the node's
/// epoch like every authenticated request): a request meant for another node does
/// nothing.
pub fn recover_body(id: cluster_mode_core::NodeId) -> String {
    format!("force-recover {id:?}")
}
/// The default most connections a node's own listener keeps open at once
/// (`ClusterBuilder::max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The default largest accepted request body: the largest frame the protocol sends
/// ([`MAX_FRAME_LEN`](cluster_mode_core::message::MAX_FRAME_LEN), 1 MiB). A heartbeat is
/// under 100 bytes, but an append carries up to 256 KiB of store entries beyond its
/// first and a snapshot the whole store (P14): a lower limit cuts a follower off for
/// good once it is that far behind (the primary resends the same append).
pub const DEFAULT_MAX_BODY: usize = cluster_mode_core::message::MAX_FRAME_LEN;

/// The JSON document of `GET /cluster/v1/status`.
#[derive(Clone, Debug, Serialize)]
pub struct StatusDocument {
    /// The node's view, judged at the moment of the request.
    #[serde(flatten)]
    pub status: Status,
    /// The node's address.
    pub address: String,
    /// The shell's counters (rejections, sends, connections).
    pub counters: CounterSnapshot,
    /// Why the node stopped on its own, if it did (its state could not be written
    /// to its data directory). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The last intervals during which the node could have answered "primary", on a
    /// clock shared by the processes of the host ([`crate::lease_log`]).
    pub leases: LeaseRecord,
    /// The last intervals during which the node could have answered that it owns a
    /// named role, on the same clock ([`crate::role_log`]).
    pub role_intervals: RoleRecord,
}

/// Whether a node with this status counts as ready (a Kubernetes readiness probe,
/// `GET /cluster/v1/ready`): `Ok` with a one-line summary while it is a **voter** of the
/// committed configuration and follows or is a primary (role `Primary` or
/// `Secondary`), `Err` with the reason otherwise: still discovering, joining or
/// promoted to voter not yet, no primary known (an election, or a cluster that lost
/// its majority), leaving, or stopped on a failed write (`failure`).
///
/// Ready therefore means *this replica adds to the voter majority*, which is what a
/// rollout should wait for before it stops the next old replica and what a
/// PodDisruptionBudget should count. It is not a liveness signal: a whole cluster
/// without a primary is not ready, but restarting its processes would not help.
pub fn readiness(status: &Status, failure: Option<&str>) -> Result<String, String> {
    use cluster_mode_core::Role;
    if let Some(f) = failure {
        return Err(format!("stopped: {f}"));
    }
    let voter = status.members.iter().any(|m| m.id == status.id && m.voter);
    let primary = status
        .primary
        .as_ref()
        .map(|p| p.addr.to_string())
        .unwrap_or_else(|| "-".into());
    match status.role {
        Role::Primary | Role::Secondary if voter => Ok(format!(
            "ready: voter, role {:?}, term {}, primary {primary}",
            status.role, status.term
        )),
        Role::Primary | Role::Secondary => Err(format!(
            "not ready: a member but not (yet) a voter, role {:?}",
            status.role
        )),
        Role::Inactive => Err("not ready: not in a cluster (discovering, joining, or left)".into()),
        Role::Candidate => Err(format!(
            "not ready: no primary known in term {} (an election, or no majority)",
            status.term
        )),
        Role::Leaving => Err("not ready: leaving".into()),
        other => Err(format!("not ready: role {other:?}")),
    }
}

/// The cluster's HTTP service. Cheap to clone.
///
/// Mount it in an axum router with one line per path:
///
/// ```ignore
/// let app = axum::Router::new()
///     .route_service(cluster_mode::server::PATH_MESSAGE, cluster.service())
///     .route_service(cluster_mode::server::PATH_STATUS, cluster.service())
///     .route_service(cluster_mode::server::PATH_METRICS, cluster.service());
/// ```
///
/// It also answers `/message`, `/status`, `/ready`, `/metrics`, `/recover` and `/ui` for
/// use under `nest_service("/cluster/v1", ..)`.
#[derive(Clone)]
pub struct ClusterService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    inbox: Inbox,
    state: watch::Receiver<NodeState>,
    clock: Arc<dyn Clock>,
    counters: Arc<Counters>,
    secret: Option<Secret>,
    /// With a secret: the epoch and the replay windows (see [`ReplayGuard`]).
    guard: Mutex<ReplayGuard>,
    max_body: usize,
    address: String,
    deliver_timeout: Duration,
    leases: LeaseLog,
}

/// The service's bounds (see `ClusterBuilder`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceLimits {
    /// The largest accepted request body.
    pub(crate) max_body: usize,
    /// The most replay windows per epoch.
    pub(crate) max_streams: usize,
}

/// A fresh random epoch for a [`ReplayGuard`] (the OS random source; simulated
/// under madsim).
pub(crate) fn draw_epoch() -> u64 {
    use rand::Rng;
    crate::fresh_rng().random()
}

impl ClusterService {
    /// Hands `Input::ForceRecover` to the node's loop; `false` if it has stopped.
    pub(crate) fn force_recover(&self) -> bool {
        self.inner.inbox.force_recover()
    }

    /// A service feeding `inbox` and showing `state`.
    // Called once, by `ClusterBuilder::start`, with every part named at the call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inbox: Inbox,
        state: watch::Receiver<NodeState>,
        clock: Arc<dyn Clock>,
        counters: Arc<Counters>,
        secret: Option<Secret>,
        limits: ServiceLimits,
        address: String,
        leases: LeaseLog,
    ) -> Self {
        ClusterService {
            inner: Arc::new(ServiceInner {
                inbox,
                state,
                clock,
                counters,
                secret,
                guard: Mutex::new(ReplayGuard::new(limits.max_streams, draw_epoch)),
                max_body: limits.max_body,
                address,
                deliver_timeout: Duration::from_secs(2),
                leases,
            }),
        }
    }

    /// The node's status document at this moment.
    pub fn status_document(&self) -> StatusDocument {
        let (status, failure) = {
            // The clock is read while the view is held, as in `Cluster::is_primary`.
            let state = self.inner.state.borrow();
            (
                state.status_at(self.inner.clock.now()),
                state.failure.clone(),
            )
        };
        StatusDocument {
            status,
            address: self.inner.address.clone(),
            counters: self.inner.counters.snapshot(),
            failure,
            leases: self.lease_record(),
            role_intervals: self.role_record(),
        }
    }

    /// The node's status judged now, that instant, and whether its loop has stopped
    /// (for [`crate::prometheus`]).
    pub(crate) fn metrics_view(&self) -> (Status, cluster_mode_core::Instant, bool) {
        let state = self.inner.state.borrow();
        let now = self.inner.clock.now();
        (state.status_at(now), now, state.stopped)
    }

    /// The shell's counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The node's lease intervals ([`crate::lease_log`]).
    pub fn lease_record(&self) -> LeaseRecord {
        self.inner.leases.record(&*self.inner.clock)
    }

    /// The node's named-role intervals ([`crate::role_log`]).
    pub fn role_record(&self) -> RoleRecord {
        self.inner.leases.role_record(&*self.inner.clock)
    }

    /// Handles one request. Never fails and never panics on any input.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        let Some(route) = Route::of(path) else {
            return self.refuse(
                &self.inner.counters.rejected_route,
                StatusCode::NOT_FOUND,
                format!("no route {path}"),
            );
        };
        let method = req.method();
        match route {
            Route::Message if method == Method::POST => self.message(req).await,
            Route::Recover if method == Method::POST => self.recover(req).await,
            Route::Status if method == Method::GET => {
                let body = serde_json::to_vec(&self.status_document()).unwrap_or_default();
                Response::builder()
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "".into()))
            }
            Route::Ready if method == Method::GET => self.ready(),
            Route::Metrics if method == Method::GET => crate::prometheus::answer(self),
            Route::Ui if method == Method::GET || method == Method::HEAD => {
                crate::ui::page_response()
            }
            _ => self.refuse(
                &self.inner.counters.rejected_route,
                StatusCode::METHOD_NOT_ALLOWED,
                "wrong method".into(),
            ),
        }
    }

    /// `GET /cluster/v1/ready`: 200 or 503 with [`readiness`]'s line. Not counted as a
    /// refusal and not logged: a probe asks every few seconds.
    fn ready(&self) -> Response<Full<Bytes>> {
        let verdict = {
            let state = self.inner.state.borrow();
            if state.stopped && state.failure.is_none() {
                Err("not ready: the node has stopped (left or shut down)".to_string())
            } else {
                readiness(
                    &state.status_at(self.inner.clock.now()),
                    state.failure.as_deref(),
                )
            }
        };
        match verdict {
            Ok(line) => plain(StatusCode::OK, format!("{line}\n")),
            Err(line) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{line}\n")),
        }
    }

    fn refuse(
        &self,
        counter: &AtomicU64,
        code: StatusCode,
        reason: String,
    ) -> Response<Full<Bytes>> {
        bump(counter);
        let node = self.inner.state.borrow().status.id;
        warn!(%node, status = code.as_u16(), %reason, "request refused");
        plain(code, reason)
    }

    /// Reads a request body within the size limit and the delivery timeout, and
    /// when a secret is set checks its MAC for `purpose` and its binding (epoch,
    /// sequence number: never accepted twice); a refusal response otherwise.
    async fn authenticated_body<B>(
        &self,
        req: Request<B>,
        purpose: Purpose,
    ) -> Result<Bytes, Response<Full<Bytes>>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let c = &self.inner.counters;
        let max = self.inner.max_body;
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(self.refuse(
                &c.rejected_too_large,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {max} bytes"),
            ));
        }
        let header = |req: &Request<B>, name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mac = header(&req, MAC_HEADER);
        let auth = header(&req, AUTH_HEADER);
        // A client that trickles its body must not hold a task and a buffer forever.
        let read = Limited::new(req.into_body(), max).collect();
        let Ok(read) = tokio::time::timeout(self.inner.deliver_timeout, read).await else {
            return Err(self.refuse(
                &c.rejected_malformed,
                StatusCode::REQUEST_TIMEOUT,
                "body not received in time".into(),
            ));
        };
        let body = match read {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return Err(self.refuse(
                        &c.rejected_too_large,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("body over {max} bytes"),
                    ));
                }
                return Err(self.refuse(
                    &c.rejected_malformed,
                    StatusCode::BAD_REQUEST,
                    format!("body error: {e}"),
                ));
            }
        };
        let Some(secret) = &self.inner.secret else {
            return Ok(body);
        };
        let binding = match (auth.as_deref().map(Binding::parse), mac) {
            (None, _) => Err(format!(
                "missing {AUTH_HEADER} (authentication scheme {}; a node of an older release signs the body alone)",
                crate::mac::SCHEME
            )),
            (Some(None), _) => Err(format!("malformed {AUTH_HEADER}")),
            (Some(Some(_)), None) => Err(format!("missing {MAC_HEADER}")),
            (Some(Some(b)), Some(m)) if !secret.verify_request(purpose, &b, &body, &m) => {
                Err(format!("bad {MAC_HEADER}"))
            }
            (Some(Some(b)), Some(_)) => Ok(b),
        };
        let binding = match binding {
            Ok(b) => b,
            Err(reason) => {
                return Err(self.refuse(&c.rejected_mac, StatusCode::UNAUTHORIZED, reason))
            }
        };
        let verdict = self
            .inner
            .guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(&binding);
        match verdict {
            Ok(()) => Ok(body),
            Err(r @ Refusal::StaleEpoch { named, current }) => {
                bump(&c.rejected_stale_epoch);
                let node = self.inner.state.borrow().status.id;
                if named == 0 {
                    // Every first contact: the sender learns the epoch and retries.
                    tracing::debug!(%node, incarnation = binding.incarnation, reason = %r, "request refused (421)");
                } else {
                    tracing::info!(%node, incarnation = binding.incarnation, reason = %r, "request refused (421)");
                }
                let mut resp = plain(StatusCode::MISDIRECTED_REQUEST, format!("{r}\n"));
                if let Ok(v) =
                    hyper::header::HeaderValue::from_str(&secret.sign_epoch(&binding, current))
                {
                    resp.headers_mut().insert(EPOCH_HEADER, v);
                }
                Err(resp)
            }
            Err(r) => Err(self.refuse(
                &c.rejected_replay,
                StatusCode::UNAUTHORIZED,
                format!(
                    "{r} (sender incarnation {:016x}, stream {}, seq {})",
                    binding.incarnation, binding.stream, binding.seq
                ),
            )),
        }
    }

    /// `POST /cluster/v1/recover`: an operator forces a recovery (P11). The body must
    /// be [`recover_body`] for this node (so that a request meant for another node,
    /// or a typo, does nothing), with its MAC when a secret is set.
    async fn recover<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = match self.authenticated_body(req, Purpose::Recover).await {
            Ok(b) => b,
            Err(refusal) => return refusal,
        };
        let id = self.inner.state.borrow().status.id;
        if body.as_ref() != recover_body(id).as_bytes() {
            return self.refuse(
                &self.inner.counters.rejected_malformed,
                StatusCode::BAD_REQUEST,
                format!("the body must be `{}` for this node", recover_body(id)),
            );
        }
        if !self.inner.inbox.force_recover() {
            return self.refuse(
                &self.inner.counters.rejected_left,
                StatusCode::SERVICE_UNAVAILABLE,
                "node stopped or busy".into(),
            );
        }
        warn!(node = %id, "recovery forced through {PATH_RECOVER}");
        plain(
            StatusCode::ACCEPTED,
            format!("recovery forced on {id:?}; follow it at {PATH_STATUS} (field `recovery`)\n"),
        )
    }

    async fn message<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let c = &self.inner.counters;
        let body = match self.authenticated_body(req, Purpose::Message).await {
            Ok(b) => b,
            Err(refusal) => return refusal,
        };
        let env = match Envelope::decode(&body) {
            Ok(env) => env,
            Err(DecodeError::UnsupportedVersion(v)) => {
                return self.refuse(
                    &c.rejected_version,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unsupported protocol version {v}, this node speaks {}",
                        cluster_mode_core::PROTOCOL_VERSION
                    ),
                )
            }
            Err(DecodeError::TooLarge(n)) => {
                return self.refuse(
                    &c.rejected_too_large,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("frame of {n} bytes"),
                )
            }
            Err(e) => {
                return self.refuse(
                    &c.rejected_malformed,
                    StatusCode::BAD_REQUEST,
                    e.to_string(),
                )
            }
        };
        match tokio::time::timeout(self.inner.deliver_timeout, self.inner.inbox.deliver(env)).await
        {
            Ok(Ok(())) => plain(StatusCode::NO_CONTENT, String::new()),
            Ok(Err(DeliverError::Rejected(r))) => {
                let (counter, code) = match &r {
                    Rejected::Version(_) => (&c.rejected_version, StatusCode::BAD_REQUEST),
                    Rejected::ForeignCluster { .. } => {
                        (&c.rejected_foreign_cluster, StatusCode::CONFLICT)
                    }
                    Rejected::NotForMe => (&c.rejected_not_for_me, StatusCode::FORBIDDEN),
                    Rejected::Invalid(_) => (&c.rejected_invalid, StatusCode::BAD_REQUEST),
                    Rejected::Left => (&c.rejected_left, StatusCode::GONE),
                    _ => (&c.rejected_invalid, StatusCode::BAD_REQUEST),
                };
                self.refuse(counter, code, r.to_string())
            }
            Ok(Err(DeliverError::Closed)) => self.refuse(
                &c.rejected_left,
                StatusCode::SERVICE_UNAVAILABLE,
                "node stopped".into(),
            ),
            Err(_) => self.refuse(
                &c.rejected_left,
                StatusCode::SERVICE_UNAVAILABLE,
                "node busy".into(),
            ),
        }
    }
}

/// The service's endpoints, each answered at `/cluster/v1/<name>` (its `PATH_*`
/// constant) and at `/<name>` (mounted under `nest_service("/cluster/v1", ..)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Message,
    Status,
    Ready,
    Metrics,
    Recover,
    Ui,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        let name = path.strip_prefix("/cluster/v1").unwrap_or(path);
        Some(match name {
            "/message" => Route::Message,
            "/status" => Route::Status,
            "/ready" => Route::Ready,
            "/metrics" => Route::Metrics,
            "/recover" => Route::Recover,
            "/ui" => Route::Ui,
            _ => return None,
        })
    }
}

fn plain(code: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = code;
    r
}

impl<B> tower_service::Service<Request<B>> for ClusterService
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let svc = self.clone();
        Box::pin(async move { Ok(svc.handle(req).await) })
    }
}

/// Serves `service` on `listener` until the task is aborted: HTTP/1.1 with
/// keep-alive, one task per connection, a header read timeout, at most
/// `max_connections` connections at once (one beyond is closed at once, counted in
/// `connections_refused`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: ClusterService,
    counters: Arc<Counters>,
    max_connections: usize,
) {
    // Dropped when this task ends (or is aborted): every connection task then ends too.
    let (_alive, alive_rx) = watch::channel(());
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut full = false;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Closed at once rather than left in the backlog: the client sees it and
            // retries; one warning per episode, not one per connection.
            bump(&counters.connections_refused);
            if !full {
                full = true;
                warn!(%peer, max_connections, "connection limit reached; closing new connections until some end");
            }
            drop(stream);
            continue;
        };
        if full {
            full = false;
            tracing::info!("below the connection limit again");
        }
        bump(&counters.connections_accepted);
        let _ = stream.set_nodelay(true);
        let svc = service.clone();
        let mut alive = alive_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // Skips hyper's empty flushes (see `crate::rt`).
            let io = hyper_util::rt::TokioIo::new(crate::rt::FlushGate::new(stream));
            let hyper_svc =
                hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let svc = svc.clone();
                    async move { Ok::<_, Infallible>(svc.handle(req).await) }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(crate::rt::Timer)
                .keep_alive(true)
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(io, hyper_svc);
            tokio::select! {
                _ = conn => {}
                _ = alive.changed() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_constant_and_its_mounted_form_name_their_route() {
        for (path, route) in [
            (PATH_MESSAGE, Route::Message),
            (PATH_STATUS, Route::Status),
            (PATH_READY, Route::Ready),
            (PATH_METRICS, Route::Metrics),
            (PATH_RECOVER, Route::Recover),
            (PATH_UI, Route::Ui),
        ] {
            assert_eq!(Route::of(path), Some(route), "{path}");
            let mounted = path.strip_prefix("/cluster/v1").unwrap();
            assert_eq!(Route::of(mounted), Some(route), "{mounted}");
        }
        for path in [
            "/",
            "",
            "/cluster/v1",
            "/cluster/v1/",
            "/cluster/v1/status/x",
            "/other/status",
        ] {
            assert_eq!(Route::of(path), None, "{path}");
        }
    }
}
