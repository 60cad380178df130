//! The cluster APIs on a single node (DescribeCluster, DescribeQuorum,
//! DescribeTopicPartitions), over raw wire
//! requests, and the upgrade of a data directory written by the single-node release (topic
//! files in `__topics/`, id-keyed partition directories, committed offsets, a producer-id
//! block file) into the metadata log.

#![allow(clippy::indexing_slicing)]

use std::time::Duration;

use rdkafka::Offset;
use runnel_e2e::wire::{
    api_key, init_producer_id_v0, parse_api_versions_v0, parse_init_producer_id_v0, put_i32,
    RawConnection,
};
use runnel_e2e::{
    commit_offset, committed_offset, committer, create_topic_with, ensure, ensure_eq, list_topics,
    produce_all, producer, read_all, Record, Result, TestBroker, TestResult,
};

const DESCRIBE_QUORUM: i16 = 55;
const DESCRIBE_CLUSTER: i16 = 60;
const DESCRIBE_TOPIC_PARTITIONS: i16 = 75;

/// A cursor over a flexible-version response body (compact strings and arrays, tagged fields).
struct Compact<'a> {
    bytes: &'a [u8],
}

impl<'a> Compact<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(self.bytes.len() >= n, "response ends early");
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn i8(&mut self) -> Result<i8> {
        Ok(i8::from_be_bytes(self.take(1)?.try_into()?))
    }

    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }

    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into()?))
    }

    fn uvarint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    /// A compact nullable string.
    fn string(&mut self) -> Result<Option<String>> {
        match self.uvarint()? {
            0 => Ok(None),
            n => Ok(Some(String::from_utf8(
                self.take(usize::try_from(n - 1)?)?.to_vec(),
            )?)),
        }
    }

    fn bool(&mut self) -> Result<bool> {
        Ok(self.take(1)?[0] != 0)
    }

    /// A compact array of int32.
    fn i32s(&mut self) -> Result<Option<Vec<i32>>> {
        match self.uvarint()? {
            0 => Ok(None),
            n => (1..n)
                .map(|_| self.i32())
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    /// A compact array's length.
    fn array(&mut self) -> Result<usize> {
        Ok(usize::try_from(self.uvarint()?.saturating_sub(1))?)
    }

    /// Skips tagged fields.
    fn tags(&mut self) -> Result<()> {
        for _ in 0..self.uvarint()? {
            let _tag = self.uvarint()?;
            let size = usize::try_from(self.uvarint()?)?;
            self.take(size)?;
        }
        Ok(())
    }
}

/// Sends a flexible request and returns its response body after the header's tagged fields.
fn flexible_round_trip(
    connection: &mut RawConnection,
    api_key: i16,
    version: i16,
    body: &[u8],
) -> Result<Vec<u8>> {
    let correlation_id = connection.send_flexible_request(api_key, version, body)?;
    let response = connection.read_response(correlation_id)?;
    let mut reader = Compact { bytes: &response };
    reader.tags()?;
    Ok(reader.bytes.to_vec())
}

fn cluster_id(broker: &TestBroker) -> Result<String> {
    let text = std::fs::read_to_string(broker.data_dir().join("meta.properties"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("cluster.id="))
        .map(str::to_string)
        .ok_or_else(|| "meta.properties has no cluster.id".into())
}

/// DescribeCluster v0 and v1 list this broker at its advertised address, as the controller,
/// with the cluster id of `meta.properties`; ApiVersions advertises both new APIs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_cluster_lists_this_broker_as_the_controller() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(10))?;
        let body = connection.round_trip(api_key::API_VERSIONS, 0, &[])?;
        let (_, ranges) = parse_api_versions_v0(&body)?;
        for (key, max) in [
            (DESCRIBE_QUORUM, 1),
            (DESCRIBE_CLUSTER, 2),
            (DESCRIBE_TOPIC_PARTITIONS, 0),
        ] {
            ensure!(
                ranges
                    .iter()
                    .any(|r| r.api_key == key && r.min == 0 && r.max == max),
                "ApiVersions lists key {key} as 0..={max}: {ranges:?}"
            );
        }
        let expected_cluster_id = cluster_id(&broker)?;
        for version in [0i16, 1] {
            // include_cluster_authorized_operations = false; v1: endpoint_type = 1 (brokers).
            let mut request = vec![0u8];
            if version >= 1 {
                request.push(1);
            }
            request.push(0); // tagged fields
            let body = flexible_round_trip(&mut connection, DESCRIBE_CLUSTER, version, &request)?;
            let mut reader = Compact { bytes: &body };
            let _throttle = reader.i32()?;
            ensure_eq!(reader.i16()?, 0, "DescribeCluster v{version} error code");
            let _message = reader.string()?;
            if version >= 1 {
                ensure_eq!(reader.i8()?, 1, "endpoint type");
            }
            ensure_eq!(
                reader.string()?,
                Some(expected_cluster_id.clone()),
                "cluster id"
            );
            ensure_eq!(reader.i32()?, 0, "controller id");
            ensure_eq!(reader.array()?, 1, "brokers");
            ensure_eq!(reader.i32()?, 0, "broker id");
            ensure_eq!(
                reader.string()?,
                Some(broker.addr().ip().to_string()),
                "broker host"
            );
            ensure_eq!(
                reader.i32()?,
                i32::from(broker.addr().port()),
                "broker port"
            );
            ensure_eq!(reader.string()?, None, "rack");
        }
        Ok(())
    }
    .await;
    broker.check(result)
}

/// DescribeQuorum v0 and v1: this node alone is the voter and the leader, at a positive epoch,
/// with a high watermark that grows as the metadata log does (a CreateTopics commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_quorum_shows_this_node_leading_the_metadata_log() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(10))?;
        let mut request = vec![2u8]; // one topic
        request.push(u8::try_from("__cluster_metadata".len() + 1)?);
        request.extend_from_slice(b"__cluster_metadata");
        request.push(2); // one partition
        put_i32(&mut request, 0);
        request.extend_from_slice(&[0, 0, 0]); // partition, topic, request tagged fields
        let mut high_watermarks = Vec::new();
        for version in [0i16, 1] {
            let body = flexible_round_trip(&mut connection, DESCRIBE_QUORUM, version, &request)?;
            let mut reader = Compact { bytes: &body };
            ensure_eq!(reader.i16()?, 0, "DescribeQuorum v{version} error code");
            ensure_eq!(reader.array()?, 1, "topics");
            ensure_eq!(
                reader.string()?,
                Some("__cluster_metadata".to_string()),
                "topic"
            );
            ensure_eq!(reader.array()?, 1, "partitions");
            ensure_eq!(reader.i32()?, 0, "partition index");
            ensure_eq!(reader.i16()?, 0, "partition error code");
            ensure_eq!(reader.i32()?, 0, "leader id");
            let epoch = reader.i32()?;
            ensure!(epoch >= 1, "leader epoch {epoch}");
            let high_watermark = reader.i64()?;
            ensure_eq!(reader.array()?, 1, "voters");
            ensure_eq!(reader.i32()?, 0, "voter id");
            let log_end = reader.i64()?;
            ensure!(
                log_end >= high_watermark,
                "voter log end {log_end} below the high watermark {high_watermark}"
            );
            high_watermarks.push(high_watermark);
            create_topic_with(&broker, &format!("t{version}"), 1, &[]).await?;
        }
        ensure!(
            high_watermarks[1] > high_watermarks[0],
            "the high watermark grew with a CreateTopics: {high_watermarks:?}"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// (partition, leader) pairs, and the next cursor (topic, partition).
type Page = (Vec<(i32, i32)>, Option<(String, i32)>);

/// One DescribeTopicPartitions v0 request for `topic` with at most `limit` partitions,
/// starting at `cursor`: (partition indexes with their leaders, next cursor).
fn describe_topic_partitions(
    connection: &mut RawConnection,
    topic: &str,
    limit: i32,
    cursor: Option<i32>,
) -> Result<Page> {
    let mut request = vec![2u8, u8::try_from(topic.len() + 1)?];
    request.extend_from_slice(topic.as_bytes());
    request.push(0); // topic tagged fields
    put_i32(&mut request, limit);
    match cursor {
        None => request.push(0xff), // null cursor
        Some(partition) => {
            request.push(1);
            request.push(u8::try_from(topic.len() + 1)?);
            request.extend_from_slice(topic.as_bytes());
            put_i32(&mut request, partition);
            request.push(0);
        }
    }
    request.push(0); // request tagged fields
    let body = flexible_round_trip(connection, DESCRIBE_TOPIC_PARTITIONS, 0, &request)?;
    let mut reader = Compact { bytes: &body };
    let _throttle = reader.i32()?;
    ensure_eq!(reader.array()?, 1, "topics");
    ensure_eq!(reader.i16()?, 0, "topic error code");
    ensure_eq!(reader.string()?, Some(topic.to_string()), "topic name");
    reader.take(16)?; // topic id
    ensure!(!reader.bool()?, "is_internal");
    let mut partitions = Vec::new();
    for _ in 0..reader.array()? {
        ensure_eq!(reader.i16()?, 0, "partition error code");
        let index = reader.i32()?;
        let leader = reader.i32()?;
        let _epoch = reader.i32()?;
        ensure_eq!(reader.i32s()?, Some(vec![leader]), "replicas");
        ensure_eq!(reader.i32s()?, Some(vec![leader]), "ISR");
        let _eligible = reader.i32s()?;
        let _last_known = reader.i32s()?;
        ensure_eq!(reader.i32s()?, Some(Vec::new()), "offline replicas");
        reader.tags()?;
        partitions.push((index, leader));
    }
    let _operations = reader.i32()?;
    reader.tags()?;
    let next = match reader.i8()? {
        -1 => None,
        _ => {
            let name = reader.string()?.unwrap_or_default();
            let partition = reader.i32()?;
            reader.tags()?;
            Some((name, partition))
        }
    };
    Ok((partitions, next))
}

/// DescribeTopicPartitions pages through a topic's partitions with its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_topic_partitions_pages_with_a_cursor() -> TestResult {
    let broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        create_topic_with(&broker, "paged", 3, &[]).await?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(10))?;
        let (first, cursor) = describe_topic_partitions(&mut connection, "paged", 2, None)?;
        ensure_eq!(first, vec![(0, 0), (1, 0)], "first page");
        ensure_eq!(cursor, Some(("paged".to_string(), 2)), "next cursor");
        let (second, cursor) = describe_topic_partitions(&mut connection, "paged", 2, Some(2))?;
        ensure_eq!(second, vec![(2, 0)], "second page");
        ensure_eq!(cursor, None, "no cursor after the last partition");
        Ok(())
    }
    .await;
    broker.check(result)
}

/// A data directory as the single-node release left it — topic files in `__topics/`
/// (id, partition count, config overrides), partition directories keyed by those ids,
/// `__consumer_offsets` with a committed offset, a `producer-id-block` file, and no metadata
/// log — starts, imports its topics with their ids, and serves its records and committed
/// offsets; producer ids continue above the old block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_release_data_directory_is_imported() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "kept";
        let partitions = 2;
        create_topic_with(&broker, topic, partitions, &[("retention.ms", "86400000")]).await?;
        let records: Vec<Record> = (0..100)
            .map(|i| (None, format!("v{i}").into_bytes()))
            .collect();
        produce_all(
            &producer(&broker, &[("acks", "all")])?,
            topic,
            None,
            &records,
        )
        .await?;
        commit_offset(&committer(&broker, "kept-group")?, topic, 17)?;
        let before = read_all(&broker, topic, partitions).await?;
        ensure!(broker.terminate()?.success(), "SIGTERM exit status");

        // Rewrite the data directory as the single-node release had it.
        let data = broker.data_dir();
        let mut ids = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(&data)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((prefix, id)) = name.rsplit_once('.') else {
                continue;
            };
            let Some((topic_name, _)) = prefix.rsplit_once('-') else {
                continue;
            };
            if entry.path().is_dir() && id.len() == 32 {
                ids.entry(topic_name.to_string())
                    .or_insert((id.to_string(), 0))
                    .1 += 1;
            }
        }
        ensure!(
            ids.contains_key(topic) && ids.contains_key("__consumer_offsets"),
            "partition directories found: {ids:?}"
        );
        let topics_dir = data.join("__topics");
        std::fs::create_dir_all(&topics_dir)?;
        for (name, (id, count)) in &ids {
            let mut text = format!("topic.id={id}\nname={name}\npartitions={count}\n");
            if name == topic {
                text.push_str("config.retention.ms=86400000\n");
            } else {
                text.push_str("config.cleanup.policy=compact\n");
            }
            std::fs::write(topics_dir.join(format!("{name}.properties")), text)?;
        }
        std::fs::write(data.join("producer-id-block"), "5000")?;
        // No metadata log: the interim image file and the Raft log directory, whichever exists.
        for metadata in ["__interim_metadata_image.json", "__cluster_metadata"] {
            let path = data.join(metadata);
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else if path.exists() {
                std::fs::remove_file(&path)?;
            }
        }

        broker.start_again()?;
        ensure_eq!(
            list_topics(&broker)?.get(topic).copied(),
            Some(usize::try_from(partitions)?),
            "partitions of the imported topic"
        );
        ensure!(
            read_all(&broker, topic, partitions).await? == before,
            "records after the import differ from those before"
        );
        ensure_eq!(
            committed_offset(&committer(&broker, "kept-group")?, topic)?,
            Offset::Offset(17),
            "committed offset after the import"
        );
        ensure!(
            !topics_dir.exists() && data.join("__topics.imported").is_dir(),
            "__topics renamed __topics.imported"
        );
        for (name, (id, _)) in &ids {
            ensure!(
                broker
                    .partition_dir(name, 0)
                    .to_string_lossy()
                    .ends_with(id.as_str()),
                "{name} keeps its topic id {id}"
            );
        }
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(10))?;
        let body = connection.round_trip(api_key::INIT_PRODUCER_ID, 0, &init_producer_id_v0())?;
        let (error_code, producer_id, _) = parse_init_producer_id_v0(&body)?;
        ensure_eq!(error_code, 0, "InitProducerId error code");
        ensure!(
            producer_id >= 5000,
            "producer id {producer_id} continues above the old block"
        );

        // Imported once: a restart serves the same.
        broker.restart()?;
        ensure!(
            read_all(&broker, topic, partitions).await? == before,
            "records after a restart differ"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}
