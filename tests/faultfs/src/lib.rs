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
//!   a stale copy). `close()` does not sync. `sync_file_range` needs no handling: with direct
//!   I/O the kernel holds no dirty pages for it to write out, and it never reaches the file
//!   system, so it makes nothing durable here — as on a real disk, where only fsync does.
//! - **Power loss** (`drop-unsynced`) forgets every file's unsynced data and size changes; the
//!   backing directory keeps what was fsynced.
//! - **Directory operations** (create, mkdir, rename — over an existing file too — unlink,
//!   rmdir) are applied to the backing directory at once, followed by an fsync of the
//!   directories they changed: a journalled-metadata model, stronger than ext4 (which may lose
//!   an unsynced rename or create). A file created and never fsynced survives power loss with
//!   size 0 (the size it had when its directory entry was made durable).
//! - **Bounded memory**: when the unsynced bytes of the mount exceed the cap, the file being
//!   written is written back (applied and fdatasynced) as a kernel does under memory pressure,
//!   so its data survives power loss; `stats` counts these write-backs and stderr names them.
//! - **Disk fault** (`fail-writes on`): writes, creates, size changes and fsyncs fail with EIO.
//!
//! The control socket's commands are in [`control`].

pub mod control;
pub mod fs;
pub mod overlay;
