//! An encoded response as a list of byte chunks, so that record data read from the log is
//! written to the socket from the buffer it was read into instead of being copied into the
//! response first (a Fetch response is mostly records: the copy doubled its memory).

use bytes::Bytes;
use kafka_protocol::protocol::buf::ChunkedBytesMut;

/// Shared byte strings shorter than this are copied: a separate chunk costs a slice in the
/// vectored write, which only pays off for bulk data.
pub(crate) const SHARE_BYTES_MIN: usize = 4096;

/// A complete response frame (size prefix, header and body), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFrame {
    chunks: Vec<Bytes>,
}

impl From<Bytes> for ResponseFrame {
    fn from(bytes: Bytes) -> Self {
        ResponseFrame {
            chunks: vec![bytes],
        }
    }
}

impl ResponseFrame {
    /// The frame's bytes, in order; write them one after the other (or vectored).
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Takes the chunks, e.g. to advance through them while writing.
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// Total bytes of the frame.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// True when the frame has no bytes (never the case for an encoded response).
    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(Bytes::is_empty)
    }

    /// All bytes in one buffer (copies when there is more than one chunk). For tests and tools.
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [one] => one.clone(),
            chunks => Bytes::from(chunks.concat()),
        }
    }
}

impl From<ChunkedBytesMut> for ResponseFrame {
    fn from(buf: ChunkedBytesMut) -> Self {
        ResponseFrame {
            chunks: buf.into_chunks(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use kafka_protocol::protocol::buf::ByteBufMut;

    use super::*;

    #[test]
    fn large_shared_bytes_are_kept_by_reference_and_small_ones_copied() {
        let large = Bytes::from(vec![7u8; SHARE_BYTES_MIN]);
        let small = Bytes::from_static(b"small");
        let mut buf = ChunkedBytesMut::new(16, SHARE_BYTES_MIN);
        buf.put_i32(1);
        buf.put_shared_bytes(&small);
        buf.put_shared_bytes(&large);
        buf.put_i16(2);
        assert_eq!(buf.offset(), 4 + 5 + SHARE_BYTES_MIN + 2);
        let frame = ResponseFrame::from(buf);
        assert_eq!(frame.chunks().len(), 3);
        assert_eq!(
            frame.chunks().get(1).map(|c| c.as_ptr()),
            Some(large.as_ptr()),
            "not copied"
        );
        let mut expected = vec![0, 0, 0, 1];
        expected.extend_from_slice(b"small");
        expected.extend_from_slice(&large);
        expected.extend_from_slice(&[0, 2]);
        assert_eq!(frame.to_bytes(), Bytes::from(expected));
        assert_eq!(frame.len(), 4 + 5 + SHARE_BYTES_MIN + 2);
    }

    #[test]
    fn a_frame_without_shared_bytes_is_one_chunk() {
        let mut buf = ChunkedBytesMut::new(16, SHARE_BYTES_MIN);
        buf.put_i32(1);
        buf.put_shared_bytes(&Bytes::from_static(&[9]));
        let frame = ResponseFrame::from(buf);
        assert_eq!(frame.chunks().len(), 1);
        assert_eq!(frame.to_bytes(), Bytes::from_static(&[0, 0, 0, 1, 9]));
    }

    #[test]
    fn gaps_within_the_tail_can_be_filled() {
        let mut buf = ChunkedBytesMut::new(16, SHARE_BYTES_MIN);
        buf.put_shared_bytes(&Bytes::from(vec![1u8; SHARE_BYTES_MIN]));
        let gap = buf.put_gap(2);
        buf.put_u8(3);
        buf.gap_buf(gap).copy_from_slice(&[4, 5]);
        let frame = ResponseFrame::from(buf);
        assert_eq!(frame.chunks().get(1), Some(&Bytes::from_static(&[4, 5, 3])));
    }
}
