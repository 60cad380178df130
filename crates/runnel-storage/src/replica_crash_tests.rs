//! Crash sweeps of what a follower does to its log on the simulated disk
//! (`crate::io::SimDisk`): `truncate_to` and `reset_to`, each followed by a replicated append
//! (`append_replicated`, a batch of a newer leader epoch) and a flush, with the power lost at
//! every disk operation of the run (and a few torn variants of each). After recovery:
//!
//! - no record the truncation cut is served once `truncate_to` returned, and before that
//!   either the log is as it was or it ends at the cut (never a mix with a hole);
//! - every record below the cut that was flushed reads back byte for byte;
//! - the record replicated and flushed after the truncation reads back;
//! - the epoch cache holds no epoch starting at or past the log end, and the replicated batch,
//!   if it survived, has its epoch in the cache (persisted before the batch is written);
//! - after a reset, the log starts at the reset offset, or is as it was if `reset_to` had not
//!   returned.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::batch_header::testing::{build_batch, ProducerFields};
use crate::batch_header::{set_base_offset, set_partition_leader_epoch, verify_crc, BatchHeader};
use crate::io::{SimDisk, Storage};
use crate::partition_log::{LogConfig, PartitionLog};
use crate::test_support::{TestError, TestResult};

/// Tear variants tried at each crash point.
const TEARS_PER_POINT: u64 = 3;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

/// Batch `n` of the fixture: 2 records whose value length tells fixtures apart.
fn fixture_batch(n: i32, value_bytes: usize) -> Vec<u8> {
    build_batch(
        2,
        value_bytes,
        ProducerFields {
            producer_id: 5,
            producer_epoch: 0,
            base_sequence: n * 2,
        },
    )
}

/// Batches by base offset.
type Batches = BTreeMap<i64, Vec<u8>>;

/// Every batch of the log, by base offset, checked whole.
fn stored_batches(log: &PartitionLog) -> Result<BTreeMap<i64, Vec<u8>>, TestError> {
    let mut out = BTreeMap::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX)?;
        let mut rest: &[u8] = &bytes;
        if rest.is_empty() {
            return Err(format!("nothing read at {offset} below {}", log.log_end_offset()).into());
        }
        while !rest.is_empty() {
            let header = BatchHeader::parse(rest)?;
            let (one, tail) = rest.split_at(header.size_bytes() as usize);
            verify_crc(one)?;
            out.insert(header.base_offset, one.to_vec());
            offset = header.last_offset() + 1;
            rest = tail;
        }
    }
    Ok(out)
}

/// The fixture: 12 batches of 2 records over several segments, epochs 1 (offsets 0..10) and
/// 3 (from 10), flushed up to offset 20; the last 2 batches are not flushed. Returns the
/// batches as stored.
fn build_fixture(storage: &Storage, dir: &Path) -> Result<BTreeMap<i64, Vec<u8>>, TestError> {
    let log = PartitionLog::open_on(storage.clone(), dir, config())?;
    log.set_leader_epoch(1)?;
    for n in 0..5 {
        log.append(&fixture_batch(n, 20))?;
    }
    log.set_leader_epoch(3)?;
    for n in 5..10 {
        log.append(&fixture_batch(n, 20))?;
    }
    log.flush(i64::MAX)?;
    for n in 10..12 {
        log.append(&fixture_batch(n, 20))?;
    }
    assert!(log.segment_count() >= 3, "the fixture spans segments");
    let stored = stored_batches(&log)?;
    // Dropped without close: the unflushed tail stays unflushed.
    Ok(stored)
}

/// The leader epoch of the batch a run replicates after its operation: newer than the
/// fixture's, so the replicated append starts it in the epoch cache.
const REPLICATED_EPOCH: i32 = 7;

/// The batch a run appends after its operation, as a follower would (no producer id: never
/// refused), with base offset 0 until placed.
fn appended_after_batch() -> Vec<u8> {
    let mut batch = build_batch(2, 3, ProducerFields::NONE);
    set_partition_leader_epoch(&mut batch, REPLICATED_EPOCH).unwrap();
    batch
}

/// Whether `stored` is [`appended_after_batch`] at some offset: it may survive a crash even
/// when its append or flush failed (its bytes were written).
fn is_appended_after(stored: &[u8]) -> bool {
    stored.get(8..) == appended_after_batch().get(8..)
}

/// What a run did before the power went.
#[derive(Debug, Default)]
struct Run {
    /// `truncate_to` / `reset_to` returned `Ok`.
    operation_done: bool,
    /// The append after it returned `Ok`: the batch stored there, at its base offset (it may
    /// survive the crash whether flushed or not).
    appended_after: Option<(i64, Vec<u8>)>,
    /// The flush after that append returned `Ok` too: the batch must survive.
    flushed_after: bool,
}

impl Run {
    /// The batch appended after the operation, if it must survive the crash.
    fn must_keep(&self) -> Option<&(i64, Vec<u8>)> {
        self.appended_after.as_ref().filter(|_| self.flushed_after)
    }
}

/// Opens the fixture, arms the crash `crash_after` operations later, runs `operation` then
/// an append and a flush. Returns what completed and whether the disk kept power throughout.
fn run(
    disk: &Arc<SimDisk>,
    dir: &Path,
    crash_after: Option<u64>,
    operation: &dyn Fn(&PartitionLog) -> Result<(), crate::StorageError>,
) -> Result<(Run, bool), TestError> {
    let storage = Storage::simulated(Arc::clone(disk));
    let log = PartitionLog::open_on(storage, dir, config())?;
    if let Some(after) = crash_after {
        disk.crash_after(disk.operations() + after);
    }
    let mut outcome = Run::default();
    if operation(&log).is_ok() {
        outcome.operation_done = true;
        let mut replicated = appended_after_batch();
        set_base_offset(&mut replicated, log.log_end_offset())?;
        let appended = log.append_replicated(&replicated);
        if let Ok(crate::AppendOutcome::Appended { base_offset, .. }) = appended {
            let stored = log.read(base_offset, 1 << 20, i64::MAX)?;
            outcome.appended_after = Some((base_offset, stored.to_vec()));
            outcome.flushed_after = log.flush(i64::MAX).is_ok();
        }
    }
    Ok((outcome, !disk.is_powered_off()))
}

/// The checks after a crashed truncation (see the module docs).
fn check_truncation(
    log: &PartitionLog,
    before: &BTreeMap<i64, Vec<u8>>,
    flushed_end: i64,
    run: &Run,
    cut_offset: i64,
) -> TestResult {
    let after = stored_batches(log)?;
    let end = log.log_end_offset();
    if end < cut_offset {
        return Err(format!("log end {end} is below the cut: flushed records lost").into());
    }
    for (offset, batch) in &after {
        if *offset >= cut_offset && is_appended_after(batch) {
            continue;
        }
        let expected = before
            .get(offset)
            .ok_or(format!("a batch at {offset} that was never written"))?;
        if batch != expected {
            return Err(format!(
                "the batch at {offset} is not what was written there: {:?} vs {:?} (run {run:?})",
                BatchHeader::parse(batch),
                BatchHeader::parse(expected)
            )
            .into());
        }
    }
    let kept_below_cut = before
        .range(..cut_offset)
        .all(|(o, b)| after.get(o) == Some(b));
    if !kept_below_cut {
        return Err("a flushed batch below the cut is lost or changed".into());
    }
    let old_above_cut = before
        .range(cut_offset..)
        .filter(|(o, b)| after.get(o) == Some(b))
        .count();
    if run.operation_done && old_above_cut > 0 {
        return Err("records the truncation cut are back".into());
    }
    if old_above_cut > 0
        && before
            .range(cut_offset..flushed_end)
            .any(|(o, _)| !after.contains_key(o))
    {
        return Err("a half-undone truncation: flushed records above the cut partly gone".into());
    }
    if let Some((at, _)) = run.must_keep() {
        if !after.contains_key(at) {
            return Err(
                format!("the batch appended and flushed at {at} after the cut is lost").into(),
            );
        }
    }
    check_replicated_epoch(log, &after)?;
    if log.epoch_entries().iter().any(|e| e.start_offset >= end) {
        return Err(format!(
            "epoch entries {:?} start past the log end {end}",
            log.epoch_entries()
        )
        .into());
    }
    Ok(())
}

/// A replicated batch that survived the crash has its epoch in the cache, starting at it: the
/// epoch is persisted before the batch is written.
fn check_replicated_epoch(log: &PartitionLog, after: &Batches) -> TestResult {
    for (offset, _) in after.iter().filter(|(_, b)| is_appended_after(b)) {
        let start = log
            .epoch_entries()
            .iter()
            .find(|e| e.epoch == REPLICATED_EPOCH)
            .map(|e| e.start_offset);
        if start != Some(*offset) {
            return Err(format!(
                "the replicated batch at {offset} is back but the epoch cache is {:?}",
                log.epoch_entries()
            )
            .into());
        }
    }
    Ok(())
}

/// The checks after a crashed run of resets to `reset_offsets` (in order): the fixture's
/// flushed batches are all there (no reset happened) or none is, and the log then starts at
/// one of the offsets (the last once the run's operation returned).
fn check_reset(
    log: &PartitionLog,
    before: &Batches,
    run: &Run,
    reset_offsets: &[i64],
) -> TestResult {
    let after = stored_batches(log)?;
    let reset = after.values().all(|b| is_appended_after(b));
    if reset {
        let lost = run.must_keep().is_some_and(|(o, _)| !after.contains_key(o));
        let start = log.log_start_offset();
        let start_ok = if run.operation_done {
            reset_offsets.last() == Some(&start)
        } else {
            reset_offsets.contains(&start)
        };
        if !start_ok || lost {
            return Err(format!("after the reset the log holds {:?}", after.keys()).into());
        }
        check_replicated_epoch(log, &after)?;
        if log
            .epoch_entries()
            .iter()
            .any(|e| e.epoch != REPLICATED_EPOCH)
        {
            return Err(format!(
                "the epoch cache survived the reset: {:?}",
                log.epoch_entries()
            )
            .into());
        }
        return Ok(());
    }
    if run.operation_done {
        return Err("reset_to returned but the log does not start at the reset offset".into());
    }
    let unchanged = before.range(..20).all(|(o, b)| after.get(o) == Some(b))
        && after.iter().all(|(o, b)| before.get(o) == Some(b));
    if !unchanged {
        return Err("an unfinished reset changed the log".into());
    }
    Ok(())
}

/// Runs `operation` crashing at every disk operation (with a few tears each), then checks the
/// reopened log with `check`. Returns how many crash points were tried.
fn sweep(
    name: &str,
    operation: &dyn Fn(&PartitionLog) -> Result<(), crate::StorageError>,
    check: &dyn Fn(&PartitionLog, &Batches, &Run) -> TestResult,
) -> Result<u64, TestError> {
    let root = Path::new("/data");
    let dir = root.join("topic-0");
    let fixture = |disk: &Arc<SimDisk>| build_fixture(&Storage::simulated(Arc::clone(disk)), &dir);
    // An uncrashed run tells how many operations there are to crash at.
    let disk = SimDisk::new(root);
    fixture(&disk)?;
    let start = disk.operations();
    let (_, kept_power) = run(&disk, &dir, None, operation)?;
    assert!(kept_power);
    let operations = disk.operations() - start;
    assert!(operations > 10, "{name}: too few disk operations to sweep");
    for crash_point in 0..=operations {
        for tear in 0..TEARS_PER_POINT {
            let disk = SimDisk::new(root);
            let before = fixture(&disk)?;
            // The fixture's tail may be lost in the crash; only what was flushed counts.
            disk.crash_to_durable();
            let before = {
                let log =
                    PartitionLog::open_on(Storage::simulated(Arc::clone(&disk)), &dir, config())?;
                let durable = stored_batches(&log)?;
                assert!(durable.iter().all(|(o, b)| before.get(o) == Some(b)));
                durable
            };
            let (outcome, _) = run(&disk, &dir, Some(crash_point), operation)?;
            disk.crash(crash_point * 31 + tear);
            let reopened =
                PartitionLog::open_on(Storage::simulated(Arc::clone(&disk)), &dir, config())
                    .map_err(|e| {
                        format!(
                    "{name}: crash at {crash_point}/{operations} tear {tear}: reopen failed: {e}"
                )
                    })?;
            check(&reopened, &before, &outcome).map_err(|e| {
                format!(
                    "{name}: crash at operation {crash_point} of {operations}, tear {tear}: {e}"
                )
            })?;
            // The recovered log takes appends again.
            reopened.append(&build_batch(1, 1, ProducerFields::NONE))?;
            reopened.flush(i64::MAX)?;
        }
    }
    Ok(operations)
}

#[test]
fn a_crash_during_truncation_never_brings_cut_records_back_nor_loses_kept_ones() -> TestResult {
    // (offset asked, where the cut lands): a batch boundary inside the second of several
    // segments; the log start (everything goes); inside the last flushed batch (18..=19),
    // which goes whole.
    for (offset, cut_offset) in [(12, 12), (0, 0), (19, 18)] {
        let points = sweep(
            "truncate_to",
            &|log| log.truncate_to(offset),
            &|log, before, run| {
                let flushed_end = before
                    .values()
                    .map(|b| BatchHeader::parse(b).unwrap().last_offset() + 1)
                    .max()
                    .unwrap_or(0);
                check_truncation(log, before, flushed_end, run, cut_offset)
            },
        )?;
        println!("truncate_to({offset}): {points} crash points, {TEARS_PER_POINT} tears each");
    }
    Ok(())
}

#[test]
fn a_crash_during_a_reset_leaves_the_old_log_or_the_new_one() -> TestResult {
    // Past the log end (a follower behind its leader's retention); at the first segment's own
    // base offset (the new segment replaces a file of the same name); and below the first
    // segment's base offset (the old recovery checkpoint must never name a missing segment).
    for resets in [&[500][..], &[0], &[700, 600]] {
        let points = sweep(
            "reset_to",
            &|log| resets.iter().try_for_each(|&offset| log.reset_to(offset)),
            &|log, before, run| check_reset(log, before, run, resets),
        )?;
        println!("reset_to {resets:?}: {points} crash points, {TEARS_PER_POINT} tears each");
    }
    Ok(())
}
