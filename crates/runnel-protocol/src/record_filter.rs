//! Rewriting a stored v2 batch to keep some of its records (the log cleaner's compaction).
//!
//! Kept records are copied byte for byte (headers included, never re-encoded through the
//! `kafka-protocol` record type, which collapses duplicate header keys); the batch keeps its
//! base offset, last offset delta, timestamps, producer fields and attributes; the records are
//! re-compressed with the batch's codec and the CRC32C is recomputed.

use crate::batch::{read_records, LogRecord, RECORD_BATCH_HEADER_BYTES};
use crate::compression::{self, Compression};
use crate::ProtocolError;

use runnel_batch_layout::{
    ATTRIBUTES_AT, BASE_OFFSET_AT, BATCH_LENGTH_AT, CRC_AT, RECORDS_COUNT_AT,
};

/// The data records of one whole stored batch (see [`read_records`]).
///
/// # Errors
/// As for [`read_records`].
pub fn batch_records(
    batch: &[u8],
    max_uncompressed_bytes: usize,
) -> Result<Vec<LogRecord>, ProtocolError> {
    read_records(batch, max_uncompressed_bytes)
}

/// A copy of the one whole batch `batch` keeping the records whose absolute offsets `keep`
/// accepts; `None` when none is kept. See the module docs for what is preserved.
///
/// # Errors
/// [`ProtocolError::InvalidBatch`] for malformed records, [`ProtocolError::BatchTooLarge`]
/// past the decompression cap, [`ProtocolError::Encode`] if compression fails.
pub fn retain_records(
    batch: &[u8],
    max_uncompressed_bytes: usize,
    keep: &mut dyn FnMut(i64) -> bool,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    let invalid = |what: &str| ProtocolError::InvalidBatch(format!("retain: {what}"));
    let header = batch
        .get(..RECORD_BATCH_HEADER_BYTES)
        .ok_or_else(|| invalid("short batch"))?;
    let attributes = i16::from_be_bytes(
        header
            .get(ATTRIBUTES_AT..ATTRIBUTES_AT + 2)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("short header"))?,
    );
    let base_offset = i64::from_be_bytes(
        header
            .get(BASE_OFFSET_AT..BASE_OFFSET_AT + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("short header"))?,
    );
    let codec = Compression::from_attributes(attributes)?;
    let section = batch.get(RECORD_BATCH_HEADER_BYTES..).unwrap_or_default();
    let records = match codec {
        Compression::None => section.to_vec(),
        codec => compression::decompress(codec, section, max_uncompressed_bytes)?,
    };
    let mut kept = Vec::with_capacity(records.len());
    let mut kept_count: i32 = 0;
    let mut at = 0usize;
    while at < records.len() {
        let start = at;
        let length = read_varint(&records, &mut at).ok_or_else(|| invalid("record length"))?;
        let body_start = at;
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| body_start.checked_add(l))
            .filter(|&e| e <= records.len())
            .ok_or_else(|| invalid("record length past the end"))?;
        // attributes (1 byte), timestamp delta (varlong), offset delta (varint)
        at = body_start.saturating_add(1);
        read_varint(&records, &mut at).ok_or_else(|| invalid("timestamp delta"))?;
        let offset_delta = read_varint(&records, &mut at).ok_or_else(|| invalid("offset delta"))?;
        if keep(base_offset.saturating_add(offset_delta)) {
            kept.extend_from_slice(records.get(start..end).unwrap_or_default());
            kept_count = kept_count.saturating_add(1);
        }
        at = end;
    }
    if kept_count == 0 {
        return Ok(None);
    }
    let section = match codec {
        Compression::None => kept,
        codec => compression::compress(codec, &kept)?,
    };
    let mut out = header.to_vec();
    out.extend_from_slice(&section);
    let batch_length =
        i32::try_from(out.len().saturating_sub(12)).map_err(|_| invalid("batch too large"))?;
    if let Some(field) = out.get_mut(BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4) {
        field.copy_from_slice(&batch_length.to_be_bytes());
    }
    if let Some(field) = out.get_mut(RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4) {
        field.copy_from_slice(&kept_count.to_be_bytes());
    }
    let crc = crc32c::crc32c(out.get(ATTRIBUTES_AT..).unwrap_or_default());
    if let Some(field) = out.get_mut(CRC_AT..CRC_AT + 4) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
    Ok(Some(out))
}

/// A zigzag varint (up to 64 bits) at `*at`, advancing `*at`.
fn read_varint(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::batch_builder::{build_batch, NewRecord};

    #[test]
    fn keeps_chosen_records_with_their_offsets() {
        let records: Vec<NewRecord> = (0..4)
            .map(|i| NewRecord {
                key: Some(vec![b'k', i]),
                value: if i == 2 { None } else { Some(vec![i; 3]) },
                headers: vec![(b"h".to_vec(), Some(b"1".to_vec())), (b"h".to_vec(), None)],
            })
            .collect();
        let mut batch = build_batch(&records, 1_000).unwrap().to_vec();
        batch[..8].copy_from_slice(&100i64.to_be_bytes());
        let kept = retain_records(&batch, 1 << 20, &mut |o| o == 101 || o == 102)
            .unwrap()
            .unwrap();
        let read = batch_records(&kept, 1 << 20).unwrap();
        assert_eq!(
            read.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![101, 102]
        );
        assert_eq!(read[1].value, None);
        assert!(retain_records(&batch, 1 << 20, &mut |_| false)
            .unwrap()
            .is_none());
    }
}
