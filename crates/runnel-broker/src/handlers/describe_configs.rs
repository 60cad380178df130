//! DescribeConfigs (key 32), v1–4 (Kafka 4 dropped v0): every topic config with its effective value and source
//! (DYNAMIC_TOPIC_CONFIG for an override, DEFAULT_CONFIG otherwise), synonyms when asked (the
//! override, then the broker setting it defaults from), and config types (v3+). Broker
//! resources list the broker settings with their built-in defaults.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::config::SETTINGS;
use crate::error::BrokerError;
use crate::topic_config::{TopicConfig, TOPIC_CONFIGS};

/// Resource types of the config APIs.
pub(crate) const TOPIC_RESOURCE: i8 = 2;
pub(crate) const BROKER_RESOURCE: i8 = 4;
/// Config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: DescribeConfigsRequest,
) -> Result<DescribeConfigsResponse, BrokerError> {
    let synonyms = request.include_synonyms;
    let typed = context.api_version >= 3;
    let mut results = Vec::with_capacity(request.resources.len().min(1024));
    for resource in request.resources {
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let configs = match resource.resource_type {
            TOPIC_RESOURCE => match broker.topics.get(resource.resource_name.as_str()) {
                None => Err(BrokerError::UnknownTopicOrPartition(
                    resource.resource_name.to_string(),
                )),
                Some(topic) => Ok(TOPIC_CONFIGS
                    .iter()
                    .filter(|def| wanted(def.name))
                    .map(|def| {
                        let (default, broker_name) =
                            TopicConfig::default_value(def.name, &broker.config);
                        let override_value = topic.config.overrides().get(def.name).cloned();
                        let mut entry = DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str(def.name))
                            .with_value(Some(StrBytes::from(
                                override_value.clone().unwrap_or_else(|| default.clone()),
                            )))
                            .with_config_source(if override_value.is_some() {
                                DYNAMIC_TOPIC_CONFIG
                            } else {
                                DEFAULT_CONFIG
                            })
                            .with_config_type(if typed {
                                TopicConfig::type_code(def.name)
                            } else {
                                0
                            });
                        if synonyms {
                            let mut list = Vec::new();
                            if let Some(value) = override_value {
                                list.push(
                                    DescribeConfigsSynonym::default()
                                        .with_name(StrBytes::from_static_str(def.name))
                                        .with_value(Some(StrBytes::from(value)))
                                        .with_source(DYNAMIC_TOPIC_CONFIG),
                                );
                            }
                            list.push(
                                DescribeConfigsSynonym::default()
                                    .with_name(StrBytes::from_static_str(
                                        broker_name.unwrap_or(def.name),
                                    ))
                                    .with_value(Some(StrBytes::from(default)))
                                    .with_source(DEFAULT_CONFIG),
                            );
                            entry = entry.with_synonyms(list);
                        }
                        entry
                    })
                    .collect::<Vec<_>>()),
            },
            BROKER_RESOURCE
                if resource.resource_name.is_empty()
                    || resource.resource_name.as_str() == broker.config.node_id.to_string() =>
            {
                Ok(SETTINGS
                    .iter()
                    .filter(|s| wanted(s.name))
                    .map(|s| {
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str(s.name))
                            .with_value(Some(StrBytes::from_static_str(s.default)))
                            .with_read_only(true)
                            .with_config_source(DEFAULT_CONFIG)
                            .with_config_type(if typed { 2 } else { 0 })
                    })
                    .collect())
            }
            other => Err(BrokerError::InvalidRequest(format!(
                "resource type {other} / name '{}' is not described here",
                resource.resource_name.as_str()
            ))),
        };
        results.push(match configs {
            Ok(configs) => result.with_configs(configs),
            Err(error) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from(error.to_string()))),
        });
    }
    Ok(DescribeConfigsResponse::default().with_results(results))
}
