//! The Kafka v2 record batch header layout, defined once.
//!
//! Two crates read batch headers and must agree byte for byte: `runnel-protocol` validates the
//! batches a producer sends, `runnel-storage` stores them and reads them back (the on-disk
//! format is the wire format). Neither may depend on the other, so the layout lives in this leaf
//! crate, which holds constants only: no parsing, no I/O, no dependencies.
//!
//! ```text
//! @0  baseOffset i64        @8  batchLength i32 (bytes after this field)
//! @12 partitionLeaderEpoch  @16 magic i8 (2)     @17 crc u32 (CRC32C of @21..end)
//! @21 attributes i16        @23 lastOffsetDelta  @27 baseTimestamp i64
//! @35 maxTimestamp i64      @43 producerId i64   @51 producerEpoch i16
//! @53 baseSequence i32      @57 recordsCount i32 @61 records (compressed as a whole)
//! ```
//! All fields are big-endian.

#![forbid(unsafe_code)]

/// Size of the fixed v2 batch header; the records start here.
pub const HEADER_BYTES: usize = 61;
/// `baseOffset` and `batchLength` precede the bytes that `batchLength` counts.
pub const LOG_OVERHEAD_BYTES: usize = 12;

/// Byte position of `baseOffset` (i64).
pub const BASE_OFFSET_AT: usize = 0;
/// Byte position of `batchLength` (i32): the batch's size minus [`LOG_OVERHEAD_BYTES`].
pub const BATCH_LENGTH_AT: usize = 8;
/// Byte position of `partitionLeaderEpoch` (i32).
pub const PARTITION_LEADER_EPOCH_AT: usize = 12;
/// Byte position of `magic` (i8).
pub const MAGIC_AT: usize = 16;
/// Byte position of `crc` (u32, CRC32C of everything from [`CRC_COVERED_FROM`] to the end).
pub const CRC_AT: usize = 17;
/// The CRC covers the batch from here (`attributes`) to its end.
pub const CRC_COVERED_FROM: usize = ATTRIBUTES_AT;
/// Byte position of `attributes` (i16).
pub const ATTRIBUTES_AT: usize = 21;
/// Byte position of `lastOffsetDelta` (i32).
pub const LAST_OFFSET_DELTA_AT: usize = 23;
/// Byte position of `baseTimestamp` (i64, ms).
pub const BASE_TIMESTAMP_AT: usize = 27;
/// Byte position of `maxTimestamp` (i64, ms).
pub const MAX_TIMESTAMP_AT: usize = 35;
/// Byte position of `producerId` (i64).
pub const PRODUCER_ID_AT: usize = 43;
/// Byte position of `producerEpoch` (i16).
pub const PRODUCER_EPOCH_AT: usize = 51;
/// Byte position of `baseSequence` (i32).
pub const BASE_SEQUENCE_AT: usize = 53;
/// Byte position of `recordsCount` (i32).
pub const RECORDS_COUNT_AT: usize = 57;

/// The only record format version Runnel accepts (Kafka 4 dropped v0 and v1, KIP-896).
pub const MAGIC_V2: i8 = 2;

/// Attributes bits 0–2: the compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub const COMPRESSION_CODEC_MASK: i16 = 0x07;
/// Attribute bit 3: timestamps are LogAppendTime (set by the broker), not CreateTime.
pub const TIMESTAMP_TYPE_ATTRIBUTE: i16 = 0x08;
/// Attribute bit 4: the batch belongs to a transaction.
pub const TRANSACTIONAL_ATTRIBUTE: i16 = 0x10;
/// Attribute bit 5: a control batch (transaction markers), not data.
pub const CONTROL_ATTRIBUTE: i16 = 0x20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_tile_the_header_without_gaps() {
        // (position, width) of every field in order; each starts where the previous ended.
        let fields = [
            (BASE_OFFSET_AT, 8),
            (BATCH_LENGTH_AT, 4),
            (PARTITION_LEADER_EPOCH_AT, 4),
            (MAGIC_AT, 1),
            (CRC_AT, 4),
            (ATTRIBUTES_AT, 2),
            (LAST_OFFSET_DELTA_AT, 4),
            (BASE_TIMESTAMP_AT, 8),
            (MAX_TIMESTAMP_AT, 8),
            (PRODUCER_ID_AT, 8),
            (PRODUCER_EPOCH_AT, 2),
            (BASE_SEQUENCE_AT, 4),
            (RECORDS_COUNT_AT, 4),
        ];
        let mut next = 0;
        for (at, width) in fields {
            assert_eq!(at, next);
            next = at + width;
        }
        assert_eq!(next, HEADER_BYTES);
        assert_eq!(BATCH_LENGTH_AT + 4, LOG_OVERHEAD_BYTES);
    }
}
