//! The replicated key-value store, as an application uses it: [`Cluster::store`].
//!
//! A small map (see the limits in [`cluster_mode_core::store`]) kept by every member,
//! written through the primary, read at the [`Consistency`] each read asks for. Every
//! [`Store`] handle is one client session: its writes are numbered, so a write retried
//! after a primary change is applied at most once and answered with its first
//! outcome. The handle retries by itself while no primary answers, for up to
//! [`StoreOptions::retry_for`].
//!
//! [`Cluster::store`]: crate::Cluster::store

use crate::driver::{Control, StoreResult};
use cluster_mode_core::store::{
    ClientId, Read, ReadAnswer, StoreAnswer, StoreRequest, Write, WriteOp, WriteOutcome,
};
pub use cluster_mode_core::store::{
    Consistency, DataChange, Oversized, Revision, StoreError, Versioned, MAX_KEY_LEN,
    MAX_RANGE_ANSWER_BYTES, MAX_STORE_BYTES, MAX_VALUE_LEN,
};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How a [`Store`] handle retries.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a request is retried while there is no primary or the primary
    /// changed under it (each attempt itself waits up to
    /// `Config::store_request_timeout`). Longer: requests ride out longer failovers.
    /// Shorter: the application learns sooner that the cluster has no primary.
    pub retry_for: Duration,
    /// The pause between attempts.
    pub retry_pause: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retry_for: Duration::from_secs(10),
            retry_pause: Duration::from_millis(20),
        }
    }
}

/// What a compare-and-swap did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The key had the expected revision; it holds the new value from this revision.
    Swapped(Revision),
    /// The key had another revision (0: absent); nothing changed.
    Mismatch {
        /// The key's revision when the swap was applied.
        current: Revision,
    },
}

#[derive(Debug, Default)]
struct Session {
    client: Option<ClientId>,
    next_seq: u64,
    in_flight: BTreeSet<u64>,
}

impl Session {
    /// Every write numbered below this has its answer.
    fn acked_below(&self) -> u64 {
        self.in_flight.first().copied().unwrap_or(self.next_seq)
    }
}

/// A client session of the replicated key-value store. Clones share the session.
#[derive(Clone, Debug)]
pub struct Store {
    control: mpsc::Sender<Control>,
    session: Arc<Mutex<Session>>,
    options: StoreOptions,
}

impl Store {
    pub(crate) fn new(control: mpsc::Sender<Control>, options: StoreOptions) -> Self {
        Store {
            control,
            session: Arc::new(Mutex::new(Session::default())),
            options,
        }
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        // Nothing panics while holding the lock with the session half-updated.
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One attempt through the node's loop; `None` if the node stopped.
    async fn call(&self, request: StoreRequest) -> Option<StoreResult> {
        let (tx, rx) = oneshot::channel();
        self.control.send(Control::Store(request, tx)).await.ok()?;
        rx.await.ok()
    }

    async fn pause(&self) {
        tokio::time::sleep(self.options.retry_pause).await;
    }

    async fn client(&self, deadline: tokio::time::Instant) -> Result<ClientId, StoreError> {
        if let Some(c) = self.session().client {
            return Ok(c);
        }
        loop {
            match self.call(StoreRequest::Register).await {
                Some(Ok(StoreAnswer::Registered(c))) => {
                    let mut s = self.session();
                    // Two writes may have registered at once: keep the first.
                    let c = *s.client.get_or_insert(c);
                    if s.next_seq == 0 {
                        s.next_seq = 1;
                    }
                    return Ok(c);
                }
                Some(Err(StoreError::NoPrimary | StoreError::MaybeCommitted))
                    if tokio::time::Instant::now() < deadline =>
                {
                    self.pause().await
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(other)) => {
                    return Err(StoreError::Invalid(format!(
                        "unexpected answer to a registration: {other:?}"
                    )))
                }
                None => return Err(StoreError::NoPrimary),
            }
        }
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        op.check_limits()?;
        let deadline = tokio::time::Instant::now() + self.options.retry_for;
        let client = self.client(deadline).await?;
        let seq = {
            let mut s = self.session();
            let seq = s.next_seq;
            s.next_seq += 1;
            s.in_flight.insert(seq);
            seq
        };
        let mut maybe = false;
        let result = loop {
            let acked_below = self.session().acked_below();
            let write = Write {
                client,
                seq,
                acked_below,
                op: op.clone(),
            };
            match self.call(StoreRequest::Write(write)).await {
                Some(Ok(StoreAnswer::Written(o))) => break Ok(o),
                Some(Err(e @ (StoreError::NoPrimary | StoreError::MaybeCommitted))) => {
                    maybe |= e == StoreError::MaybeCommitted;
                    if tokio::time::Instant::now() >= deadline {
                        break Err(if maybe { StoreError::MaybeCommitted } else { e });
                    }
                    // The same client and number: applied at most once.
                    self.pause().await;
                }
                Some(Err(StoreError::SessionExpired)) => {
                    let mut s = self.session();
                    if s.client == Some(client) {
                        *s = Session::default();
                    }
                    break Err(StoreError::SessionExpired);
                }
                // After an attempt that may have committed, any later refusal
                // still leaves the write's outcome unknown (FINDINGS #17).
                Some(Err(e)) => break Err(if maybe { StoreError::MaybeCommitted } else { e }),
                Some(Ok(other)) => {
                    break Err(StoreError::Invalid(format!(
                        "unexpected answer to a write: {other:?}"
                    )))
                }
                None => break Err(StoreError::MaybeCommitted),
            }
        };
        self.session().in_flight.remove(&seq);
        match result? {
            WriteOutcome::Full => Err(StoreError::Full),
            o => Ok(o),
        }
    }

    async fn read(&self, read: Read, consistency: Consistency) -> Result<ReadAnswer, StoreError> {
        let deadline = tokio::time::Instant::now() + self.options.retry_for;
        loop {
            let request = StoreRequest::Read {
                read: read.clone(),
                consistency,
            };
            match self.call(request).await {
                Some(Ok(StoreAnswer::Read { answer, .. })) => return Ok(answer),
                Some(Err(StoreError::NoPrimary))
                    if !matches!(consistency, Consistency::Local { .. })
                        && tokio::time::Instant::now() < deadline =>
                {
                    self.pause().await
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(other)) => {
                    return Err(StoreError::Invalid(format!(
                        "unexpected answer to a read: {other:?}"
                    )))
                }
                None => return Err(StoreError::NoPrimary),
            }
        }
    }

    /// Sets `key` to `value`; returns the write's revision once it committed.
    pub async fn put(
        &self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Revision, StoreError> {
        let op = WriteOp::Put {
            key: key.into(),
            value: value.into(),
        };
        match self.write(op).await? {
            WriteOutcome::Put { revision } => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    /// Removes `key`; returns the write's revision and whether the key existed.
    pub async fn delete(&self, key: impl Into<String>) -> Result<(Revision, bool), StoreError> {
        match self.write(WriteOp::Delete { key: key.into() }).await? {
            WriteOutcome::Deleted { revision, existed } => Ok((revision, existed)),
            other => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `value` if the key's revision is `expected` (0: if it is
    /// absent).
    pub async fn compare_and_swap(
        &self,
        key: impl Into<String>,
        expected: Revision,
        value: impl Into<Vec<u8>>,
    ) -> Result<CasOutcome, StoreError> {
        let op = WriteOp::CompareAndSwap {
            key: key.into(),
            expected,
            value: value.into(),
        };
        match self.write(op).await? {
            WriteOutcome::Swapped { revision } => Ok(CasOutcome::Swapped(revision)),
            WriteOutcome::Mismatch { current } => Ok(CasOutcome::Mismatch { current }),
            other => Err(unexpected(other)),
        }
    }

    /// The value of `key` (with the revisions that wrote it), or `None`.
    pub async fn get(
        &self,
        key: impl Into<String>,
        consistency: Consistency,
    ) -> Result<Option<Versioned>, StoreError> {
        match self
            .read(Read::Get { key: key.into() }, consistency)
            .await?
        {
            ReadAnswer::Get(v) => Ok(v),
            other => Err(StoreError::Invalid(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Watches the changes to keys starting with `prefix`, in revision order, from
    /// revision `from` (0: from the next change). The changes are those this member
    /// applies (a follower's may trail the primary's by a heartbeat); each is
    /// delivered once, none is skipped. If changes from `from` on are no longer kept
    /// (only the last [`WATCH_HISTORY`](cluster_mode_core::store::WATCH_HISTORY)
    /// are, and none from before a snapshot this member installed), the watch yields
    /// [`StoreError::Compacted`] and ends: re-read with [`range`](Self::range) and
    /// watch from the read's revision.
    pub async fn watch(
        &self,
        prefix: impl Into<String>,
        from: Revision,
    ) -> Result<Watch, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.control
            .send(Control::Watch(prefix.into(), from, tx))
            .await
            .map_err(|_| StoreError::NoPrimary)?;
        Ok(Watch { rx })
    }

    /// Every key starting with `prefix`, in key order, read at one revision.
    ///
    /// One answer holds at most [`MAX_RANGE_ANSWER_BYTES`] of keys and values (it
    /// travels in one message when the read is forwarded); a prefix that holds more
    /// is refused with [`StoreError::TooLarge`] (`Oversized::Range`): read narrower
    /// prefixes.
    pub async fn range(
        &self,
        prefix: impl Into<String>,
        consistency: Consistency,
    ) -> Result<Vec<(String, Versioned)>, StoreError> {
        let read = Read::Range {
            prefix: prefix.into(),
            limit: u32::MAX,
        };
        match self.read(read, consistency).await? {
            ReadAnswer::Range {
                entries,
                more: false,
            } => Ok(entries),
            ReadAnswer::Range { entries, .. } => Err(StoreError::TooLarge {
                what: Oversized::Range,
                len: entries.iter().map(|(k, v)| k.len() + v.value.len()).sum(),
                max: MAX_RANGE_ANSWER_BYTES,
            }),
            other => Err(StoreError::Invalid(format!("unexpected answer: {other:?}"))),
        }
    }
}

/// A stream of the store's changes ([`Store::watch`]).
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::UnboundedReceiver<crate::driver::WatchItem>,
}

impl Watch {
    /// The next change; an error ends the watch; `None` once the node stopped.
    pub async fn next(&mut self) -> Option<Result<DataChange, StoreError>> {
        self.rx.recv().await
    }
}

fn unexpected(o: WriteOutcome) -> StoreError {
    StoreError::Invalid(format!("unexpected outcome for this write: {o:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (client, sequence) of each write attempt the loop received.
    type Attempts = Arc<Mutex<Vec<(u64, u64)>>>;

    /// A loop that answers each request with the next scripted answer, and records
    /// the writes' attempts.
    fn scripted(answers: Vec<StoreResult>) -> (Store, Attempts) {
        let (tx, mut rx) = mpsc::channel(8);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            while let Some(Control::Store(request, reply)) = rx.recv().await {
                if let StoreRequest::Write(w) = &request {
                    log.lock().unwrap().push((w.client.0, w.seq));
                }
                let Some(a) = answers.next() else { return };
                let _ = reply.send(a);
            }
        });
        let options = StoreOptions {
            retry_for: Duration::from_secs(5),
            retry_pause: Duration::from_millis(1),
        };
        (Store::new(tx, options), seen)
    }

    /// FINDINGS #17: once an attempt may have committed, a later refusal of the same
    /// write does not make it "not committed": the application must not re-issue it
    /// as a new write.
    #[tokio::test]
    async fn a_write_that_may_have_committed_stays_maybe_committed_whatever_the_retry_hears() {
        let registered = Ok(StoreAnswer::Registered(ClientId(7)));
        let not_member = Err(StoreError::NotCommitted(
            "the sender is not a member".into(),
        ));
        let (store, seen) = scripted(vec![
            registered.clone(),
            Err(StoreError::MaybeCommitted),
            Err(StoreError::NoPrimary),
            not_member.clone(),
        ]);
        assert_eq!(store.put("k", "v").await, Err(StoreError::MaybeCommitted));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(7, 1); 3],
            "every attempt is the same numbered write"
        );
        // Without an earlier "maybe", a refusal is reported as it is.
        let (store, _) = scripted(vec![registered, Err(StoreError::NoPrimary), not_member]);
        assert!(matches!(
            store.put("k", "v").await,
            Err(StoreError::NotCommitted(_))
        ));
    }
}
