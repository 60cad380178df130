//! Partition directories on disk: their names, the `partition.metadata` file naming the topic
//! and topic id inside each, deletion, and the start-up pass that upgrades old directories and
//! removes what deleted topics left behind.
//!
//! A partition directory belongs to one topic *id*, never just a name:
//! `<data>/<topic>-<partition>.<topic id as 32 hex digits>/`. A topic deleted and recreated
//! under the same name has a new id, so its partitions get new directories and can never adopt
//! an old one, whatever a crash left; and a handle still open on a deleted log (a produce in
//! flight, a queued flush) only ever reaches paths under the old id, which are renamed away
//! (`…-delete`) and removed: its writes go to unlinked files or fail, never into the new topic.
//! Inside, `partition.metadata` says the same as Kafka's file (`version: 0`, `topic_id:` in
//! Kafka's base64 form) plus the topic name; a directory whose file names another id is not
//! opened.
//!
//! This module knows directory and file names only; logs are opened by `topics.rs`.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use runnel_storage::StorageError;
use uuid::Uuid;

/// The file in every partition directory naming its topic and topic id.
pub const METADATA_FILE_NAME: &str = "partition.metadata";
/// Suffix of a deleted partition's directory, renamed so before it is removed (Kafka's).
pub const DELETE_SUFFIX: &str = "-delete";
/// Longest file name Linux filesystems take (ext4, XFS): a directory name, with
/// [`DELETE_SUFFIX`] appended, must fit.
const DIR_NAME_BYTES_MAX: usize = 255;
/// `partition.metadata` format version (Kafka's is 0).
const METADATA_VERSION: &str = "0";

/// Directory of partition `index` of the topic `topic` with id `id`. The name leads with the
/// topic name for operators; a name so long that the directory name (plus `-delete`) would
/// not fit is cut, as Kafka cuts its delete names: the id identifies the topic.
pub fn partition_dir(data_dir: &Path, topic: &str, index: i32, id: Uuid) -> PathBuf {
    let suffix = format!("-{index}.{}", id.simple());
    let room = DIR_NAME_BYTES_MAX.saturating_sub(suffix.len() + DELETE_SUFFIX.len());
    // Topic names are ASCII (validated), so any byte position is a character boundary.
    let prefix = topic.get(..room.min(topic.len())).unwrap_or(topic);
    data_dir.join(format!("{prefix}{suffix}"))
}

/// Prepares `dir` to hold the log of partition `index` of topic `topic`/`id`: creates it with
/// its `partition.metadata` if it is new, writes the file if it is missing or unreadable (a
/// crash right after creating the directory), and refuses a directory whose file names another
/// topic id. Blocking.
///
/// The file is not fsynced: the directory name carries the id and is what start-up trusts, so
/// a file lost or emptied by a crash is only rewritten (and `PartitionLog::open` fsyncs the
/// directory and its entry in the parent before anything in it counts as durable). Creating
/// 3,000 partitions at once must not cost 3,000 more fsync pairs.
///
/// Errors: `StorageError::Io` on I/O failure, or (`InvalidData`) when the file names another
/// topic id.
pub fn prepare(dir: &Path, topic: &str, id: Uuid) -> Result<(), StorageError> {
    let path = dir.join(METADATA_FILE_NAME);
    match read_metadata(&path) {
        Ok(found) if found == id => Ok(()),
        Ok(found) => Err(invalid(
            &path,
            format!("names topic id {found}, but the directory belongs to topic {topic} ({id})"),
        )),
        Err(error) if matches!(error.kind(), ErrorKind::NotFound | ErrorKind::InvalidData) => {
            if error.kind() == ErrorKind::InvalidData {
                tracing::warn!(path = %path.display(), %error, "rewriting an unreadable partition.metadata");
            }
            std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            write_metadata(dir, topic, id, Durability::LeftToTheDirectorySync)
        }
        Err(source) => Err(StorageError::Io { path, source }),
    }
}

/// Renames partition directories (of a deleted topic, or a moved partition's old copy) to
/// `<name>-delete` (one fsync per log dir holding them) and returns the new paths, to be
/// removed with [`remove_deleted`]. A directory that does not exist (never opened) is skipped.
/// Blocking.
///
/// Errors: `StorageError::Io` if a rename or an fsync fails.
pub fn rename_for_deletion(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, StorageError> {
    let mut renamed = Vec::with_capacity(dirs.len());
    let mut log_dirs: Vec<&Path> = Vec::new();
    for dir in dirs {
        let target = delete_name(dir);
        match std::fs::rename(dir, &target) {
            Ok(()) => renamed.push(target),
            Err(error) if error.kind() == ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StorageError::Io {
                    path: dir.clone(),
                    source,
                })
            }
        }
        let log_dir = dir.parent().unwrap_or(Path::new("."));
        if !log_dirs.contains(&log_dir) {
            log_dirs.push(log_dir);
        }
    }
    for log_dir in log_dirs {
        runnel_storage::sync_dir(log_dir)?;
    }
    Ok(renamed)
}

/// Removes directories renamed by [`rename_for_deletion`]; a failure is logged (the next
/// start-up retries). Blocking.
pub fn remove_deleted(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Err(error) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), %error,
                "could not remove a deleted partition directory; the next start retries");
        }
    }
}

/// What start-up knows of a committed topic: its name, id and partition count.
#[derive(Debug, Clone)]
pub struct LiveTopic {
    /// The topic name.
    pub name: String,
    /// The topic id.
    pub id: Uuid,
    /// Partitions, `0..partitions`.
    pub partitions: i32,
}

/// The start-up pass over the data directory, before any log is opened:
/// - `…-delete` directories (a delete that stopped before removing them) are removed;
/// - a directory named for a topic id that no committed topic has, or for a partition beyond
///   its topic's count (a delete or a CreatePartitions cut short by a crash) is removed;
/// - a directory of the layout before topic ids (`<topic>-<partition>`, no
///   `partition.metadata`) is adopted by the committed topic of that name: its
///   `partition.metadata` is written (fsynced), then it is renamed to its id-keyed name (and
///   the data directory fsynced). With no such topic it is what a delete left, and removed
///   if it holds a segment or a checkpoint, or nothing (else it is not a partition's).
///
/// Anything else in the data directory is left alone. Blocking.
///
/// Errors: `StorageError::Io` if the directory cannot be listed, or an upgrade step fails (the
/// broker then does not start rather than serve a topic without its data).
pub fn reconcile(data_dir: &Path, topics: &[LiveTopic]) -> Result<(), StorageError> {
    let by_id: HashMap<Uuid, &LiveTopic> = topics.iter().map(|t| (t.id, t)).collect();
    let by_name: HashMap<&str, &LiveTopic> = topics.iter().map(|t| (t.name.as_str(), t)).collect();
    let entries = std::fs::read_dir(data_dir).map_err(|source| StorageError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let mut doomed = Vec::new();
    let mut upgraded = 0usize;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.ends_with(DELETE_SUFFIX) {
            tracing::info!(dir = %path.display(), "removing the directory of a deleted partition");
            remove_deleted(&[path]);
            continue;
        }
        match parse_dir_name(&name) {
            Some(DirName::Keyed { index, id }) => {
                let live = by_id.get(&id).is_some_and(|t| index < t.partitions);
                if !live {
                    tracing::warn!(dir = %path.display(),
                        "no committed topic has this partition (a delete cut short); removing it");
                    doomed.push(path);
                }
            }
            Some(DirName::Legacy { topic, index }) => match by_name.get(topic.as_str()) {
                Some(live) if index < live.partitions => {
                    adopt_legacy(data_dir, &path, live, index)?;
                    upgraded += 1;
                }
                _ if holds_a_partition_log(&path) => {
                    tracing::warn!(dir = %path.display(),
                        "no committed topic has this partition (a delete cut short); removing it");
                    doomed.push(path);
                }
                // Named like a partition but not one (an operator's `backup-2`): not ours.
                _ => {}
            },
            None => {}
        }
    }
    // Nothing has them open yet: removed directly (a crash half way leaves a directory the next
    // start removes again).
    remove_deleted(&doomed);
    if upgraded > 0 {
        runnel_storage::sync_dir(data_dir)?;
        tracing::info!(
            partitions = upgraded,
            "partition directories upgraded to the topic-id layout"
        );
    }
    Ok(())
}

/// Gives an old-layout directory its `partition.metadata` and id-keyed name. The file comes
/// first: a crash before the rename leaves an old-layout name with the file, which the next
/// start adopts the same way (the file is rewritten).
fn adopt_legacy(
    data_dir: &Path,
    dir: &Path,
    topic: &LiveTopic,
    index: i32,
) -> Result<(), StorageError> {
    let target = partition_dir(data_dir, &topic.name, index, topic.id);
    if target.exists() {
        // Both layouts for one partition: never merge them; the id-keyed one is the log.
        return Err(invalid(
            dir,
            format!(
                "an old-layout partition directory beside its id-keyed one {}; move one away",
                target.display()
            ),
        ));
    }
    write_metadata(dir, &topic.name, topic.id, Durability::Fsynced)?;
    std::fs::rename(dir, &target).map_err(|source| StorageError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    tracing::info!(from = %dir.display(), to = %target.display(),
        "partition directory adopted by its topic id");
    Ok(())
}

/// Whether `dir` holds what a partition log leaves (a segment or a checkpoint), or nothing at
/// all: only such old-layout directories are removed as leftovers of a delete.
fn holds_a_partition_log(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut names = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .peekable();
    names.peek().is_none()
        || names.any(|name| name.ends_with(".log") || name == "recovery-point-offset-checkpoint")
}

/// A partition directory name, parsed.
#[derive(Debug, PartialEq, Eq)]
enum DirName {
    /// `<topic prefix>-<partition>.<32 hex digits>`.
    Keyed { index: i32, id: Uuid },
    /// `<topic>-<partition>`, the layout before topic ids.
    Legacy { topic: String, index: i32 },
}

/// Whether `name` is a live partition directory of the current layout
/// (`<topic prefix>-<partition>.<topic id>`): not a `-delete` leftover, an old-layout or any
/// other directory.
pub fn is_keyed_partition_dir_name(name: &str) -> bool {
    matches!(parse_dir_name(name), Some(DirName::Keyed { .. }))
}

fn parse_dir_name(name: &str) -> Option<DirName> {
    if let Some((head, hex)) = name.rsplit_once('.') {
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let (_, index) = head.rsplit_once('-')?;
            return Some(DirName::Keyed {
                index: parse_index(index)?,
                id: Uuid::try_parse(hex).ok()?,
            });
        }
    }
    let (topic, index) = name.rsplit_once('-')?;
    crate::topics::validate_topic_name(topic).ok()?;
    Some(DirName::Legacy {
        topic: topic.to_string(),
        index: parse_index(index)?,
    })
}

/// A partition index as written in a directory name: decimal digits only.
fn parse_index(digits: &str) -> Option<i32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn delete_name(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(DELETE_SUFFIX);
    PathBuf::from(name)
}

/// How [`write_metadata`] makes the file durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Fsynced with its directory before returning.
    Fsynced,
    /// Renamed into place only; the caller's next directory fsync makes the entry durable.
    LeftToTheDirectorySync,
}

fn write_metadata(
    dir: &Path,
    topic: &str,
    id: Uuid,
    durability: Durability,
) -> Result<(), StorageError> {
    let text = format!(
        "version: {METADATA_VERSION}\ntopic_id: {}\ntopic_name: {topic}\n",
        kafka_uuid_string(id)
    );
    let path = dir.join(METADATA_FILE_NAME);
    if durability == Durability::Fsynced {
        return runnel_storage::write_file_atomically(&path, text.as_bytes());
    }
    // Whole or absent, never half-written, even without an fsync: write aside, then rename.
    let temp = dir.join(format!("{METADATA_FILE_NAME}.tmp"));
    let io = |source| StorageError::Io {
        path: path.clone(),
        source,
    };
    std::fs::write(&temp, text.as_bytes()).map_err(io)?;
    std::fs::rename(&temp, &path).map_err(io)
}

/// The topic id a `partition.metadata` names; `NotFound` if there is none, `InvalidData` if it
/// cannot be read as one.
fn read_metadata(path: &Path) -> std::io::Result<Uuid> {
    let text = std::fs::read_to_string(path)?;
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .map(str::trim)
    };
    let bad = |what: &str| std::io::Error::new(ErrorKind::InvalidData, what.to_string());
    if field("version:") != Some(METADATA_VERSION) {
        return Err(bad("unknown partition.metadata version"));
    }
    field("topic_id:")
        .and_then(parse_kafka_uuid)
        .ok_or_else(|| bad("no valid topic_id"))
}

fn invalid(path: &Path, message: String) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(ErrorKind::InvalidData, message),
    }
}

/// URL-safe base64 alphabet, as Kafka's `Uuid.toString` uses it.
const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A topic id as Kafka writes it: 16 bytes in URL-safe base64 without padding (22 characters).
fn kafka_uuid_string(id: Uuid) -> String {
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let bits = chunk
            .iter()
            .zip([16u32, 8, 0])
            .fold(0u32, |bits, (byte, shift)| bits | u32::from(*byte) << shift);
        // 3 bytes make 4 characters, a final single byte 2.
        for position in 0..=chunk.len() {
            let sextet = (bits >> (18 - 6 * position)) & 0x3f;
            if let Some(c) = usize::try_from(sextet).ok().and_then(|i| BASE64_URL.get(i)) {
                out.push(char::from(*c));
            }
        }
    }
    out
}

/// The inverse of [`kafka_uuid_string`]; `None` for anything else.
fn parse_kafka_uuid(text: &str) -> Option<Uuid> {
    if text.len() != 22 {
        return None;
    }
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    let mut bytes = Vec::with_capacity(16);
    for c in text.bytes() {
        let value = BASE64_URL.iter().position(|&a| a == c)?;
        bits = (bits << 6) | u32::try_from(value).ok()?;
        bit_count += 6;
        if bit_count >= 8 {
            bit_count -= 8;
            bytes.push(u8::try_from((bits >> bit_count) & 0xff).ok()?);
        }
    }
    // 22 characters carry 132 bits: the last 4 must be zero in a canonical encoding.
    if bits & ((1 << bit_count) - 1) != 0 {
        return None;
    }
    Uuid::from_slice(&bytes).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_read_back_in_kafkas_base64_form() {
        // Kafka's own example: the all-zero id is "AAAAAAAAAAAAAAAAAAAAAA".
        assert_eq!(kafka_uuid_string(Uuid::nil()), "AAAAAAAAAAAAAAAAAAAAAA");
        let max = Uuid::from_bytes([0xff; 16]);
        assert_eq!(kafka_uuid_string(max), "_____________________w");
        for seed in 0u128..200 {
            let id = Uuid::from_u128(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            assert_eq!(parse_kafka_uuid(&kafka_uuid_string(id)), Some(id));
        }
        assert_eq!(parse_kafka_uuid("_____________________x"), None);
        assert_eq!(parse_kafka_uuid("short"), None);
    }

    #[test]
    fn directory_names_parse_back() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let dir = partition_dir(Path::new("/d"), "a-1.b", 12, id);
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "a-1.b-12.0123456789abcdef0123456789abcdef");
        assert_eq!(parse_dir_name(name), Some(DirName::Keyed { index: 12, id }));
        assert_eq!(
            parse_dir_name("a-1.b-12"),
            Some(DirName::Legacy {
                topic: "a-1.b".into(),
                index: 12
            })
        );
        assert_eq!(parse_dir_name("__topics"), None);
        assert_eq!(parse_dir_name("lost+found"), None);
        let long = "t".repeat(249);
        let dir = partition_dir(Path::new("/d"), &long, 9999, id);
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len() + DELETE_SUFFIX.len(), DIR_NAME_BYTES_MAX);
        assert_eq!(
            parse_dir_name(name),
            Some(DirName::Keyed { index: 9999, id })
        );
    }

    #[test]
    fn prepare_refuses_a_directory_of_another_topic_id() {
        let data = tempfile::tempdir().unwrap();
        let (old, new) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let dir = data.path().join("t-0");
        prepare(&dir, "t", old).unwrap();
        prepare(&dir, "t", old).unwrap();
        assert!(prepare(&dir, "t", new).is_err());
    }

    #[test]
    fn reconcile_upgrades_old_directories_and_removes_leftovers() {
        let data = tempfile::tempdir().unwrap();
        let live = LiveTopic {
            name: "kept".into(),
            id: Uuid::from_u128(7),
            partitions: 1,
        };
        let make = |name: &str, file: &str| {
            let dir = data.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join(file), b"x").unwrap();
            dir
        };
        make("kept-0", "00000000000000000000.log");
        let gone_keyed = make(&format!("gone-0.{}", Uuid::from_u128(9).simple()), "a.log");
        let gone_legacy = make("gone-0", "00000000000000000000.log");
        let beyond = make("kept-1", "00000000000000000000.log");
        let deleted = make("kept-0.x-delete", "a.log");
        let foreign = make("backup-2", "notes.txt");
        reconcile(data.path(), std::slice::from_ref(&live)).unwrap();

        let adopted = partition_dir(data.path(), "kept", 0, live.id);
        assert!(adopted.join("00000000000000000000.log").exists());
        assert_eq!(
            read_metadata(&adopted.join(METADATA_FILE_NAME)).unwrap(),
            live.id
        );
        assert!(!data.path().join("kept-0").exists());
        for gone in [gone_keyed, gone_legacy, beyond, deleted] {
            assert!(!gone.exists(), "{} was removed", gone.display());
        }
        assert!(
            foreign.exists(),
            "a directory that is no partition's is left alone"
        );
    }
}
