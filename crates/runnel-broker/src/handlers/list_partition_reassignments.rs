//! ListPartitionReassignments (key 46), v0 (KIP-455): the reassignments in progress — every
//! one, or those of the named partitions — with their replicas (the union of target and
//! original), adding and removing replicas, read from this node's metadata image. A named
//! partition that is not being reassigned, or does not exist, is left out, as Kafka's
//! controller does.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::alter_partition_reassignments::group_by_topic;
use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::{MetadataImage, PartitionState};

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: ListPartitionReassignmentsRequest,
) -> Result<ListPartitionReassignmentsResponse, BrokerError> {
    let image = broker.metadata.image();
    Ok(ListPartitionReassignmentsResponse::default().with_topics(ongoing(&image, &request)))
}

/// The reassignments in progress among the partitions asked for (all when the list is null),
/// by topic.
fn ongoing(
    image: &MetadataImage,
    request: &ListPartitionReassignmentsRequest,
) -> Vec<OngoingTopicReassignment> {
    let mut found: Vec<(String, OngoingPartitionReassignment)> = Vec::new();
    match &request.topics {
        None => {
            for topic in image.topic_ids.keys().filter_map(|name| image.topic(name)) {
                for (index, state) in (0..).zip(&topic.partitions) {
                    if state.is_reassigning() {
                        found.push((topic.name.clone(), describe(index, state)));
                    }
                }
            }
        }
        Some(topics) => {
            for asked in topics {
                for index in &asked.partition_indexes {
                    if let Some(state) = image.partition(&asked.name, *index) {
                        if state.is_reassigning() {
                            found.push((asked.name.to_string(), describe(*index, state)));
                        }
                    }
                }
            }
        }
    }
    group_by_topic(found.into_iter())
        .into_iter()
        .map(|(name, partitions)| {
            OngoingTopicReassignment::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect()
}

fn describe(index: i32, state: &PartitionState) -> OngoingPartitionReassignment {
    let ids = |brokers: &[i32]| brokers.iter().copied().map(BrokerId).collect();
    OngoingPartitionReassignment::default()
        .with_partition_index(index)
        .with_replicas(ids(&state.replicas))
        .with_adding_replicas(ids(&state.adding_replicas))
        .with_removing_replicas(ids(&state.removing_replicas))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;

    use super::*;
    use crate::broker::testing;

    fn request(topics: Option<&[(&str, &[i32])]>) -> ListPartitionReassignmentsRequest {
        ListPartitionReassignmentsRequest::default().with_topics(topics.map(|topics| {
            topics
                .iter()
                .map(|(name, indexes)| {
                    ListPartitionReassignmentsTopics::default()
                        .with_name(TopicName(StrBytes::from_string((*name).to_string())))
                        .with_partition_indexes(indexes.to_vec())
                })
                .collect()
        }))
    }

    /// (topic, partition, replicas, adding, removing) of one listed reassignment.
    type Listed = (String, i32, Vec<i32>, Vec<i32>, Vec<i32>);

    /// Every listed reassignment.
    fn shape(topics: &[OngoingTopicReassignment]) -> Vec<Listed> {
        let ids = |b: &[BrokerId]| b.iter().map(|b| b.0).collect::<Vec<_>>();
        topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        ids(&p.replicas),
                        ids(&p.adding_replicas),
                        ids(&p.removing_replicas),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn only_partitions_being_reassigned_are_listed() {
        let moving = PartitionState {
            replicas: vec![2, 3, 1],
            adding_replicas: vec![3],
            removing_replicas: vec![1],
            ..testing::partition(&[1, 2], 1)
        };
        let image = testing::image(
            &[1, 2, 3],
            &[
                ("a", vec![testing::partition(&[1], 1), moving]),
                ("b", vec![testing::partition(&[2], 2)]),
            ],
        );
        let expected = vec![("a".to_string(), 1, vec![2, 3, 1], vec![3], vec![1])];
        assert_eq!(shape(&ongoing(&image, &request(None))), expected);
        let named: &[(&str, &[i32])] = &[("a", &[0, 1, 5]), ("b", &[0]), ("nope", &[0])];
        assert_eq!(shape(&ongoing(&image, &request(Some(named)))), expected);
        let none: &[(&str, &[i32])] = &[("a", &[0])];
        assert!(ongoing(&image, &request(Some(none))).is_empty());
    }
}
