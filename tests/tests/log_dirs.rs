//! Several log directories (`log.dirs`, JBOD): partitions spread over them (fewest first),
//! DescribeLogDirs lists each, AlterReplicaLogDirs (key 34) moves a partition to another
//! while a producer keeps sending, without losing or repeating an acknowledged record, across
//! a restart and a kill -9 right after the move request; errors per partition.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{NewTopic, TopicReplication};
use runnel_e2e::wire::{
    alter_replica_log_dirs_v2, api_key, describe_log_dirs_v4, parse_alter_replica_log_dirs_v2,
    parse_describe_log_dirs_v4, LogDirDescription, RawConnection,
};
use runnel_e2e::{
    admin, admin_options, by_position, create_topic, ensure, ensure_eq, produce_all, produce_one,
    producer, read_all, wait_until, Acked, Record, Result, TestBroker, TestCluster, TestResult,
    WAIT_TIMEOUT,
};

const TOPIC: &str = "jbod";
/// Kafka's LOG_DIR_NOT_FOUND.
const LOG_DIR_NOT_FOUND: i16 = 57;
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Kafka's REPLICA_NOT_AVAILABLE.
const REPLICA_NOT_AVAILABLE: i16 = 9;

/// Two log dirs in a temp dir of their own (the broker's `--data-dir` is then unused).
struct LogDirs {
    _root: tempfile::TempDir,
    dirs: [PathBuf; 2],
}

impl LogDirs {
    fn new() -> Result<LogDirs> {
        let root = tempfile::tempdir()?;
        let dirs = [root.path().join("a"), root.path().join("b")];
        Ok(LogDirs { _root: root, dirs })
    }

    /// Starts a broker on these log dirs, with small segments so a move copies several.
    fn start_broker(&self) -> Result<TestBroker> {
        let setting = format!(
            "log.dirs={},{}",
            self.dirs[0].display(),
            self.dirs[1].display()
        );
        TestBroker::start(&[
            "--set",
            &setting,
            "--set",
            "log.segment.bytes=4096",
            "--set",
            "auto.create.topics.enable=false",
        ])
    }
}

/// The partitions of `topic` whose directories `log_dir` holds (the `-future` copies and
/// `-delete` leftovers count apart: see [`stray_dirs`]).
fn partitions_on_disk(log_dir: &Path, topic: &str) -> Result<BTreeSet<i32>> {
    let mut partitions = BTreeSet::new();
    for entry in std::fs::read_dir(log_dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{topic}-")) else {
            continue;
        };
        if let Some((index, id)) = rest.split_once('.') {
            if id.len() == 32 {
                partitions.insert(index.parse()?);
            }
        }
    }
    Ok(partitions)
}

/// Directories a move or a delete leaves only while in progress.
fn stray_dirs(log_dir: &Path) -> Result<Vec<String>> {
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(log_dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with("-future") || name.ends_with("-delete") {
            stray.push(name);
        }
    }
    Ok(stray)
}

/// DescribeLogDirs v4 of every partition: each configured log dir once (by canonical path),
/// online, with its partitions.
fn describe(broker: &TestBroker, log_dirs: &LogDirs) -> Result<[LogDirDescription; 2]> {
    let mut connection = RawConnection::connect(broker, Duration::from_secs(10))?;
    let body = connection.flexible_round_trip(
        api_key::DESCRIBE_LOG_DIRS,
        4,
        &describe_log_dirs_v4(None),
    )?;
    let (error_code, described) = parse_describe_log_dirs_v4(&body)?;
    ensure_eq!(error_code, 0, "top-level error code");
    ensure_eq!(described.len(), 2, "log dirs in {described:?}");
    let mut by_dir: BTreeMap<PathBuf, LogDirDescription> = BTreeMap::new();
    for log_dir in described {
        ensure_eq!(log_dir.error_code, 0, "error code of {}", log_dir.log_dir);
        ensure!(
            Path::new(&log_dir.log_dir).is_absolute(),
            "{} is not absolute",
            log_dir.log_dir
        );
        by_dir.insert(Path::new(&log_dir.log_dir).canonicalize()?, log_dir);
    }
    let mut take = |dir: &Path| -> Result<LogDirDescription> {
        Ok(by_dir
            .remove(&dir.canonicalize()?)
            .ok_or_else(|| format!("{} is not described", dir.display()))?)
    };
    Ok([take(&log_dirs.dirs[0])?, take(&log_dirs.dirs[1])?])
}

/// The current (not future) partitions of `topic` a described log dir lists.
fn described_partitions(log_dir: &LogDirDescription, topic: &str) -> BTreeSet<i32> {
    log_dir
        .replicas
        .iter()
        .filter(|((t, _), replica)| t == topic && !replica.is_future)
        .map(|((_, partition), _)| *partition)
        .collect()
}

/// Checks that log dir `a` holds exactly `in_a` of [`TOPIC`]'s partitions and `b` exactly
/// `in_b`, on disk (no move or delete left half done) and as DescribeLogDirs reports them.
fn expect_placement(
    broker: &TestBroker,
    log_dirs: &LogDirs,
    in_a: &[i32],
    in_b: &[i32],
) -> Result<()> {
    let described = describe(broker, log_dirs)?;
    for ((dir, expected), described) in log_dirs.dirs.iter().zip([in_a, in_b]).zip(&described) {
        let expected: BTreeSet<i32> = expected.iter().copied().collect();
        ensure_eq!(
            partitions_on_disk(dir, TOPIC)?,
            expected,
            "partitions in {}",
            dir.display()
        );
        ensure_eq!(
            stray_dirs(dir)?,
            Vec::<String>::new(),
            "left in {}",
            dir.display()
        );
        ensure_eq!(
            described_partitions(described, TOPIC),
            expected,
            "partitions described in {}",
            dir.display()
        );
    }
    Ok(())
}

/// AlterReplicaLogDirs v2: moves `partitions` of `topic` to `dir`; the error code of each.
fn alter_replica_log_dirs(
    broker: &TestBroker,
    dir: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(String, i32, i16)>> {
    let mut connection = RawConnection::connect(broker, Duration::from_secs(10))?;
    let body = connection.flexible_round_trip(
        api_key::ALTER_REPLICA_LOG_DIRS,
        2,
        &alter_replica_log_dirs_v2(&[(dir, &[(topic, partitions)])]),
    )?;
    parse_alter_replica_log_dirs_v2(&body)
}

/// Checks the move request was accepted for every partition asked.
fn expect_accepted(results: &[(String, i32, i16)], partitions: &[i32]) -> Result<()> {
    ensure_eq!(
        results.iter().map(|(_, p, _)| *p).collect::<Vec<_>>(),
        partitions.to_vec(),
        "partitions answered"
    );
    for (topic, partition, code) in results {
        ensure_eq!(*code, 0, "error code moving {topic}-{partition}");
    }
    Ok(())
}

/// Reads partition 0 of [`TOPIC`] back and checks every acknowledged record is at its
/// acknowledged offset with its value, and no value is stored twice.
async fn check_partition_0(broker: &TestBroker, acked: &AckLog) -> Result<()> {
    let stored = read_all(broker, TOPIC, 4).await?;
    let partition_0 = stored.get(&0).cloned().unwrap_or_default();
    let index = by_position(&partition_0);
    for (ack, value) in acked {
        let found = index.get(&(ack.partition, ack.offset)).ok_or_else(|| {
            format!(
                "acknowledged record {:?} at offset {} is missing ({} stored)",
                String::from_utf8_lossy(value),
                ack.offset,
                partition_0.len()
            )
        })?;
        ensure_eq!(
            found.value.as_deref(),
            Some(value.as_slice()),
            "value at offset {}",
            ack.offset
        );
    }
    let mut seen = BTreeSet::new();
    for record in &partition_0 {
        ensure!(
            seen.insert(record.value.clone()),
            "value {:?} stored twice (again at offset {})",
            record.value.as_deref().map(String::from_utf8_lossy),
            record.offset
        );
    }
    Ok(())
}

/// Every acknowledged record: where it landed and its value.
type AckLog = Vec<(Acked, Vec<u8>)>;

fn values(prefix: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| (None, format!("{prefix} {i}").into_bytes()))
        .collect()
}

/// Produces `records` to partition 0 and returns each acknowledgement with its value.
async fn produce_to_0(broker: &TestBroker, records: &[Record]) -> Result<AckLog> {
    let producer = producer(broker, &[("acks", "all"), ("enable.idempotence", "true")])?;
    let acked = produce_all(&producer, TOPIC, Some(0), records).await?;
    Ok(acked
        .into_iter()
        .zip(records.iter().map(|(_, value)| value.clone()))
        .collect())
}

/// A 4-partition topic spreads 2/2 over two log dirs; partition 0 moves to the other dir while
/// a producer keeps sending; every acknowledged record reads back once at its offset, the old
/// dir no longer holds it, DescribeLogDirs agrees, and so after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_between_log_dirs_under_load_losing_nothing() -> TestResult {
    let log_dirs = LogDirs::new()?;
    let mut broker = log_dirs.start_broker()?;
    let result = async {
        create_topic(&broker, TOPIC, 4).await?;
        let [_, b] = &log_dirs.dirs;
        expect_placement(&broker, &log_dirs, &[0, 2], &[1, 3])?;

        let mut acked = produce_to_0(&broker, &values("before", 500)).await?;

        // A producer keeps sending (bounded) while the partition moves.
        let load_acked: Arc<Mutex<AckLog>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let producer = producer(&broker, &[("acks", "all"), ("enable.idempotence", "true")])?;
            let (load_acked, stop) = (Arc::clone(&load_acked), Arc::clone(&stop));
            tokio::spawn(async move {
                for i in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let value = format!("during {i}").into_bytes();
                    // A delivery that fails was not acknowledged: nothing to check for it.
                    if let Ok(ack) = produce_one(&producer, TOPIC, Some(0), None, &value).await {
                        if let Ok(mut acked) = load_acked.lock() {
                            acked.push((ack, value));
                        }
                    }
                }
            })
        };
        let acked_so_far = || load_acked.lock().map(|a| a.len()).unwrap_or(0);
        wait_until("records acknowledged before the move", WAIT_TIMEOUT, || {
            let count = acked_so_far();
            async move { Ok(count >= 50) }
        })
        .await?;
        let results = alter_replica_log_dirs(&broker, &b.display().to_string(), TOPIC, &[0])?;
        expect_accepted(&results, &[0])?;
        wait_until("partition 0 listed in b only", WAIT_TIMEOUT, || {
            let moved = describe(&broker, &log_dirs).map(|[in_a, in_b]| {
                !described_partitions(&in_a, TOPIC).contains(&0)
                    && described_partitions(&in_b, TOPIC).contains(&0)
            });
            async move { moved }
        })
        .await?;
        let after_move = acked_so_far();
        wait_until("records acknowledged after the move", WAIT_TIMEOUT, || {
            let count = acked_so_far();
            async move { Ok(count >= after_move + 50) }
        })
        .await?;
        stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(WAIT_TIMEOUT, load)
            .await
            .map_err(|_| "the producer task did not stop")??;
        acked.extend(load_acked.lock().map_err(|_| "poisoned")?.iter().cloned());
        acked.extend(produce_to_0(&broker, &values("after", 200)).await?);
        ensure!(
            broker.log().contains("partition moved to another log dir"),
            "the broker did not log the move"
        );

        expect_placement(&broker, &log_dirs, &[2], &[0, 1, 3])?;
        check_partition_0(&broker, &acked).await?;

        broker.restart()?;
        check_partition_0(&broker, &acked).await?;
        expect_placement(&broker, &log_dirs, &[2], &[0, 1, 3])?;
        Ok(())
    }
    .await;
    broker.check(result)
}

/// kill -9 right after the move request: after a restart the partition is in exactly one log
/// dir (whichever the move reached) with every acknowledged record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_a_move_request_loses_nothing() -> TestResult {
    let log_dirs = LogDirs::new()?;
    let mut broker = log_dirs.start_broker()?;
    let result = async {
        create_topic(&broker, TOPIC, 4).await?;
        let [a, b] = &log_dirs.dirs;
        let acked = produce_to_0(&broker, &values("before", 2_000)).await?;
        let results = alter_replica_log_dirs(&broker, &b.display().to_string(), TOPIC, &[0])?;
        expect_accepted(&results, &[0])?;
        broker.kill9()?;

        broker.start_again()?;
        check_partition_0(&broker, &acked).await?;
        let holders = [a, b]
            .into_iter()
            .filter(|dir| partitions_on_disk(dir, TOPIC).is_ok_and(|p| p.contains(&0)))
            .count();
        ensure_eq!(holders, 1, "log dirs holding partition 0");
        ensure_eq!(stray_dirs(a)?, Vec::<String>::new(), "left in a");
        ensure_eq!(stray_dirs(b)?, Vec::<String>::new(), "left in b");
        // And it still takes records, at the next offsets.
        let more = produce_to_0(&broker, &values("after", 100)).await?;
        ensure_eq!(
            more.first().map(|(ack, _)| ack.offset),
            Some(2_000),
            "first offset after the restart"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// A dir that is not one of `log.dirs`: LOG_DIR_NOT_FOUND; a partition not hosted here:
/// UNKNOWN_TOPIC_OR_PARTITION; the dir a partition is already in: success, nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_errors_are_per_partition() -> TestResult {
    let log_dirs = LogDirs::new()?;
    let broker = log_dirs.start_broker()?;
    let result = async {
        create_topic(&broker, TOPIC, 2).await?;
        let [a, b] = &log_dirs.dirs;
        let elsewhere = b.with_file_name("not-configured");
        let results =
            alter_replica_log_dirs(&broker, &elsewhere.display().to_string(), TOPIC, &[0, 1])?;
        ensure_eq!(
            results,
            vec![
                (TOPIC.to_string(), 0, LOG_DIR_NOT_FOUND),
                (TOPIC.to_string(), 1, LOG_DIR_NOT_FOUND)
            ],
            "moving to a dir not configured"
        );
        let results = alter_replica_log_dirs(&broker, &b.display().to_string(), TOPIC, &[7])?;
        ensure_eq!(
            results,
            vec![(TOPIC.to_string(), 7, UNKNOWN_TOPIC_OR_PARTITION)],
            "a partition the topic does not have"
        );
        let results = alter_replica_log_dirs(&broker, &b.display().to_string(), "absent", &[0])?;
        ensure_eq!(
            results,
            vec![("absent".to_string(), 0, UNKNOWN_TOPIC_OR_PARTITION)],
            "a topic that does not exist"
        );
        let results = alter_replica_log_dirs(&broker, &a.display().to_string(), TOPIC, &[0])?;
        expect_accepted(&results, &[0])?;
        expect_placement(&broker, &log_dirs, &[0], &[1])?;
        Ok(())
    }
    .await;
    broker.check(result)
}

/// A partition the cluster has but with no replica on the node asked: REPLICA_NOT_AVAILABLE,
/// as Kafka answers (kafka-reassign-partitions.sh retries on it), not UNKNOWN_TOPIC_OR_PARTITION.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_with_no_replica_here_is_not_available() -> TestResult {
    let mut cluster = TestCluster::start(2)?;
    let result = async {
        cluster.wait_for_brokers(2).await?;
        let admin = admin(cluster.node(1)?)?;
        let assignment: &[&[i32]] = &[&[2]];
        let new_topic = NewTopic::new(TOPIC, 1, TopicReplication::Variable(assignment));
        for created in admin.create_topics([&new_topic], &admin_options()).await? {
            created.map_err(|(name, code)| format!("CreateTopics {name}: {code:?}"))?;
        }
        let node_1 = cluster.node(1)?;
        let dir = node_1.data_dir().display().to_string();
        // Node 1 answers UNKNOWN_TOPIC_OR_PARTITION until the topic reaches its metadata.
        let results = cluster
            .poll("node 1 knows the topic", |cluster| {
                let results = alter_replica_log_dirs(cluster.node(1)?, &dir, TOPIC, &[0, 1])?;
                ensure!(
                    results.first().map(|(_, _, code)| *code) == Some(REPLICA_NOT_AVAILABLE),
                    "{results:?}"
                );
                Ok(results)
            })
            .await?;
        ensure_eq!(
            results,
            vec![
                (TOPIC.to_string(), 0, REPLICA_NOT_AVAILABLE),
                (TOPIC.to_string(), 1, UNKNOWN_TOPIC_OR_PARTITION)
            ],
            "a partition hosted elsewhere, and one the topic does not have"
        );
        Ok(())
    }
    .await;
    cluster.check(result)
}

/// Every log dir records the cluster and node in its `meta.properties`; a second log dir
/// formatted for another cluster stops the start, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_dir_of_another_cluster_is_refused() -> TestResult {
    let log_dirs = LogDirs::new()?;
    let mut broker = log_dirs.start_broker()?;
    let result = async {
        // Answered once the broker opened its log dirs (it accepts connections before).
        create_topic(&broker, TOPIC, 1).await?;
        let [a, b] = &log_dirs.dirs;
        let first = std::fs::read_to_string(a.join("meta.properties"))?;
        let second = std::fs::read_to_string(b.join("meta.properties"))?;
        ensure_eq!(&first, &second, "meta.properties of the two log dirs");
        broker.terminate()?;
        let cluster_id = first
            .lines()
            .find_map(|line| line.strip_prefix("cluster.id="))
            .ok_or("no cluster.id")?;
        std::fs::write(
            b.join("meta.properties"),
            second.replace(cluster_id, "AnotherCluster"),
        )?;
        let status = broker.start_again_expecting_failure()?;
        ensure!(!status.success(), "the broker started on a foreign log dir");
        let log = broker.log();
        let restart = log
            .rsplit("=== runnel-e2e: start #2")
            .next()
            .unwrap_or_default();
        ensure!(
            restart.contains("formatted for cluster.id AnotherCluster"),
            "the refusal names the other cluster: {restart}"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}
