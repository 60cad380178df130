//! Real Kafka clients (rdkafka) configured for a [`TestBroker`], and helpers to produce and read
//! back records with everything a test checks: partition, offset, key, value.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::{ensure, Result, TestBroker, WAIT_TIMEOUT};

/// Timeout for one metadata / watermark / admin request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// One record as read back by a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, if any.
    pub value: Option<Vec<u8>>,
}

/// Where a produced record landed, as the broker acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// Partition the broker wrote it to.
    pub partition: i32,
    /// Offset the broker assigned (`-1` with `acks=0`, where the broker sends no response).
    pub offset: i64,
}

/// A record to produce: optional key, value.
pub type Record = (Option<Vec<u8>>, Vec<u8>);

fn base_config(broker: &TestBroker, overrides: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("client.id", "runnel-e2e")
        .set("socket.timeout.ms", "30000");
    for (key, value) in overrides {
        config.set(*key, *value);
    }
    config
}

/// A `FutureProducer` for `broker`; `overrides` are librdkafka settings such as
/// `("acks", "all")` or `("compression.type", "zstd")`.
pub fn producer(broker: &TestBroker, overrides: &[(&str, &str)]) -> Result<FutureProducer> {
    let mut config = base_config(
        broker,
        &[("message.timeout.ms", "30000"), ("linger.ms", "5")],
    );
    for (key, value) in overrides {
        config.set(*key, *value);
    }
    Ok(config.create()?)
}

fn consumer_config(broker: &TestBroker, overrides: &[(&str, &str)]) -> ClientConfig {
    let mut config = base_config(
        broker,
        &[
            // rdkafka requires a group id; nothing is ever committed.
            ("group.id", "runnel-e2e"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ],
    );
    for (key, value) in overrides {
        config.set(*key, *value);
    }
    config
}

/// A `StreamConsumer` assigned (no group membership) to `partitions` of `topic`, each starting
/// at `start`.
pub fn consumer_assigned(
    broker: &TestBroker,
    topic: &str,
    partitions: &[i32],
    start: Offset,
) -> Result<StreamConsumer> {
    consumer_assigned_with(broker, topic, partitions, start, &[])
}

/// [`consumer_assigned`] with librdkafka setting overrides (e.g. `fetch.wait.max.ms`).
pub fn consumer_assigned_with(
    broker: &TestBroker,
    topic: &str,
    partitions: &[i32],
    start: Offset,
    overrides: &[(&str, &str)],
) -> Result<StreamConsumer> {
    let consumer: StreamConsumer = consumer_config(broker, overrides).create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment.add_partition_offset(topic, *partition, start)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// The offset `consumer`'s group has committed for partition 0 of `topic` (an OffsetFetch).
pub fn committed_offset(consumer: &BaseConsumer, topic: &str) -> Result<Offset> {
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    let list = consumer.committed_offsets(wanted, REQUEST_TIMEOUT)?;
    let element = list
        .find_partition(topic, 0)
        .ok_or("OffsetFetch returned no partition")?;
    element.error()?;
    Ok(element.offset())
}

/// A plain consumer for metadata and watermark queries (it never fetches records).
pub fn metadata_client(broker: &TestBroker, overrides: &[(&str, &str)]) -> Result<BaseConsumer> {
    Ok(consumer_config(broker, overrides).create()?)
}

/// An `AdminClient` for `broker`.
pub fn admin(broker: &TestBroker) -> Result<AdminClient<DefaultClientContext>> {
    Ok(base_config(broker, &[]).create()?)
}

/// Admin options with a request timeout.
pub fn admin_options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT))
}

/// Creates `topic` with `partitions` partitions (replication factor 1) and checks the per-topic
/// result is success.
pub async fn create_topic(broker: &TestBroker, topic: &str, partitions: i32) -> Result<()> {
    create_topic_with(broker, topic, partitions, &[]).await
}

/// [`create_topic`] with topic configs (`cleanup.policy`, …).
pub async fn create_topic_with(
    broker: &TestBroker,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let admin = admin(broker)?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (name, value) in configs {
        new_topic = new_topic.set(name, value);
    }
    let results = admin.create_topics([&new_topic], &admin_options()).await?;
    for result in results {
        if let Err((name, code)) = result {
            return Err(format!("CreateTopics {name}: {code:?}").into());
        }
    }
    Ok(())
}

/// A consumer in `group` that is only used to commit and fetch offsets.
pub fn committer(broker: &TestBroker, group: &str) -> Result<BaseConsumer> {
    metadata_client(broker, &[("group.id", group)])
}

/// Commits `offset` for partition 0 of `topic` (OffsetCommit, synchronously).
pub fn commit_offset(consumer: &BaseConsumer, topic: &str, offset: i64) -> Result<()> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(offset))?;
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(|e: KafkaError| format!("committing offset {offset}: {e}").into())
}

/// All topics the broker lists (a metadata request for all topics, which never auto-creates),
/// with their partition counts.
pub fn list_topics(broker: &TestBroker) -> Result<BTreeMap<String, usize>> {
    let client = metadata_client(broker, &[])?;
    let metadata = client.fetch_metadata(None, REQUEST_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect())
}

/// `(low, high)` watermarks of one partition: ListOffsets earliest and latest.
pub fn watermarks(broker: &TestBroker, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let client = metadata_client(broker, &[])?;
    Ok(client.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?)
}

/// Enqueues every record on `topic` (partition chosen by the producer's partitioner from the
/// key, or `partition` if given) and awaits every delivery report, in order. Errors on the first
/// failed delivery.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    records: &[Record],
) -> Result<Vec<Acked>> {
    const IN_FLIGHT_MAX: usize = 10_000;
    let mut acked = Vec::with_capacity(records.len());
    for chunk in records.chunks(IN_FLIGHT_MAX) {
        let mut pending = Vec::with_capacity(chunk.len());
        for (key, value) in chunk {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(value);
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| format!("enqueueing a record for {topic}: {e}"))?;
            pending.push(delivery);
        }
        for (index, delivery) in pending.into_iter().enumerate() {
            match delivery.await {
                Ok(Ok(delivered)) => acked.push(Acked {
                    partition: delivered.partition,
                    offset: delivered.offset,
                }),
                Ok(Err((e, _))) => {
                    return Err(format!(
                        "delivery of record #{} to {topic} failed: {e}",
                        acked.len() + index
                    )
                    .into())
                }
                Err(_) => return Err("producer dropped a delivery report".into()),
            }
        }
    }
    Ok(acked)
}

/// Produces one record and returns where it landed, or the Kafka error of its delivery.
pub async fn produce_one(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: &[u8],
) -> Result<Acked, KafkaError> {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    match producer.send(record, Duration::from_secs(10)).await {
        Ok(delivered) => Ok(Acked {
            partition: delivered.partition,
            offset: delivered.offset,
        }),
        Err((e, _)) => Err(e),
    }
}

/// Receives exactly `n` records, failing if they don't all arrive within `timeout` or the
/// consumer reports an error.
pub async fn consume_n(
    consumer: &StreamConsumer,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Consumed>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(remaining, consumer.recv()).await {
            Ok(Ok(message)) => message,
            Ok(Err(e)) => {
                return Err(
                    format!("consumer error after {} of {n} records: {e}", out.len()).into(),
                )
            }
            Err(_) => {
                return Err(format!(
                    "received only {} of {n} records within {timeout:?}",
                    out.len()
                )
                .into())
            }
        };
        out.push(Consumed {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
        });
    }
    Ok(out)
}

/// Checks that nothing arrives on `consumer` for `window` (and no error is reported).
pub async fn expect_nothing(consumer: &StreamConsumer, window: Duration) -> Result<()> {
    match tokio::time::timeout(window, consumer.recv()).await {
        Err(_) => Ok(()),
        Ok(Ok(message)) => Err(format!(
            "expected no record, got partition {} offset {}",
            message.partition(),
            message.offset()
        )
        .into()),
        Ok(Err(e)) => Err(format!("consumer error while expecting no record: {e}").into()),
    }
}

/// Reads every partition of `topic` from the beginning up to its current high watermark and
/// returns the records per partition, checking offsets are dense from the low watermark.
pub async fn read_all(
    broker: &TestBroker,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, Vec<Consumed>>> {
    let mut expected_total = 0usize;
    let mut marks = BTreeMap::new();
    for partition in 0..partitions {
        let (low, high) = watermarks(broker, topic, partition)?;
        ensure!(
            low == 0,
            "{topic}-{partition}: low watermark {low}, expected 0"
        );
        expected_total += usize::try_from(high - low)?;
        marks.insert(partition, high);
    }
    let ids: Vec<i32> = (0..partitions).collect();
    let consumer = consumer_assigned(broker, topic, &ids, Offset::Beginning)?;
    let records = consume_n(&consumer, expected_total, WAIT_TIMEOUT).await?;
    let mut by_partition: BTreeMap<i32, Vec<Consumed>> =
        (0..partitions).map(|p| (p, Vec::new())).collect();
    for record in records {
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }
    for (partition, records) in &by_partition {
        check_dense(topic, *partition, records, 0)?;
        let high = marks.get(partition).copied().unwrap_or(0);
        ensure!(
            records.len() as i64 == high,
            "{topic}-{partition}: read {} records, high watermark is {high}",
            records.len()
        );
    }
    Ok(by_partition)
}

/// Checks that `records` (of one partition, in the order received) have offsets
/// `first, first+1, ...` with no gap or repeat.
pub fn check_dense(topic: &str, partition: i32, records: &[Consumed], first: i64) -> Result<()> {
    for (index, record) in records.iter().enumerate() {
        let expected = first + index as i64;
        ensure!(
            record.offset == expected,
            "{topic}-{partition}: record #{index} read has offset {}, expected {expected} \
             (offsets must be dense and in order)",
            record.offset
        );
    }
    Ok(())
}

/// Index of consumed records by `(partition, offset)`.
pub fn by_position(records: &[Consumed]) -> HashMap<(i32, i64), &Consumed> {
    records
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect()
}
