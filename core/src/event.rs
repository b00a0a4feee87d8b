//! What goes into the core ([`Input`]) and what comes out ([`Command`]).

use crate::id::{Address, ClusterId, NodeId};
use crate::membership::Member;
use crate::message::{Envelope, Message};
use crate::placement::Placement;
use crate::roles::RoleEvent;
use crate::status::{FencingToken, PrimaryInfo, Role};
use crate::time::Instant;

/// One address found by discovery.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Discovered {
    /// Where it listens.
    pub addr: Address,
    /// Its stable name, if discovery knows one (a pod name).
    pub name: Option<String>,
}

impl Discovered {
    /// A discovered address without a name.
    pub fn new(addr: impl Into<Address>) -> Self {
        Discovered {
            addr: addr.into(),
            name: None,
        }
    }
}

/// An event the shell hands to [`crate::ClusterCore::handle`].
// The envelope is stored inline on purpose: boxing it would cost an allocation per
// message on the hot path, which the core avoids.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Input {
    /// A complete discovery answer: every instance discovery lists now. The core diffs
    /// it against the previous one. An empty answer after a non-empty one is treated
    /// as "no information" and removes nobody (P3).
    Discovery(Vec<Discovered>),
    /// Discovery failed. Nothing is removed; the reason is logged.
    DiscoveryFailed(String),
    /// A message arrived.
    Message(Envelope),
    /// A message to this address could not be delivered (connection refused, timeout).
    /// Its decisions rest on silence (missing acknowledgements and probe answers),
    /// which a delivery failure confirms but never replaces; the one use is timing:
    /// a fresh node probes again after a quarter of `probe_interval` instead of a
    /// whole one (a peer not yet listening at a cold start). A shell that cannot tell
    /// need not send it.
    Unreachable(Address),
    /// A timer fired: at or after the instant [`crate::ClusterCore::poll_timeout`]
    /// gave, or at any other time (spurious ticks are harmless).
    Tick,
    /// Leave the cluster gracefully (P8). [`Command::LeaveFinished`] follows.
    Leave,
    /// An operator says the voters this member cannot hear from are gone for good:
    /// recover the cluster with the processes that answer (P11), even without proof
    /// of death. Ignored, with a warning, by a node that is not in a cluster or
    /// follows a live leader. **Risk**: if a missing voter still runs with a majority
    /// elsewhere, there will be two primaries. Read the node's
    /// [`Status::recovery`](crate::Status::recovery) first.
    ForceRecover,
    /// Declares named roles (P13): each role that the cluster's table lacks is added
    /// through the primary (forwarded to it, and resent until committed). Roles the
    /// table has are left as they are, so every replica may declare the same list at
    /// start. Invalid names are skipped with a warning (check them first with
    /// [`crate::check_role_name`]).
    DeclareRoles(Vec<(String, Placement)>),
    /// Removes named roles from the table, through the primary. A role is removed
    /// once its owner has released it.
    RemoveRoles(Vec<String>),
    /// This node has finished draining a role the primary asked back
    /// ([`crate::RoleEvent::Releasing`]): it lets go now. Ignored for a role it is not
    /// asked to release.
    ReleaseRole(String),
    /// A request to the key-value store ([`crate::store`]), answered by exactly one
    /// [`Command::StoreReply`] with the same `id`. Ids are the application's; one id
    /// may not be waiting twice.
    Store {
        /// The application's id for the request.
        id: u64,
        /// The request.
        request: crate::store::StoreRequest,
    },
}

/// Something the shell must do, drained with [`crate::ClusterCore::poll_command`] in
/// order.
// Inline envelope, as in `Input`: no allocation per command.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Send this envelope to this address. Delivery is best effort: the protocol
    /// tolerates loss, duplication and reordering.
    Send {
        /// Where.
        to: Address,
        /// What.
        msg: Envelope,
        /// What a shell may do with it while it waits in a queue: see [`Delivery`].
        /// The shell never needs to look inside `msg` to decide.
        class: Delivery,
    },
    /// The application-facing role or the known primary changed.
    RoleChanged {
        /// The new role (as of the instant of the input that caused it).
        role: Role,
        /// The term.
        term: u64,
        /// The primary (leader) this node knows of, if any.
        primary: Option<PrimaryInfo>,
        /// While this node is primary: when its lease ends, on this node's clock,
        /// unless renewed (a later `RoleChanged` says so). `None` otherwise.
        lease_until: Option<Instant>,
        /// While this node is primary: its fencing token (P7). `None` otherwise.
        fencing_token: Option<FencingToken>,
    },
    /// The committed member list changed; the full new list.
    MembersChanged(Vec<(NodeId, Member)>),
    /// Write this state durably (fsync) before carrying out any later command. Only a
    /// core made [`durable`](crate::ClusterCore::durable) emits it, first among the
    /// commands of an input that changed its term, vote, cluster or log; heartbeats
    /// never do. See [`DurableState`](crate::DurableState).
    Persist(crate::DurableState),
    /// Entries appended to the durable log since the last `Persist` or
    /// `PersistAppend`: the rest of the durable state is unchanged. Only a core made
    /// [`durable`](crate::ClusterCore::durable) emits it, at the front of the
    /// commands like `Persist`; the shell appends them crash-safely before carrying
    /// out the commands after it. A shell may instead persist the whole
    /// [`durable_state`](crate::ClusterCore::durable_state).
    PersistAppend(Vec<crate::Entry>),
    /// `leave` finished: the node is out of the configuration (or gave up waiting).
    /// The shell may stop now.
    LeaveFinished,
    /// The roles this node holds changed (P13), one event per role and change.
    Role(RoleEvent),
    /// The answer to [`Input::Store`] `id`.
    StoreReply {
        /// The request's id.
        id: u64,
        /// Its answer.
        result: Result<crate::store::StoreAnswer, crate::store::StoreError>,
    },
}

/// How a shell may treat a [`Command::Send`] that still waits in its queue. The core
/// decides; a shell only compares classes, so no transport inspects messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Send it (best effort, in order with the others to the same address). A full
    /// queue may still drop it: the protocol retries everything it needs.
    Normal,
    /// Only the newest of its kind is worth sending: a later envelope to the same
    /// address whose class [`supersedes`](Delivery::supersedes) this one makes it
    /// useless, and a queue should drop it rather than send stale news (a heartbeat
    /// or an acknowledgement; FINDINGS #1 in `sims/FINDINGS.md`).
    Latest(Freshness),
}

impl Delivery {
    /// Whether an envelope of this class makes a queued `older` one to the same
    /// address useless, so that a queue may drop `older`. Never true for
    /// [`Delivery::Normal`] on either side.
    pub fn supersedes(&self, older: &Delivery) -> bool {
        match (self, older) {
            (Delivery::Latest(new), Delivery::Latest(old)) => new.supersedes(old),
            _ => false,
        }
    }

    /// The class of `msg`, sent by this node in `cluster` to `to`.
    pub(crate) fn of(cluster: Option<ClusterId>, to: Option<NodeId>, msg: &Message) -> Delivery {
        let (kind, term, progress, ok) = match msg {
            Message::Append(a) if a.entries.is_empty() => {
                (LatestKind::Heartbeat, a.term, a.commit, true)
            }
            Message::AppendReply(r) => (LatestKind::AppendReply, r.term, r.index, r.success),
            _ => return Delivery::Normal,
        };
        Delivery::Latest(Freshness {
            kind,
            cluster,
            to,
            term,
            progress,
            ok,
        })
    }
}

/// What the core knows of a supersedable message's news (opaque to shells): compare
/// two with [`Delivery::supersedes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    kind: LatestKind,
    cluster: Option<ClusterId>,
    to: Option<NodeId>,
    term: u64,
    /// A heartbeat's commit index, a reply's index.
    progress: u64,
    /// A reply's success (always true for a heartbeat).
    ok: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LatestKind {
    /// An append with no entries.
    Heartbeat,
    /// An append (or snapshot) acknowledgement.
    AppendReply,
}

impl Freshness {
    /// A heartbeat replaces an older heartbeat, a reply an older reply, to the same
    /// node in the same cluster, unless the older one says more: a higher term, a
    /// higher commit index, a success where the new one failed, or a higher matched
    /// index.
    fn supersedes(&self, old: &Freshness) -> bool {
        if self.kind != old.kind || self.to != old.to || self.cluster != old.cluster {
            return false;
        }
        match self.kind {
            LatestKind::Heartbeat => self.term >= old.term && self.progress >= old.progress,
            LatestKind::AppendReply => {
                self.term > old.term
                    || (self.term == old.term
                        && match (self.ok, old.ok) {
                            (true, true) => self.progress >= old.progress,
                            (_, false) => true,
                            (false, true) => false,
                        })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Delivery;
    use crate::id::{ClusterId, NodeId};
    use crate::membership::{Change, Entry};
    use crate::message::{Append, AppendReply, Message};
    use crate::time::Instant;

    const C: Option<ClusterId> = Some(ClusterId(7));
    const TO: Option<NodeId> = Some(NodeId(2));

    fn heartbeat(term: u64, commit: u64) -> Delivery {
        let msg = Message::Append(Append {
            term,
            prev_index: 3,
            prev_term: 1,
            entries: Vec::new(),
            commit,
            sent_at: Instant::ZERO,
            hold: None,
        });
        Delivery::of(C, TO, &msg)
    }

    fn reply(term: u64, success: bool, index: u64) -> Delivery {
        let msg = Message::AppendReply(AppendReply {
            term,
            success,
            index,
            sent_at: Instant::ZERO,
            at: Default::default(),
            released: Vec::new(),
        });
        Delivery::of(C, TO, &msg)
    }

    #[test]
    fn a_heartbeat_supersedes_older_heartbeats_that_say_no_more() {
        assert!(heartbeat(2, 5).supersedes(&heartbeat(2, 5)));
        assert!(heartbeat(3, 6).supersedes(&heartbeat(2, 5)));
        assert!(
            !heartbeat(2, 5).supersedes(&heartbeat(3, 5)),
            "older term is higher"
        );
        assert!(
            !heartbeat(2, 5).supersedes(&heartbeat(2, 6)),
            "older commit is higher"
        );
        let to_other = Delivery::of(C, Some(NodeId(3)), &Message::Probe);
        assert_eq!(to_other, Delivery::Normal);
    }

    #[test]
    fn entries_and_other_messages_are_never_superseded() {
        let with_entry = Message::Append(Append {
            term: 2,
            prev_index: 3,
            prev_term: 1,
            entries: vec![Entry {
                index: 4,
                term: 2,
                change: Change::Noop,
            }],
            commit: 3,
            sent_at: Instant::ZERO,
            hold: None,
        });
        let d = Delivery::of(C, TO, &with_entry);
        assert_eq!(d, Delivery::Normal);
        assert!(!heartbeat(9, 9).supersedes(&d));
        assert!(!d.supersedes(&heartbeat(1, 1)));
        assert!(!Delivery::Normal.supersedes(&Delivery::Normal));
        assert!(
            !reply(9, true, 9).supersedes(&heartbeat(1, 1)),
            "different kinds"
        );
    }

    #[test]
    fn a_reply_supersedes_older_replies_unless_they_say_more() {
        assert!(reply(2, true, 5).supersedes(&reply(2, true, 4)));
        assert!(!reply(2, true, 4).supersedes(&reply(2, true, 5)));
        assert!(reply(2, false, 0).supersedes(&reply(2, false, 3)));
        assert!(reply(2, true, 1).supersedes(&reply(2, false, 3)));
        assert!(!reply(2, false, 9).supersedes(&reply(2, true, 1)));
        assert!(
            reply(3, false, 0).supersedes(&reply(2, true, 9)),
            "a higher term"
        );
    }

    #[test]
    fn nothing_supersedes_across_nodes_or_clusters() {
        let hb = |cluster, to| {
            let msg = Message::Append(Append {
                term: 5,
                prev_index: 0,
                prev_term: 0,
                entries: Vec::new(),
                commit: 5,
                sent_at: Instant::ZERO,
                hold: None,
            });
            Delivery::of(cluster, to, &msg)
        };
        assert!(!hb(C, Some(NodeId(3))).supersedes(&heartbeat(1, 1)));
        assert!(!hb(Some(ClusterId(8)), TO).supersedes(&heartbeat(1, 1)));
        assert!(hb(C, TO).supersedes(&heartbeat(1, 1)));
    }
}
