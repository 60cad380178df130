//! AlterConfigs (key 33), v0–2: replaces a topic's whole set of overrides (names not given
//! return to their defaults); validated and committed by the controller, applied live by every
//! broker holding the topic's partitions.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::TOPIC_RESOURCE;
use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::requests::{ConfigChange, TopicConfigChange};

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: AlterConfigsRequest,
) -> Result<AlterConfigsResponse, BrokerError> {
    let mut responses = Vec::with_capacity(request.resources.len().min(1024));
    for resource in request.resources {
        let overrides: BTreeMap<String, String> = resource
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let outcome = if resource.resource_type == TOPIC_RESOURCE {
            super::incremental_alter_configs::alter_topic(
                broker,
                TopicConfigChange {
                    name: resource.resource_name.to_string(),
                    change: ConfigChange::Replace(overrides),
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
    Ok(AlterConfigsResponse::default().with_responses(responses))
}
