//! Maintenance of a `PartitionLog`: retention, DeleteRecords (moving the log start offset and
//! deleting the segments below it), compaction (the cleaner's segment swaps) and expiry of
//! idempotent producers. All of it acts on sealed segments only, never the active one.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::checkpoint::write_log_start_offset;
use crate::cleaner::{
    build_offset_map, cleanable_segments, finish_swap, write_cleaned, CleanStats, CompactionPolicy,
};
use crate::error::{IoResultExt, StorageError};
use crate::records::RecordReader;
use crate::segment::{lock, LogSegment};

use super::{PartitionLog, RetentionPolicy};

impl PartitionLog {
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
    /// `policy.dedupe_buffer_bytes` are cleaned now, the rest at the next call (Kafka's rule).
    /// Only segments wholly below the last checkpointed high watermark are cleaned (see
    /// [`PartitionLog::write_high_watermark`]). Appends and reads go on meanwhile; the writer
    /// lock is taken only for each swap. `None` when nothing was due.
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
        // Only below the high watermark: a replica may truncate what is above it, and a record
        // compacted away for a later one of its key must never lose that later one to a cut.
        let bound = self.clean_bound_offset.load(Ordering::Acquire);
        let below_bound = segments
            .iter()
            .take_while(|s| s.next_offset() <= bound)
            .count();
        segments.truncate(self.sealed_count(&segments).min(below_bound));
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

    /// Persists and publishes a larger log start offset, and moves the epoch cache's first
    /// entry up to it. Called with the writer lock held.
    fn advance_log_start_offset(&self, offset: i64) -> Result<(), StorageError> {
        if offset <= self.log_start_offset() {
            return Ok(());
        }
        write_log_start_offset(&self.storage, &self.dir, offset)?;
        self.log_start_offset.store(offset, Ordering::Release);
        // The epoch holding the new start now starts there (Kafka's truncateFromStart). A
        // crash before this is fixed at open, which fits the cache to the log start too.
        self.update_leader_epochs(|epochs| epochs.truncate_from_start(offset))
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
}
