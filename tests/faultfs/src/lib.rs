//! `runnel-faultfs`: a FUSE passthrough of a backing directory that keeps every file's
//! unsynced writes in memory and drops them on command — power loss for the chaos harness
//! (issue 24), in the spirit of LazyFS.
//!
//! # Model
//!
//! - **File data and size** (write, truncate/ftruncate, `O_TRUNC`, fallocate growth) stay in
//!   memory per file ([`overlay::UnsyncedFile`]) until that file is fsynced (`fsync` or
//!   `fdatasync`): then they are applied to the backing file, which is fsynced. Reads see the
//!   unsynced state (files are opened with direct I/O, so the kernel's page cache never serves
//!   a stale copy). `close()` does not sync. `sync_file_range` makes nothing durable: with
//!   direct I/O the kernel holds no dirty pages for it, and it never reaches the file system
//!   — as on a real disk, where only fsync does. (FUSE reports its own `f_type` to `fstatfs`,
//!   so Runnel's storage takes its per-log `fdatasync` path here, never the shared
//!   device-flush path it uses on ext4/XFS.)
//! - **Directory operations** (create, mkdir, rename — over an existing file too — unlink,
//!   rmdir) reach the backing directory at once and are logged with their undo
//!   ([`journal::DirectoryJournal`]). The next fsync, fdatasync or fsyncdir of *anything* on
//!   the mount commits all of them, as ext4 and XFS commit their whole running journal
//!   transaction on fsync. Weaker than "durable at once", stronger than ext4 in one way: ext4
//!   also commits its journal every few seconds on its own; here only an fsync does.
//! - **Power loss** (`drop-unsynced`) forgets every file's unsynced data and size changes and
//!   undoes the uncommitted directory operations, newest first: a file created after the last
//!   fsync is gone, an unsynced rename is reverted (the replaced file is back), an unlinked
//!   file is back with its synced content. The backing directory then holds exactly what was
//!   made durable.
//! - **Clean unmount** (SIGTERM or SIGINT) writes everything back, as a kernel syncs a file
//!   system it unmounts.
//! - **Bounded memory**: when the unsynced bytes of the mount exceed the cap, the file being
//!   written is written back (applied and fdatasynced) as a kernel does under memory pressure,
//!   so its data survives power loss (its directory entry still needs a commit); `stats`
//!   counts these write-backs and stderr names them.
//! - **Disk fault** (`fail-writes on`): writes, creates, size changes and fsyncs fail with EIO.
//!
//! Stop the programs using the mount before power loss (the harness kills runnel, then drops,
//! then restarts it): data a still-running process writes after the drop is simply unsynced
//! again.
//!
//! The control socket's commands are in [`control`].

pub mod control;
pub mod fs;
pub mod journal;
pub mod overlay;
