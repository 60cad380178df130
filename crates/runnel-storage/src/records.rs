//! `RecordReader`: the record-level view of a batch that a few storage operations need (the
//! exact offset of a timestamp inside a batch, and the log cleaner's keys and rewrites).
//!
//! Why a trait the broker implements rather than a record parser here: records may be
//! compressed (gzip, snappy, lz4, zstd), and the protocol crate already owns the record walk,
//! decompression with an output cap, and their fuzz targets. Storage must not depend on the
//! protocol crate, and a second record parser here would be a second place for parsing bugs.
//! So storage stays a byte-and-offset layer and borrows record knowledge through this small
//! boundary; tests supply a fake.

use std::fmt;

/// One record of a batch as storage needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSummary {
    /// Absolute offset.
    pub offset: i64,
    /// The record's timestamp in ms (the batch max timestamp for LogAppendTime batches).
    pub timestamp: i64,
    /// The key; `None` when null.
    pub key: Option<Vec<u8>>,
    /// True when the value is null (a tombstone on a compacted topic).
    pub is_tombstone: bool,
}

/// Why a reader could not read or rewrite a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// Record-level access to whole v2 batches (header included, offsets assigned).
pub trait RecordReader: Send + Sync + fmt::Debug {
    /// The data records of `batch`, in offset order. Control batches return no records.
    ///
    /// Errors: the batch's records are malformed or too large to decompress.
    fn records(&self, batch: &[u8]) -> Result<Vec<RecordSummary>, RecordError>;

    /// The first data record of `batch` for which `wanted(offset, timestamp)` is true, as
    /// `(offset, timestamp)`; `None` when none is. A lookup by timestamp needs no more, so an
    /// implementation should walk the records streaming, holding no key or value and stopping
    /// at the record found (the default walks [`RecordReader::records`], for test fakes).
    ///
    /// Errors: as for [`RecordReader::records`].
    fn find_record(
        &self,
        batch: &[u8],
        wanted: &mut dyn FnMut(i64, i64) -> bool,
    ) -> Result<Option<(i64, i64)>, RecordError> {
        Ok(self
            .records(batch)?
            .into_iter()
            .find(|r| wanted(r.offset, r.timestamp))
            .map(|r| (r.offset, r.timestamp)))
    }

    /// A copy of `batch` keeping only the records whose offsets `keep` accepts, re-compressed
    /// with the batch's codec, with the same base offset, last offset delta, base and max
    /// timestamps, producer fields and attributes, and a fresh CRC. `None` when no record is
    /// kept.
    ///
    /// Errors: as for [`RecordReader::records`].
    fn retain(
        &self,
        batch: &[u8],
        keep: &mut dyn FnMut(i64) -> bool,
    ) -> Result<Option<Vec<u8>>, RecordError>;
}
