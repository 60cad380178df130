//! Leader elections: what fencing a broker does to the partitions it leads, how leaderless
//! partitions get a leader again (a returning in-sync replica, or — where
//! `unclean.leader.election.enable` allows it — an out-of-sync one), and the preferred and
//! unclean elections of ElectLeaders. Pure functions from the image to partition states.
//!
//! Every leader change bumps the leader epoch and the partition epoch; an ISR change alone
//! bumps only the partition epoch. Clean elections pick the first unfenced ISR member in
//! replica order, so every controller picks alike.

use kafka_protocol::error::ResponseError;

use crate::metadata::records::{BrokerId, MetadataRecord, PartitionState, NO_LEADER};
use crate::metadata::requests::AdminError;
use crate::metadata::{MetadataImage, TopicImage};

/// The topic config that allows out-of-sync leaders.
const UNCLEAN_CONFIG: &str = "unclean.leader.election.enable";

/// Fences `broker`: a `FenceBroker` record, then a `ChangePartition` for every partition it
/// leads — a new leader from the rest of its ISR that is unfenced; none left, an unfenced
/// out-of-sync replica if the topic allows unclean elections (`unclean_default`: the broker's
/// `unclean.leader.election.enable`), else none (`-1`, the ISR kept, so the broker is elected
/// again when it returns) — and for every partition whose ISR holds it as a follower, the ISR
/// without it. Nothing for an unknown or already fenced broker.
pub fn fence(
    image: &MetadataImage,
    broker: BrokerId,
    unclean_default: bool,
) -> Vec<MetadataRecord> {
    if !image.is_unfenced(broker) {
        return Vec::new();
    }
    let mut records = vec![MetadataRecord::FenceBroker { broker_id: broker }];
    for topic in image.topics.values() {
        for (index, state) in topic.partitions.iter().enumerate() {
            let Some(new_state) = without(image, topic, index, state, broker, unclean_default)
            else {
                continue;
            };
            records.push(change(topic, index, new_state));
        }
    }
    records
}

/// `state` once `fenced` is fenced, or `None` if it does not change.
fn without(
    image: &MetadataImage,
    topic: &TopicImage,
    index: usize,
    state: &PartitionState,
    fenced: BrokerId,
    unclean_default: bool,
) -> Option<PartitionState> {
    if !state.isr.contains(&fenced) && state.leader != fenced {
        return None;
    }
    let rest: Vec<BrokerId> = state.isr.iter().copied().filter(|b| *b != fenced).collect();
    let mut next = state.clone();
    next.partition_epoch = state.partition_epoch.saturating_add(1);
    if state.leader == fenced {
        next.leader_epoch = state.leader_epoch.saturating_add(1);
        let eligible = |b: BrokerId| b != fenced && image.is_unfenced(b);
        next.leader = clean_candidate(state, eligible).unwrap_or(NO_LEADER);
        if next.leader == NO_LEADER && unclean_allowed(topic, unclean_default) {
            if let Some(leader) = unclean_candidate(state, eligible) {
                warn_unclean(topic, index, leader, state);
                next.leader = leader;
                next.isr = vec![leader];
                return Some(next);
            }
        }
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

/// Elects a leader for every leaderless partition that can have one now: its first unfenced
/// ISR member, else (where the topic allows unclean elections) its first unfenced replica,
/// which becomes the ISR alone. Decided after a broker registers or is unfenced, and after a
/// topic's configs change.
pub fn elect_leaderless(image: &MetadataImage, unclean_default: bool) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (index, state) in topic.partitions.iter().enumerate() {
            if state.leader != NO_LEADER {
                continue;
            }
            let eligible = |b: BrokerId| image.is_unfenced(b);
            let next = if let Some(leader) = clean_candidate(state, eligible) {
                with_leader(state, leader)
            } else if unclean_allowed(topic, unclean_default) {
                let Some(leader) = unclean_candidate(state, eligible) else {
                    continue;
                };
                warn_unclean(topic, index, leader, state);
                PartitionState {
                    isr: vec![leader],
                    ..with_leader(state, leader)
                }
            } else {
                continue;
            };
            records.push(change(topic, index, next));
        }
    }
    records
}

/// ElectLeaders PREFERRED for one partition: the first replica leads, if it is in sync and
/// unfenced.
///
/// Errors: ELECTION_NOT_NEEDED if it leads already, PREFERRED_LEADER_NOT_AVAILABLE if it
/// cannot.
pub fn elect_preferred(
    image: &MetadataImage,
    state: &PartitionState,
) -> Result<PartitionState, AdminError> {
    let preferred = state.replicas.first().copied().unwrap_or(NO_LEADER);
    if state.leader == preferred {
        return Err(election_error(
            ResponseError::ElectionNotNeeded,
            format!("the preferred replica {preferred} leads already"),
        ));
    }
    if !state.isr.contains(&preferred) || !image.is_unfenced(preferred) {
        return Err(election_error(
            ResponseError::PreferredLeaderNotAvailable,
            format!("the preferred replica {preferred} is not in sync and unfenced"),
        ));
    }
    Ok(with_leader(state, preferred))
}

/// ElectLeaders UNCLEAN for one partition: a leaderless partition gets its first unfenced ISR
/// member, else its first unfenced replica (then the ISR alone, records it lacks lost).
///
/// Errors: ELECTION_NOT_NEEDED if it has a leader, ELIGIBLE_LEADERS_NOT_AVAILABLE if no
/// replica is unfenced.
pub fn elect_unclean(
    image: &MetadataImage,
    topic: &TopicImage,
    index: usize,
    state: &PartitionState,
) -> Result<PartitionState, AdminError> {
    if state.leader != NO_LEADER {
        return Err(election_error(
            ResponseError::ElectionNotNeeded,
            format!("broker {} leads the partition", state.leader),
        ));
    }
    let eligible = |b: BrokerId| image.is_unfenced(b);
    if let Some(leader) = clean_candidate(state, eligible) {
        return Ok(with_leader(state, leader));
    }
    let Some(leader) = unclean_candidate(state, eligible) else {
        return Err(election_error(
            ResponseError::EligibleLeadersNotAvailable,
            "no replica of the partition is unfenced".to_string(),
        ));
    };
    warn_unclean(topic, index, leader, state);
    Ok(PartitionState {
        isr: vec![leader],
        ..with_leader(state, leader)
    })
}

/// Whether the topic allows out-of-sync leaders: its override, else the broker default.
pub fn unclean_allowed(topic: &TopicImage, unclean_default: bool) -> bool {
    topic
        .configs
        .get(UNCLEAN_CONFIG)
        .and_then(|v| v.parse().ok())
        .unwrap_or(unclean_default)
}

/// `state` led by `leader`: a new leader epoch and partition epoch.
pub fn with_leader(state: &PartitionState, leader: BrokerId) -> PartitionState {
    PartitionState {
        leader,
        leader_epoch: state.leader_epoch.saturating_add(1),
        partition_epoch: state.partition_epoch.saturating_add(1),
        ..state.clone()
    }
}

/// The `ChangePartition` record of partition `index` of `topic`.
pub fn change(topic: &TopicImage, index: usize, state: PartitionState) -> MetadataRecord {
    MetadataRecord::ChangePartition {
        topic_id: topic.id,
        partition: i32::try_from(index).unwrap_or(i32::MAX),
        state,
    }
}

/// The first ISR member, in replica order, that `eligible` accepts; during a reassignment a
/// replica being removed only if no other can lead (it is in sync, so it holds every
/// acknowledged record: an offline partition would be worse, and completing the reassignment
/// moves leadership to a target replica).
pub fn clean_candidate(
    state: &PartitionState,
    eligible: impl Fn(BrokerId) -> bool,
) -> Option<BrokerId> {
    let in_sync = |b: &BrokerId| state.isr.contains(b) && eligible(*b);
    let staying = state
        .replicas
        .iter()
        .copied()
        .filter(|b| !state.removing_replicas.contains(b))
        .find(in_sync);
    staying.or_else(|| state.replicas.iter().copied().find(in_sync))
}

/// The first replica out of the ISR that `eligible` accepts.
fn unclean_candidate(
    state: &PartitionState,
    eligible: impl Fn(BrokerId) -> bool,
) -> Option<BrokerId> {
    state
        .replicas
        .iter()
        .copied()
        .find(|b| !state.isr.contains(b) && eligible(*b))
}

/// The controller does not know the replicas' log ends: the warning names who held the
/// records, whatever the elected replica lacks of them is gone.
fn warn_unclean(topic: &TopicImage, index: usize, leader: BrokerId, state: &PartitionState) {
    tracing::warn!(
        topic = %topic.name,
        partition = index,
        leader,
        last_isr = ?state.isr,
        "unclean leader election: an out-of-sync replica leads {}-{index}; records past its \
         log end (held only by the last in-sync replicas {:?}) may be lost",
        topic.name,
        state.isr,
    );
}

fn election_error(error: ResponseError, message: String) -> AdminError {
    AdminError {
        code: error.code(),
        message,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::placement::tests::{apply, image_with};

    fn state(replicas: &[BrokerId], isr: &[BrokerId], leader: BrokerId) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 5,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    fn with_topic(mut image: MetadataImage, partitions: Vec<PartitionState>) -> MetadataImage {
        apply(
            &mut image,
            vec![MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id: uuid::Uuid::new_v4(),
                configs: BTreeMap::new(),
                partitions,
            }],
        );
        image
    }

    #[test]
    fn fencing_moves_leadership_to_the_rest_of_the_isr() {
        let image = with_topic(
            image_with(&[(1, None), (2, None), (3, None)]),
            vec![state(&[1, 2, 3], &[1, 2, 3], 1), state(&[2, 1], &[2, 1], 2)],
        );
        let mut after = image.clone();
        apply(&mut after, fence(&image, 1, false));
        assert!(!after.is_unfenced(1));
        let p0 = after.partition("t", 0).unwrap();
        assert_eq!((p0.leader, p0.isr.clone()), (2, vec![2, 3]));
        assert_eq!((p0.leader_epoch, p0.partition_epoch), (4, 6));
        // A follower leaves the ISR; the leader stays, and so does its epoch.
        let p1 = after.partition("t", 1).unwrap();
        assert_eq!((p1.leader, p1.isr.clone()), (2, vec![2]));
        assert_eq!((p1.leader_epoch, p1.partition_epoch), (3, 6));
        // Fencing again does nothing.
        assert!(fence(&after, 1, false).is_empty());
        assert!(fence(&after, 42, false).is_empty());
    }

    #[test]
    fn fencing_the_only_replica_takes_the_partition_offline_and_its_return_elects_it() {
        let image = with_topic(
            image_with(&[(1, None), (2, None)]),
            vec![state(&[1], &[1], 1), state(&[2], &[2], 2)],
        );
        let mut after = image.clone();
        apply(&mut after, fence(&image, 1, false));
        let p0 = after.partition("t", 0).unwrap().clone();
        assert_eq!((p0.leader, p0.isr.clone()), (NO_LEADER, vec![1]));
        assert_eq!((p0.leader_epoch, p0.partition_epoch), (4, 6));
        assert_eq!(after.partition("t", 1).unwrap().leader, 2, "untouched");

        apply(
            &mut after,
            vec![MetadataRecord::UnfenceBroker { broker_id: 1 }],
        );
        let elected = elect_leaderless(&after, false);
        apply(&mut after, elected);
        let p0 = after.partition("t", 0).unwrap();
        assert_eq!(p0.leader, 1);
        assert_eq!((p0.leader_epoch, p0.partition_epoch), (5, 7));
        assert!(
            elect_leaderless(&after, false).is_empty(),
            "nothing left to elect"
        );
    }

    #[test]
    fn a_leader_whose_isr_peers_are_fenced_leaves_the_partition_offline() {
        let mut image = with_topic(
            image_with(&[(1, None), (2, None)]),
            vec![state(&[1, 2], &[1, 2], 1)],
        );
        let fence2 = fence(&image, 2, false);
        apply(&mut image, fence2);
        // 2 left the ISR when it was fenced: 1 is alone.
        assert_eq!(image.partition("t", 0).unwrap().isr, vec![1]);
        let fence1 = fence(&image, 1, false);
        apply(&mut image, fence1);
        let p = image.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]));
    }

    #[test]
    fn unclean_elections_take_an_out_of_sync_replica_only_when_allowed() {
        // 1 is the last in-sync replica; 2 and 3 fell out of sync.
        let image = with_topic(
            image_with(&[(1, None), (2, None), (3, None)]),
            vec![state(&[1, 2, 3], &[1], 1)],
        );
        let mut clean = image.clone();
        apply(&mut clean, fence(&image, 1, false));
        let p = clean.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]));
        assert!(elect_leaderless(&clean, false).is_empty(), "waits for 1");

        // The broker default allows it: 2 leads alone at once.
        let mut unclean = image.clone();
        apply(&mut unclean, fence(&image, 1, true));
        let p = unclean.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (4, 6));

        // A topic override turns it on for a partition already offline.
        let topic = clean.topic("t").unwrap().clone();
        let mut configs = BTreeMap::new();
        configs.insert(UNCLEAN_CONFIG.to_string(), "true".to_string());
        apply(
            &mut clean,
            vec![MetadataRecord::SetTopicConfigs {
                topic_id: topic.id,
                configs,
            }],
        );
        let elected = elect_leaderless(&clean, false);
        apply(&mut clean, elected);
        let p = clean.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    }

    #[test]
    fn preferred_and_unclean_elections_of_one_partition() {
        let image = with_topic(
            image_with(&[(1, None), (2, None), (3, None)]),
            vec![
                state(&[1, 2, 3], &[1, 2, 3], 2),
                state(&[1, 2, 3], &[2, 3], 2),
                state(&[1, 2], &[1, 2], 1),
                state(&[3, 2], &[3], NO_LEADER),
            ],
        );
        let topic = image.topic("t").unwrap().clone();
        let code = |r: Result<PartitionState, AdminError>| r.map_err(|e| e.code);
        let moved = elect_preferred(&image, &topic.partitions[0]).unwrap();
        assert_eq!((moved.leader, moved.isr.clone()), (1, vec![1, 2, 3]));
        assert_eq!((moved.leader_epoch, moved.partition_epoch), (4, 6));
        assert_eq!(
            code(elect_preferred(&image, &topic.partitions[1])),
            Err(ResponseError::PreferredLeaderNotAvailable.code())
        );
        assert_eq!(
            code(elect_preferred(&image, &topic.partitions[2])),
            Err(ResponseError::ElectionNotNeeded.code())
        );
        assert_eq!(
            code(elect_unclean(&image, &topic, 0, &topic.partitions[0])),
            Err(ResponseError::ElectionNotNeeded.code())
        );
        // 3 is in sync and unfenced: a clean election, even when asked for an unclean one.
        let clean = elect_unclean(&image, &topic, 3, &topic.partitions[3]).unwrap();
        assert_eq!((clean.leader, clean.isr.clone()), (3, vec![3]));
        let mut fenced = image.clone();
        apply(
            &mut fenced,
            vec![MetadataRecord::FenceBroker { broker_id: 3 }],
        );
        let unclean = elect_unclean(&fenced, &topic, 3, &topic.partitions[3]).unwrap();
        assert_eq!((unclean.leader, unclean.isr.clone()), (2, vec![2]));
        apply(
            &mut fenced,
            vec![MetadataRecord::FenceBroker { broker_id: 2 }],
        );
        assert_eq!(
            code(elect_unclean(&fenced, &topic, 3, &topic.partitions[3])),
            Err(ResponseError::EligibleLeadersNotAvailable.code())
        );
    }
}
