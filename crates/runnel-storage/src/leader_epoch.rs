//! `LeaderEpochCache`: where each leader epoch starts in a partition's log (Kafka's
//! `LeaderEpochFileCache`), the answer to OffsetForLeaderEpoch and how a follower finds where
//! its log diverged from the leader's (KIP-101, KIP-279). Pure data and logic, plus its file,
//! `leader-epoch-checkpoint`, in Kafka's text format:
//!
//! ```text
//! 0                 version
//! 2                 number of entries
//! 0 0               epoch start_offset
//! 3 120
//! ```
//!
//! It knows offsets and epoch numbers only; who leads, and why an epoch began, is the broker's.

use std::path::Path;

use crate::checkpoint::write_all_atomically;
use crate::error::{IoResultExt, StorageError};
use crate::io::Storage;

/// File name of the leader-epoch checkpoint inside a partition directory.
pub(crate) const LEADER_EPOCH_FILE_NAME: &str = "leader-epoch-checkpoint";
/// The only version of the checkpoint format (Kafka's `CURRENT_VERSION`).
const FORMAT_VERSION: i32 = 0;
/// Kafka's `UNDEFINED_EPOCH` and `UNDEFINED_EPOCH_OFFSET`.
const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// One epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// Offset of the first record written in `epoch` (the log end offset when it began).
    pub start_offset: i64,
}

/// Leader epochs of one partition's log, each with its start offset.
///
/// Invariant: epochs strictly increase and start offsets never decrease along `entries`; both
/// are non-negative.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// An empty cache.
    pub fn new() -> LeaderEpochCache {
        LeaderEpochCache::default()
    }

    /// The entries, oldest epoch first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether the cache changed (and so
    /// must be persisted).
    ///
    /// Only a newer epoch is added; the latest epoch keeps its first start offset; an older
    /// epoch, or a negative epoch or offset, is ignored. As in Kafka, entries the new one makes
    /// non-monotonic (those starting at or after `start_offset`: epochs that wrote nothing) are
    /// dropped first.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Where `requested_epoch` ends in a log whose end offset is `log_end_offset`, as
    /// `(epoch, end_offset)`: Kafka's `LeaderEpochFileCache.endOffsetFor`, the answer to
    /// OffsetForLeaderEpoch.
    ///
    /// - `-1`, an empty cache, or an epoch newer than the latest: `(-1, -1)`;
    /// - the latest epoch: `(requested_epoch, log_end_offset)`;
    /// - older than the first entry: `(requested_epoch, first start offset)`;
    /// - otherwise the largest epoch at or below the one requested, ending where the next
    ///   higher epoch starts.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested_epoch == UNDEFINED_EPOCH {
            return undefined;
        }
        if self.latest_epoch() == Some(requested_epoch) {
            return (requested_epoch, log_end_offset);
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested_epoch) else {
            return undefined;
        };
        match self
            .entries
            .iter()
            .rev()
            .find(|e| e.epoch <= requested_epoch)
        {
            Some(floor) => (floor.epoch, higher.start_offset),
            None => (requested_epoch, higher.start_offset),
        }
    }

    /// Drops every entry starting at or after `end_offset` (the log was truncated there).
    /// Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// The log now starts at `start_offset`: drops the entries of epochs wholly before it and
    /// moves the start of the epoch containing it up to `start_offset` (Kafka's
    /// `truncateFromStart`). Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let Some(containing) = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset)
        else {
            return false;
        };
        let changed = containing > 0
            || self
                .entries
                .first()
                .is_some_and(|e| e.start_offset != start_offset);
        self.entries.drain(..containing);
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = start_offset;
        }
        changed
    }

    /// Where `epoch` starts, if it is in the cache.
    pub fn epoch_start_offset(&self, epoch: i32) -> Option<i64> {
        self.entries
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.start_offset)
    }

    /// The checkpoint file's contents.
    fn encode(&self) -> Vec<u8> {
        let mut text = format!("{FORMAT_VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        text.into_bytes()
    }

    /// Parses checkpoint contents; `Err` says what is wrong.
    fn decode(bytes: &[u8]) -> Result<LeaderEpochCache, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        let mut lines = text.lines();
        let mut next_line = |what: &str| lines.next().ok_or(format!("missing {what}"));
        let version: i32 = parse_field(next_line("version")?, "version")?;
        if version != FORMAT_VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let count: usize = parse_field(next_line("entry count")?, "entry count")?;
        let mut cache = LeaderEpochCache::new();
        for index in 0..count {
            let line = next_line(&format!("entry {index}"))?;
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(start), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("entry {index} is not `epoch offset`: {line:?}"));
            };
            let entry = EpochEntry {
                epoch: parse_field(epoch, "epoch")?,
                start_offset: parse_field(start, "start offset")?,
            };
            let monotonic = cache.entries.last().is_none_or(|last| {
                entry.epoch > last.epoch && entry.start_offset >= last.start_offset
            });
            if entry.epoch < 0 || entry.start_offset < 0 || !monotonic {
                return Err(format!("entry {index} ({line:?}) breaks epoch order"));
            }
            cache.entries.push(entry);
        }
        if lines.any(|line| !line.trim().is_empty()) {
            return Err(format!("more lines than the {count} entries announced"));
        }
        Ok(cache)
    }

    /// Reads the cache of the partition directory `dir`: empty if the file is missing.
    ///
    /// Errors: `Io`; `CorruptLeaderEpochCheckpoint` naming the file if it cannot be parsed
    /// (guessing epochs could make a follower keep records the leader does not have).
    pub(crate) fn read(storage: &Storage, dir: &Path) -> Result<LeaderEpochCache, StorageError> {
        let path = dir.join(LEADER_EPOCH_FILE_NAME);
        let bytes = match storage.read_file(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LeaderEpochCache::new())
            }
            Err(e) => return Err(e).at(&path),
        };
        LeaderEpochCache::decode(&bytes)
            .map_err(|reason| StorageError::CorruptLeaderEpochCheckpoint { path, reason })
    }

    /// Replaces the checkpoint in `dir` atomically and durably (temp file, fsync, rename,
    /// directory fsync).
    ///
    /// Errors: `Io`.
    pub(crate) fn write(&self, storage: &Storage, dir: &Path) -> Result<(), StorageError> {
        write_all_atomically(
            storage,
            &[(&dir.join(LEADER_EPOCH_FILE_NAME), &self.encode())],
        )
    }
}

fn parse_field<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{what} {text:?} is not a number"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn cache_of(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::new();
        for &(epoch, start_offset) in entries {
            assert!(cache.assign(epoch, start_offset));
        }
        cache
    }

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn assign_appends_only_newer_epochs_and_keeps_the_first_start() {
        let mut cache = LeaderEpochCache::new();
        assert_eq!(cache.latest_epoch(), None);
        assert!(cache.assign(1, 0));
        assert!(!cache.assign(1, 5), "same epoch keeps its first start");
        assert!(!cache.assign(0, 7), "an older epoch is ignored");
        assert!(!cache.assign(-1, 7));
        assert!(!cache.assign(3, -1));
        assert!(cache.assign(3, 10));
        assert_eq!(pairs(&cache), vec![(1, 0), (3, 10)]);
        assert_eq!(cache.latest_epoch(), Some(3));
        assert_eq!(cache.epoch_start_offset(3), Some(10));
        assert_eq!(cache.epoch_start_offset(2), None);
    }

    #[test]
    fn assign_drops_epochs_that_wrote_nothing() {
        // Epoch 3 began at 10 and wrote nothing before epoch 4 began there too.
        let mut cache = cache_of(&[(1, 0), (3, 10)]);
        assert!(cache.assign(4, 10));
        assert_eq!(pairs(&cache), vec![(1, 0), (4, 10)]);
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let empty = LeaderEpochCache::new();
        assert_eq!(empty.end_offset_for(0, 100), (-1, -1));
        let cache = cache_of(&[(2, 10), (4, 20), (7, 50)]);
        let leo = 80;
        assert_eq!(cache.end_offset_for(-1, leo), (-1, -1));
        assert_eq!(cache.end_offset_for(7, leo), (7, leo), "latest: the LEO");
        assert_eq!(cache.end_offset_for(8, leo), (-1, -1), "newer than latest");
        assert_eq!(
            cache.end_offset_for(1, leo),
            (1, 10),
            "older than the first"
        );
        assert_eq!(cache.end_offset_for(2, leo), (2, 20));
        assert_eq!(
            cache.end_offset_for(3, leo),
            (2, 20),
            "gap: the floor epoch"
        );
        assert_eq!(cache.end_offset_for(4, leo), (4, 50));
        assert_eq!(cache.end_offset_for(6, leo), (4, 50));
    }

    #[test]
    fn truncation_from_either_end() {
        let mut cache = cache_of(&[(2, 10), (4, 20), (7, 50)]);
        assert!(!cache.truncate_from_end(51));
        assert!(cache.truncate_from_end(50));
        assert_eq!(pairs(&cache), vec![(2, 10), (4, 20)]);
        assert!(!cache.truncate_from_start(5), "before the first entry");
        assert!(!cache.truncate_from_start(10));
        assert!(cache.truncate_from_start(25));
        assert_eq!(pairs(&cache), vec![(4, 25)]);
        assert!(cache.truncate_from_end(0));
        assert!(cache.entries().is_empty());
        assert!(!cache.truncate_from_start(3));
    }

    #[test]
    fn checkpoint_round_trips_in_kafkas_format() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::real();
        assert_eq!(
            LeaderEpochCache::read(&storage, dir.path())?,
            LeaderEpochCache::new()
        );
        let cache = cache_of(&[(0, 0), (3, 120)]);
        cache.write(&storage, dir.path())?;
        let path = dir.path().join(LEADER_EPOCH_FILE_NAME);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "0\n2\n0 0\n3 120\n"
        );
        assert_eq!(LeaderEpochCache::read(&storage, dir.path())?, cache);
        LeaderEpochCache::new().write(&storage, dir.path())?;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n0\n");
        Ok(())
    }

    #[test]
    fn a_damaged_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEADER_EPOCH_FILE_NAME);
        for garbage in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 x\n",
            "0\n2\n3 10\n2 20\n",
            "0\n2\n2 20\n3 10\n",
            "0\n1\n0 0 0\n",
            "0\n1\n0 0\n5 5\n",
        ] {
            std::fs::write(&path, garbage).unwrap();
            match LeaderEpochCache::read(&Storage::real(), dir.path()) {
                Err(StorageError::CorruptLeaderEpochCheckpoint { path: named, .. }) => {
                    assert_eq!(named, path, "{garbage:?}")
                }
                other => panic!("{garbage:?} gave {other:?}"),
            }
        }
    }
}
