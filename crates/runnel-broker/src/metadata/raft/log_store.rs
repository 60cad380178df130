//! The durable half of the metadata log (docs/cluster.md, "The metadata quorum"): the Raft
//! `vote`, the `log` of entries since the last snapshot, and the `committed` hint, all in
//! `<data.dir>/__cluster_metadata/`. openraft's [`RaftLogStorage`] over plain files.
//!
//! `log` is append-only, one record per entry: `[u32 length][u32 crc32c][JSON record]`
//! (big-endian; the CRC covers the JSON). A record is an entry, or — first in the file after a
//! purge — the id of the last purged entry. An append is fsynced before openraft hears it is
//! durable; a torn or corrupt tail (a crash mid-append) is cut off at open. A purge rewrites the
//! file atomically (write, fsync, rename, fsync the directory).
//!
//! Every entry of the file is also held in memory (the log stays small: it is purged behind
//! every snapshot), so readers never touch the disk. File I/O runs on the blocking pool, never
//! on an async worker; openraft serialises the writes (`&mut self`).
//!
//! A full disk: every write that must be durable (an append, a truncation, the purge rewrite,
//! the vote) leaves nothing behind when it fails, and one that fails for lack of space is
//! retried in space taken from the [`Reserve`] (see `reserve.rs`; the snapshot shares it): a
//! storage error stops the Raft node for good, and freeing space (DeleteTopics) itself needs
//! an append. The `committed` hint is best effort: failing to write it is a warning, never an
//! error.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::reserve::{with_context, write_atomically, Reserve, RESERVE_BYTES};
use super::TypeConfig;

/// The Raft vote file.
pub(crate) const VOTE_FILE: &str = "vote";
/// The log file.
pub(crate) const LOG_FILE: &str = "log";
/// The committed-log-id file.
pub(crate) const COMMITTED_FILE: &str = "committed";

/// `[u32 length][u32 crc32c]` before each record.
const RECORD_HEADER_BYTES: usize = 8;
/// A record longer than this is damage, not an entry (the RPC frame cap is 16 MiB).
const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

type NodeId = u64;
type RaftEntry = Entry<TypeConfig>;

/// One record of the `log` file.
#[derive(Debug, Serialize, Deserialize)]
enum LogRecord {
    /// Entries up to this id are purged (first record of a rewritten log).
    Purged(LogId<NodeId>),
    /// An entry.
    Entry(RaftEntry),
}

/// The open `log` file: only touched on the blocking pool.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file (appends go here).
    len_bytes: u64,
    /// File position of each entry, by index (for truncation).
    positions: BTreeMap<u64, u64>,
    /// The space reserve of the directory (shared with the vote and the snapshot).
    reserve: Arc<Mutex<Reserve>>,
}

/// The in-memory copy of the log, shared with readers.
#[derive(Debug, Default)]
struct LogEntries {
    entries: BTreeMap<u64, RaftEntry>,
    last_purged: Option<LogId<NodeId>>,
}

/// What [`LogStore::open`] found on disk.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The store.
    pub(crate) store: LogStore,
    /// Bytes cut off the log's tail (a torn or corrupt append).
    pub(crate) truncated_bytes: u64,
}

/// The metadata log's storage. Clones share the same files and memory.
#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
    log: Arc<Mutex<LogEntries>>,
    file: Arc<Mutex<LogFile>>,
    reserve: Arc<Mutex<Reserve>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

/// A reader of the in-memory log (replication tasks hold one each).
#[derive(Debug, Clone)]
pub struct LogReader {
    log: Arc<Mutex<LogEntries>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-updated in a way readers would
    // misread (each update is one insert/remove), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn encode_record(record: &LogRecord) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(record)?;
    // Never write what `decode_record` would refuse to read back.
    if json.len() > RECORD_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "metadata log record too large",
        ));
    }
    let len = u32::try_from(json.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "log record too large"))?;
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + json.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Whether `rest`, which does not start with an intact record, is what a crash in the middle
/// of the last append leaves: shorter than a header, zeros (an extended but unwritten tail),
/// or one record whose claimed length reaches the end of the file.
fn is_torn_tail(rest: &[u8]) -> bool {
    let Some(len) = rest
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
    else {
        return true;
    };
    let claimed_end =
        usize::try_from(len).map_or(usize::MAX, |len| len.saturating_add(RECORD_HEADER_BYTES));
    rest.len() < RECORD_HEADER_BYTES || rest.iter().all(|b| *b == 0) || claimed_end >= rest.len()
}

/// Decodes the record at the start of `bytes`: the record and its encoded length, or `None`
/// if it is torn or damaged.
fn decode_record(bytes: &[u8]) -> Option<(LogRecord, usize)> {
    let header = bytes.get(..RECORD_HEADER_BYTES)?;
    let (len, crc) = header.split_at(4);
    let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    let crc = u32::from_be_bytes(crc.try_into().ok()?);
    if len > RECORD_BYTES_MAX {
        return None;
    }
    let end = RECORD_HEADER_BYTES.checked_add(len)?;
    let json = bytes.get(RECORD_HEADER_BYTES..end)?;
    if crc32c::crc32c(json) != crc {
        return None;
    }
    let record = serde_json::from_slice(json).ok()?;
    Some((record, end))
}

fn len_of(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

fn io_error(what: String) -> io::Error {
    io::Error::other(what)
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io_error(format!("metadata log I/O task failed: {e}")))?
}

fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_error(format!("{}: unreadable: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    runnel_storage::sync_dir(dir).map_err(|e| io_error(format!("{}: {e}", dir.display())))
}

/// Writes `bytes` at `at` of `file` and fsyncs them; on failure cuts the file back to `at`, so
/// that no torn record stays behind (if even that fails, the error says so, and open cuts the
/// tail anyway).
fn write_at(file: &mut File, path: &Path, at: u64, bytes: &[u8]) -> io::Result<()> {
    let written = file
        .seek(SeekFrom::Start(at))
        .and_then(|_| file.write_all(bytes))
        .and_then(|()| file.sync_data());
    match written {
        Ok(()) => Ok(()),
        Err(error) => match file.set_len(at) {
            Ok(()) => Err(with_context(path.display(), error)),
            Err(cut) => Err(io_error(format!(
                "{}: {error}; cutting the partial write off failed too: {cut}",
                path.display()
            ))),
        },
    }
}

impl LogFile {
    /// Appends encoded records (`(index, bytes)`) at the end and fsyncs them. Blocking.
    fn append_records(&mut self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let mut bytes = Vec::new();
        let mut position = self.len_bytes;
        let mut positions = Vec::with_capacity(records.len());
        for (index, record) in records {
            positions.push((*index, position));
            position = position.saturating_add(u64::try_from(record.len()).unwrap_or(0));
            bytes.extend_from_slice(record);
        }
        let at = self.len_bytes;
        // Durable before openraft is told: an entry is acknowledged only once on disk.
        let LogFile {
            path,
            file,
            reserve,
            ..
        } = self;
        lock(reserve).write_with(len_of(&bytes), || write_at(file, path, at, &bytes))?;
        self.len_bytes = position;
        self.positions.extend(positions);
        lock(&self.reserve).replenish();
        Ok(())
    }
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir`, cutting a torn or corrupt tail. Blocking.
    pub(crate) fn open(dir: &Path) -> io::Result<Opened> {
        LogStore::open_with_reserve(dir, RESERVE_BYTES)
    }

    /// [`LogStore::open`] with a reserve of `reserve_bytes`.
    pub(crate) fn open_with_reserve(dir: &Path, reserve_bytes: u64) -> io::Result<Opened> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let created = !path.exists();
        let vote = read_json_file(&dir.join(VOTE_FILE))?;
        // `committed` is a hint (written without fsync): damage means "unknown".
        let committed = read_json_file(&dir.join(COMMITTED_FILE)).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metadata log: ignoring the committed hint");
            None
        });
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if created {
            // The new file's directory entry (and the directory's own) must survive a crash
            // before any entry in it is acknowledged.
            sync_dir(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut log = LogEntries::default();
        let mut positions = BTreeMap::new();
        let mut position = 0usize;
        while let Some(rest) = bytes.get(position..).filter(|rest| !rest.is_empty()) {
            let Some((record, len)) = decode_record(rest) else {
                // Only the last append can be torn by a crash: a bad record with intact data
                // after it is damage to acknowledged entries, which must not be cut silently.
                if is_torn_tail(rest) {
                    break;
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "metadata log {} is damaged at byte {position} with data after it; \
                         refusing to cut entries that may have been acknowledged (restore the \
                         node's data directory, or remove it to rejoin from the other voters)",
                        path.display()
                    ),
                ));
            };
            let at = u64::try_from(position).unwrap_or(u64::MAX);
            match record {
                LogRecord::Purged(log_id) if position == 0 => log.last_purged = Some(log_id),
                LogRecord::Entry(entry) if follows(&log, entry.log_id.index) => {
                    positions.insert(entry.log_id.index, at);
                    log.entries.insert(entry.log_id.index, entry);
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "metadata log {}: out-of-place record at byte {position}: {other:?}",
                            path.display()
                        ),
                    ));
                }
            }
            position = position.saturating_add(len);
        }
        let len_bytes = u64::try_from(position).unwrap_or(u64::MAX);
        let file_len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let truncated_bytes = file_len.saturating_sub(len_bytes);
        if truncated_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                truncated_bytes,
                "metadata log: torn or corrupt tail cut off"
            );
            file.set_len(len_bytes)?;
            file.sync_all()?;
        }
        let reserve = Arc::new(Mutex::new(Reserve::open(dir, reserve_bytes)));
        let store = LogStore {
            dir: dir.to_path_buf(),
            log: Arc::new(Mutex::new(log)),
            file: Arc::new(Mutex::new(LogFile {
                path,
                file,
                len_bytes,
                positions,
                reserve: Arc::clone(&reserve),
            })),
            reserve,
            vote,
            committed,
        };
        Ok(Opened {
            store,
            truncated_bytes,
        })
    }

    /// The space reserve, for the snapshot's writes.
    pub(crate) fn reserve(&self) -> Arc<Mutex<Reserve>> {
        Arc::clone(&self.reserve)
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        let log = lock(&self.log);
        log.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(log.last_purged)
    }
}

/// Whether an entry at `index` continues the log (no hole, no repeat).
fn follows(log: &LogEntries, index: u64) -> bool {
    match log.entries.last_key_value() {
        Some((last, _)) => index == last.saturating_add(1),
        None => match log.last_purged {
            Some(purged) => index == purged.index.saturating_add(1),
            // A pristine log starts at 0 (openraft's initial membership entry).
            None => true,
        },
    }
}

fn read_entries<RB: RangeBounds<u64>>(log: &Mutex<LogEntries>, range: RB) -> Vec<RaftEntry> {
    let start = range.start_bound().cloned();
    let end = range.end_bound().cloned();
    if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
        (start, end)
    {
        if s > e {
            return Vec::new();
        }
    }
    lock(log)
        .entries
        .range((start, end))
        .map(|(_, e)| e.clone())
        .collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, StorageError<NodeId>> {
        Ok(read_entries(&self.log, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, StorageError<NodeId>> {
        Ok(read_entries(&self.log, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = lock(&self.log).last_purged;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            log: Arc::clone(&self.log),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        let path = self.dir.join(VOTE_FILE);
        let reserve = Arc::clone(&self.reserve);
        blocking(move || {
            lock(&reserve).write_with(len_of(&bytes), || write_atomically(&path, &bytes))
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // A hint for a fast restart, not a safety property: written atomically (rename) but not
        // fsynced, so commits do not pay two more fsyncs. A lost hint only means a restarted
        // node waits for the leader before re-applying — so a failure to write it (a full
        // disk) is a warning, never an error that would stop the Raft node.
        self.committed = committed;
        let bytes = match serde_json::to_vec(&committed) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "metadata log: the committed hint is not written");
                return Ok(());
            }
        };
        let path = self.dir.join(COMMITTED_FILE);
        let written = blocking(move || {
            let mut temp = path.as_os_str().to_owned();
            temp.push(".tmp");
            let written =
                std::fs::write(&temp, &bytes).and_then(|()| std::fs::rename(&temp, &path));
            if written.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            written
        })
        .await;
        if let Err(error) = written {
            tracing::warn!(%error, "metadata log: the committed hint is not written");
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<RaftEntry> = entries.into_iter().collect();
        let mut records = Vec::with_capacity(entries.len());
        for entry in &entries {
            let record = LogRecord::Entry(entry.clone());
            records.push((
                entry.log_id.index,
                encode_record(&record).map_err(|e| StorageIOError::write_logs(&e))?,
            ));
        }
        let file = Arc::clone(&self.file);
        blocking(move || lock(&file).append_records(&records))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        {
            let mut log = lock(&self.log);
            for entry in entries {
                log.entries.insert(entry.log_id.index, entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let index = log_id.index;
        let file = Arc::clone(&self.file);
        blocking(move || {
            let mut guard = lock(&file);
            let file = &mut *guard;
            let Some(&position) = file.positions.get(&index) else {
                return Ok(());
            };
            let LogFile {
                path,
                file: log,
                reserve,
                ..
            } = file;
            lock(reserve).write_with(0, || {
                log.set_len(position)
                    .and_then(|()| log.sync_all())
                    .map_err(|e| with_context(path.display(), e))
            })?;
            file.len_bytes = position;
            file.positions.retain(|i, _| *i < index);
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e))?;
        lock(&self.log).entries.retain(|i, _| *i < index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let kept: Vec<RaftEntry> = {
            let log = lock(&self.log);
            if log.last_purged.is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            log.entries
                .range(log_id.index.saturating_add(1)..)
                .map(|(_, e)| e.clone())
                .collect()
        };
        let mut bytes = encode_record(&LogRecord::Purged(log_id))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut positions = BTreeMap::new();
        for entry in kept {
            positions.insert(
                entry.log_id.index,
                u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            );
            bytes.extend_from_slice(
                &encode_record(&LogRecord::Entry(entry))
                    .map_err(|e| StorageIOError::write_logs(&e))?,
            );
        }
        let file = Arc::clone(&self.file);
        blocking(move || {
            let mut file = lock(&file);
            let path = file.path.clone();
            let reserve = Arc::clone(&file.reserve);
            lock(&reserve).write_with(len_of(&bytes), || write_atomically(&path, &bytes))?;
            let reopened = OpenOptions::new().read(true).write(true).open(&path)?;
            file.file = reopened;
            file.len_bytes = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
            file.positions = positions;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut log = lock(&self.log);
        log.entries.retain(|i, _| *i > log_id.index);
        log.last_purged = Some(log_id);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::metadata::MetadataBatch;

    fn entry(term: u64, index: u64) -> RaftEntry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(MetadataBatch::default()),
        }
    }

    fn write_entries(dir: &Path, entries: &[RaftEntry]) {
        let mut bytes = Vec::new();
        for e in entries {
            bytes.extend(encode_record(&LogRecord::Entry(e.clone())).unwrap());
        }
        std::fs::write(dir.join(LOG_FILE), bytes).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<_> = (0..3).map(|i| entry(1, i)).collect();
        write_entries(dir.path(), &entries);
        let whole = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        // A fourth record, cut in the middle of its JSON.
        let fourth = encode_record(&LogRecord::Entry(entry(1, 3))).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        file.write_all(&fourth[..fourth.len() / 2]).unwrap();
        drop(file);

        let opened = LogStore::open(dir.path()).unwrap();
        assert_eq!(opened.truncated_bytes, (fourth.len() / 2) as u64);
        assert_eq!(opened.store.last_log_id(), Some(entries[2].log_id));
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            whole
        );
    }

    #[test]
    fn a_corrupt_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<_> = (0..3).map(|i| entry(1, i)).collect();
        write_entries(dir.path(), &entries);
        let mut bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        // Flip a bit in the last record's JSON.
        let last = bytes.len() - 3;
        bytes[last] ^= 0x01;
        std::fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();

        let opened = LogStore::open(dir.path()).unwrap();
        assert!(opened.truncated_bytes > 0);
        assert_eq!(opened.store.last_log_id(), Some(entries[1].log_id));
    }

    #[test]
    fn a_damaged_record_with_entries_after_it_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<_> = (0..3).map(|i| entry(1, i)).collect();
        write_entries(dir.path(), &entries);
        let mut bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        // Flip a bit in the first record's JSON: two intact records follow it.
        bytes[RECORD_HEADER_BYTES + 2] ^= 0x01;
        std::fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();

        let error = LogStore::open(dir.path()).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("damaged at byte 0"), "{error}");
        // Nothing was cut.
        assert_eq!(std::fs::read(dir.path().join(LOG_FILE)).unwrap(), bytes);
    }

    #[test]
    fn a_zero_filled_tail_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<_> = (0..2).map(|i| entry(1, i)).collect();
        write_entries(dir.path(), &entries);
        let mut bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        bytes.extend_from_slice(&[0u8; 100]);
        std::fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
        let opened = LogStore::open(dir.path()).unwrap();
        assert_eq!(opened.truncated_bytes, 100);
        assert_eq!(opened.store.last_log_id(), Some(entries[1].log_id));
    }

    /// A tmpfs of `size` on a fresh directory, unmounted on drop. Needs root (as the e2e
    /// disk_full tests do): a real full filesystem, not a simulated error.
    struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        fn mount(size: &str) -> Tmpfs {
            let dir = tempfile::tempdir().unwrap();
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(
                status.success(),
                "mount -t tmpfs failed: this test needs root"
            );
            Tmpfs { dir }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }

    /// Fills the filesystem of `dir` to the last byte with a new file `name`.
    fn fill_filesystem(dir: &Path, name: &str) {
        let mut file = File::create(dir.join(name)).unwrap();
        for size in [64 * 1024, 1] {
            let chunk = vec![b'b'; size];
            loop {
                match file.write(&chunk) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if crate::metadata::raft::reserve::is_disk_full(&e) => break,
                    Err(e) => panic!("filling {}: {e}", dir.display()),
                }
            }
        }
    }

    /// An entry of about 16 KiB (a topic with a long name): more than a page of new space.
    fn big_entry(index: u64) -> RaftEntry {
        let batch = MetadataBatch {
            records: vec![crate::metadata::MetadataRecord::CreateTopic {
                name: "t".repeat(16 * 1024),
                topic_id: uuid::Uuid::nil(),
                configs: BTreeMap::new(),
                partitions: Vec::new(),
            }],
            ..MetadataBatch::default()
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(batch),
        }
    }

    fn append(store: &LogStore, entries: &[RaftEntry]) -> io::Result<()> {
        let records: Vec<_> = entries
            .iter()
            .map(|e| {
                let record = LogRecord::Entry(e.clone());
                (e.log_id.index, encode_record(&record).unwrap())
            })
            .collect();
        lock(&store.file).append_records(&records)
    }

    fn log_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(LOG_FILE)).unwrap().len()
    }

    #[test]
    fn a_full_disk_spends_the_reserve_and_tears_nothing() {
        const RESERVE: u64 = 256 * 1024;
        let tmpfs = Tmpfs::mount("1m");
        let dir = tmpfs.path().join(crate::metadata::raft::METADATA_DIR_NAME);
        let reserve_len = |store: &LogStore| lock(&store.reserve).len();
        let reserve_file = dir.join(crate::metadata::raft::reserve::RESERVE_FILE);
        let store = LogStore::open_with_reserve(&dir, RESERVE).unwrap().store;
        assert_eq!(reserve_len(&store), RESERVE);
        assert_eq!(std::fs::metadata(&reserve_file).unwrap().len(), RESERVE);
        append(&store, &[entry(1, 0), entry(1, 1)]).unwrap();

        // The disk is full: the append goes into part of the reserve's space.
        fill_filesystem(tmpfs.path(), "ballast-2");
        append(&store, &[big_entry(2)]).unwrap();
        let left = reserve_len(&store);
        assert!(0 < left && left < RESERVE, "reserve left: {left}");
        assert_eq!(std::fs::metadata(&reserve_file).unwrap().len(), left);

        // Appends on a full disk (any space freed beyond their need is taken again) use up
        // the reserve; then one fails as a full disk, leaving no torn record behind.
        let mut index = 3;
        let (error, before) = loop {
            assert!(index < 100, "the reserve never ran out");
            fill_filesystem(tmpfs.path(), &format!("ballast-{index}"));
            let before = log_len(&dir);
            match append(&store, &[big_entry(index)]) {
                Ok(()) => index += 1,
                Err(error) => break (error, before),
            }
        };
        assert!(index > 3, "a reserve of {left} bytes took no 16 KiB entry");
        assert!(
            crate::metadata::raft::reserve::is_disk_full(&error),
            "{error}"
        );
        assert_eq!(reserve_len(&store), 0);
        assert_eq!(log_len(&dir), before);
        assert_eq!(lock(&store.file).len_bytes, before);

        // Reopened on the full disk: nothing to cut, the last good entry is the last; no room
        // to grow the reserve (and nothing half-written left in its file).
        drop(store);
        let opened = LogStore::open_with_reserve(&dir, RESERVE).unwrap();
        assert_eq!(opened.truncated_bytes, 0);
        assert_eq!(
            opened.store.last_log_id(),
            Some(big_entry(index - 1).log_id)
        );
        assert_eq!(reserve_len(&opened.store), 0);
        assert_eq!(std::fs::metadata(&reserve_file).unwrap().len(), 0);

        // Space returns: the next append succeeds and grows the reserve back.
        for file in std::fs::read_dir(tmpfs.path()).unwrap() {
            let path = file.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ballast-")
            {
                std::fs::remove_file(path).unwrap();
            }
        }
        append(&opened.store, &[big_entry(index)]).unwrap();
        assert_eq!(reserve_len(&opened.store), RESERVE);
        assert_eq!(std::fs::metadata(&reserve_file).unwrap().len(), RESERVE);
        drop(opened);
        let reopened = LogStore::open_with_reserve(&dir, RESERVE).unwrap();
        assert_eq!(reopened.truncated_bytes, 0);
        assert_eq!(reopened.store.last_log_id(), Some(big_entry(index).log_id));
    }

    #[test]
    fn a_reserve_lost_behind_the_stores_back_reports_the_full_disk() {
        let tmpfs = Tmpfs::mount("1m");
        let dir = tmpfs.path().join(crate::metadata::raft::METADATA_DIR_NAME);
        let store = LogStore::open_with_reserve(&dir, 256 * 1024).unwrap().store;
        append(&store, &[entry(1, 0)]).unwrap();
        std::fs::remove_file(dir.join(crate::metadata::raft::reserve::RESERVE_FILE)).unwrap();
        fill_filesystem(tmpfs.path(), "ballast");
        let before = log_len(&dir);
        let error = append(&store, &[big_entry(1)]).unwrap_err();
        assert!(
            crate::metadata::raft::reserve::is_disk_full(&error),
            "{error}"
        );
        assert_eq!(lock(&store.reserve).len(), 0);
        assert_eq!(log_len(&dir), before);
    }

    #[tokio::test]
    async fn a_committed_hint_that_cannot_be_written_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap().store;
        // The hint's temporary file cannot be created: a directory is in its place.
        std::fs::create_dir(dir.path().join(format!("{COMMITTED_FILE}.tmp"))).unwrap();
        let committed = Some(entry(1, 4).log_id);
        store.save_committed(committed).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), committed);
        assert!(!dir.path().join(COMMITTED_FILE).exists());
    }

    #[test]
    fn an_oversized_length_is_damage() {
        let mut bytes = vec![0xff; RECORD_HEADER_BYTES];
        bytes.extend_from_slice(b"{}");
        assert!(decode_record(&bytes).is_none());
        assert!(decode_record(&[0, 0]).is_none());
    }
}
