//! The simulated controller: the real metadata image, the real election functions
//! (`controller::elections`, clean elections only) and the real AlterPartition decision
//! (`controller::alter_partition`). Every decision is a committed batch in `log`, which nodes
//! apply to their own images later. What it adds is the schedule (when a broker is fenced,
//! unfenced, registers); a registration is the real `Controller::decide`.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::controller::alter_partition::{self, decide_isr_change};
use crate::controller::elections::{elect_leaderless, fence};
use crate::controller::{Controller, ControllerSettings};
use crate::metadata::records::{BrokerId, MetadataBatch, MetadataRecord, PartitionState};
use crate::metadata::requests::{AlterPartitionError, ControllerRequest};
use crate::metadata::MetadataImage;
use crate::replication::state::IsrChange;

/// `unclean.leader.election.enable`: off (the simulator checks the clean protocol).
const UNCLEAN: bool = false;

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
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
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
        let records = fence(&self.image, broker, UNCLEAN);
        self.commit(records);
    }

    /// A heartbeat from a fenced broker's current incarnation: unfence it, and elect it where
    /// a partition waits for it.
    pub(super) fn unfence(&mut self, broker: BrokerId) {
        self.commit(vec![MetadataRecord::UnfenceBroker { broker_id: broker }]);
        let elections = elect_leaderless(&self.image, UNCLEAN);
        self.commit(elections);
    }

    /// A new process registers, decided by the real controller (`Controller::decide`), which
    /// fences its previous incarnation in the same batch: whatever it led moves to a new
    /// leader epoch, so what the old process wrote and lost can never be rewritten at the
    /// same epoch. The bug variant registers without that fence.
    pub(super) fn register(&mut self, broker: BrokerId, incarnation: u128) {
        let request = ControllerRequest::RegisterBroker {
            broker_id: broker,
            incarnation: Uuid::from_u128(incarnation),
            endpoints: Vec::new(),
            rack: None,
        };
        if self.fence_on_register {
            let decision = Controller::new(ControllerSettings {
                unclean_leader_election_enable: UNCLEAN,
                ..ControllerSettings::default()
            })
            .decide(&self.image, &request);
            self.commit(decision.records);
            return;
        }
        self.commit(vec![MetadataRecord::RegisterBroker {
            broker_id: broker,
            incarnation: Uuid::from_u128(incarnation),
            endpoints: Vec::new(),
            rack: None,
        }]);
        let elections = elect_leaderless(&self.image, UNCLEAN);
        self.commit(elections);
    }

    pub(super) fn alter_partition(&mut self, from: BrokerId, change: &IsrChange) -> AlterOutcome {
        let request = alter_partition::IsrChange {
            broker_id: from,
            topic_id: self.topic_id,
            partition: 0,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            isr: &change.isr,
        };
        match decide_isr_change(&self.image, &request) {
            Ok(state) => {
                if self.partition() != Some(&state) {
                    self.commit(vec![MetadataRecord::ChangePartition {
                        topic_id: self.topic_id,
                        partition: 0,
                        state,
                    }]);
                }
                AlterOutcome::Committed
            }
            Err(
                AlterPartitionError::FencedLeaderEpoch { .. }
                | AlterPartitionError::NotLeader { .. }
                | AlterPartitionError::InvalidUpdateVersion { .. },
            ) => AlterOutcome::Stale,
            Err(_) => AlterOutcome::Refused,
        }
    }
}
