//! CreateTopics (key 19), v2–7: carried out by the controller (partition count, replication
//! factor, placement, config validation, `validate_only`) and answered once committed and this
//! node's logs follow it. A name given twice in one request is INVALID_REQUEST for both, as in
//! Kafka; a null config value is INVALID_CONFIG.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::requests::NewTopic;
use crate::metadata::ControllerRequest;
use crate::topic_config::TopicConfig;

/// `config_source` values of Kafka's DescribeConfigs, reused by CreateTopics v5+.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: CreateTopicsRequest,
) -> Result<CreateTopicsResponse, BrokerError> {
    let mut seen = BTreeSet::new();
    let duplicates: BTreeSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.to_string()))
        .map(|t| t.name.to_string())
        .collect();
    // Per topic: the checked request, or the error it gets without asking the controller.
    let checked: Vec<(CreatableTopic, Result<NewTopic, BrokerError>)> = request
        .topics
        .into_iter()
        .map(|creatable| {
            let new_topic = if duplicates.contains(creatable.name.as_str()) {
                Err(BrokerError::InvalidRequest(format!(
                    "topic '{}' is given more than once",
                    creatable.name.0
                )))
            } else {
                new_topic(&creatable)
            };
            (creatable, new_topic)
        })
        .collect();
    let to_submit: Vec<NewTopic> = checked
        .iter()
        .filter_map(|(_, t)| t.as_ref().ok().cloned())
        .collect();
    let mut outcomes = if to_submit.is_empty() {
        Ok(Vec::new().into_iter())
    } else {
        broker
            .submit_topics(ControllerRequest::CreateTopics {
                topics: to_submit,
                validate_only: request.validate_only,
            })
            .await
            .map(Vec::into_iter)
    };
    let image = broker.metadata.image();
    let mut results = Vec::with_capacity(checked.len());
    for (creatable, new_topic) in checked {
        let name = creatable.name.clone();
        let result = CreatableTopicResult::default().with_name(name.clone());
        let created = new_topic.and_then(|new_topic| match &mut outcomes {
            Err(error) => Err(BrokerError::ControllerUnavailable(error.to_string())),
            Ok(outcomes) => match outcomes.next() {
                Some(outcome) => match outcome.error {
                    Some(error) => Err(BrokerError::from(error)),
                    None => Ok((new_topic, outcome.topic_id)),
                },
                None => Err(BrokerError::ControllerUnavailable(
                    "the controller answered fewer topics than asked".into(),
                )),
            },
        });
        results.push(match created {
            Ok((new_topic, topic_id)) => {
                let created = image
                    .topic(&new_topic.name)
                    .filter(|_| !request.validate_only);
                let overrides = created.map_or(new_topic.configs, |t| t.configs.clone());
                let configs = TopicConfig::new(overrides)
                    .unwrap_or_default()
                    .effective(&broker.config)
                    .into_iter()
                    .map(|(config_name, value, overridden)| {
                        CreatableTopicConfigs::default()
                            .with_name(config_name.into())
                            .with_value(value.map(Into::into))
                            .with_config_source(if overridden {
                                SOURCE_DYNAMIC_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            })
                    })
                    .collect();
                let (partitions, replication_factor) = match created {
                    Some(topic) => (
                        topic.partition_count(),
                        topic
                            .partition(0)
                            .map_or(-1, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX)),
                    ),
                    None => (-1, -1),
                };
                result
                    .with_topic_id(topic_id)
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor)
                    .with_configs(Some(configs))
            }
            Err(error) => {
                tracing::debug!(topic = %name.0, %error, "create topic refused");
                result
                    .with_error_code(error.code())
                    .with_error_message(Some(error.to_string().into()))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            }
        });
    }
    Ok(CreateTopicsResponse::default().with_topics(results))
}

/// The controller's form of one topic of the request; checks what needs no image.
fn new_topic(creatable: &CreatableTopic) -> Result<NewTopic, BrokerError> {
    let mut configs = BTreeMap::new();
    for config in &creatable.configs {
        let value = config.value.as_ref().ok_or_else(|| {
            BrokerError::InvalidConfig(format!("null value for '{}'", config.name))
        })?;
        configs.insert(config.name.to_string(), value.to_string());
    }
    let (partitions, replication_factor, assignment) = if creatable.assignments.is_empty() {
        (creatable.num_partitions, creatable.replication_factor, None)
    } else {
        let mut assignments: Vec<_> = creatable.assignments.iter().collect();
        assignments.sort_by_key(|a| a.partition_index);
        let expected: Vec<i32> = (0..).take(assignments.len()).collect();
        if assignments.iter().map(|a| a.partition_index).ne(expected) {
            return Err(BrokerError::InvalidReplicaAssignment(
                "partition indexes must be 0, 1, 2, … without gaps".into(),
            ));
        }
        let replicas = assignments
            .iter()
            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
            .collect();
        (-1, -1, Some(replicas))
    };
    Ok(NewTopic {
        name: creatable.name.to_string(),
        partitions,
        replication_factor,
        assignment,
        configs,
        topic_id: None,
    })
}
