//! IncrementalAlterConfigs (key 44), v0–1: SET, DELETE, APPEND and SUBTRACT on topic configs,
//! validated as a whole per topic (INVALID_CONFIG names the bad one), persisted in the topic
//! file and applied live. The operations apply to the config current under the topic
//! registry's admin lock, so concurrent alters of one topic all land. A SUBTRACT may empty a
//! list (`cleanup.policy` = "": neither delete nor compact, as in Kafka 3.x);
//! `message.format.version` is accepted and ignored. Broker resources are read-only here
//! (INVALID_REQUEST).

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::TOPIC_RESOURCE;
use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topic_config::TopicConfig;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> Result<IncrementalAlterConfigsResponse, BrokerError> {
    let mut responses = Vec::with_capacity(request.resources.len().min(1024));
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let ops: Vec<(String, i8, Option<String>)> = resource
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        let outcome = apply(
            broker,
            resource.resource_type,
            &name,
            &ops,
            request.validate_only,
        )
        .await;
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err(error) => response
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from(error.to_string()))),
        });
    }
    Ok(IncrementalAlterConfigsResponse::default().with_responses(responses))
}

async fn apply(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    ops: &[(String, i8, Option<String>)],
    validate_only: bool,
) -> Result<(), BrokerError> {
    if resource_type != TOPIC_RESOURCE {
        return Err(BrokerError::InvalidRequest(
            "only topic configs can be altered".into(),
        ));
    }
    let change = |current: &TopicConfig| apply_ops(broker, current, ops);
    if validate_only {
        let topic = broker
            .topics
            .get(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        change(&topic.config)?;
    } else {
        // Applied to the config current under the admin lock, not to a copy read before it:
        // two requests altering different keys of one topic must both land.
        broker.topics.update_config(name, change).await?;
    }
    Ok(())
}

/// The config after `ops`, in order, starting from `config`.
fn apply_ops(
    broker: &Broker,
    config: &TopicConfig,
    ops: &[(String, i8, Option<String>)],
) -> Result<TopicConfig, BrokerError> {
    let mut config = config.clone();
    for (key, op, value) in ops {
        let current = config.overrides().get(key.as_str()).cloned();
        config = match *op {
            SET => config.with(key, Some(value.as_deref().unwrap_or_default()))?,
            DELETE => config.with(key, None)?,
            APPEND | SUBTRACT if TopicConfig::is_list(key) => {
                let (default, _) = TopicConfig::default_value(key, &broker.config);
                let base = current.unwrap_or(default);
                let mut items: Vec<String> = base
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                let given: Vec<String> = value
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if *op == APPEND {
                    for item in given {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    }
                } else {
                    items.retain(|i| !given.contains(i));
                }
                // A SUBTRACT may leave the list empty; Kafka 3.x accepts that.
                config.with(key, Some(&items.join(",")))?
            }
            APPEND | SUBTRACT => {
                return Err(BrokerError::InvalidConfig(format!(
                    "'{key}' is not a list: APPEND and SUBTRACT do not apply"
                )))
            }
            other => {
                return Err(BrokerError::InvalidRequest(format!(
                    "unknown config operation {other}"
                )))
            }
        };
    }
    Ok(config)
}
