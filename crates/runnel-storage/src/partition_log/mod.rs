//! `PartitionLog`: one partition's log as a list of segments with a log start offset, a log end
//! offset and a flushed offset. It assigns offsets, enforces idempotent-producer rules, rolls
//! segments, serves reads and group-commits fsyncs; for replication it keeps the leader-epoch
//! cache, appends a leader's batches as they are and truncates. It is synchronous and knows
//! nothing of Kafka requests, sockets or who leads; the high watermark is the caller's (`read`
//! takes the bound from it; the log only stores its checkpoint file).
//!
//! A roll fsyncs only the sealed segment's data, then starts the new segment. The rest of its
//! durability work (the sealed time index, the producer snapshot and the recovery checkpoint at
//! the roll's offset: three files and a directory) is left to the next `flush` (group commit
//! for acks=all, the periodic flush otherwise); only then do retention and the cleaner treat
//! the sealed segment as closed. So appends wait for one fsync at a roll, not five.
//!
//! Locking, in acquisition order: `cleaner_lock` (one clean, truncation or reset at a time),
//! then `writer` (one append, roll or close at a time) then `flush_lock` then `pending_roll`
//! then `segments` (held only to push or clone `Arc`s); `leader_epochs` is taken last and
//! alone, briefly, by whoever updates or reads the epoch cache. Readers
//! take only a brief `segments` read lock and the per-index lock for a binary search; they
//! never wait for a write or an fsync in progress.
//!
//! The work is split by job, one `impl PartitionLog` block per file: `append` (offset
//! assignment, producer checks, rolls), `flush` (group commit, directory durability, the failed
//! state), `read` (reads and lookups by timestamp), `maintenance` (retention, DeleteRecords,
//! compaction, producer expiry) and `truncate` (a replica's truncation and reset, and the
//! high-watermark checkpoint). This file holds the struct, its settings and result types,
//! open and close, and the accessors.

mod append;
mod flush;
mod maintenance;
mod read;
mod truncate;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use crate::checkpoint::{read_log_start_offset, write_log_start_offset, RecoveryCheckpoint};
use crate::error::StorageError;
use crate::io::Storage;
use crate::leader_epoch::{EpochEntry, LeaderEpochCache};
use crate::producer_state::{ProducerSnapshot, ProducerStateManager};
use crate::recovery::{rebuild_producer_state, recover};
use crate::segment::{lock, LogSegment};

pub(crate) use flush::{FlushPlan, WriteOut};
pub(crate) use read::readable_records;

/// A log whose fsyncs cover less than this many appended bytes each, on average (acks=all
/// with small requests), keeps a zero tail ahead of its appends, so that each fsync
/// overwrites allocated blocks instead of growing the file (see
/// `LogSegment::extend_zero_tail`). A log fsynced less often gains little per byte and would
/// write its bytes twice.
const ZERO_TAIL_FLUSHED_BYTES_MAX: u64 = 128 * 1024;
/// The zero tail grows with the active segment, between these bounds: a partition never
/// holds more zeros than data plus the minimum, nor more than the maximum.
const ZERO_TAIL_MIN_BYTES: u64 = 64 * 1024;
pub(crate) const ZERO_TAIL_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Per-partition storage settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll when an append would make the active segment larger than this many bytes
    /// (`segment.bytes`; default 1 GiB). An append larger than this still goes, alone, into a
    /// fresh segment.
    pub segment_bytes: u64,
    /// Roll when the active segment was created more than this many ms ago by the wall clock
    /// (`segment.ms`; default 7 days).
    pub segment_ms: i64,
    /// Add a sparse index entry about every this many bytes (`index.interval.bytes`; default
    /// 4096).
    pub index_interval_bytes: u32,
    /// Maximum `.index` size in bytes (`segment.index.bytes`; default 10 MiB); a full index
    /// also rolls the segment.
    pub segment_index_bytes: u32,
    /// Forget an idempotent producer whose last batch is this old (`producer.id.expiration.ms`,
    /// a broker setting; default 1 day).
    pub producer_id_expiration_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
            producer_id_expiration_ms: crate::producer_state::PRODUCER_ID_EXPIRATION_MS_DEFAULT,
        }
    }
}

/// How long a partition keeps its data (`retention.ms`, `retention.bytes`; -1 = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Closed segments whose largest timestamp is older than this many ms go.
    pub retention_ms: i64,
    /// Oldest closed segments go while the log without them is still at least this large.
    pub retention_bytes: i64,
}

/// An offset found by timestamp, with the timestamp of the record there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp in ms.
    pub timestamp: i64,
}

/// Whether an append computes each batch's CRC32C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcCheck {
    /// Verify it (what [`PartitionLog::append`] does).
    Verify,
    /// The caller has verified it over these exact bytes (the broker validates every produced
    /// batch before it appends), so the log does not compute it a second time.
    VerifiedByCaller,
}

/// Result of a successful [`PartitionLog::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batches were written at offsets `base_offset..=last_offset`.
    Appended {
        /// Offset assigned to the first record.
        base_offset: i64,
        /// Offset of the last record.
        last_offset: i64,
    },
    /// Idempotent retry of a batch already in the log: nothing written; original offsets.
    Duplicate {
        /// Offset of the original batch's first record.
        base_offset: i64,
        /// Offset of the original batch's last record.
        last_offset: i64,
    },
}

/// One partition's log on disk. `Send + Sync`; all methods take `&self`.
///
/// Invariants: `log_start_offset <= flushed_offset <= log_end_offset` once opened (the
/// flushed offset may lag behind); offsets < `log_end_offset` are readable; offsets strictly
/// increase through the segments.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    /// Where the log's files live (the real file system, or a simulated disk in tests).
    storage: Storage,
    /// Changed live by topic config updates; read at each roll decision.
    config: RwLock<LogConfig>,
    /// Ordered by base offset; never empty; the last is the active segment.
    segments: RwLock<Vec<Arc<LogSegment>>>,
    /// The writer's state; holding it makes this thread the one writer.
    writer: Mutex<WriterState>,
    /// Serializes fsyncs so concurrent `flush` callers share one (group commit).
    flush_lock: Mutex<()>,
    /// Rolls whose durability work the next `flush` owes.
    pending_roll: Mutex<Option<PendingRoll>>,
    /// Segments with a base offset below this are sealed: fsynced, behind the recovery
    /// checkpoint, and so closed to retention, DeleteRecords and the cleaner.
    sealed_offset: AtomicI64,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    flushed_offset: AtomicI64,
    /// Truncations and resets so far, bumped under the flush lock: a write-out planned before
    /// one must not publish its (older, larger) log end as flushed after it.
    truncations: AtomicU64,
    /// Where each leader epoch starts. Updated (and persisted) by the writer before the
    /// appends it describes are published: a reader never sees an epoch end past records of a
    /// newer one.
    leader_epochs: RwLock<LeaderEpochCache>,
    /// The last checkpointed high watermark (`i64::MAX` when none is known): the cleaner
    /// compacts only segments wholly below it, since a replica may truncate what is above, and
    /// a record compacted away because a later one of its key existed must not lose that later
    /// one to a truncation.
    clean_bound_offset: AtomicI64,
    /// One cleaner at a time per log.
    cleaner_lock: Mutex<()>,
    /// Offsets from here on have not been compacted since this log was opened.
    first_dirty_offset: AtomicI64,
    /// Largest timestamp of the oldest cleaned segment that kept a tombstone (`i64::MAX` if
    /// none): once it is older than `delete.retention.ms`, a clean is due even without dirt.
    kept_tombstone_ms: AtomicI64,
    /// Bytes appended since the log was opened, that count at the last fsync, and a moving
    /// average of the bytes each fsync covered: it decides `zero_tail`. Updated by flushes.
    appended_bytes: AtomicU64,
    appended_bytes_at_flush: AtomicU64,
    flushed_bytes_average: AtomicU64,
    /// Whether appends keep a zero tail ahead of them (see [`ZERO_TAIL_FLUSHED_BYTES_MAX`]).
    zero_tail: AtomicBool,
    /// Whether the partition directory's own entry (in its parent) is known durable: fsynced
    /// by the first flush after the log is opened (see `make_entries_durable`).
    directory_durable: AtomicBool,
    /// The first failed write, fsync or write-out: once set, the log is offline (see
    /// [`StorageError::LogFailed`]). Set under the flush lock where an fsync failed, so that
    /// nothing publishes a flushed offset after it.
    failure: OnceLock<Arc<StorageError>>,
}

/// State only the writer touches.
#[derive(Debug)]
struct WriterState {
    producers: ProducerStateManager,
    /// Stamped into every batch a client append writes, once `set_leader_epoch` was called.
    leader_epoch: Option<i32>,
    /// The last segment of `segments`, where appends go.
    active: Arc<LogSegment>,
}

/// What rolls leave for the next flush: the segments they sealed (whose final time-index
/// entries it syncs), and the producer state at the newest roll, for the snapshot written with
/// the checkpoint there.
#[derive(Debug)]
struct PendingRoll {
    sealed: Vec<Arc<LogSegment>>,
    producer_snapshot: ProducerSnapshot,
    /// The newest roll's offset: the new active segment's base offset.
    base_offset: i64,
}

impl PendingRoll {
    /// Adds a later roll's work to this one's.
    fn absorb(&mut self, later: PendingRoll) {
        self.sealed.extend(later.sealed);
        self.producer_snapshot = later.producer_snapshot;
        self.base_offset = later.base_offset;
    }
}

impl PartitionLog {
    /// Opens the log in `dir`, creating the directory if missing, and recovers it (see the
    /// `recovery` module): a torn tail after the recovery checkpoint is cut off.
    ///
    /// A segment shorter than the checkpoint says (fsynced bytes lost underneath us) is verified
    /// from its start and cut at its first torn batch, with an ERROR naming the file.
    ///
    /// Errors: `Io` naming the file; `CheckpointSegmentMissing` when a segment the recovery
    /// checkpoint names is gone; `CorruptSegment` when data below the checkpoint is damaged, or
    /// when a damaged batch after it is followed by an intact one (mid-log corruption: nothing
    /// is cut or deleted, the partition stays closed until an operator looks).
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, StorageError> {
        PartitionLog::open_on(Storage::real(), dir, config)
    }

    /// [`PartitionLog::open`] on `storage` (a simulated disk, or a fault-injecting one).
    ///
    /// Errors: as for `open`.
    pub fn open_on(
        storage: Storage,
        dir: &Path,
        config: LogConfig,
    ) -> Result<PartitionLog, StorageError> {
        let recovered = recover(&storage, dir, &config)?;
        let mut producers =
            rebuild_producer_state(&storage, dir, &recovered.segments, recovered.log_end_offset)?;
        producers.set_expiration_ms(config.producer_id_expiration_ms);
        let first_base = recovered.segments.first().map_or(0, |s| s.base_offset());
        let checkpointed_start = read_log_start_offset(&storage, dir)?;
        let log_start_offset = checkpointed_start
            .unwrap_or(first_base)
            .clamp(first_base, recovered.log_end_offset);
        if checkpointed_start.is_some_and(|start| start > log_start_offset) {
            // The checkpoint is past the recovered log end (DeleteRecords moved it over records
            // that were never fsynced). Lower it on disk too: appends now get offsets below the
            // old value, and the next open would otherwise hide them.
            tracing::warn!(dir = %dir.display(), log_start_offset,
                "log start offset checkpoint beyond the log end; lowering it");
            write_log_start_offset(&storage, dir, log_start_offset)?;
        }
        let active = Arc::clone(&recovered.active);
        let active_base_offset = active.base_offset();
        // Segments wholly below the log start offset were being deleted when we stopped
        // (the checkpoint is written before the files go): finish the job.
        let mut segments = recovered.segments;
        while segments.len() > 1
            && segments
                .get(1)
                .is_some_and(|s| s.base_offset() <= log_start_offset)
        {
            let doomed = segments.remove(0);
            tracing::info!(path = %doomed.log_path().display(), "deleting a segment below the log start offset");
            doomed.delete_files()?;
        }
        let leader_epochs =
            open_leader_epochs(&storage, dir, log_start_offset, recovered.log_end_offset)?;
        let clean_bound_offset =
            crate::checkpoint::read_high_watermark(&storage, dir).unwrap_or(i64::MAX);
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            storage,
            config: RwLock::new(config),
            segments: RwLock::new(segments),
            writer: Mutex::new(WriterState {
                producers,
                leader_epoch: None,
                active,
            }),
            flush_lock: Mutex::new(()),
            pending_roll: Mutex::new(None),
            // Recovery wrote a checkpoint naming the active segment.
            sealed_offset: AtomicI64::new(active_base_offset),
            log_start_offset: AtomicI64::new(log_start_offset),
            log_end_offset: AtomicI64::new(recovered.log_end_offset),
            // Recovery fsyncs whatever it verified.
            flushed_offset: AtomicI64::new(recovered.log_end_offset),
            truncations: AtomicU64::new(0),
            leader_epochs: RwLock::new(leader_epochs),
            clean_bound_offset: AtomicI64::new(clean_bound_offset),
            cleaner_lock: Mutex::new(()),
            first_dirty_offset: AtomicI64::new(log_start_offset),
            kept_tombstone_ms: AtomicI64::new(i64::MAX),
            appended_bytes: AtomicU64::new(0),
            appended_bytes_at_flush: AtomicU64::new(0),
            // Above the threshold: a tail only once fsyncs have been small for a while (six
            // fsyncs of a few bytes bring it below).
            flushed_bytes_average: AtomicU64::new(2 * ZERO_TAIL_FLUSHED_BYTES_MAX),
            zero_tail: AtomicBool::new(false),
            directory_durable: AtomicBool::new(false),
            failure: OnceLock::new(),
        };
        log.finish_interrupted_truncation()?;
        Ok(log)
    }

    /// First offset in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// Offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Offsets below this are durable (fsynced).
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset.load(Ordering::Acquire)
    }

    /// How many truncations and resets this log has had: a copy of its files made before the
    /// count changed may hold bytes since cut and rewritten in place (same file, same length).
    pub fn truncation_count(&self) -> u64 {
        self.truncations.load(Ordering::Acquire)
    }

    /// Flushes everything, then writes a producer-state snapshot and a recovery checkpoint at
    /// the log end offset so the next `open` verifies nothing. Idempotent; the log stays
    /// usable (a later append simply makes the next open scan that tail).
    ///
    /// Errors: `Io`.
    pub fn close(&self) -> Result<(), StorageError> {
        let writer = lock(&self.writer);
        self.check_healthy()?;
        self.close_locked(&writer).map_err(|error| self.fail(error))
    }

    /// Ends this handle's life for a move to another directory: with appends, truncations and
    /// cleans held off, closes the log (everything flushed, a recovery checkpoint at the log
    /// end, so the files are a clean-shutdown image), runs `copy_rest` with the leader epoch
    /// appends are stamped with (see [`PartitionLog::set_leader_epoch`]; the copy must be
    /// given it too), where the caller copies what it has not copied yet and publishes the
    /// copy at `to`, and if that succeeds retires this
    /// handle: every later append, read or flush fails with `LogMoved`, so nothing can be
    /// acknowledged into a log that is about to be deleted. If `copy_rest` fails, the log stays
    /// as it was and the error is returned.
    ///
    /// Errors: `Io` (closing), or what `copy_rest` returned.
    pub fn close_for_move<T>(
        &self,
        to: &Path,
        copy_rest: impl FnOnce(Option<i32>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let _cleaning = lock(&self.cleaner_lock);
        let writer = lock(&self.writer);
        self.check_healthy()?;
        self.close_locked(&writer)
            .map_err(|error| self.fail(error))?;
        let copied = copy_rest(writer.leader_epoch)?;
        let _ = self.failure.set(Arc::new(StorageError::LogMoved {
            dir: self.dir.clone(),
            to: to.to_path_buf(),
        }));
        Ok(copied)
    }

    fn close_locked(&self, writer: &WriterState) -> Result<(), StorageError> {
        let log_end_offset = self.log_end_offset();
        // A log that never held a record (offsets are never reused, so a log end of 0 means
        // no append ever) has nothing a checkpoint could spare recovery, its one segment is
        // empty, and it has no producer state: closing it costs no file and no fsync, so that
        // stopping a broker with thousands of idle new partitions is quick.
        if log_end_offset == 0 {
            return Ok(());
        }
        let active = &writer.active;
        // The checkpoint below makes the next open trust the file length... of sealed
        // segments only; still, a clean shutdown leaves no tail for recovery to cut.
        if active.zeroed_end_bytes() > active.size_bytes() {
            active.trim_zero_tail()?;
            active.sync()?;
        }
        self.flush(log_end_offset)?;
        self.write_recovery_point(
            writer.producers.snapshot(log_end_offset),
            RecoveryCheckpoint {
                recovery_point_offset: log_end_offset,
                segment_base_offset: active.base_offset(),
                position_bytes: active.size_bytes(),
            },
        )
    }

    /// The newest leader epoch in the epoch cache, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.read_leader_epochs().latest_epoch()
    }

    /// Where `epoch` ends in this log, as `(epoch, end_offset)`: the answer to
    /// OffsetForLeaderEpoch (see [`LeaderEpochCache::end_offset_for`]); `(-1, -1)` when unknown.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let cache = self.read_leader_epochs();
        // Read under the cache lock: appends update the cache before publishing the log end.
        cache.end_offset_for(epoch, self.log_end_offset())
    }

    /// A copy of the leader-epoch cache (a few entries), for code that works on a
    /// `LeaderEpochCache` (the replication state machine). The cache is updated before the
    /// appends it describes are published, so pairing it with a `log_end_offset` read before
    /// or after never reports an epoch ending past records of a newer one.
    pub fn leader_epoch_cache(&self) -> LeaderEpochCache {
        self.read_leader_epochs().clone()
    }

    /// The leader-epoch cache's entries, oldest epoch first.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.read_leader_epochs().entries().to_vec()
    }

    /// Applies `change` to a copy of the epoch cache and, if it says it changed something,
    /// persists the copy and then publishes it (a failed write leaves the cache as it was).
    /// Called with the writer lock held.
    fn update_leader_epochs(
        &self,
        change: impl FnOnce(&mut LeaderEpochCache) -> bool,
    ) -> Result<(), StorageError> {
        let mut updated = self.read_leader_epochs().clone();
        if change(&mut updated) {
            updated.write(&self.storage, &self.dir)?;
            *self
                .leader_epochs
                .write()
                .unwrap_or_else(PoisonError::into_inner) = updated;
        }
        Ok(())
    }

    fn read_leader_epochs(&self) -> std::sync::RwLockReadGuard<'_, LeaderEpochCache> {
        self.leader_epochs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Size of the whole log in bytes (committed data of all segments; indexes excluded).
    pub fn size_bytes(&self) -> u64 {
        self.read_segments().iter().map(|s| s.size_bytes()).sum()
    }

    /// Number of segments (at least 1).
    pub fn segment_count(&self) -> usize {
        self.read_segments().len()
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current storage settings.
    pub fn config(&self) -> LogConfig {
        *self.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies new storage settings from the next append on (a topic config change).
    pub fn set_config(&self, config: LogConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// A snapshot of the segment list (cheap: `Arc` clones).
    pub(crate) fn segments_snapshot(&self) -> Vec<Arc<LogSegment>> {
        self.read_segments().clone()
    }

    fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<LogSegment>>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads the leader-epoch cache of `dir` and fits it to the recovered log: epochs starting at
/// or after the log end (their records were a torn tail) are dropped, and the first kept epoch
/// starts no earlier than the log. Persisted if that changed anything.
fn open_leader_epochs(
    storage: &Storage,
    dir: &Path,
    log_start_offset: i64,
    log_end_offset: i64,
) -> Result<LeaderEpochCache, StorageError> {
    let mut cache = LeaderEpochCache::read(storage, dir)?;
    let cut_end = cache.truncate_from_end(log_end_offset);
    let cut_start = cache.truncate_from_start(log_start_offset);
    if cut_end || cut_start {
        tracing::info!(dir = %dir.display(), log_end_offset, "leader epoch cache fitted to the recovered log");
        cache.write(storage, dir)?;
    }
    Ok(cache)
}

#[cfg(test)]
#[path = "../partition_log_tests.rs"]
mod tests;
