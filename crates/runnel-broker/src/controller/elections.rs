//! Leader elections: what fencing a broker does to the partitions it leads, and what a broker
//! coming back does to leaderless partitions. Pure functions from the image to records.
//!
//! Every leader change bumps the leader epoch and the partition epoch; an ISR change alone
//! bumps only the partition epoch.

use crate::metadata::records::{BrokerId, MetadataRecord, PartitionState, NO_LEADER};
use crate::metadata::MetadataImage;

/// Fences `broker`: a `FenceBroker` record, then a `ChangePartition` for every partition it
/// leads — a new leader from the rest of its ISR that is unfenced, or none (`-1`, the ISR kept,
/// so the broker is elected again when it returns) — and for every partition whose ISR holds
/// it as a follower, the ISR without it. Nothing for an unknown or already fenced broker.
pub fn fence(image: &MetadataImage, broker: BrokerId) -> Vec<MetadataRecord> {
    if !image.is_unfenced(broker) {
        return Vec::new();
    }
    let mut records = vec![MetadataRecord::FenceBroker { broker_id: broker }];
    for topic in image.topics.values() {
        for (index, state) in topic.partitions.iter().enumerate() {
            let Some(new_state) = without(image, state, broker) else {
                continue;
            };
            records.push(MetadataRecord::ChangePartition {
                topic_id: topic.id,
                partition: i32::try_from(index).unwrap_or(i32::MAX),
                state: new_state,
            });
        }
    }
    records
}

/// `state` once `fenced` is fenced, or `None` if it does not change.
fn without(
    image: &MetadataImage,
    state: &PartitionState,
    fenced: BrokerId,
) -> Option<PartitionState> {
    if !state.isr.contains(&fenced) && state.leader != fenced {
        return None;
    }
    let rest: Vec<BrokerId> = state.isr.iter().copied().filter(|b| *b != fenced).collect();
    let mut next = state.clone();
    next.partition_epoch = state.partition_epoch.saturating_add(1);
    if state.leader == fenced {
        next.leader = rest
            .iter()
            .copied()
            .find(|b| image.is_unfenced(*b))
            .unwrap_or(NO_LEADER);
        next.leader_epoch = state.leader_epoch.saturating_add(1);
    }
    // The last in-sync replica stays in the ISR: it holds every acknowledged record, and an
    // offline partition waits for it.
    if !rest.is_empty() {
        next.isr = rest;
    } else if state.leader != fenced {
        return None;
    }
    Some(next)
}

/// Elects `broker` (just registered or unfenced) leader of every leaderless partition whose
/// ISR holds it. Decided on an image where `broker` is already (or is about to be) unfenced.
pub fn elect_returning(image: &MetadataImage, broker: BrokerId) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (index, state) in topic.partitions.iter().enumerate() {
            if state.leader != NO_LEADER || !state.isr.contains(&broker) {
                continue;
            }
            let mut next = state.clone();
            next.leader = broker;
            next.leader_epoch = state.leader_epoch.saturating_add(1);
            next.partition_epoch = state.partition_epoch.saturating_add(1);
            records.push(MetadataRecord::ChangePartition {
                topic_id: topic.id,
                partition: i32::try_from(index).unwrap_or(i32::MAX),
                state: next,
            });
        }
    }
    records
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::placement::tests::image_with;
    use crate::metadata::MetadataBatch;

    fn state(replicas: &[BrokerId], isr: &[BrokerId], leader: BrokerId) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 5,
        }
    }

    fn with_topic(mut image: MetadataImage, partitions: Vec<PartitionState>) -> MetadataImage {
        let index = image.applied_index + 1;
        image.apply(
            index,
            &MetadataBatch {
                records: vec![MetadataRecord::CreateTopic {
                    name: "t".into(),
                    topic_id: uuid::Uuid::new_v4(),
                    configs: BTreeMap::new(),
                    partitions,
                }],
                ..MetadataBatch::default()
            },
        );
        image
    }

    fn apply(image: &mut MetadataImage, records: Vec<MetadataRecord>) {
        let index = image.applied_index + 1;
        image.apply(
            index,
            &MetadataBatch {
                records,
                ..MetadataBatch::default()
            },
        );
    }

    #[test]
    fn fencing_moves_leadership_to_the_rest_of_the_isr() {
        let image = with_topic(
            image_with(&[(1, None), (2, None), (3, None)]),
            vec![state(&[1, 2, 3], &[1, 2, 3], 1), state(&[2, 1], &[2, 1], 2)],
        );
        let mut after = image.clone();
        apply(&mut after, fence(&image, 1));
        assert!(!after.is_unfenced(1));
        let p0 = after.partition("t", 0).unwrap();
        assert_eq!((p0.leader, p0.isr.clone()), (2, vec![2, 3]));
        assert_eq!((p0.leader_epoch, p0.partition_epoch), (4, 6));
        // A follower leaves the ISR; the leader stays, and so does its epoch.
        let p1 = after.partition("t", 1).unwrap();
        assert_eq!((p1.leader, p1.isr.clone()), (2, vec![2]));
        assert_eq!((p1.leader_epoch, p1.partition_epoch), (3, 6));
        // Fencing again does nothing.
        assert!(fence(&after, 1).is_empty());
        assert!(fence(&after, 42).is_empty());
    }

    #[test]
    fn fencing_the_only_replica_takes_the_partition_offline_and_its_return_elects_it() {
        let image = with_topic(
            image_with(&[(1, None), (2, None)]),
            vec![state(&[1], &[1], 1), state(&[2], &[2], 2)],
        );
        let mut after = image.clone();
        apply(&mut after, fence(&image, 1));
        let p0 = after.partition("t", 0).unwrap().clone();
        assert_eq!((p0.leader, p0.isr.clone()), (NO_LEADER, vec![1]));
        assert_eq!((p0.leader_epoch, p0.partition_epoch), (4, 6));
        assert_eq!(after.partition("t", 1).unwrap().leader, 2, "untouched");

        let mut records = vec![MetadataRecord::UnfenceBroker { broker_id: 1 }];
        records.extend(elect_returning(&after, 1));
        apply(&mut after, records);
        let p0 = after.partition("t", 0).unwrap();
        assert_eq!(p0.leader, 1);
        assert_eq!((p0.leader_epoch, p0.partition_epoch), (5, 7));
        assert!(
            elect_returning(&after, 1).is_empty(),
            "nothing left to elect"
        );
    }

    #[test]
    fn a_leader_whose_isr_peers_are_fenced_leaves_the_partition_offline() {
        let mut image = with_topic(
            image_with(&[(1, None), (2, None)]),
            vec![state(&[1, 2], &[1, 2], 1)],
        );
        let fence2 = fence(&image, 2);
        apply(&mut image, fence2);
        // 2 left the ISR when it was fenced: 1 is alone.
        assert_eq!(image.partition("t", 0).unwrap().isr, vec![1]);
        let fence1 = fence(&image, 1);
        apply(&mut image, fence1);
        let p = image.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]));
    }
}
