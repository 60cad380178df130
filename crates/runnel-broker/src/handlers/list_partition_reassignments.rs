//! ListPartitionReassignments (key 46), v0 (KIP-455): the reassignments in progress — every
//! one, or those of the named partitions — with their replicas (the union of target and
//! original), adding and removing replicas, read from this node's metadata image. A named
//! partition that exists but is not being reassigned is left out, as Kafka does; an unknown
//! one fails the request with UNKNOWN_TOPIC_OR_PARTITION.

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
    Ok(match ongoing(&image, &request) {
        Ok(topics) => ListPartitionReassignmentsResponse::default().with_topics(topics),
        Err(error) => ListPartitionReassignmentsResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(error.to_string()))),
    })
}

/// The reassignments in progress among the partitions asked for (all when the list is null),
/// by topic.
fn ongoing(
    image: &MetadataImage,
    request: &ListPartitionReassignmentsRequest,
) -> Result<Vec<OngoingTopicReassignment>, BrokerError> {
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
                    let state = image.partition(&asked.name, *index).ok_or_else(|| {
                        BrokerError::UnknownTopicOrPartition(format!("{}-{index}", &*asked.name))
                    })?;
                    if state.is_reassigning() {
                        found.push((asked.name.to_string(), describe(*index, state)));
                    }
                }
            }
        }
    }
    Ok(group_by_topic(found.into_iter())
        .into_iter()
        .map(|(name, partitions)| {
            OngoingTopicReassignment::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect())
}

fn describe(index: i32, state: &PartitionState) -> OngoingPartitionReassignment {
    let ids = |brokers: &[i32]| brokers.iter().copied().map(BrokerId).collect();
    OngoingPartitionReassignment::default()
        .with_partition_index(index)
        .with_replicas(ids(&state.replicas))
        .with_adding_replicas(ids(&state.adding_replicas))
        .with_removing_replicas(ids(&state.removing_replicas))
}
