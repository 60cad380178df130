//! Buffers for segment reads, reused across reads.
//!
//! A read of a few megabytes (a Fetch of a partition's backlog) got a fresh allocation each
//! time, which the allocator serves with `mmap` and returns with `munmap`: every 4 KiB of it
//! then cost a page fault and a zeroed page. That churn was about a quarter of the broker's
//! CPU while a consumer read back 600 MB (2026-12-05; the same run with the allocator told to
//! keep its memory read 17 % more records/s). Buffers of bulk reads therefore come from this
//! pool and return to it when the last `Bytes` pointing into them is dropped (the response is
//! on the socket). The pool keeps at most [`IDLE_BYTES_MAX`]; beyond that a buffer is freed.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Reads smaller than this allocate as before: the allocator's own free lists reuse them.
const POOLED_BYTES_MIN: usize = 64 * 1024;
/// A larger buffer is freed when its read is done rather than kept.
const POOLED_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Idle buffer bytes kept at most (enough for a few partitions' maximal fetches at once).
const IDLE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Idle buffers. Each is fully initialised up to its length (its high-water mark), so reuse
/// neither faults nor zeroes.
struct Idle {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

static IDLE: Mutex<Idle> = Mutex::new(Idle {
    buffers: Vec::new(),
    bytes: 0,
});

fn idle() -> std::sync::MutexGuard<'static, Idle> {
    // Each update leaves the list consistent; a panic elsewhere cannot tear it.
    IDLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A buffer of `len` bytes to read into; [`ReadBuffer::into_bytes`] hands it out.
pub(crate) struct ReadBuffer {
    buf: Vec<u8>,
    len: usize,
}

impl ReadBuffer {
    /// A buffer of exactly `len` bytes: the smallest idle one that fits, else a new one.
    pub(crate) fn take(len: usize) -> ReadBuffer {
        let reused = (POOLED_BYTES_MIN..=POOLED_BYTES_MAX)
            .contains(&len)
            .then(|| {
                let mut idle = idle();
                let best = idle
                    .buffers
                    .iter()
                    .enumerate()
                    .filter(|(_, buf)| buf.len() >= len)
                    .min_by_key(|(_, buf)| buf.len())
                    .map(|(at, _)| at)?;
                let buf = idle.buffers.swap_remove(best);
                idle.bytes -= buf.len();
                Some(buf)
            })
            .flatten();
        let mut buf = reused.unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        ReadBuffer { buf, len }
    }

    /// The `len` bytes to fill.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.get_mut(..self.len).unwrap_or_default()
    }

    /// The filled bytes, shared; the buffer returns to the pool when the last clone drops.
    pub(crate) fn into_bytes(self) -> Bytes {
        if (POOLED_BYTES_MIN..=POOLED_BYTES_MAX).contains(&self.len) {
            Bytes::from_owner(self)
        } else {
            let mut this = self;
            let mut buf = std::mem::take(&mut this.buf);
            buf.truncate(this.len);
            Bytes::from(buf)
        }
    }
}

impl AsRef<[u8]> for ReadBuffer {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        let size = self.buf.len();
        if !(POOLED_BYTES_MIN..=POOLED_BYTES_MAX).contains(&size) {
            return;
        }
        let mut idle = idle();
        if idle.bytes + size <= IDLE_BYTES_MAX {
            idle.bytes += size;
            idle.buffers.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nextest runs each test in its own process, so the pool holds only this test's buffers.
    #[test]
    fn a_returned_buffer_is_reused_with_its_contents_sized_to_the_read() {
        let len = 100 * 1024;
        let mut first = ReadBuffer::take(len);
        first.as_mut_slice().fill(7);
        let address = first.as_ref().as_ptr();
        let bytes = first.into_bytes();
        assert_eq!(bytes.len(), len);
        assert!(bytes.iter().all(|&b| b == 7));
        let clone = bytes.slice(10..20);
        drop(bytes);
        // Still referenced by the clone: not back in the pool yet.
        assert_eq!(clone.as_ptr(), address.wrapping_add(10));
        drop(clone);
        let smaller = ReadBuffer::take(len - 1);
        assert_eq!(smaller.as_ref().len(), len - 1);
        assert_eq!(
            smaller.as_ref().as_ptr(),
            address,
            "the idle buffer is reused"
        );
    }

    #[test]
    fn small_and_huge_reads_bypass_the_pool() {
        let small = ReadBuffer::take(100).into_bytes();
        assert_eq!(small.len(), 100);
        let huge = ReadBuffer::take(POOLED_BYTES_MAX + 1);
        assert_eq!(huge.as_ref().len(), POOLED_BYTES_MAX + 1);
        drop(huge);
        assert!(idle().buffers.iter().all(|b| b.len() <= POOLED_BYTES_MAX));
        assert!(idle().bytes <= IDLE_BYTES_MAX);
    }
}
