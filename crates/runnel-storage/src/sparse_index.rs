//! `SparseIndex`: what the offset index and the time index have in common. Fixed-size
//! big-endian entries in a file written only by appends and truncations, an in-memory copy
//! that every lookup searches (never the disk), entries pushed with strictly increasing keys,
//! and a binary search for the last entry at or below (or strictly below) a key.
//!
//! The entry type says how big an entry is on disk, how it is encoded and decoded, which key
//! it is searched by, and what order a sane file keeps between neighbours; `OffsetIndex` and
//! `TimeIndex` add the policy (when to add an entry, what "sane" means against the log).

use std::fmt::Debug;
use std::path::Path;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::StorageError;
use crate::index_file::IndexFile;
use crate::io::Storage;

/// One fixed-size entry of a sparse index.
pub(crate) trait IndexEntry: Copy + Debug {
    /// Bytes per entry on disk.
    const SIZE_BYTES: usize;
    /// The encoded entry, `SIZE_BYTES` long (an array, so an append allocates nothing).
    type Encoded: AsRef<[u8]>;
    /// What entries are searched by; strictly increasing from entry to entry.
    type Key: Ord + Copy;

    /// The key this entry is searched by.
    fn key(&self) -> Self::Key;

    /// Big-endian on-disk form.
    fn encode(self) -> Self::Encoded;

    /// Reads an entry from `chunk` (`SIZE_BYTES` long); `None` when it is shorter.
    fn decode(chunk: &[u8]) -> Option<Self>;

    /// True when `self` may directly follow `previous` in a sane file (the key must grow; an
    /// entry type may also require its other field to grow).
    fn follows(&self, previous: &Self) -> bool;
}

/// The sparse index of one segment over entries of type `E`.
///
/// Thread-safety: one writer (the partition's append path or recovery) calls the mutating
/// methods; readers search concurrently. The entry list sits behind an `RwLock` held only for
/// a push (with its small `pwrite`), a truncation or a binary search.
#[derive(Debug)]
pub(crate) struct SparseIndex<E: IndexEntry> {
    file: IndexFile,
    entries: RwLock<Vec<E>>,
    /// File length when opened; one that is not a whole number of entries means damage.
    loaded_len_bytes: u64,
    /// The file did not exist when opened (deleted, or never written before a crash).
    was_missing: bool,
    max_entries: usize,
}

impl<E: IndexEntry> SparseIndex<E> {
    /// Opens (creating if missing) the index at `path` and loads its entries unchecked; call
    /// [`SparseIndex::is_well_formed`] before trusting them. `max_entries` bounds the file size.
    pub(crate) fn open(
        storage: &Storage,
        path: &Path,
        max_entries: usize,
    ) -> Result<SparseIndex<E>, StorageError> {
        // Never trust the file length for an allocation: clamp to the configured maximum.
        let max_bytes = max_entries.saturating_mul(E::SIZE_BYTES) as u64;
        let loaded = IndexFile::load(storage, path, max_bytes)?;
        let entries = loaded
            .raw
            .chunks_exact(E::SIZE_BYTES)
            .filter_map(E::decode)
            .collect();
        Ok(SparseIndex {
            file: loaded.file,
            entries: RwLock::new(entries),
            loaded_len_bytes: loaded.len_bytes,
            was_missing: loaded.was_missing,
            max_entries,
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// True when the file did not exist when opened.
    pub(crate) fn was_missing(&self) -> bool {
        self.was_missing
    }

    /// True when the file held a whole number of entries, no more than `max_entries`, each
    /// following its predecessor ([`IndexEntry::follows`]).
    pub(crate) fn is_well_formed(&self) -> bool {
        let entries = self.read_entries();
        // Entries were loaded up to `max_entries`, so this also rejects an oversized file and
        // a trailing partial entry.
        let whole = self.loaded_len_bytes == Self::bytes_for(entries.len());
        whole
            && entries.windows(2).all(|pair| match pair {
                [a, b] => b.follows(a),
                _ => true,
            })
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<E> {
        self.read_entries().last().copied()
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.read_entries().len()
    }

    /// True when there are no entries.
    pub(crate) fn is_empty(&self) -> bool {
        self.read_entries().is_empty()
    }

    /// The most entries the file may hold.
    pub(crate) fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// How many more entries fit in `max_entries`.
    pub(crate) fn free_slots(&self) -> usize {
        self.max_entries.saturating_sub(self.len())
    }

    /// The last entry whose key is `<= key`.
    pub(crate) fn last_at_or_below(&self, key: E::Key) -> Option<E> {
        let entries = self.read_entries();
        let after = entries.partition_point(|e| e.key() <= key);
        after.checked_sub(1).and_then(|i| entries.get(i)).copied()
    }

    /// The last entry whose key is `< key`.
    pub(crate) fn last_below(&self, key: E::Key) -> Option<E> {
        let entries = self.read_entries();
        let below = entries.partition_point(|e| e.key() < key);
        below.checked_sub(1).and_then(|i| entries.get(i)).copied()
    }

    /// Appends `entry` unless its key is not above the last one's; returns whether it was
    /// added. The caller checks [`SparseIndex::free_slots`] first.
    pub(crate) fn push(&self, entry: E) -> Result<bool, StorageError> {
        let mut entries = self.write_entries();
        if entries.last().is_some_and(|last| last.key() >= entry.key()) {
            return Ok(false);
        }
        self.file
            .write_all_at(entry.encode().as_ref(), Self::bytes_for(entries.len()))?;
        entries.push(entry);
        Ok(true)
    }

    /// Keeps the first `len` entries and shortens the file to match.
    pub(crate) fn truncate(&self, len: usize) -> Result<(), StorageError> {
        let mut entries = self.write_entries();
        entries.truncate(len);
        self.file.set_len(Self::bytes_for(len))
    }

    /// Keeps only the entries `keep` accepts and shortens the file to match; returns the last
    /// entry kept.
    pub(crate) fn retain(&self, keep: impl FnMut(&E) -> bool) -> Result<Option<E>, StorageError> {
        let mut entries = self.write_entries();
        entries.retain(keep);
        self.file.set_len(Self::bytes_for(entries.len()))?;
        Ok(entries.last().copied())
    }

    /// Replaces every entry with `fresh` (already in order), writing the file in one go.
    pub(crate) fn replace(&self, fresh: Vec<E>) -> Result<(), StorageError> {
        let mut entries = self.write_entries();
        // Memory never claims more than the file holds, even if the write below fails.
        entries.clear();
        self.file.set_len(0)?;
        let mut raw = Vec::with_capacity(fresh.len().saturating_mul(E::SIZE_BYTES));
        for entry in &fresh {
            raw.extend_from_slice(entry.encode().as_ref());
        }
        self.file.write_all_at(&raw, 0)?;
        *entries = fresh;
        Ok(())
    }

    /// fsync of the file.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        self.file.sync()
    }

    /// Closes the file until the next write (the segment was sealed).
    pub(crate) fn release_file(&self) {
        self.file.release();
    }

    fn bytes_for(entries: usize) -> u64 {
        entries.saturating_mul(E::SIZE_BYTES) as u64
    }

    fn read_entries(&self) -> RwLockReadGuard<'_, Vec<E>> {
        // A panic elsewhere cannot leave the Vec half-updated (push is atomic for us).
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_entries(&self) -> RwLockWriteGuard<'_, Vec<E>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use super::*;
    use crate::offset_index::{IndexedBatch, OffsetEntry, OffsetIndex};
    use crate::time_index::{TimeEntry, TimeIndex};

    /// Proptest's seed: `$RUNNEL_SEED` if set, else a fixed one, so a failure replays.
    fn config() -> ProptestConfig {
        let seed = std::env::var("RUNNEL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5ba7_5e1d);
        ProptestConfig {
            cases: 48,
            rng_seed: RngSeed::Fixed(seed),
            ..ProptestConfig::default()
        }
    }

    /// Offset entries with strictly increasing offsets and positions, from positive gaps.
    fn offset_entries(gaps: &[(u32, u32)]) -> Vec<OffsetEntry> {
        let (mut offset, mut position) = (0u32, 0u32);
        gaps.iter()
            .map(|&(offset_gap, position_gap)| {
                offset += offset_gap;
                position += position_gap;
                OffsetEntry {
                    relative_offset: offset,
                    position,
                }
            })
            .collect()
    }

    /// Time entries with strictly increasing timestamps and non-decreasing offsets.
    fn time_entries(start_ms: i64, gaps: &[(i64, u32)]) -> Vec<TimeEntry> {
        let (mut timestamp, mut offset) = (start_ms, 0u32);
        gaps.iter()
            .map(|&(timestamp_gap, offset_gap)| {
                timestamp += timestamp_gap;
                offset += offset_gap;
                TimeEntry {
                    timestamp,
                    relative_offset: offset,
                }
            })
            .collect()
    }

    /// Pushes `entries` one by one into a fresh index, then checks both searches against a
    /// linear scan for every key in `queries`, and that a reopened file holds the same entries.
    fn check_against_scan<E>(entries: &[E], queries: &[E::Key]) -> Result<(), TestCaseError>
    where
        E: IndexEntry + PartialEq,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let index = SparseIndex::<E>::open(&Storage::real(), &path, entries.len() + 1).unwrap();
        for &entry in entries {
            prop_assert!(index.push(entry).unwrap());
        }
        for &key in queries {
            let at_or_below = entries.iter().rev().find(|e| e.key() <= key).copied();
            let below = entries.iter().rev().find(|e| e.key() < key).copied();
            prop_assert_eq!(index.last_at_or_below(key), at_or_below);
            prop_assert_eq!(index.last_below(key), below);
        }
        drop(index);
        let reopened = SparseIndex::<E>::open(&Storage::real(), &path, entries.len() + 1).unwrap();
        prop_assert!(reopened.is_well_formed());
        let loaded = reopened.read_entries().clone();
        prop_assert_eq!(loaded.as_slice(), entries);
        Ok(())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn offset_lookup_equals_linear_scan(
            gaps in prop::collection::vec((1u32..50, 1u32..5_000), 0..64),
            queries in prop::collection::vec(0u32..3_500, 1..32),
        ) {
            check_against_scan(&offset_entries(&gaps), &queries)?;
        }

        #[test]
        fn time_lookup_equals_linear_scan(
            start_ms in -1i64..2_000_000_000_000,
            gaps in prop::collection::vec((1i64..1_000, 0u32..5), 0..64),
            queries in prop::collection::vec(-10i64..70_000, 1..32),
        ) {
            let queries: Vec<i64> = queries.iter().map(|q| start_ms + q).collect();
            check_against_scan(&time_entries(start_ms, &gaps), &queries)?;
        }

        /// Through the offset index's own policy: with an entry before every batch, the
        /// lookup for each offset is the position of the last batch starting at or before it.
        #[test]
        fn offset_index_lookup_finds_the_batch(
            sizes in prop::collection::vec((1u32..10, 1u32..2_000), 1..64),
            queries in prop::collection::vec(0u32..700, 1..32),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let index = OffsetIndex::open(&Storage::real(), &dir.path().join("0.index"), 100).unwrap();
            let mut batches = Vec::new();
            let (mut offset, mut position) = (0u32, 0u32);
            for &(records, size_bytes) in &sizes {
                let batch = IndexedBatch { relative_offset: offset, position, size_bytes: u64::from(size_bytes) };
                index.append_batch(batch, 0).unwrap();
                batches.push(batch);
                offset += records;
                position += size_bytes;
            }
            for &query in &queries {
                let expected = batches.iter().rev().find(|b| b.relative_offset <= query).map_or(0, |b| b.position);
                prop_assert_eq!(index.lookup(query), expected);
            }
        }

        /// Through the time index's own policy: the lookup never skips the first batch whose
        /// max timestamp reaches the target, whatever the order of timestamps and interval.
        #[test]
        fn time_index_lookup_never_skips_the_target(
            timestamps in prop::collection::vec(0i64..1_000, 1..64),
            interval_bytes in 0u32..300,
            queries in prop::collection::vec(-5i64..1_010, 1..32),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let index = TimeIndex::open(&Storage::real(), &dir.path().join("0.timeindex"), 100).unwrap();
            for (offset, &timestamp) in timestamps.iter().enumerate() {
                index.append_batch(timestamp, offset as u32, 100, interval_bytes).unwrap();
            }
            index.seal().unwrap();
            for &target in &queries {
                let from = index.lookup(target) as usize;
                if let Some(first) = timestamps.iter().position(|&t| t >= target) {
                    prop_assert!(from <= first, "lookup({}) = {} skips batch {}", target, from, first);
                }
            }
        }
    }

    #[test]
    fn push_refuses_a_key_not_above_the_last() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let index = SparseIndex::<OffsetEntry>::open(&Storage::real(), &path, 10)?;
        let entry = |relative_offset, position| OffsetEntry {
            relative_offset,
            position,
        };
        assert!(index.push(entry(5, 100))?);
        assert!(!index.push(entry(5, 200))?);
        assert!(!index.push(entry(4, 200))?);
        assert!(index.push(entry(6, 200))?);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
        assert_eq!(index.free_slots(), 8);
        Ok(())
    }

    #[test]
    fn truncate_retain_and_replace_keep_the_file_in_step() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let index = SparseIndex::<TimeEntry>::open(&Storage::real(), &path, 10)?;
        let file_len = || std::fs::metadata(&path).unwrap().len();
        let entries = time_entries(1_000, &[(1, 0), (5, 2), (7, 3), (9, 1)]);
        index.replace(entries.clone())?;
        assert_eq!(file_len(), 48);
        // Timestamps 1001, 1006, 1013, 1022.
        assert_eq!(index.last_below(1_013), Some(entries[1]));
        assert_eq!(index.last_at_or_below(1_013), Some(entries[2]));
        let last = index.retain(|e| e.timestamp < 1_013)?;
        assert_eq!(last, Some(entries[1]));
        assert_eq!(file_len(), 24);
        index.truncate(1)?;
        assert_eq!(index.last(), Some(entries[0]));
        assert_eq!(file_len(), 12);
        drop(index);
        let reopened = SparseIndex::<TimeEntry>::open(&Storage::real(), &path, 10)?;
        assert!(reopened.is_well_formed());
        assert_eq!(reopened.last(), Some(entries[0]));
        Ok(())
    }

    #[test]
    fn partial_oversized_or_unordered_files_are_not_well_formed() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            SparseIndex::<OffsetEntry>::open(&Storage::real(), &path, 2)
        };
        let entry = |relative_offset, position| {
            OffsetEntry {
                relative_offset,
                position,
            }
            .encode()
        };
        let ordered = [entry(1, 10), entry(2, 20)].concat();
        assert!(open("ok", &ordered)?.is_well_formed());
        assert!(!open("partial", &ordered[..12])?.is_well_formed());
        assert!(!open(
            "oversized",
            &[ordered.clone(), entry(3, 30).to_vec()].concat()
        )?
        .is_well_formed());
        // The offset grows but the position does not: `follows` rejects it.
        assert!(!open("unordered", &[entry(1, 20), entry(2, 10)].concat())?.is_well_formed());
        Ok(())
    }
}
