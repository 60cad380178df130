//! `LogSegment`: one `<base offset, 20 digits>.log` file of record batches exactly as on the
//! wire, plus its `.index`. A segment knows byte positions and offsets; it does not know about
//! other segments, producers or recovery policy.
//!
//! Publication protocol (why readers need no lock): the single writer writes bytes past the
//! committed size, then stores the new size with `Release`. Readers load the size with
//! `Acquire` and only read below it, so they never see a partially written batch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::batch_header::{BatchHeader, HEADER_SIZE_BYTES};
use crate::error::{BatchDefect, IoResultExt, StorageError};
use crate::io::{DataFile, Storage};
use crate::offset_index::{IndexedBatch, OffsetIndex, ENTRY_SIZE_BYTES};
use crate::read_buffers::ReadBuffer;
use crate::time_index::{TimeIndex, TIME_ENTRY_SIZE_BYTES};

/// Extension of segment data files.
pub(crate) const LOG_EXTENSION: &str = "log";
/// Extension of offset index files.
pub(crate) const INDEX_EXTENSION: &str = "index";
/// Extension of time index files.
pub(crate) const TIME_INDEX_EXTENSION: &str = "timeindex";

/// A block of zeros that zero tails are written from (see [`LogSegment::extend_zero_tail`]).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// `<base offset zero-padded to 20 digits>.<extension>`, Kafka's naming.
pub(crate) fn offset_file_name(offset: i64, extension: &str) -> String {
    format!("{offset:020}.{extension}")
}

/// Milliseconds since the Unix epoch by the wall clock (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether a read may return its first batch whole when that batch alone exceeds the byte
/// limit (KIP-74 grants this to the first batch of a Fetch response, and to nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstBatch {
    /// The first batch is returned even above the limit, so a reader always progresses.
    Whole,
    /// Nothing above the limit: empty if the first batch alone exceeds it.
    WithinLimit,
}

/// One segment of a partition log.
///
/// Invariants: every byte below `size_bytes` belongs to a complete batch; batch offsets in
/// the file strictly increase and lie in `[base_offset, next_offset)`.
#[derive(Debug)]
pub(crate) struct LogSegment {
    base_offset: i64,
    log_path: PathBuf,
    log: DataFile,
    /// Where the segment's files live (the seam, `crate::io`).
    storage: Storage,
    index: OffsetIndex,
    time_index: TimeIndex,
    /// Committed (visible) size of the `.log` in bytes.
    size_bytes: AtomicU64,
    /// Length of the `.log` file: `size_bytes` plus the zero tail written ahead of appends
    /// (see [`LogSegment::extend_zero_tail`]). Only the writer changes it.
    file_len_bytes: AtomicU64,
    /// One past the last offset in this segment.
    next_offset: AtomicI64,
    /// Wall-clock creation time in ms, for `segment_ms` rolling.
    created_at_ms: i64,
    /// How much of the `.log` file's layout a completed fdatasync made durable.
    durable_layout: Mutex<DurableLayout>,
    /// Whether the directory entries of the segment's files are known durable (a directory
    /// fsync since they were created): until then no offset in it may be reported flushed.
    entry_durable: AtomicBool,
    /// Set by the first failed fsync or write-out of the `.log`, held across each: Linux
    /// reports a write-back error once and marks the pages clean, so a later fsync would
    /// "succeed" without them. Every later sync fails instead.
    sync_failed: Mutex<bool>,
    /// The device of the filesystem holding the `.log`, if appends overwriting its durable
    /// layout may be made durable by a write-out and a device cache flush instead of an
    /// fdatasync each (see [`LogSegment::overwrites_durable_layout`]).
    in_place_device: Option<u64>,
}

/// The part of a `.log` file whose blocks and length a completed fdatasync committed, so that
/// writing into it changes no metadata (see [`LogSegment::overwrites_durable_layout`]).
#[derive(Debug, Default)]
struct DurableLayout {
    /// The file length the last completed fdatasync covered, cut by later truncations.
    len_bytes: u64,
    /// Truncations so far: an fdatasync that started before one learns nothing from finishing.
    cuts: u64,
}

/// Locks `mutex`. Every update under the storage crate's locks is published with a single
/// store after it completes, so a panic cannot leave torn state behind: carry on rather than
/// propagate the poison.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogSegment {
    /// Creates a new empty segment starting at `base_offset`, replacing any files of that name.
    pub(crate) fn create(
        storage: &Storage,
        dir: &Path,
        base_offset: i64,
        index_bytes_max: u32,
    ) -> Result<LogSegment, StorageError> {
        let log_path = dir.join(offset_file_name(base_offset, LOG_EXTENSION));
        let log = storage.create_file(&log_path)?;
        let segment = Self::with_file(
            storage,
            dir,
            base_offset,
            log_path,
            log,
            index_bytes_max,
            now_ms(),
        )?;
        segment.index.truncate_to_position(0)?;
        segment.time_index.rebuild(std::iter::empty(), 0)?;
        Ok(segment)
    }

    /// Opens an existing segment. Its contents are not yet trusted: the committed size is the
    /// file length and `next_offset` is `base_offset` until recovery calls
    /// [`LogSegment::set_recovered`].
    pub(crate) fn open(
        storage: &Storage,
        dir: &Path,
        base_offset: i64,
        index_bytes_max: u32,
    ) -> Result<LogSegment, StorageError> {
        let log_path = dir.join(offset_file_name(base_offset, LOG_EXTENSION));
        let log = storage.open_file(&log_path)?;
        let len_bytes = log.len().at(&log_path)?;
        // The creation time is not portable; mtime is never earlier, so at worst the segment
        // rolls a little later than `segment_ms` after a restart, never earlier.
        let created_at_ms = log.modified_ms().unwrap_or_else(now_ms);
        let segment = Self::with_file(
            storage,
            dir,
            base_offset,
            log_path,
            log,
            index_bytes_max,
            created_at_ms,
        )?;
        segment.size_bytes.store(len_bytes, Ordering::Release);
        segment.file_len_bytes.store(len_bytes, Ordering::Release);
        Ok(segment)
    }

    fn with_file(
        storage: &Storage,
        dir: &Path,
        base_offset: i64,
        log_path: PathBuf,
        log: DataFile,
        index_bytes_max: u32,
        created_at_ms: i64,
    ) -> Result<LogSegment, StorageError> {
        let index_path = dir.join(offset_file_name(base_offset, INDEX_EXTENSION));
        let max_entries = index_bytes_max as usize / ENTRY_SIZE_BYTES;
        let time_index_path = dir.join(offset_file_name(base_offset, TIME_INDEX_EXTENSION));
        let max_time_entries = (index_bytes_max as usize / TIME_ENTRY_SIZE_BYTES).max(2);
        let in_place_device = match log.in_place_device() {
            Ok(device) => device,
            Err(error) => {
                tracing::debug!(path = %log_path.display(), %error, "fstatfs failed");
                None
            }
        };
        Ok(LogSegment {
            base_offset,
            log_path,
            log,
            storage: storage.clone(),
            index: OffsetIndex::open(storage, &index_path, max_entries)?,
            time_index: TimeIndex::open(storage, &time_index_path, max_time_entries)?,
            size_bytes: AtomicU64::new(0),
            file_len_bytes: AtomicU64::new(0),
            next_offset: AtomicI64::new(base_offset),
            created_at_ms,
            durable_layout: Mutex::new(DurableLayout::default()),
            entry_durable: AtomicBool::new(false),
            sync_failed: Mutex::new(false),
            in_place_device,
        })
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// One past the last offset stored here (== `base_offset` when empty).
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Committed size in bytes; everything below is complete batches.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Acquire)
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn index(&self) -> &OffsetIndex {
        &self.index
    }

    pub(crate) fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    /// True when either index is full and the segment must roll.
    pub(crate) fn indexes_full(&self) -> bool {
        self.index.is_full() || self.time_index.is_full()
    }

    /// Largest batch max timestamp here and the base offset of the first batch reaching it;
    /// `None` when the segment holds no timestamped batch.
    pub(crate) fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.time_index
            .max_timestamp()
            .map(|(ts, rel)| (ts, self.base_offset.saturating_add(i64::from(rel))))
    }

    /// The timestamp retention judges this segment by: its largest record timestamp, or its
    /// file's modification time when it has none (Kafka's rule).
    pub(crate) fn retention_timestamp_ms(&self) -> i64 {
        match self.max_timestamp() {
            Some((ts, _)) if ts >= 0 => ts,
            _ => self.created_at_ms,
        }
    }

    /// Seals the time index (final max-timestamp entry) and fsyncs it, then closes both index
    /// files until something rewrites them (the cleaner, a truncation);
    /// called when the segment stops being the active one.
    pub(crate) fn seal_indexes(&self) -> Result<(), StorageError> {
        self.write_final_time_entry()?;
        self.sync_sealed_indexes()
    }

    /// The first half of [`LogSegment::seal_indexes`]: writes the time index's final
    /// max-timestamp entry, without syncing it.
    pub(crate) fn write_final_time_entry(&self) -> Result<(), StorageError> {
        self.time_index.seal().map(|_| ())
    }

    /// The second half of [`LogSegment::seal_indexes`]: fsyncs the time index (recovery trusts
    /// the indexes of segments behind the checkpoint) and closes both index files.
    pub(crate) fn sync_sealed_indexes(&self) -> Result<(), StorageError> {
        self.time_index.sync()?;
        self.release_index_files();
        Ok(())
    }

    /// Closes both index files until the next write reopens them: a segment that is not
    /// being written holds only its `.log` open.
    pub(crate) fn release_index_files(&self) {
        self.time_index.release_file();
        self.index.release_file();
    }

    /// Checks the time index of a fully trusted segment, or rebuilds it from the batch headers
    /// of `[0, end_bytes)` when `trusted` is false or the file is missing or damaged.
    pub(crate) fn ensure_time_index(
        &self,
        end_bytes: u64,
        index_interval_bytes: u32,
        trusted: bool,
    ) -> Result<(), StorageError> {
        let relative_end =
            u64::try_from(self.next_offset().saturating_sub(self.base_offset)).unwrap_or(0);
        if trusted && self.time_index.is_sane(end_bytes == 0, relative_end) {
            return Ok(());
        }
        if trusted {
            tracing::warn!(path = %self.time_index.path().display(), "time index missing or damaged; rebuilding from the log");
        }
        let batches = self
            .headers(0, end_bytes)
            .map(|item| {
                item.map(|(_, header)| {
                    (
                        header.max_timestamp,
                        self.relative_offset(header.base_offset),
                        header.size_bytes(),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.time_index.rebuild(batches, index_interval_bytes)
    }

    /// Position and header of the first batch whose max timestamp is `>= target_ms`.
    pub(crate) fn find_batch_by_timestamp(
        &self,
        target_ms: i64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let end_bytes = self.size_bytes();
        let from_offset = self
            .base_offset
            .saturating_add(i64::from(self.time_index.lookup(target_ms)));
        let from = u64::from(self.index.lookup(self.relative_offset(from_offset)));
        for item in self.headers(from, end_bytes) {
            let (position, header) = item?;
            if header.max_timestamp >= target_ms {
                return Ok(Some((position, header)));
            }
        }
        Ok(None)
    }

    /// The whole batch described by `header` at `position`.
    pub(crate) fn read_batch(
        &self,
        position: u64,
        header: &BatchHeader,
    ) -> Result<Vec<u8>, StorageError> {
        let mut buf = vec![0u8; usize::try_from(header.size_bytes()).unwrap_or(0)];
        self.read_exact_at(&mut buf, position)?;
        Ok(buf)
    }

    /// Current length of the `.log` file in bytes (may exceed the committed size during
    /// recovery, before the tail is validated).
    pub(crate) fn file_len_bytes(&self) -> Result<u64, StorageError> {
        self.log.len().at(&self.log_path)
    }

    /// Whether a directory fsync has covered the creation of this segment's files.
    pub(crate) fn entry_durable(&self) -> bool {
        self.entry_durable.load(Ordering::Acquire)
    }

    /// Records that a directory fsync covered the creation of this segment's files.
    pub(crate) fn mark_entry_durable(&self) {
        self.entry_durable.store(true, Ordering::Release);
    }

    /// Where this segment's files live.
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// End of the zeros written ahead of the committed size (== `size_bytes` without a tail).
    pub(crate) fn zeroed_end_bytes(&self) -> u64 {
        self.file_len_bytes.load(Ordering::Acquire)
    }

    /// Writes zeros from the end of the file (or of the committed data, if that is further) up
    /// to `end_bytes`, so that later appends overwrite blocks that are already allocated and
    /// inside the file size. An fdatasync of such an overwrite has no metadata to commit: on
    /// ext4 it is one data write and a cache flush instead of data, journal and commit block,
    /// which is most of the cost of acks=all on small requests. The zeros reach the disk with
    /// the next fsync, which therefore costs more once per tail. Called by the writer.
    ///
    /// A crash leaves the tail behind the last batch, where recovery cuts it like any torn tail
    /// (zeros are not a batch); a roll and [`LogSegment::trim_zero_tail`] cut it before the
    /// segment is sealed or closed.
    pub(crate) fn extend_zero_tail(&self, end_bytes: u64) -> Result<(), StorageError> {
        let from = self.zeroed_end_bytes().max(self.size_bytes());
        let Some(len) = end_bytes.checked_sub(from).filter(|len| *len > 0) else {
            return Ok(());
        };
        let whole_blocks = usize::try_from(len / ZEROS.len() as u64).unwrap_or(0);
        let rest = usize::try_from(len % ZEROS.len() as u64).unwrap_or(0);
        let mut parts: Vec<&[u8]> = vec![ZEROS.as_slice(); whole_blocks];
        parts.push(ZEROS.get(..rest).unwrap_or_default());
        if let Err(error) = self.write_all_vectored_at(&parts, from) {
            self.cut_back_to(from);
            return Err(error);
        }
        self.file_len_bytes.store(end_bytes, Ordering::Release);
        Ok(())
    }

    /// Cuts the zero tail off (the file ends at the committed size again). Called by the
    /// writer before the segment is sealed or the log closed; the caller fsyncs.
    pub(crate) fn trim_zero_tail(&self) -> Result<(), StorageError> {
        let size_bytes = self.size_bytes();
        if self.zeroed_end_bytes() > size_bytes {
            self.cut_file(size_bytes).at(&self.log_path)?;
        }
        Ok(())
    }

    /// Best effort after a failed write: the file ends at `position` again (the committed size,
    /// or the end of the zeros written before a failed extension). Returns whether it does.
    fn cut_back_to(&self, position: u64) -> bool {
        if let Err(cleanup) = self.cut_file(position) {
            tracing::error!(path = %self.log_path.display(), position, %cleanup,
                "could not cut a failed write back off the segment");
            self.file_len_bytes.store(position, Ordering::Release);
            return false;
        }
        true
    }

    /// Truncates the `.log` file to `len_bytes` and forgets any durable layout beyond it.
    /// Holding the layout lock makes the cut atomic for [`LogSegment::sync`].
    fn cut_file(&self, len_bytes: u64) -> std::io::Result<()> {
        let mut layout = lock(&self.durable_layout);
        layout.cuts += 1;
        layout.len_bytes = layout.len_bytes.min(len_bytes);
        self.log.set_len(len_bytes)?;
        self.file_len_bytes.store(len_bytes, Ordering::Release);
        Ok(())
    }

    /// `offset - base_offset` as stored in the index, saturating into `u32`.
    pub(crate) fn relative_offset(&self, offset: i64) -> u32 {
        u32::try_from(offset.saturating_sub(self.base_offset).max(0)).unwrap_or(u32::MAX)
    }

    /// Reads and parses the header of the batch at `position`, requiring the whole batch to
    /// end at or before `end_bytes`. The outer error is I/O; the inner one is a bad batch.
    pub(crate) fn read_header_at(
        &self,
        position: u64,
        end_bytes: u64,
    ) -> Result<Result<BatchHeader, BatchDefect>, StorageError> {
        let available_bytes = end_bytes.saturating_sub(position);
        let mut buf = [0u8; HEADER_SIZE_BYTES];
        let wanted = usize::try_from(available_bytes.min(HEADER_SIZE_BYTES as u64))
            .unwrap_or(HEADER_SIZE_BYTES);
        let head = buf.get_mut(..wanted).unwrap_or_default();
        self.log.read_exact_at(head, position).at(&self.log_path)?;
        let header = match BatchHeader::parse(head) {
            Ok(header) => header,
            Err(defect) => return Ok(Err(defect)),
        };
        if header.size_bytes() > available_bytes {
            return Ok(Err(BatchDefect::Truncated {
                needed_bytes: header.size_bytes(),
                available_bytes,
            }));
        }
        Ok(Ok(header))
    }

    /// Writes `parts` one after the other from `position`, with as few system calls as the
    /// kernel allows (one `writev` for up to 1,024 parts, unless it writes short). Only the
    /// partition's writer writes, under its lock, so the file position is ours to move.
    fn write_all_vectored_at(&self, parts: &[&[u8]], position: u64) -> Result<(), StorageError> {
        self.log
            .write_all_vectored_at(parts, position)
            .at(&self.log_path)
    }

    /// Fills `buf` from the `.log` at `position`.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<(), StorageError> {
        self.log.read_exact_at(buf, position).at(&self.log_path)
    }

    /// Headers of the batches in `[from_position, end_bytes)`, which must be a range of whole
    /// batches: a bad header there is reported as `CorruptSegment`.
    pub(crate) fn headers(&self, from_position: u64, end_bytes: u64) -> HeaderScan<'_> {
        HeaderScan {
            segment: self,
            position: from_position,
            end_bytes,
            failed: false,
        }
    }

    /// Writes `parts` (in order, whole batches described by `headers`, offsets already
    /// assigned) at the end of the segment, indexes them, then publishes the new size and next
    /// offset. On error nothing is published, and the file and both indexes are put back as
    /// they were (best effort: [`FailedAppend::undone`] says whether that worked).
    pub(crate) fn append(
        &self,
        parts: &[&[u8]],
        headers: &[BatchHeader],
        index_interval_bytes: u32,
    ) -> Result<(), FailedAppend> {
        let start = self.size_bytes.load(Ordering::Acquire);
        let size_bytes: u64 = parts.iter().map(|part| part.len() as u64).sum();
        let time_index_mark = self.time_index.mark();
        let written = self.write_and_index(start, parts, headers, index_interval_bytes);
        if let Err(error) = written {
            // Stale index entries beyond `start` would point past the log end.
            let undone = self.cut_back_to(start)
                & self.index.truncate_to_position(start).is_ok()
                & self.time_index.restore(time_index_mark).is_ok();
            return Err(FailedAppend { error, undone });
        }
        if let Some(last) = headers.last() {
            self.next_offset
                .store(last.last_offset().saturating_add(1), Ordering::Release);
        }
        self.size_bytes.store(start + size_bytes, Ordering::Release);
        self.file_len_bytes
            .fetch_max(start + size_bytes, Ordering::AcqRel);
        Ok(())
    }

    fn write_and_index(
        &self,
        start: u64,
        parts: &[&[u8]],
        headers: &[BatchHeader],
        index_interval_bytes: u32,
    ) -> Result<(), StorageError> {
        self.write_all_vectored_at(parts, start)?;
        let mut position = start;
        for header in headers {
            self.index.append_batch(
                IndexedBatch {
                    relative_offset: self.relative_offset(header.base_offset),
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                    size_bytes: header.size_bytes(),
                },
                index_interval_bytes,
            )?;
            self.time_index.append_batch(
                header.max_timestamp,
                self.relative_offset(header.base_offset),
                header.size_bytes(),
                index_interval_bytes,
            )?;
            position += header.size_bytes();
        }
        Ok(())
    }

    /// Recovery only (no readers yet): cuts the file to `size_bytes`, drops index entries
    /// beyond it, and publishes size and next offset.
    pub(crate) fn set_recovered(
        &self,
        size_bytes: u64,
        next_offset: i64,
    ) -> Result<(), StorageError> {
        if self.file_len_bytes()? != size_bytes {
            self.cut_file(size_bytes).at(&self.log_path)?;
        }
        self.index.truncate_to_position(size_bytes)?;
        self.next_offset.store(next_offset, Ordering::Release);
        self.size_bytes.store(size_bytes, Ordering::Release);
        self.file_len_bytes.store(size_bytes, Ordering::Release);
        Ok(())
    }

    /// Cuts the segment at `position` (a batch boundary) durably: the size is published
    /// first (readers stop before the cut), then the `.log` file is cut and fsynced, and both
    /// indexes are cut or rebuilt. `next_offset` is the segment's new end offset.
    pub(crate) fn truncate_to(
        &self,
        position: u64,
        next_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<(), StorageError> {
        self.size_bytes.store(position, Ordering::Release);
        self.next_offset.store(next_offset, Ordering::Release);
        self.cut_file(position).at(&self.log_path)?;
        self.sync()?;
        self.index.truncate_to_position(position)?;
        self.ensure_time_index(position, index_interval_bytes, false)
    }

    /// Rebuilds the index from the headers of `[0, end_bytes)`.
    pub(crate) fn rebuild_index(
        &self,
        end_bytes: u64,
        index_interval_bytes: u32,
    ) -> Result<(), StorageError> {
        let batches = self
            .headers(0, end_bytes)
            .map(|item| {
                item.map(|(position, header)| IndexedBatch {
                    relative_offset: self.relative_offset(header.base_offset),
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                    size_bytes: header.size_bytes(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.index.rebuild(batches, index_interval_bytes)
    }

    /// Checks the index against `[0, end_bytes)`; if it fails, rebuilds it from the log.
    pub(crate) fn ensure_index(
        &self,
        end_bytes: u64,
        index_interval_bytes: u32,
    ) -> Result<(), StorageError> {
        let sane = self.index.is_sane(end_bytes, |entry| {
            matches!(
                self.read_header_at(u64::from(entry.position), end_bytes),
                Ok(Ok(header)) if header.base_offset
                    == self.base_offset.saturating_add(i64::from(entry.relative_offset))
            )
        });
        if sane {
            return self.index.truncate_to_position(end_bytes);
        }
        tracing::warn!(path = %self.index.path().display(), "offset index missing or damaged; rebuilding from the log");
        self.rebuild_index(end_bytes, index_interval_bytes)
    }

    /// Position and header of the first batch whose last offset is >= `offset`, if any.
    pub(crate) fn find_batch(
        &self,
        offset: i64,
        end_bytes: u64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let from = u64::from(self.index.lookup(self.relative_offset(offset)));
        for item in self.headers(from, end_bytes) {
            let (position, header) = item?;
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
        }
        Ok(None)
    }

    /// Whole batches from the one holding `offset`, each with last offset below
    /// `upper_bound_offset`, totalling at most `max_bytes` except that with
    /// [`FirstBatch::Whole`] the first batch is returned whole regardless (KIP-74). `None` when
    /// no batch here reaches `offset`.
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound_offset: i64,
        first_batch: FirstBatch,
    ) -> Result<Option<Bytes>, StorageError> {
        let end_bytes = self.size_bytes();
        let Some((start, first)) = self.find_batch(offset, end_bytes)? else {
            return Ok(None);
        };
        if first.last_offset() >= upper_bound_offset
            || (first_batch == FirstBatch::WithinLimit && first.size_bytes() > max_bytes as u64)
        {
            return Ok(Some(Bytes::new()));
        }
        let mut stop = start + first.size_bytes();
        for item in self.headers(stop, end_bytes) {
            let (_, header) = item?;
            let grown = stop + header.size_bytes();
            if header.last_offset() >= upper_bound_offset || grown - start > max_bytes as u64 {
                break;
            }
            stop = grown;
        }
        let mut buf = ReadBuffer::take(usize::try_from(stop - start).unwrap_or(0));
        self.read_exact_at(buf.as_mut_slice(), start)?;
        Ok(Some(buf.into_bytes()))
    }

    /// Runs `sync` (an fsync or write-out of the `.log`) unless one failed before, and
    /// remembers if this one fails (see `sync_failed`).
    fn sticky_sync(
        &self,
        sync: impl FnOnce(&DataFile) -> std::io::Result<()>,
    ) -> Result<(), StorageError> {
        let mut failed = lock(&self.sync_failed);
        if *failed {
            return Err(std::io::Error::other(
                "an earlier fsync or write-out of this file failed",
            ))
            .at(&self.log_path);
        }
        let synced = sync(&self.log);
        *failed = synced.is_err();
        synced.at(&self.log_path)
    }

    /// fdatasync of the `.log` (the index is derived and never synced). Also commits the
    /// file's layout up to the length it had when the fdatasync started.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        let (len_bytes, cuts) = {
            let layout = lock(&self.durable_layout);
            (self.zeroed_end_bytes(), layout.cuts)
        };
        self.sticky_sync(DataFile::sync_data)?;
        let mut layout = lock(&self.durable_layout);
        if layout.cuts == cuts {
            layout.len_bytes = layout.len_bytes.max(len_bytes);
        }
        Ok(())
    }

    /// The device to flush for the bytes of this segment up to `end_bytes` to be durable once
    /// written out ([`LogSegment::start_write_out`], [`LogSegment::finish_write_out`]), or
    /// `None` if they need an fdatasync of their own.
    ///
    /// They need none when they only overwrite blocks that a completed fdatasync allocated,
    /// inside the file length it committed (the zero tail; see
    /// [`LogSegment::extend_zero_tail`]), on a filesystem that overwrites such blocks in place
    /// (ext4, XFS): writing them changes no metadata an fdatasync would commit, so data on
    /// the device plus the device's cache flushed is all durability takes. That lets one
    /// flush serve many partitions' appends (`crate::group_flush`).
    pub(crate) fn overwrites_durable_layout(&self, end_bytes: u64) -> Option<u64> {
        let device = self.in_place_device?;
        (end_bytes <= lock(&self.durable_layout).len_bytes).then_some(device)
    }

    /// Starts writing the file's dirty pages to the device, without waiting for them.
    pub(crate) fn start_write_out(&self) -> Result<(), StorageError> {
        self.sticky_sync(DataFile::start_write_out)
    }

    /// Writes the file's dirty pages to the device and waits until it has them; durable only
    /// once the device's cache is flushed.
    pub(crate) fn finish_write_out(&self) -> Result<(), StorageError> {
        self.sticky_sync(DataFile::finish_write_out)
    }

    /// Deletes this segment's files (recovery discarding unacknowledged segments, retention).
    /// The data file goes first: indexes without it are ignored on open.
    pub(crate) fn delete_files(&self) -> Result<(), StorageError> {
        self.storage
            .remove_file(&self.log_path)
            .at(&self.log_path)?;
        for path in [self.index.path(), self.time_index.path()] {
            match self.storage.remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(path),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A [`LogSegment::append`] that failed: why, and whether the segment is as it was before
/// (file length and both indexes); if not, the log must not take more appends.
#[derive(Debug)]
pub(crate) struct FailedAppend {
    pub(crate) error: StorageError,
    pub(crate) undone: bool,
}

/// Iterator over `(position, header)` of consecutive batches; stops after the first error.
pub(crate) struct HeaderScan<'a> {
    segment: &'a LogSegment,
    position: u64,
    end_bytes: u64,
    failed: bool,
}

impl Iterator for HeaderScan<'_> {
    type Item = Result<(u64, BatchHeader), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.end_bytes {
            return None;
        }
        let position = self.position;
        let item = match self.segment.read_header_at(position, self.end_bytes) {
            Ok(Ok(header)) => {
                self.position += header.size_bytes();
                return Some(Ok((position, header)));
            }
            Ok(Err(defect)) => StorageError::CorruptSegment {
                path: self.segment.log_path.clone(),
                position,
                defect,
            },
            Err(io) => io,
        };
        self.failed = true;
        Some(Err(item))
    }
}
