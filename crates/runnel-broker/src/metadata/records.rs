//! The records of the metadata log (docs/cluster.md, "Metadata records"). Every decision of the
//! controller is one [`MetadataBatch`]: one Raft entry, applied atomically by every node to its
//! [`MetadataImage`](super::image::MetadataImage). Encoded as JSON inside the Raft entry (the
//! log is small and rarely written; a readable log is worth more than a few bytes).
//!
//! Records are facts, never requests: the controller has already validated them against the
//! image, and applying one is deterministic on every node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::requests::ControllerReply;

/// A node's broker id (`node.id`).
pub type BrokerId = i32;

/// "No leader" in a [`PartitionState`], as Kafka encodes it.
pub const NO_LEADER: BrokerId = -1;

/// One listener of a broker, as clients and peers reach it (`advertised.listeners`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name (`PLAINTEXT`, `INTERNAL`, `EXTERNAL`, …).
    pub listener: String,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
}

/// Who holds a partition and who leads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Assigned replicas, preferred leader first. During a reassignment the union of the
    /// target replicas (first, in their order) and the original ones being removed.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas.
    pub isr: Vec<BrokerId>,
    /// The leader, or [`NO_LEADER`] while the partition is offline.
    pub leader: BrokerId,
    /// Bumped at every leader change (clients and followers fence stale leaders with it).
    pub leader_epoch: i32,
    /// Bumped at every change of this state (ISR, replicas or leader).
    pub partition_epoch: i32,
    /// Replicas a reassignment adds (target − original); empty when none is in progress.
    /// Defaulted so that metadata logs and snapshots written before reassignments load.
    #[serde(default)]
    pub adding_replicas: Vec<BrokerId>,
    /// Replicas a reassignment removes (original − target); empty when none is in progress.
    #[serde(default)]
    pub removing_replicas: Vec<BrokerId>,
}

impl PartitionState {
    /// Whether a reassignment is in progress (KIP-455).
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas a reassignment moves to: `replicas` without those being removed (all of
    /// them when none is in progress).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing_replicas.contains(b))
            .collect()
    }

    /// The replicas before the reassignment: `replicas` without those being added.
    pub fn original_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.adding_replicas.contains(b))
            .collect()
    }
}

/// One fact of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A broker (re)registered: a new incarnation (process start) replaces the previous one.
    /// A registered broker starts unfenced.
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
    /// The broker missed heartbeats for `broker.session.timeout.ms` (or shut down): it leads
    /// nothing and is not listed to clients until it registers again.
    FenceBroker {
        /// The fenced broker.
        broker_id: BrokerId,
    },
    /// The broker's current incarnation shut down (controlled shutdown, after its fence):
    /// a heartbeat of that incarnation still in flight must not unfence it; only a new
    /// registration does.
    ShutDownBroker {
        /// The broker.
        broker_id: BrokerId,
    },
    /// A fenced broker is back (a heartbeat from its current incarnation).
    UnfenceBroker {
        /// The broker.
        broker_id: BrokerId,
    },
    /// A topic with its partitions (index = position).
    CreateTopic {
        /// Name.
        name: String,
        /// Id, unique for ever.
        topic_id: Uuid,
        /// Config overrides (validated).
        configs: BTreeMap<String, String>,
        /// Partition states, by index.
        partitions: Vec<PartitionState>,
    },
    /// Partitions appended to a topic (CreatePartitions): indexes continue from the current
    /// count.
    AddPartitions {
        /// The topic.
        topic_id: Uuid,
        /// New partitions, in index order.
        partitions: Vec<PartitionState>,
    },
    /// The topic is gone; its id is never reused.
    DeleteTopic {
        /// The topic.
        topic_id: Uuid,
    },
    /// A partition's new state (leader election, ISR change, fencing).
    ChangePartition {
        /// The topic.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
        /// The whole new state.
        state: PartitionState,
    },
    /// A topic's config overrides, replaced as a whole.
    SetTopicConfigs {
        /// The topic.
        topic_id: Uuid,
        /// The new overrides (validated).
        configs: BTreeMap<String, String>,
    },
    /// A block of producer ids `[first, first + count)` handed to a broker; the image's next
    /// free id moves past it, so ids stay unique across brokers and restarts.
    ProducerIdsBlock {
        /// The broker that owns the block.
        broker_id: BrokerId,
        /// First id of the block.
        first: i64,
        /// Ids in the block.
        count: i64,
    },
}

/// One Raft entry: the records of one controller decision, applied atomically, and — for a
/// forwarded request — its id and reply, so that a retried request (after a controller
/// failover) is answered from the log instead of being applied twice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetadataBatch {
    /// The request this batch answers, if it answers one.
    pub request_id: Option<Uuid>,
    /// The reply that request gets.
    pub reply: Option<ControllerReply>,
    /// The records, applied in order.
    pub records: Vec<MetadataRecord>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_state_written_before_reassignments_loads_with_none_in_progress() {
        let old = r#"{"replicas":[1,2],"isr":[2],"leader":2,"leader_epoch":4,"partition_epoch":9}"#;
        let state: PartitionState = serde_json::from_str(old).unwrap();
        assert_eq!((state.replicas.clone(), state.leader), (vec![1, 2], 2));
        assert!(!state.is_reassigning());
        assert_eq!(state.target_replicas(), [1, 2]);
        assert_eq!(state.original_replicas(), [1, 2]);
    }
}
