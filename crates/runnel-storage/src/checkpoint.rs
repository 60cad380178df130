//! The recovery-point checkpoint (`recovery-point-offset-checkpoint`), plus the two helpers
//! every small metadata file of a partition shares: a sealed envelope (magic, version, CRC32C)
//! so damage is detected, and atomic replacement (write temp, fsync, rename, fsync dir) so a
//! crash leaves either the old file or the new one, never a mix.

use std::path::{Path, PathBuf};

use crate::error::{IoResultExt, StorageError};
use crate::io::Storage;

/// File name of the recovery checkpoint inside a partition directory.
pub(crate) const CHECKPOINT_FILE_NAME: &str = "recovery-point-offset-checkpoint";
/// Suffix of temporary files written by [`write_atomically`]; leftovers are deleted on open.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

const CHECKPOINT_MAGIC: [u8; 4] = *b"RNRP";
const CHECKPOINT_VERSION: u16 = 1;
const CRC_SIZE_BYTES: usize = 4;

/// Wraps `payload` as `magic (4) | version u16 | payload | crc32c u32` (big-endian), the CRC
/// covering everything before it.
pub(crate) fn seal(magic: [u8; 4], version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The payload of a sealed file, or `None` if the magic, version or CRC is wrong.
pub(crate) fn unseal(magic: [u8; 4], version: u16, sealed: &[u8]) -> Option<&[u8]> {
    let (body, crc) = sealed.split_at_checked(sealed.len().checked_sub(CRC_SIZE_BYTES)?)?;
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return None;
    }
    let (head, payload) = body.split_at_checked(6)?;
    let mut expected = magic.to_vec();
    expected.extend_from_slice(&version.to_be_bytes());
    (head == expected.as_slice()).then_some(payload)
}

/// Replaces `path` with `contents` atomically and durably: write a temporary file, fsync it,
/// rename it over `path`, fsync the directory. Readers see the old or the new file, never a mix.
/// On the real file system (the broker's own small files).
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), StorageError> {
    write_all_atomically(&Storage::real(), &[(path, contents)])
}

/// [`write_atomically`] for several files of one directory, with one directory fsync for all
/// of them. Each file is replaced atomically; a crash may leave some replaced and some not.
pub(crate) fn write_all_atomically(
    storage: &Storage,
    files: &[(&Path, &[u8])],
) -> Result<(), StorageError> {
    let temp_path = |path: &Path| {
        let mut temp_name = path.as_os_str().to_owned();
        temp_name.push(TEMP_SUFFIX);
        PathBuf::from(temp_name)
    };
    for (path, contents) in files {
        write_durably(storage, &temp_path(path), contents)?;
    }
    for (path, _) in files {
        storage.rename(&temp_path(path), path)?;
    }
    match files.first() {
        Some((path, _)) => storage.sync_dir(path.parent().unwrap_or(Path::new("."))),
        None => Ok(()),
    }
}

/// Creates (or replaces) `path` with `contents` and fsyncs it; not atomic (the caller renames
/// the file into place afterwards).
pub(crate) fn write_durably(
    storage: &Storage,
    path: &Path,
    contents: &[u8],
) -> Result<(), StorageError> {
    let file = storage.create_file(path)?;
    file.write_all_at(contents, 0).at(path)?;
    file.sync_all().at(path)
}

/// Removes `path` if present, then fsyncs its directory so the removal survives a crash.
pub(crate) fn remove_durably(storage: &Storage, path: &Path) -> Result<(), StorageError> {
    match storage.remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(path),
        _ => {}
    }
    storage.sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsync of a directory on the real file system, making renames and deletions in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    Storage::real().sync_dir(dir)
}

/// Where recovery may stop trusting the log: every byte of segments before
/// `segment_base_offset`, and the first `position_bytes` bytes of that segment, were fsynced;
/// the batch at `position_bytes` (if any) starts at `recovery_point_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryCheckpoint {
    pub(crate) recovery_point_offset: i64,
    pub(crate) segment_base_offset: i64,
    pub(crate) position_bytes: u64,
}

impl RecoveryCheckpoint {
    fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(24);
        payload.extend_from_slice(&self.recovery_point_offset.to_be_bytes());
        payload.extend_from_slice(&self.segment_base_offset.to_be_bytes());
        payload.extend_from_slice(&self.position_bytes.to_be_bytes());
        seal(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, &payload)
    }

    fn decode(sealed: &[u8]) -> Option<RecoveryCheckpoint> {
        let payload = unseal(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, sealed)?;
        let field = |at: usize| -> Option<[u8; 8]> { payload.get(at..at + 8)?.try_into().ok() };
        Some(RecoveryCheckpoint {
            recovery_point_offset: i64::from_be_bytes(field(0)?),
            segment_base_offset: i64::from_be_bytes(field(8)?),
            position_bytes: u64::from_be_bytes(field(16)?),
        })
    }

    /// Reads the checkpoint of `dir`. A missing file is `None`; a damaged one is `None` with a
    /// warning (recovery then scans the whole log, which is safe, only slower).
    pub(crate) fn read(
        storage: &Storage,
        dir: &Path,
    ) -> Result<Option<RecoveryCheckpoint>, StorageError> {
        let path = dir.join(CHECKPOINT_FILE_NAME);
        let bytes = match storage.read_file(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at(&path),
        };
        let decoded = Self::decode(&bytes);
        if decoded.is_none() {
            tracing::warn!(path = %path.display(), "recovery checkpoint damaged; scanning the whole log");
        }
        Ok(decoded)
    }

    /// Writes the checkpoint of `dir` atomically.
    pub(crate) fn write(&self, storage: &Storage, dir: &Path) -> Result<(), StorageError> {
        write_all_atomically(
            storage,
            &[(&dir.join(CHECKPOINT_FILE_NAME), &self.encode())],
        )
    }

    /// Removes the checkpoint of `dir` durably (recovery then verifies the whole log).
    pub(crate) fn remove(storage: &Storage, dir: &Path) -> Result<(), StorageError> {
        remove_durably(storage, &dir.join(CHECKPOINT_FILE_NAME))
    }

    /// The checkpoint file's path in `dir` and its contents, for [`write_all_atomically`].
    pub(crate) fn file(&self, dir: &Path) -> (PathBuf, Vec<u8>) {
        (dir.join(CHECKPOINT_FILE_NAME), self.encode())
    }
}

/// File name of the log start offset checkpoint inside a partition directory.
pub(crate) const LOG_START_FILE_NAME: &str = "log-start-offset-checkpoint";
const LOG_START_MAGIC: [u8; 4] = *b"RNLS";
const LOG_START_VERSION: u16 = 1;

/// The persisted log start offset (moved by DeleteRecords and retention). Written before any
/// segment below it is deleted, so after a crash the leftover segments are recognised as
/// deleted and removed on open.
pub(crate) fn read_log_start_offset(
    storage: &Storage,
    dir: &Path,
) -> Result<Option<i64>, StorageError> {
    let path = dir.join(LOG_START_FILE_NAME);
    let bytes = match storage.read_file(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at(&path),
    };
    let decoded = unseal(LOG_START_MAGIC, LOG_START_VERSION, &bytes)
        .and_then(|payload| payload.try_into().ok())
        .map(i64::from_be_bytes);
    if decoded.is_none() {
        // Falling back to the first segment's base offset re-exposes records that were
        // deleted by DeleteRecords but not yet removed with their segment: say so.
        tracing::warn!(path = %path.display(), "log start offset checkpoint damaged; using the first segment's base offset");
    }
    Ok(decoded)
}

/// Writes the log start offset checkpoint of `dir` atomically.
pub(crate) fn write_log_start_offset(
    storage: &Storage,
    dir: &Path,
    offset: i64,
) -> Result<(), StorageError> {
    write_all_atomically(
        storage,
        &[(
            &dir.join(LOG_START_FILE_NAME),
            &seal(LOG_START_MAGIC, LOG_START_VERSION, &offset.to_be_bytes()),
        )],
    )
}

/// File name of the marker of a truncation or reset in progress inside a partition directory.
pub(crate) const TRUNCATION_FILE_NAME: &str = "truncation-in-progress";
const TRUNCATION_MAGIC: [u8; 4] = *b"RNTR";
const TRUNCATION_VERSION: u16 = 1;

/// A truncation or reset of the log, recorded durably before any file changes and removed once
/// it is complete: a crash in between is finished by the next open, so no cut record is ever
/// seen again (recovery alone would keep the intact batches of a half-cut tail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PendingTruncation {
    /// Every record at and after this offset goes (`PartitionLog::truncate_to`).
    CutFrom(i64),
    /// Every record goes and the log starts afresh at this offset (`PartitionLog::reset_to`).
    ResetTo(i64),
}

impl PendingTruncation {
    fn encode(self) -> Vec<u8> {
        let (kind, offset) = match self {
            PendingTruncation::CutFrom(offset) => (0u8, offset),
            PendingTruncation::ResetTo(offset) => (1u8, offset),
        };
        let mut payload = vec![kind];
        payload.extend_from_slice(&offset.to_be_bytes());
        seal(TRUNCATION_MAGIC, TRUNCATION_VERSION, &payload)
    }

    fn decode(sealed: &[u8]) -> Option<PendingTruncation> {
        let payload = unseal(TRUNCATION_MAGIC, TRUNCATION_VERSION, sealed)?;
        let (kind, offset) = payload.split_first()?;
        let offset = i64::from_be_bytes(offset.try_into().ok()?);
        match kind {
            0 => Some(PendingTruncation::CutFrom(offset)),
            1 => Some(PendingTruncation::ResetTo(offset)),
            _ => None,
        }
    }

    /// The marker of `dir`, if a truncation was in progress. A damaged marker cannot have been
    /// renamed into place (the write is atomic), so it is reported, not guessed at.
    ///
    /// Errors: `Io`; `CorruptTruncationMarker`.
    pub(crate) fn read(
        storage: &Storage,
        dir: &Path,
    ) -> Result<Option<PendingTruncation>, StorageError> {
        let path = dir.join(TRUNCATION_FILE_NAME);
        let bytes = match storage.read_file(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at(&path),
        };
        match Self::decode(&bytes) {
            Some(pending) => Ok(Some(pending)),
            None => Err(StorageError::CorruptTruncationMarker { path }),
        }
    }

    /// Writes the marker of `dir` atomically and durably.
    pub(crate) fn write(self, storage: &Storage, dir: &Path) -> Result<(), StorageError> {
        write_all_atomically(
            storage,
            &[(&dir.join(TRUNCATION_FILE_NAME), &self.encode())],
        )
    }

    /// Removes the marker of `dir` durably (the truncation is complete).
    pub(crate) fn remove(storage: &Storage, dir: &Path) -> Result<(), StorageError> {
        remove_durably(storage, &dir.join(TRUNCATION_FILE_NAME))
    }
}

/// File name of the high-watermark checkpoint inside a partition directory.
pub(crate) const HIGH_WATERMARK_FILE_NAME: &str = "high-watermark";
const HIGH_WATERMARK_MAGIC: [u8; 4] = *b"RNHW";
const HIGH_WATERMARK_VERSION: u16 = 1;

/// The high watermark last checkpointed in `dir`; `None` if the file is missing, damaged or
/// unreadable (the caller starts from what it can prove, and clamps what it gets by the log).
pub(crate) fn read_high_watermark(storage: &Storage, dir: &Path) -> Option<i64> {
    let path = dir.join(HIGH_WATERMARK_FILE_NAME);
    let bytes = match storage.read_file(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "high watermark checkpoint unreadable");
            }
            return None;
        }
    };
    let decoded = unseal(HIGH_WATERMARK_MAGIC, HIGH_WATERMARK_VERSION, &bytes)
        .and_then(|payload| payload.try_into().ok())
        .map(i64::from_be_bytes);
    if decoded.is_none() {
        tracing::warn!(path = %path.display(), "high watermark checkpoint damaged; ignored");
    }
    decoded
}

/// Writes the high-watermark checkpoint of `dir` atomically and durably.
pub(crate) fn write_high_watermark(
    storage: &Storage,
    dir: &Path,
    high_watermark: i64,
) -> Result<(), StorageError> {
    write_all_atomically(
        storage,
        &[(
            &dir.join(HIGH_WATERMARK_FILE_NAME),
            &seal(
                HIGH_WATERMARK_MAGIC,
                HIGH_WATERMARK_VERSION,
                &high_watermark.to_be_bytes(),
            ),
        )],
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_detects_damage() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::real();
        assert_eq!(RecoveryCheckpoint::read(&storage, dir.path())?, None);
        let checkpoint = RecoveryCheckpoint {
            recovery_point_offset: 17,
            segment_base_offset: 10,
            position_bytes: 999,
        };
        checkpoint.write(&storage, dir.path())?;
        assert_eq!(
            RecoveryCheckpoint::read(&storage, dir.path())?,
            Some(checkpoint)
        );
        let path = dir.path().join(CHECKPOINT_FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(RecoveryCheckpoint::read(&storage, dir.path())?, None);
        Ok(())
    }
}
