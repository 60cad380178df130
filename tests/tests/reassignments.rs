//! Partition reassignments across three real `runnel` processes (docs/replication.md,
//! "Reassignments"): AlterPartitionReassignments (key 45) and ListPartitionReassignments (key
//! 46) over the wire. A partition moves to other brokers while an idempotent acks=all producer
//! writes to it, and every acknowledged record is then read back once, at its offset, from the
//! new leader, with the removed brokers' copies deleted; a reassignment to a broker that cannot
//! catch up is cancelled back to the original replicas; bad requests get Kafka's codes.
//!
//! The new replica is held back with SIGSTOP while the reassignment starts, so the test sees
//! it in progress before it can complete (the broker is still registered: its session outlives
//! the pause). It is never the active controller, so the quorum keeps its leader.

#![allow(clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{NewTopic, TopicReplication};
use runnel_e2e::cluster::PartitionMetadata;
use runnel_e2e::wire::{
    alter_partition_reassignments, list_partition_reassignments_v0,
    parse_alter_partition_reassignments, parse_list_partition_reassignments_v0,
    OngoingReassignment, RawConnection, ReassignmentRequest, ReassignmentResult,
    ALTER_PARTITION_REASSIGNMENTS, LIST_PARTITION_REASSIGNMENTS,
};
use runnel_e2e::{
    admin, admin_options, ensure, ensure_eq, produce_all, producer, read_all, Record, Result,
    TestCluster, TestResult, WAIT_TIMEOUT,
};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
const INVALID_REPLICATION_FACTOR: i16 = 38;

/// Records per partition and per batch of the background load.
const LOAD_BATCH: usize = 100;
/// Batches per partition the load sends at most.
const LOAD_BATCHES_MAX: usize = 30;
/// Records the load acknowledges before the move, while the new replica is paused, and after
/// the move completed (two batches per partition each).
const LOAD_PHASE: usize = 4 * LOAD_BATCH;

/// AlterPartitionReassignments v0 through node `via`: the top-level error and every
/// partition's result.
fn alter(
    cluster: &TestCluster,
    via: i32,
    partitions: &[ReassignmentRequest<'_>],
) -> Result<(i16, Vec<ReassignmentResult>)> {
    alter_at(cluster, via, 0, true, partitions)
}

/// AlterPartitionReassignments at `version` (v1: with `allow_replication_factor_change`).
fn alter_at(
    cluster: &TestCluster,
    via: i32,
    version: i16,
    allow_replication_factor_change: bool,
    partitions: &[ReassignmentRequest<'_>],
) -> Result<(i16, Vec<ReassignmentResult>)> {
    let mut connection = RawConnection::connect(cluster.node(via)?, Duration::from_secs(10))?;
    let body = alter_partition_reassignments(version, allow_replication_factor_change, partitions);
    parse_alter_partition_reassignments(
        version,
        allow_replication_factor_change,
        &connection.flexible_round_trip(ALTER_PARTITION_REASSIGNMENTS, version, &body)?,
    )
}

/// ListPartitionReassignments v0 of every reassignment in progress, through node `via`.
fn list(cluster: &TestCluster, via: i32) -> Result<Vec<OngoingReassignment>> {
    list_of(cluster, via, None)
}

/// ListPartitionReassignments v0 of the reassignments of `partitions` (topic, indexes) in
/// progress (all if `None`), through node `via`.
fn list_of(
    cluster: &TestCluster,
    via: i32,
    partitions: Option<&[(&str, &[i32])]>,
) -> Result<Vec<OngoingReassignment>> {
    let mut connection = RawConnection::connect(cluster.node(via)?, Duration::from_secs(10))?;
    let body = list_partition_reassignments_v0(partitions);
    let (error_code, ongoing) = parse_list_partition_reassignments_v0(
        &connection.flexible_round_trip(LIST_PARTITION_REASSIGNMENTS, 0, &body)?,
    )?;
    ensure_eq!(error_code, 0, "ListPartitionReassignments error");
    Ok(ongoing)
}

/// Every result of an AlterPartitionReassignments is a success.
fn ensure_accepted(answer: &(i16, Vec<ReassignmentResult>), asked: usize) -> Result<()> {
    ensure!(
        answer.0 == 0 && answer.1.len() == asked && answer.1.iter().all(|r| r.error_code == 0),
        "AlterPartitionReassignments answered {answer:?}"
    );
    Ok(())
}

/// A running cluster's brokers as (the new replica, the two original replicas): the new one
/// is not the active controller, so pausing it leaves the quorum its leader.
async fn roles(cluster: &mut TestCluster) -> Result<(i32, i32, i32)> {
    cluster.wait_for_brokers(3).await?;
    let controller = cluster.controller_id().await?;
    let others: Vec<i32> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != controller)
        .collect();
    let (Some(&new), Some(&other)) = (others.first(), others.get(1)) else {
        return Err(format!("three nodes expected, got {:?}", cluster.node_ids()).into());
    };
    Ok((new, controller, other))
}

/// Creates `topic` with one partition per replica list in `assignment` through node `via`,
/// and waits until node `via` reports every partition led with all its replicas in sync.
async fn create(
    cluster: &mut TestCluster,
    via: i32,
    topic: &str,
    assignment: &[&[i32]],
) -> Result<()> {
    let admin = admin(cluster.node(via)?)?;
    let partitions = i32::try_from(assignment.len())?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Variable(assignment));
    for result in admin.create_topics([&new_topic], &admin_options()).await? {
        if let Err((name, code)) = result {
            return Err(format!("CreateTopics {name}: {code:?}").into());
        }
    }
    let expected: Vec<Vec<i32>> = assignment.iter().map(|r| r.to_vec()).collect();
    wait_for_partitions(cluster, via, topic, "created, all in sync", |index, p| {
        let replicas = expected.get(index).ok_or("more partitions than created")?;
        ensure!(
            p.leader >= 0 && p.replicas == *replicas && set(&p.isr) == set(replicas),
            "partition {index}: {p:?}"
        );
        Ok(())
    })
    .await
}

/// Waits until node `from` reports every partition of `topic` as `check` (given its index)
/// wants it.
async fn wait_for_partitions(
    cluster: &mut TestCluster,
    from: i32,
    topic: &str,
    what: &str,
    check: impl Fn(usize, &PartitionMetadata) -> Result<()>,
) -> Result<()> {
    let description = format!("node {from}: {topic} {what}");
    cluster
        .poll(&description, |c| {
            let metadata = c.metadata_from(from, Some(&[topic]))?;
            let found = metadata.topic(topic)?;
            ensure_eq!(found.error_code, 0, "{topic}'s error");
            for (index, partition) in found.partitions.iter().enumerate() {
                check(index, partition)?;
            }
            Ok(())
        })
        .await
}

fn set(brokers: &[i32]) -> BTreeSet<i32> {
    brokers.iter().copied().collect()
}

/// Waits until node `id` has no directory for `topic-partition` (removal runs in the
/// background after the partition leaves the node).
async fn wait_for_no_partition_dir(
    cluster: &mut TestCluster,
    id: i32,
    topic: &str,
    partition: i32,
) -> Result<()> {
    let what = format!("node {id} deletes its copy of {topic}-{partition}");
    cluster
        .poll(&what, |c| {
            let dir = c.node(id)?.partition_dir(topic, partition);
            ensure!(!dir.exists(), "{} still exists", dir.display());
            Ok(())
        })
        .await
}

/// An acknowledged record: partition, offset, value.
type AckedRecord = (i32, i64, Vec<u8>);

/// An idempotent acks=all producer writing batches of [`LOAD_BATCH`] records to every
/// partition in turn until stopped or [`LOAD_BATCHES_MAX`] batches per partition were sent.
/// A failed delivery ends it with that error.
struct Load {
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Result<Vec<AckedRecord>>>,
}

impl Load {
    fn start(cluster: &TestCluster, via: i32, topic: &str, partitions: i32) -> Result<Load> {
        let producer = producer(
            cluster.node(via)?,
            &[("acks", "all"), ("enable.idempotence", "true")],
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let acked_count = Arc::new(AtomicUsize::new(0));
        let topic = topic.to_owned();
        let task = tokio::spawn({
            let (stop, acked_count) = (Arc::clone(&stop), Arc::clone(&acked_count));
            async move {
                let mut acked = Vec::new();
                for batch in 0..LOAD_BATCHES_MAX {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    for partition in 0..partitions {
                        let records: Vec<Record> = (0..LOAD_BATCH)
                            .map(|i| (None, format!("p{partition}-b{batch}-{i}").into_bytes()))
                            .collect();
                        let delivered =
                            produce_all(&producer, &topic, Some(partition), &records).await?;
                        for (ack, (_, value)) in delivered.into_iter().zip(records) {
                            acked.push((ack.partition, ack.offset, value));
                        }
                        acked_count.store(acked.len(), Ordering::SeqCst);
                    }
                }
                Ok(acked)
            }
        });
        Ok(Load {
            stop,
            acked_count,
            task,
        })
    }

    /// Waits until `more` records beyond those acknowledged now are acknowledged (bounded by
    /// [`WAIT_TIMEOUT`]).
    async fn wait_for_more(&self, more: usize) -> Result<()> {
        let target = self.acked_count.load(Ordering::SeqCst) + more;
        runnel_e2e::wait_until(
            &format!("{target} records acknowledged"),
            WAIT_TIMEOUT,
            || {
                let done = self.acked_count.load(Ordering::SeqCst) >= target;
                async move { Ok(done) }
            },
        )
        .await
    }

    /// Stops the load and returns every acknowledged record.
    async fn finish(self) -> Result<Vec<AckedRecord>> {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(WAIT_TIMEOUT, self.task)
            .await
            .map_err(|_| "the producer did not finish")??
    }
}

/// Moves partition 0 of an RF 2 topic from {a, b} to {b, new} and partition 1 from {a, b} to
/// {new} while an idempotent acks=all producer writes to both: the reassignments are listed
/// while `new` is paused, complete once it catches up (replicas and ISR = target, leadership
/// moved off `a`), every acknowledged record reads back exactly once at its offset from each
/// new leader, and the removed brokers delete their copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_to_other_brokers_under_load_losing_nothing() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        let topic = "moving";
        let (new, a, b) = roles(&mut cluster).await?;
        create(&mut cluster, a, topic, &[&[a, b], &[a, b]]).await?;
        let load = Load::start(&cluster, b, topic, 2)?;
        load.wait_for_more(LOAD_PHASE).await?;

        cluster.pause(new)?;
        let paused = async {
            let started = alter(
                &cluster,
                b,
                &[(topic, 0, Some(&[b, new])), (topic, 1, Some(&[new]))],
            )?;
            let listed = list(&cluster, a)?;
            // Records the new replica must catch up on.
            load.wait_for_more(LOAD_PHASE).await?;
            Ok::<_, runnel_e2e::Error>((started, listed))
        }
        .await;
        cluster.resume(new)?;
        let (started, listed) = paused?;
        ensure_accepted(&started, 2)?;
        ensure_eq!(
            listed,
            vec![
                OngoingReassignment {
                    topic: topic.into(),
                    partition: 0,
                    replicas: vec![b, new, a],
                    adding: vec![new],
                    removing: vec![a],
                },
                OngoingReassignment {
                    topic: topic.into(),
                    partition: 1,
                    replicas: vec![new, a, b],
                    adding: vec![new],
                    removing: vec![a, b],
                },
            ],
            "reassignments in progress"
        );

        let targets = [vec![b, new], vec![new]];
        for node in [a, b, new] {
            wait_for_partitions(&mut cluster, node, topic, "moved", |index, p| {
                let target = &targets[index];
                ensure!(
                    p.replicas == *target && p.isr == *target && p.leader == target[0],
                    "partition {index}: {p:?}"
                );
                Ok(())
            })
            .await?;
        }
        ensure_eq!(
            list(&cluster, new)?,
            Vec::new(),
            "reassignments after completion"
        );

        let acked = load.finish().await?;
        ensure!(!acked.is_empty(), "the load acknowledged nothing");
        // Read through each partition's new leader (rdkafka fetches from the leader).
        let read = read_all(cluster.node(new)?, topic, 2).await?;
        for partition in [0, 1] {
            let mut expected: Vec<(i64, Vec<u8>)> = acked
                .iter()
                .filter(|(p, _, _)| *p == partition)
                .map(|(_, offset, value)| (*offset, value.clone()))
                .collect();
            expected.sort();
            let got: Vec<(i64, Vec<u8>)> = read
                .get(&partition)
                .into_iter()
                .flatten()
                .map(|r| (r.offset, r.value.clone().unwrap_or_default()))
                .collect();
            ensure_eq!(
                got,
                expected,
                "{topic}-{partition}: every acknowledged record once, at its offset"
            );
        }

        wait_for_no_partition_dir(&mut cluster, a, topic, 0).await?;
        wait_for_no_partition_dir(&mut cluster, a, topic, 1).await?;
        wait_for_no_partition_dir(&mut cluster, b, topic, 1).await?;
        for (node, partition) in [(b, 0), (new, 0), (new, 1)] {
            let dir = cluster.node(node)?.partition_dir(topic, partition);
            ensure!(dir.exists(), "node {node} lacks {}", dir.display());
        }
        Ok(())
    }
    .await;
    cluster.check(result)
}

/// A reassignment to a broker that is paused (it cannot catch up) stays in progress until it
/// is cancelled (`replicas: null`); then the partition is back on its original replicas, with
/// nothing listed, and the paused broker, once resumed, keeps no copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassignment_that_cannot_finish_is_cancelled_back_to_the_original_replicas() -> TestResult
{
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        let topic = "stuck";
        let (new, a, b) = roles(&mut cluster).await?;
        create(&mut cluster, a, topic, &[&[a, b]]).await?;
        cluster.pause(new)?;
        let outcome = async {
            ensure_accepted(&alter(&cluster, b, &[(topic, 0, Some(&[a, new]))])?, 1)?;
            let listed = list(&cluster, b)?;
            ensure_eq!(
                listed
                    .iter()
                    .map(|r| (r.replicas.clone(), r.adding.clone(), r.removing.clone()))
                    .collect::<Vec<_>>(),
                vec![(vec![a, new, b], vec![new], vec![b])],
                "the reassignment in progress"
            );
            // Named partitions: those not being moved, or unknown, are left out.
            let named: &[(&str, &[i32])] = &[(topic, &[0, 9]), ("no-such-topic", &[0])];
            ensure_eq!(list_of(&cluster, a, Some(named))?, listed, "named");
            ensure_accepted(&alter(&cluster, a, &[(topic, 0, None)])?, 1)?;
            ensure_eq!(list(&cluster, a)?, Vec::new(), "after the cancellation");
            Ok::<(), runnel_e2e::Error>(())
        }
        .await;
        cluster.resume(new)?;
        outcome?;
        for node in [a, b, new] {
            wait_for_partitions(&mut cluster, node, topic, "back on its replicas", |_, p| {
                ensure!(
                    p.replicas == [a, b] && set(&p.isr) == set(&[a, b]) && p.leader == a,
                    "{p:?}"
                );
                Ok(())
            })
            .await?;
        }
        let (code, results) = alter(&cluster, new, &[(topic, 0, None)])?;
        ensure_eq!(
            (code, results[0].error_code),
            (0, NO_REASSIGNMENT_IN_PROGRESS),
            "cancelling again"
        );
        wait_for_no_partition_dir(&mut cluster, new, topic, 0).await
    }
    .await;
    cluster.check(result)
}

/// Bad reassignments get Kafka's codes per partition and change nothing (v0, and v1 refusing a
/// replication factor change); the good partition of the same request is carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reassignments_are_refused_with_kafkas_codes() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        let topic = "fixed";
        cluster.wait_for_brokers(3).await?;
        create(&mut cluster, 1, topic, &[&[1, 2], &[2, 3]]).await?;
        let (code, results) = alter(
            &cluster,
            2,
            &[
                ("no-such-topic", 0, Some(&[1])),
                (topic, 7, Some(&[1])),
                (topic, 0, Some(&[1, 1])),
                (topic, 0, Some(&[1, 99])),
                (topic, 0, Some(&[])),
                (topic, 0, None),
                (topic, 1, Some(&[3, 2])),
            ],
        )?;
        ensure_eq!(code, 0, "top-level error");
        let codes: Vec<(String, i32, i16)> = results
            .into_iter()
            .map(|r| (r.topic, r.partition, r.error_code))
            .collect();
        let expect = |t: &str, p: i32, c: i16| (t.to_string(), p, c);
        ensure_eq!(
            codes,
            vec![
                expect("no-such-topic", 0, UNKNOWN_TOPIC_OR_PARTITION),
                expect(topic, 7, UNKNOWN_TOPIC_OR_PARTITION),
                expect(topic, 0, INVALID_REPLICA_ASSIGNMENT),
                expect(topic, 0, INVALID_REPLICA_ASSIGNMENT),
                expect(topic, 0, INVALID_REPLICA_ASSIGNMENT),
                expect(topic, 0, NO_REASSIGNMENT_IN_PROGRESS),
                expect(topic, 1, 0),
            ],
            "per-partition codes"
        );
        // v1 without allow_replication_factor_change: a replica count change is refused.
        let (code, results) = alter_at(&cluster, 3, 1, false, &[(topic, 0, Some(&[3]))])?;
        ensure_eq!(
            (code, results[0].error_code),
            (0, INVALID_REPLICATION_FACTOR),
            "v1, replication factor 2 to 1 not allowed"
        );
        // Partition 1 moved its preferred leader to 3 (same replicas: in sync at once).
        let expected = [vec![1, 2], vec![3, 2]];
        wait_for_partitions(
            &mut cluster,
            3,
            topic,
            "with partition 1 reordered",
            |i, p| {
                ensure!(
                    p.replicas == expected[i] && set(&p.isr) == set(&expected[i]),
                    "partition {i}: {p:?}"
                );
                Ok(())
            },
        )
        .await?;
        ensure_eq!(list(&cluster, 1)?, Vec::new(), "nothing in progress");
        Ok(())
    }
    .await;
    cluster.check(result)
}
