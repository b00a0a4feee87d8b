//! One simulated node process: a node assembled by the tokio shell's own
//! `ClusterBuilder` (the loop written once), with a simulated clock, the simulated
//! discovery registry, and either a datagram transport on `madsim::net::Endpoint` or
//! the real hyper transport over madsim's TCP.

use crate::recorder::{NodeView, RecordKind};
use crate::world::{global_now, raw_view_of, Shared, TransportKind};
use cluster_mode::sim::{PeerQueue, PeerQueues, TransportContext};
use cluster_mode::{Clock, ClusterBuilder, ClusterEvent, Transport};
use cluster_mode_core::{Address, Delivery, Envelope, Instant, NodeId, Role, Status};
use cluster_mode_discovery::{BoxFuture, Discovery, DiscoveryError, DiscoveryResult, Instance};
use madsim::net::Endpoint;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

// The clock, the discovery source and the transport below are owned by the node's
// `Cluster` handle, which the world itself holds (`Slot::handle`, `Slot::leave`): they
// reach the world through a `Weak`, or the world and everything it recorded would
// keep itself alive after the run (FINDINGS.md #7). The world outlives every node
// task, so the upgrade fails only once the simulation is over.

/// The node's drifting clock, as the shell's `Clock`.
struct SimClock {
    shared: Weak<Shared>,
    slot: usize,
    epoch: madsim::time::Instant,
}

impl SimClock {
    /// The slot's clock; after the simulation is over (the world dropped), a clock
    /// without offset or drift.
    fn clock(&self) -> crate::clock::Clock {
        match self.shared.upgrade() {
            Some(w) => w.lock().slots[self.slot].clock,
            None => crate::clock::Clock::new(0, 0),
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.clock().local(global_now())
    }

    fn deadline(&self, at: Instant) -> madsim::time::Instant {
        let c = self.clock();
        self.epoch + Duration::from_nanos(c.global_of(at).min(1 << 62))
    }
}

/// The simulated discovery registry, as the shell's `Discovery`.
struct SimDiscovery {
    shared: Weak<Shared>,
    slot: usize,
}

impl Discovery for SimDiscovery {
    fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult> {
        let Some(shared) = self.shared.upgrade() else {
            let over = Err(DiscoveryError::Backend("simulation over".into()));
            return Box::pin(std::future::ready(over));
        };
        let mut g = shared.lock();
        let now = global_now();
        let world = &mut *g;
        let rng = &mut world.rng;
        let answer = world
            .registry
            .answer(&world.slots[self.slot].name, now, || rng.next_u64());
        let r = match answer {
            Ok(list) => Ok(list
                .into_iter()
                .filter_map(|d| {
                    let addr: SocketAddr = d.addr.as_str().parse().ok()?;
                    let i = Instance::new(addr);
                    Some(match d.name {
                        Some(n) => i.with_name(n),
                        None => i,
                    })
                })
                .collect()),
            Err(e) => Err(DiscoveryError::Backend(e)),
        };
        Box::pin(std::future::ready(r))
    }

    fn poll_interval(&self) -> Duration {
        let ms = self
            .shared
            .upgrade()
            .map_or(200, |w| w.lock().registry.interval_ms);
        Duration::from_millis(ms)
    }
}

/// Datagram transport. Sends go through the shell's per-peer queues (the same
/// coalescing, drop-oldest and maximum age as the hyper transport), each drained by
/// one long-lived sender task, since every madsim socket operation costs at least
/// 1 ms of simulated time in the task that performs it; [`RECEIVERS`] tasks receive
/// concurrently.
struct DatagramTransport {
    ep: Arc<Endpoint>,
    queues: PeerQueues,
    cx: TransportContext,
    shared: Weak<Shared>,
    slot: usize,
}

/// Concurrent receive tasks per node (each can take about 1,000 datagrams per
/// simulated second).
const RECEIVERS: usize = 16;

impl DatagramTransport {
    /// Binds nothing: `ep` is bound already. Starts the receive tasks.
    fn start(ep: Arc<Endpoint>, cx: TransportContext, shared: Weak<Shared>, slot: usize) -> Self {
        for _ in 0..RECEIVERS {
            let rx_ep = ep.clone();
            let inbox = cx.inbox.clone();
            madsim::task::spawn(async move {
                while let Ok((data, _from)) = rx_ep.recv_from_raw(0).await {
                    if let Ok(bytes) = data.downcast::<Vec<u8>>() {
                        if let Ok(env) = Envelope::decode(&bytes) {
                            // A full inbox drops the datagram, as a socket buffer would.
                            let _ = inbox.try_deliver(env);
                        }
                    }
                }
            });
        }
        DatagramTransport {
            ep,
            queues: PeerQueues::new(cx.options.queue_len, cx.counters.clone()),
            cx,
            shared,
            slot,
        }
    }
}

impl Transport for DatagramTransport {
    fn send(&self, to: &Address, env: Envelope, class: Delivery) {
        if let Some(w) = self.shared.upgrade() {
            w.lock().recorder.count_send(self.slot);
        }
        let Ok(dst) = to.as_str().parse::<SocketAddr>() else {
            return;
        };
        self.queues.push(to, env, class, |queue: &Arc<PeerQueue>| {
            let (ep, queue, counters) = (self.ep.clone(), queue.clone(), self.cx.counters.clone());
            let max_age = self.cx.options.max_age;
            // One task per peer for the node's life, as before: no idle timer.
            madsim::task::spawn(async move {
                while let Some(env) = queue.next(None, max_age, &counters).await {
                    let _ = ep.send_to_raw(dst, 0, Box::new(env.encode())).await;
                }
            });
        });
    }
}

fn epoch() -> madsim::time::Instant {
    let h = madsim::time::TimeHandle::current();
    h.now_instant() - h.elapsed()
}

/// One process lifetime of the node in `slot`: a fresh identity (or, with a data
/// directory, the one stored there), until killed or left.
pub(crate) async fn run(shared: Arc<Shared>, slot: usize) {
    let (addr, name, cfg, kind, interval, disk, roles) = {
        let g = shared.lock();
        let s = &g.slots[slot];
        (
            s.addr.clone(),
            s.name.clone(),
            g.cfg.clone(),
            g.transport,
            Duration::from_millis(g.registry.interval_ms),
            s.disk.clone(),
            g.roles.clone(),
        )
    };
    let sock: SocketAddr = addr.as_str().parse().expect("slot address is ip:port");
    let clock: Arc<dyn Clock> = Arc::new(SimClock {
        shared: Arc::downgrade(&shared),
        slot,
        epoch: epoch(),
    });
    let builder = ClusterBuilder::new(Arc::new(SimDiscovery {
        shared: Arc::downgrade(&shared),
        slot,
    }))
    .advertise(sock.to_string())
    .name(name.clone())
    .config(cfg)
    .clock(clock)
    .discovery_interval(interval)
    .roles(roles);
    // With a data directory, a stored id wins over the one drawn below.
    let builder = match disk {
        Some(d) => builder.memory_disk(d),
        None => builder,
    };
    let builder = match kind {
        TransportKind::Datagram => {
            // Identity and core seed from madsim's RNG, drawn before binding.
            let id = NodeId(madsim::rand::random::<u128>());
            let seed = madsim::rand::random::<u64>();
            let ep = Arc::new(Endpoint::bind(sock).await.expect("bind node endpoint"));
            let world = Arc::downgrade(&shared);
            builder
                .mounted()
                .node_id(id)
                .core_seed(seed)
                .with_transport(move |cx| Arc::new(DatagramTransport::start(ep, cx, world, slot)))
        }
        TransportKind::Http => builder.listen(sock),
    };
    let cluster = builder.start().await.expect("start cluster node");
    let mut events = cluster.subscribe();
    if std::env::var_os("SIM_HTTP_COUNTERS").is_some() {
        // Diagnostics for FINDINGS.md #1: the shell's counters every 2 s.
        let c = cluster.clone();
        madsim::task::spawn(async move {
            loop {
                madsim::time::sleep(Duration::from_secs(2)).await;
                eprintln!(
                    "{:>6} ms {} {:?}",
                    global_now() / 1_000_000,
                    c.address(),
                    c.counters()
                );
            }
        });
    }
    let leave: Arc<dyn Fn() + Send + Sync> = {
        let c = cluster.clone();
        Arc::new(move || {
            let c = c.clone();
            madsim::task::spawn(async move { c.leave().await });
        })
    };
    let mut state = cluster.watch();
    {
        let now = global_now();
        let id = state.borrow().status.id;
        let mut g = shared.lock();
        let s = &mut g.slots[slot];
        s.state = Some(state.clone());
        s.sampled = Some(state.clone());
        s.leave = Some(leave);
        s.handle = Some(cluster.clone());
        s.alive = true;
        g.recorder.push(
            now,
            slot,
            RecordKind::Started {
                name,
                id,
                addr: addr.to_string(),
            },
        );
    }
    loop {
        tokio::select! {
            biased;
            ev = events.next() => match ev {
                Some(ClusterEvent::RoleChanged { role, term, primary, lease_until, fencing_token, at }) => {
                    // Exact transitions, stamped with the node's clock at the change,
                    // lease end and fencing token as the core gave them.
                    let (g_at, clock) = {
                        let c = shared.lock().slots[slot].clock;
                        (c.global_of(at), c)
                    };
                    let mut st: Status = state.borrow().status.clone();
                    let same_term = st.term == term;
                    st.term = term;
                    st.role = role;
                    st.primary = primary;
                    st.lease_valid = role == Role::Primary;
                    st.is_leader = role == Role::Primary || (same_term && st.is_leader);
                    st.lease_until = lease_until;
                    st.fencing_token = fencing_token;
                    let mut g = shared.lock();
                    let mut view = NodeView::from_status_after(&st, &clock, g.recorder.last_view(slot));
                    // The roles of that status may be of another instant than `at`
                    // (the loop may have handled more inputs since): say nothing.
                    view.roles = None;
                    g.recorder.view(g_at, slot, view);
                }
                Some(ClusterEvent::LeaveFinished { .. }) => {
                    let now = global_now();
                    let mut g = shared.lock();
                    g.slots[slot].left = true;
                    g.recorder.push(now, slot, RecordKind::Stopped("left the cluster".into()));
                    return;
                }
                Some(ClusterEvent::MembersChanged { .. }) | Some(_) => {}
                None => return,
            },
            r = state.changed() => {
                if r.is_err() {
                    return;
                }
                let now = global_now();
                let view = raw_view_of(&state.borrow_and_update(), &shared, slot);
                shared.lock().recorder.view(now, slot, view);
            }
        }
    }
}
