//! The simulated world both the cluster controls and the node processes share: the
//! slots (pods), the discovery registry, the recorder and the simulation's own RNG,
//! behind one lock. `cluster` (what a scenario drives) and `node` (one process) both
//! depend on this module and not on each other.

use crate::clock::Clock;
use crate::recorder::{held_roles, NodeView, Recorder};
use crate::registry::Registry;
use cluster_mode::sim::MemoryDisk;
use cluster_mode::NodeState;
use cluster_mode_core::{Address, Config, Role, SplitMix64};
use madsim::task::NodeId as SimNodeId;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

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

pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) addr: Address,
    pub(crate) sim_id: Option<SimNodeId>,
    pub(crate) clock: Clock,
    pub(crate) alive: bool,
    pub(crate) paused: bool,
    pub(crate) left: bool,
    pub(crate) state: Option<watch::Receiver<NodeState>>,
    /// The sampler's own receiver: it rebuilds a view only when the value changed.
    pub(crate) sampled: Option<watch::Receiver<NodeState>>,
    pub(crate) leave: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The running node's handle (role requests go through it).
    pub(crate) handle: Option<cluster_mode::Cluster>,
    /// The pod's data directory, kept across restarts of its process (`None`: it
    /// has none, and every start is a new member).
    pub(crate) disk: Option<MemoryDisk>,
}

pub(crate) struct World {
    pub(crate) cfg: Config,
    pub(crate) slots: Vec<Slot>,
    pub(crate) registry: Registry,
    pub(crate) recorder: Recorder,
    /// The simulation's own choices (seeded from madsim's RNG).
    pub(crate) rng: SplitMix64,
    pub(crate) transport: TransportKind,
    pub(crate) cut_links: BTreeSet<(usize, usize)>,
    pub(crate) isolated: BTreeSet<usize>,
    /// Whether new pods get a data directory.
    pub(crate) data_dirs: bool,
    /// The named roles every node declares when it starts (P13).
    pub(crate) roles: Vec<String>,
    /// Set by [`SimCluster::shutdown`](crate::SimCluster::shutdown): the sampler stops.
    pub(crate) over: bool,
}

pub(crate) struct Shared(Mutex<World>);

impl Shared {
    pub(crate) fn new(world: World) -> Self {
        Shared(Mutex::new(world))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The view to record: the status exactly as the core published it (its own
/// judgment of the lease when it last handled an event), not re-judged by the shell.
/// The checker bounds a valid lease by its end, and treats a lease claimed past its
/// end as held until the node says otherwise, so a core that ignores its lease end is
/// caught even though the shell's `is_primary_at` would hide it from applications.
pub(crate) fn raw_view_of(state: &NodeState, shared: &Shared, slot: usize) -> NodeView {
    let g = shared.lock();
    raw_view_after(state, &g.slots[slot].clock, g.recorder.last_view(slot))
}

/// [`raw_view_of`] with the node's clock at hand, sharing what is unchanged with
/// `prev`, the slot's previous view ([`NodeView::from_status_after`]).
pub(crate) fn raw_view_after(
    state: &NodeState,
    clock: &Clock,
    prev: Option<&NodeView>,
) -> NodeView {
    if !state.stopped {
        return NodeView::from_status_after(&state.status, clock, prev);
    }
    let mut st = state.status.clone();
    st.role = Role::Inactive;
    st.lease_valid = false;
    st.fencing_token = None;
    st.owned_roles.clear();
    NodeView::from_status(&st, clock)
}

/// The view an application sees at global time `now` (lease judged by the shell):
/// that of `NodeState::status_at`, judged field by field on the published status
/// rather than on a clone of it (with 1,000 members a status holds 1,000 addresses
/// and names, and a scenario waiting for agreement asks every node every 10 ms).
pub(crate) fn view_of(state: &NodeState, shared: &Shared, slot: usize, now: u64) -> NodeView {
    let clock = shared.lock().slots[slot].clock;
    let local = clock.local(now);
    let mut v = NodeView::from_status(&state.status, &clock);
    let valid = state.is_primary_at(local);
    v.lease_valid = valid;
    if !valid {
        v.fencing_term = None;
        if v.role == Role::Primary {
            v.role = Role::Candidate;
        }
    }
    if state.stopped {
        v.role = Role::Inactive;
    }
    v.roles = Some(held_roles(&state.owned_roles_at(local), &clock));
    debug_assert_eq!(v, NodeView::from_status(&state.status_at(local), &clock));
    v
}
