//! Metadata (key 3), v0–13: this broker, and the requested topics (all when the list is null)
//! with their partitions, all led by this node except offline ones (LEADER_NOT_AVAILABLE,
//! leader -1). Unknown topics are auto-created when
//! `auto.create.topics.enable` is on and the request allows it (always before v4).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topics::{validate_topic_name, Topic};

/// Metadata v4 added `allow_auto_topic_creation`; earlier versions always allow it.
const AUTO_CREATE_FLAG_VERSION: i16 = 4;
/// "Authorized operations not requested" in Kafka's encoding.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: MetadataRequest,
) -> Result<MetadataResponse, BrokerError> {
    let allow_auto_create =
        context.api_version < AUTO_CREATE_FLAG_VERSION || request.allow_auto_topic_creation;
    let topics = match request.topics {
        // v0 has no null: an empty list means "all topics" there.
        None => all_topics(broker),
        Some(requested) if requested.is_empty() && context.api_version == 0 => all_topics(broker),
        Some(requested) => {
            let mut topics = Vec::with_capacity(requested.len().min(1024));
            for requested_topic in requested {
                topics.push(match requested_topic.name {
                    Some(name) => by_name(broker, name, allow_auto_create).await,
                    None => match broker.topics.get_by_id(requested_topic.topic_id) {
                        Some(topic) => describe(broker, &topic),
                        None => MetadataResponseTopic::default()
                            .with_topic_id(requested_topic.topic_id)
                            .with_error_code(ResponseError::UnknownTopicId.code()),
                    },
                });
            }
            topics
        }
    };
    let node_id = BrokerId(broker.config.node_id);
    Ok(MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node_id)
            .with_host(broker.config.advertise_host.clone().into())
            .with_port(broker.config.advertise_port)])
        .with_cluster_id(Some(broker.cluster_id.clone().into()))
        .with_controller_id(node_id)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        .with_topics(topics))
}

fn all_topics(broker: &Broker) -> Vec<MetadataResponseTopic> {
    broker
        .topics
        .all()
        .iter()
        .map(|t| describe(broker, t))
        .collect()
}

async fn by_name(
    broker: &Broker,
    name: TopicName,
    allow_auto_create: bool,
) -> MetadataResponseTopic {
    let error_topic = |error: BrokerError| {
        MetadataResponseTopic::default()
            .with_name(Some(name.clone()))
            .with_error_code(error.code())
    };
    if let Some(topic) = broker.topics.get(&name) {
        return describe(broker, &topic);
    }
    if let Err(error) = validate_topic_name(&name) {
        return error_topic(error);
    }
    if !allow_auto_create {
        return error_topic(BrokerError::UnknownTopicOrPartition(name.to_string()));
    }
    match broker.auto_create(&name).await {
        Ok(Some(topic)) => describe(broker, &topic),
        Ok(None) => error_topic(BrokerError::UnknownTopicOrPartition(name.to_string())),
        Err(error) => error_topic(error),
    }
}

fn describe(broker: &Broker, topic: &Arc<Topic>) -> MetadataResponseTopic {
    let node_id = BrokerId(broker.config.node_id);
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let described = MetadataResponsePartition::default()
                .with_partition_index(p.index)
                // No leader epochs on a single node: -1 tells clients not to validate by epoch.
                .with_leader_epoch(-1)
                .with_replica_nodes(vec![node_id]);
            if p.is_offline() {
                // As Kafka reports a partition whose only replica is offline: no leader, the
                // replica listed offline and out of the ISR. Clients retry until it is back.
                let error = BrokerError::LeaderNotAvailable {
                    topic: topic.name.clone(),
                    partition: p.index,
                };
                described
                    .with_error_code(error.code())
                    .with_leader_id(BrokerId(-1))
                    .with_isr_nodes(Vec::new())
                    .with_offline_replicas(vec![node_id])
            } else {
                described
                    .with_leader_id(node_id)
                    .with_isr_nodes(vec![node_id])
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(StrBytes::from_string(topic.name.clone()).into()))
        .with_topic_id(topic.id)
        .with_is_internal(topic.is_internal())
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        .with_partitions(partitions)
}
