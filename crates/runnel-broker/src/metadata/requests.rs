//! What brokers ask the active controller (docs/cluster.md, "The controller API"), and what it
//! answers. Every broker — the controller's own node included — goes through the same
//! [`MetadataHandle::submit`](super::handle::MetadataHandle::submit): a request is carried out
//! by the controller and answered once its records are committed in the metadata log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{BrokerId, Endpoint};

/// A request to the active controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// CreateTopics (and auto-creation, and the internal topics' creation).
    CreateTopics {
        /// The topics, each decided on its own.
        topics: Vec<NewTopic>,
        /// Check only; commit nothing.
        validate_only: bool,
    },
    /// DeleteTopics.
    DeleteTopics {
        /// The topics, by name or id.
        topics: Vec<TopicRef>,
    },
    /// CreatePartitions.
    CreatePartitions {
        /// The topics to grow.
        topics: Vec<NewPartitions>,
        /// Check only; commit nothing.
        validate_only: bool,
    },
    /// AlterConfigs (a whole replacement) or IncrementalAlterConfigs (operations) of topics.
    AlterTopicConfigs {
        /// One change per topic.
        topics: Vec<TopicConfigChange>,
        /// Check only; commit nothing.
        validate_only: bool,
    },
    /// A broker starting (or restarting) announces itself.
    RegisterBroker {
        /// `node.id`.
        broker_id: BrokerId,
        /// Unique per process start.
        incarnation: Uuid,
        /// Its advertised listeners.
        endpoints: Vec<Endpoint>,
        /// `broker.rack`.
        rack: Option<String>,
    },
    /// Sent every `broker.heartbeat.interval.ms`; a broker silent for
    /// `broker.session.timeout.ms` is fenced.
    BrokerHeartbeat {
        /// `node.id`.
        broker_id: BrokerId,
        /// The incarnation it registered with.
        incarnation: Uuid,
    },
    /// A broker controlled-shutting down (SIGTERM): fenced at once, leadership moves away.
    BrokerShutdown {
        /// `node.id`.
        broker_id: BrokerId,
        /// The incarnation it registered with.
        incarnation: Uuid,
    },
    /// A broker's producer-id allocator needs a new block.
    AllocateProducerIds {
        /// `node.id`.
        broker_id: BrokerId,
    },
    /// The import of a pre-cluster data directory: producer ids below `floor` were handed out
    /// by the single node (its `producer-id-block` file), so the next block starts at or
    /// above it. Answered `Done`; nothing changes when the image is already past `floor`.
    ImportProducerIdFloor {
        /// The importing node (the owner of the skipped ids).
        broker_id: BrokerId,
        /// The first id the old allocator never handed out.
        floor: i64,
    },
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count; -1 for `num.partitions`.
    pub partitions: i32,
    /// Replication factor; -1 for `default.replication.factor`.
    pub replication_factor: i16,
    /// Explicit replicas by partition index (then `partitions` and `replication_factor` are -1).
    pub assignment: Option<Vec<Vec<BrokerId>>>,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// Keep this id (a topic imported from a pre-cluster data directory); `None` for a new one.
    pub topic_id: Option<Uuid>,
}

/// A topic by name or by id (DeleteTopics v6 takes either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicRef {
    /// By name.
    Name(String),
    /// By id.
    Id(Uuid),
}

/// CreatePartitions for one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPartitions {
    /// The topic.
    pub name: String,
    /// The new total partition count.
    pub count: i32,
    /// Replicas of each new partition, if given.
    pub assignment: Option<Vec<Vec<BrokerId>>>,
}

/// A config change of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfigChange {
    /// The topic.
    pub name: String,
    /// What changes.
    pub change: ConfigChange,
}

/// AlterConfigs replaces; IncrementalAlterConfigs applies operations to the current overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigChange {
    /// The new overrides, all of them.
    Replace(BTreeMap<String, String>),
    /// Operations, applied in order.
    Incremental(Vec<ConfigOp>),
}

/// One IncrementalAlterConfigs operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigOp {
    /// Config name.
    pub name: String,
    /// Kafka's operation code: 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT.
    pub op: i8,
    /// The value (ignored by DELETE).
    pub value: Option<String>,
}

/// A Kafka error code with a message, as the controller answers per item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    /// Kafka's error code.
    pub code: i16,
    /// Why, for the client's `error_message`.
    pub message: String,
}

/// The outcome for one topic of a topic request, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicOutcome {
    /// The topic's name as requested (empty for a DeleteTopics by an unknown id).
    pub name: String,
    /// Its id (nil when it has none).
    pub topic_id: Uuid,
    /// `None` on success.
    pub error: Option<AdminError>,
}

/// What the controller answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    /// CreateTopics, DeleteTopics, CreatePartitions, AlterTopicConfigs: one outcome per topic.
    Topics(Vec<TopicOutcome>),
    /// RegisterBroker, BrokerShutdown.
    Done,
    /// BrokerHeartbeat: whether the broker is fenced (then it must register again).
    Heartbeat {
        /// The sender's incarnation is fenced or unknown.
        fenced: bool,
    },
    /// AllocateProducerIds: ids `[first, first + count)` are this broker's.
    ProducerIds {
        /// First id.
        first: i64,
        /// Count.
        count: i64,
    },
}

/// A request answered: the reply, and the metadata log index that committed it (0 if it
/// committed nothing), which the submitting broker's image reaches before it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The controller's reply.
    pub reply: ControllerReply,
    /// Log index of the batch, or of the image the decision was made on.
    pub index: u64,
}
