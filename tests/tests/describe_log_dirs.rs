//! DescribeLogDirs (key 35) over raw wire requests: the broker's one log directory (the data
//! dir) with every local partition and its size, which grows as records are appended; the
//! volume's total and usable bytes (v4); unknown topics and partitions left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use runnel_e2e::wire::{
    api_key, describe_log_dirs_v4, parse_api_versions_v0, parse_describe_log_dirs_v4,
    LogDirDescription, RawConnection,
};
use runnel_e2e::{
    create_topic, ensure, ensure_eq, list_topics, produce_all, producer, Record, Result,
    TestBroker, TestResult,
};

/// DescribeLogDirs v4 for `topics` (None: all); checks that the answer is the data dir alone,
/// online, with the volume's sizes, and returns it.
fn describe(broker: &TestBroker, topics: Option<&[(&str, &[i32])]>) -> Result<LogDirDescription> {
    let mut connection = RawConnection::connect(broker, Duration::from_secs(10))?;
    let body = connection.flexible_round_trip(
        api_key::DESCRIBE_LOG_DIRS,
        4,
        &describe_log_dirs_v4(topics),
    )?;
    let (error_code, mut log_dirs) = parse_describe_log_dirs_v4(&body)?;
    ensure_eq!(error_code, 0, "top-level error code");
    ensure_eq!(log_dirs.len(), 1, "log dirs in {log_dirs:?}");
    let log_dir = log_dirs.remove(0);
    ensure_eq!(log_dir.error_code, 0, "log dir error code");
    ensure!(
        Path::new(&log_dir.log_dir).is_absolute()
            && Path::new(&log_dir.log_dir).canonicalize()? == broker.data_dir().canonicalize()?,
        "log dir {} is not the data dir {}",
        log_dir.log_dir,
        broker.data_dir().display()
    );
    ensure!(
        log_dir.total_bytes > 0 && (0..=log_dir.total_bytes).contains(&log_dir.usable_bytes),
        "volume bytes: total {}, usable {}",
        log_dir.total_bytes,
        log_dir.usable_bytes
    );
    for replica in log_dir.replicas.values() {
        ensure!(
            replica.offset_lag == 0 && !replica.is_future,
            "a current replica reported as {replica:?}"
        );
    }
    Ok(log_dir)
}

fn records(count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| (None, format!("record {i}").into_bytes()))
        .collect()
}

fn keys(log_dir: &LogDirDescription) -> BTreeSet<(String, i32)> {
    log_dir.replicas.keys().cloned().collect()
}

/// Every partition of every topic the broker lists.
fn listed_partitions(broker: &TestBroker) -> Result<BTreeSet<(String, i32)>> {
    let mut partitions = BTreeSet::new();
    for (topic, count) in list_topics(broker)? {
        for partition in 0..i32::try_from(count)? {
            partitions.insert((topic.clone(), partition));
        }
    }
    Ok(partitions)
}

/// Produced records show in the partition's size, which grows with more; an empty partition
/// is listed with size 0; partitions and topics the broker does not have are left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_size_grows_with_produced_records() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        create_topic(&broker, "sized", 2).await?;
        let producer = producer(&broker, &[])?;
        produce_all(&producer, "sized", Some(0), &records(100)).await?;
        let asked: &[(&str, &[i32])] = &[("sized", &[0, 1, 7, 0]), ("absent", &[0])];

        let before = describe(&broker, Some(asked))?;
        ensure_eq!(
            keys(&before),
            BTreeSet::from([("sized".to_string(), 0), ("sized".to_string(), 1)]),
            "partitions described"
        );
        let size = |log_dir: &LogDirDescription, partition: i32| {
            log_dir
                .replicas
                .get(&("sized".to_string(), partition))
                .map(|r| r.size)
        };
        let size_before = size(&before, 0).ok_or("sized-0 missing")?;
        ensure!(
            size_before > 0,
            "sized-0 holds 100 records in {size_before} bytes"
        );
        ensure_eq!(size(&before, 1), Some(0), "size of the empty sized-1");

        produce_all(&producer, "sized", Some(0), &records(100)).await?;
        let after = describe(&broker, Some(asked))?;
        let size_after = size(&after, 0).ok_or("sized-0 missing")?;
        ensure!(
            size_after > size_before,
            "sized-0 was {size_before} bytes, {size_after} after 100 more records"
        );
        Ok(())
    }
    .await;
    broker.check(result)?;
    Ok(())
}

/// Null topics describe every partition of every topic; ApiVersions advertises v1–4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_topics_describe_every_partition() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        create_topic(&broker, "first", 3).await?;
        create_topic(&broker, "second", 1).await?;
        let producer = producer(&broker, &[])?;
        produce_all(&producer, "second", Some(0), &records(10)).await?;

        // The group coordinator may create `__consumer_offsets` meanwhile: topics only appear,
        // so what is described lies between what is listed before and after.
        let listed_before = listed_partitions(&broker)?;
        ensure!(
            listed_before.len() >= 4,
            "partitions listed: {listed_before:?}"
        );
        let log_dir = describe(&broker, None)?;
        let described = keys(&log_dir);
        let listed_after = listed_partitions(&broker)?;
        ensure!(
            listed_before.is_subset(&described) && described.is_subset(&listed_after),
            "described {described:?}, listed {listed_before:?} before and {listed_after:?} after"
        );
        let sizes: BTreeMap<_, _> = log_dir.replicas.iter().map(|(k, r)| (k, r.size)).collect();
        ensure!(
            sizes
                .get(&("second".to_string(), 0))
                .is_some_and(|s| *s > 0),
            "second-0 holds 10 records: {sizes:?}"
        );

        let mut connection = RawConnection::connect(&broker, Duration::from_secs(10))?;
        let (_, ranges) =
            parse_api_versions_v0(&connection.round_trip(api_key::API_VERSIONS, 0, &[])?)?;
        ensure!(
            ranges
                .iter()
                .any(|r| r.api_key == api_key::DESCRIBE_LOG_DIRS && r.min == 1 && r.max == 4),
            "ApiVersions: {ranges:?}"
        );
        Ok(())
    }
    .await;
    broker.check(result)?;
    Ok(())
}
