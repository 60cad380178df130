//! IncrementalAlterConfigs (key 44), v0–1: SET, DELETE, APPEND and SUBTRACT on topic configs,
//! carried out by the controller on the config current there (so concurrent alters of one
//! topic all land), validated as a whole per topic (INVALID_CONFIG names the bad one), and
//! answered once committed. Broker resources are read-only here (INVALID_REQUEST).

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::TOPIC_RESOURCE;
use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::requests::{ConfigChange, ConfigOp, TopicConfigChange};
use crate::metadata::ControllerRequest;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> Result<IncrementalAlterConfigsResponse, BrokerError> {
    let mut responses = Vec::with_capacity(request.resources.len().min(1024));
    for resource in request.resources {
        let ops: Vec<ConfigOp> = resource
            .configs
            .iter()
            .map(|c| ConfigOp {
                name: c.name.to_string(),
                op: c.config_operation,
                value: c.value.as_ref().map(|v| v.to_string()),
            })
            .collect();
        let outcome = if resource.resource_type == TOPIC_RESOURCE {
            alter_topic(
                broker,
                TopicConfigChange {
                    name: resource.resource_name.to_string(),
                    change: ConfigChange::Incremental(ops),
                },
                request.validate_only,
            )
            .await
        } else {
            Err(BrokerError::InvalidRequest(
                "only topic configs can be altered".into(),
            ))
        };
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

/// Has the controller apply one topic's config change; its error, if any.
pub(crate) async fn alter_topic(
    broker: &Broker,
    change: TopicConfigChange,
    validate_only: bool,
) -> Result<(), BrokerError> {
    let outcomes = broker
        .submit_topics(ControllerRequest::AlterTopicConfigs {
            topics: vec![change],
            validate_only,
        })
        .await?;
    match outcomes.into_iter().next() {
        Some(outcome) => outcome.error.map_or(Ok(()), |e| Err(BrokerError::from(e))),
        None => Err(BrokerError::ControllerUnavailable(
            "the controller answered no topic".into(),
        )),
    }
}
