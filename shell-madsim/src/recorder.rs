//! The recorded history of a simulation: node views at every change, and faults.

use crate::clock::Clock;
use cluster_mode_core::{ClusterId, MemberStatus, NodeId, OwnedRole, Role, RoleToken, Status};
use std::fmt::Write as _;
use std::sync::Arc;

/// 64-bit FNV-1a: a stable hash (unlike `DefaultHasher`, fixed across Rust versions),
/// used for member lists and trace hashes.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A committed member list as views record it: ids (sorted), `true` for voters,
/// shared between equal lists.
pub type MemberList = Arc<[(NodeId, bool)]>;

/// The named roles a view says its node holds, shared between a slot's consecutive
/// views that list the same ones (most views renew every hold and change nothing
/// here: with 64 roles, copying the list twice per view was a tenth of a run).
pub type RoleList = Arc<[HeldRole]>;

/// A named role (P13) a node holds at the instant of a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRole {
    /// The role.
    pub role: String,
    /// The owner's fencing token for it (cluster, index of the granting entry).
    pub token: RoleToken,
    /// Set while the primary asks for it back: the instant the node lets go at the
    /// latest (its `release_by`), converted to global simulated nanoseconds.
    pub release_by_ns: Option<u64>,
}

/// One node's view at one instant, with its lease converted to global time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The node's identity (new on every start, unless it has a data directory).
    pub id: NodeId,
    /// The cluster it belongs to, if any.
    pub cluster: Option<ClusterId>,
    /// The application-visible role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// Whether it is the Raft leader of its term.
    pub is_leader: bool,
    /// The primary it reports (itself while it holds a lease).
    pub primary: Option<NodeId>,
    /// Committed configuration index.
    pub commit_index: u64,
    /// The committed member ids (sorted by id, as the core lists them), with `true`
    /// for voters. Shared between the views
    /// that list the same members ([`Recorder::view`]): with 1,000 members a list is
    /// 24 kB, and every member records a view at every heartbeat.
    pub members: MemberList,
    /// FNV-1a hash of the committed member list (ids, addresses, names, voter flags).
    pub members_hash: u64,
    /// Whether its primary lease is valid at this instant (by its own clock).
    pub lease_valid: bool,
    /// The lease end converted to global simulated nanoseconds, while leader.
    pub lease_end_ns: Option<u64>,
    /// The fencing token's term while primary.
    pub fencing_term: Option<u64>,
    /// The named roles the node holds at this instant (`Status::owned_roles`, in
    /// name order), each held until [`role_hold_end_ns`](Self::role_hold_end_ns) and
    /// its own `release_by_ns`, whichever is first. `None`: this view says nothing
    /// about roles (a view built from a `RoleChanged` event, whose other fields come
    /// from a status that may be of another instant).
    pub roles: Option<RoleList>,
    /// When the node's hold on its roles ends unless renewed
    /// (`Status::role_hold_until`, the lease end while it leads), converted to global
    /// simulated nanoseconds.
    pub role_hold_end_ns: Option<u64>,
}

impl NodeView {
    /// Builds the view from a core status and the node's clock.
    pub fn from_status(s: &Status, clock: &Clock) -> Self {
        Self::from_status_after(s, clock, None)
    }

    /// [`from_status`](Self::from_status), sharing with `prev` (the slot's previous
    /// view) its role list when the status holds the same roles, tokens and release
    /// deadlines, and its member list and hash when the status is of the same node
    /// and cluster at the same commit index: the core refreshes a status's member
    /// list only when one of those moved (one committed configuration per index,
    /// P2), so the list cannot differ. Hashing 100 members per view was a fifth of
    /// `hundred-members`.
    pub fn from_status_after(s: &Status, clock: &Clock, prev: Option<&NodeView>) -> Self {
        let (members, members_hash) = match prev {
            Some(p)
                if p.id == s.id && p.cluster == s.cluster && p.commit_index == s.commit_index =>
            {
                debug_assert_eq!(p.members_hash, members_hash(&s.members));
                (p.members.clone(), p.members_hash)
            }
            _ => (
                s.members
                    .iter()
                    .map(|m| (m.id, m.voter))
                    .collect::<Vec<_>>()
                    .into(),
                members_hash(&s.members),
            ),
        };
        NodeView {
            id: s.id,
            cluster: s.cluster,
            role: s.role,
            term: s.term,
            is_leader: s.is_leader,
            primary: s.primary.as_ref().map(|p| p.id),
            commit_index: s.commit_index,
            members,
            members_hash,
            lease_valid: s.lease_valid,
            lease_end_ns: s.lease_until.map(|l| clock.global_of(l)),
            fencing_term: s.fencing_token.map(|t| t.term),
            roles: Some(roles_after(&s.owned_roles, clock, prev)),
            role_hold_end_ns: s.role_hold_until.map(|h| clock.global_of(h)),
        }
    }

    /// The roles this view says the node holds at global instant `t`: before the
    /// hold end and each role's release deadline. Empty if the view says nothing
    /// about roles.
    pub fn roles_held_at(&self, t: u64) -> impl Iterator<Item = &HeldRole> {
        let hold = self.role_hold_end_ns.is_none_or(|e| t < e);
        self.roles
            .iter()
            .flat_map(|l| l.iter())
            .filter(move |r| hold && r.release_by_ns.is_none_or(|b| t < b))
    }
}

/// FNV-1a over a member list (ids, addresses, names, voter flags), streamed (no
/// intermediate string).
fn members_hash(members: &[MemberStatus]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for m in members {
        eat(&m.id.0.to_le_bytes());
        eat(m.addr.as_str().as_bytes());
        eat(&[0xff]);
        eat(m.name.as_deref().unwrap_or("").as_bytes());
        eat(&[0xfe, u8::from(m.voter)]);
    }
    h
}

/// Owned roles as a view lists them (deadlines in global time).
pub(crate) fn held_roles(owned: &[OwnedRole], clock: &Clock) -> RoleList {
    owned
        .iter()
        .map(|o| HeldRole {
            role: o.role.clone(),
            token: o.token,
            release_by_ns: o.release_by.map(|b| clock.global_of(b)),
        })
        .collect()
}

/// [`held_roles`], or the role list of `prev` when it lists exactly these.
fn roles_after(owned: &[OwnedRole], clock: &Clock, prev: Option<&NodeView>) -> RoleList {
    if let Some(list) = prev.and_then(|p| p.roles.as_ref()) {
        let same = list.len() == owned.len()
            && list.iter().zip(owned).all(|(h, o)| {
                h.role == o.role
                    && h.token == o.token
                    && h.release_by_ns == o.release_by.map(|b| clock.global_of(b))
            });
        if same {
            return list.clone();
        }
    }
    held_roles(owned, clock)
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A node process started: with a fresh identity, or, restored from its data
    /// directory, with the one it had.
    Started {
        /// Pod name.
        name: String,
        /// Its identity.
        id: NodeId,
        /// Its address.
        addr: String,
    },
    /// The node's view changed (or a sample found it different).
    View(NodeView),
    /// The node process died (killed, replaced) or finished leaving.
    Stopped(String),
    /// The node was paused (SIGSTOP, long GC).
    Paused,
    /// The node was resumed.
    Resumed,
    /// A fault was injected or cleared (applies to the whole cluster).
    Fault(String),
}

/// One entry of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Global simulated time, nanoseconds since the simulation started.
    pub at_ns: u64,
    /// The node slot it concerns (`usize::MAX` for cluster-wide faults).
    pub slot: usize,
    /// What happened.
    pub kind: RecordKind,
}

/// Collects records; deduplicates views per slot, and member lists across views.
#[derive(Debug, Default)]
pub struct Recorder {
    records: Vec<Record>,
    last: Vec<Option<NodeView>>,
    /// The member list of the view recorded last (any slot), shared by the next
    /// views that list the same members.
    members: Option<(u64, MemberList)>,
    /// Messages sent, per slot.
    pub sent: Vec<u64>,
}

impl Recorder {
    /// Records `view` for `slot` if it differs from the slot's last view. A member
    /// list equal to one recorded before (the slot's last, or the last recorded by
    /// anyone) is stored once.
    pub fn view(&mut self, at_ns: u64, slot: usize, mut view: NodeView) {
        if self.last.len() <= slot {
            self.last.resize(slot + 1, None);
        }
        if self.last[slot].as_ref() == Some(&view) {
            return;
        }
        let mine = self.last[slot]
            .as_ref()
            .map(|v| (v.members_hash, v.members.clone()));
        for (hash, list) in mine.iter().chain(self.members.iter()) {
            if *hash == view.members_hash && **list == *view.members {
                view.members = list.clone();
                break;
            }
        }
        self.members = Some((view.members_hash, view.members.clone()));
        self.last[slot] = Some(view.clone());
        self.records.push(Record {
            at_ns,
            slot,
            kind: RecordKind::View(view),
        });
    }

    /// The view recorded last for `slot` since its last lifecycle event, if any.
    pub fn last_view(&self, slot: usize) -> Option<&NodeView> {
        self.last.get(slot).and_then(Option::as_ref)
    }

    /// Records a lifecycle event or fault.
    pub fn push(&mut self, at_ns: u64, slot: usize, kind: RecordKind) {
        if slot < self.last.len() && !matches!(kind, RecordKind::Fault(_)) {
            self.last[slot] = None;
        }
        self.records.push(Record { at_ns, slot, kind });
    }

    /// Counts one message sent by `slot`.
    pub fn count_send(&mut self, slot: usize) {
        if self.sent.len() <= slot {
            self.sent.resize(slot + 1, 0);
        }
        self.sent[slot] += 1;
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self, names: Vec<String>, end_ns: u64) -> Trace {
        Self::trace_of(self.records.clone(), names, self.sent.clone(), end_ns)
    }

    /// Everything recorded so far, moved out (the recorder is left empty): the same
    /// trace as [`Recorder::snapshot`] without copying the history.
    pub fn take(&mut self, names: Vec<String>, end_ns: u64) -> Trace {
        let records = std::mem::take(&mut self.records);
        Self::trace_of(records, names, std::mem::take(&mut self.sent), end_ns)
    }

    fn trace_of(
        mut records: Vec<Record>,
        names: Vec<String>,
        sent: Vec<u64>,
        end_ns: u64,
    ) -> Trace {
        // Transition events are stamped with the node's clock at the change and may be
        // recorded after later samples: order by time (stable for equal times).
        records.sort_by_key(|r| r.at_ns);
        Trace {
            records,
            names,
            sent,
            end_ns,
        }
    }
}

/// ` roles=[name@token(release by ms),...](hold until ms)` for a view that says
/// something about roles and holds or held some, else nothing.
fn roles_text(v: &NodeView) -> String {
    let Some(roles) = &v.roles else {
        return String::new();
    };
    if roles.is_empty() && v.role_hold_end_ns.is_none() {
        return String::new();
    }
    let list: Vec<String> = roles
        .iter()
        .map(|r| {
            let by = r
                .release_by_ns
                .map(|b| format!("(release by {}ms)", b / 1_000_000))
                .unwrap_or_default();
            format!("{}@{}{by}", r.role, r.token.index)
        })
        .collect();
    let until = v
        .role_hold_end_ns
        .map(|e| format!("(hold until {}ms)", e / 1_000_000))
        .unwrap_or_default();
    format!(" roles=[{}]{until}", list.join(","))
}

/// A finished simulation's history: the checker's input.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Every record, in simulated-time order.
    pub records: Vec<Record>,
    /// Pod name per slot.
    pub names: Vec<String>,
    /// Messages sent per slot.
    pub sent: Vec<u64>,
    /// When the simulation ended (global ns).
    pub end_ns: u64,
}

impl Trace {
    /// The name of slot `slot` (or `"-"`).
    pub fn name(&self, slot: usize) -> &str {
        self.names.get(slot).map(String::as_str).unwrap_or("-")
    }

    /// A readable line per record.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.records {
            let _ = write!(
                out,
                "{:>6}.{:06}ms ",
                r.at_ns / 1_000_000,
                r.at_ns % 1_000_000
            );
            let who = if r.slot == usize::MAX {
                "*"
            } else {
                self.name(r.slot)
            };
            let _ = match &r.kind {
                RecordKind::Started { id, addr, .. } => writeln!(out, "{who} started id={id} addr={addr}"),
                RecordKind::View(v) => writeln!(
                    out,
                    "{who} id={} cluster={} {:?} term={} leader={} primary={} commit={} members=[{}] lease={}{} fence={:?}{}",
                    v.id,
                    v.cluster
                        .map(|c| format!("{c}/e{}", c.epoch()))
                        .unwrap_or_else(|| "-".into()),
                    v.role,
                    v.term,
                    v.is_leader,
                    v.primary.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    v.commit_index,
                    v.members
                        .iter()
                        .map(|(id, voter)| format!("{id}{}", if *voter { "" } else { "(nv)" }))
                        .collect::<Vec<_>>()
                        .join(","),
                    v.lease_valid,
                    v.lease_end_ns.map(|e| format!("(until {}ms)", e / 1_000_000)).unwrap_or_default(),
                    v.fencing_term,
                    roles_text(v),
                ),
                RecordKind::Stopped(why) => writeln!(out, "{who} stopped: {why}"),
                RecordKind::Paused => writeln!(out, "{who} paused"),
                RecordKind::Resumed => writeln!(out, "{who} resumed"),
                RecordKind::Fault(f) => writeln!(out, "{who} FAULT {f}"),
            };
        }
        out
    }

    /// A stable hash of the whole trace: equal for two runs of one seed.
    pub fn hash(&self) -> u64 {
        fnv1a(self.text().as_bytes()) ^ fnv1a(format!("{:?}", self.sent).as_bytes())
    }
}
