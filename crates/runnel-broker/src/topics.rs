//! The topic registry: which topics exist, their ids, configs and partition logs.
//!
//! A topic is committed by one small file, `<data>/__topics/<name>.properties` (topic id,
//! partition count, config overrides), written atomically before its partition directories are
//! used and removed first on deletion; partition logs live in directories keyed by topic id,
//! `<data>/<name>-<partition>.<topic id>/` (`partition_dir.rs`), so a topic recreated under an
//! old name never sees the old one's data. Topic file I/O runs on the blocking pool.
//!
//! Partition logs are created with their topic but, at start-up, open lazily: start-up reads
//! only the topic files, so a broker with ten thousand partitions serves at once; a log is
//! opened (recovered) by its first use, or by the
//! warm-up thread that walks every partition after start-up ([`TopicRegistry::open_all`]). A
//! log that fails to open (mid-log corruption, I/O) leaves that one partition offline
//! (KAFKA_STORAGE_ERROR) until restart; everything else is served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, OnceLock, PoisonError};

use dashmap::DashMap;
use runnel_storage::{LogConfig, PartitionLog, Storage, StorageError};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::partition_dir::{self, LiveTopic};
use crate::topic_config::TopicConfig;

/// Directory (under the data dir) holding one properties file per topic.
const TOPICS_DIR: &str = "__topics";
/// Kafka's limit on topic name length.
const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Upper bound on partitions per topic, so a request cannot ask for unbounded work.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// One partition of a topic: its log, opened on first use. On a single node the high
/// watermark is the log end.
#[derive(Debug)]
pub struct Partition {
    /// Partition index within the topic.
    pub index: i32,
    /// The topic's name and id, which the directory's `partition.metadata` must name.
    topic: String,
    topic_id: Uuid,
    /// `<data>/<topic>-<index>.<topic id>`: one topic id's, never reused by another topic.
    dir: PathBuf,
    /// The storage settings the log opens with, and any change since. Held while the log is
    /// being opened, so a config change cannot slip between reading it and the log existing.
    log_config: StdMutex<LogConfig>,
    log: OnceLock<LogState>,
    /// Where the log keeps its files (the broker's `storage`).
    storage: Storage,
}

/// What became of a partition's log; set once, never changed.
#[derive(Debug)]
enum LogState {
    /// Open (it may have failed since: `PartitionLog::check_healthy`).
    Open(Arc<PartitionLog>),
    /// It failed to open: the partition is offline until restart.
    Offline(Arc<StorageError>),
    /// Its topic was deleted before the log was opened: it never will be, so nothing can
    /// recreate the directory of a deleted topic.
    Deleted,
}

impl Partition {
    fn new(
        data_dir: &Path,
        topic: &str,
        topic_id: Uuid,
        index: i32,
        log_config: LogConfig,
        storage: Storage,
    ) -> Partition {
        Partition {
            index,
            topic: topic.to_string(),
            topic_id,
            dir: partition_dir::partition_dir(data_dir, topic, index, topic_id),
            log_config: StdMutex::new(log_config),
            log: OnceLock::new(),
            storage,
        }
    }

    /// The directory holding this partition's log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The partition's log, opening (recovering) it on first use. The open runs on the
    /// blocking pool, never on this worker: after a clean shutdown it reads a few small files,
    /// after a crash it verifies the unflushed tail, which may take seconds. Concurrent callers
    /// wait for the one open (the first to start it does it; the others wait on the pool).
    ///
    /// Errors: `PartitionOffline` when the log could not be opened (then or earlier);
    /// `TaskFailed` if the blocking task died.
    pub async fn log(self: &Arc<Self>) -> Result<&Arc<PartitionLog>, BrokerError> {
        if self.log.get().is_none() {
            let partition = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                partition.open_once();
            })
            .await?;
        }
        // The cell is set by now and never emptied: this only reads it.
        self.log_blocking()
    }

    /// [`Partition::log`] for callers already on a blocking thread (the blocking pool, the
    /// warm-up thread, start-up): opens the log here if it is not open yet. Never call it on
    /// an async worker.
    ///
    /// Errors: `PartitionOffline` when the log could not be opened (then or earlier), or a
    /// failed fsync or write took it offline since; `UnknownTopicOrPartition` when its topic
    /// was deleted.
    pub fn log_blocking(&self) -> Result<&Arc<PartitionLog>, BrokerError> {
        let log = match self.open_once() {
            LogState::Open(log) => log,
            LogState::Offline(reason) => {
                return Err(BrokerError::PartitionOffline {
                    dir: self.dir.clone(),
                    reason: Arc::clone(reason),
                })
            }
            LogState::Deleted => {
                return Err(BrokerError::UnknownTopicOrPartition(format!(
                    "{}-{}",
                    self.topic, self.index
                )))
            }
        };
        // A log whose fsync or write failed is offline too, until a restart reopens it.
        log.check_healthy()
            .map_err(|reason| BrokerError::PartitionOffline {
                dir: self.dir.clone(),
                reason: Arc::new(reason),
            })?;
        Ok(log)
    }

    /// Opens the log unless that was done (or tried) before; a second caller blocks until the
    /// first one's open finished. The config lock is held while opening, so a config change
    /// cannot slip between reading it and the log existing.
    fn open_once(&self) -> &LogState {
        if let Some(opened) = self.log.get() {
            return opened;
        }
        let config = self.lock_config();
        self.log.get_or_init(|| {
            partition_dir::prepare(&self.dir, &self.topic, self.topic_id)
                .and_then(|()| PartitionLog::open_on(self.storage.clone(), &self.dir, *config))
                .map_or_else(
                    |error| {
                        tracing::error!(dir = %self.dir.display(), %error,
                            "partition log could not be opened; the partition is offline");
                        LogState::Offline(Arc::new(error))
                    },
                    |log| LogState::Open(Arc::new(log)),
                )
        })
    }

    /// Called when the topic is deleted, before its directory is renamed away: a log never
    /// opened is marked deleted so that no later use (a request that resolved the partition
    /// before the delete, log maintenance) opens it and so recreates the directory. Waits for
    /// an open in progress. Blocking.
    fn retire(&self) {
        let _config = self.lock_config();
        self.log.get_or_init(|| LogState::Deleted);
    }

    /// Whether the partition is offline: its log failed to open, or a failed fsync or write
    /// took it offline since. Nothing is opened.
    pub fn is_offline(&self) -> bool {
        match self.log.get() {
            Some(LogState::Offline(_)) => true,
            Some(LogState::Open(log)) => log.check_healthy().is_err(),
            Some(LogState::Deleted) | None => false,
        }
    }

    /// The log if it is open (nothing is opened).
    pub fn opened_log(&self) -> Option<&Arc<PartitionLog>> {
        match self.log.get() {
            Some(LogState::Open(log)) => Some(log),
            _ => None,
        }
    }

    /// Offsets below this are visible to consumers: see [`high_watermark`].
    pub async fn high_watermark(self: &Arc<Self>) -> Result<i64, BrokerError> {
        Ok(high_watermark(self.log().await?))
    }

    /// Applies new storage settings, now if the log is open, else when it opens.
    fn set_config(&self, log_config: LogConfig) {
        let mut config = self.lock_config();
        *config = log_config;
        if let Some(log) = self.opened_log() {
            log.set_config(log_config);
        }
    }

    fn lock_config(&self) -> std::sync::MutexGuard<'_, LogConfig> {
        // A `LogConfig` is `Copy`: a panic elsewhere cannot leave it half-written.
        self.log_config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A topic: name, id, config and partitions (index = position in the vector).
#[derive(Debug)]
pub struct Topic {
    /// The topic's name.
    pub name: String,
    /// The topic id (Metadata v10+, Fetch v13+).
    pub id: Uuid,
    /// Config overrides.
    pub config: TopicConfig,
    /// Partitions, by index.
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// The partition with this index, if it exists.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    /// What the topic file records.
    fn spec(&self) -> TopicSpec {
        TopicSpec {
            name: self.name.clone(),
            partitions: i32::try_from(self.partitions.len()).unwrap_or(i32::MAX),
            config: self.config.clone(),
        }
    }

    /// Internal topics (`__consumer_offsets`, `__transaction_state`).
    pub fn is_internal(&self) -> bool {
        is_internal_name(&self.name)
    }
}

/// Whether `name` is one of Kafka's internal topics, which clients cannot auto-create.
pub fn is_internal_name(name: &str) -> bool {
    matches!(name, "__consumer_offsets" | "__transaction_state")
}

/// What CreateTopics (or auto-creation) asks for, already defaulted.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count, >= 1.
    pub partitions: i32,
    /// Config overrides.
    pub config: TopicConfig,
}

/// All topics of this broker.
#[derive(Debug)]
pub struct TopicRegistry {
    data_dir: PathBuf,
    config: Arc<BrokerConfig>,
    topics: DashMap<String, Arc<Topic>>,
    /// Serialises create and delete so that two requests for one name cannot interleave.
    admin_lock: Mutex<()>,
}

impl TopicRegistry {
    /// Loads every committed topic and opens (recovers) its partition logs.
    pub fn load(config: Arc<BrokerConfig>) -> Result<TopicRegistry, BrokerError> {
        let data_dir = config.data_dir.clone();
        let topics_dir = data_dir.join(TOPICS_DIR);
        std::fs::create_dir_all(&topics_dir).map_err(|source| BrokerError::Metadata {
            path: topics_dir.clone(),
            source,
        })?;
        let topics = DashMap::new();
        let entries = std::fs::read_dir(&topics_dir).map_err(|source| BrokerError::Metadata {
            path: topics_dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("properties") {
                continue;
            }
            let (name, id, spec) = read_topic_file(&path)?;
            let topic = new_topic(&data_dir, &config, name.clone(), id, spec);
            topics.insert(name, Arc::new(topic));
        }
        // Before any log opens: upgrade old directories, remove what deletes left behind.
        let live: Vec<LiveTopic> = topics
            .iter()
            .map(|t| LiveTopic {
                name: t.value().name.clone(),
                id: t.value().id,
                partitions: i32::try_from(t.value().partitions.len()).unwrap_or(i32::MAX),
            })
            .collect();
        partition_dir::reconcile(&data_dir, &live)?;
        tracing::info!(topics = topics.len(), data_dir = %data_dir.display(), "topics loaded");
        Ok(TopicRegistry {
            data_dir,
            config,
            topics,
            admin_lock: Mutex::new(()),
        })
    }

    /// The topic with this name.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.get(name).map(|t| Arc::clone(t.value()))
    }

    /// The topic with this id.
    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .iter()
            .find(|t| t.value().id == id)
            .map(|t| Arc::clone(t.value()))
    }

    /// Every topic, sorted by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.iter().map(|t| Arc::clone(t.value())).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Creates a topic (or, with `validate_only`, checks that it could be created).
    pub async fn create(
        &self,
        spec: TopicSpec,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(&spec.name)?;
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&spec.partitions) {
            return Err(BrokerError::InvalidPartitions(spec.partitions));
        }
        let _guard = self.admin_lock.lock().await;
        if self.topics.contains_key(&spec.name) {
            return Err(BrokerError::TopicAlreadyExists(spec.name));
        }
        if self
            .topics
            .iter()
            .any(|t| collides(&t.value().name, &spec.name))
        {
            return Err(BrokerError::InvalidTopic {
                name: spec.name,
                reason: "collides with an existing topic once '.' and '_' are treated alike",
            });
        }
        let id = Uuid::new_v4();
        if validate_only {
            return Ok(Arc::new(Topic {
                name: spec.name,
                id,
                config: spec.config,
                partitions: Vec::new(),
            }));
        }
        let data_dir = self.data_dir.clone();
        let config = Arc::clone(&self.config);
        let topic = tokio::task::spawn_blocking(move || {
            write_topic_file(&data_dir, id, &spec)?;
            let topic = new_topic(&data_dir, &config, spec.name.clone(), id, spec);
            // Created now, as Kafka does: the partition directories exist once the topic does.
            for partition in &topic.partitions {
                partition.log_blocking()?;
            }
            Ok::<_, BrokerError>(topic)
        })
        .await??;
        let topic = Arc::new(topic);
        self.topics.insert(topic.name.clone(), Arc::clone(&topic));
        tracing::info!(topic = %topic.name, partitions = topic.partitions.len(), "topic created");
        Ok(topic)
    }

    /// Deletes a topic: its properties file first (the commit point), then its partition
    /// directories are renamed to `…-delete` (durably) and removed in the background. Logs
    /// still referenced (a request in flight) keep writing to the renamed, then unlinked,
    /// files, or fail; a topic created later under the same name has another id and so other
    /// directories.
    ///
    /// Errors: `InternalTopicDeletion` for an internal topic (only the broker manages those);
    /// `UnknownTopicOrPartition` if there is no such topic.
    pub async fn delete(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        let _guard = self.admin_lock.lock().await;
        let topic = self
            .get(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        if topic.is_internal() {
            return Err(BrokerError::InternalTopicDeletion(topic.name.clone()));
        }
        let data_dir = self.data_dir.clone();
        let doomed = Arc::clone(&topic);
        let renamed =
            tokio::task::spawn_blocking(move || delete_topic_files(&data_dir, &doomed)).await??;
        self.topics.remove(name);
        tracing::info!(topic = %name, "topic deleted");
        // Removing a large log takes a while: not under the admin lock, nor in the reply.
        drop(tokio::task::spawn_blocking(move || {
            partition_dir::remove_deleted(&renamed);
        }));
        Ok(topic)
    }

    /// Replaces a topic's config overrides with `change(current)`, computed under the admin
    /// lock so that concurrent read-modify-writes (IncrementalAlterConfigs) all land: persisted
    /// first, then applied live (storage settings of every partition; retention, compaction
    /// and produce checks read the topic's config each time).
    pub async fn update_config(
        &self,
        name: &str,
        change: impl FnOnce(&TopicConfig) -> Result<TopicConfig, BrokerError>,
    ) -> Result<Arc<Topic>, BrokerError> {
        let _guard = self.admin_lock.lock().await;
        let topic = self
            .get(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        let updated = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            config: change(&topic.config)?,
            partitions: topic.partitions.clone(),
        });
        let data_dir = self.data_dir.clone();
        let broker = Arc::clone(&self.config);
        let written = Arc::clone(&updated);
        tokio::task::spawn_blocking(move || {
            write_topic_file(&data_dir, written.id, &written.spec())?;
            let log_config = written.config.log_config(&broker);
            for partition in &written.partitions {
                partition.set_config(log_config);
            }
            Ok::<_, BrokerError>(())
        })
        .await??;
        self.topics
            .insert(updated.name.clone(), Arc::clone(&updated));
        tracing::info!(topic = %name, "topic config updated");
        Ok(updated)
    }

    /// Grows a topic to `count` partitions (CreatePartitions; never shrinks).
    pub async fn add_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        let _guard = self.admin_lock.lock().await;
        let topic = self
            .get(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        let current = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        if count <= current || count > PARTITIONS_PER_TOPIC_MAX {
            return Err(BrokerError::InvalidPartitions(count));
        }
        if validate_only {
            return Ok(topic);
        }
        let data_dir = self.data_dir.clone();
        let broker = Arc::clone(&self.config);
        let old = Arc::clone(&topic);
        let updated = tokio::task::spawn_blocking(move || {
            let log_config = old.config.log_config(&broker);
            let mut partitions = old.partitions.clone();
            for index in current..count {
                let partition = Partition::new(
                    &data_dir,
                    &old.name,
                    old.id,
                    index,
                    log_config,
                    broker.storage.clone(),
                );
                partition.log_blocking()?;
                partitions.push(Arc::new(partition));
            }
            let updated = Topic {
                name: old.name.clone(),
                id: old.id,
                config: old.config.clone(),
                partitions,
            };
            // The new partition directories exist before the file names them; a crash in
            // between leaves directories the next start-up removes (no topic has them).
            write_topic_file(&data_dir, updated.id, &updated.spec())?;
            Ok::<_, BrokerError>(updated)
        })
        .await??;
        let updated = Arc::new(updated);
        self.topics
            .insert(updated.name.clone(), Arc::clone(&updated));
        tracing::info!(topic = %name, partitions = count, "partitions added");
        Ok(updated)
    }

    /// Flushes and checkpoints every open partition log (graceful shutdown).
    pub fn close_all(&self) {
        for topic in self.all() {
            for partition in &topic.partitions {
                let Some(log) = partition.opened_log() else {
                    continue;
                };
                if let Err(error) = log.close() {
                    tracing::error!(topic = %topic.name, partition = partition.index, %error, "closing log failed");
                }
            }
        }
    }

    /// Opens every partition log not opened yet (the warm-up after start-up, on a blocking
    /// thread): damage is found and logged early, and first requests find their logs open.
    /// Failures leave that partition offline and are logged by [`Partition::log_blocking`].
    pub fn open_all(&self) {
        let started = std::time::Instant::now();
        let mut offline = 0usize;
        let mut count = 0usize;
        for topic in self.all() {
            for partition in &topic.partitions {
                count += 1;
                if partition.log_blocking().is_err() {
                    offline += 1;
                }
            }
        }
        tracing::info!(
            partitions = count,
            offline,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition logs opened"
        );
    }
}

/// Kafka's topic name rules: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let invalid = |reason| BrokerError::InvalidTopic {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not allowed"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(invalid("longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// Kafka refuses names that differ only by '.' versus '_' (they clash in metric names).
pub fn collides(a: &str, b: &str) -> bool {
    a != b && a.replace('.', "_") == b.replace('.', "_")
}

fn topic_file(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir
        .join(TOPICS_DIR)
        .join(format!("{topic}.properties"))
}

/// The topic with its partitions, whose logs open on first use.
fn new_topic(
    data_dir: &Path,
    broker: &BrokerConfig,
    name: String,
    id: Uuid,
    spec: TopicSpec,
) -> Topic {
    let log_config = spec.config.log_config(broker);
    let partitions = (0..spec.partitions)
        .map(|index| {
            Arc::new(Partition::new(
                data_dir,
                &name,
                id,
                index,
                log_config,
                broker.storage.clone(),
            ))
        })
        .collect();
    Topic {
        name,
        id,
        config: spec.config,
        partitions,
    }
}

fn write_topic_file(data_dir: &Path, id: Uuid, spec: &TopicSpec) -> Result<(), BrokerError> {
    let mut text = format!(
        "topic.id={id}\nname={}\npartitions={}\n",
        spec.name, spec.partitions
    );
    for (name, value) in spec.config.overrides() {
        text.push_str(&format!("config.{name}={value}\n"));
    }
    let path = topic_file(data_dir, &spec.name);
    runnel_storage::write_file_atomically(&path, text.as_bytes()).map_err(BrokerError::Storage)
}

fn read_topic_file(path: &Path) -> Result<(String, Uuid, TopicSpec), BrokerError> {
    let damaged = |what: &str| BrokerError::Metadata {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
    };
    let text = std::fs::read_to_string(path).map_err(|source| BrokerError::Metadata {
        path: path.to_path_buf(),
        source,
    })?;
    let mut fields = BTreeMap::new();
    let mut overrides = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| damaged("line without '='"))?;
        match key.strip_prefix("config.") {
            Some(config) => overrides.insert(config.to_string(), value.to_string()),
            None => fields.insert(key.to_string(), value.to_string()),
        };
    }
    let name = fields
        .get("name")
        .cloned()
        .ok_or_else(|| damaged("no name"))?;
    let id = fields
        .get("topic.id")
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or_else(|| damaged("no valid topic.id"))?;
    let partitions = fields
        .get("partitions")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| damaged("no valid partitions"))?;
    let config = TopicConfig::new(overrides)?;
    Ok((
        name.clone(),
        id,
        TopicSpec {
            name,
            partitions,
            config,
        },
    ))
}

/// Removes the topic file (the commit point), then renames the partition directories away;
/// returns the renamed directories, for the caller to remove. Blocking.
///
/// Errors: only before the commit point (the topic still exists); a failure after it is
/// logged, and the next start-up removes the directories (no committed topic has their id).
fn delete_topic_files(data_dir: &Path, topic: &Topic) -> Result<Vec<PathBuf>, BrokerError> {
    let path = topic_file(data_dir, &topic.name);
    std::fs::remove_file(&path).map_err(|source| BrokerError::Metadata {
        path: path.clone(),
        source,
    })?;
    runnel_storage::sync_dir(path.parent().unwrap_or(data_dir)).map_err(BrokerError::Storage)?;
    for partition in &topic.partitions {
        partition.retire();
    }
    let dirs: Vec<PathBuf> = topic.partitions.iter().map(|p| p.dir.clone()).collect();
    Ok(
        partition_dir::rename_for_deletion(data_dir, &dirs).unwrap_or_else(|error| {
            tracing::warn!(topic = %topic.name, %error,
            "could not rename the deleted topic's directories; the next start removes them");
            Vec::new()
        }),
    )
}

/// The high watermark of a partition's log: offsets below it are visible to consumers (Fetch
/// serves records below it, ListOffsets latest and DeleteRecords' -1 name it). On a single
/// node it is the durably flushed offset, never the log end: a record a consumer has read must
/// survive a crash at its offset, or recovery would hand that offset to another record. So
/// acks=0/1 records become visible once a background flush covers them (`handlers/produce.rs`),
/// and long-polling fetches are woken when a flush moves it (`Broker::notify_high_watermark`).
/// Keep this rule when replication arrives: the high watermark then follows what the in-sync
/// replicas hold, and never passes what this node has flushed.
pub fn high_watermark(log: &PartitionLog) -> i64 {
    log.flushed_offset()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Guards a test against a hang only; never a performance threshold.
    const HANG_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

    /// `Partition::log` must open on the blocking pool: on a single-threaded runtime whose one
    /// worker holds the partition's config lock (which the open takes), an open on the worker
    /// would deadlock; an open on the pool waits until the worker lets go and then succeeds.
    #[test]
    // Holding the std lock across awaits is the point: it stands for a slow open.
    #[allow(clippy::await_holding_lock)]
    fn first_open_runs_off_the_async_worker() {
        let dir = tempfile::tempdir().unwrap();
        let partition = Arc::new(Partition::new(
            dir.path(),
            "t",
            Uuid::new_v4(),
            0,
            LogConfig::default(),
            Storage::real(),
        ));
        let (done, finished) = std::sync::mpsc::channel();
        let opener = Arc::clone(&partition);
        let runtime_thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let opened = runtime.block_on(async move {
                let held = opener.lock_config();
                let opening = {
                    let partition = Arc::clone(&opener);
                    tokio::spawn(async move { partition.log().await.is_ok() })
                };
                // Lets the opening task run until it waits for its open; it returns here only
                // if that open is not blocking this, the only worker.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                drop(held);
                opening.await.unwrap()
            });
            done.send(opened).unwrap();
        });
        let opened = finished
            .recv_timeout(HANG_DEADLINE)
            .expect("Partition::log blocked the async worker (the open ran on it)");
        assert!(opened, "the log opens");
        runtime_thread.join().unwrap();
        assert!(partition.opened_log().is_some());
    }

    fn registry(data_dir: &Path) -> TopicRegistry {
        let overrides = [("data.dir".to_string(), data_dir.display().to_string())];
        TopicRegistry::load(Arc::new(BrokerConfig::load(None, &overrides).unwrap())).unwrap()
    }

    fn spec(name: &str) -> TopicSpec {
        TopicSpec {
            name: name.to_string(),
            partitions: 1,
            config: TopicConfig::default(),
        }
    }

    fn batch(value: &[u8]) -> bytes::Bytes {
        let record = runnel_protocol::batch_builder::NewRecord {
            key: None,
            value: Some(value.to_vec()),
            headers: Vec::new(),
        };
        runnel_protocol::batch_builder::build_batch(&[record], 0).unwrap()
    }

    /// Every file under `dir` with its contents.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
            .collect()
    }

    /// A handle to a deleted topic's log that is still used (a produce resolved before the
    /// delete, a queued flush, a close) after the topic was recreated under the same name
    /// writes nothing into the new topic's directory, and the new topic serves none of it.
    #[tokio::test]
    async fn a_stale_log_of_a_deleted_topic_never_writes_into_its_successor() {
        let data = tempfile::tempdir().unwrap();
        let topics = registry(data.path());
        let old = topics.create(spec("t"), false).await.unwrap();
        let stale = Arc::clone(old.partitions[0].log().await.unwrap());
        stale.append(&batch(b"old")).unwrap();
        topics.delete("t").await.unwrap();
        let new = topics.create(spec("t"), false).await.unwrap();
        let new_partition = Arc::clone(&new.partitions[0]);
        assert_ne!(new_partition.dir(), old.partitions[0].dir());
        let before = snapshot(new_partition.dir());

        // Whatever the stale handle does may fail (its directory is gone), but lands nowhere
        // near the new topic.
        let _ = stale.append(&batch(b"stale"));
        let _ = stale.flush(stale.log_end_offset());
        let _ = stale.close();
        assert_eq!(snapshot(new_partition.dir()), before);
        let _ = old.partitions[0].log().await;
        assert_eq!(new_partition.log().await.unwrap().log_end_offset(), 0);

        // And a restart serves the new, empty topic.
        drop((new, new_partition, old, topics));
        let topics = registry(data.path());
        let reopened = topics.get("t").unwrap();
        let log = reopened.partitions[0].log().await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    }

    /// A partition never opened when its topic is deleted is never opened later (which would
    /// recreate its directory) by a request that resolved it before the delete.
    #[tokio::test]
    async fn a_deleted_partition_is_never_opened_again() {
        let data = tempfile::tempdir().unwrap();
        {
            let topics = registry(data.path());
            topics.create(spec("t"), false).await.unwrap();
        }
        let topics = registry(data.path());
        let topic = topics.get("t").unwrap();
        assert!(topic.partitions[0].opened_log().is_none());
        topics.delete("t").await.unwrap();
        assert!(matches!(
            topic.partitions[0].log().await,
            Err(BrokerError::UnknownTopicOrPartition(_))
        ));
        assert!(!topic.partitions[0].dir().exists());
    }
}
