//! `Broker`: the state every handler shares — settings, topics, producer ids, and the signal
//! that wakes long-polling fetches when a high watermark moves (a flush made records visible).

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::flusher::{FlushPolicy, Flusher};
use crate::group::{self, GroupConfig, GroupCoordinator};
use crate::producer_ids::ProducerIdAllocator;
use crate::topic_config::TopicConfig;
use crate::topics::{is_internal_name, Topic, TopicRegistry, TopicSpec};

/// Shared broker state. Cheap to share behind an `Arc`; no lock is held across an `.await`.
#[derive(Debug)]
pub struct Broker {
    /// Settings.
    pub config: Arc<BrokerConfig>,
    /// Topics and their partition logs.
    pub topics: TopicRegistry,
    /// Idempotent producer ids.
    pub producer_ids: ProducerIdAllocator,
    /// Consumer groups and committed offsets (rebuilt from `__consumer_offsets` on open).
    pub groups: GroupCoordinator,
    /// The cluster id reported in Metadata, persisted in `meta.properties`.
    pub cluster_id: String,
    /// Group-committed fsyncs for acks=-1.
    pub flusher: Flusher,
    /// Produce batches validated at once, broker-wide. Validation may hold a batch's records
    /// decompressed (snappy has no streaming form: up to 4 × `max.message.bytes`), so this
    /// bounds that memory whatever the number of partitions, requests and connections.
    /// ListOffsets lookups that walk a stored batch's records take the same slots.
    pub validation_slots: Arc<Semaphore>,
    /// Bumped whenever a partition's high watermark may have moved (a flush, or a roll, made
    /// more records durable and so visible); long-polling fetches wait on it.
    high_watermark_moved: watch::Sender<u64>,
}

/// See [`Broker::validation_slots`]: two batches per core, so every core stays busy while
/// memory stays bounded (on 2 cores with the default 1 MiB `max.message.bytes`, at most
/// 4 × 4 MiB of decompressed records at once).
fn validation_slot_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get) * 2
}

impl Broker {
    /// Opens the data directory: cluster id, producer ids, topics (recovering their logs).
    /// Blocking: call before serving or from the blocking pool.
    pub fn open(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Metadata {
            path: config.data_dir.clone(),
            source,
        })?;
        let cluster_id = load_or_create_cluster_id(&config.data_dir)?;
        // Interim (until the metadata quorum is wired in here): a one-node controller in
        // memory, its producer ids starting above the single-node allocator's file, which
        // records each block so that a restart starts above it again.
        let mut image = crate::metadata::MetadataImage::default();
        image.next_producer_id = crate::producer_ids::legacy_floor(&config.data_dir)?.unwrap_or(0);
        let (metadata, _controller) = crate::controller::start_in_memory_from(
            config.node_id,
            crate::controller::ControllerSettings::from_config(&config),
            image,
        );
        let producer_ids =
            ProducerIdAllocator::new(metadata, config.node_id).recording_floor(&config.data_dir);
        let topics = TopicRegistry::load(Arc::clone(&config))?;
        let groups = GroupCoordinator::new(group_config(&config));
        group::store::load(&topics, &groups)?;
        let (high_watermark_moved, _) = watch::channel(0);
        let flusher = Flusher::start(FlushPolicy {
            commit_delay: std::time::Duration::from_millis(config.log_flush_commit_delay_ms),
            device_flush_shared: config.log_flush_device_flush_shared,
        })
        .map_err(|source| BrokerError::Metadata {
            path: config.data_dir.clone(),
            source,
        })?;
        Ok(Broker {
            flusher,
            validation_slots: Arc::new(Semaphore::new(validation_slot_count())),
            config,
            topics,
            groups,
            producer_ids,
            cluster_id,
            high_watermark_moved,
        })
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

    /// Creates `name` with the broker's defaults if auto-creation is on and the topic is absent.
    /// Returns `None` when the topic does not exist and may not be created.
    pub async fn auto_create(&self, name: &str) -> Result<Option<Arc<Topic>>, BrokerError> {
        if let Some(topic) = self.topics.get(name) {
            return Ok(Some(topic));
        }
        // Internal topics are created by their coordinators, never by a client's Metadata.
        if !self.config.auto_create_topics_enable || is_internal_name(name) {
            return Ok(None);
        }
        let spec = TopicSpec {
            name: name.to_string(),
            partitions: self.config.num_partitions,
            config: TopicConfig::default(),
        };
        match self.topics.create(spec, false).await {
            Ok(topic) => Ok(Some(topic)),
            // Another request created it meanwhile.
            Err(BrokerError::TopicAlreadyExists(_)) => Ok(self.topics.get(name)),
            Err(e) => Err(e),
        }
    }

    /// Flushes and checkpoints all logs (graceful shutdown).
    pub fn close(&self) {
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

fn load_or_create_cluster_id(data_dir: &Path) -> Result<String, BrokerError> {
    let path = data_dir.join("meta.properties");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .find_map(|l| l.strip_prefix("cluster.id="))
            .map(str::to_string)
            .ok_or_else(|| BrokerError::Metadata {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no cluster.id"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            runnel_storage::write_file_atomically(
                &path,
                format!("version=1\ncluster.id={id}\n").as_bytes(),
            )?;
            Ok(id)
        }
        Err(source) => Err(BrokerError::Metadata { path, source }),
    }
}
