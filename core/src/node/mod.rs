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
//! | `admin.rs` | `AdminQueue` | who joins, is promoted or removed (P2, P3, P9) |
//! | `leave.rs` | `LeaveState` | graceful leave (P8) |
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
mod role;
mod timers;

use crate::config::{Config, ConfigError};
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
use role::{HardState, RoleState};
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
    out: Outbox,
}

impl ClusterCore {
    /// A new node, not yet in any cluster. `seed` drives every random choice (election
    /// timeouts, the new cluster's id); `now` is the node's clock at creation.
    ///
    /// Fails, changing nothing, if `config` does not [`validate`](Config::validate).
    pub fn new(me: Identity, config: Config, seed: u64, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let empty = Snapshot {
            index: 0,
            term: 0,
            membership: Membership::default(),
        };
        let mut core = ClusterCore {
            me,
            cfg: config,
            rng: Rng::new(seed),
            hard: HardState::default(),
            log: Log::new(empty),
            role: RoleState::default(),
            timers: TimerTable::default(),
            peers: Peers::default(),
            boot: Bootstrap::default(),
            admin: AdminQueue::default(),
            join: Joiner::default(),
            leave: LeaveState::default(),
            out: Outbox::default(),
        };
        core.timers.set(Timer::Housekeeping, now);
        core.boot.next_eval = now;
        Ok(core)
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
                if self.hard.cluster.is_none() && self.peers.is_listed(&addr) {
                    let soon = now + self.cfg.probe_interval / UNREACHABLE_RETRY_FRACTION;
                    self.timers.set_earlier(Timer::Housekeeping, soon);
                }
            }
            Input::Tick => self.on_tick(now),
            Input::Leave => self.start_leave(now),
        }
        self.emit_changes(now);
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
