//! This node's partition logs, kept in step with the metadata image.
//!
//! The metadata image (`metadata::image`) says which topics exist, their ids, configs and
//! where each partition lives; [`TopicRegistry::sync`] makes the local logs follow it: a
//! partition assigned to this node gets a local [`Partition`], a deleted topic's partitions are
//! retired and their directories removed, config changes reach the open logs. Partition logs
//! live in directories keyed by topic id, `<log dir>/<name>-<partition>.<topic id>/`
//! (`partition_dir.rs`), so a topic recreated under an old name never sees the old one's data;
//! a new partition goes to the log dir (`log.dirs`) holding the fewest, and AlterReplicaLogDirs
//! may move it (`log_dirs.rs`).
//!
//! Partition logs are created when the image assigns them but, at start-up, open lazily: a
//! broker with ten thousand partitions serves at once; a log is opened (recovered) by its first
//! use, or by the warm-up thread that walks every partition after start-up
//! ([`TopicRegistry::open_all`]). A log that fails to open (mid-log corruption, I/O) leaves
//! that one partition offline (KAFKA_STORAGE_ERROR) until restart; everything else is served.
//!
//! The topic files of the single-node releases (`<data>/__topics/<name>.properties`) are read
//! only to import them into the metadata log ([`legacy_topics`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError, RwLock};

use dashmap::DashMap;
use runnel_storage::{LogConfig, PartitionLog, Storage, StorageError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::log_dirs::{self, LogDirMoves};
use crate::metadata::{BrokerId, MetadataImage, TopicImage};
use crate::partition_dir::{self, LiveTopic};
use crate::topic_config::TopicConfig;

/// Directory (under the data dir) holding one properties file per topic (single-node
/// releases; imported once, then renamed [`IMPORTED_TOPICS_DIR`]).
pub const TOPICS_DIR: &str = "__topics";
/// What [`TOPICS_DIR`] is renamed to once imported.
pub const IMPORTED_TOPICS_DIR: &str = "__topics.imported";
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
    /// `<log dir>/<topic>-<index>.<topic id>`: one topic id's, never reused by another topic.
    /// Changes only when AlterReplicaLogDirs moves the log (`log_dirs::move_partition`).
    dir: RwLock<PathBuf>,
    /// The storage settings the log opens with, and any change since. Held while the log is
    /// being opened or moved, so a config change, a delete or another open cannot slip between
    /// reading it and the log existing.
    log_config: StdMutex<LogConfig>,
    /// `None` until the first open; then set, and replaced only by a move to another log dir.
    log: RwLock<Option<LogState>>,
    /// Where the log keeps its files (the broker's `storage`).
    storage: Storage,
    /// Set (under the config lock) when the partition is deleted here: no move may publish a
    /// copy of a log whose directory is being removed.
    retired: AtomicBool,
}

/// Where a moved log now lives, and the log opened there (or why it could not be).
pub(crate) type Relocated = (PathBuf, Result<PartitionLog, StorageError>);

/// What became of a partition's log: set by the first open (or a delete before it), replaced
/// only by a move's newly opened log.
#[derive(Debug, Clone)]
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
        log_dir: &Path,
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
            dir: RwLock::new(partition_dir::partition_dir(
                log_dir, topic, index, topic_id,
            )),
            log_config: StdMutex::new(log_config),
            log: RwLock::new(None),
            storage,
            retired: AtomicBool::new(false),
        }
    }

    /// The topic's name.
    /// The id of the topic this partition belongs to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's id.
    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    /// The directory holding this partition's log (it changes when the log is moved).
    pub fn dir(&self) -> PathBuf {
        self.dir
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The log directory (one of `log.dirs`) holding this partition's directory.
    pub fn log_dir(&self) -> PathBuf {
        let dir = self.dir();
        dir.parent().map_or_else(PathBuf::new, Path::to_path_buf)
    }

    /// The partition's log, opening (recovering) it on first use. The open runs on the
    /// blocking pool, never on this worker: after a clean shutdown it reads a few small files,
    /// after a crash it verifies the unflushed tail, which may take seconds. Concurrent callers
    /// wait for the one open (the first to start it does it; the others wait on the pool).
    ///
    /// Errors: `PartitionOffline` when the log could not be opened (then or earlier);
    /// `TaskFailed` if the blocking task died.
    pub async fn log(self: &Arc<Self>) -> Result<Arc<PartitionLog>, BrokerError> {
        if self.state().is_none() {
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
    pub fn log_blocking(&self) -> Result<Arc<PartitionLog>, BrokerError> {
        let log = match self.open_once() {
            LogState::Open(log) => log,
            LogState::Offline(reason) => {
                return Err(BrokerError::PartitionOffline {
                    dir: self.dir(),
                    reason,
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
                dir: self.dir(),
                reason: Arc::new(reason),
            })?;
        Ok(log)
    }

    /// What became of the log so far (`None`: not opened yet).
    fn state(&self) -> Option<LogState> {
        self.log
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_state(&self, state: LogState) {
        *self.log.write().unwrap_or_else(PoisonError::into_inner) = Some(state);
    }

    /// Opens the log unless that was done (or tried) before; a second caller blocks until the
    /// first one's open finished. The config lock is held while opening, so a config change
    /// cannot slip between reading it and the log existing.
    fn open_once(&self) -> LogState {
        if let Some(opened) = self.state() {
            return opened;
        }
        let config = self.lock_config();
        if let Some(opened) = self.state() {
            return opened;
        }
        let dir = self.dir();
        let state = partition_dir::prepare(&dir, &self.topic, self.topic_id)
            .and_then(|()| PartitionLog::open_on(self.storage.clone(), &dir, *config))
            .map_or_else(
                |error| {
                    tracing::error!(dir = %dir.display(), %error,
                        "partition log could not be opened; the partition is offline");
                    LogState::Offline(Arc::new(error))
                },
                |log| LogState::Open(Arc::new(log)),
            );
        self.set_state(state.clone());
        state
    }

    /// Runs `relocate` with opens, deletes and config changes held off, on the open log (it
    /// is opened first if it was not), and on success makes the directory it returns this
    /// partition's, with the log it returns, or offline with the error it returns (a copy
    /// published that could not be opened). Used by a move between log directories. Blocking.
    ///
    /// Errors: as [`Partition::log_blocking`] for a log that cannot be opened or was deleted;
    /// else what `relocate` returned.
    pub(crate) fn relocate(
        &self,
        relocate: impl FnOnce(&Arc<PartitionLog>, &LogConfig) -> Result<Relocated, BrokerError>,
    ) -> Result<(), BrokerError> {
        // Opened outside the config lock (the open takes it).
        self.log_blocking()?;
        let config = self.lock_config();
        if self.retired.load(Ordering::Acquire) {
            // Its directory is being removed: a copy published now would be an orphan.
            return Err(BrokerError::UnknownTopicOrPartition(format!(
                "{}-{}",
                self.topic, self.index
            )));
        }
        let log = match self.state() {
            Some(LogState::Open(log)) => log,
            _ => return self.log_blocking().map(drop),
        };
        let (dir, moved) = relocate(&log, &config)?;
        *self.dir.write().unwrap_or_else(PoisonError::into_inner) = dir;
        self.set_state(match moved {
            Ok(moved) => LogState::Open(Arc::new(moved)),
            Err(error) => LogState::Offline(Arc::new(error)),
        });
        Ok(())
    }

    /// The partition's storage (real or fault-injecting), for a move to open the copy with.
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Called when the topic is deleted, before its directory is renamed away: a log never
    /// opened is marked deleted so that no later use (a request that resolved the partition
    /// before the delete, log maintenance) opens it and so recreates the directory. Waits for
    /// an open in progress. Blocking.
    /// Returns the directory to remove, read under the same lock a move takes to publish a new
    /// one: after this no move relocates the log (see [`Partition::relocate`]).
    fn retire(&self) -> PathBuf {
        let _config = self.lock_config();
        self.retired.store(true, Ordering::Release);
        if self.state().is_none() {
            self.set_state(LogState::Deleted);
        }
        self.dir()
    }

    /// Whether the partition is offline: its log failed to open, or a failed fsync or write
    /// took it offline since. Nothing is opened.
    pub fn is_offline(&self) -> bool {
        match self.state() {
            Some(LogState::Offline(_)) => true,
            Some(LogState::Open(log)) => log.check_healthy().is_err(),
            Some(LogState::Deleted) | None => false,
        }
    }

    /// The log if it is open (nothing is opened).
    pub fn opened_log(&self) -> Option<Arc<PartitionLog>> {
        match self.state() {
            Some(LogState::Open(log)) => Some(log),
            _ => None,
        }
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

/// A topic as this node holds it: name, id, config and the partitions assigned to this node.
#[derive(Debug)]
pub struct Topic {
    /// The topic's name.
    pub name: String,
    /// The topic id (Metadata v10+, Fetch v13+).
    pub id: Uuid,
    /// Config overrides.
    pub config: TopicConfig,
    /// This node's partitions, by index (a cluster places the others on other brokers).
    pub partitions: BTreeMap<i32, Arc<Partition>>,
}

impl Topic {
    /// This node's partition with this index, if it has it.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        self.partitions.get(&index)
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

/// A topic of a single-node release's `__topics` directory, to import.
#[derive(Debug, Clone)]
pub struct LegacyTopic {
    /// Topic name.
    pub name: String,
    /// Its id, kept.
    pub id: Uuid,
    /// Partition count.
    pub partitions: i32,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// The topics of `<data>/__topics/*.properties` (empty when there is no such directory).
/// Blocking.
///
/// Errors: `Metadata` for a file that cannot be read or parsed (the broker then does not
/// start rather than lose a topic).
pub fn legacy_topics(data_dir: &Path) -> Result<Vec<LegacyTopic>, BrokerError> {
    let dir = data_dir.join(TOPICS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(BrokerError::Metadata { path: dir, source }),
    };
    let mut topics = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("properties") {
            continue;
        }
        topics.push(read_topic_file(&path)?);
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

/// Renames `<data>/__topics` to `<data>/__topics.imported` (durably) once its topics are in
/// the metadata log; nothing reads it again. Blocking.
pub fn retire_legacy_topics(data_dir: &Path) -> Result<(), BrokerError> {
    let from = data_dir.join(TOPICS_DIR);
    let to = data_dir.join(IMPORTED_TOPICS_DIR);
    if !from.exists() {
        return Ok(());
    }
    if to.exists() {
        // An earlier import's leftovers: the newest import wins.
        std::fs::remove_dir_all(&to).map_err(|source| BrokerError::Metadata {
            path: to.clone(),
            source,
        })?;
    }
    std::fs::rename(&from, &to).map_err(|source| BrokerError::Metadata {
        path: from.clone(),
        source,
    })?;
    runnel_storage::sync_dir(data_dir).map_err(BrokerError::Storage)
}

/// The partitions of `image` assigned to `node`, per topic, for the start-up pass over the
/// data directory (`partition_dir::reconcile`).
pub fn live_topics(image: &MetadataImage) -> Vec<LiveTopic> {
    image
        .topics
        .values()
        .map(|t| LiveTopic {
            name: t.name.clone(),
            id: t.id,
            partitions: t.partition_count(),
        })
        .collect()
}

/// The partition indexes of `topic` whose replicas include `node`.
fn assigned(topic: &TopicImage, node: BrokerId) -> impl Iterator<Item = i32> + '_ {
    topic
        .partitions
        .iter()
        .zip(0..)
        .filter(move |(p, _)| p.replicas.contains(&node))
        .map(|(_, index)| index)
}

/// This node's topics and partition logs, following the metadata image.
#[derive(Debug)]
pub struct TopicRegistry {
    /// `log.dirs`: where partition directories are placed.
    log_dirs: Vec<PathBuf>,
    /// Moves between log dirs in progress (AlterReplicaLogDirs).
    pub moves: LogDirMoves,
    config: Arc<BrokerConfig>,
    node_id: BrokerId,
    topics: DashMap<String, Arc<Topic>>,
    /// One sync at a time: each applies a newer image over the previous one.
    sync_lock: StdMutex<()>,
    /// The applied index of the last image synced.
    synced: watch::Sender<u64>,
}

impl TopicRegistry {
    /// An empty registry for node `node_id`; [`TopicRegistry::sync`] fills it.
    pub fn new(config: Arc<BrokerConfig>, node_id: BrokerId) -> TopicRegistry {
        TopicRegistry {
            log_dirs: config.log_dirs.clone(),
            moves: LogDirMoves::default(),
            config,
            node_id,
            topics: DashMap::new(),
            sync_lock: StdMutex::new(()),
            synced: watch::channel(0).0,
        }
    }

    /// The topic with this name, if this node holds any of its partitions.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.get(name).map(|t| Arc::clone(t.value()))
    }

    /// The topic with this id, if this node holds any of its partitions.
    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .iter()
            .find(|t| t.value().id == id)
            .map(|t| Arc::clone(t.value()))
    }

    /// Every topic this node holds partitions of, sorted by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.iter().map(|t| Arc::clone(t.value())).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// This node's id.
    pub fn node_id(&self) -> BrokerId {
        self.node_id
    }

    /// The applied index of the last image [`TopicRegistry::sync`] applied.
    pub fn synced_index(&self) -> u64 {
        *self.synced.borrow()
    }

    /// Waits until an image at or past `index` has been synced (an admin request answers only
    /// then, so a produce right after CreateTopics finds its partition here).
    pub async fn wait_synced(&self, index: u64) -> Result<(), BrokerError> {
        let mut synced = self.synced.subscribe();
        tokio::time::timeout(
            crate::metadata::handle::SUBMIT_TIMEOUT,
            synced.wait_for(|i| *i >= index),
        )
        .await
        .map_err(|_| BrokerError::ControllerUnavailable("local logs did not catch up".into()))?
        .map_err(|_| BrokerError::ControllerUnavailable("shutting down".into()))?;
        Ok(())
    }

    /// Makes the local logs follow `image`. Blocking (creates and removes directories).
    ///
    /// - a partition assigned to this node gets its local [`Partition`]; its log is created
    ///   now when its directory does not exist yet (a new partition: the directory exists once
    ///   the topic does, as in Kafka), else opened on first use;
    /// - a topic gone from the image (or replaced by another id under its name) is retired:
    ///   its logs are never opened again, its directories renamed `…-delete` and removed in
    ///   the background;
    /// - changed config overrides reach every partition's log.
    ///
    /// Failures are per partition and logged (the partition is then offline); the sync never
    /// stops half way.
    pub fn sync(&self, image: &MetadataImage) {
        self.apply(image);
        self.publish_synced(image.applied_index);
    }

    /// Tells [`TopicRegistry::wait_synced`] waiters that everything up to `index` is applied
    /// here (after [`TopicRegistry::apply`], and whatever else follows the image).
    pub fn publish_synced(&self, index: u64) {
        self.synced.send_if_modified(|synced| {
            let newer = index > *synced;
            *synced = (*synced).max(index);
            newer
        });
    }

    /// [`TopicRegistry::sync`] without telling the waiters. Blocking.
    pub fn apply(&self, image: &MetadataImage) {
        let _one_at_a_time = self
            .sync_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Gone, or replaced under the same name by a topic with another id.
        let doomed: Vec<Arc<Topic>> = self
            .topics
            .iter()
            .filter(|t| {
                image
                    .topic(&t.value().name)
                    .is_none_or(|live| live.id != t.value().id)
            })
            .map(|t| Arc::clone(t.value()))
            .collect();
        for topic in doomed {
            self.topics.remove(&topic.name);
            self.retire(&topic);
        }
        // Counted once per sync and kept up to date as partitions are placed below.
        let mut placed = self.partitions_per_log_dir();
        for topic_image in image.topics.values() {
            let indexes: Vec<i32> = assigned(topic_image, self.node_id).collect();
            let current = self.get(&topic_image.name);
            if indexes.is_empty() {
                if let Some(current) = current {
                    // No longer assigned here (reassignment, issue 23): drop the local logs.
                    self.topics.remove(&current.name);
                    self.retire(&current);
                }
                continue;
            }
            let config = match TopicConfig::new(topic_image.configs.clone()) {
                Ok(config) => config,
                Err(error) => {
                    tracing::warn!(topic = %topic_image.name, %error,
                        "the image's config overrides do not validate here; using the previous ones");
                    current
                        .as_ref()
                        .map_or_else(TopicConfig::default, |c| c.config.clone())
                }
            };
            let unchanged = current.as_ref().is_some_and(|c| {
                c.config == config
                    && c.partitions.len() == indexes.len()
                    && indexes.iter().all(|i| c.partitions.contains_key(i))
            });
            if unchanged {
                continue;
            }
            let log_config = config.log_config(&self.config);
            let mut partitions = BTreeMap::new();
            for index in indexes {
                let existing = current.as_ref().and_then(|c| c.partition(index)).cloned();
                let partition = match existing {
                    Some(partition) => {
                        partition.set_config(log_config);
                        partition
                    }
                    None => {
                        let log_dir = log_dirs::find_existing(
                            &self.log_dirs,
                            &topic_image.name,
                            index,
                            topic_image.id,
                        )
                        .unwrap_or_else(|| log_dirs::least_loaded(&self.log_dirs, &placed));
                        *placed.entry(log_dir.clone()).or_default() += 1;
                        let partition = Arc::new(Partition::new(
                            &log_dir,
                            &topic_image.name,
                            topic_image.id,
                            index,
                            log_config,
                            self.config.storage.clone(),
                        ));
                        if !partition.dir().exists() {
                            // Failures are logged by the open and leave the partition offline.
                            let _ = partition.log_blocking();
                        }
                        partition
                    }
                };
                partitions.insert(index, partition);
            }
            if current.is_none() {
                tracing::info!(topic = %topic_image.name, partitions = partitions.len(), "topic hosted here");
            }
            // Partitions no longer assigned here while the topic keeps others (reassigned
            // away): their logs are retired and removed like a deleted topic's.
            let moved_away: Vec<Arc<Partition>> = current
                .iter()
                .flat_map(|c| c.partitions.values())
                .filter(|p| !partitions.contains_key(&p.index))
                .cloned()
                .collect();
            self.topics.insert(
                topic_image.name.clone(),
                Arc::new(Topic {
                    name: topic_image.name.clone(),
                    id: topic_image.id,
                    config,
                    partitions,
                }),
            );
            if !moved_away.is_empty() {
                self.retire_partitions(&topic_image.name, &moved_away);
            }
        }
    }

    /// Retires a topic's local logs (never opened again), renames their directories away
    /// (durably) and removes them in the background. Blocking.
    fn retire(&self, topic: &Topic) {
        let partitions: Vec<Arc<Partition>> = topic.partitions.values().cloned().collect();
        self.retire_partitions(&topic.name, &partitions);
    }

    /// [`TopicRegistry::retire`] for some partitions of `topic`.
    fn retire_partitions(&self, topic: &str, partitions: &[Arc<Partition>]) {
        let dirs: Vec<PathBuf> = partitions.iter().map(|p| p.retire()).collect();
        let renamed = partition_dir::rename_for_deletion(&dirs).unwrap_or_else(
            |error| {
                tracing::warn!(%topic, %error,
                    "could not rename the removed partitions' directories; the next start removes them");
                Vec::new()
            },
        );
        let indexes: Vec<i32> = partitions.iter().map(|p| p.index).collect();
        tracing::info!(%topic, partitions = ?indexes, "partitions deleted here");
        // Removing a large log takes a while: not in the sync.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || {
                partition_dir::remove_deleted(&renamed);
            })),
            Err(_) => partition_dir::remove_deleted(&renamed),
        }
    }

    /// This node's log dirs (`log.dirs`), the first holding the metadata log.
    pub fn log_dirs(&self) -> &[PathBuf] {
        &self.log_dirs
    }

    /// How many of this node's partitions each log dir holds (placement's measure).
    fn partitions_per_log_dir(&self) -> std::collections::HashMap<PathBuf, usize> {
        let mut placed = std::collections::HashMap::new();
        for topic in self.all() {
            for partition in topic.partitions.values() {
                *placed.entry(partition.log_dir()).or_default() += 1;
            }
        }
        placed
    }

    /// Flushes and checkpoints every open partition log (graceful shutdown).
    pub fn close_all(&self) {
        for topic in self.all() {
            for partition in topic.partitions.values() {
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
            for partition in topic.partitions.values() {
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

fn read_topic_file(path: &Path) -> Result<LegacyTopic, BrokerError> {
    let damaged = |what: &str| BrokerError::Metadata {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
    };
    let text = std::fs::read_to_string(path).map_err(|source| BrokerError::Metadata {
        path: path.to_path_buf(),
        source,
    })?;
    let mut fields = BTreeMap::new();
    let mut configs = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| damaged("line without '='"))?;
        match key.strip_prefix("config.") {
            Some(config) => configs.insert(config.to_string(), value.to_string()),
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
    Ok(LegacyTopic {
        name,
        id,
        partitions,
        configs,
    })
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

    use crate::metadata::{MetadataBatch, MetadataRecord, PartitionState};

    fn registry(data_dir: &Path) -> TopicRegistry {
        let overrides = [("data.dir".to_string(), data_dir.display().to_string())];
        TopicRegistry::new(Arc::new(BrokerConfig::load(None, &overrides).unwrap()), 0)
    }

    fn led_by(replicas: &[BrokerId]) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas.first().copied().unwrap_or(-1),
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    /// Applies `records` as the next batch of `image`.
    fn apply(image: &mut MetadataImage, records: Vec<MetadataRecord>) {
        let index = image.applied_index + 1;
        image.apply(
            index,
            &MetadataBatch {
                request_id: None,
                reply: None,
                records,
            },
        );
    }

    fn create(image: &mut MetadataImage, name: &str, partitions: Vec<PartitionState>) -> Uuid {
        let topic_id = Uuid::new_v4();
        apply(
            image,
            vec![MetadataRecord::CreateTopic {
                name: name.to_string(),
                topic_id,
                configs: BTreeMap::new(),
                partitions,
            }],
        );
        topic_id
    }

    fn delete(image: &mut MetadataImage, topic_id: Uuid) {
        apply(image, vec![MetadataRecord::DeleteTopic { topic_id }]);
    }

    fn batch(value: &[u8]) -> bytes::Bytes {
        crate::broker::testing::record_batch(value)
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
    #[tokio::test(flavor = "multi_thread")]
    async fn a_stale_log_of_a_deleted_topic_never_writes_into_its_successor() {
        let data = tempfile::tempdir().unwrap();
        let topics = registry(data.path());
        let mut image = MetadataImage::default();
        let old_id = create(&mut image, "t", vec![led_by(&[0])]);
        topics.sync(&image);
        let old = topics.get("t").unwrap();
        let stale = old.partitions[&0].log().await.unwrap();
        stale.append(&batch(b"old")).unwrap();
        delete(&mut image, old_id);
        create(&mut image, "t", vec![led_by(&[0])]);
        topics.sync(&image);
        let new = topics.get("t").unwrap();
        let new_partition = Arc::clone(&new.partitions[&0]);
        assert_ne!(new_partition.dir(), old.partitions[&0].dir());
        let before = snapshot(&new_partition.dir());

        // Whatever the stale handle does may fail (its directory is gone), but lands nowhere
        // near the new topic.
        let _ = stale.append(&batch(b"stale"));
        let _ = stale.flush(stale.log_end_offset());
        let _ = stale.close();
        assert_eq!(snapshot(&new_partition.dir()), before);
        let _ = old.partitions[&0].log().await;
        assert_eq!(new_partition.log().await.unwrap().log_end_offset(), 0);

        // And a restart serves the new, empty topic.
        drop((new, new_partition, old, topics));
        let topics = registry(data.path());
        topics.sync(&image);
        let reopened = topics.get("t").unwrap();
        let log = reopened.partitions[&0].log().await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    }

    /// A partition never opened when its topic is deleted is never opened later (which would
    /// recreate its directory) by a request that resolved it before the delete.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_deleted_partition_is_never_opened_again() {
        let data = tempfile::tempdir().unwrap();
        let mut image = MetadataImage::default();
        let id = create(&mut image, "t", vec![led_by(&[0])]);
        registry(data.path()).sync(&image);
        let topics = registry(data.path());
        topics.sync(&image);
        let topic = topics.get("t").unwrap();
        assert!(topic.partitions[&0].opened_log().is_none());
        delete(&mut image, id);
        topics.sync(&image);
        assert!(topics.get("t").is_none());
        assert!(matches!(
            topic.partitions[&0].log().await,
            Err(BrokerError::UnknownTopicOrPartition(_))
        ));
        assert!(!topic.partitions[&0].dir().exists());
    }

    /// Only the partitions whose replicas include this node get local logs; added partitions
    /// and config changes follow the image.
    #[test]
    fn the_registry_holds_what_the_image_assigns_here() {
        let data = tempfile::tempdir().unwrap();
        let topics = registry(data.path());
        let mut image = MetadataImage::default();
        let id = create(
            &mut image,
            "t",
            vec![led_by(&[0]), led_by(&[1]), led_by(&[2, 0])],
        );
        create(&mut image, "elsewhere", vec![led_by(&[1])]);
        topics.sync(&image);
        let topic = topics.get("t").unwrap();
        assert_eq!(topic.partitions.keys().copied().collect::<Vec<_>>(), [0, 2]);
        assert!(topic.partitions[&0].dir().exists());
        assert!(topics.get("elsewhere").is_none());
        assert_eq!(topics.synced_index(), image.applied_index);

        apply(
            &mut image,
            vec![
                MetadataRecord::AddPartitions {
                    topic_id: id,
                    partitions: vec![led_by(&[0])],
                },
                MetadataRecord::SetTopicConfigs {
                    topic_id: id,
                    configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
                },
            ],
        );
        topics.sync(&image);
        let grown = topics.get("t").unwrap();
        assert_eq!(
            grown.partitions.keys().copied().collect::<Vec<_>>(),
            [0, 2, 3]
        );
        assert!(Arc::ptr_eq(&grown.partitions[&0], &topic.partitions[&0]));
        assert_eq!(
            grown
                .config
                .overrides()
                .get("retention.ms")
                .map(String::as_str),
            Some("1000")
        );
    }

    #[test]
    fn a_partition_reassigned_away_is_retired_while_the_topic_stays() {
        let data = tempfile::tempdir().unwrap();
        let topics = registry(data.path());
        let mut image = MetadataImage::default();
        let id = create(&mut image, "t", vec![led_by(&[0]), led_by(&[0, 1])]);
        topics.sync(&image);
        let before = topics.get("t").unwrap();
        let (kept, moved) = (before.partitions[&0].clone(), before.partitions[&1].clone());
        assert!(moved.dir().exists());
        apply(
            &mut image,
            vec![MetadataRecord::ChangePartition {
                topic_id: id,
                partition: 1,
                state: led_by(&[1]),
            }],
        );
        topics.sync(&image);
        let after = topics.get("t").unwrap();
        assert_eq!(after.partitions.keys().copied().collect::<Vec<_>>(), [0]);
        assert!(Arc::ptr_eq(&after.partitions[&0], &kept));
        assert!(kept.dir().exists());
        assert!(
            !moved.dir().exists(),
            "the moved partition's directory is gone"
        );
    }

    /// A partition retired (its topic deleted here) is never relocated: a move finishing after
    /// the delete read the directory to remove would publish a copy nobody removes.
    #[test]
    fn a_retired_partition_is_not_relocated() {
        let data = tempfile::tempdir().unwrap();
        let topics = registry(data.path());
        let image = crate::broker::testing::image(
            &[0],
            &[("t", vec![crate::broker::testing::partition(&[0], 0)])],
        );
        topics.sync(&image);
        let partition = Arc::clone(&topics.get("t").unwrap().partitions[&0]);
        partition.log_blocking().unwrap();
        assert_eq!(partition.retire(), partition.dir());
        let mut relocated = false;
        let refused = partition.relocate(|_, _| {
            relocated = true;
            Err(BrokerError::InvalidRequest("relocate ran".into()))
        });
        assert!(
            matches!(refused, Err(BrokerError::UnknownTopicOrPartition(_))),
            "{refused:?}"
        );
        assert!(!relocated);
    }

    #[test]
    fn legacy_topic_files_are_read_and_retired() {
        let data = tempfile::tempdir().unwrap();
        assert!(legacy_topics(data.path()).unwrap().is_empty());
        let dir = data.path().join(TOPICS_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let id = Uuid::new_v4();
        std::fs::write(
            dir.join("t.properties"),
            format!("topic.id={id}\nname=t\npartitions=3\nconfig.retention.ms=5\n"),
        )
        .unwrap();
        let topics = legacy_topics(data.path()).unwrap();
        assert_eq!(topics.len(), 1);
        assert_eq!(
            (topics[0].name.as_str(), topics[0].id, topics[0].partitions),
            ("t", id, 3)
        );
        assert_eq!(
            topics[0].configs.get("retention.ms").map(String::as_str),
            Some("5")
        );
        retire_legacy_topics(data.path()).unwrap();
        assert!(legacy_topics(data.path()).unwrap().is_empty());
        assert!(data
            .path()
            .join(IMPORTED_TOPICS_DIR)
            .join("t.properties")
            .exists());
    }
}
