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
//! The index is derived data: it is rebuilt from batch headers when missing or damaged.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::error::StorageError;
use crate::index_file::IndexFile;
use crate::io::Storage;

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

impl TimeEntry {
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
}

/// Mutable state of the index, behind one lock.
#[derive(Debug, Default)]
struct TimeIndexState {
    entries: Vec<TimeEntry>,
    /// Largest batch max timestamp seen in the segment (`-1` when none).
    max_timestamp: i64,
    /// Relative base offset of the batch that first reached `max_timestamp`.
    max_relative_offset: u32,
}

/// What [`TimeIndex::restore`] goes back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeIndexMark {
    entries: usize,
    max_timestamp: i64,
    max_relative_offset: u32,
    bytes_since_last_entry: u64,
}

/// The sparse time index of one segment. One writer, concurrent readers; the lock is never held
/// across anything slower than a small `pwrite`.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    file: IndexFile,
    state: RwLock<TimeIndexState>,
    loaded_len_bytes: u64,
    was_missing: bool,
    max_entries: usize,
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
        let loaded = IndexFile::load(storage, path, (max_entries * TIME_ENTRY_SIZE_BYTES) as u64)?;
        let entries: Vec<TimeEntry> = loaded
            .raw
            .chunks_exact(TIME_ENTRY_SIZE_BYTES)
            .filter_map(TimeEntry::decode)
            .collect();
        let (max_timestamp, max_relative_offset) = entries
            .last()
            .map_or((-1, 0), |e| (e.timestamp, e.relative_offset));
        Ok(TimeIndex {
            file: loaded.file,
            state: RwLock::new(TimeIndexState {
                entries,
                max_timestamp,
                max_relative_offset,
            }),
            loaded_len_bytes: loaded.len_bytes,
            was_missing: loaded.was_missing,
            max_entries,
            bytes_since_last_entry: AtomicU64::new(0),
        })
    }

    /// The `.timeindex` path.
    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// True when the file holds whole entries with strictly increasing timestamps and
    /// non-decreasing offsets, all below `relative_end_offset` (the segment's next offset minus
    /// its base), and it existed with entries, or, for an empty segment, holds none (a stale
    /// entry there would report a timestamp the segment does not have).
    pub(crate) fn is_sane(&self, segment_is_empty: bool, relative_end_offset: u64) -> bool {
        let state = self.read_state();
        let entries = &state.entries;
        let whole = self.loaded_len_bytes == (entries.len() * TIME_ENTRY_SIZE_BYTES) as u64;
        let increasing = entries.windows(2).all(|pair| match pair {
            [a, b] => a.timestamp < b.timestamp && a.relative_offset <= b.relative_offset,
            _ => true,
        });
        let in_bounds = entries
            .last()
            .is_none_or(|e| u64::from(e.relative_offset) < relative_end_offset);
        let present = if segment_is_empty {
            entries.is_empty()
        } else {
            !self.was_missing && !entries.is_empty()
        };
        present && whole && increasing && in_bounds
    }

    /// Largest batch max timestamp in the segment and the relative offset of the first batch
    /// that reached it; `None` for an empty segment.
    pub(crate) fn max_timestamp(&self) -> Option<(i64, u32)> {
        let state = self.read_state();
        (state.max_timestamp >= 0 || !state.entries.is_empty())
            .then_some((state.max_timestamp, state.max_relative_offset))
    }

    /// Relative offset from which a scan finds the first batch with max timestamp `>=
    /// target_ms`: that of the last entry with a timestamp below `target_ms`, or 0.
    pub(crate) fn lookup(&self, target_ms: i64) -> u32 {
        let state = self.read_state();
        let below = state.entries.partition_point(|e| e.timestamp < target_ms);
        below
            .checked_sub(1)
            .and_then(|i| state.entries.get(i))
            .map_or(0, |e| e.relative_offset)
    }

    /// True when no more entries fit; the segment must roll.
    pub(crate) fn is_full(&self) -> bool {
        // Keep one slot for the final entry written when the segment rolls.
        self.read_state().entries.len().saturating_add(1) >= self.max_entries
    }

    /// Records a batch just written: `max_timestamp_ms` is its header's max timestamp.
    pub(crate) fn append_batch(
        &self,
        max_timestamp_ms: i64,
        relative_offset: u32,
        size_bytes: u64,
        interval_bytes: u32,
    ) -> Result<(), StorageError> {
        let mut state = self.write_state();
        if max_timestamp_ms > state.max_timestamp {
            state.max_timestamp = max_timestamp_ms;
            state.max_relative_offset = relative_offset;
        }
        let since = self
            .bytes_since_last_entry
            .fetch_add(size_bytes, Ordering::Relaxed)
            .saturating_add(size_bytes);
        if since >= u64::from(interval_bytes) && state.entries.len() < self.max_entries {
            let entry = TimeEntry {
                timestamp: state.max_timestamp,
                relative_offset: state.max_relative_offset,
            };
            if self.push(&mut state, entry)? {
                self.bytes_since_last_entry.store(0, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The index as it is now, for [`TimeIndex::restore`] if the append about to be indexed
    /// fails.
    pub(crate) fn mark(&self) -> TimeIndexMark {
        let state = self.read_state();
        TimeIndexMark {
            entries: state.entries.len(),
            max_timestamp: state.max_timestamp,
            max_relative_offset: state.max_relative_offset,
            bytes_since_last_entry: self.bytes_since_last_entry.load(Ordering::Relaxed),
        }
    }

    /// Forgets every entry and maximum recorded since `mark` (an append that failed half way
    /// and was cut off the log): a lookup by timestamp must not point past the log end, nor
    /// `max_timestamp` report a record that is not there.
    pub(crate) fn restore(&self, mark: TimeIndexMark) -> Result<(), StorageError> {
        let mut state = self.write_state();
        state.entries.truncate(mark.entries);
        state.max_timestamp = mark.max_timestamp;
        state.max_relative_offset = mark.max_relative_offset;
        self.bytes_since_last_entry
            .store(mark.bytes_since_last_entry, Ordering::Relaxed);
        self.file
            .set_len((mark.entries * TIME_ENTRY_SIZE_BYTES) as u64)
    }

    /// Appends the segment's maximum as the last entry (when the segment becomes inactive),
    /// so that a closed segment's largest timestamp survives a restart. Returns whether an
    /// entry was written.
    pub(crate) fn seal(&self) -> Result<bool, StorageError> {
        let mut state = self.write_state();
        if state.max_timestamp < 0 && state.entries.is_empty() {
            return Ok(false);
        }
        let entry = TimeEntry {
            timestamp: state.max_timestamp,
            relative_offset: state.max_relative_offset,
        };
        self.push(&mut state, entry)
    }

    /// Pushes `entry` when its timestamp exceeds the last one; returns whether it was added.
    fn push(&self, state: &mut TimeIndexState, entry: TimeEntry) -> Result<bool, StorageError> {
        if state
            .entries
            .last()
            .is_some_and(|last| last.timestamp >= entry.timestamp)
        {
            return Ok(false);
        }
        let at = (state.entries.len() * TIME_ENTRY_SIZE_BYTES) as u64;
        self.file.write_all_at(&entry.encode(), at)?;
        state.entries.push(entry);
        Ok(true)
    }

    /// Replaces the index with entries derived from `batches` (max timestamp, relative base
    /// offset, size in bytes), in log order.
    pub(crate) fn rebuild(
        &self,
        batches: impl IntoIterator<Item = (i64, u32, u64)>,
        interval_bytes: u32,
    ) -> Result<(), StorageError> {
        {
            let mut state = self.write_state();
            *state = TimeIndexState {
                max_timestamp: -1,
                ..TimeIndexState::default()
            };
            self.file.set_len(0)?;
        }
        self.bytes_since_last_entry.store(0, Ordering::Relaxed);
        for (timestamp, relative_offset, size_bytes) in batches {
            self.append_batch(timestamp, relative_offset, size_bytes, interval_bytes)?;
        }
        Ok(())
    }

    /// fsync of the file (on roll, so a closed segment's final entry is durable).
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        self.file.sync()
    }

    /// Closes the file until the next write (the segment was sealed).
    pub(crate) fn release_file(&self) {
        self.file.release();
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, TimeIndexState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, TimeIndexState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
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
