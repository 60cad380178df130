//! Topic-level configs in Kafka's dotted names (`cleanup.policy`, `retention.ms`, …): which
//! names exist, what values they accept, their defaults, and the `LogConfig` they produce.
//!
//! Topic overrides are kept as a string map (what the client sent, validated); typed values are
//! derived from the map plus the broker defaults whenever they are needed.

use std::collections::BTreeMap;

use runnel_storage::{CompactionPolicy, LogConfig, RetentionPolicy};

use crate::config::BrokerConfig;
use crate::error::BrokerError;

/// The kind of value a topic config takes.
#[derive(Debug, Clone, Copy)]
enum ValueType {
    /// A 64-bit integer no smaller than the bound.
    Long(i64),
    /// A 32-bit integer no smaller than the bound.
    Int(i32),
    /// A number between 0 and 1.
    Ratio,
    /// `true` or `false`.
    Bool,
    /// One of the listed words.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of the listed words.
    ListOf(&'static [&'static str]),
}

/// One topic config Runnel knows.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    /// Kafka's name.
    pub name: &'static str,
    /// Accepted values.
    value_type: ValueType,
    /// Whether Runnel acts on the value today; the others are stored and reported so that tools
    /// which set them keep working, and take effect as the features arrive.
    pub applied: bool,
}

const fn def(name: &'static str, value_type: ValueType, applied: bool) -> TopicConfigDef {
    TopicConfigDef {
        name,
        value_type,
        applied,
    }
}

/// Every topic config name accepted by CreateTopics; anything else is INVALID_CONFIG.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        ValueType::ListOf(&["delete", "compact"]),
        true,
    ),
    def(
        "compression.type",
        ValueType::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        false,
    ),
    def("delete.retention.ms", ValueType::Long(0), true),
    def("file.delete.delay.ms", ValueType::Long(0), false),
    def("flush.messages", ValueType::Long(1), true),
    def("flush.ms", ValueType::Long(0), true),
    def("index.interval.bytes", ValueType::Int(0), true),
    def("max.compaction.lag.ms", ValueType::Long(1), true),
    def("max.message.bytes", ValueType::Int(0), true),
    def("message.timestamp.after.max.ms", ValueType::Long(0), true),
    def("message.timestamp.before.max.ms", ValueType::Long(0), true),
    def(
        "message.timestamp.type",
        ValueType::OneOf(&["CreateTime", "LogAppendTime"]),
        true,
    ),
    def("min.cleanable.dirty.ratio", ValueType::Ratio, true),
    def("min.compaction.lag.ms", ValueType::Long(0), true),
    def("min.insync.replicas", ValueType::Int(1), false),
    def("preallocate", ValueType::Bool, false),
    def("retention.bytes", ValueType::Long(-1), true),
    def("retention.ms", ValueType::Long(-1), true),
    def("segment.bytes", ValueType::Int(14), true),
    def("segment.index.bytes", ValueType::Int(8), true),
    def("segment.jitter.ms", ValueType::Long(0), false),
    def("segment.ms", ValueType::Long(1), true),
    def("unclean.leader.election.enable", ValueType::Bool, false),
];

/// Topic configs Kafka 3.x tools still send but that no longer do anything in Kafka
/// (`message.format.version` is ignored from inter-broker protocol 3.0 on): accepted and
/// dropped with a WARN instead of INVALID_CONFIG, so those tools keep working.
pub const IGNORED_TOPIC_CONFIGS: &[&str] = &["message.format.version"];

/// Whether `name` is accepted and ignored (see [`IGNORED_TOPIC_CONFIGS`]); logs the WARN.
fn ignored(name: &str) -> bool {
    let ignored = IGNORED_TOPIC_CONFIGS.contains(&name);
    if ignored {
        tracing::warn!(config = %name, "topic config is obsolete in Kafka 3.x and ignored");
    }
    ignored
}

/// Validates one `name = value` pair; the error message names both.
pub fn validate(name: &str, value: &str) -> Result<(), BrokerError> {
    let def = TOPIC_CONFIGS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| BrokerError::InvalidConfig(format!("unknown topic config '{name}'")))?;
    let invalid = |expected: String| {
        BrokerError::InvalidConfig(format!(
            "invalid value '{value}' for '{name}': expected {expected}"
        ))
    };
    let ok = match def.value_type {
        ValueType::Long(min) => value.parse::<i64>().is_ok_and(|v| v >= min),
        ValueType::Int(min) => value.parse::<i32>().is_ok_and(|v| v >= min),
        ValueType::Ratio => value.parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v)),
        ValueType::Bool => matches!(value, "true" | "false"),
        ValueType::OneOf(words) => words.contains(&value),
        // An empty list is valid, as in Kafka 3.x (a SUBTRACT may empty `cleanup.policy`:
        // neither delete nor compact, so the log is kept whole).
        ValueType::ListOf(words) => {
            value.trim().is_empty() || value.split(',').all(|w| words.contains(&w.trim()))
        }
    };
    if ok {
        return Ok(());
    }
    Err(invalid(match def.value_type {
        ValueType::Long(min) => format!("an integer >= {min}"),
        ValueType::Int(min) => format!("a 32-bit integer >= {min}"),
        ValueType::Ratio => "a number between 0 and 1".into(),
        ValueType::Bool => "true or false".into(),
        ValueType::OneOf(words) => format!("one of {}", words.join(", ")),
        ValueType::ListOf(words) => format!("a comma-separated list of {}", words.join(", ")),
    }))
}

/// The default of a list config (the only list today: `cleanup.policy`), which APPEND and
/// SUBTRACT start from when the topic has no override.
fn list_default(name: &str) -> &'static str {
    match name {
        "cleanup.policy" => "delete",
        _ => "",
    }
}

/// A topic's config overrides (validated), with typed views over the broker defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    /// Validates and keeps the overrides; drops (with a WARN) the ones Kafka ignores.
    pub fn new(mut overrides: BTreeMap<String, String>) -> Result<TopicConfig, BrokerError> {
        overrides.retain(|name, _| !ignored(name));
        for (name, value) in &overrides {
            validate(name, value)?;
        }
        Ok(TopicConfig { overrides })
    }

    /// The overrides as given.
    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.overrides
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.overrides
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Largest record batch, in bytes (`max.message.bytes`).
    pub fn max_message_bytes(&self, broker: &BrokerConfig) -> usize {
        self.get("max.message.bytes", broker.message_max_bytes)
    }

    /// `min.insync.replicas` (default the broker's): the ISR size acks=all and the high
    /// watermark need.
    pub fn min_insync_replicas(&self, broker: &BrokerConfig) -> i32 {
        self.get("min.insync.replicas", broker.min_insync_replicas)
    }

    /// `unclean.leader.election.enable` (default the broker's): may an out-of-sync replica lead.
    pub fn unclean_leader_election_enable(&self, broker: &BrokerConfig) -> bool {
        self.get(
            "unclean.leader.election.enable",
            broker.unclean_leader_election_enable,
        )
    }

    /// The storage settings for this topic's partitions.
    pub fn log_config(&self, broker: &BrokerConfig) -> LogConfig {
        LogConfig {
            segment_bytes: self.get("segment.bytes", broker.log_segment_bytes),
            segment_ms: self.get("segment.ms", broker.log_roll_ms),
            index_interval_bytes: self.get("index.interval.bytes", broker.log_index_interval_bytes),
            segment_index_bytes: self.get("segment.index.bytes", broker.log_index_size_max_bytes),
            producer_id_expiration_ms: broker.producer_id_expiration_ms,
        }
    }

    /// `cleanup.policy` as (delete, compact); default `delete`.
    pub fn cleanup_policy(&self) -> (bool, bool) {
        let policy = self
            .overrides
            .get("cleanup.policy")
            .map_or("delete", String::as_str);
        let has = |word| policy.split(',').any(|w| w.trim() == word);
        (has("delete"), has("compact"))
    }

    /// Whether the topic is compacted (`cleanup.policy` contains `compact`).
    pub fn is_compacted(&self) -> bool {
        self.cleanup_policy().1
    }

    /// `message.timestamp.type=LogAppendTime`.
    pub fn log_append_time(&self) -> bool {
        self.overrides
            .get("message.timestamp.type")
            .is_some_and(|v| v == "LogAppendTime")
    }

    /// (`message.timestamp.before.max.ms`, `message.timestamp.after.max.ms`); default unbounded.
    pub fn timestamp_bounds_ms(&self) -> (i64, i64) {
        (
            self.get("message.timestamp.before.max.ms", i64::MAX),
            self.get("message.timestamp.after.max.ms", i64::MAX),
        )
    }

    /// `flush.messages` (fsync after this many unflushed records for acks <= 1) and `flush.ms`
    /// (default `log.flush.interval.ms`).
    pub fn flush_policy(&self, broker: &BrokerConfig) -> (i64, i64) {
        (
            self.get("flush.messages", i64::MAX),
            self.get("flush.ms", broker.log_flush_interval_ms),
        )
    }

    /// Retention when `cleanup.policy` contains `delete`, else none.
    pub fn retention_policy(&self, broker: &BrokerConfig) -> RetentionPolicy {
        if !self.cleanup_policy().0 {
            return RetentionPolicy {
                retention_ms: -1,
                retention_bytes: -1,
            };
        }
        RetentionPolicy {
            retention_ms: self.get("retention.ms", broker.log_retention_ms),
            retention_bytes: self.get("retention.bytes", broker.log_retention_bytes),
        }
    }

    /// The log cleaner's settings (the dedupe buffer is the broker's).
    pub fn compaction_policy(&self, broker: &BrokerConfig) -> CompactionPolicy {
        let defaults = CompactionPolicy::default();
        CompactionPolicy {
            min_cleanable_dirty_ratio: self.get(
                "min.cleanable.dirty.ratio",
                defaults.min_cleanable_dirty_ratio,
            ),
            min_compaction_lag_ms: self
                .get("min.compaction.lag.ms", defaults.min_compaction_lag_ms),
            max_compaction_lag_ms: self
                .get("max.compaction.lag.ms", defaults.max_compaction_lag_ms),
            delete_retention_ms: self.get("delete.retention.ms", defaults.delete_retention_ms),
            dedupe_buffer_bytes: broker.log_cleaner_dedupe_buffer_size,
        }
    }

    /// A copy with `name` set to `value` (validated) or removed (`None`); unchanged for a name
    /// Kafka ignores.
    pub fn with(&self, name: &str, value: Option<&str>) -> Result<TopicConfig, BrokerError> {
        if ignored(name) {
            return Ok(self.clone());
        }
        let mut overrides = self.overrides.clone();
        match value {
            Some(value) => {
                validate(name, value)?;
                overrides.insert(name.to_string(), value.to_string());
            }
            None => {
                if !TOPIC_CONFIGS.iter().any(|d| d.name == name) {
                    return Err(BrokerError::InvalidConfig(format!(
                        "unknown topic config '{name}'"
                    )));
                }
                overrides.remove(name);
            }
        }
        Ok(TopicConfig { overrides })
    }

    /// The config after IncrementalAlterConfigs operations, in order: `(name, op, value)` with
    /// Kafka's op codes, 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT (APPEND and SUBTRACT for list
    /// configs only, starting from the default when there is no override; a SUBTRACT may
    /// empty a list, as in Kafka 3.x).
    ///
    /// Errors: `InvalidConfig` for an unknown name, a bad value or a list op on a non-list;
    /// `InvalidRequest` for an unknown op.
    pub fn apply_ops<'a>(
        &self,
        ops: impl IntoIterator<Item = (&'a str, i8, Option<&'a str>)>,
    ) -> Result<TopicConfig, BrokerError> {
        const SET: i8 = 0;
        const DELETE: i8 = 1;
        const APPEND: i8 = 2;
        const SUBTRACT: i8 = 3;
        let split = |list: &str| -> Vec<String> {
            list.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let mut config = self.clone();
        for (key, op, value) in ops {
            config = match op {
                SET => config.with(key, Some(value.unwrap_or_default()))?,
                DELETE => config.with(key, None)?,
                APPEND | SUBTRACT if TopicConfig::is_list(key) => {
                    let base = config
                        .overrides
                        .get(key)
                        .cloned()
                        .unwrap_or_else(|| list_default(key).to_string());
                    let mut items = split(&base);
                    let given = split(value.unwrap_or_default());
                    if op == APPEND {
                        for item in given {
                            if !items.contains(&item) {
                                items.push(item);
                            }
                        }
                    } else {
                        items.retain(|i| !given.contains(i));
                    }
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

    /// Whether `name` takes a comma-separated list (APPEND/SUBTRACT apply).
    pub fn is_list(name: &str) -> bool {
        TOPIC_CONFIGS
            .iter()
            .any(|d| d.name == name && matches!(d.value_type, ValueType::ListOf(_)))
    }

    /// Kafka's config type code for DescribeConfigs v3+ (BOOLEAN 1, STRING 2, INT 3, LONG 5,
    /// DOUBLE 6, LIST 7).
    pub fn type_code(name: &str) -> i8 {
        match TOPIC_CONFIGS
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value_type)
        {
            Some(ValueType::Bool) => 1,
            Some(ValueType::Int(_)) => 3,
            Some(ValueType::Long(_)) => 5,
            Some(ValueType::Ratio) => 6,
            Some(ValueType::ListOf(_)) => 7,
            _ => 2,
        }
    }

    /// The value a topic gets without an override, and the broker setting it comes from.
    pub fn default_value(name: &str, broker: &BrokerConfig) -> (String, Option<&'static str>) {
        let d = CompactionPolicy::default();
        match name {
            "cleanup.policy" => (list_default(name).into(), None),
            "compression.type" => ("producer".into(), None),
            "delete.retention.ms" => (d.delete_retention_ms.to_string(), None),
            "file.delete.delay.ms" => ("60000".into(), None),
            "flush.messages" | "max.compaction.lag.ms" => (i64::MAX.to_string(), None),
            "flush.ms" => (
                broker.log_flush_interval_ms.to_string(),
                Some("log.flush.interval.ms"),
            ),
            "message.timestamp.after.max.ms" | "message.timestamp.before.max.ms" => {
                (i64::MAX.to_string(), None)
            }
            "index.interval.bytes" => (
                broker.log_index_interval_bytes.to_string(),
                Some("log.index.interval.bytes"),
            ),
            "max.message.bytes" => (
                broker.message_max_bytes.to_string(),
                Some("message.max.bytes"),
            ),
            "message.timestamp.type" => ("CreateTime".into(), None),
            "min.cleanable.dirty.ratio" => (d.min_cleanable_dirty_ratio.to_string(), None),
            "min.compaction.lag.ms" => ("0".into(), None),
            "min.insync.replicas" => (
                broker.min_insync_replicas.to_string(),
                Some("min.insync.replicas"),
            ),
            "unclean.leader.election.enable" => (
                broker.unclean_leader_election_enable.to_string(),
                Some("unclean.leader.election.enable"),
            ),
            "preallocate" => ("false".into(), None),
            "retention.bytes" => (
                broker.log_retention_bytes.to_string(),
                Some("log.retention.bytes"),
            ),
            "retention.ms" => (
                broker.log_retention_ms.to_string(),
                Some("log.retention.ms"),
            ),
            "segment.bytes" => (
                broker.log_segment_bytes.to_string(),
                Some("log.segment.bytes"),
            ),
            "segment.index.bytes" => (
                broker.log_index_size_max_bytes.to_string(),
                Some("log.index.size.max.bytes"),
            ),
            "segment.jitter.ms" => ("0".into(), None),
            "segment.ms" => (broker.log_roll_ms.to_string(), Some("log.roll.ms")),
            _ => (String::new(), None),
        }
    }

    /// Every known config with its effective value, for CreateTopics v5+ responses.
    pub fn effective(&self, broker: &BrokerConfig) -> Vec<(&'static str, Option<String>, bool)> {
        let log = self.log_config(broker);
        TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let default = match def.name {
                    "segment.bytes" => Some(log.segment_bytes.to_string()),
                    "segment.ms" => Some(log.segment_ms.to_string()),
                    "index.interval.bytes" => Some(log.index_interval_bytes.to_string()),
                    "segment.index.bytes" => Some(log.segment_index_bytes.to_string()),
                    "max.message.bytes" => Some(self.max_message_bytes(broker).to_string()),
                    name => Some(Self::default_value(name, broker).0),
                };
                let value = self.overrides.get(def.name).cloned().or(default);
                (def.name, value, self.overrides.contains_key(def.name))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_by_type() {
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "bogus").is_err());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("segment.bytes", "10").is_err());
        assert!(validate("no.such.config", "1").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "0.5").is_ok());
        assert!(validate("cleanup.policy", "").is_ok());
        assert!(validate("cleanup.policy", "delete,").is_err());
    }

    #[test]
    fn empty_cleanup_policy_neither_deletes_nor_compacts() {
        let config = TopicConfig::new(BTreeMap::from([(
            "cleanup.policy".to_string(),
            String::new(),
        )]))
        .unwrap();
        assert_eq!(config.cleanup_policy(), (false, false));
    }

    #[test]
    fn obsolete_configs_are_accepted_and_dropped() {
        let config = TopicConfig::new(BTreeMap::from([(
            "message.format.version".to_string(),
            "2.8-IV1".to_string(),
        )]))
        .unwrap();
        assert!(config.overrides().is_empty());
        let config = config
            .with("message.format.version", Some("0.10.0"))
            .unwrap();
        assert!(config.overrides().is_empty());
        assert!(config.with("message.format.version", None).is_ok());
    }

    #[test]
    fn incremental_ops_apply_in_order() {
        let config = TopicConfig::new(BTreeMap::from([(
            "retention.ms".to_string(),
            "1000".to_string(),
        )]))
        .unwrap();
        let changed = config
            .apply_ops([
                ("segment.ms", 0, Some("5000")),
                ("retention.ms", 1, None),
                ("cleanup.policy", 2, Some("compact")),
            ])
            .unwrap();
        assert_eq!(
            changed.overrides(),
            &BTreeMap::from([
                ("cleanup.policy".to_string(), "delete,compact".to_string()),
                ("segment.ms".to_string(), "5000".to_string()),
            ])
        );
        let subtracted = changed
            .apply_ops([("cleanup.policy", 3, Some("delete,compact"))])
            .unwrap();
        assert_eq!(subtracted.overrides().get("cleanup.policy").unwrap(), "");
        assert!(matches!(
            config.apply_ops([("retention.ms", 2, Some("1"))]),
            Err(BrokerError::InvalidConfig(_))
        ));
        assert!(matches!(
            config.apply_ops([("retention.ms", 7, Some("1"))]),
            Err(BrokerError::InvalidRequest(_))
        ));
        assert!(matches!(
            config.apply_ops([("retention.ms", 0, Some("-5"))]),
            Err(BrokerError::InvalidConfig(_))
        ));
        assert!(matches!(
            config.apply_ops([("no.such", 1, None)]),
            Err(BrokerError::InvalidConfig(_))
        ));
    }

    #[test]
    fn configuration_doc_lists_every_topic_config() {
        let doc = include_str!("../../../docs/configuration.md");
        for def in TOPIC_CONFIGS {
            assert!(
                doc.contains(&format!("`{}`", def.name)),
                "docs/configuration.md misses {}",
                def.name
            );
        }
    }
}
