//! Replicated partitions across three real `runnel` processes (docs/replication.md): records
//! acknowledged with acks=all survive the leader's kill -9 and the kill -9 of every node at
//! once; an idempotent producer rides through a leader's crash without a duplicate or a gap;
//! acks=all is refused with NOT_ENOUGH_REPLICAS when the ISR is too small; OffsetForLeaderEpoch
//! answers each epoch's end offset; committed group offsets survive their coordinator's kill
//! -9; a rolling SIGTERM restart under acks=all load shows clients only retriable errors.
//!
//! Every topic here has replication factor 3 and `min.insync.replicas=2`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Offset;
use runnel_e2e::cluster::PartitionMetadata;
use runnel_e2e::wire::{
    api_key, init_producer_id_v0, parse_init_producer_id_v0, parse_produce_v3, produce_v3, put_i32,
    put_string, record_batch, ProducerIdentity, RawConnection, Reader,
};
use runnel_e2e::{
    admin, admin_options, commit_offset, committed_offset, committer, consume_n, consumer_assigned,
    ensure, ensure_eq, produce_all, producer, read_all, watermarks, Consumed, Record, Result,
    TestCluster, TestResult, WAIT_TIMEOUT,
};

/// NOT_ENOUGH_REPLICAS.
const NOT_ENOUGH_REPLICAS: i16 = 19;
/// FENCED_LEADER_EPOCH.
const FENCED_LEADER_EPOCH: i16 = 74;
/// OffsetForLeaderEpoch API key.
const OFFSET_FOR_LEADER_EPOCH: i16 = 23;
/// Settings every node of these clusters runs with: ISR shrinks after a few seconds of lag
/// (so a killed follower leaves the ISR within a test), three replicas for every topic.
const NODE_SETTINGS: &[&str] = &[
    "--set",
    "replica.lag.time.max.ms=3000",
    "--set",
    "default.replication.factor=3",
    "--set",
    "offsets.topic.replication.factor=3",
    "--set",
    "min.insync.replicas=2",
];

/// `count` records with values `prefix-i`.
fn records(prefix: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| (None, format!("{prefix}-{i}").into_bytes()))
        .collect()
}

async fn start_cluster() -> Result<TestCluster> {
    start_cluster_with(&[]).await
}

/// [`start_cluster`] with `extra` settings after [`NODE_SETTINGS`] (a later `--set` wins).
async fn start_cluster_with(extra: &[&str]) -> Result<TestCluster> {
    let settings: Vec<&str> = NODE_SETTINGS.iter().chain(extra).copied().collect();
    let mut cluster = TestCluster::start_with(3, &settings)?;
    cluster.wait_for_brokers(3).await?;
    Ok(cluster)
}

/// Creates `topic` (replication factor 3, `min.insync.replicas=2`) through node `via` and
/// waits until node `via` reports every partition led with all three replicas in sync.
async fn create_replicated(
    cluster: &mut TestCluster,
    via: i32,
    topic: &str,
    partitions: i32,
) -> Result<()> {
    let admin = admin(cluster.node(via)?)?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(3))
        .set("min.insync.replicas", "2");
    for result in admin.create_topics([&new_topic], &admin_options()).await? {
        if let Err((name, code)) = result {
            return Err(format!("CreateTopics {name}: {code:?}").into());
        }
    }
    for partition in 0..partitions {
        wait_for_isr(cluster, via, topic, partition, 3).await?;
    }
    Ok(())
}

/// Waits until node `from` reports partition `partition` of `topic` led, with `isr` in-sync
/// replicas; returns it.
async fn wait_for_isr(
    cluster: &mut TestCluster,
    from: i32,
    topic: &str,
    partition: i32,
    isr: usize,
) -> Result<PartitionMetadata> {
    let what = format!("node {from} reports {topic}-{partition} led with {isr} in sync");
    cluster
        .poll(&what, |cluster| {
            let metadata = cluster.metadata_from(from, Some(&[topic]))?;
            let found = metadata.topic(topic)?.partition(partition)?.clone();
            ensure!(
                found.leader >= 0 && found.isr.len() == isr,
                "node {from} says {found:?}"
            );
            Ok(found)
        })
        .await
}

/// Waits until node `from` names a leader of `topic-partition` other than `not`.
async fn wait_for_new_leader(
    cluster: &mut TestCluster,
    from: i32,
    topic: &str,
    partition: i32,
    not: i32,
) -> Result<PartitionMetadata> {
    let what = format!("node {from} names a leader of {topic}-{partition} other than {not}");
    cluster
        .poll(&what, |cluster| {
            let metadata = cluster.metadata_from(from, Some(&[topic]))?;
            let found = metadata.topic(topic)?.partition(partition)?.clone();
            ensure!(
                found.leader >= 0 && found.leader != not,
                "node {from} says {found:?}"
            );
            Ok(found)
        })
        .await
}

/// Waits until node `node`'s high watermark of `topic-0` reaches `at_least` (a new leader's
/// moves once its in-sync followers have fetched from it).
async fn wait_for_high_watermark(
    cluster: &mut TestCluster,
    node: i32,
    topic: &str,
    at_least: i64,
) -> Result<()> {
    let what = format!("node {node}'s high watermark of {topic}-0 reaches {at_least}");
    cluster
        .poll(&what, |cluster| {
            let (_, high) = watermarks(cluster.node(node)?, topic, 0)?;
            ensure!(high >= at_least, "it is {high}");
            Ok(())
        })
        .await
}

/// A node other than `these`.
fn other_than(cluster: &TestCluster, these: &[i32]) -> Result<i32> {
    cluster
        .node_ids()
        .into_iter()
        .find(|id| !these.contains(id))
        .ok_or_else(|| "no node left".into())
}

/// Every acknowledged (offset, value) is in `read` at its offset with its value.
fn check_acknowledged(topic: &str, acked: &[(i64, Vec<u8>)], read: &[Consumed]) -> Result<()> {
    let by_offset: BTreeMap<i64, &Consumed> = read.iter().map(|r| (r.offset, r)).collect();
    for (offset, value) in acked {
        let found = by_offset.get(offset);
        ensure!(
            found.and_then(|r| r.value.as_deref()) == Some(value.as_slice()),
            "{topic}-0: acknowledged offset {offset} reads back as {found:?}"
        );
    }
    Ok(())
}

/// The bytes of node `node`'s `.log` segments of `topic-0`, in offset order (segment files
/// are named by their zero-padded base offset), concatenated: compared between nodes once
/// both are stopped.
fn partition_log_bytes(cluster: &TestCluster, node: i32, topic: &str) -> Result<Vec<u8>> {
    let dir = cluster.node(node)?.partition_dir(topic, 0);
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("node {node}: {}: {e}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    segments.sort();
    let mut bytes = Vec::new();
    for segment in segments {
        bytes.extend(std::fs::read(segment)?);
    }
    Ok(bytes)
}

/// Whether `haystack` contains `needle`.
fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A consumer of node `node` reads `topic-0` with offsets dense from 0 up to its high
/// watermark (see [`read_all`]) and exactly `acked`: as many records, each acknowledged one at
/// its offset with its value (the values are unique, so none is there twice).
async fn check_holds_exactly(
    cluster: &TestCluster,
    node: i32,
    topic: &str,
    acked: &[AckedRecord],
) -> Result<()> {
    let read = read_all(cluster.node(node)?, topic, 1).await?;
    let read = read.get(&0).cloned().unwrap_or_default();
    ensure_eq!(read.len(), acked.len(), "records node {node} serves");
    check_acknowledged(topic, acked, &read)
}

/// An acknowledged record: its offset and value.
type AckedRecord = (i64, Vec<u8>);

/// Produces through `producer` in the background, up to `WINDOW` records in flight at a
/// time, recording each acknowledged (offset, value) and each delivery error, until `count`
/// records were sent or `stop` is set.
struct BackgroundLoad {
    acked: Arc<Mutex<Vec<AckedRecord>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl BackgroundLoad {
    fn start(producer: FutureProducer, topic: &str, prefix: &str, count: usize) -> BackgroundLoad {
        BackgroundLoad::start_paced(producer, topic, prefix, count, Duration::ZERO)
    }

    /// [`start`](Self::start), sending one record every `pace` (a steady rate while the
    /// cluster answers; a window waiting for its acknowledgements holds the next back).
    fn start_paced(
        producer: FutureProducer,
        topic: &str,
        prefix: &str,
        count: usize,
        pace: Duration,
    ) -> BackgroundLoad {
        const WINDOW: usize = 50;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (topic, prefix) = (topic.to_owned(), prefix.to_owned());
        let task = {
            let (acked, errors, stop) = (acked.clone(), errors.clone(), stop.clone());
            tokio::spawn(async move {
                let mut next = 0;
                while next < count && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let mut pending = Vec::new();
                    for i in next..(next + WINDOW).min(count) {
                        let value = format!("{prefix}-{i}").into_bytes();
                        let record: FutureRecord<'_, [u8], [u8]> =
                            FutureRecord::to(&topic).partition(0).payload(&value);
                        match producer.send_result(record) {
                            Ok(delivery) => pending.push((value.clone(), delivery)),
                            Err((e, _)) => lock(&errors).push(format!("enqueue: {e}")),
                        }
                        if !pace.is_zero() {
                            tokio::time::sleep(pace).await;
                        }
                    }
                    next = (next + WINDOW).min(count);
                    for (value, delivery) in pending {
                        match delivery.await {
                            Ok(Ok(delivered)) => lock(&acked).push((delivered.offset, value)),
                            Ok(Err((e, _))) => lock(&errors).push(e.to_string()),
                            Err(_) => lock(&errors).push("delivery dropped".to_owned()),
                        }
                    }
                }
            })
        };
        BackgroundLoad {
            acked,
            errors,
            stop,
            task,
        }
    }

    fn acked_count(&self) -> usize {
        lock(&self.acked).len()
    }

    /// Waits until at least `count` records are acknowledged (bounded by [`WAIT_TIMEOUT`]).
    async fn wait_acked(&self, count: usize) -> Result<()> {
        runnel_e2e::wait_until(
            &format!("{count} records acknowledged"),
            WAIT_TIMEOUT,
            || {
                let done = self.acked_count() >= count;
                async move { Ok(done) }
            },
        )
        .await
    }

    /// Stops sending and waits for every delivery report; returns (acknowledged, errors).
    async fn finish(self) -> Result<(Vec<AckedRecord>, Vec<String>)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::timeout(WAIT_TIMEOUT, self.task)
            .await
            .map_err(|_| "the background producer did not finish")??;
        let acked = std::mem::take(&mut *lock(&self.acked));
        let errors = std::mem::take(&mut *lock(&self.errors));
        Ok((acked, errors))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records acknowledged with acks=all are all readable from the new leader after the leader's
/// kill -9, at their offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_records_survive_the_leaders_kill9() -> TestResult {
    let mut cluster = start_cluster().await?;
    let result = async {
        let topic = "survive-leader";
        create_replicated(&mut cluster, 1, topic, 1).await?;
        let producer = producer(cluster.node(1)?, &[("acks", "all")])?;
        let batch = records("r", 500);
        let acked: Vec<(i64, Vec<u8>)> = produce_all(&producer, topic, Some(0), &batch)
            .await?
            .into_iter()
            .zip(batch)
            .map(|(ack, (_, value))| (ack.offset, value))
            .collect();
        drop(producer);
        let leader = cluster
            .metadata_from(1, Some(&[topic]))?
            .topic(topic)?
            .partition(0)?
            .leader;
        cluster.kill9(leader)?;
        let survivor = other_than(&cluster, &[leader])?;
        let moved = wait_for_new_leader(&mut cluster, survivor, topic, 0, leader).await?;
        wait_for_high_watermark(
            &mut cluster,
            moved.leader,
            topic,
            i64::try_from(acked.len())?,
        )
        .await?;
        check_holds_exactly(&cluster, moved.leader, topic, &acked).await
    }
    .await;
    cluster.check(result)
}

/// kill -9 of all three nodes at once while an acks=all producer runs: after a restart of
/// all, every acknowledged record is there at its offset (acks=all means fsynced on the ISR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_record_survives_kill9_of_every_node() -> TestResult {
    let mut cluster = start_cluster().await?;
    let result = async {
        let topic = "survive-all";
        create_replicated(&mut cluster, 1, topic, 1).await?;
        let producer = producer(
            cluster.node(1)?,
            &[("acks", "all"), ("message.timeout.ms", "5000")],
        )?;
        let load = BackgroundLoad::start(producer, topic, "all", 3_000);
        load.wait_acked(500).await?;
        for id in cluster.node_ids() {
            cluster.kill9(id)?;
        }
        let (acked, _errors) = load.finish().await?;
        ensure!(acked.len() >= 500, "{} acknowledged", acked.len());
        for id in cluster.node_ids() {
            cluster.start_again(id)?;
        }
        cluster.wait_for_brokers(3).await?;
        let led = wait_for_isr(&mut cluster, 1, topic, 0, 3).await?;
        let last = acked.iter().map(|(offset, _)| *offset).max().unwrap_or(-1);
        wait_for_high_watermark(&mut cluster, led.leader, topic, last + 1).await?;
        let read = read_all(cluster.node(led.leader)?, topic, 1).await?;
        let read = read.get(&0).cloned().unwrap_or_default();
        check_acknowledged(topic, &acked, &read)
    }
    .await;
    cluster.check(result)
}

/// An idempotent producer keeps producing across its leader's kill -9: every record is
/// delivered, none twice, no gap, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_rides_through_a_leader_crash() -> TestResult {
    const COUNT: usize = 2_000;
    let mut cluster = start_cluster().await?;
    let result = async {
        let topic = "idempotent-failover";
        create_replicated(&mut cluster, 1, topic, 1).await?;
        let leader = cluster
            .metadata_from(1, Some(&[topic]))?
            .topic(topic)?
            .partition(0)?
            .leader;
        let bootstrap = other_than(&cluster, &[leader])?;
        let producer = producer(
            cluster.node(bootstrap)?,
            &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "60000"),
            ],
        )?;
        let load = BackgroundLoad::start(producer, topic, "idem", COUNT);
        load.wait_acked(300).await?;
        cluster.kill9(leader)?;
        wait_for_new_leader(&mut cluster, bootstrap, topic, 0, leader).await?;
        runnel_e2e::wait_until("every record acknowledged", WAIT_TIMEOUT, || {
            let done = load.acked_count() + lock(&load.errors).len() >= COUNT;
            async move { Ok(done) }
        })
        .await?;
        let (acked, errors) = load.finish().await?;
        ensure!(errors.is_empty(), "delivery errors: {errors:?}");
        ensure_eq!(acked.len(), COUNT, "records acknowledged");
        let consumer = consumer_assigned(cluster.node(bootstrap)?, topic, &[0], Offset::Beginning)?;
        let read = consume_n(&consumer, COUNT, WAIT_TIMEOUT).await?;
        for (index, record) in read.iter().enumerate() {
            let expected = format!("idem-{index}").into_bytes();
            ensure!(
                record.offset == i64::try_from(index)?
                    && record.value.as_deref() == Some(expected.as_slice()),
                "record #{index}: offset {} value {:?} (a duplicate or a gap)",
                record.offset,
                record.value.as_deref().map(String::from_utf8_lossy)
            );
        }
        check_acknowledged(topic, &acked, &read)
    }
    .await;
    cluster.check(result)
}

/// With two of the three replicas shut down, the ISR is the leader alone: acks=all is refused
/// with NOT_ENOUGH_REPLICAS (before anything is appended), acks=1 is still taken; an
/// idempotent producer's batch pipelined behind a refused one gets the same answer even once
/// the ISR is back, and both land once when resent in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_without_enough_in_sync_replicas_is_refused() -> TestResult {
    let mut cluster = start_cluster().await?;
    let result = async {
        let topic = "too-few";
        create_replicated(&mut cluster, 1, topic, 1).await?;
        let leader = cluster
            .metadata_from(1, Some(&[topic]))?
            .topic(topic)?
            .partition(0)?
            .leader;
        let followers: Vec<i32> = cluster
            .node_ids()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        // A producer id for later, while the controller quorum is whole (InitProducerId).
        let body = RawConnection::connect(cluster.node(leader)?, Duration::from_secs(10))?
            .round_trip(api_key::INIT_PRODUCER_ID, 0, &init_producer_id_v0())?;
        let (code, producer_id, producer_epoch) = parse_init_producer_id_v0(&body)?;
        ensure_eq!(code, 0, "InitProducerId");
        // Controlled shutdowns: each leaves every ISR before it stops.
        let mut in_sync = 3;
        for follower in followers {
            ensure!(
                cluster.terminate(follower)?.success(),
                "SIGTERM exit status"
            );
            in_sync -= 1;
            wait_for_isr(&mut cluster, leader, topic, 0, in_sync).await?;
        }
        let batch = record_batch(
            &[b"refused"],
            ProducerIdentity {
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            },
            0,
        );
        let mut connection =
            RawConnection::connect(cluster.node(leader)?, Duration::from_secs(10))?;
        let answer =
            parse_produce_v3(&connection.round_trip(0, 3, &produce_v3(-1, topic, 0, &batch)?)?)?;
        ensure_eq!(
            answer.first().map(|p| p.error_code),
            Some(NOT_ENOUGH_REPLICAS),
            "acks=all with an ISR of one: {answer:?}"
        );
        let answer =
            parse_produce_v3(&connection.round_trip(0, 3, &produce_v3(1, topic, 0, &batch)?)?)?;
        ensure_eq!(
            answer.first().map(|p| (p.error_code, p.base_offset)),
            Some((0, 0)),
            "acks=1 is appended (nothing was appended by the refused acks=all)"
        );

        // An idempotent producer: batch 0 written (acks=1), batch 1 refused (acks=all), and
        // the ISR grows back before batch 2, pipelined behind 1, arrives. Its sequence gap is
        // only the refused batch: it gets the refusal's answer (retriable, not persisted), not
        // OUT_OF_ORDER_SEQUENCE_NUMBER, on which librdkafka would bump its epoch.
        let idempotent = |base_sequence: i32| {
            record_batch(
                &[format!("idempotent-{base_sequence}").as_bytes()],
                ProducerIdentity {
                    producer_id,
                    producer_epoch,
                    base_sequence,
                },
                0,
            )
        };
        let mut produce = |acks: i16, batch: &[u8]| -> Result<(i16, i64)> {
            let answer = parse_produce_v3(&connection.round_trip(
                0,
                3,
                &produce_v3(acks, topic, 0, batch)?,
            )?)?;
            let first = answer.first().ok_or("no partition in the answer")?;
            Ok((first.error_code, first.base_offset))
        };
        ensure_eq!(
            produce(1, &idempotent(0))?,
            (0, 1),
            "idempotent batch 0, acks=1"
        );
        ensure_eq!(
            produce(-1, &idempotent(1))?.0,
            NOT_ENOUGH_REPLICAS,
            "idempotent batch 1, acks=all with an ISR of one"
        );
        for follower in cluster.node_ids() {
            if follower != leader {
                cluster.start_again(follower)?;
            }
        }
        wait_for_isr(&mut cluster, leader, topic, 0, 3).await?;
        let mut connection =
            RawConnection::connect(cluster.node(leader)?, Duration::from_secs(10))?;
        let mut produce = |acks: i16, batch: &[u8]| -> Result<(i16, i64)> {
            let answer = parse_produce_v3(&connection.round_trip(
                0,
                3,
                &produce_v3(acks, topic, 0, batch)?,
            )?)?;
            let first = answer.first().ok_or("no partition in the answer")?;
            Ok((first.error_code, first.base_offset))
        };
        ensure_eq!(
            produce(-1, &idempotent(2))?.0,
            NOT_ENOUGH_REPLICAS,
            "idempotent batch 2, behind the refused batch 1, once the ISR is back"
        );
        // Resent in order, both land once.
        ensure_eq!(produce(-1, &idempotent(1))?, (0, 2), "batch 1 resent");
        ensure_eq!(produce(-1, &idempotent(2))?, (0, 3), "batch 2 resent");
        Ok(())
    }
    .await;
    cluster.check(result)
}

/// OffsetForLeaderEpoch v2 to `node`: (error code, leader epoch, end offset) of partition 0.
fn offset_for_leader_epoch(
    cluster: &TestCluster,
    node: i32,
    topic: &str,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> Result<(i16, i32, i64)> {
    let mut body = Vec::new();
    put_i32(&mut body, 1);
    put_string(&mut body, topic);
    put_i32(&mut body, 1);
    put_i32(&mut body, 0);
    put_i32(&mut body, current_leader_epoch);
    put_i32(&mut body, leader_epoch);
    let mut connection = RawConnection::connect(cluster.node(node)?, Duration::from_secs(10))?;
    let response = connection.round_trip(OFFSET_FOR_LEADER_EPOCH, 2, &body)?;
    let mut reader = Reader::new(&response);
    let _throttle = reader.i32()?;
    ensure_eq!(reader.i32()?, 1, "topics in the answer");
    let _topic = reader.string()?;
    ensure_eq!(reader.i32()?, 1, "partitions in the answer");
    let error_code = reader.i16()?;
    let _partition = reader.i32()?;
    Ok((error_code, reader.i32()?, reader.i64()?))
}

/// OffsetForLeaderEpoch answers the end offset of each epoch: the log end for the current
/// one, the start of the next for an older one; a stale `current_leader_epoch` is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_for_leader_epoch_answers_each_epochs_end() -> TestResult {
    let mut cluster = start_cluster().await?;
    let result = async {
        let topic = "epochs";
        create_replicated(&mut cluster, 1, topic, 1).await?;
        let first = wait_for_isr(&mut cluster, 1, topic, 0, 3).await?;
        let producer = producer(cluster.node(1)?, &[("acks", "all")])?;
        produce_all(&producer, topic, Some(0), &records("e1", 5)).await?;
        ensure_eq!(
            offset_for_leader_epoch(
                &cluster,
                first.leader,
                topic,
                first.leader_epoch,
                first.leader_epoch
            )?,
            (0, first.leader_epoch, 5),
            "the current epoch ends at the log end"
        );
        cluster.kill9(first.leader)?;
        let survivor = other_than(&cluster, &[first.leader])?;
        let second = wait_for_new_leader(&mut cluster, survivor, topic, 0, first.leader).await?;
        produce_all(&producer, topic, Some(0), &records("e2", 3)).await?;
        ensure_eq!(
            offset_for_leader_epoch(
                &cluster,
                second.leader,
                topic,
                second.leader_epoch,
                first.leader_epoch
            )?,
            (0, first.leader_epoch, 5),
            "the first epoch ends where the second starts"
        );
        ensure_eq!(
            offset_for_leader_epoch(
                &cluster,
                second.leader,
                topic,
                second.leader_epoch,
                second.leader_epoch
            )?,
            (0, second.leader_epoch, 8),
            "the second epoch ends at the log end"
        );
        ensure_eq!(
            offset_for_leader_epoch(
                &cluster,
                second.leader,
                topic,
                first.leader_epoch,
                first.leader_epoch
            )?
            .0,
            FENCED_LEADER_EPOCH,
            "a request naming the old leader's epoch is fenced"
        );
        Ok(())
    }
    .await;
    cluster.check(result)
}

/// Offsets a group committed are there after the kill -9 of the broker coordinating it (the
/// leader of its `__consumer_offsets` partition): the new coordinator loaded every commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_the_coordinators_kill9() -> TestResult {
    let mut cluster = start_cluster().await?;
    let result = async {
        let topic = "committed";
        create_replicated(&mut cluster, 1, topic, 1).await?;
        let group = "replicated-group";
        let consumer = committer(cluster.node(1)?, group)?;
        for offset in [3, 17, 42] {
            commit_offset(&consumer, topic, offset)?;
        }
        drop(consumer);
        let offsets = cluster
            .metadata_from(1, Some(&["__consumer_offsets"]))?
            .topic("__consumer_offsets")?
            .clone();
        let coordinator = find_coordinator(&cluster, 1, group)?;
        ensure!(
            offsets.partitions.iter().all(|p| p.replicas.len() == 3),
            "__consumer_offsets has three replicas: {offsets:?}"
        );
        cluster.kill9(coordinator)?;
        let survivor = other_than(&cluster, &[coordinator])?;
        let what = format!("a new coordinator for {group}");
        cluster
            .poll(&what, |cluster| {
                let now = find_coordinator(cluster, survivor, group)?;
                ensure!(now != coordinator, "still {now}");
                Ok(())
            })
            .await?;
        let consumer = committer(cluster.node(survivor)?, group)?;
        ensure_eq!(
            committed_offset(&consumer, topic)?,
            Offset::Offset(42),
            "the last committed offset after the coordinator's crash"
        );
        Ok(())
    }
    .await;
    cluster.check(result)
}

/// FindCoordinator v0 for `group` sent to node `via`.
fn find_coordinator(cluster: &TestCluster, via: i32, group: &str) -> Result<i32> {
    let mut body = Vec::new();
    put_string(&mut body, group);
    let mut connection = RawConnection::connect(cluster.node(via)?, Duration::from_secs(10))?;
    let response = connection.round_trip(10, 0, &body)?;
    let mut reader = Reader::new(&response);
    let error_code = reader.i16()?;
    let node_id = reader.i32()?;
    ensure_eq!(error_code, 0, "FindCoordinator {group} (node {node_id})");
    Ok(node_id)
}

/// A rolling SIGTERM restart of all three nodes while an idempotent acks=all producer runs:
/// every record is delivered (clients saw only retriable errors) and read back once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_acks_all_load_loses_nothing() -> TestResult {
    const COUNT: usize = 3_000;
    let mut cluster = start_cluster().await?;
    let result = async {
        let topic = "rolling";
        create_replicated(&mut cluster, 1, topic, 1).await?;
        let producer = producer(
            cluster.node(1)?,
            &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "120000"),
            ],
        )?;
        let load = BackgroundLoad::start(producer, topic, "roll", COUNT);
        let mut floor = 200;
        for id in cluster.node_ids() {
            load.wait_acked(floor.min(COUNT)).await?;
            ensure!(
                cluster.terminate(id)?.success(),
                "node {id}: SIGTERM exit status"
            );
            cluster.start_again(id)?;
            cluster.wait_for_brokers(3).await?;
            // The next node stops only once this one is back in sync.
            wait_for_isr(&mut cluster, id, topic, 0, 3).await?;
            floor = load.acked_count() + 200;
        }
        runnel_e2e::wait_until("every record acknowledged", WAIT_TIMEOUT, || {
            let done = load.acked_count() + lock(&load.errors).len() >= COUNT;
            async move { Ok(done) }
        })
        .await?;
        let (acked, errors) = load.finish().await?;
        ensure!(
            errors.is_empty(),
            "delivery errors (not retried): {errors:?}"
        );
        ensure_eq!(acked.len(), COUNT, "records acknowledged");
        check_holds_exactly(&cluster, 1, topic, &acked).await
    }
    .await;
    cluster.check(result)
}

/// Ten kill -9s in a row of the partition's leader while an idempotent acks=all producer sends
/// at a steady pace (each time: kill the leader, wait for a new one, restart the killed node,
/// wait until it is back in the ISR): no delivery fails, and the final leader holds every
/// acknowledged record exactly once at its acknowledged offset, offsets dense from 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_ten_leader_kills_in_a_row() -> TestResult {
    const KILLS: usize = 10;
    /// Upper bound of the load; it is stopped once the kills are done.
    const COUNT: usize = 40_000;
    /// Records acknowledged between two kills (and after the last one).
    const BETWEEN_KILLS: usize = 100;
    // A killed leader is fenced (and replaced) after 3 s rather than 9 s.
    let mut cluster = start_cluster_with(&[
        "--set",
        "broker.session.timeout.ms=3000",
        "--set",
        "broker.heartbeat.interval.ms=500",
    ])
    .await?;
    let result = async {
        let topic = "ten-kills";
        create_replicated(&mut cluster, 1, topic, 1).await?;
        let bootstrap = cluster.bootstrap();
        let producer = producer(
            cluster.node(1)?,
            &[
                ("bootstrap.servers", bootstrap.as_str()),
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "120000"),
            ],
        )?;
        let load =
            BackgroundLoad::start_paced(producer, topic, "kill", COUNT, Duration::from_millis(3));
        let mut leader = wait_for_isr(&mut cluster, 1, topic, 0, 3).await?.leader;
        for kill in 1..=KILLS {
            let floor = (load.acked_count() + BETWEEN_KILLS).min(COUNT);
            load.wait_acked(floor)
                .await
                .map_err(|e| format!("before kill {kill}: {e}"))?;
            cluster.kill9(leader)?;
            let survivor = other_than(&cluster, &[leader])?;
            let moved = wait_for_new_leader(&mut cluster, survivor, topic, 0, leader)
                .await
                .map_err(|e| format!("kill {kill} of node {leader}: {e}"))?;
            cluster.start_again(leader)?;
            wait_for_isr(&mut cluster, moved.leader, topic, 0, 3)
                .await
                .map_err(|e| format!("kill {kill}: node {leader} rejoining: {e}"))?;
            eprintln!(
                "kill {kill}: node {leader} killed, node {} leads (epoch {}), {} acknowledged",
                moved.leader,
                moved.leader_epoch,
                load.acked_count()
            );
            leader = moved.leader;
        }
        let floor = (load.acked_count() + BETWEEN_KILLS).min(COUNT);
        load.wait_acked(floor).await?;
        let (acked, errors) = load.finish().await?;
        let summary = format!("{KILLS} leader kills, {} acknowledged", acked.len());
        eprintln!("{summary}");
        ensure!(errors.is_empty(), "{summary}: delivery errors: {errors:?}");
        let leader = wait_for_isr(&mut cluster, leader, topic, 0, 3)
            .await?
            .leader;
        wait_for_high_watermark(&mut cluster, leader, topic, i64::try_from(acked.len())?).await?;
        // Every record sent was acknowledged, so the log holds exactly them.
        check_holds_exactly(&cluster, leader, topic, &acked)
            .await
            .map_err(|e| format!("{summary}: final leader {leader}: {e}").into())
    }
    .await;
    cluster.check(result)
}

/// A follower stopped with SIGSTOP leaves the ISR after `replica.lag.time.max.ms` (3 s) while
/// acks=all produce keeps succeeding (ISR 2 = `min.insync.replicas`); after SIGCONT it rejoins
/// the ISR and ends with the leader's log byte for byte. The broker session (30 s here)
/// outlasts the pause, so the paused broker is never fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_leaves_the_isr_and_rejoins_after_sigcont() -> TestResult {
    /// Upper bound of the load; it is stopped once the follower is back.
    const COUNT: usize = 20_000;
    /// Records acknowledged at each step.
    const STEP: usize = 200;
    let mut cluster = start_cluster_with(&["--set", "broker.session.timeout.ms=30000"]).await?;
    let result = async {
        let topic = "paused-follower";
        create_replicated(&mut cluster, 1, topic, 1).await?;
        let led = wait_for_isr(&mut cluster, 1, topic, 0, 3).await?;
        // Not the active controller: pausing it leaves the quorum and its leader running.
        let controller = cluster.controller_id().await?;
        let paused = led
            .replicas
            .iter()
            .copied()
            .find(|id| *id != led.leader && *id != controller)
            .ok_or_else(|| format!("no follower other than the controller: {led:?}"))?;
        let producer = producer(
            cluster.node(led.leader)?,
            &[("acks", "all"), ("message.timeout.ms", "60000")],
        )?;
        let load =
            BackgroundLoad::start_paced(producer, topic, "pause", COUNT, Duration::from_millis(3));
        load.wait_acked(STEP).await?;
        cluster.pause(paused)?;
        let shrunk = wait_for_isr(&mut cluster, led.leader, topic, 0, 2).await?;
        ensure!(
            shrunk.leader == led.leader && !shrunk.isr.contains(&paused),
            "node {paused} paused: {shrunk:?}"
        );
        let floor = (load.acked_count() + STEP).min(COUNT);
        load.wait_acked(floor)
            .await
            .map_err(|e| format!("acks=all with node {paused} out of the ISR: {e}"))?;
        cluster.resume(paused)?;
        let rejoined = wait_for_isr(&mut cluster, led.leader, topic, 0, 3).await?;
        ensure!(
            rejoined.leader == led.leader && rejoined.isr.contains(&paused),
            "node {paused} resumed: {rejoined:?}"
        );
        let floor = (load.acked_count() + STEP).min(COUNT);
        load.wait_acked(floor).await?;
        let (acked, errors) = load.finish().await?;
        ensure!(errors.is_empty(), "delivery errors: {errors:?}");
        // The high watermark is the ISR's least log end: once it covers every record and
        // node `paused` is in the ISR, it holds them all.
        wait_for_high_watermark(&mut cluster, led.leader, topic, i64::try_from(acked.len())?)
            .await?;
        check_holds_exactly(&cluster, led.leader, topic, &acked).await?;
        wait_for_isr(&mut cluster, led.leader, topic, 0, 3).await?;
        for id in [paused, led.leader] {
            ensure!(
                cluster.terminate(id)?.success(),
                "node {id}: SIGTERM exit status"
            );
        }
        let leader_log = partition_log_bytes(&cluster, led.leader, topic)?;
        ensure!(
            !leader_log.is_empty(),
            "node {} has no log bytes",
            led.leader
        );
        ensure!(
            partition_log_bytes(&cluster, paused, topic)? == leader_log,
            "node {paused}'s log differs from the leader's ({} acknowledged)",
            acked.len()
        );
        Ok(())
    }
    .await;
    cluster.check(result)
}

/// A leader holding records no follower has (acks=1 while both followers are paused, for less
/// than `replica.lag.time.max.ms`, so they stay in the ISR) is killed -9; a follower is
/// elected; the acks=1 records are never served; more acks=all records go to the new leader;
/// restarted, the old leader follows, truncates its unreplicated tail and ends with the new
/// leader's log byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leaders_unreplicated_tail_is_truncated_to_match_the_new_leader() -> TestResult {
    const REPLICATED: usize = 20;
    const AFTER: usize = 30;
    /// What the unreplicated tail's values start with (and no other record's does).
    const TAIL_MARK: &[u8] = b"unreplicated";
    const TAIL: &[&[u8]] = &[b"unreplicated-0", b"unreplicated-1", b"unreplicated-2"];
    let mut cluster = start_cluster_with(&["--set", "replica.lag.time.max.ms=60000"]).await?;
    let result = async {
        let topic = "truncated-tail";
        create_replicated(&mut cluster, 1, topic, 1).await?;
        let led = wait_for_isr(&mut cluster, 1, topic, 0, 3).await?;
        let old = led.leader;
        let followers: Vec<i32> = led
            .replicas
            .iter()
            .copied()
            .filter(|id| *id != old)
            .collect();
        let to_old = producer(cluster.node(old)?, &[("acks", "all")])?;
        produce_all(&to_old, topic, Some(0), &records("replicated", REPLICATED)).await?;
        drop(to_old);
        for &follower in &followers {
            cluster.pause(follower)?;
        }
        // A follower fetch already waiting at the leader would still carry the tail into the
        // paused follower's socket; outwait its long poll (replica.fetch.wait.max.ms, 500 ms).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tail = record_batch(
            TAIL,
            ProducerIdentity {
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            },
            0,
        );
        let mut connection = RawConnection::connect(cluster.node(old)?, Duration::from_secs(10))?;
        let answer =
            parse_produce_v3(&connection.round_trip(0, 3, &produce_v3(1, topic, 0, &tail)?)?)?;
        ensure_eq!(
            answer.first().map(|p| (p.error_code, p.base_offset)),
            Some((0, i64::try_from(REPLICATED)?)),
            "acks=1 to the leader {old} with both followers paused"
        );
        drop(connection);
        cluster.kill9(old)?;
        ensure!(
            contains_bytes(&partition_log_bytes(&cluster, old, topic)?, TAIL_MARK),
            "the killed leader {old} holds its unreplicated tail on disk"
        );
        for &follower in &followers {
            cluster.resume(follower)?;
        }
        let survivor = other_than(&cluster, &[old])?;
        let new = wait_for_new_leader(&mut cluster, survivor, topic, 0, old).await?;
        let producer = producer(cluster.node(new.leader)?, &[("acks", "all")])?;
        let acks = produce_all(&producer, topic, Some(0), &records("after", AFTER)).await?;
        ensure_eq!(
            acks.first().map(|ack| ack.offset),
            Some(i64::try_from(REPLICATED)?),
            "the new leader {}'s first offset (the tail is not on it)",
            new.leader
        );
        cluster.start_again(old)?;
        let rejoined = wait_for_isr(&mut cluster, new.leader, topic, 0, 3).await?;
        ensure!(
            rejoined.leader == new.leader && rejoined.isr.contains(&old),
            "node {old} restarted: {rejoined:?}"
        );
        let total = i64::try_from(REPLICATED + AFTER)?;
        wait_for_high_watermark(&mut cluster, new.leader, topic, total).await?;
        let read = read_all(cluster.node(new.leader)?, topic, 1).await?;
        let read = read.get(&0).cloned().unwrap_or_default();
        let values: Vec<Vec<u8>> = read.iter().filter_map(|r| r.value.clone()).collect();
        let expected: Vec<Vec<u8>> = records("replicated", REPLICATED)
            .into_iter()
            .chain(records("after", AFTER))
            .map(|(_, value)| value)
            .collect();
        ensure!(
            values == expected,
            "a consumer of {topic}-0 reads {:?}",
            values
                .iter()
                .map(|v| String::from_utf8_lossy(v))
                .collect::<Vec<_>>()
        );
        // The old leader leaves the ISR in a controlled shutdown first, so the new leader
        // keeps leading (and writing nothing) until it stops too.
        for id in [old, new.leader] {
            ensure!(
                cluster.terminate(id)?.success(),
                "node {id}: SIGTERM exit status"
            );
        }
        let new_log = partition_log_bytes(&cluster, new.leader, topic)?;
        let old_log = partition_log_bytes(&cluster, old, topic)?;
        ensure!(
            !contains_bytes(&old_log, TAIL_MARK),
            "node {old} still holds its unreplicated tail"
        );
        ensure!(
            old_log == new_log,
            "node {old}'s log ({} bytes) differs from the new leader {}'s ({} bytes)",
            old_log.len(),
            new.leader,
            new_log.len()
        );
        Ok(())
    }
    .await;
    cluster.check(result)
}
