//! The crash sweep on the simulated disk (`crate::io::SimDisk`): a seeded workload of appends
//! (some from an idempotent producer), flushes (each checkpointing a lagging high watermark),
//! rolls, retention, DeleteRecords, cleaning, follower truncations (above the high watermark),
//! closes and clean reopens runs until the disk loses power at a chosen operation; the crash
//! keeps only what was fsynced plus a seeded, possibly torn, prefix of the rest; the log is
//! reopened through recovery and checked:
//!
//! - every offset the log reported flushed (`flushed_offset`, what acks=-1 answers on) reads
//!   back with the record that was written there, unless below the log start offset that
//!   DeleteRecords or retention asked for, cut by a truncation that was asked for, or
//!   compacted away by a later record of its key (which no truncation may then cut);
//! - every batch served is intact (CRC) and holds exactly what was written at its offsets:
//!   nothing torn, nothing from a different write;
//! - the log takes and flushes appends again.
//!
//! Every crash point of each seed's workload is tried (a few thousand in all). The base seed
//! comes from `RUNNEL_SEED` (printed, so a failure replays); `RUNNEL_CRASH_SEEDS` runs more
//! seeds than the default; `RUNNEL_CRASH_DEBUG=1` prints the step at which each crashed
//! workload stopped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::batch_header::{rewrite_crc, verify_crc, BatchHeader};
use crate::cleaner::CompactionPolicy;
use crate::io::{SimDisk, SplitMix64, Storage};
use crate::partition_log::{AppendOutcome, LogConfig, PartitionLog, RetentionPolicy};
use crate::test_support::{decode, new_batch, TestError, TestReader, TestResult};

/// Seeds run by default: each sweeps every crash point of its workload.
const DEFAULT_SEEDS: u64 = 12;
/// Operations per workload.
const WORKLOAD_STEPS: usize = 60;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

fn base_seed() -> u64 {
    std::env::var("RUNNEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0021)
}

fn seed_count() -> u64 {
    std::env::var("RUNNEL_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS)
}

/// The workload's generator.
struct Rng(SplitMix64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0.next() % bound
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Append {
        records: u64,
        idempotent: bool,
    },
    Flush,
    Retention,
    DeleteRecords,
    Clean,
    Close,
    Reopen,
    /// A follower's truncation, two thirds of the way from the log start to its end.
    Truncate,
}

fn workload(seed: u64) -> Vec<Step> {
    let mut rng = Rng(SplitMix64(seed));
    (0..WORKLOAD_STEPS)
        .map(|_| match rng.below(21) {
            0..=8 => Step::Append {
                records: 1 + rng.below(4),
                idempotent: rng.below(3) == 0,
            },
            9..=12 => Step::Flush,
            13 => Step::Retention,
            14 => Step::DeleteRecords,
            15 | 16 => Step::Clean,
            17 => Step::Close,
            18 | 19 => Step::Reopen,
            _ => Step::Truncate,
        })
        .collect()
}

/// What was written and promised before the crash.
#[derive(Debug, Default)]
struct Model {
    /// Offset → (key, value) of every record appended.
    records: BTreeMap<i64, (String, String)>,
    /// The highest `flushed_offset` the log ever reported.
    durable_end: i64,
    /// The highest log start offset asked for (DeleteRecords, retention), or seen.
    start_bound: i64,
    /// Whether the cleaner ran.
    cleaned: bool,
    /// Records generated so far (values are unique).
    generated: u64,
    /// The idempotent producer's next sequence number.
    next_sequence: i32,
    /// The high watermark last checkpointed: a truncation never goes below it.
    high_watermark: i64,
    /// A truncation ran: appends are no longer idempotent (which sequence the rebuilt producer
    /// state expects depends on what the cleaner kept; the producer rules have their own tests).
    truncated: bool,
    /// What the maintenance steps did: segments cleaned, deleted by retention, and
    /// DeleteRecords calls that moved the log start; rolls (segments created).
    segments_cleaned: usize,
    segments_expired: usize,
    starts_moved: usize,
    truncations: usize,
}

const PRODUCER_ID: i64 = 7;

/// A batch of `records` records keyed among a few keys (so the cleaner has work), with unique
/// values; from the idempotent producer when `idempotent`.
fn make_batch(
    model: &mut Model,
    records: u64,
    idempotent: bool,
) -> (Vec<u8>, Vec<(String, String)>) {
    let contents: Vec<(String, String)> = (0..records)
        .map(|i| {
            let n = model.generated + i;
            (format!("k{}", n % 5), format!("value-{n}"))
        })
        .collect();
    let spec: Vec<(i64, Option<&str>, Option<&str>)> = contents
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            (
                1_000 + (model.generated + i as u64) as i64,
                Some(k.as_str()),
                Some(v.as_str()),
            )
        })
        .collect();
    let mut batch = new_batch(&spec);
    if idempotent {
        batch[43..51].copy_from_slice(&PRODUCER_ID.to_be_bytes());
        batch[51..53].copy_from_slice(&0i16.to_be_bytes());
        batch[53..57].copy_from_slice(&model.next_sequence.to_be_bytes());
        rewrite_crc(&mut batch).unwrap();
    }
    (batch, contents)
}

/// Runs `step`; the error of a failed operation (the disk lost power) ends the workload.
fn run_step(
    step: Step,
    log: &mut PartitionLog,
    storage: &Storage,
    dir: &Path,
    model: &mut Model,
) -> Result<(), TestError> {
    match step {
        Step::Append {
            records,
            idempotent,
        } => {
            let idempotent = idempotent && !model.truncated;
            let (batch, contents) = make_batch(model, records, idempotent);
            model.generated += records;
            // A failed append may still reach the disk: its records may be served later, at
            // the offsets it would have had, though never counted as flushed.
            let base_offset = match log.append(&batch) {
                Ok(AppendOutcome::Appended { base_offset, .. }) => base_offset,
                Ok(AppendOutcome::Duplicate { .. }) => return Err("unexpected duplicate".into()),
                Err(error) => {
                    let base_offset = log.log_end_offset();
                    model.records.extend((base_offset..).zip(contents));
                    return Err(error.into());
                }
            };
            model.records.extend((base_offset..).zip(contents));
            if idempotent {
                model.next_sequence += records as i32;
            }
        }
        Step::Flush => {
            log.flush(log.log_end_offset())?;
            // A high watermark lagging the flushed offset, as a follower's does: truncations
            // stay above it and the cleaner below it.
            let start = log.log_start_offset();
            model.high_watermark = start + (log.flushed_offset() - start) / 2;
            log.write_high_watermark(model.high_watermark)?;
        }
        Step::Retention => {
            let last_base = log
                .segments_snapshot()
                .last()
                .map_or(0, |s| s.base_offset());
            model.start_bound = model.start_bound.max(last_base);
            model.segments_expired += log.apply_retention(
                RetentionPolicy {
                    retention_ms: -1,
                    retention_bytes: 600,
                },
                1_000_000,
            )?;
        }
        Step::DeleteRecords => {
            let start = log.log_start_offset();
            let target = start + (log.log_end_offset() - start) / 3;
            model.start_bound = model.start_bound.max(target);
            if log.delete_records(target, log.log_end_offset())? > start {
                model.starts_moved += 1;
            }
        }
        Step::Clean => {
            model.cleaned = true;
            let policy = CompactionPolicy {
                min_cleanable_dirty_ratio: 0.0,
                ..CompactionPolicy::default()
            };
            if let Some(stats) = log.clean(&policy, &TestReader, 1_000_000)? {
                model.segments_cleaned += stats.segments;
            }
        }
        Step::Truncate => {
            let start = log.log_start_offset();
            let target = (start + (log.log_end_offset() - start) * 2 / 3).max(model.high_watermark);
            if target >= log.log_end_offset() {
                return Ok(());
            }
            // Where the cut lands: the start of the batch holding the target, or the log start.
            let bytes = log.read(target, 1, i64::MAX)?;
            let cut = BatchHeader::parse(&bytes)?.base_offset.max(start);
            model.truncated = true;
            // Records from the cut on are no longer promised, whether or not the truncation
            // finishes before the crash (the next open finishes it if its marker is durable).
            model.durable_end = model.durable_end.min(cut);
            log.truncate_to(target)?;
            if log.log_end_offset() != cut {
                return Err(format!(
                    "truncate_to({target}) ended the log at {}, not {cut}",
                    log.log_end_offset()
                )
                .into());
            }
            model.records.retain(|at, _| *at < cut);
            model.truncations += 1;
        }
        Step::Close => log.close()?,
        Step::Reopen => {
            log.close()?;
            *log = PartitionLog::open_on(storage.clone(), dir, config())?;
        }
    }
    Ok(())
}

/// Runs the workload of `seed` until it ends or the disk loses power at `crash_point`;
/// returns the model and the number of disk operations the whole workload takes.
fn run_until_crash(disk: &Arc<SimDisk>, dir: &Path, seed: u64, crash_point: Option<u64>) -> Model {
    let storage = Storage::simulated(Arc::clone(disk));
    if let Some(point) = crash_point {
        disk.crash_after(point);
    }
    let mut model = Model::default();
    let Ok(mut log) = PartitionLog::open_on(storage.clone(), dir, config()) else {
        return model;
    };
    for step in workload(seed) {
        let result = run_step(step, &mut log, &storage, dir, &mut model);
        // Read even after a failure: a concurrent acks=-1 waiter would be answered from it.
        // Not after a failed truncation: what it was cutting is no longer promised (the
        // flushed offset comes down only once the cut is made).
        if !(matches!(step, Step::Truncate) && result.is_err()) {
            model.durable_end = model.durable_end.max(log.flushed_offset());
        }
        model.start_bound = model.start_bound.max(log.log_start_offset());
        if let Err(error) = result {
            if std::env::var("RUNNEL_CRASH_DEBUG").is_ok() {
                eprintln!("{step:?} failed: {error}; flushed {}", model.durable_end);
            }
            break;
        }
    }
    model
}

/// Reopens the crashed log and checks the promises (see the module docs).
fn check_recovered(storage: &Storage, dir: &Path, model: &Model) -> TestResult {
    let log = PartitionLog::open_on(storage.clone(), dir, config())
        .map_err(|e| format!("recovery failed: {e}"))?;
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    if start > model.start_bound.max(0) {
        return Err(format!(
            "log start offset {start} beyond anything asked for ({})",
            model.start_bound
        )
        .into());
    }
    if end < model.durable_end {
        return Err(format!(
            "log ends at {end} but offsets up to {} were reported flushed",
            model.durable_end
        )
        .into());
    }
    // Everything served, batch by batch.
    let mut served: BTreeMap<i64, (String, String)> = BTreeMap::new();
    let mut offset = start;
    while offset < end {
        let bytes = log.read(offset, 1 << 20, i64::MAX)?;
        if bytes.is_empty() {
            break;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let header = BatchHeader::parse(rest)?;
            let size = header.size_bytes() as usize;
            let batch = &rest[..size];
            verify_crc(batch)
                .map_err(|e| format!("torn batch served at {}: {e}", header.base_offset))?;
            let (header, records) = decode(batch)?;
            for record in records {
                let at = header.base_offset + i64::from(record.offset_delta);
                let key = String::from_utf8(record.key.unwrap_or_default())?;
                let value = String::from_utf8(record.value.unwrap_or_default())?;
                served.insert(at, (key, value));
            }
            offset = header.last_offset() + 1;
            rest = &rest[size..];
        }
    }
    for (at, record) in &served {
        if model.records.get(at) != Some(record) {
            return Err(format!(
                "offset {at} serves {record:?}, but {:?} was written there",
                model.records.get(at)
            )
            .into());
        }
    }
    for (at, (key, value)) in model.records.range(start..model.durable_end.max(start)) {
        if served.contains_key(at) {
            continue;
        }
        let superseded = model.cleaned
            && model
                .records
                .range(at + 1..model.durable_end)
                .any(|(_, (later_key, _))| later_key == key);
        if !superseded {
            return Err(format!(
                "flushed offset {at} ({key}={value}) is lost (durable end {}, log {start}..{end})",
                model.durable_end
            )
            .into());
        }
    }
    // The recovered log takes appends again.
    let (batch, _) = make_batch(&mut Model::default(), 2, false);
    log.append(&batch)?;
    log.flush(log.log_end_offset())?;
    Ok(())
}

/// One run: the workload of `seed` crashing at `crash_point`, torn by `tear_seed`.
fn crash_run(seed: u64, crash_point: u64, tear_seed: u64) -> TestResult {
    let root = Path::new("/data");
    let dir = root.join("topic-0");
    let disk = SimDisk::new(root);
    let model = run_until_crash(&disk, &dir, seed, Some(crash_point));
    disk.crash(tear_seed);
    check_recovered(&Storage::simulated(Arc::clone(&disk)), &dir, &model)
}

#[test]
fn no_flushed_offset_is_lost_at_any_crash_point() -> TestResult {
    let base = base_seed();
    let seeds = seed_count();
    let mut crash_points = 0u64;
    let (mut cleaned, mut expired, mut moved, mut truncated) = (0, 0, 0, 0);
    for seed in base..base + seeds {
        let disk = SimDisk::new(Path::new("/data"));
        let model = run_until_crash(&disk, &Path::new("/data").join("topic-0"), seed, None);
        assert!(
            model.durable_end > 0,
            "seed {seed}: the workload flushed nothing, so it proves nothing"
        );
        cleaned += model.segments_cleaned;
        expired += model.segments_expired;
        moved += model.starts_moved;
        truncated += model.truncations;
        let operations = disk.operations();
        for crash_point in 0..=operations {
            let tear_seed = seed.wrapping_mul(1_000_003).wrapping_add(crash_point);
            crash_run(seed, crash_point, tear_seed).map_err(|e| {
                format!(
                    "seed {seed}, crash at disk operation {crash_point} of {operations}, tear \
                     seed {tear_seed} (replay: RUNNEL_SEED={seed} RUNNEL_CRASH_SEEDS=1): {e}"
                )
            })?;
            crash_points += 1;
        }
    }
    println!(
        "crash sweep: {seeds} seeds from RUNNEL_SEED={base}, {crash_points} crash points, all \
         recovered every flushed offset (uncrashed workloads: {cleaned} segments cleaned, \
         {expired} deleted by retention, {moved} DeleteRecords that moved the log start, \
         {truncated} truncations)"
    );
    // A sweep whose workloads stopped exercising maintenance would prove less than it says.
    assert!(
        cleaned > 0 && expired > 0 && moved > 0 && truncated > 0,
        "the workloads never cleaned ({cleaned}), expired ({expired}), deleted records ({moved}) \
         or truncated ({truncated})"
    );
    Ok(())
}
