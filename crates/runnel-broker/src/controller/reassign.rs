//! AlterPartitionReassignments (key 45) as the controller decides it (KIP-455), and the
//! completion of a reassignment (docs/replication.md, "Reassignments"). Pure: the image in,
//! `ChangePartition` records and per-partition outcomes out.
//!
//! A reassignment starts as one partition change: `replicas` becomes the target replicas
//! followed by the original ones not in the target, `adding_replicas` = target − original,
//! `removing_replicas` = original − target. The new replicas follow the leader like any
//! follower and join the ISR through the leader's AlterPartition; the ISR change that puts
//! the last target replica in sync also completes the reassignment ([`complete_if_caught_up`]):
//! `replicas` = target, the ISR keeps only target replicas, and a leader being removed hands
//! over to an in-sync target replica at a new leader epoch. Cancelling (`replicas: None`)
//! returns to the original replicas the same way.

use kafka_protocol::error::ResponseError;

use super::decide::Scratch;
use super::elections::{change, clean_candidate};
use super::placement::check_replica_list;
use crate::metadata::records::{BrokerId, MetadataRecord, PartitionState, NO_LEADER};
use crate::metadata::requests::{AdminError, PartitionOutcome, PartitionReassignment};
use crate::metadata::MetadataImage;

/// The records and outcomes of an AlterPartitionReassignments, one outcome per partition in
/// request order. A partition named twice is decided on the state the first left.
pub fn decide_reassignments(
    image: &MetadataImage,
    partitions: &[PartitionReassignment],
    allow_replication_factor_change: bool,
) -> (Vec<MetadataRecord>, Vec<PartitionOutcome>) {
    let mut scratch = Scratch::new(image);
    let mut outcomes = Vec::with_capacity(partitions.len());
    for asked in partitions {
        let error = match reassign_one(&scratch.image, asked, allow_replication_factor_change) {
            Ok(record) => {
                scratch.apply(record.into_iter().collect());
                None
            }
            Err(error) => Some(error),
        };
        outcomes.push(PartitionOutcome {
            topic: asked.topic.clone(),
            partition: asked.partition,
            error,
        });
    }
    (scratch.records, outcomes)
}

/// The record one partition's reassignment (or cancellation) comes to; `None` when nothing
/// changes (the reassignment asked for is the one in progress, or the replicas are the
/// target already).
///
/// Errors: UNKNOWN_TOPIC_OR_PARTITION; NO_REASSIGNMENT_IN_PROGRESS for a cancellation of
/// none; INVALID_REPLICA_ASSIGNMENT for an empty target, duplicates, brokers not registered
/// and unfenced, or a change that would leave no in-sync replica; INVALID_REPLICATION_FACTOR
/// for a replica count change that v1's `allow_replication_factor_change` forbids.
fn reassign_one(
    image: &MetadataImage,
    asked: &PartitionReassignment,
    allow_replication_factor_change: bool,
) -> Result<Option<MetadataRecord>, AdminError> {
    let unknown = || AdminError {
        code: ResponseError::UnknownTopicOrPartition.code(),
        message: format!(
            "unknown topic or partition {}-{}",
            asked.topic, asked.partition
        ),
    };
    let topic = image.topic(&asked.topic).ok_or_else(unknown)?;
    let position = usize::try_from(asked.partition).map_err(|_| unknown())?;
    let state = topic.partitions.get(position).ok_or_else(unknown)?;
    let original = state.original_replicas();
    let next = match &asked.replicas {
        None if !state.is_reassigning() => {
            return Err(AdminError {
                code: ResponseError::NoReassignmentInProgress.code(),
                message: format!(
                    "no reassignment of {}-{} is in progress",
                    asked.topic, asked.partition
                ),
            })
        }
        None => reassign(image, state, &original, &original)?,
        Some(target) => {
            check_replica_list(image, target).map_err(|reason| AdminError {
                code: ResponseError::InvalidReplicaAssignment.code(),
                message: format!("the target replica list {target:?} {reason}"),
            })?;
            if !allow_replication_factor_change && target.len() != original.len() {
                return Err(AdminError {
                    code: ResponseError::InvalidReplicationFactor.code(),
                    message: format!(
                        "the target has {} replicas, the partition {}; \
                         allow_replication_factor_change is false",
                        target.len(),
                        original.len()
                    ),
                });
            }
            reassign(image, state, &original, target)?
        }
    };
    Ok((next != *state).then(|| change(topic, position, next)))
}

/// `state` moving from `original` to `target` (a cancellation: `target` = `original`),
/// completed at once if every target replica is in sync already. Replaces a reassignment in
/// progress: it is always based on the original replicas.
fn reassign(
    image: &MetadataImage,
    state: &PartitionState,
    original: &[BrokerId],
    target: &[BrokerId],
) -> Result<PartitionState, AdminError> {
    let mut replicas = target.to_vec();
    replicas.extend(original.iter().copied().filter(|b| !target.contains(b)));
    let adding: Vec<BrokerId> = target
        .iter()
        .copied()
        .filter(|b| !original.contains(b))
        .collect();
    let removing: Vec<BrokerId> = original
        .iter()
        .copied()
        .filter(|b| !target.contains(b))
        .collect();
    if replicas == state.replicas
        && adding == state.adding_replicas
        && removing == state.removing_replicas
    {
        return Ok(state.clone());
    }
    let isr: Vec<BrokerId> = replicas
        .iter()
        .copied()
        .filter(|b| state.isr.contains(b))
        .collect();
    if isr.is_empty() {
        // Only replicas this change drops are in sync: they alone hold every acknowledged
        // record.
        return Err(AdminError {
            code: ResponseError::InvalidReplicaAssignment.code(),
            message: format!(
                "none of the replicas {replicas:?} is in sync (ISR {:?}); the change would \
                 lose acknowledged records",
                state.isr
            ),
        });
    }
    let mut next = PartitionState {
        replicas,
        isr,
        adding_replicas: adding,
        removing_replicas: removing,
        partition_epoch: state.partition_epoch.saturating_add(1),
        ..state.clone()
    };
    // The leader may be an added replica of the reassignment this one replaces.
    if state.leader != NO_LEADER && !next.replicas.contains(&state.leader) {
        hand_over_leadership(image, &mut next);
    }
    Ok(complete_if_caught_up(image, next))
}

/// `state` with its reassignment completed if every target replica is in the ISR:
/// `replicas` = target, the ISR keeps only target replicas, adding/removing cleared, the
/// partition epoch bumped; a leader being removed hands over to the first in-sync unfenced
/// target replica (a new leader epoch). `state` unchanged otherwise.
pub fn complete_if_caught_up(image: &MetadataImage, state: PartitionState) -> PartitionState {
    if !state.is_reassigning() {
        return state;
    }
    let target = state.target_replicas();
    if !target.iter().all(|b| state.isr.contains(b)) {
        return state;
    }
    let leader_removed = state.leader != NO_LEADER && !target.contains(&state.leader);
    let mut next = PartitionState {
        isr: target.clone(),
        replicas: target,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        partition_epoch: state.partition_epoch.saturating_add(1),
        ..state
    };
    if leader_removed {
        hand_over_leadership(image, &mut next);
    }
    next
}

/// Elects a new leader of `state` (whose leader is no longer a replica) from its ISR, at a
/// new leader epoch; none (-1) if no in-sync replica is unfenced.
fn hand_over_leadership(image: &MetadataImage, state: &mut PartitionState) {
    state.leader = clean_candidate(state, |b| image.is_unfenced(b)).unwrap_or(NO_LEADER);
    state.leader_epoch = state.leader_epoch.saturating_add(1);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::controller::alter_partition::{decide_isr_change, IsrChange};
    use crate::controller::placement::tests::{apply, image_with};

    const TOPIC: Uuid = Uuid::from_u128(45);

    /// Brokers 1-4, broker 4 fenced; topic "t" partition 0 on [1, 2], both in sync, leader 1,
    /// leader epoch 3, partition epoch 5.
    fn image() -> MetadataImage {
        let mut image = image_with(&[(1, None), (2, None), (3, None), (4, None)]);
        apply(
            &mut image,
            vec![
                MetadataRecord::FenceBroker { broker_id: 4 },
                MetadataRecord::CreateTopic {
                    name: "t".into(),
                    topic_id: TOPIC,
                    configs: BTreeMap::new(),
                    partitions: vec![PartitionState {
                        replicas: vec![1, 2],
                        isr: vec![1, 2],
                        leader: 1,
                        leader_epoch: 3,
                        partition_epoch: 5,
                        adding_replicas: Vec::new(),
                        removing_replicas: Vec::new(),
                    }],
                },
            ],
        );
        image
    }

    fn asked(topic: &str, partition: i32, replicas: Option<&[BrokerId]>) -> PartitionReassignment {
        PartitionReassignment {
            topic: topic.into(),
            partition,
            replicas: replicas.map(<[BrokerId]>::to_vec),
        }
    }

    /// Decides `partitions` and applies the records to `image`; the error codes by partition.
    fn reassign(
        image: &mut MetadataImage,
        partitions: &[PartitionReassignment],
        allow_replication_factor_change: bool,
    ) -> Vec<Option<i16>> {
        let (records, outcomes) =
            decide_reassignments(image, partitions, allow_replication_factor_change);
        apply(image, records);
        outcomes
            .into_iter()
            .map(|o| o.error.map(|e| e.code))
            .collect()
    }

    fn state(image: &MetadataImage) -> PartitionState {
        image.partition("t", 0).unwrap().clone()
    }

    /// The leader's ISR change to `isr`, decided as the controller does (completion included),
    /// and applied.
    fn isr_change(image: &mut MetadataImage, isr: &[BrokerId]) {
        let current = state(image);
        let decided = decide_isr_change(
            image,
            &IsrChange {
                broker_id: current.leader,
                topic_id: TOPIC,
                partition: 0,
                leader_epoch: current.leader_epoch,
                partition_epoch: current.partition_epoch,
                isr,
            },
        )
        .map(|next| complete_if_caught_up(image, next))
        .unwrap();
        apply(
            image,
            vec![MetadataRecord::ChangePartition {
                topic_id: TOPIC,
                partition: 0,
                state: decided,
            }],
        );
    }

    #[test]
    fn a_reassignment_starts_with_the_union_and_completes_when_the_target_is_in_sync() {
        let mut image = image();
        assert_eq!(
            reassign(&mut image, &[asked("t", 0, Some(&[2, 3]))], true),
            [None]
        );
        let started = state(&image);
        assert_eq!(
            started.replicas,
            [2, 3, 1],
            "target first, then the original"
        );
        assert_eq!(started.adding_replicas, [3]);
        assert_eq!(started.removing_replicas, [1]);
        assert_eq!(started.isr, [2, 1]);
        assert_eq!(
            (
                started.leader,
                started.leader_epoch,
                started.partition_epoch
            ),
            (1, 3, 6),
            "the leader stays while it is a replica"
        );
        // Asked again: nothing changes.
        let (records, outcomes) =
            decide_reassignments(&image, &[asked("t", 0, Some(&[2, 3]))], true);
        assert!(records.is_empty() && outcomes[0].error.is_none());

        // 3 catches up: the leader adds it, which completes the move off the leader 1.
        isr_change(&mut image, &[1, 2, 3]);
        let done = state(&image);
        assert_eq!(
            (done.replicas.clone(), done.isr.clone()),
            (vec![2, 3], vec![2, 3])
        );
        assert!(!done.is_reassigning());
        assert_eq!(
            (done.leader, done.leader_epoch, done.partition_epoch),
            (2, 4, 8),
            "the first in-sync target replica leads at a new epoch"
        );
    }

    #[test]
    fn a_target_already_in_sync_completes_at_once() {
        let mut image = image();
        assert_eq!(
            reassign(&mut image, &[asked("t", 0, Some(&[2]))], true),
            [None]
        );
        let done = state(&image);
        assert_eq!(
            (done.replicas, done.isr, done.leader),
            (vec![2], vec![2], 2)
        );
        assert!(done.adding_replicas.is_empty() && done.removing_replicas.is_empty());
        assert_eq!(done.leader_epoch, 4);
    }

    #[test]
    fn a_cancellation_returns_to_the_original_replicas() {
        let mut image = image();
        let cancel = asked("t", 0, None);
        assert_eq!(
            reassign(&mut image, std::slice::from_ref(&cancel), true),
            [Some(ResponseError::NoReassignmentInProgress.code())]
        );
        assert_eq!(
            reassign(&mut image, &[asked("t", 0, Some(&[1, 3]))], true),
            [None]
        );
        assert_eq!(state(&image).replicas, [1, 3, 2]);
        assert_eq!(reassign(&mut image, &[cancel], true), [None]);
        let back = state(&image);
        assert_eq!(
            (back.replicas.clone(), back.isr.clone(), back.leader),
            (vec![1, 2], vec![1, 2], 1)
        );
        assert!(!back.is_reassigning());
        assert_eq!((back.leader_epoch, back.partition_epoch), (3, 7));
    }

    #[test]
    fn a_new_reassignment_replaces_the_one_in_progress_from_the_original_replicas() {
        let mut image = image();
        reassign(&mut image, &[asked("t", 0, Some(&[3]))], true);
        assert_eq!(state(&image).replicas, [3, 1, 2]);
        reassign(&mut image, &[asked("t", 0, Some(&[2, 3]))], true);
        let replaced = state(&image);
        assert_eq!(replaced.replicas, [2, 3, 1]);
        assert_eq!(
            (replaced.adding_replicas, replaced.removing_replicas),
            (vec![3], vec![1])
        );
    }

    #[test]
    fn elections_during_a_reassignment_prefer_replicas_that_stay() {
        let mut image = image();
        reassign(&mut image, &[asked("t", 0, Some(&[2, 3]))], true);
        // The leader 1 (being removed) is fenced: 2, a target replica, takes over.
        let records = crate::controller::fence(&image, 1, false);
        apply(&mut image, records);
        assert_eq!(state(&image).leader, 2);
        // Were 2 fenced too, the last in-sync replica 1 would still be kept in the ISR.
        let kept = PartitionState {
            isr: vec![1, 2],
            leader: NO_LEADER,
            ..state(&image)
        };
        assert_eq!(clean_candidate(&kept, |b| b != 2), Some(1));
        assert_eq!(clean_candidate(&kept, |_| true), Some(2));
    }

    #[test]
    fn new_partitions_take_the_target_replication_factor_during_a_move() {
        let mut image = image();
        reassign(&mut image, &[asked("t", 0, Some(&[2, 3]))], true);
        assert_eq!(
            state(&image).replicas.len(),
            3,
            "the union while in progress"
        );
        let request = crate::metadata::ControllerRequest::CreatePartitions {
            topics: vec![crate::metadata::requests::NewPartitions {
                name: "t".into(),
                count: 2,
                assignment: None,
            }],
            validate_only: false,
        };
        let decision = crate::controller::Controller::default().decide(&image, &request);
        let [MetadataRecord::AddPartitions { partitions, .. }] = decision.records.as_slice() else {
            panic!("one AddPartitions expected: {decision:?}");
        };
        assert_eq!(partitions[0].replicas.len(), 2);
    }

    #[test]
    fn bad_requests_get_kafkas_codes_and_change_nothing() {
        let mut image = image();
        let before = image.clone();
        let codes = reassign(
            &mut image,
            &[
                asked("nope", 0, Some(&[1])),
                asked("t", 7, Some(&[1])),
                asked("t", -1, Some(&[1])),
                asked("t", 0, Some(&[2, 2])),
                asked("t", 0, Some(&[])),
                asked("t", 0, Some(&[1, 9])),
                asked("t", 0, Some(&[1, 4])),
            ],
            true,
        );
        let unknown = Some(ResponseError::UnknownTopicOrPartition.code());
        let invalid = Some(ResponseError::InvalidReplicaAssignment.code());
        assert_eq!(
            codes,
            [unknown, unknown, unknown, invalid, invalid, invalid, invalid]
        );
        assert_eq!(
            reassign(&mut image, &[asked("t", 0, Some(&[3]))], false),
            [Some(ResponseError::InvalidReplicationFactor.code())]
        );
        assert_eq!(image.topics, before.topics);
        // A cancellation back to replicas none of which is in sync any more is refused.
        let mut lagging = image.clone();
        apply(
            &mut lagging,
            vec![MetadataRecord::UnfenceBroker { broker_id: 4 }],
        );
        reassign(&mut lagging, &[asked("t", 0, Some(&[3, 4]))], true);
        isr_change(&mut lagging, &[1, 2, 3]);
        for broker_id in [1, 2] {
            let records = crate::controller::fence(&lagging, broker_id, false);
            apply(&mut lagging, records);
        }
        assert_eq!((state(&lagging).leader, state(&lagging).isr), (3, vec![3]));
        let (_, outcomes) = decide_reassignments(&lagging, &[asked("t", 0, None)], true);
        assert_eq!(outcomes[0].error.as_ref().map(|e| e.code), invalid);
    }
}
