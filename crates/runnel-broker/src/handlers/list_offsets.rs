//! ListOffsets (key 2), v1–8: the earliest (-2), latest (-1) and max-timestamp (-3, v7+)
//! offsets of partitions, and the first offset whose timestamp is at or after a given one
//! (the time index in storage, refined to the record by the protocol crate's streaming record
//! walk, under the broker's validation slots so that memory stays bounded).

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::log_manager::ProtocolRecordReader;
use crate::replication::manager::check_leader_epoch;

/// The special timestamps of ListOffsets.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: ListOffsetsRequest,
) -> Result<ListOffsetsResponse, BrokerError> {
    let mut topics = Vec::with_capacity(request.topics.len().min(1024));
    let image = broker.metadata.image();
    for list_topic in request.topics {
        let mut partitions = Vec::with_capacity(list_topic.partitions.len().min(1024));
        for p in list_topic.partitions {
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_leader_epoch(-1);
            let leader_epoch = image
                .topic(&list_topic.name)
                .and_then(|t| t.partition(p.partition_index))
                .map_or(-1, |s| s.leader_epoch);
            let partition = broker
                .led_partition(&image, &list_topic.name, p.partition_index)
                .and_then(|(_, partition)| {
                    check_leader_epoch(p.current_leader_epoch, leader_epoch).map(|()| partition)
                });
            let timestamp = p.timestamp;
            let log = match partition {
                Ok(p) => match p.log().await {
                    Ok(log) => Ok((Arc::clone(&p), Arc::clone(&log))),
                    Err(error) => Err(error),
                },
                Err(error) => Err(error),
            };
            let found: Result<(i64, i64), BrokerError> = match log {
                Err(error) => Err(error),
                Ok((partition, log)) => match timestamp {
                    EARLIEST_TIMESTAMP => Ok((log.log_start_offset(), -1)),
                    LATEST_TIMESTAMP => Ok((broker.high_watermark(&partition, &log), -1)),
                    _ => {
                        // Only visible (committed) records are found by timestamp.
                        let high_watermark = broker.high_watermark(&partition, &log);
                        // A lookup may walk a stored batch's records: it takes one of the
                        // slots produce validation takes, so that however many lookups
                        // arrive, at most that many batches are being walked at once.
                        // Never closed, so `None` cannot happen.
                        let slot = Arc::clone(&broker.validation_slots)
                            .acquire_owned()
                            .await
                            .ok();
                        tokio::task::spawn_blocking(move || {
                            let _slot = slot;
                            let found = if timestamp == MAX_TIMESTAMP {
                                log.max_timestamp_offset(&ProtocolRecordReader)?
                            } else {
                                log.offset_for_timestamp(timestamp, &ProtocolRecordReader)?
                            };
                            Ok::<_, BrokerError>(
                                found
                                    .filter(|f| f.offset < high_watermark)
                                    .map_or((-1, -1), |f| (f.offset, f.timestamp)),
                            )
                        })
                        .await
                        .map_err(BrokerError::from)
                        .and_then(|r| r)
                    }
                },
            };
            partitions.push(match found {
                Ok((offset, timestamp)) => response.with_offset(offset).with_timestamp(timestamp),
                Err(error) => response
                    .with_error_code(error.code())
                    .with_offset(-1)
                    .with_timestamp(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(list_topic.name)
                .with_partitions(partitions),
        );
    }
    Ok(ListOffsetsResponse::default().with_topics(topics))
}
