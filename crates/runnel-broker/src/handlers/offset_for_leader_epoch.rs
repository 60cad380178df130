//! OffsetForLeaderEpoch (key 23), v2–4 (the codec's range; Kafka 4 dropped v0–1): the end
//! offset of a leader epoch in this leader's log (its leader-epoch cache: the start of the next
//! higher epoch, or the log end for the current one), KIP-101/KIP-320. Followers and consumers
//! validating a fetch position ask it; only the leader answers (NOT_LEADER_OR_FOLLOWER
//! elsewhere), after checking `current_leader_epoch`.

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::replication::manager::check_leader_epoch;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> Result<OffsetForLeaderEpochResponse, BrokerError> {
    let image = broker.metadata.image();
    let mut topics = Vec::with_capacity(request.topics.len().min(1024));
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len().min(1024));
        for p in topic.partitions {
            let response = EpochEndOffset::default().with_partition(p.partition);
            let found = end_offset(broker, &image, &topic.topic, &p).await;
            partitions.push(match found {
                Ok((epoch, end_offset)) => response
                    .with_leader_epoch(epoch)
                    .with_end_offset(end_offset),
                Err(error) => response
                    .with_error_code(error.code())
                    .with_leader_epoch(-1)
                    .with_end_offset(-1),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    Ok(OffsetForLeaderEpochResponse::default().with_topics(topics))
}

/// (epoch, end offset) of `p.leader_epoch` in the log of the partition this node leads.
async fn end_offset(
    broker: &Broker,
    image: &crate::metadata::MetadataImage,
    name: &str,
    p: &kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition,
) -> Result<(i32, i64), BrokerError> {
    let (_, partition) = broker.led_partition(image, name, p.partition)?;
    let current = image
        .topic(name)
        .and_then(|t| t.partition(p.partition))
        .map_or(-1, |s| s.leader_epoch);
    check_leader_epoch(p.current_leader_epoch, current)?;
    let log = partition.log().await?;
    let replicas = Arc::clone(&broker.replicas);
    let requested = p.leader_epoch;
    tokio::task::spawn_blocking(move || {
        // The leadership's epoch is in the cache once its state exists.
        replicas.prepare_leader_append(&partition, &log)?;
        Ok(log.end_offset_for_epoch(requested))
    })
    .await?
}
