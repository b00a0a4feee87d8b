//! [`ClusterCore`]: the sans-IO state machine.
//!
//! Its state is grouped by concern, each group owned by the file named for it; every
//! file adds the handlers of its concern to `ClusterCore`:
//!
//! | file | state it owns | what it decides |
//! |---|---|---|
//! | `role.rs` | `HardState` (cluster, term, vote), `RoleState` | every role change (`set_role`) |
//! | `timers.rs` | `TimerTable` | which timers a tick serves |
//! | `outbox.rs` | `Outbox` | the commands, role and member reports |
//! | `dispatch.rs` | | which messages are accepted, and who handles them |
//! | `peers.rs` | `Peers` (what discovery and probes said) | probing |
//! | `joining.rs` | `Joiner` | joining a cluster, housekeeping |
//! | `bootstrap.rs` | `Bootstrap` | forming the first configuration (P4) |
//! | `election.rs` | | pre-votes and votes (P5), handover (P8) |
//! | `leader.rs` | `LeaderState` (in the leader role) | heartbeats, commit, lease (P6), CheckQuorum |
//! | `follower.rs` | | storing what the leader sends |
//! | `snapshot.rs` | `Transfers` (in `LeaderState`), `Incoming` | snapshots sent whole or in pieces |
//! | `admin.rs` | `AdminQueue` | who joins, is promoted or removed (P2, P3, P9) |
//! | `leave.rs` | `LeaveState` | graceful leave (P8) |
//! | `recovery.rs` | `RecoveryState` | recovering a cluster whose lost voters are proven dead (P11) |
//! | `roles.rs` | `RolesState`, `LeaderRoles` | named roles: holds, placement, role events (P13) |
//! | `store.rs` | `StoreState`, `LeaderStore` | the key-value store's requests: forwarding, writes, reads |
//! | `queries.rs` | | the view asked by shells and applications |

mod admin;
mod bootstrap;
mod dispatch;
mod election;
mod follower;
mod joining;
mod leader;
mod leave;
mod outbox;
mod peers;
mod queries;
mod recovery;
mod role;
mod roles;
mod snapshot;
mod store;
mod timers;

use crate::config::{Config, ConfigError};
use crate::durable::{DurableState, Fingerprint, RestoreError};
use crate::error::Rejected;
use crate::event::{Command, Input};
use crate::id::Identity;
use crate::log::Log;
use crate::membership::{Membership, Snapshot};
use crate::rng::SplitMix64 as Rng;
use crate::time::Instant;
use tracing::{debug, warn};

use admin::AdminQueue;
use bootstrap::Bootstrap;
use joining::Joiner;
use leave::LeaveState;
use outbox::Outbox;
use peers::Peers;
use recovery::RecoveryState;
use role::{HardState, RoleState};
use roles::RolesState;
use timers::{Timer, TimerTable};

/// A fresh node that could not reach a listed peer probes again after this fraction
/// of `probe_interval` (at a cold start, the peer is often not listening yet).
const UNREACHABLE_RETRY_FRACTION: u32 = 4;

/// The sans-IO cluster node.
///
/// Drive it with three calls:
/// - [`handle`](Self::handle) every event: a discovery answer or failure, a received
///   message, a delivery failure, a timer tick, a leave request;
/// - then drain [`poll_command`](Self::poll_command) until `None` and carry out each
///   command in order;
/// - then ask [`poll_timeout`](Self::poll_timeout) when to tick next, and call
///   `handle(now, Input::Tick)` at or after that instant (any earlier tick is
///   harmless).
///
/// Every call takes `now` from the node's monotonic clock; it must never go backwards.
/// The same identity, config, seed and inputs give the same commands, bit for bit.
pub struct ClusterCore {
    me: Identity,
    cfg: Config,
    rng: Rng,
    hard: HardState,
    log: Log,
    role: RoleState,
    timers: TimerTable,
    peers: Peers,
    boot: Bootstrap,
    admin: AdminQueue,
    join: Joiner,
    leave: LeaveState,
    recovery: RecoveryState,
    roles: RolesState,
    store: store::StoreState,
    /// A snapshot arriving in pieces.
    snap_in: snapshot::Incoming,
    out: Outbox,
    /// For a [`durable`](Self::durable) core: the state last handed out in a
    /// `Command::Persist`. `None`: nothing is persisted.
    persisted: Option<Fingerprint>,
}

impl ClusterCore {
    /// A new node, not yet in any cluster. `seed` drives every random choice (election
    /// timeouts, the new cluster's id); `now` is the node's clock at creation.
    ///
    /// Fails, changing nothing, if `config` does not [`validate`](Config::validate).
    pub fn new(me: Identity, config: Config, seed: u64, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let keep = config.store_log_entries;
        let empty = Snapshot {
            index: 0,
            term: 0,
            membership: Membership::default(),
            data: Default::default(),
        };
        let mut core = ClusterCore {
            me,
            cfg: config,
            rng: Rng::new(seed),
            hard: HardState::default(),
            log: Log::new(empty).keep_with_data(keep),
            role: RoleState::default(),
            timers: TimerTable::default(),
            peers: Peers::default(),
            boot: Bootstrap::default(),
            admin: AdminQueue::default(),
            join: Joiner::default(),
            leave: LeaveState::default(),
            recovery: RecoveryState::default(),
            roles: RolesState::default(),
            store: store::StoreState::default(),
            snap_in: snapshot::Incoming::default(),
            out: Outbox::default(),
            persisted: None,
        };
        core.timers.set(Timer::Housekeeping, now);
        core.boot.next_eval = now;
        Ok(core)
    }

    /// Makes this core durable: from now on, an input that changes its term, vote,
    /// cluster or log puts a [`Command::Persist`] first among its commands. The first
    /// `Persist` (this node's id and state) is queued at once.
    #[must_use]
    pub fn durable(mut self) -> Self {
        self.persisted = Some(self.fingerprint());
        let state = self.durable_state();
        self.out.commands.push_front(Command::Persist(state));
        self
    }

    /// A durable node restarted from the state it last persisted: the same member of
    /// the same cluster, with its term, vote and log (P12). `me.id` must be the id in
    /// `state`; its address may differ (a pod rescheduled with its volume).
    ///
    /// Until `election_timeout_min` has passed the node refuses every vote, as if it
    /// had just heard from a leader: it may have acknowledged a leader's heartbeat
    /// just before it stopped, and that leader's lease counts on it (P6).
    ///
    /// Fails, starting nothing, if `config` does not validate or `state` does not
    /// [`validate`](DurableState::validate).
    pub fn restore(
        me: Identity,
        config: Config,
        seed: u64,
        now: Instant,
        state: DurableState,
    ) -> Result<Self, RestoreError> {
        state.validate(me.id)?;
        let mut core = ClusterCore::new(me, config, seed, now).map_err(|e| RestoreError {
            reason: format!("invalid config: {e}"),
        })?;
        if let Some(cluster) = state.cluster {
            core.hard = HardState {
                cluster: Some(cluster),
                term: state.term,
                voted_for: state.voted_for,
            };
            core.log =
                Log::restore(state.base, state.entries).keep_with_data(core.cfg.store_log_entries);
            core.role.last_leader_contact = Some(now);
            core.role.refuse_votes_until = Some(now + core.cfg.election_timeout_min);
            core.reset_election_timer(now);
            core.out.members_dirty = true;
            core.roles_after_restore();
            tracing::info!(%cluster, term = core.hard.term, "restored from durable state");
        }
        Ok(core.durable())
    }

    /// The state a durable node persists (see [`DurableState`]).
    pub fn durable_state(&self) -> DurableState {
        DurableState {
            id: self.me.id,
            cluster: self.hard.cluster,
            term: self.hard.term,
            voted_for: self.hard.voted_for,
            base: self.log.base().clone(),
            entries: self.log.tail().to_vec(),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        let base = self.log.base();
        Fingerprint {
            cluster: self.hard.cluster,
            term: self.hard.term,
            voted_for: self.hard.voted_for,
            base: (base.index, base.term),
            last: (self.log.last_index(), self.log.last_term()),
        }
    }

    /// Queues a `Persist` ahead of this input's other commands if the durable state
    /// changed: they may announce a vote or an acknowledgement that rests on it.
    ///
    /// When only entries were added after the last persisted entry (a follower or
    /// leader adding to its log, the common case under a write load), only those are
    /// handed out (`PersistAppend`): the shell appends them to what it has.
    fn persist_if_changed(&mut self) {
        let Some(before) = self.persisted else { return };
        let now = self.fingerprint();
        if now == before {
            return;
        }
        self.persisted = Some(now);
        let extends = now.cluster == before.cluster
            && now.term == before.term
            && now.voted_for == before.voted_for
            && now.base == before.base
            && now.last.0 > before.last.0
            && self.log.term_at(before.last.0) == Some(before.last.1);
        let cmd = if extends {
            Command::PersistAppend(self.log.entries_after(before.last.0, usize::MAX).to_vec())
        } else {
            Command::Persist(self.durable_state())
        };
        self.out.commands.push_front(cmd);
    }

    /// Handles one event at `now`. Afterwards drain [`poll_command`](Self::poll_command)
    /// and re-read [`poll_timeout`](Self::poll_timeout).
    ///
    /// A message that is refused returns the reason and changes nothing observable: no
    /// command is queued and no state is touched.
    pub fn handle(&mut self, now: Instant, input: Input) -> Result<(), Rejected> {
        let span = tracing::debug_span!("node", id = %self.me.id, term = self.hard.term);
        let _enter = span.enter();
        if self.leave.left {
            return match input {
                Input::Message(_) => Err(Rejected::Left),
                _ => Ok(()),
            };
        }
        match input {
            Input::Discovery(list) => self.on_discovery(now, list),
            Input::DiscoveryFailed(reason) => {
                warn!(%reason, "discovery failed; membership unchanged");
            }
            Input::Message(env) => self.on_message(now, env)?,
            Input::Unreachable(addr) => {
                debug!(%addr, "peer unreachable");
                // During a cold start a peer often refuses the first probe because it
                // is not listening yet: probe again soon rather than a round later.
                if self.peers.mark_unreachable(&addr) && self.hard.cluster.is_none() {
                    let soon = now + self.cfg.probe_interval / UNREACHABLE_RETRY_FRACTION;
                    self.timers.set_earlier(Timer::Housekeeping, soon);
                }
            }
            Input::Tick => self.on_tick(now),
            Input::Leave => self.start_leave(now),
            Input::ForceRecover => self.force_recover(now),
            Input::DeclareRoles(roles) => self.declare_roles(now, roles),
            Input::RemoveRoles(roles) => self.remove_roles(now, roles),
            Input::ReleaseRole(role) => self.release_role(now, &role),
            Input::Store { id, request } => self.on_store_input(now, id, request),
        }
        self.follow_store_leader(now);
        self.answer_committed_store_entries();
        self.serve_store_reads();
        self.flush_store(now);
        self.emit_changes(now);
        self.refresh_roles(now);
        self.persist_if_changed();
        Ok(())
    }

    /// The next command for the shell, in order; `None` when there are no more.
    /// Drain it after every [`handle`](Self::handle).
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.commands.pop_front()
    }

    /// The instant at which the shell must next call `handle(now, Input::Tick)`, or
    /// `None` if no timer is needed (after leaving). Read it after every `handle`;
    /// it can move earlier or later. After `handle(now, Input::Tick)` it is always
    /// later than `now`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.leave.left {
            return None;
        }
        self.timers.next()
    }
}
