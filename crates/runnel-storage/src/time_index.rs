//! `TimeIndex`: the sparse `.timeindex` file of one segment, mapping the largest batch
//! timestamp seen so far to the (relative) base offset of the batch that first reached it.
//!
//! Each entry is 12 bytes like Kafka's: timestamp i64, relative offset u32, both big-endian.
//! Timestamps strictly increase from entry to entry. An entry is added after a batch once at
//! least `index_interval_bytes` have been written since the previous entry and the maximum
//! timestamp has grown; when a segment rolls, a final entry records the segment's maximum, so
//! the last entry of a closed segment's index is that segment's largest timestamp.
//!
//! Lookup invariant: for an entry `(t, o)`, no batch at or before `o` has a max timestamp above
//! `t`. So the first batch whose max timestamp is `>= target` lies at or after the offset of
//! the last entry with `t < target`, and a scan from there finds it.
//!
//! The index is derived data: it is rebuilt from batch headers when missing or damaged. The
//! file, its in-memory copy and the search are the generic [`SparseIndex`]; this type adds the
//! segment's running maximum, the seal on roll and the undo of a failed append.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::error::StorageError;
use crate::io::Storage;
use crate::sparse_index::{IndexEntry, SparseIndex};

/// Bytes per time index entry on disk.
pub(crate) const TIME_ENTRY_SIZE_BYTES: usize = 12;

/// One sparse time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// Largest batch max timestamp so far in the segment, ms.
    pub(crate) timestamp: i64,
    /// Base offset (relative to the segment) of the batch that first reached `timestamp`.
    pub(crate) relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE_BYTES: usize = TIME_ENTRY_SIZE_BYTES;
    type Encoded = [u8; TIME_ENTRY_SIZE_BYTES];
    type Key = i64;

    fn key(&self) -> i64 {
        self.timestamp
    }

    fn encode(self) -> [u8; TIME_ENTRY_SIZE_BYTES] {
        let mut out = [0u8; TIME_ENTRY_SIZE_BYTES];
        let (timestamp, offset) = out.split_at_mut(8);
        timestamp.copy_from_slice(&self.timestamp.to_be_bytes());
        offset.copy_from_slice(&self.relative_offset.to_be_bytes());
        out
    }

    fn decode(chunk: &[u8]) -> Option<TimeEntry> {
        Some(TimeEntry {
            timestamp: i64::from_be_bytes(chunk.get(..8)?.try_into().ok()?),
            relative_offset: u32::from_be_bytes(chunk.get(8..12)?.try_into().ok()?),
        })
    }

    /// Timestamps strictly grow; the batch that reached a larger maximum cannot come earlier.
    fn follows(&self, previous: &TimeEntry) -> bool {
        previous.timestamp < self.timestamp && previous.relative_offset <= self.relative_offset
    }
}

/// The segment's running maximum, which entries are cut from.
#[derive(Debug, Clone, Copy)]
struct SegmentMax {
    /// Largest batch max timestamp seen in the segment (`-1` when none).
    timestamp: i64,
    /// Relative base offset of the batch that first reached `timestamp`.
    relative_offset: u32,
}

impl SegmentMax {
    const NONE: SegmentMax = SegmentMax {
        timestamp: -1,
        relative_offset: 0,
    };

    fn entry(self) -> TimeEntry {
        TimeEntry {
            timestamp: self.timestamp,
            relative_offset: self.relative_offset,
        }
    }
}

/// What [`TimeIndex::restore`] goes back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeIndexMark {
    entries: usize,
    max: SegmentMax,
    bytes_since_last_entry: u64,
}

/// The sparse time index of one segment. One writer, concurrent readers; no lock is held
/// across anything slower than a small `pwrite`. Lock order: `max`, then the entries inside
/// [`SparseIndex`].
#[derive(Debug)]
pub(crate) struct TimeIndex {
    entries: SparseIndex<TimeEntry>,
    /// Held (for writing) across an append so a reader never sees the maximum of a batch
    /// whose entry is half recorded.
    max: RwLock<SegmentMax>,
    bytes_since_last_entry: AtomicU64,
}

impl TimeIndex {
    /// Opens (creating if missing) the index at `path` and loads its entries unchecked; call
    /// [`TimeIndex::is_sane`] before trusting them.
    pub(crate) fn open(
        storage: &Storage,
        path: &Path,
        max_entries: usize,
    ) -> Result<TimeIndex, StorageError> {
        let entries = SparseIndex::open(storage, path, max_entries)?;
        let max = entries
            .last()
            .map_or(SegmentMax::NONE, |e: TimeEntry| SegmentMax {
                timestamp: e.timestamp,
                relative_offset: e.relative_offset,
            });
        Ok(TimeIndex {
            entries,
            max: RwLock::new(max),
            bytes_since_last_entry: AtomicU64::new(0),
        })
    }

    /// The `.timeindex` path.
    pub(crate) fn path(&self) -> &Path {
        self.entries.path()
    }

    /// True when the file holds whole entries with strictly increasing timestamps and
    /// non-decreasing offsets, all below `relative_end_offset` (the segment's next offset minus
    /// its base), and it existed with entries, or, for an empty segment, holds none (a stale
    /// entry there would report a timestamp the segment does not have).
    pub(crate) fn is_sane(&self, segment_is_empty: bool, relative_end_offset: u64) -> bool {
        let last = self.entries.last();
        let in_bounds = last.is_none_or(|e| u64::from(e.relative_offset) < relative_end_offset);
        let present = if segment_is_empty {
            last.is_none()
        } else {
            !self.entries.was_missing() && last.is_some()
        };
        present && self.entries.is_well_formed() && in_bounds
    }

    /// Largest batch max timestamp in the segment and the relative offset of the first batch
    /// that reached it; `None` for an empty segment.
    pub(crate) fn max_timestamp(&self) -> Option<(i64, u32)> {
        let max = self.read_max();
        (max.timestamp >= 0 || !self.entries.is_empty())
            .then_some((max.timestamp, max.relative_offset))
    }

    /// Relative offset from which a scan finds the first batch with max timestamp `>=
    /// target_ms`: that of the last entry with a timestamp below `target_ms`, or 0.
    pub(crate) fn lookup(&self, target_ms: i64) -> u32 {
        self.entries
            .last_below(target_ms)
            .map_or(0, |e| e.relative_offset)
    }

    /// True when no more entries fit; the segment must roll.
    pub(crate) fn is_full(&self) -> bool {
        // Keep one slot for the final entry written when the segment rolls.
        self.entries.free_slots() <= 1
    }

    /// Records a batch just written: `max_timestamp_ms` is its header's max timestamp.
    pub(crate) fn append_batch(
        &self,
        max_timestamp_ms: i64,
        relative_offset: u32,
        size_bytes: u64,
        interval_bytes: u32,
    ) -> Result<(), StorageError> {
        let mut max = self.write_max();
        if max_timestamp_ms > max.timestamp {
            *max = SegmentMax {
                timestamp: max_timestamp_ms,
                relative_offset,
            };
        }
        let since = self
            .bytes_since_last_entry
            .fetch_add(size_bytes, Ordering::Relaxed)
            .saturating_add(size_bytes);
        if since >= u64::from(interval_bytes)
            && self.entries.free_slots() > 0
            && self.entries.push(max.entry())?
        {
            self.bytes_since_last_entry.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The index as it is now, for [`TimeIndex::restore`] if the append about to be indexed
    /// fails.
    pub(crate) fn mark(&self) -> TimeIndexMark {
        let max = self.read_max();
        TimeIndexMark {
            entries: self.entries.len(),
            max: *max,
            bytes_since_last_entry: self.bytes_since_last_entry.load(Ordering::Relaxed),
        }
    }

    /// Forgets every entry and maximum recorded since `mark` (an append that failed half way
    /// and was cut off the log): a lookup by timestamp must not point past the log end, nor
    /// `max_timestamp` report a record that is not there.
    pub(crate) fn restore(&self, mark: TimeIndexMark) -> Result<(), StorageError> {
        let mut max = self.write_max();
        *max = mark.max;
        self.bytes_since_last_entry
            .store(mark.bytes_since_last_entry, Ordering::Relaxed);
        self.entries.truncate(mark.entries)
    }

    /// Appends the segment's maximum as the last entry (when the segment becomes inactive),
    /// so that a closed segment's largest timestamp survives a restart. Returns whether an
    /// entry was written.
    pub(crate) fn seal(&self) -> Result<bool, StorageError> {
        let max = self.write_max();
        if max.timestamp < 0 && self.entries.is_empty() {
            return Ok(false);
        }
        // `push` refuses a timestamp that is not above the last entry's.
        self.entries.push(max.entry())
    }

    /// Replaces the index with entries derived from `batches` (max timestamp, relative base
    /// offset, size in bytes), in log order.
    pub(crate) fn rebuild(
        &self,
        batches: impl IntoIterator<Item = (i64, u32, u64)>,
        interval_bytes: u32,
    ) -> Result<(), StorageError> {
        {
            let mut max = self.write_max();
            *max = SegmentMax::NONE;
            self.entries.truncate(0)?;
        }
        self.bytes_since_last_entry.store(0, Ordering::Relaxed);
        for (timestamp, relative_offset, size_bytes) in batches {
            self.append_batch(timestamp, relative_offset, size_bytes, interval_bytes)?;
        }
        Ok(())
    }

    /// fsync of the file (on roll, so a closed segment's final entry is durable).
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        self.entries.sync()
    }

    /// Closes the file until the next write (the segment was sealed).
    pub(crate) fn release_file(&self) {
        self.entries.release_file();
    }

    fn read_max(&self) -> std::sync::RwLockReadGuard<'_, SegmentMax> {
        // The guarded value is two plain fields assigned together: never half-updated.
        self.max.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_max(&self) -> std::sync::RwLockWriteGuard<'_, SegmentMax> {
        self.max.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn entries_increase_and_survive_reopen() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let index = TimeIndex::open(&Storage::real(), &path, 100)?;
        index.append_batch(100, 0, 10, 0)?;
        index.append_batch(50, 1, 10, 0)?; // out of order: no entry
        index.append_batch(300, 2, 10, 0)?;
        index.seal()?;
        assert_eq!(index.lookup(100), 0);
        assert_eq!(index.lookup(101), 0);
        assert_eq!(index.lookup(301), 2);
        assert_eq!(index.max_timestamp(), Some((300, 2)));
        drop(index);
        let reopened = TimeIndex::open(&Storage::real(), &path, 100)?;
        assert!(reopened.is_sane(false, 3));
        assert!(!reopened.is_sane(false, 2));
        assert_eq!(reopened.max_timestamp(), Some((300, 2)));
        Ok(())
    }
}
