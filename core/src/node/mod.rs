//! [`ClusterCore`]: the sans-IO state machine. Its `impl` is spread over files named
//! for the rule they implement: `bootstrap`, `election`, `replication`, `admin`
//! (who joins, who is promoted or removed) and `leave`.

mod admin;
mod bootstrap;
mod election;
mod leave;
mod replication;

use crate::config::{Config, ConfigError};
use crate::event::{Command, Discovered, Input};
use crate::id::{Address, ClusterId, Identity, NodeId};
use crate::log::Log;
use crate::membership::{Membership, Snapshot};
use crate::message::{Envelope, Message, ProbeAck, ProbeState, PROTOCOL_VERSION};
use crate::rng::Rng;
use crate::status::{FencingToken, MemberStatus, PrimaryInfo, Role, Status};
use crate::time::{duration_nanos, Instant};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use tracing::{debug, info, warn};

pub(crate) use admin::AdminQueue;

/// The fewest probes a fresh node sends per housekeeping round.
const PROBE_FANOUT: usize = 16;
/// A fresh node probes every listed peer at least once in this many rounds.
pub(crate) const PROBE_SWEEP_ROUNDS: usize = 8;
pub(crate) use bootstrap::Bootstrap;
pub(crate) use leave::Leaving;

/// Why [`ClusterCore::handle`] refused a message. The core's state is unchanged and
/// the reason has been logged; shells count these and answer 4xx.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The envelope's protocol version is not ours.
    Version(u16),
    /// The sender belongs to another cluster (P10).
    ForeignCluster {
        /// Ours.
        ours: ClusterId,
        /// Theirs.
        theirs: ClusterId,
    },
    /// Addressed to another node id: a previous process at this address.
    NotForMe,
    /// The message breaks a protocol rule (for example entries that do not follow
    /// each other).
    Invalid(&'static str),
    /// This node has left; it handles nothing more.
    Left,
}

impl core::fmt::Display for Rejected {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Rejected::Version(v) => write!(f, "protocol version {v}, expected {PROTOCOL_VERSION}"),
            Rejected::ForeignCluster { ours, theirs } => {
                write!(
                    f,
                    "message from cluster {theirs}, this node is in cluster {ours}"
                )
            }
            Rejected::NotForMe => write!(f, "addressed to a previous process at this address"),
            Rejected::Invalid(why) => write!(f, "invalid message: {why}"),
            Rejected::Left => write!(f, "this node has left the cluster"),
        }
    }
}

impl std::error::Error for Rejected {}

/// What this node knows of one discovered address.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) id: Option<NodeId>,
    pub(crate) name: Option<String>,
    /// In the latest non-empty discovery answer.
    pub(crate) listed: bool,
    /// Since when it has not been listed.
    pub(crate) unlisted_since: Option<Instant>,
    /// Its latest probe answer said it is fresh (not in a cluster).
    pub(crate) fresh: bool,
    /// When it last answered a probe.
    pub(crate) answered_at: Option<Instant>,
    /// When this node first probed it.
    pub(crate) first_probed_at: Option<Instant>,
}

impl Peer {
    fn unlisted(now: Instant) -> Self {
        Peer {
            id: None,
            name: None,
            listed: false,
            unlisted_since: Some(now),
            fresh: false,
            answered_at: None,
            first_probed_at: None,
        }
    }
}

/// The Raft role.
#[derive(Clone, Debug)]
pub(crate) enum RaftRole {
    Follower,
    PreCandidate { granted: BTreeSet<NodeId> },
    Candidate { granted: BTreeSet<NodeId> },
    Leader(Box<replication::LeaderState>),
}

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
    pub(crate) me: Identity,
    pub(crate) cfg: Config,
    pub(crate) rng: Rng,
    pub(crate) cluster: Option<ClusterId>,
    pub(crate) term: u64,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) role: RaftRole,
    pub(crate) leader: Option<(NodeId, Address)>,
    pub(crate) log: Log,
    pub(crate) election_deadline: Instant,
    pub(crate) last_leader_contact: Option<Instant>,
    pub(crate) peers: BTreeMap<Address, Peer>,
    pub(crate) boot: Bootstrap,
    pub(crate) admin: AdminQueue,
    /// A cluster this node asked to join.
    pub(crate) joining: Option<ClusterId>,
    pub(crate) housekeeping_at: Instant,
    pub(crate) leaving: Option<Leaving>,
    pub(crate) left: bool,
    pub(crate) commands: VecDeque<Command>,
    emitted_role: (Role, u64, Option<NodeId>),
    emitted_members: Option<Membership>,
    pub(crate) members_dirty: bool,
    pub(crate) scratch: Vec<Instant>,
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
            rng: Rng::new(seed),
            cluster: None,
            term: 0,
            voted_for: None,
            role: RaftRole::Follower,
            leader: None,
            log: Log::new(empty),
            election_deadline: Instant::MAX,
            last_leader_contact: None,
            peers: BTreeMap::new(),
            boot: Bootstrap::default(),
            admin: AdminQueue::default(),
            joining: None,
            housekeeping_at: now,
            leaving: None,
            left: false,
            commands: VecDeque::with_capacity(64),
            emitted_role: (Role::Inactive, 0, None),
            emitted_members: None,
            members_dirty: false,
            scratch: Vec::with_capacity(16),
            cfg: config,
        };
        core.boot.next_eval = now;
        Ok(core)
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Handles one event at `now`. Afterwards drain [`poll_command`](Self::poll_command)
    /// and re-read [`poll_timeout`](Self::poll_timeout).
    ///
    /// A message that is refused returns the reason and changes nothing.
    pub fn handle(&mut self, now: Instant, input: Input) -> Result<(), Rejected> {
        let span = tracing::debug_span!("node", id = %self.me.id, term = self.term);
        let _enter = span.enter();
        if self.left {
            return match input {
                Input::Message(_) => Err(Rejected::Left),
                _ => Ok(()),
            };
        }
        let result = match input {
            Input::Discovery(list) => {
                self.on_discovery(now, list);
                Ok(())
            }
            Input::DiscoveryFailed(reason) => {
                warn!(%reason, "discovery failed; membership unchanged");
                Ok(())
            }
            Input::Message(env) => self.on_message(now, env),
            Input::Unreachable(addr) => {
                debug!(%addr, "peer unreachable");
                // During a cold start a peer often refuses the first probe because it
                // is not listening yet: probe again soon rather than a round later.
                if self.cluster.is_none() && self.peers.get(&addr).is_some_and(|p| p.listed) {
                    let soon = now + self.cfg.probe_interval / 4;
                    self.housekeeping_at = self.housekeeping_at.min(soon);
                }
                Ok(())
            }
            Input::Tick => {
                self.on_tick(now);
                Ok(())
            }
            Input::Leave => {
                self.start_leave(now);
                Ok(())
            }
        };
        self.emit_changes(now);
        result
    }

    /// The next command for the shell, in order; `None` when there are no more.
    /// Drain it after every [`handle`](Self::handle).
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The instant at which the shell must next call `handle(now, Input::Tick)`, or
    /// `None` if no timer is needed (after leaving). Read it after every `handle`;
    /// it can move earlier or later.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        let mut t = self.housekeeping_at;
        match &self.role {
            RaftRole::Leader(l) => {
                t = t.min(l.next_heartbeat);
                if let Some(end) = l.lease_timer {
                    t = t.min(end);
                }
            }
            _ => t = t.min(self.election_deadline),
        }
        if let Some(c) = &self.boot.candidacy {
            t = t.min(c.deadline);
        }
        if let Some(l) = &self.leaving {
            t = t.min(l.deadline);
        }
        Some(t)
    }

    /// This node's view at `now`.
    pub fn status(&self, now: Instant) -> Status {
        let role = self.app_role(now);
        let (lease_until, lease_valid) = match &self.role {
            RaftRole::Leader(l) => (Some(l.lease_until), self.lease_valid(now)),
            _ => (None, false),
        };
        Status {
            id: self.me.id,
            cluster: self.cluster,
            role,
            term: self.term,
            is_leader: matches!(self.role, RaftRole::Leader(_)),
            primary: self.primary_info(now),
            members: self
                .log
                .committed()
                .members
                .iter()
                .map(|(id, m)| MemberStatus::new(*id, m))
                .collect(),
            commit_index: self.log.commit_index(),
            lease_valid,
            lease_until,
            fencing_token: self.fencing_token(now),
        }
    }

    /// Whether this node is primary at `now`: the leader, holding a lease that a
    /// majority acknowledged within the lease window (P6).
    pub fn is_primary(&self, now: Instant) -> bool {
        self.lease_valid(now)
    }

    /// The fencing token at `now`, if this node is primary (P7).
    pub fn fencing_token(&self, now: Instant) -> Option<FencingToken> {
        match (self.cluster, self.lease_valid(now)) {
            (Some(cluster), true) => Some(FencingToken {
                cluster,
                term: self.term,
            }),
            _ => None,
        }
    }

    /// Whether this node is the Raft leader of its term (with or without a lease).
    pub fn is_leader(&self) -> bool {
        matches!(self.role, RaftRole::Leader(_))
    }

    /// The leader this node follows (itself if it leads), if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader.as_ref().map(|l| l.0)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> Option<ClusterId> {
        self.cluster
    }

    /// The committed configuration.
    pub fn members(&self) -> &Membership {
        self.log.committed()
    }

    /// The configuration in force (the whole log, committed or not).
    pub fn effective_members(&self) -> &Membership {
        self.log.effective()
    }

    /// The committed configuration's index: two nodes with the same cluster and index
    /// must have the same member list (P2).
    pub fn commit_index(&self) -> u64 {
        self.log.commit_index()
    }

    /// The (term, index) of the last entry in this node's log, committed or not: the
    /// position Raft's election restriction compares.
    pub fn last_log_id(&self) -> (u64, u64) {
        (self.log.last_term(), self.log.last_index())
    }

    /// Whether this node has finished leaving.
    pub fn has_left(&self) -> bool {
        self.left
    }

    // ----- shared helpers -------------------------------------------------------

    pub(crate) fn lease_valid(&self, now: Instant) -> bool {
        match &self.role {
            RaftRole::Leader(l) => !l.lease_revoked && now < l.lease_until,
            _ => false,
        }
    }

    pub(crate) fn app_role(&self, now: Instant) -> Role {
        if self.left || self.cluster.is_none() {
            return Role::Inactive;
        }
        if self.leaving.is_some() {
            return Role::Leaving;
        }
        if self.lease_valid(now) {
            return Role::Primary;
        }
        match (&self.role, &self.leader) {
            (RaftRole::Follower, Some((id, _))) if *id != self.me.id => Role::Secondary,
            _ => Role::Candidate,
        }
    }

    fn primary_info(&self, now: Instant) -> Option<PrimaryInfo> {
        if self.lease_valid(now) {
            return Some(PrimaryInfo {
                id: self.me.id,
                addr: self.me.addr.clone(),
            });
        }
        match (&self.role, &self.leader) {
            (RaftRole::Follower, Some((id, addr))) if *id != self.me.id => Some(PrimaryInfo {
                id: *id,
                addr: addr.clone(),
            }),
            _ => None,
        }
    }

    pub(crate) fn random_election_timeout(&mut self) -> Duration {
        let lo = duration_nanos(self.cfg.election_timeout_min);
        let hi = duration_nanos(self.cfg.election_timeout_max);
        Duration::from_nanos(self.rng.range(lo, hi))
    }

    pub(crate) fn send(&mut self, to: Address, to_id: Option<NodeId>, msg: Message) {
        let env = Envelope {
            version: PROTOCOL_VERSION,
            cluster: self.cluster,
            from: self.me.id,
            from_addr: self.me.addr.clone(),
            to: to_id,
            msg,
        };
        self.commands.push_back(Command::Send { to, msg: env });
    }

    fn emit_changes(&mut self, now: Instant) {
        let role = self.app_role(now);
        let primary = self.primary_info(now);
        let key = (role, self.term, primary.as_ref().map(|p| p.id));
        if key != self.emitted_role {
            if key.0 != self.emitted_role.0 || key.2 != self.emitted_role.2 {
                info!(?role, primary = ?primary.as_ref().map(|p| p.id), "role changed");
            }
            self.emitted_role = key;
            self.commands.push_back(Command::RoleChanged {
                role,
                term: self.term,
                primary,
            });
        }
        if self.members_dirty {
            self.members_dirty = false;
            let committed = self.log.committed();
            if self.emitted_members.as_ref() != Some(committed) {
                self.emitted_members = Some(committed.clone());
                let list = committed
                    .members
                    .iter()
                    .map(|(id, m)| (*id, m.clone()))
                    .collect();
                self.commands.push_back(Command::MembersChanged(list));
            }
        }
    }

    // ----- discovery --------------------------------------------------------------

    fn on_discovery(&mut self, now: Instant, list: Vec<Discovered>) {
        if list.is_empty() {
            if self.peers.values().any(|p| p.listed) {
                warn!("discovery answered with no instances after a non-empty answer; ignoring it (P3)");
            }
            return;
        }
        let listed: BTreeMap<Address, Option<String>> = list
            .into_iter()
            .filter(|d| d.addr != self.me.addr)
            .map(|d| (d.addr, d.name))
            .collect();
        for (addr, peer) in self.peers.iter_mut() {
            if !listed.contains_key(addr) && peer.listed {
                peer.listed = false;
                peer.unlisted_since = Some(now);
            }
        }
        let mut new_addrs = Vec::new();
        for (addr, name) in listed {
            let peer = self.peers.entry(addr.clone()).or_insert_with(|| {
                new_addrs.push(addr.clone());
                Peer::unlisted(now)
            });
            peer.listed = true;
            peer.unlisted_since = None;
            if name.is_some() {
                peer.name = name;
            }
        }
        // Probe newcomers at once rather than at the next housekeeping round.
        if self.cluster.is_none() {
            for addr in new_addrs.into_iter().take(PROBE_FANOUT) {
                self.probe(now, addr);
            }
        }
    }

    // ----- messages -------------------------------------------------------------

    fn on_message(&mut self, now: Instant, env: Envelope) -> Result<(), Rejected> {
        if let Err(r) = self.check_envelope(&env) {
            warn!(from = %env.from, addr = %env.from_addr, reason = %r, "message rejected");
            return Err(r);
        }
        let Envelope {
            from,
            from_addr,
            cluster,
            msg,
            ..
        } = env;
        match msg {
            Message::Probe => {
                self.on_probe(from, from_addr);
                Ok(())
            }
            Message::ProbeAck(ack) => {
                self.on_probe_ack(now, from, from_addr, cluster, ack);
                Ok(())
            }
            Message::BootstrapRequest { round } => {
                self.on_bootstrap_request(now, from, from_addr, round);
                Ok(())
            }
            Message::BootstrapReply { round, granted } => {
                self.on_bootstrap_reply(now, from, round, granted);
                Ok(())
            }
            Message::BootstrapWithdraw { round } => {
                self.on_bootstrap_withdraw(from, round);
                Ok(())
            }
            Message::Join { name } => {
                self.on_join(now, from, from_addr, name);
                Ok(())
            }
            Message::Leave => {
                self.on_leave_request(now, from, from_addr);
                Ok(())
            }
            Message::NotLeader { leader } => {
                self.on_not_leader(now, leader);
                Ok(())
            }
            Message::PreVote(req) => {
                self.on_vote_request(now, from, from_addr, req, true);
                Ok(())
            }
            Message::Vote(req) => {
                self.on_vote_request(now, from, from_addr, req, false);
                Ok(())
            }
            Message::PreVoteReply(r) => {
                self.on_vote_reply(now, from, r, true);
                Ok(())
            }
            Message::VoteReply(r) => {
                self.on_vote_reply(now, from, r, false);
                Ok(())
            }
            Message::Append(a) => self.on_append(now, from, from_addr, cluster, a),
            Message::Snapshot(s) => self.on_snapshot(now, from, from_addr, cluster, s),
            Message::AppendReply(r) => {
                self.on_append_reply(now, from, r);
                Ok(())
            }
            Message::TimeoutNow { term } => {
                self.on_timeout_now(now, term);
                Ok(())
            }
        }
    }

    fn check_envelope(&self, env: &Envelope) -> Result<(), Rejected> {
        if env.version != PROTOCOL_VERSION {
            return Err(Rejected::Version(env.version));
        }
        if env.to.is_some_and(|to| to != self.me.id) {
            return Err(Rejected::NotForMe);
        }
        if env.from == self.me.id {
            return Err(Rejected::Invalid("message claims to come from this node"));
        }
        let informational = matches!(env.msg, Message::Probe | Message::ProbeAck(_));
        if let (Some(ours), Some(theirs), false) = (self.cluster, env.cluster, informational) {
            if ours != theirs {
                return Err(Rejected::ForeignCluster { ours, theirs });
            }
        }
        if env.largest_counter() > crate::message::MAX_COUNTER {
            return Err(Rejected::Invalid("term or index out of range"));
        }
        // Below MAX_COUNTER, `prev + 1 + i` cannot overflow.
        let contiguous = |prev: u64, entries: &[crate::membership::Entry]| {
            entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == prev + 1 + i as u64)
        };
        match &env.msg {
            Message::Append(a) if !contiguous(a.prev_index, &a.entries) => {
                Err(Rejected::Invalid("append entries do not follow prev_index"))
            }
            Message::Snapshot(s) if !contiguous(s.snapshot.index, &s.entries) => Err(
                Rejected::Invalid("snapshot entries do not follow the snapshot"),
            ),
            // A fresh node may answer an append (asking for a snapshot), but only a
            // member of a cluster sends one.
            Message::Append(_) | Message::Snapshot(_) | Message::TimeoutNow { .. }
                if env.cluster.is_none() =>
            {
                Err(Rejected::Invalid(
                    "replication message without a cluster id",
                ))
            }
            _ => Ok(()),
        }
    }

    fn probe(&mut self, now: Instant, addr: Address) {
        if let Some(p) = self.peers.get_mut(&addr) {
            p.first_probed_at.get_or_insert(now);
        }
        self.send(addr, None, Message::Probe);
    }

    fn on_probe(&mut self, from: NodeId, from_addr: Address) {
        let state = match self.cluster {
            None => ProbeState::Fresh {
                supports: self.boot.supports.as_ref().map(|s| s.id),
            },
            Some(_) => ProbeState::Member {
                term: self.term,
                leader: self.leader.clone(),
                your_config: self
                    .log
                    .committed()
                    .contains(from)
                    .then(|| self.log.committed_snapshot()),
            },
        };
        let ack = ProbeAck {
            name: self.me.name.clone(),
            state,
        };
        self.send(from_addr, Some(from), Message::ProbeAck(ack));
    }

    fn on_probe_ack(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        cluster: Option<ClusterId>,
        ack: ProbeAck,
    ) {
        if let Some(s) = self.boot.supports.as_mut().filter(|s| s.id == from) {
            s.heard_at = now;
        }
        // An answer from an address discovery never listed (a peer that probed us
        // first): remember it, unlisted, so that it is never counted as listed.
        let peer = self
            .peers
            .entry(from_addr.clone())
            .or_insert_with(|| Peer::unlisted(now));
        peer.id = Some(from);
        if ack.name.is_some() {
            peer.name = ack.name;
        }
        peer.fresh = matches!(ack.state, ProbeState::Fresh { .. });
        peer.answered_at = Some(now);
        match (ack.state, cluster) {
            (
                ProbeState::Member {
                    term,
                    leader,
                    your_config,
                },
                Some(cluster),
            ) => {
                match self.cluster {
                    Some(ours) if ours != cluster && leader.is_some() && self.orphaned(now) => {
                        warn!(ours = %ours, theirs = %cluster, "this cluster has had no leader for silent_member_timeout and another cluster of the service has one; leaving it to join that one");
                        self.become_fresh();
                    }
                    Some(_) => return,
                    None => {}
                }
                self.admin.member_seen_at = Some(now);
                if let Some(snap) = your_config {
                    info!(%cluster, "a probed member says this node is in its configuration; adopting it");
                    self.adopt_cluster(now, cluster, term, &snap, leader);
                } else {
                    self.request_join(now, cluster, leader.unwrap_or((from, from_addr)));
                }
            }
            // Bootstrap is evaluated once per housekeeping round, not per answer: the
            // evaluation looks at every peer. (Evaluating on every answer made cold
            // starts faster but broke liveness in a random schedule, seed 25836.)
            (ProbeState::Fresh { .. }, _) | (ProbeState::Member { .. }, None) => {}
        }
    }

    /// Becomes a follower in `cluster` with the given committed configuration.
    pub(crate) fn adopt_cluster(
        &mut self,
        now: Instant,
        cluster: ClusterId,
        term: u64,
        snap: &Snapshot,
        leader: Option<(NodeId, Address)>,
    ) {
        self.cluster = Some(cluster);
        self.joining = None;
        self.boot.clear();
        self.log.install(snap);
        if term > self.term {
            self.term = term;
            self.voted_for = None;
        }
        self.role = RaftRole::Follower;
        self.leader = leader.filter(|(id, _)| *id != self.me.id);
        let t = self.random_election_timeout();
        self.election_deadline = now + t;
        self.members_dirty = true;
    }

    fn on_not_leader(&mut self, now: Instant, leader: Option<(NodeId, Address)>) {
        let Some((id, addr)) = leader else { return };
        if id == self.me.id {
            return;
        }
        if let Some(l) = &mut self.leaving {
            if l.redirects < 8 {
                l.redirects += 1;
                self.send(addr, Some(id), Message::Leave);
            }
        } else if self.wants_to_join(now) && self.admin.join_redirects < 8 {
            self.admin.join_redirects += 1;
            self.send_join(id, addr);
        }
    }

    // ----- timers -----------------------------------------------------------------

    fn on_tick(&mut self, now: Instant) {
        if matches!(self.role, RaftRole::Leader(_)) {
            self.leader_tick(now);
        } else if self.cluster.is_some() && now >= self.election_deadline {
            self.on_election_timeout(now);
        }
        if let Some(c) = &self.boot.candidacy {
            if now >= c.deadline {
                self.withdraw_candidacy(now);
            }
        }
        if self.leaving.as_ref().is_some_and(|l| now >= l.deadline) {
            warn!("leave timed out before the removal was committed; finishing anyway");
            self.finish_leave();
            return;
        }
        if now >= self.housekeeping_at {
            self.housekeeping_at = now + self.cfg.probe_interval;
            self.housekeeping(now);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.admin.join_redirects = 0;
        if let Some(l) = &mut self.leaving {
            l.redirects = 0;
            self.retry_leave(now);
            return;
        }
        if self.cluster.is_none() {
            self.probe_round(now);
            // A cluster none of whose members has answered for a while is gone (every
            // member was replaced at once): stop waiting to join it.
            let abandon = self.cfg.bootstrap_timeout * 2;
            if self.joining.is_some()
                && self
                    .admin
                    .member_seen_at
                    .is_none_or(|t| now.saturating_duration_since(t) > abandon)
            {
                warn!(cluster = ?self.joining, "no member of the cluster being joined answers; giving up on it");
                self.joining = None;
                self.admin.join_hint = None;
            }
            self.release_gone_candidate(now);
            if let (Some(_), Some((id, addr))) = (self.joining, self.admin.join_hint.clone()) {
                self.send_join(id, addr);
            } else if now >= self.boot.next_eval {
                self.evaluate_bootstrap(now);
            }
            return;
        }
        if self.orphaned(now) {
            self.probe_round(now);
        }
        if self.wants_to_join(now) {
            // In a cluster: the leader it follows or, failing that, every member it
            // knows (non-leaders redirect). A joiner's old hint may be long dead.
            let targets: Vec<(NodeId, Address)> = match self.leader.clone() {
                Some(leader) => vec![leader],
                None => self
                    .log
                    .effective()
                    .members
                    .iter()
                    .filter(|(id, _)| **id != self.me.id)
                    .map(|(id, m)| (*id, m.addr.clone()))
                    .collect(),
            };
            for (id, addr) in targets {
                self.send_join(id, addr);
            }
        }
    }

    /// Probes a bounded number of listed peers, those never answered first, so that a
    /// thousand fresh pods do not probe each other all at once.
    fn probe_round(&mut self, now: Instant) {
        let mut addrs: Vec<(bool, Address)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.listed)
            .map(|(a, p)| (p.id.is_some(), a.clone()))
            .collect();
        let fanout = PROBE_FANOUT.max(addrs.len().div_ceil(PROBE_SWEEP_ROUNDS));
        if addrs.len() > fanout {
            let start = self.rng.range(0, addrs.len() as u64) as usize;
            addrs.rotate_left(start);
            addrs.sort_by_key(|(answered, _)| *answered);
            addrs.truncate(fanout);
        }
        for (_, addr) in addrs {
            self.probe(now, addr);
        }
    }

    /// Whether this member has heard from no leader for `silent_member_timeout`: its
    /// cluster may be gone for good (most of its voters replaced while it was cut
    /// off). Such a member probes its peers and moves to a cluster that has a leader.
    fn orphaned(&self, now: Instant) -> bool {
        let Some(limit) = self.cfg.silent_member_timeout else {
            return false;
        };
        self.cluster.is_some()
            && !matches!(self.role, RaftRole::Leader(_))
            && self.leaving.is_none()
            && self
                .last_leader_contact
                .is_none_or(|t| now.saturating_duration_since(t) >= limit)
    }

    /// Forgets the cluster: back to a fresh node with the same id.
    fn become_fresh(&mut self) {
        let empty = Snapshot {
            index: 0,
            term: 0,
            membership: Membership::default(),
        };
        self.cluster = None;
        // Terms and votes belong to the cluster left behind; the next cluster's terms
        // start afresh for this node (it has cast no vote in them).
        self.term = 0;
        self.voted_for = None;
        self.log = Log::new(empty);
        self.role = RaftRole::Follower;
        self.leader = None;
        self.election_deadline = Instant::MAX;
        self.last_leader_contact = None;
        self.boot.clear();
        self.members_dirty = true;
    }

    /// A node in a cluster wants to (re-)join when it is not in the configuration it
    /// knows, or it has heard from no leader for a long while (it may have been
    /// removed while it was away).
    fn wants_to_join(&self, now: Instant) -> bool {
        if self.cluster.is_none() {
            return self.joining.is_some();
        }
        if matches!(self.role, RaftRole::Leader(_)) || self.leaving.is_some() {
            return false;
        }
        if !self.log.effective().contains(self.me.id) {
            return true;
        }
        // Removed while away, it would never hear of it: a leader answers the join of
        // a current member with an append, so asking is harmless.
        let quiet = self.cfg.election_timeout_max * 4;
        self.last_leader_contact
            .is_none_or(|t| now.saturating_duration_since(t) > quiet)
    }

    fn send_join(&mut self, id: NodeId, addr: Address) {
        let name = self.me.name.clone();
        self.send(addr, Some(id), Message::Join { name });
    }

    pub(crate) fn request_join(
        &mut self,
        now: Instant,
        cluster: ClusterId,
        leader: (NodeId, Address),
    ) {
        let first = self.joining != Some(cluster);
        self.joining = Some(cluster);
        self.admin.join_hint = Some(leader.clone());
        if first {
            info!(%cluster, leader = %leader.0, "found an existing cluster; asking to join");
            self.send_join(leader.0, leader.1);
            self.housekeeping_at = self.housekeeping_at.min(now + self.cfg.probe_interval);
        }
    }
}
