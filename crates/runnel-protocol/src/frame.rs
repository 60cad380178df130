//! Kafka framing: every request and response is a big-endian `i32` size followed by that many
//! bytes. This module splits frames off a read buffer and judges the size prefix *before* any
//! body is read, so a hostile size never turns into an allocation.

use bytes::{Buf, Bytes, BytesMut};

use crate::ProtocolError;

/// Bytes of the size prefix in front of every frame.
pub const FRAME_SIZE_PREFIX_BYTES: usize = 4;

/// The smallest request a client can send: api key (2), api version (2), correlation id (4)
/// and the client id length (2) of request header v1. Shorter frames cannot be answered
/// (there is no correlation id to answer with), so the connection is closed.
pub const REQUEST_HEADER_BYTES_MIN: usize = 10;

/// Splits complete frames off the front of a connection's read buffer.
///
/// Returns `Ok(None)` while the frame is incomplete ("need more bytes" is not an error), the
/// frame body without its prefix once it is whole, and an error for a size prefix that is
/// negative, below [`REQUEST_HEADER_BYTES_MIN`] or above `frame_bytes_max`. The caller closes the
/// connection on error; nothing has been reserved for the claimed body at that point.
pub fn split_frame(
    buf: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Option<Bytes>, ProtocolError> {
    let Some(prefix) = buf.get(..FRAME_SIZE_PREFIX_BYTES) else {
        return Ok(None);
    };
    let size_bytes = i64::from((&prefix[..]).get_i32());
    let frame_bytes = frame_size(size_bytes, frame_bytes_max)?;
    if buf.len() < FRAME_SIZE_PREFIX_BYTES + frame_bytes {
        return Ok(None);
    }
    buf.advance(FRAME_SIZE_PREFIX_BYTES);
    Ok(Some(buf.split_to(frame_bytes).freeze()))
}

/// How many more bytes the frame at the front of `buf` needs, if its prefix is known: lets the
/// reader reserve exactly what the (already validated) frame needs instead of growing blindly.
pub fn bytes_wanted(buf: &[u8], frame_bytes_max: usize) -> Result<usize, ProtocolError> {
    let Some(mut prefix) = buf.get(..FRAME_SIZE_PREFIX_BYTES) else {
        return Ok(FRAME_SIZE_PREFIX_BYTES - buf.len());
    };
    let frame_bytes = frame_size(i64::from(prefix.get_i32()), frame_bytes_max)?;
    Ok((FRAME_SIZE_PREFIX_BYTES + frame_bytes).saturating_sub(buf.len()))
}

fn frame_size(size_bytes: i64, frame_bytes_max: usize) -> Result<usize, ProtocolError> {
    match usize::try_from(size_bytes) {
        Ok(size) if (REQUEST_HEADER_BYTES_MIN..=frame_bytes_max).contains(&size) => Ok(size),
        Ok(size) if size < REQUEST_HEADER_BYTES_MIN => {
            Err(ProtocolError::FrameTooShort { size_bytes: size })
        }
        _ => Err(ProtocolError::FrameSize {
            size_bytes,
            frame_bytes_max,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn framed(body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_i32(body.len() as i32);
        buf.put_slice(body);
        buf
    }

    #[test]
    fn whole_frames_split_and_partial_ones_wait() {
        let mut buf = framed(&[7u8; 12]);
        buf.extend_from_slice(&framed(&[9u8; 10])[..6]);
        assert_eq!(split_frame(&mut buf, 100).unwrap().unwrap(), vec![7u8; 12]);
        assert_eq!(split_frame(&mut buf, 100).unwrap(), None);
        assert_eq!(bytes_wanted(&buf, 100).unwrap(), 8);
    }

    #[test]
    fn hostile_sizes_are_rejected_before_reading_the_body() {
        for size in [-1i32, 0, 3, 9, i32::MAX] {
            let mut buf = BytesMut::new();
            buf.put_i32(size);
            assert!(split_frame(&mut buf, 1024).is_err(), "size {size}");
            assert!(bytes_wanted(&buf, 1024).is_err(), "size {size}");
        }
    }

    #[test]
    fn short_prefix_is_incomplete() {
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert_eq!(split_frame(&mut buf, 1024).unwrap(), None);
        assert_eq!(bytes_wanted(&buf, 1024).unwrap(), 2);
    }
}
