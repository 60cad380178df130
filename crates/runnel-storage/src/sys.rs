//! The two Linux calls the log needs that `std` does not offer: starting and awaiting the
//! write-out of a file's dirty pages without a device cache flush (`sync_file_range`), and the
//! type of the filesystem a file lives on (`fstatfs`). The only `unsafe` code in the
//! workspace: both calls take a file descriptor borrowed from a live `File` and, for
//! `fstatfs`, a buffer owned by the caller's stack frame.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

/// Filesystems whose fdatasync always ends with a cache flush of the data device, and on which
/// overwriting blocks a completed fdatasync allocated changes no metadata an fdatasync must
/// write: ext2/3/4 (one magic) and XFS. Not the copy-on-write ones (btrfs, ZFS), where an
/// overwrite allocates new blocks.
const IN_PLACE_FILESYSTEMS: [i64; 2] = [0xEF53, 0x5846_5342];

/// Whether `file` lives on one of [`IN_PLACE_FILESYSTEMS`].
pub(crate) fn overwrites_in_place(file: &File) -> io::Result<bool> {
    let mut stat = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `file` keeps the descriptor open for the call; `stat` is a writable `statfs`
    // that fstatfs fills completely when it returns 0.
    let stat = unsafe {
        if libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        stat.assume_init()
    };
    // `f_type` is a signed word of platform width; the magic numbers fit in 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let filesystem = stat.f_type as i64;
    Ok(IN_PLACE_FILESYSTEMS.contains(&filesystem))
}

/// Starts writing every dirty page of `file` to the device, without waiting.
pub(crate) fn start_write_out(file: &File) -> io::Result<()> {
    sync_file_range(file, libc::SYNC_FILE_RANGE_WRITE)
}

/// Writes every dirty page of `file` to the device and waits until the device has them
/// (in its volatile cache: durable only after a cache flush, see the caller).
pub(crate) fn finish_write_out(file: &File) -> io::Result<()> {
    sync_file_range(
        file,
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
    )
}

/// `sync_file_range` over the whole file (offset 0, length 0 = to the end).
fn sync_file_range(file: &File, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: `file` keeps the descriptor open for the call, which takes no pointers.
    let result = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
