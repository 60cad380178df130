//! The simulated controller: the real metadata image and the real election functions
//! (`controller::elections`), plus a minimal AlterPartition that follows docs/replication.md
//! ("Controller"): applied only if the sender leads at the same leader and partition epochs,
//! the new ISR holds the leader, lies within the replicas, and adds only unfenced brokers.
//! Every decision is a committed batch in `log`, which nodes apply to their own images later.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::controller::elections::{elect_leaderless, fence};
use crate::metadata::records::{BrokerId, MetadataBatch, MetadataRecord, PartitionState};
use crate::metadata::MetadataImage;
use crate::replication::state::IsrChange;

/// The one simulated topic.
pub(super) const TOPIC: &str = "t";

/// What the controller answers to an AlterPartition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AlterOutcome {
    Committed,
    /// Based on an old leader or partition epoch: a newer state is (or will be) in the image.
    Stale,
    /// Invalid against the state it is based on (e.g. an added member is fenced).
    Refused,
}

pub(super) struct ControllerModel {
    pub(super) image: MetadataImage,
    pub(super) log: Vec<MetadataBatch>,
    /// Whether registering a new incarnation first fences the previous one (moving its
    /// leaderships to a new leader epoch). Off only in the bug variant.
    fence_on_register: bool,
    topic_id: Uuid,
}

impl ControllerModel {
    /// Brokers `ids` registered (with incarnations `incarnation(id)`), and one partition
    /// replicated on all of them, led by the first.
    pub(super) fn new(
        ids: &[BrokerId],
        incarnation: impl Fn(BrokerId) -> u128,
        fence_on_register: bool,
    ) -> Self {
        let topic_id = Uuid::from_u128(1);
        let mut controller = ControllerModel {
            image: MetadataImage::default(),
            log: Vec::new(),
            fence_on_register,
            topic_id,
        };
        let mut records: Vec<MetadataRecord> = ids
            .iter()
            .map(|id| MetadataRecord::RegisterBroker {
                broker_id: *id,
                incarnation: Uuid::from_u128(incarnation(*id)),
                endpoints: Vec::new(),
                rack: None,
            })
            .collect();
        records.push(MetadataRecord::CreateTopic {
            name: TOPIC.into(),
            topic_id,
            configs: BTreeMap::new(),
            partitions: vec![PartitionState {
                replicas: ids.to_vec(),
                isr: ids.to_vec(),
                leader: ids.first().copied().unwrap_or(-1),
                leader_epoch: 0,
                partition_epoch: 0,
            }],
        });
        controller.commit(records);
        controller
    }

    pub(super) fn partition(&self) -> Option<&PartitionState> {
        self.image.partition(TOPIC, 0)
    }

    fn commit(&mut self, records: Vec<MetadataRecord>) {
        if records.is_empty() {
            return;
        }
        let batch = MetadataBatch {
            records,
            ..MetadataBatch::default()
        };
        self.image.apply(self.log.len() as u64 + 1, &batch);
        self.log.push(batch);
    }

    /// The broker missed its heartbeats (or its process died): fence it.
    pub(super) fn fence(&mut self, broker: BrokerId) {
        let records = fence(&self.image, broker, false);
        self.commit(records);
    }

    /// A heartbeat from a fenced broker's current incarnation: unfence it, and elect it where
    /// a partition waits for it.
    pub(super) fn unfence(&mut self, broker: BrokerId) {
        self.commit(vec![MetadataRecord::UnfenceBroker { broker_id: broker }]);
        let elections = elect_leaderless(&self.image, false);
        self.commit(elections);
    }

    /// A new process registers. Its previous incarnation is fenced first: whatever it led
    /// moves to a new leader epoch, so what the old process wrote and lost can never be
    /// rewritten at the same epoch.
    pub(super) fn register(&mut self, broker: BrokerId, incarnation: u128) {
        if self.fence_on_register {
            self.fence(broker);
        }
        self.commit(vec![MetadataRecord::RegisterBroker {
            broker_id: broker,
            incarnation: Uuid::from_u128(incarnation),
            endpoints: Vec::new(),
            rack: None,
        }]);
        let elections = elect_leaderless(&self.image, false);
        self.commit(elections);
    }

    pub(super) fn alter_partition(&mut self, from: BrokerId, change: &IsrChange) -> AlterOutcome {
        let Some(state) = self.partition().cloned() else {
            return AlterOutcome::Refused;
        };
        if state.leader != from
            || state.leader_epoch != change.leader_epoch
            || state.partition_epoch != change.partition_epoch
        {
            return AlterOutcome::Stale;
        }
        let valid = change.isr.contains(&from)
            && change.isr.iter().all(|m| state.replicas.contains(m))
            && change
                .isr
                .iter()
                .all(|m| state.isr.contains(m) || self.image.is_unfenced(*m));
        if !valid {
            return AlterOutcome::Refused;
        }
        let mut next = state;
        next.isr = change.isr.clone();
        next.partition_epoch = next.partition_epoch.saturating_add(1);
        self.commit(vec![MetadataRecord::ChangePartition {
            topic_id: self.topic_id,
            partition: 0,
            state: next,
        }]);
        AlterOutcome::Committed
    }
}
