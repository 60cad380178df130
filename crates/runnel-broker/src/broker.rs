//! `Broker`: the state every handler shares — settings, the metadata image (through
//! [`MetadataHandle`]), this node's partition logs, producer ids, and the signal that wakes
//! long-polling fetches when a high watermark moves (a flush made records visible).
//!
//! The metadata image is the truth about topics and leaders; the local logs follow it (a task
//! started by [`Broker::open`] syncs [`TopicRegistry`] with every new image). Admin requests go
//! to the controller through [`Broker::submit`], which answers once this node's logs have
//! caught up with the commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::control_plane::{controller_settings, ControlPlane};
use crate::controller::lifecycle::BrokerLifecycle;
use crate::error::BrokerError;
use crate::flusher::{FlushPolicy, Flusher};
use crate::group::{self, GroupConfig, GroupCoordinator};
use crate::metadata::requests::{NewTopic, TopicOutcome};
use crate::metadata::{
    BrokerId, ControllerReply, ControllerRequest, MetadataHandle, MetadataImage, TopicImage,
};
use crate::producer_ids::ProducerIdAllocator;
use crate::replication::manager::ReplicaManager;
use crate::topics::{is_internal_name, Partition, Topic, TopicRegistry};

/// Shared broker state. Cheap to share behind an `Arc`; no lock is held across an `.await`.
#[derive(Debug)]
pub struct Broker {
    /// Settings.
    pub config: Arc<BrokerConfig>,
    /// The control plane: the metadata image (topics, leaders, brokers) and the controller.
    pub metadata: MetadataHandle,
    /// This node's partition logs, following the image.
    pub topics: Arc<TopicRegistry>,
    /// Per local partition, this node's replication role (leader or follower), HWs, and the
    /// produces waiting for a commit (docs/replication.md).
    pub replicas: Arc<ReplicaManager>,
    /// Idempotent producer ids.
    pub producer_ids: ProducerIdAllocator,
    /// Consumer groups and committed offsets (rebuilt from `__consumer_offsets` on open).
    pub groups: Arc<GroupCoordinator>,
    /// The cluster id reported in Metadata, persisted in `meta.properties` (the configured
    /// `cluster.id`, or one generated when the data directory was formatted).
    pub cluster_id: String,
    /// Group-committed fsyncs for acks=-1.
    pub flusher: Flusher,
    /// Produce batches validated at once, broker-wide. Validation may hold a batch's records
    /// decompressed (snappy has no streaming form: up to 4 × `max.message.bytes`), so this
    /// bounds that memory whatever the number of partitions, requests and connections.
    /// ListOffsets lookups that walk a stored batch's records take the same slots.
    pub validation_slots: Arc<Semaphore>,
    /// This broker's registration and heartbeats (taken by a controlled shutdown).
    lifecycle: std::sync::Mutex<Option<BrokerLifecycle>>,
    /// The metadata quorum and controller service this node runs (`None` under a test's own
    /// control plane).
    control_plane: Option<ControlPlane>,
    /// Bumped whenever a partition's high watermark may have moved (a flush, or a roll, made
    /// more records durable and so visible); long-polling fetches wait on it.
    high_watermark_moved: watch::Sender<u64>,
    /// Bumped whenever a leader appended: replica fetches, which read up to the log end, wait
    /// on it (a consumer's fetch waits for the high watermark only).
    appended: watch::Sender<u64>,
}

/// See [`Broker::validation_slots`]: two batches per core, so every core stays busy while
/// memory stays bounded (on 2 cores with the default 1 MiB `max.message.bytes`, at most
/// 4 × 4 MiB of decompressed records at once).
fn validation_slot_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get) * 2
}

impl Broker {
    /// Opens the data directory: cluster id, the control plane, the topics of the image
    /// (recovering their logs lazily), consumer groups. Blocking: call from the blocking pool
    /// of a Tokio runtime (it waits for the control plane there).
    pub fn open(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Metadata {
            path: config.data_dir.clone(),
            source,
        })?;
        let cluster_id = crate::meta_properties::load_or_format(
            &config.data_dir,
            config.node_id,
            config.cluster_id.as_deref(),
        )?;
        // Every other log dir records (or is checked against) the same cluster and node: a
        // directory of another node or cluster is never served.
        for log_dir in config.log_dirs.iter().filter(|d| **d != config.data_dir) {
            std::fs::create_dir_all(log_dir).map_err(|source| BrokerError::Metadata {
                path: log_dir.clone(),
                source,
            })?;
            crate::meta_properties::load_or_format(log_dir, config.node_id, Some(&cluster_id))?;
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BrokerError::ControllerUnavailable("Broker::open needs a Tokio runtime".into())
        })?;
        let control_plane = runtime.block_on(ControlPlane::start(&config, &cluster_id))?;
        let metadata = control_plane.handle.clone();
        // Registered before anything is imported or served: the image must list this broker.
        let lifecycle = runtime.block_on(async {
            let lifecycle = BrokerLifecycle::start(
                metadata.clone(),
                config.node_id,
                config.advertised_endpoints(),
                config.broker_rack.clone(),
                controller_settings(&config).heartbeat_interval,
            );
            lifecycle.wait_registered().await.map(|()| lifecycle)
        })?;
        let incarnation = lifecycle.incarnation();
        let mut broker = Broker::open_with(config, cluster_id, metadata, Some(incarnation))?;
        broker.lifecycle = std::sync::Mutex::new(Some(lifecycle));
        broker.control_plane = Some(control_plane);
        Ok(broker)
    }

    /// [`Broker::open`] over a control plane already started (tests drive one of their own),
    /// for the process registered as `incarnation` (`None`: nothing registered, as under a
    /// test's control plane; the process then never considers itself superseded). Blocking,
    /// as `open`.
    pub fn open_with(
        config: Arc<BrokerConfig>,
        cluster_id: String,
        metadata: MetadataHandle,
        incarnation: Option<Uuid>,
    ) -> Result<Broker, BrokerError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BrokerError::ControllerUnavailable("Broker::open needs a Tokio runtime".into())
        })?;
        let producer_ids = ProducerIdAllocator::new(metadata.clone(), config.node_id);
        runtime.block_on(import_legacy_topics(&config, &metadata))?;
        let image = metadata.image();
        // Before any log opens: upgrade old directories, remove what deletes left behind.
        crate::log_dirs::resolve_interrupted_moves(&config.log_dirs)?;
        let live = crate::topics::live_topics(&image);
        for log_dir in &config.log_dirs {
            crate::partition_dir::reconcile(log_dir, &live)?;
        }
        let topics = Arc::new(TopicRegistry::new(Arc::clone(&config), config.node_id));
        topics.sync(&image);
        let (high_watermark_moved, _) = watch::channel(0);
        let replicas = Arc::new(ReplicaManager::new(
            Arc::clone(&config),
            incarnation,
            metadata.clone(),
            HighWatermarkSignal(high_watermark_moved.clone()),
        ));
        replicas.set_fetchers(Box::new(follower_fetchers(&config, &metadata, &replicas)));
        {
            // The fetchers spawn their tasks on this runtime.
            let _runtime = runtime.enter();
            replicas.apply(&image, &topics);
        }
        tracing::info!(topics = image.topics.len(), data_dir = %config.data_dir.display(), "topics loaded");
        let groups = Arc::new(GroupCoordinator::new(group_config(&config)));
        if let Some(offsets) = image.topic(group::OFFSETS_TOPIC) {
            let led = led_offsets_partitions(offsets, config.node_id);
            group::store::load(&topics, &groups, offsets.partition_count(), &led)?;
            groups.set_ownership(offsets.partition_count(), led);
        }
        let flusher = Flusher::start(FlushPolicy {
            commit_delay: std::time::Duration::from_millis(config.log_flush_commit_delay_ms),
            device_flush_shared: config.log_flush_device_flush_shared,
        })
        .map_err(|source| BrokerError::Metadata {
            path: config.data_dir.clone(),
            source,
        })?;
        runtime.spawn(follow_image(
            metadata.clone(),
            Arc::clone(&topics),
            Arc::clone(&replicas),
            Arc::clone(&groups),
        ));
        replicas.start_periodic(&runtime);
        Ok(Broker {
            flusher,
            validation_slots: Arc::new(Semaphore::new(validation_slot_count())),
            config,
            metadata,
            topics,
            replicas,
            groups,
            producer_ids,
            cluster_id,
            lifecycle: std::sync::Mutex::new(None),
            control_plane: None,
            high_watermark_moved,
            appended: watch::channel(0).0,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> BrokerId {
        self.config.node_id
    }

    /// Has the controller carry out `request`; answers once it is committed and this node's
    /// logs follow it (so a produce right after a CreateTopics finds its partition).
    ///
    /// Errors: `ControllerUnavailable` (retriable) when no controller answered.
    pub async fn submit(&self, request: ControllerRequest) -> Result<ControllerReply, BrokerError> {
        let committed = self.metadata.submit(request).await?;
        self.topics.wait_synced(committed.index).await?;
        Ok(committed.reply)
    }

    /// [`Broker::submit`] for a topic request: one outcome per topic, in request order.
    pub async fn submit_topics(
        &self,
        request: ControllerRequest,
    ) -> Result<Vec<TopicOutcome>, BrokerError> {
        match self.submit(request).await? {
            ControllerReply::Topics(outcomes) => Ok(outcomes),
            other => Err(BrokerError::ControllerUnavailable(format!(
                "unexpected controller reply {other:?}"
            ))),
        }
    }

    /// This node's partition `index` of `name`, if this node leads it.
    ///
    /// Errors: `UnknownTopicOrPartition` when the image has no such topic or partition;
    /// `NotLeaderOrFollower` (with the leader the image names) when another broker leads it,
    /// or none does, or this node's logs have not caught up with the image yet.
    pub fn led_partition(
        &self,
        image: &MetadataImage,
        name: &str,
        index: i32,
    ) -> Result<(Arc<Topic>, Arc<Partition>), BrokerError> {
        let topic = image
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        let state = topic
            .partition(index)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(format!("{name}-{index}")))?;
        let not_leader = || BrokerError::NotLeaderOrFollower {
            topic: name.to_string(),
            partition: index,
            leader: state.leader,
            leader_epoch: state.leader_epoch,
        };
        if state.leader != self.node_id() {
            return Err(not_leader());
        }
        let local = self.topics.get(name).filter(|t| t.id == topic.id);
        match local.as_ref().and_then(|t| t.partition(index)).cloned() {
            Some(partition) => Ok((local.ok_or_else(not_leader)?, partition)),
            None => Err(not_leader()),
        }
    }

    /// Wakes fetches waiting for new records: call after anything that may have moved a high
    /// watermark (`topics::high_watermark`: a flush, or an append that rolled a segment).
    pub fn notify_high_watermark(&self) {
        notify(&self.high_watermark_moved);
    }

    /// [`Broker::notify_high_watermark`] for a task that outlives the request holding the
    /// broker (a produce's background flush).
    pub fn high_watermark_signal(&self) -> HighWatermarkSignal {
        HighWatermarkSignal(self.high_watermark_moved.clone())
    }

    /// A receiver that changes whenever a high watermark may have moved, on any partition.
    pub fn subscribe_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark_moved.subscribe()
    }

    /// Wakes replica fetches waiting for records: call after a leader's append.
    pub fn notify_appended(&self) {
        notify(&self.appended);
    }

    /// A receiver that changes whenever this node appended as a leader.
    pub fn subscribe_appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// The high watermark of `partition`, whose log is `log`: offsets below it are committed
    /// and visible to consumers (Fetch, ListOffsets latest, DeleteRecords -1). On a leader,
    /// min(its durable offset, the fetch offsets of the ISR) once the ISR has
    /// `min.insync.replicas` members; on a lone replica, its durable offset — never what is
    /// only written: a record a consumer has read must survive a crash at its offset.
    pub fn high_watermark(&self, partition: &Partition, log: &runnel_storage::PartitionLog) -> i64 {
        self.replicas.high_watermark(partition, log)
    }

    /// The config overrides of topic `name` as the image has them (`None`: no such topic).
    pub fn topic_config(&self, name: &str) -> Option<crate::topic_config::TopicConfig> {
        let image = self.metadata.image();
        let topic = image.topic(name)?;
        // The controller validated them; a value this node cannot read falls back to defaults.
        Some(crate::topic_config::TopicConfig::new(topic.configs.clone()).unwrap_or_default())
    }

    /// Creates `name` with the broker's defaults if auto-creation is on and the topic is absent.
    /// Returns `None` when the topic does not exist and may not be created.
    pub async fn auto_create(&self, name: &str) -> Result<Option<Arc<TopicImage>>, BrokerError> {
        if let Some(topic) = self.metadata.image().topic(name) {
            return Ok(Some(Arc::clone(topic)));
        }
        // Internal topics are created by their coordinators, never by a client's Metadata.
        if !self.config.auto_create_topics_enable || is_internal_name(name) {
            return Ok(None);
        }
        self.create_topic(name, -1, BTreeMap::new()).await.map(Some)
    }

    /// Creates `name` through the controller (`partitions` -1: `num.partitions`) unless it
    /// exists, and returns it as the image has it.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<TopicImage>, BrokerError> {
        let outcomes = self
            .submit_topics(ControllerRequest::CreateTopics {
                topics: vec![NewTopic {
                    name: name.to_string(),
                    partitions,
                    replication_factor: -1,
                    assignment: None,
                    configs,
                    topic_id: None,
                }],
                validate_only: false,
            })
            .await?;
        let already_exists = kafka_protocol::error::ResponseError::TopicAlreadyExists.code();
        match outcomes.into_iter().next().and_then(|o| o.error) {
            // Another request created it meanwhile.
            Some(error) if error.code != already_exists => return Err(error.into()),
            _ => {}
        }
        self.metadata
            .image()
            .topic(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))
    }

    /// Controlled shutdown: stops heartbeating and asks the controller to fence this broker
    /// at once, so leadership moves away without waiting for the session timeout. Best effort.
    pub async fn shutdown_control_plane(&self) {
        let lifecycle = self
            .lifecycle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(lifecycle) = lifecycle {
            lifecycle.shutdown().await;
        }
        if let Some(control_plane) = &self.control_plane {
            control_plane.shutdown().await;
        }
    }

    /// Flushes and checkpoints all logs and high watermarks (graceful shutdown).
    pub fn close(&self) {
        self.replicas.shutdown_fetchers();
        self.replicas.checkpoint_all();
        self.topics.close_all();
    }
}

/// A handle on the broker's high-watermark signal (see [`Broker::high_watermark_signal`]).
#[derive(Debug, Clone)]
pub struct HighWatermarkSignal(watch::Sender<u64>);

impl HighWatermarkSignal {
    /// As [`Broker::notify_high_watermark`].
    pub fn notify(&self) {
        notify(&self.0);
    }
}

fn notify(moved: &watch::Sender<u64>) {
    moved.send_modify(|n| *n = n.wrapping_add(1));
}

/// Keeps this node's logs and groups in step with the image: every new image is applied to
/// the local logs, then the groups of `__consumer_offsets` partitions that became led here
/// are loaded and those of partitions led elsewhere now unloaded (on the blocking pool); then
/// waiters on the image's index are told. Runs until the control plane goes away.
async fn follow_image(
    metadata: MetadataHandle,
    topics: Arc<TopicRegistry>,
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
) {
    let mut images = metadata.subscribe();
    loop {
        let image = Arc::clone(&images.borrow_and_update());
        if image.applied_index > topics.synced_index() {
            let registry = Arc::clone(&topics);
            let groups = Arc::clone(&groups);
            let replicas = Arc::clone(&replicas);
            let synced = tokio::task::spawn_blocking(move || {
                registry.apply(&image);
                replicas.apply(&image, &registry);
                follow_group_leadership(&image, &registry, &groups);
                registry.publish_synced(image.applied_index);
            })
            .await;
            if let Err(error) = synced {
                tracing::error!(%error, "syncing the local logs with the metadata image failed");
            }
        }
        if images.changed().await.is_err() {
            return;
        }
    }
}

/// The follower side: one fetcher per leader this node copies from, reporting follower high
/// watermarks to `replicas` (held weakly: the fetchers live inside it).
fn follower_fetchers(
    config: &BrokerConfig,
    metadata: &MetadataHandle,
    replicas: &Arc<ReplicaManager>,
) -> crate::replication::fetcher::Fetchers {
    let manager = Arc::downgrade(replicas);
    crate::replication::fetcher::Fetchers::start(
        config.node_id,
        crate::replication::fetcher::FetcherConfig::from_broker(config),
        metadata.subscribe(),
        Arc::new(move |topic_id, partition, high_watermark| {
            if let Some(manager) = manager.upgrade() {
                manager.set_follower_high_watermark(topic_id, partition, high_watermark);
            }
        }),
    )
}

/// The `__consumer_offsets` partitions `node` leads.
fn led_offsets_partitions(offsets: &TopicImage, node: BrokerId) -> BTreeSet<i32> {
    offsets
        .partitions
        .iter()
        .zip(0..)
        .filter(|(p, _)| p.leader == node)
        .map(|(_, index)| index)
        .collect()
}

/// Loads the groups of the `__consumer_offsets` partitions this node has come to lead and
/// unloads those of the partitions it no longer leads. Blocking.
fn follow_group_leadership(
    image: &MetadataImage,
    topics: &TopicRegistry,
    groups: &GroupCoordinator,
) {
    let Some(offsets) = image.topic(group::OFFSETS_TOPIC) else {
        return;
    };
    let count = offsets.partition_count();
    let led = led_offsets_partitions(offsets, topics.node_id());
    let Some(before) = groups.owned_partitions() else {
        // The topic was just created (by this node's first group write, or another's): until
        // now this node coordinated every group it was asked about, and what it holds is
        // current; it keeps the groups it still leads.
        groups.unload(|group_id| !led.contains(&group::partition_for(group_id, count)));
        groups.set_ownership(count, led);
        return;
    };
    if before == led {
        return;
    }
    let lost: BTreeSet<i32> = before.difference(&led).copied().collect();
    if !lost.is_empty() {
        let unloaded =
            groups.unload(|group_id| lost.contains(&group::partition_for(group_id, count)));
        tracing::info!(partitions = ?lost, groups = unloaded, "no longer the coordinator of these {} partitions", group::OFFSETS_TOPIC);
    }
    let gained: BTreeSet<i32> = led.difference(&before).copied().collect();
    let mut owned = led;
    if !gained.is_empty() {
        match group::store::load(topics, groups, count, &gained) {
            Ok(()) => {
                tracing::info!(partitions = ?gained, "now the coordinator of these {} partitions", group::OFFSETS_TOPIC)
            }
            Err(error) => {
                // Not claimed: their groups get NOT_COORDINATOR rather than lost state.
                tracing::error!(%error, partitions = ?gained, "loading consumer groups failed");
                owned.retain(|p| !gained.contains(p));
            }
        }
    }
    groups.set_ownership(count, owned);
}

/// Imports the topics of a single-node data directory (`__topics/*.properties`) into the
/// metadata log (docs/cluster.md, "Upgrading a single-node data directory"): each with its id,
/// partition count and configs, every partition on this node; topics whose id the image has
/// already are skipped (a crash after an earlier import). Then `__topics` is renamed
/// `__topics.imported`.
async fn import_legacy_topics(
    config: &BrokerConfig,
    metadata: &MetadataHandle,
) -> Result<(), BrokerError> {
    if !config.data_dir.join(crate::topics::TOPICS_DIR).is_dir() {
        return Ok(());
    }
    let legacy = crate::topics::legacy_topics(&config.data_dir)?;
    // Producer ids the single node handed out stay taken.
    if let Some(floor) = crate::producer_ids::legacy_floor(&config.data_dir)? {
        metadata
            .submit(ControllerRequest::ImportProducerIdFloor {
                broker_id: config.node_id,
                floor,
            })
            .await?;
    }
    let image = metadata.image();
    let node = config.node_id;
    let topics: Vec<NewTopic> = legacy
        .into_iter()
        .filter(|t| image.topic_by_id(t.id).is_none())
        .map(|t| NewTopic {
            assignment: Some((0..t.partitions.max(0)).map(|_| vec![node]).collect()),
            name: t.name,
            partitions: -1,
            replication_factor: -1,
            configs: t.configs,
            topic_id: Some(t.id),
        })
        .collect();
    if !topics.is_empty() {
        let count = topics.len();
        let committed = metadata
            .submit(ControllerRequest::CreateTopics {
                topics,
                validate_only: false,
            })
            .await?;
        if let ControllerReply::Topics(outcomes) = &committed.reply {
            if let Some((name, error)) = outcomes
                .iter()
                .find_map(|o| o.error.as_ref().map(|e| (&o.name, e)))
            {
                return Err(BrokerError::Metadata {
                    path: config.data_dir.join(crate::topics::TOPICS_DIR),
                    source: std::io::Error::other(format!(
                        "importing topic '{name}' failed: {}",
                        error.message
                    )),
                });
            }
        }
        tracing::info!(
            topics = count,
            "topics of the single-node layout imported into the metadata log"
        );
    }
    crate::topics::retire_legacy_topics(&config.data_dir)
}

fn group_config(config: &BrokerConfig) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: std::time::Duration::from_millis(
            config.group_initial_rebalance_delay_ms,
        ),
        min_session_timeout_ms: config.group_min_session_timeout_ms,
        max_session_timeout_ms: config.group_max_session_timeout_ms,
        max_size: config.group_max_size,
        offset_metadata_max_bytes: config.offset_metadata_max_bytes,
        offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
    }
}

/// A control plane driven by hand, for unit tests: the test sets the image and answers (or
/// ignores) submissions.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod testing {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tokio::sync::{mpsc, watch};
    use uuid::Uuid;

    use super::Broker;
    use crate::config::BrokerConfig;
    use crate::metadata::{
        BrokerId, Endpoint, MetadataBatch, MetadataHandle, MetadataImage, MetadataRecord,
        PartitionState, QuorumState, Submission,
    };

    /// The other end of a [`MetadataHandle`].
    pub(crate) struct FakeControlPlane {
        pub image: watch::Sender<Arc<MetadataImage>>,
        /// Held so that submissions wait (unanswered) instead of failing.
        #[allow(dead_code)]
        pub submissions: mpsc::Receiver<Submission>,
        pub quorum: watch::Sender<QuorumState>,
    }

    /// A handle over `image`, with node `leader` as the active controller.
    pub(crate) fn fake(
        image: MetadataImage,
        leader: BrokerId,
    ) -> (MetadataHandle, FakeControlPlane) {
        let (image_tx, image_rx) = watch::channel(Arc::new(image));
        let (submit_tx, submit_rx) = mpsc::channel(16);
        let (quorum_tx, quorum_rx) = watch::channel(QuorumState {
            leader_id: Some(leader),
            leader_epoch: 1,
            high_watermark: 1,
            ..QuorumState::default()
        });
        (
            MetadataHandle::new(image_rx, submit_tx, quorum_rx),
            FakeControlPlane {
                image: image_tx,
                submissions: submit_rx,
                quorum: quorum_tx,
            },
        )
    }

    /// Brokers `brokers` registered (endpoint `host-<id>:<9000 + id>` on PLAINTEXT), and
    /// `topics` with their partition states.
    pub(crate) fn image(
        brokers: &[BrokerId],
        topics: &[(&str, Vec<PartitionState>)],
    ) -> MetadataImage {
        let mut records: Vec<MetadataRecord> = brokers
            .iter()
            .map(|id| MetadataRecord::RegisterBroker {
                broker_id: *id,
                incarnation: Uuid::new_v4(),
                endpoints: vec![Endpoint {
                    listener: "PLAINTEXT".into(),
                    host: format!("host-{id}"),
                    port: 9000 + u16::try_from(*id).unwrap(),
                }],
                rack: None,
            })
            .collect();
        records.extend(
            topics
                .iter()
                .map(|(name, partitions)| MetadataRecord::CreateTopic {
                    name: (*name).to_string(),
                    topic_id: Uuid::new_v4(),
                    configs: BTreeMap::new(),
                    partitions: partitions.clone(),
                }),
        );
        let mut image = MetadataImage::default();
        image.apply(
            1,
            &MetadataBatch {
                request_id: None,
                reply: None,
                records,
            },
        );
        image
    }

    /// A partition with these replicas, led by `leader` at epoch 3.
    /// One v2 batch holding one record with `value` (offsets to be assigned by the log).
    pub(crate) fn record_batch(value: &[u8]) -> bytes::Bytes {
        let record = runnel_protocol::batch_builder::NewRecord {
            key: None,
            value: Some(value.to_vec()),
            headers: Vec::new(),
        };
        runnel_protocol::batch_builder::build_batch(&[record], 0).unwrap()
    }

    pub(crate) fn partition(replicas: &[BrokerId], leader: BrokerId) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 3,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    /// A broker (node 0) on `data_dir` over `metadata`, registered as no incarnation.
    pub(crate) async fn open(data_dir: &std::path::Path, metadata: MetadataHandle) -> Broker {
        let overrides = [("data.dir".to_string(), data_dir.display().to_string())];
        let config = Arc::new(BrokerConfig::load(None, &overrides).unwrap());
        tokio::task::spawn_blocking(move || {
            Broker::open_with(config, "cluster".into(), metadata, None)
        })
        .await
        .unwrap()
        .unwrap()
    }
}
