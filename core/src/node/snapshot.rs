//! Snapshots to followers far behind: whole in one message when small, in pieces when
//! not (a large key-value store).
//!
//! The leader encodes its committed snapshot once and shares the bytes among the
//! followers it is sending to ([`Transfers`]). Each follower has one piece in flight;
//! its acknowledgement ([`SnapshotChunkAck`]) says how much it holds, and the next
//! piece starts there. A lost piece or acknowledgement is sent again by the heartbeat
//! round. The follower keeps one assembly ([`Incoming`]); when it holds every byte it
//! decodes the snapshot and installs it exactly as a whole [`Message::Snapshot`], and
//! its [`AppendReply`](crate::message::AppendReply) ends the transfer.

use super::ClusterCore;
use crate::id::{Address, ClusterId, NodeId};
use crate::membership::Snapshot;
use crate::message::{AppendReply, Message, SnapshotChunk, SnapshotChunkAck, SnapshotMsg};
use crate::message::{MAX_ENTRIES_PER_APPEND, MAX_SNAPSHOT_LEN};
use crate::time::Instant;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// A committed snapshot, encoded.
#[derive(Clone, Debug)]
struct Encoded {
    index: u64,
    term: u64,
    bytes: Arc<Vec<u8>>,
}

/// One follower's transfer.
#[derive(Clone, Debug)]
struct Transfer {
    snapshot: Encoded,
    /// Where the follower is.
    addr: Address,
    /// The bytes the follower said it holds.
    acked: u64,
    /// When the piece in flight was sent (`None`: none is).
    sent_at: Option<Instant>,
    /// When a piece was last sent or acknowledged.
    touched: Instant,
}

/// The leader's transfers in progress, and its latest encoded snapshot.
#[derive(Clone, Debug, Default)]
pub(super) struct Transfers {
    latest: Option<Encoded>,
    to: BTreeMap<NodeId, Transfer>,
}

/// A follower's snapshot being assembled.
#[derive(Clone, Debug, Default)]
pub(super) struct Incoming {
    /// (leader, its term, snapshot index, snapshot term, total length).
    of: Option<(NodeId, u64, u64, u64, u64)>,
    bytes: Vec<u8>,
}

impl Incoming {
    /// Forgets the assembly (a node that leaves its cluster).
    pub(super) fn clear(&mut self) {
        *self = Incoming::default();
    }
}

impl ClusterCore {
    /// Sends `id` the committed snapshot: whole if it fits one message (with the
    /// entries after it if `with_entries`), else the next piece of a transfer.
    /// `addr` is where it listens. Returns the last index sent (0: none).
    pub(super) fn send_snapshot_to(
        &mut self,
        now: Instant,
        id: NodeId,
        addr: Address,
        with_entries: bool,
    ) -> u64 {
        let term = self.hard.term;
        let base = self.log.base_index();
        let chunk = self.cfg.snapshot_chunk_len;
        let in_flight = self.role.leading().and_then(|l| {
            l.transfers
                .to
                .get(&id)
                .filter(|t| t.snapshot.index >= base && t.addr == addr)
                .map(|t| (t.snapshot.index, t.sent_at))
        });
        if let Some((index, sent_at)) = in_flight {
            // A piece is in flight: the heartbeat round sends it again only once it
            // has had a heartbeat interval to be answered.
            let waited = sent_at.is_none_or(|t| now >= t + self.cfg.heartbeat_interval);
            if waited {
                self.send_piece(now, id);
            }
            return index;
        }
        let reuse = self
            .role
            .leading()
            .and_then(|l| l.transfers.latest.clone().filter(|e| e.index >= base));
        let encoded = match reuse {
            Some(e) => e,
            None => {
                // Encoded once per snapshot sent in pieces (then shared through
                // `latest`); a small one is encoded only to measure it.
                let snapshot = self.log.committed_snapshot();
                let index = snapshot.index;
                let bytes = postcard::to_allocvec(&snapshot).unwrap_or_default();
                if bytes.len() <= chunk {
                    // Small: the whole snapshot and the entries after it, in one.
                    let max = if with_entries {
                        MAX_ENTRIES_PER_APPEND
                    } else {
                        0
                    };
                    let entries = self.log.entries_for_append(index, max).to_vec();
                    let sent_to = index + entries.len() as u64;
                    let msg = SnapshotMsg {
                        term,
                        snapshot,
                        entries,
                        sent_at: now,
                    };
                    self.send(addr, Some(id), Message::Snapshot(msg));
                    return sent_to;
                }
                if bytes.len() as u64 > MAX_SNAPSHOT_LEN {
                    // The store's limits keep a snapshot far below this.
                    warn!(
                        len = bytes.len(),
                        "snapshot larger than a follower accepts; not sent"
                    );
                    return 0;
                }
                Encoded {
                    index,
                    term: snapshot.term,
                    bytes: Arc::new(bytes),
                }
            }
        };
        let index = encoded.index;
        if let Some(l) = self.role.leading_mut() {
            debug!(to = %id, index, len = encoded.bytes.len(), "snapshot transfer starts");
            l.transfers.latest = Some(encoded.clone());
            let t = Transfer {
                snapshot: encoded,
                addr,
                acked: 0,
                sent_at: None,
                touched: now,
            };
            l.transfers.to.insert(id, t);
        }
        self.send_piece(now, id);
        index
    }

    /// Sends the piece that starts where `id` said it is.
    fn send_piece(&mut self, now: Instant, id: NodeId) {
        let term = self.hard.term;
        let chunk = self.cfg.snapshot_chunk_len;
        let Some(t) = self
            .role
            .leading_mut()
            .and_then(|l| l.transfers.to.get_mut(&id))
        else {
            return;
        };
        let total = t.snapshot.bytes.len();
        let from = (t.acked as usize).min(total);
        let to = (from + chunk).min(total);
        if from == to {
            return;
        }
        t.sent_at = Some(now);
        t.touched = now;
        let msg = SnapshotChunk {
            term,
            index: t.snapshot.index,
            snapshot_term: t.snapshot.term,
            offset: from as u64,
            total: total as u64,
            bytes: t.snapshot.bytes[from..to].to_vec(),
            sent_at: now,
        };
        let addr = t.addr.clone();
        self.send(addr, Some(id), Message::SnapshotChunk(msg));
    }

    /// A follower's acknowledgement of a piece: send the next one.
    pub(super) fn on_snapshot_chunk_ack(
        &mut self,
        now: Instant,
        from: NodeId,
        a: SnapshotChunkAck,
    ) {
        if a.term > self.hard.term {
            self.become_follower(now, a.term, None);
            return;
        }
        let term = self.hard.term;
        let Some(l) = self.role.leading_mut() else {
            return;
        };
        if a.term < term {
            return;
        }
        // It is alive and follows this term (CheckQuorum); the lease is left to the
        // appends it acknowledges once the snapshot is installed.
        if let Some(p) = l.progress.get_mut(&from) {
            p.last_heard = now;
        }
        let Some(t) = l.transfers.to.get_mut(&from) else {
            return;
        };
        if a.index != t.snapshot.index || a.received > t.snapshot.bytes.len() as u64 {
            debug!(%from, index = a.index, "acknowledgement of another snapshot; ignored");
            return;
        }
        t.acked = a.received;
        t.sent_at = None;
        t.touched = now;
        self.send_piece(now, from);
    }

    /// A follower's answer that it installed a snapshot (or holds entries at or past
    /// it) ends its transfer.
    pub(super) fn end_transfer(&mut self, from: NodeId, index: u64) {
        if let Some(l) = self.role.leading_mut() {
            if l.transfers
                .to
                .get(&from)
                .is_some_and(|t| index >= t.snapshot.index)
            {
                l.transfers.to.remove(&from);
            }
        }
    }

    /// Drops the transfers the log moved past, and those to nodes the leader does
    /// not replicate to (a removed node being shown its removal) once silent for
    /// `election_timeout_max`; then the encoded snapshot once no transfer uses it
    /// and the log moved past it.
    pub(super) fn prune_transfers(&mut self, now: Instant) {
        let base = self.log.base_index();
        let quiet = self.cfg.election_timeout_max;
        let Some(l) = self.role.leading_mut() else {
            return;
        };
        let progress = &l.progress;
        l.transfers.to.retain(|id, t| {
            let wanted = progress.contains_key(id) || now < t.touched + quiet;
            wanted && t.snapshot.index >= base
        });
        if l.transfers.to.is_empty() && l.transfers.latest.as_ref().is_some_and(|e| e.index < base)
        {
            l.transfers.latest = None;
        }
    }

    /// A piece of a snapshot from a leader.
    pub(super) fn on_snapshot_chunk(
        &mut self,
        now: Instant,
        from: NodeId,
        from_addr: Address,
        cluster: Option<ClusterId>,
        c: SnapshotChunk,
    ) {
        let ours = self.hard.cluster.is_some() && cluster == self.hard.cluster;
        if ours {
            if !self.accept_leader(now, from, &from_addr, c.term) {
                let term = self.hard.term;
                self.refuse_append(from, from_addr, term, c.sent_at);
                return;
            }
        } else if self.hard.cluster.is_none() {
            // A fresh node assembles only what it may adopt; the whole snapshot is
            // checked again as one (`on_snapshot`).
            let Some(theirs) = cluster else {
                return;
            };
            if self.was_replaced(theirs) || !self.may_adopt(cluster) {
                debug!(%theirs, "snapshot piece from a cluster this node did not ask to join; ignored");
                return;
            }
        }
        // Otherwise the successor this node supports (let through by dispatch): its
        // state stays until the whole snapshot is installed.
        if ours && c.index <= self.log.commit_index() {
            // Installed already (the answer to its last piece was lost) or caught up
            // by appends: say so rather than ask for the whole snapshot again.
            self.snap_in.clear();
            let reply = AppendReply {
                term: self.hard.term,
                success: true,
                index: c.index,
                sent_at: c.sent_at,
                at: now,
                released: self.released_roles(),
            };
            self.send(from_addr, Some(from), Message::AppendReply(reply));
            return;
        }
        let of = (from, c.term, c.index, c.snapshot_term, c.total);
        if self.snap_in.of != Some(of) {
            if c.offset != 0 {
                // A piece of a transfer this node does not hold: start over.
                self.ack_piece(ours, from, from_addr, &c, 0);
                return;
            }
            self.snap_in.of = Some(of);
            self.snap_in.bytes.clear();
        }
        if c.offset == self.snap_in.bytes.len() as u64 {
            self.snap_in.bytes.extend_from_slice(&c.bytes);
        }
        let held = self.snap_in.bytes.len() as u64;
        if held < c.total {
            self.ack_piece(ours, from, from_addr, &c, held);
            return;
        }
        let bytes = std::mem::take(&mut self.snap_in.bytes);
        self.snap_in.clear();
        match postcard::from_bytes::<Snapshot>(&bytes) {
            Ok(snapshot) if snapshot.index == c.index && snapshot.term == c.snapshot_term => {
                info!(leader = %from, index = c.index, len = bytes.len(), "snapshot assembled from pieces");
                let s = SnapshotMsg {
                    term: c.term,
                    snapshot,
                    entries: Vec::new(),
                    sent_at: c.sent_at,
                };
                self.on_snapshot(now, from, from_addr, cluster, s);
            }
            Ok(_) => {
                warn!(leader = %from, "assembled snapshot does not match its pieces; dropped");
                self.ack_piece(ours, from, from_addr, &c, 0);
            }
            Err(e) => {
                warn!(leader = %from, error = %e, "assembled snapshot does not decode; dropped");
                self.ack_piece(ours, from, from_addr, &c, 0);
            }
        }
    }

    /// Acknowledges `received` bytes of `c`'s snapshot. A node outside the leader's
    /// cluster (fresh, or supporting the successor) answers in the leader's term and
    /// names no cluster, as it answers the successor's first append.
    fn ack_piece(
        &mut self,
        ours: bool,
        to: NodeId,
        addr: Address,
        c: &SnapshotChunk,
        received: u64,
    ) {
        let ack = SnapshotChunkAck {
            term: c.term,
            index: c.index,
            received,
            sent_at: c.sent_at,
        };
        let cluster = self.hard.cluster.filter(|_| ours);
        self.send_in(cluster, addr, Some(to), Message::SnapshotChunkAck(ack));
    }
}
