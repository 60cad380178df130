//! Frames arriving in arbitrary pieces: `bytes_wanted` and `split_frame` against a model of the
//! stream. Input: byte 0 picks the frame maximum (10..=73 bytes, small so both sides of it are
//! reached), byte 1 how many chunk-size bytes follow, those bytes the chunk sizes (cycled), and
//! the rest is the byte stream a client sent.
//!
//! Asserts: a frame is split exactly when its bytes are all there, it is the stream's bytes
//! after its size prefix, between `REQUEST_HEADER_BYTES_MIN` and the maximum long; the frames
//! reassemble to the stream's prefix; `bytes_wanted` never claims more than prefix + maximum,
//! is exact, and agrees with `split_frame` on errors; an error comes only from a size prefix
//! outside the allowed range, and leaves the buffer untouched.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use runnel_protocol::frame::{
    bytes_wanted, split_frame, FRAME_SIZE_PREFIX_BYTES, REQUEST_HEADER_BYTES_MIN,
};

/// Chunk-size bytes at most; sizes are `byte % CHUNK_BYTES_MAX` (0 means an empty read).
const CHUNK_SIZES_MAX: usize = 8;
const CHUNK_BYTES_MAX: usize = 40;

fuzz_target!(|data: &[u8]| {
    let [max_byte, chunk_count, rest @ ..] = data else {
        return;
    };
    let frame_bytes_max = REQUEST_HEADER_BYTES_MIN + usize::from(*max_byte % 64);
    let chunk_count = usize::from(*chunk_count) % CHUNK_SIZES_MAX + 1;
    let (chunk_sizes, stream) = rest.split_at(chunk_count.min(rest.len()));
    let mut chunk_sizes: Vec<usize> = chunk_sizes
        .iter()
        .map(|b| usize::from(*b) % CHUNK_BYTES_MAX)
        .collect();
    // Empty reads are allowed, but the stream must advance.
    if chunk_sizes.iter().all(|size| *size == 0) {
        chunk_sizes.push(1);
    }

    let mut buf = BytesMut::new();
    let mut fed = 0; // stream bytes appended to `buf`
    let mut consumed = 0; // stream bytes split off as frames (prefix included)
    let mut reassembled = Vec::new();
    let mut step = 0;
    while fed < stream.len() {
        let size = chunk_sizes[step % chunk_sizes.len()];
        step += 1;
        let chunk = &stream[fed..(fed + size).min(stream.len())];
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        assert_eq!(
            &buf[..],
            &stream[consumed..fed],
            "buffer is the unsplit stream"
        );

        loop {
            let wanted = bytes_wanted(&buf, frame_bytes_max);
            let before = buf.clone();
            let split = split_frame(&mut buf, frame_bytes_max);
            let expected = expected_frame_bytes(&before, frame_bytes_max);
            match (split, wanted) {
                (Ok(Some(frame)), Ok(0)) => {
                    let frame_bytes = expected.expect("a split frame has a valid size prefix");
                    assert_eq!(frame.len(), frame_bytes);
                    assert!((REQUEST_HEADER_BYTES_MIN..=frame_bytes_max).contains(&frame.len()));
                    let body_at = consumed + FRAME_SIZE_PREFIX_BYTES;
                    assert_eq!(&frame[..], &stream[body_at..body_at + frame.len()]);
                    reassembled.extend_from_slice(&before[..FRAME_SIZE_PREFIX_BYTES]);
                    reassembled.extend_from_slice(&frame);
                    consumed = body_at + frame.len();
                    assert_eq!(reassembled, &stream[..consumed], "frames reassemble");
                    assert_eq!(&buf[..], &stream[consumed..fed]);
                }
                (Ok(None), Ok(wanted)) => {
                    assert!(wanted > 0, "incomplete but nothing wanted");
                    assert!(wanted <= FRAME_SIZE_PREFIX_BYTES + frame_bytes_max);
                    let total = match expected {
                        Some(frame_bytes) => FRAME_SIZE_PREFIX_BYTES + frame_bytes,
                        None => {
                            assert!(before.len() < FRAME_SIZE_PREFIX_BYTES, "invalid size");
                            FRAME_SIZE_PREFIX_BYTES
                        }
                    };
                    assert_eq!(wanted, total - before.len(), "bytes_wanted is exact");
                    assert_eq!(buf, before, "an incomplete frame leaves the buffer alone");
                    break;
                }
                (Err(split_error), Err(wanted_error)) => {
                    assert_eq!(split_error, wanted_error);
                    assert!(before.len() >= FRAME_SIZE_PREFIX_BYTES);
                    assert_eq!(expected, None, "a valid size prefix was refused");
                    assert_eq!(buf, before, "an error leaves the buffer alone");
                    // The connection is closed: nothing more is read.
                    return;
                }
                (split, wanted) => panic!("split_frame {split:?} but bytes_wanted {wanted:?}"),
            }
        }
    }
});

/// The frame length the size prefix at the front of `buf` announces, if it is within
/// `REQUEST_HEADER_BYTES_MIN..=frame_bytes_max`; `None` for a short or invalid prefix.
fn expected_frame_bytes(buf: &[u8], frame_bytes_max: usize) -> Option<usize> {
    let prefix: [u8; 4] = buf.get(..FRAME_SIZE_PREFIX_BYTES)?.try_into().ok()?;
    let size = usize::try_from(i32::from_be_bytes(prefix)).ok()?;
    (REQUEST_HEADER_BYTES_MIN..=frame_bytes_max)
        .contains(&size)
        .then_some(size)
}
