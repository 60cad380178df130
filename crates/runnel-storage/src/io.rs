//! `Storage`: the seam between the log and the file system. Every file and directory
//! operation of this crate goes through it, to one of two backends:
//!
//! - the real file system (what the broker uses): each call is one `match` and the `std` or
//!   `libc` call it always was, with no allocation of its own;
//! - [`SimDisk`], an in-memory disk for tests that keeps, for every file, its durable content
//!   apart from the writes no fsync has covered yet, and for every directory its durable entries
//!   apart from the creates, renames and removes no directory fsync has covered. A simulated
//!   power loss ([`SimDisk::crash`]) keeps the durable part plus a seeded prefix of the rest
//!   (the last write of that prefix possibly torn), the way TigerBeetle's and FoundationDB's
//!   storage simulations and redb's crash test build a crash image.
//!
//! Either backend can carry a [`FaultInjection`]: one write (ENOSPC) or fsync (EIO) that fails.
//! On the simulated disk a failed fsync also does what Linux does ("fsyncgate"): the unsynced
//! writes stay visible to reads but are dropped from what reaches the disk, and the next
//! fsync succeeds without them.
//!
//! This module knows files, bytes and directory entries; it knows nothing of segments.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::UNIX_EPOCH;

use crate::error::{IoResultExt, StorageError};
use crate::sys;

/// Where a log's files live: the real file system, or a [`SimDisk`]; optionally with one
/// injected fault. Cheap to clone (an `Arc` at most).
#[derive(Debug, Clone, Default)]
pub struct Storage {
    backend: Backend,
    faults: Option<Arc<FaultInjection>>,
}

#[derive(Debug, Clone, Default)]
enum Backend {
    #[default]
    Real,
    Sim(Arc<SimDisk>),
}

impl Storage {
    /// The real file system.
    pub fn real() -> Storage {
        Storage::default()
    }

    /// The simulated disk `disk` (tests; the replication simulator).
    pub fn simulated(disk: Arc<SimDisk>) -> Storage {
        Storage {
            backend: Backend::Sim(disk),
            faults: None,
        }
    }

    /// This storage with `faults` injected (a testing knob: see
    /// `storage.fault.injection` in docs/configuration.md).
    pub fn with_faults(self, faults: FaultInjection) -> Storage {
        Storage {
            faults: Some(Arc::new(faults)),
            ..self
        }
    }

    /// The fault injection that applies to `path`, if any.
    fn faults_for(&self, path: &Path) -> Option<Arc<FaultInjection>> {
        self.faults
            .as_ref()
            .filter(|faults| faults.applies_to(path))
            .map(Arc::clone)
    }

    /// Opens `path` for reading and writing, creating it empty if missing.
    pub(crate) fn open_file(&self, path: &Path) -> Result<DataFile, StorageError> {
        self.open(path, false)
    }

    /// Creates `path` empty (replacing any content) for writing.
    pub(crate) fn create_file(&self, path: &Path) -> Result<DataFile, StorageError> {
        self.open(path, true)
    }

    fn open(&self, path: &Path, truncate: bool) -> Result<DataFile, StorageError> {
        let inner = match &self.backend {
            Backend::Real => FileInner::Real(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(truncate)
                    .open(path)
                    .at(path)?,
            ),
            Backend::Sim(disk) => FileInner::Sim(disk.open(path, truncate).at(path)?),
        };
        Ok(DataFile {
            inner,
            faults: self.faults_for(path),
        })
    }

    /// The whole content of `path` (`NotFound` when missing).
    pub(crate) fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        match &self.backend {
            Backend::Real => std::fs::read(path),
            Backend::Sim(disk) => disk.read_file(path),
        }
    }

    /// Whether `path` exists.
    pub(crate) fn exists(&self, path: &Path) -> bool {
        match &self.backend {
            Backend::Real => path.exists(),
            Backend::Sim(disk) => disk.exists(path),
        }
    }

    /// Renames `from` to `to` (same directory), replacing `to`. Durable after [`Storage::sync_dir`].
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Real => std::fs::rename(from, to).at(to),
            Backend::Sim(disk) => disk.rename(from, to).at(to),
        }
    }

    /// Removes the file `path`. Durable after [`Storage::sync_dir`].
    pub(crate) fn remove_file(&self, path: &Path) -> io::Result<()> {
        match &self.backend {
            Backend::Real => std::fs::remove_file(path),
            Backend::Sim(disk) => disk.remove_file(path),
        }
    }

    /// Creates `dir` and any missing parents. Durable after a [`Storage::sync_dir`] of each
    /// new directory's parent.
    pub(crate) fn create_dir_all(&self, dir: &Path) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Real => std::fs::create_dir_all(dir).at(dir),
            Backend::Sim(disk) => disk.create_dir_all(dir).at(dir),
        }
    }

    /// fsync of the directory `dir`: its creates, renames and removes become durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<(), StorageError> {
        if let Some(faults) = self.faults_for(dir) {
            faults.check(FaultKind::FsyncError).at(dir)?;
        }
        match &self.backend {
            Backend::Real => File::open(dir).and_then(|d| d.sync_all()).at(dir),
            Backend::Sim(disk) => disk.sync_dir(dir).at(dir),
        }
    }

    /// The paths of the entries of `dir`, in no particular order.
    pub(crate) fn list_dir(&self, dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
        match &self.backend {
            Backend::Real => std::fs::read_dir(dir)
                .at(dir)?
                .map(|item| item.map(|entry| entry.path()).at(dir))
                .collect(),
            Backend::Sim(disk) => disk.list_dir(dir).at(dir),
        }
    }
}

/// An open file of a [`Storage`]. Positional I/O only; the caller names the path in errors.
#[derive(Debug)]
pub(crate) struct DataFile {
    inner: FileInner,
    faults: Option<Arc<FaultInjection>>,
}

#[derive(Debug)]
enum FileInner {
    Real(File),
    Sim(SimFile),
}

impl DataFile {
    fn check(&self, kind: FaultKind) -> io::Result<()> {
        match &self.faults {
            Some(faults) => faults.check(kind),
            None => Ok(()),
        }
    }

    /// Writes `parts` one after the other from `position`, with as few system calls as the
    /// kernel allows (one `writev` for up to 1,024 parts, unless it writes short). Only one
    /// writer per file may call this: it moves the file position.
    pub(crate) fn write_all_vectored_at(&self, parts: &[&[u8]], position: u64) -> io::Result<()> {
        self.check(FaultKind::WriteError)?;
        match &self.inner {
            FileInner::Real(file) => {
                let mut file = file;
                file.seek(SeekFrom::Start(position))?;
                let mut slices: Vec<IoSlice<'_>> = parts
                    .iter()
                    .filter(|part| !part.is_empty())
                    .map(|part| IoSlice::new(part))
                    .collect();
                let mut left = slices.as_mut_slice();
                while !left.is_empty() {
                    match file.write_vectored(left) {
                        Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                        Ok(written) => IoSlice::advance_slices(&mut left, written),
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok(())
            }
            FileInner::Sim(file) => {
                let mut at = position;
                for part in parts {
                    file.write_at(part, at)?;
                    at += part.len() as u64;
                }
                Ok(())
            }
        }
    }

    /// Writes `bytes` at `position`.
    pub(crate) fn write_all_at(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        self.check(FaultKind::WriteError)?;
        match &self.inner {
            FileInner::Real(file) => file.write_all_at(bytes, position),
            FileInner::Sim(file) => file.write_at(bytes, position),
        }
    }

    /// Fills `buf` from `position`.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        match &self.inner {
            FileInner::Real(file) => file.read_exact_at(buf, position),
            FileInner::Sim(file) => file.read_exact_at(buf, position),
        }
    }

    /// Sets the file's length.
    pub(crate) fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        match &self.inner {
            FileInner::Real(file) => file.set_len(len_bytes),
            FileInner::Sim(file) => file.set_len(len_bytes),
        }
    }

    /// The file's length in bytes.
    pub(crate) fn len(&self) -> io::Result<u64> {
        match &self.inner {
            FileInner::Real(file) => Ok(file.metadata()?.len()),
            FileInner::Sim(file) => file.len(),
        }
    }

    /// The file's modification time in ms since the epoch, where the backend keeps one.
    pub(crate) fn modified_ms(&self) -> Option<i64> {
        match &self.inner {
            FileInner::Real(file) => file
                .metadata()
                .ok()?
                .modified()
                .ok()?
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            FileInner::Sim(_) => None,
        }
    }

    /// fdatasync: the file's data and length become durable.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        self.sync(|file| file.sync_data())
    }

    /// fsync: as [`DataFile::sync_data`], plus the file's other metadata.
    pub(crate) fn sync_all(&self) -> io::Result<()> {
        self.sync(|file| file.sync_all())
    }

    fn sync(&self, real: impl FnOnce(&File) -> io::Result<()>) -> io::Result<()> {
        let injected = self.check(FaultKind::FsyncError);
        match &self.inner {
            FileInner::Real(file) => injected.and_then(|()| real(file)),
            FileInner::Sim(file) => match injected {
                Ok(()) => file.sync(),
                Err(error) => {
                    file.fail_sync();
                    Err(error)
                }
            },
        }
    }

    /// Starts writing the file's dirty pages to the device, without waiting.
    pub(crate) fn start_write_out(&self) -> io::Result<()> {
        match &self.inner {
            FileInner::Real(file) => sys::start_write_out(file),
            FileInner::Sim(_) => Ok(()),
        }
    }

    /// Writes the file's dirty pages to the device and waits for it (durable only once the
    /// device's cache is flushed). An injected fsync error fails here too.
    pub(crate) fn finish_write_out(&self) -> io::Result<()> {
        let injected = self.check(FaultKind::FsyncError);
        match &self.inner {
            FileInner::Real(file) => injected.and_then(|()| sys::finish_write_out(file)),
            FileInner::Sim(file) => {
                if injected.is_err() {
                    file.fail_sync();
                }
                injected
            }
        }
    }

    /// The device of the file's filesystem if it overwrites allocated blocks in place
    /// (see `sys::overwrites_in_place`); `None` on the simulated disk, which models fdatasync
    /// only.
    pub(crate) fn in_place_device(&self) -> io::Result<Option<u64>> {
        match &self.inner {
            FileInner::Real(file) => Ok(if sys::overwrites_in_place(file)? {
                Some(file.metadata()?.dev())
            } else {
                None
            }),
            FileInner::Sim(_) => Ok(None),
        }
    }
}

/// Which operation a [`FaultInjection`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// An fsync, fdatasync, directory fsync or write-out fails with EIO.
    FsyncError,
    /// A write fails with ENOSPC, having written nothing.
    WriteError,
}

/// One injected failure: the operation of `kind` on a path containing `path_contains` that
/// comes after `after` successful ones fails; every other operation succeeds. Parsed from
/// `fsync-error-after:N[:PATH_PART]` or `write-error-after:N[:PATH_PART]`.
#[derive(Debug)]
pub struct FaultInjection {
    kind: FaultKind,
    after: u64,
    path_contains: String,
    seen: AtomicU64,
}

impl FaultInjection {
    /// Fails the operation of `kind` that comes after `after` others, on paths containing
    /// `path_contains` (every path when empty).
    pub fn new(kind: FaultKind, after: u64, path_contains: &str) -> FaultInjection {
        FaultInjection {
            kind,
            after,
            path_contains: path_contains.to_string(),
            seen: AtomicU64::new(0),
        }
    }

    fn applies_to(&self, path: &Path) -> bool {
        path.to_str()
            .is_some_and(|p| p.contains(self.path_contains.as_str()))
    }

    /// Counts an operation of `kind`; errs if it is the one to fail.
    fn check(&self, kind: FaultKind) -> io::Result<()> {
        if kind != self.kind || self.seen.fetch_add(1, Ordering::AcqRel) != self.after {
            return Ok(());
        }
        tracing::warn!(?kind, path_contains = %self.path_contains, "injecting a storage fault");
        Err(match kind {
            FaultKind::FsyncError => io::Error::from_raw_os_error(libc::EIO),
            FaultKind::WriteError => io::Error::from_raw_os_error(libc::ENOSPC),
        })
    }
}

/// A fault injection string that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid fault injection {0:?}: expected fsync-error-after:N[:PATH_PART] or write-error-after:N[:PATH_PART]")]
pub struct InvalidFaultInjection(String);

impl FromStr for FaultInjection {
    type Err = InvalidFaultInjection;

    fn from_str(text: &str) -> Result<FaultInjection, InvalidFaultInjection> {
        let invalid = || InvalidFaultInjection(text.to_string());
        let mut fields = text.splitn(3, ':');
        let kind = match fields.next() {
            Some("fsync-error-after") => FaultKind::FsyncError,
            Some("write-error-after") => FaultKind::WriteError,
            _ => return Err(invalid()),
        };
        let after = fields
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(invalid)?;
        Ok(FaultInjection::new(
            kind,
            after,
            fields.next().unwrap_or(""),
        ))
    }
}

/// An in-memory disk that loses, on a simulated crash, whatever no fsync made durable (see
/// the module docs). Every path must lie under its root directory, which always exists.
///
/// Crash points: every mutating operation (write, set_len, fsync, create, rename, remove)
/// counts one; [`SimDisk::crash_after`] makes the disk lose power when the count reaches a
/// number: from then on every operation fails with EIO, as a machine losing power mid-way
/// would leave it, until [`SimDisk::crash`] builds the crash image. Files opened before a crash
/// fail every operation after it.
#[derive(Debug)]
pub struct SimDisk {
    state: Mutex<SimState>,
}

#[derive(Debug)]
struct SimState {
    root: PathBuf,
    /// Bumped by every crash: handles from an earlier epoch are dead.
    epoch: u64,
    next_inode: u64,
    files: HashMap<u64, SimFileData>,
    /// Every directory under (and including) the root, by path.
    dirs: HashMap<PathBuf, SimDir>,
    operations: u64,
    crash_at: Option<u64>,
    powered_off: bool,
}

#[derive(Debug, Default)]
struct SimFileData {
    /// What a crash keeps for sure.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Writes since the last fsync, oldest first; `durable` plus all of them is `current`,
    /// unless an fsync failed (then `current` also holds writes that are lost).
    unsynced: Vec<FileWrite>,
}

#[derive(Debug)]
enum FileWrite {
    Bytes { at: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl FileWrite {
    fn apply(&self, content: &mut Vec<u8>) {
        match self {
            FileWrite::Bytes { at, bytes } => write_into(content, *at, bytes),
            FileWrite::SetLen(len) => content.resize(usize::try_from(*len).unwrap_or(0), 0),
        }
    }
}

fn write_into(content: &mut Vec<u8>, at: u64, bytes: &[u8]) {
    let start = usize::try_from(at).unwrap_or(usize::MAX);
    let end = start.saturating_add(bytes.len());
    if content.len() < end {
        content.resize(end, 0);
    }
    if let Some(target) = content.get_mut(start..end) {
        target.copy_from_slice(bytes);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

/// One directory: entries by name, durable and current, and the changes between them (each
/// change is atomic: a rename is one).
#[derive(Debug, Default)]
struct SimDir {
    durable: BTreeMap<OsString, Node>,
    current: BTreeMap<OsString, Node>,
    unsynced: Vec<Vec<(OsString, Option<Node>)>>,
}

impl SimDir {
    fn change(&mut self, change: Vec<(OsString, Option<Node>)>) {
        for (name, node) in &change {
            match node {
                Some(node) => self.current.insert(name.clone(), *node),
                None => self.current.remove(name),
            };
        }
        self.unsynced.push(change);
    }
}

fn powered_off() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

/// `path` split into its parent directory and its name.
fn split(path: &Path) -> io::Result<(&Path, OsString)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name.to_os_string())),
        _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
    }
}

impl SimDisk {
    /// An empty disk whose root directory is `root`.
    pub fn new(root: &Path) -> Arc<SimDisk> {
        let mut dirs = HashMap::new();
        dirs.insert(root.to_path_buf(), SimDir::default());
        Arc::new(SimDisk {
            state: Mutex::new(SimState {
                root: root.to_path_buf(),
                epoch: 0,
                next_inode: 0,
                files: HashMap::new(),
                dirs,
                operations: 0,
                crash_at: None,
                powered_off: false,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // Every change under this lock completes before it is released; a panic in a test
        // cannot leave half of one behind.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mutating operations done since the disk was made.
    pub fn operations(&self) -> u64 {
        self.state().operations
    }

    /// Loses power when the operation count reaches `operations` (see the type docs).
    pub fn crash_after(&self, operations: u64) {
        let mut state = self.state();
        state.crash_at = Some(operations);
        if state.operations >= operations {
            state.powered_off = true;
        }
    }

    /// Whether the disk has lost power (a [`SimDisk::crash_after`] point was reached).
    pub fn is_powered_off(&self) -> bool {
        self.state().powered_off
    }

    /// A power loss and restart: every file and directory keeps its durable part plus a prefix
    /// of its unsynced changes chosen by `seed` (none of them one time in four; the last file
    /// write kept may be torn at any byte), then files and directories no longer reachable
    /// from the root disappear. Open files die; the disk is powered again.
    pub fn crash(&self, seed: u64) {
        self.crash_keeping(Some(SplitMix64(seed)));
    }

    /// A power loss that keeps only what was made durable: no unsynced change survives.
    pub fn crash_to_durable(&self) {
        self.crash_keeping(None);
    }

    fn crash_keeping(&self, rng: Option<SplitMix64>) {
        let mut draws = CrashDraws(rng);
        let mut state = self.state();

        let mut inodes: Vec<u64> = state.files.keys().copied().collect();
        inodes.sort_unstable();
        for inode in inodes {
            if let Some(file) = state.files.get_mut(&inode) {
                let unsynced = std::mem::take(&mut file.unsynced);
                let kept = draws.prefix_len(unsynced.len());
                for write in unsynced.iter().take(kept) {
                    write.apply(&mut file.durable);
                }
                if let Some(FileWrite::Bytes { at, bytes }) = unsynced.get(kept) {
                    if draws.below(2) == 1 {
                        let torn = draws.below(bytes.len() as u64 + 1) as usize;
                        write_into(
                            &mut file.durable,
                            *at,
                            bytes.get(..torn).unwrap_or_default(),
                        );
                    }
                }
                file.current = file.durable.clone();
            }
        }
        let mut paths: Vec<PathBuf> = state.dirs.keys().cloned().collect();
        paths.sort_unstable();
        for path in paths {
            if let Some(dir) = state.dirs.get_mut(&path) {
                let unsynced = std::mem::take(&mut dir.unsynced);
                let kept = draws.prefix_len(unsynced.len());
                for change in unsynced.into_iter().take(kept) {
                    for (name, node) in change {
                        match node {
                            Some(node) => dir.durable.insert(name, node),
                            None => dir.durable.remove(&name),
                        };
                    }
                }
                dir.current = dir.durable.clone();
            }
        }
        // Keep what the root reaches.
        let mut reachable_dirs = vec![state.root.clone()];
        let mut reachable_files = Vec::new();
        let mut next = 0;
        while let Some(path) = reachable_dirs.get(next).cloned() {
            next += 1;
            if let Some(dir) = state.dirs.get(&path) {
                for (name, node) in &dir.current {
                    match node {
                        Node::Dir => reachable_dirs.push(path.join(name)),
                        Node::File(inode) => reachable_files.push(*inode),
                    }
                }
            }
        }
        state.dirs.retain(|path, _| reachable_dirs.contains(path));
        // A directory entry whose directory did not survive (created, never synced) goes too.
        let live: Vec<PathBuf> = state.dirs.keys().cloned().collect();
        for (path, dir) in state.dirs.iter_mut() {
            dir.current
                .retain(|name, node| *node != Node::Dir || live.contains(&path.join(name)));
            dir.durable = dir.current.clone();
        }
        state
            .files
            .retain(|inode, _| reachable_files.contains(inode));
        state.epoch += 1;
        state.crash_at = None;
        state.powered_off = false;
    }

    fn open(self: &Arc<Self>, path: &Path, truncate: bool) -> io::Result<SimFile> {
        let mut state = self.state();
        let (parent, name) = split(path)?;
        let existing = state
            .dirs
            .get(parent)
            .ok_or_else(not_found)?
            .current
            .get(&name)
            .copied();
        let inode = match existing {
            Some(Node::File(inode)) => inode,
            Some(Node::Dir) => return Err(io::Error::from(io::ErrorKind::IsADirectory)),
            None => {
                state.mutate()?;
                let inode = state.next_inode;
                state.next_inode += 1;
                state.files.insert(inode, SimFileData::default());
                if let Some(dir) = state.dirs.get_mut(parent) {
                    dir.change(vec![(name, Some(Node::File(inode)))]);
                }
                inode
            }
        };
        let file = SimFile {
            disk: Arc::clone(self),
            inode,
            epoch: state.epoch,
        };
        drop(state);
        if truncate {
            file.set_len(0)?;
        }
        Ok(file)
    }

    fn lookup(state: &SimState, path: &Path) -> io::Result<Node> {
        if state.dirs.contains_key(path) {
            return Ok(Node::Dir);
        }
        let (parent, name) = split(path)?;
        state
            .dirs
            .get(parent)
            .and_then(|dir| dir.current.get(&name))
            .copied()
            .ok_or_else(not_found)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.state();
        state.powered()?;
        match Self::lookup(&state, path)? {
            Node::File(inode) => Ok(state
                .files
                .get(&inode)
                .map(|f| f.current.clone())
                .unwrap_or_default()),
            Node::Dir => Err(io::Error::from(io::ErrorKind::IsADirectory)),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.state();
        Self::lookup(&state, path).is_ok() || state.root.starts_with(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        let (from_parent, from_name) = split(from)?;
        let (to_parent, to_name) = split(to)?;
        if from_parent != to_parent {
            return Err(io::Error::from(io::ErrorKind::CrossesDevices));
        }
        let node = Self::lookup(&state, from)?;
        state.mutate()?;
        if let Some(dir) = state.dirs.get_mut(from_parent) {
            dir.change(vec![(from_name, None), (to_name, Some(node))]);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let (parent, name) = split(path)?;
        if let Node::Dir = Self::lookup(&state, path)? {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        state.mutate()?;
        if let Some(dir) = state.dirs.get_mut(parent) {
            dir.change(vec![(name, None)]);
        }
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.powered()?;
        if state.root.starts_with(path) {
            return Ok(());
        }
        let relative = path
            .strip_prefix(&state.root)
            .map_err(|_| io::Error::from(io::ErrorKind::PermissionDenied))?
            .to_path_buf();
        let mut current = state.root.clone();
        for component in relative.components() {
            let child = current.join(component);
            if !state.dirs.contains_key(&child) {
                state.mutate()?;
                let name = component.as_os_str().to_os_string();
                if let Some(dir) = state.dirs.get_mut(&current) {
                    dir.change(vec![(name, Some(Node::Dir))]);
                }
                state.dirs.insert(child.clone(), SimDir::default());
            }
            current = child;
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.mutate()?;
        if state.root.starts_with(path) && state.root != path {
            // Above the root: durable by definition.
            return Ok(());
        }
        let dir = state.dirs.get_mut(path).ok_or_else(not_found)?;
        for change in dir.unsynced.drain(..) {
            for (name, node) in change {
                match node {
                    Some(node) => dir.durable.insert(name, node),
                    None => dir.durable.remove(&name),
                };
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.state();
        state.powered()?;
        let dir = state.dirs.get(path).ok_or_else(not_found)?;
        Ok(dir.current.keys().map(|name| path.join(name)).collect())
    }
}

impl SimState {
    fn powered(&self) -> io::Result<()> {
        if self.powered_off {
            Err(powered_off())
        } else {
            Ok(())
        }
    }

    /// Counts a mutating operation, or loses power at the crash point.
    fn mutate(&mut self) -> io::Result<()> {
        self.powered()?;
        if self.crash_at.is_some_and(|at| self.operations >= at) {
            self.powered_off = true;
            return Err(powered_off());
        }
        self.operations += 1;
        Ok(())
    }
}

/// An open file of a [`SimDisk`]: an inode, like a file descriptor (it survives renames and
/// removals of its name), valid until the next crash.
#[derive(Debug)]
struct SimFile {
    disk: Arc<SimDisk>,
    inode: u64,
    epoch: u64,
}

impl SimFile {
    fn with<T>(
        &self,
        mutating: bool,
        f: impl FnOnce(&mut SimFileData) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.disk.state();
        if state.epoch != self.epoch {
            return Err(powered_off());
        }
        if mutating {
            state.mutate()?;
        } else {
            state.powered()?;
        }
        let file = state.files.get_mut(&self.inode).ok_or_else(not_found)?;
        f(file)
    }

    fn write_at(&self, bytes: &[u8], at: u64) -> io::Result<()> {
        self.with(true, |file| {
            write_into(&mut file.current, at, bytes);
            file.unsynced.push(FileWrite::Bytes {
                at,
                bytes: bytes.to_vec(),
            });
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(true, |file| {
            let write = FileWrite::SetLen(len);
            write.apply(&mut file.current);
            file.unsynced.push(write);
            Ok(())
        })
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.with(false, |file| {
            let start = usize::try_from(at).unwrap_or(usize::MAX);
            let source = file
                .current
                .get(start..start.saturating_add(buf.len()))
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(source);
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(false, |file| Ok(file.current.len() as u64))
    }

    fn sync(&self) -> io::Result<()> {
        self.with(true, |file| {
            for write in file.unsynced.drain(..) {
                write.apply(&mut file.durable);
            }
            Ok(())
        })
    }

    /// A failed fsync, as Linux does it: the unsynced writes will never reach the disk (their
    /// pages are marked clean), though reads still see them.
    fn fail_sync(&self) {
        let _ = self.with(false, |file| {
            file.unsynced.clear();
            Ok(())
        });
    }
}

/// A small seeded generator (SplitMix64) for crash images (and the crash sweep's workloads).
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The choices a crash makes: seeded, or none (`None`: keep only what is durable).
struct CrashDraws(Option<SplitMix64>);

impl CrashDraws {
    /// Uniform in `0..bound`; always 0 without a generator.
    fn below(&mut self, bound: u64) -> u64 {
        self.0.as_mut().map_or(0, |rng| rng.next() % bound.max(1))
    }

    /// How many of `len` unsynced changes survive: none one time in four, else any number up
    /// to all; none without a generator.
    fn prefix_len(&mut self, len: usize) -> usize {
        if self.below(4) == 0 {
            0
        } else {
            self.below(len as u64 + 1) as usize
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_synced_data_and_entries_and_drops_the_rest() {
        let root = Path::new("/sim");
        let disk = SimDisk::new(root);
        let storage = Storage::simulated(Arc::clone(&disk));
        storage.create_dir_all(&root.join("d")).unwrap();
        storage.sync_dir(root).unwrap();
        let path = root.join("d/a");
        let file = storage.open_file(&path).unwrap();
        file.write_all_at(b"durable", 0).unwrap();
        file.sync_data().unwrap();
        storage.sync_dir(&root.join("d")).unwrap();
        let other = storage.open_file(&root.join("d/b")).unwrap();
        other.write_all_at(b"x", 0).unwrap();
        other.sync_data().unwrap();
        for seed in 0..64 {
            let disk = SimDisk::new(root);
            let storage = Storage::simulated(Arc::clone(&disk));
            storage.create_dir_all(&root.join("d")).unwrap();
            storage.sync_dir(root).unwrap();
            let file = storage.open_file(&path).unwrap();
            file.write_all_at(b"durable", 0).unwrap();
            file.sync_data().unwrap();
            storage.sync_dir(&root.join("d")).unwrap();
            file.write_all_at(b"-lost", 7).unwrap();
            disk.crash(seed);
            let content = storage.read_file(&path).unwrap();
            assert!(content.starts_with(b"durable"), "seed {seed}");
            assert!(b"durable-lost".starts_with(&content), "seed {seed}");
            assert!(file.len().is_err(), "handles die with the crash");
        }
        // `b` was synced but its directory entry never was: it may vanish, but is never torn.
        disk.crash(1);
        assert_eq!(storage.read_file(&path).unwrap(), b"durable");
        let b = storage.read_file(&root.join("d/b"));
        assert!(b.as_deref().map_or(true, |b| b == b"x"), "{b:?}");
    }

    #[test]
    fn a_failed_fsync_loses_the_writes_it_covered_even_after_a_later_fsync() {
        let root = Path::new("/sim");
        let disk = SimDisk::new(root);
        let storage = Storage::simulated(Arc::clone(&disk)).with_faults(FaultInjection::new(
            FaultKind::FsyncError,
            1,
            "f",
        ));
        let path = root.join("f");
        let file = storage.open_file(&path).unwrap();
        storage.sync_dir(root).unwrap();
        file.write_all_at(b"one", 0).unwrap();
        file.sync_data().unwrap();
        file.write_all_at(b"two", 3).unwrap();
        assert!(file.sync_data().is_err());
        let mut read = [0u8; 6];
        file.read_exact_at(&mut read, 0).unwrap();
        assert_eq!(&read, b"onetwo", "reads still see the lost write");
        file.sync_data().unwrap();
        disk.crash(0);
        assert_eq!(storage.read_file(&path).unwrap(), b"one");
    }

    #[test]
    fn power_is_lost_at_the_crash_point() {
        let root = Path::new("/sim");
        let disk = SimDisk::new(root);
        let storage = Storage::simulated(Arc::clone(&disk));
        let file = storage.open_file(&root.join("f")).unwrap();
        disk.crash_after(disk.operations() + 1);
        file.write_all_at(b"a", 0).unwrap();
        assert!(file.write_all_at(b"b", 1).is_err());
        assert!(disk.is_powered_off());
        assert!(file.sync_data().is_err());
    }

    #[test]
    fn fault_injection_parses() {
        let fault: FaultInjection = "fsync-error-after:3:orders-0/".parse().unwrap();
        assert_eq!(fault.kind, FaultKind::FsyncError);
        assert_eq!(fault.after, 3);
        assert!(fault.applies_to(Path::new("/data/orders-0/0.log")));
        assert!(!fault.applies_to(Path::new("/data/orders-1/0.log")));
        assert!("write-error-after:0".parse::<FaultInjection>().is_ok());
        assert!("fsync-error-after:x".parse::<FaultInjection>().is_err());
        assert!("read-error-after:1".parse::<FaultInjection>().is_err());
    }
}
