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
    let len = u32::try_from(json.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "log record too large"))?;
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + json.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
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

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    runnel_storage::write_file_atomically(path, bytes)
        .map_err(|e| io_error(format!("{}: {e}", path.display())))
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir`, cutting a torn or corrupt tail. Blocking.
    pub(crate) fn open(dir: &Path) -> io::Result<Opened> {
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
                break;
            };
            let at = u64::try_from(position).unwrap_or(u64::MAX);
            match record {
                LogRecord::Purged(log_id) if position == 0 => log.last_purged = Some(log_id),
                LogRecord::Entry(entry) if follows(&log, entry.log_id.index) => {
                    positions.insert(entry.log_id.index, at);
                    log.entries.insert(entry.log_id.index, entry);
                }
                other => {
                    tracing::warn!(?other, at, "metadata log: out-of-place record");
                    break;
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
        let store = LogStore {
            dir: dir.to_path_buf(),
            log: Arc::new(Mutex::new(log)),
            file: Arc::new(Mutex::new(LogFile {
                path,
                file,
                len_bytes,
                positions,
            })),
            vote,
            committed,
        };
        Ok(Opened {
            store,
            truncated_bytes,
        })
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
        blocking(move || write_atomically(&path, &bytes))
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
        // node waits for the leader before re-applying.
        let bytes = serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(&e))?;
        let path = self.dir.join(COMMITTED_FILE);
        blocking(move || {
            let mut temp = path.as_os_str().to_owned();
            temp.push(".tmp");
            std::fs::write(&temp, &bytes)?;
            std::fs::rename(&temp, &path)
        })
        .await
        .map_err(|e| StorageIOError::write(&e))?;
        self.committed = committed;
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
        blocking(move || {
            let mut file = lock(&file);
            let mut bytes = Vec::new();
            let mut position = file.len_bytes;
            let mut positions = Vec::with_capacity(records.len());
            for (index, record) in &records {
                positions.push((*index, position));
                position = position.saturating_add(u64::try_from(record.len()).unwrap_or(0));
                bytes.extend_from_slice(record);
            }
            let at = file.len_bytes;
            file.file.seek(SeekFrom::Start(at))?;
            file.file.write_all(&bytes)?;
            // Durable before openraft is told: an entry is acknowledged only once on disk.
            file.file.sync_data()?;
            file.len_bytes = position;
            file.positions.extend(positions);
            Ok(())
        })
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
            let mut file = lock(&file);
            let Some(&position) = file.positions.get(&index) else {
                return Ok(());
            };
            file.file.set_len(position)?;
            file.file.sync_all()?;
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
            write_atomically(&path, &bytes)?;
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
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
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
    fn a_corrupt_record_ends_the_log() {
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
    fn an_oversized_length_is_damage() {
        let mut bytes = vec![0xff; RECORD_HEADER_BYTES];
        bytes.extend_from_slice(b"{}");
        assert!(decode_record(&bytes).is_none());
        assert!(decode_record(&[0, 0]).is_none());
    }
}
