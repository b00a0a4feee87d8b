//! The recorded history: operations, their outcomes and their real-time intervals.

use std::fmt;

/// A key of the store: a byte string.
pub type Key = Vec<u8>;
/// A value of the store: a byte string.
pub type Value = Vec<u8>;

/// What a client asked the store to do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key written.
        key: Key,
        /// The value written.
        value: Value,
    },
    /// Remove `key` (a committed write even when the key is absent).
    Delete {
        /// The key removed.
        key: Key,
    },
    /// Set `key` to `value` if its current revision is `expected_revision`
    /// (0: only if the key is absent).
    CompareAndSwap {
        /// The key written.
        key: Key,
        /// The revision the key must have (0: the key must be absent).
        expected_revision: u64,
        /// The value written when the comparison holds.
        value: Value,
    },
    /// Read `key`.
    Get {
        /// The key read.
        key: Key,
    },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. }
            | Op::Delete { key }
            | Op::CompareAndSwap { key, .. }
            | Op::Get { key } => key,
        }
    }

    /// Whether the operation may change the store (everything but [`Op::Get`]).
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }
}

/// What the client learnt about its operation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A [`Op::Put`] committed at `revision`.
    Put {
        /// The log index at which the write committed.
        revision: u64,
    },
    /// A [`Op::Delete`] committed at `revision`.
    Deleted {
        /// The log index at which the write committed.
        revision: u64,
        /// Whether the key was present just before.
        existed: bool,
    },
    /// A [`Op::CompareAndSwap`] whose comparison held, committed at `revision`.
    Swapped {
        /// The log index at which the write committed.
        revision: u64,
    },
    /// A [`Op::CompareAndSwap`] whose comparison failed; nothing was written.
    Mismatch {
        /// The key's revision at that moment (0: the key was absent).
        current_revision: u64,
    },
    /// A [`Op::Get`] that found the key.
    Found {
        /// The value read.
        value: Value,
        /// The revision of the write that set it.
        mod_revision: u64,
    },
    /// A [`Op::Get`] that found no key.
    Absent,
    /// The client does not know whether the operation took effect (a timeout, a
    /// "maybe committed" error). It may have taken effect at any instant after its
    /// invocation, even after the recorded return, or never. The recorded return time
    /// is ignored. A read with this outcome constrains nothing and is left out.
    Unknown,
    /// The operation certainly did not take effect ("not committed"). The checker
    /// leaves it out.
    Failed,
}

impl Outcome {
    /// Whether the outcome is definite: neither [`Outcome::Unknown`] nor
    /// [`Outcome::Failed`].
    pub fn is_definite(&self) -> bool {
        !matches!(self, Outcome::Unknown | Outcome::Failed)
    }
}

/// One client operation with its real-time interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it (a label for the reader: the checker does not assume
    /// that one client's operations are sequential).
    pub client: u64,
    /// When the client invoked it (nanoseconds of simulated time).
    pub invoke: u64,
    /// When the client got the outcome (`>= invoke`; ignored for
    /// [`Outcome::Unknown`]).
    pub ret: u64,
    /// What was asked.
    pub op: Op,
    /// What came back.
    pub outcome: Outcome,
}

impl Operation {
    /// The revision this operation certainly wrote at, if it is a write with a
    /// definite outcome that committed.
    pub fn written_revision(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Put { revision }
            | Outcome::Deleted { revision, .. }
            | Outcome::Swapped { revision } => Some(revision),
            _ => None,
        }
    }

    /// The highest revision this operation proves it came after or at: its own
    /// revision for a committed write, the revision it observed for a read or a
    /// mismatched compare-and-swap, 0 otherwise.
    pub fn observed_revision(&self) -> u64 {
        match self.outcome {
            Outcome::Put { revision }
            | Outcome::Deleted { revision, .. }
            | Outcome::Swapped { revision } => revision,
            Outcome::Found { mod_revision, .. } => mod_revision,
            Outcome::Mismatch { current_revision } => current_revision,
            Outcome::Absent | Outcome::Unknown | Outcome::Failed => 0,
        }
    }

    /// The return time the checker uses: `u64::MAX` (never returned) for an
    /// [`Outcome::Unknown`] outcome, the recorded return otherwise.
    pub fn effective_return(&self) -> u64 {
        if self.outcome == Outcome::Unknown {
            u64::MAX
        } else {
            self.ret
        }
    }

    /// Why the operation is not well formed, if it is not: an outcome of another
    /// operation kind, a return before the invocation, a zero revision.
    pub fn malformed(&self) -> Option<String> {
        if self.outcome.is_definite() && self.ret < self.invoke {
            return Some(format!(
                "returns at {} before its invocation at {}",
                self.ret, self.invoke
            ));
        }
        let fits = matches!(
            (&self.op, &self.outcome),
            (_, Outcome::Unknown | Outcome::Failed)
                | (Op::Put { .. }, Outcome::Put { .. })
                | (Op::Delete { .. }, Outcome::Deleted { .. })
                | (
                    Op::CompareAndSwap { .. },
                    Outcome::Swapped { .. } | Outcome::Mismatch { .. }
                )
                | (Op::Get { .. }, Outcome::Found { .. } | Outcome::Absent)
        );
        if !fits {
            return Some("the outcome belongs to another kind of operation".to_string());
        }
        if self.written_revision() == Some(0) {
            return Some("a committed write at revision 0".to_string());
        }
        if let Outcome::Found {
            mod_revision: 0, ..
        } = self.outcome
        {
            return Some("a read found a value at revision 0".to_string());
        }
        None
    }
}

/// A recorded history: every operation of every client, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The operations. Their order here does not matter to the checker; a
    /// [`crate::Violation`] names them by their index in this vector.
    pub operations: Vec<Operation>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an operation and returns its index.
    pub fn push(&mut self, client: u64, invoke: u64, ret: u64, op: Op, outcome: Outcome) -> usize {
        self.operations.push(Operation {
            client,
            invoke,
            ret,
            op,
            outcome,
        });
        self.operations.len() - 1
    }
}

/// Shows a byte string as text when it is printable ASCII, as hex otherwise.
pub(crate) struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self
            .0
            .iter()
            .all(|b| (0x20..0x7f).contains(b) && *b != b'"')
        {
            write!(f, "\"{}\"", String::from_utf8_lossy(self.0))
        } else {
            write!(f, "0x")?;
            for b in self.0 {
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, value } => write!(f, "put {} = {}", Bytes(key), Bytes(value)),
            Op::Delete { key } => write!(f, "delete {}", Bytes(key)),
            Op::CompareAndSwap {
                key,
                expected_revision,
                value,
            } => write!(
                f,
                "cas {} if rev {} = {}",
                Bytes(key),
                expected_revision,
                Bytes(value)
            ),
            Op::Get { key } => write!(f, "get {}", Bytes(key)),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Put { revision } | Outcome::Swapped { revision } => {
                write!(f, "ok rev {revision}")
            }
            Outcome::Deleted { revision, existed } => write!(
                f,
                "ok rev {revision} ({})",
                if *existed { "existed" } else { "was absent" }
            ),
            Outcome::Mismatch { current_revision } => {
                write!(f, "mismatch, current rev {current_revision}")
            }
            Outcome::Found {
                value,
                mod_revision,
            } => write!(f, "found {} rev {mod_revision}", Bytes(value)),
            Outcome::Absent => write!(f, "absent"),
            Outcome::Unknown => write!(f, "unknown (maybe applied)"),
            Outcome::Failed => write!(f, "failed (not applied)"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ret = if self.outcome == Outcome::Unknown {
            "inf".to_string()
        } else {
            self.ret.to_string()
        };
        write!(
            f,
            "client {:<4} [{}, {}]  {}  -> {}",
            self.client, self.invoke, ret, self.op, self.outcome
        )
    }
}
