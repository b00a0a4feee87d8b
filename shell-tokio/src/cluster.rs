//! The [`Cluster`] handle and its [`ClusterBuilder`].

use crate::clock::{default_clock, Clock};
use crate::data_dir::{DataDir, DataDirError};
use crate::driver::{
    spawn_driver, ClusterEvent, Control, DriverHandle, DriverParts, Inbox, NodeState, Subscribers,
    Transport,
};
use crate::lease_log::{LeaseLog, LeaseRecord};
use crate::mac::Secret;
use crate::metrics::{CounterSnapshot, Counters};
use crate::role_log::RoleRecord;
use crate::server::{
    serve, ClusterService, ServiceLimits, DEFAULT_MAX_BODY, DEFAULT_MAX_CONNECTIONS,
};
use crate::storage::Storage;
use crate::transport::{HttpTransport, TransportOptions};
use cluster_mode_core::{
    check_role_name, ClusterCore, Config, ConfigError, FencingToken, Identity, Input, MemberStatus,
    NodeId, OwnedRole, Placement, PrimaryInfo, Role, RoleStatus, RoleToken, Status,
};
use cluster_mode_discovery::Discovery;
use rand::Rng;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Why [`ClusterBuilder::start`] failed. Nothing is left running.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// No discovery source was given.
    NoDiscovery,
    /// The configuration is invalid (the field is named).
    Config(ConfigError),
    /// The listen address could not be bound.
    Bind(std::io::Error),
    /// No address peers can reach this node at: give [`ClusterBuilder::advertise`]
    /// when listening on an unspecified address (`0.0.0.0`) or when mounted.
    NoAdvertiseAddress,
    /// The data directory cannot be used: damaged, in use by another process, or
    /// unreadable. Its message names the file and says what to do.
    DataDir(DataDirError),
    /// A declared role's name is invalid.
    Role(RoleError),
}

/// A role request refused before it reached the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleError {
    /// The role named.
    pub role: String,
    /// Why it is refused.
    pub reason: String,
}

impl std::fmt::Display for RoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "role {:?}: {}", self.role, self.reason)
    }
}

impl std::error::Error for RoleError {}

fn check_roles<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), RoleError> {
    for role in names {
        check_role_name(role).map_err(|reason| RoleError {
            role: role.to_string(),
            reason,
        })?;
    }
    Ok(())
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::NoDiscovery => write!(f, "no discovery source given"),
            StartError::Config(e) => write!(f, "invalid config: {e}"),
            StartError::Bind(e) => write!(f, "cannot bind the cluster listener: {e}"),
            StartError::NoAdvertiseAddress => write!(
                f,
                "no advertised address: set one when listening on 0.0.0.0 or when mounted"
            ),
            StartError::DataDir(e) => write!(f, "{e}"),
            StartError::Role(e) => write!(f, "invalid role: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Bind(e) => Some(e),
            StartError::DataDir(e) => Some(e),
            StartError::Role(e) => Some(e),
            _ => None,
        }
    }
}

enum Listen {
    Addr(SocketAddr),
    Listener(tokio::net::TcpListener),
    Mounted,
}

/// Configures and starts a cluster node.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use cluster_mode::{ClusterBuilder, Config, StaticDiscovery};
/// use std::sync::Arc;
///
/// let peers = StaticDiscovery::parse_list("10.0.0.1:7946,10.0.0.2:7946,10.0.0.3:7946")?;
/// let cluster = ClusterBuilder::new(Arc::new(peers))
///     .listen("0.0.0.0:7946".parse()?)
///     .advertise("10.0.0.1:7946")
///     .config(Config::default())
///     .leave_on_shutdown_signal() // SIGTERM or Ctrl-C: hand over, then exit
///     .start()
///     .await?;
/// if cluster.is_primary() {
///     // run the singleton job
/// }
/// # Ok(()) }
/// ```
pub struct ClusterBuilder {
    discovery: Option<Arc<dyn Discovery>>,
    listen: Listen,
    advertise: Option<String>,
    name: Option<String>,
    config: Config,
    secret: Option<Secret>,
    transport: TransportOptions,
    clock: Option<Arc<dyn Clock>>,
    discovery_interval: Option<Duration>,
    max_body: usize,
    max_connections: usize,
    max_auth_streams: usize,
    data_dir: Option<PathBuf>,
    roles: Vec<(String, Placement)>,
    leave_on_signal: bool,
    #[cfg(feature = "sim")]
    sim: SimHooks,
}

/// Builds a node's transport once, while it is assembled.
#[cfg(feature = "sim")]
type MakeTransport = Box<dyn FnOnce(TransportContext) -> Arc<dyn Transport> + Send>;

/// What a simulator may set besides the public options (feature `sim`).
#[cfg(feature = "sim")]
#[derive(Default)]
struct SimHooks {
    transport: Option<MakeTransport>,
    node_id: Option<NodeId>,
    core_seed: Option<u64>,
    disk: Option<crate::sim::MemoryDisk>,
}

/// What a transport plugged with `ClusterBuilder::with_transport` (feature `sim`) is
/// given when the node is assembled.
#[derive(Debug)]
#[cfg_attr(not(feature = "sim"), allow(dead_code))]
pub struct TransportContext {
    /// The node's id.
    pub id: NodeId,
    /// Where received envelopes and delivery failures go.
    pub inbox: Inbox,
    /// The node's counters (`send_*` are the transport's).
    pub counters: Arc<Counters>,
    /// The transport options, `max_age` defaulted to the lease duration.
    pub options: TransportOptions,
}

impl ClusterBuilder {
    /// A builder finding peers through `discovery`, listening on `0.0.0.0:7946` by
    /// default, with [`Config::default`].
    #[must_use]
    pub fn new(discovery: Arc<dyn Discovery>) -> Self {
        ClusterBuilder {
            discovery: Some(discovery),
            listen: Listen::Addr(SocketAddr::from(([0, 0, 0, 0], 7946))),
            advertise: None,
            name: None,
            config: Config::default(),
            secret: None,
            transport: TransportOptions::default(),
            clock: None,
            discovery_interval: None,
            max_body: DEFAULT_MAX_BODY,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_auth_streams: crate::mac::DEFAULT_MAX_STREAMS,
            data_dir: None,
            roles: Vec::new(),
            leave_on_signal: false,
            #[cfg(feature = "sim")]
            sim: SimHooks::default(),
        }
    }

    /// Sends through the transport `make` returns instead of the hyper transport
    /// (feature `sim`). `make` is called once, while the node is assembled. Combine
    /// with [`mounted`](Self::mounted) when nothing should listen for HTTP.
    #[cfg(feature = "sim")]
    #[must_use]
    pub fn with_transport(
        mut self,
        make: impl FnOnce(TransportContext) -> Arc<dyn Transport> + Send + 'static,
    ) -> Self {
        self.sim.transport = Some(Box::new(make));
        self
    }

    /// Uses this node id instead of a fresh random one (feature `sim`: a simulator
    /// draws ids from its own seeded RNG).
    #[cfg(feature = "sim")]
    #[must_use]
    pub fn node_id(mut self, id: NodeId) -> Self {
        self.sim.node_id = Some(id);
        self
    }

    /// Seeds the core's RNG with `seed` instead of a fresh random one (feature `sim`).
    #[cfg(feature = "sim")]
    #[must_use]
    pub fn core_seed(mut self, seed: u64) -> Self {
        self.sim.core_seed = Some(seed);
        self
    }

    /// Keeps the node's durable state on `disk` instead of a data directory (feature
    /// `sim`): like [`data_dir`](Self::data_dir), with no file. A node started again
    /// on the same disk is the same member, with the id stored there (which wins over
    /// [`node_id`](Self::node_id)). Takes precedence over `data_dir`.
    #[cfg(feature = "sim")]
    #[must_use]
    pub fn memory_disk(mut self, disk: crate::sim::MemoryDisk) -> Self {
        self.sim.disk = Some(disk);
        self
    }

    /// Listens on `addr` (port 0 picks a free port; see [`Cluster::local_addr`]).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Listen::Addr(addr);
        self
    }

    /// Serves on an already bound listener.
    #[must_use]
    pub fn listener(mut self, listener: tokio::net::TcpListener) -> Self {
        self.listen = Listen::Listener(listener);
        self
    }

    /// Opens no listener: the application mounts [`Cluster::service`] in its own
    /// server at [`crate::server::PATH_MESSAGE`]. Needs [`advertise`](Self::advertise).
    #[must_use]
    pub fn mounted(mut self) -> Self {
        self.listen = Listen::Mounted;
        self
    }

    /// The `host:port` peers reach this node at. It must be written exactly as
    /// discovery lists this node (for example `10.0.0.7:7946`).
    #[must_use]
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    /// A human-readable name (a pod name, say) shown in status and logs.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The protocol timing and membership settings.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// A shared secret: every message is signed with HMAC-SHA256, bound to the
    /// sending and the receiving process and numbered, and unsigned, wrongly signed
    /// or replayed messages are refused (see [`crate::mac`] and docs/PROTOCOL.md,
    /// "Message authentication and replay"). Without a secret nothing is
    /// authenticated: anyone who can reach the port can send any message.
    #[must_use]
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(Secret::new(secret));
        self
    }

    /// Transport tuning (queue length, requests in flight, request timeout, maximum
    /// age of a queued message).
    #[must_use]
    pub fn transport_options(mut self, opts: TransportOptions) -> Self {
        self.transport = opts;
        self
    }

    /// The node's clock (a simulation can give each node its own drifting clock).
    /// Default: [`crate::clock::default_clock`] (`CLOCK_BOOTTIME` on Linux, which counts
    /// the time the host was suspended; the runtime's clock elsewhere and under madsim).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Polls discovery this often instead of the source's own interval.
    #[must_use]
    pub fn discovery_interval(mut self, interval: Duration) -> Self {
        self.discovery_interval = Some(interval);
        self
    }

    /// The largest accepted request body (default
    /// [`DEFAULT_MAX_BODY`](crate::server::DEFAULT_MAX_BODY), 1 MiB: the largest frame).
    /// Below 1 MiB, a follower that falls behind by more than the limit in store
    /// entries, or needs a snapshot of a larger store, never catches up.
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The most connections the node's own listener keeps open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`]); a connection beyond it is closed at once and
    /// counted in `connections_refused`. Every peer keeps up to
    /// `TransportOptions::in_flight` pooled connections to each node it sends to, so
    /// a leader needs about `in_flight` times the member count (plus status
    /// readers); more costs a task and buffers (some KiB) per idle connection, and a
    /// file descriptor (check `ulimit -n`). Too low: members beyond it cannot reach
    /// the node. Not applied to a [`mounted`](Self::mounted) service (the
    /// application's server owns its connections).
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// With a secret: the most sender streams the node keeps replay windows for
    /// (default [`crate::mac::DEFAULT_MAX_STREAMS`], about 60 bytes each). Every
    /// peer's send queue to this node is one stream, new after each restart of the
    /// peer or 60 s of silence. When full the node starts a new epoch, and every
    /// sender's next request is refused once (421) and sent again: keep it well above
    /// the member count.
    #[must_use]
    pub fn max_auth_streams(mut self, n: usize) -> Self {
        self.max_auth_streams = n.max(1);
        self
    }

    /// Declares named roles (P13 in docs/PROTOCOL.md), each owned by one member at a
    /// time and placed by the primary: a primary per shard, per tenant, per queue
    /// partition. Roles the cluster has already are left as they are, so every
    /// replica may declare the same list. Ask with [`Cluster::owns`]; follow
    /// [`ClusterEvent::Role`](crate::ClusterEvent::Role) in [`Cluster::subscribe`].
    /// An invalid name fails [`start`](Self::start) with [`StartError::Role`].
    ///
    /// ```no_run
    /// # use cluster_mode::{ClusterBuilder, StaticDiscovery};
    /// # use std::sync::Arc;
    /// # fn f(d: Arc<StaticDiscovery>) {
    /// let builder = ClusterBuilder::new(d).roles((0..64).map(|i| format!("shard-{i}")));
    /// # }
    /// ```
    #[must_use]
    pub fn roles<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.roles
            .extend(names.into_iter().map(|n| (n.into(), Placement::Any)));
        self
    }

    /// Declares one role with a placement: [`Placement::Pinned`] to a member name
    /// (the role stays unowned while that member is absent) or
    /// [`Placement::Prefer`] a list of member names.
    #[must_use]
    pub fn role_with(mut self, name: impl Into<String>, placement: Placement) -> Self {
        self.roles.push((name.into(), placement));
        self
    }

    /// Keeps the node's id, term, vote and log in the directory `path` (created if
    /// missing), so that a process restarted with the same directory is the same
    /// member (see [`crate::data_dir`]). Without it every start is a new member with a
    /// fresh id, and nothing is written.
    ///
    /// At start the directory is locked (a second process using it is refused) and
    /// its state loaded: none, a new node with a fresh id; a state, this node again;
    /// a damaged state, [`StartError::DataDir`] (never a silent fresh start). While
    /// running, the state is written (fsync, atomic rename) whenever the term, vote or
    /// log changed, before the node acts on it; a steady cluster writes nothing. If a
    /// write fails the node stops ([`ClusterEvent::Failed`]).
    #[must_use]
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(path.into());
        self
    }

    /// On the first SIGTERM or Ctrl-C, leave gracefully and then end the process
    /// (status 143 or 130): [`Cluster::leave_on_shutdown_signal`], armed by
    /// [`start`](Self::start). Without it (or [`Cluster::leave_on_signal`]) a stopped
    /// process is a crash to the others: a rolling update then costs one election
    /// timeout per pod instead of a handover of a few milliseconds. Leave it off if
    /// the application handles the signals itself, and call [`Cluster::leave`] there.
    #[must_use]
    pub fn leave_on_shutdown_signal(mut self) -> Self {
        self.leave_on_signal = true;
        self
    }

    /// Binds the listener (unless mounted), spawns the loop and the server, and
    /// returns the handle. The node starts discovering at once.
    pub async fn start(self) -> Result<Cluster, StartError> {
        let discovery = self.discovery.ok_or(StartError::NoDiscovery)?;
        self.config.validate().map_err(StartError::Config)?;
        check_roles(self.roles.iter().map(|(r, _)| r.as_str())).map_err(StartError::Role)?;
        #[cfg(feature = "sim")]
        let SimHooks {
            transport: custom_transport,
            node_id,
            core_seed,
            disk,
        } = self.sim;
        #[cfg(not(feature = "sim"))]
        let (custom_transport, node_id, core_seed) = (
            None::<fn(TransportContext) -> Arc<dyn Transport>>,
            None,
            None,
        );
        #[cfg(feature = "sim")]
        let storage = disk.map(Storage::Memory);
        #[cfg(not(feature = "sim"))]
        let storage = None;
        // Before binding: a damaged or busy data directory starts nothing.
        let storage = match (storage, self.data_dir) {
            (Some(s), _) => Some(s),
            (None, Some(path)) => Some(Storage::Dir(
                DataDir::open(path).map_err(StartError::DataDir)?,
            )),
            (None, None) => None,
        };
        let stored = match &storage {
            Some(s) => s.load().map_err(StartError::DataDir)?,
            None => None,
        };
        let listener = match self.listen {
            Listen::Addr(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(StartError::Bind)?,
            ),
            Listen::Listener(l) => Some(l),
            Listen::Mounted => None,
        };
        let local_addr = match &listener {
            Some(l) => Some(l.local_addr().map_err(StartError::Bind)?),
            None => None,
        };
        let advertise = match (self.advertise, local_addr) {
            (Some(a), _) => a,
            (None, Some(a)) if !a.ip().is_unspecified() => a.to_string(),
            _ => return Err(StartError::NoAdvertiseAddress),
        };
        let clock = self.clock.unwrap_or_else(default_clock);
        let id = stored
            .as_ref()
            .map(|s| s.id)
            .or(node_id)
            .unwrap_or_else(crate::fresh_node_id);
        let mut identity = Identity::new(id, advertise.as_str());
        if let Some(n) = self.name {
            identity = identity.with_name(n);
        }
        let lease_duration = self.config.lease_duration;
        let seed = core_seed.unwrap_or_else(|| crate::fresh_rng().random::<u64>());
        let core = match stored {
            Some(state) => {
                let term = state.term;
                let core = ClusterCore::restore(identity, self.config, seed, clock.now(), state)
                    .map_err(|e| {
                        StartError::DataDir(DataDirError::Damaged {
                            dir: storage.as_ref().map(Storage::dir).unwrap_or_default(),
                            file: storage.as_ref().map(Storage::describe).unwrap_or_default(),
                            reason: e.reason,
                        })
                    })?;
                tracing::info!(node = %id, term, "restored from the data directory");
                core
            }
            None => {
                let core = ClusterCore::new(identity, self.config, seed, clock.now())
                    .map_err(StartError::Config)?;
                if storage.is_some() {
                    core.durable()
                } else {
                    core
                }
            }
        };
        let mut core = core;
        if !self.roles.is_empty() {
            // Not in a cluster yet: the core only notes them, and emits nothing.
            let _ = core.handle(clock.now(), Input::DeclareRoles(self.roles));
        }
        let counters = Arc::new(Counters::default());
        let (inbox, inbox_rx) = Inbox::channel(1024);
        let mut transport_opts = self.transport;
        // Stale acknowledgements renew no lease: by default, a message that waited
        // longer than the lease is not worth sending.
        transport_opts.max_age = transport_opts.max_age.or(Some(lease_duration));
        let transport: Arc<dyn Transport> = match custom_transport {
            Some(make) => make(TransportContext {
                id,
                inbox: inbox.clone(),
                counters: counters.clone(),
                options: transport_opts,
            }),
            None => Arc::new(HttpTransport::new(
                id,
                crate::server::draw_epoch(),
                inbox.clone(),
                counters.clone(),
                self.secret.clone(),
                transport_opts,
            )),
        };
        let subscribers = Subscribers::default();
        let leases = LeaseLog::default();
        let driver = spawn_driver(DriverParts {
            core,
            clock: clock.clone(),
            transport,
            discovery,
            discovery_interval: self.discovery_interval,
            inbox: inbox_rx,
            counters: counters.clone(),
            subscribers: subscribers.clone(),
            storage,
            leases: leases.clone(),
        });
        let service = ClusterService::new(
            inbox,
            driver.state.clone(),
            clock.clone(),
            counters.clone(),
            self.secret,
            ServiceLimits {
                max_body: self.max_body,
                max_streams: self.max_auth_streams,
            },
            advertise.clone(),
            leases,
        );
        let max_connections = self.max_connections;
        let server = listener
            .map(|l| tokio::spawn(serve(l, service.clone(), counters.clone(), max_connections)));
        let cluster = Cluster {
            inner: Arc::new(Inner {
                driver,
                clock,
                subscribers,
                service,
                counters,
                advertise,
                local_addr,
                server: Mutex::new(server),
            }),
        };
        if self.leave_on_signal {
            cluster.leave_on_shutdown_signal();
        }
        Ok(cluster)
    }
}

/// A running cluster node. Cheap to clone; every clone is the same node.
///
/// Role queries are synchronous and cheap: they read the view the loop last
/// published (a `tokio::sync::watch`) and judge the primary lease against the node's
/// clock at the moment of the call. Dropping the handles does not stop the node: call
/// [`leave`](Self::leave) (graceful) or [`shutdown`](Self::shutdown).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    driver: DriverHandle,
    clock: Arc<dyn Clock>,
    subscribers: Subscribers,
    service: ClusterService,
    counters: Arc<Counters>,
    advertise: String,
    local_addr: Option<SocketAddr>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id())
            .field("address", &self.inner.advertise)
            .finish()
    }
}

/// Every change of one node, in order, none dropped. Get one with
/// [`Cluster::subscribe`]; it sees the changes after it was made (read the current
/// state with [`Cluster::status`]).
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<ClusterEvent>,
}

impl Subscription {
    /// The next change; `None` once the node has stopped and every change was read.
    pub async fn next(&mut self) -> Option<ClusterEvent> {
        self.rx.recv().await
    }

    /// The next change if one is waiting.
    pub fn try_next(&mut self) -> Option<ClusterEvent> {
        self.rx.try_recv().ok()
    }
}

impl Cluster {
    /// A builder; see [`ClusterBuilder`].
    #[must_use]
    pub fn builder(discovery: Arc<dyn Discovery>) -> ClusterBuilder {
        ClusterBuilder::new(discovery)
    }

    /// The node id: fresh at every start, or, with a
    /// [`data_dir`](ClusterBuilder::data_dir), the one stored there.
    pub fn id(&self) -> NodeId {
        self.inner.driver.id
    }

    /// The address peers reach this node at.
    pub fn address(&self) -> &str {
        &self.inner.advertise
    }

    /// The address of the library's own listener, if it has one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    fn state(&self) -> watch::Ref<'_, NodeState> {
        self.inner.driver.state.borrow()
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.status().role
    }

    /// Whether this node is primary now: the leader holding a lease that a majority
    /// acknowledged, checked against the clock at this call. A primary that was paused
    /// past its lease answers `false` when it resumes.
    ///
    /// The clock is read while the published view is held (which delays the loop's
    /// next publication until this call is done), so the reading falls between the
    /// publication of the view and the next one: what the node's lease record
    /// ([`lease_record`](Self::lease_record)) relies on.
    pub fn is_primary(&self) -> bool {
        let state = self.state();
        state.is_primary_at(self.inner.clock.now())
    }

    /// Whether this node holds the named role now (P13): its grant is committed and
    /// its hold, renewed by a primary with a valid lease, is valid at this call (read
    /// against the clock, as [`is_primary`](Self::is_primary)). While it answers
    /// `true` no other member's `owns` answers `true` for the role.
    pub fn owns(&self, role: &str) -> bool {
        self.role_token(role).is_some()
    }

    /// This node's fencing token for `role` while it holds it: tokens of a role
    /// strictly increase from one owner to the next, so a store that remembers the
    /// highest it saw per role refuses a deposed owner's writes.
    pub fn role_token(&self, role: &str) -> Option<RoleToken> {
        let state = self.state();
        state.role_token_at(role, self.inner.clock.now())
    }

    /// The roles this node holds now, with their tokens.
    pub fn owned_roles(&self) -> Vec<OwnedRole> {
        let state = self.state();
        state.owned_roles_at(self.inner.clock.now())
    }

    /// The committed owner of `role`, as this node knows it (it may be draining the
    /// role or its hold may have lapsed: only [`owns`](Self::owns) on that node
    /// answers for the instant). `None` if the role is unowned or unknown.
    pub fn owner_of(&self, role: &str) -> Option<NodeId> {
        let state = self.state();
        state
            .status
            .roles
            .iter()
            .find(|r| r.role == role)
            .and_then(|r| r.owner)
    }

    /// The committed role table as this node knows it.
    pub fn roles(&self) -> Vec<RoleStatus> {
        self.state().status.roles.clone()
    }

    /// Declares roles at run time, through the primary (forwarded, and resent until
    /// the cluster's table has them). Returns once the request is queued; watch
    /// [`roles`](Self::roles) or the events for the result.
    pub async fn add_roles<S: Into<String>>(
        &self,
        names: impl IntoIterator<Item = S>,
    ) -> Result<(), RoleError> {
        let roles: Vec<(String, Placement)> = names
            .into_iter()
            .map(|n| (n.into(), Placement::Any))
            .collect();
        check_roles(roles.iter().map(|(r, _)| r.as_str()))?;
        self.control(Input::DeclareRoles(roles)).await;
        Ok(())
    }

    /// Removes roles at run time, through the primary; each is removed once its owner
    /// released it.
    pub async fn remove_roles<S: Into<String>>(&self, names: impl IntoIterator<Item = S>) {
        let roles = names.into_iter().map(Into::into).collect();
        self.control(Input::RemoveRoles(roles)).await;
    }

    /// Lets go of a role the primary asked back, once drained
    /// ([`RoleEvent::Releasing`](cluster_mode_core::RoleEvent::Releasing)); with
    /// `Config::role_drain_timeout` at 0 (the default) roles are let go at once and
    /// this is never needed.
    pub async fn release_role(&self, role: &str) {
        self.control(Input::ReleaseRole(role.to_string())).await;
    }

    /// A new client session of the replicated key-value store, with default retries
    /// ([`StoreOptions`](crate::StoreOptions)). Each call opens its own session
    /// (registered on its first write); clones of a [`Store`](crate::Store) share
    /// one.
    pub fn store(&self) -> crate::Store {
        self.store_with(crate::StoreOptions::default())
    }

    /// [`store`](Self::store) with the given retry options.
    pub fn store_with(&self, options: crate::StoreOptions) -> crate::Store {
        crate::Store::new(self.inner.driver.control.clone(), options)
    }

    async fn control(&self, input: Input) {
        let _ = self
            .inner
            .driver
            .control
            .send(Control::Input(Box::new(input)))
            .await;
    }

    /// Whether this node follows a known primary.
    pub fn is_secondary(&self) -> bool {
        self.role() == Role::Secondary
    }

    /// Whether this node is in a cluster (primary, secondary or candidate).
    pub fn is_active(&self) -> bool {
        matches!(
            self.role(),
            Role::Primary | Role::Secondary | Role::Candidate
        )
    }

    /// The primary this node knows of (itself only while its lease is valid).
    pub fn primary(&self) -> Option<PrimaryInfo> {
        let s = self.status();
        match s.primary {
            Some(p) if p.id == s.id && s.role != Role::Primary => None,
            other => other,
        }
    }

    /// The committed members.
    pub fn members(&self) -> Vec<MemberStatus> {
        self.state().status.members.clone()
    }

    /// The committed members other than the primary this node knows of.
    pub fn secondaries(&self) -> Vec<MemberStatus> {
        let s = self.status();
        let primary = s.primary.map(|p| p.id);
        s.members
            .into_iter()
            .filter(|m| Some(m.id) != primary)
            .collect()
    }

    /// The fencing token (P7), while this node is primary.
    pub fn fencing_token(&self) -> Option<FencingToken> {
        let state = self.state();
        state.fencing_token_at(self.inner.clock.now())
    }

    /// Why the node stopped on its own, if it did: it could not write its state to
    /// its data directory (see [`ClusterEvent::Failed`]). `None` while it runs.
    pub fn failure(&self) -> Option<String> {
        self.state().failure.clone()
    }

    /// The node's view, judged now.
    pub fn status(&self) -> Status {
        let state = self.state();
        state.status_at(self.inner.clock.now())
    }

    /// The last intervals during which this node could have answered "primary", on
    /// a clock shared by the processes of the host (see [`crate::lease_log`]). Also
    /// in the status document (field `leases`).
    pub fn lease_record(&self) -> LeaseRecord {
        self.inner.service.lease_record()
    }

    /// The last intervals during which this node could have answered that it owns a
    /// named role, with the role and token, on the same clock (see
    /// [`crate::role_log`], whose [`overlaps`](crate::role_log::overlaps) compares
    /// the records of several processes). Also in the status document (field
    /// `role_intervals`).
    pub fn role_record(&self) -> RoleRecord {
        self.inner.service.role_record()
    }

    /// A `watch` of the node's view as the loop publishes it.
    pub fn watch(&self) -> watch::Receiver<NodeState> {
        self.inner.driver.state.clone()
    }

    /// Every role, primary and membership change from now on, in order.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.inner.subscribers.subscribe(),
        }
    }

    /// The HTTP service (messages and status) to mount in an application's server.
    pub fn service(&self) -> ClusterService {
        self.inner.service.clone()
    }

    /// The shell's counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.inner.counters.snapshot()
    }

    /// The node's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// Leaves gracefully: a primary first hands leadership to an up-to-date member,
    /// then the node is removed from the configuration; then the node stops. Returns
    /// when done (bounded by `Config::leave_timeout`).
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .driver
            .control
            .send(Control::Leave(tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        self.shutdown().await;
    }

    /// Forces a recovery of this node's cluster (P11 in docs/PROTOCOL.md): the voters
    /// it cannot hear from are treated as gone for good, and it founds the
    /// cluster's successor with every process that answers. Use it when the cluster
    /// has no primary and [`Status::recovery`](cluster_mode_core::Status::recovery)
    /// says a voter is missing with no proof of death, and you know those processes
    /// are gone (their machine is dead, their pods deleted).
    ///
    /// **Risk**: if a missing voter still runs with a majority elsewhere (a partition,
    /// not a death), there will be two primaries until it heals. A node that follows
    /// a live leader ignores the request and logs why. Returns `false` if the node
    /// has stopped.
    pub fn force_recover(&self) -> bool {
        self.inner.service.force_recover()
    }

    /// Stops at once without leaving, as a crash would (the others fail over).
    pub async fn shutdown(&self) {
        let _ = self.inner.driver.control.send(Control::Stop).await;
        let server = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(s) = server {
            s.abort();
        }
        let mut state = self.inner.driver.state.clone();
        let _ = state.wait_for(|s| s.stopped).await;
    }
}
