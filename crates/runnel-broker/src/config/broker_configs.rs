//! Every broker setting Kafka's `kafka-configs --describe --all --broker` lists, under
//! Kafka's name, for DescribeConfigs of the BROKER resource: Runnel's own settings with their
//! values in effect, and the Kafka settings Runnel does not act on with Kafka's (3.x) default,
//! so admin clients and their tests find every name they expect.
//!
//! Knows nothing of the wire: the handler (`handlers/describe_configs.rs`) turns
//! [`BrokerConfigEntry`]s into the response.

use std::collections::BTreeMap;

use super::{BrokerConfig, Listener, SETTINGS};

/// Kafka's config types (DescribeConfigs v3+ `config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    /// BOOLEAN.
    Boolean = 1,
    /// STRING.
    String = 2,
    /// INT.
    Int = 3,
    /// SHORT.
    Short = 4,
    /// LONG.
    Long = 5,
    /// DOUBLE.
    Double = 6,
    /// LIST.
    List = 7,
    /// CLASS.
    Class = 8,
}

/// One Kafka broker setting: its name, Kafka's default (`None`: null) and type.
#[derive(Debug, Clone, Copy)]
pub struct KafkaBrokerConfig {
    /// Kafka's name.
    pub name: &'static str,
    /// Kafka's default, as `kafka-configs` shows it; `None` where Kafka's is null.
    pub default: Option<&'static str>,
    /// Kafka's type.
    pub config_type: ConfigType,
}

/// Kafka 3.x broker settings (KRaft mode; ZooKeeper-only and password settings left out).
#[rustfmt::skip]
pub static KAFKA_BROKER_CONFIGS: &[KafkaBrokerConfig] = &[
    KafkaBrokerConfig { name: "advertised.listeners", default: None, config_type: ConfigType::String },
    KafkaBrokerConfig { name: "alter.config.policy.class.name", default: None, config_type: ConfigType::Class },
    KafkaBrokerConfig { name: "alter.log.dirs.replication.quota.window.num", default: Some("11"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "alter.log.dirs.replication.quota.window.size.seconds", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "authorizer.class.name", default: Some(""), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "auto.create.topics.enable", default: Some("true"), config_type: ConfigType::Boolean },
    KafkaBrokerConfig { name: "auto.leader.rebalance.enable", default: Some("true"), config_type: ConfigType::Boolean },
    KafkaBrokerConfig { name: "background.threads", default: Some("10"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "broker.heartbeat.interval.ms", default: Some("2000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "broker.id", default: Some("-1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "broker.rack", default: None, config_type: ConfigType::String },
    KafkaBrokerConfig { name: "broker.session.timeout.ms", default: Some("9000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "client.quota.callback.class", default: None, config_type: ConfigType::Class },
    KafkaBrokerConfig { name: "compression.type", default: Some("producer"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "connection.failed.authentication.delay.ms", default: Some("100"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "connections.max.idle.ms", default: Some("600000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "connections.max.reauth.ms", default: Some("0"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "control.plane.listener.name", default: None, config_type: ConfigType::String },
    KafkaBrokerConfig { name: "controlled.shutdown.enable", default: Some("true"), config_type: ConfigType::Boolean },
    KafkaBrokerConfig { name: "controlled.shutdown.max.retries", default: Some("3"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "controlled.shutdown.retry.backoff.ms", default: Some("5000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "controller.listener.names", default: None, config_type: ConfigType::String },
    KafkaBrokerConfig { name: "controller.quorum.append.linger.ms", default: Some("25"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "controller.quorum.election.backoff.max.ms", default: Some("1000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "controller.quorum.election.timeout.ms", default: Some("1000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "controller.quorum.fetch.timeout.ms", default: Some("2000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "controller.quorum.request.timeout.ms", default: Some("2000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "controller.quorum.retry.backoff.ms", default: Some("20"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "controller.quorum.voters", default: Some(""), config_type: ConfigType::List },
    KafkaBrokerConfig { name: "controller.quota.window.num", default: Some("11"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "controller.quota.window.size.seconds", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "controller.socket.timeout.ms", default: Some("30000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "create.topic.policy.class.name", default: None, config_type: ConfigType::Class },
    KafkaBrokerConfig { name: "default.replication.factor", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "delegation.token.expiry.check.interval.ms", default: Some("3600000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "delegation.token.expiry.time.ms", default: Some("86400000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "delegation.token.max.lifetime.ms", default: Some("604800000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "delete.records.purgatory.purge.interval.requests", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "delete.topic.enable", default: Some("true"), config_type: ConfigType::Boolean },
    KafkaBrokerConfig { name: "early.start.listeners", default: None, config_type: ConfigType::String },
    KafkaBrokerConfig { name: "fetch.max.bytes", default: Some("57671680"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "fetch.purgatory.purge.interval.requests", default: Some("1000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "group.consumer.heartbeat.interval.ms", default: Some("5000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "group.consumer.max.session.timeout.ms", default: Some("60000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "group.consumer.session.timeout.ms", default: Some("45000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "group.coordinator.rebalance.protocols", default: Some("classic"), config_type: ConfigType::List },
    KafkaBrokerConfig { name: "group.initial.rebalance.delay.ms", default: Some("3000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "group.max.session.timeout.ms", default: Some("1800000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "group.max.size", default: Some("2147483647"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "group.min.session.timeout.ms", default: Some("6000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "initial.broker.registration.timeout.ms", default: Some("60000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "inter.broker.listener.name", default: None, config_type: ConfigType::String },
    KafkaBrokerConfig { name: "kafka.metrics.polling.interval.secs", default: Some("10"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "kafka.metrics.reporters", default: Some(""), config_type: ConfigType::List },
    KafkaBrokerConfig { name: "leader.imbalance.check.interval.seconds", default: Some("300"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "leader.imbalance.per.broker.percentage", default: Some("10"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "listener.security.protocol.map", default: Some("PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "listeners", default: Some("PLAINTEXT://:9092"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "log.cleaner.backoff.ms", default: Some("15000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.cleaner.dedupe.buffer.size", default: Some("134217728"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.cleaner.delete.retention.ms", default: Some("86400000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.cleaner.enable", default: Some("true"), config_type: ConfigType::Boolean },
    KafkaBrokerConfig { name: "log.cleaner.io.buffer.load.factor", default: Some("0.9"), config_type: ConfigType::Double },
    KafkaBrokerConfig { name: "log.cleaner.io.buffer.size", default: Some("524288"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.cleaner.io.max.bytes.per.second", default: Some("1.7976931348623157E308"), config_type: ConfigType::Double },
    KafkaBrokerConfig { name: "log.cleaner.max.compaction.lag.ms", default: Some("9223372036854775807"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.cleaner.min.cleanable.ratio", default: Some("0.5"), config_type: ConfigType::Double },
    KafkaBrokerConfig { name: "log.cleaner.min.compaction.lag.ms", default: Some("0"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.cleaner.threads", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.cleanup.policy", default: Some("delete"), config_type: ConfigType::List },
    KafkaBrokerConfig { name: "log.dir", default: Some("/tmp/kafka-logs"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "log.dirs", default: None, config_type: ConfigType::String },
    KafkaBrokerConfig { name: "log.flush.interval.messages", default: Some("9223372036854775807"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.flush.interval.ms", default: None, config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.flush.offset.checkpoint.interval.ms", default: Some("60000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.flush.scheduler.interval.ms", default: Some("9223372036854775807"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.flush.start.offset.checkpoint.interval.ms", default: Some("60000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.index.interval.bytes", default: Some("4096"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.index.size.max.bytes", default: Some("10485760"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.local.retention.bytes", default: Some("-2"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.local.retention.ms", default: Some("-2"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.message.downconversion.enable", default: Some("true"), config_type: ConfigType::Boolean },
    KafkaBrokerConfig { name: "log.message.timestamp.after.max.ms", default: Some("9223372036854775807"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.message.timestamp.before.max.ms", default: Some("9223372036854775807"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.message.timestamp.difference.max.ms", default: Some("9223372036854775807"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.message.timestamp.type", default: Some("CreateTime"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "log.preallocate", default: Some("false"), config_type: ConfigType::Boolean },
    KafkaBrokerConfig { name: "log.retention.bytes", default: Some("-1"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.retention.check.interval.ms", default: Some("300000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.retention.hours", default: Some("168"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.retention.minutes", default: None, config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.retention.ms", default: None, config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.roll.hours", default: Some("168"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.roll.jitter.hours", default: Some("0"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.roll.jitter.ms", default: None, config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.roll.ms", default: None, config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "log.segment.bytes", default: Some("1073741824"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "log.segment.delete.delay.ms", default: Some("60000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "max.connection.creation.rate", default: Some("2147483647"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "max.connections", default: Some("2147483647"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "max.connections.per.ip", default: Some("2147483647"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "max.connections.per.ip.overrides", default: Some(""), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "max.incremental.fetch.session.cache.slots", default: Some("1000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "message.max.bytes", default: Some("1048588"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "metadata.log.dir", default: None, config_type: ConfigType::String },
    KafkaBrokerConfig { name: "metadata.log.max.record.bytes.between.snapshots", default: Some("20971520"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "metadata.log.max.snapshot.interval.ms", default: Some("3600000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "metadata.log.segment.bytes", default: Some("1073741824"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "metadata.log.segment.ms", default: Some("604800000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "metadata.max.idle.interval.ms", default: Some("500"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "metadata.max.retention.bytes", default: Some("104857600"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "metadata.max.retention.ms", default: Some("604800000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "metric.reporters", default: Some(""), config_type: ConfigType::List },
    KafkaBrokerConfig { name: "metrics.num.samples", default: Some("2"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "metrics.recording.level", default: Some("INFO"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "metrics.sample.window.ms", default: Some("30000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "min.insync.replicas", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "node.id", default: Some("-1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "num.io.threads", default: Some("8"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "num.network.threads", default: Some("3"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "num.partitions", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "num.recovery.threads.per.data.dir", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "num.replica.alter.log.dirs.threads", default: None, config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "num.replica.fetchers", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "offset.metadata.max.bytes", default: Some("4096"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "offsets.commit.required.acks", default: Some("-1"), config_type: ConfigType::Short },
    KafkaBrokerConfig { name: "offsets.commit.timeout.ms", default: Some("5000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "offsets.load.buffer.size", default: Some("5242880"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "offsets.retention.check.interval.ms", default: Some("600000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "offsets.retention.minutes", default: Some("10080"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "offsets.topic.compression.codec", default: Some("0"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "offsets.topic.num.partitions", default: Some("50"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "offsets.topic.replication.factor", default: Some("3"), config_type: ConfigType::Short },
    KafkaBrokerConfig { name: "offsets.topic.segment.bytes", default: Some("104857600"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "principal.builder.class", default: Some("org.apache.kafka.common.security.authenticator.DefaultKafkaPrincipalBuilder"), config_type: ConfigType::Class },
    KafkaBrokerConfig { name: "process.roles", default: Some(""), config_type: ConfigType::List },
    KafkaBrokerConfig { name: "producer.id.expiration.check.interval.ms", default: Some("600000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "producer.id.expiration.ms", default: Some("86400000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "producer.purgatory.purge.interval.requests", default: Some("1000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "queued.max.request.bytes", default: Some("-1"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "queued.max.requests", default: Some("500"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "quota.window.num", default: Some("11"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "quota.window.size.seconds", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "remote.log.storage.system.enable", default: Some("false"), config_type: ConfigType::Boolean },
    KafkaBrokerConfig { name: "replica.fetch.backoff.ms", default: Some("1000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "replica.fetch.max.bytes", default: Some("1048576"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "replica.fetch.min.bytes", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "replica.fetch.response.max.bytes", default: Some("10485760"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "replica.fetch.wait.max.ms", default: Some("500"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "replica.high.watermark.checkpoint.interval.ms", default: Some("5000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "replica.lag.time.max.ms", default: Some("30000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "replica.selector.class", default: None, config_type: ConfigType::String },
    KafkaBrokerConfig { name: "replica.socket.receive.buffer.bytes", default: Some("65536"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "replica.socket.timeout.ms", default: Some("30000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "replication.quota.window.num", default: Some("11"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "replication.quota.window.size.seconds", default: Some("1"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "request.timeout.ms", default: Some("30000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "reserved.broker.max.id", default: Some("1000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "sasl.enabled.mechanisms", default: Some("GSSAPI"), config_type: ConfigType::List },
    KafkaBrokerConfig { name: "sasl.mechanism.controller.protocol", default: Some("GSSAPI"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "sasl.mechanism.inter.broker.protocol", default: Some("GSSAPI"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "security.inter.broker.protocol", default: Some("PLAINTEXT"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "socket.connection.setup.timeout.max.ms", default: Some("30000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "socket.connection.setup.timeout.ms", default: Some("10000"), config_type: ConfigType::Long },
    KafkaBrokerConfig { name: "socket.listen.backlog.size", default: Some("50"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "socket.receive.buffer.bytes", default: Some("102400"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "socket.request.max.bytes", default: Some("104857600"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "socket.send.buffer.bytes", default: Some("102400"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "ssl.client.auth", default: Some("none"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "ssl.enabled.protocols", default: Some("TLSv1.2,TLSv1.3"), config_type: ConfigType::List },
    KafkaBrokerConfig { name: "ssl.endpoint.identification.algorithm", default: Some("https"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "ssl.keystore.type", default: Some("JKS"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "ssl.protocol", default: Some("TLSv1.3"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "ssl.truststore.type", default: Some("JKS"), config_type: ConfigType::String },
    KafkaBrokerConfig { name: "transaction.abort.timed.out.transaction.cleanup.interval.ms", default: Some("10000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "transaction.max.timeout.ms", default: Some("900000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "transaction.remove.expired.transaction.cleanup.interval.ms", default: Some("3600000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "transaction.state.log.load.buffer.size", default: Some("5242880"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "transaction.state.log.min.isr", default: Some("2"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "transaction.state.log.num.partitions", default: Some("50"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "transaction.state.log.replication.factor", default: Some("3"), config_type: ConfigType::Short },
    KafkaBrokerConfig { name: "transaction.state.log.segment.bytes", default: Some("104857600"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "transactional.id.expiration.ms", default: Some("604800000"), config_type: ConfigType::Int },
    KafkaBrokerConfig { name: "unclean.leader.election.enable", default: Some("false"), config_type: ConfigType::Boolean },
];

/// Kafka names whose value is a Runnel setting under another name.
const ALIASES: &[(&str, &str)] = &[("broker.id", "node.id"), ("log.dir", "data.dir")];

/// One broker setting as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfigEntry {
    /// The name (Kafka's where Kafka has it).
    pub name: &'static str,
    /// The value in effect; `None` is null.
    pub value: Option<String>,
    /// Given explicitly (file, environment, flag): STATIC_BROKER_CONFIG, else DEFAULT_CONFIG.
    pub explicit: bool,
    /// The default (Runnel's where Runnel acts on the setting, else Kafka's).
    pub default: Option<String>,
    /// The type.
    pub config_type: ConfigType,
    /// Whether Runnel acts on the setting; the others are shown with Kafka's default.
    pub acted_on: bool,
    /// What it does: Runnel's doc line, or a note that Runnel does not act on it.
    pub documentation: &'static str,
}

/// Documentation of the settings Runnel does not act on.
const NOT_ACTED_ON: &str =
    "Kafka's setting, shown with Kafka's default; Runnel does not act on it.";

/// Every broker setting, sorted by name: each Kafka name (with Runnel's value where Runnel has
/// the setting), then Runnel's own settings that Kafka does not have.
pub fn broker_config_entries(config: &BrokerConfig) -> Vec<BrokerConfigEntry> {
    let mut entries = BTreeMap::new();
    for kafka in KAFKA_BROKER_CONFIGS {
        let runnel = ALIASES
            .iter()
            .find(|(name, _)| *name == kafka.name)
            .map_or(kafka.name, |(_, runnel)| *runnel);
        let entry = match SETTINGS.iter().find(|s| s.name == runnel) {
            Some(setting) => runnel_entry(
                config,
                kafka.name,
                setting.name,
                setting.default,
                setting.doc,
                kafka.config_type,
                kafka.default,
            ),
            None => BrokerConfigEntry {
                name: kafka.name,
                value: kafka.default.map(str::to_string),
                explicit: false,
                default: kafka.default.map(str::to_string),
                config_type: kafka.config_type,
                acted_on: false,
                documentation: NOT_ACTED_ON,
            },
        };
        entries.insert(kafka.name, entry);
    }
    for setting in SETTINGS {
        if !entries.contains_key(setting.name) {
            let entry = runnel_entry(
                config,
                setting.name,
                setting.name,
                setting.default,
                setting.doc,
                runnel_type(setting.default),
                Some(""),
            );
            entries.insert(setting.name, entry);
        }
    }
    entries.into_values().collect()
}

/// A setting Runnel acts on, reported as `name` (Kafka's) from Runnel's setting `runnel`.
fn runnel_entry(
    config: &BrokerConfig,
    name: &'static str,
    runnel: &'static str,
    runnel_default: &'static str,
    documentation: &'static str,
    config_type: ConfigType,
    kafka_default: Option<&'static str>,
) -> BrokerConfigEntry {
    let given = |names: &[&str]| names.iter().any(|n| config.explicit.contains_key(*n));
    // Settings resolved from more than one source (a shorthand, a derived default) report
    // the value in effect.
    let (value, explicit) = match runnel {
        "listeners" => (render(&config.listeners), given(&["listeners", "listen"])),
        // The shorthands report the first client listener in effect, however it was given.
        "listen" => (config.listen.to_string(), given(&["listen"])),
        "advertise" => (
            config
                .advertised_listeners
                .first()
                .map(|l| format!("{}:{}", l.host, l.port))
                .unwrap_or_default(),
            given(&["advertise"]),
        ),
        "advertised.listeners" => (
            render(&config.advertised_listeners),
            given(&["advertised.listeners", "advertise"]),
        ),
        // The log dirs in effect: `data.dir` alone unless `log.dirs` is given.
        "log.dirs" => (
            config
                .log_dirs
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
            given(&["log.dirs", "data.dir"]),
        ),
        "inter.broker.listener.name" => (
            config.inter_broker_listener_name.clone(),
            given(&["inter.broker.listener.name"]),
        ),
        _ => config
            .setting_value(runnel)
            .unwrap_or_else(|| (runnel_default.to_string(), false)),
    };
    let null_if_empty = |text: String| {
        if text.is_empty() && kafka_default.is_none() {
            None
        } else {
            Some(text)
        }
    };
    BrokerConfigEntry {
        name,
        value: null_if_empty(value),
        explicit,
        default: null_if_empty(runnel_default.to_string()),
        config_type,
        acted_on: true,
        documentation,
    }
}

/// The type of a Runnel-only setting, as its default reads: BOOLEAN, LONG or STRING.
fn runnel_type(default: &str) -> ConfigType {
    if default.parse::<bool>().is_ok() {
        ConfigType::Boolean
    } else if default.parse::<i64>().is_ok() {
        ConfigType::Long
    } else {
        ConfigType::String
    }
}

fn render(listeners: &[Listener]) -> String {
    listeners
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load(overrides: &[(&str, &str)]) -> BrokerConfig {
        let overrides: Vec<_> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BrokerConfig::load(None, &overrides).unwrap()
    }

    fn find<'a>(entries: &'a [BrokerConfigEntry], name: &str) -> &'a BrokerConfigEntry {
        entries.iter().find(|e| e.name == name).unwrap()
    }

    #[test]
    fn the_table_is_large_sorted_and_without_duplicates() {
        assert!(KAFKA_BROKER_CONFIGS.len() >= 100);
        for pair in KAFKA_BROKER_CONFIGS.windows(2) {
            if let [a, b] = pair {
                assert!(a.name < b.name, "{} before {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn every_setting_is_listed_once_with_its_source() {
        let config = load(&[
            ("listen", "127.0.0.1:1"),
            ("log.retention.ms", "5"),
            ("node.id", "3"),
        ]);
        let entries = broker_config_entries(&config);
        for setting in SETTINGS {
            assert_eq!(
                entries.iter().filter(|e| e.name == setting.name).count(),
                1,
                "{}",
                setting.name
            );
        }
        let listeners = find(&entries, "listeners");
        assert_eq!(
            (listeners.value.as_deref(), listeners.explicit),
            (Some("PLAINTEXT://127.0.0.1:1"), true)
        );
        let advertised = find(&entries, "advertised.listeners");
        assert_eq!(
            (advertised.value.as_deref(), advertised.explicit),
            (Some("PLAINTEXT://127.0.0.1:1"), false)
        );
        assert_eq!(find(&entries, "broker.id").value.as_deref(), Some("3"));
        assert!(find(&entries, "broker.id").explicit);
        assert_eq!(
            find(&entries, "log.retention.ms").value.as_deref(),
            Some("5")
        );
        let roles = find(&entries, "process.roles");
        assert_eq!(
            (roles.value.as_deref(), roles.explicit, roles.acted_on),
            (Some("broker,controller"), false, true)
        );
        let messages = find(&entries, "log.flush.interval.messages");
        assert_eq!(
            (
                messages.value.as_deref(),
                messages.explicit,
                messages.acted_on
            ),
            (Some("9223372036854775807"), false, false)
        );
        assert_eq!(find(&entries, "broker.rack").value, None);
        let listen = find(&entries, "listen");
        assert_eq!(
            (listen.value.as_deref(), listen.explicit),
            (Some("127.0.0.1:1"), true)
        );
        let config = load(&[("listeners", "INTERNAL://127.0.0.1:5,CONTROLLER://:6")]);
        let entries = broker_config_entries(&config);
        let listen = find(&entries, "listen");
        assert_eq!(
            (listen.value.as_deref(), listen.explicit),
            (Some("127.0.0.1:5"), false)
        );
        assert_eq!(
            find(&entries, "advertise").value.as_deref(),
            Some("127.0.0.1:5")
        );
        assert_eq!(find(&entries, "log.dirs").value.as_deref(), Some("./data"));
        assert_eq!(
            find(&entries, "min.insync.replicas").config_type,
            ConfigType::Int
        );
    }

    #[test]
    fn runnel_only_settings_are_typed_by_their_default() {
        let entries = broker_config_entries(&load(&[]));
        for (name, config_type) in [
            ("replica.fsync.before.fetch", ConfigType::Boolean),
            ("log.flush.commit.delay.ms", ConfigType::Long),
            ("produce.batch.validation", ConfigType::String),
        ] {
            assert_eq!(find(&entries, name).config_type, config_type, "{name}");
        }
    }

    #[test]
    fn replication_settings_are_acted_on_with_their_values() {
        let config = load(&[("min.insync.replicas", "2")]);
        let entries = broker_config_entries(&config);
        for (name, value, explicit) in [
            ("min.insync.replicas", "2", true),
            ("default.replication.factor", "1", false),
            ("offsets.topic.replication.factor", "3", false),
            ("replica.lag.time.max.ms", "30000", false),
            ("replica.fetch.max.bytes", "1048576", false),
            ("replica.fetch.wait.max.ms", "500", false),
            ("replica.fsync.before.fetch", "true", false),
            ("unclean.leader.election.enable", "false", false),
            ("auto.leader.rebalance.enable", "true", false),
            ("leader.imbalance.check.interval.seconds", "300", false),
        ] {
            let entry = find(&entries, name);
            assert_eq!(
                (entry.value.as_deref(), entry.explicit, entry.acted_on),
                (Some(value), explicit, true),
                "{name}"
            );
        }
    }
}
