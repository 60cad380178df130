//! The crash matrix (issue #6): build a log of several batches over several segments, stop it
//! cleanly or not, damage its files the ways a crash or a bad disk does, reopen it and check
//! what recovery promises (docs/storage.md, "Recovery: what is checked and what happens"):
//! the log ends at the end of the last valid batch, every batch before it reads back byte for
//! byte, both indexes are whole again (every offset is found by offset and by timestamp),
//! appends continue at the right offset, and the result survives another unclean restart.
//!
//! Cases already covered in `partition_log_tests` (a torn tail at every byte of a one-segment
//! log, a flipped bit in the last batch, deleted or damaged offset indexes) are not repeated.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch_header::{
    set_base_offset, verify_crc, BatchHeader, ATTRIBUTES_AT, BATCH_LENGTH_AT, CRC_AT,
    HEADER_SIZE_BYTES, LAST_OFFSET_DELTA_AT, MAGIC_AT, MAX_TIMESTAMP_AT, RECORDS_COUNT_AT,
};
use crate::checkpoint::{
    RecoveryCheckpoint, CHECKPOINT_FILE_NAME, LOG_START_FILE_NAME, TEMP_SUFFIX,
};
use crate::cleaner::{CLEANED_SUFFIX, SWAP_SUFFIX};
use crate::error::BatchDefect;
use crate::offset_index::{OffsetIndex, ENTRY_SIZE_BYTES};
use crate::partition_log::{LogConfig, PartitionLog, TimestampOffset};
use crate::producer_state::SNAPSHOT_EXTENSION;
use crate::recovery::PAGE_SIZE_BYTES;
use crate::segment::{
    offset_file_name, LogSegment, INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION,
};
use crate::test_support::{appended, log_path, new_batch, TestError, TestReader, TestResult};
use crate::time_index::{TimeIndex, TIME_ENTRY_SIZE_BYTES};
use crate::StorageError;

/// Small segments, so the fixture spans several; an index entry for every batch but the
/// first of a segment (the interval is below the smallest batch).
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 512,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

/// Timestamp of the record at `offset`. Strictly increasing, so a lookup by the timestamp of
/// any offset must find exactly that offset.
fn timestamp_of(offset: i64) -> i64 {
    1_000 + 10 * offset
}

/// A batch of `records` records starting at `first_offset`, keyed by offset, with
/// `value_bytes`-byte values and per-record timestamps; base offset 0 until appended.
fn timed_batch(first_offset: i64, records: i64, value_bytes: usize) -> Vec<u8> {
    let keys: Vec<String> = (first_offset..first_offset + records)
        .map(|offset| format!("key-{offset}"))
        .collect();
    let value = "v".repeat(value_bytes);
    let spec: Vec<(i64, Option<&str>, Option<&str>)> = keys
        .iter()
        .zip(first_offset..)
        .map(|(key, offset)| {
            (
                timestamp_of(offset),
                Some(key.as_str()),
                Some(value.as_str()),
            )
        })
        .collect();
    new_batch(&spec)
}

/// One batch as written: its offsets, its exact bytes, its segment and position there.
#[derive(Debug, Clone)]
struct Written {
    base_offset: i64,
    last_offset: i64,
    bytes: Vec<u8>,
    /// Base offset of the segment holding it.
    segment: i64,
    /// Byte position in that segment's `.log`.
    position: u64,
}

/// Appends a [`timed_batch`] at the log end offset and describes it as written.
fn append_timed(
    log: &PartitionLog,
    records: i64,
    value_bytes: usize,
) -> Result<Written, TestError> {
    let end = log.log_end_offset();
    let mut bytes = timed_batch(end, records, value_bytes);
    let (base_offset, last_offset) = appended(log.append(&bytes)?);
    assert_eq!(base_offset, end, "appends continue at the log end offset");
    set_base_offset(&mut bytes, base_offset)?;
    // Appends go to the last segment (after rolling, if they did).
    let active = Arc::clone(log.segments_snapshot().last().unwrap());
    Ok(Written {
        base_offset,
        last_offset,
        segment: active.base_offset(),
        position: active.size_bytes() - bytes.len() as u64,
        bytes,
    })
}

/// How the fixture's log stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    /// `close`: the checkpoint covers everything; open verifies nothing.
    Clean,
    /// Dropped without `close` (a crash): the checkpoint, written at the last roll, names the
    /// start of the active segment, so the active segment is verified batch by batch.
    Unclean,
    /// A crash and no (usable) checkpoint: every segment is verified.
    NoCheckpoint,
}

const FIXTURE_BATCHES: i64 = 9;

/// A log of `FIXTURE_BATCHES` batches (1 to 3 records) over at least 3 segments of at least 3
/// batches each, in a temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
    batches: Vec<Written>,
}

impl Fixture {
    fn build(shutdown: Shutdown) -> Result<Fixture, TestError> {
        let dir = tempfile::tempdir()?;
        let mut batches = Vec::new();
        {
            let log = PartitionLog::open(dir.path(), config())?;
            for i in 0..FIXTURE_BATCHES {
                batches.push(append_timed(&log, 1 + i % 3, 20 + (i as usize * 7) % 25)?);
            }
            match shutdown {
                Shutdown::Clean => log.close()?,
                // The last acknowledgement's fsync also finished the last roll.
                Shutdown::Unclean | Shutdown::NoCheckpoint => log.flush(log.log_end_offset())?,
            }
        }
        if shutdown == Shutdown::NoCheckpoint {
            std::fs::remove_file(dir.path().join(CHECKPOINT_FILE_NAME))?;
        }
        let fixture = Fixture { dir, batches };
        let segments = fixture.segments();
        assert!(segments.len() >= 3, "segments: {segments:?}");
        for &segment in &segments {
            assert!(fixture.in_segment(segment).len() >= 3, "segment {segment}");
        }
        Ok(fixture)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Base offsets of the segments, ascending.
    fn segments(&self) -> Vec<i64> {
        let mut bases: Vec<i64> = self.batches.iter().map(|b| b.segment).collect();
        bases.dedup();
        bases
    }

    fn in_segment(&self, segment: i64) -> Vec<Written> {
        self.batches
            .iter()
            .filter(|b| b.segment == segment)
            .cloned()
            .collect()
    }

    fn last_segment(&self) -> i64 {
        self.batches.last().unwrap().segment
    }

    /// The batches except `dropped` (by base offset).
    fn without(&self, dropped: &Written) -> Vec<Written> {
        self.batches
            .iter()
            .filter(|b| b.base_offset != dropped.base_offset)
            .cloned()
            .collect()
    }

    fn log_file(&self, segment: i64) -> PathBuf {
        log_path(self.path(), segment)
    }

    fn index_file(&self, segment: i64, extension: &str) -> PathBuf {
        self.path().join(offset_file_name(segment, extension))
    }

    /// XORs `mask` into byte `at` of `batch`.
    fn flip(&self, batch: &Written, at: usize, mask: u8) -> TestResult {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.log_file(batch.segment))?;
        let position = batch.position + at as u64;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, position)?;
        byte[0] ^= mask;
        file.write_all_at(&byte, position)?;
        Ok(())
    }
}

fn set_len(path: &Path, len: u64) -> TestResult {
    OpenOptions::new().write(true).open(path)?.set_len(len)?;
    Ok(())
}

fn append_bytes(path: &Path, bytes: &[u8]) -> TestResult {
    let file = OpenOptions::new().write(true).open(path)?;
    file.write_all_at(bytes, file.metadata()?.len())?;
    Ok(())
}

/// Base offsets of the `.log` files in `dir`, ascending.
fn log_files_in(dir: &Path) -> Result<Vec<i64>, TestError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == LOG_EXTENSION) {
            bases.push(path.file_stem().unwrap().to_str().unwrap().parse()?);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Every file of `dir` by name, with its contents unless it is a derived index (recovery may
/// rewrite those even when it then refuses to open).
fn files_except_indexes(dir: &Path) -> Result<BTreeMap<String, Option<Vec<u8>>>, TestError> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let derived = path
            .extension()
            .is_some_and(|e| e == INDEX_EXTENSION || e == TIME_INDEX_EXTENSION);
        let contents = if derived {
            None
        } else {
            Some(std::fs::read(&path)?)
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        files.insert(name, contents);
    }
    Ok(files)
}

/// `len` pseudo-random bytes (splitmix64) from `seed`.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// Seed of the garbage written into damaged files: `$RUNNEL_SEED` if set, else a fixed one.
fn seed() -> u64 {
    std::env::var("RUNNEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed)
}

/// Checks that `log` holds exactly `expected` (see the module docs).
fn check_log(log: &PartitionLog, dir: &Path, expected: &[Written]) -> TestResult {
    let last = expected.last().ok_or("no batch expected")?;
    let end = last.last_offset + 1;
    assert_eq!(log.log_end_offset(), end, "log end offset");
    let segments = log.segments_snapshot();
    let bases: Vec<i64> = segments.iter().map(|s| s.base_offset()).collect();
    assert_eq!(log_files_in(dir)?, bases, "segment files on disk");
    assert!(
        expected.iter().all(|b| bases.contains(&b.segment)),
        "a segment holding expected batches is gone: {bases:?}"
    );
    for segment in &segments {
        let in_segment: Vec<&Written> = expected
            .iter()
            .filter(|b| b.segment == segment.base_offset())
            .collect();
        let raw: Vec<u8> = in_segment.iter().flat_map(|b| b.bytes.clone()).collect();
        assert!(
            std::fs::read(segment.log_path())? == raw,
            "{} is not exactly its expected batches",
            segment.log_path().display()
        );
        check_indexes(dir, segment, in_segment.len())?;
    }
    for batch in expected {
        for offset in batch.base_offset..=batch.last_offset {
            let read = log.read(offset, 1, i64::MAX)?;
            assert!(read == batch.bytes, "read at offset {offset}");
            let timestamp = timestamp_of(offset);
            assert_eq!(
                log.offset_for_timestamp(timestamp, &TestReader)?,
                Some(TimestampOffset { offset, timestamp }),
                "lookup by the timestamp of offset {offset}"
            );
        }
    }
    assert_eq!(
        log.offset_for_timestamp(timestamp_of(end), &TestReader)?,
        None
    );
    assert_eq!(
        log.max_timestamp_offset(&TestReader)?,
        Some(TimestampOffset {
            offset: last.last_offset,
            timestamp: timestamp_of(last.last_offset),
        })
    );
    Ok(())
}

/// Checks the `.index` and `.timeindex` of `segment` as the next open will read them: whole,
/// consistent with the log, and not empty when the segment holds enough batches to need
/// entries.
fn check_indexes(dir: &Path, segment: &LogSegment, batch_count: usize) -> TestResult {
    let base = segment.base_offset();
    let size = segment.size_bytes();
    let index_bytes = config().segment_index_bytes as usize;
    let index = OffsetIndex::open(
        &crate::io::Storage::real(),
        segment.index().path(),
        index_bytes / ENTRY_SIZE_BYTES,
    )?;
    assert!(
        index.is_sane(size, |entry| matches!(
            segment.read_header_at(u64::from(entry.position), size),
            Ok(Ok(header)) if header.base_offset == base + i64::from(entry.relative_offset)
        )),
        "offset index of segment {base}"
    );
    assert_eq!(index.len(), segment.index().len(), "segment {base}");
    assert_eq!(index.len() > 0, batch_count > 1, "segment {base}");
    let time_path = dir.join(offset_file_name(base, TIME_INDEX_EXTENSION));
    let time_index = TimeIndex::open(
        &crate::io::Storage::real(),
        &time_path,
        (index_bytes / TIME_ENTRY_SIZE_BYTES).max(2),
    )?;
    let relative_end = u64::try_from(segment.next_offset() - base)?;
    assert!(
        time_index.is_sane(size == 0, relative_end),
        "time index of segment {base}"
    );
    Ok(())
}

/// Opens the damaged log and checks it holds exactly `expected`; appends a batch, which must
/// get the next offset; drops the log without closing it, reopens and checks again.
fn reopen_and_check(dir: &Path, expected: &[Written]) -> TestResult {
    let log = PartitionLog::open(dir, config())?;
    check_log(&log, dir, expected)?;
    let end = log.log_end_offset();
    let mut grown = expected.to_vec();
    grown.push(append_timed(&log, 2, 10)?);
    assert_eq!(grown.last().unwrap().last_offset, end + 1);
    drop(log);
    let log = PartitionLog::open(dir, config())?;
    check_log(&log, dir, &grown)
}

/// Opens the log expecting `CorruptSegment` at `batch`, with a defect `defect_is` accepts,
/// twice (the first attempt must not have changed anything the second sees), and checks no
/// file was cut, deleted or written other than the derived indexes.
fn expect_mid_log_corruption(
    fixture: &Fixture,
    batch: &Written,
    defect_is: DefectCheck,
    case: &str,
) -> TestResult {
    let before = files_except_indexes(fixture.path())?;
    for attempt in 0..2 {
        match PartitionLog::open(fixture.path(), config()) {
            Err(StorageError::CorruptSegment {
                path,
                position,
                defect,
            }) => {
                assert_eq!(path, fixture.log_file(batch.segment), "{case}");
                assert_eq!(position, batch.position, "{case}");
                assert!(defect_is(&defect), "{case}: {defect:?}");
            }
            other => panic!("{case}, attempt {attempt}: expected CorruptSegment, got {other:?}"),
        }
        assert!(
            files_except_indexes(fixture.path())? == before,
            "{case}: recovery changed files before refusing to open"
        );
    }
    Ok(())
}

/// Accepts the defect a case expects.
type DefectCheck = fn(&BatchDefect) -> bool;

fn is_crc_mismatch(defect: &BatchDefect) -> bool {
    matches!(defect, BatchDefect::CrcMismatch { .. })
}

fn is_bad_magic(defect: &BatchDefect) -> bool {
    matches!(defect, BatchDefect::UnsupportedMagic(_))
}

fn is_negative_field(defect: &BatchDefect) -> bool {
    matches!(defect, BatchDefect::NegativeField { .. })
}

// Row 1: the last batch of the last segment cut at each class of byte boundary.

#[test]
fn cut_in_the_last_batch_of_the_last_segment_loses_only_that_batch() -> TestResult {
    for shutdown in [Shutdown::Clean, Shutdown::Unclean, Shutdown::NoCheckpoint] {
        let len = Fixture::build(shutdown)?
            .batches
            .last()
            .unwrap()
            .bytes
            .len();
        // Inside the header (1 byte, mid-length field, before and after the CRC, 1 byte short),
        // inside the records, the whole batch (nothing lost), nothing of it (the previous end).
        let cuts = [
            1,
            8,
            12,
            17,
            21,
            40,
            60,
            61,
            62,
            len / 2 + 30,
            len - 1,
            len,
            0,
        ];
        for kept_bytes in cuts {
            let case = format!("{shutdown:?}, {kept_bytes} of {len} bytes kept");
            let fixture = Fixture::build(shutdown)?;
            let last = fixture.batches.last().unwrap().clone();
            set_len(
                &fixture.log_file(last.segment),
                last.position + kept_bytes as u64,
            )?;
            let expected = if kept_bytes == len {
                fixture.batches.clone()
            } else {
                fixture.without(&last)
            };
            reopen_and_check(fixture.path(), &expected).map_err(|e| format!("{case}: {e}"))?;
        }
    }
    Ok(())
}

// Row 2: zeros where the tail should be.

#[test]
fn zeros_after_the_last_batch_are_cut_off() -> TestResult {
    // A file system that extended the file but never wrote the data: from less than a length
    // field to more than a page.
    for zeros in [1, 11, 12, 60, 61, 200, 5_000] {
        let fixture = Fixture::build(Shutdown::Unclean)?;
        append_bytes(&fixture.log_file(fixture.last_segment()), &vec![0; zeros])?;
        reopen_and_check(fixture.path(), &fixture.batches)
            .map_err(|e| format!("{zeros} zeros: {e}"))?;
    }
    Ok(())
}

#[test]
fn zeroed_last_batch_is_cut_off() -> TestResult {
    for extra_zeros in [0, 100] {
        let fixture = Fixture::build(Shutdown::Unclean)?;
        let last = fixture.batches.last().unwrap().clone();
        let file = OpenOptions::new()
            .write(true)
            .open(fixture.log_file(last.segment))?;
        file.write_all_at(&vec![0; last.bytes.len() + extra_zeros], last.position)?;
        reopen_and_check(fixture.path(), &fixture.without(&last))
            .map_err(|e| format!("{extra_zeros} extra zeros: {e}"))?;
    }
    Ok(())
}

// Row 3: a flipped bit in the last batch, by header field and in the records, in a log of
// several segments (the one-segment case is `flipped_bit_in_last_batch_is_cut_off`).

#[test]
fn flipped_bit_in_the_last_batch_of_the_last_segment_is_cut_off() -> TestResult {
    let len = Fixture::build(Shutdown::Unclean)?
        .batches
        .last()
        .unwrap()
        .bytes
        .len();
    // The length field (its last byte: the batch seems one byte longer or shorter; its second:
    // it runs far past the end), magic, CRC, attributes, the sign bits of lastOffsetDelta and
    // recordsCount, a timestamp, the records. Not the base offset or leader epoch: they are
    // outside the CRC (Kafka's format), so a flip there is not detected.
    let flips = [
        (BATCH_LENGTH_AT + 1, 0x10),
        (BATCH_LENGTH_AT + 3, 0x01),
        (MAGIC_AT, 0x01),
        (CRC_AT, 0x80),
        (ATTRIBUTES_AT + 1, 0x02),
        (LAST_OFFSET_DELTA_AT, 0x80),
        (MAX_TIMESTAMP_AT + 5, 0x04),
        (RECORDS_COUNT_AT, 0x80),
        (HEADER_SIZE_BYTES, 0x01),
        (len - 1, 0x01),
    ];
    for (at, mask) in flips {
        let fixture = Fixture::build(Shutdown::Unclean)?;
        let last = fixture.batches.last().unwrap().clone();
        fixture.flip(&last, at, mask)?;
        reopen_and_check(fixture.path(), &fixture.without(&last))
            .map_err(|e| format!("flip {mask:#x} at byte {at}: {e}"))?;
    }
    Ok(())
}

// Row 4: a flipped bit in a batch followed by intact ones is reported, not cut off.

#[test]
fn flipped_bit_in_a_middle_batch_of_the_active_segment_is_reported() -> TestResult {
    let flips: [(usize, u8, DefectCheck); 5] = [
        (MAGIC_AT, 0x01, is_bad_magic),
        (CRC_AT, 0x80, is_crc_mismatch),
        (ATTRIBUTES_AT + 1, 0x02, is_crc_mismatch),
        (RECORDS_COUNT_AT, 0x80, is_negative_field),
        (HEADER_SIZE_BYTES + 5, 0x01, is_crc_mismatch),
    ];
    for (at, mask, defect_is) in flips {
        let case = format!("flip {mask:#x} at byte {at}");
        let fixture = Fixture::build(Shutdown::Unclean)?;
        let middle = fixture.in_segment(fixture.last_segment())[1].clone();
        fixture.flip(&middle, at, mask)?;
        expect_mid_log_corruption(&fixture, &middle, defect_is, &case)?;
        // The operator repairs the byte: everything is there.
        fixture.flip(&middle, at, mask)?;
        reopen_and_check(fixture.path(), &fixture.batches).map_err(|e| format!("{case}: {e}"))?;
    }
    Ok(())
}

#[test]
fn flipped_bit_in_an_unverified_closed_segment_is_reported_and_nothing_deleted() -> TestResult {
    // Without a checkpoint every segment is verified. A bad batch in the middle of the first
    // segment has an intact batch right after it; a bad last batch of the first segment has
    // the next segment's first batch after it. Recovery used to cut the log there and delete
    // every later segment.
    for which in ["middle", "last"] {
        let fixture = Fixture::build(Shutdown::NoCheckpoint)?;
        let first = fixture.in_segment(fixture.segments()[0]);
        let bad = if which == "middle" {
            first[1].clone()
        } else {
            first.last().unwrap().clone()
        };
        fixture.flip(&bad, HEADER_SIZE_BYTES, 0x40)?;
        expect_mid_log_corruption(&fixture, &bad, is_crc_mismatch, which)?;
        fixture.flip(&bad, HEADER_SIZE_BYTES, 0x40)?;
        reopen_and_check(fixture.path(), &fixture.batches).map_err(|e| format!("{which}: {e}"))?;
    }
    Ok(())
}

#[test]
fn lost_writes_inside_a_middle_batch_are_a_torn_tail() -> TestResult {
    // A power failure loses unsynced pages in any order, leaving zeros with later pages
    // intact: a whole page inside a batch, or the bytes of a batch's header, or a whole batch.
    // That is crash damage, not corruption: cut there.
    let dir = tempfile::tempdir()?;
    let positions = {
        let log = PartitionLog::open(dir.path(), LogConfig::default())?;
        let mut positions = Vec::new();
        for (records, value_bytes) in [(1, 10), (1, 10_000), (2, 10), (1, 10)] {
            positions.push(log.size_bytes());
            log.append(&timed_batch(log.log_end_offset(), records, value_bytes))?;
        }
        positions
    };
    let path = log_path(dir.path(), 0);
    let original = std::fs::read(&path)?;
    let page = usize::try_from(positions[1].next_multiple_of(PAGE_SIZE_BYTES))?;
    let damages: [(&str, usize, usize); 3] = [
        (
            "a zero page inside the big batch",
            page,
            PAGE_SIZE_BYTES as usize,
        ),
        (
            "the big batch's header zeroed",
            usize::try_from(positions[1])?,
            HEADER_SIZE_BYTES,
        ),
        (
            "a small batch zeroed",
            usize::try_from(positions[2])?,
            usize::try_from(positions[3] - positions[2])?,
        ),
    ];
    // Each case starts from the original file and no checkpoint (the whole file unverified).
    let reset = |contents: &[u8]| -> TestResult {
        std::fs::write(&path, contents)?;
        match std::fs::remove_file(dir.path().join(CHECKPOINT_FILE_NAME)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    };
    for (case, from, len) in damages {
        let mut damaged = original.clone();
        damaged[from..from + len].fill(0);
        reset(&damaged)?;
        let cut_at = if from < usize::try_from(positions[2])? {
            positions[1]
        } else {
            positions[2]
        };
        let log = PartitionLog::open(dir.path(), LogConfig::default())?;
        assert_eq!(std::fs::metadata(&path)?.len(), cut_at, "{case}");
        assert!(
            std::fs::read(&path)?[..] == original[..cut_at as usize],
            "{case}"
        );
        assert_eq!(
            log.log_end_offset(),
            if cut_at == positions[1] { 1 } else { 2 }
        );
    }
    // The same big batch with one flipped bit instead of a lost page is corruption.
    let mut damaged = original.clone();
    damaged[page + 100] ^= 0x01;
    reset(&damaged)?;
    assert!(matches!(
        PartitionLog::open(dir.path(), LogConfig::default()),
        Err(StorageError::CorruptSegment { position, .. }) if position == positions[1]
    ));
    assert!(std::fs::read(&path)? == damaged, "nothing was cut");
    Ok(())
}

#[test]
fn flipped_bit_below_the_checkpoint_is_not_scanned_at_open() -> TestResult {
    // By design (fast start-up): fsynced data below the recovery checkpoint is not re-read at
    // open. The damaged batch is served as it is; its CRC tells the consumer.
    let fixture = Fixture::build(Shutdown::Clean)?;
    let middle = fixture.in_segment(fixture.segments()[0])[1].clone();
    fixture.flip(&middle, HEADER_SIZE_BYTES + 5, 0x01)?;
    let log = PartitionLog::open(fixture.path(), config())?;
    assert_eq!(
        log.log_end_offset(),
        fixture.batches.last().unwrap().last_offset + 1
    );
    let read = log.read(middle.base_offset, 1, i64::MAX)?;
    assert_eq!(read.len(), middle.bytes.len());
    assert!(matches!(
        verify_crc(&read),
        Err(BatchDefect::CrcMismatch { .. })
    ));
    Ok(())
}

// Row 5: damaged `.index` and `.timeindex` files of a closed and of the active segment.

#[derive(Debug, Clone, Copy)]
enum IndexDamage {
    /// Cut to a length that is not a whole number of entries.
    OddLength,
    /// Overwritten with pseudo-random bytes.
    Garbage,
    /// One more entry, pointing past the end of the log.
    PastTheEnd,
}

#[test]
fn damaged_index_files_are_rebuilt() -> TestResult {
    let seed = seed();
    let mut case_number = 0u64;
    for shutdown in [Shutdown::Clean, Shutdown::Unclean] {
        for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
            for damage in [
                IndexDamage::OddLength,
                IndexDamage::Garbage,
                IndexDamage::PastTheEnd,
            ] {
                for closed in [true, false] {
                    case_number += 1;
                    let case = format!(
                        "{shutdown:?}, .{extension} of the {} segment, {damage:?} \
                         (RUNNEL_SEED={seed})",
                        if closed { "first" } else { "active" }
                    );
                    let fixture = Fixture::build(shutdown)?;
                    let segments = fixture.segments();
                    let segment = if closed {
                        segments[0]
                    } else {
                        fixture.last_segment()
                    };
                    let path = fixture.index_file(segment, extension);
                    let len = std::fs::metadata(&path)?.len();
                    assert!(len > 0, "{case}: the index has entries");
                    match damage {
                        IndexDamage::OddLength => set_len(&path, len - 3)?,
                        IndexDamage::Garbage => std::fs::write(
                            &path,
                            garbage(seed ^ case_number, usize::try_from(len)?),
                        )?,
                        IndexDamage::PastTheEnd => {
                            let far = 1_000_000u32.to_be_bytes();
                            let entry: Vec<u8> = if extension == INDEX_EXTENSION {
                                [far, far].concat()
                            } else {
                                [&i64::MAX.to_be_bytes()[..], &far[..]].concat()
                            };
                            append_bytes(&path, &entry)?;
                        }
                    }
                    reopen_and_check(fixture.path(), &fixture.batches)
                        .map_err(|e| format!("{case}: {e}"))?;
                }
            }
        }
    }
    Ok(())
}

// Row 6: 0-byte segments.

#[test]
fn empty_last_segment_takes_the_next_append() -> TestResult {
    // A roll that crashed right after creating the new `.log`: before or after creating its
    // indexes, before or after writing the checkpoint that names it.
    for with_indexes in [false, true] {
        for checkpoint_names_it in [false, true] {
            let case = format!("indexes: {with_indexes}, checkpointed: {checkpoint_names_it}");
            let fixture = Fixture::build(Shutdown::Unclean)?;
            let end = fixture.batches.last().unwrap().last_offset + 1;
            std::fs::write(fixture.log_file(end), b"")?;
            if with_indexes {
                std::fs::write(fixture.index_file(end, INDEX_EXTENSION), b"")?;
                std::fs::write(fixture.index_file(end, TIME_INDEX_EXTENSION), b"")?;
            }
            if checkpoint_names_it {
                RecoveryCheckpoint {
                    recovery_point_offset: end,
                    segment_base_offset: end,
                    position_bytes: 0,
                }
                .write(&crate::io::Storage::real(), fixture.path())?;
            }
            reopen_and_check(fixture.path(), &fixture.batches)
                .map_err(|e| format!("{case}: {e}"))?;
            let log = PartitionLog::open(fixture.path(), config())?;
            let last = log.segments_snapshot().last().unwrap().base_offset();
            assert_eq!(last, end, "{case}: the append went into the empty segment");
        }
    }
    Ok(())
}

#[test]
fn empty_middle_segment_leaves_a_gap_and_offsets_continue() -> TestResult {
    // The cleaner leaves a 0-byte segment when every record in it was superseded (a crashed
    // roll leaves one only at the end: an empty active segment never rolls). Its indexes may
    // be stale, empty or missing.
    for shutdown in [Shutdown::Clean, Shutdown::NoCheckpoint] {
        for indexes in ["stale", "empty", "missing"] {
            let case = format!("{shutdown:?}, {indexes} indexes");
            let fixture = Fixture::build(shutdown)?;
            let middle = fixture.segments()[1];
            set_len(&fixture.log_file(middle), 0)?;
            for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
                let path = fixture.index_file(middle, extension);
                match indexes {
                    "empty" => set_len(&path, 0)?,
                    "missing" => std::fs::remove_file(&path)?,
                    _ => {}
                }
            }
            let expected: Vec<Written> = fixture
                .batches
                .iter()
                .filter(|b| b.segment != middle)
                .cloned()
                .collect();
            {
                // An offset in the gap reads from the next batch on, as after compaction; the
                // empty segment has no timestamp (a stale time index must not lend it one).
                let log = PartitionLog::open(fixture.path(), config())?;
                let next = fixture.in_segment(fixture.segments()[2])[0].clone();
                assert!(log.read(middle, 1, i64::MAX)? == next.bytes, "{case}");
                assert_eq!(log.segments_snapshot()[1].max_timestamp(), None, "{case}");
            }
            reopen_and_check(fixture.path(), &expected).map_err(|e| format!("{case}: {e}"))?;
        }
    }
    Ok(())
}

// Row 7: leftovers of interrupted atomic writes and of an interrupted clean.

#[test]
fn stray_temporary_files_are_removed() -> TestResult {
    let fixture = Fixture::build(Shutdown::Unclean)?;
    let end = fixture.batches.last().unwrap().last_offset + 1;
    // What `write_atomically` leaves when it dies before its rename.
    let strays = [
        format!("{CHECKPOINT_FILE_NAME}{TEMP_SUFFIX}"),
        format!("{LOG_START_FILE_NAME}{TEMP_SUFFIX}"),
        format!("{}{TEMP_SUFFIX}", offset_file_name(end, SNAPSHOT_EXTENSION)),
    ];
    for (i, name) in strays.iter().enumerate() {
        std::fs::write(fixture.path().join(name), garbage(seed() ^ i as u64, 30))?;
    }
    reopen_and_check(fixture.path(), &fixture.batches)?;
    for name in &strays {
        assert!(!fixture.path().join(name).exists(), "{name} was removed");
    }
    Ok(())
}

#[test]
fn interrupted_clean_is_completed_after_a_crash() -> TestResult {
    // Segment 1 was rewritten without its middle batch and left as `.swap` (complete, the
    // commit point); segment 2's rewrite was cut short as `.cleaned`. The swap is finished
    // (its stale indexes rebuilt), the unfinished one discarded.
    for shutdown in [Shutdown::Unclean, Shutdown::NoCheckpoint] {
        let fixture = Fixture::build(shutdown)?;
        let segments = fixture.segments();
        let dropped = fixture.in_segment(segments[1])[1].clone();
        let kept: Vec<u8> = fixture
            .in_segment(segments[1])
            .iter()
            .filter(|b| b.base_offset != dropped.base_offset)
            .flat_map(|b| b.bytes.clone())
            .collect();
        let swap = PathBuf::from(format!(
            "{}{SWAP_SUFFIX}",
            fixture.log_file(segments[1]).display()
        ));
        let cleaned = PathBuf::from(format!(
            "{}{CLEANED_SUFFIX}",
            fixture.log_file(segments[2]).display()
        ));
        std::fs::write(&swap, kept)?;
        std::fs::write(&cleaned, &fixture.in_segment(segments[2])[0].bytes[..50])?;
        reopen_and_check(fixture.path(), &fixture.without(&dropped))
            .map_err(|e| format!("{shutdown:?}: {e}"))?;
        assert!(!swap.exists() && !cleaned.exists(), "{shutdown:?}");
    }
    Ok(())
}

/// The fixture is what the other tests assume, and `reopen_and_check` passes on it undamaged.
#[test]
fn fixture_batches_are_valid_and_dense() -> TestResult {
    let fixture = Fixture::build(Shutdown::Clean)?;
    let mut next = 0;
    for batch in &fixture.batches {
        verify_crc(&batch.bytes)?;
        let header = BatchHeader::parse(&batch.bytes)?;
        assert_eq!(
            (header.base_offset, header.last_offset()),
            (batch.base_offset, batch.last_offset)
        );
        assert_eq!(batch.base_offset, next);
        next = batch.last_offset + 1;
    }
    reopen_and_check(fixture.path(), &fixture.batches)
}
