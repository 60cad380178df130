//! A produce payload through `validate_batches`, and stored batches through `read_records`,
//! `next_offset_after` and the cleaner's `retain_records`.
//!
//! Input: byte 0 is the mode, the rest the payload. Mode bit 0 set: every batch's CRC32C is
//! recomputed first, so mutations get past the CRC check into the records.
//!
//! Asserts: nothing panics and decompression stays under the cap (`-malloc_limit_mb`); for a
//! payload validation accepts, the batches tile the payload, each within the limits, and the
//! payload reads back: `read_records` returns every record, offsets 0..count per batch, the
//! timestamps and null keys validation reported, `next_offset_after` is the last batch's
//! count, and `retain_records` keeping the even offsets reads back as exactly those records.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_fuzz::fix_crcs;
use runnel_protocol::batch::{
    next_offset_after, read_records, validate_batches, BatchLimits, BatchValidation,
};
use runnel_protocol::record_filter::retain_records;

/// Small limits, so the fuzzer reaches them with small inputs.
const LIMITS: BatchLimits = BatchLimits {
    max_batch_bytes: 16 * 1024,
    max_uncompressed_bytes: 256 * 1024,
};

fuzz_target!(|data: &[u8]| {
    let Some((mode, payload)) = data.split_first() else {
        return;
    };
    let mut payload = payload.to_vec();
    if mode & 1 == 1 {
        fix_crcs(&mut payload);
    }

    // Stored-batch readers must refuse damage cleanly, whatever validation thinks.
    let read = read_records(&payload, LIMITS.max_uncompressed_bytes);
    let next = next_offset_after(&payload);

    // Relaxed validation checks less (compressed batches by header and CRC), never more.
    let relaxed = validate_batches(&payload, &LIMITS, BatchValidation::Relaxed);
    let Ok(batches) = validate_batches(&payload, &LIMITS, BatchValidation::Strict) else {
        return;
    };
    let relaxed = relaxed.expect("relaxed validation refused what strict accepted");
    assert_eq!(relaxed.len(), batches.len());
    for (relaxed, strict) in relaxed.iter().zip(&batches) {
        assert_eq!(relaxed.position, strict.position);
        assert_eq!(relaxed.record_count, strict.record_count);
    }
    let mut position = 0;
    let mut expected_records = 0usize;
    for batch in &batches {
        assert_eq!(batch.position, position, "batches tile the payload");
        assert!(batch.size_bytes <= LIMITS.max_batch_bytes);
        assert!(batch.record_count >= 1);
        assert_eq!(batch.last_offset_delta, batch.record_count - 1);
        position += batch.size_bytes;
        expected_records += usize::try_from(batch.record_count).unwrap_or(0);
    }
    assert_eq!(position, payload.len(), "batches tile the payload");
    let last = batches.last().expect("validation accepts no empty payload");
    assert_eq!(next, Some(i64::from(last.record_count)));

    let records = match read {
        Ok(records) => records,
        Err(error) => panic!("validated payload does not read back: {error}"),
    };
    assert_eq!(records.len(), expected_records);
    let mut records = records.iter();
    for batch in &batches {
        let count = usize::try_from(batch.record_count).unwrap_or(0);
        let mine: Vec<_> = records.by_ref().take(count).collect();
        for (delta, record) in mine.iter().enumerate() {
            assert_eq!(record.offset, i64::try_from(delta).unwrap_or(-1));
        }
        assert_eq!(
            batch.has_null_key,
            mine.iter().any(|record| record.key.is_none())
        );
        if !batch.is_log_append_time {
            let max_timestamp = mine.iter().map(|record| record.timestamp).max();
            assert_eq!(max_timestamp, Some(batch.max_timestamp));
        }

        let bytes = &payload[batch.position..batch.position + batch.size_bytes];
        let retained = retain_records(bytes, LIMITS.max_uncompressed_bytes, &mut |offset| {
            offset % 2 == 0
        });
        // Re-compression may grow the batch past nothing we check; only the records matter.
        let retained = match retained {
            Ok(Some(retained)) => retained,
            Ok(None) => panic!("offset 0 was kept, yet no batch came back"),
            Err(error) => panic!("retain_records refused a validated batch: {error}"),
        };
        let kept = match read_records(&retained, LIMITS.max_uncompressed_bytes) {
            Ok(kept) => kept,
            Err(error) => panic!("a retained batch does not read back: {error}"),
        };
        let expected: Vec<_> = mine
            .iter()
            .filter(|record| record.offset % 2 == 0)
            .map(|record| (record.offset, &record.key, &record.value))
            .collect();
        let kept: Vec<_> = kept
            .iter()
            .map(|record| (record.offset, &record.key, &record.value))
            .collect();
        assert_eq!(
            kept, expected,
            "retain_records keeps exactly the kept records"
        );
    }
});
