//! Push streams of snapshots.

use tokio::sync::watch;

use crate::DiscoveryResult;

/// The sending half of a snapshot stream, for push sources (also usable by a simulated
/// discovery registry in tests).
///
/// It keeps the latest [`DiscoveryResult`]; publishing a value equal to the current one
/// wakes nobody.
#[derive(Debug, Clone)]
pub struct SnapshotSender {
    tx: watch::Sender<Option<DiscoveryResult>>,
}

impl SnapshotSender {
    /// A sender with no value yet.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(None),
        }
    }

    /// Publishes `result` if it differs from the current value. Returns whether it did.
    pub fn publish(&self, result: DiscoveryResult) -> bool {
        self.tx.send_if_modified(|current| {
            if current.as_ref() == Some(&result) {
                false
            } else {
                *current = Some(result);
                true
            }
        })
    }

    /// The latest published value, if any.
    pub fn latest(&self) -> Option<DiscoveryResult> {
        self.tx.borrow().clone()
    }

    /// A new stream that first yields the latest value (if any), then every change.
    pub fn subscribe(&self) -> SnapshotStream {
        SnapshotStream {
            rx: self.tx.subscribe(),
            fresh: true,
        }
    }
}

impl Default for SnapshotSender {
    fn default() -> Self {
        Self::new()
    }
}

/// A stream of complete snapshots pushed by a source (see [`crate::Discovery::watch`]).
///
/// It holds the latest value only: a slow reader skips intermediate snapshots but always
/// gets the newest. Errors are delivered as `Some(Err(..))` (never as an empty list);
/// `None` means the source has stopped.
#[derive(Debug)]
pub struct SnapshotStream {
    rx: watch::Receiver<Option<DiscoveryResult>>,
    fresh: bool,
}

impl SnapshotStream {
    /// Waits for the next snapshot or error. The first call returns the current value at
    /// once if the source already has one. Returns `None` when the source has stopped.
    pub async fn next(&mut self) -> Option<DiscoveryResult> {
        if std::mem::take(&mut self.fresh) {
            if let Some(value) = self.rx.borrow_and_update().clone() {
                return Some(value);
            }
        }
        loop {
            if self.rx.changed().await.is_err() {
                return None;
            }
            if let Some(value) = self.rx.borrow_and_update().clone() {
                return Some(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{DiscoveryError, Instance};

    fn one(addr: &str) -> DiscoveryResult {
        Ok(vec![Instance::new(addr.parse::<SocketAddr>().unwrap())])
    }

    #[tokio::test]
    async fn first_value_then_changes_and_close() {
        let tx = SnapshotSender::new();
        let mut early = tx.subscribe();
        assert!(tx.publish(one("10.0.0.1:1")));
        assert!(
            !tx.publish(one("10.0.0.1:1")),
            "an equal value is not republished"
        );
        let mut late = tx.subscribe();
        assert_eq!(late.next().await, Some(one("10.0.0.1:1")));
        assert_eq!(early.next().await, Some(one("10.0.0.1:1")));
        let err = Err(DiscoveryError::Closed);
        assert!(tx.publish(err.clone()));
        assert_eq!(late.next().await, Some(err.clone()));
        assert_eq!(tx.latest(), Some(err));
        drop(tx);
        assert_eq!(late.next().await, None);
        assert_eq!(early.next().await, Some(Err(DiscoveryError::Closed)));
        assert_eq!(early.next().await, None);
    }
}
