//! ListOffsets (key 2), v1–8: the earliest (-2) and latest (-1) offsets of partitions.
//!
//! Lookups by timestamp need the time index, which does not exist yet; until it does they are
//! answered with UNSUPPORTED_FOR_MESSAGE_FORMAT (Kafka's answer for a log that cannot look up
//! timestamps) rather than with a guess.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;

/// The special timestamps of ListOffsets.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: ListOffsetsRequest,
) -> Result<ListOffsetsResponse, BrokerError> {
    let topics = request
        .topics
        .into_iter()
        .map(|list_topic| {
            let topic = broker.topics.get(&list_topic.name);
            let partitions = list_topic
                .partitions
                .into_iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_leader_epoch(-1);
                    let offset = topic
                        .as_ref()
                        .and_then(|t| t.partition(p.partition_index))
                        .ok_or_else(|| {
                            BrokerError::UnknownTopicOrPartition(format!(
                                "{}-{}",
                                list_topic.name.0, p.partition_index
                            ))
                        })
                        .and_then(|partition| match p.timestamp {
                            EARLIEST_TIMESTAMP => Ok(partition.log.log_start_offset()),
                            LATEST_TIMESTAMP => Ok(partition.high_watermark()),
                            _ => Err(BrokerError::TimestampLookupUnsupported),
                        });
                    match offset {
                        Ok(offset) => response.with_offset(offset),
                        Err(error) => response.with_error_code(error.code()).with_offset(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(list_topic.name)
                .with_partitions(partitions)
        })
        .collect();
    Ok(ListOffsetsResponse::default().with_topics(topics))
}
