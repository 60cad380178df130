//! DeleteRecords (key 21), v0–2: moves partitions' log start offset (low watermark) forward.
//! Offset -1 means the high watermark. The new start is persisted and whole segments below it
//! are deleted; reads below it get OFFSET_OUT_OF_RANGE. Internal topics (`__consumer_offsets`)
//! are refused with INVALID_TOPIC_EXCEPTION, as in Kafka: their records belong to the broker.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: DeleteRecordsRequest,
) -> Result<DeleteRecordsResponse, BrokerError> {
    let mut topics = Vec::with_capacity(request.topics.len().min(1024));
    let image = broker.metadata.image();
    for delete_topic in request.topics {
        let mut partitions = Vec::with_capacity(delete_topic.partitions.len().min(1024));
        for p in delete_topic.partitions {
            let result = match broker.led_partition(&image, &delete_topic.name, p.partition_index) {
                Err(error) => Err(error),
                Ok((topic, _)) if topic.is_internal() => {
                    Err(BrokerError::InternalTopic(delete_topic.name.to_string()))
                }
                Ok((_, partition)) => match partition.log().await {
                    Err(offline) => Err(offline),
                    Ok(log) => {
                        let log = Arc::clone(&log);
                        let high_watermark = broker.high_watermark(&partition, &log);
                        let offset = if p.offset == -1 {
                            high_watermark
                        } else {
                            p.offset
                        };
                        tokio::task::spawn_blocking(move || {
                            log.delete_records(offset, high_watermark)
                        })
                        .await
                        .map_err(BrokerError::from)
                        .and_then(|r| r.map_err(BrokerError::from))
                    }
                },
            };
            let response =
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            partitions.push(match result {
                Ok(low_watermark) => response.with_low_watermark(low_watermark),
                Err(error) => response
                    .with_low_watermark(-1)
                    .with_error_code(error.code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(delete_topic.name)
                .with_partitions(partitions),
        );
    }
    Ok(DeleteRecordsResponse::default().with_topics(topics))
}
