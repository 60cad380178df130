//! Idempotent-producer state: for each producer id, its epoch and the metadata of its last
//! five batches, used to reject zombies and gaps and to answer retries with the original
//! offsets (Kafka's `ProducerStateManager`). Also the `<offset, 20 digits>.snapshot` files that
//! let the state survive a restart without rereading the whole log.
//!
//! A producer id whose last batch was appended `producer.id.expiration.ms` ago or more is
//! expired: its state no longer counts for the sequence checks (it is an unknown producer
//! again), is left out of snapshots, and is dropped from memory by the next sweep
//! ([`ProducerStateManager::remove_expired`]). Kafka judges by the batch's max timestamp, a
//! client's CreateTime; we judge by the broker's clock when the batch was appended, so that a
//! producer sending old timestamps (a mirror, a replay) is not forgotten at once. A producer
//! replayed by recovery (not in a snapshot) counts from the recovery; snapshots keep the time.
//!
//! The table sits behind an `Arc`: a roll takes a reference to it in O(1) under the writer's
//! lock, and the snapshot file is encoded from that reference later, by the flush, off the
//! lock. The next append after a roll copies the table once (copy on write) if that snapshot is
//! still pending; entries are plain `Copy` data, so the copy is a memory copy, not an encode.
//!
//! This module sees batch headers only; it never reads records or touches segments.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch_header::{increment_sequence, BatchHeader};
use crate::checkpoint::{seal, unseal};
use crate::error::{IoResultExt, StorageError, UnwrittenCause};
use crate::io::Storage;
use crate::segment::offset_file_name;

/// How many recent batches per producer are remembered for duplicate detection (Kafka: 5,
/// matching `max.in.flight.requests.per.connection` for idempotent producers).
pub(crate) const BATCHES_CACHED_PER_PRODUCER: usize = 5;
/// Extension of producer-state snapshot files.
pub(crate) const SNAPSHOT_EXTENSION: &str = "snapshot";
/// Snapshots kept on disk; older ones are deleted after a new one is written.
const SNAPSHOTS_KEPT: usize = 3;
const SNAPSHOT_MAGIC: [u8; 4] = *b"RNPS";
/// Version 2 adds each producer's last timestamp; version 1 files (without it) still load.
const SNAPSHOT_VERSION: u16 = 2;
const SNAPSHOT_VERSION_WITHOUT_TIMESTAMPS: u16 = 1;
/// Kafka's default `producer.id.expiration.ms`: one day.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 24 * 60 * 60 * 1000;

/// The wall clock in ms since the epoch (injected by tests).
pub(crate) type Clock = fn() -> i64;

/// Where one of a producer's batches landed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BatchMetadata {
    pub(crate) first_sequence: i32,
    pub(crate) last_sequence: i32,
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
}

/// What the log knows about one producer id. `Copy` (a fixed ring of batches) so that copying
/// the table is a memory copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    epoch: i16,
    /// When the producer's last batch was appended (or replayed by recovery), by the broker's
    /// clock: what expiry judges.
    last_timestamp: i64,
    /// Oldest first; the first `batch_count` are in use.
    batches: [BatchMetadata; BATCHES_CACHED_PER_PRODUCER],
    batch_count: u8,
}

impl ProducerEntry {
    fn new(epoch: i16, last_timestamp: i64) -> ProducerEntry {
        ProducerEntry {
            epoch,
            last_timestamp,
            batches: [BatchMetadata::default(); BATCHES_CACHED_PER_PRODUCER],
            batch_count: 0,
        }
    }

    /// The remembered batches, oldest first.
    fn batches(&self) -> &[BatchMetadata] {
        self.batches
            .get(..usize::from(self.batch_count))
            .unwrap_or_default()
    }

    fn push_batch(&mut self, batch: BatchMetadata) {
        if usize::from(self.batch_count) == BATCHES_CACHED_PER_PRODUCER {
            self.batches.rotate_left(1);
            self.batch_count -= 1;
        }
        if let Some(slot) = self.batches.get_mut(usize::from(self.batch_count)) {
            *slot = batch;
            self.batch_count += 1;
        }
    }

    /// Records a batch (offsets already assigned) appended at `now_ms`. A new epoch forgets
    /// the old sequences.
    fn record(&mut self, header: &BatchHeader, now_ms: i64) {
        self.last_timestamp = now_ms;
        if header.producer_epoch != self.epoch {
            self.epoch = header.producer_epoch;
            self.batch_count = 0;
        }
        // Control batches (transaction markers) carry no sequence; they only bump the epoch.
        if header.is_control() {
            return;
        }
        self.push_batch(BatchMetadata {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
    }

    /// Kafka's `isProducerExpired`: the last batch is `expiration_ms` old or older.
    fn is_expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_timestamp) >= expiration_ms
    }
}

/// Verdict on an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Write it.
    Append,
    /// A retry of a batch already in the log at these offsets: write nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// Applies Kafka's rules to `header` given what is known about its producer.
fn check_batch(
    current: Option<&ProducerEntry>,
    header: &BatchHeader,
) -> Result<SequenceCheck, StorageError> {
    let producer_id = header.producer_id;
    // No state: a new producer, or one whose state was lost to retention. Kafka accepts any
    // sequence here rather than fencing a producer it simply forgot.
    let Some(entry) = current.filter(|_| header.has_producer_id()) else {
        return Ok(SequenceCheck::Append);
    };
    if header.producer_epoch < entry.epoch {
        return Err(StorageError::InvalidProducerEpoch {
            producer_id,
            current: entry.epoch,
            found: header.producer_epoch,
        });
    }
    if header.is_control() {
        return Ok(SequenceCheck::Append);
    }
    if header.producer_epoch > entry.epoch {
        // A bumped epoch restarts sequences at 0.
        return match header.base_sequence {
            0 => Ok(SequenceCheck::Append),
            found => Err(StorageError::OutOfOrderSequence {
                producer_id,
                expected: 0,
                found,
            }),
        };
    }
    let last_sequence = header.last_sequence();
    if let Some(cached) = entry
        .batches()
        .iter()
        .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last_sequence)
    {
        return Ok(SequenceCheck::Duplicate {
            base_offset: cached.base_offset,
            last_offset: cached.last_offset,
        });
    }
    match entry.batches().last() {
        None => Ok(SequenceCheck::Append),
        Some(newest) => {
            let expected = increment_sequence(newest.last_sequence, 1);
            if header.base_sequence == expected {
                Ok(SequenceCheck::Append)
            } else {
                Err(StorageError::OutOfOrderSequence {
                    producer_id,
                    expected,
                    found: header.base_sequence,
                })
            }
        }
    }
}

/// Producer changes staged by one append, applied with [`ProducerStateManager::commit`] only
/// after the bytes are written, so a failed write leaves the state untouched.
#[derive(Debug, Default)]
pub(crate) struct PendingProducerUpdates {
    entries: HashMap<i64, ProducerEntry>,
}

/// The producer table of one partition. Owned by the writer (behind its mutex).
#[derive(Debug)]
pub(crate) struct ProducerStateManager {
    producers: Arc<HashMap<i64, ProducerEntry>>,
    /// Producers whose last batch here was not written, and why: a sequence gap of theirs is
    /// the rest of their pipeline, not lost data (see
    /// [`StorageError::SequenceAfterUnwrittenBatch`]). Cleared per producer by its next write.
    unwritten: HashMap<i64, UnwrittenCause>,
    /// `producer.id.expiration.ms`.
    expiration_ms: i64,
    clock: Clock,
}

impl Default for ProducerStateManager {
    fn default() -> Self {
        ProducerStateManager::with_clock(crate::segment::now_ms)
    }
}

impl ProducerStateManager {
    /// An empty table reading the time from `clock`.
    pub(crate) fn with_clock(clock: Clock) -> ProducerStateManager {
        ProducerStateManager {
            producers: Arc::default(),
            unwritten: HashMap::new(),
            expiration_ms: PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            clock,
        }
    }

    /// Sets `producer.id.expiration.ms` (applies from the next check on).
    pub(crate) fn set_expiration_ms(&mut self, expiration_ms: i64) {
        self.expiration_ms = expiration_ms;
    }

    /// The state of `producer_id`, unless expired.
    fn live(&self, producer_id: i64, now_ms: i64) -> Option<&ProducerEntry> {
        self.producers
            .get(&producer_id)
            .filter(|e| !e.is_expired(now_ms, self.expiration_ms))
    }

    /// Checks `header` (offsets assigned) against the state plus earlier batches of the same
    /// append, staging it in `pending` when it is to be appended. Batches without a producer id
    /// always pass. An expired producer counts as unknown.
    pub(crate) fn validate(
        &self,
        pending: &mut PendingProducerUpdates,
        header: &BatchHeader,
    ) -> Result<SequenceCheck, StorageError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let producer_id = header.producer_id;
        let now_ms = (self.clock)();
        let current = pending
            .entries
            .get(&producer_id)
            .or_else(|| self.live(producer_id, now_ms));
        let check = match check_batch(current, header) {
            Err(StorageError::OutOfOrderSequence {
                producer_id,
                expected,
                found,
            }) => match self.unwritten.get(&producer_id) {
                Some(&cause) => {
                    return Err(StorageError::SequenceAfterUnwrittenBatch {
                        producer_id,
                        expected,
                        found,
                        cause,
                    })
                }
                None => {
                    return Err(StorageError::OutOfOrderSequence {
                        producer_id,
                        expected,
                        found,
                    })
                }
            },
            checked => checked?,
        };
        if check == SequenceCheck::Append {
            let mut entry = current
                .copied()
                .unwrap_or_else(|| ProducerEntry::new(header.producer_epoch, now_ms));
            entry.record(header, now_ms);
            pending.entries.insert(producer_id, entry);
        }
        Ok(check)
    }

    /// Stages `header` (a batch replicated from the leader, at the leader's offsets) in
    /// `pending` without checking it: the leader validated it, and a follower that refused a
    /// batch its leader has would diverge from it for good.
    pub(crate) fn stage_replicated(
        &self,
        pending: &mut PendingProducerUpdates,
        header: &BatchHeader,
    ) {
        if !header.has_producer_id() {
            return;
        }
        let now_ms = (self.clock)();
        let mut entry = pending
            .entries
            .get(&header.producer_id)
            .or_else(|| self.producers.get(&header.producer_id))
            .copied()
            .unwrap_or_else(|| ProducerEntry::new(header.producer_epoch, now_ms));
        entry.record(header, now_ms);
        pending.entries.insert(header.producer_id, entry);
    }

    /// Applies staged updates after a successful write.
    pub(crate) fn commit(&mut self, pending: PendingProducerUpdates) {
        if !pending.entries.is_empty() {
            for producer_id in pending.entries.keys() {
                self.unwritten.remove(producer_id);
            }
            Arc::make_mut(&mut self.producers).extend(pending.entries);
        }
    }

    /// Notes that the write of the staged updates `pending` failed cleanly (nothing of it is in
    /// the log): until each of its producers writes again, a sequence gap of theirs is answered
    /// with [`StorageError::SequenceAfterUnwrittenBatch`].
    pub(crate) fn note_unwritten(&mut self, pending: &PendingProducerUpdates) {
        for &producer_id in pending.entries.keys() {
            self.note(producer_id, UnwrittenCause::WriteFailed);
        }
    }

    /// Notes that a batch of `producer_id` was refused before it could be written (see
    /// [`ProducerStateManager::note_unwritten`]).
    pub(crate) fn note_refused(&mut self, producer_id: i64) {
        self.note(producer_id, UnwrittenCause::Refused);
    }

    /// Only a producer with state here can have a gap to excuse (an unknown producer's batches
    /// are taken at any sequence), so only such a one is noted: the notes stay bounded by the
    /// producer table, and go with its entries when they expire.
    fn note(&mut self, producer_id: i64, cause: UnwrittenCause) {
        if self.producers.contains_key(&producer_id) {
            self.unwritten.insert(producer_id, cause);
        }
    }

    /// Replays a batch already in the log (recovery): no validation, as Kafka does, since the
    /// batch was validated when it was appended.
    pub(crate) fn replay(&mut self, header: &BatchHeader) {
        if header.has_producer_id() {
            let now_ms = (self.clock)();
            Arc::make_mut(&mut self.producers)
                .entry(header.producer_id)
                .or_insert_with(|| ProducerEntry::new(header.producer_epoch, now_ms))
                .record(header, now_ms);
        }
    }

    /// Drops expired producers from memory (Kafka's periodic `removeExpiredProducers`).
    /// Returns how many were dropped.
    pub(crate) fn remove_expired(&mut self) -> usize {
        let (now_ms, expiration_ms) = ((self.clock)(), self.expiration_ms);
        let expired = self
            .producers
            .values()
            .filter(|e| e.is_expired(now_ms, expiration_ms))
            .count();
        if expired > 0 {
            Arc::make_mut(&mut self.producers).retain(|_, e| !e.is_expired(now_ms, expiration_ms));
            let producers = &self.producers;
            self.unwritten.retain(|id, _| producers.contains_key(id));
        }
        expired
    }

    /// Producers in memory (expired ones included until the next sweep).
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// The table in a snapshot file (version 2, or version 1 whose producers are taken as
    /// last seen at `now_ms`, the time of loading).
    fn decode(sealed: &[u8], now_ms: i64) -> Option<HashMap<i64, ProducerEntry>> {
        let (payload, with_timestamps) = match unseal(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, sealed) {
            Some(payload) => (payload, true),
            None => (
                unseal(SNAPSHOT_MAGIC, SNAPSHOT_VERSION_WITHOUT_TIMESTAMPS, sealed)?,
                false,
            ),
        };
        let mut reader = Reader(payload);
        let count = u32::from_be_bytes(reader.take()?);
        let mut producers = HashMap::new();
        for _ in 0..count {
            let id = i64::from_be_bytes(reader.take()?);
            let epoch = i16::from_be_bytes(reader.take()?);
            let last_timestamp = if with_timestamps {
                i64::from_be_bytes(reader.take()?)
            } else {
                now_ms
            };
            let mut entry = ProducerEntry::new(epoch, last_timestamp);
            let [batch_count] = reader.take::<1>()?;
            if usize::from(batch_count) > BATCHES_CACHED_PER_PRODUCER {
                return None;
            }
            for _ in 0..batch_count {
                entry.push_batch(BatchMetadata {
                    first_sequence: i32::from_be_bytes(reader.take()?),
                    last_sequence: i32::from_be_bytes(reader.take()?),
                    base_offset: i64::from_be_bytes(reader.take()?),
                    last_offset: i64::from_be_bytes(reader.take()?),
                });
            }
            producers.insert(id, entry);
        }
        reader.0.is_empty().then_some(producers)
    }

    /// The state as of `offset` (the log end offset it reflects), encoded for
    /// `<offset>.snapshot`.
    /// O(1): the encoding is left to [`ProducerSnapshot::file`], off the writer's lock.
    pub(crate) fn snapshot(&self, offset: i64) -> ProducerSnapshot {
        ProducerSnapshot {
            offset,
            producers: Arc::clone(&self.producers),
            now_ms: (self.clock)(),
            expiration_ms: self.expiration_ms,
        }
    }

    /// Writes the state as of `offset` to `<offset>.snapshot` atomically, then deletes all but
    /// the newest few snapshots.
    #[cfg(test)]
    pub(crate) fn write_snapshot(
        &self,
        storage: &Storage,
        dir: &Path,
        offset: i64,
    ) -> Result<(), StorageError> {
        let (path, bytes) = self.snapshot(offset).file(dir);
        crate::checkpoint::write_all_atomically(storage, &[(&path, &bytes)])?;
        prune_snapshots(storage, dir)
    }

    /// Loads the newest readable snapshot at or below `log_end_offset`, deleting snapshots
    /// beyond it (they describe data that recovery cut off). Returns the state and the offset
    /// from which the log must be replayed; `None` means no usable snapshot: replay everything.
    pub(crate) fn load(
        storage: &Storage,
        dir: &Path,
        log_end_offset: i64,
    ) -> Result<(ProducerStateManager, Option<i64>), StorageError> {
        Self::load_with_clock(storage, dir, log_end_offset, crate::segment::now_ms)
    }

    /// [`ProducerStateManager::load`] with an injected clock.
    pub(crate) fn load_with_clock(
        storage: &Storage,
        dir: &Path,
        log_end_offset: i64,
        clock: Clock,
    ) -> Result<(ProducerStateManager, Option<i64>), StorageError> {
        let mut snapshots = list_snapshots(storage, dir)?;
        snapshots.reverse();
        for (offset, path) in snapshots {
            if offset > log_end_offset {
                tracing::info!(path = %path.display(), log_end_offset, "deleting producer snapshot beyond the log end");
                storage.remove_file(&path).at(&path)?;
                continue;
            }
            match Self::decode(&storage.read_file(&path).at(&path)?, clock()) {
                Some(producers) => {
                    let mut state = ProducerStateManager::with_clock(clock);
                    state.producers = Arc::new(producers);
                    return Ok((state, Some(offset)));
                }
                None => {
                    tracing::warn!(path = %path.display(), "producer snapshot damaged; trying an older one");
                }
            }
        }
        Ok((ProducerStateManager::with_clock(clock), None))
    }
}

/// A producer-state snapshot taken (a reference to the table as of `offset`), not yet encoded
/// nor written.
#[derive(Debug, Clone)]
pub(crate) struct ProducerSnapshot {
    offset: i64,
    producers: Arc<HashMap<i64, ProducerEntry>>,
    /// When it was taken, and `producer.id.expiration.ms` then: expired producers are left out.
    now_ms: i64,
    expiration_ms: i64,
}

impl ProducerSnapshot {
    /// The snapshot file's path in `dir` and its contents, for `write_all_atomically`. Encodes
    /// the table: call it off the writer's lock.
    pub(crate) fn file(self, dir: &Path) -> (PathBuf, Vec<u8>) {
        (
            dir.join(offset_file_name(self.offset, SNAPSHOT_EXTENSION)),
            self.encode(),
        )
    }

    fn encode(&self) -> Vec<u8> {
        let mut live: Vec<(&i64, &ProducerEntry)> = self
            .producers
            .iter()
            .filter(|(_, e)| !e.is_expired(self.now_ms, self.expiration_ms))
            .collect();
        // Sorted so equal states give identical files.
        live.sort_unstable_by_key(|(id, _)| **id);
        let mut payload = Vec::with_capacity(4 + live.len() * 64);
        payload.extend_from_slice(&(live.len() as u32).to_be_bytes());
        for (id, entry) in live {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&entry.epoch.to_be_bytes());
            payload.extend_from_slice(&entry.last_timestamp.to_be_bytes());
            payload.push(entry.batch_count);
            for batch in entry.batches() {
                payload.extend_from_slice(&batch.first_sequence.to_be_bytes());
                payload.extend_from_slice(&batch.last_sequence.to_be_bytes());
                payload.extend_from_slice(&batch.base_offset.to_be_bytes());
                payload.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        seal(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &payload)
    }
}

/// Deletes all but the newest few snapshots of `dir`.
pub(crate) fn prune_snapshots(storage: &Storage, dir: &Path) -> Result<(), StorageError> {
    let snapshots = list_snapshots(storage, dir)?;
    let excess = snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
    for (_, old) in snapshots.iter().take(excess) {
        storage.remove_file(old).at(old)?;
    }
    Ok(())
}

/// Deletes the snapshots of `dir` taken after `offset` (they describe records a truncation
/// cut). The caller fsyncs the directory.
pub(crate) fn remove_snapshots_above(
    storage: &Storage,
    dir: &Path,
    offset: i64,
) -> Result<(), StorageError> {
    for (_, path) in list_snapshots(storage, dir)?
        .into_iter()
        .filter(|(at, _)| *at > offset)
    {
        storage.remove_file(&path).at(&path)?;
    }
    Ok(())
}

/// Snapshot files of `dir` as `(offset, path)`, oldest first.
fn list_snapshots(storage: &Storage, dir: &Path) -> Result<Vec<(i64, PathBuf)>, StorageError> {
    let mut found = Vec::new();
    for path in storage.list_dir(dir)? {
        if path.extension().is_some_and(|e| e == SNAPSHOT_EXTENSION) {
            if let Some(offset) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<i64>().ok())
            {
                found.push((offset, path));
            }
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Reads fixed-size big-endian fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::batch_header::set_base_offset;
    use crate::batch_header::testing::{build_batch, ProducerFields};

    fn header(epoch: i16, base_sequence: i32, records: i32, base_offset: i64) -> BatchHeader {
        let mut batch = build_batch(
            records,
            1,
            ProducerFields {
                producer_id: 7,
                producer_epoch: epoch,
                base_sequence,
            },
        );
        set_base_offset(&mut batch, base_offset).unwrap();
        BatchHeader::parse(&batch).unwrap()
    }

    fn append(
        state: &mut ProducerStateManager,
        h: &BatchHeader,
    ) -> Result<SequenceCheck, StorageError> {
        let mut pending = PendingProducerUpdates::default();
        let check = state.validate(&mut pending, h)?;
        state.commit(pending);
        Ok(check)
    }

    #[test]
    fn sequence_rules() -> Result<(), StorageError> {
        let mut state = ProducerStateManager::default();
        assert_eq!(
            append(&mut state, &header(0, 10, 2, 0))?,
            SequenceCheck::Append
        );
        assert_eq!(
            append(&mut state, &header(0, 12, 1, 2))?,
            SequenceCheck::Append
        );
        assert_eq!(
            append(&mut state, &header(0, 10, 2, 99))?,
            SequenceCheck::Duplicate {
                base_offset: 0,
                last_offset: 1
            }
        );
        assert!(matches!(
            append(&mut state, &header(0, 20, 1, 3)),
            Err(StorageError::OutOfOrderSequence {
                expected: 13,
                found: 20,
                ..
            })
        ));
        assert!(matches!(
            append(&mut state, &header(1, 5, 1, 3)),
            Err(StorageError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(
            append(&mut state, &header(1, 0, 1, 3))?,
            SequenceCheck::Append
        );
        assert!(matches!(
            append(&mut state, &header(0, 13, 1, 4)),
            Err(StorageError::InvalidProducerEpoch {
                current: 1,
                found: 0,
                ..
            })
        ));
        Ok(())
    }

    thread_local! {
        static NOW_MS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
    }

    fn test_clock() -> i64 {
        NOW_MS.with(std::cell::Cell::get)
    }

    fn set_now(ms: i64) {
        NOW_MS.with(|now| now.set(ms));
    }

    fn header_of(producer_id: i64, base_sequence: i32, base_offset: i64) -> BatchHeader {
        let mut batch = build_batch(
            1,
            1,
            ProducerFields {
                producer_id,
                producer_epoch: 0,
                base_sequence,
            },
        );
        set_base_offset(&mut batch, base_offset).unwrap();
        BatchHeader::parse(&batch).unwrap()
    }

    #[test]
    fn expired_producers_are_unknown_then_dropped_and_left_out_of_snapshots(
    ) -> Result<(), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ProducerStateManager::with_clock(test_clock);
        state.set_expiration_ms(1_000);
        set_now(10_000);
        append(&mut state, &header_of(1, 0, 0))?; // goes quiet
        append(&mut state, &header_of(2, 0, 1))?; // stays live
        set_now(10_999);
        append(&mut state, &header_of(2, 1, 2))?;
        // One ms short of expiry: a gap is still refused.
        assert!(matches!(
            append(&mut state, &header_of(1, 5, 3)),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        set_now(11_000);
        // Expired: an unknown producer again, whose first sequence is accepted (Kafka's rule
        // for a producer it has no state for), though nothing was swept yet.
        let snapshot = state.snapshot(3);
        assert_eq!(state.len(), 2, "still in memory until the sweep");
        assert_eq!(state.remove_expired(), 1);
        assert_eq!(state.len(), 1);
        assert!(state.producers.contains_key(&2));
        assert_eq!(
            append(&mut state, &header_of(2, 2, 3))?,
            SequenceCheck::Append,
            "a live producer is unaffected"
        );
        assert!(matches!(
            append(&mut state, &header_of(2, 9, 4)),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        assert_eq!(
            append(&mut state, &header_of(1, 5, 4))?,
            SequenceCheck::Append
        );
        // The snapshot taken at 11 000 left producer 1 out, though the table still had it.
        let (path, bytes) = snapshot.file(dir.path());
        crate::checkpoint::write_all_atomically(&Storage::real(), &[(&path, &bytes)])?;
        let (loaded, _) =
            ProducerStateManager::load_with_clock(&Storage::real(), dir.path(), 3, test_clock)?;
        assert_eq!(loaded.producers.keys().copied().collect::<Vec<_>>(), [2]);
        Ok(())
    }

    #[test]
    fn unwritten_notes_are_kept_only_for_known_producers_and_expire_with_them(
    ) -> Result<(), StorageError> {
        let mut state = ProducerStateManager::with_clock(test_clock);
        state.set_expiration_ms(1_000);
        set_now(20_000);
        append(&mut state, &header_of(1, 0, 0))?;
        // Producer 9 has no state here: nothing to excuse, nothing kept.
        state.note_refused(9);
        state.note_refused(1);
        assert_eq!(state.unwritten.len(), 1);
        assert!(matches!(
            append(&mut state, &header_of(1, 2, 1)),
            Err(StorageError::SequenceAfterUnwrittenBatch {
                cause: UnwrittenCause::Refused,
                ..
            })
        ));
        // Producer 1 goes quiet and expires: its note goes with it.
        set_now(21_000);
        assert_eq!(state.remove_expired(), 1);
        assert!(state.unwritten.is_empty());
        Ok(())
    }

    #[test]
    fn a_snapshot_is_taken_by_reference_and_the_table_copied_on_write() -> Result<(), StorageError>
    {
        let mut state = ProducerStateManager::with_clock(test_clock);
        set_now(1);
        append(&mut state, &header_of(1, 0, 0))?;
        let snapshot = state.snapshot(1);
        assert!(
            Arc::ptr_eq(&snapshot.producers, &state.producers),
            "taking a snapshot copies nothing"
        );
        append(&mut state, &header_of(1, 1, 1))?;
        assert!(!Arc::ptr_eq(&snapshot.producers, &state.producers));
        assert_eq!(
            snapshot.producers[&1].batches().len(),
            1,
            "the snapshot kept its state"
        );
        assert_eq!(state.producers[&1].batches().len(), 2);
        Ok(())
    }

    #[test]
    fn version_1_snapshots_still_load() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let mut payload = Vec::new();
        payload.extend_from_slice(&1u32.to_be_bytes());
        payload.extend_from_slice(&7i64.to_be_bytes());
        payload.extend_from_slice(&3i16.to_be_bytes());
        payload.push(1);
        for field in [0i32, 1] {
            payload.extend_from_slice(&field.to_be_bytes());
        }
        for field in [0i64, 1] {
            payload.extend_from_slice(&field.to_be_bytes());
        }
        let bytes = seal(
            SNAPSHOT_MAGIC,
            SNAPSHOT_VERSION_WITHOUT_TIMESTAMPS,
            &payload,
        );
        std::fs::write(
            dir.path().join(offset_file_name(2, SNAPSHOT_EXTENSION)),
            bytes,
        )
        .unwrap();
        set_now(5_000);
        let (loaded, from) =
            ProducerStateManager::load_with_clock(&Storage::real(), dir.path(), 2, test_clock)?;
        assert_eq!(from, Some(2));
        let entry = loaded.producers[&7];
        assert_eq!((entry.epoch, entry.last_timestamp), (3, 5_000));
        assert_eq!(entry.batches().len(), 1);
        Ok(())
    }

    #[test]
    fn snapshot_round_trips() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ProducerStateManager::default();
        for i in 0..8 {
            state.replay(&header(3, i * 2, 2, i64::from(i) * 2));
        }
        state.write_snapshot(&Storage::real(), dir.path(), 16)?;
        let (loaded, from) = ProducerStateManager::load(&Storage::real(), dir.path(), 16)?;
        assert_eq!(from, Some(16));
        assert_eq!(loaded.producers, state.producers);
        let (_, from) = ProducerStateManager::load(&Storage::real(), dir.path(), 15)?;
        assert_eq!(from, None, "snapshot beyond the log end is deleted");
        Ok(())
    }
}
