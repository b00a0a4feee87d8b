//! The per-peer send queues every transport uses: one [`Backlog`] per peer address,
//! drained by the transport's long-lived sender tasks. What a queue may drop is the
//! core's decision (the [`Delivery`] class of each send), never the transport's: see
//! the staleness rules in the `transport` module. Public only through `sim`.

use crate::metrics::{bump, Counters};
use cluster_mode_core::{Address, Delivery, Envelope};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

/// One bounded [`PeerQueue`] per peer address, drained by long-lived sender tasks
/// that the transport spawns when a peer is first sent to (and again after they ended
/// idle). Every transport queues through this, so coalescing, drop-oldest and the
/// maximum age are decided in one place, by the core's [`Delivery`] classes.
#[derive(Debug)]
pub struct PeerQueues {
    peers: Mutex<HashMap<Address, Arc<PeerQueue>>>,
    capacity: usize,
    counters: Arc<Counters>,
}

impl PeerQueues {
    /// Queues of `capacity` envelopes each, counting drops in `counters`.
    pub fn new(capacity: usize, counters: Arc<Counters>) -> Self {
        PeerQueues {
            peers: Mutex::new(HashMap::new()),
            capacity,
            counters,
        }
    }

    /// Peers with a queue (whose sender tasks may have ended idle since).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no peer has a queue.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `to` has a queue whose sender tasks still run.
    pub fn is_open(&self, to: &Address) -> bool {
        self.lock().get(to).is_some_and(|q| !q.lock().closed)
    }

    /// Forgets `to`'s queue if it is `queue` and its sender tasks have ended: a
    /// sender task calls this as it ends, so the map holds only peers sent to
    /// recently (a flood of probes naming random addresses leaves nothing behind).
    pub fn forget_closed(&self, to: &Address, queue: &Arc<PeerQueue>) {
        let mut peers = self.lock();
        if peers
            .get(to)
            .is_some_and(|q| Arc::ptr_eq(q, queue) && q.lock().closed)
        {
            peers.remove(to);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Address, Arc<PeerQueue>>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `env` (of class `class`) for `to`. When the peer has no queue, or its
    /// sender tasks ended idle, a fresh queue is made and `spawn` is called with it
    /// to start the tasks that drain it (with [`PeerQueue::next`]). Never blocks.
    pub fn push(
        &self,
        to: &Address,
        env: Envelope,
        class: Delivery,
        mut spawn: impl FnMut(&Arc<PeerQueue>),
    ) {
        let now = Instant::now();
        let mut peers = self.lock();
        let mut env = Some(env);
        // At most twice: a queue whose tasks just ended idle is replaced by a fresh one.
        for _ in 0..2 {
            let queue = match peers.get(to) {
                Some(q) => q.clone(),
                None => {
                    let q = Arc::new(PeerQueue::new(self.capacity));
                    spawn(&q);
                    peers.insert(to.clone(), q.clone());
                    q
                }
            };
            match queue.push(&mut env, class, now) {
                Some(pushed) => {
                    let c = &self.counters;
                    c.send_coalesced
                        .fetch_add(pushed.coalesced as u64, Ordering::Relaxed);
                    if pushed.dropped_oldest {
                        bump(&c.send_queue_full);
                        debug!(%to, "send queue full; oldest envelope dropped");
                    }
                    return;
                }
                None => {
                    peers.remove(to);
                }
            }
        }
        bump(&self.counters.send_queue_full);
    }
}

/// What [`Backlog::push`] did besides queueing the new envelope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Queued envelopes the new one superseded (removed).
    pub coalesced: usize,
    /// Whether the queue was full and its oldest envelope was dropped.
    pub dropped_oldest: bool,
}

/// One peer's queue of envelopes waiting to be sent, with the time each was queued
/// and the [`Delivery`] class the core gave it. Bounds staleness (see the
/// module docs): an envelope whose class supersedes a queued one's replaces
/// it, a full backlog drops its oldest, and envelopes older than a maximum age are
/// dropped when they are taken. It never looks inside a message.
#[derive(Debug)]
pub struct Backlog {
    items: VecDeque<(Instant, Delivery, Envelope)>,
    capacity: usize,
}

impl Backlog {
    /// An empty backlog holding at most `capacity` envelopes (at least one).
    pub fn new(capacity: usize) -> Self {
        Backlog {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Envelopes queued.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `env` (of class `class`, queued at `now`), first removing the queued
    /// envelopes whose class it [supersedes](Delivery::supersedes), then the oldest
    /// one if the backlog is still full.
    pub fn push(&mut self, env: Envelope, class: Delivery, now: Instant) -> Pushed {
        let before = self.items.len();
        self.items.retain(|(_, old, _)| !class.supersedes(old));
        let mut pushed = Pushed {
            coalesced: before - self.items.len(),
            dropped_oldest: false,
        };
        if self.items.len() >= self.capacity {
            self.items.pop_front();
            pushed.dropped_oldest = true;
        }
        self.items.push_back((now, class, env));
        pushed
    }

    /// The oldest envelope queued at or after `now - max_age` (all of them with no
    /// maximum age), and how many older ones were dropped to reach it.
    pub fn pop(&mut self, now: Instant, max_age: Option<Duration>) -> (Option<Envelope>, usize) {
        let mut expired = 0;
        while let Some((at, _, env)) = self.items.pop_front() {
            match max_age {
                Some(max) if now.saturating_duration_since(at) > max => expired += 1,
                _ => return (Some(env), expired),
            }
        }
        (None, expired)
    }
}

/// A [`Backlog`] shared by one peer's sender tasks.
#[derive(Debug)]
pub struct PeerQueue {
    state: Mutex<QueueState>,
    ready: Notify,
}

#[derive(Debug)]
struct QueueState {
    backlog: Backlog,
    /// The sender tasks ended (idle): pushes are refused, the transport starts anew.
    closed: bool,
}

impl PeerQueue {
    fn new(capacity: usize) -> Self {
        PeerQueue {
            state: Mutex::new(QueueState {
                backlog: Backlog::new(capacity),
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `env` out of its option and queues it, unless the queue's tasks have
    /// ended (`None`; `env` is then left in place).
    fn push(&self, env: &mut Option<Envelope>, class: Delivery, now: Instant) -> Option<Pushed> {
        let pushed = {
            let mut st = self.lock();
            if st.closed {
                return None;
            }
            st.backlog.push(env.take()?, class, now)
        };
        self.ready.notify_one();
        Some(pushed)
    }

    /// The next envelope young enough to send (dropping, and counting in
    /// `send_expired`, those older than `max_age`); `None` once idle for `idle` (the
    /// queue is then closed and the sender task should end). With no `idle` the
    /// task never ends and waits without a timer (cheaper in a simulation, where
    /// every timer costs).
    pub async fn next(
        &self,
        idle: Option<Duration>,
        max_age: Option<Duration>,
        counters: &Counters,
    ) -> Option<Envelope> {
        loop {
            let notified = self.ready.notified();
            {
                let mut st = self.lock();
                let (env, expired) = st.backlog.pop(Instant::now(), max_age);
                if expired > 0 {
                    counters
                        .send_expired
                        .fetch_add(expired as u64, Ordering::Relaxed);
                }
                if let Some(env) = env {
                    if !st.backlog.is_empty() {
                        // Let another sender task take the next one.
                        self.ready.notify_one();
                    }
                    return Some(env);
                }
                if st.closed {
                    return None;
                }
            }
            let Some(idle) = idle else {
                notified.await;
                continue;
            };
            if tokio::time::timeout(idle, notified).await.is_err() {
                let mut st = self.lock();
                if st.backlog.is_empty() {
                    st.closed = true;
                    drop(st);
                    self.ready.notify_waiters();
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_mode_core::{
        ClusterCore, Command, Config, Discovered, Identity, Input, Instant as CoreInstant, Message,
        NodeId,
    };

    /// One `Send` a real core emitted.
    #[derive(Clone, Debug)]
    struct Sent {
        from: usize,
        env: Envelope,
        class: Delivery,
    }

    /// Every envelope a real three-node network of cores sends over 7 simulated
    /// seconds, with the class the core gave it: a bootstrap and election, then four
    /// times the leader cut off for 700 ms (a new election at a higher term) and
    /// healed, so that some node leads in two terms. The classes come from the core
    /// alone: no test here builds one.
    fn real_traffic() -> Vec<Sent> {
        let addrs = ["10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946"];
        let at = |ms: u64| CoreInstant::from_nanos(ms * 1_000_000);
        let mut cores: Vec<ClusterCore> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let id = Identity::new(NodeId(i as u128 + 1), *a);
                ClusterCore::new(id, Config::fast_test(), 7 + i as u64, at(0)).unwrap()
            })
            .collect();
        let mut out = Vec::new();
        let mut cut: Option<usize> = None;
        for ms in 0..7000u64 {
            let now = at(ms);
            if [1500, 2700, 3900, 5100].contains(&ms) {
                cut = (0..3).find(|&i| cores[i].status(now).is_leader);
                assert!(cut.is_some(), "no leader at {ms} ms");
            }
            if [2200, 3400, 4600, 5800].contains(&ms) {
                cut = None;
            }
            for core in cores.iter_mut() {
                if ms % 200 == 0 {
                    let list = addrs
                        .iter()
                        .map(|a| Discovered {
                            addr: Address::from(*a),
                            name: None,
                        })
                        .collect();
                    let _ = core.handle(now, Input::Discovery(list));
                }
                if core.poll_timeout().is_some_and(|t| t <= now) {
                    let _ = core.handle(now, Input::Tick);
                }
            }
            // Deliver at once, until nothing more is sent at this instant.
            loop {
                let mut pending = Vec::new();
                for (i, core) in cores.iter_mut().enumerate() {
                    while let Some(cmd) = core.poll_command() {
                        if let Command::Send { to, msg, class } = cmd {
                            let j = addrs.iter().position(|a| to.as_str() == *a).unwrap();
                            if cut != Some(i) && cut != Some(j) {
                                pending.push((j, msg.clone()));
                            }
                            out.push(Sent {
                                from: i,
                                env: msg,
                                class,
                            });
                        }
                    }
                }
                if pending.is_empty() {
                    break;
                }
                for (j, env) in pending {
                    let _ = cores[j].handle(now, Input::Message(env));
                }
            }
        }
        out
    }

    fn is_heartbeat(s: &Sent) -> bool {
        matches!(&s.env.msg, Message::Append(a) if a.entries.is_empty())
    }

    fn is_reply(s: &Sent) -> bool {
        matches!(&s.env.msg, Message::AppendReply(_))
    }

    fn term_of(s: &Sent) -> u64 {
        match &s.env.msg {
            Message::Append(a) => a.term,
            Message::AppendReply(r) => r.term,
            _ => 0,
        }
    }

    /// The messages matching `pred` between the first (sender, receiver) pair that
    /// exchanged them in more than one term, in order.
    fn across_terms(traffic: &[Sent], pred: impl Fn(&Sent) -> bool) -> Vec<&Sent> {
        let mut pairs: Vec<(usize, Option<NodeId>)> = Vec::new();
        for s in traffic.iter().filter(|s| pred(s)) {
            if !pairs.contains(&(s.from, s.env.to)) {
                pairs.push((s.from, s.env.to));
            }
        }
        for (from, to) in pairs {
            let of_pair: Vec<&Sent> = traffic
                .iter()
                .filter(|s| pred(s) && s.from == from && s.env.to == to)
                .collect();
            if of_pair.iter().any(|s| term_of(s) != term_of(of_pair[0])) {
                return of_pair;
            }
        }
        panic!("no pair exchanged these messages in two terms");
    }

    fn push(b: &mut Backlog, s: &Sent, t: Instant) -> Pushed {
        b.push(s.env.clone(), s.class, t)
    }

    fn drain(b: &mut Backlog, now: Instant, max_age: Option<Duration>) -> Vec<Envelope> {
        std::iter::from_fn(|| b.pop(now, max_age).0).collect()
    }

    #[test]
    fn a_heartbeat_replaces_queued_heartbeats_to_the_same_node() {
        let traffic = real_traffic();
        let hb: Vec<&Sent> = traffic.iter().filter(|s| is_heartbeat(s)).collect();
        let first = hb.first().expect("the leader sends heartbeats");
        let to_a: Vec<&Sent> = hb
            .iter()
            .filter(|s| s.from == first.from && s.env.to == first.env.to)
            .filter(|s| term_of(s) == term_of(first))
            .take(10)
            .copied()
            .collect();
        assert_eq!(to_a.len(), 10);
        let to_b = hb
            .iter()
            .find(|s| s.from == first.from && s.env.to != first.env.to)
            .expect("a heartbeat to the other follower");
        assert!(to_a.iter().all(|s| matches!(s.class, Delivery::Latest(_))));
        let t = Instant::now();
        let mut b = Backlog::new(128);
        for s in &to_a {
            push(&mut b, s, t);
        }
        // Another node's heartbeats are its own.
        assert_eq!(push(&mut b, to_b, t).coalesced, 0);
        let out = drain(&mut b, t, None);
        assert_eq!(out.len(), 2, "one heartbeat per node: {out:?}");
        assert_eq!(
            out[0], to_a[9].env,
            "the newest heartbeat to the node is kept"
        );
        assert_eq!(out[1], to_b.env);
    }

    #[test]
    fn entries_and_more_informative_messages_are_never_coalesced() {
        let traffic = real_traffic();
        let with_entries = traffic
            .iter()
            .find(|s| matches!(&s.env.msg, Message::Append(a) if !a.entries.is_empty()))
            .expect("the leader replicates entries");
        assert_eq!(with_entries.class, Delivery::Normal);
        let hb = across_terms(&traffic, is_heartbeat);
        let (old, new) = (hb[0], *hb.last().unwrap());
        assert!(
            term_of(new) > term_of(old),
            "the leader was cut off and came back"
        );
        let t = Instant::now();
        let mut b = Backlog::new(128);
        push(&mut b, with_entries, t);
        // A heartbeat of a higher term is not replaced by one of a lower term.
        push(&mut b, new, t);
        assert_eq!(push(&mut b, old, t).coalesced, 0);
        assert_eq!(push(&mut b, new, t).coalesced, 2);
        let out = drain(&mut b, t, None);
        assert_eq!(out, vec![with_entries.env.clone(), new.env.clone()]);
    }

    #[test]
    fn a_reply_replaces_older_replies_unless_they_say_more() {
        let traffic = real_traffic();
        // Replies within the cluster (not those of the bootstrap, before it had an id).
        let mine = across_terms(&traffic, |s| is_reply(s) && s.env.cluster.is_some());
        let first = mine[0];
        let (old, new) = (mine[0], *mine.last().unwrap());
        assert!(term_of(new) > term_of(old));
        let other = traffic
            .iter()
            .find(|s| s.class == Delivery::Normal && s.from == first.from)
            .expect("a message of another kind");
        let t = Instant::now();
        let mut b = Backlog::new(128);
        // An older reply does not replace a newer one that says more.
        push(&mut b, new, t);
        assert_eq!(push(&mut b, old, t).coalesced, 0);
        push(&mut b, other, t);
        assert_eq!(
            push(&mut b, new, t).coalesced,
            2,
            "the newest reply replaces the older ones"
        );
        let out = drain(&mut b, t, None);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], other.env, "other messages stay, in order");
        assert_eq!(out[1], new.env);
    }

    #[test]
    fn a_full_backlog_drops_its_oldest() {
        let traffic = real_traffic();
        // Entries are never coalesced: only the capacity limits them.
        let normal: Vec<&Sent> = traffic
            .iter()
            .filter(|s| s.class == Delivery::Normal)
            .take(4)
            .collect();
        assert_eq!(normal.len(), 4);
        let t = Instant::now();
        let mut b = Backlog::new(3);
        for s in &normal[..3] {
            assert!(!push(&mut b, s, t).dropped_oldest);
        }
        assert!(push(&mut b, normal[3], t).dropped_oldest);
        let out = drain(&mut b, t, None);
        let want: Vec<Envelope> = normal[1..].iter().map(|s| s.env.clone()).collect();
        assert_eq!(out, want, "the newest are kept");
    }

    #[test]
    fn envelopes_older_than_the_maximum_age_are_dropped_when_taken() {
        let traffic = real_traffic();
        let n: Vec<&Sent> = traffic
            .iter()
            .filter(|s| s.class == Delivery::Normal)
            .take(3)
            .collect();
        let t0 = Instant::now();
        let mut b = Backlog::new(128);
        push(&mut b, n[0], t0);
        push(&mut b, n[1], t0 + Duration::from_millis(100));
        push(&mut b, n[2], t0 + Duration::from_millis(200));
        let now = t0 + Duration::from_millis(350);
        let max = Some(Duration::from_millis(200));
        let (first, expired) = b.pop(now, max);
        assert_eq!(expired, 2, "queued 350 ms and 250 ms ago");
        assert_eq!(first.as_ref(), Some(&n[2].env));
        assert!(b.is_empty());
        // No maximum age: nothing expires.
        push(&mut b, n[0], t0);
        assert_eq!(b.pop(now, None).1, 0);
    }

    #[tokio::test]
    async fn a_queue_whose_tasks_ended_idle_is_forgotten() {
        let sent = real_traffic().remove(0);
        let counters = Arc::new(Counters::default());
        let queues = PeerQueues::new(4, counters.clone());
        let to = Address::from("10.9.9.9:1");
        let mut spawned = None;
        queues.push(&to, sent.env.clone(), sent.class, |q| {
            spawned = Some(q.clone())
        });
        let q = spawned.expect("a new peer gets a queue");
        assert!(queues.is_open(&to));
        let idle = Some(Duration::from_millis(1));
        assert!(q.next(idle, None, &counters).await.is_some());
        assert!(
            q.next(idle, None, &counters).await.is_none(),
            "idle: closed"
        );
        assert!(!queues.is_open(&to));
        assert_eq!(queues.len(), 1);
        queues.forget_closed(&to, &q);
        assert!(queues.is_empty(), "a closed queue is forgotten");
        // A queue still running is not.
        let mut spawned = None;
        queues.push(&to, sent.env, sent.class, |q| spawned = Some(q.clone()));
        let q2 = spawned.expect("a fresh queue");
        queues.forget_closed(&to, &q2);
        queues.forget_closed(&to, &q);
        assert_eq!(queues.len(), 1);
    }
}
