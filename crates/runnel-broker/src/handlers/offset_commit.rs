//! OffsetCommit (key 8), v2–9: validates the member and generation, writes the offsets to
//! `__consumer_offsets` and answers only once they are fsynced. A simple consumer (generation
//! -1, no member id) may commit to an empty group. Metadata longer than
//! `offset.metadata.max.bytes` gets OFFSET_METADATA_TOO_LARGE for its partition; an offset above
//! the log end is accepted, as Kafka does.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::{store, CommittedOffset, GroupError, Now};

/// A partition's index and the offset to write, or why not.
type PartitionOutcome = (i32, Result<CommittedOffset, BrokerError>);

/// v6 added `committed_leader_epoch`.
const LEADER_EPOCH_VERSION: i16 = 6;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: OffsetCommitRequest,
) -> Result<OffsetCommitResponse, BrokerError> {
    let now = Now::current();
    let group_id = request.group_id.to_string();
    let instance_id = request.group_instance_id.map(|s| s.to_string());
    let validation = broker.groups.validate_commit(
        &group_id,
        &request.member_id,
        instance_id.as_ref(),
        request.generation_id_or_member_epoch,
        now,
    );
    let metadata_max = broker.groups.config().offset_metadata_max_bytes;
    // Per partition: Ok(offset to write) or the error to answer.
    let mut outcomes: Vec<(TopicName, Vec<PartitionOutcome>)> =
        Vec::with_capacity(request.topics.len().min(1024));
    let mut to_write = Vec::new();
    let image = broker.metadata.image();
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len().min(1024));
        for p in topic.partitions {
            let metadata = p
                .committed_metadata
                .map(|m| m.to_string())
                .unwrap_or_default();
            let outcome = match &validation {
                Err(error) => Err(BrokerError::Group(*error)),
                Ok(()) if metadata.len() > metadata_max => {
                    Err(BrokerError::Group(GroupError::OffsetMetadataTooLarge))
                }
                // The partition need not be led here (only the group's coordinator must be).
                Ok(()) if image.partition(&topic.name, p.partition_index).is_none() => {
                    Err(BrokerError::UnknownTopicOrPartition(format!(
                        "{}-{}",
                        topic.name.0, p.partition_index
                    )))
                }
                Ok(()) => Ok(CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: if context.api_version >= LEADER_EPOCH_VERSION {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata,
                    commit_timestamp_ms: now.wall_ms,
                }),
            };
            if let Ok(offset) = &outcome {
                to_write.push(((topic.name.to_string(), p.partition_index), offset.clone()));
            }
            partitions.push((p.partition_index, outcome));
        }
        outcomes.push((topic.name, partitions));
    }
    let written = store::commit_offsets(broker, &group_id, to_write).await;
    if let Err(error) = &written {
        tracing::error!(group = %group_id, %error, "offset commit failed");
    }
    // As Kafka's storeOffsets maps its append errors: a produce error (NOT_ENOUGH_REPLICAS,
    // a timeout) would make a client give up; these make it find its coordinator again.
    let write_error_code = written
        .as_ref()
        .err()
        .map(|error| BrokerError::Group(error.as_group_store_error()).code());
    let topics = outcomes
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, outcome)| {
                            let code = match outcome {
                                Ok(_) => write_error_code.unwrap_or(0),
                                Err(error) => error.code(),
                            };
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(OffsetCommitResponse::default().with_topics(topics))
}
