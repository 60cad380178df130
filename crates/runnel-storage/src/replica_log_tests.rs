//! Tests of what a replica needs from `PartitionLog`: leader epochs stamped and cached,
//! appends at the leader's offsets, truncation, a reset to a later start, and the
//! high-watermark checkpoint.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;

use crate::batch_header::testing::{build_batch, ProducerFields};
use crate::batch_header::{set_base_offset, set_partition_leader_epoch, BatchHeader};
use crate::error::{BatchDefect, StorageError};
use crate::io::Storage;
use crate::leader_epoch::{EpochEntry, LeaderEpochCache};
use crate::partition_log::{AppendOutcome, CrcCheck, LogConfig, PartitionLog};
use crate::test_support::{TestError, TestResult};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

fn batch(records: i32) -> Vec<u8> {
    build_batch(records, 8, ProducerFields::NONE)
}

fn producer_batch(producer_id: i64, base_sequence: i32, records: i32) -> Vec<u8> {
    build_batch(
        records,
        8,
        ProducerFields {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        },
    )
}

fn entries(pairs: &[(i32, i64)]) -> Vec<EpochEntry> {
    pairs
        .iter()
        .map(|&(epoch, start_offset)| EpochEntry {
            epoch,
            start_offset,
        })
        .collect()
}

/// Every batch of the log from `offset` on, as stored.
fn batches_from(log: &PartitionLog, offset: i64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = offset;
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX).unwrap();
        let mut rest: &[u8] = &bytes;
        assert!(!rest.is_empty(), "nothing read at {offset}");
        while !rest.is_empty() {
            let header = BatchHeader::parse(rest).unwrap();
            let (one, tail) = rest.split_at(header.size_bytes() as usize);
            out.push(one.to_vec());
            offset = header.last_offset() + 1;
            rest = tail;
        }
    }
    out
}

fn epoch_of(batch: &[u8]) -> i32 {
    BatchHeader::parse(batch).unwrap().partition_leader_epoch
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, config()).unwrap()
}

#[test]
fn appends_keep_the_clients_epoch_until_a_leader_epoch_is_set() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let mut sent = batch(2);
    set_partition_leader_epoch(&mut sent, 77)?;
    log.append(&sent)?;
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.end_offset_for_epoch(77), (-1, -1));

    log.set_leader_epoch(3)?;
    log.append(&sent)?;
    log.append_with_time(&batch(1), Some(5_000), crate::CrcCheck::Verify)?;
    log.set_leader_epoch(5)?;
    log.append(&batch(3))?;
    let stored = batches_from(&log, 0);
    let epochs: Vec<i32> = stored.iter().map(|b| epoch_of(b)).collect();
    assert_eq!(epochs, vec![77, 3, 3, 5]);
    for b in &stored {
        crate::batch_header::verify_crc(b)?;
    }
    assert_eq!(log.epoch_entries(), entries(&[(3, 2), (5, 5)]));
    assert_eq!(log.leader_epoch_cache().entries(), log.epoch_entries());
    assert_eq!(log.end_offset_for_epoch(3), (3, 5));
    assert_eq!(log.end_offset_for_epoch(5), (5, 8));
    assert_eq!(log.end_offset_for_epoch(4), (3, 5));

    match log.set_leader_epoch(4) {
        Err(StorageError::StaleLeaderEpoch {
            epoch: 4,
            latest: 5,
        }) => {}
        other => panic!("expected StaleLeaderEpoch, got {other:?}"),
    }
    log.close()?;
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.epoch_entries(), entries(&[(3, 2), (5, 5)]));
    Ok(())
}

#[test]
fn epochs_past_the_recovered_log_end_are_dropped_at_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.set_leader_epoch(1)?;
    log.append(&batch(4))?;
    log.close()?;
    drop(log);
    // As if epoch 2 started at 4 and its records were a torn tail lost in a crash.
    let path = dir.path().join(crate::leader_epoch::LEADER_EPOCH_FILE_NAME);
    std::fs::write(&path, "0\n3\n1 0\n2 4\n3 9\n")?;
    let log = open(dir.path());
    assert_eq!(log.epoch_entries(), entries(&[(1, 0)]));
    assert_eq!(std::fs::read_to_string(&path)?, "0\n1\n1 0\n");
    Ok(())
}

#[test]
fn a_damaged_epoch_checkpoint_keeps_the_log_closed() -> TestResult {
    let dir = tempfile::tempdir()?;
    open(dir.path()).set_leader_epoch(1)?;
    let path = dir.path().join(crate::leader_epoch::LEADER_EPOCH_FILE_NAME);
    std::fs::write(&path, "0\n1\nnonsense\n")?;
    match PartitionLog::open(dir.path(), config()) {
        Err(StorageError::CorruptLeaderEpochCheckpoint { path: named, .. }) => {
            assert_eq!(named, path)
        }
        other => panic!("expected CorruptLeaderEpochCheckpoint, got {other:?}"),
    }
    Ok(())
}

/// A leader log with two epochs and an idempotent producer, spanning a few segments.
fn leader_log(dir: &Path) -> Result<PartitionLog, StorageError> {
    let leader = PartitionLog::open(dir, config())?;
    leader.set_leader_epoch(1)?;
    for i in 0..4 {
        leader.append(&producer_batch(9, i * 2, 2))?;
    }
    leader.set_leader_epoch(4)?;
    for _ in 0..4 {
        leader.append(&batch(3))?;
    }
    Ok(leader)
}

#[test]
fn replicated_appends_copy_the_leaders_log_byte_for_byte() -> TestResult {
    let (leader_dir, follower_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let leader = leader_log(leader_dir.path())?;
    let follower = open(follower_dir.path());
    // Fetched in two responses, each several batches long.
    let leader_batches = batches_from(&leader, 0);
    for chunk in leader_batches.chunks(3) {
        let outcome = follower.append_replicated(&chunk.concat())?;
        let first = BatchHeader::parse(&chunk[0])?;
        let last = BatchHeader::parse(chunk.last().unwrap())?;
        assert_eq!(
            outcome,
            AppendOutcome::Appended {
                base_offset: first.base_offset,
                last_offset: last.last_offset()
            }
        );
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(batches_from(&follower, 0), leader_batches);
    assert!(follower.segment_count() > 1, "the follower rolled too");
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(follower.epoch_entries(), entries(&[(1, 0), (4, 8)]));
    // The producer's state followed: a retry of its last batch is a duplicate on the follower.
    assert_eq!(
        follower.append(&producer_batch(9, 6, 2))?,
        AppendOutcome::Duplicate {
            base_offset: 6,
            last_offset: 7
        }
    );
    follower.close()?;
    drop(follower);
    let follower = open(follower_dir.path());
    assert_eq!(batches_from(&follower, 0), leader_batches);
    assert_eq!(follower.epoch_entries(), entries(&[(1, 0), (4, 8)]));
    Ok(())
}

#[test]
fn replicated_appends_do_not_refuse_producer_sequences() -> TestResult {
    let dir = tempfile::tempdir()?;
    let follower = open(dir.path());
    let mut first = producer_batch(9, 0, 2);
    set_base_offset(&mut first, 0)?;
    // A sequence gap an idempotent append would refuse: the leader accepted it (its producer
    // state had expired), so the follower must too.
    let mut second = producer_batch(9, 40, 1);
    set_base_offset(&mut second, 2)?;
    follower.append_replicated(&[first, second].concat())?;
    assert_eq!(follower.log_end_offset(), 3);
    assert_eq!(
        follower.append(&producer_batch(9, 40, 1))?,
        AppendOutcome::Duplicate {
            base_offset: 2,
            last_offset: 2
        }
    );
    Ok(())
}

#[test]
fn replicated_appends_accept_gaps_and_refuse_offsets_going_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let follower = open(dir.path());
    let at = |base: i64, records: i32| {
        let mut b = batch(records);
        set_base_offset(&mut b, base).unwrap();
        b
    };
    follower.append_replicated(&at(0, 2))?;
    // A compacted leader log has gaps between batches.
    follower.append_replicated(&[at(5, 1), at(9, 2)].concat())?;
    assert_eq!(follower.log_end_offset(), 11);
    let lengths: Vec<i64> = batches_from(&follower, 0)
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap().base_offset)
        .collect();
    assert_eq!(lengths, vec![0, 5, 9]);

    match follower.append_replicated(&at(10, 1)) {
        Err(StorageError::ReplicaAppendBehindLogEnd {
            log_end_offset: 11,
            base_offset: 10,
        }) => {}
        other => panic!("expected ReplicaAppendBehindLogEnd, got {other:?}"),
    }
    let overlapping = [at(11, 3), at(12, 1)].concat();
    match follower.append_replicated(&overlapping) {
        Err(StorageError::CorruptBatch {
            defect:
                BatchDefect::OffsetNotIncreasing {
                    found: 12,
                    expected_min: 14,
                },
            ..
        }) => {}
        other => panic!("expected OffsetNotIncreasing, got {other:?}"),
    }
    let mut damaged = at(11, 1);
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(matches!(
        follower.append_replicated(&damaged),
        Err(StorageError::CorruptBatch {
            defect: BatchDefect::CrcMismatch { .. },
            ..
        })
    ));
    assert!(matches!(
        follower.append_replicated(&[]),
        Err(StorageError::EmptyAppend)
    ));
    assert_eq!(follower.log_end_offset(), 11, "nothing refused was written");
    Ok(())
}

#[test]
fn truncation_at_the_log_end_still_drops_an_epoch_started_there() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = leader_log(dir.path())?;
    // Led epoch 6 without writing: it starts at the log end, 20.
    log.set_leader_epoch(6)?;
    assert_eq!(log.epoch_entries(), entries(&[(1, 0), (4, 8), (6, 20)]));
    log.truncate_to(25)?;
    assert_eq!(
        log.epoch_entries(),
        entries(&[(1, 0), (4, 8), (6, 20)]),
        "past the end: no epoch starts there"
    );
    log.truncate_to(20)?;
    assert_eq!(log.log_end_offset(), 20, "no record is cut");
    assert_eq!(log.epoch_entries(), entries(&[(1, 0), (4, 8)]));
    assert_eq!(log.latest_epoch(), Some(4));
    assert_eq!(log.end_offset_for_epoch(4), (4, 20));
    // Read from its file, not by reopening: open fits the cache to the log end itself.
    let persisted = LeaderEpochCache::read(&Storage::real(), dir.path())?;
    assert_eq!(
        persisted.entries(),
        entries(&[(1, 0), (4, 8)]),
        "the cut epoch cache is persisted"
    );
    Ok(())
}

/// `(base offset, last offset)` of every batch of the log.
fn offsets(log: &PartitionLog) -> Vec<(i64, i64)> {
    batches_from(log, log.log_start_offset())
        .iter()
        .map(|b| {
            let h = BatchHeader::parse(b).unwrap();
            (h.base_offset, h.last_offset())
        })
        .collect()
}

#[test]
fn truncation_cuts_records_indexes_producer_state_and_epochs() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Offsets: producer 9 at 0-1, 2-3, 4-5, 6-7 (epoch 1); 8-10, 11-13, 14-16, 17-19 (epoch 4).
    let log = leader_log(dir.path())?;
    let segments_before = log.segment_count();
    log.flush(i64::MAX)?;
    log.truncate_to(20)?;
    log.truncate_to(25)?;
    assert_eq!(
        log.log_end_offset(),
        20,
        "at or past the end: nothing to cut"
    );

    log.truncate_to(14)?;
    assert_eq!(log.log_end_offset(), 14);
    assert_eq!(log.flushed_offset(), 14);
    assert_eq!(offsets(&log).last(), Some(&(11, 13)));
    assert_eq!(log.epoch_entries(), entries(&[(1, 0), (4, 8)]));
    assert_eq!(log.end_offset_for_epoch(4), (4, 14));

    // Inside a batch, the whole batch goes.
    log.truncate_to(12)?;
    assert_eq!(log.log_end_offset(), 11);
    log.truncate_to(8)?;
    assert_eq!(log.epoch_entries(), entries(&[(1, 0)]));
    log.truncate_to(4)?;
    assert_eq!(offsets(&log), vec![(0, 1), (2, 3)]);
    assert!(segments_before > 1);
    assert_eq!(log.segment_count(), 1, "later segments are deleted");
    // Producer state is as of offset 4: its batch 2-3 is a duplicate, 4-5 is new again.
    assert_eq!(
        log.append(&producer_batch(9, 2, 2))?,
        AppendOutcome::Duplicate {
            base_offset: 2,
            last_offset: 3
        }
    );
    log.set_leader_epoch(6)?;
    assert_eq!(
        log.append(&producer_batch(9, 4, 2))?,
        AppendOutcome::Appended {
            base_offset: 4,
            last_offset: 5
        }
    );
    assert_eq!(log.epoch_entries(), entries(&[(1, 0), (6, 4)]));
    assert!(!dir
        .path()
        .join(crate::checkpoint::TRUNCATION_FILE_NAME)
        .exists());
    log.close()?;
    drop(log);
    let log = open(dir.path());
    assert_eq!(offsets(&log), vec![(0, 1), (2, 3), (4, 5)]);
    assert_eq!(log.epoch_entries(), entries(&[(1, 0), (6, 4)]));
    Ok(())
}

#[test]
fn a_reset_starts_the_log_afresh_and_truncation_stays_above_its_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = leader_log(dir.path())?;
    log.reset_to(1_000)?;
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (1_000, 1_000, 1)
    );
    assert!(log.epoch_entries().is_empty());
    assert_eq!(log.read(1_000, 1 << 20, i64::MAX)?.len(), 0);
    // Producer 9 is forgotten: its old sequence is appended, not a duplicate.
    assert_eq!(
        log.append(&producer_batch(9, 0, 2))?,
        AppendOutcome::Appended {
            base_offset: 1_000,
            last_offset: 1_001
        }
    );
    match log.truncate_to(999) {
        Err(StorageError::OffsetOutOfRange { offset: 999, .. }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert!(matches!(
        log.reset_to(-1),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // A reset below the current end is allowed too (the log is emptied either way).
    log.reset_to(500)?;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    log.append(&batch(2))?;
    drop(log);
    let log = open(dir.path());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 502));
    assert_eq!(offsets(&log), vec![(500, 501)]);
    let names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert_eq!(names, vec![crate::segment::offset_file_name(500, "log")]);
    Ok(())
}

#[test]
fn the_high_watermark_checkpoint_round_trips_and_ignores_damage() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    assert_eq!(log.read_high_watermark(), None);
    log.write_high_watermark(42)?;
    assert_eq!(log.read_high_watermark(), Some(42));
    log.write_high_watermark(7)?;
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.read_high_watermark(), Some(7));
    let path = dir.path().join(crate::checkpoint::HIGH_WATERMARK_FILE_NAME);
    let mut bytes = std::fs::read(&path)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&path, bytes)?;
    assert_eq!(log.read_high_watermark(), None);
    Ok(())
}

#[test]
fn moving_the_log_start_moves_the_first_epoch_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = leader_log(dir.path())?;
    assert_eq!(log.delete_records(10, 20)?, 10);
    assert_eq!(log.epoch_entries(), entries(&[(4, 10)]));
    assert_eq!(log.end_offset_for_epoch(1), (1, 10));
    drop(log);
    assert_eq!(open(dir.path()).epoch_entries(), entries(&[(4, 10)]));
    Ok(())
}

/// A step of the random leader/follower workload.
#[derive(Debug, Clone)]
enum Step {
    /// The leader appends a batch of `records` records with `value_bytes`-byte values.
    Append { records: i32, value_bytes: usize },
    /// The leader moves to a new epoch.
    NewEpoch,
    /// The leader's log is truncated at the batch `pick` chooses (inside it when odd).
    Truncate { pick: u8 },
    /// The leader is reopened (and told its epoch again).
    Reopen,
    /// The follower catches up: truncates to where it agrees with the leader, then appends
    /// the rest replicated.
    Replicate,
}

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    let step = prop_oneof![
        6 => (1i32..4, 0usize..60).prop_map(|(records, value_bytes)| Step::Append { records, value_bytes }),
        1 => Just(Step::NewEpoch),
        2 => any::<u8>().prop_map(|pick| Step::Truncate { pick }),
        1 => Just(Step::Reopen),
        2 => Just(Step::Replicate),
    ];
    proptest::collection::vec(step, 1..50)
}

/// The epoch cache a log holding exactly `batches` (in order) has when every epoch was
/// started by its first batch.
fn epochs_of(batches: &[Vec<u8>]) -> Vec<EpochEntry> {
    let mut cache = crate::leader_epoch::LeaderEpochCache::new();
    for b in batches {
        let h = BatchHeader::parse(b).unwrap();
        cache.assign(h.partition_leader_epoch, h.base_offset);
    }
    cache.entries().to_vec()
}

/// Runs `steps`, checking the leader against a model after each, and the follower against
/// the leader after each catch-up.
fn run_replica_workload(steps: &[Step]) -> Result<(), TestError> {
    let (leader_dir, follower_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut leader = open(leader_dir.path());
    let follower = open(follower_dir.path());
    let mut epoch = 0;
    leader.set_leader_epoch(epoch)?;
    let mut model: Vec<Vec<u8>> = Vec::new();
    let mut model_epochs = crate::leader_epoch::LeaderEpochCache::new();
    model_epochs.assign(epoch, 0);
    let end_of = |model: &[Vec<u8>]| {
        model
            .last()
            .map_or(0, |b| BatchHeader::parse(b).unwrap().last_offset() + 1)
    };
    for step in steps {
        match step {
            Step::Append {
                records,
                value_bytes,
            } => {
                let mut bytes = build_batch(*records, *value_bytes, ProducerFields::NONE);
                let base = end_of(&model);
                assert_eq!(
                    leader.append(&bytes)?,
                    AppendOutcome::Appended {
                        base_offset: base,
                        last_offset: base + i64::from(*records) - 1
                    }
                );
                set_base_offset(&mut bytes, base)?;
                set_partition_leader_epoch(&mut bytes, epoch)?;
                model_epochs.assign(epoch, base);
                model.push(bytes);
            }
            Step::NewEpoch => {
                epoch += 1;
                leader.set_leader_epoch(epoch)?;
                model_epochs.assign(epoch, end_of(&model));
            }
            Step::Truncate { pick } => {
                let index = usize::from(*pick / 2) % (model.len() + 1);
                let (offset, keep) = match model.get(index) {
                    Some(b) => {
                        let h = BatchHeader::parse(b)?;
                        let inside = pick % 2 == 1 && h.last_offset() > h.base_offset;
                        (h.base_offset + i64::from(inside), index)
                    }
                    None => (end_of(&model), model.len()),
                };
                leader.truncate_to(offset)?;
                if offset < end_of(&model) {
                    model.truncate(keep);
                }
                // Even at the log end: an epoch starting there goes (Kafka's truncateTo).
                model_epochs.truncate_from_end(end_of(&model));
                // A truncated log stamps no epoch (only followers truncate): leading on takes
                // a `set_leader_epoch`, as a broker's new leadership does.
                leader.set_leader_epoch(epoch)?;
                model_epochs.assign(epoch, end_of(&model));
            }
            Step::Reopen => {
                drop(leader);
                leader = open(leader_dir.path());
                leader.set_leader_epoch(epoch)?;
                model_epochs.assign(epoch, end_of(&model));
            }
            Step::Replicate => {
                let theirs = batches_from(&follower, 0);
                let agreed = theirs
                    .iter()
                    .zip(&model)
                    .take_while(|(a, b)| a == b)
                    .count();
                let agreed_end = end_of(&model[..agreed]);
                follower.truncate_to(agreed_end)?;
                if let Some(rest) = model.get(agreed..).filter(|r| !r.is_empty()) {
                    follower.append_replicated(&rest.concat())?;
                }
                if batches_from(&follower, 0) != model {
                    return Err("the follower's log differs from the leader's".into());
                }
                if follower.epoch_entries() != epochs_of(&model) {
                    return Err(format!(
                        "follower epochs {:?}, batches say {:?}",
                        follower.epoch_entries(),
                        epochs_of(&model)
                    )
                    .into());
                }
            }
        }
        if batches_from(&leader, 0) != model {
            return Err(format!("after {step:?} the leader's log differs from the model").into());
        }
        if leader.epoch_entries() != model_epochs.entries() {
            return Err(format!(
                "after {step:?} leader epochs {:?}, model {:?}",
                leader.epoch_entries(),
                model_epochs.entries()
            )
            .into());
        }
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 16, ..proptest::prelude::ProptestConfig::default() })]

    /// Random appends, epochs, truncations and reopens of a leader, with a follower catching up
    /// by truncation and replicated appends: the leader matches a model, the follower matches
    /// the leader byte for byte, and its epoch cache is what the batches say.
    #[test]
    fn a_follower_converges_on_its_leader(steps in steps()) {
        if let Err(error) = run_replica_workload(&steps) {
            proptest::prop_assert!(false, "{}", error);
        }
    }
}

#[test]
fn truncating_at_a_log_start_inside_a_batch_keeps_the_end_at_the_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = leader_log(dir.path())?;
    // Batch 8..=10 straddles the new start.
    assert_eq!(log.delete_records(9, 20)?, 9);
    log.truncate_to(9)?;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (9, 9));
    assert_eq!(log.read(9, 1 << 20, i64::MAX)?.len(), 0);
    let outcome = log.append(&batch(1))?;
    assert_eq!(
        outcome,
        AppendOutcome::Appended {
            base_offset: 9,
            last_offset: 9
        }
    );
    drop(log);
    let log = open(dir.path());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (9, 10));
    assert_eq!(offsets(&log), vec![(9, 9)]);
    Ok(())
}

#[test]
fn the_cleaner_stays_below_the_checkpointed_high_watermark() -> TestResult {
    use crate::test_support::{new_batch, TestReader};
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    // The same key over and over, across several segments.
    for n in 0..30 {
        let value = format!("value-{n:04}");
        log.append(&new_batch(&[(1_000 + n, Some("key"), Some(&value))]))?;
    }
    log.flush(i64::MAX)?;
    assert!(log.segment_count() > 2);
    let policy = crate::CompactionPolicy {
        min_cleanable_dirty_ratio: 0.0,
        ..crate::CompactionPolicy::default()
    };
    log.write_high_watermark(0)?;
    assert_eq!(
        log.clean(&policy, &TestReader, 1_000_000)?,
        None,
        "nothing below 0"
    );
    assert_eq!(
        log.size_bytes(),
        batches_from(&log, 0).concat().len() as u64
    );
    // Reopened, the bound is the checkpoint's.
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.clean(&policy, &TestReader, 1_000_000)?, None);
    log.write_high_watermark(log.log_end_offset())?;
    let stats = log
        .clean(&policy, &TestReader, 1_000_000)?
        .expect("cleaned");
    assert!(stats.records_removed > 0);
    // A truncation lowers the bound to the cut again.
    log.truncate_to(log.log_end_offset() - 1)?;
    for n in 30..60 {
        let value = format!("value-{n:04}");
        log.append(&new_batch(&[(1_000 + n, Some("key"), Some(&value))]))?;
    }
    let before = log.size_bytes();
    if let Some(stats) = log.clean(&policy, &TestReader, 1_000_000)? {
        assert_eq!(stats.records_removed, 0, "nothing past the cut is cleaned");
    }
    assert_eq!(log.size_bytes(), before);
    Ok(())
}

/// A leader's append is bound to its epoch: once the log takes a replicated batch or a
/// truncation (it follows another leader now), an append checked against the old leadership
/// is refused instead of landing between the new leader's batches.
#[test]
fn a_leader_append_is_refused_once_the_log_follows_another_leader() -> TestResult {
    let (leader_dir, follower_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let leader = leader_log(leader_dir.path())?;
    let replica = open(follower_dir.path());
    replica.set_leader_epoch(3)?;
    replica.append_as_leader(&batch(2), None, CrcCheck::Verify, 3)?;
    // Another epoch than the one the log stamps is refused outright.
    assert!(matches!(
        replica.append_as_leader(&batch(2), None, CrcCheck::Verify, 2),
        Err(StorageError::NotLeaderAtEpoch {
            epoch: 2,
            current: Some(3)
        })
    ));
    replica.truncate_to(0)?;
    assert!(matches!(
        replica.append_as_leader(&batch(2), None, CrcCheck::Verify, 3),
        Err(StorageError::NotLeaderAtEpoch {
            epoch: 3,
            current: None
        })
    ));
    replica.append_replicated(&batches_from(&leader, 0).concat())?;
    assert!(matches!(
        replica.append_as_leader(&batch(2), None, CrcCheck::Verify, 4),
        Err(StorageError::NotLeaderAtEpoch { current: None, .. })
    ));
    assert_eq!(batches_from(&replica, 0), batches_from(&leader, 0));
    // Leading again (a new epoch) allows appends under it.
    replica.set_leader_epoch(5)?;
    replica.append_as_leader(&batch(2), None, CrcCheck::Verify, 5)?;
    assert_eq!(replica.log_end_offset(), leader.log_end_offset() + 2);
    Ok(())
}
