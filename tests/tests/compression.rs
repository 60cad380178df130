//! Round trip of 10,000 keyed records on a 3-partition topic with every compression codec:
//! each record read back exactly once at the offset it was acknowledged with, same key ->
//! same partition with order kept, and the stored batches really carry the codec.

use std::collections::{BTreeMap, HashMap, HashSet};

use runnel_e2e::log_file::partition_batches;
use runnel_e2e::{
    create_topic, ensure, ensure_eq, produce_all, producer, read_all, Record, Result, TestBroker,
    TestResult,
};

const RECORDS: usize = 10_000;
const PARTITIONS: i32 = 3;
const KEYS: usize = 97;

fn value(codec: &str, index: usize) -> Vec<u8> {
    // Repetitive text so every codec actually shrinks it.
    format!(
        "{codec} record {index:06} {}",
        "lorem ipsum dolor sit amet ".repeat(3)
    )
    .into_bytes()
}

fn key(index: usize) -> Vec<u8> {
    format!("key-{:03}", index % KEYS).into_bytes()
}

fn parse_index(value: &[u8]) -> Result<usize> {
    let text = std::str::from_utf8(value)?;
    let field = text
        .split(' ')
        .nth(2)
        .ok_or_else(|| format!("unexpected value {text:?}"))?;
    Ok(field.parse()?)
}

/// Codec id in the batch attributes for a `compression.type` name.
fn codec_id(codec: &str) -> i16 {
    match codec {
        "gzip" => 1,
        "snappy" => 2,
        "lz4" => 3,
        "zstd" => 4,
        _ => 0,
    }
}

async fn round_trip(codec: &str) -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = format!("codec-{codec}");
        create_topic(&broker, &topic, PARTITIONS).await?;
        let producer = producer(&broker, &[("compression.type", codec), ("acks", "all")])?;
        let records: Vec<Record> = (0..RECORDS)
            .map(|i| (Some(key(i)), value(codec, i)))
            .collect();
        let acked = produce_all(&producer, &topic, None, &records).await?;

        // Where each record was acknowledged, and that no position was handed out twice.
        let mut acked_at: HashMap<(i32, i64), usize> = HashMap::new();
        for (index, ack) in acked.iter().enumerate() {
            ensure!(
                (0..PARTITIONS).contains(&ack.partition) && ack.offset >= 0,
                "record {index} acknowledged at invalid position {ack:?}"
            );
            if let Some(previous) = acked_at.insert((ack.partition, ack.offset), index) {
                return Err(
                    format!("records {previous} and {index} both acknowledged at {ack:?}").into(),
                );
            }
        }

        let by_partition = read_all(&broker, &topic, PARTITIONS).await?;
        let total: usize = by_partition.values().map(Vec::len).sum();
        ensure_eq!(total, RECORDS, "records read back");

        let mut seen = HashSet::new();
        let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
        let mut last_index_of_key: HashMap<Vec<u8>, usize> = HashMap::new();
        for (partition, records) in &by_partition {
            for record in records {
                let value_bytes = record.value.as_deref().ok_or("record without a value")?;
                let index = parse_index(value_bytes)?;
                ensure!(seen.insert(index), "record {index} read twice");
                ensure_eq!(
                    value_bytes,
                    value(codec, index).as_slice(),
                    "value of record {index}"
                );
                ensure_eq!(
                    record.key.clone(),
                    Some(key(index)),
                    "key of record {index}"
                );
                ensure_eq!(
                    acked_at.get(&(*partition, record.offset)).copied(),
                    Some(index),
                    "record at {topic}-{partition} offset {} vs acknowledgement",
                    record.offset
                );
                let k = key(index);
                let first = *key_partition.entry(k.clone()).or_insert(*partition);
                ensure!(
                    first == *partition,
                    "key {:?} found in partitions {first} and {partition}",
                    String::from_utf8_lossy(&k)
                );
                if let Some(previous) = last_index_of_key.insert(k, index) {
                    ensure!(
                        previous < index,
                        "{topic}-{partition}: record {index} stored after record {previous} of \
                         the same key (order not kept)"
                    );
                }
            }
        }

        // The broker stored what the client sent: batches carry the codec.
        let expected_codec = codec_id(codec);
        let mut codecs: BTreeMap<i16, usize> = BTreeMap::new();
        for partition in 0..PARTITIONS {
            for batch in partition_batches(&broker.partition_dir(&topic, partition))? {
                ensure_eq!(batch.magic, 2, "magic of a stored batch");
                *codecs.entry(batch.codec()).or_default() += 1;
            }
        }
        ensure!(
            codecs.keys().all(|c| *c == expected_codec),
            "stored batches by codec id {codecs:?}, expected only codec {expected_codec} \
             ({codec}); did the broker advertise the API versions this codec needs?"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_uncompressed() -> TestResult {
    round_trip("none").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_gzip() -> TestResult {
    round_trip("gzip").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_snappy() -> TestResult {
    round_trip("snappy").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_lz4() -> TestResult {
    round_trip("lz4").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_zstd() -> TestResult {
    round_trip("zstd").await
}
