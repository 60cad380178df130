//! Several log directories (JBOD, `log.dirs`): where a new partition's directory goes, finding
//! an existing one in whichever log dir holds it, moving a partition's log to another log dir
//! (AlterReplicaLogDirs) without losing a record, and the start-up pass that finishes or undoes
//! a move a crash interrupted.
//!
//! **Placement.** A new partition goes to the log dir holding the fewest partitions of this
//! node, ties to the first listed (Kafka's rule). The first log dir also holds the metadata
//! log, `meta.properties` and producer-id state (Kafka's `metadata.log.dir` default); every log
//! dir gets a `meta.properties` naming the same cluster and node.
//!
//! **A move** of partition `P` from log dir `A` to `B`:
//! 1. outside any lock, the sealed segments' `.log` files are copied to `B/P-future`;
//! 2. under the partition's open lock and its log's append lock (appends wait): the log is
//!    closed (flushed, recovery checkpoint at its end), every file not copied yet or changed
//!    since is copied, all fsynced with the directory, a marker file [`MOVED_MARKER_FILE_NAME`]
//!    written (fsynced), `B/P-future` renamed `B/P` (`B` fsynced), the copy opened, and the
//!    old handle retired (a request still holding it gets NOT_LEADER_OR_FOLLOWER and retries);
//! 3. `A/P` is renamed `A/P-delete` (`A` fsynced) and removed, then the marker (kept if the
//!    rename failed: it still tells the next start which copy is the moved one).
//!
//! **After a crash** ([`resolve_interrupted_moves`], before any log opens; only partition
//! directories count, not `lost+found` or `-delete` leftovers): a partition's `-future`
//! directory is an unfinished copy (the rename publishes it) and is removed; a partition
//! directory present in two log dirs is a move whose old copy was not removed yet: the copy
//! holding the marker is the moved one, complete (appends were held from its last copy to its
//! publication, and the old handle took none after), and wins; the other is removed. Two
//! copies and no single marker is not something a move leaves: start-up refuses rather than
//! guess.
//!
//! This module knows log dirs, partition directory names and files; the log format is
//! `runnel-storage`'s.

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};

use runnel_storage::{PartitionLog, StorageError};
use uuid::Uuid;

use crate::error::BrokerError;
use crate::partition_dir;
use crate::topics::Partition;

/// Suffix of a partition directory being copied into another log dir (Kafka's).
pub const FUTURE_SUFFIX: &str = "-future";
/// File written into a moved copy before it is published and removed once the old copy is
/// gone: of two copies of one partition, the one holding it is the moved one.
pub const MOVED_MARKER_FILE_NAME: &str = "moved-here";
/// Segment data files (`<base offset>.log`).
const SEGMENT_SUFFIX: &str = ".log";
/// A file being written atomically (storage's temporary name, renamed into place when done).
const TEMP_SUFFIX: &str = ".tmp";

/// The log dir (of `log_dirs`) already holding partition `index` of topic `topic`/`id`, if any
/// does; the first listed when several do (only before [`resolve_interrupted_moves`]).
pub fn find_existing(log_dirs: &[PathBuf], topic: &str, index: i32, id: Uuid) -> Option<PathBuf> {
    log_dirs
        .iter()
        .find(|log_dir| partition_dir::partition_dir(log_dir, topic, index, id).is_dir())
        .cloned()
}

/// The log dir a new partition goes to: the one holding the fewest partitions (`placed`
/// counts them per log dir), ties to the first listed. `log_dirs` is never empty (config).
pub fn least_loaded(log_dirs: &[PathBuf], placed: &HashMap<PathBuf, usize>) -> PathBuf {
    log_dirs
        .iter()
        .min_by_key(|log_dir| placed.get(*log_dir).copied().unwrap_or(0))
        .cloned()
        .unwrap_or_default()
}

/// The start-up pass over every log dir that finishes or undoes moves a crash interrupted (see
/// the module comment). Blocking.
///
/// Errors: `Io` if a log dir cannot be listed or a removal fails; `InvalidData` for a
/// partition in two log dirs with no single marked copy.
pub fn resolve_interrupted_moves(log_dirs: &[PathBuf]) -> Result<(), StorageError> {
    let mut copies: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for log_dir in log_dirs {
        let entries = std::fs::read_dir(log_dir).map_err(|source| StorageError::Io {
            path: log_dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if !path.is_dir() {
                continue;
            }
            if let Some(live) = name.strip_suffix(FUTURE_SUFFIX) {
                if partition_dir::is_keyed_partition_dir_name(live) {
                    tracing::warn!(dir = %path.display(),
                        "removing an unfinished copy of a partition moving between log dirs");
                    remove_dir(&path)?;
                }
                continue;
            }
            // Only live partition directories: a mount root's `lost+found`, `-delete`
            // leftovers or the metadata log may well be in several log dirs.
            if partition_dir::is_keyed_partition_dir_name(&name) {
                copies.entry(name).or_default().push(path);
            }
        }
    }
    for (name, dirs) in copies {
        let marked: Vec<&PathBuf> = dirs
            .iter()
            .filter(|dir| dir.join(MOVED_MARKER_FILE_NAME).exists())
            .collect();
        if dirs.len() > 1 {
            let [winner] = marked.as_slice() else {
                return Err(StorageError::Io {
                    path: PathBuf::from(&name),
                    source: std::io::Error::new(
                        ErrorKind::InvalidData,
                        format!(
                            "partition directory {name} is in several log dirs ({dirs:?}) and not \
                             one of them is marked as a move's target: remove the stale copies"
                        ),
                    ),
                });
            };
            for loser in dirs.iter().filter(|dir| dir != winner) {
                tracing::warn!(dir = %loser.display(), moved_to = %winner.display(),
                    "removing the old copy of a partition whose move to another log dir was interrupted");
                // A `-delete` leftover of the same name (removed later by start-up cleanup
                // anyway) would block the rename.
                let leftover = with_suffix(loser, partition_dir::DELETE_SUFFIX);
                if leftover.exists() {
                    remove_dir(&leftover)?;
                }
                let renamed = partition_dir::rename_for_deletion(std::slice::from_ref(loser))?;
                partition_dir::remove_deleted(&renamed);
            }
        }
        for dir in marked {
            remove_marker(dir);
        }
    }
    Ok(())
}

/// A partition being moved: where its future replica goes and how far it is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FutureReplica {
    /// The log dir it moves to.
    pub log_dir: PathBuf,
    /// The offset its copy reaches (exclusive): the copied sealed segments end there.
    pub copied_end_offset: i64,
    /// Bytes copied so far.
    pub copied_bytes: u64,
}

/// The moves in progress, for DescribeLogDirs, and the one lock that runs them one at a time.
#[derive(Debug, Default)]
pub struct LogDirMoves {
    running: StdMutex<()>,
    in_progress: StdMutex<HashMap<(Uuid, i32), FutureReplica>>,
}

impl LogDirMoves {
    /// The future replica of partition `index` of topic `topic_id`, while it is moved.
    pub fn future_replica(&self, topic_id: Uuid, index: i32) -> Option<FutureReplica> {
        self.lock_in_progress().get(&(topic_id, index)).cloned()
    }

    /// Records `partition`'s future replica (`None`: no move in progress any more).
    pub(crate) fn record(&self, partition: &Partition, future: Option<FutureReplica>) {
        let key = (partition.topic_id(), partition.index);
        let mut in_progress = self.lock_in_progress();
        match future {
            Some(future) => in_progress.insert(key, future),
            None => in_progress.remove(&key),
        };
    }

    fn lock_in_progress(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, i32), FutureReplica>> {
        // Plain map updates: a panic elsewhere cannot leave one half-made.
        self.in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Moves `partition`'s log into `target_log_dir` (one of `log.dirs`, checked by the caller),
/// as the module comment describes; a partition already there is left as it is. Moves run one
/// at a time. Blocking (copies whole logs).
///
/// Errors: `PartitionOffline` / `UnknownTopicOrPartition` as [`Partition::log_blocking`];
/// `Storage(Io)` for a failed copy, fsync or rename: the log then stays where it was, still
/// served, and the partial copy is removed.
pub fn move_partition(
    moves: &LogDirMoves,
    partition: &Partition,
    target_log_dir: &Path,
) -> Result<(), BrokerError> {
    let _one_at_a_time = moves.running.lock().unwrap_or_else(PoisonError::into_inner);
    if partition.log_dir() == target_log_dir {
        return Ok(());
    }
    let source = partition.dir();
    let target = partition_dir::partition_dir(
        target_log_dir,
        partition.topic(),
        partition.index,
        partition.topic_id(),
    );
    let future = with_suffix(&target, FUTURE_SUFFIX);
    let moved = copy_and_switch(moves, partition, &source, &future, &target);
    moves.record(partition, None);
    if let Err(error) = moved {
        if future.exists() {
            let _ = remove_dir(&future);
        }
        return Err(error);
    }
    if partition.is_offline() {
        // Published but not opened, and not unpublished: both copies stay for the next start
        // to choose from (the marked one, complete, wins; or the old one if the copy was
        // unpublished after all).
        return partition.log_blocking().map(drop);
    }
    tracing::info!(from = %source.display(), to = %target.display(), "partition moved to another log dir");
    match partition_dir::rename_for_deletion(std::slice::from_ref(&source)) {
        Ok(renamed) => {
            partition_dir::remove_deleted(&renamed);
            // Only now: while the old copy keeps its name, the marker is what tells the next
            // start which of the two copies is the moved one.
            remove_marker(&target);
        }
        Err(error) => tracing::warn!(dir = %source.display(), %error,
            "could not remove a moved partition's old copy; the next start removes it"),
    }
    Ok(())
}

fn copy_and_switch(
    moves: &LogDirMoves,
    partition: &Partition,
    source: &Path,
    future: &Path,
    target: &Path,
) -> Result<(), BrokerError> {
    if future.exists() {
        remove_dir(future)?;
    }
    create_dir(future)?;
    let sealed = sealed_segments(source)?;
    moves.record(
        partition,
        Some(FutureReplica {
            log_dir: target_log_dir_of(target),
            copied_end_offset: 0,
            copied_bytes: 0,
        }),
    );
    // Before the first copy: a truncation since (a follower's) may cut a copied segment and
    // refill it in place to the same length, which no file identity is sure to show.
    let copied_before_truncations = partition.log_blocking()?;
    let truncations = copied_before_truncations.truncation_count();
    let mut copied = HashMap::new();
    for (name, _) in &sealed.files {
        copied.insert(name.clone(), copy_file(source, future, name)?);
    }
    moves.record(
        partition,
        Some(FutureReplica {
            log_dir: target_log_dir_of(target),
            copied_end_offset: sealed.end_offset,
            copied_bytes: sealed.files.iter().map(|(_, len)| len).sum(),
        }),
    );
    partition.relocate(|log, config| {
        let moved = log.close_for_move(target, |leader_epoch| {
            // Read with truncations held off (the close holds them until the switch).
            let truncated_since = !Arc::ptr_eq(log, &copied_before_truncations)
                || log.truncation_count() != truncations;
            if truncated_since {
                copied.clear();
            }
            copy_rest(source, future, &copied)?;
            runnel_storage::write_file_atomically(&future.join(MOVED_MARKER_FILE_NAME), b"")?;
            rename(future, target)?;
            // From here the copy may be published: a failure unpublishes it, or retires the
            // old log (see below), never leaves both taking appends.
            let opened = runnel_storage::sync_dir(&target_log_dir_of(target))
                .and_then(|()| PartitionLog::open_on(partition.storage().clone(), target, *config))
                .and_then(|moved| {
                    if let Some(epoch) = leader_epoch {
                        moved.set_leader_epoch(epoch)?;
                    }
                    Ok(moved)
                });
            match opened {
                Ok(moved) => Ok(Ok(moved)),
                // Unpublished again if the copy does not open: the old log keeps serving.
                Err(error) if unpublish(future, target).is_ok() => Err(error),
                // Published for good (the next start takes it: it holds the marker), so the
                // old log must take nothing more: it is retired, the partition offline here
                // until a restart opens the copy.
                Err(error) => {
                    tracing::error!(dir = %target.display(), %error,
                        "a moved log could not be opened nor unpublished; the partition is offline until a restart");
                    Ok(Err(error))
                }
            }
        })?;
        Ok((target.to_path_buf(), moved))
    })
}

/// The sealed segments' data files of a partition directory (all but the newest `.log`) and
/// the offset they end at (the newest segment's base offset).
struct SealedSegments {
    files: Vec<(String, u64)>,
    end_offset: i64,
}

fn sealed_segments(dir: &Path) -> Result<SealedSegments, StorageError> {
    let mut logs: Vec<(String, u64)> = list_files(dir)?
        .into_iter()
        .filter(|(name, _)| name.ends_with(SEGMENT_SUFFIX))
        .collect();
    logs.sort();
    let active = logs.pop();
    let end_offset = active
        .as_ref()
        .and_then(|(name, _)| name.trim_end_matches(SEGMENT_SUFFIX).parse().ok())
        .unwrap_or(0);
    Ok(SealedSegments {
        files: logs,
        end_offset,
    })
}

/// Identity of a copied file's source: a file replaced (a new inode), grown or cut (length),
/// or written in place (modification and change times, in nanoseconds) since it was copied is
/// copied again. Times have the kernel's clock-tick granularity, so a cut and refill within
/// one tick can keep them: [`copy_and_switch`] also recopies everything after a truncation.
type FileIdentity = (u64, u64, i64, i64, i64, i64);

fn identity(metadata: &std::fs::Metadata) -> FileIdentity {
    (
        metadata.ino(),
        metadata.len(),
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ctime(),
        metadata.ctime_nsec(),
    )
}

/// Copies `name` from `from` to `to` and fsyncs the copy; returns the source's identity as it
/// was copied.
fn copy_file(from: &Path, to: &Path, name: &str) -> Result<FileIdentity, StorageError> {
    let source = from.join(name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StorageError::Io { path, source }
    };
    let before = std::fs::metadata(&source).map_err(io(&source))?;
    let target = to.join(name);
    std::fs::copy(&source, &target).map_err(io(&source))?;
    std::fs::File::open(&target)
        .and_then(|file| file.sync_all())
        .map_err(io(&target))?;
    Ok(identity(&before))
}

/// With appends held and the log closed: copies every file not copied yet or changed since,
/// drops copies of files gone since (a segment retention deleted), fsyncs the directory.
fn copy_rest(
    source: &Path,
    future: &Path,
    copied: &HashMap<String, FileIdentity>,
) -> Result<(), StorageError> {
    let now = list_files(source)?;
    for (name, _) in &now {
        // A `.tmp` is an atomic write in progress or left by a crash, never part of the log.
        if name == MOVED_MARKER_FILE_NAME || name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let metadata = std::fs::metadata(source.join(name)).map_err(|e| StorageError::Io {
            path: source.join(name),
            source: e,
        })?;
        if copied.get(name) != Some(&identity(&metadata)) {
            copy_file(source, future, name)?;
        }
    }
    for (name, _) in list_files(future)? {
        if !now.iter().any(|(kept, _)| *kept == name) {
            std::fs::remove_file(future.join(&name)).map_err(|source| StorageError::Io {
                path: future.join(&name),
                source,
            })?;
        }
    }
    runnel_storage::sync_dir(future)
}

/// The regular files of `dir` with their lengths.
fn list_files(dir: &Path) -> Result<Vec<(String, u64)>, StorageError> {
    let io = |source| StorageError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let metadata = entry.metadata().map_err(io)?;
        if let (true, Some(name)) = (metadata.is_file(), entry.file_name().to_str()) {
            files.push((name.to_owned(), metadata.len()));
        }
    }
    Ok(files)
}

/// Renames a published copy back to its `-future` name (and fsyncs its log dir), so that the
/// next start removes it.
fn unpublish(future: &Path, target: &Path) -> Result<(), StorageError> {
    rename(target, future)?;
    runnel_storage::sync_dir(&target_log_dir_of(target))
}

fn target_log_dir_of(partition_dir: &Path) -> PathBuf {
    partition_dir
        .parent()
        .map_or_else(PathBuf::new, Path::to_path_buf)
}

fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn create_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn remove_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::remove_dir_all(dir).map_err(|source| StorageError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn rename(from: &Path, to: &Path) -> Result<(), StorageError> {
    std::fs::rename(from, to).map_err(|source| StorageError::Io {
        path: from.to_path_buf(),
        source,
    })
}

/// Removes a moved copy's marker once no other copy exists; a failure is harmless (a single
/// copy wins whether marked or not) and only logged.
fn remove_marker(dir: &Path) {
    let marker = dir.join(MOVED_MARKER_FILE_NAME);
    match std::fs::remove_file(&marker) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(file = %marker.display(), %error, "could not remove a move marker")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use std::sync::Arc;

    use super::*;
    use crate::broker::testing;
    use crate::config::BrokerConfig;
    use crate::metadata::MetadataImage;
    use crate::topics::{Topic, TopicRegistry};

    /// A registry of node 0 over `log_dirs`, with segments small enough that a few records
    /// make several.
    fn registry(log_dirs: &[PathBuf]) -> TopicRegistry {
        let listed: Vec<String> = log_dirs.iter().map(|d| d.display().to_string()).collect();
        let overrides = [
            ("log.dirs".to_string(), listed.join(",")),
            ("log.segment.bytes".to_string(), "300".to_string()),
        ];
        TopicRegistry::new(Arc::new(BrokerConfig::load(None, &overrides).unwrap()), 0)
    }

    fn two_log_dirs() -> (tempfile::TempDir, Vec<PathBuf>) {
        let root = tempfile::tempdir().unwrap();
        let dirs = vec![root.path().join("a"), root.path().join("b")];
        for dir in &dirs {
            std::fs::create_dir_all(dir).unwrap();
        }
        (root, dirs)
    }

    /// Topic `t` with `count` partitions, all on node 0.
    fn image_with(count: usize) -> MetadataImage {
        testing::image(&[0], &[("t", vec![testing::partition(&[0], 0); count])])
    }

    fn batch(value: &[u8]) -> bytes::Bytes {
        crate::broker::testing::record_batch(value)
    }

    /// Two log dirs, a registry over them holding `t` (one partition, in the first dir) with
    /// `records` records appended and flushed.
    fn partition_with_records(
        records: usize,
    ) -> (
        tempfile::TempDir,
        Vec<PathBuf>,
        MetadataImage,
        TopicRegistry,
        Arc<Topic>,
    ) {
        let (root, dirs) = two_log_dirs();
        let image = image_with(1);
        let topics = registry(&dirs);
        topics.sync(&image);
        let topic = topics.get("t").unwrap();
        append(&topic, records);
        (root, dirs, image, topics, topic)
    }

    /// Appends `count` records to partition 0 of `t` and flushes.
    fn append(topic: &Topic, count: usize) {
        let log = topic.partitions[&0].log_blocking().unwrap();
        for i in 0..count {
            log.append(&batch(format!("record {i}").as_bytes()))
                .unwrap();
        }
        log.flush(log.log_end_offset()).unwrap();
    }

    /// Everything partition 0's log holds, as read bytes.
    fn contents(topic: &Topic) -> (i64, bytes::Bytes) {
        let log = topic.partitions[&0].log_blocking().unwrap();
        let end = log.log_end_offset();
        (end, log.read(0, 1 << 20, end).unwrap())
    }

    #[test]
    fn a_new_partition_goes_to_the_log_dir_with_the_fewest_ties_to_the_first() {
        let dirs = vec![
            PathBuf::from("/a"),
            PathBuf::from("/b"),
            PathBuf::from("/c"),
        ];
        let mut placed = HashMap::new();
        assert_eq!(least_loaded(&dirs, &placed), dirs[0]);
        placed.insert(dirs[0].clone(), 2);
        placed.insert(dirs[1].clone(), 1);
        assert_eq!(least_loaded(&dirs, &placed), dirs[2]);
        placed.insert(dirs[2].clone(), 1);
        assert_eq!(least_loaded(&dirs, &placed), dirs[1]);

        let (_root, dirs) = two_log_dirs();
        let topics = registry(&dirs);
        topics.sync(&image_with(4));
        let topic = topics.get("t").unwrap();
        for (index, partition) in &topic.partitions {
            let expected = &dirs[usize::try_from(*index).unwrap() % 2];
            assert_eq!(&partition.log_dir(), expected, "partition {index}");
            assert!(partition.dir().is_dir());
        }
    }

    /// At start a partition is found in whichever log dir holds it, whatever placement would
    /// choose now.
    #[test]
    fn an_existing_partition_is_found_in_any_log_dir() {
        let (_root, dirs) = two_log_dirs();
        let image = image_with(1);
        let id = image.topic("t").unwrap().id;
        let in_second = partition_dir::partition_dir(&dirs[1], "t", 0, id);
        partition_dir::prepare(&in_second, "t", id).unwrap();
        assert_eq!(find_existing(&dirs, "t", 0, id), Some(dirs[1].clone()));
        let topics = registry(&dirs);
        topics.sync(&image);
        assert_eq!(topics.get("t").unwrap().partitions[&0].dir(), in_second);
        assert!(!partition_dir::partition_dir(&dirs[0], "t", 0, id).exists());
    }

    /// A move keeps every record at its offset, retires the old handle, removes the old copy,
    /// takes appends in its new place, and a restart finds it there.
    #[test]
    fn a_move_keeps_every_record_and_the_old_handle_takes_none() {
        let (_root, dirs, image, topics, topic) = partition_with_records(20);
        let partition = Arc::clone(&topic.partitions[&0]);
        let old_log = partition.log_blocking().unwrap();
        assert!(old_log.segment_count() > 2, "several segments to copy");
        let old_dir = partition.dir();
        let before = contents(&topic);

        move_partition(&topics.moves, &partition, &dirs[1]).unwrap();
        assert_eq!(partition.log_dir(), dirs[1]);
        assert!(!old_dir.exists());
        assert!(!partition.dir().join(MOVED_MARKER_FILE_NAME).exists());
        assert_eq!(contents(&topic), before);
        assert!(topics
            .moves
            .future_replica(partition.topic_id(), 0)
            .is_none());
        // The old handle takes nothing more, and says the log moved.
        let refused = old_log.append(&batch(b"late")).unwrap_err();
        assert!(old_log.is_moved(), "{refused}");
        // The moved log takes appends.
        append(&topic, 3);
        let after = contents(&topic);
        assert_eq!(after.0, before.0 + 3);
        // Moving to where it is changes nothing.
        move_partition(&topics.moves, &partition, &dirs[1]).unwrap();
        assert_eq!(partition.log_dir(), dirs[1]);

        // A restart finds it in its new dir.
        topics.close_all();
        drop((topic, partition, old_log, topics));
        let topics = registry(&dirs);
        resolve_interrupted_moves(&dirs).unwrap();
        topics.sync(&image);
        let topic = topics.get("t").unwrap();
        assert_eq!(topic.partitions[&0].log_dir(), dirs[1]);
        assert_eq!(contents(&topic), after);
    }

    /// A crash at each step of a move (the states a move passes through on disk) restarts with
    /// exactly one copy of the partition holding every record.
    #[test]
    fn a_crash_at_any_step_of_a_move_leaves_one_complete_copy() {
        // Each step's state, built from a closed log in `a` (a copy in `b`).
        #[derive(Debug, Clone, Copy)]
        enum Crash {
            PartOfTheSealedSegmentsCopied,
            EverythingCopiedNotPublished,
            PublishedOldCopyStillThere,
            OldCopyRenamedForDeletion,
            MarkerNotRemoved,
        }
        for crash in [
            Crash::PartOfTheSealedSegmentsCopied,
            Crash::EverythingCopiedNotPublished,
            Crash::PublishedOldCopyStillThere,
            Crash::OldCopyRenamedForDeletion,
            Crash::MarkerNotRemoved,
        ] {
            let (_root, dirs, image, topics, topic) = partition_with_records(20);
            let expected = contents(&topic);
            topics.close_all();
            let source = topic.partitions[&0].dir();
            drop((topic, topics));
            let target =
                partition_dir::partition_dir(&dirs[1], "t", 0, image.topic("t").unwrap().id);
            let future = with_suffix(&target, FUTURE_SUFFIX);
            create_dir(&future).unwrap();
            let sealed = sealed_segments(&source).unwrap();
            let expected_dir = match crash {
                Crash::PartOfTheSealedSegmentsCopied => {
                    copy_file(&source, &future, &sealed.files[0].0).unwrap();
                    &dirs[0]
                }
                Crash::EverythingCopiedNotPublished => {
                    copy_rest(&source, &future, &HashMap::new()).unwrap();
                    std::fs::write(future.join(MOVED_MARKER_FILE_NAME), b"").unwrap();
                    &dirs[0]
                }
                Crash::PublishedOldCopyStillThere
                | Crash::OldCopyRenamedForDeletion
                | Crash::MarkerNotRemoved => {
                    copy_rest(&source, &future, &HashMap::new()).unwrap();
                    std::fs::write(future.join(MOVED_MARKER_FILE_NAME), b"").unwrap();
                    rename(&future, &target).unwrap();
                    if !matches!(crash, Crash::PublishedOldCopyStillThere) {
                        let renamed =
                            partition_dir::rename_for_deletion(std::slice::from_ref(&source))
                                .unwrap();
                        if matches!(crash, Crash::MarkerNotRemoved) {
                            partition_dir::remove_deleted(&renamed);
                        }
                    }
                    &dirs[1]
                }
            };

            resolve_interrupted_moves(&dirs).unwrap();
            let live = crate::topics::live_topics(&image);
            for log_dir in &dirs {
                partition_dir::reconcile(log_dir, &live).unwrap();
            }
            let topics = registry(&dirs);
            topics.sync(&image);
            let topic = topics.get("t").unwrap();
            assert_eq!(&topic.partitions[&0].log_dir(), expected_dir, "{crash:?}");
            assert_eq!(contents(&topic), expected, "{crash:?}");
            for log_dir in &dirs {
                let left: Vec<_> = std::fs::read_dir(log_dir)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("t-"))
                    .collect();
                let expected_count = usize::from(log_dir == expected_dir);
                assert_eq!(
                    left.len(),
                    expected_count,
                    "{crash:?}: {left:?} in {}",
                    log_dir.display()
                );
            }
            assert!(!topic.partitions[&0]
                .dir()
                .join(MOVED_MARKER_FILE_NAME)
                .exists());
        }
    }

    /// Two copies and no single marker is not what a move leaves: start-up refuses to guess.
    #[test]
    fn two_unmarked_copies_are_refused() {
        let (_root, dirs) = two_log_dirs();
        let id = Uuid::new_v4();
        for log_dir in &dirs {
            partition_dir::prepare(&partition_dir::partition_dir(log_dir, "t", 0, id), "t", id)
                .unwrap();
        }
        assert!(resolve_interrupted_moves(&dirs).is_err());
    }

    /// Only live partition directories are matched across log dirs: a mount root's
    /// `lost+found`, `-delete` leftovers or other directories in several log dirs are no
    /// interrupted move, and a `-future` is removed only when it names a partition.
    #[test]
    fn only_partition_directories_count_as_copies() {
        let (_root, dirs) = two_log_dirs();
        let id = Uuid::new_v4();
        let deleted = with_suffix(
            &partition_dir::partition_dir(Path::new(""), "t", 0, id),
            partition_dir::DELETE_SUFFIX,
        );
        for log_dir in &dirs {
            create_dir(&log_dir.join("lost+found")).unwrap();
            create_dir(&log_dir.join(&deleted)).unwrap();
            create_dir(&log_dir.join("not-a-partition-future")).unwrap();
        }
        resolve_interrupted_moves(&dirs).unwrap();
        for log_dir in &dirs {
            assert!(log_dir.join("lost+found").is_dir());
            assert!(log_dir.join("not-a-partition-future").is_dir());
        }
    }

    /// A sealed segment cut and rewritten in place to its old length (a follower's truncation
    /// and refill: same inode, same length) after it was copied is copied again.
    #[test]
    fn a_file_rewritten_in_place_to_the_same_length_is_copied_again() {
        let (_root, dirs) = two_log_dirs();
        let (source, future) = (dirs[0].join("p"), dirs[1].join("p-future"));
        create_dir(&source).unwrap();
        create_dir(&future).unwrap();
        std::fs::write(source.join("0.log"), b"before the cut").unwrap();
        let mut copied = HashMap::new();
        copied.insert(
            "0.log".to_string(),
            copy_file(&source, &future, "0.log").unwrap(),
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(source.join("0.log"))
            .unwrap();
        file.set_len(4).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"after  cut", 4).unwrap();
        // The kernel's timestamps have clock-tick granularity: made distinct for the test.
        file.set_modified(std::time::UNIX_EPOCH).unwrap();
        drop(file);
        std::fs::write(source.join("high-watermark.tmp"), b"torn").unwrap();

        copy_rest(&source, &future, &copied).unwrap();
        assert_eq!(
            std::fs::read(future.join("0.log")).unwrap(),
            b"befoafter  cut"
        );
        assert!(!future.join("high-watermark.tmp").exists());
    }

    /// When the old copy cannot be renamed away after a move (here its `-delete` name is taken
    /// by a leftover), the new copy keeps its marker, so the next start keeps the moved copy
    /// rather than refusing to choose between two unmarked ones.
    #[test]
    fn the_marker_stays_while_the_old_copy_does() {
        let (_root, dirs, image, topics, topic) = partition_with_records(20);
        let partition = Arc::clone(&topic.partitions[&0]);
        let old_dir = partition.dir();
        let leftover = with_suffix(&old_dir, partition_dir::DELETE_SUFFIX);
        create_dir(&leftover).unwrap();
        std::fs::write(leftover.join("in-the-way"), b"").unwrap();
        let before = contents(&topic);

        move_partition(&topics.moves, &partition, &dirs[1]).unwrap();
        assert!(old_dir.is_dir(), "the old copy could not be renamed away");
        assert!(partition.dir().join(MOVED_MARKER_FILE_NAME).exists());

        topics.close_all();
        drop((topic, partition, topics));
        resolve_interrupted_moves(&dirs).unwrap();
        assert!(!old_dir.exists());
        let topics = registry(&dirs);
        topics.sync(&image);
        let topic = topics.get("t").unwrap();
        assert_eq!(topic.partitions[&0].log_dir(), dirs[1]);
        assert_eq!(contents(&topic), before);
    }

    /// A copy that cannot be published (the target name is taken by a file) leaves the log
    /// where it was, serving, and no partial copy behind.
    #[test]
    fn a_failed_move_leaves_the_log_serving_where_it_was() {
        let (_root, dirs, _image, topics, topic) = partition_with_records(5);
        let partition = Arc::clone(&topic.partitions[&0]);
        let target = partition_dir::partition_dir(&dirs[1], "t", 0, partition.topic_id());
        std::fs::write(&target, b"in the way").unwrap();
        let before = contents(&topic);
        assert!(move_partition(&topics.moves, &partition, &dirs[1]).is_err());
        assert_eq!(partition.log_dir(), dirs[0]);
        assert!(!with_suffix(&target, FUTURE_SUFFIX).exists());
        append(&topic, 1);
        assert_eq!(contents(&topic).0, before.0 + 1);
    }
}
