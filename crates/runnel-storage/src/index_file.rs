//! `IndexFile`: the file under an offset or time index. Both indexes live in memory and are
//! only ever written, so the file descriptor is opened on the first write and released when the
//! segment is sealed: a partition that is not being written holds one descriptor (its `.log`)
//! per segment, not three, and ten thousand idle partitions fit a 20,000-descriptor limit.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{IoResultExt, StorageError};
use crate::io::{DataFile, Storage};

/// What [`IndexFile::load`] found on disk.
#[derive(Debug)]
pub(crate) struct LoadedIndex {
    /// The file, for later writes.
    pub(crate) file: IndexFile,
    /// Its first bytes, at most the `max_bytes` asked for (never trust the file length for an
    /// allocation).
    pub(crate) raw: Vec<u8>,
    /// Its length on disk.
    pub(crate) len_bytes: u64,
    /// It did not exist (deleted, or never written before a crash); it does now, empty.
    pub(crate) was_missing: bool,
}

/// An index file whose descriptor is held only while the index is being written.
#[derive(Debug)]
pub(crate) struct IndexFile {
    storage: Storage,
    path: PathBuf,
    writer: Mutex<Option<DataFile>>,
}

impl IndexFile {
    /// Opens the file at `path` (creating it empty if missing), reads up to `max_bytes` of it
    /// and closes it again.
    pub(crate) fn load(
        storage: &Storage,
        path: &Path,
        max_bytes: u64,
    ) -> Result<LoadedIndex, StorageError> {
        let was_missing = !storage.exists(path);
        let file = storage.open_file(path)?;
        let len_bytes = file.len().at(path)?;
        let mut raw = vec![0u8; usize::try_from(len_bytes.min(max_bytes)).unwrap_or(0)];
        file.read_exact_at(&mut raw, 0).at(path)?;
        Ok(LoadedIndex {
            file: IndexFile {
                storage: storage.clone(),
                path: path.to_path_buf(),
                writer: Mutex::new(None),
            },
            raw,
            len_bytes,
            was_missing,
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` at byte `at`.
    pub(crate) fn write_all_at(&self, bytes: &[u8], at: u64) -> Result<(), StorageError> {
        self.with_writer(|file| file.write_all_at(bytes, at))
    }

    /// Sets the file's length.
    pub(crate) fn set_len(&self, len_bytes: u64) -> Result<(), StorageError> {
        self.with_writer(|file| file.set_len(len_bytes))
    }

    /// fdatasync of what was written through the open descriptor; nothing to do when it is
    /// closed (a caller that needs durability syncs before it releases).
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        match self.writer().as_ref() {
            Some(file) => file.sync_data().at(&self.path),
            None => Ok(()),
        }
    }

    /// Closes the descriptor; the next write opens it again.
    pub(crate) fn release(&self) {
        self.writer().take();
    }

    fn with_writer(
        &self,
        write: impl FnOnce(&DataFile) -> std::io::Result<()>,
    ) -> Result<(), StorageError> {
        let mut writer = self.writer();
        let file = match writer.take() {
            Some(file) => file,
            None => self.storage.open_file(&self.path)?,
        };
        let written = write(&file).at(&self.path);
        *writer = Some(file);
        written
    }

    fn writer(&self) -> MutexGuard<'_, Option<DataFile>> {
        // The guarded value is a descriptor or nothing: never half-updated.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
