//! Tests of timestamps, log start offset, retention and the cleaner, with the fake
//! `RecordReader` of `test_support`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::batch_header::BatchHeader;
use crate::partition_log::{LogConfig, PartitionLog, RetentionPolicy, TimestampOffset};
use crate::test_support::{decode, new_batch, TestReader, TestRecord, TestResult};
use crate::{CompactionPolicy, StorageError};

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
    log.append_with_time(
        &new_batch(&[(100, Some("a"), Some("1"))]),
        Some(9_999),
        crate::CrcCheck::Verify,
    )?;
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
        ..CompactionPolicy::default()
    }
}

/// The last record per key as (value) over the records of a log.
fn last_per_key(records: &[(i64, TestRecord)]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    records
        .iter()
        .filter_map(|(_, r)| r.key.clone().map(|k| (k, r.value.clone())))
        .collect()
}

/// Appends one single-record batch per op (`key-<k>` → `value-<v>`, `None` a tombstone) at
/// timestamp = its index, calling `after(index)` after each; returns key → last value.
fn append_ops(
    log: &PartitionLog,
    ops: &[(u8, Option<u16>)],
    mut after: impl FnMut(usize),
) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let mut model = BTreeMap::new();
    for (i, (key, value)) in ops.iter().enumerate() {
        let key = format!("key-{key}");
        let value = value.map(|v| format!("value-{v}"));
        log.append(&new_batch(&[(i as i64, Some(&key), value.as_deref())]))
            .unwrap();
        model.insert(key.into_bytes(), value.map(String::into_bytes));
        after(i);
    }
    model
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

/// A batch of `records` whose records section no reader can decode (every byte claims a
/// 63-byte field), with a valid CRC: what the broker's relaxed produce validation can store
/// for a compressed batch.
fn undecodable_batch(records: &[(i64, Option<&str>, Option<&str>)]) -> Vec<u8> {
    let mut batch = new_batch(records);
    batch[61..].fill(0x7e);
    crate::rewrite_crc(&mut batch).unwrap();
    batch
}

#[test]
fn undecodable_batches_are_kept_whole_and_looked_up_by_header() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_config())?;
    log.append(&new_batch(&[(100, Some("a"), Some("1"))]))?;
    let bad = undecodable_batch(&[(200, Some("a"), Some("2")), (210, Some("b"), Some("3"))]);
    assert!(decode(&bad).is_err(), "the test batch decodes");
    log.append(&bad)?;
    for i in 0..20 {
        log.append(&new_batch(&[(300 + i, Some("a"), Some("filler value"))]))?;
    }
    // Inside the undecodable batch, the batch's first offset and max timestamp answer.
    assert_eq!(
        log.offset_for_timestamp(205, &TestReader)?,
        Some(TimestampOffset {
            offset: 1,
            timestamp: 210
        })
    );
    log.clean(&compaction_policy(1_000_000), &TestReader, 1_000)?;
    // The cleaner removed superseded records around the batch and kept the batch as it was.
    let first = log.read(0, 1 << 20, log.log_end_offset())?;
    let header = BatchHeader::parse(&first)?;
    assert_eq!(header.base_offset, 1, "offset 0 (superseded) was removed");
    assert_eq!(&first[12..header.size_bytes() as usize], &bad[12..]);
    assert_eq!(log.log_end_offset(), 23);
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
        let model = append_ops(&log, &ops, |i| {
            if clean_points.contains(&i) {
                log.clean(&compaction_policy(i64::MAX), &TestReader, 1_000).unwrap();
            }
        });
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

/// Reader of header-only batches standing for `records_count` records with distinct keys (the
/// key of a record is its offset), so that a test can hold millions of keys in a small log.
#[derive(Debug)]
struct DistinctKeysReader;

impl crate::RecordReader for DistinctKeysReader {
    fn records(&self, batch: &[u8]) -> Result<Vec<crate::RecordSummary>, crate::RecordError> {
        let header = BatchHeader::parse(batch).map_err(|e| crate::RecordError(e.to_string()))?;
        Ok((0..i64::from(header.records_count))
            .map(|delta| crate::RecordSummary {
                offset: header.base_offset + delta,
                timestamp: header.max_timestamp,
                key: Some((header.base_offset + delta).to_be_bytes().to_vec()),
                is_tombstone: false,
            })
            .collect())
    }

    fn retain(
        &self,
        _batch: &[u8],
        _keep: &mut dyn FnMut(i64) -> bool,
    ) -> Result<Option<Vec<u8>>, crate::RecordError> {
        Err(crate::RecordError(
            "distinct keys: nothing is ever superseded".into(),
        ))
    }
}

/// A header-only batch standing for `records` records (see [`DistinctKeysReader`]).
fn header_only_batch(records: i32) -> Vec<u8> {
    let mut batch = new_batch(&[(1_000, Some("k"), Some("v"))]);
    batch.truncate(crate::batch_header::HEADER_SIZE_BYTES);
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[23..27].copy_from_slice(&(records - 1).to_be_bytes());
    batch[57..61].copy_from_slice(&records.to_be_bytes());
    crate::rewrite_crc(&mut batch).unwrap();
    batch
}

/// A segment of 10 million distinct keys: the key → offset map of a clean stays within
/// `log.cleaner.dedupe.buffer.size`, the clean covers the prefix whose keys fit, and the next
/// clean goes on from there.
#[test]
fn ten_million_distinct_keys_stay_within_the_dedupe_buffer() -> TestResult {
    const RECORDS_PER_BATCH: i32 = 10_000;
    const BATCHES: usize = 1_000; // 10 million keys in the first segment
    const BUFFER_BYTES: u64 = 4 * 1024 * 1024;
    let dir = tempfile::tempdir()?;
    let batch = header_only_batch(RECORDS_PER_BATCH);
    let config = LogConfig {
        segment_bytes: (batch.len() * BATCHES) as u64,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config)?;
    for _ in 0..=BATCHES {
        log.append(&batch)?;
    }
    assert_eq!(log.segment_count(), 2, "one closed segment of 10M keys");
    let policy = CompactionPolicy {
        dedupe_buffer_bytes: BUFFER_BYTES,
        ..compaction_policy(i64::MAX)
    };
    let first = log.clean(&policy, &DistinctKeysReader, 1_000)?.unwrap();
    assert!(
        first.map_bytes <= BUFFER_BYTES,
        "map of {} bytes",
        first.map_bytes
    );
    // 24 bytes per slot, 90 % of the slots used: the map is full, far short of 10M keys.
    let capacity = BUFFER_BYTES / 24 * 9 / 10;
    assert_eq!(first.map_keys, capacity);
    assert_eq!((first.segments, first.records_removed), (1, 0));
    let second = log.clean(&policy, &DistinctKeysReader, 1_000)?.unwrap();
    assert!(second.map_bytes <= BUFFER_BYTES);
    assert_eq!(
        second.map_keys, capacity,
        "the next clean goes on where it stopped"
    );
    assert_eq!(
        log.log_end_offset(),
        (BATCHES as i64 + 1) * i64::from(RECORDS_PER_BATCH)
    );
    Ok(())
}

#[test]
fn offset_map_keeps_the_last_offset_and_refuses_new_keys_when_full() {
    let mut map = crate::cleaner::OffsetMap::new(24 * 10, 1_000);
    assert_eq!(map.size_bytes(), 240);
    for offset in 0..9i64 {
        assert!(map.put(&offset.to_be_bytes(), offset), "key {offset}");
    }
    assert!(!map.put(b"one too many", 100), "full at 90 % of 10 slots");
    assert!(map.put(&3i64.to_be_bytes(), 50), "an old key still updates");
    assert_eq!(map.get(&3i64.to_be_bytes()), Some(50));
    assert_eq!(map.get(&8i64.to_be_bytes()), Some(8));
    assert_eq!(map.get(b"one too many"), None);
    assert_eq!(map.len(), 9);
    // Sized for the keys expected, not the whole buffer.
    assert_eq!(
        crate::cleaner::OffsetMap::new(128 << 20, 9).size_bytes(),
        11 * 24
    );
}

proptest! {
    // Every round fsyncs its rewritten segments: few cases, short logs.
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// With a dedupe buffer of a few keys, repeated cleans converge to the same log as one
    /// clean with room for every key: the latest value per key, each key once, offsets kept.
    #[test]
    fn small_dedupe_buffer_converges_over_rounds(
        ops in prop::collection::vec((0u8..12, prop::option::weighted(0.8, 0u16..1000)), 1..50),
        buffer_keys in 1u64..6,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config()).unwrap();
        let model = append_ops(&log, &ops, |_| {});
        // Rolled segments are sealed (and so cleanable) once flushed.
        log.flush(log.log_end_offset()).unwrap();
        let policy = CompactionPolicy {
            // Slots for `buffer_keys` keys at 90 % load.
            dedupe_buffer_bytes: 24 * (buffer_keys * 10 / 9 + 1),
            ..compaction_policy(i64::MAX)
        };
        let mut rounds = 0;
        while log.clean(&policy, &TestReader, 1_000).unwrap().is_some() {
            rounds += 1;
            prop_assert!(rounds <= ops.len(), "no progress after {rounds} rounds");
            let records = all_records(&log);
            prop_assert_eq!(last_per_key(&records), model.clone());
        }
        let records = all_records(&log);
        prop_assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert_eq!(last_per_key(&records), model.clone());
        // Every closed segment is clean: each key once, except in the active segment.
        let active_base = log.segments_snapshot().last().unwrap().base_offset();
        let mut seen = std::collections::BTreeSet::new();
        for (offset, record) in records.iter().filter(|(o, _)| *o < active_base) {
            prop_assert!(seen.insert(record.key.clone()), "key {:?} twice (offset {offset})", record.key);
        }
    }
}

/// A [`TestReader`] that counts the batches it is asked to walk.
#[derive(Debug, Default)]
struct CountingReader(std::sync::atomic::AtomicUsize);

impl crate::RecordReader for CountingReader {
    fn records(&self, batch: &[u8]) -> Result<Vec<crate::RecordSummary>, crate::RecordError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TestReader.records(batch)
    }

    fn retain(
        &self,
        batch: &[u8],
        keep: &mut dyn FnMut(i64) -> bool,
    ) -> Result<Option<Vec<u8>>, crate::RecordError> {
        TestReader.retain(batch, keep)
    }
}

#[test]
fn one_record_batches_are_looked_up_by_their_header_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_config())?;
    for ts in [100, 300, 200] {
        log.append(&new_batch(&[(ts, Some("k"), Some("v"))]))?;
    }
    log.append(&new_batch(&[
        (400, Some("a"), Some("1")),
        (350, Some("b"), Some("2")),
    ]))?;
    let reader = CountingReader::default();
    let walked = || reader.0.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        log.offset_for_timestamp(250, &reader)?,
        Some(TimestampOffset {
            offset: 1,
            timestamp: 300
        })
    );
    assert_eq!(
        walked(),
        0,
        "a one-record batch is answered from its header"
    );
    assert_eq!(
        log.offset_for_timestamp(360, &reader)?,
        Some(TimestampOffset {
            offset: 3,
            timestamp: 400
        })
    );
    assert_eq!(walked(), 1, "a batch of two records is walked");
    assert_eq!(
        log.max_timestamp_offset(&reader)?,
        Some(TimestampOffset {
            offset: 3,
            timestamp: 400
        })
    );
    Ok(())
}
