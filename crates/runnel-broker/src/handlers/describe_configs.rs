//! DescribeConfigs (key 32), v1–4 (Kafka 4 dropped v0): every topic config with its effective
//! value and source, synonyms when asked, config types and (when asked) documentation (v3+).
//!
//! A topic config's source is DYNAMIC_TOPIC_CONFIG for an override; without one it comes from
//! the broker setting it defaults from (`retention.ms` ← `log.retention.ms`):
//! STATIC_BROKER_CONFIG when that setting was given (file, environment, flag), else
//! DEFAULT_CONFIG. Synonyms list every layer that has a value, most specific first, as Kafka
//! does. The broker resource lists every broker setting Kafka lists, under Kafka's name
//! (`config::broker_configs`): Runnel's own with the value in effect, the rest with Kafka's
//! default; all read-only (Runnel has no dynamic broker configs).

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::config::broker_configs::{broker_config_entries, BrokerConfigEntry};
use crate::config::{BrokerConfig, SETTINGS};
use crate::error::BrokerError;
use crate::topic_config::{TopicConfig, TopicConfigDef, TOPIC_CONFIGS};

/// Resource types of the config APIs.
pub(crate) const TOPIC_RESOURCE: i8 = 2;
pub(crate) const BROKER_RESOURCE: i8 = 4;
/// Config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: DescribeConfigsRequest,
) -> Result<DescribeConfigsResponse, BrokerError> {
    let synonyms = request.include_synonyms;
    let typed = context.api_version >= 3;
    let documented = typed && request.include_documentation;
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
            TOPIC_RESOURCE => match broker.topic_config(resource.resource_name.as_str()) {
                None => Err(BrokerError::UnknownTopicOrPartition(
                    resource.resource_name.to_string(),
                )),
                Some(topic) => Ok(TOPIC_CONFIGS
                    .iter()
                    .filter(|def| wanted(def.name))
                    .map(|def| topic_entry(&topic, def, &broker.config, typed, synonyms))
                    .collect::<Vec<_>>()),
            },
            BROKER_RESOURCE
                if resource.resource_name.is_empty()
                    || resource.resource_name.as_str() == broker.config.node_id.to_string() =>
            {
                Ok(broker_config_entries(&broker.config)
                    .into_iter()
                    .filter(|e| wanted(e.name))
                    .map(|e| broker_entry(e, typed, synonyms, documented))
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

/// One topic config: the override, else the broker setting's value in effect.
fn topic_entry(
    topic: &TopicConfig,
    def: &TopicConfigDef,
    config: &BrokerConfig,
    typed: bool,
    synonyms: bool,
) -> DescribeConfigsResourceResult {
    let (default, broker_name) = TopicConfig::default_value(def.name, config);
    let override_value = topic.overrides().get(def.name).cloned();
    // The broker setting behind the default, when it was given explicitly.
    let static_value = broker_name
        .and_then(|name| config.setting_value(name))
        .filter(|(_, explicit)| *explicit)
        .map(|_| default.clone());
    let (value, source) = match (&override_value, &static_value) {
        (Some(value), _) => (value.clone(), DYNAMIC_TOPIC_CONFIG),
        (None, Some(value)) => (value.clone(), STATIC_BROKER_CONFIG),
        (None, None) => (default.clone(), DEFAULT_CONFIG),
    };
    let mut entry = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(def.name))
        .with_value(Some(StrBytes::from(value)))
        .with_config_source(source)
        .with_config_type(if typed {
            TopicConfig::type_code(def.name)
        } else {
            0
        });
    if synonyms {
        let mut list = Vec::new();
        if let Some(value) = override_value {
            list.push(synonym(def.name, value, DYNAMIC_TOPIC_CONFIG));
        }
        let broker_setting = broker_name.unwrap_or(def.name);
        match static_value {
            Some(value) => {
                list.push(synonym(broker_setting, value, STATIC_BROKER_CONFIG));
                let built_in = SETTINGS
                    .iter()
                    .find(|s| s.name == broker_setting)
                    .map(|s| s.default.to_string());
                if let Some(built_in) = built_in {
                    list.push(synonym(broker_setting, built_in, DEFAULT_CONFIG));
                }
            }
            None => list.push(synonym(broker_setting, default, DEFAULT_CONFIG)),
        }
        entry = entry.with_synonyms(list);
    }
    entry
}

/// One broker setting with the value in effect: STATIC_BROKER_CONFIG when given explicitly,
/// else DEFAULT_CONFIG. Read-only: Runnel has no dynamic broker configs.
fn broker_entry(
    entry: BrokerConfigEntry,
    typed: bool,
    synonyms: bool,
    documented: bool,
) -> DescribeConfigsResourceResult {
    let source = if entry.explicit {
        STATIC_BROKER_CONFIG
    } else {
        DEFAULT_CONFIG
    };
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(entry.name))
        .with_value(entry.value.clone().map(StrBytes::from))
        .with_read_only(true)
        .with_config_source(source)
        .with_config_type(if typed { entry.config_type as i8 } else { 0 })
        .with_documentation(documented.then(|| StrBytes::from_static_str(entry.documentation)));
    if synonyms {
        let mut list = Vec::new();
        if entry.explicit {
            list.push(optional_synonym(
                entry.name,
                entry.value,
                STATIC_BROKER_CONFIG,
            ));
        }
        list.push(optional_synonym(entry.name, entry.default, DEFAULT_CONFIG));
        result = result.with_synonyms(list);
    }
    result
}

fn optional_synonym(
    name: &'static str,
    value: Option<String>,
    source: i8,
) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_static_str(name))
        .with_value(value.map(StrBytes::from))
        .with_source(source)
}

fn synonym(name: &'static str, value: String, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_static_str(name))
        .with_value(Some(StrBytes::from(value)))
        .with_source(source)
}
