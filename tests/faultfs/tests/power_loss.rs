//! The self-test issue 24 asks for: through a real mount, `drop-unsynced` drops exactly the
//! bytes and size changes no fsync covered, keeps every fsynced byte, and undoes the directory
//! operations (create, rename, unlink, mkdir, rmdir) that no later fsync committed (the crate
//! docs give the model).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

use common::{can_mount, FaultFs, Result};

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    Ok(data)
}

fn append(path: &std::path::Path, data: &[u8], sync: bool) -> Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(data)?;
    if sync {
        file.sync_data()?;
    }
    Ok(())
}

#[test]
fn drop_unsynced_loses_exactly_the_unfsynced_bytes() -> Result<()> {
    let Some(mut fs) =
        FaultFs::mount_unless_skipped("drop_unsynced_loses_exactly_the_unfsynced_bytes", &[])?
    else {
        return Ok(());
    };
    let a = fs.mount_point().join("a.log");
    let b = fs.mount_point().join("b.log");
    append(&a, b"synced-1;", true)?;
    append(&a, b"unsynced-2;", false)?;
    append(&b, b"never synced", false)?;
    // Readers see the unsynced data (the page cache); the backing files do not hold it yet.
    assert_eq!(read(&a)?, b"synced-1;unsynced-2;");
    assert_eq!(read(&b)?, b"never synced");
    assert_eq!(std::fs::metadata(&a)?.len(), 20);
    assert_eq!(read(&fs.backing().join("a.log"))?, b"synced-1;");
    // 2 files, 23 bytes unsynced, none written back, 1 directory operation (b's create).
    assert_eq!(fs.command("stats")?, "ok 2 23 0 1");

    assert_eq!(fs.drop_unsynced()?, (2, 23));
    assert_eq!(
        read(&a)?,
        b"synced-1;",
        "fsynced bytes kept, the rest dropped"
    );
    assert_eq!(std::fs::metadata(&a)?.len(), 9);
    // No fsync came after b was created: its creation is undone with its data.
    assert!(!b.exists(), "b was created after the last fsync: gone");
    assert_eq!(fs.command("stats")?, "ok 0 0 0 0");
    assert_eq!(fs.drop_unsynced()?, (0, 0), "nothing left to drop");

    // A write over synced bytes, then fsynced, survives; one after it does not.
    let mut file = OpenOptions::new().read(true).write(true).open(&a)?;
    std::os::unix::fs::FileExt::write_all_at(&file, b"S", 0)?;
    file.sync_all()?;
    file.write_all(b"x")?; // at offset 0 of the descriptor: over the S
    drop(file);
    assert_eq!(read(&a)?, b"xynced-1;");
    fs.drop_unsynced()?;
    assert_eq!(read(&a)?, b"Synced-1;");
    fs.unmount()?;
    Ok(())
}

#[test]
fn truncates_and_directory_operations_are_undone_unless_an_fsync_followed() -> Result<()> {
    let Some(mut fs) = FaultFs::mount_unless_skipped(
        "truncates_and_directory_operations_are_undone_unless_an_fsync_followed",
        &[],
    )?
    else {
        return Ok(());
    };
    let dir = fs.mount_point();
    let hundred: Vec<u8> = (0..100u8).collect();

    // Unsynced truncate: dropped, the synced length comes back.
    let c = dir.join("c");
    std::fs::write(&c, &hundred)?;
    File::open(&c)?.sync_all()?;
    OpenOptions::new().write(true).open(&c)?.set_len(10)?;
    assert_eq!(read(&c)?, &hundred[..10]);
    fs.drop_unsynced()?;
    assert_eq!(read(&c)?, hundred);

    // Fsynced truncate, then an unsynced regrowth: the file is the truncated one, and bytes cut
    // off never come back (they read as zeros while unsynced, and are gone after the drop).
    let file = OpenOptions::new().write(true).open(&c)?;
    file.set_len(10)?;
    file.sync_all()?;
    file.set_len(20)?;
    drop(file);
    let mut expected = hundred[..10].to_vec();
    expected.resize(20, 0);
    assert_eq!(read(&c)?, expected);
    fs.drop_unsynced()?;
    assert_eq!(read(&c)?, &hundred[..10]);

    // The checkpoint pattern: write a temp file, fsync it, rename it over the old one. Without
    // an fsync after the rename, power loss undoes it: the old file and the temp file are back.
    let checkpoint = dir.join("checkpoint");
    std::fs::write(&checkpoint, b"old")?;
    File::open(&checkpoint)?.sync_all()?;
    let temp = dir.join("checkpoint.tmp");
    std::fs::write(&temp, b"new")?;
    File::open(&temp)?.sync_all()?;
    std::fs::rename(&temp, &checkpoint)?;
    assert_eq!(read(&checkpoint)?, b"new");
    fs.drop_unsynced()?;
    assert_eq!(
        read(&checkpoint)?,
        b"old",
        "an uncommitted rename is undone"
    );
    assert_eq!(read(&temp)?, b"new");
    // With an fsync of the directory after the rename, it is durable.
    std::fs::rename(&temp, &checkpoint)?;
    File::open(&dir)?.sync_all()?;
    fs.drop_unsynced()?;
    assert_eq!(read(&checkpoint)?, b"new");
    assert!(!temp.exists());

    // A file created and renamed after the last fsync: both undone, the data dropped.
    let unsynced = dir.join("unsynced");
    std::fs::write(&unsynced, b"data")?;
    let renamed = dir.join("renamed");
    std::fs::rename(&unsynced, &renamed)?;
    assert_eq!(read(&renamed)?, b"data");
    assert_eq!(fs.drop_unsynced()?, (1, 4));
    assert!(!renamed.exists() && !unsynced.exists());

    // A file created, then any fsync (here of another file): the creation is committed, as a
    // journalling file system commits every metadata change before the fsync.
    let created = dir.join("created");
    std::fs::write(&created, b"data")?;
    File::open(&checkpoint)?.sync_all()?;
    fs.drop_unsynced()?;
    assert_eq!(
        read(&created)?,
        b"",
        "the creation is committed, the data never was"
    );
    fs.unmount()?;
    Ok(())
}

#[test]
fn passthrough_serves_directories_unlink_and_statfs() -> Result<()> {
    let Some(mut fs) =
        FaultFs::mount_unless_skipped("passthrough_serves_directories_unlink_and_statfs", &[])?
    else {
        return Ok(());
    };
    let topic = fs.mount_point().join("topic-0");
    std::fs::create_dir(&topic)?;
    for name in ["00000000000000000000.log", "00000000000000000000.index"] {
        std::fs::write(topic.join(name), name)?;
    }
    let mut names: Vec<String> = std::fs::read_dir(&topic)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    assert_eq!(
        names,
        ["00000000000000000000.index", "00000000000000000000.log"]
    );
    File::open(&topic)?.sync_all()?; // fsyncdir: commits the creates, not the files' data
    let not_empty = std::fs::remove_dir(&topic).map_err(|e| e.raw_os_error());
    assert_eq!(not_empty, Err(Some(libc::ENOTEMPTY)));
    std::fs::remove_file(topic.join("00000000000000000000.index"))?;
    std::fs::remove_file(topic.join("00000000000000000000.log"))?;
    std::fs::remove_dir(&topic)?;
    assert!(!topic.exists());
    assert_eq!(
        std::fs::read_dir(fs.mount_point())?.count(),
        0,
        "the journal's trash is not shown"
    );
    // Power loss undoes the removals (no fsync after them); the data was never synced.
    assert_eq!(
        fs.drop_unsynced()?,
        (0, 0),
        "an unlinked file's data is forgotten"
    );
    for name in ["00000000000000000000.log", "00000000000000000000.index"] {
        assert_eq!(read(&topic.join(name))?, b"");
    }
    // Removed again and committed by an fsync of the root: gone for good.
    std::fs::remove_file(topic.join("00000000000000000000.index"))?;
    std::fs::remove_file(topic.join("00000000000000000000.log"))?;
    std::fs::remove_dir(&topic)?;
    File::open(fs.mount_point())?.sync_all()?;
    fs.drop_unsynced()?;
    assert!(!topic.exists());
    let output = std::process::Command::new("stat")
        .args(["-f", "-c", "%T %S"])
        .arg(fs.mount_point())
        .output()?;
    assert!(output.status.success(), "statfs on the mount failed");
    fs.unmount()?;
    Ok(())
}

#[test]
fn fail_writes_turns_writes_and_fsyncs_into_eio() -> Result<()> {
    let Some(mut fs) =
        FaultFs::mount_unless_skipped("fail_writes_turns_writes_and_fsyncs_into_eio", &[])?
    else {
        return Ok(());
    };
    let path = fs.mount_point().join("f");
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    file.write_all(b"before")?;
    assert_eq!(fs.command("fail-writes on")?, "ok");
    let write = file.write_all(b"during");
    assert_eq!(write.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)));
    let sync = file.sync_data();
    assert_eq!(sync.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)));
    assert_eq!(fs.command("fail-writes off")?, "ok");
    file.write_all(b";after")?;
    file.sync_data()?;
    drop(file);
    fs.drop_unsynced()?;
    assert_eq!(read(&path)?, b"before;after");
    assert!(fs.command("bogus")?.starts_with("error"));
    fs.unmount()?;
    Ok(())
}

#[test]
fn over_the_cap_unsynced_bytes_are_written_back_and_survive() -> Result<()> {
    let Some(mut fs) = FaultFs::mount_unless_skipped(
        "over_the_cap_unsynced_bytes_are_written_back_and_survive",
        &["--unsynced-bytes-max", "1000"],
    )?
    else {
        return Ok(());
    };
    let path = fs.mount_point().join("big");
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    file.sync_all()?; // commits the creation
    file.write_all(&[7u8; 600])?;
    file.write_all(&[8u8; 600])?; // over the cap: written back
    file.write_all(&[9u8; 10])?; // unsynced again
    drop(file);
    assert_eq!(fs.command("stats")?, "ok 1 10 1 0");
    assert_eq!(fs.drop_unsynced()?, (1, 10));
    let data = read(&path)?;
    assert_eq!(data.len(), 1200);
    assert!(data[..600].iter().all(|b| *b == 7) && data[600..].iter().all(|b| *b == 8));
    fs.unmount()?;
    Ok(())
}

#[test]
fn clean_unmount_writes_unsynced_data_back() -> Result<()> {
    let Some(mut fs) =
        FaultFs::mount_unless_skipped("clean_unmount_writes_unsynced_data_back", &[])?
    else {
        return Ok(());
    };
    std::fs::create_dir(fs.mount_point().join("d"))?;
    std::fs::write(fs.mount_point().join("d/f"), b"never fsynced")?;
    assert!(!fs.backing().join("d/f").exists() || read(&fs.backing().join("d/f"))?.is_empty());
    fs.unmount()?;
    // As a kernel syncs a file system it unmounts: the data and the names are in the backing dir.
    assert_eq!(read(&fs.backing().join("d/f"))?, b"never fsynced");
    let names: Vec<_> = std::fs::read_dir(fs.backing())?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names.len(), 2, "d and the (empty) trash: {names:?}");
    Ok(())
}

/// Unmounts the tmpfs on drop, whatever happened.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_backing_disk_fails_the_write_not_a_later_fsync() -> Result<()> {
    if !can_mount("a_full_backing_disk_fails_the_write_not_a_later_fsync") {
        return Ok(());
    }
    let dir = tempfile::Builder::new()
        .prefix("runnel-faultfs-tmpfs-")
        .tempdir()?;
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "runnel-faultfs-test"])
        .arg(dir.path())
        .status()?;
    assert!(status.success(), "mount -t tmpfs failed");
    let _tmpfs = Tmpfs(dir.path().to_path_buf());
    let mut fs = FaultFs::mount_over(Some(dir.path()), &[])?;
    let path = fs.mount_point().join("f");
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    let available = || -> Result<u64> {
        let output = std::process::Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(fs.mount_point())
            .output()?;
        let text = String::from_utf8(output.stdout)?;
        let numbers: Vec<u64> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        Ok(numbers[0] * numbers[1])
    };
    let before = available()?;
    file.write_all(&[1u8; 128 * 1024])?; // fits (unsynced: reserved, not written)
    assert_eq!(
        before - available()?,
        128 * 1024,
        "statfs counts reserved bytes as used"
    );
    let full = file.write_all(&[2u8; 192 * 1024]);
    assert_eq!(full.map_err(|e| e.raw_os_error()), Err(Some(libc::ENOSPC)));
    file.sync_data()?; // the reserved bytes can always be written
    drop(file);
    assert_eq!(read(&path)?.len(), 128 * 1024);
    fs.unmount()?;
    Ok(())
}
