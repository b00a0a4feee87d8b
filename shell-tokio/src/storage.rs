//! Where the driving loop keeps a durable node's state: a [`DataDir`] on a real
//! disk, or (feature `sim`) a [`MemoryDisk`] that a simulator keeps across the
//! simulated restarts of a node, touching no file.

use crate::data_dir::{DataDir, DataDirError};
use cluster_mode_core::DurableState;
use std::path::PathBuf;

/// A durable node's storage, owned by its loop.
#[derive(Debug)]
pub(crate) enum Storage {
    /// A data directory (locked while the node runs).
    Dir(DataDir),
    /// A simulator's in-memory disk.
    #[cfg(feature = "sim")]
    Memory(MemoryDisk),
}

impl Storage {
    /// The state last stored, if any; see [`DataDir::load`].
    pub(crate) fn load(&self) -> Result<Option<DurableState>, DataDirError> {
        match self {
            Storage::Dir(d) => d.load(),
            #[cfg(feature = "sim")]
            Storage::Memory(m) => m.load(),
        }
    }

    /// Stores `state` durably; see [`DataDir::store`].
    pub(crate) fn store(&self, state: &DurableState) -> Result<(), DataDirError> {
        match self {
            Storage::Dir(d) => d.store(state),
            #[cfg(feature = "sim")]
            Storage::Memory(m) => m.store(state),
        }
    }

    /// The directory, for errors.
    /// Appends entries to the stored state's log (`Command::PersistAppend`).
    pub(crate) fn append(
        &self,
        state_id: cluster_mode_core::NodeId,
        entries: &[cluster_mode_core::Entry],
    ) -> Result<(), DataDirError> {
        match self {
            Storage::Dir(d) => d.append(state_id, entries),
            #[cfg(feature = "sim")]
            Storage::Memory(m) => m.append(entries),
        }
    }

    pub(crate) fn dir(&self) -> PathBuf {
        match self {
            Storage::Dir(d) => d.path().to_path_buf(),
            #[cfg(feature = "sim")]
            Storage::Memory(_) => PathBuf::from(MemoryDisk::PATH),
        }
    }

    /// The file written, for log lines and errors.
    pub(crate) fn describe(&self) -> PathBuf {
        match self {
            Storage::Dir(d) => d.state_path().to_path_buf(),
            #[cfg(feature = "sim")]
            Storage::Memory(_) => PathBuf::from(MemoryDisk::PATH),
        }
    }
}

#[cfg(feature = "sim")]
pub use memory::MemoryDisk;

#[cfg(feature = "sim")]
mod memory {
    use crate::data_dir::{decode, encode, DataDirError};
    use cluster_mode_core::DurableState;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex, MutexGuard};

    /// A simulated node's disk (feature `sim`): holds the bytes of its state file, in
    /// the data directory's format, and outlives the node's process. Give a clone to
    /// each life of the node with `ClusterBuilder::memory_disk`. Cheap to clone; the
    /// clones share one disk.
    #[derive(Clone, Debug, Default)]
    pub struct MemoryDisk {
        inner: Arc<Mutex<Disk>>,
    }

    #[derive(Debug, Default)]
    struct Disk {
        file: Option<Vec<u8>>,
        /// Entries appended since the file was written.
        appended: Vec<cluster_mode_core::Entry>,
        fail_writes: bool,
    }

    impl MemoryDisk {
        /// The name it goes by in errors and logs.
        pub(crate) const PATH: &'static str = "<memory disk>";

        /// An empty disk: the node starting on it is a new node.
        pub fn new() -> Self {
            Self::default()
        }

        /// The state last stored, if any and if it decodes.
        pub fn state(&self) -> Option<DurableState> {
            let g = self.lock();
            let (mut state, _) = g.file.as_deref().and_then(|b| decode(b).ok())?;
            state.entries.extend(g.appended.iter().cloned());
            Some(state)
        }

        /// Makes every later write fail (`true`) or succeed again (`false`), to test a
        /// node that cannot persist.
        pub fn fail_writes(&self, fail: bool) {
            self.lock().fail_writes = fail;
        }

        /// Overwrites the stored bytes (`None`: no state file), to test damage.
        pub fn set_bytes(&self, bytes: Option<Vec<u8>>) {
            let mut g = self.lock();
            g.file = bytes;
            g.appended.clear();
        }

        pub(crate) fn load(&self) -> Result<Option<DurableState>, DataDirError> {
            let g = self.lock();
            let Some(bytes) = g.file.as_deref() else {
                return Ok(None);
            };
            let (mut state, _) = decode(bytes).map_err(|reason| DataDirError::Damaged {
                dir: PathBuf::from(Self::PATH),
                file: PathBuf::from(Self::PATH),
                reason,
            })?;
            state.entries.extend(g.appended.iter().cloned());
            Ok(Some(state))
        }

        pub(crate) fn append(
            &self,
            entries: &[cluster_mode_core::Entry],
        ) -> Result<(), DataDirError> {
            let mut g = self.lock();
            if g.fail_writes {
                return Err(DataDirError::Io {
                    op: "append to",
                    path: PathBuf::from(Self::PATH),
                    source: std::io::Error::other("simulated write failure"),
                });
            }
            g.appended.extend_from_slice(entries);
            Ok(())
        }

        pub(crate) fn store(&self, state: &DurableState) -> Result<(), DataDirError> {
            let mut g = self.lock();
            if g.fail_writes {
                return Err(DataDirError::Io {
                    op: "write",
                    path: PathBuf::from(Self::PATH),
                    source: std::io::Error::other("simulated write failure"),
                });
            }
            g.file = Some(encode(state, 1));
            g.appended.clear();
            Ok(())
        }

        fn lock(&self) -> MutexGuard<'_, Disk> {
            // Plain data: a panic while holding the lock cannot leave it half-written.
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}
