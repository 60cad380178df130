//! The zero tail (`LogSegment::extend_zero_tail`): kept only by logs whose fsyncs each cover
//! few bytes, never read as data, cut by a roll and by `close`, and cut by recovery after a
//! crash like any torn tail, with every flushed batch intact.

use std::path::Path;

use super::{batch, read_all};
use crate::partition_log::{FlushPlan, LogConfig, PartitionLog};
use crate::test_support::{appended, log_path, TestResult};

/// Appends `count` batches of `value_bytes`-byte records, each flushed on its own (acks=all
/// with one request in flight); returns their (base, last) offsets.
fn append_flushed(log: &PartitionLog, count: usize, value_bytes: usize) -> Vec<(i64, i64)> {
    (0..count)
        .map(|_| {
            let outcome = appended(log.append(&batch(4, value_bytes)).unwrap());
            log.flush(outcome.1).unwrap();
            outcome
        })
        .collect()
}

fn file_len(dir: &Path, base: i64) -> u64 {
    std::fs::metadata(log_path(dir, base)).unwrap().len()
}

#[test]
fn small_flushed_appends_get_a_zero_tail_that_close_cuts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let expected;
    {
        let log = PartitionLog::open(dir.path(), LogConfig::default())?;
        expected = append_flushed(&log, 40, 100);
        let size = log.size_bytes();
        let len = file_len(dir.path(), 0);
        assert!(len > size, "no zero tail: file {len} bytes, log {size}");
        let tail = std::fs::read(log_path(dir.path(), 0))?;
        assert!(
            tail[size as usize..].iter().all(|&b| b == 0),
            "the tail holds something other than zeros"
        );
        // Readers see the batches only.
        assert_eq!(read_all(&log), expected);
        log.close()?;
        assert_eq!(file_len(dir.path(), 0), size, "close left the tail");
    }
    let log = PartitionLog::open(dir.path(), LogConfig::default())?;
    assert_eq!(read_all(&log), expected);
    let next = log.log_end_offset();
    assert_eq!(appended(log.append(&batch(1, 10))?), (next, next));
    Ok(())
}

#[test]
fn large_flushed_appends_get_no_zero_tail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), LogConfig::default())?;
    // 4 records of 64 KiB: each fsync covers 256 KiB, above the threshold.
    append_flushed(&log, 20, 64 * 1024);
    assert_eq!(file_len(dir.path(), 0), log.size_bytes());
    Ok(())
}

#[test]
fn appends_that_are_not_flushed_get_no_zero_tail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), LogConfig::default())?;
    for _ in 0..40 {
        log.append(&batch(4, 100))?;
    }
    assert_eq!(file_len(dir.path(), 0), log.size_bytes());
    Ok(())
}

#[test]
fn a_roll_cuts_the_zero_tail_of_the_sealed_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = LogConfig {
        segment_bytes: 256 * 1024,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config)?;
    let expected = append_flushed(&log, 600, 100);
    assert!(log.segment_count() > 1, "no roll");
    let segments = log.segments_snapshot();
    let (active, sealed) = segments.split_last().unwrap();
    for segment in sealed {
        assert_eq!(
            file_len(dir.path(), segment.base_offset()),
            segment.size_bytes(),
            "sealed segment {} kept its tail",
            segment.base_offset()
        );
        assert!(segment.size_bytes() <= config.segment_bytes);
    }
    assert!(file_len(dir.path(), active.base_offset()) > active.size_bytes());
    // Never past `segment.bytes`: the tail is only ever filled by this segment.
    assert!(file_len(dir.path(), active.base_offset()) <= config.segment_bytes);
    assert_eq!(read_all(&log), expected);
    Ok(())
}

#[test]
fn a_crash_with_a_zero_tail_keeps_every_flushed_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let expected;
    {
        let log = PartitionLog::open(dir.path(), LogConfig::default())?;
        expected = append_flushed(&log, 40, 100);
        assert!(file_len(dir.path(), 0) > log.size_bytes(), "no zero tail");
        // Dropped without close: an unclean shutdown with the tail in place.
    }
    let log = PartitionLog::open(dir.path(), LogConfig::default())?;
    assert_eq!(read_all(&log), expected);
    assert_eq!(file_len(dir.path(), 0), log.size_bytes(), "tail not cut");
    let next = log.log_end_offset();
    assert_eq!(appended(log.append(&batch(2, 10))?), (next, next + 1));
    // And once more after a second unclean stop.
    drop(log);
    let log = PartitionLog::open(dir.path(), LogConfig::default())?;
    assert_eq!(log.log_end_offset(), next + 2);
    Ok(())
}

/// Whether the test's temporary directory is on a filesystem where flushes may be shared
/// (`LogSegment::overwrites_durable_layout`); elsewhere every plan must be an fdatasync.
fn shares_device_flushes(dir: &Path) -> bool {
    crate::sys::overwrites_in_place(&std::fs::File::open(dir).unwrap()).unwrap()
}

fn is_write_out(plan: &FlushPlan) -> bool {
    matches!(plan, FlushPlan::WriteOut(_))
}

#[test]
fn only_appends_inside_a_durable_zero_tail_skip_their_own_fdatasync() -> TestResult {
    let dir = tempfile::tempdir()?;
    let shares = shares_device_flushes(dir.path());
    let log = PartitionLog::open(dir.path(), LogConfig::default())?;
    // The first append grows the file: only an fdatasync commits its length.
    let (_, last) = appended(log.append(&batch(4, 100))?);
    assert!(!is_write_out(&log.plan_write_out(last)));
    log.flush(last)?;
    assert!(matches!(log.plan_write_out(last), FlushPlan::Durable));

    // Once flushed appends have a zero tail and an fdatasync has covered it, appends into it
    // may share a device flush.
    append_flushed(&log, 40, 100);
    assert!(file_len(dir.path(), 0) > log.size_bytes(), "no zero tail");
    let (_, last) = appended(log.append(&batch(4, 100))?);
    assert_eq!(is_write_out(&log.plan_write_out(last)), shares);

    // `close` cuts the tail: the next append grows the file again.
    log.flush(last)?;
    log.close()?;
    let (_, last) = appended(log.append(&batch(4, 100))?);
    assert!(!is_write_out(&log.plan_write_out(last)));
    Ok(())
}

#[test]
fn logs_flushed_together_are_durable_and_intact() -> TestResult {
    let dir = tempfile::tempdir()?;
    let shares = shares_device_flushes(dir.path());
    let dirs: Vec<_> = (0..3).map(|i| dir.path().join(format!("p{i}"))).collect();
    let mut expected = Vec::new();
    {
        let logs = dirs
            .iter()
            .map(|d| PartitionLog::open(d, LogConfig::default()))
            .collect::<Result<Vec<_>, _>>()?;
        for log in &logs {
            expected.push(append_flushed(log, 40, 100));
        }
        for round in 0..5 {
            let mut requests: Vec<(&PartitionLog, i64)> = Vec::new();
            for (log, batches) in logs.iter().zip(&mut expected) {
                let outcome = appended(log.append(&batch(4, 100))?);
                batches.push(outcome);
                assert_eq!(
                    is_write_out(&log.plan_write_out(outcome.1)),
                    shares,
                    "round {round}"
                );
                requests.push((log, outcome.1));
            }
            // A log whose offset is already durable, in the same round.
            requests.push((&logs[0], 0));
            for result in crate::flush_logs(&requests, true) {
                result?;
            }
            for (log, offset) in &requests {
                assert!(log.flushed_offset() > *offset, "round {round}");
            }
        }
        // Dropped without close: the next open recovers from the files alone.
    }
    for (d, batches) in dirs.iter().zip(&expected) {
        let log = PartitionLog::open(d, LogConfig::default())?;
        assert_eq!(&read_all(&log), batches);
    }
    Ok(())
}

#[test]
fn a_failed_write_out_in_a_shared_round_takes_only_its_log_offline() -> TestResult {
    use crate::io::{FaultInjection, FaultKind, Storage};
    let dir = tempfile::tempdir()?;
    let dirs: Vec<_> = (0..3).map(|i| dir.path().join(format!("p{i}"))).collect();
    // p1's segment: its 40 own flushes below succeed, the next fsync or write-out fails.
    let faults = FaultInjection::new(FaultKind::FsyncError, 40, "p1/00000000000000000000.log");
    let storage = Storage::real().with_faults(faults);
    let logs = dirs
        .iter()
        .map(|d| PartitionLog::open_on(storage.clone(), d, LogConfig::default()))
        .collect::<Result<Vec<_>, _>>()?;
    for log in &logs {
        append_flushed(log, 40, 100);
    }
    let mut requests: Vec<(&PartitionLog, i64)> = Vec::new();
    for log in &logs {
        requests.push((log, appended(log.append(&batch(4, 100))?).1));
    }
    let flushed_before = logs[1].flushed_offset();
    let results = crate::flush_logs(&requests, true);
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(results[1].is_err(), "the failed write-out or fsync");
    assert!(logs[1].is_failed());
    assert_eq!(logs[1].flushed_offset(), flushed_before);
    // The next round would find nothing to write out: only the failed state refuses it.
    let results = crate::flush_logs(&requests, true);
    assert!(
        results[1].is_err(),
        "a later round reported the failed log flushed"
    );
    assert_eq!(logs[1].flushed_offset(), flushed_before);
    assert!(logs[0].flushed_offset() > requests[0].1);
    Ok(())
}
