//! Cutting a `PartitionLog` back, as a follower does when its log diverged from its leader's:
//! `truncate_to` (drop every record from an offset on) and `reset_to` (drop every record and
//! start afresh at an offset, when the leader's log starts past ours), plus the high-watermark
//! checkpoint a replica keeps beside its log.
//!
//! Crash safety: each operation first writes a marker (`truncation-in-progress`, see
//! `PendingTruncation`) durably, then updates the recovery checkpoint so that it never names
//! bytes or segments about to go, then deletes and cuts files, fixes producer state and the
//! epoch cache, and removes the marker last. A crash anywhere in between leaves the marker, and
//! the next open redoes the whole operation after recovery: no cut record is ever served again,
//! and no record below the cut is lost. The marker is removed durably before the operation
//! returns, so it can never cut records appended afterwards.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};

use crate::checkpoint::{
    read_high_watermark, write_high_watermark, write_log_start_offset, PendingTruncation,
    RecoveryCheckpoint,
};
use crate::error::StorageError;
use crate::leader_epoch::LeaderEpochCache;
use crate::producer_state::{remove_snapshots_above, ProducerStateManager};
use crate::recovery::rebuild_producer_state;
use crate::segment::{lock, LogSegment};

use super::{PartitionLog, WriterState};

impl PartitionLog {
    /// Removes every record at and after `offset`: later segments are deleted, the segment
    /// holding `offset` is cut (file and indexes), producer state is rebuilt as of the cut, the
    /// epoch cache drops the epochs starting at or after it, and the log end offset (and the
    /// flushed offset, if higher) becomes the cut. Durable before it returns, whether or not
    /// the records were flushed. When `offset` is at or past the log end no record goes, but
    /// the epoch cache still drops the epochs starting at or after `offset` (persisted).
    ///
    /// `offset` should be a batch boundary (replicas truncate to their own epoch ends and
    /// high watermarks, which are). Inside a batch, the whole batch goes: a batch cannot be
    /// split, and keeping it would keep records at and after `offset`.
    ///
    /// Errors: `OffsetOutOfRange` when `offset` is below the log start offset; `Io` (the log is
    /// then offline; reopening finishes the truncation); `LogFailed`.
    pub fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        let _cleaning = lock(&self.cleaner_lock);
        let mut writer = lock(&self.writer);
        self.check_healthy()?;
        // Only a follower truncates: no leader append may follow until the next leadership.
        writer.leader_epoch = None;
        if offset >= self.log_end_offset() {
            // No record to cut, but an epoch this replica led without writing starts at the
            // log end: kept, it would answer OffsetsForLeaderEpoch for an epoch the leader's
            // log does not have, and the follower would never find where it diverged (Kafka's
            // UnifiedLog.truncateTo does the same).
            return self.update_leader_epochs(|epochs| epochs.truncate_from_end(offset));
        }
        if offset < self.log_start_offset() {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                log_end_offset: self.log_end_offset(),
            });
        }
        self.cut_from(&mut writer, offset)
            .map_err(|error| self.fail(error))
    }

    /// Empties the log and starts it afresh at `offset`: log start offset = log end offset =
    /// `offset`, no producer state, an empty epoch cache. For a follower whose leader's log
    /// starts past this log's end (it fell behind retention, or is new). Durable and
    /// crash-safe like [`PartitionLog::truncate_to`].
    ///
    /// Errors: `OffsetOutOfRange` when `offset` is negative; `Io` (the log is then offline;
    /// reopening finishes the reset); `LogFailed`.
    pub fn reset_to(&self, offset: i64) -> Result<(), StorageError> {
        if offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                log_end_offset: self.log_end_offset(),
            });
        }
        let _cleaning = lock(&self.cleaner_lock);
        let mut writer = lock(&self.writer);
        self.check_healthy()?;
        writer.leader_epoch = None;
        self.reset_locked(&mut writer, offset)
            .map_err(|error| self.fail(error))
    }

    /// Persists `high_watermark` as this partition's high-watermark checkpoint (file
    /// `high-watermark`), atomically and durably. Storage does not check it against the log:
    /// the caller owns the high watermark. From then on the cleaner compacts only segments
    /// wholly below it (records above it may still be truncated; see `clean`); a log whose
    /// high watermark was never checkpointed is compacted up to its active segment.
    ///
    /// Errors: `Io`; `LogFailed` on a failed handle or one a move retired (its directory is
    /// about to go: the checkpoint belongs in the copy's).
    pub fn write_high_watermark(&self, high_watermark: i64) -> Result<(), StorageError> {
        self.check_healthy()?;
        write_high_watermark(&self.storage, &self.dir, high_watermark)?;
        self.clean_bound_offset
            .store(high_watermark, Ordering::Release);
        Ok(())
    }

    /// The last checkpointed high watermark, or `None` if there is none or it is unreadable.
    /// Not clamped: the caller bounds it by the log (`log_start_offset..=log_end_offset`).
    pub fn read_high_watermark(&self) -> Option<i64> {
        read_high_watermark(&self.storage, &self.dir)
    }

    /// Finishes a truncation or reset a crash interrupted (its marker is still on disk). Called
    /// by `open` on the recovered log, before anyone else can use it.
    pub(super) fn finish_interrupted_truncation(&self) -> Result<(), StorageError> {
        let Some(pending) = PendingTruncation::read(&self.storage, &self.dir)? else {
            return Ok(());
        };
        tracing::warn!(dir = %self.dir.display(), ?pending, "finishing a truncation interrupted by a crash");
        let _cleaning = lock(&self.cleaner_lock);
        let mut writer = lock(&self.writer);
        match pending {
            PendingTruncation::CutFrom(offset) if offset < self.log_end_offset() => {
                self.cut_from(&mut writer, offset.max(self.log_start_offset()))
            }
            PendingTruncation::CutFrom(_) => PendingTruncation::remove(&self.storage, &self.dir),
            PendingTruncation::ResetTo(offset) => self.reset_locked(&mut writer, offset),
        }
    }

    /// [`PartitionLog::truncate_to`] with the locks held and `offset` inside the log.
    fn cut_from(
        &self,
        writer: &mut MutexGuard<'_, WriterState>,
        offset: i64,
    ) -> Result<(), StorageError> {
        // Rolls still owe their checkpoint: done now, so no pending roll names a cut segment.
        self.seal_rolled_segments()?;
        // Held to the end: no flush may publish an offset of the old log end meanwhile.
        let _flushing = lock(&self.flush_lock);
        self.truncations.fetch_add(1, Ordering::AcqRel);
        PendingTruncation::CutFrom(offset).write(&self.storage, &self.dir)?;
        let segments = self.segments_snapshot();
        let keep = segments
            .iter()
            .rposition(|s| s.base_offset() <= offset)
            .unwrap_or(0);
        let Some(containing) = segments.get(keep).cloned() else {
            return PendingTruncation::remove(&self.storage, &self.dir);
        };
        let (position, cut_offset) = match containing.find_batch(offset, containing.size_bytes())? {
            // A batch straddling the log start (DeleteRecords may move it inside one) goes
            // whole too; what it held below the start was deleted already, so the log end
            // stays at the start.
            Some((position, header)) => (
                position,
                header.base_offset.min(offset).max(self.log_start_offset()),
            ),
            None => (containing.size_bytes(), offset),
        };
        if position < containing.size_bytes() && cut_offset < offset {
            tracing::warn!(dir = %self.dir.display(), offset, cut_offset,
                "truncation inside a batch: the whole batch is cut");
        }
        // The checkpoint first: once it names the kept position, neither the deleted segments
        // nor the cut bytes are something recovery was told to trust.
        RecoveryCheckpoint {
            recovery_point_offset: cut_offset,
            segment_base_offset: containing.base_offset(),
            position_bytes: position,
        }
        .write(&self.storage, &self.dir)?;
        let doomed: Vec<Arc<LogSegment>> = self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(keep + 1..)
            .collect();
        for segment in doomed.iter().rev() {
            segment.delete_files()?;
        }
        containing.truncate_to(position, cut_offset, self.config().index_interval_bytes)?;
        writer.active = Arc::clone(&containing);
        self.log_end_offset.store(cut_offset, Ordering::Release);
        self.flushed_offset.fetch_min(cut_offset, Ordering::AcqRel);
        self.sealed_offset
            .fetch_min(containing.base_offset(), Ordering::AcqRel);
        self.first_dirty_offset
            .fetch_min(cut_offset, Ordering::AcqRel);
        // Records appended after the cut may be cut again until a high watermark covers them.
        self.clean_bound_offset
            .fetch_min(cut_offset, Ordering::AcqRel);
        let kept = self.segments_snapshot();
        let mut producers = rebuild_producer_state(&self.storage, &self.dir, &kept, cut_offset)?;
        producers.set_expiration_ms(self.config().producer_id_expiration_ms);
        writer.producers = producers;
        self.update_leader_epochs(|epochs| epochs.truncate_from_end(cut_offset))?;
        self.finish_truncation(cut_offset)
    }

    /// [`PartitionLog::reset_to`] with the locks held.
    fn reset_locked(
        &self,
        writer: &mut MutexGuard<'_, WriterState>,
        offset: i64,
    ) -> Result<(), StorageError> {
        let _flushing = lock(&self.flush_lock);
        self.truncations.fetch_add(1, Ordering::AcqRel);
        PendingTruncation::ResetTo(offset).write(&self.storage, &self.dir)?;
        let old: Vec<Arc<LogSegment>> = self.segments_snapshot();
        // No checkpoint until the new one: whichever segments go, and wherever the new segment
        // lands (below the old first one, even), none can name a missing segment. Recovery
        // meanwhile verifies everything, which is safe.
        RecoveryCheckpoint::remove(&self.storage, &self.dir)?;
        for segment in old.iter().rev() {
            segment.delete_files()?;
        }
        self.storage.sync_dir(&self.dir)?;
        let config = self.config();
        let fresh = Arc::new(LogSegment::create(
            &self.storage,
            &self.dir,
            offset,
            config.segment_index_bytes,
        )?);
        *self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner) = vec![Arc::clone(&fresh)];
        writer.active = Arc::clone(&fresh);
        let mut producers = ProducerStateManager::default();
        producers.set_expiration_ms(config.producer_id_expiration_ms);
        writer.producers = producers;
        *lock(&self.pending_roll) = None;
        remove_snapshots_above(&self.storage, &self.dir, i64::MIN)?;
        write_log_start_offset(&self.storage, &self.dir, offset)?;
        self.write_recovery_point(
            writer.producers.snapshot(offset),
            RecoveryCheckpoint {
                recovery_point_offset: offset,
                segment_base_offset: offset,
                position_bytes: 0,
            },
        )?;
        // The directory fsync of that write made the new segment's entry durable.
        fresh.mark_entry_durable();
        self.log_start_offset.store(offset, Ordering::Release);
        self.log_end_offset.store(offset, Ordering::Release);
        self.flushed_offset.store(offset, Ordering::Release);
        self.sealed_offset.store(offset, Ordering::Release);
        self.first_dirty_offset.store(offset, Ordering::Release);
        self.clean_bound_offset.store(offset, Ordering::Release);
        self.update_leader_epochs(|epochs| {
            let emptied = !epochs.entries().is_empty();
            *epochs = LeaderEpochCache::new();
            emptied
        })?;
        self.finish_truncation(offset)
    }

    /// The last steps of either operation: snapshots past `offset` go (durably: one left
    /// behind would be loaded once the log grows past it again), then the marker.
    fn finish_truncation(&self, offset: i64) -> Result<(), StorageError> {
        remove_snapshots_above(&self.storage, &self.dir, offset)?;
        self.storage.sync_dir(&self.dir)?;
        PendingTruncation::remove(&self.storage, &self.dir)
    }
}
