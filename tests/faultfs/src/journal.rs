//! Directory operations not yet committed: the metadata half of power loss.
//!
//! Creates, renames and removals reach the backing directory at once (so reads and listings
//! are plain passthrough), and each is logged here with what undoes it. The next fsync,
//! fdatasync or fsyncdir of anything on the mount commits every logged operation, as a
//! journalling file system (ext4, XFS) commits its running transaction; power loss undoes the
//! uncommitted ones, newest first. A removed file or directory, and a rename's replaced
//! target, are moved into a trash directory inside the backing root until the commit, so that
//! undoing brings them back whole.
//!
//! It knows backing paths only, never FUSE or inode numbers.

use std::io;
use std::path::{Path, PathBuf};

/// Name of the trash directory in the backing root; the mount never shows it.
pub const TRASH_NAME: &str = ".runnel-faultfs-trash";

#[derive(Debug)]
enum Undo {
    /// Remove what was created here (file or empty directory).
    Created(PathBuf),
    /// Rename `to` back to `from`.
    Moved { from: PathBuf, to: PathBuf },
}

/// The uncommitted directory operations of one backing root, oldest first.
#[derive(Debug)]
pub struct DirectoryJournal {
    trash: PathBuf,
    trash_next: u64,
    pending: Vec<Undo>,
}

impl DirectoryJournal {
    /// A journal whose trash is `backing_root/TRASH_NAME`, created empty (what a previous run
    /// left there was removed before that run stopped or lost power: gone either way).
    pub fn open(backing_root: &Path) -> io::Result<DirectoryJournal> {
        let trash = backing_root.join(TRASH_NAME);
        std::fs::create_dir_all(&trash)?;
        let journal = DirectoryJournal {
            trash,
            trash_next: 0,
            pending: Vec::new(),
        };
        journal.empty_trash()?;
        Ok(journal)
    }

    /// Operations power loss would undo now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Logs the creation of `path` (a file or directory that did not exist).
    pub fn created(&mut self, path: &Path) {
        self.pending.push(Undo::Created(path.to_path_buf()));
    }

    /// Logs a rename that was done.
    pub fn renamed(&mut self, from: &Path, to: &Path) {
        self.pending.push(Undo::Moved {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
    }

    /// Removes `path` (a file, or a directory the caller checked is empty) by moving it into the
    /// trash, logged so that power loss can bring it back.
    pub fn move_aside(&mut self, path: &Path) -> io::Result<()> {
        let to = self.trash.join(self.trash_next.to_string());
        self.trash_next += 1;
        std::fs::rename(path, &to)?;
        self.renamed(path, &to);
        Ok(())
    }

    /// Undoes the newest [`move_aside`](Self::move_aside) at once (the operation it prepared
    /// failed).
    pub fn restore_last(&mut self) -> io::Result<()> {
        match self.pending.pop() {
            Some(undo) => undo_one(undo),
            None => Ok(()),
        }
    }

    /// Commits every logged operation: nothing to undo any more; the trash is emptied.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending.clear();
        self.empty_trash()
    }

    /// Power loss: undoes every uncommitted operation, newest first. Returns how many were
    /// undone; an undo that fails is reported on stderr and skipped.
    pub fn undo_all(&mut self) -> usize {
        let count = self.pending.len();
        while let Some(undo) = self.pending.pop() {
            let what = format!("{undo:?}");
            if let Err(error) = undo_one(undo) {
                eprintln!("runnel-faultfs: could not undo {what}: {error}");
            }
        }
        if let Err(error) = self.empty_trash() {
            eprintln!("runnel-faultfs: could not empty the trash: {error}");
        }
        count
    }

    fn empty_trash(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.trash)? {
            let path = entry?.path();
            if std::fs::symlink_metadata(&path)?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

fn undo_one(undo: Undo) -> io::Result<()> {
    match undo {
        Undo::Created(path) => {
            if std::fs::symlink_metadata(&path)?.is_dir() {
                std::fs::remove_dir(&path)
            } else {
                std::fs::remove_file(&path)
            }
        }
        Undo::Moved { from, to } => std::fs::rename(to, from),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn undo_restores_the_namespace_of_the_last_commit() {
        let root = tempfile::tempdir().unwrap();
        let path = |name: &str| root.path().join(name);
        let mut journal = DirectoryJournal::open(root.path()).unwrap();
        std::fs::write(path("kept"), b"kept").unwrap();
        std::fs::write(path("old"), b"old").unwrap();
        journal.commit().unwrap();

        std::fs::create_dir(path("d")).unwrap();
        journal.created(&path("d"));
        std::fs::write(path("d/new"), b"new").unwrap();
        journal.created(&path("d/new"));
        journal.move_aside(&path("old")).unwrap(); // replaced by the rename below
        std::fs::rename(path("d/new"), path("old")).unwrap();
        journal.renamed(&path("d/new"), &path("old"));
        journal.move_aside(&path("kept")).unwrap(); // unlink
        assert_eq!(std::fs::read(path("old")).unwrap(), b"new");
        assert!(!path("kept").exists());

        assert_eq!(journal.undo_all(), 5);
        assert_eq!(std::fs::read(path("old")).unwrap(), b"old");
        assert_eq!(std::fs::read(path("kept")).unwrap(), b"kept");
        assert!(!path("d").exists());
        assert_eq!(std::fs::read_dir(path(TRASH_NAME)).unwrap().count(), 0);
    }

    #[test]
    fn commit_makes_removals_final() {
        let root = tempfile::tempdir().unwrap();
        let gone = root.path().join("gone");
        let mut journal = DirectoryJournal::open(root.path()).unwrap();
        std::fs::write(&gone, b"x").unwrap();
        journal.created(&gone);
        journal.commit().unwrap();
        journal.move_aside(&gone).unwrap();
        journal.commit().unwrap();
        assert_eq!(journal.undo_all(), 0);
        assert!(!gone.exists());
        assert_eq!(
            std::fs::read_dir(root.path().join(TRASH_NAME))
                .unwrap()
                .count(),
            0
        );
    }
}
