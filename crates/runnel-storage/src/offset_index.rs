//! `OffsetIndex`: the sparse `.index` file of one segment, mapping a batch's base offset
//! (relative to the segment's base offset) to its byte position in the `.log` file.
//!
//! Each entry is 8 bytes: relative offset u32, position u32, both big-endian. An entry is added
//! before a batch once at least `index_interval_bytes` have been written since the previous
//! entry. The index is derived data: it is never fsynced, it is checked on open and rebuilt from
//! the log if missing or damaged. The file, its in-memory copy and the search are the generic
//! [`SparseIndex`]; this type adds when an entry is due and what "sane" means against the log.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::StorageError;
use crate::io::Storage;
use crate::sparse_index::{IndexEntry, SparseIndex};

/// Bytes per index entry on disk.
pub(crate) const ENTRY_SIZE_BYTES: usize = 8;

/// One sparse offset index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub(crate) relative_offset: u32,
    /// Byte position of the batch in the `.log` file.
    pub(crate) position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE_BYTES: usize = ENTRY_SIZE_BYTES;
    type Encoded = [u8; ENTRY_SIZE_BYTES];
    type Key = u32;

    fn key(&self) -> u32 {
        self.relative_offset
    }

    fn encode(self) -> [u8; ENTRY_SIZE_BYTES] {
        let mut out = [0u8; ENTRY_SIZE_BYTES];
        let (offset, position) = out.split_at_mut(4);
        offset.copy_from_slice(&self.relative_offset.to_be_bytes());
        position.copy_from_slice(&self.position.to_be_bytes());
        out
    }

    fn decode(chunk: &[u8]) -> Option<OffsetEntry> {
        let relative_offset = u32::from_be_bytes(chunk.get(..4)?.try_into().ok()?);
        let position = u32::from_be_bytes(chunk.get(4..8)?.try_into().ok()?);
        Some(OffsetEntry {
            relative_offset,
            position,
        })
    }

    /// Batches follow each other in the log: offsets and positions both grow.
    fn follows(&self, previous: &OffsetEntry) -> bool {
        previous.relative_offset < self.relative_offset && previous.position < self.position
    }
}

/// A batch as the index sees it: relative base offset, position and size in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexedBatch {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
    pub(crate) size_bytes: u64,
}

/// The sparse offset index of one segment.
///
/// Thread-safety: one writer (the partition's append path or recovery) calls the mutating
/// methods; readers call [`OffsetIndex::lookup`] concurrently (see [`SparseIndex`]).
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    entries: SparseIndex<OffsetEntry>,
    /// Writer-only: bytes appended to the log since the last entry. Atomic only so the index
    /// can be shared by `&` with readers.
    bytes_since_last_entry: AtomicU64,
}

impl OffsetIndex {
    /// Opens (creating if missing) the index at `path` and loads its entries unchecked;
    /// call [`OffsetIndex::is_sane`] before trusting them. `max_entries` bounds the file size.
    pub(crate) fn open(
        storage: &Storage,
        path: &Path,
        max_entries: usize,
    ) -> Result<OffsetIndex, StorageError> {
        Ok(OffsetIndex {
            entries: SparseIndex::open(storage, path, max_entries)?,
            bytes_since_last_entry: AtomicU64::new(0),
        })
    }

    /// The `.index` file path.
    pub(crate) fn path(&self) -> &Path {
        self.entries.path()
    }

    /// Closes the file until the next write (the segment was sealed).
    pub(crate) fn release_file(&self) {
        self.entries.release_file();
    }

    /// True when the file existed (unless the log is empty) and has a whole number of entries,
    /// no more than `max_entries`, strictly increasing offsets and positions, all positions
    /// below `log_size_bytes`, and `entry_is_valid` accepts the last entry (the caller checks
    /// it points at a batch header with the matching offset: a cheap guard against stale
    /// entries).
    pub(crate) fn is_sane(
        &self,
        log_size_bytes: u64,
        entry_is_valid: impl FnOnce(OffsetEntry) -> bool,
    ) -> bool {
        let last = self.entries.last();
        let in_bounds = last.is_none_or(|e| u64::from(e.position) < log_size_bytes);
        let present = !self.entries.was_missing() || log_size_bytes == 0;
        present && self.entries.is_well_formed() && in_bounds && last.is_none_or(entry_is_valid)
    }

    /// Position of the last indexed batch whose base offset is <= `relative_offset`, or 0.
    /// The batch holding `relative_offset` starts at or after the returned position.
    pub(crate) fn lookup(&self, relative_offset: u32) -> u32 {
        self.entries
            .last_at_or_below(relative_offset)
            .map_or(0, |e| e.position)
    }

    /// True when no more entries fit (`segment_index_bytes` reached); the segment must roll.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.free_slots() == 0
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records a batch about to become visible at `batch.position`, adding an entry when
    /// `interval_bytes` have passed since the last one (and the index is not full).
    pub(crate) fn append_batch(
        &self,
        batch: IndexedBatch,
        interval_bytes: u32,
    ) -> Result<(), StorageError> {
        let since = self.bytes_since_last_entry.load(Ordering::Relaxed);
        if since >= u64::from(interval_bytes) && !self.is_full() {
            let entry = OffsetEntry {
                relative_offset: batch.relative_offset,
                position: batch.position,
            };
            if self.entries.push(entry)? {
                self.bytes_since_last_entry.store(0, Ordering::Relaxed);
            }
        }
        self.bytes_since_last_entry
            .fetch_add(batch.size_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the whole index with entries derived from `batches` (in log order), writing
    /// the file in one go. Used when the index is missing or damaged.
    pub(crate) fn rebuild(
        &self,
        batches: impl IntoIterator<Item = IndexedBatch>,
        interval_bytes: u32,
    ) -> Result<(), StorageError> {
        self.truncate_to_position(0)?;
        let max_entries = self.entries.max_entries();
        let mut fresh = Vec::new();
        let mut since = 0u64;
        for batch in batches {
            if since >= u64::from(interval_bytes) && fresh.len() < max_entries {
                fresh.push(OffsetEntry {
                    relative_offset: batch.relative_offset,
                    position: batch.position,
                });
                since = 0;
            }
            since = since.saturating_add(batch.size_bytes);
        }
        self.entries.replace(fresh)?;
        self.bytes_since_last_entry.store(since, Ordering::Relaxed);
        Ok(())
    }

    /// Drops entries at or beyond `log_position` (the log is being cut there or re-scanned
    /// from there) and shortens the file to match.
    pub(crate) fn truncate_to_position(&self, log_position: u64) -> Result<(), StorageError> {
        let last = self
            .entries
            .retain(|e| u64::from(e.position) < log_position)?;
        let last_position = last.map_or(0, |e| u64::from(e.position));
        self.bytes_since_last_entry.store(
            log_position.saturating_sub(last_position),
            Ordering::Relaxed,
        );
        Ok(())
    }
}
