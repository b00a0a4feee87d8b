use super::checker::Checker;
use cluster_mode_core::message::ProbeState;
use cluster_mode_core::{
    Address, Change, ClusterCore, Command, Config, Discovered, DurableState, Entry, Envelope,
    Identity, Input, Instant, Message, NodeId, Placement, Role, RoleEvent, RoleOp, SplitMix64,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::time::Duration;

/// The network's own random choices: the core's generator, on a seed of its own.
#[derive(Clone)]
pub struct Rng(SplitMix64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed ^ 0x5DEE_CE66_D1CE_4E5B))
    }
    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0.range(lo, hi)
    }
    /// True with probability `p_ppm` parts per million.
    pub fn chance(&mut self, p_ppm: u64) -> bool {
        self.0.chance_ppm(p_ppm)
    }
}

/// Network behaviour.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub min_latency: Duration,
    pub max_latency: Duration,
    /// Loss probability in parts per million.
    pub loss_ppm: u64,
    /// Duplication probability in parts per million.
    pub dup_ppm: u64,
    /// How often every node gets a discovery answer.
    pub discovery_interval: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(10),
            loss_ppm: 0,
            dup_ppm: 0,
            discovery_interval: Duration::from_millis(100),
        }
    }
}

pub struct Node {
    pub name: String,
    pub addr: Address,
    pub core: ClusterCore,
    pub alive: bool,
    pub paused: bool,
    /// Clock rate error, ppm (positive: the node's clock runs fast).
    pub drift_ppm: i64,
    /// The node's local clock at real time 0 of its start.
    offset: u64,
    started_real: u64,
    timer_gen: u64,
    /// What discovery tells this node; `None`: every live, listed node.
    pub discovery_view: Option<Vec<usize>>,
    pub discovery_fails: bool,
    pub left: bool,
    deferred: Vec<Event>,
    /// The last state a durable node persisted: its data directory.
    pub disk: Option<DurableState>,
}

#[derive(Clone, Debug)]
enum Event {
    Deliver { to: usize, env: Box<Envelope> },
    Timer { slot: usize, gen: u64 },
    Discovery,
}

/// Which messages the trace shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgTrace {
    /// None (the default).
    Off,
    /// Every message, with the moment it was sent.
    All,
    /// Every message except heartbeats (an `Append` with no entries and no new commit
    /// index) and their successful replies.
    NoHeartbeats,
}

/// The simulated world.
pub struct Net {
    pub cfg: Config,
    pub net: NetConfig,
    pub rng: Rng,
    pub seed: u64,
    pub now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Event>,
    pub nodes: Vec<Node>,
    by_addr: BTreeMap<Address, usize>,
    /// Links cut, (from, to) by slot.
    pub cut: BTreeSet<(usize, usize)>,
    /// Slots discovery lists (a pod that is gone is unlisted).
    pub unlisted: BTreeSet<usize>,
    pub checker: Checker,
    pub trace: Vec<String>,
    pub record_trace: bool,
    /// Which messages go into the trace (only while `record_trace`).
    pub msg_trace: MsgTrace,
    /// Every process id ever started, by its trace name (a restarted slot's previous
    /// process becomes `nK#1`, `nK#2`...).
    id_names: BTreeMap<NodeId, String>,
    restarts: BTreeMap<usize, u32>,
    /// The commit index last shown from one slot to another, to tell heartbeats apart.
    shown_commit: BTreeMap<(usize, usize), u64>,
    /// Heartbeats hidden from the trace, (leader, follower, sent_at), so that their
    /// replies can be hidden too.
    hidden_heartbeats: HashSet<(usize, usize, Instant)>,
    pub messages: u64,
    /// When non-zero, every new node gets a clock drift drawn from ±this (ppm).
    pub random_drift_ppm: i64,
    /// How many `Command::Persist` the nodes emitted (writes to their data
    /// directories).
    pub persists: u64,
    /// Nodes started from now on are durable: they emit `Command::Persist`, whose
    /// last state `restart_with_data` hands back (a pod restarted with its volume).
    pub durable: bool,
    /// Roles every node started from now on declares as it starts (as an application
    /// built with `ClusterBuilder::roles` does at every start), P13.
    pub roles_on_start: Vec<(String, Placement)>,
    /// When set, every role event with its real time and slot (for rule tests).
    pub role_events: Option<Vec<(u64, usize, RoleEvent)>>,
    /// When set, (from, to) -> the real time of the latest message delivered from one
    /// slot to the other (for rule tests).
    pub deliveries: Option<BTreeMap<(usize, usize), u64>>,
    /// Snapshot pieces (`Message::SnapshotChunk`) delivered.
    pub snapshot_pieces: u64,
    /// Whole snapshots (`Message::Snapshot`) delivered.
    pub snapshots: u64,
    /// Every key-value store answer: real time (ns), slot, request id, result.
    pub store_replies: Vec<StoreReplyRecord>,
}

/// One `Command::StoreReply` as the network saw it.
#[derive(Clone, Debug)]
pub struct StoreReplyRecord {
    /// Real time, in nanoseconds.
    pub at: u64,
    /// The slot that answered its application.
    pub slot: usize,
    /// The request id.
    pub id: u64,
    /// The answer.
    pub result: Result<cluster_mode_core::store::StoreAnswer, cluster_mode_core::store::StoreError>,
}

/// `n` roles, `shard-0` .. `shard-{n-1}`, placed anywhere.
pub fn shards(n: usize) -> Vec<(String, Placement)> {
    (0..n)
        .map(|i| (format!("shard-{i}"), Placement::Any))
        .collect()
}

impl Net {
    pub fn new(seed: u64, cfg: Config, net: NetConfig) -> Self {
        let mut n = Net {
            cfg,
            net,
            rng: Rng::new(seed),
            seed,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            cut: BTreeSet::new(),
            unlisted: BTreeSet::new(),
            checker: Checker::default(),
            trace: Vec::new(),
            record_trace: true,
            msg_trace: MsgTrace::Off,
            id_names: BTreeMap::new(),
            restarts: BTreeMap::new(),
            shown_commit: BTreeMap::new(),
            hidden_heartbeats: HashSet::new(),
            messages: 0,
            random_drift_ppm: 0,
            durable: false,
            persists: 0,
            roles_on_start: Vec::new(),
            role_events: None,
            store_replies: Vec::new(),
            deliveries: None,
            snapshot_pieces: 0,
            snapshots: 0,
        };
        n.schedule(0, Event::Discovery);
        n
    }

    pub fn with_nodes(seed: u64, cfg: Config, count: usize) -> Self {
        let mut n = Net::new(seed, cfg, NetConfig::default());
        for _ in 0..count {
            n.add_node();
        }
        n
    }

    fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.events.insert(self.seq as usize, ev);
        self.queue.push(Reverse((at, self.seq, self.seq as usize)));
    }

    pub fn local(&self, slot: usize, real: u64) -> Instant {
        local_time(&self.nodes[slot], real)
    }

    /// The real time (ns) at which node `slot`'s clock reads `local` (past or future).
    pub fn real_time_of(&self, slot: usize, local: Instant) -> i128 {
        let n = &self.nodes[slot];
        let l = local.as_nanos() as i128 - n.offset as i128;
        n.started_real as i128 + l * 1_000_000 / (1_000_000 + n.drift_ppm as i128)
    }

    fn real_of(&self, slot: usize, local: Instant) -> u64 {
        let n = &self.nodes[slot];
        let l = local.as_nanos().saturating_sub(n.offset) as i128;
        let elapsed = l * 1_000_000 / (1_000_000 + n.drift_ppm as i128);
        (n.started_real as i128 + elapsed + 1).max(self.now as i128) as u64
    }

    /// Adds and starts a node with a fresh id; returns its slot.
    pub fn add_node(&mut self) -> usize {
        let slot = self.nodes.len();
        let name = format!("n{}", slot + 1);
        let addr = Address::new(format!("{name}:7946"));
        let d = self.random_drift_ppm;
        let drift = if d > 0 {
            self.rng.range(0, 2 * d as u64 + 1) as i64 - d
        } else {
            0
        };
        self.start_node(slot, name, addr, drift, None)
    }

    fn start_node(
        &mut self,
        slot: usize,
        name: String,
        addr: Address,
        drift: i64,
        disk: Option<DurableState>,
    ) -> usize {
        let fresh_id = NodeId(u128::from(self.rng.next()) << 64 | u128::from(self.rng.next()));
        let offset = self.rng.range(0, 1_000_000_000_000);
        let core_seed = self.rng.next();
        let id = disk.as_ref().map_or(fresh_id, |d| d.id);
        let me = Identity::new(id, addr.clone()).with_name(name.clone());
        let at = Instant::from_nanos(offset);
        let core = match disk {
            Some(state) => ClusterCore::restore(me, self.cfg.clone(), core_seed, at, state)
                .expect("the state it persisted restores"),
            None if self.durable => ClusterCore::new(me, self.cfg.clone(), core_seed, at)
                .expect("valid config")
                .durable(),
            None => ClusterCore::new(me, self.cfg.clone(), core_seed, at).expect("valid config"),
        };
        let node = Node {
            name: name.clone(),
            addr: addr.clone(),
            core,
            alive: true,
            paused: false,
            drift_ppm: drift,
            offset,
            started_real: self.now,
            timer_gen: 0,
            discovery_view: None,
            discovery_fails: false,
            left: false,
            deferred: Vec::new(),
            disk: None,
        };
        if slot == self.nodes.len() {
            self.nodes.push(node);
        } else {
            self.nodes[slot] = node;
        }
        self.by_addr.insert(addr, slot);
        self.id_names.insert(id, name.clone());
        self.unlisted.remove(&slot);
        self.checker.node_started(slot, id);
        self.note(format!("{name} starts"));
        let list = self.discovery_for(slot);
        self.input(slot, Input::Discovery(list));
        if !self.roles_on_start.is_empty() {
            let roles = self.roles_on_start.clone();
            self.input(slot, Input::DeclareRoles(roles));
        }
        slot
    }

    /// Node `slot` declares the roles `shard-0` .. `shard-{n-1}` (P13).
    pub fn declare_roles(&mut self, slot: usize, n: usize) {
        self.note(format!("{} declares {n} roles", self.nodes[slot].name));
        self.input(slot, Input::DeclareRoles(shards(n)));
    }

    /// Every live node declares `n` roles, and every node started from now on
    /// declares them as it starts.
    pub fn declare_roles_everywhere(&mut self, n: usize) {
        self.roles_on_start = shards(n);
        let live: Vec<usize> = self.live().collect();
        for s in live {
            self.declare_roles(s, n);
        }
    }

    /// The slot that holds `role` now (on its own clock), with its token, if any.
    pub fn holder(&self, role: &str) -> Option<(usize, cluster_mode_core::RoleToken)> {
        self.live().find_map(|s| {
            self.nodes[s]
                .core
                .owns(self.local(s, self.now), role)
                .map(|t| (s, t))
        })
    }

    /// Kills a node (its address stays listed, as a crashed pod's would until
    /// Kubernetes notices).
    pub fn crash(&mut self, slot: usize) {
        self.nodes[slot].alive = false;
        self.checker.node_stopped(slot);
        self.note(format!("{} crashes", self.nodes[slot].name));
    }

    /// A crashed pod is removed from discovery.
    pub fn unlist(&mut self, slot: usize) {
        self.unlisted.insert(slot);
    }

    /// The same pod restarts: a new process (new id) at the same address.
    pub fn restart(&mut self, slot: usize) {
        let (name, addr, drift) = {
            let n = &self.nodes[slot];
            (n.name.clone(), n.addr.clone(), n.drift_ppm)
        };
        self.note(format!("{name} restarts with a new identity"));
        let old = self.nodes[slot].core.identity().id;
        let n = self.restarts.entry(slot).or_insert(0);
        *n += 1;
        let old_name = format!("{name}#{n}");
        self.note(format!(
            "({name}'s previous process is {old_name} from now on)"
        ));
        self.id_names.insert(old, old_name);
        self.start_node(slot, name, addr, drift, None);
    }

    /// The same pod restarts with its data directory: the same member (same id) at
    /// the same address, from the last state it persisted. A node that never
    /// persisted anything restarts as a new process.
    pub fn restart_with_data(&mut self, slot: usize) {
        let Some(disk) = self.nodes[slot].disk.clone() else {
            self.restart(slot);
            return;
        };
        let (name, addr, drift) = {
            let n = &self.nodes[slot];
            (n.name.clone(), n.addr.clone(), n.drift_ppm)
        };
        self.note(format!("{name} restarts with its data"));
        self.start_node(slot, name, addr, drift, Some(disk));
    }

    /// The pod is rescheduled with its data directory at a new address: the same
    /// member (same id, same slot and name), from its last persisted state.
    pub fn move_with_data(&mut self, slot: usize) {
        let Some(disk) = self.nodes[slot].disk.clone() else {
            panic!("move_with_data needs a durable node");
        };
        if self.nodes[slot].alive {
            self.crash(slot);
        }
        let (name, old, drift) = {
            let n = &self.nodes[slot];
            (n.name.clone(), n.addr.clone(), n.drift_ppm)
        };
        let moves = self.restarts.entry(slot).or_insert(0);
        *moves += 1;
        let addr = Address::new(format!("{name}.{moves}:7946"));
        self.by_addr.remove(&old);
        self.note(format!("{name} moves to {addr} with its data"));
        self.start_node(slot, name, addr, drift, Some(disk));
    }

    /// A pod replaced by a new one at a new address: crash, unlist, add.
    pub fn replace(&mut self, slot: usize) -> usize {
        self.crash(slot);
        self.unlist(slot);
        self.add_node()
    }

    pub fn pause(&mut self, slot: usize) {
        self.nodes[slot].paused = true;
        self.note(format!("{} paused", self.nodes[slot].name));
    }

    pub fn resume(&mut self, slot: usize) {
        self.nodes[slot].paused = false;
        self.note(format!("{} resumed", self.nodes[slot].name));
        let deferred = std::mem::take(&mut self.nodes[slot].deferred);
        for ev in deferred {
            self.schedule(self.now, ev);
        }
        self.arm_timer(slot);
    }

    /// Cuts every link between `a` and the rest.
    pub fn isolate(&mut self, slot: usize) {
        for other in 0..self.nodes.len() {
            if other != slot {
                self.cut.insert((slot, other));
                self.cut.insert((other, slot));
            }
        }
        self.note(format!("{} isolated", self.nodes[slot].name));
    }

    /// Splits the nodes into groups that cannot talk to each other.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        self.cut.clear();
        for (i, g) in groups.iter().enumerate() {
            for (j, h) in groups.iter().enumerate() {
                if i != j {
                    for a in g.iter() {
                        for b in h.iter() {
                            self.cut.insert((*a, *b));
                        }
                    }
                }
            }
        }
        self.note(format!("partition {groups:?}"));
    }

    /// Cuts the link between two nodes, both ways.
    pub fn cut_link(&mut self, a: usize, b: usize) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
        let (na, nb) = (self.nodes[a].name.clone(), self.nodes[b].name.clone());
        self.note(format!("link {na}-{nb} cut"));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.note("network healed".into());
    }

    pub fn leave(&mut self, slot: usize) {
        self.note(format!("{} asked to leave", self.nodes[slot].name));
        self.input(slot, Input::Leave);
    }

    /// An operator forces a recovery on this node (P11).
    pub fn force_recover(&mut self, slot: usize) {
        self.note(format!(
            "{}: recovery forced by an operator",
            self.nodes[slot].name
        ));
        self.input(slot, Input::ForceRecover);
    }

    pub fn note(&mut self, s: String) {
        if self.record_trace {
            let line = format!("{:>7}ms  {s}", self.now / 1_000_000);
            self.trace.push(line);
        }
    }

    fn discovery_for(&self, slot: usize) -> Vec<Discovered> {
        let listed = |s: &usize| !self.unlisted.contains(s);
        match &self.nodes[slot].discovery_view {
            Some(view) => view
                .iter()
                .filter(|s| listed(s))
                .map(|s| Discovered::new(self.nodes[*s].addr.clone()))
                .collect(),
            None => (0..self.nodes.len())
                .filter(listed)
                .map(|s| Discovered::new(self.nodes[s].addr.clone()))
                .collect(),
        }
    }

    /// Hands one input to a node and carries out what it emits.
    pub fn input(&mut self, slot: usize, input: Input) {
        if !self.nodes[slot].alive {
            return;
        }
        let now = self.local(slot, self.now);
        let tick = matches!(input, Input::Tick);
        let traced = match &input {
            Input::Message(env) if self.record_trace && self.msg_trace != MsgTrace::Off => {
                Some((env.from, env.msg.clone()))
            }
            _ => None,
        };
        let core = &mut self.nodes[slot].core;
        let before = observable(core);
        let result = core.handle(now, input);
        if let Err(reason) = &result {
            // A refused input changes nothing observable.
            assert_eq!(
                observable(core),
                before,
                "{reason} changed the node's state"
            );
            assert!(core.poll_command().is_none(), "{reason} queued a command");
        }
        // Every timer a tick serves moves on: the shell never needs a tick floor.
        if let Some(next) = core.poll_timeout().filter(|_| tick) {
            assert!(
                next > now,
                "after a tick at {now:?} the next timeout is {next:?}"
            );
        }
        if let (Err(why), Some((from, msg))) = (result, traced) {
            let what = self.render_message(&msg);
            let line = format!(
                "{} rejects {}'s {what}: {why}",
                self.nodes[slot].name,
                self.name_of(from)
            );
            self.note(line);
        }
        while let Some(cmd) = self.nodes[slot].core.poll_command() {
            self.apply(slot, cmd);
        }
        self.arm_timer(slot);
        let real = self.now;
        let nodes = &self.nodes;
        let local = |s: usize| local_time(&nodes[s], real);
        self.checker.after_event(real, slot, nodes, &local);
    }

    fn arm_timer(&mut self, slot: usize) {
        let Some(t) = self.nodes[slot].core.poll_timeout() else {
            return;
        };
        self.nodes[slot].timer_gen += 1;
        let gen = self.nodes[slot].timer_gen;
        let at = self.real_of(slot, t);
        self.schedule(at, Event::Timer { slot, gen });
    }

    fn apply(&mut self, slot: usize, cmd: Command) {
        match cmd {
            Command::Send { to, msg, .. } => {
                let Some(&dst) = self.by_addr.get(&to) else {
                    return;
                };
                self.messages += 1;
                let cut = self.cut.contains(&(slot, dst));
                self.trace_message(slot, dst, &msg, cut);
                if cut || self.rng.chance(self.net.loss_ppm) {
                    return;
                }
                let copies = if self.rng.chance(self.net.dup_ppm) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let lo = self.net.min_latency.as_nanos() as u64;
                    let hi = self.net.max_latency.as_nanos() as u64;
                    let at = self.now + self.rng.range(lo, hi + 1);
                    self.schedule(
                        at,
                        Event::Deliver {
                            to: dst,
                            env: Box::new(msg.clone()),
                        },
                    );
                }
            }
            Command::RoleChanged { .. } if !self.record_trace => {}
            Command::RoleChanged {
                role,
                term,
                primary,
                ..
            } => {
                let name = self.nodes[slot].name.clone();
                let p = primary
                    .as_ref()
                    .map(|p| self.name_of(p.id))
                    .unwrap_or_else(|| "-".into());
                let line = match role {
                    Role::Primary => format!("{name} is Primary (term {term})"),
                    Role::Secondary => format!("{name} is Secondary of {p} (term {term})"),
                    r if primary.is_some() => {
                        format!("{name} is {r:?} (term {term}, primary {p})")
                    }
                    r => format!("{name} is {r:?} (term {term})"),
                };
                self.note(line);
            }
            Command::MembersChanged(_) if !self.record_trace => {}
            Command::MembersChanged(list) => {
                let name = self.nodes[slot].name.clone();
                let mut names: Vec<String> = list
                    .iter()
                    .map(|(id, m)| {
                        format!("{}{}", self.name_of(*id), if m.voter { "" } else { "(nv)" })
                    })
                    .collect();
                names.sort();
                if names.len() <= 12 {
                    self.note(format!("{name} members: {}", names.join(" ")));
                } else {
                    self.note(format!(
                        "{name} members: {} ({} voters)",
                        names.len(),
                        list.iter().filter(|(_, m)| m.voter).count()
                    ));
                }
            }
            Command::Persist(state) => {
                self.persists += 1;
                self.nodes[slot].disk = Some(state);
            }
            Command::PersistAppend(entries) => {
                self.persists += 1;
                let full = self.nodes[slot].core.durable_state();
                let disk = self.nodes[slot]
                    .disk
                    .as_mut()
                    .expect("an append follows a full state");
                disk.entries.extend(entries);
                assert_eq!(
                    *disk, full,
                    "the appended state is the node's durable state"
                );
            }
            Command::Role(event) if self.role_events.is_some() || self.record_trace => {
                if let Some(events) = &mut self.role_events {
                    events.push((self.now, slot, event.clone()));
                }
                let name = self.nodes[slot].name.clone();
                let line = match event {
                    RoleEvent::Acquired { role, token } => {
                        format!("{name} acquires {role} (token {})", token.index)
                    }
                    RoleEvent::Releasing {
                        role,
                        token,
                        deadline,
                    } => {
                        let left = deadline.saturating_duration_since(self.local(slot, self.now));
                        format!(
                            "{name} asked to release {role} (token {}) within {}ms",
                            token.index,
                            left.as_millis()
                        )
                    }
                    RoleEvent::Lost { role, token } => {
                        format!("{name} lets go of {role} (token {})", token.index)
                    }
                    #[allow(unreachable_patterns)]
                    other => format!("{name} role event {other:?}"),
                };
                self.note(line);
            }
            Command::StoreReply { id, result } => {
                if self.record_trace {
                    let name = self.nodes[slot].name.clone();
                    self.note(format!("{name} answers store request {id}: {result:?}"));
                }
                self.store_replies.push(StoreReplyRecord {
                    at: self.now,
                    slot,
                    id,
                    result,
                });
            }
            Command::Role(_) => {}
            // The last arm is a catch-all so that a command added to the core's
            // (non-exhaustive) enum compiles here and shows up in the trace.
            other => {
                let name = self.nodes[slot].name.clone();
                if other == Command::LeaveFinished {
                    self.nodes[slot].left = true;
                    self.note(format!("{name} finished leaving"));
                } else {
                    self.note(format!("{name} emits {other:?}"));
                }
            }
        }
    }

    /// A node's trace name by id (`nK`, or `nK#i` for a restarted slot's previous
    /// process).
    pub fn name_of(&self, id: NodeId) -> String {
        self.id_names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("{id}"))
    }

    /// `text` with every node id (as `Display` shows it) replaced by the node's name.
    pub fn rename_ids(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (id, name) in &self.id_names {
            out = out.replace(&format!("{id}"), name);
        }
        out
    }

    fn trace_message(&mut self, from: usize, to: usize, env: &Envelope, cut: bool) {
        if !self.record_trace || self.msg_trace == MsgTrace::Off {
            return;
        }
        if self.msg_trace == MsgTrace::NoHeartbeats {
            match &env.msg {
                Message::Append(a) if a.entries.is_empty() => {
                    let last = self.shown_commit.insert((from, to), a.commit);
                    if last == Some(a.commit) {
                        self.hidden_heartbeats.insert((from, to, a.sent_at));
                        return;
                    }
                }
                Message::AppendReply(r)
                    if r.success && self.hidden_heartbeats.remove(&(to, from, r.sent_at)) =>
                {
                    return;
                }
                _ => {}
            }
        }
        let mut line = format!(
            "{}->{} {}",
            self.nodes[from].name,
            self.nodes[to].name,
            self.render_message(&env.msg)
        );
        if let Some(id) = env.to {
            if id != self.nodes[to].core.identity().id {
                line.push_str(&format!(" (for {})", self.name_of(id)));
            }
        }
        if cut {
            line.push_str(" (cut)");
        }
        self.note(line);
    }

    fn render_entries(&self, entries: &[Entry]) -> String {
        let items: Vec<String> = entries
            .iter()
            .map(|e| {
                let change = match &e.change {
                    Change::Noop => "noop".to_string(),
                    Change::AddLearner { id, .. } => format!("add {}", self.name_of(*id)),
                    Change::Promote { id, .. } => format!("promote {}", self.name_of(*id)),
                    Change::Remove { id, .. } => format!("remove {}", self.name_of(*id)),
                    Change::Roles(ops) => self.render_role_ops(ops),
                    #[allow(unreachable_patterns)]
                    other => format!("{other:?}"),
                };
                format!("{}/{} {change}", e.term, e.index)
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    /// Role operations, readably: `roles: add shard-0..shard-7, grant shard-3 to n2`.
    /// A run of `add` of consecutive shards is shown as a range.
    fn render_role_ops(&self, ops: &[RoleOp]) -> String {
        let mut items: Vec<String> = Vec::new();
        let mut adds: Vec<&str> = Vec::new();
        let flush = |adds: &mut Vec<&str>, items: &mut Vec<String>| match adds.as_slice() {
            [] => {}
            [one] => items.push(format!("add {one}")),
            [first, .., last] => items.push(format!("add {first}..{last} ({})", adds.len())),
        };
        for op in ops {
            if let RoleOp::Add { role, .. } = op {
                adds.push(role);
                continue;
            }
            flush(&mut adds, &mut items);
            adds.clear();
            items.push(match op {
                RoleOp::Remove { role } => format!("remove {role}"),
                RoleOp::Grant { role, owner, .. } => {
                    format!("grant {role} to {}", self.name_of(*owner))
                }
                RoleOp::Revoke { role } => format!("revoke {role}"),
                other => format!("{other:?}"),
            });
        }
        flush(&mut adds, &mut items);
        format!("roles: {}", items.join(", "))
    }

    /// One message, readably: terms as `tN`, log positions as `term/index`.
    pub fn render_message(&self, msg: &Message) -> String {
        let leader = |l: &Option<(NodeId, Address)>| match l {
            Some((id, _)) => self.name_of(*id),
            None => "-".into(),
        };
        let vote = |v: &cluster_mode_core::message::VoteRequest| {
            format!(
                "t{} log {}/{}{}",
                v.term,
                v.last_term,
                v.last_index,
                if v.transfer { " transfer" } else { "" }
            )
        };
        let reply = |r: &cluster_mode_core::message::VoteReply| {
            format!(
                "t{} {}",
                r.term,
                if r.granted { "granted" } else { "refused" }
            )
        };
        match msg {
            Message::Probe => "Probe".into(),
            Message::ProbeAck(ack) => match &ack.state {
                ProbeState::Fresh { supports, .. } => match supports {
                    Some(c) => format!("ProbeAck fresh, supports {}", self.name_of(*c)),
                    None => "ProbeAck fresh".into(),
                },
                ProbeState::Member {
                    term,
                    leader: l,
                    your_config,
                    ..
                } => format!(
                    "ProbeAck member t{term} leader {}{}",
                    leader(l),
                    if your_config.is_some() {
                        " +your config"
                    } else {
                        ""
                    }
                ),
                #[allow(unreachable_patterns)]
                other => format!("ProbeAck {other:?}"),
            },
            Message::BootstrapRequest { round, .. } => format!("BootstrapRequest r{round}"),
            Message::BootstrapReply { round, granted, .. } => format!(
                "BootstrapReply r{round} {}",
                if *granted { "granted" } else { "refused" }
            ),
            Message::BootstrapWithdraw { round, .. } => format!("BootstrapWithdraw r{round}"),
            Message::RecoveryRequest {
                round,
                last_index,
                last_term,
            } => format!("RecoveryRequest r{round} log {last_term}/{last_index}"),
            Message::Join { .. } => "Join".into(),
            Message::Leave => "Leave".into(),
            Message::NotLeader { leader: l, .. } => format!("NotLeader, leader {}", leader(l)),
            Message::PreVote(v) => format!("PreVote {}", vote(v)),
            Message::PreVoteReply(r) => format!("PreVoteReply {}", reply(r)),
            Message::Vote(v) => format!("Vote {}", vote(v)),
            Message::VoteReply(r) => format!("VoteReply {}", reply(r)),
            Message::Append(a) => {
                let mut s = format!("Append t{} prev {}/{}", a.term, a.prev_term, a.prev_index);
                if !a.entries.is_empty() {
                    s.push_str(&format!(" entries {}", self.render_entries(&a.entries)));
                }
                s.push_str(&format!(" commit {}", a.commit));
                s
            }
            Message::Snapshot(sn) => {
                let mut names: Vec<String> = sn
                    .snapshot
                    .membership
                    .members
                    .iter()
                    .map(|(id, m)| {
                        format!("{}{}", self.name_of(*id), if m.voter { "" } else { "(nv)" })
                    })
                    .collect();
                names.sort();
                let mut s = format!(
                    "Snapshot t{} at {}/{} [{}]",
                    sn.term,
                    sn.snapshot.term,
                    sn.snapshot.index,
                    names.join(" ")
                );
                if !sn.entries.is_empty() {
                    s.push_str(&format!(" entries {}", self.render_entries(&sn.entries)));
                }
                s
            }
            Message::AppendReply(r) => format!(
                "AppendReply t{} {} {}",
                r.term,
                if r.success { "ok" } else { "reject, retry at" },
                r.index
            ),
            Message::SnapshotChunk(c) => format!(
                "SnapshotChunk t{} at {}/{} bytes {}..{} of {}",
                c.term,
                c.snapshot_term,
                c.index,
                c.offset,
                c.offset + c.bytes.len() as u64,
                c.total
            ),
            Message::SnapshotChunkAck(a) => format!(
                "SnapshotChunkAck t{} at {} has {}",
                a.term, a.index, a.received
            ),
            // A catch-all last arm, so that a message added to the core's
            // (non-exhaustive) enum still renders.
            other => match other {
                Message::TimeoutNow { term, .. } => format!("TimeoutNow t{term}"),
                Message::Roles(req) => {
                    let add: Vec<RoleOp> = req
                        .add
                        .iter()
                        .map(|(role, placement)| RoleOp::Add {
                            role: role.clone(),
                            placement: placement.clone(),
                        })
                        .chain(
                            req.remove
                                .iter()
                                .map(|role| RoleOp::Remove { role: role.clone() }),
                        )
                        .collect();
                    format!("Roles request, {}", self.render_role_ops(&add))
                }
                _ => format!("{other:?}"),
            },
        }
    }

    /// Runs until real time `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        self.run_until_ns(until_ms * 1_000_000);
    }

    /// Runs until real time `until` (ns).
    pub fn run_until_ns(&mut self, until: u64) {
        while let Some(Reverse((at, _, key))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = self.now.max(at);
            let ev = self.events.remove(&key).expect("event");
            self.dispatch(ev);
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, ms: u64) {
        let until = self.now / 1_000_000 + ms;
        self.run_until(until);
    }

    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::Discovery => {
                for slot in 0..self.nodes.len() {
                    if !self.nodes[slot].alive || self.nodes[slot].paused {
                        continue;
                    }
                    if self.nodes[slot].discovery_fails {
                        self.input(
                            slot,
                            Input::DiscoveryFailed("simulated discovery error".into()),
                        );
                    } else {
                        let list = self.discovery_for(slot);
                        self.input(slot, Input::Discovery(list));
                    }
                }
                let next = self.now + self.net.discovery_interval.as_nanos() as u64;
                self.schedule(next, Event::Discovery);
            }
            Event::Timer { slot, gen } => {
                let n = &self.nodes[slot];
                if !n.alive || gen != n.timer_gen {
                    return;
                }
                if n.paused {
                    self.nodes[slot].deferred.push(Event::Timer { slot, gen });
                    return;
                }
                self.input(slot, Input::Tick);
            }
            Event::Deliver { to, env } => {
                let n = &self.nodes[to];
                if !n.alive {
                    return;
                }
                if n.paused {
                    self.nodes[to].deferred.push(Event::Deliver { to, env });
                    return;
                }
                if let Some(d) = &mut self.deliveries {
                    if let Some(&from) = self.by_addr.get(&env.from_addr) {
                        d.insert((from, to), self.now);
                    }
                }
                match env.msg {
                    Message::SnapshotChunk(_) => self.snapshot_pieces += 1,
                    Message::Snapshot(_) => self.snapshots += 1,
                    _ => {}
                }
                self.input(to, Input::Message(*env));
            }
        }
    }

    // ----- observations ---------------------------------------------------------

    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|s| self.nodes[*s].alive && !self.nodes[*s].left)
    }

    pub fn primaries(&self) -> Vec<usize> {
        self.live()
            .filter(|s| self.nodes[*s].core.is_primary(self.local(*s, self.now)))
            .collect()
    }

    /// The one primary, if exactly one live node is primary.
    pub fn the_primary(&self) -> Option<usize> {
        match self.primaries().as_slice() {
            [p] => Some(*p),
            _ => None,
        }
    }

    /// Whether exactly one primary exists and every live, unpaused member follows it
    /// and has the same committed member list.
    pub fn settled(&self) -> bool {
        let Some(p) = self.the_primary() else {
            return false;
        };
        let pc = &self.nodes[p].core;
        let pid = pc.identity().id;
        self.live().filter(|s| !self.nodes[*s].paused).all(|s| {
            let c = &self.nodes[s].core;
            c.cluster() == pc.cluster()
                && c.leader() == Some(pid)
                && c.members() == pc.members()
                && c.members().contains(c.identity().id)
        })
    }

    /// Runs until settled, checking every 5 ms; returns the time it took (ms).
    pub fn run_until_settled(&mut self, max_ms: u64) -> Option<u64> {
        let start = self.now / 1_000_000;
        while self.now / 1_000_000 < start + max_ms {
            if self.settled() {
                return Some(self.now / 1_000_000 - start);
            }
            self.run_for(5);
        }
        None
    }

    pub fn trace_text(&self) -> String {
        let mut s = self.trace.join("\n");
        s.push('\n');
        s
    }

    pub fn slot_of_id(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.core.identity().id == id)
    }
}

/// A node's clock at real time `real`: its offset plus elapsed time scaled by drift.
fn local_time(n: &Node, real: u64) -> Instant {
    let elapsed = real.saturating_sub(n.started_real) as i128;
    let skew = elapsed * n.drift_ppm as i128 / 1_000_000;
    Instant::from_nanos((n.offset as i128 + elapsed + skew).max(0) as u64)
}

/// What a refused input must leave as it was (cheap enough to take before every input).
#[allow(clippy::type_complexity)]
fn observable(
    core: &ClusterCore,
) -> (
    Option<Instant>,
    u64,
    bool,
    Option<NodeId>,
    u64,
    (u64, u64),
    bool,
) {
    (
        core.poll_timeout(),
        core.term(),
        core.is_leader(),
        core.leader(),
        core.commit_index(),
        core.last_log_id(),
        core.has_left(),
    )
}
