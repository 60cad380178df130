//! The metadata log's space reserve: `<data.dir>/__cluster_metadata/reserve`, a file of up to
//! [`RESERVE_BYTES`] real (written and fsynced) zero bytes. When the filesystem is full, a
//! metadata write would fail and stop the Raft node for good (openraft treats every storage
//! error as fatal); but freeing space usually *needs* a metadata write (DeleteTopics appends a
//! record). So a write that fails for lack of space gives back part of the reserve and is
//! tried again, in the space freed.
//!
//! The reserve is cut by what the write needs (plus [`SLACK_BYTES`] for the filesystem's own
//! blocks), not deleted: it then lasts for many metadata writes, and a full disk does not
//! hand a megabyte to the partition logs (which would fill it at once and then see the same
//! full disk, their writes refused as before). Only if that retry fails too is the rest given
//! back, for one last try; then the error goes to openraft. At most three attempts: never a
//! loop on a full disk.
//!
//! The reserve is grown back to full size at open (as far as space allows; without room the
//! node goes on with what it has, with a warning) and after a later successful write when the
//! filesystem has room for the whole reserve twice over — checked with `statvfs` (one cheap
//! syscall) first, so that growing it never fills a nearly full disk for the partition logs.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The reserve file.
pub(crate) const RESERVE_FILE: &str = "reserve";
/// Size of the reserve: room for thousands of metadata records (a record is small JSON), and
/// for the rewrite of a freshly purged log, while a small fraction of any real data disk.
pub(crate) const RESERVE_BYTES: u64 = 1024 * 1024;
/// Freed on top of what a write needs: the filesystem's own blocks (extent tree, directory
/// entry of a temporary file), and the rounding to whole pages.
const SLACK_BYTES: u64 = 16 * 1024;
/// Zero bytes written per `write` call while growing the reserve.
const CHUNK_BYTES: usize = 64 * 1024;

/// Whether `error` means the filesystem (or the user's quota) is full.
pub(crate) fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// `error` with `context` in front of its message, keeping its kind (so that
/// [`is_disk_full`] still recognises it).
pub(crate) fn with_context(context: impl std::fmt::Display, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

/// The reserve of one metadata directory. Only touched on the blocking pool.
#[derive(Debug)]
pub(crate) struct Reserve {
    dir: PathBuf,
    /// The full size.
    bytes: u64,
    /// Bytes in the reserve file now.
    len: u64,
}

impl Reserve {
    /// The reserve of `dir` (which must exist), grown to `bytes` now as far as space allows.
    /// Never fails: without room, the node goes on with a smaller reserve or none.
    pub(crate) fn open(dir: &Path, bytes: u64) -> Reserve {
        let mut reserve = Reserve {
            dir: dir.to_path_buf(),
            bytes,
            len: 0,
        };
        let found = std::fs::metadata(reserve.path()).map_or(0, |m| m.len());
        // A longer file (a larger reserve configured before) is cut to size.
        reserve.len = found.min(bytes);
        if found > bytes {
            if let Err(error) = reserve.shrink(found.saturating_sub(bytes)) {
                tracing::warn!(%error, "metadata log: cutting the space reserve failed");
            }
        }
        if reserve.len < bytes {
            if let Err(error) = reserve.grow() {
                tracing::warn!(
                    dir = %dir.display(),
                    %error,
                    reserve_bytes = reserve.len,
                    "metadata log: no room for the whole space reserve; going on with less \
                     (a full disk with no reserve left stops the metadata log)"
                );
            }
        }
        reserve
    }

    fn path(&self) -> PathBuf {
        self.dir.join(RESERVE_FILE)
    }

    /// Bytes in the reserve now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends zeros to the reserve file up to the full size, fsyncs it (and the directory,
    /// for a new file). On failure cuts the file back to what it was.
    fn grow(&mut self) -> io::Result<()> {
        let path = self.path();
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| with_context(path.display(), e))?;
        let written = write_zeros(&mut file, self.len, self.bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| {
                if created {
                    runnel_storage::sync_dir(&self.dir).map_err(io::Error::other)
                } else {
                    Ok(())
                }
            });
        match written {
            Ok(()) => {
                tracing::info!(
                    path = %path.display(),
                    bytes = self.bytes,
                    "metadata log: space reserve in place"
                );
                self.len = self.bytes;
                Ok(())
            }
            Err(error) => {
                // Give back what was written; keep what was there.
                let _ = file.set_len(self.len).and_then(|()| file.sync_all());
                Err(with_context(path.display(), error))
            }
        }
    }

    /// Cuts `by` bytes off the reserve file and fsyncs it (the freed blocks are reusable once
    /// the truncation is committed).
    fn shrink(&mut self, by: u64) -> io::Result<()> {
        let path = self.path();
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| with_context(path.display(), e))?;
        let len = self.len.saturating_sub(by);
        file.set_len(len)
            .and_then(|()| file.sync_all())
            .map_err(|e| with_context(path.display(), e))?;
        self.len = len;
        Ok(())
    }

    /// Runs `write`, which needs about `needed` bytes of new space; while it fails for lack
    /// of space and the reserve has bytes left, frees `needed` (plus slack) of the reserve,
    /// then all the rest, and runs `write` again (at most three attempts). `write` must leave
    /// nothing behind when it fails (no torn record, no half-written temporary file).
    pub(crate) fn write_with<T>(
        &mut self,
        needed: u64,
        mut write: impl FnMut() -> io::Result<T>,
    ) -> io::Result<T> {
        let mut result = write();
        for free in [needed.saturating_add(SLACK_BYTES), u64::MAX] {
            match &result {
                Err(error) if is_disk_full(error) && self.len > 0 => {
                    let freed = free.min(self.len);
                    if let Err(shrink) = self.shrink(freed) {
                        // The reserve file is gone or unusable: no reserve; the full disk is
                        // the error to report.
                        tracing::warn!(error = %shrink, "metadata log: the space reserve is unusable");
                        self.len = 0;
                        break;
                    }
                    tracing::error!(
                        dir = %self.dir.display(),
                        %error,
                        freed,
                        reserve_left = self.len,
                        "disk full: the metadata log is using its reserved space; free space on {}",
                        self.dir.display()
                    );
                    result = write();
                }
                _ => break,
            }
        }
        result
    }

    /// After a successful write: grows a used reserve back to full size if the filesystem
    /// has room for the whole reserve twice over. Never fails.
    pub(crate) fn replenish(&mut self) {
        if self.len >= self.bytes {
            return;
        }
        match free_bytes(&self.dir) {
            Ok(free) if free >= self.bytes.saturating_mul(2) => {}
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "metadata log: statvfs failed");
                return;
            }
        }
        if let Err(error) = self.grow() {
            tracing::warn!(
                dir = %self.dir.display(),
                %error,
                "metadata log: could not grow the space reserve back"
            );
        }
    }
}

/// Replaces `path` with `bytes` durably (write a temporary file, fsync, rename, fsync the
/// directory). On failure the temporary file is removed, and the error keeps its kind (a full
/// disk stays recognisable).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let written = File::create(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(with_context(path.display(), error));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    runnel_storage::sync_dir(dir).map_err(|e| io::Error::other(format!("{}: {e}", dir.display())))
}

/// Bytes an unprivileged writer may still allocate on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Writes zero bytes into `file` from `from` up to `to` (really written: no sparse holes).
fn write_zeros(file: &mut std::fs::File, from: u64, to: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(from))?;
    let chunk = vec![0u8; CHUNK_BYTES];
    let mut left = to.saturating_sub(from);
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK_BYTES, |left| left.min(CHUNK_BYTES));
        let part = chunk.get(..n).unwrap_or(&chunk);
        file.write_all(part)?;
        left = left.saturating_sub(u64::try_from(part.len()).unwrap_or(u64::MAX));
    }
    Ok(())
}
