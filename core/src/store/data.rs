//! The store's state machine: keys, values, revisions and client sessions.

use super::{
    ClientId, DataEntry, ReadAnswer, Revision, StoreAnswer, StoreError, Write, WriteOp,
    WriteOutcome, MAX_IN_FLIGHT, MAX_SESSIONS, MAX_STORE_BYTES, PER_KEY_OVERHEAD,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A stored value and the revisions that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the write that set it (the key's "mod revision").
    pub revision: Revision,
    /// The revision at which the key was created (since it was last absent).
    pub created: Revision,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The revision of the session's last entry (registration or write).
    last_active: Revision,
    /// Every write numbered below this has been answered.
    acked_below: u64,
    /// The outcomes of writes not yet acknowledged, by sequence number.
    results: BTreeMap<u64, WriteOutcome>,
}

/// The data every member holds at a given log index: a pure function of the committed
/// store entries up to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreData {
    keys: BTreeMap<String, Versioned>,
    sessions: BTreeMap<ClientId, Session>,
    /// Bytes of keys and values, with [`PER_KEY_OVERHEAD`] per key.
    bytes: usize,
}

fn size_of(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + PER_KEY_OVERHEAD
}

impl StoreData {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.keys.get(key)
    }

    /// Keys starting with `prefix`, in order, at most `limit` and until their keys and
    /// values reach [`MAX_RANGE_ANSWER_BYTES`](super::MAX_RANGE_ANSWER_BYTES); and
    /// whether more exist.
    pub fn range(&self, prefix: &str, limit: usize) -> (Vec<(String, Versioned)>, bool) {
        let mut it = self
            .keys
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let (mut entries, mut bytes) = (Vec::new(), 0);
        while entries.len() < limit && bytes < super::MAX_RANGE_ANSWER_BYTES {
            let Some((k, v)) = it.next() else { break };
            bytes += k.len() + v.value.len();
            entries.push((k.clone(), v.clone()));
        }
        let more = it.peek().is_some();
        (entries, more)
    }

    /// Answers a read.
    pub fn read(&self, read: &super::Read) -> ReadAnswer {
        match read {
            super::Read::Get { key } => ReadAnswer::Get(self.get(key).cloned()),
            super::Read::Range { prefix, limit } => {
                let (entries, more) = self.range(prefix, *limit as usize);
                ReadAnswer::Range { entries, more }
            }
        }
    }

    /// How many keys are stored.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes used towards [`MAX_STORE_BYTES`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many client sessions are open.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The saved outcome of a write that already committed and is not yet
    /// acknowledged, if any (a retry is answered from it).
    pub fn saved_outcome(&self, client: ClientId, seq: u64) -> Option<&WriteOutcome> {
        self.sessions.get(&client)?.results.get(&seq)
    }

    /// Whether the session exists.
    pub fn has_session(&self, client: ClientId) -> bool {
        self.sessions.contains_key(&client)
    }

    /// Applies the committed entry at `index`; returns what its client is told.
    pub fn apply(&mut self, index: Revision, entry: &DataEntry) -> Result<StoreAnswer, StoreError> {
        match entry {
            DataEntry::Register => {
                self.sessions.insert(
                    ClientId(index),
                    Session {
                        last_active: index,
                        acked_below: 1,
                        results: BTreeMap::new(),
                    },
                );
                self.evict_sessions();
                Ok(StoreAnswer::Registered(ClientId(index)))
            }
            DataEntry::Write(w) => self.apply_write(index, w).map(StoreAnswer::Written),
        }
    }

    fn evict_sessions(&mut self) {
        while self.sessions.len() > MAX_SESSIONS {
            // Least recently active first; ties broken by id (the map's order).
            let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(id, s)| (s.last_active, **id))
                .map(|(id, _)| *id)
            else {
                return;
            };
            self.sessions.remove(&oldest);
        }
    }

    fn apply_write(&mut self, index: Revision, w: &Write) -> Result<WriteOutcome, StoreError> {
        let Some(session) = self.sessions.get_mut(&w.client) else {
            return Err(StoreError::SessionExpired);
        };
        if w.acked_below > session.acked_below {
            session.acked_below = w.acked_below;
            let keep = session.results.split_off(&w.acked_below);
            session.results = keep;
        }
        if let Some(saved) = session.results.get(&w.seq) {
            // A retry of a write that already committed: its outcome, applied once.
            return Ok(saved.clone());
        }
        if w.seq < session.acked_below {
            return Err(StoreError::Invalid(format!(
                "write {} of the session was already acknowledged",
                w.seq
            )));
        }
        if w.seq >= session.acked_below.saturating_add(MAX_IN_FLIGHT) {
            return Err(StoreError::Busy);
        }
        session.last_active = index;
        if w.op.check_limits().is_err() {
            // The primary checks before appending; an entry over the limits (from a
            // primary that did not) changes nothing, the same way on every member.
            let outcome = WriteOutcome::Full;
            session.results.insert(w.seq, outcome.clone());
            return Ok(outcome);
        }
        let outcome = self.apply_op(index, &w.op);
        if let Some(s) = self.sessions.get_mut(&w.client) {
            s.results.insert(w.seq, outcome.clone());
        }
        Ok(outcome)
    }

    fn apply_op(&mut self, index: Revision, op: &WriteOp) -> WriteOutcome {
        let key = op.key();
        let current = self.keys.get(key);
        let current_rev = current.map_or(0, |v| v.revision);
        match op {
            WriteOp::Delete { .. } => match self.keys.remove(key) {
                Some(old) => {
                    self.bytes -= size_of(key, &old.value);
                    WriteOutcome::Deleted {
                        revision: index,
                        existed: true,
                    }
                }
                None => WriteOutcome::Deleted {
                    revision: index,
                    existed: false,
                },
            },
            WriteOp::CompareAndSwap { expected, .. } if *expected != current_rev => {
                WriteOutcome::Mismatch {
                    current: current_rev,
                }
            }
            WriteOp::Put { value, .. } | WriteOp::CompareAndSwap { value, .. } => {
                let old = current.map_or(0, |v| size_of(key, &v.value));
                let new_bytes = self.bytes - old + size_of(key, value);
                if new_bytes > MAX_STORE_BYTES {
                    return WriteOutcome::Full;
                }
                let created = current.map_or(index, |v| v.created);
                self.bytes = new_bytes;
                self.keys.insert(
                    key.to_owned(),
                    Versioned {
                        value: value.clone(),
                        revision: index,
                        created,
                    },
                );
                if matches!(op, WriteOp::Put { .. }) {
                    WriteOutcome::Put { revision: index }
                } else {
                    WriteOutcome::Swapped { revision: index }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Read;

    fn put(client: u64, seq: u64, key: &str, value: &str) -> DataEntry {
        DataEntry::Write(Write {
            client: ClientId(client),
            seq,
            acked_below: 1,
            op: WriteOp::Put {
                key: key.into(),
                value: value.as_bytes().to_vec(),
            },
        })
    }

    fn cas(client: u64, seq: u64, key: &str, expected: Revision, value: &str) -> DataEntry {
        DataEntry::Write(Write {
            client: ClientId(client),
            seq,
            acked_below: 1,
            op: WriteOp::CompareAndSwap {
                key: key.into(),
                expected,
                value: value.as_bytes().to_vec(),
            },
        })
    }

    fn written(r: Result<StoreAnswer, StoreError>) -> WriteOutcome {
        match r {
            Ok(StoreAnswer::Written(o)) => o,
            other => panic!("not a write outcome: {other:?}"),
        }
    }

    fn registered(d: &mut StoreData, index: u64) -> u64 {
        assert_eq!(
            d.apply(index, &DataEntry::Register),
            Ok(StoreAnswer::Registered(ClientId(index)))
        );
        index
    }

    #[test]
    fn a_retried_write_is_applied_once_and_answered_with_its_first_outcome() {
        let mut d = StoreData::default();
        let c = registered(&mut d, 1);
        assert_eq!(
            written(d.apply(2, &put(c, 1, "k", "a"))),
            WriteOutcome::Put { revision: 2 }
        );
        assert_eq!(
            written(d.apply(3, &put(c, 2, "k", "b"))),
            WriteOutcome::Put { revision: 3 }
        );
        // The retry of write 1 (say, after a primary change) must not set "a" again.
        assert_eq!(
            written(d.apply(4, &put(c, 1, "k", "a"))),
            WriteOutcome::Put { revision: 2 }
        );
        let v = d.get("k").expect("present");
        assert_eq!(
            (v.value.as_slice(), v.revision, v.created),
            (&b"b"[..], 3, 2)
        );
    }

    #[test]
    fn unknown_sessions_are_refused_and_the_least_recent_is_evicted() {
        let mut d = StoreData::default();
        assert_eq!(
            d.apply(1, &put(1, 1, "k", "a")),
            Err(StoreError::SessionExpired)
        );
        for i in 1..=MAX_SESSIONS as u64 + 1 {
            registered(&mut d, i);
        }
        assert_eq!(d.sessions(), MAX_SESSIONS);
        assert!(!d.has_session(ClientId(1)), "the oldest session is evicted");
        assert!(d.is_empty(), "a refused write changes nothing");
    }

    #[test]
    fn compare_and_swap_matches_on_the_revision_and_zero_means_absent() {
        let mut d = StoreData::default();
        let c = registered(&mut d, 1);
        assert_eq!(
            written(d.apply(2, &cas(c, 1, "k", 0, "a"))),
            WriteOutcome::Swapped { revision: 2 }
        );
        assert_eq!(
            written(d.apply(3, &cas(c, 2, "k", 0, "b"))),
            WriteOutcome::Mismatch { current: 2 }
        );
        assert_eq!(
            written(d.apply(4, &cas(c, 3, "k", 2, "c"))),
            WriteOutcome::Swapped { revision: 4 }
        );
        assert_eq!(d.get("k").map(|v| v.value.clone()), Some(b"c".to_vec()));
    }

    #[test]
    fn acknowledged_outcomes_are_forgotten_and_too_many_in_flight_is_busy() {
        let mut d = StoreData::default();
        let c = registered(&mut d, 1);
        d.apply(2, &put(c, 1, "k", "a")).unwrap();
        let mut next = put(c, 2, "k", "b");
        if let DataEntry::Write(w) = &mut next {
            w.acked_below = 2;
        }
        d.apply(3, &next).unwrap();
        assert_eq!(d.saved_outcome(ClientId(c), 1), None);
        assert!(d.saved_outcome(ClientId(c), 2).is_some());
        assert!(matches!(
            d.apply(4, &put(c, 1, "k", "a")),
            Err(StoreError::Invalid(_))
        ));
        let far = put(c, 2 + MAX_IN_FLIGHT, "k", "z");
        assert_eq!(d.apply(5, &far), Err(StoreError::Busy));
    }

    #[test]
    fn the_store_refuses_writes_past_its_size_and_deletes_free_space() {
        let mut d = StoreData::default();
        let c = registered(&mut d, 1);
        let big = "x".repeat(crate::store::MAX_VALUE_LEN);
        let mut seq = 1;
        let mut index = 2;
        let mut full_at = None;
        while full_at.is_none() {
            let o = written(d.apply(index, &put(c, seq, &format!("k{seq}"), &big)));
            if o == WriteOutcome::Full {
                full_at = Some(seq);
            }
            seq += 1;
            index += 1;
        }
        assert!(d.bytes() <= MAX_STORE_BYTES);
        let del = DataEntry::Write(Write {
            client: ClientId(c),
            seq,
            acked_below: 1,
            op: WriteOp::Delete { key: "k1".into() },
        });
        assert_eq!(
            written(d.apply(index, &del)),
            WriteOutcome::Deleted {
                revision: index,
                existed: true
            }
        );
        let o = written(d.apply(index + 1, &put(c, seq + 1, "again", &big)));
        assert_eq!(
            o,
            WriteOutcome::Put {
                revision: index + 1
            }
        );
    }

    #[test]
    fn range_reads_keys_with_the_prefix_in_order_up_to_the_limit() {
        let mut d = StoreData::default();
        let c = registered(&mut d, 1);
        for (i, k) in ["a/2", "b/1", "a/1", "a/3", "ab"].iter().enumerate() {
            d.apply(2 + i as u64, &put(c, 1 + i as u64, k, "v"))
                .unwrap();
        }
        let read = Read::Range {
            prefix: "a/".into(),
            limit: 2,
        };
        let ReadAnswer::Range { entries, more } = d.read(&read) else {
            panic!("range answer")
        };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!((keys, more), (vec!["a/1", "a/2"], true));
    }

    #[test]
    fn a_range_answer_stops_after_the_entry_that_reaches_its_byte_limit() {
        let mut d = StoreData::default();
        let c = registered(&mut d, 1);
        let value = "v".repeat(super::super::MAX_VALUE_LEN);
        let per = super::super::MAX_VALUE_LEN + 4; // "k/NN" and its value
        let reach = super::super::MAX_RANGE_ANSWER_BYTES.div_ceil(per);
        for i in 0..reach as u64 + 3 {
            let key = format!("k/{i:02}");
            d.apply(2 + i, &put(c, 1 + i, &key, &value)).unwrap();
        }
        let (entries, more) = d.range("k/", usize::MAX);
        assert_eq!((entries.len(), more), (reach, true));
        let (entries, more) = d.range("k/", reach);
        assert_eq!((entries.len(), more), (reach, true));
        // Exactly what is left after the cut: the last page says no more.
        let (entries, more) = d.range("k/9", usize::MAX);
        assert_eq!((entries.len(), more), (0, false));
        let (_, more) = d.range("k/", reach + 3);
        assert!(more, "the byte limit, not the count, cut it");
    }
}
