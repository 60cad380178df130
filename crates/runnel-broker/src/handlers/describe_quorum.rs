//! DescribeQuorum (key 55), v0–1: the metadata quorum as this node sees it — the one partition
//! of `__cluster_metadata`, its leader (the active controller), the Raft term as the leader
//! epoch, the committed index as the high watermark, and the voters and observers with their
//! log end offsets (v1 adds their last fetch and catch-up times). A request naming anything
//! else gets UNKNOWN_TOPIC_OR_PARTITION for it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::handle::QuorumReplica;

/// The metadata log's topic, as KRaft names it.
pub(crate) const METADATA_TOPIC: &str = "__cluster_metadata";

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: DescribeQuorumRequest,
) -> Result<DescribeQuorumResponse, BrokerError> {
    let quorum = broker.metadata.quorum();
    let replicas = |replicas: &[QuorumReplica]| -> Vec<ReplicaState> {
        replicas
            .iter()
            .map(|r| {
                ReplicaState::default()
                    .with_replica_id(BrokerId(r.id))
                    .with_log_end_offset(r.log_end_offset)
                    .with_last_fetch_timestamp(r.last_fetch_timestamp)
                    .with_last_caught_up_timestamp(r.last_caught_up_timestamp)
            })
            .collect()
    };
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let is_metadata = topic.topic_name.as_str() == METADATA_TOPIC;
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let data = PartitionData::default().with_partition_index(p.partition_index);
                    if !is_metadata || p.partition_index != 0 {
                        return data
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_leader_id(BrokerId(-1))
                            .with_leader_epoch(-1)
                            .with_high_watermark(-1);
                    }
                    data.with_leader_id(BrokerId(quorum.leader_id.unwrap_or(-1)))
                        .with_leader_epoch(i32::try_from(quorum.leader_epoch).unwrap_or(i32::MAX))
                        .with_high_watermark(quorum.high_watermark)
                        .with_current_voters(replicas(&quorum.voters))
                        .with_observers(replicas(&quorum.observers))
                })
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name)
                .with_partitions(partitions)
        })
        .collect();
    Ok(DescribeQuorumResponse::default().with_topics(topics))
}
