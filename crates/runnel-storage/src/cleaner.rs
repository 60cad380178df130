//! The log cleaner (`cleanup.policy=compact`): rewrites closed segments keeping only the last
//! record of each key, with the offsets they had (gaps are normal in a compacted log).
//!
//! Rules, following Kafka's `LogCleaner`:
//! - the active segment is never touched; neither is any segment whose largest timestamp is
//!   younger than `min.compaction.lag.ms` (nor any after it: the cleanable range is a prefix);
//! - a clean runs when the dirty bytes (segments not cleaned since this log was opened or last
//!   cleaned) are at least `min.cleanable.dirty.ratio` of the cleanable bytes, or when a dirty
//!   segment is older than `max.compaction.lag.ms`;
//! - a tombstone (null value) that is the last record of its key is kept until its segment's
//!   largest timestamp is older than `delete.retention.ms`, so consumers can see the delete;
//! - control batches (transaction markers) and keyless records are kept as they are.
//!
//! Crash safety: each segment is rewritten to `<base>.log.cleaned` and fsynced, renamed to
//! `<base>.log.swap` (the commit point: a `.swap` file is complete), then renamed over
//! `<base>.log`. Recovery deletes `.cleaned` leftovers and finishes any `.swap`. Segments are
//! swapped in offset order, so a record is only ever dropped after every later record that
//! supersedes it is in place: a crash between two swaps leaves a log that is merely less clean.
//!
//! Records are read and rewritten through the broker-supplied [`RecordReader`] (see
//! `records.rs` for why storage has no record parser of its own).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch_header::BatchHeader;
use crate::error::{IoResultExt, StorageError};
use crate::io::Storage;
use crate::partition_log::readable_records;
use crate::records::RecordReader;
use crate::segment::LogSegment;

/// Suffix of a cleaned segment being written (incomplete; deleted on open).
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a complete cleaned segment waiting to replace its original (finished on open).
pub(crate) const SWAP_SUFFIX: &str = ".swap";

/// When and how a compacted partition is cleaned (Kafka's topic configs of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionPolicy {
    /// `min.cleanable.dirty.ratio`: dirty share of the cleanable bytes needed to clean.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment is cleanable only once its newest record is older.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone is kept after its segment's newest record.
    pub delete_retention_ms: i64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 60 * 60 * 1000,
        }
    }
}

/// What one clean did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Segments rewritten.
    pub segments: usize,
    /// Records dropped (superseded, or expired tombstones).
    pub records_removed: u64,
    /// Bytes of the rewritten segments before and after.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
}

/// The segments to clean: a prefix of `segments`, which must all be closed (sealed). Returns
/// them when the policy says to clean now. `first_dirty_offset` is where uncleaned data begins; `force`
/// cleans even without dirty data (kept tombstones have expired).
pub(crate) fn cleanable_segments(
    segments: &[Arc<LogSegment>],
    first_dirty_offset: i64,
    policy: &CompactionPolicy,
    now_ms: i64,
    force: bool,
) -> Option<Vec<Arc<LogSegment>>> {
    let cleanable: Vec<Arc<LogSegment>> = segments
        .iter()
        .take_while(|s| {
            now_ms.saturating_sub(s.retention_timestamp_ms()) >= policy.min_compaction_lag_ms
        })
        .cloned()
        .collect();
    let total_bytes: u64 = cleanable.iter().map(|s| s.size_bytes()).sum();
    let dirty: Vec<&Arc<LogSegment>> = cleanable
        .iter()
        .filter(|s| s.next_offset() > first_dirty_offset && s.size_bytes() > 0)
        .collect();
    let dirty_bytes: u64 = dirty.iter().map(|s| s.size_bytes()).sum();
    if total_bytes == 0 {
        return None;
    }
    if force {
        return Some(cleanable);
    }
    if dirty_bytes == 0 {
        return None;
    }
    let ratio = dirty_bytes as f64 / total_bytes as f64;
    let overdue = dirty
        .iter()
        .any(|s| now_ms.saturating_sub(s.retention_timestamp_ms()) > policy.max_compaction_lag_ms);
    (ratio >= policy.min_cleanable_dirty_ratio || overdue).then_some(cleanable)
}

/// Key → offset of its last record, over `segments`.
pub(crate) fn build_offset_map(
    segments: &[Arc<LogSegment>],
    reader: &dyn RecordReader,
) -> Result<HashMap<Vec<u8>, i64>, StorageError> {
    let mut map = HashMap::new();
    for segment in segments {
        for_each_batch(segment, |position, header, batch| {
            if header.is_control() {
                return Ok(());
            }
            // A batch whose records do not decode is kept whole and shadows no key.
            let records = readable_records(reader, segment, position, batch).unwrap_or_default();
            for record in records {
                if let Some(key) = record.key {
                    map.insert(key, record.offset);
                }
            }
            Ok(())
        })?;
    }
    Ok(map)
}

/// Writes the cleaned copy of `segment` to `<base>.log.cleaned`, fsyncs it and renames it to
/// `<base>.log.swap`.
pub(crate) fn write_cleaned(
    segment: &LogSegment,
    map: &HashMap<Vec<u8>, i64>,
    drop_tombstones: bool,
    reader: &dyn RecordReader,
) -> Result<CleanedSegment, StorageError> {
    let cleaned_path = suffixed(segment.log_path(), CLEANED_SUFFIX);
    let mut out = Vec::new();
    let mut removed = 0u64;
    let mut kept_tombstones = 0u64;
    for_each_batch(segment, |position, header, batch| {
        if header.is_control() {
            out.extend_from_slice(batch);
            return Ok(());
        }
        let Some(records) = readable_records(reader, segment, position, batch) else {
            out.extend_from_slice(batch);
            return Ok(());
        };
        let doomed: Vec<i64> = records
            .iter()
            .filter(|r| match &r.key {
                None => false,
                Some(key) => {
                    let superseded = map.get(key).is_some_and(|&last| last > r.offset);
                    superseded || (r.is_tombstone && drop_tombstones)
                }
            })
            .map(|r| r.offset)
            .collect();
        kept_tombstones += records
            .iter()
            .filter(|r| r.is_tombstone && r.key.is_some() && !doomed.contains(&r.offset))
            .count() as u64;
        if doomed.is_empty() {
            out.extend_from_slice(batch);
            return Ok(());
        }
        removed += doomed.len() as u64;
        let kept = reader
            .retain(batch, &mut |offset| !doomed.contains(&offset))
            .map_err(|source| StorageError::UnreadableRecords {
                path: segment.log_path().to_path_buf(),
                position,
                source,
            })?;
        if let Some(kept) = kept {
            out.extend_from_slice(&kept);
        }
        Ok(())
    })?;
    let storage = segment.storage();
    crate::checkpoint::write_durably(storage, &cleaned_path, &out)?;
    let swap_path = suffixed(segment.log_path(), SWAP_SUFFIX);
    storage.rename(&cleaned_path, &swap_path)?;
    storage.sync_dir(segment.log_path().parent().unwrap_or(Path::new(".")))?;
    Ok(CleanedSegment {
        swap_path,
        records_removed: removed,
        kept_tombstones,
        size_bytes: out.len() as u64,
    })
}

/// A cleaned segment, written and waiting as `.swap`.
pub(crate) struct CleanedSegment {
    pub(crate) swap_path: PathBuf,
    pub(crate) records_removed: u64,
    pub(crate) kept_tombstones: u64,
    pub(crate) size_bytes: u64,
}

/// Replaces `<base>.log` with `swap_path` and removes the stale indexes (rebuilt on open).
pub(crate) fn finish_swap(
    storage: &Storage,
    dir: &Path,
    swap_path: &Path,
) -> Result<PathBuf, StorageError> {
    let name = swap_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let log_name = name.strip_suffix(SWAP_SUFFIX).unwrap_or(name);
    let log_path = dir.join(log_name);
    if let Some(stem) = Path::new(log_name).file_stem().and_then(|s| s.to_str()) {
        for extension in [
            crate::segment::INDEX_EXTENSION,
            crate::segment::TIME_INDEX_EXTENSION,
        ] {
            let path = dir.join(format!("{stem}.{extension}"));
            match storage.remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&path),
                _ => {}
            }
        }
    }
    storage.rename(swap_path, &log_path)?;
    storage.sync_dir(dir)?;
    Ok(log_path)
}

/// Recovery: deletes incomplete `.cleaned` files and completes `.swap` files in `dir`.
pub(crate) fn recover_interrupted_cleaning(
    storage: &Storage,
    dir: &Path,
) -> Result<(), StorageError> {
    for path in storage.list_dir(dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(CLEANED_SUFFIX) {
            tracing::info!(path = %path.display(), "discarding an unfinished cleaned segment");
            storage.remove_file(&path).at(&path)?;
        } else if name.ends_with(SWAP_SUFFIX) {
            tracing::info!(path = %path.display(), "completing an interrupted segment swap");
            finish_swap(storage, dir, &path)?;
        }
    }
    Ok(())
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Calls `f(position, header, batch bytes)` for each committed batch of `segment`.
fn for_each_batch(
    segment: &LogSegment,
    mut f: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    for item in segment.headers(0, segment.size_bytes()) {
        let (position, header) = item?;
        let batch = segment.read_batch(position, &header)?;
        f(position, &header, &batch)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "cleaner_tests.rs"]
mod tests;
