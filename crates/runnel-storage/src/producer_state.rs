//! Idempotent-producer state: for each producer id, its epoch and the metadata of its last
//! five batches, used to reject zombies and gaps and to answer retries with the original
//! offsets (Kafka's `ProducerStateManager`). Also the `<offset, 20 digits>.snapshot` files that
//! let the state survive a restart without rereading the whole log.
//!
//! This module sees batch headers only; it never reads records or touches segments.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::batch_header::{increment_sequence, BatchHeader};
use crate::checkpoint::{seal, unseal};
use crate::error::{IoResultExt, StorageError};
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
const SNAPSHOT_VERSION: u16 = 1;

/// Where one of a producer's batches landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMetadata {
    pub(crate) first_sequence: i32,
    pub(crate) last_sequence: i32,
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
}

/// What the log knows about one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    epoch: i16,
    /// Oldest first; at most `BATCHES_CACHED_PER_PRODUCER`.
    batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_CACHED_PER_PRODUCER),
        }
    }

    /// Records a batch (offsets already assigned). A new epoch forgets the old sequences.
    fn record(&mut self, header: &BatchHeader) {
        if header.producer_epoch != self.epoch {
            self.epoch = header.producer_epoch;
            self.batches.clear();
        }
        // Control batches (transaction markers) carry no sequence; they only bump the epoch.
        if header.is_control() {
            return;
        }
        self.batches.push_back(BatchMetadata {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        while self.batches.len() > BATCHES_CACHED_PER_PRODUCER {
            self.batches.pop_front();
        }
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
        .batches
        .iter()
        .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last_sequence)
    {
        return Ok(SequenceCheck::Duplicate {
            base_offset: cached.base_offset,
            last_offset: cached.last_offset,
        });
    }
    match entry.batches.back() {
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
#[derive(Debug, Default)]
pub(crate) struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateManager {
    /// Checks `header` (offsets assigned) against the state plus earlier batches of the same
    /// append, staging it in `pending` when it is to be appended. Batches without a producer id
    /// always pass.
    pub(crate) fn validate(
        &self,
        pending: &mut PendingProducerUpdates,
        header: &BatchHeader,
    ) -> Result<SequenceCheck, StorageError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let producer_id = header.producer_id;
        let current = pending
            .entries
            .get(&producer_id)
            .or_else(|| self.producers.get(&producer_id));
        let check = check_batch(current, header)?;
        if check == SequenceCheck::Append {
            let mut entry = current
                .cloned()
                .unwrap_or_else(|| ProducerEntry::new(header.producer_epoch));
            entry.record(header);
            pending.entries.insert(producer_id, entry);
        }
        Ok(check)
    }

    /// Applies staged updates after a successful write.
    pub(crate) fn commit(&mut self, pending: PendingProducerUpdates) {
        self.producers.extend(pending.entries);
    }

    /// Replays a batch already in the log (recovery): no validation, as Kafka does, since the
    /// batch was validated when it was appended.
    pub(crate) fn replay(&mut self, header: &BatchHeader) {
        if header.has_producer_id() {
            self.producers
                .entry(header.producer_id)
                .or_insert_with(|| ProducerEntry::new(header.producer_epoch))
                .record(header);
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        // Sorted so equal states give identical files.
        ids.sort_unstable();
        payload.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for (id, entry) in ids
            .iter()
            .filter_map(|id| self.producers.get(id).map(|e| (id, e)))
        {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&entry.epoch.to_be_bytes());
            payload.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                payload.extend_from_slice(&batch.first_sequence.to_be_bytes());
                payload.extend_from_slice(&batch.last_sequence.to_be_bytes());
                payload.extend_from_slice(&batch.base_offset.to_be_bytes());
                payload.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        seal(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &payload)
    }

    fn decode(sealed: &[u8]) -> Option<ProducerStateManager> {
        let mut reader = Reader(unseal(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, sealed)?);
        let count = u32::from_be_bytes(reader.take()?);
        let mut producers = HashMap::new();
        for _ in 0..count {
            let id = i64::from_be_bytes(reader.take()?);
            let mut entry = ProducerEntry::new(i16::from_be_bytes(reader.take()?));
            let [batch_count] = reader.take::<1>()?;
            if usize::from(batch_count) > BATCHES_CACHED_PER_PRODUCER {
                return None;
            }
            for _ in 0..batch_count {
                entry.batches.push_back(BatchMetadata {
                    first_sequence: i32::from_be_bytes(reader.take()?),
                    last_sequence: i32::from_be_bytes(reader.take()?),
                    base_offset: i64::from_be_bytes(reader.take()?),
                    last_offset: i64::from_be_bytes(reader.take()?),
                });
            }
            producers.insert(id, entry);
        }
        reader
            .0
            .is_empty()
            .then_some(ProducerStateManager { producers })
    }

    /// The state as of `offset` (the log end offset it reflects), encoded for
    /// `<offset>.snapshot`.
    pub(crate) fn snapshot(&self, offset: i64) -> ProducerSnapshot {
        ProducerSnapshot {
            offset,
            bytes: self.encode(),
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
        let mut snapshots = list_snapshots(storage, dir)?;
        snapshots.reverse();
        for (offset, path) in snapshots {
            if offset > log_end_offset {
                tracing::info!(path = %path.display(), log_end_offset, "deleting producer snapshot beyond the log end");
                storage.remove_file(&path).at(&path)?;
                continue;
            }
            match Self::decode(&storage.read_file(&path).at(&path)?) {
                Some(state) => return Ok((state, Some(offset))),
                None => {
                    tracing::warn!(path = %path.display(), "producer snapshot damaged; trying an older one");
                }
            }
        }
        Ok((ProducerStateManager::default(), None))
    }
}

/// An encoded producer-state snapshot, not yet written.
#[derive(Debug, Clone)]
pub(crate) struct ProducerSnapshot {
    offset: i64,
    bytes: Vec<u8>,
}

impl ProducerSnapshot {
    /// The snapshot file's path in `dir` and its contents, for `write_all_atomically`.
    pub(crate) fn file(self, dir: &Path) -> (PathBuf, Vec<u8>) {
        (
            dir.join(offset_file_name(self.offset, SNAPSHOT_EXTENSION)),
            self.bytes,
        )
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
