//! OffsetDelete (key 47), v0: deletes committed offsets of a group, except for topics its
//! members subscribe to while it is active (GROUP_SUBSCRIBED_TO_TOPIC; only `consumer` protocol
//! subscriptions can be read, other protocol types are treated as subscribing to nothing).

use std::collections::BTreeSet;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::{store, GroupError, GroupState};

/// Highest ConsumerProtocolSubscription version the crate decodes.
const SUBSCRIPTION_VERSION_MAX: i16 = 3;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: OffsetDeleteRequest,
) -> Result<OffsetDeleteResponse, BrokerError> {
    let group_id = request.group_id.to_string();
    let (state, protocol_type, metadata) = match broker.groups.member_metadata(&group_id) {
        Ok(found) => found,
        Err(error) => {
            return Ok(
                OffsetDeleteResponse::default().with_error_code(BrokerError::Group(error).code())
            )
        }
    };
    let subscribed: BTreeSet<String> = if state != GroupState::Empty && protocol_type == "consumer"
    {
        metadata.into_iter().flat_map(subscribed_topics).collect()
    } else {
        BTreeSet::new()
    };
    let mut doomed = Vec::new();
    let mut topics = Vec::with_capacity(request.topics.len().min(1024));
    let image = broker.metadata.image();
    for topic in request.topics {
        let partitions = topic
            .partitions
            .into_iter()
            .map(|p| {
                let index = p.partition_index;
                let error = if subscribed.contains(topic.name.as_str()) {
                    Some(BrokerError::Group(GroupError::GroupSubscribedToTopic))
                } else if image.partition(&topic.name, index).is_none() {
                    Some(BrokerError::UnknownTopicOrPartition(format!(
                        "{}-{index}",
                        topic.name.0
                    )))
                } else {
                    doomed.push((topic.name.to_string(), index));
                    None
                };
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(index)
                    .with_error_code(error.map_or(0, |e| e.code()))
            })
            .collect();
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    broker.groups.remove_offsets(&group_id, &doomed);
    if let Err(error) = store::tombstone_offsets(broker, &group_id, &doomed).await {
        return Ok(OffsetDeleteResponse::default().with_error_code(error.code()));
    }
    Ok(OffsetDeleteResponse::default().with_topics(topics))
}

/// Topics of a `consumer` protocol subscription (version-prefixed ConsumerProtocolSubscription);
/// none if it does not decode.
fn subscribed_topics(metadata: Bytes) -> Vec<String> {
    let mut buf = metadata;
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16().clamp(0, SUBSCRIPTION_VERSION_MAX);
    ConsumerProtocolSubscription::decode(&mut buf, version)
        .map(|s| s.topics.into_iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}
