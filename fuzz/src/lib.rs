//! Helpers shared by the fuzz targets in `fuzz_targets/`. Nothing here is used by Runnel itself.

/// Byte offsets in a v2 record batch header (see `runnel_protocol::batch`).
const BATCH_LENGTH_AT: usize = 8;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
const RECORD_BATCH_HEADER_BYTES: usize = 61;

/// Rewrites the CRC32C of every batch that `batchLength` frames within `bytes`, walking from the
/// start and stopping at the first batch that does not fit. Lets the fuzzer mutate headers and
/// records without every mutation dying at the CRC check.
pub fn fix_crcs(bytes: &mut [u8]) {
    let mut position = 0usize;
    while let Some(length) = bytes
        .get(position + BATCH_LENGTH_AT..position + BATCH_LENGTH_AT + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(i32::from_be_bytes)
    {
        let Some(size) = usize::try_from(length)
            .ok()
            .and_then(|l| l.checked_add(BATCH_LENGTH_PREFIX_BYTES))
            .filter(|size| *size >= RECORD_BATCH_HEADER_BYTES)
        else {
            return;
        };
        let Some(batch) = bytes.get_mut(position..position.saturating_add(size)) else {
            return;
        };
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        position += size;
    }
}

/// Splits `data` into sections, each prefixed by a one-byte length (255 means "the rest"),
/// so one fuzz input can carry several files. Missing sections are empty.
pub fn sections<const N: usize>(mut data: &[u8]) -> [&[u8]; N] {
    let mut out = [&[][..]; N];
    for slot in &mut out {
        let Some((&length, rest)) = data.split_first() else {
            break;
        };
        let length = if length == u8::MAX {
            rest.len()
        } else {
            usize::from(length).min(rest.len())
        };
        let (section, rest) = rest.split_at(length);
        *slot = section;
        data = rest;
    }
    out
}

/// `magic | version u16 | payload | crc32c u32` (big-endian), the envelope of the storage
/// crate's small metadata files (recovery checkpoint, log start offset, producer snapshots).
/// Written here from the documented format so the fuzzer can reach past the CRC.
pub fn seal(magic: [u8; 4], version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Storage's record view over the protocol crate's record walk, as the broker wires it.
#[derive(Debug)]
pub struct ProtocolRecords {
    /// Decompression cap per batch, in bytes.
    pub max_uncompressed_bytes: usize,
}

impl runnel_storage::RecordReader for ProtocolRecords {
    fn records(
        &self,
        batch: &[u8],
    ) -> Result<Vec<runnel_storage::RecordSummary>, runnel_storage::RecordError> {
        runnel_protocol::batch::read_records(batch, self.max_uncompressed_bytes)
            .map(|records| {
                records
                    .into_iter()
                    .map(|record| runnel_storage::RecordSummary {
                        offset: record.offset,
                        timestamp: record.timestamp,
                        key: record.key,
                        is_tombstone: record.value.is_none(),
                    })
                    .collect()
            })
            .map_err(|error| runnel_storage::RecordError(error.to_string()))
    }

    fn retain(
        &self,
        batch: &[u8],
        keep: &mut dyn FnMut(i64) -> bool,
    ) -> Result<Option<Vec<u8>>, runnel_storage::RecordError> {
        runnel_protocol::record_filter::retain_records(batch, self.max_uncompressed_bytes, keep)
            .map_err(|error| runnel_storage::RecordError(error.to_string()))
    }
}
