//! `BrokerError` and the one place that maps errors to Kafka error codes.
//!
//! Handlers return `BrokerError` and call [`BrokerError::error_code`]; no handler writes a
//! numeric code or picks a `ResponseError` on its own.

use kafka_protocol::error::ResponseError;
use runnel_protocol::ProtocolError;
use runnel_storage::{StorageError, UnwrittenCause};

/// Everything a request can fail with, per partition, topic or request.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Bytes from the client are malformed or unacceptable.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The partition log refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The partition's log could not be opened (damaged data, or I/O): it is offline until the
    /// broker restarts; every other partition is served.
    #[error("partition {dir} is offline: {reason}")]
    PartitionOffline {
        /// The partition directory.
        dir: std::path::PathBuf,
        /// Why opening it failed.
        reason: std::sync::Arc<StorageError>,
    },
    /// The topic or partition does not exist here.
    #[error("unknown topic or partition {0}")]
    UnknownTopicOrPartition(String),
    /// The partition exists in the cluster but has no replica on this node.
    #[error("no replica of {0} on this node")]
    ReplicaNotAvailable(String),
    /// AlterReplicaLogDirs names a directory that is not one of `log.dirs`.
    #[error("{0} is not one of this broker's log dirs")]
    LogDirNotFound(String),
    /// A topic id that no topic has.
    #[error("unknown topic id {0}")]
    UnknownTopicId(uuid::Uuid),
    /// CreateTopics for a name that exists.
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// A topic name Kafka would not accept.
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopic {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A Produce to an internal topic (`__consumer_offsets`, `__transaction_state`): only the
    /// broker writes those, as in Kafka.
    #[error("cannot append to internal topic '{0}'")]
    InternalTopic(String),
    /// A DeleteTopics of an internal topic: `__consumer_offsets` holds every group's committed
    /// offsets and only the broker manages it. Kafka leaves this to ACLs; with none here, the
    /// answer is the one Kafka gives a client not allowed to delete a topic.
    #[error("internal topic '{0}' cannot be deleted by a client")]
    InternalTopicDeletion(String),
    /// A partition whose log is offline (it failed to open or failed since): it has no leader
    /// until the broker reopens it, which Metadata reports as LEADER_NOT_AVAILABLE.
    #[error("partition {topic}-{partition} has no leader: its log is offline")]
    LeaderNotAvailable {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: i32,
    },
    /// A partition count below 1 or above the limit.
    #[error("invalid partition count {0}")]
    InvalidPartitions(i32),
    /// A replication factor this cluster cannot honour.
    #[error("replication factor {0} is not possible on a single node (only 1)")]
    InvalidReplicationFactor(i16),
    /// A manual replica assignment naming other brokers.
    #[error("replica assignment {0}")]
    InvalidReplicaAssignment(String),
    /// A topic config that is unknown or has a bad value.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Produce with acks outside {-1, 0, 1}.
    #[error("acks must be -1, 0 or 1, not {0}")]
    InvalidRequiredAcks(i16),
    /// InitProducerId with a timeout above `transaction.max.timeout.ms`.
    #[error("transaction timeout {timeout_ms} ms exceeds the maximum {max_ms} ms")]
    InvalidTransactionTimeout {
        /// Requested.
        timeout_ms: i32,
        /// Allowed.
        max_ms: i64,
    },
    /// A request this broker understands but cannot serve yet (e.g. transactional producers).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// A record timestamp outside `message.timestamp.before.max.ms` / `after.max.ms`.
    #[error("timestamp {timestamp_ms} is out of the topic's accepted range around {now_ms}")]
    InvalidTimestamp {
        /// The batch's offending timestamp, ms.
        timestamp_ms: i64,
        /// The broker's clock, ms.
        now_ms: i64,
    },
    /// A record the topic cannot take (a keyless record on a compacted topic).
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
    /// A Fetch that claims to come from a follower replica: this node has none, so such a
    /// fetch must not be served (it would move replication state).
    #[error("fetch from replica {0}: this node has no followers")]
    NotAReplica(i32),
    /// An fsync the acknowledgement waited for failed (the log directory's disk).
    #[error("fsync failed: {0}")]
    FlushFailed(String),
    /// A well-formed request that asks for something impossible.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// InitProducerId with a `transactional.id`: there is no transaction coordinator yet.
    /// Answered with an error librdkafka and the Java client treat as fatal, so that
    /// `init_transactions()` fails at once instead of retrying INVALID_REQUEST forever.
    #[error("transactional id '{0}': transactions are not supported by this broker yet")]
    TransactionsUnsupported(String),
    /// A consumer group protocol error (membership, generation, offsets).
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    /// A blocking storage task died (a bug); the request fails, the broker goes on.
    #[error("storage task failed: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
    /// A broker file (data dir, topic metadata, ids) could not be written or read.
    #[error("{path}: {source}")]
    Metadata {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Records a compacted topic refuses because they have no key, by their index in the
    /// partition's records (Produce v8+ lists them in `record_errors`, KIP-467).
    #[error("compacted topic requires every record to have a key: {} records have none", .0.len())]
    RecordsWithoutKey(Vec<i32>),
    /// The partition is led by another broker (or by none): clients refresh their metadata
    /// and go to the leader.
    #[error(
        "this broker does not lead {topic}-{partition} (leader {leader}, epoch {leader_epoch})"
    )]
    NotLeaderOrFollower {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: i32,
        /// The leader the image names (-1: none).
        leader: i32,
        /// Its leader epoch (-1 unknown).
        leader_epoch: i32,
    },
    /// acks=all refused before the append: the ISR is smaller than `min.insync.replicas`.
    #[error("{topic}-{partition}: {isr} in-sync replicas, {min_insync} required")]
    NotEnoughReplicas {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: i32,
        /// ISR size now.
        isr: usize,
        /// `min.insync.replicas`.
        min_insync: usize,
    },
    /// acks=all appended, then the ISR fell below `min.insync.replicas` before the records
    /// were committed: the client retries (an idempotent producer's retry is a duplicate).
    #[error("{topic}-{partition}: the ISR fell below min.insync.replicas after the append")]
    NotEnoughReplicasAfterAppend {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: i32,
    },
    /// A request naming a leader epoch older than this leader's.
    #[error("leader epoch {requested} is fenced: the current one is {current}")]
    FencedLeaderEpoch {
        /// The epoch the request named.
        requested: i32,
        /// This leader's.
        current: i32,
    },
    /// A request naming a leader epoch newer than this node knows.
    #[error("leader epoch {requested} is unknown: the current one is {current}")]
    UnknownLeaderEpoch {
        /// The epoch the request named.
        requested: i32,
        /// This node's.
        current: i32,
    },
    /// acks=all: the records were not committed within the request's timeout.
    #[error("{topic}-{partition}: not replicated within {timeout_ms} ms")]
    ReplicationTimedOut {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: i32,
        /// The produce request's timeout.
        timeout_ms: i64,
    },
    /// The controller did not carry a request out (no controller known, a timeout, shutting
    /// down): retriable.
    #[error("the controller is not available: {0}")]
    ControllerUnavailable(String),
    /// The controller refused (part of) an admin request, with Kafka's code and its message.
    #[error("{message}")]
    Admin {
        /// Kafka's error code.
        code: i16,
        /// Why.
        message: String,
    },
    /// The active controller did not answer (an election, an unreachable leader, shutdown).
    #[error("controller: {0}")]
    Controller(#[from] crate::metadata::SubmitError),
    /// The listener could not bind (port in use, bad address).
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl BrokerError {
    /// The group error a failed write of group metadata becomes, as Kafka's
    /// `GroupMetadataManager.storeGroup` maps its append errors: a storage error or a lost
    /// leadership → NOT_COORDINATOR, anything else → COORDINATOR_NOT_AVAILABLE (the client
    /// finds the coordinator again and rejoins either way).
    pub fn as_group_store_error(&self) -> crate::group::GroupError {
        match self.error_code() {
            ResponseError::KafkaStorageError | ResponseError::NotLeaderOrFollower => {
                crate::group::GroupError::NotCoordinator
            }
            _ => crate::group::GroupError::CoordinatorNotAvailable,
        }
    }

    /// The Kafka error this becomes on the wire.
    pub fn error_code(&self) -> ResponseError {
        match self {
            BrokerError::Protocol(e) => match e {
                ProtocolError::CorruptBatch(_) => ResponseError::CorruptMessage,
                ProtocolError::InvalidBatch(_) => ResponseError::InvalidRecord,
                ProtocolError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
                _ => ResponseError::InvalidRequest,
            },
            BrokerError::Storage(e) => storage_error_code(e),
            BrokerError::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
            BrokerError::LogDirNotFound(_) => ResponseError::LogDirNotFound,
            BrokerError::ReplicaNotAvailable(_) => ResponseError::ReplicaNotAvailable,
            BrokerError::UnknownTopicId(_) => ResponseError::UnknownTopicId,
            BrokerError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            BrokerError::InvalidTopic { .. } | BrokerError::InternalTopic(_) => {
                ResponseError::InvalidTopicException
            }
            BrokerError::InternalTopicDeletion(_) => ResponseError::TopicAuthorizationFailed,
            BrokerError::LeaderNotAvailable { .. } => ResponseError::LeaderNotAvailable,
            BrokerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            BrokerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            BrokerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            BrokerError::InvalidConfig(_) => ResponseError::InvalidConfig,
            BrokerError::InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
            BrokerError::InvalidTransactionTimeout { .. } => {
                ResponseError::InvalidTransactionTimeout
            }
            BrokerError::Unsupported(_) | BrokerError::InvalidRequest(_) => {
                ResponseError::InvalidRequest
            }
            BrokerError::TransactionsUnsupported(_) => {
                ResponseError::TransactionalIdAuthorizationFailed
            }
            BrokerError::NotAReplica(_) => ResponseError::NotLeaderOrFollower,
            // A request that found the log just before a move retired it: retry on the copy.
            BrokerError::PartitionOffline { reason, .. } if is_log_moved(reason) => {
                ResponseError::NotLeaderOrFollower
            }
            BrokerError::FlushFailed(_) | BrokerError::PartitionOffline { .. } => {
                ResponseError::KafkaStorageError
            }
            BrokerError::InvalidTimestamp { .. } => ResponseError::InvalidTimestamp,
            BrokerError::InvalidRecord(_) | BrokerError::RecordsWithoutKey(_) => {
                ResponseError::InvalidRecord
            }
            BrokerError::Group(e) => group_error_code(*e),
            BrokerError::TaskFailed(_) => ResponseError::UnknownServerError,
            BrokerError::Metadata { .. } => ResponseError::KafkaStorageError,
            BrokerError::Listen { .. } => ResponseError::UnknownServerError,
            BrokerError::NotLeaderOrFollower { .. } => ResponseError::NotLeaderOrFollower,
            BrokerError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
            BrokerError::NotEnoughReplicasAfterAppend { .. } => {
                ResponseError::NotEnoughReplicasAfterAppend
            }
            BrokerError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            BrokerError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
            BrokerError::ReplicationTimedOut { .. } => ResponseError::RequestTimedOut,
            BrokerError::ControllerUnavailable(_) => ResponseError::RequestTimedOut,
            BrokerError::Admin { code, .. } => {
                ResponseError::try_from_code(*code).unwrap_or(ResponseError::UnknownServerError)
            }
            // Retriable either way: clients ask again (admin clients find the controller).
            BrokerError::Controller(crate::metadata::SubmitError::NotController { .. }) => {
                ResponseError::NotController
            }
            BrokerError::Controller(_) => ResponseError::RequestTimedOut,
        }
    }

    /// The numeric code, for response fields.
    pub fn code(&self) -> i16 {
        match self {
            BrokerError::Admin { code, .. } => *code,
            _ => self.error_code().code(),
        }
    }
}

impl From<crate::metadata::requests::AdminError> for BrokerError {
    fn from(error: crate::metadata::requests::AdminError) -> BrokerError {
        BrokerError::Admin {
            code: error.code,
            message: error.message,
        }
    }
}

fn storage_error_code(error: &StorageError) -> ResponseError {
    match error {
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // The leadership the produce was checked against ended before it could append.
        StorageError::NotLeaderAtEpoch { .. } => ResponseError::NotLeaderOrFollower,
        StorageError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        // The gap is the rest of a pipeline whose head was not written here: answered as that
        // head was (not persisted, retriable), so the client resends it in order (no epoch bump).
        StorageError::SequenceAfterUnwrittenBatch { cause, .. } => match cause {
            UnwrittenCause::WriteFailed => ResponseError::KafkaStorageError,
            UnwrittenCause::Refused => ResponseError::NotEnoughReplicas,
        },
        StorageError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        StorageError::CorruptBatch { .. } => ResponseError::CorruptMessage,
        // The log moved to another log directory after the request found it: retry there.
        error if is_log_moved(error) => ResponseError::NotLeaderOrFollower,
        // A failed fsync or write took the log offline until a restart reopens it.
        StorageError::LogFailed { .. } => ResponseError::KafkaStorageError,
        _ => ResponseError::KafkaStorageError,
    }
}

/// Whether `error` says the log handle was retired by a move to another log dir (not failed).
fn is_log_moved(error: &StorageError) -> bool {
    match error {
        StorageError::LogMoved { .. } => true,
        StorageError::LogFailed { cause, .. } => matches!(**cause, StorageError::LogMoved { .. }),
        _ => false,
    }
}

fn group_error_code(error: crate::group::GroupError) -> ResponseError {
    use crate::group::GroupError;
    match error {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;

    /// A request that found a log a move retired is told to retry (NOT_LEADER_OR_FOLLOWER),
    /// whether the retired handle answered or the partition's health check did; a failed log
    /// stays a storage error.
    #[test]
    fn a_moved_log_is_not_leader_or_follower_and_a_failed_one_a_storage_error() {
        let retired = || StorageError::LogFailed {
            dir: PathBuf::from("/a/p"),
            cause: Arc::new(StorageError::LogMoved {
                dir: PathBuf::from("/a/p"),
                to: PathBuf::from("/b/p"),
            }),
        };
        let failed = StorageError::LogFailed {
            dir: PathBuf::from("/a/p"),
            cause: Arc::new(StorageError::EmptyAppend),
        };
        let offline = |reason: StorageError| BrokerError::PartitionOffline {
            dir: PathBuf::from("/a/p"),
            reason: Arc::new(reason),
        };
        assert_eq!(
            offline(retired()).error_code(),
            ResponseError::NotLeaderOrFollower
        );
        assert_eq!(
            BrokerError::Storage(retired()).error_code(),
            ResponseError::NotLeaderOrFollower
        );
        assert_eq!(
            offline(failed).error_code(),
            ResponseError::KafkaStorageError
        );
        assert_eq!(
            BrokerError::ReplicaNotAvailable("t-0".into()).error_code(),
            ResponseError::ReplicaNotAvailable
        );
    }
}
