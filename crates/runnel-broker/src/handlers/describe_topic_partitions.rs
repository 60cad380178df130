//! DescribeTopicPartitions (key 75), v0 (KIP-966): the requested topics (all when the list is
//! empty), sorted by name, with each partition's leader, leader epoch, replicas, ISR and
//! offline replicas from the metadata image, as Metadata reports them. At most
//! `response_partition_limit` partitions (capped at [`PARTITION_LIMIT_MAX`]) are returned;
//! `next_cursor` then names the first partition left out, and a request with that `cursor`
//! continues there. An unknown requested topic gets UNKNOWN_TOPIC_OR_PARTITION; a cursor on a
//! topic that is not requested is INVALID_REQUEST.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::{MetadataImage, TopicImage, NO_LEADER};
use crate::topics::is_internal_name;

/// Kafka's `max.request.partition.size.limit` default: partitions per response at most.
const PARTITION_LIMIT_MAX: i32 = 2000;
/// "Authorized operations not requested" in Kafka's encoding.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: DescribeTopicPartitionsRequest,
) -> Result<DescribeTopicPartitionsResponse, BrokerError> {
    let image = broker.metadata.image();
    describe(&image, &request)
}

fn describe(
    image: &MetadataImage,
    request: &DescribeTopicPartitionsRequest,
) -> Result<DescribeTopicPartitionsResponse, BrokerError> {
    let (cursor_topic, cursor_partition) = match &request.cursor {
        Some(cursor) => (
            Some(cursor.topic_name.to_string()),
            cursor.partition_index.max(0),
        ),
        None => (None, 0),
    };
    let mut names: Vec<String> = if request.topics.is_empty() {
        image.topic_ids.keys().cloned().collect()
    } else {
        request.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort();
    names.dedup();
    if let Some(cursor) = &cursor_topic {
        if !names.contains(cursor) {
            return Err(BrokerError::InvalidRequest(format!(
                "the cursor names topic '{cursor}', which is not requested"
            )));
        }
        names.retain(|name| name >= cursor);
    }
    let mut budget = request
        .response_partition_limit
        .clamp(1, PARTITION_LIMIT_MAX);
    let mut topics = Vec::with_capacity(names.len());
    let mut next_cursor = None;
    for name in names {
        let Some(topic) = image.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(cursor_at(&name, 0));
            break;
        }
        let first = if cursor_topic.as_deref() == Some(name.as_str()) {
            cursor_partition
        } else {
            0
        };
        let mut partitions = Vec::new();
        let mut index = first;
        while index < topic.partition_count() {
            if budget == 0 {
                next_cursor = Some(cursor_at(&name, index));
                break;
            }
            partitions.push(partition(image, topic, index));
            budget -= 1;
            index += 1;
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name))))
                .with_topic_id(topic.id)
                .with_is_internal(is_internal_name(&topic.name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    Ok(DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor))
}

fn cursor_at(topic: &str, partition: i32) -> Cursor {
    Cursor::default()
        .with_topic_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_index(partition)
}

fn partition(
    image: &MetadataImage,
    topic: &TopicImage,
    index: i32,
) -> DescribeTopicPartitionsResponsePartition {
    let ids = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let described = DescribeTopicPartitionsResponsePartition::default().with_partition_index(index);
    let Some(state) = topic.partition(index) else {
        return described.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let offline: Vec<i32> = state
        .replicas
        .iter()
        .copied()
        .filter(|r| !image.is_unfenced(*r))
        .collect();
    let error = if state.leader == NO_LEADER {
        ResponseError::LeaderNotAvailable.code()
    } else {
        0
    };
    described
        .with_error_code(error)
        .with_leader_id(BrokerId(state.leader))
        .with_leader_epoch(state.leader_epoch)
        .with_replica_nodes(ids(&state.replicas))
        .with_isr_nodes(ids(&state.isr))
        .with_offline_replicas(ids(&offline))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use kafka_protocol::messages::describe_topic_partitions_request::{
        Cursor as RequestCursor, TopicRequest,
    };

    use super::*;
    use crate::broker::testing;

    fn name(n: &str) -> TopicName {
        TopicName(StrBytes::from_string(n.to_string()))
    }

    /// (topic, partition indexes, error) per topic.
    type Topics = Vec<(String, Vec<i32>, i16)>;

    /// The topics of a response, and its next cursor.
    fn summary(response: &DescribeTopicPartitionsResponse) -> (Topics, Option<(String, i32)>) {
        (
            response
                .topics
                .iter()
                .map(|t| {
                    (
                        t.name.as_ref().unwrap().to_string(),
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                        t.error_code,
                    )
                })
                .collect(),
            response
                .next_cursor
                .as_ref()
                .map(|c| (c.topic_name.to_string(), c.partition_index)),
        )
    }

    #[test]
    fn pages_through_topics_and_partitions_in_name_order() {
        let p = |leader| testing::partition(&[leader], leader);
        let image = testing::image(
            &[0, 1],
            &[("b", vec![p(0), p(1), p(0)]), ("a", vec![p(1), p(0)])],
        );
        let all = DescribeTopicPartitionsRequest::default().with_response_partition_limit(3);
        let first = describe(&image, &all).unwrap();
        assert_eq!(
            summary(&first),
            (
                vec![("a".into(), vec![0, 1], 0), ("b".into(), vec![0], 0)],
                Some(("b".into(), 1))
            )
        );
        assert_eq!(first.topics[0].partitions[0].leader_id, BrokerId(1));
        assert_eq!(first.topics[0].partitions[0].leader_epoch, 3);

        let next = all.clone().with_cursor(Some(
            RequestCursor::default()
                .with_topic_name(name("b"))
                .with_partition_index(1),
        ));
        assert_eq!(
            summary(&describe(&image, &next).unwrap()),
            (vec![("b".into(), vec![1, 2], 0)], None)
        );

        let named = DescribeTopicPartitionsRequest::default()
            .with_response_partition_limit(10)
            .with_topics(vec![
                TopicRequest::default().with_name(name("zz")),
                TopicRequest::default().with_name(name("a")),
            ]);
        assert_eq!(
            summary(&describe(&image, &named).unwrap()),
            (
                vec![
                    ("a".into(), vec![0, 1], 0),
                    (
                        "zz".into(),
                        vec![],
                        ResponseError::UnknownTopicOrPartition.code()
                    )
                ],
                None
            )
        );
        let stray_cursor =
            named.with_cursor(Some(RequestCursor::default().with_topic_name(name("b"))));
        assert!(matches!(
            describe(&image, &stray_cursor),
            Err(BrokerError::InvalidRequest(_))
        ));
    }
}
