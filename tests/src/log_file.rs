//! Reads the broker's segment files from the outside, per the documented layout: a `.log` file
//! is a sequence of Kafka v2 record batches exactly as on the wire, base offsets rewritten,
//! and the active segment of a log fsynced in small steps may end in a zero tail.
//! Used to check what was really stored (compression codec) and to cut a batch in half.

use std::path::{Path, PathBuf};

use crate::{ensure, Result};

/// Size of the v2 record batch header, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;

/// The header fields of one stored record batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// Byte position of the batch in its file.
    pub position: u64,
    /// Total size of the batch in bytes (offset and length fields included).
    pub size_bytes: u64,
    /// Offset of its first record.
    pub base_offset: i64,
    /// Record format version (2).
    pub magic: i8,
    /// Attributes; the low three bits are the compression codec (0 none, 1 gzip, 2 snappy,
    /// 3 lz4, 4 zstd).
    pub attributes: i16,
    /// Offset of its last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl StoredBatch {
    /// The compression codec id from the attributes.
    pub fn codec(&self) -> i16 {
        self.attributes & 0x7
    }

    /// Offset one past its last record.
    pub fn next_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta) + 1
    }
}

/// The `.log` segment files in a partition dir, ordered by base offset.
pub fn segment_files(partition_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(partition_dir)
        .map_err(|e| format!("reading {}: {e}", partition_dir.display()))?
    {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("log") {
            files.push(path);
        }
    }
    // Names are zero-padded base offsets, so lexical order is offset order.
    files.sort();
    Ok(files)
}

/// Bytes of zeros at the end of a `.log` file after its last batch (its zero tail).
pub fn zero_tail_bytes(path: &Path) -> Result<u64> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let end = read_batches(path)?
        .last()
        .map_or(0, |b| b.position + b.size_bytes);
    Ok(bytes.len() as u64 - end)
}

/// Parses the batch headers of a `.log` file, up to a zero tail (nothing but zeros to the
/// end); a trailing partial batch is an error.
pub fn read_batches(path: &Path) -> Result<Vec<StoredBatch>> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut batches = Vec::new();
    let mut position = 0usize;
    while bytes
        .get(position..)
        .is_some_and(|rest| rest.iter().any(|&b| b != 0))
    {
        let header = bytes
            .get(position..position + BATCH_HEADER_BYTES)
            .ok_or_else(|| {
                format!(
                    "{}: partial batch header at position {position} (file is {} bytes)",
                    path.display(),
                    bytes.len()
                )
            })?;
        let base_offset = i64::from_be_bytes(array(header, 0)?);
        let batch_length = i32::from_be_bytes(array(header, 8)?);
        let magic = i8::from_be_bytes(array(header, 16)?);
        let attributes = i16::from_be_bytes(array(header, 21)?);
        let last_offset_delta = i32::from_be_bytes(array(header, 23)?);
        let record_count = i32::from_be_bytes(array(header, 57)?);
        ensure!(
            batch_length >= (BATCH_HEADER_BYTES - 12) as i32,
            "{}: batch at position {position} has length {batch_length}",
            path.display()
        );
        let size_bytes = 12 + batch_length as usize;
        ensure!(
            position + size_bytes <= bytes.len(),
            "{}: batch at position {position} of {size_bytes} bytes runs past the end ({} bytes)",
            path.display(),
            bytes.len()
        );
        batches.push(StoredBatch {
            position: position as u64,
            size_bytes: size_bytes as u64,
            base_offset,
            magic,
            attributes,
            last_offset_delta,
            record_count,
        });
        position += size_bytes;
    }
    Ok(batches)
}

/// Every stored batch of one partition, in offset order across its segments.
pub fn partition_batches(partition_dir: &Path) -> Result<Vec<StoredBatch>> {
    let mut all = Vec::new();
    for file in segment_files(partition_dir)? {
        all.extend(read_batches(&file)?);
    }
    Ok(all)
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N]> {
    let slice = bytes.get(at..at + N).ok_or("short header")?;
    Ok(slice.try_into()?)
}
