//! Broker settings, named as Kafka names them (`num.partitions`, `socket.request.max.bytes`, …)
//! so operators can bring their `server.properties` knowledge.
//!
//! Layering (with the `config` crate): built-in defaults < TOML file (`--config`) < environment
//! (`RUNNEL_*`, `__` for nesting, `_` read as `.`) < command-line flags (`--listen`, `--set
//! NAME=VALUE`, …). Every name is checked against [`SETTINGS`]: an unknown name is an error, never
//! silently ignored. `docs/configuration.md` is checked against the same table by a unit test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Value, ValueKind};
use runnel_protocol::batch::BatchValidation;
use runnel_storage::{FaultInjection, Storage};

pub mod broker_configs;
mod cluster;

pub use cluster::{ClusterConfigError, Listener, ProcessRoles, Voter};

/// One setting the broker understands.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Kafka's property name.
    pub name: &'static str,
    /// Default value, as text.
    pub default: &'static str,
    /// What the setting does (one line, for docs and errors).
    pub doc: &'static str,
}

/// Every broker setting Runnel accepts. Add a row here (and a field below) to add a setting.
pub const SETTINGS: &[Setting] = &[
    Setting { name: "listen", default: "0.0.0.0:9092", doc: "Shorthand (flag `--listen`): `listen=ADDR` is `listeners=PLAINTEXT://ADDR`. Setting both is an error." },
    Setting { name: "advertise", default: "localhost:9092", doc: "Shorthand (flag `--advertise`): `advertise=HOST:PORT` is `advertised.listeners=PLAINTEXT://HOST:PORT`. Setting both is an error." },
    Setting { name: "data.dir", default: "./data", doc: "Directory holding the partition logs, the metadata log and `meta.properties` (flag `--data-dir`)." },
    Setting { name: "log.dirs", default: "", doc: "Several log directories (JBOD), `DIR,DIR,…`: new partitions go to the one holding the fewest, AlterReplicaLogDirs moves them; the first also holds the metadata log and producer-id state. Overrides `data.dir`. Empty: `data.dir` alone." },
    Setting { name: "node.id", default: "0", doc: "This node's id: its broker id in Metadata and its voter id in the metadata quorum (flag `--node-id`)." },
    Setting { name: "process.roles", default: "broker,controller", doc: "`broker,controller` (combined: serves clients and votes in the metadata quorum) or `broker` (serves clients only; needs `controller.quorum.voters`). Controller-only nodes are not supported yet." },
    Setting { name: "controller.quorum.voters", default: "", doc: "The metadata quorum: `ID@HOST:PORT,…`, each voter's node id and controller listener. Empty: this node alone is the quorum. A controller's `node.id` must be among them." },
    Setting { name: "controller.listener.names", default: "CONTROLLER", doc: "Which of `listeners` carry node-to-node traffic (Raft, forwarded requests, heartbeats); the others serve clients." },
    Setting { name: "listeners", default: "PLAINTEXT://0.0.0.0:9092", doc: "Named listeners to bind, `NAME://HOST:PORT,…` (an empty host binds every interface); the controller listener among them too. Names and ports must be distinct." },
    Setting { name: "advertised.listeners", default: "", doc: "What Metadata tells clients, per client listener: `NAME://HOST:PORT,…`. A client listener not named here is advertised as bound, with 0.0.0.0 or :: read as `localhost`. Names must be client listeners." },
    Setting { name: "listener.security.protocol.map", default: "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT", doc: "Listener name → security protocol, `NAME:PROTOCOL,…`. Every listener needs an entry (a listener named after a protocol, `SSL://…`, has it implicitly); only PLAINTEXT is served, SSL and SASL are refused at start." },
    Setting { name: "inter.broker.listener.name", default: "", doc: "The client listener brokers use to reach each other (replication). Empty: the first client listener." },
    Setting { name: "broker.rack", default: "", doc: "This broker's rack, for rack-aware replica placement. Empty: none." },
    Setting { name: "cluster.id", default: "", doc: "The cluster's id (letters, digits, `_`, `-`), recorded in `meta.properties`: a data directory formatted for another cluster id is refused at start. Required with more than one voter; empty on a single node: generated once." },
    Setting { name: "broker.session.timeout.ms", default: "9000", doc: "A broker that has not heartbeated the active controller for this long is fenced: it leads nothing until it is back." },
    Setting { name: "broker.heartbeat.interval.ms", default: "2000", doc: "How often a broker heartbeats the active controller; must be below `broker.session.timeout.ms`." },
    Setting { name: "num.partitions", default: "1", doc: "Partitions of an auto-created topic, and of CreateTopics with -1." },
    Setting { name: "auto.create.topics.enable", default: "true", doc: "Create an unknown topic when a Metadata request names it and allows auto-creation (producers and consumers do)." },
    Setting { name: "default.replication.factor", default: "1", doc: "Replication factor of auto-created topics and of CreateTopics with -1; checked against the unfenced brokers when the topic is created (more: INVALID_REPLICATION_FACTOR)." },
    Setting { name: "offsets.topic.replication.factor", default: "3", doc: "Replication factor of the internal `__consumer_offsets` topic; in effect min(this, unfenced brokers when it is created), so a smaller cluster still gets its group coordinators." },
    Setting { name: "min.insync.replicas", default: "1", doc: "Default of the topic config `min.insync.replicas`: the ISR size a partition needs to answer acks=all produces and to move its high watermark (fewer: NOT_ENOUGH_REPLICAS)." },
    Setting { name: "replica.lag.time.max.ms", default: "30000", doc: "A follower in the ISR that has not caught up with its leader's log end for this long is removed from the ISR." },
    Setting { name: "replica.fetch.max.bytes", default: "1048576", doc: "Bytes a follower asks for per partition in one replica fetch (at least one batch is returned, however large)." },
    Setting { name: "replica.fetch.wait.max.ms", default: "500", doc: "How long a follower's fetch waits at the leader for new records (its long poll)." },
    Setting { name: "replica.fsync.before.fetch", default: "true", doc: "Runnel: a follower fsyncs what it copied before fetching on, so acks=all means fsynced on every ISR member. false fetches on from the written log end as Kafka does (acks=all then means written on every ISR member)." },
    Setting { name: "unclean.leader.election.enable", default: "false", doc: "Default of the topic config of the same name: a partition whose in-sync replicas are all fenced may elect an out-of-sync replica, losing the records it lacks (logged as a WARN). false waits for an in-sync replica." },
    Setting { name: "auto.leader.rebalance.enable", default: "true", doc: "The active controller moves leadership back to each partition's preferred (first) replica when it is in sync and unfenced, every `leader.imbalance.check.interval.seconds`." },
    Setting { name: "leader.imbalance.check.interval.seconds", default: "300", doc: "How often the preferred-leader check of `auto.leader.rebalance.enable` runs." },
    Setting { name: "socket.request.max.bytes", default: "104857600", doc: "Largest request frame accepted; larger frames close the connection before their body is read." },
    Setting { name: "message.max.bytes", default: "1048588", doc: "Largest record batch accepted (topic override `max.message.bytes`)." },
    Setting { name: "log.segment.bytes", default: "1073741824", doc: "Roll a new segment when the active one would exceed this size (topic `segment.bytes`)." },
    Setting { name: "log.roll.ms", default: "604800000", doc: "Roll a new segment when the active one is older than this (topic `segment.ms`)." },
    Setting { name: "log.index.interval.bytes", default: "4096", doc: "Bytes of log between two entries of the sparse offset index (topic `index.interval.bytes`)." },
    Setting { name: "log.index.size.max.bytes", default: "10485760", doc: "Largest offset index file; a full index rolls the segment (topic `segment.index.bytes`)." },
    Setting { name: "log.retention.ms", default: "604800000", doc: "Delete closed segments whose newest record is older than this; -1 keeps them forever (topic `retention.ms`)." },
    Setting { name: "log.retention.bytes", default: "-1", doc: "Delete the oldest closed segments while a partition is larger than this; -1 means no limit (topic `retention.bytes`)." },
    Setting { name: "log.flush.interval.ms", default: "100", doc: "Default `flush.ms`: records written with acks 0 or 1 are fsynced at least this often (Kafka leaves this unbounded; a short interval bounds what a power loss can take and keeps a backlog of dirty pages from stalling the fsyncs of acks=all producers)." },
    Setting { name: "log.flush.commit.delay.ms", default: "1", doc: "Group commit for acks=all: how long the fsync of a round whose requests each carried at least 100 records for their partition (producers that batch) may wait for further requests to share it; a request with fewer records ends the wait at once. 0 fsyncs every round at once." },
    Setting { name: "log.flush.device.flush.shared", default: "true", doc: "Group commit for acks=all across partitions: where the unsynced appends of two or more partitions only overwrite blocks already durable (their zero tails, on ext4 or XFS), a flush round writes them all out and flushes the device cache once instead of one fdatasync each. false gives every partition its own fdatasync." },
    Setting { name: "log.retention.check.interval.ms", default: "300000", doc: "How often retention looks at every partition (compaction runs every `log.cleaner.backoff.ms`)." },
    Setting { name: "produce.batch.validation", default: "relaxed", doc: "How deep Produce checks a batch: `relaxed` walks every record of uncompressed batches and checks compressed ones by header and CRC32C (as Redpanda's default); `strict` also decompresses and walks every compressed batch, as Kafka does (for producers that are not trusted). Compacted topics are always strict." },
    Setting { name: "fetch.max.bytes", default: "57671680", doc: "Upper bound on the bytes of one Fetch response, whatever the client asks." },
    Setting { name: "transaction.max.timeout.ms", default: "900000", doc: "Largest `transaction.timeout.ms` InitProducerId accepts." },
    Setting { name: "group.initial.rebalance.delay.ms", default: "3000", doc: "How long the first rebalance of an empty consumer group waits for more members to join (extended by each join, up to the rebalance timeout)." },
    Setting { name: "group.min.session.timeout.ms", default: "6000", doc: "Smallest `session.timeout.ms` a group member may ask for; below it JoinGroup fails with INVALID_SESSION_TIMEOUT." },
    Setting { name: "group.max.session.timeout.ms", default: "1800000", doc: "Largest `session.timeout.ms` a group member may ask for; above it JoinGroup fails with INVALID_SESSION_TIMEOUT." },
    Setting { name: "group.max.size", default: "2147483647", doc: "Members allowed in one consumer group; further joins fail with GROUP_MAX_SIZE_REACHED." },
    Setting { name: "offsets.topic.num.partitions", default: "50", doc: "Partitions of the internal `__consumer_offsets` topic, created (through the controller, its partitions spread over the brokers) by the first FindCoordinator for a group, as Kafka does." },
    Setting { name: "offset.metadata.max.bytes", default: "4096", doc: "Longest metadata string of a committed offset; longer ones get OFFSET_METADATA_TOO_LARGE." },
    Setting { name: "offsets.retention.minutes", default: "10080", doc: "Committed offsets of a group that has been empty this long are deleted." },
    Setting { name: "offsets.retention.check.interval.ms", default: "600000", doc: "How often expired committed offsets are looked for." },
    Setting { name: "max.connections", default: "10000", doc: "Connections served at once; further connections are refused until one closes." },
    Setting { name: "max.connections.per.ip", default: "2147483647", doc: "Connections one client address may hold at once; further ones are closed at accept." },
    Setting { name: "connections.max.idle.ms", default: "600000", doc: "A connection that completes no request (or cannot take a response) for this long is closed; also ends slow-drip clients." },
    Setting { name: "storage.fault.injection", default: "", doc: "Testing knob, never for production: makes one storage operation of the partition logs fail, to test how the broker handles it. `fsync-error-after:N[:PATH_PART]` fails the fsync (or write-out) after N successful ones with EIO, `write-error-after:N[:PATH_PART]` the write after N with ENOSPC, counting only files whose path contains PATH_PART. Empty: no fault." },
    Setting { name: "shutdown.timeout.ms", default: "30000", doc: "On SIGTERM/SIGINT, how long in-flight requests (a Fetch long-poll, a client that keeps sending) may run before their connections are cut; the logs are then flushed and checkpointed either way." },
    Setting { name: "log.cleaner.backoff.ms", default: "15000", doc: "How often the log cleaner looks for partitions to compact (Kafka's setting of the same name), independently of `log.retention.check.interval.ms`." },
    Setting { name: "log.cleaner.dedupe.buffer.size", default: "134217728", doc: "Most memory the log cleaner's key → offset map takes in one clean (24 bytes per key); a dirty range with more keys is cleaned over several rounds." },
    Setting { name: "producer.id.expiration.ms", default: "86400000", doc: "An idempotent producer whose last batch was appended this long ago is forgotten (by the broker's clock; Kafka judges by the batch's max timestamp): its sequence state no longer applies, and it leaves memory and producer snapshots." },
];

/// The broker's typed settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where the first client listener binds (of [`listeners`](Self::listeners)); kept for
    /// code that knows one listener only.
    pub listen: SocketAddr,
    /// The advertised host of the first client listener (of
    /// [`advertised_listeners`](Self::advertised_listeners)).
    pub advertise_host: String,
    /// The advertised port of the first client listener.
    pub advertise_port: i32,
    /// `listeners`: every listener to bind, client and controller listeners alike, in the
    /// order given. Names are upper-case and distinct, ports distinct.
    pub listeners: Vec<Listener>,
    /// `advertised.listeners`: one per client listener, in the order of `listeners`, with the
    /// host and port clients connect to.
    pub advertised_listeners: Vec<Listener>,
    /// `controller.listener.names` (upper-case): the listeners of node-to-node traffic.
    pub controller_listener_names: Vec<String>,
    /// `inter.broker.listener.name`: a client listener (default: the first).
    pub inter_broker_listener_name: String,
    /// `process.roles`.
    pub process_roles: ProcessRoles,
    /// `controller.quorum.voters`; empty: this node alone is the quorum. Ids distinct; when
    /// non-empty and this node is a controller, `node_id` is among them.
    pub quorum_voters: Vec<Voter>,
    /// `broker.rack`.
    pub broker_rack: Option<String>,
    /// `cluster.id` as configured (always set when there is more than one voter); the id in
    /// effect is `Broker::cluster_id` (from `meta.properties`).
    pub cluster_id: Option<String>,
    /// `broker.session.timeout.ms`: fence a broker silent for this long.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`: below the session timeout.
    pub broker_heartbeat_interval_ms: u64,
    /// The first log directory: the metadata log, `meta.properties`, producer-id state.
    pub data_dir: PathBuf,
    /// Every log directory partitions are placed in (`log.dirs`, else `data.dir` alone):
    /// never empty, no two alike, `data_dir` first.
    pub log_dirs: Vec<PathBuf>,
    /// This broker's id.
    pub node_id: i32,
    /// Partitions of auto-created topics.
    pub num_partitions: i32,
    /// Whether unknown topics are created on use.
    pub auto_create_topics_enable: bool,
    /// `default.replication.factor`: of auto-created topics and CreateTopics with -1 (checked
    /// against the unfenced brokers at creation, not here).
    pub default_replication_factor: i16,
    /// `offsets.topic.replication.factor`: of `__consumer_offsets`; in effect min(this,
    /// unfenced brokers at creation).
    pub offsets_topic_replication_factor: i16,
    /// `min.insync.replicas`: broker default of the topic config.
    pub min_insync_replicas: i32,
    /// `replica.lag.time.max.ms`: an ISR member not caught up this long is removed.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.max.bytes`: per partition of a follower's fetch.
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.wait.max.ms`: a follower fetch's long poll.
    pub replica_fetch_wait_max_ms: i32,
    /// `replica.fsync.before.fetch`: a follower fsyncs what it copied before fetching on.
    pub replica_fsync_before_fetch: bool,
    /// `unclean.leader.election.enable`: broker default of the topic config.
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable`: the controller moves leadership back to preferred
    /// replicas.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`: period of that check.
    pub leader_imbalance_check_interval_seconds: u64,
    /// Largest request frame in bytes.
    pub socket_request_max_bytes: usize,
    /// Largest record batch in bytes.
    pub message_max_bytes: usize,
    /// Segment roll size in bytes.
    pub log_segment_bytes: u64,
    /// Segment roll age in milliseconds.
    pub log_roll_ms: i64,
    /// Sparse index spacing in bytes.
    pub log_index_interval_bytes: u32,
    /// Largest offset index in bytes.
    pub log_index_size_max_bytes: u32,
    /// How deep Produce validates compressed batches.
    pub produce_batch_validation: BatchValidation,
    /// Largest Fetch response in bytes.
    pub fetch_max_bytes: usize,
    /// Largest transaction timeout in milliseconds.
    pub transaction_max_timeout_ms: i64,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections per client address.
    pub max_connections_per_ip: usize,
    /// Idle time after which a connection is closed, in milliseconds.
    pub connections_max_idle_ms: u64,
    /// How long shutdown waits for in-flight requests before cutting connections, in ms.
    pub shutdown_timeout_ms: u64,
    /// Interval of the log cleaner's (compaction) passes, in milliseconds.
    pub log_cleaner_backoff_ms: u64,
    /// First rebalance delay of an empty group, in milliseconds.
    pub group_initial_rebalance_delay_ms: u64,
    /// Smallest member session timeout, in milliseconds.
    pub group_min_session_timeout_ms: i32,
    /// Largest member session timeout, in milliseconds.
    pub group_max_session_timeout_ms: i32,
    /// Members per group.
    pub group_max_size: usize,
    /// Partitions of `__consumer_offsets`.
    pub offsets_topic_num_partitions: i32,
    /// Longest commit metadata, in bytes.
    pub offset_metadata_max_bytes: usize,
    /// Offset retention of empty groups, in minutes.
    pub offsets_retention_minutes: i64,
    /// Period of the offset expiry check, in milliseconds.
    pub offsets_retention_check_interval_ms: u64,
    /// Default `retention.ms`.
    pub log_retention_ms: i64,
    /// Default `retention.bytes`.
    pub log_retention_bytes: i64,
    /// Longest wait of a bulk acks=-1 fsync round for company, in milliseconds.
    pub log_flush_commit_delay_ms: u64,
    /// `log.flush.device.flush.shared`: flush rounds may share one device cache flush.
    pub log_flush_device_flush_shared: bool,
    /// Where partition logs keep their files: the real file system, with the fault of
    /// `storage.fault.injection` if one is set (a testing knob).
    pub storage: Storage,
    /// Period of the retention and cleaner pass, in milliseconds.
    pub log_retention_check_interval_ms: u64,
    /// Default `flush.ms`.
    pub log_flush_interval_ms: i64,
    /// `log.cleaner.dedupe.buffer.size`: bound on the cleaner's key → offset map, in bytes.
    pub log_cleaner_dedupe_buffer_size: u64,
    /// `producer.id.expiration.ms`.
    pub producer_id_expiration_ms: i64,
    /// Settings given explicitly (config file, environment or flag), name → value as given;
    /// every other setting has its default. DescribeConfigs reports these as
    /// STATIC_BROKER_CONFIG.
    pub explicit: BTreeMap<String, String>,
}

/// What is wrong with the configuration, in one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting name that Runnel does not know.
    #[error("unknown setting `{name}` (from {origin}); see docs/configuration.md for the supported names")]
    UnknownSetting {
        /// The name as normalised.
        name: String,
        /// Where it came from.
        origin: String,
    },
    /// A value that does not parse as the setting's type or is out of range.
    #[error("invalid value `{value}` for `{name}`: {reason}")]
    InvalidValue {
        /// The setting.
        name: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// The config file or environment could not be read.
    #[error("cannot read configuration: {0}")]
    Source(#[from] config::ConfigError),
    /// A `--set` argument without `=`.
    #[error("`--set {0}`: expected NAME=VALUE")]
    BadOverride(String),
    /// Listeners, quorum, roles or cluster id that do not fit together.
    #[error(transparent)]
    Cluster(#[from] ClusterConfigError),
}

impl BrokerConfig {
    /// Builds the configuration from an optional TOML file, the process environment (`RUNNEL_*`)
    /// and the flag overrides (`name`, `value` pairs, applied last).
    pub fn load(
        file: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<BrokerConfig, ConfigError> {
        let mut builder = Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix("RUNNEL")
                .prefix_separator("_")
                .separator("__"),
        );
        let layered = builder.build()?;
        let mut values = BTreeMap::new();
        for (key, value) in layered.cache.into_table()? {
            flatten(&key, value, &mut values);
        }
        for (name, value) in overrides {
            values.insert(normalise(name), (value.clone(), "command line".to_string()));
        }
        Self::from_values(values)
    }

    fn from_values(
        values: BTreeMap<String, (String, String)>,
    ) -> Result<BrokerConfig, ConfigError> {
        for (name, (_, origin)) in &values {
            if !SETTINGS.iter().any(|s| s.name == name) {
                return Err(ConfigError::UnknownSetting {
                    name: name.clone(),
                    origin: origin.clone(),
                });
            }
        }
        let explicit = values
            .iter()
            .map(|(name, (value, _))| (name.clone(), value.trim().to_string()))
            .collect();
        let settings = Settings { values };
        let node_id = settings.get_in("node.id", 0..=i32::MAX)?;
        let broker_session_timeout_ms =
            settings.get_in("broker.session.timeout.ms", 1..=i32::MAX as u64)?;
        let broker_heartbeat_interval_ms =
            settings.get_in("broker.heartbeat.interval.ms", 1..=i32::MAX as u64)?;
        let cluster = cluster::parse(
            &settings,
            node_id,
            broker_session_timeout_ms,
            broker_heartbeat_interval_ms,
        )?;
        let log_dirs = settings.log_dirs()?;
        let (advertise_host, advertise_port) = cluster
            .advertised_listeners
            .first()
            .map(|l| (l.host.clone(), i32::from(l.port)))
            .unwrap_or_else(|| ("localhost".to_string(), i32::from(cluster.listen.port())));
        Ok(BrokerConfig {
            listen: cluster.listen,
            advertise_host,
            advertise_port,
            listeners: cluster.listeners,
            advertised_listeners: cluster.advertised_listeners,
            controller_listener_names: cluster.controller_listener_names,
            inter_broker_listener_name: cluster.inter_broker_listener_name,
            process_roles: cluster.process_roles,
            quorum_voters: cluster.quorum_voters,
            broker_rack: cluster.broker_rack,
            cluster_id: cluster.cluster_id,
            broker_session_timeout_ms,
            broker_heartbeat_interval_ms,
            data_dir: log_dirs.first().cloned().unwrap_or_default(),
            log_dirs,
            node_id,
            num_partitions: settings.get_in("num.partitions", 1..=100_000)?,
            auto_create_topics_enable: settings.get("auto.create.topics.enable")?,
            default_replication_factor: settings
                .get_in("default.replication.factor", 1..=i16::MAX)?,
            offsets_topic_replication_factor: settings
                .get_in("offsets.topic.replication.factor", 1..=i16::MAX)?,
            min_insync_replicas: settings.get_in("min.insync.replicas", 1..=i32::MAX)?,
            replica_lag_time_max_ms: settings
                .get_in("replica.lag.time.max.ms", 1..=i32::MAX as u64)?,
            replica_fetch_max_bytes: settings.get_in("replica.fetch.max.bytes", 0..=i32::MAX)?,
            replica_fetch_wait_max_ms: settings
                .get_in("replica.fetch.wait.max.ms", 0..=i32::MAX)?,
            replica_fsync_before_fetch: settings.get("replica.fsync.before.fetch")?,
            unclean_leader_election_enable: settings.get("unclean.leader.election.enable")?,
            auto_leader_rebalance_enable: settings.get("auto.leader.rebalance.enable")?,
            leader_imbalance_check_interval_seconds: settings.get_in(
                "leader.imbalance.check.interval.seconds",
                1..=i32::MAX as u64,
            )?,
            socket_request_max_bytes: settings
                .get_in("socket.request.max.bytes", 64..=i32::MAX as usize)?,
            message_max_bytes: settings.get_in("message.max.bytes", 0..=i32::MAX as usize)?,
            log_segment_bytes: settings.get_in("log.segment.bytes", 14..=i32::MAX as u64)?,
            log_roll_ms: settings.get_in("log.roll.ms", 1..=i64::MAX)?,
            log_index_interval_bytes: settings
                .get_in("log.index.interval.bytes", 0..=i32::MAX as u32)?,
            log_index_size_max_bytes: settings
                .get_in("log.index.size.max.bytes", 8..=i32::MAX as u32)?,
            produce_batch_validation: settings.get("produce.batch.validation")?,
            fetch_max_bytes: settings.get_in("fetch.max.bytes", 1024..=i32::MAX as usize)?,
            transaction_max_timeout_ms: settings
                .get_in("transaction.max.timeout.ms", 1..=i32::MAX as i64)?,
            max_connections: settings.get_in("max.connections", 1..=1_000_000)?,
            max_connections_per_ip: settings
                .get_in("max.connections.per.ip", 1..=i32::MAX as usize)?,
            connections_max_idle_ms: settings
                .get_in("connections.max.idle.ms", 1..=i64::MAX as u64)?,
            shutdown_timeout_ms: settings.get_in("shutdown.timeout.ms", 0..=i64::MAX as u64)?,
            log_cleaner_backoff_ms: settings
                .get_in("log.cleaner.backoff.ms", 1..=i64::MAX as u64)?,
            group_initial_rebalance_delay_ms: settings
                .get_in("group.initial.rebalance.delay.ms", 0..=i32::MAX as u64)?,
            group_min_session_timeout_ms: settings
                .get_in("group.min.session.timeout.ms", 0..=i32::MAX)?,
            group_max_session_timeout_ms: settings
                .get_in("group.max.session.timeout.ms", 0..=i32::MAX)?,
            group_max_size: settings.get_in("group.max.size", 1..=i32::MAX as usize)?,
            offsets_topic_num_partitions: settings
                .get_in("offsets.topic.num.partitions", 1..=10_000)?,
            // Stored as an i16-length string in Kafka's OffsetCommitValue.
            offset_metadata_max_bytes: settings
                .get_in("offset.metadata.max.bytes", 0..=i16::MAX as usize)?,
            offsets_retention_minutes: settings
                .get_in("offsets.retention.minutes", 1..=i64::from(i32::MAX))?,
            offsets_retention_check_interval_ms: settings
                .get_in("offsets.retention.check.interval.ms", 1..=i64::MAX as u64)?,
            log_retention_ms: settings.get_in("log.retention.ms", -1..=i64::MAX)?,
            log_retention_bytes: settings.get_in("log.retention.bytes", -1..=i64::MAX)?,
            log_retention_check_interval_ms: settings
                .get_in("log.retention.check.interval.ms", 1..=i64::MAX as u64)?,
            log_flush_interval_ms: settings.get_in("log.flush.interval.ms", 0..=i64::MAX)?,
            log_cleaner_dedupe_buffer_size: settings
                .get_in("log.cleaner.dedupe.buffer.size", 1024..=i64::MAX as u64)?,
            producer_id_expiration_ms: settings
                .get_in("producer.id.expiration.ms", 1..=i64::MAX)?,
            log_flush_commit_delay_ms: settings.get_in("log.flush.commit.delay.ms", 0..=1000)?,
            log_flush_device_flush_shared: settings.get("log.flush.device.flush.shared")?,
            storage: settings.storage()?,
            explicit,
        })
    }

    /// The client listeners: every listener but the controller listeners, in order.
    pub fn client_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners
            .iter()
            .filter(|l| !self.controller_listener_names.contains(&l.name))
    }

    /// The listener of node-to-node traffic (the first of `listeners` named in
    /// `controller.listener.names`), if this node has one. Only controllers bind it.
    pub fn controller_listener(&self) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| self.controller_listener_names.contains(&l.name))
    }

    /// What this broker registers and Metadata tells clients: one endpoint per client
    /// listener, its advertised host and port.
    pub fn advertised_endpoints(&self) -> Vec<crate::metadata::Endpoint> {
        cluster::endpoints(&self.advertised_listeners)
    }

    /// The value in effect of the setting `name`, as text, and whether it was set explicitly
    /// (else it is the default). `None` for a name not in [`SETTINGS`].
    pub fn setting_value(&self, name: &str) -> Option<(String, bool)> {
        if let Some(value) = self.explicit.get(name) {
            return Some((value.clone(), true));
        }
        SETTINGS
            .iter()
            .find(|s| s.name == name)
            .map(|s| (s.default.to_string(), false))
    }
}

/// Setting values by name, with the origin of each for error messages.
struct Settings {
    values: BTreeMap<String, (String, String)>,
}

impl Settings {
    fn raw(&self, name: &str) -> String {
        match self.values.get(name) {
            Some((value, _)) => value.clone(),
            None => SETTINGS
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.default.to_string())
                .unwrap_or_default(),
        }
    }

    fn get<T: std::str::FromStr>(&self, name: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let value = self.raw(name);
        value
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::InvalidValue {
                name: name.to_string(),
                value: value.clone(),
                reason: e.to_string(),
            })
    }

    /// `log.dirs` as a list, or `data.dir` alone when it is empty. Paths are taken as given
    /// (relative to the working directory when relative).
    ///
    /// Errors: `InvalidValue` for an empty entry or a directory named twice.
    fn log_dirs(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let listed = self.raw("log.dirs");
        if listed.trim().is_empty() {
            return Ok(vec![PathBuf::from(self.get::<String>("data.dir")?)]);
        }
        let invalid = |reason: &str| ConfigError::InvalidValue {
            name: "log.dirs".to_string(),
            value: listed.clone(),
            reason: reason.to_string(),
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        for entry in listed.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(invalid("an empty directory name"));
            }
            let dir = PathBuf::from(entry);
            let absolute = |d: &Path| std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf());
            if dirs.iter().any(|d| absolute(d) == absolute(&dir)) {
                return Err(invalid("a directory is named twice"));
            }
            dirs.push(dir);
        }
        Ok(dirs)
    }

    /// The storage of `storage.fault.injection`: the real file system, with its fault if set.
    fn storage(&self) -> Result<Storage, ConfigError> {
        let name = "storage.fault.injection";
        let value = self.raw(name);
        if value.trim().is_empty() {
            return Ok(Storage::real());
        }
        let faults: FaultInjection = self.get(name)?;
        Ok(Storage::real().with_faults(faults))
    }

    fn get_in<T>(&self, name: &str, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let value: T = self.get(name)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::InvalidValue {
                name: name.to_string(),
                value: value.to_string(),
                reason: format!("must be between {} and {}", range.start(), range.end()),
            })
        }
    }
}

/// Kafka names use dots; environment variables cannot, so `_` (and the `__` nesting the config
/// crate turns into `.`) both read as `.`; names are case-insensitive.
fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', '-'], ".")
}

/// Flattens nested tables (`[log] segment.bytes = …`, or `num.partitions = 3` which TOML nests)
/// into dotted names.
fn flatten(prefix: &str, value: Value, out: &mut BTreeMap<String, (String, String)>) {
    let origin = value.origin().unwrap_or("environment").to_string();
    match value.kind {
        ValueKind::Table(table) => {
            for (key, inner) in table {
                flatten(&format!("{prefix}.{key}"), inner, out);
            }
        }
        kind => {
            let text = Value::new(None, kind).into_string().unwrap_or_default();
            out.insert(normalise(prefix), (text, origin));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn load(overrides: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        let overrides: Vec<_> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BrokerConfig::load(None, &overrides)
    }

    #[test]
    fn defaults_serve_a_developer_broker() {
        let config = load(&[]).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9092");
        assert_eq!(
            (config.advertise_host.as_str(), config.advertise_port),
            ("localhost", 9092)
        );
        assert!(config.auto_create_topics_enable);
        assert_eq!(config.num_partitions, 1);
        assert_eq!(config.socket_request_max_bytes, 100 * 1024 * 1024);
    }

    #[test]
    fn unknown_names_and_bad_values_are_errors() {
        assert!(matches!(
            load(&[("num.partitons", "3")]),
            Err(ConfigError::UnknownSetting { .. })
        ));
        assert!(matches!(
            load(&[("num.partitions", "x")]),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            load(&[("num.partitions", "0")]),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert_eq!(load(&[("NUM_PARTITIONS", "3")]).unwrap().num_partitions, 3);
    }

    #[test]
    fn file_values_nest_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runnel.toml");
        std::fs::write(&path, "num.partitions = 4\n\"auto.create.topics.enable\" = false\n[log]\nsegment.bytes = 1000\n").unwrap();
        let config =
            BrokerConfig::load(Some(&path), &[("num.partitions".into(), "6".into())]).unwrap();
        assert_eq!(config.num_partitions, 6);
        assert!(!config.auto_create_topics_enable);
        assert_eq!(config.log_segment_bytes, 1000);
    }

    #[test]
    fn replication_settings_have_kafka_defaults_and_bounds() {
        let config = load(&[]).unwrap();
        assert_eq!(config.default_replication_factor, 1);
        assert_eq!(config.offsets_topic_replication_factor, 3);
        assert_eq!(config.min_insync_replicas, 1);
        assert_eq!(config.replica_lag_time_max_ms, 30_000);
        assert_eq!(config.replica_fetch_max_bytes, 1_048_576);
        assert_eq!(config.replica_fetch_wait_max_ms, 500);
        assert!(config.replica_fsync_before_fetch);
        assert!(!config.unclean_leader_election_enable);
        assert!(config.auto_leader_rebalance_enable);
        assert_eq!(config.leader_imbalance_check_interval_seconds, 300);
        let config = load(&[
            ("default.replication.factor", "3"),
            ("unclean.leader.election.enable", "true"),
            ("replica.fsync.before.fetch", "false"),
        ])
        .unwrap();
        assert_eq!(config.default_replication_factor, 3);
        assert!(config.unclean_leader_election_enable);
        assert!(!config.replica_fsync_before_fetch);
        for (name, value) in [
            ("default.replication.factor", "0"),
            ("default.replication.factor", "32768"),
            ("offsets.topic.replication.factor", "0"),
            ("min.insync.replicas", "0"),
            ("replica.lag.time.max.ms", "0"),
            ("leader.imbalance.check.interval.seconds", "0"),
            ("auto.leader.rebalance.enable", "yes"),
        ] {
            assert!(
                matches!(
                    load(&[(name, value)]),
                    Err(ConfigError::InvalidValue { .. })
                ),
                "{name}={value}"
            );
        }
    }

    /// `log.dirs` lists the log dirs (the first is `data_dir`); empty means `data.dir` alone;
    /// an empty entry or a dir named twice is refused.
    #[test]
    fn log_dirs_override_the_data_dir() {
        let one = load(&[("data.dir", "/d")]).unwrap();
        assert_eq!(one.log_dirs, [PathBuf::from("/d")]);
        assert_eq!(one.data_dir, PathBuf::from("/d"));
        let two = load(&[("data.dir", "/d"), ("log.dirs", " /a , b ")]).unwrap();
        assert_eq!(two.log_dirs, [PathBuf::from("/a"), PathBuf::from("b")]);
        assert_eq!(two.data_dir, PathBuf::from("/a"));
        for refused in ["/a,,/b", "/a,/a", "/a,/a/"] {
            assert!(
                matches!(
                    load(&[("log.dirs", refused)]),
                    Err(ConfigError::InvalidValue { .. })
                ),
                "{refused}"
            );
        }
    }

    #[test]
    fn explicit_settings_are_recorded_with_their_values() {
        let config = load(&[("log.retention.ms", "1000")]).unwrap();
        assert_eq!(
            config.setting_value("log.retention.ms"),
            Some(("1000".to_string(), true))
        );
        assert_eq!(
            config.setting_value("num.partitions"),
            Some(("1".to_string(), false))
        );
        assert_eq!(config.setting_value("no.such.setting"), None);
    }

    #[test]
    fn configuration_doc_lists_every_setting() {
        let doc = include_str!("../../../docs/configuration.md");
        for setting in SETTINGS {
            assert!(
                doc.contains(&format!("`{}`", setting.name)),
                "docs/configuration.md misses {}",
                setting.name
            );
        }
    }
}
