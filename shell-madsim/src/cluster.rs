//! `SimCluster`: node lifecycle, network faults, clocks, discovery, recording.

use crate::clock::Clock;
use crate::node;
use crate::recorder::{NodeView, RecordKind, Recorder, Trace};
use crate::registry::Registry;
use crate::world::{global_now, raw_view_after, view_of, Shared, Slot, TransportKind, World};
use cluster_mode::sim::MemoryDisk;
use cluster_mode::NodeState;
use cluster_mode_core::{Address, Config, DurableState, SplitMix64};
use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId as SimNodeId;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The port every simulated node listens on.
pub const PORT: u16 = 7000;

/// Options of a simulated cluster.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// How often every live node's status is sampled (besides every change), in
    /// simulated milliseconds. Sampling catches a lease that expires by time alone.
    pub sample_ms: u64,
    /// The largest clock offset given to a node at creation, in milliseconds.
    pub max_clock_offset_ms: u64,
    /// The transport between nodes.
    pub transport: TransportKind,
    /// Whether every pod has a data directory: an in-memory disk, in the real state
    /// file format, that survives the restarts of its process, so that
    /// [`SimCluster::restart`] brings back the same member with its id, term, vote
    /// and log (a container restarted with its volume). A pod made by
    /// [`SimCluster::replace`] gets a new, empty one. `false` (the default): no data
    /// directory, and every start is a new member (P1).
    pub data_dirs: bool,
    /// How many named roles (P13) every node declares when it starts, through the
    /// shell's `ClusterBuilder::roles`: `shard-0` .. `shard-{roles-1}`, placed
    /// anywhere ([`role_names`]). 64 by default; 0 declares none.
    pub roles: usize,
}

/// The names of the first `n` roles every node declares: `shard-0` .. `shard-{n-1}`.
pub fn role_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("shard-{i}")).collect()
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            sample_ms: 5,
            max_clock_offset_ms: 10_000,
            transport: TransportKind::Datagram,
            data_dirs: false,
            roles: 64,
        }
    }
}

/// A publicly visible summary of one slot.
#[derive(Clone, Debug)]
pub struct SlotInfo {
    /// Pod name.
    pub name: String,
    /// `ip:port`.
    pub addr: String,
    /// Whether its process runs (not killed, not left).
    pub alive: bool,
    /// Whether it is paused.
    pub paused: bool,
    /// Whether it finished leaving.
    pub left: bool,
}

/// A cluster of simulated nodes. Create it inside a madsim runtime (in the future
/// given to `Runtime::block_on`), then add nodes and inject faults between sleeps.
///
/// Nodes are *slots*: a pod name and IP. Restarting a slot gives it a new identity
/// (P1), unless pods have data directories ([`SimOptions::data_dirs`]); replacing a
/// pod makes a new slot with a new name and IP.
#[derive(Clone)]
pub struct SimCluster {
    shared: Arc<Shared>,
    max_offset_ms: u64,
    /// The sampler's period.
    sample_period: Duration,
}

impl SimCluster {
    /// A cluster whose nodes all use `cfg`. Starts the status sampler.
    pub fn new(cfg: Config, opts: SimOptions) -> Self {
        let world = World {
            cfg,
            slots: Vec::new(),
            registry: Registry::default(),
            recorder: Recorder::default(),
            rng: SplitMix64::new(madsim::rand::random::<u64>()),
            transport: opts.transport,
            cut_links: BTreeSet::new(),
            isolated: BTreeSet::new(),
            data_dirs: opts.data_dirs,
            roles: role_names(opts.roles),
            over: false,
        };
        let shared = Arc::new(Shared::new(world));
        let sampler = shared.clone();
        let period = Duration::from_millis(opts.sample_ms.max(1));
        // Diagnostics for long runs (`SIM_TICK_MS=1000 cargo sim run thousand-members`):
        // simulated time and the CPU time of this thread (read from procfs: inside a
        // simulation `std::time` is simulated) on stderr every so many simulated ms,
        // printed by the sampler (a task of its own would change madsim's schedule,
        // hence the run).
        let tick_ns: Option<u64> = std::env::var("SIM_TICK_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| ms.max(1) * 1_000_000);
        madsim::task::spawn(async move {
            let mut next_tick = tick_ns;
            loop {
                madsim::time::sleep(period).await;
                if sampler.lock().over {
                    return;
                }
                sample(&sampler);
                if let (Some(at), Some(every)) = (next_tick, tick_ns) {
                    let now = global_now();
                    if now >= at {
                        let cpu_ns: Option<u64> =
                            std::fs::read_to_string("/proc/thread-self/schedstat")
                                .ok()
                                .and_then(|s| s.split_whitespace().next()?.parse().ok());
                        eprintln!(
                            "[tick] simulated {:.1} s, thread CPU {}",
                            now as f64 / 1e9,
                            cpu_ns.map_or("?".into(), |c| format!("{:.1} s", c as f64 / 1e9))
                        );
                        next_tick = Some(now - now % every + every);
                    }
                }
            }
        });
        SimCluster {
            shared,
            max_offset_ms: opts.max_clock_offset_ms.max(1),
            sample_period: period,
        }
    }

    /// Samples every node a last time, takes the whole history (without copying it)
    /// and ends the simulation ([`SimCluster::shutdown`]): what a run does last.
    pub async fn finish(&self) -> Trace {
        sample(&self.shared);
        let trace = {
            let mut g = self.shared.lock();
            let names = g.slots.iter().map(|s| s.name.clone()).collect();
            g.recorder.take(names, global_now())
        };
        self.shutdown().await;
        trace
    }

    /// Ends the simulation: kills every node process, stops the sampler and drops
    /// the node handles the world holds, then lets the runtime drop the killed tasks.
    /// Call it last (after [`SimCluster::trace`]), inside the runtime: nothing may be
    /// asked of the cluster afterwards.
    ///
    /// Without it every run leaks its whole world (FINDINGS.md #7): madsim 0.2 never
    /// frees a task still pending when its runtime is dropped (a task's own metadata
    /// holds its waker, so a future that never completes keeps itself alive; madsim
    /// issue #242), and the node tasks hold the world, the recorder and its history.
    /// Killed tasks are dropped by the executor the next time it runs them, hence the
    /// sleep; the sampler returns at its next tick.
    pub async fn shutdown(&self) {
        let ids: Vec<SimNodeId> = {
            let mut g = self.shared.lock();
            g.over = true;
            for s in &mut g.slots {
                s.state = None;
                s.sampled = None;
                s.leave = None;
                s.handle = None;
            }
            g.slots.iter().filter_map(|s| s.sim_id).collect()
        };
        let rt = Handle::current();
        for id in ids {
            rt.kill(id);
        }
        madsim::time::sleep(self.sample_period + Duration::from_millis(1)).await;
    }

    /// Simulated nanoseconds since the simulation started.
    pub fn now_ns(&self) -> u64 {
        global_now()
    }

    /// Sleeps `ms` simulated milliseconds.
    pub async fn sleep_ms(&self, ms: u64) {
        madsim::time::sleep(Duration::from_millis(ms)).await;
    }

    /// The configuration every node uses.
    pub fn config(&self) -> Config {
        self.shared.lock().cfg.clone()
    }

    /// Adds a pod named `name` at `ip`, lists it in discovery and starts it. Its clock
    /// gets a random offset and rate error `drift_ppm`. Returns its slot.
    pub fn add_node(&self, name: &str, ip: Ipv4Addr, drift_ppm: i64) -> usize {
        let slot = {
            let mut g = self.shared.lock();
            let offset = g.rng.next_u64() % (self.max_offset_ms * 1_000_000) + 1_000_000_000;
            let addr = Address::new(format!("{ip}:{PORT}"));
            let now = global_now();
            g.registry.list(now, &addr, name);
            let disk = g.data_dirs.then(MemoryDisk::new);
            g.slots.push(Slot {
                name: name.to_string(),
                addr,
                sim_id: None,
                clock: Clock::new(offset, drift_ppm),
                alive: false,
                paused: false,
                left: false,
                state: None,
                sampled: None,
                leave: None,
                handle: None,
                disk,
            });
            g.slots.len() - 1
        };
        let shared = self.shared.clone();
        let handle = Handle::current()
            .create_node()
            .name(name)
            .ip(IpAddr::V4(ip))
            .init(move || node::run(shared.clone(), slot))
            .build();
        self.shared.lock().slots[slot].sim_id = Some(handle.id());
        slot
    }

    fn sim_id(&self, slot: usize) -> SimNodeId {
        self.shared.lock().slots[slot].sim_id.expect("node built")
    }

    /// Records a cluster-wide fault description (shown in traces and timelines).
    pub fn fault(&self, what: impl Into<String>) {
        self.shared
            .lock()
            .recorder
            .push(global_now(), usize::MAX, RecordKind::Fault(what.into()));
    }

    fn stop_slot(&self, slot: usize, why: &str, unlist: bool) {
        let id = self.sim_id(slot);
        Handle::current().kill(id);
        let mut g = self.shared.lock();
        let now = global_now();
        let s = &mut g.slots[slot];
        let was_alive = s.alive && !s.left;
        s.alive = false;
        s.paused = false;
        s.state = None;
        s.sampled = None;
        s.leave = None;
        s.handle = None;
        let addr = s.addr.clone();
        if unlist {
            g.registry.unlist(now, &addr);
        }
        if was_alive {
            g.recorder
                .push(now, slot, RecordKind::Stopped(why.to_string()));
        }
    }

    /// Kills the process (a crash). The pod stays listed in discovery unless
    /// `unlist` (a pod that is gone for good).
    pub fn kill(&self, slot: usize, unlist: bool) {
        self.stop_slot(slot, "killed", unlist);
    }

    /// Kills and restarts the process at the same name and IP: with a data directory
    /// ([`SimOptions::data_dirs`]) the same member, restored from it; without, a new
    /// identity (a pod restarted in place). A slot killed earlier with
    /// [`SimCluster::kill`] is simply started again, listed in discovery.
    pub fn restart(&self, slot: usize) {
        self.stop_slot(slot, "killed for restart", false);
        let id = self.sim_id(slot);
        {
            let mut g = self.shared.lock();
            let now = global_now();
            let (addr, name) = (g.slots[slot].addr.clone(), g.slots[slot].name.clone());
            g.slots[slot].left = false;
            g.registry.list(now, &addr, &name);
        }
        Handle::current().restart(id);
    }

    /// Replaces the pod: the old one is killed and unlisted, a new pod `name` at `ip`
    /// (a new identity) is added. Returns the new slot.
    pub fn replace(&self, slot: usize, name: &str, ip: Ipv4Addr) -> usize {
        self.stop_slot(slot, "replaced", true);
        let ppm = self.shared.lock().slots[slot].clock.ppm();
        self.add_node(name, ip, ppm)
    }

    /// The durable state in the pod's data directory, if it has one and anything was
    /// written to it.
    pub fn disk_state(&self, slot: usize) -> Option<DurableState> {
        self.shared.lock().slots[slot]
            .disk
            .as_ref()
            .and_then(MemoryDisk::state)
    }

    /// Pauses the process (SIGSTOP, a long GC pause): no task of it runs.
    pub fn pause(&self, slot: usize) {
        Handle::current().pause(self.sim_id(slot));
        let mut g = self.shared.lock();
        g.slots[slot].paused = true;
        g.recorder.push(global_now(), slot, RecordKind::Paused);
    }

    /// Resumes a paused process.
    pub fn resume(&self, slot: usize) {
        Handle::current().resume(self.sim_id(slot));
        let mut g = self.shared.lock();
        g.slots[slot].paused = false;
        g.recorder.push(global_now(), slot, RecordKind::Resumed);
    }

    /// Asks the node to leave gracefully (`Input::Leave`).
    pub fn leave(&self, slot: usize) {
        let leave = self.shared.lock().slots[slot].leave.clone();
        if let Some(leave) = leave {
            leave();
        }
    }

    /// The named roles every node declares when it starts ([`SimOptions::roles`]).
    pub fn declared_roles(&self) -> Vec<String> {
        self.shared.lock().roles.clone()
    }

    /// Asks the running node in `slot` to declare `roles` at run time
    /// (`Cluster::add_roles`: forwarded to the primary and resent until committed).
    /// Nothing happens if the node is not running.
    pub fn add_roles(&self, slot: usize, roles: Vec<String>) {
        let handle = self.shared.lock().slots[slot].handle.clone();
        if let Some(c) = handle {
            madsim::task::spawn(async move {
                let _ = c.add_roles(roles).await;
            });
        }
    }

    /// A new client session of the replicated key-value store through the running
    /// node in `slot`: the shell's own [`Store`](cluster_mode::Store) handle
    /// (`Cluster::store_with`), with its session and its retries. `None` if the node
    /// is not running. The handle stays bound to that process: once it is killed, the
    /// handle's requests fail (or hang, while madsim has not dropped the killed
    /// tasks yet), so a client takes a new one after a failure.
    pub fn store(
        &self,
        slot: usize,
        options: cluster_mode::StoreOptions,
    ) -> Option<cluster_mode::Store> {
        let g = self.shared.lock();
        let s = g.slots.get(slot)?;
        if !s.alive || s.left {
            return None;
        }
        s.handle.as_ref().map(|c| c.store_with(options))
    }

    /// The role names in the committed role table of the node in `slot`, as it last
    /// published it (empty if it is not running).
    pub fn committed_roles(&self, slot: usize) -> Vec<String> {
        let state = self.shared.lock().slots[slot].state.clone();
        state.map_or_else(Vec::new, |st| {
            st.borrow()
                .status
                .roles
                .iter()
                .map(|r| r.role.clone())
                .collect()
        })
    }

    /// Asks the running node in `slot` to remove `roles` at run time
    /// (`Cluster::remove_roles`, through the primary). Nothing happens if the node
    /// is not running.
    pub fn remove_roles(&self, slot: usize, roles: Vec<String>) {
        let handle = self.shared.lock().slots[slot].handle.clone();
        if let Some(c) = handle {
            madsim::task::spawn(async move {
                c.remove_roles(roles).await;
            });
        }
    }

    /// Cuts the link `from -> to` (one direction only).
    pub fn cut_one_way(&self, from: usize, to: usize) {
        let (a, b) = (self.sim_id(from), self.sim_id(to));
        NetSim::current().clog_link(a, b);
        self.shared.lock().cut_links.insert((from, to));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: usize, b: usize) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Restores both directions between `a` and `b` (cut by [`SimCluster::cut`] or
    /// [`SimCluster::partition`]); other cuts stay.
    pub fn uncut(&self, a: usize, b: usize) {
        let net = NetSim::current();
        let mut g = self.shared.lock();
        for (x, y) in [(a, b), (b, a)] {
            if g.cut_links.remove(&(x, y)) {
                let (sx, sy) = (g.slots[x].sim_id, g.slots[y].sim_id);
                if let (Some(sx), Some(sy)) = (sx, sy) {
                    net.unclog_link(sx, sy);
                }
            }
        }
    }

    /// Splits the listed slots into groups that cannot talk to each other. Slots not
    /// listed in any group keep all their links.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        for (i, ga) in groups.iter().enumerate() {
            for gb in groups.iter().skip(i + 1) {
                for &a in ga {
                    for &b in gb {
                        self.cut(a, b);
                    }
                }
            }
        }
    }

    /// Cuts the node off from everyone, both directions.
    pub fn isolate(&self, slot: usize) {
        NetSim::current().clog_node(self.sim_id(slot));
        self.shared.lock().isolated.insert(slot);
    }

    /// Restores every cut link and isolated node.
    pub fn heal(&self) {
        let (links, isolated) = {
            let mut g = self.shared.lock();
            (
                std::mem::take(&mut g.cut_links),
                std::mem::take(&mut g.isolated),
            )
        };
        let net = NetSim::current();
        for (a, b) in links {
            net.unclog_link(self.sim_id(a), self.sim_id(b));
        }
        for s in isolated {
            net.unclog_node(self.sim_id(s));
        }
    }

    /// Sets the network's packet loss rate (0.0-1.0) and one-way latency range.
    pub fn set_net(&self, loss: f64, latency: Range<Duration>) {
        NetSim::current().update_config(|c| {
            c.packet_loss_rate = loss;
            c.send_latency = latency;
        });
    }

    /// Changes a node's clock rate error from now on (parts per million).
    pub fn set_drift(&self, slot: usize, ppm: i64) {
        let now = global_now();
        self.shared.lock().slots[slot].clock.set_ppm(now, ppm);
    }

    /// Changes the discovery registry (lag, errors, flapping, per-node views).
    pub fn registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.shared.lock().registry)
    }

    /// The slots, in creation order.
    pub fn slots(&self) -> Vec<SlotInfo> {
        self.shared
            .lock()
            .slots
            .iter()
            .map(|s| SlotInfo {
                name: s.name.clone(),
                addr: s.addr.to_string(),
                alive: s.alive,
                paused: s.paused,
                left: s.left,
            })
            .collect()
    }

    /// The current view of every running, unpaused node, by slot.
    pub fn views(&self) -> Vec<(usize, NodeView)> {
        let now = global_now();
        let states: Vec<(usize, watch::Receiver<NodeState>)> = {
            let g = self.shared.lock();
            g.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.alive && !s.paused && !s.left)
                .filter_map(|(i, s)| Some((i, s.state.clone()?)))
                .collect()
        };
        states
            .into_iter()
            .filter(|(_, st)| !st.borrow().stopped)
            .map(|(i, st)| (i, view_of(&st.borrow(), &self.shared, i, now)))
            .collect()
    }

    /// Samples every node now, then returns the history so far.
    pub fn trace(&self) -> Trace {
        sample(&self.shared);
        let g = self.shared.lock();
        let names = g.slots.iter().map(|s| s.name.clone()).collect();
        g.recorder.snapshot(names, global_now())
    }
}

fn sample(shared: &Shared) {
    let now = global_now();
    let mut changed: Vec<(usize, NodeView)> = Vec::new();
    {
        let mut guard = shared.lock();
        let g = &mut *guard;
        for (i, s) in g.slots.iter_mut().enumerate() {
            if !s.alive || s.paused || s.left {
                continue;
            }
            let clock = s.clock;
            let Some(rx) = s.sampled.as_mut() else {
                continue;
            };
            if rx.has_changed().unwrap_or(false) {
                let st = rx.borrow_and_update();
                changed.push((i, raw_view_after(&st, &clock, g.recorder.last_view(i))));
            }
        }
        for (i, view) in changed {
            g.recorder.view(now, i, view);
        }
    }
}
