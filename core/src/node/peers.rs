//! What discovery and probes said about each address (P3: discovery is a hint), and
//! probing.

use super::ClusterCore;
use crate::event::Discovered;
use crate::id::{Address, ClusterId, NodeId};
use crate::membership::Snapshot;
use crate::message::{Message, ProbeAck, ProbeState};
use crate::rng::SplitMix64 as Rng;
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info, warn};

/// The fewest probes a fresh node sends per housekeeping round.
const PROBE_FANOUT: usize = 16;
/// A fresh node probes every listed peer at least once in this many rounds.
pub(super) const PROBE_SWEEP_ROUNDS: usize = 8;
/// The most addresses remembered that discovery does not list and no member uses
/// (answers from addresses this node did not probe: a peer behind another address,
/// or junk from anyone who can reach the port without a secret). Past it, a new one
/// replaces the one heard from longest ago.
pub(super) const MAX_UNLISTED_PEERS: usize = 1024;
/// Such an address is forgotten after this many probe intervals without an answer:
/// twice the window within which an answer counts anywhere (bootstrap and recovery
/// look at answers `FRESH_VIEW_PROBE_ROUNDS` probe intervals old at most).
const FORGET_UNLISTED_PROBE_ROUNDS: u32 = 2 * super::bootstrap::FRESH_VIEW_PROBE_ROUNDS;

/// What this node knows of one discovered address.
#[derive(Clone, Debug)]
pub(super) struct Peer {
    pub(super) id: Option<NodeId>,
    pub(super) name: Option<String>,
    /// In the latest non-empty discovery answer.
    pub(super) listed: bool,
    /// Since when it has not been listed.
    pub(super) unlisted_since: Option<Instant>,
    /// Its latest probe answer said it is fresh (not in a cluster).
    pub(super) fresh: bool,
    /// When it last answered a probe.
    pub(super) answered_at: Option<Instant>,
    /// When this node first probed it.
    pub(super) first_probed_at: Option<Instant>,
    /// What its latest probe answer said, if it answered as a member of a cluster.
    pub(super) member: Option<MemberAnswer>,
    /// A message to it failed (nothing listened, at a cold start) and no probe went
    /// to it since: if it probes this node, this node probes it back at once.
    pub(super) unreachable: bool,
}

/// A member's probe answer: what recovery (P11) needs to know of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MemberAnswer {
    pub(super) cluster: ClusterId,
    /// Its last log entry, (term, index).
    pub(super) last: (u64, u64),
    /// It heard from a leader recently (or leads).
    pub(super) has_leader: bool,
}

impl Peer {
    /// The last time anything was learned of it.
    fn last_sign(&self) -> Option<Instant> {
        self.answered_at
            .max(self.first_probed_at)
            .max(self.unlisted_since)
    }

    fn unlisted(now: Instant) -> Self {
        Peer {
            id: None,
            name: None,
            listed: false,
            unlisted_since: Some(now),
            fresh: false,
            answered_at: None,
            first_probed_at: None,
            member: None,
            unreachable: false,
        }
    }
}

/// Every address discovery listed or a probe answered from.
#[derive(Clone, Debug, Default)]
pub(super) struct Peers {
    map: BTreeMap<Address, Peer>,
    /// Members last heard from at an address other than the one in the
    /// configuration (a member restarted with its data directory on a new pod IP,
    /// P12): messages to them go there.
    routes: BTreeMap<NodeId, Address>,
}

impl Peers {
    /// Where to send a message for `id`: the address it was last heard from, if that
    /// differs from the configuration's.
    pub(super) fn route(&self, id: NodeId) -> Option<&Address> {
        if self.routes.is_empty() {
            return None;
        }
        self.routes.get(&id)
    }

    /// Records that member `id`, configured at `configured`, was heard from at `addr`.
    pub(super) fn heard_member_at(&mut self, id: NodeId, addr: &Address, configured: &Address) {
        if addr == configured {
            if !self.routes.is_empty() {
                self.routes.remove(&id);
            }
        } else if self.routes.get(&id) != Some(addr) {
            info!(member = %id, %addr, %configured, "a member answers from a new address; sending there");
            self.routes.insert(id, addr.clone());
        }
    }

    /// Forgets the routes of ids that are no longer members.
    pub(super) fn retain_routes(&mut self, is_member: impl Fn(NodeId) -> bool) {
        self.routes.retain(|id, _| is_member(*id));
    }

    pub(super) fn get(&self, addr: &Address) -> Option<&Peer> {
        self.map.get(addr)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Address, &Peer)> {
        self.map.iter()
    }

    pub(super) fn is_listed(&self, addr: &Address) -> bool {
        self.map.get(addr).is_some_and(|p| p.listed)
    }

    fn any_listed(&self) -> bool {
        self.map.values().any(|p| p.listed)
    }

    /// Takes in a non-empty discovery answer (without this node's own address);
    /// returns the addresses never seen before, in order.
    fn apply_discovery(
        &mut self,
        now: Instant,
        listed: BTreeMap<Address, Option<String>>,
    ) -> Vec<Address> {
        for (addr, peer) in self.map.iter_mut() {
            if !listed.contains_key(addr) && peer.listed {
                peer.listed = false;
                peer.unlisted_since = Some(now);
            }
        }
        let mut new_addrs = Vec::new();
        for (addr, name) in listed {
            let peer = self.map.entry(addr.clone()).or_insert_with(|| {
                new_addrs.push(addr.clone());
                Peer::unlisted(now)
            });
            peer.listed = true;
            peer.unlisted_since = None;
            if name.is_some() {
                peer.name = name;
            }
        }
        new_addrs
    }

    /// Forgets addresses that discovery does not list, that are neither in
    /// `protected` nor a member's route, and that nothing was heard from since
    /// `before`. Nothing reads such an entry: bootstrap looks at listed peers,
    /// recovery at recent answers, removal and candidate release at protected
    /// addresses.
    pub(super) fn forget_unlisted(&mut self, before: Instant, protected: &BTreeSet<&Address>) {
        let routes = &self.routes;
        self.map.retain(|addr, p| {
            p.listed
                || protected.contains(addr)
                || routes.values().any(|a| a == addr)
                || p.last_sign().is_some_and(|t| t >= before)
        });
    }

    /// Whether remembering an answer from `addr` may need room (see
    /// [`Peers::make_room`]): it is new and the unlisted entries are at the bound.
    fn needs_room(&self, addr: &Address) -> bool {
        !self.map.contains_key(addr)
            && self.map.values().filter(|p| !p.listed).count() >= MAX_UNLISTED_PEERS
    }

    /// If the unlisted entries that are neither `protected` nor a route are at
    /// [`MAX_UNLISTED_PEERS`], forgets the one heard from longest ago.
    fn make_room(&mut self, protected: &BTreeSet<&Address>) {
        let mut count = 0;
        let mut oldest: Option<(Option<Instant>, &Address)> = None;
        for (addr, p) in &self.map {
            if p.listed || protected.contains(addr) || self.routes.values().any(|a| a == addr) {
                continue;
            }
            count += 1;
            if oldest.is_none_or(|(t, _)| p.last_sign() < t) {
                oldest = Some((p.last_sign(), addr));
            }
        }
        if count >= MAX_UNLISTED_PEERS {
            if let Some((_, addr)) = oldest {
                let addr = addr.clone();
                self.map.remove(&addr);
            }
        }
    }

    /// Records a probe answer from `addr` (remembered unlisted if discovery never
    /// listed it, so that it is never counted as listed; make room first, see
    /// [`Peers::needs_room`]).
    fn record_answer(
        &mut self,
        now: Instant,
        addr: Address,
        id: NodeId,
        cluster: Option<ClusterId>,
        ack: &ProbeAck,
    ) {
        let peer = self.map.entry(addr).or_insert_with(|| Peer::unlisted(now));
        peer.id = Some(id);
        if ack.name.is_some() {
            peer.name = ack.name.clone();
        }
        peer.fresh = matches!(ack.state, ProbeState::Fresh { .. });
        peer.answered_at = Some(now);
        peer.unreachable = false;
        peer.member = match (&ack.state, cluster) {
            (
                ProbeState::Member {
                    leader,
                    last_index,
                    last_term,
                    ..
                },
                Some(cluster),
            ) => Some(MemberAnswer {
                cluster,
                last: (*last_term, *last_index),
                has_leader: leader.is_some(),
            }),
            _ => None,
        };
    }

    /// Whether discovery has answered with at least one address.
    pub(super) fn discovery_answered(&self) -> bool {
        self.any_listed()
    }

    fn mark_probed(&mut self, now: Instant, addr: &Address) {
        if let Some(p) = self.map.get_mut(addr) {
            p.first_probed_at.get_or_insert(now);
            p.unreachable = false;
        }
    }

    /// A message to listed address `addr` could not be delivered; returns whether
    /// it is listed.
    pub(super) fn mark_unreachable(&mut self, addr: &Address) -> bool {
        match self.map.get_mut(addr) {
            Some(p) if p.listed => {
                p.unreachable = true;
                true
            }
            _ => false,
        }
    }

    /// A bounded number of listed addresses to probe this round, those never
    /// answered first, starting at a random place so that a thousand fresh pods do
    /// not probe the same ones.
    fn probe_targets(&self, rng: &mut Rng) -> Vec<Address> {
        let mut addrs: Vec<(bool, Address)> = self
            .map
            .iter()
            .filter(|(_, p)| p.listed)
            .map(|(a, p)| (p.id.is_some(), a.clone()))
            .collect();
        let fanout = PROBE_FANOUT.max(addrs.len().div_ceil(PROBE_SWEEP_ROUNDS));
        if addrs.len() > fanout {
            let start = rng.range(0, addrs.len() as u64) as usize;
            addrs.rotate_left(start);
            addrs.sort_by_key(|(answered, _)| *answered);
            addrs.truncate(fanout);
        }
        addrs.into_iter().map(|(_, a)| a).collect()
    }
}

/// The addresses whose entries are kept although discovery does not list them: the
/// members' (removal times their absence) and the supported bootstrap candidate's
/// (its release does).
fn protected_addrs<'a>(
    log: &'a crate::log::Log,
    boot: &'a super::bootstrap::Bootstrap,
) -> BTreeSet<&'a Address> {
    log.effective()
        .members
        .values()
        .map(|m| &m.addr)
        .chain(boot.supports.as_ref().map(|s| &s.addr))
        .collect()
}

impl ClusterCore {
    /// Forgets unlisted addresses silent for `FORGET_UNLISTED_PROBE_ROUNDS` probe
    /// intervals, except members' and the supported bootstrap candidate's
    /// (housekeeping).
    pub(super) fn forget_unlisted_peers(&mut self, now: Instant) {
        if self.peers.map.values().all(|p| p.listed) {
            return;
        }
        let before = now.saturating_sub(self.cfg.probe_interval * FORGET_UNLISTED_PROBE_ROUNDS);
        let protected = protected_addrs(&self.log, &self.boot);
        self.peers.forget_unlisted(before, &protected);
    }

    /// A member of this node's configuration was heard from at `addr`.
    pub(super) fn note_member_address(&mut self, id: NodeId, addr: &Address) {
        if let Some(m) = self.log.effective().members.get(&id) {
            let configured = m.addr.clone();
            self.peers.heard_member_at(id, addr, &configured);
        }
    }

    pub(super) fn on_discovery(&mut self, now: Instant, list: Vec<Discovered>) {
        if list.is_empty() {
            if self.peers.any_listed() {
                warn!("discovery answered with no instances after a non-empty answer; ignoring it (P3)");
            }
            return;
        }
        let listed: BTreeMap<Address, Option<String>> = list
            .into_iter()
            .filter(|d| d.addr != self.me.addr)
            .map(|d| (d.addr, d.name))
            .collect();
        let new_addrs = self.peers.apply_discovery(now, listed);
        // Probe newcomers at once rather than at the next housekeeping round.
        if self.hard.cluster.is_none() {
            for addr in new_addrs.into_iter().take(PROBE_FANOUT) {
                self.probe(now, addr);
            }
        }
    }

    pub(super) fn probe(&mut self, now: Instant, addr: Address) {
        self.peers.mark_probed(now, &addr);
        self.send(addr, None, Message::Probe);
    }

    /// Probes a bounded number of listed peers (see [`Peers::probe_targets`]).
    pub(super) fn probe_round(&mut self, now: Instant) {
        for addr in self.peers.probe_targets(&mut self.rng) {
            self.probe(now, addr);
        }
    }

    /// The committed configuration for a prober that is in it, if it fits one
    /// message; a larger one (a big store) it gets from the leader in pieces, once
    /// it asks to join.
    fn your_config(&self, prober: NodeId) -> Option<Snapshot> {
        // The store's own count tells a large one without copying or encoding it.
        if !self.log.committed().contains(prober)
            || self.log.data().bytes() > self.cfg.snapshot_chunk_len
        {
            return None;
        }
        let snapshot = self.log.committed_snapshot();
        let len = postcard::to_allocvec(&snapshot).map_or(usize::MAX, |b| b.len());
        (len <= self.cfg.snapshot_chunk_len).then_some(snapshot)
    }

    pub(super) fn on_probe(&mut self, now: Instant, from: NodeId, from_addr: Address) {
        let state = match self.hard.cluster {
            None => ProbeState::Fresh {
                supports: self.boot.supports.as_ref().map(|s| s.id),
            },
            Some(_) => ProbeState::Member {
                term: self.hard.term,
                leader: self.live_leader(now),
                last_index: self.log.last_index(),
                last_term: self.log.last_term(),
                your_config: self.your_config(from),
            },
        };
        let ack = ProbeAck {
            name: self.me.name.clone(),
            state,
        };
        self.send(from_addr.clone(), Some(from), Message::ProbeAck(ack));
        // A fresh node probed by a listed peer that could not be reached since this
        // node last probed it (at a cold start: it was not listening yet) probes it
        // back at once rather than at its next round, so that every node knows every
        // other a round trip after the last one starts. At most one probe back per
        // failed delivery, and only to a listed address: no amplification.
        let failed = self
            .peers
            .get(&from_addr)
            .is_some_and(|p| p.listed && p.unreachable);
        if self.hard.cluster.is_none() && failed {
            self.probe(now, from_addr);
        }
    }

    pub(super) fn on_probe_ack(
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
        if self.peers.needs_room(&from_addr) {
            let protected = protected_addrs(&self.log, &self.boot);
            self.peers.make_room(&protected);
        }
        let news = self
            .peers
            .get(&from_addr)
            .is_none_or(|p| !p.fresh || p.id != Some(from));
        self.peers
            .record_answer(now, from_addr.clone(), from, cluster, &ack);
        if let ProbeState::Fresh { .. } = ack.state {
            // The answer that completes a fresh node's view lets it stand at once
            // rather than at its next housekeeping round (P4, "When rule 2 is
            // evaluated"). Only an answer that changes the view, to a node that no
            // smaller id has answered, is worth the look at every peer: the others
            // could not stand anyway, and housekeeping rounds still evaluate.
            self.boot.heard_smaller_id |= from < self.me.id;
            if news && !self.boot.heard_smaller_id && self.hard.cluster.is_none() {
                self.evaluate_bootstrap(now);
            }
            return;
        }
        let (
            ProbeState::Member {
                term,
                leader,
                your_config,
                ..
            },
            Some(cluster),
        ) = (ack.state, cluster)
        else {
            return;
        };
        if self.was_replaced(cluster) {
            return; // a late answer from a cluster this node left
        }
        match self.hard.cluster {
            Some(ours) if ours != cluster && leader.is_some() && self.orphaned(now) => {
                warn!(ours = %ours, theirs = %cluster, "this cluster has had no leader for silent_member_timeout and another cluster of the service has one; leaving it to join that one");
                self.leave_orphaned_cluster(ours);
            }
            Some(ours) if ours == cluster => {
                // A member that wants to join again (removed while it was away, or
                // quiet for long) asks the members of the configuration it knows,
                // and they may all be gone: a member restarted with its data after
                // every member of its last configuration left or was replaced would
                // campaign and ask them forever (FINDINGS #13). The probed member
                // names the leader it follows: ask that one, as a redirect.
                if self.leave.leaving.is_none() {
                    self.on_not_leader(now, leader);
                }
                return;
            }
            Some(_) => return,
            None => {}
        }
        self.join.member_seen_at = Some(now);
        if let Some(snap) = your_config {
            info!(%cluster, "a probed member says this node is in its configuration; adopting it");
            self.adopt_cluster(now, cluster, term, &snap, leader);
        } else {
            self.request_join(now, cluster, leader.unwrap_or((from, from_addr)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Input;
    use crate::id::Identity;
    use crate::message::{Envelope, PROTOCOL_VERSION};
    use crate::Config;

    fn probe_ack_from(i: u32) -> Input {
        Input::Message(Envelope {
            version: PROTOCOL_VERSION,
            cluster: None,
            from: NodeId(u128::from(i) + 100),
            from_addr: Address::from(format!(
                "10.{}.{}.{}:7946",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            )),
            to: None,
            msg: Message::ProbeAck(ProbeAck {
                name: None,
                state: ProbeState::Fresh { supports: None },
            }),
        })
    }

    /// A flood of probe answers from addresses nobody listed (anyone can send them
    /// without a secret) keeps the peer map bounded, and they are forgotten once
    /// silent, while a listed address stays.
    #[test]
    fn answers_from_unlisted_addresses_are_bounded_and_forgotten() {
        let cfg = Config::fast_test();
        let me = Identity::new(NodeId(1), "10.255.0.1:7946");
        let mut now = Instant::from_millis(1);
        let mut core = ClusterCore::new(me, cfg.clone(), 7, now).expect("config");
        let listed = Address::from("10.255.0.2:7946");
        core.handle(
            now,
            Input::Discovery(vec![crate::event::Discovered {
                addr: listed.clone(),
                name: None,
            }]),
        )
        .expect("discovery");
        for i in 0..5 * MAX_UNLISTED_PEERS as u32 {
            let _ = core.handle(now, probe_ack_from(i));
            while core.poll_command().is_some() {}
        }
        assert_eq!(core.peers.map.len(), MAX_UNLISTED_PEERS + 1);
        assert!(core.peers.is_listed(&listed));
        // The newest answers are kept, the oldest made room for them.
        let newest = 5 * MAX_UNLISTED_PEERS as u32 - 1;
        let Input::Message(e) = probe_ack_from(newest) else {
            unreachable!()
        };
        assert!(core.peers.get(&e.from_addr).is_some());
        // Silent for the forgetting window: gone, except the listed address.
        now = now.saturating_add(cfg.probe_interval * (FORGET_UNLISTED_PROBE_ROUNDS + 2));
        let _ = core.handle(now, Input::Tick);
        while core.poll_command().is_some() {}
        assert_eq!(core.peers.map.len(), 1, "only the listed address is left");
        assert!(core.peers.is_listed(&listed));
    }
}
