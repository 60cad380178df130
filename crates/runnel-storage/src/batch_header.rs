//! The Kafka v2 record batch header (layout in `runnel-batch-layout`): parsing, CRC32C
//! verification and rewriting the base offset in place. This module knows byte layout only;
//! records inside a batch are never decoded by storage.

use crate::error::BatchDefect;

// The header layout is defined once, in `runnel-batch-layout`, shared with the protocol crate.
pub(crate) use runnel_batch_layout::{
    ATTRIBUTES_AT, BATCH_LENGTH_AT, CRC_AT, LAST_OFFSET_DELTA_AT, MAGIC_AT, MAX_TIMESTAMP_AT,
    RECORDS_COUNT_AT,
};
use runnel_batch_layout::{
    BASE_OFFSET_AT, BASE_SEQUENCE_AT, BASE_TIMESTAMP_AT, CONTROL_ATTRIBUTE as CONTROL_FLAG,
    CRC_COVERED_FROM, MAGIC_V2 as SUPPORTED_MAGIC, PARTITION_LEADER_EPOCH_AT, PRODUCER_EPOCH_AT,
    PRODUCER_ID_AT, TIMESTAMP_TYPE_ATTRIBUTE as TIMESTAMP_TYPE_FLAG,
    TRANSACTIONAL_ATTRIBUTE as TRANSACTIONAL_FLAG,
};

/// Size in bytes of the fixed v2 batch header; records start here.
pub const HEADER_SIZE_BYTES: usize = runnel_batch_layout::HEADER_BYTES;
/// `baseOffset` and `batchLength` precede the bytes that `batchLength` counts.
pub const LOG_OVERHEAD_BYTES: usize = runnel_batch_layout::LOG_OVERHEAD_BYTES;

/// `producerId` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;

/// The parsed fixed header of one v2 record batch.
///
/// Invariants after `parse`: `magic == 2`, `batch_length >= 49` (the header after the first
/// 12 bytes), `last_offset_delta >= 0`, `records_count >= 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the `batchLength` field, i.e. batch size minus 12.
    pub batch_length: i32,
    /// Leader epoch stamped by the leader.
    pub partition_leader_epoch: i32,
    /// Format version; always 2.
    pub magic: i8,
    /// CRC32C over bytes 21.. of the batch.
    pub crc: u32,
    /// Flags: compression (bits 0-2), timestamp type (3), transactional (4), control (5).
    pub attributes: i16,
    /// Last offset minus base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record, ms since the epoch.
    pub base_timestamp: i64,
    /// Largest record timestamp, ms since the epoch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn i64_at(buf: &[u8], at: usize) -> Option<i64> {
    array_at(buf, at).map(i64::from_be_bytes)
}

fn i32_at(buf: &[u8], at: usize) -> Option<i32> {
    array_at(buf, at).map(i32::from_be_bytes)
}

fn i16_at(buf: &[u8], at: usize) -> Option<i16> {
    array_at(buf, at).map(i16::from_be_bytes)
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (only the first 61 bytes are read).
    ///
    /// Errors: `Truncated` if `buf` is shorter than the header; `UnsupportedMagic`,
    /// `InvalidLength`, `NegativeField` for header fields storage relies on. The records and
    /// the CRC are not checked here (see [`verify_crc`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchDefect> {
        let truncated = || BatchDefect::Truncated {
            needed_bytes: HEADER_SIZE_BYTES as u64,
            available_bytes: buf.len() as u64,
        };
        let header = buf.get(..HEADER_SIZE_BYTES).ok_or_else(truncated)?;
        let field32 = |at| i32_at(header, at).ok_or_else(truncated);
        let field64 = |at| i64_at(header, at).ok_or_else(truncated);
        let field16 = |at| i16_at(header, at).ok_or_else(truncated);
        let magic = header
            .get(MAGIC_AT)
            .map(|&b| i8::from_be_bytes([b]))
            .ok_or_else(truncated)?;
        let parsed = BatchHeader {
            base_offset: field64(BASE_OFFSET_AT)?,
            batch_length: field32(BATCH_LENGTH_AT)?,
            partition_leader_epoch: field32(PARTITION_LEADER_EPOCH_AT)?,
            magic,
            crc: array_at(header, CRC_AT)
                .map(u32::from_be_bytes)
                .ok_or_else(truncated)?,
            attributes: field16(ATTRIBUTES_AT)?,
            last_offset_delta: field32(LAST_OFFSET_DELTA_AT)?,
            base_timestamp: field64(BASE_TIMESTAMP_AT)?,
            max_timestamp: field64(MAX_TIMESTAMP_AT)?,
            producer_id: field64(PRODUCER_ID_AT)?,
            producer_epoch: field16(PRODUCER_EPOCH_AT)?,
            base_sequence: field32(BASE_SEQUENCE_AT)?,
            records_count: field32(RECORDS_COUNT_AT)?,
        };
        if parsed.magic != SUPPORTED_MAGIC {
            return Err(BatchDefect::UnsupportedMagic(parsed.magic));
        }
        if (parsed.batch_length as i64) < (HEADER_SIZE_BYTES - LOG_OVERHEAD_BYTES) as i64 {
            return Err(BatchDefect::InvalidLength(parsed.batch_length));
        }
        for (field, value) in [
            ("lastOffsetDelta", parsed.last_offset_delta),
            ("recordsCount", parsed.records_count),
        ] {
            if value < 0 {
                return Err(BatchDefect::NegativeField {
                    field,
                    value: value.into(),
                });
            }
        }
        Ok(parsed)
    }

    /// Whole batch size in bytes, header included (`batchLength + 12`).
    pub fn size_bytes(&self) -> u64 {
        // `parse` guarantees batch_length is positive.
        u64::from(self.batch_length.unsigned_abs()) + LOG_OVERHEAD_BYTES as u64
    }

    /// Offset of the last record: `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Sequence number of the last record. Sequences wrap from `i32::MAX` to 0, as in Kafka.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }

    /// True when the broker stamped the batch with LogAppendTime (attributes bit 3).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_FLAG != 0
    }

    /// True when the batch belongs to a transaction (attributes bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    /// True for a control batch (transaction markers; attributes bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// True when the batch comes from an idempotent or transactional producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// The whole batch size in bytes (`batchLength + 12`) that the first 12 bytes of `prefix`
/// claim, without parsing the rest of the header: recovery uses it to judge a batch whose
/// header is damaged (`batchLength` is outside the CRC, as in Kafka). `None` if `prefix` is
/// shorter than 12 bytes or the claim is smaller than the v2 header.
pub(crate) fn claimed_size_bytes(prefix: &[u8]) -> Option<u64> {
    let batch_length = u64::try_from(i32_at(prefix, BATCH_LENGTH_AT)?).ok()?;
    let size_bytes = batch_length + LOG_OVERHEAD_BYTES as u64;
    (size_bytes >= HEADER_SIZE_BYTES as u64).then_some(size_bytes)
}

/// `sequence + increment`, wrapping past `i32::MAX` to 0 (Kafka's `incrementSequence`).
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    let modulus = i64::from(i32::MAX) + 1;
    let sum = (i64::from(sequence) + i64::from(increment)).rem_euclid(modulus);
    // rem_euclid keeps the value in [0, i32::MAX].
    i32::try_from(sum).unwrap_or(0)
}

/// Verifies the CRC32C of the complete batch in `batch` (exactly one batch, header included).
///
/// Errors: `Truncated` if `batch` is shorter than the header, `CrcMismatch` otherwise.
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchDefect> {
    let header = BatchHeader::parse(batch)?;
    let covered = batch
        .get(CRC_COVERED_FROM..)
        .ok_or(BatchDefect::Truncated {
            needed_bytes: HEADER_SIZE_BYTES as u64,
            available_bytes: batch.len() as u64,
        })?;
    let computed = crc32c::crc32c(covered);
    if computed != header.crc {
        return Err(BatchDefect::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Overwrites the base offset of the batch starting at `buf[0]`. The CRC does not cover the
/// base offset, so the batch stays valid.
///
/// Errors: `Truncated` if `buf` is shorter than 8 bytes.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) -> Result<(), BatchDefect> {
    write_field(buf, BASE_OFFSET_AT, &base_offset.to_be_bytes())
}

/// Overwrites the partition leader epoch of the batch starting at `buf[0]`. The CRC does not
/// cover it (it starts at `attributes`), so the batch stays valid.
///
/// Errors: `Truncated` if `buf` is shorter than 16 bytes.
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) -> Result<(), BatchDefect> {
    write_field(buf, PARTITION_LEADER_EPOCH_AT, &epoch.to_be_bytes())
}

/// Overwrites the bytes at `at..` of `buf` with `value`.
fn write_field(buf: &mut [u8], at: usize, value: &[u8]) -> Result<(), BatchDefect> {
    let available_bytes = buf.len() as u64;
    let end = at.saturating_add(value.len());
    let field = buf.get_mut(at..end).ok_or(BatchDefect::Truncated {
        needed_bytes: end as u64,
        available_bytes,
    })?;
    field.copy_from_slice(value);
    Ok(())
}

/// Stamps the whole batch in `batch` with LogAppendTime: sets the timestamp-type attribute,
/// writes `timestamp_ms` as the max timestamp and recomputes the CRC32C (both fields are
/// covered by it). With the base offset, the only header rewrite the broker makes.
///
/// Errors: `Truncated` if `batch` is shorter than the header.
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) -> Result<(), BatchDefect> {
    let (head, body) = split_header(batch)?;
    set_log_append_time_split(head, body, timestamp_ms)
}

/// [`set_log_append_time`] for a batch held as its header (`head`, rewritten) and the rest
/// (`body`), so that an append rewrites a copy of the header, never of the records.
pub(crate) fn set_log_append_time_split(
    head: &mut [u8],
    body: &[u8],
    timestamp_ms: i64,
) -> Result<(), BatchDefect> {
    let header = BatchHeader::parse(head)?;
    let attributes = header.attributes | TIMESTAMP_TYPE_FLAG;
    let truncated = BatchDefect::Truncated {
        needed_bytes: HEADER_SIZE_BYTES as u64,
        available_bytes: head.len() as u64,
    };
    head.get_mut(ATTRIBUTES_AT..ATTRIBUTES_AT + 2)
        .ok_or_else(|| truncated.clone())?
        .copy_from_slice(&attributes.to_be_bytes());
    head.get_mut(MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8)
        .ok_or(truncated)?
        .copy_from_slice(&timestamp_ms.to_be_bytes());
    rewrite_crc_split(head, body)
}

/// Recomputes and stores the CRC32C of the whole batch in `batch` (after a header rewrite).
///
/// Errors: `Truncated` if `batch` is shorter than the header.
pub fn rewrite_crc(batch: &mut [u8]) -> Result<(), BatchDefect> {
    let (head, body) = split_header(batch)?;
    rewrite_crc_split(head, body)
}

/// The batch's header and the records after it.
fn split_header(batch: &mut [u8]) -> Result<(&mut [u8], &[u8]), BatchDefect> {
    let available_bytes = batch.len() as u64;
    let (head, body) =
        batch
            .split_at_mut_checked(HEADER_SIZE_BYTES)
            .ok_or(BatchDefect::Truncated {
                needed_bytes: HEADER_SIZE_BYTES as u64,
                available_bytes,
            })?;
    Ok((head, body))
}

/// [`rewrite_crc`] for a batch held as its header (`head`) and the rest (`body`).
fn rewrite_crc_split(head: &mut [u8], body: &[u8]) -> Result<(), BatchDefect> {
    let truncated = BatchDefect::Truncated {
        needed_bytes: HEADER_SIZE_BYTES as u64,
        available_bytes: head.len() as u64,
    };
    let covered_head = head
        .get(CRC_COVERED_FROM..HEADER_SIZE_BYTES)
        .ok_or_else(|| truncated.clone())?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(covered_head), body);
    head.get_mut(CRC_AT..CRC_AT + 4)
        .ok_or(truncated)?
        .copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Test helper: builds valid v2 batches with fake uncompressed records.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
pub(crate) mod testing {
    use super::*;

    /// Producer fields of a test batch.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct ProducerFields {
        pub(crate) producer_id: i64,
        pub(crate) producer_epoch: i16,
        pub(crate) base_sequence: i32,
    }

    impl ProducerFields {
        pub(crate) const NONE: ProducerFields = ProducerFields {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: -1,
            base_sequence: -1,
        };
    }

    /// A valid batch of `record_count` (>= 1) records, each with a `value_bytes`-byte value;
    /// base offset 0, correct CRC32C.
    pub(crate) fn build_batch(
        record_count: i32,
        value_bytes: usize,
        producer: ProducerFields,
    ) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..record_count {
            // A plausible record body; storage never decodes it. Varints are written as
            // single bytes, which holds for the small sizes used in tests.
            let mut body = vec![0u8, 0, (i as u8).wrapping_mul(2), 1];
            body.push((value_bytes as u8).wrapping_mul(2));
            body.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, value_bytes));
            body.push(0);
            records.push((body.len() as u8).wrapping_mul(2));
            records.extend(body);
        }
        let mut batch = vec![0u8; HEADER_SIZE_BYTES];
        batch.extend(records);
        let batch_length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
        batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
        batch[MAGIC_AT] = 2;
        batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(record_count - 1).to_be_bytes());
        batch[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&1_000i64.to_be_bytes());
        batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&1_000i64.to_be_bytes());
        batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8]
            .copy_from_slice(&producer.producer_id.to_be_bytes());
        batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
            .copy_from_slice(&producer.producer_epoch.to_be_bytes());
        batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
            .copy_from_slice(&producer.base_sequence.to_be_bytes());
        batch[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&record_count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_COVERED_FROM..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn parses_built_batch_and_verifies_crc() -> Result<(), BatchDefect> {
        let mut batch = build_batch(3, 10, ProducerFields::NONE);
        set_base_offset(&mut batch, 42)?;
        let header = BatchHeader::parse(&batch)?;
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.last_offset(), 44);
        assert_eq!(header.size_bytes(), batch.len() as u64);
        assert_eq!(header.records_count, 3);
        assert!(!header.has_producer_id());
        verify_crc(&batch)?;
        batch[70] ^= 1;
        assert!(matches!(
            verify_crc(&batch),
            Err(BatchDefect::CrcMismatch { .. })
        ));
        Ok(())
    }

    #[test]
    fn rejects_short_and_bad_magic() {
        let batch = build_batch(1, 1, ProducerFields::NONE);
        assert!(matches!(
            BatchHeader::parse(&batch[..60]),
            Err(BatchDefect::Truncated { .. })
        ));
        let mut bad = batch.clone();
        bad[MAGIC_AT] = 1;
        assert_eq!(
            BatchHeader::parse(&bad),
            Err(BatchDefect::UnsupportedMagic(1))
        );
    }

    #[test]
    fn claimed_size_reads_only_the_length_field() {
        let mut batch = build_batch(2, 5, ProducerFields::NONE);
        batch[MAGIC_AT] = 7;
        assert_eq!(claimed_size_bytes(&batch[..12]), Some(batch.len() as u64));
        assert_eq!(claimed_size_bytes(&batch[..11]), None);
        assert_eq!(claimed_size_bytes(&[0u8; 12]), None);
        batch[BATCH_LENGTH_AT] = 0x80;
        assert_eq!(claimed_size_bytes(&batch), None, "negative length");
    }

    #[test]
    fn sequence_wraps_to_zero() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 2), 7);
    }
}
