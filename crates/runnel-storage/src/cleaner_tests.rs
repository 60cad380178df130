//! Tests of timestamps, log start offset, retention and the cleaner, with a fake
//! `RecordReader` over a minimal uncompressed v2 record encoding.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::batch_header::{rewrite_crc, BatchHeader, HEADER_SIZE_BYTES};
use crate::partition_log::{LogConfig, PartitionLog, RetentionPolicy, TimestampOffset};
use crate::records::{RecordError, RecordReader, RecordSummary};
use crate::{CompactionPolicy, StorageError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One test record: offset delta, timestamp, key, value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TestRecord {
    offset_delta: i32,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
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

fn new_batch(records: &[(i64, Option<&str>, Option<&str>)]) -> Vec<u8> {
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

fn decode(batch: &[u8]) -> Result<(BatchHeader, Vec<TestRecord>), RecordError> {
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

#[derive(Debug)]
struct TestReader;

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

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

/// Every record of the log, decoded, with absolute offsets.
fn all_records(log: &PartitionLog) -> Vec<(i64, TestRecord)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let bytes = log.read(offset, 1 << 20, end).unwrap();
        if bytes.is_empty() {
            break;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let header = BatchHeader::parse(rest).unwrap();
            let size = header.size_bytes() as usize;
            crate::verify_crc(&rest[..size]).unwrap();
            let (_, records) = decode(&rest[..size]).unwrap();
            for r in records {
                let absolute = header.base_offset + i64::from(r.offset_delta);
                if absolute >= log.log_start_offset() {
                    out.push((absolute, r));
                }
            }
            offset = header.last_offset() + 1;
            rest = &rest[size..];
        }
    }
    out
}

#[test]
fn offsets_by_timestamp_out_of_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_config())?;
    log.append(&new_batch(&[
        (100, Some("a"), Some("1")),
        (300, Some("b"), Some("2")),
    ]))?;
    log.append(&new_batch(&[(200, Some("c"), Some("3"))]))?;
    log.append(&new_batch(&[
        (500, Some("d"), Some("4")),
        (400, Some("e"), Some("5")),
    ]))?;
    let at = |ts| log.offset_for_timestamp(ts, &TestReader);
    assert_eq!(
        at(0)?,
        Some(TimestampOffset {
            offset: 0,
            timestamp: 100
        })
    );
    assert_eq!(
        at(150)?,
        Some(TimestampOffset {
            offset: 1,
            timestamp: 300
        })
    );
    assert_eq!(
        at(350)?,
        Some(TimestampOffset {
            offset: 3,
            timestamp: 500
        })
    );
    assert_eq!(
        at(450)?,
        Some(TimestampOffset {
            offset: 3,
            timestamp: 500
        })
    );
    assert_eq!(at(501)?, None);
    assert_eq!(
        log.max_timestamp_offset(&TestReader)?,
        Some(TimestampOffset {
            offset: 3,
            timestamp: 500
        })
    );
    Ok(())
}

#[test]
fn log_append_time_stamps_and_keeps_crc_valid() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_config())?;
    log.append_with_time(&new_batch(&[(100, Some("a"), Some("1"))]), Some(9_999))?;
    let bytes = log.read(0, 1 << 20, 1)?;
    crate::verify_crc(&bytes)?;
    let header = BatchHeader::parse(&bytes)?;
    assert!(header.is_log_append_time());
    assert_eq!(header.max_timestamp, 9_999);
    assert_eq!(
        log.offset_for_timestamp(5_000, &TestReader)?,
        Some(TimestampOffset {
            offset: 0,
            timestamp: 9_999
        })
    );
    Ok(())
}

#[test]
fn delete_records_moves_the_start_and_survives_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_config())?;
    for i in 0..30 {
        log.append(&new_batch(&[(i, Some("k"), Some("some value here"))]))?;
    }
    assert!(log.segment_count() > 2);
    let segments_before = log.segment_count();
    assert!(log.delete_records(31, 30).is_err());
    assert_eq!(log.delete_records(17, 30)?, 17);
    assert!(log.segment_count() < segments_before);
    assert!(matches!(
        log.read(16, 1 << 20, 30),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(all_records(&log).first().map(|r| r.0), Some(17));
    assert_eq!(log.delete_records(5, 30)?, 17, "never moves backwards");
    log.close()?;
    drop(log);
    let log = PartitionLog::open(dir.path(), small_config())?;
    assert_eq!(log.log_start_offset(), 17);
    assert_eq!(log.log_end_offset(), 30);
    Ok(())
}

#[test]
fn retention_by_size_and_time_keeps_the_active_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_config())?;
    for i in 0..40 {
        log.append(&new_batch(&[(
            1_000 + i,
            Some("k"),
            Some("some value here"),
        )]))?;
    }
    let total = log.size_bytes();
    let policy = RetentionPolicy {
        retention_ms: -1,
        retention_bytes: 500,
    };
    let deleted = log.apply_retention(policy, 2_000)?;
    assert!(deleted > 0);
    assert!(log.size_bytes() >= 500 && log.size_bytes() < total);
    let start = log.log_start_offset();
    assert!(start > 0);
    assert_eq!(all_records(&log).first().map(|r| r.0), Some(start));
    // Everything is older than 10 ms at t = 1 000 000: all but the active segment go.
    let by_time = RetentionPolicy {
        retention_ms: 10,
        retention_bytes: -1,
    };
    log.apply_retention(by_time, 1_000_000)?;
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), 40);
    drop(log);
    let log = PartitionLog::open(dir.path(), small_config())?;
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), 40);
    assert!(log.log_start_offset() > start);
    Ok(())
}

#[test]
fn deleted_time_index_is_rebuilt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_config())?;
    for i in 0..30 {
        log.append(&new_batch(&[(1_000 - i, Some("k"), Some("value"))]))?;
    }
    log.close()?;
    drop(log);
    for entry in std::fs::read_dir(dir.path())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "timeindex") {
            std::fs::remove_file(path)?;
        }
    }
    let log = PartitionLog::open(dir.path(), small_config())?;
    assert_eq!(
        log.max_timestamp_offset(&TestReader)?,
        Some(TimestampOffset {
            offset: 0,
            timestamp: 1_000
        })
    );
    assert_eq!(
        log.offset_for_timestamp(980, &TestReader)?,
        Some(TimestampOffset {
            offset: 0,
            timestamp: 1_000
        })
    );
    Ok(())
}

fn compaction_policy(delete_retention_ms: i64) -> CompactionPolicy {
    CompactionPolicy {
        min_cleanable_dirty_ratio: 0.0,
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: i64::MAX,
        delete_retention_ms,
    }
}

/// The last record per key as (value) over the records of a log.
fn last_per_key(records: &[(i64, TestRecord)]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    records
        .iter()
        .filter_map(|(_, r)| r.key.clone().map(|k| (k, r.value.clone())))
        .collect()
}

#[test]
fn interrupted_swap_is_finished_and_unfinished_clean_discarded() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_config())?;
    for i in 0..30 {
        log.append(&new_batch(&[(
            i,
            Some(&format!("k{}", i % 3)),
            Some("value"),
        )]))?;
    }
    let before = last_per_key(&all_records(&log));
    log.close()?;
    drop(log);
    // A crash after the rename to .swap: take a cleaned copy of segment 0 (drop one record of
    // a key that appears later) and leave it as a .swap; and a stray .cleaned.
    let seg0 = dir.path().join("00000000000000000000.log");
    let raw = std::fs::read(&seg0)?;
    let header = BatchHeader::parse(&raw)?;
    let cleaned = raw[header.size_bytes() as usize..].to_vec();
    std::fs::write(dir.path().join("00000000000000000000.log.swap"), &cleaned)?;
    std::fs::write(dir.path().join("00000000000000000000.log.cleaned"), b"junk")?;
    let log = PartitionLog::open(dir.path(), small_config())?;
    assert!(!dir.path().join("00000000000000000000.log.swap").exists());
    assert!(!dir.path().join("00000000000000000000.log.cleaned").exists());
    let records = all_records(&log);
    assert_eq!(records.first().map(|r| r.0), Some(1));
    assert_eq!(last_per_key(&records), before);
    assert_eq!(log.log_end_offset(), 30);
    Ok(())
}

#[test]
fn tombstones_stay_until_delete_retention_passes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_config())?;
    log.append(&new_batch(&[
        (10, Some("a"), Some("1")),
        (11, Some("b"), Some("1")),
    ]))?;
    log.append(&new_batch(&[(12, Some("a"), None)]))?;
    for i in 0..20 {
        log.append(&new_batch(&[(13 + i, Some("c"), Some("filler value"))]))?;
    }
    log.clean(&compaction_policy(1_000_000), &TestReader, 100)?;
    let records = all_records(&log);
    assert!(records
        .iter()
        .any(|(_, r)| r.key.as_deref() == Some(b"a") && r.value.is_none()));
    assert!(
        !records.iter().any(|(o, _)| *o == 0),
        "superseded value removed"
    );
    log.clean(&compaction_policy(10), &TestReader, 1_000_000)?;
    let records = all_records(&log);
    assert!(!records.iter().any(|(_, r)| r.key.as_deref() == Some(b"a")));
    assert!(records.iter().any(|(_, r)| r.key.as_deref() == Some(b"b")));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The time index lookup equals a linear scan over all records.
    #[test]
    fn timestamp_lookup_equals_linear_scan(
        batches in prop::collection::vec(prop::collection::vec(0i64..1_000, 1..4), 1..60),
        targets in prop::collection::vec(-5i64..1_010, 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config()).unwrap();
        let mut model: Vec<(i64, i64)> = Vec::new();
        for timestamps in &batches {
            let records: Vec<(i64, Option<&str>, Option<&str>)> =
                timestamps.iter().map(|&ts| (ts, Some("k"), Some("v"))).collect();
            let base = log.log_end_offset();
            log.append(&new_batch(&records)).unwrap();
            for (i, ts) in timestamps.iter().enumerate() {
                model.push((base + i as i64, *ts));
            }
        }
        let mut log = log;
        for reopen in [false, true] {
            if reopen {
                drop(log);
                log = PartitionLog::open(dir.path(), small_config()).unwrap();
            }
            for &target in &targets {
                let expected = model
                    .iter()
                    .find(|(_, ts)| *ts >= target)
                    .map(|&(offset, timestamp)| TimestampOffset { offset, timestamp });
                prop_assert_eq!(log.offset_for_timestamp(target, &TestReader).unwrap(), expected);
            }
            let max = model.iter().map(|m| m.1).max().unwrap();
            let first_max = model.iter().find(|m| m.1 == max).unwrap().0;
            prop_assert_eq!(
                log.max_timestamp_offset(&TestReader).unwrap(),
                Some(TimestampOffset { offset: first_max, timestamp: max })
            );
        }
    }

    /// After cleaning, the log still yields the model map of key → last value, offsets still
    /// increase, and closed segments hold each key at most once.
    #[test]
    fn cleaned_log_equals_model_map(
        ops in prop::collection::vec((0u8..6, prop::option::weighted(0.8, 0u16..1000)), 1..120),
        clean_points in prop::collection::vec(0usize..120, 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config()).unwrap();
        let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (i, (key, value)) in ops.iter().enumerate() {
            let key = format!("key-{key}");
            let value = value.map(|v| format!("value-{v}"));
            log.append(&new_batch(&[(i as i64, Some(&key), value.as_deref())])).unwrap();
            model.insert(key.into_bytes(), value.map(String::into_bytes));
            if clean_points.contains(&i) {
                log.clean(&compaction_policy(i64::MAX), &TestReader, 1_000).unwrap();
            }
        }
        log.clean(&compaction_policy(i64::MAX), &TestReader, 1_000).unwrap();
        let records = all_records(&log);
        prop_assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert_eq!(last_per_key(&records), model.clone());
        // Reopen: the same log comes back.
        log.close().unwrap();
        drop(log);
        let log = PartitionLog::open(dir.path(), small_config()).unwrap();
        prop_assert_eq!(log.log_end_offset(), ops.len() as i64);
        let reopened = all_records(&log);
        prop_assert_eq!(reopened, records);
    }
}
