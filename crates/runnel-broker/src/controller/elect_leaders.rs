//! ElectLeaders (key 43) as the controller decides it, and the periodic preferred-leader
//! check of `auto.leader.rebalance.enable` (the same PREFERRED election over every
//! partition). Pure: the image in, `ChangePartition` records and per-partition outcomes out.

use kafka_protocol::error::ResponseError;

use super::elections::{change, elect_preferred, elect_unclean};
use crate::metadata::records::{MetadataBatch, MetadataRecord};
use crate::metadata::requests::{AdminError, ElectionOutcome, ElectionType};
use crate::metadata::MetadataImage;

/// The records and outcomes of an election of `election_type` over `partitions` (topic name →
/// indexes; `None`: every partition, and then the partitions that need no election are left
/// out of the outcomes, as Kafka does). A partition named twice is decided on the state the
/// first left.
pub fn decide_elections(
    image: &MetadataImage,
    election_type: ElectionType,
    partitions: Option<&[(String, Vec<i32>)]>,
) -> (Vec<MetadataRecord>, Vec<ElectionOutcome>) {
    let everything;
    let (targets, all) = match partitions {
        Some(named) => (named, false),
        None => {
            everything = every_partition(image);
            (everything.as_slice(), true)
        }
    };
    let mut scratch = image.clone();
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    for (name, indexes) in targets {
        for index in indexes {
            let decided = elect_one(&scratch, election_type, name, *index);
            let error = match decided {
                Ok(record) => {
                    let next = scratch.applied_index;
                    scratch.apply(
                        next,
                        &MetadataBatch {
                            records: vec![record.clone()],
                            ..MetadataBatch::default()
                        },
                    );
                    records.push(record);
                    None
                }
                Err(error) => Some(error),
            };
            let not_needed = error
                .as_ref()
                .is_some_and(|e| e.code == ResponseError::ElectionNotNeeded.code());
            if all && not_needed {
                continue;
            }
            outcomes.push(ElectionOutcome {
                topic: name.clone(),
                partition: *index,
                error,
            });
        }
    }
    (records, outcomes)
}

/// The records moving leadership back to every in-sync, unfenced preferred replica that does
/// not lead (`auto.leader.rebalance.enable`).
pub fn preferred_leader_moves(image: &MetadataImage) -> Vec<MetadataRecord> {
    decide_elections(image, ElectionType::Preferred, None).0
}

fn elect_one(
    image: &MetadataImage,
    election_type: ElectionType,
    name: &str,
    index: i32,
) -> Result<MetadataRecord, AdminError> {
    let unknown = || AdminError {
        code: ResponseError::UnknownTopicOrPartition.code(),
        message: format!("unknown topic or partition {name}-{index}"),
    };
    let topic = image.topic(name).ok_or_else(unknown)?;
    let position = usize::try_from(index).map_err(|_| unknown())?;
    let state = topic.partitions.get(position).ok_or_else(unknown)?;
    let next = match election_type {
        ElectionType::Preferred => elect_preferred(image, state)?,
        ElectionType::Unclean => elect_unclean(image, topic, position, state)?,
    };
    Ok(change(topic, position, next))
}

fn every_partition(image: &MetadataImage) -> Vec<(String, Vec<i32>)> {
    image
        .topics
        .values()
        .map(|topic| (topic.name.clone(), (0..topic.partition_count()).collect()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::placement::tests::image_with;
    use crate::metadata::records::{PartitionState, NO_LEADER};

    fn state(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    fn image() -> MetadataImage {
        let mut image = image_with(&[(1, None), (2, None), (3, None)]);
        image.apply(
            2,
            &MetadataBatch {
                records: vec![
                    MetadataRecord::FenceBroker { broker_id: 3 },
                    MetadataRecord::CreateTopic {
                        name: "t".into(),
                        topic_id: uuid::Uuid::new_v4(),
                        configs: BTreeMap::new(),
                        partitions: vec![
                            state(&[1, 2], &[1, 2], 2),
                            state(&[2, 1], &[2, 1], 2),
                            state(&[3, 1], &[1], 1),
                            state(&[3, 2], &[3], NO_LEADER),
                        ],
                    },
                ],
                ..MetadataBatch::default()
            },
        );
        image
    }

    fn codes(outcomes: &[ElectionOutcome]) -> Vec<(i32, Option<i16>)> {
        outcomes
            .iter()
            .map(|o| (o.partition, o.error.as_ref().map(|e| e.code)))
            .collect()
    }

    #[test]
    fn preferred_elections_name_every_partition_asked_for() {
        let image = image();
        let asked = vec![
            ("t".to_string(), vec![0, 1, 2, 0, 9]),
            ("nope".to_string(), vec![0]),
        ];
        let (records, outcomes) =
            decide_elections(&image, ElectionType::Preferred, Some(asked.as_slice()));
        assert_eq!(records.len(), 1);
        assert_eq!(
            codes(&outcomes),
            vec![
                (0, None),
                (1, Some(ResponseError::ElectionNotNeeded.code())),
                (2, Some(ResponseError::PreferredLeaderNotAvailable.code())),
                (0, Some(ResponseError::ElectionNotNeeded.code())),
                (9, Some(ResponseError::UnknownTopicOrPartition.code())),
                (0, Some(ResponseError::UnknownTopicOrPartition.code())),
            ]
        );
    }

    #[test]
    fn all_partitions_leave_out_those_needing_no_election() {
        let image = image();
        let (records, outcomes) = decide_elections(&image, ElectionType::Preferred, None);
        assert_eq!(records.len(), 1);
        assert_eq!(
            codes(&outcomes),
            vec![
                (0, None),
                (2, Some(ResponseError::PreferredLeaderNotAvailable.code())),
                (3, Some(ResponseError::PreferredLeaderNotAvailable.code())),
            ]
        );
        assert_eq!(preferred_leader_moves(&image), records);
        let (records, outcomes) = decide_elections(&image, ElectionType::Unclean, None);
        assert_eq!(codes(&outcomes), vec![(3, None)]);
        let MetadataRecord::ChangePartition { state, .. } = &records[0] else {
            panic!("an election is a partition change: {records:?}");
        };
        assert_eq!(
            (state.leader, state.isr.clone()),
            (2, vec![2]),
            "3 is fenced"
        );
    }
}
