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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{IoResultExt, StorageError};
use crate::io::Storage;
use crate::partition_log::readable_records;
use crate::records::RecordReader;
use crate::segment::LogSegment;

/// Suffix of a cleaned segment being written (incomplete; deleted on open).
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a complete cleaned segment waiting to replace its original (finished on open).
pub(crate) const SWAP_SUFFIX: &str = ".swap";

/// Kafka's default `log.cleaner.dedupe.buffer.size`, 128 MiB.
pub const DEDUPE_BUFFER_BYTES_DEFAULT: u64 = 128 * 1024 * 1024;

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
    /// `log.cleaner.dedupe.buffer.size` (a broker setting): the most memory the key → offset
    /// map of one clean may take. Dirty records whose keys do not fit wait for the next clean.
    pub dedupe_buffer_bytes: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            dedupe_buffer_bytes: DEDUPE_BUFFER_BYTES_DEFAULT,
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
    /// Keys in the key → offset map (dirty records covered by this clean).
    pub map_keys: u64,
    /// Bytes of the key → offset map (at most `log.cleaner.dedupe.buffer.size`).
    pub map_bytes: u64,
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
            // A segment a clean emptied has no timestamp but its file's: it holds nothing
            // back.
            s.size_bytes() == 0
                || now_ms.saturating_sub(s.retention_timestamp_ms()) >= policy.min_compaction_lag_ms
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

/// Bytes per entry of [`OffsetMap`]: a 128-bit key hash and an offset.
const OFFSET_MAP_ENTRY_BYTES: u64 = 24;
/// Share of the map's slots that may be filled (open addressing slows down when full), Kafka's
/// `maxDesiredLoad` of its `SkimpyOffsetMap`.
const OFFSET_MAP_LOAD_PERCENT: u64 = 90;

/// Key → offset of its last record, in a table whose size is fixed when it is made (at most
/// `log.cleaner.dedupe.buffer.size`), as Kafka's `SkimpyOffsetMap`: a key is stored as a
/// 128-bit hash (two SipHashes), never as its bytes, so a key costs 24 bytes whatever its
/// length. Two keys of one clean sharing a hash (odds about n² / 2^129) would make the older
/// record of one of them look superseded; Kafka accepts the same odds with MD5.
pub(crate) struct OffsetMap {
    /// `slots` × [hash 0, hash 1, offset + 1]; offset + 1 == 0 marks an empty slot, so that a
    /// fresh table is zeroed memory the OS hands out lazily.
    table: Vec<u64>,
    slots: usize,
    len: usize,
    capacity: usize,
}

impl OffsetMap {
    /// A map for about `expected_keys` keys, within `buffer_bytes` (at least one key).
    pub(crate) fn new(buffer_bytes: u64, expected_keys: u64) -> OffsetMap {
        let max_slots = (buffer_bytes / OFFSET_MAP_ENTRY_BYTES).max(2);
        let wanted_slots = expected_keys
            .saturating_mul(100)
            .div_ceil(OFFSET_MAP_LOAD_PERCENT)
            .saturating_add(1);
        let slots = usize::try_from(wanted_slots.clamp(2, max_slots)).unwrap_or(2);
        let capacity = (slots as u64 * OFFSET_MAP_LOAD_PERCENT / 100).max(1);
        OffsetMap {
            table: vec![0; slots.saturating_mul(3)],
            slots,
            len: 0,
            capacity: usize::try_from(capacity).unwrap_or(1),
        }
    }

    /// Bytes the table takes (fixed when it was made).
    pub(crate) fn size_bytes(&self) -> u64 {
        self.slots as u64 * OFFSET_MAP_ENTRY_BYTES
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn hash(key: &[u8]) -> [u64; 2] {
        use std::hash::Hasher;
        let mut first = std::collections::hash_map::DefaultHasher::new();
        first.write(key);
        let mut second = std::collections::hash_map::DefaultHasher::new();
        second.write_u8(0x5a);
        second.write(key);
        [first.finish(), second.finish()]
    }

    /// The slot holding `hash`, or the empty slot where it would go.
    fn slot_of(&self, hash: [u64; 2]) -> usize {
        let mut slot = usize::try_from(hash[0] % self.slots as u64).unwrap_or(0);
        // The table is never full (capacity < slots), so the probe ends.
        loop {
            let at = slot * 3;
            match self.table.get(at..at + 3) {
                Some([h0, h1, stored]) if *stored == 0 || [*h0, *h1] == hash => return slot,
                _ => slot = (slot + 1) % self.slots,
            }
        }
    }

    /// Records `offset` as the last of `key`. False (nothing stored) when `key` is new and the
    /// map is full.
    pub(crate) fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let hash = Self::hash(key);
        let at = self.slot_of(hash) * 3;
        let Some(entry) = self.table.get_mut(at..at + 3) else {
            return false;
        };
        if entry.get(2) == Some(&0) {
            if self.len >= self.capacity {
                return false;
            }
            self.len += 1;
        }
        entry.copy_from_slice(&[hash[0], hash[1], offset as u64 + 1]);
        true
    }

    /// The last offset recorded for `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        let at = self.slot_of(Self::hash(key)) * 3;
        match self.table.get(at + 2) {
            Some(&stored) if stored != 0 => Some(stored as i64 - 1),
            _ => None,
        }
    }
}

/// The key → last offset map of the dirty records of `segments` (offsets `>= first_dirty`),
/// in a table of at most `buffer_bytes`, and the offset it covers up to (exclusive): the end of
/// the last segment when every key fit, else the first record whose key did not. Records at or
/// past that offset are left for the next clean, as Kafka's cleaner does.
pub(crate) fn build_offset_map(
    segments: &[Arc<LogSegment>],
    first_dirty: i64,
    buffer_bytes: u64,
    reader: &dyn RecordReader,
) -> Result<(OffsetMap, i64), StorageError> {
    // Size the table for the dirty records (headers only), so small cleans take little memory.
    let mut dirty_records = 0u64;
    for segment in segments.iter().filter(|s| s.next_offset() > first_dirty) {
        for item in segment.headers(0, segment.size_bytes()) {
            let (_, header) = item?;
            if header.last_offset() >= first_dirty && !header.is_control() {
                dirty_records += u64::try_from(header.records_count).unwrap_or(0);
            }
        }
    }
    let mut map = OffsetMap::new(buffer_bytes, dirty_records);
    let mut end = segments.last().map_or(first_dirty, |s| s.next_offset());
    'segments: for segment in segments.iter().filter(|s| s.next_offset() > first_dirty) {
        for item in segment.headers(0, segment.size_bytes()) {
            let (position, header) = item?;
            if header.is_control() || header.last_offset() < first_dirty {
                continue;
            }
            let batch = segment.read_batch(position, &header)?;
            // A batch whose records do not decode is kept whole and shadows no key.
            let records = readable_records(reader, segment, position, &batch).unwrap_or_default();
            for record in records.iter().filter(|r| r.offset >= first_dirty) {
                if let Some(key) = &record.key {
                    if !map.put(key, record.offset) {
                        end = record.offset;
                        break 'segments;
                    }
                }
            }
        }
    }
    Ok((map, end))
}

/// Writes the cleaned copy of `segment` to `<base>.log.cleaned` batch by batch (never the whole
/// segment in memory), fsyncs it and renames it to `<base>.log.swap`. Records at or past
/// `map_end` (not covered by `map`) are kept as they are.
pub(crate) fn write_cleaned(
    segment: &LogSegment,
    map: &OffsetMap,
    map_end: i64,
    drop_tombstones: bool,
    reader: &dyn RecordReader,
) -> Result<CleanedSegment, StorageError> {
    let cleaned_path = suffixed(segment.log_path(), CLEANED_SUFFIX);
    let storage = segment.storage();
    let mut out = CleanedWriter {
        file: storage.create_file(&cleaned_path)?,
        path: &cleaned_path,
        buffer: Vec::with_capacity(CLEANED_WRITE_BUFFER_BYTES),
        size_bytes: 0,
    };
    let mut write = |bytes: &[u8]| out.write(bytes);
    let mut removed = 0u64;
    let mut kept_tombstones = 0u64;
    for item in segment.headers(0, segment.size_bytes()) {
        let (position, header) = item?;
        let batch = segment.read_batch(position, &header)?;
        if header.is_control() || header.base_offset >= map_end {
            write(&batch)?;
            continue;
        }
        let Some(records) = readable_records(reader, segment, position, &batch) else {
            write(&batch)?;
            continue;
        };
        // In offset order, so the rewrite below looks offsets up by binary search.
        let doomed: Vec<i64> = records
            .iter()
            .filter(|r| r.offset < map_end)
            .filter(|r| match &r.key {
                None => false,
                Some(key) => {
                    let superseded = map.get(key).is_some_and(|last| last > r.offset);
                    superseded || (r.is_tombstone && drop_tombstones)
                }
            })
            .map(|r| r.offset)
            .collect();
        kept_tombstones += records
            .iter()
            .filter(|r| {
                r.is_tombstone && r.key.is_some() && doomed.binary_search(&r.offset).is_err()
            })
            .count() as u64;
        if doomed.is_empty() {
            write(&batch)?;
            continue;
        }
        removed += doomed.len() as u64;
        let kept = reader
            .retain(&batch, &mut |offset| doomed.binary_search(&offset).is_err())
            .map_err(|source| StorageError::UnreadableRecords {
                path: segment.log_path().to_path_buf(),
                position,
                source,
            })?;
        if let Some(kept) = kept {
            write(&kept)?;
        }
    }
    out.flush()?;
    out.file.sync_all().at(&cleaned_path)?;
    let size_bytes = out.size_bytes;
    drop(out);
    let swap_path = suffixed(segment.log_path(), SWAP_SUFFIX);
    storage.rename(&cleaned_path, &swap_path)?;
    storage.sync_dir(segment.log_path().parent().unwrap_or(Path::new(".")))?;
    Ok(CleanedSegment {
        swap_path,
        records_removed: removed,
        kept_tombstones,
        size_bytes,
    })
}

/// Write buffer of a cleaned segment being written.
const CLEANED_WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// A cleaned segment being written: batches gather in a bounded buffer written out at the
/// file's end whenever it fills, so a segment is never held whole.
struct CleanedWriter<'a> {
    file: crate::io::DataFile,
    path: &'a Path,
    buffer: Vec<u8>,
    /// Bytes written out plus buffered.
    size_bytes: u64,
}

impl CleanedWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        if self.buffer.len() + bytes.len() > CLEANED_WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        if bytes.len() >= CLEANED_WRITE_BUFFER_BYTES {
            self.file
                .write_all_at(bytes, self.size_bytes)
                .at(self.path)?;
        } else {
            self.buffer.extend_from_slice(bytes);
        }
        self.size_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Writes the buffered bytes out (not synced).
    fn flush(&mut self) -> Result<(), StorageError> {
        let at = self.size_bytes - self.buffer.len() as u64;
        self.file.write_all_at(&self.buffer, at).at(self.path)?;
        self.buffer.clear();
        Ok(())
    }
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

#[cfg(test)]
#[path = "cleaner_tests.rs"]
mod tests;
