//! Opening a partition directory after a clean or unclean shutdown: find the segments, trust
//! what the recovery checkpoint says was fsynced, verify everything after it batch by batch
//! (length, CRC32C, increasing offsets), cut a torn tail, rebuild indexes, and rebuild producer
//! state from the newest snapshot plus a header-only replay.
//!
//! The first bad batch after the checkpoint is classified (see [`classify_damage`]):
//! - a torn tail, what a crash leaves where data was being written (a short header, a length
//!   running past the end of the file, zeros, or a bad batch with nothing intact after it), is
//!   cut off with a WARN, and later segments, never durable, are deleted;
//! - mid-log corruption, a bad batch of plausible length followed by an intact batch, cannot
//!   come from a crash: it is reported as `CorruptSegment` at ERROR and no `.log` file is cut or
//!   deleted, so an operator can inspect it (cutting would silently drop the intact batches).
//!
//! Zeros from the first bad batch to the end of the last segment are the zero tail a log
//! fsynced in small steps keeps ahead of its appends (`LogSegment::extend_zero_tail`): they
//! are cut like a torn tail, but reported at INFO, since nothing was torn.
//!
//! Bytes below the checkpoint are not re-verified (start-up stays fast); only the index entries
//! of that prefix are checked. A segment shorter than the checkpoint says is the exception: it
//! is verified from its first byte, after an ERROR saying durable data was lost.

use std::path::Path;
use std::sync::Arc;

use crate::batch_header::{claimed_size_bytes, verify_crc, BatchHeader, LOG_OVERHEAD_BYTES};
use crate::checkpoint::{RecoveryCheckpoint, TEMP_SUFFIX};
use crate::error::{BatchDefect, IoResultExt, StorageError};
use crate::io::Storage;
use crate::offset_index::IndexedBatch;
use crate::partition_log::{LogConfig, ZERO_TAIL_MAX_BYTES};
use crate::producer_state::ProducerStateManager;
use crate::segment::{offset_file_name, LogSegment, LOG_EXTENSION};

/// The state of a partition directory after recovery.
#[derive(Debug)]
pub(crate) struct RecoveredLog {
    /// Ordered by base offset; never empty.
    pub(crate) segments: Vec<Arc<LogSegment>>,
    /// The last of `segments`, where appends continue.
    pub(crate) active: Arc<LogSegment>,
    /// One past the last valid offset; everything below it is now fsynced.
    pub(crate) log_end_offset: i64,
}

/// Recovers the log in `dir` (created if missing). See the module docs.
pub(crate) fn recover(
    storage: &Storage,
    dir: &Path,
    config: &LogConfig,
) -> Result<RecoveredLog, StorageError> {
    storage.create_dir_all(dir)?;
    crate::cleaner::recover_interrupted_cleaning(storage, dir)?;
    let base_offsets = scan_directory(storage, dir)?;
    if base_offsets.is_empty() {
        // A new partition. Its directory and segment entries are made durable by its first
        // flush, before any offset counts (`PartitionLog::make_entries_durable`): creating
        // thousands of partitions costs no fsync each.
        let segment = Arc::new(LogSegment::create(
            storage,
            dir,
            0,
            config.segment_index_bytes,
        )?);
        // A new partition holds only its `.log` open, like any other that is not written.
        segment.release_index_files();
        return Ok(RecoveredLog {
            segments: vec![Arc::clone(&segment)],
            active: segment,
            log_end_offset: 0,
        });
    }
    let segments = base_offsets
        .iter()
        .map(|&base| LogSegment::open(storage, dir, base, config.segment_index_bytes).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let checkpoint = usable_checkpoint(storage, dir, &segments)?;

    let mut recovered = Vec::with_capacity(segments.len());
    let mut remaining = segments.into_iter().peekable();
    let mut log_end_offset = 0;
    while let Some(segment) = remaining.next() {
        let next_segment = remaining.peek().map(Arc::as_ref);
        let outcome = recover_segment(&segment, checkpoint, next_segment, config)?;
        log_end_offset = segment.next_offset();
        recovered.push(segment);
        if let Some((position, defect)) = outcome.defect {
            let path = recovered.last().map(|s| s.log_path().display().to_string());
            if outcome.zero_tail && remaining.peek().is_none() {
                tracing::info!(path, position, "cut the zero tail after the last batch");
            } else {
                tracing::warn!(path, position, %defect, "truncated the log at a torn batch");
            }
            for later in remaining.by_ref() {
                // Data after a torn tail is past the checkpoint, and the first batch after the
                // tail (if any) is not intact (else it would be mid-log corruption), so nothing
                // after it can be trusted; a log cannot have holes, so later segments must go.
                tracing::warn!(path = %later.log_path().display(),
                    "DELETING segment after a torn tail in an earlier segment");
                later.delete_files()?;
            }
        }
    }
    // Closed segments whose time index was rebuilt get their final max-timestamp entry.
    for closed in recovered.iter().rev().skip(1) {
        closed.seal_indexes()?;
    }
    for segment in &recovered {
        segment.release_index_files();
    }
    storage.sync_dir(dir)?;
    for segment in &recovered {
        segment.mark_entry_durable();
    }
    let active = match recovered.last() {
        Some(last) => Arc::clone(last),
        // Not reached (`base_offsets` is not empty and segments are only removed after the
        // one being recovered), but an empty segment at the log end is the right fallback.
        None => {
            let segment = Arc::new(LogSegment::create(
                storage,
                dir,
                log_end_offset,
                config.segment_index_bytes,
            )?);
            recovered.push(Arc::clone(&segment));
            segment
        }
    };
    let fresh = RecoveryCheckpoint {
        recovery_point_offset: log_end_offset,
        segment_base_offset: active.base_offset(),
        position_bytes: active.size_bytes(),
    };
    // An empty log with no checkpoint (one never written: its close writes none) stays
    // without one: a checkpoint would spare its next recovery nothing, and writing it would
    // cost every idle partition two fsyncs at every start.
    let nothing_to_spare = checkpoint.is_none() && log_end_offset == 0;
    if checkpoint != Some(fresh) && !nothing_to_spare {
        fresh.write(storage, dir)?;
    }
    Ok(RecoveredLog {
        segments: recovered,
        active,
        log_end_offset,
    })
}

/// Base offsets of the `.log` files in `dir`, ascending; removes leftover temp files.
fn scan_directory(storage: &Storage, dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut base_offsets = Vec::new();
    for path in storage.list_dir(dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(TEMP_SUFFIX) {
            storage.remove_file(&path).at(&path)?;
        } else if path.extension().is_some_and(|e| e == LOG_EXTENSION) {
            if let Some(base) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<i64>().ok())
            {
                base_offsets.push(base);
            }
        }
    }
    base_offsets.sort_unstable();
    Ok(base_offsets)
}

/// The checkpoint, if it names one of `segments`. One naming a segment before the first
/// (deleted by retention) is ignored; one naming a missing later segment means lost data. One
/// whose recovery point lies below the base offset of the segment it names cannot have been
/// written by us (found by fuzzing): it is ignored with a WARN and the whole log is verified,
/// instead of publishing a log end below the segment's first offset.
fn usable_checkpoint(
    storage: &Storage,
    dir: &Path,
    segments: &[Arc<LogSegment>],
) -> Result<Option<RecoveryCheckpoint>, StorageError> {
    let Some(checkpoint) = RecoveryCheckpoint::read(storage, dir)? else {
        return Ok(None);
    };
    if checkpoint.recovery_point_offset < checkpoint.segment_base_offset {
        tracing::warn!(dir = %dir.display(), ?checkpoint,
            "recovery checkpoint inconsistent (recovery point below its segment); scanning the whole log");
        return Ok(None);
    }
    let first_base = segments.first().map_or(0, |s| s.base_offset());
    if segments
        .iter()
        .any(|s| s.base_offset() == checkpoint.segment_base_offset)
    {
        Ok(Some(checkpoint))
    } else if checkpoint.segment_base_offset < first_base {
        Ok(None)
    } else {
        Err(StorageError::CheckpointSegmentMissing {
            path: dir.join(offset_file_name(
                checkpoint.segment_base_offset,
                LOG_EXTENSION,
            )),
        })
    }
}

struct SegmentOutcome {
    /// Where the segment was cut at a torn tail, and why.
    defect: Option<(u64, BatchDefect)>,
    /// What was cut held only zeros (a zero tail, not a torn write).
    zero_tail: bool,
}

/// Recovers one segment: checks the index of the trusted prefix, verifies the rest, cuts a
/// torn tail and publishes the segment's size and next offset. `next_segment` is the one after
/// it, if any.
///
/// Errors: `CorruptSegment` for mid-log corruption (see [`classify_damage`]); the `.log` file
/// is then left as it was. `Io`.
fn recover_segment(
    segment: &LogSegment,
    checkpoint: Option<RecoveryCheckpoint>,
    next_segment: Option<&LogSegment>,
    config: &LogConfig,
) -> Result<SegmentOutcome, StorageError> {
    let file_len = segment.file_len_bytes()?;
    let base = segment.base_offset();
    let next_base = next_segment.map(LogSegment::base_offset);
    let (trusted_bytes, mut next_offset) = match checkpoint {
        Some(cp) if base < cp.segment_base_offset => {
            // Wholly fsynced: its offsets end where the next segment begins.
            (file_len, next_base.unwrap_or(cp.segment_base_offset))
        }
        Some(cp) if base == cp.segment_base_offset && file_len < cp.position_bytes => {
            // Bytes that were fsynced are gone (the file was cut underneath us). Refusing to
            // start would not bring them back and would take every other partition down with
            // this one, so verify the whole segment, keep what is intact and say loudly what
            // was lost: this is an error report, not a silent truncation.
            let lost = StorageError::DurableDataLost {
                path: segment.log_path().to_path_buf(),
                size_bytes: file_len,
                checkpoint_position: cp.position_bytes,
            };
            tracing::error!(error = %lost, "recovering the segment from its first byte");
            (0, base)
        }
        Some(cp) if base == cp.segment_base_offset => (cp.position_bytes, cp.recovery_point_offset),
        _ => (0, base),
    };
    segment.ensure_index(trusted_bytes, config.index_interval_bytes)?;

    let mut position = trusted_bytes;
    let mut defect = None;
    let mut zero_tail = false;
    let mut batch = Vec::new();
    while position < file_len {
        match verify_batch_at(segment, position, file_len, next_offset, &mut batch)? {
            Ok(header) => {
                segment.index().append_batch(
                    IndexedBatch {
                        relative_offset: segment.relative_offset(header.base_offset),
                        position: u32::try_from(position).unwrap_or(u32::MAX),
                        size_bytes: header.size_bytes(),
                    },
                    config.index_interval_bytes,
                )?;
                next_offset = header.last_offset().saturating_add(1);
                position += header.size_bytes();
            }
            Err(found) => {
                defect = Some((position, found));
                break;
            }
        }
    }
    if let Some((position, found)) = &defect {
        let damage = classify_damage(
            segment,
            *position,
            file_len,
            next_offset,
            next_segment,
            &mut batch,
        )?;
        if damage == Damage::MidLog {
            // Returned before `set_recovered`: the file is not cut, and `recover` deletes
            // nothing and writes no checkpoint. Only derived index files may have been
            // rewritten (for this segment and the ones before it).
            let error = StorageError::CorruptSegment {
                path: segment.log_path().to_path_buf(),
                position: *position,
                defect: found.clone(),
            };
            tracing::error!(%error, "an intact batch follows the corrupt one, so this is not a \
                torn write: refusing to open the partition; no file was cut or deleted");
            return Err(error);
        }
        zero_tail = only_zeros(segment, *position, file_len)?;
    }
    segment.set_recovered(position, next_offset)?;
    // A segment wholly before the checkpoint segment was sealed on roll, so its time index
    // can be trusted if it looks sane; any other is rebuilt from its headers (the active
    // segment is at most `segment.bytes` long).
    let wholly_trusted = checkpoint.is_some_and(|cp| base < cp.segment_base_offset);
    segment.ensure_time_index(position, config.index_interval_bytes, wholly_trusted)?;
    if position > trusted_bytes || defect.is_some() {
        // Make what was verified (and any cut) durable before it counts as recovered.
        segment.sync()?;
    }
    Ok(SegmentOutcome { defect, zero_tail })
}

/// True when `[start, end)` of the segment is all zeros and no longer than a zero tail can be
/// (a longer region is reported as a torn tail without reading it all).
fn only_zeros(segment: &LogSegment, start: u64, end: u64) -> Result<bool, StorageError> {
    if end.saturating_sub(start) > ZERO_TAIL_MAX_BYTES {
        return Ok(false);
    }
    let mut chunk = vec![0u8; 64 * 1024];
    let mut at = start;
    while at < end {
        let len = usize::try_from((end - at).min(chunk.len() as u64)).unwrap_or(0);
        let part = chunk.get_mut(..len).unwrap_or_default();
        segment.read_exact_at(part, at)?;
        if part.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += len as u64;
    }
    Ok(true)
}

/// What a bad batch found by recovery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// What a crash leaves where data was being written: cut it off.
    TornTail,
    /// Damaged data with intact data after it: report it, change nothing.
    MidLog,
}

/// Bytes of a page: a write lost in a power failure leaves whole pages of zeros (or of the
/// file's old contents), in any order when the data was not yet fsynced.
pub(crate) const PAGE_SIZE_BYTES: u64 = 4096;

/// Classifies the bad batch at `position` of `segment` (`file_len` bytes long; offsets from
/// `next_offset` on expected). It is mid-log corruption when all of these hold, else a torn
/// tail:
/// - its length field is plausible: at least the v2 header, and the batch ends within the file
///   (a short header or a length past the end is a write cut short);
/// - it holds no whole aligned page of zeros (a page that never reached the disk; an all-zero
///   region has length 0 and already fails the first rule);
/// - an intact batch (header, length within the file, CRC32C, base offset >= `next_offset`)
///   starts right after it: in this segment, or, when the bad batch ends the segment, at the
///   start of `next_segment`.
///
/// A crash does not leave an intact batch after a damaged one: appends are sequential, and a
/// segment was fsynced before the next one was created. Evidence is required before refusing
/// to open, so a damaged length field (the batch then seems to end elsewhere) is a torn tail.
fn classify_damage(
    segment: &LogSegment,
    position: u64,
    file_len: u64,
    next_offset: i64,
    next_segment: Option<&LogSegment>,
    scratch: &mut Vec<u8>,
) -> Result<Damage, StorageError> {
    let mut prefix = [0u8; LOG_OVERHEAD_BYTES];
    if file_len.saturating_sub(position) < LOG_OVERHEAD_BYTES as u64 {
        return Ok(Damage::TornTail);
    }
    segment.read_exact_at(&mut prefix, position)?;
    let Some(end) = claimed_size_bytes(&prefix).map(|size| position.saturating_add(size)) else {
        return Ok(Damage::TornTail);
    };
    if end > file_len {
        return Ok(Damage::TornTail);
    }
    let intact_after = if end < file_len {
        verify_batch_at(segment, end, file_len, next_offset, scratch)?.is_ok()
    } else if let Some(next) = next_segment {
        let next_len = next.file_len_bytes()?;
        next.base_offset() >= next_offset
            && verify_batch_at(next, 0, next_len, next.base_offset(), scratch)?.is_ok()
    } else {
        false
    };
    // Checked last: it reads the whole batch, which only matters when the rest says corrupt.
    if !intact_after || holds_zero_page(segment, position, end)? {
        return Ok(Damage::TornTail);
    }
    Ok(Damage::MidLog)
}

/// True when `[start, end)` of the segment contains a whole page-aligned page of zero bytes.
/// Reads one page at a time (at most the batch, which lies within the file).
fn holds_zero_page(segment: &LogSegment, start: u64, end: u64) -> Result<bool, StorageError> {
    let mut page = [0u8; PAGE_SIZE_BYTES as usize];
    let mut at = start.next_multiple_of(PAGE_SIZE_BYTES);
    while at.saturating_add(PAGE_SIZE_BYTES) <= end {
        segment.read_exact_at(&mut page, at)?;
        if page.iter().all(|&b| b == 0) {
            return Ok(true);
        }
        at += PAGE_SIZE_BYTES;
    }
    Ok(false)
}

/// Reads and fully verifies the batch at `position` (into `scratch`): header, length within
/// `file_len`, base offset >= `expected_min_offset`, CRC32C.
fn verify_batch_at(
    segment: &LogSegment,
    position: u64,
    file_len: u64,
    expected_min_offset: i64,
    scratch: &mut Vec<u8>,
) -> Result<Result<BatchHeader, BatchDefect>, StorageError> {
    let header = match segment.read_header_at(position, file_len)? {
        Ok(header) => header,
        Err(defect) => return Ok(Err(defect)),
    };
    if header.base_offset < expected_min_offset {
        return Ok(Err(BatchDefect::OffsetNotIncreasing {
            found: header.base_offset,
            expected_min: expected_min_offset,
        }));
    }
    // The size was checked against the file length, so this allocation is bounded by it.
    scratch.resize(usize::try_from(header.size_bytes()).unwrap_or(0), 0);
    segment.read_exact_at(scratch, position)?;
    Ok(verify_crc(scratch).map(|()| header))
}

/// Producer state as of `log_end_offset`: the newest usable snapshot, then the headers of
/// every batch after it (from the log start when there is no snapshot).
pub(crate) fn rebuild_producer_state(
    storage: &Storage,
    dir: &Path,
    segments: &[Arc<LogSegment>],
    log_end_offset: i64,
) -> Result<ProducerStateManager, StorageError> {
    let (mut state, snapshot_offset) = ProducerStateManager::load(storage, dir, log_end_offset)?;
    let from_offset = snapshot_offset.unwrap_or(i64::MIN);
    for segment in segments.iter().filter(|s| s.next_offset() > from_offset) {
        let end_bytes = segment.size_bytes();
        let start = match segment.find_batch(from_offset, end_bytes)? {
            Some((position, _)) => position,
            None => continue,
        };
        for item in segment.headers(start, end_bytes) {
            let (_, header) = item?;
            if header.base_offset >= from_offset {
                state.replay(&header);
            }
        }
    }
    Ok(state)
}
