//! Hand-encoded Kafka requests over a plain `TcpStream`, for what a well-behaved client never
//! sends: malformed frames, unsupported versions, exact replays of a produce request.
//!
//! Only the few non-flexible request versions the raw tests use are encoded here: ApiVersions
//! v0, InitProducerId v0, Produce v3 (whose body v8 shares; its response is parsed here too),
//! and a v2 record batch.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::{ensure, Result, TestBroker};

/// API keys used by the raw tests.
pub mod api_key {
    /// Produce.
    pub const PRODUCE: i16 = 0;
    /// Fetch.
    pub const FETCH: i16 = 1;
    /// ListOffsets.
    pub const LIST_OFFSETS: i16 = 2;
    /// CreateTopics.
    pub const CREATE_TOPICS: i16 = 19;
    /// ApiVersions.
    pub const API_VERSIONS: i16 = 18;
    /// InitProducerId.
    pub const INIT_PRODUCER_ID: i16 = 22;
    /// DescribeConfigs.
    pub const DESCRIBE_CONFIGS: i16 = 32;
    /// AlterReplicaLogDirs.
    pub const ALTER_REPLICA_LOG_DIRS: i16 = 34;
    /// DescribeLogDirs.
    pub const DESCRIBE_LOG_DIRS: i16 = 35;
    /// IncrementalAlterConfigs.
    pub const INCREMENTAL_ALTER_CONFIGS: i16 = 44;
}

/// A raw connection to the broker.
pub struct RawConnection {
    stream: TcpStream,
    next_correlation_id: i32,
}

/// What happened when waiting for the broker to close a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The broker closed it (read returned 0 or the connection was reset).
    Closed,
    /// The broker sent bytes instead of closing.
    Data(usize),
}

impl RawConnection {
    /// Connects to `broker` with read/write timeouts of `timeout`.
    pub fn connect(broker: &TestBroker, timeout: Duration) -> Result<RawConnection> {
        RawConnection::connect_addr(broker.addr(), timeout)
    }

    /// Connects to a broker at `addr` (one the harness did not start, such as a chaos node in
    /// its own network namespace), with connect, read and write timeouts of `timeout`: a node
    /// behind a partition drops the SYN, and the caller must not hang on it.
    pub fn connect_addr(addr: SocketAddr, timeout: Duration) -> Result<RawConnection> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(RawConnection {
            stream,
            next_correlation_id: 1,
        })
    }

    /// Writes raw bytes. A reset while writing (the broker already closed) is not an error.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        match self.stream.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the broker closes the connection, up to `timeout`; errors if the read
    /// times out with the connection still open.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<CloseOutcome> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) => Ok(CloseOutcome::Closed),
            Ok(n) => Ok(CloseOutcome::Data(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(CloseOutcome::Closed)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(
                format!("broker kept the connection open for {timeout:?} without answering").into(),
            ),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a request with header v1 (api key, version, correlation id, client id) and `body`,
    /// returns the correlation id used.
    pub fn send_request(&mut self, api_key: i16, api_version: i16, body: &[u8]) -> Result<i32> {
        self.send_request_with_header(api_key, api_version, false, body)
    }

    /// Sends a request with header v2 (v1 plus empty tagged fields), as flexible versions use.
    pub fn send_flexible_request(
        &mut self,
        api_key: i16,
        api_version: i16,
        body: &[u8],
    ) -> Result<i32> {
        self.send_request_with_header(api_key, api_version, true, body)
    }

    fn send_request_with_header(
        &mut self,
        api_key: i16,
        api_version: i16,
        flexible: bool,
        body: &[u8],
    ) -> Result<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut frame = Vec::with_capacity(body.len() + 32);
        put_i16(&mut frame, api_key);
        put_i16(&mut frame, api_version);
        put_i32(&mut frame, correlation_id);
        put_string(&mut frame, "runnel-e2e-raw");
        if flexible {
            frame.push(0); // no tagged fields
        }
        frame.extend_from_slice(body);
        let mut sized = Vec::with_capacity(frame.len() + 4);
        put_i32(&mut sized, i32::try_from(frame.len())?);
        sized.extend_from_slice(&frame);
        self.stream.write_all(&sized)?;
        Ok(correlation_id)
    }

    /// Reads one response frame and checks its (v0 header) correlation id; returns the body.
    pub fn read_response(&mut self, correlation_id: i32) -> Result<Vec<u8>> {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| format!("reading response size: {e}"))?;
        let size = i32::from_be_bytes(size);
        ensure!(
            (4..=64 * 1024 * 1024).contains(&size),
            "response frame size {size} is out of range"
        );
        let mut frame = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut frame)
            .map_err(|e| format!("reading response of {size} bytes: {e}"))?;
        let mut reader = Reader::new(&frame);
        let got = reader.i32()?;
        ensure!(
            got == correlation_id,
            "response correlation id {got}, expected {correlation_id}"
        );
        Ok(reader.rest().to_vec())
    }

    /// Sends a flexible-version request (header v2) and reads its response body, after the
    /// response header's tagged fields.
    pub fn flexible_round_trip(
        &mut self,
        api_key: i16,
        api_version: i16,
        body: &[u8],
    ) -> Result<Vec<u8>> {
        let correlation_id = self.send_flexible_request(api_key, api_version, body)?;
        let response = self.read_response(correlation_id)?;
        let mut reader = Reader::new(&response);
        reader.skip_tagged_fields()?;
        Ok(reader.rest().to_vec())
    }

    /// Sends a request and reads its response body.
    pub fn round_trip(&mut self, api_key: i16, api_version: i16, body: &[u8]) -> Result<Vec<u8>> {
        let correlation_id = self.send_request(api_key, api_version, body)?;
        self.read_response(correlation_id)
    }
}

/// One entry of an ApiVersions response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersionRange {
    /// API key.
    pub api_key: i16,
    /// Lowest supported version.
    pub min: i16,
    /// Highest supported version.
    pub max: i16,
}

/// Parses an ApiVersions response body in the v0 format: error code, then the key array.
/// (A broker answers an unsupported ApiVersions version in this format.)
pub fn parse_api_versions_v0(body: &[u8]) -> Result<(i16, Vec<ApiVersionRange>)> {
    let mut reader = Reader::new(body);
    let error_code = reader.i16()?;
    let count = reader.i32()?;
    ensure!(
        (0..=1000).contains(&count),
        "ApiVersions: api key count {count} is out of range"
    );
    let mut ranges = Vec::new();
    for _ in 0..count {
        ranges.push(ApiVersionRange {
            api_key: reader.i16()?,
            min: reader.i16()?,
            max: reader.i16()?,
        });
    }
    Ok((error_code, ranges))
}

/// ApiVersions v3+ body (flexible): client software name and version, no tagged fields.
pub fn api_versions_v3_body() -> Vec<u8> {
    let mut body = Vec::new();
    for s in ["runnel-e2e", "0.1.0"] {
        body.push(s.len() as u8 + 1); // compact string: length + 1 as an unsigned varint
        body.extend_from_slice(s.as_bytes());
    }
    body.push(0); // no tagged fields
    body
}

/// InitProducerId v0 body for an idempotent (non-transactional) producer.
pub fn init_producer_id_v0() -> Vec<u8> {
    let mut body = Vec::new();
    put_i16(&mut body, -1); // transactional_id: null
    put_i32(&mut body, 60_000); // transaction_timeout_ms
    body
}

/// Parses an InitProducerId v0 response: (error code, producer id, producer epoch).
pub fn parse_init_producer_id_v0(body: &[u8]) -> Result<(i16, i64, i16)> {
    let mut reader = Reader::new(body);
    let _throttle_time_ms = reader.i32()?;
    Ok((reader.i16()?, reader.i64()?, reader.i16()?))
}

/// CreateTopics v4 body for one topic with `partitions` partitions of replication factor
/// `replication_factor` (no explicit assignment, no configs).
pub fn create_topics_v4(topic: &str, partitions: i32, replication_factor: i16) -> Vec<u8> {
    let mut body = Vec::new();
    put_i32(&mut body, 1); // one topic
    put_string(&mut body, topic);
    put_i32(&mut body, partitions);
    put_i16(&mut body, replication_factor);
    put_i32(&mut body, 0); // no assignments
    put_i32(&mut body, 0); // no configs
    put_i32(&mut body, 30_000); // timeout_ms
    body.push(0); // validate_only: false
    body
}

/// Parses a CreateTopics v4 response: (topic, error code) per topic.
pub fn parse_create_topics_v4(body: &[u8]) -> Result<Vec<(String, i16)>> {
    let mut reader = Reader::new(body);
    let _throttle_time_ms = reader.i32()?;
    let count = reader.i32()?;
    let mut topics = Vec::new();
    for _ in 0..count {
        let name = reader.string()?;
        let error_code = reader.i16()?;
        let _error_message = reader.nullable_string()?;
        topics.push((name, error_code));
    }
    Ok(topics)
}

/// ElectLeaders API key.
pub const ELECT_LEADERS: i16 = 43;

/// ElectLeaders v1 body: `election_type` (0 preferred, 1 unclean) for `partitions` (topic,
/// indexes); `None` asks for every partition.
pub fn elect_leaders_v1(election_type: i8, partitions: Option<&[(&str, &[i32])]>) -> Vec<u8> {
    let mut body = vec![election_type.to_be_bytes()[0]];
    match partitions {
        None => put_i32(&mut body, -1),
        Some(topics) => {
            put_i32(&mut body, i32::try_from(topics.len()).unwrap_or(i32::MAX));
            for (topic, indexes) in topics {
                put_string(&mut body, topic);
                put_i32(&mut body, i32::try_from(indexes.len()).unwrap_or(i32::MAX));
                for index in *indexes {
                    put_i32(&mut body, *index);
                }
            }
        }
    }
    put_i32(&mut body, 30_000); // timeout_ms
    body
}

/// One partition's ElectLeaders result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionResult {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Error code (0: elected).
    pub error_code: i16,
}

/// Parses an ElectLeaders v1 response: the top-level error code and every partition's result.
pub fn parse_elect_leaders_v1(body: &[u8]) -> Result<(i16, Vec<ElectionResult>)> {
    let mut reader = Reader::new(body);
    let _throttle_time_ms = reader.i32()?;
    let error_code = reader.i16()?;
    let mut results = Vec::new();
    for _ in 0..reader.i32()? {
        let topic = reader.string()?;
        for _ in 0..reader.i32()? {
            let partition = reader.i32()?;
            let partition_error = reader.i16()?;
            let _message = reader.nullable_string()?;
            results.push(ElectionResult {
                topic: topic.clone(),
                partition,
                error_code: partition_error,
            });
        }
    }
    Ok((error_code, results))
}

/// DescribeLogDirs v4 body (flexible): `topics` as (topic, partition indexes); `None` asks
/// for every partition.
pub fn describe_log_dirs_v4(topics: Option<&[TopicPartitions<'_>]>) -> Vec<u8> {
    let mut body = Vec::new();
    put_compact_topic_partitions(&mut body, topics);
    put_uvarint(&mut body, 0); // no tagged fields
    body
}

/// A topic and some of its partition indexes, as requests name them.
pub type TopicPartitions<'a> = (&'a str, &'a [i32]);

/// AlterReplicaLogDirs v2 body (flexible): per target directory, the (topic, partition
/// indexes) to move there.
pub fn alter_replica_log_dirs_v2(dirs: &[(&str, &[TopicPartitions<'_>])]) -> Vec<u8> {
    let mut body = Vec::new();
    put_uvarint(&mut body, dirs.len() as u64 + 1);
    for (path, topics) in dirs {
        put_compact_string(&mut body, path);
        put_compact_topic_partitions(&mut body, Some(topics));
        put_uvarint(&mut body, 0); // no tagged fields
    }
    put_uvarint(&mut body, 0); // no tagged fields
    body
}

/// Parses an AlterReplicaLogDirs v2 response body: (topic, partition, error code) for every
/// partition answered.
pub fn parse_alter_replica_log_dirs_v2(body: &[u8]) -> Result<Vec<(String, i32, i16)>> {
    let mut reader = Reader::new(body);
    let _throttle_time_ms = reader.i32()?;
    let mut results = Vec::new();
    for _ in 0..reader.compact_array_len()? {
        let topic = reader.compact_string()?;
        for _ in 0..reader.compact_array_len()? {
            let partition = reader.i32()?;
            let error_code = reader.i16()?;
            reader.skip_tagged_fields()?;
            results.push((topic.clone(), partition, error_code));
        }
        reader.skip_tagged_fields()?;
    }
    reader.skip_tagged_fields()?;
    ensure!(
        reader.rest().is_empty(),
        "{} bytes after the response",
        reader.rest().len()
    );
    Ok(results)
}

/// One log directory of a DescribeLogDirs response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirDescription {
    /// Error code (0: online).
    pub error_code: i16,
    /// The directory's path.
    pub log_dir: String,
    /// Its partitions as (topic, partition index) → replica.
    pub replicas: std::collections::BTreeMap<(String, i32), LogDirReplica>,
    /// Bytes of the volume holding it (-1: unknown).
    pub total_bytes: i64,
    /// Bytes an unprivileged writer may still allocate there (-1: unknown).
    pub usable_bytes: i64,
}

/// One partition of a log directory in a DescribeLogDirs response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirReplica {
    /// Size of the partition's log in bytes.
    pub size: i64,
    /// How far a future replica lags behind the current one (0 for a current replica).
    pub offset_lag: i64,
    /// Whether this is a future replica (a log being moved between directories).
    pub is_future: bool,
}

/// Parses a DescribeLogDirs v4 response body (as [`RawConnection::flexible_round_trip`]
/// returns it): the top-level error code and every log directory.
pub fn parse_describe_log_dirs_v4(body: &[u8]) -> Result<(i16, Vec<LogDirDescription>)> {
    let mut reader = Reader::new(body);
    let _throttle_time_ms = reader.i32()?;
    let error_code = reader.i16()?;
    let mut log_dirs = Vec::new();
    for _ in 0..reader.compact_array_len()? {
        let dir_error_code = reader.i16()?;
        let log_dir = reader.compact_string()?;
        let mut replicas = std::collections::BTreeMap::new();
        for _ in 0..reader.compact_array_len()? {
            let topic = reader.compact_string()?;
            for _ in 0..reader.compact_array_len()? {
                let partition = reader.i32()?;
                let replica = LogDirReplica {
                    size: reader.i64()?,
                    offset_lag: reader.i64()?,
                    is_future: reader.bool()?,
                };
                reader.skip_tagged_fields()?;
                replicas.insert((topic.clone(), partition), replica);
            }
            reader.skip_tagged_fields()?;
        }
        let total_bytes = reader.i64()?;
        let usable_bytes = reader.i64()?;
        reader.skip_tagged_fields()?;
        log_dirs.push(LogDirDescription {
            error_code: dir_error_code,
            log_dir,
            replicas,
            total_bytes,
            usable_bytes,
        });
    }
    reader.skip_tagged_fields()?;
    ensure!(
        reader.rest().is_empty(),
        "{} bytes after the response",
        reader.rest().len()
    );
    Ok((error_code, log_dirs))
}

/// AlterPartitionReassignments API key.
pub const ALTER_PARTITION_REASSIGNMENTS: i16 = 45;
/// ListPartitionReassignments API key.
pub const LIST_PARTITION_REASSIGNMENTS: i16 = 46;

/// One partition of an AlterPartitionReassignments: topic, partition, target replicas (`None`
/// cancels the reassignment in progress).
pub type ReassignmentRequest<'a> = (&'a str, i32, Option<&'a [i32]>);

/// AlterPartitionReassignments body (flexible) at `version` (0 or 1; v1 carries
/// `allow_replication_factor_change`), one topic entry per partition given.
pub fn alter_partition_reassignments(
    version: i16,
    allow_replication_factor_change: bool,
    partitions: &[ReassignmentRequest<'_>],
) -> Vec<u8> {
    let mut body = Vec::new();
    put_i32(&mut body, 30_000); // timeout_ms
    if version >= 1 {
        body.push(u8::from(allow_replication_factor_change));
    }
    put_uvarint(&mut body, partitions.len() as u64 + 1);
    for (topic, partition, replicas) in partitions {
        put_compact_string(&mut body, topic);
        put_uvarint(&mut body, 2); // one partition
        put_i32(&mut body, *partition);
        match replicas {
            None => put_uvarint(&mut body, 0),
            Some(replicas) => {
                put_uvarint(&mut body, replicas.len() as u64 + 1);
                for replica in *replicas {
                    put_i32(&mut body, *replica);
                }
            }
        }
        put_uvarint(&mut body, 0); // partition: no tagged fields
        put_uvarint(&mut body, 0); // topic: no tagged fields
    }
    put_uvarint(&mut body, 0); // no tagged fields
    body
}

/// One partition's result in an AlterPartitionReassignments response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentResult {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Error code (0: started, or cancelled).
    pub error_code: i16,
}

/// Parses an AlterPartitionReassignments response body at `version` (as
/// [`RawConnection::flexible_round_trip`] returns it): the top-level error code and every
/// partition's result. v1's `allow_replication_factor_change` is checked to be `echoed`.
pub fn parse_alter_partition_reassignments(
    version: i16,
    echoed: bool,
    body: &[u8],
) -> Result<(i16, Vec<ReassignmentResult>)> {
    parse_flexible_partition_results(version >= 1, echoed, body, |topic, reader| {
        let partition = reader.i32()?;
        let error_code = reader.i16()?;
        let _message = reader.compact_nullable_string()?;
        Ok(ReassignmentResult {
            topic: topic.to_owned(),
            partition,
            error_code,
        })
    })
}

/// Parses the flexible response shape `throttle_time_ms`, (if `has_flag`: a boolean that must
/// be `flag`), `error_code`, `error_message`, then topics (name, partitions), each partition
/// read by `partition` (tagged fields skipped after each level), nothing after: the top-level
/// error code and every partition.
fn parse_flexible_partition_results<T>(
    has_flag: bool,
    flag: bool,
    body: &[u8],
    mut partition: impl FnMut(&str, &mut Reader<'_>) -> Result<T>,
) -> Result<(i16, Vec<T>)> {
    let mut reader = Reader::new(body);
    let _throttle_time_ms = reader.i32()?;
    if has_flag {
        let got = reader.bool()?;
        ensure!(got == flag, "the response's flag is {got}, expected {flag}");
    }
    let error_code = reader.i16()?;
    let _message = reader.compact_nullable_string()?;
    let mut results = Vec::new();
    for _ in 0..reader.compact_array_len()? {
        let topic = reader.compact_string()?;
        for _ in 0..reader.compact_array_len()? {
            results.push(partition(&topic, &mut reader)?);
            reader.skip_tagged_fields()?;
        }
        reader.skip_tagged_fields()?;
    }
    reader.skip_tagged_fields()?;
    ensure!(
        reader.rest().is_empty(),
        "{} bytes after the response",
        reader.rest().len()
    );
    Ok((error_code, results))
}

/// ListPartitionReassignments v0 body (flexible): `topics` as (topic, partition indexes);
/// `None` asks for every reassignment in progress.
pub fn list_partition_reassignments_v0(topics: Option<&[(&str, &[i32])]>) -> Vec<u8> {
    let mut body = Vec::new();
    put_i32(&mut body, 30_000); // timeout_ms
    put_compact_topic_partitions(&mut body, topics);
    put_uvarint(&mut body, 0); // no tagged fields
    body
}

/// A reassignment in progress, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The replicas now: target and original.
    pub replicas: Vec<i32>,
    /// Replicas being added.
    pub adding: Vec<i32>,
    /// Replicas being removed.
    pub removing: Vec<i32>,
}

/// Parses a ListPartitionReassignments v0 response body (as
/// [`RawConnection::flexible_round_trip`] returns it): the top-level error code and every
/// reassignment in progress.
pub fn parse_list_partition_reassignments_v0(
    body: &[u8],
) -> Result<(i16, Vec<OngoingReassignment>)> {
    parse_flexible_partition_results(false, false, body, |topic, reader| {
        Ok(OngoingReassignment {
            topic: topic.to_owned(),
            partition: reader.i32()?,
            replicas: reader.compact_i32_array()?,
            adding: reader.compact_i32_array()?,
            removing: reader.compact_i32_array()?,
        })
    })
}

/// Produce v3 body with one batch for one partition.
pub fn produce_v3(acks: i16, topic: &str, partition: i32, batch: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    put_i16(&mut body, -1); // transactional_id: null
    put_i16(&mut body, acks);
    put_i32(&mut body, 30_000); // timeout_ms
    put_i32(&mut body, 1); // one topic
    put_string(&mut body, topic);
    put_i32(&mut body, 1); // one partition
    put_i32(&mut body, partition);
    put_i32(&mut body, i32::try_from(batch.len())?);
    body.extend_from_slice(batch);
    Ok(body)
}

/// The result for one partition of a Produce v3 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProduceResult {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Kafka error code (0 = none).
    pub error_code: i16,
    /// Offset assigned to the batch's first record.
    pub base_offset: i64,
}

/// Parses a Produce v3 response body.
pub fn parse_produce_v3(body: &[u8]) -> Result<Vec<PartitionProduceResult>> {
    Ok(parse_produce(body, 3)?
        .into_iter()
        .map(|(topic, p)| PartitionProduceResult {
            topic,
            partition: p.partition,
            error_code: p.error_code,
            base_offset: p.base_offset,
        })
        .collect())
}

/// Identity of an idempotent batch: producer id, epoch and the sequence of its first record.
#[derive(Debug, Clone, Copy)]
pub struct ProducerIdentity {
    /// Producer id from InitProducerId, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
}

/// Encodes an uncompressed v2 record batch of `values` (no keys, no headers), base offset 0.
pub fn record_batch(values: &[&[u8]], identity: ProducerIdentity, timestamp_ms: i64) -> Vec<u8> {
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, *v)).collect();
    let section = records_section(&records);
    batch_of_section(0, values.len(), &section, identity, timestamp_ms)
}

/// The records section of a v2 batch (uncompressed) holding `records` as (key, value), no
/// headers, timestamp delta 0: what a test compresses for a compressed batch.
pub fn records_section(records: &[(Option<&[u8]>, &[u8])]) -> Vec<u8> {
    let mut section = Vec::new();
    for (index, (key, value)) in records.iter().enumerate() {
        let mut record = Vec::new();
        record.push(0); // attributes
        put_varint(&mut record, 0); // timestamp delta
        put_varint(&mut record, index as i64); // offset delta
        match key {
            Some(key) => {
                put_varint(&mut record, key.len() as i64);
                record.extend_from_slice(key);
            }
            None => put_varint(&mut record, -1),
        }
        put_varint(&mut record, value.len() as i64);
        record.extend_from_slice(value);
        put_varint(&mut record, 0); // headers
        put_varint(&mut section, record.len() as i64);
        section.extend_from_slice(&record);
    }
    section
}

/// A v2 batch, base offset 0, of `record_count` records whose records section is `section`
/// as given (compressed or not, as `attributes` says).
pub fn batch_of_section(
    attributes: i16,
    record_count: usize,
    section: &[u8],
    identity: ProducerIdentity,
    timestamp_ms: i64,
) -> Vec<u8> {
    // From attributes to the end: covered by the CRC.
    let mut tail = Vec::new();
    put_i16(&mut tail, attributes);
    put_i32(&mut tail, record_count as i32 - 1); // last offset delta
    put_i64(&mut tail, timestamp_ms); // base timestamp
    put_i64(&mut tail, timestamp_ms); // max timestamp
    put_i64(&mut tail, identity.producer_id);
    put_i16(&mut tail, identity.producer_epoch);
    put_i32(&mut tail, identity.base_sequence);
    put_i32(&mut tail, record_count as i32);
    tail.extend_from_slice(section);

    let mut batch = Vec::new();
    put_i64(&mut batch, 0); // base offset
    put_i32(&mut batch, (4 + 1 + 4 + tail.len()) as i32); // batch length
    put_i32(&mut batch, -1); // partition leader epoch
    batch.push(2); // magic
    put_i32(&mut batch, crc32c(&tail) as i32);
    batch.extend_from_slice(&tail);
    batch
}

/// The result for one partition of a Produce v8 response (v3's fields plus KIP-467's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProduceResultV8 {
    /// Partition index.
    pub partition: i32,
    /// Kafka error code (0 = none).
    pub error_code: i16,
    /// Offset assigned to the batch's first record, -1 on error.
    pub base_offset: i64,
    /// `record_errors`: (batch index, message) of each record that failed the batch.
    pub record_errors: Vec<(i32, Option<String>)>,
    /// The partition's error message.
    pub error_message: Option<String>,
}

/// Parses a Produce v8 response body (one topic's partitions, in order, across topics).
pub fn parse_produce_v8(body: &[u8]) -> Result<Vec<PartitionProduceResultV8>> {
    Ok(parse_produce(body, 8)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// Parses a non-flexible Produce response body of `version` 3–8 into (topic, result) pairs;
/// the v5+ log start offset and the v8+ record errors are read when the version has them.
fn parse_produce(body: &[u8], version: i16) -> Result<Vec<(String, PartitionProduceResultV8)>> {
    let mut reader = Reader::new(body);
    let mut results = Vec::new();
    let topics = reader.i32()?;
    ensure!(
        (0..=1000).contains(&topics),
        "produce response: {topics} topics"
    );
    for _ in 0..topics {
        let topic = reader.string()?;
        let partitions = reader.i32()?;
        ensure!(
            (0..=10_000).contains(&partitions),
            "produce response: {partitions} partitions"
        );
        for _ in 0..partitions {
            let partition = reader.i32()?;
            let error_code = reader.i16()?;
            let base_offset = reader.i64()?;
            let _log_append_time_ms = reader.i64()?;
            if version >= 5 {
                let _log_start_offset = reader.i64()?;
            }
            let mut record_errors = Vec::new();
            let mut error_message = None;
            if version >= 8 {
                let count = reader.i32()?;
                ensure!(
                    (-1..=1_000_000).contains(&count),
                    "produce response: {count} record errors"
                );
                for _ in 0..count {
                    record_errors.push((reader.i32()?, reader.nullable_string()?));
                }
                error_message = reader.nullable_string()?;
            }
            results.push((
                topic.clone(),
                PartitionProduceResultV8 {
                    partition,
                    error_code,
                    base_offset,
                    record_errors,
                    error_message,
                },
            ));
        }
    }
    Ok(results)
}

/// CRC-32C (Castagnoli), bitwise; inputs here are small.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

/// Appends a big-endian i16.
pub fn put_i16(buf: &mut Vec<u8>, v: i16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian i32.
pub fn put_i32(buf: &mut Vec<u8>, v: i32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian i64.
pub fn put_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Appends a non-flexible string: i16 length, bytes.
pub fn put_string(buf: &mut Vec<u8>, s: &str) {
    put_i16(buf, s.len() as i16);
    buf.extend_from_slice(s.as_bytes());
}

/// Appends an unsigned varint (flexible versions' lengths and tag counts).
pub fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a compact (flexible-version) string: uvarint length + 1, bytes.
pub fn put_compact_string(buf: &mut Vec<u8>, s: &str) {
    put_uvarint(buf, s.len() as u64 + 1);
    buf.extend_from_slice(s.as_bytes());
}

/// Appends a zigzag varint (as used inside record batches).
pub fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// Appends a compact nullable array of (topic, partition indexes), each entry with empty
/// tagged fields, as flexible requests name partitions; `None` is the null array.
pub fn put_compact_topic_partitions(buf: &mut Vec<u8>, topics: Option<&[TopicPartitions<'_>]>) {
    let Some(topics) = topics else {
        put_uvarint(buf, 0);
        return;
    };
    put_uvarint(buf, topics.len() as u64 + 1);
    for (topic, indexes) in topics {
        put_compact_string(buf, topic);
        put_uvarint(buf, indexes.len() as u64 + 1);
        for index in *indexes {
            put_i32(buf, *index);
        }
        put_uvarint(buf, 0); // no tagged fields
    }
}

/// A bounds-checked big-endian reader.
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// Reads from the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let slice = self
            .bytes
            .get(self.position..self.position + N)
            .ok_or_else(|| format!("response truncated at byte {}", self.position))?;
        self.position += N;
        Ok(slice.try_into()?)
    }

    /// Reads an i16.
    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take()?))
    }

    /// Reads an i32.
    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    /// Reads an i64.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take()?))
    }

    /// Reads a non-flexible string.
    pub fn string(&mut self) -> Result<String> {
        let len = self.i16()?;
        ensure!(len >= 0, "null string where a string was expected");
        let len = len as usize;
        let slice = self
            .bytes
            .get(self.position..self.position + len)
            .ok_or("string runs past the end")?;
        self.position += len;
        Ok(String::from_utf8(slice.to_vec())?)
    }

    /// Reads an i8.
    pub fn i8(&mut self) -> Result<i8> {
        Ok(i8::from_be_bytes(self.take()?))
    }

    /// Reads a boolean (one byte, non-zero is true).
    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.i8()? != 0)
    }

    /// Reads a non-flexible nullable string (length -1 is null).
    pub fn nullable_string(&mut self) -> Result<Option<String>> {
        let len = i16::from_be_bytes(
            self.bytes
                .get(self.position..self.position + 2)
                .ok_or_else(|| format!("response truncated at byte {}", self.position))?
                .try_into()?,
        );
        if len < 0 {
            self.position += 2;
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// Reads an unsigned varint.
    pub fn uvarint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.take::<1>()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("unsigned varint longer than 64 bits".into())
    }

    /// Reads a compact (flexible-version) non-null string.
    pub fn compact_string(&mut self) -> Result<String> {
        self.compact_nullable_string()?
            .ok_or_else(|| "null compact string where a string was expected".into())
    }

    /// Reads a compact (flexible-version) nullable string (length 0 is null).
    pub fn compact_nullable_string(&mut self) -> Result<Option<String>> {
        let len = self.uvarint()?;
        if len == 0 {
            return Ok(None);
        }
        let len = usize::try_from(len - 1)?;
        let slice = self
            .bytes
            .get(self.position..self.position + len)
            .ok_or("compact string runs past the end")?;
        self.position += len;
        Ok(Some(String::from_utf8(slice.to_vec())?))
    }

    /// Reads a compact (flexible-version) array of i32.
    pub fn compact_i32_array(&mut self) -> Result<Vec<i32>> {
        (0..self.compact_array_len()?).map(|_| self.i32()).collect()
    }

    /// Reads a compact (flexible-version) array's length; null reads as empty.
    pub fn compact_array_len(&mut self) -> Result<usize> {
        Ok(usize::try_from(self.uvarint()?.saturating_sub(1))?)
    }

    /// Skips a tagged-fields section.
    pub fn skip_tagged_fields(&mut self) -> Result<()> {
        for _ in 0..self.uvarint()? {
            let _tag = self.uvarint()?;
            let size = usize::try_from(self.uvarint()?)?;
            ensure!(
                self.position + size <= self.bytes.len(),
                "tagged field runs past the end"
            );
            self.position += size;
        }
        Ok(())
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }
}

/// Sends a raw request and expects the broker to close the connection (not answer, not hang).
pub fn expect_close_after(broker: &TestBroker, bytes: &[u8], what: &str) -> Result<()> {
    let mut connection = RawConnection::connect(broker, Duration::from_secs(10))?;
    connection.send_raw(bytes)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    match connection.wait_closed(deadline.saturating_duration_since(Instant::now())) {
        Ok(CloseOutcome::Closed) => Ok(()),
        Ok(CloseOutcome::Data(n)) => Err(format!(
            "{what}: broker answered with {n} bytes instead of closing the connection"
        )
        .into()),
        Err(e) => Err(format!("{what}: {e}").into()),
    }
}
