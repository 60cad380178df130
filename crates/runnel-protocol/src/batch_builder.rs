//! Builds uncompressed v2 record batches for records the broker writes itself (committed
//! offsets and group metadata in `__consumer_offsets`). Never used to re-encode client batches:
//! those are stored as sent.
//!
//! The batch carries base offset 0 (storage assigns offsets on append), producer id -1 (not
//! idempotent), CreateTime timestamps, and a CRC32C over attributes..end.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{RECORD_BATCH_HEADER_BYTES, RECORD_BATCH_MAGIC};

/// One record to put in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The key; `None` encodes a null key.
    pub key: Option<Vec<u8>>,
    /// The value; `None` encodes a null value (a tombstone on a compacted topic).
    pub value: Option<Vec<u8>>,
    /// Header (key, value) pairs, in order; duplicates are kept.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Encodes `records` as one uncompressed v2 batch with base offset 0, all records stamped
/// `timestamp_ms`. Returns `None` for an empty list (a batch holds at least one record) or if
/// a field is longer than `i32::MAX` bytes.
pub fn build_batch(records: &[NewRecord], timestamp_ms: i64) -> Option<Bytes> {
    if records.is_empty() {
        return None;
    }
    let mut body = BytesMut::new();
    for (offset_delta, record) in records.iter().enumerate() {
        let mut inner = BytesMut::new();
        inner.put_u8(0); // attributes (unused)
        put_varlong(&mut inner, 0); // timestamp delta
        put_varint(&mut inner, i32::try_from(offset_delta).ok()?);
        put_nullable(&mut inner, record.key.as_deref())?;
        put_nullable(&mut inner, record.value.as_deref())?;
        put_varint(&mut inner, i32::try_from(record.headers.len()).ok()?);
        for (key, value) in &record.headers {
            put_nullable(&mut inner, Some(key))?;
            put_nullable(&mut inner, value.as_deref())?;
        }
        put_varint(&mut body, i32::try_from(inner.len()).ok()?);
        body.put_slice(&inner);
    }
    let last_offset_delta = i32::try_from(records.len() - 1).ok()?;
    let mut crc_covered = BytesMut::with_capacity(RECORD_BATCH_HEADER_BYTES - 21 + body.len());
    crc_covered.put_i16(0); // attributes: no compression, CreateTime, not transactional
    crc_covered.put_i32(last_offset_delta);
    crc_covered.put_i64(timestamp_ms); // base timestamp
    crc_covered.put_i64(timestamp_ms); // max timestamp
    crc_covered.put_i64(-1); // producer id
    crc_covered.put_i16(-1); // producer epoch
    crc_covered.put_i32(-1); // base sequence
    crc_covered.put_i32(last_offset_delta + 1); // records count
    crc_covered.put_slice(&body);
    let crc = crc32c::crc32c(&crc_covered);
    // batchLength counts from partitionLeaderEpoch (4) + magic (1) + crc (4) to the end.
    let batch_length = i32::try_from(9 + crc_covered.len()).ok()?;
    let mut batch = BytesMut::with_capacity(RECORD_BATCH_HEADER_BYTES + body.len());
    batch.put_i64(0); // base offset: assigned by storage
    batch.put_i32(batch_length);
    batch.put_i32(-1); // partition leader epoch
    batch.put_i8(RECORD_BATCH_MAGIC);
    batch.put_u32(crc);
    batch.put_slice(&crc_covered);
    Some(batch.freeze())
}

fn put_nullable(buf: &mut BytesMut, bytes: Option<&[u8]>) -> Option<()> {
    match bytes {
        None => put_varint(buf, -1),
        Some(bytes) => {
            put_varint(buf, i32::try_from(bytes.len()).ok()?);
            buf.put_slice(bytes);
        }
    }
    Some(())
}

fn put_varint(buf: &mut BytesMut, value: i32) {
    let mut raw = ((value << 1) ^ (value >> 31)) as u32;
    while raw >= 0x80 {
        buf.put_u8((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    buf.put_u8(raw as u8);
}

fn put_varlong(buf: &mut BytesMut, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        buf.put_u8((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    buf.put_u8(raw as u8);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::batch::{read_records, validate_batches, BatchLimits, BatchValidation};
    use proptest::prelude::*;

    const LIMITS: BatchLimits = BatchLimits {
        max_batch_bytes: 1 << 24,
        max_uncompressed_bytes: 1 << 24,
    };

    fn record(key: Option<&[u8]>, value: Option<&[u8]>) -> NewRecord {
        NewRecord {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: vec![(b"h".to_vec(), None), (b"h".to_vec(), Some(b"v".to_vec()))],
        }
    }

    #[test]
    fn built_batches_validate_and_read_back() {
        let records = vec![
            record(Some(b"k1"), Some(b"v1")),
            record(Some(b"k2"), None),
            record(None, Some(&[0u8; 300])),
        ];
        let batch = build_batch(&records, 1_700_000_000_000).unwrap();
        let validated = validate_batches(&batch, &LIMITS, BatchValidation::Strict).unwrap();
        assert_eq!(validated.len(), 1);
        assert_eq!(validated[0].record_count, 3);
        assert!(validated[0].has_null_key);
        let read = read_records(&batch, 1 << 20).unwrap();
        assert_eq!(read.len(), 3);
        for (index, (built, read)) in records.iter().zip(&read).enumerate() {
            assert_eq!(read.offset, index as i64);
            assert_eq!(read.timestamp, 1_700_000_000_000);
            assert_eq!(read.key, built.key);
            assert_eq!(read.value, built.value);
        }
        assert!(build_batch(&[], 0).is_none());
    }

    #[test]
    fn a_flipped_bit_is_a_crc_error() {
        let batch = build_batch(&[record(Some(b"k"), Some(b"v"))], 0).unwrap();
        let mut damaged = batch.to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(read_records(&damaged, 1 << 20).is_err());
        assert!(validate_batches(&damaged, &LIMITS, BatchValidation::Strict).is_err());
    }

    proptest! {
        #[test]
        fn any_records_round_trip(
            records in prop::collection::vec(
                (prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
                 prop::option::of(prop::collection::vec(any::<u8>(), 0..200))),
                1..20),
            timestamp in any::<i64>(),
        ) {
            let records: Vec<NewRecord> = records
                .into_iter()
                .map(|(key, value)| NewRecord { key, value, headers: Vec::new() })
                .collect();
            let mut batches = build_batch(&records, timestamp).unwrap().to_vec();
            batches.extend_from_slice(&build_batch(&records, timestamp).unwrap());
            validate_batches(&batches, &LIMITS, BatchValidation::Strict).unwrap();
            let read = read_records(&batches, 1 << 20).unwrap();
            prop_assert_eq!(read.len(), records.len() * 2);
            for (built, read) in records.iter().chain(records.iter()).zip(&read) {
                prop_assert_eq!(&read.key, &built.key);
                prop_assert_eq!(&read.value, &built.value);
                prop_assert_eq!(read.timestamp, timestamp);
            }
        }
    }
}
