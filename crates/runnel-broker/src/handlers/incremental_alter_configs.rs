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
    let change = |current: &TopicConfig| {
        current.apply_ops(ops.iter().map(|(k, op, v)| (k.as_str(), *op, v.as_deref())))
    };
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
