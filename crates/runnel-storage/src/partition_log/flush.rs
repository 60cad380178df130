//! Making a `PartitionLog` durable: group-committed fsyncs, write-outs that share a device
//! cache flush with other logs (`crate::group_flush`), the work a roll leaves to the next flush
//! (sealed time indexes, producer snapshot, recovery checkpoint), directory-entry durability,
//! and the failed state a failed write or fsync leaves the log in until it is reopened.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::checkpoint::{write_all_atomically, RecoveryCheckpoint};
use crate::error::StorageError;
use crate::producer_state::{prune_snapshots, ProducerSnapshot};
use crate::segment::{lock, LogSegment};

use super::{PartitionLog, PendingRoll, ZERO_TAIL_FLUSHED_BYTES_MAX};

/// How [`PartitionLog::plan_write_out`] would make an offset durable.
#[derive(Debug)]
pub(crate) enum FlushPlan {
    /// It already is.
    Durable,
    /// Only by [`PartitionLog::flush`] (an fdatasync of its own).
    Fsync,
    /// By writing out the active segment and flushing the device's cache.
    WriteOut(WriteOut),
}

/// A flush done as a write-out of the active segment plus a cache flush of its device.
#[derive(Debug)]
pub(crate) struct WriteOut {
    pub(crate) segment: Arc<LogSegment>,
    /// The log end offset when planned: flushed once the write-out and device flush are done.
    target: i64,
    pub(crate) device: u64,
    /// The log's truncation count when planned (see `PartitionLog::truncations`).
    truncations: u64,
}

impl PartitionLog {
    /// Does the durability work rolls still owe (a `flush` of whatever that needs), so that
    /// retention, DeleteRecords and the cleaner, which act only on sealed segments, see every
    /// segment but the active one as sealed.
    pub(super) fn seal_rolled_segments(&self) -> Result<(), StorageError> {
        if self.roll_pending() {
            // An offset below every log: nothing but the roll's work forces an fsync.
            self.flush(i64::MIN)?;
        }
        Ok(())
    }

    /// Whether a roll is waiting for a `flush` to make it durable (the periodic flush then runs
    /// even for a partition whose `flush.ms` is not yet due).
    pub fn roll_pending(&self) -> bool {
        lock(&self.pending_roll).is_some()
    }

    /// Makes every offset up to and including `offset` durable (fdatasync). Concurrent callers
    /// share one fsync: whoever gets the flush lock syncs everything written so far, and the
    /// others then find their offset already covered. An `offset` at or beyond the log end
    /// flushes everything written so far.
    ///
    /// Errors: `Io` if an fsync fails (the log should then be taken offline).
    pub fn flush(&self, offset: i64) -> Result<(), StorageError> {
        let _flushing = lock(&self.flush_lock);
        if let Err(error) = self.check_healthy() {
            // A log moved away was flushed to its end before it was copied: an offset below
            // that is durable (in the copy), and the append waiting for it is not failed.
            if self.is_moved() && self.flushed_offset() > offset {
                return Ok(());
            }
            return Err(error);
        }
        // A roll recorded after this waits for the next flush; the segments it sealed were
        // synced by the roll itself.
        let pending = lock(&self.pending_roll).take();
        let flushed = self.flushed_offset();
        if flushed > offset && pending.is_none() {
            return Ok(());
        }
        self.sync_dirty_segments(flushed, pending.as_ref())
            // Not retried: after a failed fsync the kernel may have dropped the very pages a
            // retry would claim durable.
            .map_err(|error| self.fail(error))
    }

    /// `Ok` unless a failed write or fsync took the log offline.
    ///
    /// Errors: `LogFailed`, naming the first failure.
    pub fn check_healthy(&self) -> Result<(), StorageError> {
        match self.failure.get() {
            Some(cause) => Err(StorageError::LogFailed {
                dir: self.dir.clone(),
                cause: Arc::clone(cause),
            }),
            None => Ok(()),
        }
    }

    /// Takes the log offline after `error`, a failed write, fsync or write-out (the first
    /// failure is kept as the cause), and returns the error to report.
    pub(crate) fn fail(&self, error: StorageError) -> StorageError {
        if let StorageError::LogFailed { .. } = error {
            return error;
        }
        let mut first = false;
        let cause = self.failure.get_or_init(|| {
            first = true;
            Arc::new(error)
        });
        if first {
            tracing::error!(dir = %self.dir.display(), error = %cause,
                "a write or fsync failed: the log is offline until it is reopened through recovery");
        }
        StorageError::LogFailed {
            dir: self.dir.clone(),
            cause: Arc::clone(cause),
        }
    }

    /// Whether this handle was retired by [`PartitionLog::close_for_move`].
    pub fn is_moved(&self) -> bool {
        matches!(
            self.failure.get().map(|cause| &**cause),
            Some(StorageError::LogMoved { .. })
        )
    }

    /// Whether a failed write or fsync took the log offline (see [`StorageError::LogFailed`]).
    pub fn is_failed(&self) -> bool {
        self.failure.get().is_some()
    }

    /// fsyncs the directory if any of `segments` was created since the last directory fsync,
    /// and, once per opening, the directory's parent (the partition directory may be new, or
    /// left by a crash before its entry was synced), so that no offset in them is reported
    /// flushed while a crash could drop their files.
    pub(super) fn make_entries_durable(
        &self,
        segments: &[Arc<LogSegment>],
    ) -> Result<(), StorageError> {
        if segments.is_empty() {
            // Nothing to publish (a log closed or flushed with nothing written): no fsync.
            return Ok(());
        }
        if !self.directory_durable.load(Ordering::Acquire) {
            if let Some(parent) = self.dir.parent() {
                self.storage.sync_dir(parent)?;
            }
            self.directory_durable.store(true, Ordering::Release);
        }
        if segments.iter().all(|s| s.entry_durable()) {
            return Ok(());
        }
        self.storage.sync_dir(&self.dir)?;
        for segment in segments {
            segment.mark_entry_durable();
        }
        Ok(())
    }

    /// Plans a [`PartitionLog::flush`] up to `offset` that a write-out and a device cache
    /// flush shared with other logs can do instead of an fdatasync (see
    /// `crate::group_flush`): possible when no roll is pending and every unflushed byte lies
    /// in the active segment, overwriting its durable layout
    /// (`LogSegment::overwrites_durable_layout`). Does no I/O.
    pub(crate) fn plan_write_out(&self, offset: i64) -> FlushPlan {
        let _flushing = lock(&self.flush_lock);
        if self.roll_pending() || self.is_failed() {
            return FlushPlan::Fsync;
        }
        let flushed = self.flushed_offset();
        if flushed > offset {
            return FlushPlan::Durable;
        }
        // Read before the segment's size: appends publish the size first, so the size read
        // below covers every byte up to `target`.
        let target = self.log_end_offset();
        let segments = self.read_segments();
        let mut dirty = segments.iter().filter(|s| s.next_offset() > flushed);
        let (Some(segment), None) = (dirty.next(), dirty.next()) else {
            return FlushPlan::Fsync;
        };
        if !segment.entry_durable() || !self.directory_durable.load(Ordering::Acquire) {
            return FlushPlan::Fsync;
        }
        match segment.overwrites_durable_layout(segment.size_bytes()) {
            Some(device) => FlushPlan::WriteOut(WriteOut {
                segment: Arc::clone(segment),
                target,
                device,
                truncations: self.truncations.load(Ordering::Acquire),
            }),
            None => FlushPlan::Fsync,
        }
    }

    /// Publishes a [`WriteOut`] as flushed, once its pages are written out and the device's
    /// cache flushed since.
    pub(crate) fn finish_write_out(&self, write_out: &WriteOut) -> Result<(), StorageError> {
        let _flushing = lock(&self.flush_lock);
        if self.is_moved() && self.flushed_offset() >= write_out.target {
            // Retired by a move whose close flushed past the target: the data is durable (and
            // in the copy), so the write-out's waiters are answered rather than failed.
            return Ok(());
        }
        self.check_healthy()?;
        if self.truncations.load(Ordering::Acquire) != write_out.truncations {
            // The log was cut since: `target` may count offsets written after the cut, which
            // this write-out never covered. The next flush does the work.
            return Ok(());
        }
        self.flushed_offset
            .fetch_max(write_out.target, Ordering::AcqRel);
        self.note_flushed_bytes();
        Ok(())
    }

    /// fsyncs every segment holding offsets at or above `flushed`, does the work `pending`
    /// (rolls) owes, makes the segments' directory entries durable, then publishes the log end
    /// offset read before the first fsync as flushed. Called with the flush lock held.
    fn sync_dirty_segments(
        &self,
        flushed: i64,
        pending: Option<&PendingRoll>,
    ) -> Result<(), StorageError> {
        let target = self.log_end_offset();
        let dirty: Vec<Arc<LogSegment>> = self
            .read_segments()
            .iter()
            .filter(|s| s.next_offset() > flushed)
            .cloned()
            .collect();
        for segment in &dirty {
            segment.sync()?;
        }
        if let Some(roll) = pending {
            self.finish_roll(roll)?;
            // Its checkpoint's directory fsync came after every segment of `dirty` was
            // created, so it made their entries durable too.
            for segment in &dirty {
                segment.mark_entry_durable();
            }
        }
        // A segment a roll created since the last directory fsync (a roll whose work an
        // earlier flush took): its entry before any offset in it counts.
        self.make_entries_durable(&dirty)?;
        self.flushed_offset.fetch_max(target, Ordering::AcqRel);
        self.note_flushed_bytes();
        Ok(())
    }

    /// Updates the average bytes an fsync covers, and with it whether appends keep a zero tail
    /// (see [`ZERO_TAIL_FLUSHED_BYTES_MAX`]). Called with the flush lock held, after an fsync.
    fn note_flushed_bytes(&self) {
        let appended = self.appended_bytes.load(Ordering::Relaxed);
        let covered = appended.saturating_sub(
            self.appended_bytes_at_flush
                .swap(appended, Ordering::Relaxed),
        );
        // An exponential average over about the last eight fsyncs, so that one small or large
        // request does not switch the tail on or off.
        let previous = self.flushed_bytes_average.load(Ordering::Relaxed);
        let average = previous - previous / 8 + covered.min(u64::MAX / 2) / 8;
        self.flushed_bytes_average.store(average, Ordering::Relaxed);
        self.zero_tail
            .store(average < ZERO_TAIL_FLUSHED_BYTES_MAX, Ordering::Relaxed);
    }

    /// The durability work of `roll`, once its sealed segments' data is fsynced: their time
    /// indexes, then the producer snapshot and the checkpoint at the roll's offset. Only then
    /// may retention and the cleaner see those segments as closed: had the checkpoint still
    /// named a byte position inside one, a crash after the cleaner rewrote it would make
    /// recovery start mid-batch in the rewritten file.
    fn finish_roll(&self, roll: &PendingRoll) -> Result<(), StorageError> {
        for segment in &roll.sealed {
            segment.sync_sealed_indexes()?;
        }
        self.write_recovery_point(
            roll.producer_snapshot.clone(),
            RecoveryCheckpoint {
                recovery_point_offset: roll.base_offset,
                segment_base_offset: roll.base_offset,
                position_bytes: 0,
            },
        )?;
        self.sealed_offset
            .fetch_max(roll.base_offset, Ordering::AcqRel);
        Ok(())
    }

    /// Writes a producer snapshot and a recovery checkpoint (one directory fsync for both),
    /// then drops old snapshots. Either file may survive a crash without the other: a
    /// checkpoint without its snapshot only makes recovery replay from an older snapshot.
    pub(super) fn write_recovery_point(
        &self,
        snapshot: ProducerSnapshot,
        checkpoint: RecoveryCheckpoint,
    ) -> Result<(), StorageError> {
        let (snapshot_path, snapshot_bytes) = snapshot.file(&self.dir);
        let (checkpoint_path, checkpoint_bytes) = checkpoint.file(&self.dir);
        write_all_atomically(
            &self.storage,
            &[
                (&snapshot_path, &snapshot_bytes),
                (&checkpoint_path, &checkpoint_bytes),
            ],
        )?;
        prune_snapshots(&self.storage, &self.dir)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::path::Path;

    use super::*;
    use crate::batch_header::testing::{build_batch, ProducerFields};
    use crate::partition_log::LogConfig;

    /// A group flush's write-out that finishes after a move retired the log is answered when
    /// the move's close already flushed its target (the data is durable, and in the copy), and
    /// refused only beyond it.
    #[test]
    fn a_write_out_finishing_after_a_move_is_answered_up_to_what_the_close_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        log.append(&build_batch(3, 10, ProducerFields::NONE))
            .unwrap();
        let planned = |target| WriteOut {
            segment: Arc::clone(&log.read_segments()[0]),
            target,
            device: 0,
            truncations: log.truncation_count(),
        };
        let covered = planned(log.log_end_offset());
        let beyond = planned(log.log_end_offset() + 1);
        log.close_for_move(Path::new("/elsewhere"), |_| Ok(()))
            .unwrap();
        assert!(log.is_moved());
        log.finish_write_out(&covered).unwrap();
        assert!(log.finish_write_out(&beyond).is_err());
    }
}
