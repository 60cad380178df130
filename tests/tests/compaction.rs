//! Log compaction (`cleanup.policy=compact`): after the cleaner has run, a compacted topic reads
//! back as exactly the latest value per key (tombstoned keys gone), offsets stay strictly
//! increasing for a consumer from offset 0, keyless records are refused, a `kill -9` while the
//! cleaner rewrites segments loses no latest value, `__consumer_offsets` is compacted without
//! losing the last commit, and the cleaner runs on its own schedule (`log.cleaner.backoff.ms`),
//! not only at the retention check.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rdkafka::admin::ResourceSpecifier;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;
use runnel_e2e::log_file::partition_batches;
use runnel_e2e::{
    admin, admin_options, commit_offset, committed_offset, committer, consume_n, consumer_assigned,
    create_topic_with, ensure, ensure_eq, produce_one, producer, seed, wait_until, watermarks,
    Consumed, Result, Rng, TestBroker, TestResult, WAIT_TIMEOUT,
};

/// Broker flags: run retention and the cleaner often.
const CLEANER_ARGS: &[&str] = &[
    "--set",
    "log.retention.check.interval.ms=200",
    "--set",
    "log.cleaner.backoff.ms=200",
];

/// Topic configs that make a small log roll and clean eagerly.
const COMPACTED: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("segment.bytes", "2048"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("delete.retention.ms", "100"),
];

/// Value of a sentinel record: big enough that each one fills its own segment, so the records
/// before it are in closed (cleanable) segments.
const SENTINEL_VALUE_BYTES: usize = 1500;

/// One produced operation: a key and its new value, `None` for a tombstone.
type Op = (Vec<u8>, Option<Vec<u8>>);

async fn create_with(broker: &TestBroker, topic: &str, configs: &[(&str, &str)]) -> Result<()> {
    create_topic_with(broker, topic, 1, configs).await
}

/// Produces `ops` to partition 0 in order (values or tombstones), awaiting each chunk.
async fn produce_ops(producer: &FutureProducer, topic: &str, ops: &[Op]) -> Result<()> {
    for chunk in ops.chunks(10) {
        let mut pending = Vec::with_capacity(chunk.len());
        for (key, value) in chunk {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(topic).key(key.as_slice()).partition(0);
            if let Some(value) = value {
                record = record.payload(value.as_slice());
            }
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| format!("enqueueing a record for {topic}: {e}"))?;
            pending.push(delivery);
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(format!("delivery to {topic} failed: {e}").into()),
                Err(_) => return Err("producer dropped a delivery report".into()),
            }
        }
    }
    Ok(())
}

/// `updates` seeded operations over `keys` keys (about one in eight a tombstone), applied to
/// `model` (key → latest value; tombstoned keys removed). `round` makes values unique per call.
fn workload(rng: &mut Rng, keys: u64, updates: usize, round: u32, model: &mut Model) -> Vec<Op> {
    let mut ops = Vec::with_capacity(updates);
    for n in 0..updates {
        let key = format!("key-{:03}", rng.range(0, keys)).into_bytes();
        let value = (rng.range(0, 8) != 0).then(|| {
            let mut value = format!("r{round}-n{n}-").into_bytes();
            value.resize(60 + rng.range(0, 60) as usize, b'v');
            value
        });
        match &value {
            Some(value) => model.insert(key.clone(), value.clone()),
            None => model.remove(&key),
        };
        ops.push((key, value));
    }
    ops
}

/// Key → latest value; a deleted key is absent.
type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Two records with unique keys and large values, each filling a segment of its own, so every
/// record produced before them sits in a closed segment the cleaner may rewrite.
fn sentinels(round: u32) -> Vec<Op> {
    (0..2)
        .map(|i| {
            (
                format!("sentinel-{round}-{i}").into_bytes(),
                Some(vec![b's'; SENTINEL_VALUE_BYTES]),
            )
        })
        .collect()
}

fn is_sentinel(key: Option<&[u8]>) -> bool {
    key.is_some_and(|k| k.starts_with(b"sentinel-"))
}

/// Reads partition 0 of `topic` from offset 0 up to its high watermark (whose last record, a
/// sentinel in the active segment, is never cleaned away) and checks the offsets strictly
/// increase.
async fn read_log(broker: &TestBroker, topic: &str) -> Result<Vec<Consumed>> {
    let (_, high) = watermarks(broker, topic, 0)?;
    let consumer = consumer_assigned(broker, topic, &[0], Offset::Offset(0))?;
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut records: Vec<Consumed> = Vec::new();
    while records.last().is_none_or(|r| r.offset < high - 1) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let got = consume_n(&consumer, 1, remaining)
            .await
            .map_err(|e| format!("reading {topic} up to offset {}: {e}", high - 1))?;
        for record in got {
            if let Some(last) = records.last() {
                ensure!(
                    record.offset > last.offset,
                    "{topic}: offset {} read after {} (offsets must strictly increase)",
                    record.offset,
                    last.offset
                );
            }
            records.push(record);
        }
    }
    Ok(records)
}

/// The latest value per key as a consumer of `records` sees it (tombstones delete).
fn latest_values(records: &[Consumed]) -> Model {
    let mut seen = Model::new();
    for record in records.iter().filter(|r| !is_sentinel(r.key.as_deref())) {
        let Some(key) = record.key.clone() else {
            continue;
        };
        match &record.value {
            Some(value) => seen.insert(key, value.clone()),
            None => seen.remove(&key),
        };
    }
    seen
}

/// Whether `records` are fully cleaned: each non-sentinel key once, no tombstone left, values
/// equal to `model`.
fn fully_cleaned(records: &[Consumed], model: &Model) -> bool {
    let data: Vec<&Consumed> = records
        .iter()
        .filter(|r| !is_sentinel(r.key.as_deref()))
        .collect();
    data.len() == model.len()
        && data.iter().all(|r| {
            r.key
                .as_ref()
                .and_then(|k| model.get(k))
                .is_some_and(|v| r.value.as_ref() == Some(v))
        })
}

fn describe_model_difference(seen: &Model, model: &Model) -> String {
    let missing: Vec<String> = model
        .keys()
        .filter(|k| seen.get(*k) != model.get(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let extra: Vec<String> = seen
        .keys()
        .filter(|k| !model.contains_key(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    format!("keys with a wrong or missing latest value: {missing:?}; deleted keys back: {extra:?}")
}

/// Records stored in the partition's `.log` files (batch headers' record counts).
fn records_on_disk(dir: &Path) -> Result<i64> {
    Ok(partition_batches(dir)?
        .iter()
        .map(|b| i64::from(b.record_count))
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_reads_back_the_latest_value_per_key() -> TestResult {
    let broker = TestBroker::start(CLEANER_ARGS)?;
    let result = clean_to_the_latest_value_per_key(&broker, 20).await;
    broker.check(result)
}

/// With a dedupe buffer of 38 keys (1024 bytes, 24 bytes a key at 90 % load) and 100 keys,
/// no clean can cover the dirty records at once: each cleans the prefix whose keys fit and the
/// next goes on from there, until the log holds exactly the latest value per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_converges_over_rounds_with_a_small_dedupe_buffer() -> TestResult {
    let mut args = CLEANER_ARGS.to_vec();
    args.extend(["--set", "log.cleaner.dedupe.buffer.size=1024"]);
    let broker = TestBroker::start(&args)?;
    let result = async {
        clean_to_the_latest_value_per_key(&broker, 100).await?;
        let partial_rounds = broker.log().matches("the dedupe buffer is full").count();
        ensure!(
            partial_rounds >= 2,
            "{partial_rounds} cleans stopped at a full dedupe buffer; expected several"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Produces 600 seeded updates over `keys` keys (and tombstones) to a compacted topic, then
/// polls until the cleaner leaves exactly the latest value per key, checking at every read
/// that no latest value was lost meanwhile.
async fn clean_to_the_latest_value_per_key(broker: &TestBroker, keys: u64) -> Result<()> {
    let topic = "table";
    create_with(broker, topic, COMPACTED).await?;
    let producer = producer(broker, &[("linger.ms", "0"), ("acks", "all")])?;
    let mut rng = Rng::new(1);
    let mut model = Model::new();
    let mut ops = workload(&mut rng, keys, 600, 0, &mut model);
    // Some keys certainly end deleted.
    for key in ["key-000", "key-001", "key-002"] {
        model.remove(key.as_bytes());
        ops.push((key.as_bytes().to_vec(), None));
    }
    produce_ops(&producer, topic, &ops).await?;
    produce_ops(&producer, topic, &sentinels(0)).await?;
    let produced = i64::try_from(ops.len() + 2)?;
    ensure_eq!(watermarks(broker, topic, 0)?.1, produced, "high watermark");

    // Poll until cleaned; at every stage the latest value per key must be intact.
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let last = loop {
        let records = read_log(broker, topic).await?;
        let seen = latest_values(&records);
        ensure!(
            seen == model,
            "{topic} lost data while cleaning: {}",
            describe_model_difference(&seen, &model)
        );
        if fully_cleaned(&records, &model) {
            break records;
        }
        ensure!(
            Instant::now() < deadline,
            "timed out after {WAIT_TIMEOUT:?}: the cleaner never left exactly the latest \
             value per key ({} records read for {} live keys)",
            records.len(),
            model.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    ensure!(
        last.len() < ops.len(),
        "nothing was compacted: {} records",
        last.len()
    );
    let (low, high) = watermarks(broker, topic, 0)?;
    ensure_eq!((low, high), (0, produced), "watermarks after cleaning");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_on_a_compacted_topic_are_invalid() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        create_with(&broker, "keyed", &[("cleanup.policy", "compact")]).await?;
        let producer = producer(&broker, &[("linger.ms", "0")])?;
        match produce_one(&producer, "keyed", Some(0), None, b"no key").await {
            Err(e) => ensure_eq!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::InvalidRecord),
                "error of a keyless record ({e})"
            ),
            Ok(acked) => return Err(format!("keyless record accepted at {acked:?}").into()),
        }
        let keyed = produce_one(&producer, "keyed", Some(0), Some(b"k"), b"v")
            .await
            .map_err(|e| format!("keyed record after the refused one: {e}"))?;
        ensure_eq!(keyed.offset, 0, "offset of the keyed record");
        Ok(())
    }
    .await;
    broker.check(result)
}

/// When, during a clean, the `kill -9` lands.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// As soon as any cleaned or swap file appears in the partition directory.
    CleanerFileSeen,
    /// Once at least this many records have gone from the `.log` files.
    RecordsRemoved(i64),
}

/// Polls `dir` without sleeping (a clean takes milliseconds) until `point` is reached.
fn wait_for_kill_point(dir: &Path, point: KillPoint, produced: i64) -> Result<()> {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let reached = match point {
            KillPoint::CleanerFileSeen => std::fs::read_dir(dir)?.flatten().any(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".cleaned") || name.ends_with(".swap")
            }),
            // A file can vanish under the rename of a swap; just look again.
            KillPoint::RecordsRemoved(n) => {
                records_on_disk(dir).is_ok_and(|stored| produced - stored >= n)
            }
        };
        if reached {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the cleaner never reached {point:?} in {} within {WAIT_TIMEOUT:?}",
            dir.display()
        );
        std::thread::yield_now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_cleaning_keeps_every_latest_value() -> TestResult {
    let mut broker = TestBroker::start(CLEANER_ARGS)?;
    let result = async {
        let topic = "table";
        create_with(&broker, topic, COMPACTED).await?;
        let dir = broker.partition_dir(topic, 0);
        let mut rng = Rng::new(2);
        let mut model = Model::new();
        for round in 0..4u32 {
            let producer = producer(&broker, &[("linger.ms", "0"), ("acks", "all")])?;
            let on_disk_before = records_on_disk(&dir)?;
            let mut ops = workload(&mut rng, 30, 300, round, &mut model);
            ops.extend(sentinels(round));
            produce_ops(&producer, topic, &ops).await?;
            drop(producer);
            let produced = on_disk_before + i64::try_from(ops.len())?;
            let point = if rng.range(0, 2) == 0 {
                KillPoint::CleanerFileSeen
            } else {
                KillPoint::RecordsRemoved(i64::try_from(rng.range(1, 200))?)
            };
            // The cleaner may already have started while we produced; both points are still
            // reached (or passed) and the kill lands somewhere in or after a clean.
            tokio::task::block_in_place(|| wait_for_kill_point(&dir, point, produced))?;
            broker.kill9()?;
            broker.start_again()?;
            let records = read_log(&broker, topic).await?;
            let seen = latest_values(&records);
            ensure!(
                seen == model,
                "round {round}, killed at {point:?}: {}",
                describe_model_difference(&seen, &model)
            );
            let (_, high) = watermarks(&broker, topic, 0)?;
            ensure_eq!(
                high,
                records.last().map_or(0, |r| r.offset + 1),
                "round {round}: high watermark vs last record read"
            );
        }
        let log = broker.log();
        ensure!(
            !log.contains("DELETING segment") && !log.contains("truncated the log"),
            "recovery after kill -9 during cleaning cut the log (seed {})",
            seed()
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_offsets_is_compacted_and_keeps_the_last_commit() -> TestResult {
    let mut broker = TestBroker::start(&[
        "--set",
        "log.cleaner.backoff.ms=200",
        "--set",
        "log.segment.bytes=2048",
        "--set",
        "offsets.topic.num.partitions=1",
    ])?;
    let result = async {
        let topic = "source";
        create_with(&broker, topic, &[]).await?;
        let commits = 300i64;
        {
            let consumer = committer(&broker, "compacted-group")?;
            for offset in 1..=commits {
                commit_offset(&consumer, topic, offset)?;
            }
            ensure_eq!(
                committed_offset(&consumer, topic)?,
                Offset::Offset(commits),
                "committed offset before cleaning"
            );
        }
        let described = admin(&broker)?
            .describe_configs(
                &[ResourceSpecifier::Topic("__consumer_offsets")],
                &admin_options(),
            )
            .await?;
        let resource = described
            .into_iter()
            .next()
            .ok_or("DescribeConfigs returned nothing")?
            .map_err(|code| format!("DescribeConfigs __consumer_offsets: {code:?}"))?;
        ensure_eq!(
            resource.get("cleanup.policy").and_then(|e| e.value.clone()),
            Some("compact".to_string()),
            "cleanup.policy of __consumer_offsets"
        );
        let dir = broker.partition_dir("__consumer_offsets", 0);
        wait_until(
            "the cleaner to remove superseded commits from __consumer_offsets-0",
            WAIT_TIMEOUT,
            || {
                let stored = records_on_disk(&dir);
                async move { Ok(stored? < commits / 2) }
            },
        )
        .await?;
        broker.kill9()?;
        broker.start_again()?;
        let consumer = committer(&broker, "compacted-group")?;
        ensure_eq!(
            committed_offset(&consumer, topic)?,
            Offset::Offset(commits),
            "committed offset after cleaning and kill -9"
        );
        broker.restart()?;
        let consumer = committer(&broker, "compacted-group")?;
        ensure_eq!(
            committed_offset(&consumer, topic)?,
            Offset::Offset(commits),
            "committed offset after a clean restart"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// The cleaner runs every `log.cleaner.backoff.ms`, as Kafka's does, not only at the retention
/// check (`log.retention.check.interval.ms`, left at its 5 minute default here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleaner_runs_on_its_own_backoff_not_the_retention_check() -> TestResult {
    let broker = TestBroker::start(&["--set", "log.cleaner.backoff.ms=200"])?;
    let result = async {
        let topic = "prompt";
        create_with(&broker, topic, COMPACTED).await?;
        let producer = producer(&broker, &[("linger.ms", "0"), ("acks", "all")])?;
        let mut rng = Rng::new(2);
        let mut model = Model::new();
        let ops = workload(&mut rng, 10, 200, 0, &mut model);
        produce_ops(&producer, topic, &ops).await?;
        produce_ops(&producer, topic, &sentinels(0)).await?;
        let dir = broker.partition_dir(topic, 0);
        let produced = i64::try_from(ops.len() + 2)?;
        wait_until("the cleaner compacted the topic", WAIT_TIMEOUT, || async {
            Ok(records_on_disk(&dir)? < produced)
        })
        .await?;
        let records = read_log(&broker, topic).await?;
        let seen = latest_values(&records);
        ensure!(
            seen == model,
            "{topic} lost data while cleaning: {}",
            describe_model_difference(&seen, &model)
        );
        Ok(())
    }
    .await;
    broker.check(result)
}
