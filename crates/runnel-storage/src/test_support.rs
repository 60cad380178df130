//! Helpers shared by the crate's test modules: a minimal uncompressed v2 record encoding with
//! its `RecordReader`, and small conveniences for driving a `PartitionLog`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};

use crate::batch_header::{rewrite_crc, BatchHeader, HEADER_SIZE_BYTES};
use crate::partition_log::AppendOutcome;
use crate::records::{RecordError, RecordReader, RecordSummary};
use crate::segment::{offset_file_name, LOG_EXTENSION};

/// Any error, for tests: `?` works on all of them.
pub(crate) type TestError = Box<dyn std::error::Error>;
/// What tests return.
pub(crate) type TestResult = Result<(), TestError>;

/// One test record: offset delta, timestamp, key, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestRecord {
    pub(crate) offset_delta: i32,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], at: &mut usize) -> Result<i64, RecordError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*at)
            .ok_or_else(|| RecordError("short varint".into()))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    Err(RecordError("long varint".into()))
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

fn get_bytes(buf: &[u8], at: &mut usize) -> Result<Option<Vec<u8>>, RecordError> {
    let len = get_varint(buf, at)?;
    if len < 0 {
        return Ok(None);
    }
    let end = *at + len as usize;
    let bytes = buf
        .get(*at..end)
        .ok_or_else(|| RecordError("short field".into()))?;
    *at = end;
    Ok(Some(bytes.to_vec()))
}

/// A valid uncompressed v2 batch (base offset 0) holding `records`; `last_offset_delta` may
/// exceed the last record's delta (a cleaned batch keeps its original one).
fn encode_batch(
    records: &[TestRecord],
    base_timestamp: i64,
    max_timestamp: i64,
    last_offset_delta: i32,
) -> Vec<u8> {
    let mut batch = vec![0u8; HEADER_SIZE_BYTES];
    for r in records {
        let mut body = vec![0u8];
        put_varint(&mut body, r.timestamp - base_timestamp);
        put_varint(&mut body, i64::from(r.offset_delta));
        put_bytes(&mut body, r.key.as_deref());
        put_bytes(&mut body, r.value.as_deref());
        put_varint(&mut body, 0);
        put_varint(&mut batch, body.len() as i64);
        batch.extend(body);
    }
    let len = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&len.to_be_bytes());
    batch[16] = 2;
    batch[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    batch[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
    batch[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    batch[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    batch[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    batch[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    batch[57..61].copy_from_slice(&(records.len() as i32).to_be_bytes());
    rewrite_crc(&mut batch).unwrap();
    batch
}

/// A batch (base offset 0) of records given as (timestamp, key, value), offset deltas 0, 1, ...
pub(crate) fn new_batch(records: &[(i64, Option<&str>, Option<&str>)]) -> Vec<u8> {
    let records: Vec<TestRecord> = records
        .iter()
        .enumerate()
        .map(|(i, (ts, k, v))| TestRecord {
            offset_delta: i as i32,
            timestamp: *ts,
            key: k.map(|k| k.as_bytes().to_vec()),
            value: v.map(|v| v.as_bytes().to_vec()),
        })
        .collect();
    let base = records.iter().map(|r| r.timestamp).min().unwrap();
    let max = records.iter().map(|r| r.timestamp).max().unwrap();
    encode_batch(&records, base, max, records.len() as i32 - 1)
}

/// The header and records of one whole batch written by [`new_batch`] (or cleaned by [`TestReader`]).
pub(crate) fn decode(batch: &[u8]) -> Result<(BatchHeader, Vec<TestRecord>), RecordError> {
    let header = BatchHeader::parse(batch).map_err(|e| RecordError(e.to_string()))?;
    let mut at = HEADER_SIZE_BYTES;
    let mut records = Vec::new();
    for _ in 0..header.records_count {
        let _len = get_varint(batch, &mut at)?;
        at += 1;
        let ts_delta = get_varint(batch, &mut at)?;
        let offset_delta = get_varint(batch, &mut at)? as i32;
        let key = get_bytes(batch, &mut at)?;
        let value = get_bytes(batch, &mut at)?;
        let _headers = get_varint(batch, &mut at)?;
        records.push(TestRecord {
            offset_delta,
            timestamp: if header.is_log_append_time() {
                header.max_timestamp
            } else {
                header.base_timestamp + ts_delta
            },
            key,
            value,
        });
    }
    Ok((header, records))
}

/// The `RecordReader` the broker would supply, for batches written by [`new_batch`].
#[derive(Debug)]
pub(crate) struct TestReader;

impl RecordReader for TestReader {
    fn records(&self, batch: &[u8]) -> Result<Vec<RecordSummary>, RecordError> {
        let (header, records) = decode(batch)?;
        Ok(records
            .into_iter()
            .map(|r| RecordSummary {
                offset: header.base_offset + i64::from(r.offset_delta),
                timestamp: r.timestamp,
                is_tombstone: r.value.is_none(),
                key: r.key,
            })
            .collect())
    }

    fn retain(
        &self,
        batch: &[u8],
        keep: &mut dyn FnMut(i64) -> bool,
    ) -> Result<Option<Vec<u8>>, RecordError> {
        let (header, records) = decode(batch)?;
        let kept: Vec<TestRecord> = records
            .into_iter()
            .filter(|r| keep(header.base_offset + i64::from(r.offset_delta)))
            .collect();
        if kept.is_empty() {
            return Ok(None);
        }
        let mut out = encode_batch(
            &kept,
            header.base_timestamp,
            header.max_timestamp,
            header.last_offset_delta,
        );
        out[..8].copy_from_slice(&header.base_offset.to_be_bytes());
        Ok(Some(out))
    }
}

/// The offsets of an append that must have been written (not a duplicate).
pub(crate) fn appended(outcome: AppendOutcome) -> (i64, i64) {
    match outcome {
        AppendOutcome::Appended {
            base_offset,
            last_offset,
        } => (base_offset, last_offset),
        other => panic!("expected Appended, got {other:?}"),
    }
}

/// The `.log` file of the segment with base offset `base` in `dir`.
pub(crate) fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(offset_file_name(base, LOG_EXTENSION))
}
