//! Reading a `PartitionLog`: whole batches from an offset up to a bound (KIP-74's first-batch
//! rule), and the lookups by timestamp behind ListOffsets (by time, and max timestamp).

use std::sync::Arc;

use bytes::Bytes;

use crate::batch_header::BatchHeader;
use crate::error::StorageError;
use crate::records::RecordReader;
use crate::segment::{FirstBatch, LogSegment};

use super::{PartitionLog, TimestampOffset};

impl PartitionLog {
    /// Whole batches starting with the batch containing `offset`, each with its last offset
    /// below `upper_bound_offset` (exclusive; the high watermark), at most `max_bytes` in
    /// total, except that the first batch is returned whole even if larger (KIP-74).
    /// Empty when `offset == log_end_offset` or nothing is below the bound.
    ///
    /// Errors: `OffsetOutOfRange` when `offset` is outside `[log_start_offset,
    /// log_end_offset]`; `Io`; `CorruptSegment` if committed bytes are damaged.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound_offset: i64,
    ) -> Result<Bytes, StorageError> {
        self.read_batches(offset, max_bytes, upper_bound_offset, FirstBatch::Whole)
    }

    /// [`PartitionLog::read`] without the first-batch exception: never more than `max_bytes`,
    /// so empty when the first batch alone is larger. For a Fetch's later partitions, once its
    /// first batch has been granted (KIP-74: only the response's first batch may exceed).
    ///
    /// Errors: as [`PartitionLog::read`].
    pub fn read_at_most(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound_offset: i64,
    ) -> Result<Bytes, StorageError> {
        self.read_batches(
            offset,
            max_bytes,
            upper_bound_offset,
            FirstBatch::WithinLimit,
        )
    }

    fn read_batches(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound_offset: i64,
        first_batch: FirstBatch,
    ) -> Result<Bytes, StorageError> {
        self.check_healthy()?;
        let log_end_offset = self.log_end_offset();
        let log_start_offset = self.log_start_offset();
        if offset < log_start_offset || offset > log_end_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }
        if offset == log_end_offset || offset >= upper_bound_offset {
            return Ok(Bytes::new());
        }
        // The segment holding `offset`, then the later ones in case `offset` falls in a gap
        // after the last batch of the first (compaction leaves gaps and may empty a segment).
        let candidates: Vec<Arc<LogSegment>> = {
            let segments = self.read_segments();
            let first = segments
                .partition_point(|s| s.base_offset() <= offset)
                .saturating_sub(1);
            segments.iter().skip(first).cloned().collect()
        };
        for segment in candidates {
            if let Some(bytes) = segment.read(offset, max_bytes, upper_bound_offset, first_batch)? {
                return Ok(bytes);
            }
        }
        Ok(Bytes::new())
    }

    /// The first record at or after the log start offset whose timestamp is `>= target_ms`
    /// (Kafka's ListOffsets by timestamp, correct for out-of-order CreateTime timestamps):
    /// the time index finds the first batch whose max timestamp reaches the target; a batch
    /// of one record answers from its header, any other is walked by `reader` up to the record
    /// (streaming: see [`RecordReader::find_record`]), or, for a batch whose records do not
    /// decode, the batch's first offset answers. `None` when no record is that late.
    ///
    /// Memory: one stored batch at a time plus what `reader` holds while walking it.
    ///
    /// Errors: `Io`, `CorruptSegment`.
    pub fn offset_for_timestamp(
        &self,
        target_ms: i64,
        reader: &dyn RecordReader,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        self.check_healthy()?;
        let log_start_offset = self.log_start_offset();
        for segment in self.segments_snapshot() {
            if segment.max_timestamp().is_none_or(|(ts, _)| ts < target_ms) {
                continue;
            }
            let Some((start, _)) = segment.find_batch_by_timestamp(target_ms)? else {
                continue;
            };
            for item in segment.headers(start, segment.size_bytes()) {
                let (position, header) = item?;
                if header.max_timestamp < target_ms
                    || header.last_offset() < log_start_offset
                    || header.is_control()
                {
                    continue;
                }
                if let Some(only) = single_record(&header) {
                    return Ok(Some(only));
                }
                let found = find_in_batch(reader, &segment, position, &header, &mut |o, ts| {
                    ts >= target_ms && o >= log_start_offset
                })?;
                match found {
                    // Its max timestamp reaches the target: answer at the batch's granularity.
                    None => {
                        return Ok(Some(TimestampOffset {
                            offset: header.base_offset.max(log_start_offset),
                            timestamp: header.max_timestamp,
                        }))
                    }
                    Some(Some(found)) => return Ok(Some(found)),
                    Some(None) => {}
                }
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp in the log (the first one, if several share it),
    /// for ListOffsets' max-timestamp lookup (-3): the segments' recorded max timestamps pick
    /// the segment, its time index the batch, and a batch of more than one record is walked
    /// (streaming) to the first record carrying that timestamp, as Kafka's
    /// `offsetOfMaxTimestamp` does; the batch's last offset when its records do not decode.
    /// `None` for an empty log.
    ///
    /// Errors: `Io`, `CorruptSegment`.
    pub fn max_timestamp_offset(
        &self,
        reader: &dyn RecordReader,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        self.check_healthy()?;
        let log_start_offset = self.log_start_offset();
        let mut best: Option<(i64, Arc<LogSegment>)> = None;
        for segment in self.segments_snapshot() {
            if let Some((ts, _)) = segment.max_timestamp() {
                if best.as_ref().is_none_or(|(best_ts, _)| ts > *best_ts) {
                    best = Some((ts, segment));
                }
            }
        }
        let Some((max_ts, segment)) = best else {
            return Ok(None);
        };
        let Some((position, header)) = segment.find_batch_by_timestamp(max_ts)? else {
            return Ok(None);
        };
        let offset = match single_record(&header) {
            Some(only) => only.offset,
            None => find_in_batch(reader, &segment, position, &header, &mut |_, ts| {
                ts >= max_ts
            })?
            .flatten()
            .map_or(header.last_offset(), |found| found.offset),
        };
        Ok(Some(TimestampOffset {
            offset: offset.max(log_start_offset),
            timestamp: max_ts,
        }))
    }
}

/// The one record of a data batch holding a single record: its offset and timestamp are the
/// batch's (the max timestamp of one record is its own), so no record need be read.
fn single_record(header: &BatchHeader) -> Option<TimestampOffset> {
    (header.last_offset_delta == 0 && header.records_count == 1 && !header.is_control()).then_some(
        TimestampOffset {
            offset: header.base_offset,
            timestamp: header.max_timestamp,
        },
    )
}

/// The first record of the batch at `position` that `wanted(offset, timestamp)` accepts, found
/// by `reader`'s streaming walk; `None` (logged) when the batch's records do not decode.
fn find_in_batch(
    reader: &dyn RecordReader,
    segment: &LogSegment,
    position: u64,
    header: &BatchHeader,
    wanted: &mut dyn FnMut(i64, i64) -> bool,
) -> Result<Option<Option<TimestampOffset>>, StorageError> {
    let batch = segment.read_batch(position, header)?;
    Ok(match reader.find_record(&batch, wanted) {
        Ok(found) => Some(found.map(|(offset, timestamp)| TimestampOffset { offset, timestamp })),
        Err(error) => {
            tracing::warn!(path = %segment.log_path().display(), position, %error, "stored batch whose records do not decode");
            None
        }
    })
}

/// The records of a stored batch, or `None` (logged) when they do not decode: a compressed
/// batch accepted on its header and CRC (the broker's relaxed produce validation) is served as
/// stored, and the lookups that look inside batches fall back to the batch's own fields.
pub(crate) fn readable_records(
    reader: &dyn RecordReader,
    segment: &LogSegment,
    position: u64,
    batch: &[u8],
) -> Option<Vec<crate::records::RecordSummary>> {
    match reader.records(batch) {
        Ok(records) => Some(records),
        Err(error) => {
            tracing::warn!(path = %segment.log_path().display(), position, %error, "stored batch whose records do not decode");
            None
        }
    }
}
