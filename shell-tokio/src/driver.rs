//! The driving loop, written once for tokio and for madsim.
//!
//! One task owns the [`ClusterCore`]. It waits (with `select!`, biased) for the core's
//! next timeout, a control request from a [`crate::Cluster`] handle, an envelope or a
//! delivery failure from the transport ([`Inbox`]), or a discovery answer; hands the
//! event to the core; then applies every command the core emits, in order:
//!
//! - `Persist` (a node with a data directory) is written to its storage at once,
//!   synchronously, before any later command: a `Send` after it may announce a vote
//!   or an acknowledgement that rests on it. If the write fails, the node stops
//!   there: the later commands are dropped, subscribers get [`ClusterEvent::Failed`],
//!   and the view says `stopped` with the error;
//! - `Send` goes to [`Transport::send`], which must not block (it queues);
//! - `RoleChanged`, `MembersChanged` and `LeaveFinished` go to every subscriber, in
//!   order, none dropped (unbounded per-subscriber queues: a subscriber that never
//!   reads grows its own queue, nothing else);
//!
//! and finally publishes the node's view to a `tokio::sync::watch` ([`NodeState`]).
//!
//! Everything here uses only `tokio::{spawn, time, sync, select}`, which madsim-tokio
//! simulates when built with `--cfg madsim`, so a simulation reuses this loop with its
//! own [`Transport`] (datagrams, say) and its own [`Clock`] (drifting, say).

use crate::clock::Clock;
use crate::lease_log::LeaseLog;
use crate::metrics::{bump, Counters};
use crate::storage::Storage;
use cluster_mode_core::{
    Address, ClusterCore, Command, Delivery, Discovered, DurableState, Envelope, FencingToken,
    Input, Instant, Member, NodeId, OwnedRole, PrimaryInfo, Rejected, Role, RoleEvent, Status,
};
use cluster_mode_discovery::{Discovery, DiscoveryResult, Instance};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Carries envelopes to peers. The library's own is the hyper transport; a
/// simulation plugs a cheaper one (with the `sim` feature, see
/// `ClusterBuilder::with_transport`).
pub trait Transport: Send + Sync + 'static {
    /// Queues `env` for delivery to `to` and returns at once. Delivery is best
    /// effort. `class` is the core's word on what a queue may do with `env` while it
    /// waits (drop it when a newer envelope's class supersedes it); a transport
    /// never needs to look inside the message. A failed delivery should be reported
    /// to the node's inbox (`Inbox::unreachable`).
    fn send(&self, to: &Address, env: Envelope, class: Delivery);
}

/// What a transport hands to the loop.
// Nearly every value is a `Message`; boxing it would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A received envelope, and where to answer whether the core accepted it.
    Message {
        /// The envelope.
        env: Envelope,
        /// Receives the core's verdict, if the transport wants it (HTTP does, to pick
        /// the status code; a datagram transport passes `None`).
        reply: Option<oneshot::Sender<Result<(), Rejected>>>,
    },
    /// A message to this address could not be delivered.
    Unreachable(Address),
    /// An operator forces a recovery (`Input::ForceRecover`, P11).
    ForceRecover,
}

/// Why [`Inbox::deliver`] did not hand an envelope to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeliverError {
    /// The core refused it; its state is unchanged.
    Rejected(Rejected),
    /// The loop has stopped (the node left or was shut down).
    Closed,
}

/// The sending side of a node's input queue, held by its transport: where received
/// envelopes and delivery failures go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Inbox {
    tx: mpsc::Sender<Inbound>,
}

/// The receiving side of the loop's input queue; pass it to [`DriverParts`].
#[derive(Debug)]
pub(crate) struct InboxReceiver {
    rx: mpsc::Receiver<Inbound>,
}

impl Inbox {
    /// A bounded queue of `capacity` inputs. When it is full, [`Inbox::deliver`]
    /// waits (backpressure on the sender's connection) and [`Inbox::try_deliver`]
    /// drops.
    pub(crate) fn channel(capacity: usize) -> (Inbox, InboxReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Inbox { tx }, InboxReceiver { rx })
    }

    /// Hands `env` to the core and waits for its verdict.
    pub(crate) async fn deliver(&self, env: Envelope) -> Result<(), DeliverError> {
        let (reply, verdict) = oneshot::channel();
        self.tx
            .send(Inbound::Message {
                env,
                reply: Some(reply),
            })
            .await
            .map_err(|_| DeliverError::Closed)?;
        match verdict.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(r)) => Err(DeliverError::Rejected(r)),
            Err(_) => Err(DeliverError::Closed),
        }
    }

    /// Hands `env` to the core without waiting; returns `false` if the queue was full
    /// or the loop has stopped (the envelope is then dropped, like a lost datagram).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub fn try_deliver(&self, env: Envelope) -> bool {
        self.tx
            .try_send(Inbound::Message { env, reply: None })
            .is_ok()
    }

    /// Asks the core to force a recovery; `false` if the loop has stopped or its
    /// queue is full.
    pub(crate) fn force_recover(&self) -> bool {
        self.tx.try_send(Inbound::ForceRecover).is_ok()
    }

    /// Reports that a message to `addr` could not be delivered. Dropped if the queue
    /// is full (the core treats it as a hint only).
    pub fn unreachable(&self, addr: Address) {
        let _ = self.tx.try_send(Inbound::Unreachable(addr));
    }

    /// Whether the loop has stopped.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// One change, as delivered to subscribers, in the order the core emitted it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// The application-facing role or the known primary changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The term.
        term: u64,
        /// The primary this node knows of.
        primary: Option<PrimaryInfo>,
        /// While primary: when the lease ends on the node's clock, unless renewed, as
        /// the core said at the change. `None` otherwise.
        lease_until: Option<Instant>,
        /// While primary: the fencing token (P7), as the core said at the change.
        fencing_token: Option<FencingToken>,
        /// The node's clock when it changed.
        at: Instant,
    },
    /// The committed member list changed; the full new list.
    MembersChanged {
        /// Every member.
        members: Vec<(NodeId, Member)>,
        /// The node's clock when it changed.
        at: Instant,
    },
    /// A named role this node holds was acquired, asked back (drain it by the
    /// deadline, then [`crate::Cluster::release_role`]), or lost (P13).
    Role {
        /// What happened.
        event: RoleEvent,
        /// The node's clock when it happened.
        at: Instant,
    },
    /// The node has left the cluster (after [`crate::Cluster::leave`]).
    LeaveFinished {
        /// The node's clock when it finished.
        at: Instant,
    },
    /// The node stopped because it could not write its state to its data directory:
    /// it must not act on a term, vote or log it could not persist. It is no longer
    /// active; restart the process once the disk is fixed (the state written last
    /// is intact).
    Failed {
        /// What went wrong, naming the file.
        error: String,
        /// The node's clock when it stopped.
        at: Instant,
    },
}

impl ClusterEvent {
    /// The node's clock when the event happened.
    pub fn at(&self) -> Instant {
        match self {
            ClusterEvent::RoleChanged { at, .. }
            | ClusterEvent::MembersChanged { at, .. }
            | ClusterEvent::Role { at, .. }
            | ClusterEvent::LeaveFinished { at }
            | ClusterEvent::Failed { at, .. } => *at,
        }
    }
}

/// The node's view as last published by the loop. The lease fields are as of the
/// publication: use [`NodeState::is_primary_at`] and [`NodeState::status_at`] with the
/// node's clock to judge them at the moment of asking.
#[derive(Clone, Debug)]
pub struct NodeState {
    /// The core's status as of the last event that changed it.
    pub status: Status,
    /// The loop has stopped (left, shut down, or failed).
    pub stopped: bool,
    /// Why the loop stopped on its own, if it did: its state could not be persisted
    /// (see [`ClusterEvent::Failed`]).
    pub failure: Option<String>,
}

impl NodeState {
    /// Whether the node holds a valid primary lease at `now` (the node's clock): the
    /// core said the lease was valid when it last published, and its end is still
    /// ahead. A primary that was paused past its lease answers `false` on resuming.
    pub fn is_primary_at(&self, now: Instant) -> bool {
        !self.stopped
            && self.status.lease_valid
            && self.status.lease_until.is_some_and(|until| now < until)
    }

    /// The fencing token at `now`, if primary then.
    pub fn fencing_token_at(&self, now: Instant) -> Option<FencingToken> {
        if self.is_primary_at(now) {
            self.status.fencing_token
        } else {
            None
        }
    }

    /// Whether the node's hold on its roles is valid at `now` (P13).
    fn role_hold_at(&self, now: Instant) -> bool {
        !self.stopped && self.status.role_hold_until.is_some_and(|until| now < until)
    }

    /// The roles the node holds at `now` (the node's clock): those it held when the
    /// loop last published, while the hold lasts and until each one's release
    /// deadline.
    pub fn owned_roles_at(&self, now: Instant) -> Vec<OwnedRole> {
        if !self.role_hold_at(now) {
            return Vec::new();
        }
        self.status
            .owned_roles
            .iter()
            .filter(|o| o.release_by.is_none_or(|by| now < by))
            .cloned()
            .collect()
    }

    /// The node's token for `role` if it holds the role at `now`.
    pub fn role_token_at(&self, role: &str, now: Instant) -> Option<cluster_mode_core::RoleToken> {
        if !self.role_hold_at(now) {
            return None;
        }
        self.status
            .owned_roles
            .iter()
            .find(|o| o.role == role && o.release_by.is_none_or(|by| now < by))
            .map(|o| o.token)
    }

    /// The status with role, lease, fencing token and owned roles judged at `now`.
    pub fn status_at(&self, now: Instant) -> Status {
        let mut s = self.status.clone();
        s.owned_roles = self.owned_roles_at(now);
        let valid = self.is_primary_at(now);
        s.lease_valid = valid;
        if !valid {
            s.fencing_token = None;
            if s.role == Role::Primary {
                s.role = Role::Candidate;
            }
        }
        if self.stopped {
            s.role = Role::Inactive;
        }
        s
    }
}

/// Registered subscribers; each gets every event after it subscribed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Subscribers {
    list: Arc<Mutex<Vec<mpsc::UnboundedSender<ClusterEvent>>>>,
}

impl Subscribers {
    /// A new subscription's receiver.
    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<ClusterEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().push(tx);
        rx
    }

    fn publish(&self, ev: &ClusterEvent) {
        self.lock().retain(|tx| tx.send(ev.clone()).is_ok());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<ClusterEvent>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request from a handle to the loop.
#[derive(Debug)]
pub(crate) enum Control {
    /// Leave gracefully; the sender is resolved when leaving finished.
    Leave(oneshot::Sender<()>),
    /// Stop at once without leaving (like a crash, for tests), or after leaving.
    Stop,
    /// Hand this input to the core (role requests).
    Input(Box<Input>),
    /// A key-value store request; the sender gets the core's answer. Dropped
    /// unanswered if the loop stops.
    Store(
        cluster_mode_core::store::StoreRequest,
        oneshot::Sender<StoreResult>,
    ),
    /// Watch the store's changes to keys with this prefix from this revision (0:
    /// from the next change).
    Watch(String, u64, mpsc::UnboundedSender<WatchItem>),
}

/// One item of a watch: a change, or the error that ends the watch.
pub(crate) type WatchItem =
    Result<cluster_mode_core::store::DataChange, cluster_mode_core::store::StoreError>;

/// A watcher of the store's changes.
struct Watcher {
    prefix: String,
    /// The next revision it has not been sent.
    next: u64,
    tx: mpsc::UnboundedSender<WatchItem>,
}

/// The core's answer to a store request.
pub(crate) type StoreResult =
    Result<cluster_mode_core::store::StoreAnswer, cluster_mode_core::store::StoreError>;

/// Everything the loop needs.
pub(crate) struct DriverParts {
    /// The state machine, already created with the node's identity and config.
    pub(crate) core: ClusterCore,
    /// The node's clock (the one `core` was created with).
    pub(crate) clock: Arc<dyn Clock>,
    /// Where `Send` commands go.
    pub(crate) transport: Arc<dyn Transport>,
    /// The discovery source.
    pub(crate) discovery: Arc<dyn Discovery>,
    /// Poll discovery this often instead of the source's own `poll_interval()`.
    pub(crate) discovery_interval: Option<Duration>,
    /// Received envelopes and delivery failures.
    pub(crate) inbox: InboxReceiver,
    /// Shared counters.
    pub(crate) counters: Arc<Counters>,
    /// Subscribers to events.
    pub(crate) subscribers: Subscribers,
    /// Where `Persist` commands go: `Some` exactly when `core` is durable.
    pub(crate) storage: Option<Storage>,
    /// Records the primary intervals at each publication of the view.
    pub(crate) leases: LeaseLog,
}

/// What [`spawn_driver`] returns: the ways to talk to the running loop.
#[derive(Clone, Debug)]
pub(crate) struct DriverHandle {
    /// The node id.
    pub(crate) id: NodeId,
    /// The latest published view.
    pub(crate) state: watch::Receiver<NodeState>,
    /// Requests to the loop.
    pub(crate) control: mpsc::Sender<Control>,
}

/// How long one discovery call may take before it counts as failed.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Spawns the loop (and the discovery task feeding it) on the current runtime.
pub(crate) fn spawn_driver(parts: DriverParts) -> DriverHandle {
    let now = parts.clock.now();
    let id = parts.core.identity().id;
    let (state_tx, state_rx) = watch::channel(NodeState {
        status: parts.core.status(now),
        stopped: false,
        failure: None,
    });
    let (control_tx, control_rx) = mpsc::channel(16);
    let (disc_tx, disc_rx) = mpsc::channel(4);
    let interval = parts
        .discovery_interval
        .unwrap_or_else(|| parts.discovery.poll_interval());
    let disc_task = tokio::spawn(
        discovery_task(
            parts.discovery.clone(),
            interval,
            disc_tx,
            parts.counters.clone(),
        )
        .instrument(info_span!("cluster_discovery", node = %id)),
    );
    let term = parts.core.term();
    let driver = Driver {
        core: parts.core,
        clock: parts.clock,
        transport: parts.transport,
        counters: parts.counters,
        subscribers: parts.subscribers,
        state: state_tx,
        leave_waiters: Vec::new(),
        store_waiters: std::collections::BTreeMap::new(),
        next_store_id: 0,
        watchers: Vec::new(),
        watched_revision: 0,
        queued: Vec::new(),
        span: info_span!("cluster", node = %id, term),
        last_term: term,
        last_now: now,
        storage: parts.storage,
        failure: None,
        leases: parts.leases,
        last_primary: None,
    };
    tokio::spawn(async move {
        driver.run(parts.inbox.rx, control_rx, disc_rx).await;
        disc_task.abort();
    });
    DriverHandle {
        id,
        state: state_rx,
        control: control_tx,
    }
}

struct Driver {
    core: ClusterCore,
    clock: Arc<dyn Clock>,
    transport: Arc<dyn Transport>,
    counters: Arc<Counters>,
    subscribers: Subscribers,
    state: watch::Sender<NodeState>,
    leave_waiters: Vec<oneshot::Sender<()>>,
    /// Store requests handed to the core, by the id the core answers with.
    store_waiters: std::collections::BTreeMap<u64, oneshot::Sender<StoreResult>>,
    next_store_id: u64,
    watchers: Vec<Watcher>,
    /// The store revision the watchers were last fed at.
    watched_revision: u64,
    /// Commands of a batch's earlier inputs, in order, not yet carried out.
    queued: Vec<Command>,
    span: tracing::Span,
    last_term: u64,
    /// The `now` of the last input handed to the core.
    last_now: Instant,
    storage: Option<Storage>,
    /// Set when a `Persist` failed: the loop stops before handling anything else.
    failure: Option<String>,
    /// Records the primary intervals at each publication of the view.
    leases: LeaseLog,
    /// The last primary this node knew of (for `primary_changes`).
    last_primary: Option<NodeId>,
}

/// The most store requests handed to the core before their commands are carried
/// out (and their entries persisted with one fsync).
const STORE_BATCH: usize = 256;

/// What woke the loop.
enum Step {
    Tick,
    Control(Option<Control>),
    Discovery(Option<Input>),
    Inbound(Option<Inbound>),
}

impl Driver {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Inbound>,
        mut control: mpsc::Receiver<Control>,
        mut discovery: mpsc::Receiver<Input>,
    ) {
        {
            let span = self.span.clone();
            let _e = span.enter();
            info!(addr = %self.core.identity().addr, "cluster node started");
            self.after_input();
        }
        let mut control_open = true;
        let mut discovery_open = true;
        let mut prefer_inbox = false;
        loop {
            if self.failure.is_some() {
                break;
            }
            let deadline = self.core.poll_timeout().map(|t| self.clock.deadline(t));
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            // Peer messages and the application's requests take turns when both
            // wait: a flood of either (a thousand reads a millisecond from local
            // tasks, say) must not starve the other, or a primary that never reads its
            // followers' acknowledgements loses its lease and is deposed.
            prefer_inbox = !prefer_inbox;
            let step = if prefer_inbox {
                tokio::select! {
                    biased;
                    _ = sleep => Step::Tick,
                    // Discovery before messages: a flood of messages must not starve it.
                    d = discovery.recv(), if discovery_open => Step::Discovery(d),
                    msg = inbox.recv() => Step::Inbound(msg),
                    ctl = control.recv(), if control_open => Step::Control(ctl),
                }
            } else {
                tokio::select! {
                    biased;
                    _ = sleep => Step::Tick,
                    d = discovery.recv(), if discovery_open => Step::Discovery(d),
                    ctl = control.recv(), if control_open => Step::Control(ctl),
                    msg = inbox.recv() => Step::Inbound(msg),
                }
            };
            match step {
                Step::Tick => {
                    let _ = self.input(Input::Tick);
                    // The core guarantees that a tick moves its next timeout past the
                    // `now` it was given; were it not so, this loop would spin on
                    // ticks. Counted, and fatal in debug builds.
                    if self.core.poll_timeout().is_some_and(|t| t <= self.last_now) {
                        bump(&self.counters.tick_not_advanced);
                        warn!("the core's next timeout did not move past a tick");
                        debug_assert!(false, "the core's next timeout did not move past a tick");
                    }
                }
                Step::Control(ctl) => match ctl {
                    Some(Control::Stop) => break,
                    Some(Control::Store(request, reply)) => {
                        // Every store request already waiting goes in with this one, and
                        // their commands are carried out together (one fsync for all
                        // their entries with a data directory).
                        let mut queued = vec![(request, reply)];
                        let mut other = None;
                        while queued.len() < STORE_BATCH {
                            match control.try_recv() {
                                Ok(Control::Store(r, tx)) => queued.push((r, tx)),
                                Ok(c) => {
                                    other = Some(c);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.store_batch(queued);
                        // Anything else taken off the channel: after the batch, as it came.
                        match other {
                            Some(Control::Stop) => break,
                            Some(c) => self.control(c),
                            None => {}
                        }
                    }
                    Some(c) => self.control(c),
                    None => control_open = false,
                },
                Step::Discovery(d) => match d {
                    Some(input) => {
                        let _ = self.input(input);
                    }
                    None => discovery_open = false,
                },
                Step::Inbound(msg) => match msg {
                    Some(Inbound::Message { env, reply }) => {
                        bump(&self.counters.messages_in);
                        self.counters.detail.count_in(&env.msg);
                        // The echo of the leader's send time, for the round trip.
                        let echo = match &env.msg {
                            cluster_mode_core::Message::AppendReply(a) => Some((a.term, a.sent_at)),
                            _ => None,
                        };
                        let r = self.input(Input::Message(env));
                        if let (Ok(()), Some((term, sent_at))) = (&r, echo) {
                            self.observe_round_trip(term, sent_at);
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                    }
                    Some(Inbound::Unreachable(addr)) => {
                        let _ = self.input(Input::Unreachable(addr));
                    }
                    Some(Inbound::ForceRecover) => {
                        warn!("an operator forces a recovery");
                        let _ = self.input(Input::ForceRecover);
                    }
                    // No transport holds an Inbox any more: nothing can arrive.
                    None => break,
                },
            }
        }
        // Release the data directory's lock before saying "stopped": a process may
        // start the node again on it as soon as it sees that.
        drop(self.storage.take());
        let failure = self.failure.take();
        self.leases.publish(&self.state, &*self.clock, |s| {
            s.stopped = true;
            s.failure = failure;
            true
        });
        for w in self.leave_waiters.drain(..) {
            let _ = w.send(());
        }
        let _e = self.span.enter();
        info!("cluster node stopped");
    }

    /// Hands one input to the core, applies its commands, publishes the view.
    /// Hands a batch of store requests to the core, then carries out their commands
    /// together.
    fn store_batch(
        &mut self,
        batch: Vec<(
            cluster_mode_core::store::StoreRequest,
            oneshot::Sender<StoreResult>,
        )>,
    ) {
        let span = self.span.clone();
        let _e = span.enter();
        let now = self.clock.now();
        self.last_now = now;
        for (request, reply) in batch {
            self.next_store_id += 1;
            let id = self.next_store_id;
            self.store_waiters.insert(id, reply);
            let _ = self.core.handle(now, Input::Store { id, request });
            // Each input's commands are taken right after it, as the core requires
            // (it puts a `Persist` at the front of the queue); they are carried out
            // together below.
            self.queued
                .extend(std::iter::from_fn(|| self.core.poll_command()));
        }
        self.after_input();
    }

    /// A control request other than a stop.
    fn control(&mut self, c: Control) {
        match c {
            Control::Leave(done) => {
                if self.core.has_left() {
                    let _ = done.send(());
                } else {
                    self.leave_waiters.push(done);
                    let _ = self.input(Input::Leave);
                }
            }
            Control::Input(input) => {
                let _ = self.input(*input);
            }
            Control::Watch(prefix, from, tx) => {
                let next = if from == 0 {
                    self.core.store_revision() + 1
                } else {
                    from
                };
                self.watchers.push(Watcher { prefix, next, tx });
                self.feed_watchers();
            }
            Control::Store(request, reply) => self.store_batch(vec![(request, reply)]),
            // The caller handles a stop itself.
            Control::Stop => {}
        }
    }

    fn input(&mut self, input: Input) -> Result<(), Rejected> {
        // Entered only around synchronous work, never across an await.
        let span = self.span.clone();
        let _e = span.enter();
        let now = self.clock.now();
        self.last_now = now;
        let r = self.core.handle(now, input);
        if let Err(reason) = &r {
            debug!(%reason, "message rejected by the core");
        }
        self.after_input();
        r
    }

    fn after_input(&mut self) {
        let now = self.clock.now();
        let term = self.core.term();
        if term != self.last_term {
            // A new span per term, so every later line carries the current term. A
            // root span (`parent: None`): made while the old one is entered, it would
            // otherwise nest in it, one level more per term, for as long as it runs.
            self.last_term = term;
            let me = self.core.identity().id;
            self.span = info_span!(parent: None, "cluster", node = %me, term);
            // A node starting an election moves to a new term and votes for itself
            // in one step; a term learned from another node carries no vote of its
            // own. Term changes are rare, so the copy of the state is cheap enough.
            if self.core.durable_state().voted_for == Some(me) {
                bump(&self.counters.elections_started);
            }
        }
        // The view is published before the first message leaves (and after the state
        // it rests on is persisted): a leaving primary gives its lease up and hands
        // over (TimeoutNow) in one input, and `is_primary()` on another thread must
        // already answer `false` when the successor can be elected (issue 10).
        let mut published = false;
        let mut commands = std::mem::take(&mut self.queued);
        commands.extend(std::iter::from_fn(|| self.core.poll_command()));
        // Group commit: the appends of several inputs handled together (a batch of
        // store requests) are written with one fsync, ahead of all their commands.
        // Persisting sooner is always safe; without a full `Persist` among them the
        // appends follow one another, so they concatenate.
        let appends = commands
            .iter()
            .filter(|c| matches!(c, Command::PersistAppend(_)))
            .count();
        if appends > 1 && !commands.iter().any(|c| matches!(c, Command::Persist(_))) {
            let mut entries = Vec::new();
            commands.retain_mut(|c| match c {
                Command::PersistAppend(e) => {
                    entries.append(e);
                    false
                }
                _ => true,
            });
            commands.insert(0, Command::PersistAppend(entries));
        }
        for cmd in commands {
            match cmd {
                Command::Persist(state) => {
                    if let Err(e) = self.persist(&state) {
                        // The commands after it rest on it: drop them, and stop.
                        error!(error = %e, "cannot persist the node's state; stopping the node");
                        self.subscribers.publish(&ClusterEvent::Failed {
                            error: e.clone(),
                            at: now,
                        });
                        self.failure = Some(e);
                        return;
                    }
                }
                Command::PersistAppend(entries) => {
                    if let Err(e) = self.persist_append(&entries) {
                        error!(error = %e, "cannot persist the node's log; stopping the node");
                        self.subscribers.publish(&ClusterEvent::Failed {
                            error: e.clone(),
                            at: now,
                        });
                        self.failure = Some(e);
                        return;
                    }
                }
                Command::Send { to, msg, class } => {
                    if !published {
                        self.publish_status(now);
                        published = true;
                    }
                    bump(&self.counters.messages_out);
                    self.counters.detail.count_out(&msg.msg);
                    self.transport.send(&to, msg, class);
                }
                Command::RoleChanged {
                    role,
                    term,
                    primary,
                    lease_until,
                    fencing_token,
                } => {
                    if let Some(p) = &primary {
                        if self.last_primary != Some(p.id) {
                            self.last_primary = Some(p.id);
                            bump(&self.counters.primary_changes);
                        }
                    }
                    // The core logs the change (inside this span).
                    self.subscribers.publish(&ClusterEvent::RoleChanged {
                        role,
                        term,
                        primary,
                        lease_until,
                        fencing_token,
                        at: now,
                    });
                }
                Command::MembersChanged(members) => {
                    info!(count = members.len(), "members changed");
                    self.subscribers
                        .publish(&ClusterEvent::MembersChanged { members, at: now });
                }
                Command::Role(event) => {
                    // The core logs the change (inside this span).
                    self.subscribers
                        .publish(&ClusterEvent::Role { event, at: now });
                }
                Command::LeaveFinished => {
                    info!("left the cluster");
                    self.subscribers
                        .publish(&ClusterEvent::LeaveFinished { at: now });
                    for w in self.leave_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
                Command::StoreReply { id, result } => {
                    if let Some(reply) = self.store_waiters.remove(&id) {
                        // The asker may have given up (a dropped future): nothing to do.
                        let _ = reply.send(result);
                    }
                }
                other => debug!(?other, "command not understood by this shell"),
            }
        }
        if !published {
            self.publish_status(now);
        }
        if !self.watchers.is_empty() && self.core.store_revision() != self.watched_revision {
            self.feed_watchers();
        }
    }

    /// Sends every watcher the changes it has not had; ends the watches whose changes
    /// are no longer kept (or whose receiver is gone).
    fn feed_watchers(&mut self) {
        let revision = self.core.store_revision();
        self.watched_revision = revision;
        let core = &self.core;
        self.watchers.retain_mut(|w| {
            if w.next > revision {
                return !w.tx.is_closed();
            }
            let open = match core.store_changes(w.next) {
                Ok(changes) => changes
                    .filter(|c| c.key.starts_with(&w.prefix))
                    .all(|c| w.tx.send(Ok(c.clone())).is_ok()),
                Err(oldest) => {
                    let _ =
                        w.tx.send(Err(cluster_mode_core::store::StoreError::Compacted {
                            oldest,
                        }));
                    false
                }
            };
            w.next = revision + 1;
            open
        });
    }

    /// Records the round trip of an append or heartbeat whose reply (of `term`,
    /// echoing `sent_at`) the core accepted, if this node leads in that term: the
    /// echo is then the send time on this node's clock. A reply from an earlier term
    /// (or a forged one) is not counted; one that echoes a time ahead of the clock
    /// is not either.
    fn observe_round_trip(&self, term: u64, sent_at: Instant) {
        if self.core.is_leader() && term == self.core.term() && sent_at <= self.last_now {
            self.counters
                .detail
                .observe_round_trip(self.last_now.saturating_duration_since(sent_at));
        }
    }

    /// Publishes the node's view at `now` to the `Cluster` handles (if it changed).
    ///
    /// The view is refreshed in place (`ClusterCore::refresh_status`): building a
    /// whole new `Status` after every input, a string per member and per role, and
    /// comparing it with the last one was most of a node's work with named roles.
    fn publish_status(&mut self, now: Instant) {
        let core = &self.core;
        self.leases.publish(&self.state, &*self.clock, |s| {
            let changed = core.refresh_status(now, &mut s.status);
            debug_assert_eq!(s.status, core.status(now), "refresh_status is status");
            changed
        });
    }

    /// Writes `state` to the node's storage, synchronously: it is small and written
    /// only when the term, vote, cluster or log changed, never on a heartbeat.
    fn persist_append(&self, entries: &[cluster_mode_core::Entry]) -> Result<(), String> {
        let Some(storage) = &self.storage else {
            return Err(
                "the core asked to persist its log but the node has no data directory".into(),
            );
        };
        let id = self.core.identity().id;
        storage.append(id, entries).map_err(|e| e.to_string())?;
        bump(&self.counters.persist_writes);
        Ok(())
    }

    fn persist(&self, state: &DurableState) -> Result<(), String> {
        let Some(storage) = &self.storage else {
            // A core is made durable only together with a storage.
            return Err(
                "the core asked to persist its state but the node has no data directory".into(),
            );
        };
        storage.store(state).map_err(|e| e.to_string())?;
        bump(&self.counters.persist_writes);
        debug!(
            file = %storage.describe().display(),
            term = state.term,
            entries = state.entries.len(),
            "state persisted"
        );
        Ok(())
    }
}

/// Polls discovery (and listens to its push stream, when it has one) and feeds the
/// loop. An error becomes `Input::DiscoveryFailed`, never an empty list.
async fn discovery_task(
    discovery: Arc<dyn Discovery>,
    interval: Duration,
    tx: mpsc::Sender<Input>,
    counters: Arc<Counters>,
) {
    let interval = interval.max(Duration::from_millis(10));
    let mut push = discovery.watch();
    let mut inputs = DiscoveryInputs::default();
    loop {
        let result = match tokio::time::timeout(DISCOVERY_TIMEOUT, discovery.snapshot()).await {
            Ok(r) => inputs.input(r),
            Err(_) => Input::DiscoveryFailed(format!(
                "discovery did not answer within {DISCOVERY_TIMEOUT:?}"
            )),
        };
        if matches!(result, Input::DiscoveryFailed(_)) {
            bump(&counters.discovery_failures);
            bump(&counters.discovery_poll_failures);
        } else {
            bump(&counters.discovery_poll_answers);
        }
        if tx.send(result).await.is_err() {
            return;
        }
        let sleep = tokio::time::sleep(interval);
        tokio::pin!(sleep);
        loop {
            let pushed = async {
                match push.as_mut() {
                    Some(p) => p.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                r = pushed => match r {
                    Some(r) => {
                        let input = inputs.input(r);
                        if matches!(input, Input::DiscoveryFailed(_)) {
                            bump(&counters.discovery_failures);
                            bump(&counters.discovery_push_failures);
                        } else {
                            bump(&counters.discovery_push_answers);
                        }
                        if tx.send(input).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        warn!("discovery push stream ended; polling only");
                        push = None;
                    }
                },
                _ = &mut sleep => break,
            }
        }
    }
}

/// Turns discovery answers into the core's inputs. An answer equal to the previous
/// one (most polls) reuses its converted list: formatting and allocating every
/// listed address at every poll was a fifth of a 100-member simulation.
#[derive(Default)]
struct DiscoveryInputs {
    last: Option<(Vec<Instance>, Vec<Discovered>)>,
}

impl DiscoveryInputs {
    fn input(&mut self, r: DiscoveryResult) -> Input {
        let list = match r {
            Ok(list) => list,
            Err(e) => return Input::DiscoveryFailed(e.to_string()),
        };
        if let Some((prev, converted)) = &self.last {
            if *prev == list {
                return Input::Discovery(converted.clone());
            }
        }
        let converted: Vec<Discovered> = list
            .iter()
            .filter(|i| i.ready)
            .map(|i| Discovered {
                addr: Address::from(i.addr.to_string()),
                name: i.name.clone(),
            })
            .collect();
        self.last = Some((list, converted.clone()));
        Input::Discovery(converted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_mode_discovery::DiscoveryError;

    fn listed(input: Input) -> Vec<(String, Option<String>)> {
        match input {
            Input::Discovery(list) => list
                .into_iter()
                .map(|d| (d.addr.to_string(), d.name))
                .collect(),
            other => panic!("not a discovery answer: {other:?}"),
        }
    }

    /// A repeated answer gives the same list as the first time, and any change
    /// (an address, a name, readiness) is converted afresh, never the cached list.
    #[test]
    fn discovery_answers_convert_the_same_whether_repeated_or_changed() {
        let a = Instance::new("10.0.0.1:7000".parse().unwrap()).with_name("a");
        let b = Instance::new("10.0.0.2:7000".parse().unwrap());
        let mut inputs = DiscoveryInputs::default();
        let first = listed(inputs.input(Ok(vec![a.clone(), b.clone()])));
        assert_eq!(
            first,
            [
                ("10.0.0.1:7000".to_string(), Some("a".to_string())),
                ("10.0.0.2:7000".to_string(), None)
            ]
        );
        assert_eq!(listed(inputs.input(Ok(vec![a.clone(), b.clone()]))), first);
        let renamed = b.clone().with_name("b");
        assert_eq!(
            listed(inputs.input(Ok(vec![a.clone(), renamed]))),
            [
                ("10.0.0.1:7000".to_string(), Some("a".to_string())),
                ("10.0.0.2:7000".to_string(), Some("b".to_string()))
            ]
        );
        let mut not_ready = a.clone();
        not_ready.ready = false;
        assert_eq!(
            listed(inputs.input(Ok(vec![not_ready, b.clone()]))),
            [("10.0.0.2:7000".to_string(), None)]
        );
        let failed = inputs.input(Err(DiscoveryError::Backend("down".into())));
        assert!(matches!(failed, Input::DiscoveryFailed(_)));
        assert_eq!(listed(inputs.input(Ok(vec![a, b]))), first);
    }
}
