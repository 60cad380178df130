//! The FUSE file system: a passthrough of a backing directory whose file writes stay in memory
//! ([`UnsyncedFile`]) until the file is fsynced, and whose directory operations reach the
//! backing directory at once, logged in a [`DirectoryJournal`] that the next fsync commits and
//! power loss undoes.
//!
//! All state sits behind one mutex ([`Shared`]), which the control socket also takes; the
//! session runs one FUSE thread, so requests are served in the order the kernel sends them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::journal::{DirectoryJournal, TRASH_NAME};
use crate::overlay::UnsyncedFile;

/// Attributes and names are never cached by the kernel: sizes change under it when unsynced
/// data is dropped.
const NO_CACHE: Duration = Duration::ZERO;

/// What power loss dropped, or what is unsynced now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnsyncedTotals {
    /// Files with unsynced data or size changes.
    pub files: u64,
    /// Bytes of unsynced data.
    pub bytes: u64,
}

/// State shared by the FUSE thread and the control socket.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// A file system over `backing_root` holding at most `unsynced_bytes_max` unsynced bytes.
    /// Errors if the journal's trash directory cannot be made in `backing_root`.
    pub fn new(backing_root: PathBuf, unsynced_bytes_max: u64) -> io::Result<Arc<Shared>> {
        Ok(Arc::new(Shared {
            state: Mutex::new(State {
                journal: DirectoryJournal::open(&backing_root)?,
                backing_root,
                inodes: InodeTable::new(),
                handles: HashMap::new(),
                directories: HashMap::new(),
                next_handle: 1,
                unsynced: HashMap::new(),
                unsynced_bytes: 0,
                unsynced_bytes_max,
                written_back_files: 0,
                fail_writes: false,
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a FUSE handler leaves state that is still consistent per operation.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Power loss: forgets every file's unsynced data and size changes, and undoes the
    /// directory operations no fsync committed. Paths may have changed under the kernel's
    /// inode numbers, so they are all forgotten (the kernel looks names up again: no caching).
    pub fn drop_unsynced(&self) -> UnsyncedTotals {
        let mut state = self.lock();
        let dropped = state.totals();
        state.unsynced.clear();
        state.unsynced_bytes = 0;
        let undone = state.journal.undo_all();
        if undone > 0 {
            eprintln!("runnel-faultfs: power loss undid {undone} uncommitted directory operations");
            state.inodes.forget_all();
        }
        dropped
    }

    /// What is unsynced now.
    pub fn unsynced(&self) -> UnsyncedTotals {
        self.lock().totals()
    }

    /// Directory operations power loss would undo now.
    pub fn uncommitted_directory_operations(&self) -> usize {
        self.lock().journal.pending()
    }

    /// Clean unmount, as a kernel syncs a file system it unmounts: commits the directory
    /// operations and writes every file's unsynced state back. Returns how many files could not
    /// be written back (unlinked ones, which nothing can reach any more, are not counted).
    pub fn write_back_all(&self) -> io::Result<usize> {
        let mut state = self.lock();
        state.journal.commit()?;
        let mut failed = 0;
        let inos: Vec<u64> = state.unsynced.keys().copied().collect();
        for ino in inos {
            let Some(path) = state.inodes.path(ino).map(|path| state.backing_path(path)) else {
                continue;
            };
            let written = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(Errno::from)
                .and_then(|backing| state.sync_file(ino, &backing, true));
            if let Err(errno) = written {
                eprintln!(
                    "runnel-faultfs: could not write {} back: errno {}",
                    path.display(),
                    errno.code()
                );
                failed += 1;
            }
        }
        Ok(failed)
    }

    /// Files written back because the unsynced bytes reached the cap (as a kernel writes dirty
    /// pages back under memory pressure: they survive power loss).
    pub fn written_back_files(&self) -> u64 {
        self.lock().written_back_files
    }

    /// While on, writes, size changes, creates and fsyncs fail with EIO (a failing disk).
    pub fn set_fail_writes(&self, on: bool) {
        self.lock().fail_writes = on;
    }
}

#[derive(Debug)]
struct State {
    backing_root: PathBuf,
    journal: DirectoryJournal,
    inodes: InodeTable,
    handles: HashMap<u64, OpenFile>,
    directories: HashMap<u64, Vec<(PathBuf, FileType)>>,
    next_handle: u64,
    unsynced: HashMap<u64, UnsyncedFile>,
    unsynced_bytes: u64,
    unsynced_bytes_max: u64,
    written_back_files: u64,
    fail_writes: bool,
}

#[derive(Debug)]
struct OpenFile {
    ino: u64,
    /// Shared so that a request can hold it while it changes the state (no dup per write).
    backing: Arc<File>,
}

impl State {
    fn totals(&self) -> UnsyncedTotals {
        UnsyncedTotals {
            files: self.unsynced.len() as u64,
            bytes: self.unsynced_bytes,
        }
    }

    fn backing_path(&self, relative: &Path) -> PathBuf {
        self.backing_root.join(relative)
    }

    fn relative_path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.inodes.path(ino.0).cloned().ok_or(Errno::ENOENT)
    }

    /// The path of `name` in `parent`; the journal's trash is not there for the mount.
    fn child_path(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        if parent == INodeNo::ROOT && name == TRASH_NAME {
            return Err(Errno::ENOENT);
        }
        Ok(self.relative_path(parent)?.join(name))
    }

    fn check_writable(&self) -> Result<(), Errno> {
        if self.fail_writes {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    fn open_file(&self, fh: FileHandle) -> Result<&OpenFile, Errno> {
        self.handles.get(&fh.0).ok_or(Errno::EBADF)
    }

    fn add_handle(&mut self, ino: u64, backing: File) -> FileHandle {
        let fh = self.next_handle;
        self.next_handle += 1;
        let backing = Arc::new(backing);
        self.handles.insert(fh, OpenFile { ino, backing });
        FileHandle(fh)
    }

    /// Attributes of `relative` as readers see them (unsynced size included).
    fn attr(&mut self, relative: &Path) -> Result<FileAttr, Errno> {
        let metadata = std::fs::symlink_metadata(self.backing_path(relative))?;
        let ino = self.inodes.ino_for(relative);
        Ok(self.attr_from(ino, &metadata))
    }

    fn attr_from(&self, ino: u64, metadata: &std::fs::Metadata) -> FileAttr {
        let size = self
            .unsynced
            .get(&ino)
            .map_or(metadata.len(), UnsyncedFile::size_bytes);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(metadata.atime(), metadata.atime_nsec()),
            mtime: time(metadata.mtime(), metadata.mtime_nsec()),
            ctime: time(metadata.ctime(), metadata.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: file_type(metadata.file_type()),
            perm: (metadata.permissions().mode() & 0o7777) as u16,
            nlink: u32::try_from(metadata.nlink()).unwrap_or(u32::MAX),
            uid: metadata.uid(),
            gid: metadata.gid(),
            rdev: u32::try_from(metadata.rdev()).unwrap_or(0),
            blksize: 4096,
            flags: 0,
        }
    }

    /// The overlay of `ino`, started over `backing` if the file had none.
    fn overlay(&mut self, ino: u64, backing: &File) -> Result<&mut UnsyncedFile, Errno> {
        match self.unsynced.entry(ino) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let size = backing.metadata()?.len();
                Ok(entry.insert(UnsyncedFile::new(size)))
            }
        }
    }

    /// Applies `ino`'s overlay to `backing` and syncs it; the file then has no unsynced state.
    fn sync_file(&mut self, ino: u64, backing: &File, data_only: bool) -> Result<(), Errno> {
        if let Some(overlay) = self.unsynced.get(&ino) {
            overlay.apply(backing, data_only)?;
            let bytes = overlay.unsynced_bytes();
            self.unsynced.remove(&ino);
            self.unsynced_bytes = self.unsynced_bytes.saturating_sub(bytes);
        } else if data_only {
            backing.sync_data()?;
        } else {
            backing.sync_all()?;
        }
        Ok(())
    }

    fn forget_unsynced(&mut self, ino: u64) {
        if let Some(overlay) = self.unsynced.remove(&ino) {
            self.unsynced_bytes = self.unsynced_bytes.saturating_sub(overlay.unsynced_bytes());
        }
    }

    /// An unlinked file's unsynced state goes once nothing has it open (nothing can reach it).
    fn forget_if_unreachable(&mut self, ino: u64) {
        let open = self.handles.values().any(|open| open.ino == ino);
        if !open && self.inodes.path(ino).is_none() {
            self.forget_unsynced(ino);
        }
    }

    /// Does a directory operation on `name` in `parent`: `operation` gets the journal and the
    /// entry's backing path, does the change and logs its undo. Returns the relative path.
    fn change_entry<T>(
        &mut self,
        parent: INodeNo,
        name: &OsStr,
        operation: impl FnOnce(&mut DirectoryJournal, &Path) -> io::Result<T>,
    ) -> Result<(PathBuf, T), Errno> {
        let path = self.child_path(parent, name)?;
        let made = operation(&mut self.journal, &self.backing_root.join(&path))?;
        Ok((path, made))
    }

    /// Unlink or rmdir: the entry moves to the journal's trash (power loss brings it back); its
    /// inode numbers go; a file's unsynced state goes once no handle has it open.
    fn remove_entry(
        &mut self,
        parent: INodeNo,
        name: &OsStr,
        directory: bool,
    ) -> Result<(), Errno> {
        let (path, ()) = self.change_entry(parent, name, |journal, path| {
            let metadata = std::fs::symlink_metadata(path)?;
            match (directory, metadata.is_dir()) {
                (true, false) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                (false, true) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
                (true, true) if std::fs::read_dir(path)?.next().is_some() => {
                    return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY))
                }
                _ => {}
            }
            journal.move_aside(path)
        })?;
        for ino in self.inodes.remove(&path) {
            self.forget_if_unreachable(ino);
        }
        Ok(())
    }

    /// Rename `from` to `to` (both relative); a replaced target moves to the trash first.
    fn rename_entry(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        if from == to {
            return Ok(());
        }
        let (from_backing, to_backing) = (self.backing_path(from), self.backing_path(to));
        let from_is_dir = std::fs::symlink_metadata(&from_backing)?.is_dir();
        let replaced = match std::fs::symlink_metadata(&to_backing) {
            Ok(target) => {
                match (from_is_dir, target.is_dir()) {
                    (false, true) => return Err(Errno::EISDIR),
                    (true, false) => return Err(Errno::ENOTDIR),
                    (true, true) if std::fs::read_dir(&to_backing)?.next().is_some() => {
                        return Err(Errno::ENOTEMPTY)
                    }
                    _ => {}
                }
                self.journal.move_aside(&to_backing)?;
                true
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => false,
            Err(error) => return Err(error.into()),
        };
        if let Err(error) = std::fs::rename(&from_backing, &to_backing) {
            if replaced {
                self.journal.restore_last()?;
            }
            return Err(error.into());
        }
        self.journal.renamed(&from_backing, &to_backing);
        for ino in self.inodes.rename(from, to) {
            self.forget_if_unreachable(ino);
        }
        Ok(())
    }

    /// Fails with ENOSPC unless the unsynced bytes and `len` more fit in the backing file
    /// system's free space: as delayed allocation reserves space at write time, a full disk
    /// fails the write, not a later fsync (or the write-back at unmount).
    fn reserve_space(&self, len: u64) -> Result<(), Errno> {
        let stat = rustix::fs::statvfs(&self.backing_root)
            .map_err(|errno| Errno::from_i32(errno.raw_os_error()))?;
        let available = stat.f_bavail.saturating_mul(stat.f_frsize);
        if self.unsynced_bytes.saturating_add(len) > available {
            Err(Errno::ENOSPC)
        } else {
            Ok(())
        }
    }

    /// What every fsync and fsyncdir does first: fail on a failing disk, else commit every
    /// directory operation before it (a journal commit).
    fn commit_for_fsync(&mut self) -> Result<(), Errno> {
        self.check_writable()?;
        self.journal.commit()?;
        Ok(())
    }

    fn set_size(&mut self, ino: u64, backing: &File, size: u64) -> Result<(), Errno> {
        self.check_writable()?;
        let overlay = self.overlay(ino, backing)?;
        let cut_bytes = overlay.set_size(size);
        self.unsynced_bytes = self.unsynced_bytes.saturating_sub(cut_bytes);
        Ok(())
    }
}

fn time(seconds: i64, nanoseconds: i64) -> SystemTime {
    let nanoseconds = u32::try_from(nanoseconds).unwrap_or(0);
    match u64::try_from(seconds) {
        Ok(seconds) => UNIX_EPOCH + Duration::new(seconds, nanoseconds),
        Err(_) => UNIX_EPOCH,
    }
}

fn file_type(file_type: std::fs::FileType) -> FileType {
    FileType::from_std(file_type).unwrap_or(FileType::RegularFile)
}

fn system_time(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Inode numbers for paths relative to the backing root; the root is inode 1. Numbers are
/// never reused while mounted; an unlinked file's number stays valid for its open handles.
#[derive(Debug)]
struct InodeTable {
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
}

impl InodeTable {
    fn new() -> InodeTable {
        let root = PathBuf::new();
        InodeTable {
            paths: HashMap::from([(INodeNo::ROOT.0, root.clone())]),
            inos: HashMap::from([(root, INodeNo::ROOT.0)]),
            next_ino: INodeNo::ROOT.0 + 1,
        }
    }

    fn path(&self, ino: u64) -> Option<&PathBuf> {
        self.paths.get(&ino)
    }

    /// Forgets every path but the root's (numbers keep counting up: none is reused).
    fn forget_all(&mut self) {
        self.paths.retain(|ino, _| *ino == INodeNo::ROOT.0);
        self.inos.retain(|_, ino| *ino == INodeNo::ROOT.0);
    }

    fn ino_for(&mut self, relative: &Path) -> u64 {
        if let Some(ino) = self.inos.get(relative) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(relative.to_path_buf(), ino);
        self.paths.insert(ino, relative.to_path_buf());
        ino
    }

    /// Forgets `relative` and everything under it; returns the inodes it had.
    fn remove(&mut self, relative: &Path) -> Vec<u64> {
        let gone: Vec<PathBuf> = self
            .inos
            .keys()
            .filter(|path| path.starts_with(relative))
            .cloned()
            .collect();
        gone.iter()
            .filter_map(|path| self.inos.remove(path))
            .inspect(|ino| {
                self.paths.remove(ino);
            })
            .collect()
    }

    /// Moves `from` and everything under it to `to`; returns the inodes `to` replaced.
    fn rename(&mut self, from: &Path, to: &Path) -> Vec<u64> {
        let replaced = self.remove(to);
        let moved: Vec<PathBuf> = self
            .inos
            .keys()
            .filter(|path| path.starts_with(from))
            .cloned()
            .collect();
        for old in moved {
            if let (Some(ino), Ok(rest)) = (self.inos.remove(&old), old.strip_prefix(from)) {
                // `join("")` would add a trailing slash, which names a directory.
                let new = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
                self.paths.insert(ino, new.clone());
                self.inos.insert(new, ino);
            }
        }
        replaced
    }
}

/// The FUSE side: a handle on [`Shared`].
#[derive(Debug)]
pub struct FaultFs {
    shared: Arc<Shared>,
}

impl FaultFs {
    /// The file system serving `shared`.
    pub fn new(shared: Arc<Shared>) -> FaultFs {
        FaultFs { shared }
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&NO_CACHE, &attr, Generation(0)),
        Err(errno) => reply.error(errno),
    }
}

fn reply_attr(reply: ReplyAttr, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.attr(&NO_CACHE, &attr),
        Err(errno) => reply.error(errno),
    }
}

/// Every open file bypasses the kernel's page cache, so reads always come here and see exactly
/// the unsynced state (after power loss too). Runnel does not mmap its files.
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.shared.lock();
        let result = state
            .child_path(parent, name)
            .and_then(|path| state.attr(&path));
        reply_entry(reply, result);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut state = self.shared.lock();
        let result = (|| {
            if let Some(open) = fh.and_then(|fh| state.handles.get(&fh.0)) {
                let metadata = open.backing.metadata()?;
                return Ok(state.attr_from(open.ino, &metadata));
            }
            let path = state.relative_path(ino)?;
            state.attr(&path)
        })();
        reply_attr(reply, result);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.shared.lock();
        let result = (|| {
            // The caller's handle when it gave one (ftruncate of an unlinked file), else the path.
            let backing = match fh.and_then(|fh| state.handles.get(&fh.0)) {
                Some(open) => Arc::clone(&open.backing),
                None => Arc::new(File::open(state.backing_path(&state.relative_path(ino)?))?),
            };
            if let Some(size) = size {
                state.set_size(ino.0, &backing, size)?;
            }
            if let Some(mode) = mode {
                backing.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::fchown(&backing, uid, gid)?;
            }
            if atime.is_some() || mtime.is_some() {
                let mut times = std::fs::FileTimes::new();
                if let Some(atime) = atime {
                    times = times.set_accessed(system_time(atime));
                }
                if let Some(mtime) = mtime {
                    times = times.set_modified(system_time(mtime));
                }
                backing.set_times(times)?;
            }
            let metadata = backing.metadata()?;
            Ok(state.attr_from(ino.0, &metadata))
        })();
        reply_attr(reply, result);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.shared.lock();
        let result = state
            .change_entry(parent, name, |journal, path| {
                std::fs::DirBuilder::new()
                    .mode(mode & !umask)
                    .create(path)?;
                journal.created(path);
                Ok(())
            })
            .and_then(|(path, ())| state.attr(&path));
        reply_entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.shared.lock().remove_entry(parent, name, false);
        reply_empty(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.shared.lock().remove_entry(parent, name, true);
        reply_empty(reply, result);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.shared.lock();
        let result = (|| {
            if !flags.is_empty() {
                return Err(Errno::EINVAL);
            }
            let from = state.child_path(parent, name)?;
            let to = state.child_path(newparent, newname)?;
            state.rename_entry(&from, &to)
        })();
        reply_empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.shared.lock();
        let result = (|| {
            let path = state.backing_path(&state.relative_path(ino)?);
            // Always read-write: an fsync must be able to apply the overlay whatever the
            // caller's mode (the kernel enforces the caller's mode on its own descriptor).
            let backing = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .or_else(|_| OpenOptions::new().read(true).open(&path))?;
            Ok(state.add_handle(ino.0, backing))
        })();
        match result {
            Ok(fh) => reply.opened(fh, OPEN_FLAGS),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.shared.lock();
        let result = (|| {
            let open = state.open_file(fh)?;
            let data = match state.unsynced.get(&ino.0) {
                Some(overlay) => overlay.read(&open.backing, offset, u64::from(size))?,
                None => UnsyncedFile::new(open.backing.metadata()?.len()).read(
                    &open.backing,
                    offset,
                    u64::from(size),
                )?,
            };
            Ok::<_, Errno>(data)
        })();
        match result {
            Ok(data) => reply.data(&data),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.shared.lock();
        let result = (|| {
            state.check_writable()?;
            state.reserve_space(data.len() as u64)?;
            let backing = Arc::clone(&state.open_file(fh)?.backing);
            let added = state.overlay(ino.0, &backing)?.write(offset, data);
            state.unsynced_bytes += added;
            if state.unsynced_bytes > state.unsynced_bytes_max {
                // Memory pressure: written back like a kernel's dirty pages (survives power loss).
                state.sync_file(ino.0, &backing, true)?;
                state.written_back_files += 1;
                eprintln!(
                    "runnel-faultfs: unsynced bytes over the cap of {}: wrote inode {} back",
                    state.unsynced_bytes_max, ino.0
                );
            }
            u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
        })();
        match result {
            Ok(written) => reply.written(written),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() does not sync: unsynced data stays unsynced, as in a page cache.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.shared.lock();
        state.handles.remove(&fh.0);
        state.forget_if_unreachable(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.shared.lock();
        let result = (|| {
            let backing = Arc::clone(&state.open_file(fh)?.backing);
            state.commit_for_fsync()?;
            state.sync_file(ino.0, &backing, datasync)
        })();
        reply_empty(reply, result);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.shared.lock();
        let result = (|| {
            let relative = state.relative_path(ino)?;
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(state.backing_path(&relative))? {
                let entry = entry?;
                if relative.as_os_str().is_empty() && entry.file_name() == TRASH_NAME {
                    continue;
                }
                entries.push((
                    relative.join(entry.file_name()),
                    file_type(entry.file_type()?),
                ));
            }
            let fh = state.next_handle;
            state.next_handle += 1;
            state.directories.insert(fh, entries);
            Ok::<_, Errno>(FileHandle(fh))
        })();
        match result {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = self.shared.lock();
        let Some(entries) = state.directories.get(&fh.0).cloned() else {
            reply.error(Errno::EBADF);
            return;
        };
        let parent = state
            .relative_path(ino)
            .ok()
            .and_then(|path| path.parent().map(|parent| state.inodes.ino_for(parent)))
            .unwrap_or(INodeNo::ROOT.0);
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".").to_os_string()),
            (parent, FileType::Directory, OsStr::new("..").to_os_string()),
        ];
        let named = entries.iter().filter_map(|(path, kind)| {
            let name = path.file_name()?.to_os_string();
            Some((state.inodes.ino_for(path), *kind, name))
        });
        let all: Vec<_> = dots.into_iter().chain(named).collect();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, (child, kind, name)) in all.into_iter().enumerate().skip(start) {
            if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.lock().directories.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.shared.lock();
        let result = (|| {
            let path = state.backing_path(&state.relative_path(ino)?);
            state.commit_for_fsync()?;
            File::open(path)?.sync_all()?;
            Ok(())
        })();
        reply_empty(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let state = self.shared.lock();
        match rustix::fs::statvfs(&state.backing_root) {
            Ok(stat) => {
                // The unsynced bytes are reserved (see reserve_space): not free any more.
                let reserved_blocks = state.unsynced_bytes.div_ceil(stat.f_frsize.max(1));
                reply.statfs(
                    stat.f_blocks,
                    stat.f_bfree.saturating_sub(reserved_blocks),
                    stat.f_bavail.saturating_sub(reserved_blocks),
                    stat.f_files,
                    stat.f_ffree,
                    u32::try_from(stat.f_bsize).unwrap_or(4096),
                    u32::try_from(stat.f_namemax).unwrap_or(255),
                    u32::try_from(stat.f_frsize).unwrap_or(4096),
                );
            }
            Err(errno) => reply.error(Errno::from_i32(errno.raw_os_error())),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.shared.lock();
        let result = (|| {
            state.check_writable()?;
            let mut options = OpenOptions::new();
            options.read(true).write(true).mode(mode & !umask);
            if flags & libc::O_EXCL != 0 {
                options.create_new(true);
            } else {
                options.create(true);
            }
            let (path, backing) = state.change_entry(parent, name, |journal, path| {
                let existed = std::fs::symlink_metadata(path).is_ok();
                let backing = options.open(path)?;
                if !existed {
                    journal.created(path);
                }
                Ok(backing)
            })?;
            let attr = state.attr(&path)?;
            // O_TRUNC on an existing file is a size change like any other: unsynced.
            if flags & libc::O_TRUNC != 0 && attr.size > 0 {
                state.set_size(attr.ino.0, &backing, 0)?;
            }
            let attr = state.attr(&path)?;
            let fh = state.add_handle(attr.ino.0, backing);
            Ok::<_, Errno>((attr, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(&NO_CACHE, &attr, Generation(0), fh, OPEN_FLAGS),
            Err(errno) => reply.error(errno),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut state = self.shared.lock();
        let result = (|| {
            // Only plain allocation, which can only grow the file; no holes punched.
            if mode != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let backing = Arc::clone(&state.open_file(fh)?.backing);
            let end = offset.saturating_add(length);
            let size = match state.unsynced.get(&ino.0) {
                Some(overlay) => overlay.size_bytes(),
                None => backing.metadata()?.len(),
            };
            if end > size {
                state.set_size(ino.0, &backing, end)?;
            }
            Ok(())
        })();
        reply_empty(reply, result);
    }
}

/// Fails unless `path` is a directory (the backing root must exist before mounting).
pub fn check_backing_root(path: &Path) -> io::Result<()> {
    if std::fs::metadata(path)?.is_dir() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} is not a directory",
            path.display()
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rename_moves_a_path_its_children_and_replaces_the_target() {
        let mut inodes = InodeTable::new();
        let temp = inodes.ino_for(Path::new("checkpoint.tmp"));
        let old = inodes.ino_for(Path::new("checkpoint"));
        let dir = inodes.ino_for(Path::new("d"));
        let child = inodes.ino_for(Path::new("d/segment.log"));
        assert_eq!(
            inodes.rename(Path::new("checkpoint.tmp"), Path::new("checkpoint")),
            [old]
        );
        assert_eq!(inodes.path(temp).unwrap(), Path::new("checkpoint"));
        assert_eq!(inodes.ino_for(Path::new("checkpoint")), temp);
        assert!(inodes.path(old).is_none());
        inodes.rename(Path::new("d"), Path::new("e"));
        assert_eq!(inodes.path(dir).unwrap(), Path::new("e"));
        assert_eq!(inodes.path(child).unwrap(), Path::new("e/segment.log"));
        assert_eq!(inodes.remove(Path::new("e")).len(), 2);
        assert_eq!(inodes.path(INodeNo::ROOT.0).unwrap(), Path::new(""));
    }
}
