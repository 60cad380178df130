//! Consumer groups end to end with librdkafka: subscribe and share partitions, rebalances
//! (eager and cooperative-sticky), session expiry, static membership, committed offsets that
//! survive restarts and kill -9, group admin and lag, and bad input answered with Kafka's codes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use runnel_e2e::wire::{put_i32, put_i64, put_string, RawConnection, Reader};
use runnel_e2e::{
    admin, admin_options, commit_offset, committer, create_topic, ensure, ensure_eq,
    metadata_client, produce_all, producer, watermarks, Consumed, Record, Result, TestBroker,
    TestResult, REQUEST_TIMEOUT, WAIT_TIMEOUT,
};

/// Fast rebalances for tests: no initial delay.
const BROKER_ARGS: &[&str] = &["--set", "group.initial.rebalance.delay.ms=0"];
const PARTITIONS: i32 = 6;

/// Counts the assignments a consumer received (one per rebalance that reached it).
struct Counting {
    assigns: Arc<AtomicUsize>,
}

impl ClientContext for Counting {}

impl ConsumerContext for Counting {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.assigns.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type GroupConsumer = StreamConsumer<Counting>;

/// A subscribed group member; the counter counts its assignments.
fn member(
    broker: &TestBroker,
    group: &str,
    topic: &str,
    overrides: &[(&str, &str)],
) -> Result<(GroupConsumer, Arc<AtomicUsize>)> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("client.id", "runnel-e2e-group")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("socket.timeout.ms", "30000");
    for (key, value) in overrides {
        config.set(*key, *value);
    }
    let assigns = Arc::new(AtomicUsize::new(0));
    let consumer: GroupConsumer = config.create_with_context(Counting {
        assigns: Arc::clone(&assigns),
    })?;
    consumer.subscribe(&[topic])?;
    Ok((consumer, assigns))
}

fn assigned(consumer: &GroupConsumer, topic: &str) -> Result<BTreeSet<i32>> {
    Ok(consumer
        .assignment()?
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect())
}

/// Whether every consumer owns some partitions, no partition twice, all of 0..PARTITIONS.
fn split_exactly(consumers: &[&GroupConsumer], topic: &str) -> Result<bool> {
    let mut union = BTreeSet::new();
    for consumer in consumers {
        let mine = assigned(consumer, topic)?;
        if mine.is_empty() || mine.iter().any(|p| union.contains(p)) {
            return Ok(false);
        }
        union.extend(mine);
    }
    Ok(union == (0..PARTITIONS).collect())
}

/// Polls every consumer (briefly each) and collects what they deliver, until `done` holds;
/// fails naming `what` at the deadline.
async fn poll_until(
    consumers: &[&GroupConsumer],
    seen: &mut Vec<(usize, Consumed)>,
    what: &str,
    mut done: impl FnMut(&[(usize, Consumed)]) -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        for (index, consumer) in consumers.iter().enumerate() {
            match tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
                Err(_) => {}
                Ok(Ok(message)) => seen.push((
                    index,
                    Consumed {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().map(<[u8]>::to_vec),
                    },
                )),
                Ok(Err(error)) => return Err(format!("consumer {index}: {error}").into()),
            }
        }
        if done(seen)? {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "timed out after {WAIT_TIMEOUT:?}: {what} ({} records seen)",
            seen.len()
        );
    }
}

/// Produces `per_partition` records to every partition; values say where they were sent.
async fn produce_round(
    broker: &TestBroker,
    topic: &str,
    round: &str,
    per_partition: usize,
) -> Result<()> {
    let producer = producer(broker, &[("acks", "all")])?;
    for partition in 0..PARTITIONS {
        let records: Vec<Record> = (0..per_partition)
            .map(|i| (None, format!("{round}-{partition}-{i}").into_bytes()))
            .collect();
        produce_all(&producer, topic, Some(partition), &records).await?;
    }
    Ok(())
}

fn commit(consumer: &GroupConsumer) -> Result<()> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => Ok(()),
        // Nothing consumed since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(error) => Err(format!("commit failed: {error}").into()),
    }
}

/// Every value read, with how often.
fn value_counts(seen: &[(usize, Consumed)]) -> BTreeMap<Vec<u8>, usize> {
    let mut counts = BTreeMap::new();
    for (_, record) in seen {
        *counts
            .entry(record.value.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    counts
}

fn committed(consumer: &impl Consumer<Counting>, topic: &str) -> Result<BTreeMap<i32, Offset>> {
    let mut wanted = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        wanted.add_partition(topic, partition);
    }
    let list = consumer.committed_offsets(wanted, REQUEST_TIMEOUT)?;
    Ok(list
        .elements_for_topic(topic)
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_then_three_members_share_partitions_and_read_every_record_once() -> TestResult {
    let broker = TestBroker::start(BROKER_ARGS)?;
    let result = async {
        let topic = "shared";
        create_topic(&broker, topic, PARTITIONS).await?;
        let (c1, _) = member(&broker, "readers", topic, &[])?;
        let (c2, _) = member(&broker, "readers", topic, &[])?;
        let mut seen = Vec::new();
        poll_until(
            &[&c1, &c2],
            &mut seen,
            "two members split 6 partitions",
            |_| split_exactly(&[&c1, &c2], topic),
        )
        .await?;
        produce_round(&broker, topic, "one", 50).await?;
        poll_until(&[&c1, &c2], &mut seen, "300 records read", |seen| {
            Ok(seen.len() >= 300)
        })
        .await?;
        commit(&c1)?;
        commit(&c2)?;

        let (c3, _) = member(&broker, "readers", topic, &[])?;
        poll_until(
            &[&c1, &c2, &c3],
            &mut seen,
            "three members split 6 partitions",
            |_| split_exactly(&[&c1, &c2, &c3], topic),
        )
        .await?;
        produce_round(&broker, topic, "two", 50).await?;
        poll_until(&[&c1, &c2, &c3], &mut seen, "600 records read", |seen| {
            Ok(seen.len() >= 600)
        })
        .await?;
        for consumer in [&c1, &c2, &c3] {
            commit(consumer)?;
        }
        let counts = value_counts(&seen);
        let repeats: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
            .take(5)
            .collect();
        ensure_eq!(
            counts.len(),
            600,
            "distinct records read (repeated: {repeats:?})"
        );
        let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(
            repeated.is_empty(),
            "records read more than once: {}",
            repeated.len()
        );
        // Each partition is read by exactly one member per generation: the second round's
        // records of a partition all went to its one owner.
        for partition in 0..PARTITIONS {
            let readers: BTreeSet<usize> = seen
                .iter()
                .filter(|(_, r)| {
                    r.partition == partition
                        && r.value.as_deref().is_some_and(|v| v.starts_with(b"two-"))
                })
                .map(|(index, _)| *index)
                .collect();
            ensure_eq!(
                readers.len(),
                1,
                "members reading partition {partition} in round two"
            );
        }
        let offsets = committed(&c1, topic)?;
        for partition in 0..PARTITIONS {
            ensure_eq!(
                offsets.get(&partition).copied(),
                Some(Offset::Offset(100)),
                "committed offset of partition {partition}"
            );
        }
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_vanishes_loses_its_partitions_after_the_session_timeout() -> TestResult {
    let broker = TestBroker::start(BROKER_ARGS)?;
    let result = async {
        let topic = "survivors";
        create_topic(&broker, topic, PARTITIONS).await?;
        let (survivor, _) = member(&broker, "crash", topic, &[])?;
        // A static member does not send LeaveGroup when it goes away (KIP-345): dropping it is
        // what a crash looks like to the coordinator.
        let (victim, _) = member(&broker, "crash", topic, &[("group.instance.id", "victim")])?;
        let mut seen = Vec::new();
        poll_until(
            &[&survivor, &victim],
            &mut seen,
            "two members split",
            |_| split_exactly(&[&survivor, &victim], topic),
        )
        .await?;
        produce_round(&broker, topic, "one", 20).await?;
        poll_until(&[&survivor, &victim], &mut seen, "round one read", |seen| {
            Ok(seen.len() >= 120)
        })
        .await?;
        commit(&survivor)?;
        commit(&victim)?;
        let victim_partitions = assigned(&victim, topic)?;
        produce_round(&broker, topic, "two", 20).await?;
        // The victim reads some of round two and never commits it.
        poll_until(
            &[&victim],
            &mut seen,
            "the victim reads round two",
            |seen| {
                Ok(seen.iter().any(|(i, r)| {
                    *i == 0 && r.value.as_deref().is_some_and(|v| v.starts_with(b"two-"))
                }))
            },
        )
        .await?;
        drop(victim);
        let before = seen.len();
        poll_until(
            &[&survivor],
            &mut seen,
            "the survivor owns all partitions",
            |_| Ok(assigned(&survivor, topic)?.len() == PARTITIONS as usize),
        )
        .await?;
        poll_until(
            &[&survivor],
            &mut seen,
            "every round-two record read",
            |seen| {
                let counts = value_counts(seen);
                Ok(counts.keys().filter(|v| v.starts_with(b"two-")).count() == 120)
            },
        )
        .await?;
        // The survivor resumed the victim's partitions at the committed offsets (20).
        for partition in &victim_partitions {
            let first = seen
                .iter()
                .skip(before)
                .filter(|(_, r)| r.partition == *partition)
                .map(|(_, r)| r.offset)
                .min();
            ensure_eq!(
                first,
                Some(20),
                "first offset the survivor read of partition {partition}"
            );
        }
        let round_one_repeats = value_counts(&seen)
            .into_iter()
            .filter(|(v, n)| v.starts_with(b"one-") && *n > 1)
            .count();
        ensure_eq!(round_one_repeats, 0, "committed records read again");
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_clean_restart_and_kill9() -> TestResult {
    let mut broker = TestBroker::start(BROKER_ARGS)?;
    let result = async {
        let topic = "durable-offsets";
        create_topic(&broker, topic, PARTITIONS).await?;
        produce_round(&broker, topic, "one", 10).await?;
        {
            let (consumer, _) = member(&broker, "restarts", topic, &[])?;
            let mut seen = Vec::new();
            poll_until(&[&consumer], &mut seen, "60 records read", |s| {
                Ok(s.len() >= 60)
            })
            .await?;
            commit(&consumer)?;
        }
        broker.restart()?;
        let client = metadata_client(&broker, &[("group.id", "restarts")])?;
        for (partition, offset) in committed_any(&client, topic)? {
            ensure_eq!(
                offset,
                Offset::Offset(10),
                "partition {partition} after a clean restart"
            );
        }
        let groups = client.fetch_group_list(Some("restarts"), REQUEST_TIMEOUT)?;
        ensure!(
            groups
                .groups()
                .iter()
                .any(|g| g.name() == "restarts" && g.state() != "Dead"),
            "the group is known after restart"
        );

        produce_round(&broker, topic, "two", 5).await?;
        {
            let (consumer, _) = member(&broker, "restarts", topic, &[])?;
            let mut seen = Vec::new();
            poll_until(
                &[&consumer],
                &mut seen,
                "round two read from the committed offsets",
                |s| Ok(s.len() >= 30),
            )
            .await?;
            ensure!(
                seen.iter().all(|(_, r)| r.offset >= 10),
                "a record below the committed offset was read again"
            );
            commit(&consumer)?;
        }
        broker.kill9()?;
        broker.start_again()?;
        let client = metadata_client(&broker, &[("group.id", "restarts")])?;
        for (partition, offset) in committed_any(&client, topic)? {
            ensure_eq!(
                offset,
                Offset::Offset(15),
                "partition {partition} after kill -9"
            );
        }
        produce_round(&broker, topic, "three", 1).await?;
        let (consumer, _) = member(&broker, "restarts", topic, &[])?;
        let mut seen = Vec::new();
        poll_until(&[&consumer], &mut seen, "round three read", |s| {
            Ok(s.len() >= 6)
        })
        .await?;
        ensure!(
            seen.iter().all(|(_, r)| r.offset == 15),
            "resumed at the committed offsets: {:?}",
            seen.iter()
                .map(|(_, r)| (r.partition, r.offset))
                .collect::<Vec<_>>()
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

fn committed_any(client: &BaseConsumer, topic: &str) -> Result<BTreeMap<i32, Offset>> {
    let mut wanted = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        wanted.add_partition(topic, partition);
    }
    let list = client.committed_offsets(wanted, REQUEST_TIMEOUT)?;
    Ok(list
        .elements_for_topic(topic)
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarting_causes_no_rebalance() -> TestResult {
    let broker = TestBroker::start(BROKER_ARGS)?;
    let result = async {
        let topic = "static";
        create_topic(&broker, topic, PARTITIONS).await?;
        let (c1, _) = member(&broker, "statics", topic, &[("group.instance.id", "one")])?;
        let (c2, c2_assigns) = member(&broker, "statics", topic, &[("group.instance.id", "two")])?;
        let mut seen = Vec::new();
        poll_until(
            &[&c1, &c2],
            &mut seen,
            "two static members split the partitions",
            |_| split_exactly(&[&c1, &c2], topic),
        )
        .await?;
        let c1_partitions = assigned(&c1, topic)?;
        let c2_partitions = assigned(&c2, topic)?;
        let c2_assigns_before = c2_assigns.load(Ordering::SeqCst);
        drop(c1);
        let (c1, _) = member(&broker, "statics", topic, &[("group.instance.id", "one")])?;
        poll_until(
            &[&c1, &c2],
            &mut seen,
            "the restarted member gets its partitions back",
            |_| Ok(assigned(&c1, topic)? == c1_partitions),
        )
        .await?;
        produce_round(&broker, topic, "after", 5).await?;
        poll_until(&[&c1, &c2], &mut seen, "records after the restart", |s| {
            Ok(s.len() >= 30)
        })
        .await?;
        ensure_eq!(
            c2_assigns.load(Ordering::SeqCst),
            c2_assigns_before,
            "assignments the other member received (a rebalance would add one)"
        );
        ensure_eq!(
            assigned(&c2, topic)?,
            c2_partitions,
            "the other member's partitions"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_members_rebalance_incrementally() -> TestResult {
    let broker = TestBroker::start(BROKER_ARGS)?;
    let result = async {
        let topic = "cooperative";
        create_topic(&broker, topic, PARTITIONS).await?;
        let sticky = [("partition.assignment.strategy", "cooperative-sticky")];
        let (c1, _) = member(&broker, "coop", topic, &sticky)?;
        let mut seen = Vec::new();
        poll_until(&[&c1], &mut seen, "one member owns everything", |_| {
            split_exactly(&[&c1], topic)
        })
        .await?;
        let (c2, _) = member(&broker, "coop", topic, &sticky)?;
        poll_until(
            &[&c1, &c2],
            &mut seen,
            "two cooperative members split",
            |_| split_exactly(&[&c1, &c2], topic),
        )
        .await?;
        let (c3, _) = member(&broker, "coop", topic, &sticky)?;
        poll_until(
            &[&c1, &c2, &c3],
            &mut seen,
            "three cooperative members split",
            |_| split_exactly(&[&c1, &c2, &c3], topic),
        )
        .await?;
        produce_round(&broker, topic, "coop", 10).await?;
        poll_until(&[&c1, &c2, &c3], &mut seen, "all records read", |s| {
            Ok(s.len() >= 60)
        })
        .await?;
        ensure_eq!(value_counts(&seen).len(), 60, "distinct records");
        drop(c2);
        poll_until(&[&c1, &c3], &mut seen, "two members after one left", |_| {
            split_exactly(&[&c1, &c3], topic)
        })
        .await?;
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_describes_and_deletes_groups_and_offsets_and_lag_is_computed() -> TestResult {
    let broker = TestBroker::start(BROKER_ARGS)?;
    let result = async {
        let topic = "admin-groups";
        create_topic(&broker, topic, PARTITIONS).await?;
        produce_round(&broker, topic, "r", 20).await?;
        // Internal topics are not auto-created by a client's metadata request. (An admin
        // client: a consumer with a group id looks up its coordinator, and FindCoordinator
        // creates `__consumer_offsets`, as Kafka's does.)
        let internal = admin(&broker)?
            .inner()
            .fetch_metadata(Some("__consumer_offsets"), REQUEST_TIMEOUT)?;
        ensure!(
            internal
                .topics()
                .iter()
                .all(|t| t.error().is_some() || t.partitions().is_empty()),
            "Metadata created __consumer_offsets"
        );

        let (consumer, _) = member(&broker, "admin", topic, &[])?;
        let mut seen = Vec::new();
        poll_until(&[&consumer], &mut seen, "120 records read", |s| {
            Ok(s.len() >= 120)
        })
        .await?;
        // Commit chosen offsets with metadata: lag = 20 - committed per partition.
        let mut offsets = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            offsets.add_partition_offset(
                topic,
                partition,
                Offset::Offset(i64::from(partition) * 3),
            )?;
        }
        consumer.commit(&offsets, CommitMode::Sync)?;
        let committed_now = committed(&consumer, topic)?;
        let mut lag = 0;
        for partition in 0..PARTITIONS {
            let (_, high) = watermarks(&broker, topic, partition)?;
            let Some(Offset::Offset(at)) = committed_now.get(&partition).copied() else {
                return Err(format!("no committed offset for partition {partition}").into());
            };
            lag += high - at;
        }
        ensure_eq!(
            lag,
            120 - (0..6).map(|p| p * 3).sum::<i64>(),
            "lag through the admin API"
        );

        let client = metadata_client(&broker, &[])?;
        let groups = client.fetch_group_list(None, REQUEST_TIMEOUT)?;
        let listed = groups
            .groups()
            .iter()
            .find(|g| g.name() == "admin")
            .ok_or("ListGroups/DescribeGroups lack the group")?;
        ensure_eq!(listed.state(), "Stable", "state");
        ensure_eq!(listed.protocol_type(), "consumer", "protocol type");
        ensure_eq!(listed.members().len(), 1, "members");
        let described = listed.members().first().ok_or("no member described")?;
        ensure!(
            described.assignment().is_some_and(|a| !a.is_empty()),
            "member assignment shown"
        );
        ensure_eq!(
            described.client_id(),
            "runnel-e2e-group",
            "member client id"
        );
        ensure_eq!(described.client_host(), "/127.0.0.1", "member client host");

        // Offsets of a topic the active group subscribes to cannot be deleted.
        let mut raw = RawConnection::connect(&broker, REQUEST_TIMEOUT)?;
        let (error, partitions) = offset_delete(&mut raw, "admin", topic, &[0])?;
        ensure_eq!(
            (error, partitions),
            (0, vec![(0, 86)]),
            "OffsetDelete while subscribed"
        );
        drop(consumer);
        poll_state(&client, "admin", "Empty").await?;
        let (error, partitions) = offset_delete(&mut raw, "admin", topic, &[1])?;
        ensure_eq!(
            (error, partitions),
            (0, vec![(1, 0)]),
            "OffsetDelete of an empty group"
        );
        let reader = metadata_client(&broker, &[("group.id", "admin")])?;
        let after = committed_any(&reader, topic)?;
        ensure_eq!(
            after.get(&1).copied(),
            Some(Offset::Invalid),
            "deleted offset"
        );
        ensure_eq!(
            after.get(&2).copied(),
            Some(Offset::Offset(6)),
            "kept offset"
        );

        let admin = admin(&broker)?;
        let deleted = admin
            .delete_groups(&["admin", "no-such-group"], &admin_options())
            .await?;
        ensure!(
            deleted.first().is_some_and(Result::is_ok),
            "deleting the group: {deleted:?}"
        );
        ensure!(
            matches!(
                deleted.get(1),
                Some(Err((_, RDKafkaErrorCode::GroupIdNotFound)))
            ),
            "deleting an unknown group: {deleted:?}"
        );
        let gone = committed_any(&reader, topic)?;
        ensure!(
            gone.values().all(|o| *o == Offset::Invalid),
            "offsets after DeleteGroups: {gone:?}"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

async fn poll_state(client: &BaseConsumer, group: &str, state: &str) -> Result<()> {
    runnel_e2e::wait_until(
        &format!("group {group} in state {state}"),
        WAIT_TIMEOUT,
        || async {
            let groups = client.fetch_group_list(Some(group), REQUEST_TIMEOUT)?;
            Ok(groups.groups().iter().any(|g| g.state() == state))
        },
    )
    .await
}

/// OffsetDelete v0; returns the top-level error and (partition, error) pairs.
fn offset_delete(
    raw: &mut RawConnection,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<(i16, Vec<(i32, i16)>)> {
    let mut body = Vec::new();
    put_string(&mut body, group);
    put_i32(&mut body, 1);
    put_string(&mut body, topic);
    put_i32(&mut body, i32::try_from(partitions.len())?);
    for partition in partitions {
        put_i32(&mut body, *partition);
    }
    let response = raw.round_trip(47, 0, &body)?;
    let mut reader = Reader::new(&response);
    let error = reader.i16()?;
    let _throttle = reader.i32()?;
    let mut out = Vec::new();
    for _ in 0..reader.i32()? {
        let _name = reader.string()?;
        for _ in 0..reader.i32()? {
            out.push((reader.i32()?, reader.i16()?));
        }
    }
    Ok((error, out))
}

/// JoinGroup v0 (no KIP-394 round trip); returns the error code.
fn join_v0(
    raw: &mut RawConnection,
    group: &str,
    session_timeout_ms: i32,
    protocol_type: &str,
    metadata: &[u8],
) -> Result<i16> {
    let mut body = Vec::new();
    put_string(&mut body, group);
    put_i32(&mut body, session_timeout_ms);
    put_string(&mut body, "");
    put_string(&mut body, protocol_type);
    put_i32(&mut body, 1);
    put_string(&mut body, "proto");
    put_i32(&mut body, i32::try_from(metadata.len())?);
    body.extend_from_slice(metadata);
    let response = raw.round_trip(11, 0, &body)?;
    Reader::new(&response).i16()
}

/// OffsetCommit v2 of one partition as a simple consumer; returns the partition's error.
fn commit_v2(
    raw: &mut RawConnection,
    group: &str,
    topic: &str,
    offset: i64,
    metadata: &str,
) -> Result<i16> {
    let mut body = Vec::new();
    put_string(&mut body, group);
    put_i32(&mut body, -1);
    put_string(&mut body, "");
    put_i64(&mut body, -1);
    put_i32(&mut body, 1);
    put_string(&mut body, topic);
    put_i32(&mut body, 1);
    put_i32(&mut body, 0);
    put_i64(&mut body, offset);
    put_string(&mut body, metadata);
    let response = raw.round_trip(8, 2, &body)?;
    let mut reader = Reader::new(&response);
    ensure_eq!(reader.i32()?, 1, "topics in the OffsetCommit response");
    let _name = reader.string()?;
    ensure_eq!(reader.i32()?, 1, "partitions in the OffsetCommit response");
    let _partition = reader.i32()?;
    reader.i16()
}

/// OffsetFetch v1 of partition 0: (offset, metadata, error).
fn fetch_v1(raw: &mut RawConnection, group: &str, topic: &str) -> Result<(i64, String, i16)> {
    let mut body = Vec::new();
    put_string(&mut body, group);
    put_i32(&mut body, 1);
    put_string(&mut body, topic);
    put_i32(&mut body, 1);
    put_i32(&mut body, 0);
    let response = raw.round_trip(9, 1, &body)?;
    let mut reader = Reader::new(&response);
    ensure_eq!(reader.i32()?, 1, "topics in the OffsetFetch response");
    let _name = reader.string()?;
    ensure_eq!(reader.i32()?, 1, "partitions in the OffsetFetch response");
    let _partition = reader.i32()?;
    let offset = reader.i64()?;
    let metadata = reader.string()?;
    Ok((offset, metadata, reader.i16()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_input_gets_kafka_errors_and_other_groups_carry_on() -> TestResult {
    let broker = TestBroker::start(BROKER_ARGS)?;
    let result = async {
        let topic = "bad-input";
        create_topic(&broker, topic, PARTITIONS).await?;
        let mut raw = RawConnection::connect(&broker, REQUEST_TIMEOUT)?;
        ensure_eq!(
            join_v0(&mut raw, "bad", 1, "consumer", b"m")?,
            26,
            "session timeout 1 ms"
        );
        ensure_eq!(
            join_v0(&mut raw, "bad", i32::MAX, "consumer", b"m")?,
            26,
            "session timeout i32::MAX"
        );
        ensure_eq!(
            join_v0(&mut raw, "bad", 10_000, "consumer", &vec![7u8; 2 << 20])?,
            10,
            "2 MiB of protocol metadata"
        );
        ensure_eq!(
            join_v0(&mut raw, "mixed", 10_000, "consumer", b"m")?,
            0,
            "first member"
        );
        ensure_eq!(
            join_v0(&mut raw, "mixed", 10_000, "connect", b"m")?,
            23,
            "another protocol type in the same group"
        );
        ensure_eq!(
            commit_v2(&mut raw, "simple", topic, 0, &"x".repeat(5000))?,
            12,
            "5000 bytes of commit metadata"
        );
        ensure_eq!(
            fetch_v1(&mut raw, "simple", topic)?,
            (-1, String::new(), 0),
            "nothing committed"
        );
        ensure_eq!(
            commit_v2(&mut raw, "simple", topic, i64::MAX, "far")?,
            0,
            "an offset past the log end (Kafka accepts it)"
        );
        ensure_eq!(
            fetch_v1(&mut raw, "simple", topic)?,
            (i64::MAX, "far".to_string(), 0),
            "the offset and metadata round-trip"
        );
        ensure_eq!(
            commit_v2(&mut raw, "simple", "no-such-topic", 1, "")?,
            3,
            "unknown topic"
        );

        // The coordinator still serves a normal group.
        produce_round(&broker, topic, "ok", 2).await?;
        let (consumer, _) = member(&broker, "healthy", topic, &[])?;
        let mut seen = Vec::new();
        poll_until(&[&consumer], &mut seen, "a healthy group reads", |s| {
            Ok(s.len() >= 12)
        })
        .await?;
        commit(&consumer)?;
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Kafka puts a group in `__consumer_offsets` partition `Utils.abs(hashCode) % 50`; Runnel used
/// `(hashCode & 0x7fffffff) % 50` before, which differs for negative hashes. "billing" hashes to
/// -109829509 (Java): Kafka's partition 9, the old formula's 39. Its offsets and metadata, left
/// in partition 39 by an older Runnel (made here by swapping the two partitions' directories),
/// are served after the upgrade, moved to partition 9, and a later commit there wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_in_the_old_offsets_partition_survive_the_upgrade() -> TestResult {
    const OFFSETS_TOPIC: &str = "__consumer_offsets";
    const GROUP: &str = "billing";
    const HOME: i32 = 9;
    const OLD: i32 = 39;
    const MOVED: &str = "group moved to its __consumer_offsets partition";
    // A second group whose old partition is read before its home one (4 < 44), committed by a
    // simple consumer: -886437544 in Java.
    const SIMPLE_GROUP: &str = "clickstream-etl";
    const SIMPLE_HOME: i32 = 44;
    const SIMPLE_OLD: i32 = 4;
    let mut broker = TestBroker::start(BROKER_ARGS)?;
    let result = async {
        let topic = "rehomed";
        create_topic(&broker, topic, PARTITIONS).await?;
        produce_round(&broker, topic, "one", 10).await?;
        {
            let (consumer, _) = member(&broker, GROUP, topic, &[])?;
            let mut seen = Vec::new();
            poll_until(&[&consumer], &mut seen, "60 records read", |s| {
                Ok(s.len() >= 60)
            })
            .await?;
            commit(&consumer)?;
        }
        commit_offset(&committer(&broker, SIMPLE_GROUP)?, topic, 77)?;
        ensure!(
            watermarks(&broker, OFFSETS_TOPIC, SIMPLE_HOME)?.1 > 0
                && watermarks(&broker, OFFSETS_TOPIC, SIMPLE_OLD)?.1 == 0,
            "{SIMPLE_GROUP}'s records went to partition {SIMPLE_OLD}, not Kafka's {SIMPLE_HOME}"
        );
        ensure!(
            watermarks(&broker, OFFSETS_TOPIC, HOME)?.1 > 0
                && watermarks(&broker, OFFSETS_TOPIC, OLD)?.1 == 0,
            "{GROUP}'s records went to partition {OLD}, not Kafka's {HOME}"
        );

        broker.terminate()?;
        for (home, old) in [(HOME, OLD), (SIMPLE_HOME, SIMPLE_OLD)] {
            let home_dir = broker.partition_dir(OFFSETS_TOPIC, home);
            let old_dir = broker.partition_dir(OFFSETS_TOPIC, old);
            let parked = home_dir.with_extension("parked");
            std::fs::rename(&home_dir, &parked)?;
            std::fs::rename(&old_dir, &home_dir)?;
            std::fs::rename(&parked, &old_dir)?;
            ensure!(
                has_segment_bytes(&old_dir)?,
                "partition {old}'s directory holds no records after the swap"
            );
        }

        broker.start_again()?;
        let client = metadata_client(&broker, &[("group.id", GROUP)])?;
        for (partition, offset) in committed_any(&client, topic)? {
            ensure_eq!(
                offset,
                Offset::Offset(10),
                "partition {partition}, committed into the old offsets partition"
            );
        }
        ensure_eq!(
            committed_offset(&broker, SIMPLE_GROUP, topic)?,
            Offset::Offset(77),
            "{SIMPLE_GROUP}'s offset, committed into the old offsets partition"
        );
        for home in [HOME, SIMPLE_HOME] {
            ensure!(
                watermarks(&broker, OFFSETS_TOPIC, home)?.1 > 0,
                "nothing was moved to partition {home}"
            );
        }
        ensure_eq!(broker.log().matches(MOVED).count(), 2, "groups moved");

        produce_round(&broker, topic, "two", 5).await?;
        {
            let (consumer, _) = member(&broker, GROUP, topic, &[])?;
            let mut seen = Vec::new();
            poll_until(&[&consumer], &mut seen, "round two read", |s| {
                Ok(s.len() >= 30)
            })
            .await?;
            commit(&consumer)?;
        }
        commit_offset(&committer(&broker, SIMPLE_GROUP)?, topic, 78)?;
        broker.kill9()?;
        broker.start_again()?;
        let client = metadata_client(&broker, &[("group.id", GROUP)])?;
        for (partition, offset) in committed_any(&client, topic)? {
            ensure_eq!(
                offset,
                Offset::Offset(15),
                "partition {partition}, committed after the upgrade"
            );
        }
        ensure_eq!(
            committed_offset(&broker, SIMPLE_GROUP, topic)?,
            Offset::Offset(78),
            "{SIMPLE_GROUP}'s offset committed after the upgrade"
        );
        ensure_eq!(
            broker.log().matches(MOVED).count(),
            2,
            "groups moved (a second start has nothing left to move)"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// The committed offset of partition 0 of `topic` for `group`.
fn committed_offset(broker: &TestBroker, group: &str, topic: &str) -> Result<Offset> {
    let client = metadata_client(broker, &[("group.id", group)])?;
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    let list = client.committed_offsets(wanted, REQUEST_TIMEOUT)?;
    Ok(list
        .elements_for_topic(topic)
        .first()
        .map_or(Offset::Invalid, |e| e.offset()))
}

/// Whether a partition directory holds any segment bytes (read off disk, broker stopped).
fn has_segment_bytes(dir: &std::path::Path) -> Result<bool> {
    let mut bytes = 0u64;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            bytes += std::fs::metadata(&path)?.len();
        }
    }
    Ok(bytes > 0)
}

/// Hand-encoded group requests (v0 JoinGroup/SyncGroup/Heartbeat, v2 OffsetCommit), for
/// putting a commit in an exact rebalance state: a client cannot time that.
mod raw_group {
    use runnel_e2e::wire::{put_i32, put_i64, put_string, RawConnection, Reader};
    use runnel_e2e::Result;

    const JOIN_GROUP: i16 = 11;
    const HEARTBEAT: i16 = 12;
    const SYNC_GROUP: i16 = 14;
    const OFFSET_COMMIT: i16 = 8;
    const SESSION_MS: i32 = 30_000;

    /// (error, generation, leader, member id) of a JoinGroup v0 response.
    pub(super) type Joined = (i16, i32, String, String);

    pub(super) fn send_join(
        connection: &mut RawConnection,
        group: &str,
        member_id: &str,
    ) -> Result<i32> {
        let mut body = Vec::new();
        put_string(&mut body, group);
        put_i32(&mut body, SESSION_MS);
        put_string(&mut body, member_id);
        put_string(&mut body, "consumer");
        put_i32(&mut body, 1);
        put_string(&mut body, "cooperative-sticky");
        put_i32(&mut body, 0); // empty metadata
        connection.send_request(JOIN_GROUP, 0, &body)
    }

    pub(super) fn read_join(connection: &mut RawConnection, correlation_id: i32) -> Result<Joined> {
        let response = connection.read_response(correlation_id)?;
        let mut reader = Reader::new(&response);
        let error = reader.i16()?;
        let generation = reader.i32()?;
        let _protocol = reader.string()?;
        let leader = reader.string()?;
        let member_id = reader.string()?;
        Ok((error, generation, leader, member_id))
    }

    pub(super) fn join(
        connection: &mut RawConnection,
        group: &str,
        member_id: &str,
    ) -> Result<Joined> {
        let correlation_id = send_join(connection, group, member_id)?;
        read_join(connection, correlation_id)
    }

    /// SyncGroup v0; the leader hands every member an empty assignment. Returns the error.
    pub(super) fn sync(
        connection: &mut RawConnection,
        group: &str,
        generation: i32,
        member_id: &str,
        members: &[&str],
    ) -> Result<i16> {
        let mut body = Vec::new();
        put_string(&mut body, group);
        put_i32(&mut body, generation);
        put_string(&mut body, member_id);
        put_i32(&mut body, i32::try_from(members.len())?);
        for member in members {
            put_string(&mut body, member);
            put_i32(&mut body, 0);
        }
        let response = connection.round_trip(SYNC_GROUP, 0, &body)?;
        Reader::new(&response).i16()
    }

    pub(super) fn heartbeat(
        connection: &mut RawConnection,
        group: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<i16> {
        let mut body = Vec::new();
        put_string(&mut body, group);
        put_i32(&mut body, generation);
        put_string(&mut body, member_id);
        let response = connection.round_trip(HEARTBEAT, 0, &body)?;
        Reader::new(&response).i16()
    }

    /// OffsetCommit v2 of one partition (`topic`-0); returns its error code.
    pub(super) fn commit(
        connection: &mut RawConnection,
        group: &str,
        generation: i32,
        member_id: &str,
        topic: &str,
        offset: i64,
    ) -> Result<i16> {
        let mut body = Vec::new();
        put_string(&mut body, group);
        put_i32(&mut body, generation);
        put_string(&mut body, member_id);
        put_i64(&mut body, -1); // retention_time_ms: the broker's
        put_i32(&mut body, 1);
        put_string(&mut body, topic);
        put_i32(&mut body, 1);
        put_i32(&mut body, 0);
        put_i64(&mut body, offset);
        put_string(&mut body, "");
        let response = connection.round_trip(OFFSET_COMMIT, 2, &body)?;
        let mut reader = Reader::new(&response);
        let _topics = reader.i32()?;
        let _name = reader.string()?;
        let _partitions = reader.i32()?;
        let _partition = reader.i32()?;
        reader.i16()
    }
}

/// A cooperative member keeps committing the partitions it owns while a new member joins:
/// OffsetCommit is answered as by Kafka's classic group in each state. Stable and
/// PreparingRebalance with the current generation: accepted. CompletingRebalance: the
/// generation is checked first (ILLEGAL_GENERATION for the old one), and only the current
/// generation's commit gets REBALANCE_IN_PROGRESS (its assignment is not known yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_during_a_cooperative_rebalance_are_answered_as_kafka_does() -> TestResult {
    const NONE: i16 = 0;
    const ILLEGAL_GENERATION: i16 = 22;
    const REBALANCE_IN_PROGRESS: i16 = 27;
    let broker = TestBroker::start(BROKER_ARGS)?;
    let result = async {
        let topic = "cooperative-commits";
        let group = "cooperative";
        create_topic(&broker, topic, 1).await?;
        let mut a = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
        let mut b = RawConnection::connect(&broker, WAIT_TIMEOUT)?;

        let (error, generation, leader, member_a) = raw_group::join(&mut a, group, "")?;
        ensure_eq!((error, generation), (NONE, 1), "first join");
        ensure_eq!(leader, member_a, "the first member leads");
        let error = raw_group::sync(&mut a, group, 1, &member_a, &[&member_a])?;
        ensure_eq!(error, NONE, "leader's sync of generation 1");
        let error = raw_group::commit(&mut a, group, 1, &member_a, topic, 5)?;
        ensure_eq!(error, NONE, "commit while Stable");

        // B joins: the group prepares a rebalance and waits for A to rejoin.
        let b_join = raw_group::send_join(&mut b, group, "")?;
        let deadline = std::time::Instant::now() + WAIT_TIMEOUT;
        while raw_group::heartbeat(&mut a, group, 1, &member_a)? != REBALANCE_IN_PROGRESS {
            ensure!(
                std::time::Instant::now() < deadline,
                "the group never started rebalancing after B's join"
            );
        }
        let error = raw_group::commit(&mut a, group, 1, &member_a, topic, 6)?;
        ensure_eq!(
            error,
            NONE,
            "commit with the current generation while PreparingRebalance"
        );

        // A rejoins: generation 2 forms; nobody has synced it yet (CompletingRebalance).
        let (error, generation, leader, _) = raw_group::join(&mut a, group, &member_a)?;
        ensure_eq!((error, generation), (NONE, 2), "A's rejoin");
        ensure_eq!(leader, member_a, "the leader stays");
        let (error, generation, _, member_b) = raw_group::read_join(&mut b, b_join)?;
        ensure_eq!((error, generation), (NONE, 2), "B's join");
        let error = raw_group::commit(&mut a, group, 1, &member_a, topic, 7)?;
        ensure_eq!(
            error,
            ILLEGAL_GENERATION,
            "commit with the old generation while CompletingRebalance"
        );
        let error = raw_group::commit(&mut b, group, 2, &member_b, topic, 7)?;
        ensure_eq!(
            error,
            REBALANCE_IN_PROGRESS,
            "commit with the new generation before its assignment"
        );

        let error = raw_group::sync(&mut a, group, 2, &member_a, &[&member_a, &member_b])?;
        ensure_eq!(error, NONE, "leader's sync of generation 2");
        let error = raw_group::commit(&mut b, group, 2, &member_b, topic, 8)?;
        ensure_eq!(error, NONE, "commit once Stable again");
        ensure_eq!(
            committed_offset(&broker, group, topic)?,
            Offset::Offset(8),
            "the last accepted commit"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}
