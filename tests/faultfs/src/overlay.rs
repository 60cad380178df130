//! One file's writes that have not been fsynced yet: the "page cache" of the fault-injecting
//! file system. The backing file is left untouched while an [`UnsyncedFile`] exists; reads
//! see the backing bytes with the unsynced writes and size changes laid over them; an fsync
//! applies the overlay to the backing file ([`UnsyncedFile::apply`]); power loss just forgets it.
//!
//! It knows files and byte offsets only, never FUSE.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A write not yet fsynced: `data` at byte `offset` of the file.
#[derive(Debug)]
struct UnsyncedWrite {
    offset: u64,
    data: Vec<u8>,
}

impl UnsyncedWrite {
    fn end(&self) -> u64 {
        self.offset.saturating_add(self.data.len() as u64)
    }
}

/// The unsynced state of one file over its backing file.
///
/// Content model: the backing file's bytes below `low_water_size` (bytes at or past it were cut
/// off by a truncate since the last sync and read as zeros if the file grows again), zero
/// extended to `size_bytes`, overlaid by `writes` in the order they happened (each already cut
/// at every later truncate).
#[derive(Debug)]
pub struct UnsyncedFile {
    backing_size_bytes: u64,
    low_water_size_bytes: u64,
    size_bytes: u64,
    writes: Vec<UnsyncedWrite>,
}

impl UnsyncedFile {
    /// An empty overlay over a backing file of `backing_size_bytes`.
    pub fn new(backing_size_bytes: u64) -> UnsyncedFile {
        UnsyncedFile {
            backing_size_bytes,
            low_water_size_bytes: backing_size_bytes,
            size_bytes: backing_size_bytes,
            writes: Vec::new(),
        }
    }

    /// The file's size as readers see it.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Bytes of data held (what power loss would drop), not counting size changes.
    pub fn unsynced_bytes(&self) -> u64 {
        self.writes
            .iter()
            .map(|write| write.data.len() as u64)
            .sum()
    }

    /// Records a write of `data` at `offset`; returns how many bytes the overlay grew by.
    /// An append right after the previous write extends it, so a log's appends stay one entry.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> u64 {
        let end = offset.saturating_add(data.len() as u64);
        match self.writes.last_mut() {
            Some(last) if last.end() == offset => last.data.extend_from_slice(data),
            _ => self.writes.push(UnsyncedWrite {
                offset,
                data: data.to_vec(),
            }),
        }
        self.size_bytes = self.size_bytes.max(end);
        data.len() as u64
    }

    /// Records a size change (truncate or extension); returns how many bytes of held writes it
    /// cut off.
    pub fn set_size(&mut self, size_bytes: u64) -> u64 {
        let mut cut_bytes = 0;
        if size_bytes < self.size_bytes {
            for write in &mut self.writes {
                if write.end() > size_bytes {
                    let keep = size_bytes.saturating_sub(write.offset);
                    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
                    let before = write.data.len();
                    write.data.truncate(keep);
                    cut_bytes += (before - write.data.len()) as u64;
                }
            }
            self.writes.retain(|write| !write.data.is_empty());
            self.low_water_size_bytes = self.low_water_size_bytes.min(size_bytes);
        }
        self.size_bytes = size_bytes;
        cut_bytes
    }

    /// Reads up to `len` bytes at `offset` as a reader sees them (short at the end of file).
    pub fn read(&self, backing: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size_bytes);
        if end <= offset {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; usize::try_from(end - offset).map_err(io::Error::other)?];
        let backing_end = end
            .min(self.low_water_size_bytes)
            .min(self.backing_size_bytes);
        if backing_end > offset {
            let backing_len = usize::try_from(backing_end - offset).map_err(io::Error::other)?;
            let into = buf.get_mut(..backing_len).ok_or_else(out_of_range)?;
            read_fully_at(backing, into, offset)?;
        }
        for write in &self.writes {
            let from = write.offset.max(offset);
            let to = write.end().min(end);
            if from >= to {
                continue;
            }
            let source = slice(&write.data, from - write.offset, to - write.offset)?;
            let target = slice_mut(&mut buf, from - offset, to - offset)?;
            target.copy_from_slice(source);
        }
        Ok(buf)
    }

    /// Applies the overlay to `backing` and syncs it (`fdatasync` when `data_only`, else
    /// `fsync`): afterwards the backing file holds what readers saw, durably.
    pub fn apply(&self, backing: &File, data_only: bool) -> io::Result<()> {
        if self.low_water_size_bytes < self.backing_size_bytes {
            backing.set_len(self.low_water_size_bytes)?;
        }
        for write in &self.writes {
            backing.write_all_at(&write.data, write.offset)?;
        }
        if backing.metadata()?.len() != self.size_bytes {
            backing.set_len(self.size_bytes)?;
        }
        if data_only {
            backing.sync_data()
        } else {
            backing.sync_all()
        }
    }
}

/// `read_exact_at` that reads zeros past the backing file's end instead of failing (the
/// backing file is never shorter than expected unless someone else changed it).
fn read_fully_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = buf.get_mut(done..).ok_or_else(out_of_range)?;
        let read = file.read_at(rest, offset + done as u64)?;
        if read == 0 {
            break;
        }
        done += read;
    }
    Ok(())
}

fn slice(data: &[u8], from: u64, to: u64) -> io::Result<&[u8]> {
    let from = usize::try_from(from).map_err(io::Error::other)?;
    let to = usize::try_from(to).map_err(io::Error::other)?;
    data.get(from..to).ok_or_else(out_of_range)
}

fn slice_mut(data: &mut [u8], from: u64, to: u64) -> io::Result<&mut [u8]> {
    let from = usize::try_from(from).map_err(io::Error::other)?;
    let to = usize::try_from(to).map_err(io::Error::other)?;
    data.get_mut(from..to).ok_or_else(out_of_range)
}

fn out_of_range() -> io::Error {
    io::Error::other("overlay range outside its buffer")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::io::Write;

    fn backing(content: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(content).unwrap();
        file
    }

    /// The model: a Vec the same operations are applied to directly.
    fn check(file: &File, overlay: &UnsyncedFile, model: &[u8]) {
        assert_eq!(overlay.size_bytes(), model.len() as u64);
        assert_eq!(overlay.read(file, 0, 1 << 20).unwrap(), model);
        for (offset, len) in [(0, 3), (2, 5), (7, 100), (100, 4)] {
            let expected: Vec<u8> = model.iter().skip(offset).take(len).copied().collect();
            assert_eq!(
                overlay.read(file, offset as u64, len as u64).unwrap(),
                expected
            );
        }
    }

    #[test]
    fn reads_see_writes_and_truncates_while_the_backing_file_is_untouched() {
        let file = backing(b"0123456789");
        let mut overlay = UnsyncedFile::new(10);
        overlay.write(8, b"abcd");
        overlay.write(12, b"ef");
        assert_eq!(
            overlay.writes.len(),
            1,
            "an append extends the previous write"
        );
        check(&file, &overlay, b"01234567abcdef");
        assert_eq!(overlay.set_size(4), 6);
        check(&file, &overlay, b"0123");
        overlay.set_size(7);
        check(&file, &overlay, b"0123\0\0\0");
        overlay.write(5, b"Z");
        check(&file, &overlay, b"0123\0Z\0");
        assert_eq!(overlay.unsynced_bytes(), 1);
        let mut on_disk = [0u8; 16];
        let read = file.read_at(&mut on_disk, 0).unwrap();
        assert_eq!(
            &on_disk[..read],
            b"0123456789",
            "the backing file is untouched"
        );
    }

    #[test]
    fn apply_makes_the_backing_file_what_readers_saw() {
        let file = backing(b"0123456789");
        let mut overlay = UnsyncedFile::new(10);
        overlay.write(2, b"xy");
        overlay.set_size(3);
        overlay.set_size(6);
        overlay.write(5, b"END");
        let seen = overlay.read(&file, 0, 100).unwrap();
        overlay.apply(&file, true).unwrap();
        let after = UnsyncedFile::new(file.metadata().unwrap().len());
        assert_eq!(after.read(&file, 0, 100).unwrap(), seen);
        assert_eq!(seen, b"01x\0\0END");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod model_tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write { offset: u64, data: Vec<u8> },
        SetSize(u64),
        Sync,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..300, proptest::collection::vec(any::<u8>(), 0..80))
                .prop_map(|(offset, data)| Op::Write { offset, data }),
            2 => (0u64..300).prop_map(Op::SetSize),
            1 => Just(Op::Sync),
        ]
    }

    fn apply_to_model(model: &mut Vec<u8>, op: &Op) {
        match op {
            Op::Write { offset, data } => {
                let offset = *offset as usize;
                if model.len() < offset + data.len() {
                    model.resize(offset + data.len(), 0);
                }
                model[offset..offset + data.len()].copy_from_slice(data);
            }
            Op::SetSize(size) => model.resize(*size as usize, 0),
            Op::Sync => {}
        }
    }

    proptest! {
        /// Reads always equal a Vec the same operations were applied to; after power loss
        /// (dropping the overlay) the backing file equals the Vec as of the last sync.
        #[test]
        fn overlay_matches_a_vec_model_and_power_loss_keeps_the_last_sync(
            initial in proptest::collection::vec(any::<u8>(), 0..200),
            ops in proptest::collection::vec(op(), 0..40),
        ) {
            let backing = tempfile::tempfile().unwrap();
            backing.write_all_at(&initial, 0).unwrap();
            let mut overlay = UnsyncedFile::new(initial.len() as u64);
            let mut model = initial.clone();
            let mut synced = initial;
            for op in &ops {
                apply_to_model(&mut model, op);
                match op {
                    Op::Write { offset, data } => {
                        overlay.write(*offset, data);
                    }
                    Op::SetSize(size) => {
                        overlay.set_size(*size);
                    }
                    Op::Sync => {
                        overlay.apply(&backing, true).unwrap();
                        overlay = UnsyncedFile::new(backing.metadata().unwrap().len());
                        synced = model.clone();
                    }
                }
                prop_assert_eq!(overlay.read(&backing, 0, 1 << 20).unwrap(), model.clone());
                prop_assert_eq!(
                    overlay.unsynced_bytes(),
                    overlay.writes.iter().map(|w| w.data.len() as u64).sum::<u64>()
                );
            }
            // Power loss: the overlay is forgotten.
            let after = UnsyncedFile::new(backing.metadata().unwrap().len());
            prop_assert_eq!(after.read(&backing, 0, 1 << 20).unwrap(), synced);
        }
    }
}
