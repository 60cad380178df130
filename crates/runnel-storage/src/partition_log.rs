//! `PartitionLog`: one partition's log as a list of segments with a log start offset, a log end
//! offset and a flushed offset. It assigns offsets, enforces idempotent-producer rules, rolls
//! segments, serves reads and group-commits fsyncs. It is synchronous and knows nothing of
//! Kafka requests, sockets or the high watermark (`read` takes the bound from the caller).
//!
//! Locking, in acquisition order: `writer` (one append, roll or close at a time) then
//! `flush_lock` then `segments` (held only to push or clone `Arc`s). Readers take only a brief
//! `segments` read lock and the per-index lock for a binary search; they never wait for a
//! write or an fsync in progress.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use bytes::Bytes;

use crate::batch_header::{set_base_offset, verify_crc, BatchHeader};
use crate::checkpoint::RecoveryCheckpoint;
use crate::error::StorageError;
use crate::producer_state::{PendingProducerUpdates, ProducerStateManager, SequenceCheck};
use crate::recovery::{rebuild_producer_state, recover};
use crate::segment::{now_ms, LogSegment};

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
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
        }
    }
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
    config: LogConfig,
    /// Ordered by base offset; never empty; the last is the active segment.
    segments: RwLock<Vec<Arc<LogSegment>>>,
    /// The writer's state; holding it makes this thread the one writer.
    writer: Mutex<WriterState>,
    /// Serializes fsyncs so concurrent `flush` callers share one (group commit).
    flush_lock: Mutex<()>,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    flushed_offset: AtomicI64,
}

/// State only the writer touches.
#[derive(Debug)]
struct WriterState {
    producers: ProducerStateManager,
    /// The last segment of `segments`, where appends go.
    active: Arc<LogSegment>,
}

/// A validated append, ready to write: the bytes with offsets assigned, their headers, and
/// the producer updates to apply once written.
struct PreparedAppend {
    bytes: Vec<u8>,
    headers: Vec<BatchHeader>,
    producers: PendingProducerUpdates,
}

enum Prepared {
    Write(PreparedAppend),
    Duplicate { base_offset: i64, last_offset: i64 },
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is published with a single store after it completes, so
    // a panic cannot leave torn state behind: carry on rather than propagate the poison.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PartitionLog {
    /// Opens the log in `dir`, creating the directory if missing, and recovers it (see the
    /// `recovery` module): a torn or corrupt tail after the recovery checkpoint is cut off.
    ///
    /// A segment shorter than the checkpoint says (fsynced bytes lost underneath us) is verified
    /// from its start and cut at its first bad batch, with an ERROR naming the file.
    ///
    /// Errors: `Io` naming the file; `CorruptSegment` or `CheckpointSegmentMissing` when data
    /// below the recovery checkpoint is damaged.
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, StorageError> {
        let recovered = recover(dir, &config)?;
        let producers = rebuild_producer_state(dir, &recovered.segments, recovered.log_end_offset)?;
        let log_start_offset = recovered.segments.first().map_or(0, |s| s.base_offset());
        let active = Arc::clone(&recovered.active);
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments: RwLock::new(recovered.segments),
            writer: Mutex::new(WriterState { producers, active }),
            flush_lock: Mutex::new(()),
            log_start_offset: AtomicI64::new(log_start_offset),
            log_end_offset: AtomicI64::new(recovered.log_end_offset),
            // Recovery fsyncs whatever it verified.
            flushed_offset: AtomicI64::new(recovered.log_end_offset),
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
        if batches.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        let mut writer = lock(&self.writer);
        let base_offset = self.log_end_offset();
        let prepared = match prepare_append(batches, base_offset, &writer.producers)? {
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
        let segment =
            self.segment_for_append(&mut writer, prepared.bytes.len() as u64, next_offset)?;
        segment.append(
            &prepared.bytes,
            &prepared.headers,
            self.config.index_interval_bytes,
        )?;
        writer.producers.commit(prepared.producers);
        self.log_end_offset.store(next_offset, Ordering::Release);
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
        let roll = grown_bytes > self.config.segment_bytes
            || now_ms().saturating_sub(active.created_at_ms()) >= self.config.segment_ms
            || active.index().is_full()
            || relative_overflow;
        if !roll {
            return Ok(active);
        }
        writer.active = self.roll(&active, &writer.producers)?;
        Ok(Arc::clone(&writer.active))
    }

    /// Seals `active` (fsync) and starts a new segment at the log end offset, recording a
    /// producer snapshot and a checkpoint there so recovery need not rescan the old segment.
    fn roll(
        &self,
        active: &LogSegment,
        producers: &ProducerStateManager,
    ) -> Result<Arc<LogSegment>, StorageError> {
        let base_offset = self.log_end_offset();
        active.sync()?;
        // Every earlier segment was synced when it rolled, so all offsets below are durable.
        self.flushed_offset.fetch_max(base_offset, Ordering::AcqRel);
        let segment = Arc::new(LogSegment::create(
            &self.dir,
            base_offset,
            self.config.segment_index_bytes,
        )?);
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&segment));
        tracing::debug!(path = %segment.log_path().display(), "rolled to a new segment");
        producers.write_snapshot(&self.dir, base_offset)?;
        RecoveryCheckpoint {
            recovery_point_offset: base_offset,
            segment_base_offset: base_offset,
            position_bytes: 0,
        }
        .write(&self.dir)?;
        Ok(segment)
    }

    /// Makes every offset up to and including `offset` durable (fdatasync). Concurrent callers
    /// share one fsync: whoever gets the flush lock syncs everything written so far, and the
    /// others then find their offset already covered. An `offset` at or beyond the log end
    /// flushes everything written so far.
    ///
    /// Errors: `Io` if an fsync fails (the log should then be taken offline).
    pub fn flush(&self, offset: i64) -> Result<(), StorageError> {
        let _flushing = lock(&self.flush_lock);
        let flushed = self.flushed_offset();
        if flushed > offset {
            return Ok(());
        }
        let target = self.log_end_offset();
        let dirty: Vec<Arc<LogSegment>> = self
            .read_segments()
            .iter()
            .filter(|s| s.next_offset() > flushed)
            .cloned()
            .collect();
        for segment in dirty {
            segment.sync()?;
        }
        self.flushed_offset.fetch_max(target, Ordering::AcqRel);
        Ok(())
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
        // The segment holding `offset`, and the next one in case `offset` falls in a gap after
        // the last batch of the first (only the active segment can be empty, so two suffice).
        let candidates: Vec<Arc<LogSegment>> = {
            let segments = self.read_segments();
            let first = segments
                .partition_point(|s| s.base_offset() <= offset)
                .saturating_sub(1);
            segments.iter().skip(first).take(2).cloned().collect()
        };
        for segment in candidates {
            if let Some(bytes) = segment.read(offset, max_bytes, upper_bound_offset)? {
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
        let log_end_offset = self.log_end_offset();
        self.flush(log_end_offset)?;
        let active = &writer.active;
        writer.producers.write_snapshot(&self.dir, log_end_offset)?;
        RecoveryCheckpoint {
            recovery_point_offset: log_end_offset,
            segment_base_offset: active.base_offset(),
            position_bytes: active.size_bytes(),
        }
        .write(&self.dir)
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

    fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<LogSegment>>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Parses and checks every batch of `input`, copying it with offsets assigned from
/// `base_offset`, and stages producer updates. Writes nothing.
fn prepare_append(
    input: &[u8],
    base_offset: i64,
    producers: &ProducerStateManager,
) -> Result<Prepared, StorageError> {
    let mut bytes = input.to_vec();
    let mut headers = Vec::new();
    let mut pending = PendingProducerUpdates::default();
    let mut next_offset = base_offset;
    let mut position = 0usize;
    while position < bytes.len() {
        let corrupt = |defect| StorageError::CorruptBatch {
            position: position as u64,
            defect,
        };
        let rest = bytes.get_mut(position..).unwrap_or_default();
        let mut header = BatchHeader::parse(rest).map_err(corrupt)?;
        let size = usize::try_from(header.size_bytes()).unwrap_or(usize::MAX);
        let batch = rest
            .get_mut(..size)
            .ok_or(crate::error::BatchDefect::Truncated {
                needed_bytes: header.size_bytes(),
                available_bytes: (input.len() - position) as u64,
            })
            .map_err(corrupt)?;
        verify_crc(batch).map_err(corrupt)?;
        set_base_offset(batch, next_offset).map_err(corrupt)?;
        header.base_offset = next_offset;
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
        position += size;
    }
    Ok(Prepared::Write(PreparedAppend {
        bytes,
        headers,
        producers: pending,
    }))
}

#[cfg(test)]
#[path = "partition_log_tests.rs"]
mod tests;
