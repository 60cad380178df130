//! `OffsetIndex`: the sparse `.index` file of one segment, mapping a batch's base offset
//! (relative to the segment's base offset) to its byte position in the `.log` file.
//!
//! Each entry is 8 bytes: relative offset u32, position u32, both big-endian. An entry is added
//! before a batch once at least `index_interval_bytes` have been written since the previous
//! entry. The index is derived data: it is never fsynced, it is checked on open and rebuilt from
//! the log if missing or damaged. It is kept in memory as a `Vec` so lookups never touch disk.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::error::StorageError;
use crate::index_file::IndexFile;
use crate::io::Storage;

/// Bytes per index entry on disk.
pub(crate) const ENTRY_SIZE_BYTES: usize = 8;

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub(crate) relative_offset: u32,
    /// Byte position of the batch in the `.log` file.
    pub(crate) position: u32,
}

impl IndexEntry {
    fn encode(self) -> [u8; ENTRY_SIZE_BYTES] {
        let mut out = [0u8; ENTRY_SIZE_BYTES];
        let (offset, position) = out.split_at_mut(4);
        offset.copy_from_slice(&self.relative_offset.to_be_bytes());
        position.copy_from_slice(&self.position.to_be_bytes());
        out
    }

    fn decode(chunk: &[u8]) -> Option<IndexEntry> {
        let relative_offset = u32::from_be_bytes(chunk.get(..4)?.try_into().ok()?);
        let position = u32::from_be_bytes(chunk.get(4..8)?.try_into().ok()?);
        Some(IndexEntry {
            relative_offset,
            position,
        })
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
/// methods; readers call [`OffsetIndex::lookup`] concurrently. The entry list sits behind an
/// `RwLock` held only for a push or a binary search, never across I/O.
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    file: IndexFile,
    entries: RwLock<Vec<IndexEntry>>,
    /// File length when opened; a length that is not a multiple of 8 means damage.
    loaded_len_bytes: u64,
    /// The file did not exist when opened (deleted, or never written before a crash).
    was_missing: bool,
    max_entries: usize,
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
        // Never trust the file length for an allocation: clamp to the configured maximum.
        let loaded = IndexFile::load(storage, path, (max_entries * ENTRY_SIZE_BYTES) as u64)?;
        let entries = loaded
            .raw
            .chunks_exact(ENTRY_SIZE_BYTES)
            .filter_map(IndexEntry::decode)
            .collect();
        Ok(OffsetIndex {
            file: loaded.file,
            entries: RwLock::new(entries),
            loaded_len_bytes: loaded.len_bytes,
            was_missing: loaded.was_missing,
            max_entries,
            bytes_since_last_entry: AtomicU64::new(0),
        })
    }

    /// The `.index` file path.
    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// Closes the file until the next write (the segment was sealed).
    pub(crate) fn release_file(&self) {
        self.file.release();
    }

    /// True when the file existed (unless the log is empty) and has a whole number of entries, no more than `max_entries`,
    /// strictly increasing offsets and positions, all positions below `log_size_bytes`, and
    /// `entry_is_valid` accepts the last entry (the caller checks it points at a batch header
    /// with the matching offset: a cheap guard against stale entries).
    pub(crate) fn is_sane(
        &self,
        log_size_bytes: u64,
        entry_is_valid: impl FnOnce(IndexEntry) -> bool,
    ) -> bool {
        let entries = self.read_entries();
        // Entries were loaded up to `max_entries`, so this also rejects an oversized file and
        // a trailing partial entry.
        let whole = self.loaded_len_bytes == (entries.len() * ENTRY_SIZE_BYTES) as u64;
        let increasing = entries.windows(2).all(|pair| match pair {
            [a, b] => a.relative_offset < b.relative_offset && a.position < b.position,
            _ => true,
        });
        let in_bounds = entries
            .last()
            .is_none_or(|e| u64::from(e.position) < log_size_bytes);
        let present = !self.was_missing || log_size_bytes == 0;
        present
            && whole
            && increasing
            && in_bounds
            && entries.last().copied().is_none_or(entry_is_valid)
    }

    /// Position of the last indexed batch whose base offset is <= `relative_offset`, or 0.
    /// The batch holding `relative_offset` starts at or after the returned position.
    pub(crate) fn lookup(&self, relative_offset: u32) -> u32 {
        let entries = self.read_entries();
        let after = entries.partition_point(|e| e.relative_offset <= relative_offset);
        after
            .checked_sub(1)
            .and_then(|i| entries.get(i))
            .map_or(0, |e| e.position)
    }

    /// True when no more entries fit (`segment_index_bytes` reached); the segment must roll.
    pub(crate) fn is_full(&self) -> bool {
        self.read_entries().len() >= self.max_entries
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.read_entries().len()
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
            let entry = IndexEntry {
                relative_offset: batch.relative_offset,
                position: batch.position,
            };
            let mut entries = self.write_entries();
            let at = (entries.len() * ENTRY_SIZE_BYTES) as u64;
            self.file.write_all_at(&entry.encode(), at)?;
            entries.push(entry);
            self.bytes_since_last_entry.store(0, Ordering::Relaxed);
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
        let mut fresh = Vec::new();
        let mut since = 0u64;
        for batch in batches {
            if since >= u64::from(interval_bytes) && fresh.len() < self.max_entries {
                fresh.push(IndexEntry {
                    relative_offset: batch.relative_offset,
                    position: batch.position,
                });
                since = 0;
            }
            since = since.saturating_add(batch.size_bytes);
        }
        let raw: Vec<u8> = fresh.iter().flat_map(|e| e.encode()).collect();
        self.file.write_all_at(&raw, 0)?;
        *self.write_entries() = fresh;
        self.bytes_since_last_entry.store(since, Ordering::Relaxed);
        Ok(())
    }

    /// Drops entries at or beyond `log_position` (the log is being cut there or re-scanned
    /// from there) and shortens the file to match.
    pub(crate) fn truncate_to_position(&self, log_position: u64) -> Result<(), StorageError> {
        let mut entries = self.write_entries();
        entries.retain(|e| u64::from(e.position) < log_position);
        self.file
            .set_len((entries.len() * ENTRY_SIZE_BYTES) as u64)?;
        let last_position = entries.last().map_or(0, |e| u64::from(e.position));
        self.bytes_since_last_entry.store(
            log_position.saturating_sub(last_position),
            Ordering::Relaxed,
        );
        Ok(())
    }

    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, Vec<IndexEntry>> {
        // A panic elsewhere cannot leave the Vec half-updated (push is atomic for us).
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_entries(&self) -> std::sync::RwLockWriteGuard<'_, Vec<IndexEntry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }
}
