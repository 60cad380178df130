//! A partition directory with arbitrary files, opened with `PartitionLog::open` (recovery),
//! read back whole, searched by timestamp, appended to, closed and reopened.
//!
//! Input: byte 0 is a set of flags, byte 1 the base offset of an optional second segment, then
//! sections each prefixed by a one-byte length (255: the rest of the input), in this order:
//! `.index`, `.timeindex`, recovery checkpoint, log start offset, producer snapshot, second
//! segment `.log`, and `00000000000000000000.log`. Flags: bit 0 writes the `.index`, bit 1 the
//! `.timeindex`, bit 2 the recovery checkpoint, bit 3 recomputes the log's CRCs, bit 4 writes
//! the log start offset, bit 5 the producer snapshot, bit 6 the second segment. The metadata
//! files are sealed (magic, version, CRC32C) by the harness so their contents, not their CRCs,
//! are what gets fuzzed.
//!
//! Asserts: nothing panics (errors are fine); an opened log has `log_start_offset <=
//! log_end_offset`; reads move forward and return whole batches, CRC-clean unless a checkpoint
//! vouched for bytes recovery then did not verify; an append lands at the log end offset and
//! survives close and reopen.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runnel_fuzz::{fix_crcs, seal, sections, ProtocolRecords};
use runnel_protocol::batch_builder::{build_batch, NewRecord};
use runnel_storage::{verify_crc, AppendOutcome, BatchHeader, LogConfig, PartitionLog};

/// Small everything, so rolls, index entries and full indexes happen with small inputs.
const CONFIG: LogConfig = LogConfig {
    segment_bytes: 2048,
    segment_ms: i64::MAX,
    index_interval_bytes: 128,
    segment_index_bytes: 256,
};

/// Reads per input at most (each moves forward at least one offset).
const READS_MAX: usize = 1000;
const READ_BYTES_MAX: usize = 4096;

const WRITE_INDEX: u8 = 1;
const WRITE_TIME_INDEX: u8 = 1 << 1;
const WRITE_CHECKPOINT: u8 = 1 << 2;
const FIX_CRCS: u8 = 1 << 3;
const WRITE_LOG_START: u8 = 1 << 4;
const WRITE_SNAPSHOT: u8 = 1 << 5;
const WRITE_SECOND_SEGMENT: u8 = 1 << 6;

fuzz_target!(|data: &[u8]| {
    let [flags, second_base, rest @ ..] = data else {
        return;
    };
    let [index, time_index, checkpoint, log_start, snapshot, second_log, log] = sections::<7>(rest);
    let second_base = i64::from(*second_base) + 1;

    let Ok(temp) = tempfile::Builder::new()
        .prefix("runnel-fuzz-")
        .tempdir_in(scratch_root())
    else {
        return;
    };
    let dir = temp.path();
    let name = |offset: i64, extension: &str| dir.join(format!("{offset:020}.{extension}"));
    let write = |path: std::path::PathBuf, bytes: &[u8]| std::fs::write(path, bytes).is_ok();

    let mut log = log.to_vec();
    let mut second_log = second_log.to_vec();
    if flags & FIX_CRCS != 0 {
        fix_crcs(&mut log);
        fix_crcs(&mut second_log);
    }
    let mut ok = write(name(0, "log"), &log);
    if flags & WRITE_INDEX != 0 {
        ok &= write(name(0, "index"), index);
    }
    if flags & WRITE_TIME_INDEX != 0 {
        ok &= write(name(0, "timeindex"), time_index);
    }
    if flags & WRITE_SECOND_SEGMENT != 0 {
        ok &= write(name(second_base, "log"), &second_log);
    }
    if flags & WRITE_CHECKPOINT != 0 {
        let fields = checkpoint_fields(checkpoint, second_base);
        ok &= write(
            dir.join("recovery-point-offset-checkpoint"),
            &seal(*b"RNRP", 1, &fields),
        );
    }
    if flags & WRITE_LOG_START != 0 {
        let offset = i64_from(log_start);
        ok &= write(
            dir.join("log-start-offset-checkpoint"),
            &seal(*b"RNLS", 1, &offset.to_be_bytes()),
        );
    }
    if flags & WRITE_SNAPSHOT != 0 {
        let at = i64::from(snapshot.first().copied().unwrap_or(0));
        ok &= write(
            name(at, "snapshot"),
            &seal(*b"RNPS", 1, snapshot.get(1..).unwrap_or_default()),
        );
    }
    if !ok {
        return;
    }
    // Without a checkpoint recovery verifies every byte, so nothing damaged may be served.
    let all_verified = flags & WRITE_CHECKPOINT == 0;
    exercise(dir, all_verified);
});

fn exercise(dir: &Path, all_verified: bool) {
    let Ok(log) = PartitionLog::open(dir, CONFIG) else {
        return;
    };
    let log_start_offset = log.log_start_offset();
    let log_end_offset = log.log_end_offset();
    assert!(
        log_start_offset <= log_end_offset,
        "{log_start_offset} > {log_end_offset}"
    );
    assert!(log.segment_count() >= 1);

    read_all(&log, log_start_offset, log_end_offset, all_verified);
    let reader = ProtocolRecords {
        max_uncompressed_bytes: 1 << 20,
    };
    // Record offsets come from inside batches that only a CRC vouches for, so there is
    // nothing to assert about them beyond not panicking.
    for target_ms in [i64::MIN, 0, 1_700_000_000_000] {
        let _ = log.offset_for_timestamp(target_ms, &reader);
    }
    let _ = log.max_timestamp_offset(&reader);

    let record = NewRecord {
        key: Some(b"key".to_vec()),
        value: Some(b"value".to_vec()),
        headers: Vec::new(),
    };
    let batch = build_batch(&[record], 1_700_000_000_000).expect("one small record");
    let Ok(AppendOutcome::Appended {
        base_offset,
        last_offset,
    }) = log.append(&batch)
    else {
        return;
    };
    assert_eq!(base_offset, log_end_offset, "append lands at the log end");
    assert_eq!(last_offset, base_offset);
    assert_eq!(log.log_end_offset(), last_offset + 1);
    assert_appended_reads_back(&log, base_offset);
    if log.close().is_err() {
        return;
    }
    drop(log);

    let reopened = match PartitionLog::open(dir, CONFIG) {
        Ok(reopened) => reopened,
        Err(error) => panic!("a cleanly closed log does not reopen: {error}"),
    };
    assert_eq!(
        reopened.log_end_offset(),
        last_offset + 1,
        "acknowledged append lost"
    );
    assert_appended_reads_back(&reopened, base_offset);
}

/// Reads `[from, log_end_offset)` batch by batch, checking every batch is whole.
fn read_all(log: &PartitionLog, from: i64, log_end_offset: i64, all_verified: bool) {
    let mut offset = from;
    for _ in 0..READS_MAX {
        if offset >= log_end_offset {
            return;
        }
        let Ok(bytes) = log.read(offset, READ_BYTES_MAX, log_end_offset) else {
            return;
        };
        if bytes.is_empty() {
            return;
        }
        let mut rest = &bytes[..];
        let mut next = offset;
        while !rest.is_empty() {
            let header = match BatchHeader::parse(rest) {
                Ok(header) => header,
                Err(defect) => {
                    assert!(!all_verified, "read served a bad header: {defect}");
                    return;
                }
            };
            let size = usize::try_from(header.size_bytes()).unwrap_or(usize::MAX);
            let Some(batch) = rest.get(..size) else {
                assert!(!all_verified, "read served a torn batch");
                return;
            };
            if all_verified {
                assert!(
                    verify_crc(batch).is_ok(),
                    "read served a batch with a bad CRC"
                );
                assert!(header.last_offset() < log_end_offset);
            }
            next = next.max(header.last_offset().saturating_add(1));
            rest = &rest[size..];
        }
        if next <= offset {
            assert!(!all_verified, "read at {offset} did not move forward");
            return;
        }
        offset = next;
    }
}

/// The batch appended at `offset` reads back: whole, CRC-clean, at that offset.
fn assert_appended_reads_back(log: &PartitionLog, offset: i64) {
    let bytes = match log.read(offset, READ_BYTES_MAX, log.log_end_offset()) {
        Ok(bytes) => bytes,
        Err(error) => panic!("appended offset {offset} does not read back: {error}"),
    };
    let header = match BatchHeader::parse(&bytes) {
        Ok(header) => header,
        Err(defect) => panic!("appended offset {offset} reads back damaged: {defect}"),
    };
    assert_eq!(header.base_offset, offset);
    let size = usize::try_from(header.size_bytes()).unwrap_or(usize::MAX);
    assert!(bytes
        .get(..size)
        .is_some_and(|batch| verify_crc(batch).is_ok()));
}

/// Checkpoint payload (recovery point, segment base offset, position): three big-endian 64-bit
/// fields from 24 bytes of input, or from a short section a compact form the fuzzer reaches
/// easily: recovery point u16, segment 0 or the second one, position u16.
fn checkpoint_fields(section: &[u8], second_base: i64) -> Vec<u8> {
    let (recovery_point, segment_base, position) = match section.get(..24) {
        Some(full) => {
            let field = |at: usize| <[u8; 8]>::try_from(&full[at..at + 8]).unwrap_or_default();
            (
                i64::from_be_bytes(field(0)),
                i64::from_be_bytes(field(8)),
                u64::from_be_bytes(field(16)),
            )
        }
        None => {
            let byte = |at: usize| section.get(at).copied().unwrap_or(0);
            (
                i64::from(u16::from_be_bytes([byte(0), byte(1)])),
                if byte(2) & 1 == 0 { 0 } else { second_base },
                u64::from(u16::from_be_bytes([byte(3), byte(4)])),
            )
        }
    };
    let mut fields = recovery_point.to_be_bytes().to_vec();
    fields.extend_from_slice(&segment_base.to_be_bytes());
    fields.extend_from_slice(&position.to_be_bytes());
    fields
}

/// Up to 8 bytes of `section` as a big-endian i64 (short sections are small numbers).
fn i64_from(section: &[u8]) -> i64 {
    section
        .iter()
        .take(8)
        .fold(0i64, |value, byte| (value << 8) | i64::from(*byte))
}

/// `RUNNEL_FUZZ_TMPDIR` (set by `scripts/fuzz.sh` to a directory it removes afterwards, since a
/// crash leaves its partition directory behind), else a tmpfs directory when there is one (fsync
/// there costs nothing), else the system temp dir.
fn scratch_root() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("RUNNEL_FUZZ_TMPDIR") {
        return dir.into();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
