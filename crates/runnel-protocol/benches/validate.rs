//! Produce-path validation speed: `cargo bench -p runnel-protocol --bench validate`.
//!
//! Validates a 1 MiB batch of 1 KiB records (and one of 100 B records) for every codec, as the
//! produce handler does for each batch it receives, and prints MB/s of uncompressed records
//! (the median round of a second's worth, and the fastest).
//! Plain `std::time` loops (no benchmark crate): the figures are compared before and after a
//! change on the same machine, never asserted.
//!
//! On a VM that shares its cores even the median moves by a third between runs; instruction
//! counts do not. `VALIDATE_CASE="lz4 100"` runs only that codec and value size, and
//! `VALIDATE_ROUNDS=N` validates its batch exactly N times, untimed, for
//! `valgrind --tool=cachegrind` (subtract a run with `VALIDATE_ROUNDS=0`, divide by N and the
//! record count: instructions per record).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use runnel_protocol::batch::{
    validate_batches, BatchLimits, BatchValidation, RECORD_BATCH_HEADER_BYTES,
};
use runnel_protocol::batch_builder::{build_batch, NewRecord};
use runnel_protocol::compression::{compress, Compression};

/// Byte positions in a v2 batch header.
const LENGTH_AT: usize = 8;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// One batch of `count` records of `value_bytes` each, its records section compressed with
/// `codec`.
fn batch(codec: Compression, count: usize, value_bytes: usize) -> Vec<u8> {
    // Random lowercase letters: compressible about as much as text, not a repeating pattern.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut letter = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        b'a' + (state % 26) as u8
    };
    let records: Vec<NewRecord> = (0..count)
        .map(|i| NewRecord {
            key: Some(format!("key-{}", i % 1024).into_bytes()),
            value: Some((0..value_bytes).map(|_| letter()).collect()),
            headers: Vec::new(),
        })
        .collect();
    let plain = build_batch(&records, 1_700_000_000_000).unwrap().to_vec();
    let mut out = plain[..RECORD_BATCH_HEADER_BYTES].to_vec();
    out.extend(compress(codec, &plain[RECORD_BATCH_HEADER_BYTES..]).unwrap());
    let length = i32::try_from(out.len() - 12).unwrap();
    out[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    let attributes =
        i16::from_be_bytes([out[ATTRIBUTES_AT], out[ATTRIBUTES_AT + 1]]) | codec.attribute_bits();
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

fn main() {
    let limits = BatchLimits {
        max_batch_bytes: 64 << 20,
        max_uncompressed_bytes: 64 << 20,
    };
    for (count, value_bytes) in [(1024, 1024), (10_000, 100)] {
        for codec in [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
            Compression::Gzip,
        ] {
            let case = format!("{} {value_bytes}", codec.name());
            if std::env::var("VALIDATE_CASE").is_ok_and(|only| only != case) {
                continue;
            }
            let bytes = batch(codec, count, value_bytes);
            if let Ok(rounds) = std::env::var("VALIDATE_ROUNDS") {
                for _ in 0..rounds.parse::<u32>().expect("VALIDATE_ROUNDS is a count") {
                    std::hint::black_box(validate_batches(
                        std::hint::black_box(&bytes),
                        &limits,
                        BatchValidation::Strict,
                    ))
                    .unwrap();
                }
                continue;
            }
            validate_batches(&bytes, &limits, BatchValidation::Strict)
                .expect("the benchmark batch is valid");
            // Every round is timed: the median is the figure, the fastest round the machine's
            // best case (the mean of a second moved by a third between runs on the 2-core VM).
            let started = Instant::now();
            let mut rounds = Vec::new();
            while started.elapsed() < Duration::from_secs(1) {
                let round = Instant::now();
                std::hint::black_box(validate_batches(
                    std::hint::black_box(&bytes),
                    &limits,
                    BatchValidation::Strict,
                ))
                .unwrap();
                rounds.push(round.elapsed().as_secs_f64());
            }
            rounds.sort_by(f64::total_cmp);
            let mb_per_s = |seconds: f64| (count * value_bytes) as f64 / seconds / 1e6;
            println!(
                "validate {:>6} {count:>6} x {value_bytes:>4} B: {:>8.0} MB/s of values (median; best {:.0}; {} B sent)",
                codec.name(),
                mb_per_s(rounds[rounds.len() / 2]),
                mb_per_s(rounds[0]),
                bytes.len()
            );
        }
    }
}
