//! TEMPORARY per-node driving loop, to be replaced by the shared `cluster_mode::driver`
//! of the tokio shell once it lands (see DESIGN.md "The shells": the loop is written
//! once). It is deliberately small: one task owns the core and applies its commands
//! in order; a long-lived receiver task feeds datagrams from a `madsim::net::Endpoint`
//! through a queue; sends are datagrams (a few simulated microseconds each).

use crate::cluster::Shared;
use crate::recorder::{NodeView, RecordKind};
use cluster_mode_core::{ClusterCore, Command, Envelope, Identity, Input, NodeId};
use madsim::net::Endpoint;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A request from the simulation to a node.
#[derive(Debug)]
pub(crate) enum Ctrl {
    Leave,
}

/// Simulated nanoseconds since the simulation started.
pub(crate) fn global_now() -> u64 {
    let d = madsim::time::TimeHandle::current().elapsed();
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One process lifetime of the node in `slot`: a fresh identity, until killed or left.
pub(crate) async fn run(shared: Arc<Shared>, slot: usize) {
    let (addr, name, cfg) = {
        let g = shared.lock();
        let s = &g.slots[slot];
        (s.addr.clone(), s.name.clone(), g.cfg.clone())
    };
    let sock: SocketAddr = addr.as_str().parse().expect("slot address is ip:port");
    let ep = Arc::new(Endpoint::bind(sock).await.expect("bind node endpoint"));
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let rx_ep = ep.clone();
    madsim::task::spawn(async move {
        while let Ok((data, _from)) = rx_ep.recv_from_raw(0).await {
            if let Ok(bytes) = data.downcast::<Vec<u8>>() {
                if in_tx.send(*bytes).is_err() {
                    break;
                }
            }
        }
    });
    let (ctrl_tx, mut ctrl_rx) = mpsc::unbounded_channel::<Ctrl>();
    let id = NodeId(madsim::rand::random::<u128>());
    let seed = madsim::rand::random::<u64>();
    let start = global_now();
    let core = {
        let mut g = shared.lock();
        let clock = g.slots[slot].clock;
        let ident = Identity::new(id, addr.clone()).with_name(name.clone());
        let core = ClusterCore::new(ident, cfg, seed, clock.local(start)).expect("valid config");
        let core = Arc::new(Mutex::new(core));
        let s = &mut g.slots[slot];
        s.core = Some(core.clone());
        s.ctrl = Some(ctrl_tx);
        s.alive = true;
        g.recorder.push(start, slot, RecordKind::Started { name, id, addr: addr.to_string() });
        core
    };
    let mut next_discovery = start;
    let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    loop {
        let now = global_now();
        let (deadline, interval) = {
            let g = shared.lock();
            let clock = g.slots[slot].clock;
            let t = core.lock().expect("core lock").poll_timeout();
            (t.map_or(u64::MAX, |t| clock.global_of(t)), g.registry.interval_ms)
        };
        let wake = deadline.min(next_discovery);
        let nap = Duration::from_nanos(wake.saturating_sub(now));
        let input = tokio::select! {
            biased;
            Some(Ctrl::Leave) = ctrl_rx.recv() => Some(Input::Leave),
            Some(bytes) = in_rx.recv() => Some(Envelope::decode(&bytes).map_or(Input::Tick, Input::Message)),
            () = madsim::time::sleep(nap) => None,
        };
        let now = global_now();
        let mut inputs = Vec::with_capacity(2);
        match input {
            Some(i) => inputs.push(i),
            None => {
                if now >= next_discovery {
                    next_discovery = now + interval * 1_000_000;
                    let mut g = shared.lock();
                    let answer = {
                        let inner = &mut *g;
                        let reg = &inner.registry;
                        let rng = &mut inner.rng;
                        reg.answer(&inner.slots[slot].name, now, || rng.next())
                    };
                    inputs.push(match answer {
                        Ok(list) => Input::Discovery(list),
                        Err(e) => Input::DiscoveryFailed(e),
                    });
                }
                inputs.push(Input::Tick);
            }
        }
        let mut left = false;
        {
            let mut g = shared.lock();
            let clock = g.slots[slot].clock;
            let local = clock.local(now);
            let mut c = core.lock().expect("core lock");
            for i in inputs {
                let _ = c.handle(local, i);
                while let Some(cmd) = c.poll_command() {
                    match cmd {
                        Command::Send { to, msg } => {
                            if let Ok(dst) = to.as_str().parse::<SocketAddr>() {
                                out.push((dst, msg.encode()));
                            }
                        }
                        Command::LeaveFinished => left = true,
                        Command::RoleChanged { .. } | Command::MembersChanged(_) => {}
                    }
                }
            }
            let view = NodeView::from_status(&c.status(local), &clock);
            drop(c);
            for _ in 0..out.len() {
                g.recorder.count_send(slot);
            }
            g.recorder.view(now, slot, view);
            if left {
                g.slots[slot].left = true;
                g.recorder.push(now, slot, RecordKind::Stopped("left the cluster".into()));
            }
        }
        for (dst, bytes) in out.drain(..) {
            let _ = ep.send_to_raw(dst, 0, Box::new(bytes)).await;
        }
        if left {
            return;
        }
    }
}
