//! One simulated node process: the shared driving loop of the tokio shell
//! (`cluster_mode::driver`, the loop written once) with a simulated clock, the simulated
//! discovery registry, and either a datagram transport on `madsim::net::Endpoint` or
//! the real hyper transport over madsim's TCP.

use crate::cluster::Shared;
use crate::recorder::{NodeView, RecordKind};
use cluster_mode::driver::{
    spawn_driver, ClusterEvent, Control, DriverParts, Inbox, NodeState, Subscribers, Transport,
};
use cluster_mode::metrics::Counters;
use cluster_mode::{Clock, Cluster};
use cluster_mode_core::{Address, ClusterCore, Envelope, Identity, Instant, NodeId, Role, Status};
use cluster_mode_discovery::{BoxFuture, Discovery, DiscoveryError, DiscoveryResult, Instance};
use madsim::net::Endpoint;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Which transport the nodes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// Postcard datagrams on `madsim::net::Endpoint`: cheap, lossy, unordered.
    Datagram,
    /// The production hyper transport and server of `cluster-mode`, over madsim TCP.
    Http,
}

/// Simulated nanoseconds since the simulation started.
pub(crate) fn global_now() -> u64 {
    let d = madsim::time::TimeHandle::current().elapsed();
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The node's drifting clock, as the shell's `Clock`.
struct SimClock {
    shared: Arc<Shared>,
    slot: usize,
    epoch: madsim::time::Instant,
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        let c = self.shared.lock().slots[self.slot].clock;
        c.local(global_now())
    }

    fn deadline(&self, at: Instant) -> madsim::time::Instant {
        let c = self.shared.lock().slots[self.slot].clock;
        self.epoch + Duration::from_nanos(c.global_of(at).min(1 << 62))
    }
}

/// The simulated discovery registry, as the shell's `Discovery`.
struct SimDiscovery {
    shared: Arc<Shared>,
    slot: usize,
}

impl Discovery for SimDiscovery {
    fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult> {
        let mut g = self.shared.lock();
        let now = global_now();
        let inner = &mut *g;
        let rng = &mut inner.rng;
        let answer = inner
            .registry
            .answer(&inner.slots[self.slot].name, now, || rng.next());
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
        Duration::from_millis(self.shared.lock().registry.interval_ms)
    }
}

/// Datagram transport. Every madsim socket operation costs at least 1 ms of simulated
/// time in the task that performs it, so `send` queues to a long-lived sender task per
/// peer (a bounded queue; a full queue drops, as the hyper transport does), and
/// [`RECEIVERS`] tasks receive concurrently.
struct DatagramTransport {
    ep: Arc<Endpoint>,
    peers: std::sync::Mutex<std::collections::BTreeMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    shared: Arc<Shared>,
    slot: usize,
}

/// Envelopes queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 256;
/// Concurrent receive tasks per node (each can take about 1,000 datagrams per
/// simulated second).
const RECEIVERS: usize = 16;

impl Transport for DatagramTransport {
    fn send(&self, to: &Address, env: Envelope) {
        self.shared.lock().recorder.count_send(self.slot);
        let Ok(dst) = to.as_str().parse::<SocketAddr>() else {
            return;
        };
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let tx = peers.entry(dst).or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PEER_QUEUE);
            let ep = self.ep.clone();
            madsim::task::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    let _ = ep.send_to_raw(dst, 0, Box::new(bytes)).await;
                }
            });
            tx
        });
        let _ = tx.try_send(env.encode());
    }
}

/// What the simulation keeps of a running node.
pub(crate) struct Running {
    pub(crate) state: watch::Receiver<NodeState>,
    pub(crate) leave: Arc<dyn Fn() + Send + Sync>,
}

fn epoch() -> madsim::time::Instant {
    let h = madsim::time::TimeHandle::current();
    h.now_instant() - h.elapsed()
}

async fn start_datagram(
    shared: &Arc<Shared>,
    slot: usize,
    core: ClusterCore,
    clock: Arc<dyn Clock>,
    sock: SocketAddr,
    interval: Duration,
) -> (Running, mpsc::UnboundedReceiver<ClusterEvent>) {
    let ep = Arc::new(Endpoint::bind(sock).await.expect("bind node endpoint"));
    let (inbox, inbox_rx) = Inbox::channel(1024);
    for _ in 0..RECEIVERS {
        let rx_ep = ep.clone();
        let inbox = inbox.clone();
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
    let subscribers = Subscribers::default();
    let events = subscribers.subscribe();
    let handle = spawn_driver(DriverParts {
        core,
        clock,
        transport: Arc::new(DatagramTransport {
            ep,
            peers: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            shared: shared.clone(),
            slot,
        }),
        discovery: Arc::new(SimDiscovery {
            shared: shared.clone(),
            slot,
        }),
        discovery_interval: Some(interval),
        inbox: inbox_rx,
        counters: Arc::new(Counters::default()),
        subscribers,
    });
    let control = handle.control.clone();
    let leave = Arc::new(move || {
        let (done, _) = oneshot::channel();
        let _ = control.try_send(Control::Leave(done));
    });
    (
        Running {
            state: handle.state,
            leave,
        },
        events,
    )
}

async fn start_http(
    shared: &Arc<Shared>,
    slot: usize,
    name: String,
    clock: Arc<dyn Clock>,
    sock: SocketAddr,
    interval: Duration,
) -> (Running, mpsc::UnboundedReceiver<ClusterEvent>) {
    let cfg = shared.lock().cfg.clone();
    let cluster = Cluster::builder(Arc::new(SimDiscovery {
        shared: shared.clone(),
        slot,
    }))
    .listen(sock)
    .advertise(sock.to_string())
    .name(name)
    .config(cfg)
    .clock(clock)
    .discovery_interval(interval)
    .start()
    .await
    .expect("start cluster node");
    let mut sub = cluster.subscribe();
    let (tx, rx) = mpsc::unbounded_channel();
    madsim::task::spawn(async move {
        while let Some(ev) = sub.next().await {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
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
    let state = cluster.watch();
    let leave = Arc::new(move || {
        let c = cluster.clone();
        madsim::task::spawn(async move { c.leave().await });
    });
    (Running { state, leave }, rx)
}

/// The view to record: the status exactly as the core published it (its own
/// judgment of the lease when it last handled an event), not re-judged by the shell.
/// The checker bounds a valid lease by its end, and treats a lease claimed past its
/// end as held until the node says otherwise, so a core that ignores its lease end is
/// caught even though the shell's `is_primary_at` would hide it from applications.
pub(crate) fn raw_view_of(state: &NodeState, shared: &Shared, slot: usize) -> NodeView {
    let clock = shared.lock().slots[slot].clock;
    raw_view_with(state, &clock)
}

/// [`raw_view_of`] with the node's clock at hand.
pub(crate) fn raw_view_with(state: &NodeState, clock: &crate::clock::Clock) -> NodeView {
    if !state.stopped {
        return NodeView::from_status(&state.status, clock);
    }
    let mut st = state.status.clone();
    st.role = Role::Inactive;
    st.lease_valid = false;
    st.fencing_token = None;
    NodeView::from_status(&st, clock)
}

/// The view an application sees at global time `now` (lease judged by the shell).
pub(crate) fn view_of(state: &NodeState, shared: &Shared, slot: usize, now: u64) -> NodeView {
    let clock = shared.lock().slots[slot].clock;
    NodeView::from_status(&state.status_at(clock.local(now)), &clock)
}

/// One process lifetime of the node in `slot`: a fresh identity, until killed or left.
pub(crate) async fn run(shared: Arc<Shared>, slot: usize) {
    let (addr, name, cfg, kind, interval) = {
        let g = shared.lock();
        let s = &g.slots[slot];
        (
            s.addr.clone(),
            s.name.clone(),
            g.cfg.clone(),
            g.transport,
            Duration::from_millis(g.registry.interval_ms),
        )
    };
    let sock: SocketAddr = addr.as_str().parse().expect("slot address is ip:port");
    let clock: Arc<dyn Clock> = Arc::new(SimClock {
        shared: shared.clone(),
        slot,
        epoch: epoch(),
    });
    let (running, mut events) = match kind {
        TransportKind::Datagram => {
            let id = NodeId(madsim::rand::random::<u128>());
            let seed = madsim::rand::random::<u64>();
            let ident = Identity::new(id, addr.clone()).with_name(name.clone());
            let core =
                ClusterCore::new(ident, cfg.clone(), seed, clock.now()).expect("valid config");
            start_datagram(&shared, slot, core, clock.clone(), sock, interval).await
        }
        TransportKind::Http => {
            start_http(&shared, slot, name.clone(), clock.clone(), sock, interval).await
        }
    };
    let mut state = running.state.clone();
    {
        let now = global_now();
        let id = state.borrow().status.id;
        let mut g = shared.lock();
        let s = &mut g.slots[slot];
        s.state = Some(running.state.clone());
        s.sampled = Some(running.state.clone());
        s.leave = Some(running.leave.clone());
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
    let lease = cfg.lease_duration;
    loop {
        tokio::select! {
            biased;
            ev = events.recv() => match ev {
                Some(ClusterEvent::RoleChanged { role, term, primary, at }) => {
                    // Exact transitions, stamped with the node's clock at the change.
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
                    if st.lease_valid {
                        if st.lease_until.is_none_or(|u| u <= at) || !same_term {
                            // Not yet published: the lease cannot outlast `at + lease`.
                            st.lease_until = Some(at + lease);
                        }
                        if let (Some(c), true) = (st.cluster, st.fencing_token.is_none() || !same_term) {
                            st.fencing_token = Some(cluster_mode_core::FencingToken { cluster: c, term });
                        }
                    } else {
                        st.lease_until = st.lease_until.filter(|_| same_term && st.is_leader);
                        st.fencing_token = None;
                    }
                    let view = NodeView::from_status(&st, &clock);
                    shared.lock().recorder.view(g_at, slot, view);
                }
                Some(ClusterEvent::LeaveFinished { .. }) => {
                    let now = global_now();
                    let mut g = shared.lock();
                    g.slots[slot].left = true;
                    g.recorder.push(now, slot, RecordKind::Stopped("left the cluster".into()));
                    return;
                }
                Some(ClusterEvent::MembersChanged { .. }) => {}
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
