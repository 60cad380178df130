//! AlterPartition (docs/replication.md, "Controller"): a partition's leader asks to change its
//! ISR. Applied only if the sender leads at the same leader epoch and the partition is still
//! at the partition epoch the proposal is based on; the new ISR must be replicas only, hold
//! the leader, and every member it adds must be unfenced. A pure decision.

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::metadata::records::{BrokerId, PartitionState};
use crate::metadata::requests::AlterPartitionError;
use crate::metadata::MetadataImage;

/// What the leader asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange<'a> {
    /// The sender.
    pub broker_id: BrokerId,
    /// The topic.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// The leader epoch it leads at.
    pub leader_epoch: i32,
    /// The partition epoch it is based on.
    pub partition_epoch: i32,
    /// The proposed ISR.
    pub isr: &'a [BrokerId],
}

/// The partition's next state: the ISR asked for (in replica order) at partition epoch + 1,
/// or the current state unchanged when it already has that ISR (a retried request).
///
/// Errors: see [`AlterPartitionError`]; checked in this order — unknown partition, leader
/// epoch, sender not the leader, partition epoch, then the ISR itself.
pub fn decide_isr_change(
    image: &MetadataImage,
    change: &IsrChange<'_>,
) -> Result<PartitionState, AlterPartitionError> {
    let state = image
        .topic_by_id(change.topic_id)
        .and_then(|topic| topic.partition(change.partition))
        .ok_or(AlterPartitionError::UnknownTopicOrPartition)?;
    if change.leader_epoch != state.leader_epoch {
        return Err(AlterPartitionError::FencedLeaderEpoch {
            sent: change.leader_epoch,
            current: state.leader_epoch,
        });
    }
    if change.broker_id != state.leader {
        return Err(AlterPartitionError::NotLeader {
            sender: change.broker_id,
            leader: state.leader,
        });
    }
    let asked: BTreeSet<BrokerId> = change.isr.iter().copied().collect();
    let current: BTreeSet<BrokerId> = state.isr.iter().copied().collect();
    if change.partition_epoch != state.partition_epoch {
        return Err(AlterPartitionError::InvalidUpdateVersion {
            sent: change.partition_epoch,
            current: state.partition_epoch,
        });
    }
    if asked.len() != change.isr.len() {
        return Err(AlterPartitionError::InvalidIsr(format!(
            "{:?} names a broker more than once",
            change.isr
        )));
    }
    if !asked.contains(&state.leader) {
        return Err(AlterPartitionError::InvalidIsr(format!(
            "{:?} does not hold the leader {}",
            change.isr, state.leader
        )));
    }
    if let Some(ineligible) = asked
        .difference(&current)
        .copied()
        .find(|b| !state.replicas.contains(b) || !image.is_unfenced(*b) || is_shut_down(image, *b))
    {
        return Err(AlterPartitionError::IneligibleReplica(ineligible));
    }
    if asked == current {
        return Ok(state.clone());
    }
    Ok(PartitionState {
        isr: state
            .replicas
            .iter()
            .copied()
            .filter(|b| asked.contains(b))
            .collect(),
        partition_epoch: state.partition_epoch.saturating_add(1),
        ..state.clone()
    })
}

fn is_shut_down(image: &MetadataImage, broker: BrokerId) -> bool {
    image.brokers.get(&broker).is_some_and(|b| b.shut_down)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::error::ResponseError;

    use super::*;
    use crate::controller::placement::tests::image_with;
    use crate::metadata::{MetadataBatch, MetadataRecord};

    const TOPIC: Uuid = Uuid::from_u128(7);

    /// Brokers 1-4, broker 4 fenced; partition 0 of TOPIC on [1, 2, 3], ISR [1, 2], leader 1,
    /// leader epoch 5, partition epoch 9.
    fn image() -> MetadataImage {
        let mut image = image_with(&[(1, None), (2, None), (3, None), (4, None)]);
        image.apply(
            2,
            &MetadataBatch {
                records: vec![
                    MetadataRecord::FenceBroker { broker_id: 4 },
                    MetadataRecord::CreateTopic {
                        name: "t".into(),
                        topic_id: TOPIC,
                        configs: BTreeMap::new(),
                        partitions: vec![PartitionState {
                            replicas: vec![1, 2, 3, 4],
                            isr: vec![1, 2],
                            leader: 1,
                            leader_epoch: 5,
                            partition_epoch: 9,
                            adding_replicas: Vec::new(),
                            removing_replicas: Vec::new(),
                        }],
                    },
                ],
                ..MetadataBatch::default()
            },
        );
        image
    }

    fn ask(image: &MetadataImage, isr: &[BrokerId]) -> Result<PartitionState, i16> {
        ask_with(image, 1, 0, 5, 9, isr)
    }

    fn ask_with(
        image: &MetadataImage,
        broker_id: BrokerId,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[BrokerId],
    ) -> Result<PartitionState, i16> {
        decide_isr_change(
            image,
            &IsrChange {
                broker_id,
                topic_id: TOPIC,
                partition,
                leader_epoch,
                partition_epoch,
                isr,
            },
        )
        .map_err(|e| e.code())
    }

    #[test]
    fn the_leader_grows_and_shrinks_the_isr_one_partition_epoch_at_a_time() {
        let image = image();
        let grown = ask(&image, &[3, 1, 2]).unwrap();
        assert_eq!(grown.isr, vec![1, 2, 3], "kept in replica order");
        assert_eq!(
            (grown.leader, grown.leader_epoch, grown.partition_epoch),
            (1, 5, 10)
        );
        let shrunk = ask(&image, &[1]).unwrap();
        assert_eq!((shrunk.isr, shrunk.partition_epoch), (vec![1], 10));
        // The ISR it already has: answered with the state as it is, nothing to commit.
        assert_eq!(
            ask(&image, &[2, 1]).unwrap(),
            image.partition("t", 0).unwrap().clone()
        );
    }

    #[test]
    fn stale_or_foreign_proposals_are_refused_with_kafkas_codes() {
        let image = image();
        let code = |e: ResponseError| Err(e.code());
        assert_eq!(
            ask_with(&image, 1, 0, 4, 9, &[1]),
            code(ResponseError::FencedLeaderEpoch)
        );
        assert_eq!(
            ask_with(&image, 1, 0, 6, 9, &[1]),
            code(ResponseError::FencedLeaderEpoch)
        );
        assert_eq!(
            ask_with(&image, 2, 0, 5, 9, &[2]),
            code(ResponseError::NotLeaderOrFollower)
        );
        assert_eq!(
            ask_with(&image, 1, 0, 5, 8, &[1]),
            code(ResponseError::InvalidUpdateVersion)
        );
        assert_eq!(
            ask_with(&image, 1, 1, 5, 9, &[1]),
            code(ResponseError::UnknownTopicOrPartition)
        );
        assert_eq!(
            ask(&image, &[2]),
            code(ResponseError::InvalidRequest),
            "no leader"
        );
        assert_eq!(
            ask(&image, &[]),
            code(ResponseError::InvalidRequest),
            "empty"
        );
        assert_eq!(
            ask(&image, &[1, 1]),
            code(ResponseError::InvalidRequest),
            "twice"
        );
        assert_eq!(
            ask(&image, &[1, 9]),
            code(ResponseError::IneligibleReplica),
            "not a replica"
        );
        assert_eq!(
            ask(&image, &[1, 4]),
            code(ResponseError::IneligibleReplica),
            "fenced"
        );
        let mut shut_down = image.clone();
        shut_down.apply(
            3,
            &MetadataBatch {
                records: vec![MetadataRecord::ShutDownBroker { broker_id: 3 }],
                ..MetadataBatch::default()
            },
        );
        assert_eq!(
            ask(&shut_down, &[1, 3]),
            code(ResponseError::IneligibleReplica)
        );
    }
}
