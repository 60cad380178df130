//! Metadata (key 3), v0–13, from the metadata image: every unfenced broker with its endpoint on
//! the listener the request arrived on, the active controller, and the requested topics (all
//! when the list is null) with each partition's leader, leader epoch, replicas, ISR and offline
//! replicas (replicas on fenced brokers). A partition with no leader, or led here by a log that
//! is offline (a storage failure), is LEADER_NOT_AVAILABLE with leader -1. Unknown topics are
//! auto-created (through the controller) when `auto.create.topics.enable` is on and the
//! request allows it (always before v4).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::cluster::live_brokers;
use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::{MetadataImage, TopicImage, NO_LEADER};
use crate::topics::{is_internal_name, validate_topic_name};

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
                    None => {
                        let image = broker.metadata.image();
                        match image.topic_by_id(requested_topic.topic_id) {
                            Some(topic) => describe(broker, &image, topic),
                            None => MetadataResponseTopic::default()
                                .with_topic_id(requested_topic.topic_id)
                                .with_error_code(ResponseError::UnknownTopicId.code()),
                        }
                    }
                });
            }
            topics
        }
    };
    // Read after any auto-creation, so the brokers and controller match the topics.
    let image = broker.metadata.image();
    let brokers = live_brokers(&image, &context.listener)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(b.host.into())
                .with_port(b.port)
                .with_rack(b.rack.map(Into::into))
        })
        .collect();
    Ok(MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(broker.cluster_id.clone().into()))
        .with_controller_id(BrokerId(broker.metadata.controller_id().unwrap_or(-1)))
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        .with_topics(topics))
}

fn all_topics(broker: &Broker) -> Vec<MetadataResponseTopic> {
    let image = broker.metadata.image();
    let mut topics: Vec<&std::sync::Arc<TopicImage>> = image.topics.values().collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    topics
        .into_iter()
        .map(|t| describe(broker, &image, t))
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
    let image = broker.metadata.image();
    if let Some(topic) = image.topic(&name) {
        return describe(broker, &image, topic);
    }
    if let Err(error) = validate_topic_name(&name) {
        return error_topic(error);
    }
    if !allow_auto_create {
        return error_topic(BrokerError::UnknownTopicOrPartition(name.to_string()));
    }
    match broker.auto_create(&name).await {
        Ok(Some(topic)) => describe(broker, &broker.metadata.image(), &topic),
        Ok(None) => error_topic(BrokerError::UnknownTopicOrPartition(name.to_string())),
        // No controller answered: the client retries, as while a new topic has no leader.
        Err(BrokerError::ControllerUnavailable(_) | BrokerError::Controller(_)) => {
            MetadataResponseTopic::default()
                .with_name(Some(name.clone()))
                .with_error_code(ResponseError::LeaderNotAvailable.code())
        }
        Err(error) => error_topic(error),
    }
}

pub(crate) fn describe(
    broker: &Broker,
    image: &MetadataImage,
    topic: &TopicImage,
) -> MetadataResponseTopic {
    let node_id = broker.node_id();
    let local = broker.topics.get(&topic.name).filter(|t| t.id == topic.id);
    let partitions = topic
        .partitions
        .iter()
        .zip(0..)
        .map(|(state, index)| {
            let ids = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
            let mut offline: Vec<i32> = state
                .replicas
                .iter()
                .copied()
                .filter(|r| !image.is_unfenced(*r))
                .collect();
            let described = MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_epoch(state.leader_epoch)
                .with_replica_nodes(ids(&state.replicas));
            let log_offline = state.leader == node_id
                && local
                    .as_ref()
                    .and_then(|t| t.partition(index))
                    .is_some_and(|p| p.is_offline());
            if state.leader == NO_LEADER || log_offline {
                // As Kafka reports a partition whose replicas are all offline: no leader, the
                // replica listed offline and out of the ISR. Clients retry until it is back.
                if log_offline && !offline.contains(&node_id) {
                    offline.push(node_id);
                }
                let isr: Vec<i32> = state
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| !offline.contains(r))
                    .collect();
                let error = BrokerError::LeaderNotAvailable {
                    topic: topic.name.clone(),
                    partition: index,
                };
                described
                    .with_error_code(error.code())
                    .with_leader_id(BrokerId(NO_LEADER))
                    .with_isr_nodes(ids(&isr))
                    .with_offline_replicas(ids(&offline))
            } else {
                described
                    .with_leader_id(BrokerId(state.leader))
                    .with_isr_nodes(ids(&state.isr))
                    .with_offline_replicas(ids(&offline))
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(StrBytes::from_string(topic.name.clone()).into()))
        .with_topic_id(topic.id)
        .with_is_internal(is_internal_name(&topic.name))
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        .with_partitions(partitions)
}
