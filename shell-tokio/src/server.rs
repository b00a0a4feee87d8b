//! The server side: one tower [`Service`](tower_service::Service) answering
//! `POST /cluster/v1/message` (a postcard frame from a peer),
//! `GET /cluster/v1/status` (this node's view as JSON) and
//! `POST /cluster/v1/recover` (an operator forces a recovery, P11). It runs on the library's own
//! listener or mounted in the application's axum/hyper server.
//!
//! Refusals, each with a `warn!` line giving the reason and a counter in the status
//! JSON, and no change to the node's state:
//!
//! | case | status |
//! |---|---|
//! | body over the size limit | 413 |
//! | not a frame (malformed postcard, limits broken) | 400 |
//! | another protocol version | 400, reason in the body |
//! | missing or wrong `x-cluster-mac` while a secret is set | 401 |
//! | from another cluster | 409 |
//! | meant for a previous process at this address | 403 |
//! | breaks a protocol rule | 400 |
//! | this node has left or stopped | 410 / 503 |
//! | unknown path / wrong method | 404 / 405 |
//! | a recover request whose body is not `force-recover <this node's id>` | 400 |

use crate::clock::Clock;
use crate::driver::{DeliverError, Inbox, NodeState};
use crate::lease_log::{LeaseLog, LeaseRecord};
use crate::mac::{Secret, MAC_HEADER};
use crate::metrics::{bump, CounterSnapshot, Counters};
use bytes::Bytes;
use cluster_mode_core::{DecodeError, Envelope, Rejected, Status};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// The path peers post messages to.
pub const PATH_MESSAGE: &str = "/cluster/v1/message";
/// The path of the status endpoint.
pub const PATH_STATUS: &str = "/cluster/v1/status";
/// The path an operator posts to force a recovery (P11, [`recover_body`]).
pub const PATH_RECOVER: &str = "/cluster/v1/recover";

/// The body `POST /cluster/v1/recover` must carry for node `id` (signed with the
/// cluster's secret, if it has one): a request meant for another node does nothing.
pub fn recover_body(id: cluster_mode_core::NodeId) -> String {
    format!("force-recover {id:?}")
}
/// The default largest accepted request body (64 KiB; a heartbeat is under 100 bytes).
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

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
}

/// The cluster's HTTP service. Cheap to clone.
///
/// Mount it in an axum router with one line per path:
///
/// ```ignore
/// let app = axum::Router::new()
///     .route_service(cluster_mode::server::PATH_MESSAGE, cluster.service())
///     .route_service(cluster_mode::server::PATH_STATUS, cluster.service());
/// ```
///
/// It also answers `/message` and `/status` for use under `nest_service("/cluster/v1", ..)`.
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
    max_body: usize,
    address: String,
    deliver_timeout: Duration,
    leases: LeaseLog,
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
        max_body: usize,
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
                max_body,
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
        }
    }

    /// The node's lease intervals ([`crate::lease_log`]).
    pub fn lease_record(&self) -> LeaseRecord {
        self.inner.leases.record(&*self.inner.clock)
    }

    /// Handles one request. Never fails and never panics on any input.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        let is_message = path == PATH_MESSAGE || path == "/message";
        let is_status = path == PATH_STATUS || path == "/status";
        if path == PATH_RECOVER || path == "/recover" {
            if req.method() == Method::POST {
                return self.recover(req).await;
            }
            return self.refuse(
                &self.inner.counters.rejected_route,
                StatusCode::METHOD_NOT_ALLOWED,
                "wrong method".into(),
            );
        }
        match (req.method(), is_message, is_status) {
            (&Method::POST, true, _) => self.message(req).await,
            (&Method::GET, _, true) => {
                let body = serde_json::to_vec(&self.status_document()).unwrap_or_default();
                Response::builder()
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "".into()))
            }
            (_, true, _) | (_, _, true) => self.refuse(
                &self.inner.counters.rejected_route,
                StatusCode::METHOD_NOT_ALLOWED,
                "wrong method".into(),
            ),
            _ => self.refuse(
                &self.inner.counters.rejected_route,
                StatusCode::NOT_FOUND,
                format!("no route {path}"),
            ),
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
    /// checks its MAC when a secret is set; a refusal response otherwise.
    async fn authenticated_body<B>(&self, req: Request<B>) -> Result<Bytes, Response<Full<Bytes>>>
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
        let mac = req
            .headers()
            .get(MAC_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
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
        if let Some(secret) = &self.inner.secret {
            let reason = match mac {
                None => format!("missing {MAC_HEADER}"),
                Some(m) if !secret.verify(&body, &m) => format!("bad {MAC_HEADER}"),
                Some(_) => return Ok(body),
            };
            return Err(self.refuse(&c.rejected_mac, StatusCode::UNAUTHORIZED, reason));
        }
        Ok(body)
    }

    /// `POST /cluster/v1/recover`: an operator forces a recovery (P11). The body must
    /// be [`recover_body`] for this node (so that a request meant for another node,
    /// or a typo, does nothing), with its MAC when a secret is set.
    async fn recover<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = match self.authenticated_body(req).await {
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
        let body = match self.authenticated_body(req).await {
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
/// keep-alive, one task per connection, a header read timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: ClusterService,
    counters: Arc<Counters>,
) {
    // Dropped when this task ends (or is aborted): every connection task then ends too.
    let (_alive, alive_rx) = watch::channel(());
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        bump(&counters.connections_accepted);
        let _ = stream.set_nodelay(true);
        let svc = service.clone();
        let mut alive = alive_rx.clone();
        tokio::spawn(async move {
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
