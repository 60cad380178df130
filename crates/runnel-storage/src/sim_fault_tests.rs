//! Injected write and fsync errors on the simulated disk (`crate::io`): a failed fsync or an
//! unrecoverable write takes the log offline until it is reopened through recovery; a write
//! that failed and was undone leaves no trace in the indexes; no offset is reported flushed
//! before the directory entry of its segment is durable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::io::{FaultInjection, FaultKind, SimDisk, Storage};
use crate::partition_log::{LogConfig, PartitionLog, TimestampOffset};
use crate::test_support::{appended, new_batch, TestReader, TestResult};
use crate::{StorageError, UnwrittenCause};

/// Segments of about one test batch each.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 200,
        index_interval_bytes: 0,
        ..LogConfig::default()
    }
}

/// A one-record batch with a 60-byte value and timestamp `timestamp`.
fn batch(timestamp: i64) -> Vec<u8> {
    let value = "v".repeat(60);
    new_batch(&[(timestamp, Some("k"), Some(value.as_str()))])
}

fn sim() -> (Arc<SimDisk>, PathBuf) {
    let root = Path::new("/data");
    (SimDisk::new(root), root.join("topic-0"))
}

fn is_log_failed<T: std::fmt::Debug>(result: Result<T, StorageError>) -> bool {
    matches!(result, Err(StorageError::LogFailed { .. }))
}

/// Every offset below `flushed` reads back from a log reopened on `disk` (after a crash).
fn reopen_and_check_flushed(disk: &Arc<SimDisk>, dir: &Path, flushed: i64) -> TestResult {
    let log = PartitionLog::open_on(Storage::simulated(Arc::clone(disk)), dir, config())?;
    assert!(
        log.log_end_offset() >= flushed,
        "offsets up to {flushed} were reported flushed, the recovered log ends at {}",
        log.log_end_offset()
    );
    for offset in 0..flushed {
        assert!(
            !log.read(offset, 1 << 20, i64::MAX)?.is_empty(),
            "flushed offset {offset} is lost"
        );
    }
    Ok(())
}

#[test]
fn a_failed_fsync_takes_the_log_offline_until_it_is_reopened() -> TestResult {
    let (disk, dir) = sim();
    // The second fdatasync of a segment fails.
    let storage = Storage::simulated(Arc::clone(&disk)).with_faults(FaultInjection::new(
        FaultKind::FsyncError,
        1,
        ".log",
    ));
    let log = PartitionLog::open_on(storage, &dir, LogConfig::default())?;
    log.append(&batch(1_000))?;
    log.flush(0)?;
    assert_eq!(log.flushed_offset(), 1);
    log.append(&batch(2_000))?;
    assert!(log.flush(1).is_err(), "the injected fsync error");
    // Linux dropped the unsynced pages: a retried fsync would "succeed" without them.
    assert!(is_log_failed(log.flush(1)), "a later flush must fail too");
    assert_eq!(
        log.flushed_offset(),
        1,
        "the flushed offset never advances again"
    );
    assert!(is_log_failed(log.append(&batch(3_000))), "appends fail");
    assert!(is_log_failed(log.read(0, 1 << 20, i64::MAX)), "reads fail");
    assert!(is_log_failed(log.offset_for_timestamp(0, &TestReader)));
    assert!(is_log_failed(log.close()));
    assert!(log.is_failed());
    drop(log);

    disk.crash(21);
    let reopened = PartitionLog::open_on(Storage::simulated(disk), &dir, LogConfig::default())?;
    assert_eq!(
        reopened.log_end_offset(),
        1,
        "recovery serves what was durable, and nothing the failed fsync lost"
    );
    assert!(!reopened.read(0, 1 << 20, i64::MAX)?.is_empty());
    assert_eq!(appended(reopened.append(&batch(4_000))?), (1, 1));
    reopened.flush(1)?;
    Ok(())
}

#[test]
fn a_write_that_cannot_be_undone_takes_the_log_offline() -> TestResult {
    let (disk, dir) = sim();
    // No time-index entries while appending: the first `.timeindex` write is the final entry
    // a roll seals the segment with, and it fails.
    let config = LogConfig {
        index_interval_bytes: u32::MAX,
        ..config()
    };
    let storage = Storage::simulated(Arc::clone(&disk)).with_faults(FaultInjection::new(
        FaultKind::WriteError,
        0,
        ".timeindex",
    ));
    let log = PartitionLog::open_on(storage, &dir, config)?;
    log.append(&batch(1_000))?;
    log.flush(0)?;
    assert!(
        log.append(&batch(2_000)).is_err(),
        "the roll's failed write"
    );
    assert!(log.is_failed());
    assert!(is_log_failed(log.append(&batch(3_000))));
    assert!(is_log_failed(log.flush(0)));
    assert!(is_log_failed(log.read(0, 1 << 20, i64::MAX)));
    drop(log);

    disk.crash(4);
    let reopened = PartitionLog::open_on(Storage::simulated(disk), &dir, config)?;
    assert_eq!(reopened.log_end_offset(), 1);
    assert!(!reopened.read(0, 1 << 20, i64::MAX)?.is_empty());
    Ok(())
}

#[test]
fn a_failed_append_leaves_no_time_index_entry_behind() -> TestResult {
    let (disk, dir) = sim();
    // The second time-index entry of the log fails to write (ENOSPC).
    let storage = Storage::simulated(disk).with_faults(FaultInjection::new(
        FaultKind::WriteError,
        1,
        ".timeindex",
    ));
    let log = PartitionLog::open_on(
        storage,
        &dir,
        LogConfig {
            segment_bytes: 1 << 20,
            ..config()
        },
    )?;
    let mut two = batch(5_000);
    two.extend(batch(6_000));
    assert!(log.append(&two).is_err(), "the injected write error");
    assert!(
        !log.is_failed(),
        "a write that was cut off cleanly leaves a working log"
    );
    assert_eq!(log.log_end_offset(), 0);

    log.append(&new_batch(&[
        (1_000, Some("a"), Some("x")),
        (2_000, Some("b"), Some("y")),
    ]))?;
    assert_eq!(
        log.max_timestamp_offset(&TestReader)?,
        Some(TimestampOffset {
            offset: 1,
            timestamp: 2_000
        }),
        "the largest timestamp is that of a record in the log, not of the failed append"
    );
    assert_eq!(
        log.offset_for_timestamp(1_500, &TestReader)?,
        Some(TimestampOffset {
            offset: 1,
            timestamp: 2_000
        })
    );
    assert_eq!(log.offset_for_timestamp(5_000, &TestReader)?, None);
    Ok(())
}

#[test]
fn a_flush_whose_roll_work_fails_has_reported_nothing_its_directory_could_lose() -> TestResult {
    let (disk, dir) = sim();
    // The producer snapshot the flush writes for the roll fails to sync, after the flush has
    // synced the new segment's data.
    let storage = Storage::simulated(Arc::clone(&disk)).with_faults(FaultInjection::new(
        FaultKind::FsyncError,
        0,
        ".snapshot",
    ));
    let log = PartitionLog::open_on(storage, &dir, config())?;
    log.append(&batch(1_000))?;
    log.flush(0)?;
    log.append(&batch(2_000))?;
    assert_eq!(log.segment_count(), 2, "the second append rolled");
    let _ = log.flush(1);
    let flushed = log.flushed_offset();
    drop(log);

    // A crash right after the flush that keeps nothing unsynced.
    disk.crash_to_durable();
    reopen_and_check_flushed(&disk, &dir, flushed)
}

#[test]
fn a_roll_reports_nothing_flushed_before_the_sealed_segment_entry_is_durable() -> TestResult {
    let (disk, dir) = sim();
    let log = PartitionLog::open_on(Storage::simulated(Arc::clone(&disk)), &dir, config())?;
    // Three segments and no flush: the second roll seals a segment the first one created.
    for timestamp in [1_000, 2_000, 3_000] {
        log.append(&batch(timestamp))?;
    }
    assert_eq!(log.segment_count(), 3);
    let flushed = log.flushed_offset();
    assert_eq!(flushed, 2, "the rolls made offsets 0 and 1 durable");
    drop(log);

    disk.crash_to_durable();
    reopen_and_check_flushed(&disk, &dir, flushed)
}

/// An idempotent batch of producer 1, epoch 0: `records` records from `base_sequence`.
fn producer_batch(base_sequence: i32, records: i32) -> Vec<u8> {
    use crate::batch_header::testing::{build_batch, ProducerFields};
    build_batch(
        records,
        60,
        ProducerFields {
            producer_id: 1,
            producer_epoch: 0,
            base_sequence,
        },
    )
}

/// A producer pipelines batches 2, 3 behind batch 1; batch 1's write fails cleanly (ENOSPC).
/// Batch 2 then has a gap, but only because this log failed to write batch 1: it is answered
/// as a storage error (retriable, not persisted), not as an out-of-order sequence, which
/// librdkafka takes for lost data and answers with an epoch bump (chaos seed 1003, disk-full).
/// Once the producer resends in order, everything is written and gaps are gaps again.
#[test]
fn a_sequence_gap_behind_a_cleanly_failed_write_is_a_storage_error() -> TestResult {
    let (disk, dir) = sim();
    // The producer's second batch is the log's second `.log` write, and it fails (ENOSPC).
    let storage =
        Storage::simulated(disk).with_faults(FaultInjection::new(FaultKind::WriteError, 1, ".log"));
    let log = PartitionLog::open_on(
        storage,
        &dir,
        LogConfig {
            segment_bytes: 1 << 20,
            ..config()
        },
    )?;
    assert_eq!(appended(log.append(&producer_batch(0, 1))?), (0, 0));
    assert!(
        log.append(&producer_batch(1, 1)).is_err(),
        "the injected write error"
    );
    assert!(!log.is_failed(), "cut off cleanly: the log still works");
    assert!(
        matches!(
            log.append(&producer_batch(2, 1)),
            Err(StorageError::SequenceAfterUnwrittenBatch {
                producer_id: 1,
                expected: 1,
                found: 2,
                cause: UnwrittenCause::WriteFailed
            })
        ),
        "the rest of the pipeline is not persisted, and not out of order"
    );
    assert!(matches!(
        log.append(&producer_batch(3, 1)),
        Err(StorageError::SequenceAfterUnwrittenBatch { .. })
    ));
    // The client resends in order.
    assert_eq!(appended(log.append(&producer_batch(1, 1))?), (1, 1));
    assert_eq!(appended(log.append(&producer_batch(2, 1))?), (2, 2));
    // Written again: a real gap is out of order, as always.
    assert!(matches!(
        log.append(&producer_batch(4, 1)),
        Err(StorageError::OutOfOrderSequence {
            expected: 3,
            found: 4,
            ..
        })
    ));
    Ok(())
}

/// A batch the broker refused before writing it (too few in-sync replicas for acks=all) leaves
/// the same gap in the producer's pipeline, answered the same way with the refusal as cause.
#[test]
fn a_sequence_gap_behind_a_refused_batch_is_answered_as_refused() -> TestResult {
    let (disk, dir) = sim();
    let log = PartitionLog::open_on(Storage::simulated(disk), &dir, config())?;
    assert_eq!(appended(log.append(&producer_batch(0, 1))?), (0, 0));
    // Batch 1 was refused by the caller; batch 2 arrives with the gap.
    log.note_refused_producer(1);
    assert!(matches!(
        log.append(&producer_batch(2, 1)),
        Err(StorageError::SequenceAfterUnwrittenBatch {
            cause: UnwrittenCause::Refused,
            expected: 1,
            found: 2,
            ..
        })
    ));
    assert_eq!(appended(log.append(&producer_batch(1, 1))?), (1, 1));
    assert_eq!(appended(log.append(&producer_batch(2, 1))?), (2, 2));
    // Another producer's gaps are not excused by it.
    let other = {
        use crate::batch_header::testing::{build_batch, ProducerFields};
        |base_sequence| {
            build_batch(
                1,
                60,
                ProducerFields {
                    producer_id: 2,
                    producer_epoch: 0,
                    base_sequence,
                },
            )
        }
    };
    appended(log.append(&other(0))?);
    assert!(matches!(
        log.append(&other(5)),
        Err(StorageError::OutOfOrderSequence { .. })
    ));
    Ok(())
}
