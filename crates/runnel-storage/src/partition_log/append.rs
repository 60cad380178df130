//! Appending to a `PartitionLog`: checking batches and idempotent-producer rules, assigning
//! offsets (and LogAppendTime) by rewriting headers only, rolling the active segment (the one
//! fsync a roll cannot defer; the rest is left to the next flush), and keeping a zero tail
//! ahead of appends.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::batch_header::{
    set_base_offset, set_log_append_time_split, set_partition_leader_epoch, verify_crc,
    BatchHeader, HEADER_SIZE_BYTES,
};
use crate::error::{BatchDefect, StorageError};
use crate::producer_state::{PendingProducerUpdates, ProducerStateManager, SequenceCheck};
use crate::segment::{lock, now_ms, LogSegment};

use super::{
    AppendOutcome, CrcCheck, LogConfig, PartitionLog, PendingRoll, WriterState,
    ZERO_TAIL_MAX_BYTES, ZERO_TAIL_MIN_BYTES,
};

/// A validated append, ready to write: each batch as its rewritten header (offsets assigned)
/// and its records as received, their parsed headers, and the producer updates to apply once
/// written. Only headers are copied: copying a megabyte request to rewrite 8 bytes of it was
/// 5 % of the broker's CPU in an uncompressed produce, plus a fresh allocation per request.
struct PreparedAppend<'a> {
    batches: Vec<([u8; HEADER_SIZE_BYTES], &'a [u8])>,
    size_bytes: u64,
    headers: Vec<BatchHeader>,
    producers: PendingProducerUpdates,
    /// `(epoch, base offset)` of the batches that may start a leader epoch: all of a
    /// replicated append, the first of a stamped one.
    epoch_starts: Vec<(i32, i64)>,
}

impl PreparedAppend<'_> {
    /// The bytes to write, in order.
    fn parts(&self) -> Vec<&[u8]> {
        self.batches
            .iter()
            .flat_map(|(head, body)| [head.as_slice(), body])
            .collect()
    }
}

/// Who wrote the batches of an append: it decides what is checked and rewritten.
#[derive(Debug, Clone, Copy)]
enum AppendOrigin {
    /// A producer: offsets are assigned from the log end offset, idempotence rules enforced,
    /// LogAppendTime and the leader epoch (when set) stamped.
    Client {
        log_append_time_ms: Option<i64>,
        crc: CrcCheck,
        /// The leader epoch the caller leads at: the append is refused unless the log still
        /// stamps that epoch (a replicated append or a truncation since clears it).
        leader_epoch: Option<i32>,
    },
    /// The leader: its offsets and bytes are kept, producer state follows without checks.
    Replication,
}

enum Prepared<'a> {
    Write(PreparedAppend<'a>),
    Duplicate { base_offset: i64, last_offset: i64 },
}

impl PartitionLog {
    /// Appends one or more concatenated v2 batches, assigning offsets from the log end offset
    /// by rewriting each batch's base offset (nothing else changes, so CRCs stay valid).
    ///
    /// All batches are checked before anything is written: header fields, lengths, CRC32C and
    /// idempotent-producer rules. The append is all or nothing.
    ///
    /// Errors: `EmptyAppend`; `CorruptBatch` for a malformed batch; `InvalidProducerEpoch`,
    /// `OutOfOrderSequence`, `DuplicateInMultiBatchAppend` for producer violations; `Io` if the
    /// write failed (the file is cut back, nothing becomes visible).
    pub fn append(&self, batches: &[u8]) -> Result<AppendOutcome, StorageError> {
        self.append_with_time(batches, None, CrcCheck::Verify)
    }

    /// [`PartitionLog::append`], stamping every batch with LogAppendTime `timestamp_ms` when
    /// given: the timestamp-type attribute is set, the max timestamp becomes `timestamp_ms` and
    /// the CRC is recomputed (after the client's CRC was verified). `crc` says whether the
    /// client's CRC still needs verifying here.
    ///
    /// Errors: as for `append` (no CRC mismatch with [`CrcCheck::VerifiedByCaller`]).
    pub fn append_with_time(
        &self,
        batches: &[u8],
        log_append_time_ms: Option<i64>,
        crc: CrcCheck,
    ) -> Result<AppendOutcome, StorageError> {
        self.append_from(
            batches,
            AppendOrigin::Client {
                log_append_time_ms,
                crc,
                leader_epoch: None,
            },
        )
    }

    /// [`PartitionLog::append_with_time`] by the leader of `leader_epoch`: refused with
    /// `NotLeaderAtEpoch` unless the log stamps that epoch now ([`PartitionLog::set_leader_epoch`]
    /// and nothing replicated or truncated since). This closes the window in which a produce
    /// checked against a leadership that has just ended would write into what is now a
    /// follower's log, between the follower's own replicated batches.
    ///
    /// Errors: as for `append_with_time`, and `NotLeaderAtEpoch`.
    pub fn append_as_leader(
        &self,
        batches: &[u8],
        log_append_time_ms: Option<i64>,
        crc: CrcCheck,
        leader_epoch: i32,
    ) -> Result<AppendOutcome, StorageError> {
        self.append_from(
            batches,
            AppendOrigin::Client {
                log_append_time_ms,
                crc,
                leader_epoch: Some(leader_epoch),
            },
        )
    }

    /// Appends batches replicated from the leader, at the leader's offsets and byte for byte:
    /// nothing is rewritten. Each batch's header and CRC32C are verified; the first base offset
    /// must be at or after the log end offset, each later batch after the one before (gaps are
    /// accepted, as Kafka does: a compacted leader log has them). Producer state is updated
    /// from the batches without sequence or epoch refusal (the leader checked them), and each
    /// batch whose `partition_leader_epoch` is newer than the epoch cache's latest starts that
    /// epoch at its base offset (persisted before the batches are written).
    ///
    /// Errors: `EmptyAppend`; `CorruptBatch` for a malformed batch or one not after the one
    /// before it; `ReplicaAppendBehindLogEnd` when the first batch starts below the log end
    /// offset (the follower must truncate or refetch); `Io`. All or nothing, like `append`.
    pub fn append_replicated(&self, batches: &[u8]) -> Result<AppendOutcome, StorageError> {
        self.append_from(batches, AppendOrigin::Replication)
    }

    /// From now on, stamps `epoch` into the `partition_leader_epoch` of every batch
    /// [`PartitionLog::append`] writes, and starts `epoch` at the log end offset in the epoch
    /// cache (persisted before this returns). The broker calls it when this replica becomes
    /// leader of the partition at `epoch`. Until it is called, appends keep the field as the
    /// client sent it.
    ///
    /// Errors: `StaleLeaderEpoch` when the cache already holds a newer epoch (nothing changes);
    /// `Io` writing the cache; `LogFailed`.
    pub fn set_leader_epoch(&self, epoch: i32) -> Result<(), StorageError> {
        let mut writer = lock(&self.writer);
        self.check_healthy()?;
        if let Some(latest) = self.latest_epoch().filter(|&latest| latest > epoch) {
            return Err(StorageError::StaleLeaderEpoch { epoch, latest });
        }
        self.start_epochs(&[(epoch, self.log_end_offset())])?;
        writer.leader_epoch = Some(epoch);
        Ok(())
    }

    /// Notes that a batch of idempotent producer `producer_id` was refused before it could be
    /// appended (the broker found too few in-sync replicas for acks=all): a sequence gap of
    /// that producer is then the rest of its pipeline, answered with
    /// `SequenceAfterUnwrittenBatch` (cause `Refused`) until it writes again.
    pub fn note_refused_producer(&self, producer_id: i64) {
        lock(&self.writer).producers.note_refused(producer_id);
    }

    /// Starts each `(epoch, start_offset)` newer than the cache's latest epoch, persisting the
    /// cache first if that changes it. Called with the writer lock held, before the records
    /// are written: a crash between leaves an epoch starting at the log end, which the next
    /// open drops.
    pub(super) fn start_epochs(&self, starts: &[(i32, i64)]) -> Result<(), StorageError> {
        let latest = self.latest_epoch();
        if starts
            .iter()
            .all(|&(epoch, _)| latest.is_some_and(|latest| epoch <= latest))
        {
            return Ok(());
        }
        self.update_leader_epochs(|epochs| {
            starts
                .iter()
                .fold(false, |changed, &(epoch, start_offset)| {
                    epochs.assign(epoch, start_offset) | changed
                })
        })
    }

    /// The shared append path: checks and prepares `batches` as `origin` requires, starts new
    /// leader epochs, rolls if needed, writes, then publishes the new log end offset.
    fn append_from(
        &self,
        batches: &[u8],
        origin: AppendOrigin,
    ) -> Result<AppendOutcome, StorageError> {
        if batches.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        let config = self.config();
        let mut writer = lock(&self.writer);
        self.check_healthy()?;
        match &origin {
            AppendOrigin::Client {
                leader_epoch: Some(epoch),
                ..
            } if writer.leader_epoch != Some(*epoch) => {
                return Err(StorageError::NotLeaderAtEpoch {
                    epoch: *epoch,
                    current: writer.leader_epoch,
                });
            }
            // Replicated data means another replica leads: this log stamps no epoch of its
            // own until `set_leader_epoch` is called again.
            AppendOrigin::Replication => writer.leader_epoch = None,
            AppendOrigin::Client { .. } => {}
        }
        writer
            .producers
            .set_expiration_ms(config.producer_id_expiration_ms);
        let log_end_offset = self.log_end_offset();
        let prepared = match prepare_append(
            batches,
            log_end_offset,
            &writer.producers,
            origin,
            writer.leader_epoch,
        )? {
            Prepared::Write(prepared) => prepared,
            Prepared::Duplicate {
                base_offset,
                last_offset,
            } => {
                return Ok(AppendOutcome::Duplicate {
                    base_offset,
                    last_offset,
                })
            }
        };
        let base_offset = prepared
            .headers
            .first()
            .map_or(log_end_offset, |h| h.base_offset);
        let next_offset = prepared
            .headers
            .last()
            .map_or(log_end_offset, |h| h.last_offset().saturating_add(1));
        self.start_epochs(&prepared.epoch_starts)?;
        let segment = self
            .segment_for_append(&mut writer, &config, prepared.size_bytes, next_offset)
            .map_err(|error| self.fail(error))?;
        if let Err(failed) = segment.append(
            &prepared.parts(),
            &prepared.headers,
            config.index_interval_bytes,
        ) {
            // A write that failed and was cut off cleanly (ENOSPC) leaves the log as it was:
            // this append fails, the next may succeed. One that could not be undone leaves
            // the segment in an unknown state.
            return Err(if failed.undone {
                writer.producers.note_unwritten(&prepared.producers);
                failed.error
            } else {
                self.fail(failed.error)
            });
        }
        writer.producers.commit(prepared.producers);
        self.log_end_offset.store(next_offset, Ordering::Release);
        self.appended_bytes
            .fetch_add(prepared.size_bytes, Ordering::Relaxed);
        if self.zero_tail.load(Ordering::Relaxed) {
            keep_zero_tail(&segment, &config);
        }
        Ok(AppendOutcome::Appended {
            base_offset,
            last_offset: next_offset - 1,
        })
    }

    /// The active segment, after rolling it if an append of `size_bytes` ending before
    /// `next_offset` must go into a new one. Called with the writer lock held.
    fn segment_for_append(
        &self,
        writer: &mut WriterState,
        config: &LogConfig,
        size_bytes: u64,
        next_offset: i64,
    ) -> Result<Arc<LogSegment>, StorageError> {
        let active = Arc::clone(&writer.active);
        let current_bytes = active.size_bytes();
        if current_bytes == 0 {
            return Ok(active);
        }
        let grown_bytes = current_bytes.saturating_add(size_bytes);
        // Index entries store u32 relative offsets and positions; roll before either overflows.
        let relative_overflow = next_offset.saturating_sub(active.base_offset())
            > i64::from(u32::MAX)
            || grown_bytes > u64::from(u32::MAX);
        let roll = grown_bytes > config.segment_bytes
            || now_ms().saturating_sub(active.created_at_ms()) >= config.segment_ms
            || active.indexes_full()
            || relative_overflow;
        if !roll {
            return Ok(active);
        }
        writer.active = self.roll(&active, &writer.producers, config)?;
        Ok(Arc::clone(&writer.active))
    }

    /// Seals `active` (fsync of its data) and starts a new segment at the log end offset. The
    /// producer snapshot and checkpoint that let recovery skip the sealed segment are left to
    /// the next `flush` (see the module docs).
    fn roll(
        &self,
        active: &Arc<LogSegment>,
        producers: &ProducerStateManager,
        config: &LogConfig,
    ) -> Result<Arc<LogSegment>, StorageError> {
        let base_offset = self.log_end_offset();
        active.write_final_time_entry()?;
        // Recovery takes a sealed segment's file length as its size.
        active.trim_zero_tail()?;
        {
            // Under the flush lock: a flush that failed meanwhile must not be followed by a
            // published offset.
            let _flushing = lock(&self.flush_lock);
            // The one fsync a roll cannot defer: nothing reaches the new segment before the
            // sealed one is on disk, so a crash can only tear the end of the last segment
            // (recovery's torn-tail versus mid-log rule relies on it).
            active.sync()?;
            // Its directory entry too, if no flush has synced it since it was created.
            self.make_entries_durable(std::slice::from_ref(active))?;
            self.check_healthy()?;
            // Every earlier segment was synced when it rolled, so all offsets below are
            // durable.
            self.flushed_offset.fetch_max(base_offset, Ordering::AcqRel);
        }
        let segment = Arc::new(LogSegment::create(
            &self.storage,
            &self.dir,
            base_offset,
            config.segment_index_bytes,
        )?);
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&segment));
        let roll = PendingRoll {
            sealed: vec![Arc::clone(active)],
            producer_snapshot: producers.snapshot(base_offset),
            base_offset,
        };
        let mut pending = lock(&self.pending_roll);
        match pending.as_mut() {
            Some(earlier) => earlier.absorb(roll),
            None => *pending = Some(roll),
        }
        tracing::debug!(path = %segment.log_path().display(), "rolled to a new segment");
        Ok(segment)
    }
}

/// Keeps zeros ahead of the active segment's end (see
/// [`ZERO_TAIL_FLUSHED_BYTES_MAX`](super::ZERO_TAIL_FLUSHED_BYTES_MAX)): when less than half the
/// wanted tail is left, writes it up to the full length again (never past `segment.bytes`). A
/// failure only costs the speed-up, so it is logged, not returned: the append it follows has
/// succeeded.
fn keep_zero_tail(segment: &LogSegment, config: &LogConfig) {
    let end = segment.size_bytes();
    let wanted = end.clamp(ZERO_TAIL_MIN_BYTES, ZERO_TAIL_MAX_BYTES);
    if segment.zeroed_end_bytes() >= end.saturating_add(wanted / 2) {
        return;
    }
    let target = end.saturating_add(wanted).min(config.segment_bytes);
    if let Err(error) = segment.extend_zero_tail(target) {
        tracing::debug!(path = %segment.log_path().display(), %error, "could not extend the zero tail");
    }
}

/// Parses and checks every batch of `input` as `origin` requires, copying only its header to
/// assign offsets from `log_end_offset` (and stamp LogAppendTime and `leader_epoch`) for a
/// client's append, and stages producer updates. Writes nothing.
fn prepare_append<'a>(
    input: &'a [u8],
    log_end_offset: i64,
    producers: &ProducerStateManager,
    origin: AppendOrigin,
    leader_epoch: Option<i32>,
) -> Result<Prepared<'a>, StorageError> {
    let mut batches = Vec::new();
    let mut headers = Vec::new();
    let mut epoch_starts = Vec::new();
    let mut pending = PendingProducerUpdates::default();
    let mut next_offset = log_end_offset;
    let mut position = 0usize;
    while position < input.len() {
        let corrupt = |defect| StorageError::CorruptBatch {
            position: position as u64,
            defect,
        };
        let rest = input.get(position..).unwrap_or_default();
        let mut header = BatchHeader::parse(rest).map_err(corrupt)?;
        let size = usize::try_from(header.size_bytes()).unwrap_or(usize::MAX);
        let truncated = |needed_bytes| crate::error::BatchDefect::Truncated {
            needed_bytes,
            available_bytes: rest.len() as u64,
        };
        let batch = rest
            .get(..size)
            .ok_or(truncated(header.size_bytes()))
            .map_err(corrupt)?;
        let verify = match origin {
            AppendOrigin::Client { crc, .. } => crc == CrcCheck::Verify,
            AppendOrigin::Replication => true,
        };
        if verify {
            verify_crc(batch).map_err(corrupt)?;
        }
        let (head, body) = batch
            .split_first_chunk::<HEADER_SIZE_BYTES>()
            .ok_or(truncated(HEADER_SIZE_BYTES as u64))
            .map_err(corrupt)?;
        let mut head = *head;
        match origin {
            AppendOrigin::Client {
                log_append_time_ms, ..
            } => {
                set_base_offset(&mut head, next_offset).map_err(corrupt)?;
                header.base_offset = next_offset;
                if let Some(epoch) = leader_epoch {
                    set_partition_leader_epoch(&mut head, epoch).map_err(corrupt)?;
                    header.partition_leader_epoch = epoch;
                    if headers.is_empty() {
                        epoch_starts.push((epoch, next_offset));
                    }
                }
                if let Some(timestamp_ms) = log_append_time_ms {
                    set_log_append_time_split(&mut head, body, timestamp_ms).map_err(corrupt)?;
                    header = BatchHeader::parse(&head).map_err(corrupt)?;
                }
                match producers.validate(&mut pending, &header)? {
                    SequenceCheck::Append => {}
                    SequenceCheck::Duplicate {
                        base_offset,
                        last_offset,
                    } if size == input.len() => {
                        return Ok(Prepared::Duplicate {
                            base_offset,
                            last_offset,
                        })
                    }
                    SequenceCheck::Duplicate { .. } => {
                        return Err(StorageError::DuplicateInMultiBatchAppend {
                            producer_id: header.producer_id,
                        })
                    }
                }
            }
            AppendOrigin::Replication => {
                if header.base_offset < next_offset {
                    return Err(if headers.is_empty() {
                        StorageError::ReplicaAppendBehindLogEnd {
                            log_end_offset,
                            base_offset: header.base_offset,
                        }
                    } else {
                        corrupt(BatchDefect::OffsetNotIncreasing {
                            found: header.base_offset,
                            expected_min: next_offset,
                        })
                    });
                }
                // A negative epoch is "none" (a batch a leader never stamped): it starts nothing.
                if header.partition_leader_epoch >= 0 {
                    epoch_starts.push((header.partition_leader_epoch, header.base_offset));
                }
                producers.stage_replicated(&mut pending, &header);
            }
        }
        next_offset = header.last_offset().saturating_add(1);
        headers.push(header);
        batches.push((head, body));
        position += size;
    }
    Ok(Prepared::Write(PreparedAppend {
        batches,
        size_bytes: input.len() as u64,
        headers,
        producers: pending,
        epoch_starts,
    }))
}
