//! `PartitionLog`: one partition's log as a list of segments with a log start offset, a log end
//! offset and a flushed offset. It assigns offsets, enforces idempotent-producer rules, rolls
//! segments, serves reads and group-commits fsyncs. It is synchronous and knows nothing of
//! Kafka requests, sockets or the high watermark (`read` takes the bound from the caller).
//!
//! A roll fsyncs only the sealed segment's data, then starts the new segment. The rest of its
//! durability work (the sealed time index, the producer snapshot and the recovery checkpoint at
//! the roll's offset: three files and a directory) is left to the next `flush` (group commit
//! for acks=all, the periodic flush otherwise); only then do retention and the cleaner treat
//! the sealed segment as closed. So appends wait for one fsync at a roll, not five.
//!
//! Locking, in acquisition order: `writer` (one append, roll or close at a time) then
//! `flush_lock` then `pending_roll` then `segments` (held only to push or clone `Arc`s). Readers
//! take only a brief `segments` read lock and the per-index lock for a binary search; they
//! never wait for a write or an fsync in progress.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use bytes::Bytes;

use crate::batch_header::{
    set_base_offset, set_log_append_time_split, verify_crc, BatchHeader, HEADER_SIZE_BYTES,
};
use crate::checkpoint::{
    read_log_start_offset, write_all_atomically, write_log_start_offset, RecoveryCheckpoint,
};
use crate::cleaner::{
    build_offset_map, cleanable_segments, finish_swap, write_cleaned, CleanStats, CompactionPolicy,
};
use crate::error::{IoResultExt, StorageError};
use crate::io::Storage;
use crate::producer_state::{
    prune_snapshots, PendingProducerUpdates, ProducerSnapshot, ProducerStateManager, SequenceCheck,
};
use crate::records::RecordReader;
use crate::recovery::{rebuild_producer_state, recover};
use crate::segment::{lock, now_ms, FirstBatch, LogSegment};

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

/// How [`PartitionLog::plan_write_out`] would make an offset durable.
#[derive(Debug)]
pub(crate) enum FlushPlan {
    /// It already is.
    Durable,
    /// Only by [`PartitionLog::flush`] (an fdatasync of its own).
    Fsync,
    /// By writing out the active segment and flushing the device's cache.
    WriteOut(WriteOut),
}

/// A flush done as a write-out of the active segment plus a cache flush of its device.
#[derive(Debug)]
pub(crate) struct WriteOut {
    pub(crate) segment: Arc<LogSegment>,
    /// The log end offset when planned: flushed once the write-out and device flush are done.
    target: i64,
    pub(crate) device: u64,
}

/// A validated append, ready to write: each batch as its rewritten header (offsets assigned)
/// and its records as received, their parsed headers, and the producer updates to apply once
/// written. Only headers are copied: copying a megabyte request to rewrite 8 bytes of it was
/// 5 % of the broker's CPU in an uncompressed produce, plus a fresh allocation per request.
struct PreparedAppend<'a> {
    batches: Vec<([u8; HEADER_SIZE_BYTES], &'a [u8])>,
    size_bytes: u64,
    headers: Vec<BatchHeader>,
    producers: PendingProducerUpdates,
}

impl PreparedAppend<'_> {
    /// The bytes to write, in order.
    fn parts(&self) -> Vec<&[u8]> {
        self.batches
            .iter()
            .flat_map(|(head, body)| [head.as_slice(), body])
            .collect()
    }
}

enum Prepared<'a> {
    Write(PreparedAppend<'a>),
    Duplicate { base_offset: i64, last_offset: i64 },
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
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            storage,
            config: RwLock::new(config),
            segments: RwLock::new(segments),
            writer: Mutex::new(WriterState { producers, active }),
            flush_lock: Mutex::new(()),
            pending_roll: Mutex::new(None),
            // Recovery wrote a checkpoint naming the active segment.
            sealed_offset: AtomicI64::new(active_base_offset),
            log_start_offset: AtomicI64::new(log_start_offset),
            log_end_offset: AtomicI64::new(recovered.log_end_offset),
            // Recovery fsyncs whatever it verified.
            flushed_offset: AtomicI64::new(recovered.log_end_offset),
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
        })
    }

    /// Appends one or more concatenated v2 batches, assigning offsets from the log end offset
    /// by rewriting each batch's base offset (nothing else changes, so CRCs stay valid).
    ///
    /// All batches are checked before anything is written: header fields, lengths, CRC32C and
    /// idempotent-producer rules. The append is all or nothing.
    ///
    /// Errors: `EmptyAppend`; `CorruptBatch` for a malformed batch; `InvalidProducerEpoch`,
    /// `OutOfOrderSequence`, `DuplicateInMultiBatchAppend` for producer violations; `Io` if the
    /// write failed (the file is cut back, nothing becomes visible).
    pub fn append(&self, batches: &[u8]) -> Result<AppendOutcome, StorageError> {
        self.append_with_time(batches, None, CrcCheck::Verify)
    }

    /// [`PartitionLog::append`], stamping every batch with LogAppendTime `timestamp_ms` when
    /// given: the timestamp-type attribute is set, the max timestamp becomes `timestamp_ms` and
    /// the CRC is recomputed (after the client's CRC was verified). `crc` says whether the
    /// client's CRC still needs verifying here.
    ///
    /// Errors: as for `append` (no CRC mismatch with [`CrcCheck::VerifiedByCaller`]).
    pub fn append_with_time(
        &self,
        batches: &[u8],
        log_append_time_ms: Option<i64>,
        crc: CrcCheck,
    ) -> Result<AppendOutcome, StorageError> {
        if batches.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        let config = self.config();
        let mut writer = lock(&self.writer);
        self.check_healthy()?;
        writer
            .producers
            .set_expiration_ms(config.producer_id_expiration_ms);
        let base_offset = self.log_end_offset();
        let prepared = match prepare_append(
            batches,
            base_offset,
            &writer.producers,
            log_append_time_ms,
            crc,
        )? {
            Prepared::Write(prepared) => prepared,
            Prepared::Duplicate {
                base_offset,
                last_offset,
            } => {
                return Ok(AppendOutcome::Duplicate {
                    base_offset,
                    last_offset,
                })
            }
        };
        let next_offset = prepared
            .headers
            .last()
            .map_or(base_offset, |h| h.last_offset().saturating_add(1));
        let segment = self
            .segment_for_append(&mut writer, &config, prepared.size_bytes, next_offset)
            .map_err(|error| self.fail(error))?;
        if let Err(failed) = segment.append(
            &prepared.parts(),
            &prepared.headers,
            config.index_interval_bytes,
        ) {
            // A write that failed and was cut off cleanly (ENOSPC) leaves the log as it was:
            // this append fails, the next may succeed. One that could not be undone leaves
            // the segment in an unknown state.
            return Err(if failed.undone {
                failed.error
            } else {
                self.fail(failed.error)
            });
        }
        writer.producers.commit(prepared.producers);
        self.log_end_offset.store(next_offset, Ordering::Release);
        self.appended_bytes
            .fetch_add(prepared.size_bytes, Ordering::Relaxed);
        if self.zero_tail.load(Ordering::Relaxed) {
            keep_zero_tail(&segment, &config);
        }
        Ok(AppendOutcome::Appended {
            base_offset,
            last_offset: next_offset - 1,
        })
    }

    /// The active segment, after rolling it if an append of `size_bytes` ending before
    /// `next_offset` must go into a new one. Called with the writer lock held.
    fn segment_for_append(
        &self,
        writer: &mut WriterState,
        config: &LogConfig,
        size_bytes: u64,
        next_offset: i64,
    ) -> Result<Arc<LogSegment>, StorageError> {
        let active = Arc::clone(&writer.active);
        let current_bytes = active.size_bytes();
        if current_bytes == 0 {
            return Ok(active);
        }
        let grown_bytes = current_bytes.saturating_add(size_bytes);
        // Index entries store u32 relative offsets and positions; roll before either overflows.
        let relative_overflow = next_offset.saturating_sub(active.base_offset())
            > i64::from(u32::MAX)
            || grown_bytes > u64::from(u32::MAX);
        let roll = grown_bytes > config.segment_bytes
            || now_ms().saturating_sub(active.created_at_ms()) >= config.segment_ms
            || active.indexes_full()
            || relative_overflow;
        if !roll {
            return Ok(active);
        }
        writer.active = self.roll(&active, &writer.producers, config)?;
        Ok(Arc::clone(&writer.active))
    }

    /// Seals `active` (fsync of its data) and starts a new segment at the log end offset. The
    /// producer snapshot and checkpoint that let recovery skip the sealed segment are left to
    /// the next `flush` (see the module docs).
    fn roll(
        &self,
        active: &Arc<LogSegment>,
        producers: &ProducerStateManager,
        config: &LogConfig,
    ) -> Result<Arc<LogSegment>, StorageError> {
        let base_offset = self.log_end_offset();
        active.write_final_time_entry()?;
        // Recovery takes a sealed segment's file length as its size.
        active.trim_zero_tail()?;
        {
            // Under the flush lock: a flush that failed meanwhile must not be followed by a
            // published offset.
            let _flushing = lock(&self.flush_lock);
            // The one fsync a roll cannot defer: nothing reaches the new segment before the
            // sealed one is on disk, so a crash can only tear the end of the last segment
            // (recovery's torn-tail versus mid-log rule relies on it).
            active.sync()?;
            // Its directory entry too, if no flush has synced it since it was created.
            self.make_entries_durable(std::slice::from_ref(active))?;
            self.check_healthy()?;
            // Every earlier segment was synced when it rolled, so all offsets below are
            // durable.
            self.flushed_offset.fetch_max(base_offset, Ordering::AcqRel);
        }
        let segment = Arc::new(LogSegment::create(
            &self.storage,
            &self.dir,
            base_offset,
            config.segment_index_bytes,
        )?);
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&segment));
        let roll = PendingRoll {
            sealed: vec![Arc::clone(active)],
            producer_snapshot: producers.snapshot(base_offset),
            base_offset,
        };
        let mut pending = lock(&self.pending_roll);
        match pending.as_mut() {
            Some(earlier) => earlier.absorb(roll),
            None => *pending = Some(roll),
        }
        tracing::debug!(path = %segment.log_path().display(), "rolled to a new segment");
        Ok(segment)
    }

    /// Does the durability work rolls still owe (a `flush` of whatever that needs), so that
    /// retention, DeleteRecords and the cleaner, which act only on sealed segments, see every
    /// segment but the active one as sealed.
    fn seal_rolled_segments(&self) -> Result<(), StorageError> {
        if self.roll_pending() {
            // An offset below every log: nothing but the roll's work forces an fsync.
            self.flush(i64::MIN)?;
        }
        Ok(())
    }

    /// Whether a roll is waiting for a `flush` to make it durable (the periodic flush then runs
    /// even for a partition whose `flush.ms` is not yet due).
    pub fn roll_pending(&self) -> bool {
        lock(&self.pending_roll).is_some()
    }

    /// Makes every offset up to and including `offset` durable (fdatasync). Concurrent callers
    /// share one fsync: whoever gets the flush lock syncs everything written so far, and the
    /// others then find their offset already covered. An `offset` at or beyond the log end
    /// flushes everything written so far.
    ///
    /// Errors: `Io` if an fsync fails (the log should then be taken offline).
    pub fn flush(&self, offset: i64) -> Result<(), StorageError> {
        let _flushing = lock(&self.flush_lock);
        self.check_healthy()?;
        // A roll recorded after this waits for the next flush; the segments it sealed were
        // synced by the roll itself.
        let pending = lock(&self.pending_roll).take();
        let flushed = self.flushed_offset();
        if flushed > offset && pending.is_none() {
            return Ok(());
        }
        self.sync_dirty_segments(flushed, pending.as_ref())
            // Not retried: after a failed fsync the kernel may have dropped the very pages a
            // retry would claim durable.
            .map_err(|error| self.fail(error))
    }

    /// `Ok` unless a failed write or fsync took the log offline.
    ///
    /// Errors: `LogFailed`, naming the first failure.
    pub fn check_healthy(&self) -> Result<(), StorageError> {
        match self.failure.get() {
            Some(cause) => Err(StorageError::LogFailed {
                dir: self.dir.clone(),
                cause: Arc::clone(cause),
            }),
            None => Ok(()),
        }
    }

    /// Takes the log offline after `error`, a failed write, fsync or write-out (the first
    /// failure is kept as the cause), and returns the error to report.
    pub(crate) fn fail(&self, error: StorageError) -> StorageError {
        if let StorageError::LogFailed { .. } = error {
            return error;
        }
        let mut first = false;
        let cause = self.failure.get_or_init(|| {
            first = true;
            Arc::new(error)
        });
        if first {
            tracing::error!(dir = %self.dir.display(), error = %cause,
                "a write or fsync failed: the log is offline until it is reopened through recovery");
        }
        StorageError::LogFailed {
            dir: self.dir.clone(),
            cause: Arc::clone(cause),
        }
    }

    /// Whether a failed write or fsync took the log offline (see [`StorageError::LogFailed`]).
    pub fn is_failed(&self) -> bool {
        self.failure.get().is_some()
    }

    /// fsyncs the directory if any of `segments` was created since the last directory fsync,
    /// and, once per opening, the directory's parent (the partition directory may be new, or
    /// left by a crash before its entry was synced), so that no offset in them is reported
    /// flushed while a crash could drop their files.
    fn make_entries_durable(&self, segments: &[Arc<LogSegment>]) -> Result<(), StorageError> {
        if segments.is_empty() {
            // Nothing to publish (a log closed or flushed with nothing written): no fsync.
            return Ok(());
        }
        if !self.directory_durable.load(Ordering::Acquire) {
            if let Some(parent) = self.dir.parent() {
                self.storage.sync_dir(parent)?;
            }
            self.directory_durable.store(true, Ordering::Release);
        }
        if segments.iter().all(|s| s.entry_durable()) {
            return Ok(());
        }
        self.storage.sync_dir(&self.dir)?;
        for segment in segments {
            segment.mark_entry_durable();
        }
        Ok(())
    }

    /// Plans a [`PartitionLog::flush`] up to `offset` that a write-out and a device cache
    /// flush shared with other logs can do instead of an fdatasync (see
    /// `crate::group_flush`): possible when no roll is pending and every unflushed byte lies
    /// in the active segment, overwriting its durable layout
    /// (`LogSegment::overwrites_durable_layout`). Does no I/O.
    pub(crate) fn plan_write_out(&self, offset: i64) -> FlushPlan {
        let _flushing = lock(&self.flush_lock);
        if self.roll_pending() || self.is_failed() {
            return FlushPlan::Fsync;
        }
        let flushed = self.flushed_offset();
        if flushed > offset {
            return FlushPlan::Durable;
        }
        // Read before the segment's size: appends publish the size first, so the size read
        // below covers every byte up to `target`.
        let target = self.log_end_offset();
        let segments = self.read_segments();
        let mut dirty = segments.iter().filter(|s| s.next_offset() > flushed);
        let (Some(segment), None) = (dirty.next(), dirty.next()) else {
            return FlushPlan::Fsync;
        };
        if !segment.entry_durable() || !self.directory_durable.load(Ordering::Acquire) {
            return FlushPlan::Fsync;
        }
        match segment.overwrites_durable_layout(segment.size_bytes()) {
            Some(device) => FlushPlan::WriteOut(WriteOut {
                segment: Arc::clone(segment),
                target,
                device,
            }),
            None => FlushPlan::Fsync,
        }
    }

    /// Publishes a [`WriteOut`] as flushed, once its pages are written out and the device's
    /// cache flushed since.
    pub(crate) fn finish_write_out(&self, write_out: &WriteOut) -> Result<(), StorageError> {
        let _flushing = lock(&self.flush_lock);
        self.check_healthy()?;
        self.flushed_offset
            .fetch_max(write_out.target, Ordering::AcqRel);
        self.note_flushed_bytes();
        Ok(())
    }

    /// fsyncs every segment holding offsets at or above `flushed`, does the work `pending`
    /// (rolls) owes, makes the segments' directory entries durable, then publishes the log end
    /// offset read before the first fsync as flushed. Called with the flush lock held.
    fn sync_dirty_segments(
        &self,
        flushed: i64,
        pending: Option<&PendingRoll>,
    ) -> Result<(), StorageError> {
        let target = self.log_end_offset();
        let dirty: Vec<Arc<LogSegment>> = self
            .read_segments()
            .iter()
            .filter(|s| s.next_offset() > flushed)
            .cloned()
            .collect();
        for segment in &dirty {
            segment.sync()?;
        }
        if let Some(roll) = pending {
            self.finish_roll(roll)?;
            // Its checkpoint's directory fsync came after every segment of `dirty` was
            // created, so it made their entries durable too.
            for segment in &dirty {
                segment.mark_entry_durable();
            }
        }
        // A segment a roll created since the last directory fsync (a roll whose work an
        // earlier flush took): its entry before any offset in it counts.
        self.make_entries_durable(&dirty)?;
        self.flushed_offset.fetch_max(target, Ordering::AcqRel);
        self.note_flushed_bytes();
        Ok(())
    }

    /// Updates the average bytes an fsync covers, and with it whether appends keep a zero tail
    /// (see [`ZERO_TAIL_FLUSHED_BYTES_MAX`]). Called with the flush lock held, after an fsync.
    fn note_flushed_bytes(&self) {
        let appended = self.appended_bytes.load(Ordering::Relaxed);
        let covered = appended.saturating_sub(
            self.appended_bytes_at_flush
                .swap(appended, Ordering::Relaxed),
        );
        // An exponential average over about the last eight fsyncs, so that one small or large
        // request does not switch the tail on or off.
        let previous = self.flushed_bytes_average.load(Ordering::Relaxed);
        let average = previous - previous / 8 + covered.min(u64::MAX / 2) / 8;
        self.flushed_bytes_average.store(average, Ordering::Relaxed);
        self.zero_tail
            .store(average < ZERO_TAIL_FLUSHED_BYTES_MAX, Ordering::Relaxed);
    }

    /// The durability work of `roll`, once its sealed segments' data is fsynced: their time
    /// indexes, then the producer snapshot and the checkpoint at the roll's offset. Only then
    /// may retention and the cleaner see those segments as closed: had the checkpoint still
    /// named a byte position inside one, a crash after the cleaner rewrote it would make
    /// recovery start mid-batch in the rewritten file.
    fn finish_roll(&self, roll: &PendingRoll) -> Result<(), StorageError> {
        for segment in &roll.sealed {
            segment.sync_sealed_indexes()?;
        }
        self.write_recovery_point(
            roll.producer_snapshot.clone(),
            RecoveryCheckpoint {
                recovery_point_offset: roll.base_offset,
                segment_base_offset: roll.base_offset,
                position_bytes: 0,
            },
        )?;
        self.sealed_offset
            .fetch_max(roll.base_offset, Ordering::AcqRel);
        Ok(())
    }

    /// Writes a producer snapshot and a recovery checkpoint (one directory fsync for both),
    /// then drops old snapshots. Either file may survive a crash without the other: a
    /// checkpoint without its snapshot only makes recovery replay from an older snapshot.
    fn write_recovery_point(
        &self,
        snapshot: ProducerSnapshot,
        checkpoint: RecoveryCheckpoint,
    ) -> Result<(), StorageError> {
        let (snapshot_path, snapshot_bytes) = snapshot.file(&self.dir);
        let (checkpoint_path, checkpoint_bytes) = checkpoint.file(&self.dir);
        write_all_atomically(
            &self.storage,
            &[
                (&snapshot_path, &snapshot_bytes),
                (&checkpoint_path, &checkpoint_bytes),
            ],
        )?;
        prune_snapshots(&self.storage, &self.dir)
    }

    /// Whole batches starting with the batch containing `offset`, each with its last offset
    /// below `upper_bound_offset` (exclusive; the high watermark), at most `max_bytes` in
    /// total, except that the first batch is returned whole even if larger (KIP-74).
    /// Empty when `offset == log_end_offset` or nothing is below the bound.
    ///
    /// Errors: `OffsetOutOfRange` when `offset` is outside `[log_start_offset,
    /// log_end_offset]`; `Io`; `CorruptSegment` if committed bytes are damaged.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound_offset: i64,
    ) -> Result<Bytes, StorageError> {
        self.read_batches(offset, max_bytes, upper_bound_offset, FirstBatch::Whole)
    }

    /// [`PartitionLog::read`] without the first-batch exception: never more than `max_bytes`,
    /// so empty when the first batch alone is larger. For a Fetch's later partitions, once its
    /// first batch has been granted (KIP-74: only the response's first batch may exceed).
    ///
    /// Errors: as [`PartitionLog::read`].
    pub fn read_at_most(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound_offset: i64,
    ) -> Result<Bytes, StorageError> {
        self.read_batches(
            offset,
            max_bytes,
            upper_bound_offset,
            FirstBatch::WithinLimit,
        )
    }

    fn read_batches(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound_offset: i64,
        first_batch: FirstBatch,
    ) -> Result<Bytes, StorageError> {
        self.check_healthy()?;
        let log_end_offset = self.log_end_offset();
        let log_start_offset = self.log_start_offset();
        if offset < log_start_offset || offset > log_end_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }
        if offset == log_end_offset || offset >= upper_bound_offset {
            return Ok(Bytes::new());
        }
        // The segment holding `offset`, then the later ones in case `offset` falls in a gap
        // after the last batch of the first (compaction leaves gaps and may empty a segment).
        let candidates: Vec<Arc<LogSegment>> = {
            let segments = self.read_segments();
            let first = segments
                .partition_point(|s| s.base_offset() <= offset)
                .saturating_sub(1);
            segments.iter().skip(first).cloned().collect()
        };
        for segment in candidates {
            if let Some(bytes) = segment.read(offset, max_bytes, upper_bound_offset, first_batch)? {
                return Ok(bytes);
            }
        }
        Ok(Bytes::new())
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

    /// How many of the oldest `segments` (a snapshot of the list) are sealed (see
    /// `sealed_offset`): never the active segment.
    fn sealed_count(&self, segments: &[Arc<LogSegment>]) -> usize {
        let sealed_offset = self.sealed_offset.load(Ordering::Acquire);
        segments
            .iter()
            .take(segments.len().saturating_sub(1))
            .take_while(|s| s.base_offset() < sealed_offset)
            .count()
    }

    /// The first record at or after the log start offset whose timestamp is `>= target_ms`
    /// (Kafka's ListOffsets by timestamp, correct for out-of-order CreateTime timestamps):
    /// the time index finds the first batch whose max timestamp reaches the target; a batch
    /// of one record answers from its header, any other is walked by `reader` up to the record
    /// (streaming: see [`RecordReader::find_record`]), or, for a batch whose records do not
    /// decode, the batch's first offset answers. `None` when no record is that late.
    ///
    /// Memory: one stored batch at a time plus what `reader` holds while walking it.
    ///
    /// Errors: `Io`, `CorruptSegment`.
    pub fn offset_for_timestamp(
        &self,
        target_ms: i64,
        reader: &dyn RecordReader,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        self.check_healthy()?;
        let log_start_offset = self.log_start_offset();
        for segment in self.segments_snapshot() {
            if segment.max_timestamp().is_none_or(|(ts, _)| ts < target_ms) {
                continue;
            }
            let Some((start, _)) = segment.find_batch_by_timestamp(target_ms)? else {
                continue;
            };
            for item in segment.headers(start, segment.size_bytes()) {
                let (position, header) = item?;
                if header.max_timestamp < target_ms
                    || header.last_offset() < log_start_offset
                    || header.is_control()
                {
                    continue;
                }
                if let Some(only) = single_record(&header) {
                    return Ok(Some(only));
                }
                let found = find_in_batch(reader, &segment, position, &header, &mut |o, ts| {
                    ts >= target_ms && o >= log_start_offset
                })?;
                match found {
                    // Its max timestamp reaches the target: answer at the batch's granularity.
                    None => {
                        return Ok(Some(TimestampOffset {
                            offset: header.base_offset.max(log_start_offset),
                            timestamp: header.max_timestamp,
                        }))
                    }
                    Some(Some(found)) => return Ok(Some(found)),
                    Some(None) => {}
                }
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp in the log (the first one, if several share it),
    /// for ListOffsets' max-timestamp lookup (-3): the segments' recorded max timestamps pick
    /// the segment, its time index the batch, and a batch of more than one record is walked
    /// (streaming) to the first record carrying that timestamp, as Kafka's
    /// `offsetOfMaxTimestamp` does; the batch's last offset when its records do not decode.
    /// `None` for an empty log.
    ///
    /// Errors: `Io`, `CorruptSegment`.
    pub fn max_timestamp_offset(
        &self,
        reader: &dyn RecordReader,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        self.check_healthy()?;
        let log_start_offset = self.log_start_offset();
        let mut best: Option<(i64, Arc<LogSegment>)> = None;
        for segment in self.segments_snapshot() {
            if let Some((ts, _)) = segment.max_timestamp() {
                if best.as_ref().is_none_or(|(best_ts, _)| ts > *best_ts) {
                    best = Some((ts, segment));
                }
            }
        }
        let Some((max_ts, segment)) = best else {
            return Ok(None);
        };
        let Some((position, header)) = segment.find_batch_by_timestamp(max_ts)? else {
            return Ok(None);
        };
        let offset = match single_record(&header) {
            Some(only) => only.offset,
            None => find_in_batch(reader, &segment, position, &header, &mut |_, ts| {
                ts >= max_ts
            })?
            .flatten()
            .map_or(header.last_offset(), |found| found.offset),
        };
        Ok(Some(TimestampOffset {
            offset: offset.max(log_start_offset),
            timestamp: max_ts,
        }))
    }

    /// Drops the state of idempotent producers expired under `producer.id.expiration.ms` from
    /// memory (they already count as unknown to the sequence checks and are left out of
    /// snapshots); the broker's maintenance pass calls it. Returns how many were dropped.
    pub fn expire_producers(&self) -> usize {
        let config = self.config();
        let mut writer = lock(&self.writer);
        writer
            .producers
            .set_expiration_ms(config.producer_id_expiration_ms);
        writer.producers.remove_expired()
    }

    /// Idempotent producers whose state is held in memory.
    pub fn producer_count(&self) -> usize {
        lock(&self.writer).producers.len()
    }

    /// Moves the log start offset forward to `offset` (DeleteRecords): records below it are no
    /// longer readable, the new start is persisted, and segments wholly below it are deleted.
    /// Returns the (possibly unchanged) log start offset. Never moves it backwards.
    ///
    /// Errors: `OffsetOutOfRange` when `offset` is beyond `high_watermark`; `Io`.
    pub fn delete_records(&self, offset: i64, high_watermark: i64) -> Result<i64, StorageError> {
        if offset > high_watermark || offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                log_end_offset: high_watermark,
            });
        }
        let _writer = lock(&self.writer);
        self.check_healthy()?;
        self.seal_rolled_segments()?;
        self.advance_log_start_offset(offset)
            .and_then(|()| self.delete_segments_below_start())
            .map_err(|error| self.fail(error))?;
        Ok(self.log_start_offset())
    }

    /// Applies retention: deletes closed segments (never the active one) from the oldest on,
    /// while they are past `retention_ms` (by their largest timestamp, against `now_ms`) or the
    /// log without them still holds `retention_bytes`; also segments wholly below the log start
    /// offset. The log start offset moves to the first remaining segment and is persisted
    /// before any file goes. Returns how many segments were deleted.
    ///
    /// Errors: `Io`.
    pub fn apply_retention(
        &self,
        policy: RetentionPolicy,
        now_ms: i64,
    ) -> Result<usize, StorageError> {
        let _writer = lock(&self.writer);
        self.check_healthy()?;
        self.seal_rolled_segments()?;
        self.retain_locked(policy, now_ms)
            .map_err(|error| self.fail(error))
    }

    fn retain_locked(&self, policy: RetentionPolicy, now_ms: i64) -> Result<usize, StorageError> {
        let segments = self.segments_snapshot();
        let closed = self.sealed_count(&segments);
        let mut remaining_bytes: u64 = segments.iter().map(|s| s.size_bytes()).sum();
        let mut expired = 0;
        for segment in segments.iter().take(closed) {
            let by_time = policy.retention_ms >= 0
                && now_ms.saturating_sub(segment.retention_timestamp_ms()) > policy.retention_ms;
            let without = remaining_bytes.saturating_sub(segment.size_bytes());
            let by_size = u64::try_from(policy.retention_bytes).is_ok_and(|limit| without >= limit);
            if !(by_time || by_size) {
                break;
            }
            remaining_bytes = without;
            expired += 1;
        }
        if let Some(next) = segments.get(expired).filter(|_| expired > 0) {
            tracing::info!(dir = %self.dir.display(), segments = expired, new_log_start_offset = next.base_offset(), "retention deletes old segments");
            self.advance_log_start_offset(next.base_offset())?;
        }
        self.delete_segments_below_start()
    }

    /// Compacts the closed segments if `policy` says they are due (see the `cleaner` module):
    /// keeps the last record per key with its offset, drops expired tombstones, swaps each
    /// rewritten segment in atomically. The dirty records whose keys fit in
    /// `policy.dedupe_buffer_bytes` are cleaned now, the rest at the next call (Kafka's rule). Appends and reads go on meanwhile; the writer lock is
    /// taken only for each swap. `None` when nothing was due.
    ///
    /// Errors: `Io`, `CorruptSegment`, `UnreadableRecords` (the log is left as it was, or
    /// with some segments cleaned: both are valid logs).
    pub fn clean(
        &self,
        policy: &CompactionPolicy,
        reader: &dyn RecordReader,
        now_ms: i64,
    ) -> Result<Option<CleanStats>, StorageError> {
        let _cleaning = lock(&self.cleaner_lock);
        self.check_healthy()?;
        self.seal_rolled_segments()?;
        self.clean_locked(policy, reader, now_ms)
            .map_err(|error| match error {
                // Damaged data is reported, not fatal: the log was left as it was.
                StorageError::Io { .. } => self.fail(error),
                other => other,
            })
    }

    fn clean_locked(
        &self,
        policy: &CompactionPolicy,
        reader: &dyn RecordReader,
        now_ms: i64,
    ) -> Result<Option<CleanStats>, StorageError> {
        let first_dirty = self.first_dirty_offset.load(Ordering::Acquire);
        let mut segments = self.segments_snapshot();
        segments.truncate(self.sealed_count(&segments));
        let tombstones_expired = now_ms
            .saturating_sub(self.kept_tombstone_ms.load(Ordering::Acquire))
            > policy.delete_retention_ms;
        let Some(cleanable) =
            cleanable_segments(&segments, first_dirty, policy, now_ms, tombstones_expired)
        else {
            return Ok(None);
        };
        let mut kept_tombstone_ms = i64::MAX;
        let (map, map_end) =
            build_offset_map(&cleanable, first_dirty, policy.dedupe_buffer_bytes, reader)?;
        let cleanable_end = cleanable.last().map_or(map_end, |s| s.next_offset());
        if map_end < cleanable_end {
            tracing::info!(dir = %self.dir.display(), keys = map.len(), map_bytes = map.size_bytes(), cleaned_up_to = map_end, dirty_up_to = cleanable_end, "the dedupe buffer is full: the rest is cleaned next round");
        }
        // Segments wholly past what the map covers wait for the next clean.
        let cleanable: Vec<Arc<LogSegment>> = cleanable
            .into_iter()
            .filter(|s| s.base_offset() < map_end)
            .collect();
        let mut stats = CleanStats {
            map_keys: map.len() as u64,
            map_bytes: map.size_bytes(),
            ..CleanStats::default()
        };
        for segment in &cleanable {
            let drop_tombstones = now_ms.saturating_sub(segment.retention_timestamp_ms())
                > policy.delete_retention_ms;
            let cleaned = write_cleaned(segment, &map, map_end, drop_tombstones, reader)?;
            let (swap_path, removed, new_size) = (
                cleaned.swap_path,
                cleaned.records_removed,
                cleaned.size_bytes,
            );
            if cleaned.kept_tombstones > 0 {
                kept_tombstone_ms = kept_tombstone_ms.min(segment.retention_timestamp_ms());
            }
            let config = self.config();
            let _writer = lock(&self.writer);
            let position = self
                .read_segments()
                .iter()
                .position(|s| Arc::ptr_eq(s, segment));
            let Some(position) = position else {
                // Retention or DeleteRecords removed it meanwhile.
                self.storage.remove_file(&swap_path).at(&swap_path)?;
                continue;
            };
            finish_swap(&self.storage, &self.dir, &swap_path)?;
            let fresh = LogSegment::open(
                &self.storage,
                &self.dir,
                segment.base_offset(),
                config.segment_index_bytes,
            )?;
            fresh.set_recovered(new_size, segment.next_offset())?;
            fresh.rebuild_index(new_size, config.index_interval_bytes)?;
            fresh.ensure_time_index(new_size, config.index_interval_bytes, false)?;
            fresh.seal_indexes()?;
            // `finish_swap` fsynced the directory after the rename.
            fresh.mark_entry_durable();
            let fresh = Arc::new(fresh);
            if let Some(slot) = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(position)
            {
                *slot = fresh;
            }
            stats.segments += 1;
            stats.records_removed += removed;
            stats.bytes_before += segment.size_bytes();
            stats.bytes_after += new_size;
        }
        self.kept_tombstone_ms
            .store(kept_tombstone_ms, Ordering::Release);
        self.first_dirty_offset.fetch_max(map_end, Ordering::AcqRel);
        tracing::debug!(dir = %self.dir.display(), ?stats, "cleaned");
        Ok(Some(stats))
    }

    /// Persists and publishes a larger log start offset. Called with the writer lock held.
    fn advance_log_start_offset(&self, offset: i64) -> Result<(), StorageError> {
        if offset <= self.log_start_offset() {
            return Ok(());
        }
        write_log_start_offset(&self.storage, &self.dir, offset)?;
        self.log_start_offset.store(offset, Ordering::Release);
        Ok(())
    }

    /// Deletes closed segments whose every offset is below the log start offset. Called with
    /// the writer lock held (so no roll runs concurrently). Readers holding a deleted
    /// segment's `Arc` keep reading from its open file.
    fn delete_segments_below_start(&self) -> Result<usize, StorageError> {
        let log_start_offset = self.log_start_offset();
        let doomed: Vec<Arc<LogSegment>> = {
            let mut segments = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let count = segments
                .iter()
                .skip(1)
                .take_while(|s| s.base_offset() <= log_start_offset)
                .count()
                .min(self.sealed_count(&segments));
            segments.drain(..count).collect()
        };
        for segment in &doomed {
            segment.delete_files()?;
        }
        if !doomed.is_empty() {
            self.storage.sync_dir(&self.dir)?;
        }
        Ok(doomed.len())
    }

    fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<LogSegment>>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The one record of a data batch holding a single record: its offset and timestamp are the
/// batch's (the max timestamp of one record is its own), so no record need be read.
fn single_record(header: &BatchHeader) -> Option<TimestampOffset> {
    (header.last_offset_delta == 0 && header.records_count == 1 && !header.is_control()).then_some(
        TimestampOffset {
            offset: header.base_offset,
            timestamp: header.max_timestamp,
        },
    )
}

/// The first record of the batch at `position` that `wanted(offset, timestamp)` accepts, found
/// by `reader`'s streaming walk; `None` (logged) when the batch's records do not decode.
fn find_in_batch(
    reader: &dyn RecordReader,
    segment: &LogSegment,
    position: u64,
    header: &BatchHeader,
    wanted: &mut dyn FnMut(i64, i64) -> bool,
) -> Result<Option<Option<TimestampOffset>>, StorageError> {
    let batch = segment.read_batch(position, header)?;
    Ok(match reader.find_record(&batch, wanted) {
        Ok(found) => Some(found.map(|(offset, timestamp)| TimestampOffset { offset, timestamp })),
        Err(error) => {
            tracing::warn!(path = %segment.log_path().display(), position, %error, "stored batch whose records do not decode");
            None
        }
    })
}

/// The records of a stored batch, or `None` (logged) when they do not decode: a compressed
/// batch accepted on its header and CRC (the broker's relaxed produce validation) is served as
/// stored, and the lookups that look inside batches fall back to the batch's own fields.
pub(crate) fn readable_records(
    reader: &dyn RecordReader,
    segment: &LogSegment,
    position: u64,
    batch: &[u8],
) -> Option<Vec<crate::records::RecordSummary>> {
    match reader.records(batch) {
        Ok(records) => Some(records),
        Err(error) => {
            tracing::warn!(path = %segment.log_path().display(), position, %error, "stored batch whose records do not decode");
            None
        }
    }
}

/// Keeps zeros ahead of the active segment's end (see [`ZERO_TAIL_FLUSHED_BYTES_MAX`]): when
/// less than half the wanted tail is left, writes it up to the full length again (never past
/// `segment.bytes`). A failure only costs the speed-up, so it is logged, not returned: the
/// append it follows has succeeded.
fn keep_zero_tail(segment: &LogSegment, config: &LogConfig) {
    let end = segment.size_bytes();
    let wanted = end.clamp(ZERO_TAIL_MIN_BYTES, ZERO_TAIL_MAX_BYTES);
    if segment.zeroed_end_bytes() >= end.saturating_add(wanted / 2) {
        return;
    }
    let target = end.saturating_add(wanted).min(config.segment_bytes);
    if let Err(error) = segment.extend_zero_tail(target) {
        tracing::debug!(path = %segment.log_path().display(), %error, "could not extend the zero tail");
    }
}

/// Parses and checks every batch of `input`, copying only its header to assign offsets from
/// `base_offset` (and stamp LogAppendTime), and stages producer updates. Writes nothing.
fn prepare_append<'a>(
    input: &'a [u8],
    base_offset: i64,
    producers: &ProducerStateManager,
    log_append_time_ms: Option<i64>,
    crc: CrcCheck,
) -> Result<Prepared<'a>, StorageError> {
    let mut batches = Vec::new();
    let mut headers = Vec::new();
    let mut pending = PendingProducerUpdates::default();
    let mut next_offset = base_offset;
    let mut position = 0usize;
    while position < input.len() {
        let corrupt = |defect| StorageError::CorruptBatch {
            position: position as u64,
            defect,
        };
        let rest = input.get(position..).unwrap_or_default();
        let mut header = BatchHeader::parse(rest).map_err(corrupt)?;
        let size = usize::try_from(header.size_bytes()).unwrap_or(usize::MAX);
        let truncated = |needed_bytes| crate::error::BatchDefect::Truncated {
            needed_bytes,
            available_bytes: rest.len() as u64,
        };
        let batch = rest
            .get(..size)
            .ok_or(truncated(header.size_bytes()))
            .map_err(corrupt)?;
        if crc == CrcCheck::Verify {
            verify_crc(batch).map_err(corrupt)?;
        }
        let (head, body) = batch
            .split_first_chunk::<HEADER_SIZE_BYTES>()
            .ok_or(truncated(HEADER_SIZE_BYTES as u64))
            .map_err(corrupt)?;
        let mut head = *head;
        set_base_offset(&mut head, next_offset).map_err(corrupt)?;
        header.base_offset = next_offset;
        if let Some(timestamp_ms) = log_append_time_ms {
            set_log_append_time_split(&mut head, body, timestamp_ms).map_err(corrupt)?;
            header = BatchHeader::parse(&head).map_err(corrupt)?;
        }
        match producers.validate(&mut pending, &header)? {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } if size == input.len() => {
                return Ok(Prepared::Duplicate {
                    base_offset,
                    last_offset,
                })
            }
            SequenceCheck::Duplicate { .. } => {
                return Err(StorageError::DuplicateInMultiBatchAppend {
                    producer_id: header.producer_id,
                })
            }
        }
        next_offset = header.last_offset().saturating_add(1);
        headers.push(header);
        batches.push((head, body));
        position += size;
    }
    Ok(Prepared::Write(PreparedAppend {
        batches,
        size_bytes: input.len() as u64,
        headers,
        producers: pending,
    }))
}

#[cfg(test)]
#[path = "partition_log_tests.rs"]
mod tests;
