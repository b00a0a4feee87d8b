//! Forming the first configuration (P4).
//!
//! A fresh node probes every discovered address. Once it knows at least `min_nodes`
//! fresh nodes (itself included) and it has the smallest id among them, it becomes a
//! bootstrap candidate and asks them for support. A fresh node supports one candidate
//! at a time and keeps that support until the candidate withdraws it; a candidate
//! that gathers `min_nodes` supporters founds the cluster with exactly them as the
//! first configuration. Two candidates can therefore succeed only with disjoint
//! supporter sets, which `min_nodes` above half the participants rules out.

use super::peers::PROBE_SWEEP_ROUNDS;
use super::timers::Timer;
use super::ClusterCore;
use crate::id::{Address, ClusterId, NodeId};
use crate::membership::{Member, Membership, Snapshot};
use crate::message::Message;
use crate::time::{duration_nanos, Instant};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{debug, info};

/// The candidate a fresh node supports.
#[derive(Clone, Debug)]
pub(super) struct Support {
    pub(super) id: NodeId,
    pub(super) round: u64,
    /// Where the candidate listens.
    pub(super) addr: Address,
    /// When support was last confirmed (granted, or the candidate answered a probe).
    pub(super) heard_at: Instant,
}

/// This node's own attempt to found the cluster (its deadline is
/// [`Timer::Candidacy`]).
#[derive(Clone, Debug)]
pub(super) struct Candidacy {
    pub(super) round: u64,
    /// Supporters so far, with their addresses (this node included).
    pub(super) grants: BTreeMap<NodeId, (Address, Option<String>)>,
    /// Everyone asked, to withdraw from if the attempt fails.
    pub(super) asked: BTreeMap<NodeId, Address>,
    /// For a recovery (P11): the cluster being replaced. Then every node asked must
    /// grant, not `min_nodes` of them.
    pub(super) replaces: Option<ClusterId>,
}

/// Bootstrap state of a fresh node.
#[derive(Clone, Debug, Default)]
pub(super) struct Bootstrap {
    pub(super) supports: Option<Support>,
    pub(super) candidacy: Option<Candidacy>,
    pub(super) rounds: u64,
    pub(super) next_eval: Instant,
    /// The rounds in which this node founded a cluster (a cold start or a recovery),
    /// and the cluster: a grant of such a round that arrives after the founding is
    /// taken as a join, and is never answered with a withdrawal. Never cleared (a
    /// node founds a handful of clusters at most in its life).
    pub(super) founded: BTreeMap<u64, ClusterId>,
    /// A fresh node with a smaller id than this one's has answered a probe: this node
    /// then leaves rule 2 to its housekeeping rounds rather than evaluating it on
    /// every answer (it could stand only once that node's answer is too old), so
    /// that a fleet of a thousand does not pay a look at every peer per answer.
    pub(super) heard_smaller_id: bool,
}

/// A probe answer counts towards a bootstrap view for this many probe rounds: one
/// full sweep of the listed peers and two more.
pub(super) const FRESH_VIEW_PROBE_ROUNDS: u32 = PROBE_SWEEP_ROUNDS as u32 + 2;
/// A listed peer that may be a member holds off founding for at least this many probe
/// intervals (more when `silent_member_timeout` says so).
const MIN_MEMBER_PATIENCE_PROBE_ROUNDS: u32 = 2;
/// A candidacy waits between one and this many bootstrap timeouts (at random).
const CANDIDACY_MAX_BOOTSTRAP_TIMEOUTS: u64 = 2;

impl ClusterCore {
    /// Forgets support given and any candidacy of its own.
    pub(super) fn clear_bootstrap(&mut self) {
        self.boot.supports = None;
        self.end_candidacy();
    }

    /// Ends this node's candidacy, if any, and returns it.
    fn end_candidacy(&mut self) -> Option<Candidacy> {
        self.timers.stop(Timer::Candidacy);
        self.boot.candidacy.take()
    }

    /// Starts a candidacy if this node should.
    pub(super) fn evaluate_bootstrap(&mut self, now: Instant) {
        if self.hard.cluster.is_some()
            || self.join.joining.is_some()
            || self.boot.supports.is_some()
        {
            return;
        }
        if now < self.boot.next_eval {
            return;
        }
        // Only peers that answered recently count: a crashed node must not hold the
        // smallest id forever.
        let recent = self.cfg.probe_interval * FRESH_VIEW_PROBE_ROUNDS;
        let fresh: BTreeMap<NodeId, Address> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.listed
                    && p.fresh
                    && p.answered_at
                        .is_some_and(|t| now.saturating_duration_since(t) <= recent)
            })
            .filter_map(|(a, p)| p.id.map(|id| (id, a.clone())))
            .collect();
        if fresh.len() + 1 < self.cfg.min_nodes.get() {
            return;
        }
        // Join rather than found: a listed peer that answered as a member of a
        // cluster, or never answered at all, may be a member cut off or paused (perhaps
        // a primary). It must have been silent for `silent_member_timeout` first.
        let patience = self
            .cfg
            .silent_member_timeout
            .unwrap_or(self.cfg.removal_grace)
            .max(self.cfg.probe_interval * MIN_MEMBER_PATIENCE_PROBE_ROUNDS);
        let maybe_member_nearby = self.peers.iter().any(|(_, p)| {
            let last_sign = p.answered_at.max(p.first_probed_at);
            p.listed
                && !p.fresh
                && last_sign.is_none_or(|t| now.saturating_duration_since(t) < patience)
        });
        if maybe_member_nearby {
            return;
        }
        if fresh
            .keys()
            .next()
            .is_some_and(|smallest| *smallest < self.me.id)
        {
            return; // a peer with a smaller id should stand; support it when asked
        }
        let round = self.begin_candidacy(now, fresh.clone(), None);
        info!(
            round,
            view = fresh.len() + 1,
            "standing as bootstrap candidate"
        );
        for (id, addr) in fresh {
            self.send(addr, Some(id), Message::BootstrapRequest { round });
        }
        self.maybe_found(now);
    }

    /// Starts a candidacy (a bootstrap, or with `replaces` a recovery): this node
    /// supports itself and waits for the grants of `asked` until the candidacy timer.
    /// Returns its round.
    pub(super) fn begin_candidacy(
        &mut self,
        now: Instant,
        asked: BTreeMap<NodeId, Address>,
        replaces: Option<ClusterId>,
    ) -> u64 {
        self.boot.rounds += 1;
        let round = self.boot.rounds;
        let wait = self.candidacy_wait();
        let mut grants = BTreeMap::new();
        grants.insert(self.me.id, (self.me.addr.clone(), self.me.name.clone()));
        self.boot.supports = Some(Support {
            id: self.me.id,
            round,
            addr: self.me.addr.clone(),
            heard_at: now,
        });
        self.boot.candidacy = Some(Candidacy {
            round,
            grants,
            asked,
            replaces,
        });
        self.timers.set(Timer::Candidacy, now + wait);
        round
    }

    /// How long a candidacy waits for its grants: between one and
    /// `CANDIDACY_MAX_BOOTSTRAP_TIMEOUTS` bootstrap timeouts, at random.
    fn candidacy_wait(&mut self) -> Duration {
        let base = duration_nanos(self.cfg.bootstrap_timeout);
        Duration::from_nanos(
            self.rng
                .range(base, base.saturating_mul(CANDIDACY_MAX_BOOTSTRAP_TIMEOUTS)),
        )
    }

    pub(super) fn on_bootstrap_request(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        round: u64,
    ) {
        // Two candidates at once: the larger id yields to the smaller, so that the
        // supporters do not stay split until both time out. Withdrawing is safe at
        // any time before founding.
        if self.hard.cluster.is_none() && self.boot.candidacy.is_some() && from < self.me.id {
            info!(candidate = %from, "a candidate with a smaller id stands; yielding to it");
            self.withdraw_candidacy(now);
            self.boot.next_eval = now;
        }
        let may_grant = self.hard.cluster.is_none() && self.join.joining.is_none();
        self.answer_support_request(now, from, from_addr, round, may_grant, "bootstrap");
    }

    /// Gives this node's one support (P4, P11) to candidate `from` if `may_grant` and
    /// the support is free or already `from`'s, and answers the request either way.
    pub(super) fn answer_support_request(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        round: u64,
        may_grant: bool,
        kind: &'static str,
    ) {
        let granted = may_grant
            && match &mut self.boot.supports {
                None => {
                    info!(candidate = %from, round, "supporting {kind} candidate");
                    self.boot.supports = Some(Support {
                        id: from,
                        round,
                        addr: from_addr.clone(),
                        heard_at: now,
                    });
                    true
                }
                Some(s) if s.id == from => {
                    s.round = s.round.max(round);
                    s.heard_at = now;
                    true
                }
                Some(_) => false,
            };
        self.send(
            from_addr,
            Some(from),
            Message::BootstrapReply { round, granted },
        );
    }

    pub(super) fn on_bootstrap_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        round: u64,
        granted: bool,
    ) {
        if !granted {
            return;
        }
        let Some(c) = self.boot.candidacy.as_mut().filter(|c| c.round == round) else {
            self.on_grant_of_another_round(now, from, from_addr, round);
            return;
        };
        let Some(addr) = c.asked.get(&from).cloned() else {
            return;
        };
        let name = self.peers.get(&addr).and_then(|p| p.name.clone());
        c.grants.insert(from, (addr, name));
        self.maybe_found(now);
    }

    /// A grant for a round that is not this node's running candidacy: a late grant
    /// of the round it founded in, or a supporter's resent grant (see
    /// [`ClusterCore::resend_grant`]) of a round it withdrew.
    ///
    /// - The round founded a cluster that this node leads: the supporter is fresh
    ///   and would join, so it is admitted as if it had asked (a non-voter first,
    ///   like any joiner) rather than a probe round later.
    /// - The round founded a cluster otherwise: ignored (the supporter learns of the
    ///   cluster from a probe, as before). A founding round is never withdrawn.
    /// - An earlier round that ended without founding: the withdrawal is sent again.
    ///   It may have been lost, and then the supporter would hold its support as long
    ///   as this node answers its probes, so that no other candidate could gather it
    ///   (random schedule 25836 once stalled so).
    fn on_grant_of_another_round(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        round: u64,
    ) {
        if let Some(cluster) = self.boot.founded.get(&round).copied() {
            if self.role.is_leader() && self.hard.cluster == Some(cluster) {
                let name = self.peers.get(&from_addr).and_then(|p| p.name.clone());
                info!(supporter = %from, "a grant arrived after the founding; admitting the supporter");
                self.on_join(now, from, from_addr, name);
            }
            return;
        }
        if round <= self.boot.rounds {
            debug!(supporter = %from, round, "a grant of a withdrawn round; withdrawing again");
            self.send(from_addr, Some(from), Message::BootstrapWithdraw { round });
        }
    }

    /// A fresh node that supports another node's candidacy resends its grant once
    /// per housekeeping round: the candidate counts it if that candidacy still runs,
    /// and withdraws again if it ended (see
    /// `on_grant_of_another_round`), so a lost withdrawal does not hold the support
    /// for as long as the candidate lives.
    pub(super) fn resend_grant(&mut self) {
        let Some(s) = self.boot.supports.as_ref().filter(|s| s.id != self.me.id) else {
            return;
        };
        let (to, id, round) = (s.addr.clone(), s.id, s.round);
        self.send(
            to,
            Some(id),
            Message::BootstrapReply {
                round,
                granted: true,
            },
        );
    }

    pub(super) fn on_bootstrap_withdraw(&mut self, from: NodeId, round: u64) {
        if self
            .boot
            .supports
            .as_ref()
            .is_some_and(|s| s.id == from && s.round <= round)
        {
            info!(candidate = %from, round, "bootstrap candidate withdrew; support released");
            self.boot.supports = None;
        }
    }

    /// A supporter releases a candidate that is provably gone: another process answers
    /// at its address, or discovery has not listed it for the removal grace period,
    /// or it has been silent for `silent_member_timeout`. The candidate cannot have
    /// founded a cluster that any live node knows of without this node hearing of it,
    /// since this node would be a member. See PROTOCOL.md, P4.
    pub(super) fn release_gone_candidate(&mut self, now: Instant) {
        let Some(s) = &self.boot.supports else { return };
        if s.id == self.me.id {
            return;
        }
        let peer = self.peers.get(&s.addr);
        let replaced = peer.and_then(|p| p.id).is_some_and(|id| id != s.id);
        let unlisted = peer
            .and_then(|p| p.unlisted_since)
            .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.removal_grace);
        let silent = self
            .cfg
            .silent_member_timeout
            .is_some_and(|t| now.saturating_duration_since(s.heard_at) >= t);
        if replaced || unlisted || silent {
            info!(candidate = %s.id, replaced, unlisted, silent, "bootstrap candidate is gone; support released");
            self.boot.supports = None;
        }
    }

    /// A candidacy that timed out frees its supporters and backs off at random.
    pub(super) fn withdraw_candidacy(&mut self, now: Instant) {
        let Some(c) = self.end_candidacy() else {
            return;
        };
        info!(
            round = c.round,
            grants = c.grants.len(),
            "bootstrap candidacy timed out; withdrawing"
        );
        self.boot.supports = None;
        for (id, addr) in c.asked {
            self.send(
                addr,
                Some(id),
                Message::BootstrapWithdraw { round: c.round },
            );
        }
        let base = duration_nanos(self.cfg.bootstrap_timeout);
        self.boot.next_eval = now + Duration::from_nanos(self.rng.range(0, base));
    }

    pub(super) fn maybe_found(&mut self, now: Instant) {
        let Some(c) = &self.boot.candidacy else {
            return;
        };
        let enough = match c.replaces {
            None => c.grants.len() >= self.cfg.min_nodes.get(),
            Some(_) => c.asked.keys().all(|id| c.grants.contains_key(id)),
        };
        if !enough {
            return;
        }
        let Some(c) = self.end_candidacy() else {
            return;
        };
        let mut roles = Default::default();
        // A cold start begins at index 1 with no data.
        let mut index = 1;
        let mut data = Default::default();
        let epoch = match c.replaces {
            None => 1,
            Some(old) => {
                // The roles outlive the cluster replaced (P13), and so does the data,
                // with every store entry of this log applied, client sessions
                // included (P14). The successor's log goes on above this one's last
                // index, so revisions keep rising: a compare-and-swap expecting an
                // old revision cannot match a newer write. Terms, votes and the log
                // itself belong to the cluster replaced.
                roles = self.roles_for_successor();
                data = self.log.data_through_last();
                index = self.log.last_index().max(index);
                self.become_fresh();
                self.founded_successor_of(old);
                old.epoch().saturating_add(1)
            }
        };
        let cluster = ClusterId::with_epoch(epoch, self.rng.next_u128());
        // Voters: this node first (it will lead), then the smallest ids.
        let mut membership = Membership::default();
        let mut voters = 1;
        for (id, (addr, name)) in c.grants {
            let voter = id == self.me.id || voters < self.cfg.max_voters.get();
            if voter && id != self.me.id {
                voters += 1;
            }
            membership.members.insert(id, Member { addr, name, voter });
        }
        membership.roles = roles;
        info!(%cluster, epoch, replaces = ?c.replaces, members = membership.members.len(), index, "founded the cluster");
        let snap = Snapshot {
            index,
            term: 1,
            membership,
            data,
        };
        self.adopt_cluster(now, cluster, 1, &snap, None);
        self.boot.founded.insert(c.round, cluster);
        self.record_vote(self.me.id);
        self.become_leader(now);
    }
}
