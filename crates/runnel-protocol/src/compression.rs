//! Record-batch compression codecs, with decompression capped at a caller-given size.
//!
//! Owns the mapping from a v2 batch's attribute bits to a codec and the byte framings Kafka
//! clients use for each codec. Knows nothing of batch headers or records: `batch.rs` hands it the
//! records section of a batch and gets plain record bytes back.
//!
//! The compressed input is untrusted, so decompression streams in chunks and stops as soon as the
//! output would pass the cap; no buffer is ever sized from a length the input claims, except for
//! raw snappy, whose claimed length is checked against the cap before allocating.

use std::io::{Read, Write};

use crate::ProtocolError;

/// Mask of the codec bits (0–2) in a v2 batch's attributes.
pub const COMPRESSION_CODEC_MASK: i16 = 0x07;

/// Magic at the start of the Xerial snappy framing the Java client writes.
const XERIAL_SNAPPY_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Xerial header: magic, then version and minimum compatible version (both i32, big-endian).
const XERIAL_SNAPPY_HEADER_BYTES: usize = 16;
/// Xerial header version fields as the Java client writes them.
const XERIAL_SNAPPY_VERSION: i32 = 1;
/// Uncompressed bytes per Xerial block when we compress (the Java client's default block).
const XERIAL_SNAPPY_BLOCK_BYTES: usize = 32 * 1024;

/// Smallest zstd window (as log2 bytes) we always accept: compression levels up to 19 use at
/// most 2^23 bytes, so a legitimate client never needs more than this.
const ZSTD_WINDOW_LOG_MIN_ACCEPTED: u32 = 23;
/// Largest zstd window we ever accept (zstd's own default limit, 128 MiB).
const ZSTD_WINDOW_LOG_MAX_ACCEPTED: u32 = 27;

/// Zstd compression level used by [`compress`] (zstd's default, and the Java client's).
const ZSTD_LEVEL: i32 = 3;

/// A record batch's compression codec, from bits 0–2 of its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Codec 0: records stored as they are.
    None,
    /// Codec 1: a gzip stream (one or more members).
    Gzip,
    /// Codec 2: snappy, Xerial-framed (Java client) or one raw block (librdkafka).
    Snappy,
    /// Codec 3: LZ4 frame format.
    Lz4,
    /// Codec 4: zstd frame format.
    Zstd,
}

impl Compression {
    /// The codec named by bits 0–2 of a v2 batch's `attributes`; the other bits are ignored.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidBatch`] for codec values 5–7, which Kafka does not define.
    pub fn from_attributes(attributes: i16) -> Result<Self, ProtocolError> {
        match attributes & COMPRESSION_CODEC_MASK {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            codec => Err(ProtocolError::InvalidBatch(format!(
                "unknown compression codec {codec}"
            ))),
        }
    }

    /// The codec's value in bits 0–2 of a batch's attributes (inverse of
    /// [`Compression::from_attributes`]).
    pub fn attribute_bits(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    /// The codec's name as Kafka spells it in `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// A reader of `input` (a batch's records section) decompressed with `codec`, for callers that
/// walk the records as they come out instead of holding them: gzip, LZ4 and zstd stream with
/// memory bounded by their window, whatever the batch inflates to. Snappy has no streaming form
/// in the framings clients use; it is decompressed up front with [`decompress`] (its format
/// cannot inflate more than about 22 times). The caller counts the bytes it reads against its
/// own cap: this reader does not stop at `limit_bytes` except for snappy.
///
/// # Errors
/// [`ProtocolError::CorruptBatch`] for a zstd header the decoder refuses; for snappy, as
/// [`decompress`]. Errors of the stream itself surface as `std::io::Error` while reading.
pub fn decompressing_reader<'a>(
    codec: Compression,
    input: &'a [u8],
    limit_bytes: usize,
) -> Result<Box<dyn Read + 'a>, ProtocolError> {
    Ok(match codec {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Lz4 => Box::new(Lz4FrameReader::new(input)),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|error| corrupt(codec, &error))?;
            decoder
                .window_log_max(zstd_window_log_max(limit_bytes))
                .map_err(|error| corrupt(codec, &error))?;
            Box::new(decoder)
        }
        Compression::Snappy => {
            Box::new(std::io::Cursor::new(decompress_snappy(input, limit_bytes)?))
        }
    })
}

/// Decompresses `input` (a batch's records section) into at most `limit_bytes` bytes.
///
/// Streams in chunks and stops as soon as the output would exceed `limit_bytes`, so a compression
/// bomb costs at most about `2 * limit_bytes` of memory (vector growth), never the size the input
/// claims. [`Compression::None`] returns a copy of `input`, subject to the same limit.
///
/// # Errors
/// - [`ProtocolError::BatchTooLarge`] when the output would exceed `limit_bytes`.
/// - [`ProtocolError::CorruptBatch`] when `input` is not valid data for `codec` (truncated,
///   bad checksum, trailing garbage, a zstd window larger than we accept).
pub fn decompress(
    codec: Compression,
    input: &[u8],
    limit_bytes: usize,
) -> Result<Vec<u8>, ProtocolError> {
    match codec {
        Compression::None => {
            if input.len() > limit_bytes {
                return Err(ProtocolError::BatchTooLarge {
                    size_bytes: input.len(),
                    limit_bytes,
                });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => {
            read_capped(flate2::read::MultiGzDecoder::new(input), codec, limit_bytes)
        }
        Compression::Lz4 => read_capped(Lz4FrameReader::new(input), codec, limit_bytes),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|error| corrupt(codec, &error))?;
            // The window is allocated up front from the frame header; bound it by the cap.
            decoder
                .window_log_max(zstd_window_log_max(limit_bytes))
                .map_err(|error| corrupt(codec, &error))?;
            read_capped(decoder, codec, limit_bytes)
        }
        Compression::Snappy => decompress_snappy(input, limit_bytes),
    }
}

/// Compresses `input` with `codec` in the framing Kafka's Java client writes (gzip stream, Xerial
/// snappy, LZ4 frame, zstd frame). Used by tests and for batches the broker writes itself.
///
/// # Errors
/// [`ProtocolError::Encode`] if a compressor fails (not expected with in-memory buffers).
pub fn compress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let encode_error = |reason: String| ProtocolError::Encode {
        what: format!("{} compression", codec.name()),
        reason,
    };
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder
                .write_all(input)
                .map_err(|error| encode_error(error.to_string()))?;
            encoder
                .finish()
                .map_err(|error| encode_error(error.to_string()))
        }
        Compression::Snappy => {
            let mut output = Vec::with_capacity(XERIAL_SNAPPY_HEADER_BYTES);
            output.extend_from_slice(&XERIAL_SNAPPY_MAGIC);
            output.extend_from_slice(&XERIAL_SNAPPY_VERSION.to_be_bytes());
            output.extend_from_slice(&XERIAL_SNAPPY_VERSION.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in input.chunks(XERIAL_SNAPPY_BLOCK_BYTES) {
                let block = encoder
                    .compress_vec(chunk)
                    .map_err(|error| encode_error(error.to_string()))?;
                let block_len = i32::try_from(block.len())
                    .map_err(|_| encode_error("snappy block over 2 GiB".to_owned()))?;
                output.extend_from_slice(&block_len.to_be_bytes());
                output.extend_from_slice(&block);
            }
            Ok(output)
        }
        Compression::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            encoder
                .write_all(input)
                .map_err(|error| encode_error(error.to_string()))?;
            encoder
                .finish()
                .map_err(|error| encode_error(error.to_string()))
        }
        Compression::Zstd => zstd::stream::encode_all(input, ZSTD_LEVEL)
            .map_err(|error| encode_error(error.to_string())),
    }
}

/// One LZ4 frame decoded by liblz4, which expands it 1.3x (random letters) to 3.3x (one repeated
/// byte) faster than `lz4_flex` does (measured 2026-12-05 on 1 MB of records: 1.72 vs 1.28 GB/s
/// and 1.05 vs 0.32 GB/s); LZ4 decoding was half of the broker's CPU in an lz4 produce.
/// liblz4 reports a frame cut short as a plain end of stream, so this reader checks at the end
/// that the frame was complete and that nothing follows it: Kafka clients write one frame per
/// batch, and accepting a chain of tiny frames would let a batch cost a decoder per few bytes.
struct Lz4FrameReader<'a> {
    /// The frame being decoded; `None` once it has ended (or failed to start).
    decoder: Option<lz4::Decoder<&'a [u8]>>,
    /// Set by a failed start, reported by the first read.
    failed: Option<std::io::Error>,
}

impl<'a> Lz4FrameReader<'a> {
    fn new(input: &'a [u8]) -> Self {
        match lz4::Decoder::new(input) {
            Ok(decoder) => Lz4FrameReader {
                decoder: Some(decoder),
                failed: None,
            },
            Err(error) => Lz4FrameReader {
                decoder: None,
                failed: Some(error),
            },
        }
    }
}

impl Read for Lz4FrameReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(0);
        };
        let read = decoder.read(buf)?;
        if read > 0 || buf.is_empty() {
            return Ok(read);
        }
        if let Some(done) = self.decoder.take() {
            let (rest, complete) = done.finish();
            let invalid = |reason| std::io::Error::new(std::io::ErrorKind::InvalidData, reason);
            complete.map_err(|_| invalid("LZ4 frame truncated"))?;
            if !rest.is_empty() {
                return Err(invalid("bytes after the LZ4 frame"));
            }
        }
        Ok(0)
    }
}

/// Reads `reader` to the end, failing once more than `limit_bytes` come out.
fn read_capped(
    reader: impl Read,
    codec: Compression,
    limit_bytes: usize,
) -> Result<Vec<u8>, ProtocolError> {
    // One byte past the limit tells "exactly at the limit" from "over it".
    let read_bytes_max = u64::try_from(limit_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut output = Vec::new();
    reader
        .take(read_bytes_max)
        .read_to_end(&mut output)
        .map_err(|error| corrupt(codec, &error))?;
    if output.len() > limit_bytes {
        return Err(ProtocolError::BatchTooLarge {
            size_bytes: output.len(),
            limit_bytes,
        });
    }
    Ok(output)
}

/// Snappy as Kafka clients send it: Xerial-framed blocks (Java) or a single raw block
/// (librdkafka).
fn decompress_snappy(input: &[u8], limit_bytes: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut output = Vec::new();
    let Some(framed) = input.strip_prefix(&XERIAL_SNAPPY_MAGIC) else {
        append_raw_snappy(input, &mut output, limit_bytes)?;
        return Ok(output);
    };
    // Skip the version and compatible-version fields: every Xerial version frames blocks alike.
    let mut blocks = framed
        .get(XERIAL_SNAPPY_HEADER_BYTES - XERIAL_SNAPPY_MAGIC.len()..)
        .ok_or_else(|| snappy_corrupt("xerial header truncated"))?;
    while !blocks.is_empty() {
        let (length_field, rest) = blocks
            .split_first_chunk::<4>()
            .ok_or_else(|| snappy_corrupt("xerial block length truncated"))?;
        let block_len = usize::try_from(i32::from_be_bytes(*length_field))
            .map_err(|_| snappy_corrupt("negative xerial block length"))?;
        if block_len > rest.len() {
            return Err(snappy_corrupt("xerial block past the end of the input"));
        }
        let (block, rest) = rest.split_at(block_len);
        append_raw_snappy(block, &mut output, limit_bytes)?;
        blocks = rest;
    }
    Ok(output)
}

/// Decompresses one raw snappy block onto the end of `output`, checking the length the block
/// claims against the cap before allocating for it.
fn append_raw_snappy(
    block: &[u8],
    output: &mut Vec<u8>,
    limit_bytes: usize,
) -> Result<(), ProtocolError> {
    let block_bytes =
        snap::raw::decompress_len(block).map_err(|error| snappy_corrupt(&error.to_string()))?;
    let start = output.len();
    let size_bytes = start.saturating_add(block_bytes);
    if size_bytes > limit_bytes {
        return Err(ProtocolError::BatchTooLarge {
            size_bytes,
            limit_bytes,
        });
    }
    output.resize(size_bytes, 0);
    let target = output
        .get_mut(start..)
        .ok_or_else(|| snappy_corrupt("output buffer shorter than claimed"))?;
    let written = snap::raw::Decoder::new()
        .decompress(block, target)
        .map_err(|error| snappy_corrupt(&error.to_string()))?;
    output.truncate(start.saturating_add(written));
    Ok(())
}

/// The largest zstd window (log2 bytes) worth accepting when output is capped at `limit_bytes`:
/// a window larger than the whole output is never needed, but encoders pick windows by level, so
/// always allow [`ZSTD_WINDOW_LOG_MIN_ACCEPTED`].
fn zstd_window_log_max(limit_bytes: usize) -> u32 {
    let limit_log = usize::BITS - limit_bytes.saturating_sub(1).leading_zeros();
    limit_log.clamp(ZSTD_WINDOW_LOG_MIN_ACCEPTED, ZSTD_WINDOW_LOG_MAX_ACCEPTED)
}

fn corrupt(codec: Compression, error: &std::io::Error) -> ProtocolError {
    ProtocolError::CorruptBatch(format!("{} data: {error}", codec.name()))
}

fn snappy_corrupt(reason: &str) -> ProtocolError {
    ProtocolError::CorruptBatch(format!("snappy data: {reason}"))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    const MIB: usize = 1024 * 1024;

    type TestResult = Result<(), ProtocolError>;

    #[test]
    fn attribute_bits_round_trip_and_ignore_other_bits() -> TestResult {
        for codec in ALL {
            assert_eq!(Compression::from_attributes(codec.attribute_bits())?, codec);
            // Timestamp type, transactional and control bits do not change the codec.
            assert_eq!(
                Compression::from_attributes(codec.attribute_bits() | 0x38)?,
                codec
            );
        }
        Ok(())
    }

    #[test]
    fn unknown_codecs_are_invalid() {
        for codec in 5..=7 {
            assert!(matches!(
                Compression::from_attributes(codec),
                Err(ProtocolError::InvalidBatch(_))
            ));
        }
    }

    #[test]
    fn every_codec_round_trips() -> TestResult {
        let input: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for codec in ALL {
            let compressed = compress(codec, &input)?;
            assert_eq!(
                decompress(codec, &compressed, input.len())?,
                input,
                "{codec:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn output_exactly_at_limit_is_accepted_and_one_over_is_not() -> TestResult {
        let input = vec![7u8; 10_000];
        for codec in ALL {
            let compressed = compress(codec, &input)?;
            assert_eq!(decompress(codec, &compressed, 10_000)?.len(), 10_000);
            assert!(
                matches!(
                    decompress(codec, &compressed, 9_999),
                    Err(ProtocolError::BatchTooLarge {
                        limit_bytes: 9_999,
                        ..
                    })
                ),
                "{codec:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn compression_bombs_stop_at_the_limit() -> TestResult {
        let zeros = vec![0u8; 50 * MIB];
        for codec in ALL {
            let bomb = compress(codec, &zeros)?;
            match decompress(codec, &bomb, MIB) {
                Err(ProtocolError::BatchTooLarge {
                    size_bytes,
                    limit_bytes,
                }) => {
                    assert_eq!(limit_bytes, MIB);
                    // Streaming codecs stop one byte past the limit.
                    if codec != Compression::Snappy && codec != Compression::None {
                        assert_eq!(size_bytes, MIB + 1, "{codec:?}");
                    }
                }
                other => panic!("{codec:?}: expected BatchTooLarge, got {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn raw_snappy_block_is_accepted_and_checked_before_allocating() -> TestResult {
        let input = b"librdkafka sends one raw snappy block".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw, input.len())?, input);

        let bomb = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 50 * MIB])
            .unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &bomb, MIB),
            Err(ProtocolError::BatchTooLarge {
                size_bytes: 50 * MIB,
                limit_bytes: MIB
            })
        );
        // A header claiming 4 GiB with no data behind it is refused without allocating.
        let lie = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            decompress(Compression::Snappy, &lie, MIB),
            Err(ProtocolError::BatchTooLarge { .. })
        ));
        Ok(())
    }

    #[test]
    fn malformed_input_is_corrupt() -> TestResult {
        let input = b"some records worth compressing, some records".repeat(50);
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let compressed = compress(codec, &input)?;
            let truncated = &compressed[..compressed.len() / 2];
            assert!(
                matches!(
                    decompress(codec, truncated, MIB),
                    Err(ProtocolError::CorruptBatch(_))
                ),
                "{codec:?} truncated"
            );
            assert!(
                matches!(
                    decompress(codec, b"definitely not compressed", MIB),
                    Err(ProtocolError::CorruptBatch(_))
                ),
                "{codec:?} garbage"
            );
        }
        Ok(())
    }

    #[test]
    fn an_lz4_batch_is_one_whole_frame() -> TestResult {
        let first = compress(Compression::Lz4, b"first frame, first frame")?;
        assert_eq!(
            decompress(Compression::Lz4, &first, MIB)?,
            b"first frame, first frame".to_vec()
        );
        let second = compress(Compression::Lz4, b"second frame")?;
        let mut trailing = first.clone();
        trailing.extend_from_slice(b"junk after the frame");
        for (input, what) in [
            ([first, second].concat(), "a second frame"),
            (trailing, "bytes after the frame"),
            (Vec::new(), "no frame"),
        ] {
            assert!(
                matches!(
                    decompress(Compression::Lz4, &input, MIB),
                    Err(ProtocolError::CorruptBatch(_))
                ),
                "{what}"
            );
        }
        Ok(())
    }

    #[test]
    fn xerial_framing_errors_are_corrupt() {
        let mut header = XERIAL_SNAPPY_MAGIC.to_vec();
        assert!(matches!(
            decompress(Compression::Snappy, &header, MIB),
            Err(ProtocolError::CorruptBatch(_))
        ));
        header.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        // A header with no blocks is empty output.
        assert_eq!(
            decompress(Compression::Snappy, &header, MIB),
            Ok(Vec::new())
        );
        let mut negative = header.clone();
        negative.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(
            decompress(Compression::Snappy, &negative, MIB),
            Err(ProtocolError::CorruptBatch(_))
        ));
        let mut past_end = header;
        past_end.extend_from_slice(&100i32.to_be_bytes());
        past_end.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            decompress(Compression::Snappy, &past_end, MIB),
            Err(ProtocolError::CorruptBatch(_))
        ));
    }

    #[test]
    fn zstd_window_follows_the_limit() {
        assert_eq!(zstd_window_log_max(0), ZSTD_WINDOW_LOG_MIN_ACCEPTED);
        assert_eq!(zstd_window_log_max(MIB), ZSTD_WINDOW_LOG_MIN_ACCEPTED);
        assert_eq!(zstd_window_log_max(32 * MIB), 25);
        assert_eq!(zstd_window_log_max(32 * MIB + 1), 26);
        assert_eq!(
            zstd_window_log_max(usize::MAX),
            ZSTD_WINDOW_LOG_MAX_ACCEPTED
        );
    }

    fn any_codec() -> impl Strategy<Value = Compression> {
        prop::sample::select(ALL.to_vec())
    }

    proptest! {
        #[test]
        fn round_trip(codec in any_codec(), input in prop::collection::vec(any::<u8>(), 0..4096)) {
            let compressed = compress(codec, &input)?;
            prop_assert_eq!(decompress(codec, &compressed, input.len())?, input);
        }

        #[test]
        fn random_input_never_panics_nor_exceeds_limit(
            codec in any_codec(),
            input in prop::collection::vec(any::<u8>(), 0..512),
            limit in 0usize..4096,
        ) {
            if let Ok(output) = decompress(codec, &input, limit) {
                prop_assert!(output.len() <= limit);
            }
        }

        #[test]
        fn damaged_compressed_data_never_panics(
            codec in any_codec(),
            input in prop::collection::vec(any::<u8>(), 1..2048),
            flip_at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut compressed = compress(codec, &input)?;
            let at = flip_at.index(compressed.len());
            compressed[at] ^= flip;
            if let Ok(output) = decompress(codec, &compressed, 4096) {
                prop_assert!(output.len() <= 4096);
            }
        }
    }
}
