//! What brokers ask the active controller (docs/cluster.md, "The controller API"), and what it
//! answers. Every broker — the controller's own node included — goes through the same
//! [`MetadataHandle::submit`](super::handle::MetadataHandle::submit): a request is carried out
//! by the controller and answered once its records are committed in the metadata log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{BrokerId, Endpoint, PartitionState};

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
    /// A partition's leader asks to change its ISR (docs/replication.md, "AlterPartition"):
    /// applied only if the sender leads at `leader_epoch` and the partition is at
    /// `partition_epoch`; answered [`ControllerReply::AlterPartition`].
    AlterPartition {
        /// The sender, the partition's leader.
        broker_id: BrokerId,
        /// The topic.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
        /// The leader epoch the sender leads at.
        leader_epoch: i32,
        /// The partition epoch the proposal is based on.
        partition_epoch: i32,
        /// The proposed ISR, the leader among it.
        isr: Vec<BrokerId>,
    },
    /// ElectLeaders (key 43): move leadership to the preferred replica, or elect a leader
    /// for leaderless partitions even out of the ISR. Answered
    /// [`ControllerReply::Elections`].
    ElectLeaders {
        /// Preferred or unclean.
        election_type: ElectionType,
        /// Topic name → partition indexes; `None`: every partition (then partitions that
        /// need no election are left out of the reply, as Kafka does).
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
    /// AlterPartitionReassignments (key 45): move partitions to target replicas, or cancel
    /// (`replicas: None`) a reassignment in progress. Answered
    /// [`ControllerReply::Reassignments`].
    AlterPartitionReassignments {
        /// The partitions, in request order.
        partitions: Vec<PartitionReassignment>,
        /// v1's `allow_replication_factor_change` (always true in v0): false refuses a target
        /// with another replica count than the original.
        allow_replication_factor_change: bool,
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

/// ElectLeaders' `election_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// 0: the first replica leads again, if it is in sync and unfenced.
    Preferred,
    /// 1: a leaderless partition gets a leader, from out of the ISR if none is left (may
    /// lose records).
    Unclean,
}

impl ElectionType {
    /// Kafka's code: 0 preferred, 1 unclean; `None` for another.
    pub fn from_code(code: i8) -> Option<ElectionType> {
        match code {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }
}

/// Why the controller refused an AlterPartition (Kafka's codes by [`code`](Self::code)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AlterPartitionError {
    /// No such topic or partition (deleted meanwhile).
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// The sender's leader epoch is not the partition's: it was deposed (or is ahead).
    #[error("leader epoch {sent} is not the partition's {current}")]
    FencedLeaderEpoch {
        /// The epoch sent.
        sent: i32,
        /// The partition's.
        current: i32,
    },
    /// The sender does not lead the partition.
    #[error("broker {sender} does not lead the partition (leader {leader})")]
    NotLeader {
        /// The sender.
        sender: BrokerId,
        /// The partition's leader (-1: none).
        leader: BrokerId,
    },
    /// The partition changed since the state the proposal is based on.
    #[error("partition epoch {sent} is not the partition's {current}")]
    InvalidUpdateVersion {
        /// The epoch sent.
        sent: i32,
        /// The partition's.
        current: i32,
    },
    /// A member to add is not a replica, or is fenced or shutting down.
    #[error("broker {0} cannot join the ISR: not an unfenced replica of the partition")]
    IneligibleReplica(BrokerId),
    /// The ISR is empty, lacks the leader, or names a broker twice.
    #[error("invalid ISR: {0}")]
    InvalidIsr(String),
}

impl AlterPartitionError {
    /// Kafka's error code for it.
    pub fn code(&self) -> i16 {
        use kafka_protocol::error::ResponseError;
        match self {
            AlterPartitionError::UnknownTopicOrPartition => {
                ResponseError::UnknownTopicOrPartition.code()
            }
            AlterPartitionError::FencedLeaderEpoch { .. } => {
                ResponseError::FencedLeaderEpoch.code()
            }
            AlterPartitionError::NotLeader { .. } => ResponseError::NotLeaderOrFollower.code(),
            AlterPartitionError::InvalidUpdateVersion { .. } => {
                ResponseError::InvalidUpdateVersion.code()
            }
            AlterPartitionError::IneligibleReplica(_) => ResponseError::IneligibleReplica.code(),
            AlterPartitionError::InvalidIsr(_) => ResponseError::InvalidRequest.code(),
        }
    }
}

/// The outcome of a partition request (ElectLeaders, AlterPartitionReassignments) for one
/// partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOutcome {
    /// The topic.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// `None`: done.
    pub error: Option<AdminError>,
}

/// The outcome of ElectLeaders for one partition (`None`: elected).
pub type ElectionOutcome = PartitionOutcome;

/// One partition of an AlterPartitionReassignments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReassignment {
    /// The topic.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The target replicas, preferred leader first; `None` cancels the reassignment in
    /// progress.
    pub replicas: Option<Vec<BrokerId>>,
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
    /// AlterPartition: the partition's state as committed (unchanged if the ISR was already
    /// the one asked for), or why the change was refused.
    AlterPartition(Result<PartitionState, AlterPartitionError>),
    /// ElectLeaders: one outcome per partition.
    Elections(Vec<ElectionOutcome>),
    /// AlterPartitionReassignments: one outcome per partition, in request order.
    Reassignments(Vec<PartitionOutcome>),
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
