//! AlterConfigs (key 33), v0–2: replaces a topic's whole set of overrides (names not given
//! return to their defaults), validated, persisted and applied live.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::TOPIC_RESOURCE;
use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topic_config::TopicConfig;

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
        let name = resource.resource_name.to_string();
        let outcome = async {
            if resource.resource_type != TOPIC_RESOURCE {
                return Err(BrokerError::InvalidRequest(
                    "only topic configs can be altered".into(),
                ));
            }
            if broker.topics.get(&name).is_none() {
                return Err(BrokerError::UnknownTopicOrPartition(name.clone()));
            }
            let config = TopicConfig::new(overrides)?;
            if !request.validate_only {
                broker.topics.update_config(&name, |_| Ok(config)).await?;
            }
            Ok(())
        }
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
    Ok(AlterConfigsResponse::default().with_responses(responses))
}
