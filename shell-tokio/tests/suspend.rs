//! A primary frozen by a suspend (a VM pause, a laptop lid) must not believe its
//! lease when it wakes (issue 10, part 2).
//!
//! Three nodes on an in-memory network (feature `sim`), each with a [`SuspendClock`]:
//! a clock whose reading stops while its node is "suspended" and then either jumps by
//! the suspended time (as `CLOCK_BOOTTIME`, the default clock on Linux, does) or
//! carries on from where it stopped (as `CLOCK_MONOTONIC`, the runtime's clock and
//! the default before, does). The primary is suspended (frozen clock, cut off from
//! the network) for a second; the other two elect a new primary; the old one wakes.
//! Right after waking, before any timer of the runtime has fired, it must answer
//! `is_primary() == false`, give no fencing token and not report itself primary; and
//! it must never again be primary at the same moment as the new primary.
//!
//! The same scenario with the monotonic behaviour must fail the check (the old
//! primary still believes its lease while another node is primary), which shows the
//! check can fail and what the boottime clock fixes.
// Real tokio time and CLOCK_BOOTTIME: not under the madsim simulator.
#![cfg(all(target_os = "linux", not(madsim)))]

use cluster_mode::sim::{Inbox, TransportContext};
use cluster_mode::{BoottimeClock, Clock, Cluster, ClusterBuilder, Config, Role, StaticDiscovery};
use cluster_mode_core::{Address, Delivery, Envelope, Instant};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The in-memory network; `cut` drops everything from and to one address.
#[derive(Default)]
struct Net {
    nodes: Mutex<HashMap<Address, Inbox>>,
    cut: Mutex<Option<Address>>,
}

struct MemTransport {
    net: Arc<Net>,
    me: Address,
}

impl cluster_mode::Transport for MemTransport {
    fn send(&self, to: &Address, env: Envelope, _class: Delivery) {
        let cut = self.net.cut.lock().unwrap().clone();
        if cut.as_ref() == Some(&self.me) || cut.as_ref() == Some(to) {
            return;
        }
        let inbox = self.net.nodes.lock().unwrap().get(to).cloned();
        if let Some(inbox) = inbox {
            inbox.try_deliver(env);
        }
    }
}

/// A node's clock that can be suspended: frozen while suspended, then on resume it
/// jumps by the suspended time (`counts_suspend`, like CLOCK_BOOTTIME) or not (like
/// CLOCK_MONOTONIC). Deadlines are mapped onto the runtime's timers relative to now,
/// as `BoottimeClock` does: a jump moves the clock's reading, no timer.
struct SuspendClock {
    base: BoottimeClock,
    counts_suspend: bool,
    state: Mutex<Suspend>,
}

#[derive(Default)]
struct Suspend {
    /// The reading while suspended.
    frozen: Option<Instant>,
    /// Suspended time the clock does not count.
    hidden: Duration,
}

impl SuspendClock {
    fn new(counts_suspend: bool) -> Self {
        SuspendClock {
            base: BoottimeClock::new(),
            counts_suspend,
            state: Mutex::default(),
        }
    }

    fn suspend(&self) {
        let now = self.now();
        self.state.lock().unwrap().frozen = Some(now);
    }

    fn resume(&self) {
        let mut s = self.state.lock().unwrap();
        let frozen = s.frozen.take().expect("suspended");
        if !self.counts_suspend {
            s.hidden = self.base.now() - frozen;
        }
    }
}

impl Clock for SuspendClock {
    fn now(&self) -> Instant {
        let s = self.state.lock().unwrap();
        s.frozen
            .unwrap_or_else(|| self.base.now().saturating_sub(s.hidden))
    }

    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        let now = self.now();
        tokio::time::Instant::now() + (at - now).min(Duration::from_secs(3600))
    }
}

async fn node(
    net: &Arc<Net>,
    addr: &str,
    peers: &StaticDiscovery,
    clock: Arc<SuspendClock>,
) -> Cluster {
    let net = net.clone();
    let me = Address::from(addr);
    ClusterBuilder::new(Arc::new(peers.clone()))
        .mounted()
        .advertise(addr)
        .config(Config::fast_test())
        .clock(clock)
        .with_transport(move |cx: TransportContext| {
            net.nodes.lock().unwrap().insert(me.clone(), cx.inbox);
            Arc::new(MemTransport { net, me })
        })
        .start()
        .await
        .unwrap()
}

async fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> Option<usize>) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(i) = f() {
            return i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The one node of `among` that is primary and followed by the others of `among`.
fn agreed(nodes: &[Cluster], among: &[usize]) -> Option<usize> {
    let prim: Vec<usize> = among
        .iter()
        .copied()
        .filter(|&i| nodes[i].is_primary())
        .collect();
    let &[p] = prim.as_slice() else { return None };
    let pid = nodes[p].id();
    among
        .iter()
        .all(|&i| i == p || nodes[i].primary().map(|x| x.id) == Some(pid))
        .then_some(p)
}

/// Suspends the primary for a second while the others take over, wakes it, and
/// checks that it does not act on its lease; `Err` says how it did.
async fn suspended_primary(counts_suspend: bool) -> Result<(), String> {
    let net = Arc::new(Net::default());
    let addrs = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
    let peers = StaticDiscovery::parse(addrs).unwrap();
    let clocks: Vec<_> = (0..3)
        .map(|_| Arc::new(SuspendClock::new(counts_suspend)))
        .collect();
    let mut nodes = Vec::new();
    for (a, c) in addrs.iter().zip(&clocks) {
        nodes.push(node(&net, a, &peers, c.clone()).await);
    }
    let all = [0, 1, 2];
    let p = wait_for("a primary", Duration::from_secs(10), || {
        agreed(&nodes, &all)
    })
    .await;
    let old_token = nodes[p].fencing_token().expect("primary has a token");

    // The primary freezes: its clock stops and it neither sends nor receives.
    clocks[p].suspend();
    *net.cut.lock().unwrap() = Some(Address::from(addrs[p]));
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != p).collect();
    let q = wait_for("a new primary", Duration::from_secs(10), || {
        agreed(&nodes, &rest)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let q = agreed(&nodes, &rest).unwrap_or(q);

    // It wakes. No await from here to the checks: no timer fires, no message is read.
    clocks[p].resume();
    let mut failures = Vec::new();
    let (old, new) = (nodes[p].is_primary(), nodes[q].is_primary());
    if old {
        failures.push(format!(
            "right after waking the old primary says is_primary() = true (the new primary says {new})"
        ));
    }
    if let Some(t) = nodes[p].fencing_token() {
        failures.push(format!(
            "right after waking it hands out fencing token {t:?}"
        ));
    }
    if nodes[p].status().role == Role::Primary {
        failures.push("right after waking its status says Primary".into());
    }
    // Then the network heals; sample both for a while: never two primaries at once,
    // and the old primary never again hands out its old token.
    *net.cut.lock().unwrap() = None;
    let until = tokio::time::Instant::now() + Duration::from_millis(300);
    let mut both = 0;
    while tokio::time::Instant::now() < until {
        if nodes[p].is_primary() && nodes[q].is_primary() {
            both += 1;
        }
        if nodes[p].fencing_token() == Some(old_token) {
            failures.push("after waking it hands out its old fencing token".into());
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    if both > 0 {
        failures.push(format!(
            "{both} samples after waking saw both nodes primary"
        ));
    }
    for n in &nodes {
        n.shutdown().await;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_primary_with_boottime_clock_drops_its_lease_on_waking() {
    if let Err(e) = suspended_primary(true).await {
        panic!("{e}");
    }
}

/// The check fails with a clock that does not count suspended time (the old default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_primary_with_monotonic_clock_is_caught() {
    match suspended_primary(false).await {
        Ok(()) => panic!("a clock that ignores the suspend passed the check"),
        Err(e) => eprintln!("caught, as expected: {e}"),
    }
}

/// The default clock of a real node on Linux is CLOCK_BOOTTIME (`ClusterBuilder`
/// uses `default_clock()`, a new `DefaultClock`): this stops compiling if it changes.
#[test]
fn default_clock_is_boottime() {
    let c: cluster_mode::clock::DefaultClock = BoottimeClock::new();
    let a = c.now();
    std::thread::sleep(Duration::from_millis(5));
    assert!(c.now() - a >= Duration::from_millis(5));
}
