//! The data directory: where a node keeps its [`DurableState`] (id, term, vote, log)
//! across restarts, so that a process restarted in place is the same member (P1).
//!
//! One directory per node, holding:
//!
//! - `state`: the last full state written, as one file: an 8-byte magic, a 2-byte
//!   format version, the node id (16 bytes), the file's generation (8 bytes), the
//!   payload length (4 bytes), the CRC-32 of the payload (4 bytes), then the payload,
//!   the postcard-encoded `DurableState` (integers little-endian). The checksum
//!   covers the generation and the payload; the id in the header is checked against
//!   the payload's.
//! - `log`: the entries appended since (`Command::PersistAppend`, one record per
//!   append: length, CRC-32, postcard-encoded entries), after a header that names the
//!   node and the generation of the `state` it extends. Each append is fsynced
//!   (`fdatasync`) before the node acts on it. A full store writes `state` with the
//!   next generation and then starts `log` afresh: a crash between the two leaves a
//!   `log` of the old generation, which is ignored. A record cut short by a crash (or
//!   that fails its checksum) ends the log: it was never acknowledged, and the file is
//!   truncated there before anything is appended again.
//! - `state.tmp`: a write in progress. A store writes it, fsyncs it, renames it over
//!   `state` and fsyncs the directory, so after a crash `state` is either the old
//!   state or the new one, never a mix.
//! - `lock`: locked (`flock`, exclusive) by the process using the directory, for as
//!   long as it runs; it holds that process's pid, for humans. The kernel drops the
//!   lock when the process ends, however it ends, so a killed process never leaves
//!   a stale lock behind; a second live process is refused.
//!
//! A missing `state` is a new node. A `state` that cannot be read back exactly is an
//! error, never a fresh start: a node that forgot its vote could vote twice in a term.

use cluster_mode_core::{DurableState, NodeId};
use fs4::FileExt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The first bytes of a state file.
const MAGIC: [u8; 8] = *b"CLMODEST";
/// The format this build writes and reads. Version 2 (0.5) added the role table to
/// the configuration (P13); version 3 the key-value store (P14) and the appended
/// `log`. Files of versions 1 and 2 are refused with a message that says so.
const VERSION: u16 = 3;
/// Magic, version, node id, generation, payload length, CRC-32.
const HEADER: usize = 8 + 2 + 16 + 8 + 4 + 4;
/// The first bytes of the log file.
const LOG_MAGIC: [u8; 8] = *b"CLMODELG";
/// Log magic, version, node id, generation.
const LOG_HEADER: usize = 8 + 2 + 16 + 8;
/// The appended log's name in the directory.
const LOG: &str = "log";
/// The state file's name in the directory.
const STATE: &str = "state";
/// The write in progress.
const STATE_TMP: &str = "state.tmp";
/// The lock file's name in the directory.
const LOCK: &str = "lock";

/// Why a data directory could not be opened, read or written.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataDirError {
    /// A file operation failed. Nothing was changed by it.
    Io {
        /// What was being done ("create", "read", "write", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The state file exists but cannot be trusted (truncated, wrong magic, unknown
    /// version, bad checksum, undecodable, or inconsistent). Nothing was started.
    Damaged {
        /// The data directory.
        dir: PathBuf,
        /// The damaged file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another live process holds the directory's lock. Nothing was started.
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The pid the lock file names, if it is readable.
        pid: Option<u32>,
    },
}

impl std::fmt::Display for DataDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataDirError::Io { op, path, source } => {
                write!(f, "cannot {op} {}: {source}", path.display())
            }
            DataDirError::Damaged { dir, file, reason } => write!(
                f,
                "the data directory {} is damaged ({}: {reason}); move it away to start \
                 this node as a new member, or restore it from a backup",
                dir.display(),
                file.display()
            ),
            DataDirError::InUse { dir, pid } => {
                write!(f, "the data directory {} is in use by ", dir.display())?;
                match pid {
                    Some(p) => write!(f, "process {p}")?,
                    None => write!(f, "another process")?,
                }
                write!(f, "; two processes must never share one")
            }
        }
    }
}

impl std::error::Error for DataDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataDirError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A node's data directory, opened and locked for this process's use. The lock is
/// released when the `DataDir` is dropped (or the process ends).
#[derive(Debug)]
pub struct DataDir {
    dir: PathBuf,
    state: PathBuf,
    tmp: PathBuf,
    log: PathBuf,
    /// The generation of the last `state` loaded or stored (0: none yet), and the log
    /// file open for appends, if it is.
    current: std::sync::Mutex<(u64, Option<File>)>,
    /// Holds the `flock`; never read.
    _lock: File,
}

impl DataDir {
    /// Opens `dir`, creating it if needed, and locks it. Fails with
    /// [`DataDirError::InUse`] if another process has it open.
    pub fn open(dir: impl Into<PathBuf>) -> Result<DataDir, DataDirError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let lock_path = dir.join(LOCK);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        // Called through the trait: std's own `File::try_lock` (Rust 1.89) would
        // shadow it, and the MSRV is older.
        match FileExt::try_lock(&lock) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = lock.read_to_string(&mut text);
                return Err(DataDirError::InUse {
                    dir,
                    pid: text.trim().parse().ok(),
                });
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        // The pid is for humans only: the lock is the flock, not the file's content.
        let _ = lock
            .set_len(0)
            .and_then(|()| writeln!(lock, "{}", std::process::id()));
        Ok(DataDir {
            state: dir.join(STATE),
            tmp: dir.join(STATE_TMP),
            log: dir.join(LOG),
            current: std::sync::Mutex::new((0, None)),
            dir,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The state file (`<dir>/state`).
    pub fn state_path(&self) -> &Path {
        &self.state
    }

    /// The state last stored, or `None` if none ever was (a new node). A state file
    /// that is present but cannot be read back exactly is [`DataDirError::Damaged`].
    pub fn load(&self) -> Result<Option<DurableState>, DataDirError> {
        let bytes = match std::fs::read(&self.state) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &self.state)(e)),
        };
        let damaged = |file: &Path, reason: String| DataDirError::Damaged {
            dir: self.dir.clone(),
            file: file.to_path_buf(),
            reason,
        };
        let (mut state, generation) = decode(&bytes).map_err(|r| damaged(&self.state, r))?;
        let log = match std::fs::read(&self.log) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", &self.log)(e)),
        };
        let valid = replay_log(&log, &mut state, generation);
        if valid < log.len() {
            // A record cut short by a crash: never acknowledged; cut it off so that
            // later appends follow the last whole record.
            let f = OpenOptions::new()
                .write(true)
                .open(&self.log)
                .map_err(io_err("open", &self.log))?;
            f.set_len(valid as u64)
                .map_err(io_err("truncate", &self.log))?;
            f.sync_all().map_err(io_err("fsync", &self.log))?;
        }
        state.validate(state.id).map_err(|e| {
            damaged(
                &self.log,
                format!("inconsistent after the log: {}", e.reason),
            )
        })?;
        *self.lock_current() = (generation, None);
        Ok(Some(state))
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, (u64, Option<File>)> {
        // Plain data: a panic while holding the lock cannot leave it inconsistent.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `entries` to the stored state's log, crash-safely: when this returns
    /// `Ok`, they survive a crash or power loss (`fdatasync`). The state must have
    /// been stored (or loaded) by this process before.
    pub fn append(
        &self,
        id: NodeId,
        entries: &[cluster_mode_core::Entry],
    ) -> Result<(), DataDirError> {
        let mut current = self.lock_current();
        let generation = current.0;
        if current.1.is_none() {
            let f = if generation == 0 {
                return Err(DataDirError::Io {
                    op: "append to",
                    path: self.log.clone(),
                    source: io::Error::other("no state was stored before the append"),
                });
            } else if std::fs::metadata(&self.log).is_ok_and(|m| m.len() >= LOG_HEADER as u64) {
                OpenOptions::new()
                    .append(true)
                    .open(&self.log)
                    .map_err(io_err("open", &self.log))?
            } else {
                self.fresh_log(id, generation)?
            };
            current.1 = Some(f);
        }
        let payload = postcard::to_allocvec(entries).unwrap_or_default();
        let mut record = Vec::with_capacity(8 + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let f = current.1.as_mut().expect("opened above");
        f.write_all(&record).map_err(io_err("write", &self.log))?;
        f.sync_data().map_err(io_err("fsync", &self.log))
    }

    /// Starts the log afresh for `generation`: its header only, fsynced.
    fn fresh_log(&self, id: NodeId, generation: u64) -> Result<File, DataDirError> {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.log)
            .map_err(io_err("create", &self.log))?;
        let mut header = Vec::with_capacity(LOG_HEADER);
        header.extend_from_slice(&LOG_MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&id.0.to_le_bytes());
        header.extend_from_slice(&generation.to_le_bytes());
        f.write_all(&header).map_err(io_err("write", &self.log))?;
        f.sync_all().map_err(io_err("fsync", &self.log))?;
        Ok(f)
    }

    /// Replaces the stored state with `state`, crash-safely: write `state.tmp`, fsync
    /// it, rename it over `state`, fsync the directory. When this returns `Ok`, the
    /// state survives a crash or power loss; on error the old state is still in place
    /// (or, if the directory fsync failed, either the old or the new one).
    ///
    /// The `log` of appended entries starts afresh after it.
    pub fn store(&self, state: &DurableState) -> Result<(), DataDirError> {
        let mut current = self.lock_current();
        let generation = current.0 + 1;
        let bytes = encode(state, generation);
        let mut f = File::create(&self.tmp).map_err(io_err("create", &self.tmp))?;
        f.write_all(&bytes).map_err(io_err("write", &self.tmp))?;
        f.sync_all().map_err(io_err("fsync", &self.tmp))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.state).map_err(io_err("rename to", &self.state))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &self.dir))?;
        // From here the old log (of the previous generation) is ignored even if the
        // next step does not happen.
        *current = (generation, None);
        let log = self.fresh_log(state.id, generation)?;
        current.1 = Some(log);
        Ok(())
    }
}

/// Applies the log's whole records for `generation` to `state`; returns how many
/// bytes of `log` are valid (a header of another generation or node: none of it).
pub(crate) fn replay_log(log: &[u8], state: &mut DurableState, generation: u64) -> usize {
    if log.len() < LOG_HEADER {
        return 0;
    }
    let (header, mut rest) = log.split_at(LOG_HEADER);
    let mut expected = Vec::with_capacity(LOG_HEADER);
    expected.extend_from_slice(&LOG_MAGIC);
    expected.extend_from_slice(&VERSION.to_le_bytes());
    expected.extend_from_slice(&state.id.0.to_le_bytes());
    expected.extend_from_slice(&generation.to_le_bytes());
    if header != expected.as_slice() {
        return 0;
    }
    let mut valid = LOG_HEADER;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(8..8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(entries) = postcard::from_bytes::<Vec<cluster_mode_core::Entry>>(payload) else {
            break;
        };
        let last = state.entries.last().map_or(state.base.index, |e| e.index);
        if entries.first().is_some_and(|e| e.index != last + 1) {
            break;
        }
        state.entries.extend(entries);
        rest = &rest[8 + len..];
        valid += 8 + len;
    }
    valid
}

/// The state file's bytes for `state`, of `generation`.
pub(crate) fn encode(state: &DurableState, generation: u64) -> Vec<u8> {
    // A DurableState is plain data: postcard cannot fail on it.
    let payload = postcard::to_allocvec(state).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&state.id.0.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&state_crc(generation, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The state file's checksum: over the generation and the payload.
fn state_crc(generation: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Reads a state file's bytes back, with its generation; the error says what is
/// wrong with them.
pub(crate) fn decode(bytes: &[u8]) -> Result<(DurableState, u64), String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER}-byte header",
            bytes.len()
        ));
    }
    let (header, payload) = bytes.split_at(HEADER);
    let (magic, rest) = header.split_at(8);
    if magic != MAGIC {
        return Err("not a cluster-mode state file (wrong magic bytes)".into());
    }
    let (version, rest) = rest.split_at(2);
    let version = u16::from_le_bytes([version[0], version[1]]);
    if version == 1 {
        return Err(format!(
            "format version 1, written by cluster-mode 0.4; this build reads version {VERSION} \
             (the configuration gained named roles). Move the file away to start this member \
             afresh: it rejoins as a new member"
        ));
    }
    if version == 2 {
        return Err(format!(
            "format version 2, written before the key-value store; this build reads version \
             {VERSION}. Move the file away to start this member afresh: it rejoins as a new member"
        ));
    }
    if version != VERSION {
        return Err(format!(
            "format version {version}; this build reads version {VERSION}"
        ));
    }
    let (id, rest) = rest.split_at(16);
    let id = NodeId(u128::from_le_bytes(id.try_into().map_err(|_| "header")?));
    let (generation, rest) = rest.split_at(8);
    let generation = u64::from_le_bytes(generation.try_into().map_err(|_| "header")?);
    let (len, crc) = rest.split_at(4);
    let len = u32::from_le_bytes(len.try_into().map_err(|_| "header")?) as usize;
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| "header")?);
    if payload.len() != len {
        return Err(format!(
            "the header announces {len} payload bytes, the file holds {}",
            payload.len()
        ));
    }
    let actual = state_crc(generation, payload);
    if actual != crc {
        return Err(format!(
            "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
        ));
    }
    let state: DurableState =
        postcard::from_bytes(payload).map_err(|e| format!("undecodable payload: {e}"))?;
    state
        .validate(id)
        .map_err(|e| format!("inconsistent: {}", e.reason))?;
    Ok((state, generation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_mode_core::{
        Address, Change, ClusterId, DurableState, Entry, Member, Membership, NodeId, Snapshot,
    };

    /// A member of a 2-node cluster in term 7, with a vote and two log entries.
    fn sample(id: u128) -> DurableState {
        let mut membership = Membership::default();
        for (i, port) in [(id, 7001), (42, 7002)] {
            membership.members.insert(
                NodeId(i),
                Member {
                    addr: Address::new(format!("10.0.0.1:{port}")),
                    name: Some(format!("pod-{port}")),
                    voter: true,
                },
            );
        }
        DurableState {
            id: NodeId(id),
            cluster: Some(ClusterId::with_epoch(1, 0xabcdef)),
            term: 7,
            voted_for: Some(NodeId(42)),
            base: Snapshot {
                index: 3,
                term: 2,
                membership,
                data: Default::default(),
            },
            entries: vec![
                Entry {
                    term: 6,
                    index: 4,
                    change: Change::Noop,
                },
                Entry {
                    term: 7,
                    index: 5,
                    change: Change::AddLearner {
                        id: NodeId(77),
                        addr: Address::new("10.0.0.1:7003"),
                        name: None,
                    },
                },
            ],
        }
    }

    fn damaged_reason(e: DataDirError, dir: &Path) -> String {
        let text = e.to_string();
        match e {
            DataDirError::Damaged { file, reason, .. } => {
                assert_eq!(file, dir.join(STATE));
                assert!(
                    text.contains(&dir.join(STATE).display().to_string()),
                    "{text}"
                );
                assert!(text.contains("move it away"), "{text}");
                reason
            }
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    #[test]
    fn a_file_of_the_previous_format_is_refused_saying_so() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        let mut old = encode(&sample(3), 1);
        old[8..10].copy_from_slice(&1u16.to_le_bytes());
        std::fs::write(d.state_path(), &old).unwrap();
        let reason = damaged_reason(d.load().unwrap_err(), tmp.path());
        assert!(reason.contains("0.4"), "{reason}");
    }

    #[test]
    fn missing_file_is_a_new_node() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path().join("node")).unwrap();
        assert_eq!(d.load().unwrap(), None);
    }

    #[test]
    fn round_trip_and_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        let mut s = sample(9);
        d.store(&s).unwrap();
        assert_eq!(d.load().unwrap(), Some(s.clone()));
        s.term = 8;
        s.voted_for = None;
        d.store(&s).unwrap();
        assert_eq!(d.load().unwrap(), Some(s.clone()));
        assert!(!tmp.path().join(STATE_TMP).exists());
        drop(d);
        // Another process (here: another open) reads the same state.
        assert_eq!(DataDir::open(tmp.path()).unwrap().load().unwrap(), Some(s));
    }

    #[test]
    fn truncated_at_every_length_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        let full = encode(&sample(3), 1);
        for len in 0..full.len() {
            std::fs::write(d.state_path(), &full[..len]).unwrap();
            let reason = damaged_reason(d.load().unwrap_err(), tmp.path());
            assert!(!reason.is_empty(), "length {len}");
        }
        std::fs::write(d.state_path(), &full).unwrap();
        assert!(d.load().unwrap().is_some());
    }

    #[test]
    fn any_flipped_byte_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        let full = encode(&sample(3), 1);
        for i in 0..full.len() {
            let mut bad = full.clone();
            bad[i] ^= 0x10;
            std::fs::write(d.state_path(), &bad).unwrap();
            damaged_reason(d.load().unwrap_err(), tmp.path());
        }
        // A longer file (trailing garbage) too.
        let mut long = full.clone();
        long.push(0);
        std::fs::write(d.state_path(), &long).unwrap();
        damaged_reason(d.load().unwrap_err(), tmp.path());
    }

    #[test]
    fn wrong_node_id_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        // A consistent file (good checksum) whose header names another node than
        // the state it holds.
        let mut bytes = encode(&sample(3), 1);
        bytes[10..26].copy_from_slice(&5u128.to_le_bytes());
        std::fs::write(d.state_path(), &bytes).unwrap();
        let reason = damaged_reason(d.load().unwrap_err(), tmp.path());
        assert!(reason.contains("belongs to node"), "{reason}");
    }

    #[test]
    fn invalid_state_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        let mut s = sample(3);
        s.cluster = None; // a term and a vote without a cluster
        std::fs::write(d.state_path(), encode(&s, 1)).unwrap();
        let reason = damaged_reason(d.load().unwrap_err(), tmp.path());
        assert!(reason.contains("without a cluster"), "{reason}");
    }

    #[test]
    fn a_second_user_is_refused_until_the_first_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDir::open(tmp.path()).unwrap();
        match DataDir::open(tmp.path()) {
            Err(DataDirError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        DataDir::open(tmp.path()).unwrap();
    }

    /// The cost of one store on this machine (`--ignored --nocapture`; README).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn store_cost() {
        let tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        let s = sample(3);
        let n = 200u32;
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            d.store(&s).unwrap();
        }
        let bytes = encode(&s, 1).len();
        eprintln!("{bytes}-byte state: {:?} per store", t0.elapsed() / n);
    }

    #[test]
    fn store_into_a_vanished_directory_fails_and_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        let d = DataDir::open(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let e = d.store(&sample(3)).unwrap_err();
        assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
    }

    fn entry(index: u64) -> Entry {
        Entry {
            term: 7,
            index,
            change: Change::Noop,
        }
    }

    #[test]
    fn appended_entries_come_back_after_the_stored_state() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        let s = sample(3);
        d.store(&s).unwrap();
        d.append(s.id, &[entry(6), entry(7)]).unwrap();
        d.append(s.id, &[entry(8)]).unwrap();
        drop(d);
        let d = DataDir::open(tmp.path()).unwrap();
        let loaded = d.load().unwrap().unwrap();
        let mut expected = s.clone();
        expected.entries.extend([entry(6), entry(7), entry(8)]);
        assert_eq!(loaded, expected);
        // Appends go on after a load; a full store starts the log afresh.
        d.append(s.id, &[entry(9)]).unwrap();
        assert_eq!(d.load().unwrap().unwrap().entries.len(), 6);
        d.store(&s).unwrap();
        assert_eq!(d.load().unwrap().unwrap(), s);
    }

    #[test]
    fn a_record_cut_short_by_a_crash_ends_the_log_and_is_cut_off() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        let s = sample(3);
        d.store(&s).unwrap();
        d.append(s.id, &[entry(6)]).unwrap();
        let whole = std::fs::metadata(tmp.path().join(LOG)).unwrap().len();
        d.append(s.id, &[entry(7)]).unwrap();
        drop(d);
        let log = tmp.path().join(LOG);
        let f = OpenOptions::new().write(true).open(&log).unwrap();
        f.set_len(whole + 5).unwrap();
        drop(f);
        let d = DataDir::open(tmp.path()).unwrap();
        let loaded = d.load().unwrap().unwrap();
        assert_eq!(
            loaded.entries.last(),
            Some(&entry(6)),
            "the torn record is dropped"
        );
        assert_eq!(std::fs::metadata(&log).unwrap().len(), whole, "and cut off");
        d.append(s.id, &[entry(7)]).unwrap();
        assert_eq!(d.load().unwrap().unwrap().entries.last(), Some(&entry(7)));
    }

    #[test]
    fn a_log_of_an_older_state_is_ignored() {
        // A crash after the new state was renamed into place and before the log was
        // started afresh: the old log must not extend the new state.
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        let s = sample(3);
        d.store(&s).unwrap();
        d.append(s.id, &[entry(6)]).unwrap();
        let mut newer = s.clone();
        newer.term = 8;
        std::fs::write(d.state_path(), encode(&newer, 2)).unwrap();
        drop(d);
        let d = DataDir::open(tmp.path()).unwrap();
        assert_eq!(d.load().unwrap().unwrap(), newer);
    }

    #[test]
    fn a_state_file_written_before_the_store_is_refused_saying_so() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(tmp.path()).unwrap();
        let mut old = encode(&sample(3), 1);
        old[8..10].copy_from_slice(&2u16.to_le_bytes());
        std::fs::write(d.state_path(), &old).unwrap();
        let reason = damaged_reason(d.load().unwrap_err(), tmp.path());
        assert!(reason.contains("before the key-value store"), "{reason}");
    }
}
