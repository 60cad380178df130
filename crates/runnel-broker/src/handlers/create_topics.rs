//! CreateTopics (key 19), v2–7: partitions, replication factor 1 (single node), validated topic
//! configs, manual assignments naming this node only, and `validate_only`.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topic_config::TopicConfig;
use crate::topics::TopicSpec;

/// `config_source` values of Kafka's DescribeConfigs, reused by CreateTopics v5+.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: CreateTopicsRequest,
) -> Result<CreateTopicsResponse, BrokerError> {
    let mut results = Vec::with_capacity(request.topics.len().min(1024));
    for creatable in request.topics {
        let name = creatable.name.clone();
        let result = CreatableTopicResult::default().with_name(name.clone());
        let created = match spec(broker, creatable) {
            Ok(spec) => broker.topics.create(spec, request.validate_only).await,
            Err(error) => Err(error),
        };
        results.push(match created {
            Ok(topic) => {
                let configs = topic
                    .config
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
                let partitions = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
                result
                    .with_topic_id(topic.id)
                    .with_num_partitions(if request.validate_only {
                        -1
                    } else {
                        partitions
                    })
                    .with_replication_factor(1)
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

/// Applies defaults (-1 partitions / replication factor) and checks what a single node can do.
fn spec(broker: &Broker, creatable: CreatableTopic) -> Result<TopicSpec, BrokerError> {
    let node_id = broker.config.node_id;
    let partitions = if creatable.assignments.is_empty() {
        match creatable.num_partitions {
            -1 => broker.config.num_partitions,
            n => n,
        }
    } else {
        for assignment in &creatable.assignments {
            if assignment.broker_ids.iter().any(|b| b.0 != node_id)
                || assignment.broker_ids.len() != 1
            {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "partition {} must be assigned to node {node_id} only",
                    assignment.partition_index
                )));
            }
        }
        i32::try_from(creatable.assignments.len()).unwrap_or(i32::MAX)
    };
    let replication_factor = match creatable.replication_factor {
        -1 => broker.config.default_replication_factor,
        n => n,
    };
    if replication_factor != 1 {
        return Err(BrokerError::InvalidReplicationFactor(replication_factor));
    }
    if partitions < 1 {
        return Err(BrokerError::InvalidPartitions(partitions));
    }
    let mut overrides = BTreeMap::new();
    for config in creatable.configs {
        let value = config.value.ok_or_else(|| {
            BrokerError::InvalidConfig(format!("null value for '{}'", config.name))
        })?;
        overrides.insert(config.name.to_string(), value.to_string());
    }
    Ok(TopicSpec {
        name: creatable.name.to_string(),
        partitions,
        config: TopicConfig::new(overrides)?,
    })
}
