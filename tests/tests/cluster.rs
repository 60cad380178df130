//! Three real `runnel` processes as one cluster (docs/cluster.md): every broker tells the same
//! story in Metadata, leaders spread over all of them, clients bootstrapped from one broker reach
//! the partitions the others lead, the controller survives kill -9, a dead broker's partitions go
//! offline and come back with every acknowledged record, a full restart keeps topics, configs and
//! committed offsets, a request to a non-leader is refused with NOT_LEADER_OR_FOLLOWER, and admin
//! requests work from any broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::admin::{AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use runnel_e2e::cluster::TopicMetadata;
use runnel_e2e::wire::{
    api_key, create_topics_v4, parse_create_topics_v4, parse_produce_v3, produce_v3, put_string,
    record_batch, ProducerIdentity, RawConnection, Reader,
};
use runnel_e2e::{
    admin, admin_options, commit_offset, committed_offset, committer, create_topic,
    create_topic_with, ensure, ensure_eq, list_topics, produce_all, produce_one, producer,
    read_all, Acked, Consumed, Record, Result, TestBroker, TestCluster, TestResult, WAIT_TIMEOUT,
};

/// NOT_LEADER_OR_FOLLOWER.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// LEADER_NOT_AVAILABLE.
const LEADER_NOT_AVAILABLE: i16 = 5;
/// FindCoordinator API key.
const FIND_COORDINATOR: i16 = 10;
/// Partitions of the topics whose leaders must cover every broker.
const SPREAD_PARTITIONS: i32 = 12;

/// `count` records `key-i` / `value-i` (keys tell where a record was meant to go).
fn records(prefix: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| {
            (
                Some(format!("{prefix}-key-{i}").into_bytes()),
                format!("{prefix}-value-{i}").into_bytes(),
            )
        })
        .collect()
}

/// Produces `per_partition` records to each of `partitions` partitions of `topic` through
/// `broker` only (acks=all); returns (partition, offset, value) of every acknowledged record.
async fn produce_to_every_partition(
    broker: &TestBroker,
    topic: &str,
    partitions: i32,
    per_partition: usize,
) -> Result<Vec<(Acked, Vec<u8>)>> {
    let producer = producer(broker, &[("acks", "all")])?;
    let mut acked = Vec::new();
    for partition in 0..partitions {
        let batch = records(&format!("{topic}-{partition}"), per_partition);
        let results = produce_all(&producer, topic, Some(partition), &batch).await?;
        for (ack, (_, value)) in results.into_iter().zip(batch) {
            ensure_eq!(ack.partition, partition, "{topic}: partition acknowledged");
            acked.push((ack, value));
        }
    }
    Ok(acked)
}

/// Checks every acknowledged record is in `read` at its partition and offset with its value.
fn check_acknowledged(
    topic: &str,
    acked: &[(Acked, Vec<u8>)],
    read: &BTreeMap<i32, Vec<Consumed>>,
) -> Result<()> {
    for (ack, value) in acked {
        let found = read
            .get(&ack.partition)
            .and_then(|records| records.iter().find(|r| r.offset == ack.offset));
        ensure!(
            found.and_then(|r| r.value.as_deref()) == Some(value.as_slice()),
            "{topic}-{}: acknowledged offset {} reads back as {found:?}",
            ack.partition,
            ack.offset
        );
    }
    Ok(())
}

/// The `__consumer_offsets` partition of `group`: `abs(hashCode(group)) % partitions`, with
/// Java's `String.hashCode` (over UTF-16 code units, wrapping) and Kafka's `Utils.abs`.
fn offsets_partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

/// The coordinator node id a FindCoordinator v0 to `broker` names for `group` (errors on an
/// error code).
fn find_coordinator(broker: &TestBroker, group: &str) -> Result<i32> {
    let mut body = Vec::new();
    put_string(&mut body, group);
    let mut connection = RawConnection::connect(broker, Duration::from_secs(10))?;
    let response = connection.round_trip(FIND_COORDINATOR, 0, &body)?;
    let mut reader = Reader::new(&response);
    let error_code = reader.i16()?;
    let node_id = reader.i32()?;
    ensure_eq!(
        error_code,
        0,
        "FindCoordinator {group} error (node {node_id})"
    );
    Ok(node_id)
}

/// Leader of each partition, as `topic` says.
fn leaders(topic: &TopicMetadata) -> BTreeMap<i32, i32> {
    topic
        .partitions
        .iter()
        .map(|p| (p.partition, p.leader))
        .collect()
}

/// Creates `topic` through node `from`, retrying while the cluster has no controller to carry
/// it out (after a kill -9) until [`WAIT_TIMEOUT`]. A retry that finds the topic already there
/// counts as success: the earlier attempt was committed although its answer was lost.
async fn create_topic_retrying(
    cluster: &TestCluster,
    from: i32,
    topic: &str,
    partitions: i32,
) -> Result<()> {
    let client = admin(cluster.node(from)?)?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match client.create_topics([&new_topic], &admin_options()).await {
            Err(e) => e.to_string(),
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) => return Ok(()),
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) if attempts > 1 => {
                    return Ok(())
                }
                Some(Err((name, code))) => format!("CreateTopics {name}: {code:?}"),
                None => "CreateTopics returned no result".to_owned(),
            },
        };
        ensure!(
            Instant::now() < deadline,
            "CreateTopics {topic} through node {from} kept failing for {WAIT_TIMEOUT:?} \
             ({attempts} attempts); last: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Calls `attempt` until it returns `Ok` (returned) or [`WAIT_TIMEOUT`] passes (an error naming
/// `what` and the last error): for what the other brokers learn a moment after the one that
/// answered.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("timed out after {WAIT_TIMEOUT:?}: {what}; last: {e}").into())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `retention.ms` of `topic` as DescribeConfigs through `broker` reports it.
async fn retention_ms(broker: &TestBroker, topic: &str) -> Result<Option<String>> {
    let described = admin(broker)?
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &admin_options())
        .await?;
    let resource = described
        .into_iter()
        .next()
        .ok_or("DescribeConfigs returned nothing")?
        .map_err(|e| format!("DescribeConfigs {topic}: {e}"))?;
    Ok(resource
        .get("retention.ms")
        .and_then(|entry| entry.value.clone()))
}

/// Whether node `id` says `topic` does not exist (absent, or listed with an error).
fn topic_absent(cluster: &TestCluster, id: i32, topic: &str) -> Result<()> {
    let metadata = cluster.metadata_from(id, Some(&[topic]))?;
    match metadata.topics.iter().find(|t| t.name == topic) {
        Some(found) if found.error_code == 0 => {
            Err(format!("node {id} still lists {topic}: {found:?}").into())
        }
        _ => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_from_every_broker_agrees() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        let answers = cluster.wait_for_brokers(3).await?;
        let mut controllers = BTreeSet::new();
        for (id, metadata) in &answers {
            ensure_eq!(
                metadata.broker_ids(),
                vec![1, 2, 3],
                "brokers node {id} lists"
            );
            for broker in &metadata.brokers {
                let node = cluster.node(broker.node_id)?;
                ensure_eq!(
                    format!("{}:{}", broker.host, broker.port),
                    node.bootstrap(),
                    "node {id}'s endpoint for broker {}",
                    broker.node_id
                );
            }
            controllers.insert(metadata.controller_id);
        }
        ensure_eq!(
            controllers.len(),
            1,
            "controller ids named ({controllers:?})"
        );

        create_topic(cluster.node(1)?, "agreed", 6).await?;
        let mut seen = BTreeMap::new();
        for id in cluster.node_ids() {
            let topic = cluster.wait_for_leaders(id, "agreed", 6).await?;
            seen.insert(id, topic);
        }
        let first = seen.get(&1).ok_or("no answer from node 1")?;
        for (id, topic) in &seen {
            ensure_eq!(
                leaders(topic),
                leaders(first),
                "leaders of `agreed` as node {id} says (node 1 says {first:?})"
            );
            for partition in &topic.partitions {
                ensure_eq!(
                    partition.replicas,
                    vec![partition.leader],
                    "node {id}: replicas of agreed-{}",
                    partition.partition
                );
                ensure_eq!(partition.isr, partition.replicas, "node {id}: ISR");
                ensure!(
                    partition.offline_replicas.is_empty(),
                    "node {id}: agreed-{} has offline replicas {:?}",
                    partition.partition,
                    partition.offline_replicas
                );
            }
        }
        Ok(())
    }
    .await;
    cluster.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twelve_partition_topic_spreads_leaders_over_all_three() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        cluster.wait_for_brokers(3).await?;
        create_topic(cluster.node(2)?, "spread", SPREAD_PARTITIONS).await?;
        let topic = cluster
            .wait_for_leaders(3, "spread", SPREAD_PARTITIONS as usize)
            .await?;
        let mut led: BTreeMap<i32, usize> = BTreeMap::new();
        for leader in leaders(&topic).values() {
            *led.entry(*leader).or_default() += 1;
        }
        // Round-robin over three unfenced brokers: four partitions each.
        ensure_eq!(
            led,
            BTreeMap::from([(1, 4), (2, 4), (3, 4)]),
            "partitions led per broker"
        );
        Ok(())
    }
    .await;
    cluster.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_through_one_broker_reaches_all_and_a_group_reads_everything() -> TestResult {
    let mut cluster = TestCluster::start_with(3, &["--set", "group.initial.rebalance.delay.ms=0"])?;
    let result = async {
        cluster.wait_for_brokers(3).await?;
        let topic = "everywhere";
        create_topic(cluster.node(1)?, topic, SPREAD_PARTITIONS).await?;
        let metadata = cluster
            .wait_for_leaders(1, topic, SPREAD_PARTITIONS as usize)
            .await?;
        let led_by: BTreeSet<i32> = leaders(&metadata).values().copied().collect();
        ensure_eq!(led_by, BTreeSet::from([1, 2, 3]), "leaders of {topic}");

        // Bootstrap from node 1 alone: the records of partitions led by 2 and 3 go there.
        let acked =
            produce_to_every_partition(cluster.node(1)?, topic, SPREAD_PARTITIONS, 10).await?;

        // A group member bootstrapped from node 2 alone finds its coordinator (wherever the
        // group's __consumer_offsets partition is led) and reads everything.
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.node(2)?.bootstrap())
            .set("group.id", "everywhere-readers")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("socket.timeout.ms", "30000")
            .create()?;
        consumer.subscribe(&[topic])?;
        let mut read: BTreeMap<i32, Vec<Consumed>> = BTreeMap::new();
        let mut count = 0;
        while count < acked.len() {
            let message = tokio::time::timeout(WAIT_TIMEOUT, consumer.recv())
                .await
                .map_err(|_| format!("group read only {count} of {} records", acked.len()))??;
            read.entry(message.partition()).or_default().push(Consumed {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
            });
            count += 1;
        }
        check_acknowledged(topic, &acked, &read)?;
        consumer.commit_consumer_state(CommitMode::Sync)?;

        // Every broker names as the group's coordinator the leader of its __consumer_offsets
        // partition (Kafka's: abs(Java hashCode of the group id) % 50).
        let offsets_partition = offsets_partition_for("everywhere-readers", 50);
        let offsets = cluster
            .wait_for_leaders(1, "__consumer_offsets", 50)
            .await?;
        let coordinator = offsets.partition(offsets_partition)?.leader;
        for id in cluster.node_ids() {
            ensure_eq!(
                find_coordinator(cluster.node(id)?, "everywhere-readers")?,
                coordinator,
                "coordinator node {id} names (leader of __consumer_offsets-{offsets_partition})"
            );
        }

        // The committed offsets are there for a second member of the group, through node 3.
        let checker = committer(cluster.node(3)?, "everywhere-readers")?;
        let mut wanted = rdkafka::TopicPartitionList::new();
        for partition in 0..SPREAD_PARTITIONS {
            wanted.add_partition(topic, partition);
        }
        let committed = checker.committed_offsets(wanted, runnel_e2e::REQUEST_TIMEOUT)?;
        for element in committed.elements() {
            ensure_eq!(
                element.offset(),
                rdkafka::Offset::Offset(10),
                "committed offset of {topic}-{}",
                element.partition()
            );
        }
        Ok(())
    }
    .await;
    cluster.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_controller_elects_a_new_one_that_creates_topics() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        cluster.wait_for_brokers(3).await?;
        let old = cluster.controller_id().await?;
        cluster.kill9(old)?;
        let new = cluster.controller_id().await?;
        ensure!(new != old, "controller {old} was killed but is still named");
        let survivor = cluster
            .node_ids()
            .into_iter()
            .find(|id| *id != old)
            .ok_or("no surviving node")?;
        create_topic_retrying(&cluster, survivor, "after-failover", 3).await?;
        for id in cluster.running_ids()? {
            let metadata = cluster
                .poll(&format!("node {id} lists after-failover"), |cluster| {
                    let metadata = cluster.metadata_from(id, Some(&["after-failover"]))?;
                    let topic = metadata.topic("after-failover")?;
                    ensure!(topic.partitions.len() == 3, "node {id} says {topic:?}");
                    Ok(metadata)
                })
                .await?;
            ensure_eq!(metadata.controller_id, new, "controller node {id} names");
        }

        // The old controller comes back as a follower and all three are listed again.
        cluster.start_again(old)?;
        cluster.wait_for_brokers(3).await?;
        Ok(())
    }
    .await;
    cluster.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_brokers_partitions_go_offline_and_return_with_every_record() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        cluster.wait_for_brokers(3).await?;
        let topic = "offline";
        let partitions = 6;
        create_topic(cluster.node(1)?, topic, partitions).await?;
        cluster.wait_for_leaders(1, topic, 6).await?;
        let acked = produce_to_every_partition(cluster.node(1)?, topic, partitions, 20).await?;

        // Kill a broker that is not the controller: fencing, not failover, is under test.
        let controller = cluster.controller_id().await?;
        let victim = cluster
            .node_ids()
            .into_iter()
            .find(|id| *id != controller)
            .ok_or("no non-controller node")?;
        let before = cluster.wait_for_leaders(controller, topic, 6).await?;
        let victims: BTreeSet<i32> = leaders(&before)
            .into_iter()
            .filter(|(_, leader)| *leader == victim)
            .map(|(partition, _)| partition)
            .collect();
        ensure!(
            !victims.is_empty(),
            "node {victim} leads no partition of {before:?}"
        );
        cluster.kill9(victim)?;

        // Once fenced, its partitions (replication factor 1) have no leader.
        let offline = cluster
            .poll(
                &format!("node {victim} fenced and its partitions offline"),
                |cluster| {
                    let metadata = cluster.metadata_from(controller, Some(&[topic]))?;
                    ensure!(
                        !metadata.broker_ids().contains(&victim),
                        "node {victim} still listed: {:?}",
                        metadata.broker_ids()
                    );
                    let found = metadata.topic(topic)?.clone();
                    for partition in &victims {
                        let state = found.partition(*partition)?;
                        ensure!(
                            state.leader == -1,
                            "{topic}-{partition} still led by {}",
                            state.leader
                        );
                    }
                    Ok(found)
                },
            )
            .await?;
        for state in &offline.partitions {
            if victims.contains(&state.partition) {
                ensure_eq!(
                    state.error_code,
                    LEADER_NOT_AVAILABLE,
                    "error of {topic}-{}",
                    state.partition
                );
                ensure_eq!(
                    state.offline_replicas,
                    vec![victim],
                    "offline replicas of {topic}-{}",
                    state.partition
                );
            } else {
                ensure_eq!(state.error_code, 0, "error of {topic}-{}", state.partition);
                ensure!(
                    state.leader >= 0 && state.leader != victim,
                    "{topic}-{} led by {}",
                    state.partition,
                    state.leader
                );
            }
        }

        // The others still take records.
        let surviving = cluster.node(controller)?;
        let producer = producer(surviving, &[("acks", "all")])?;
        let mut more = Vec::new();
        for state in offline
            .partitions
            .iter()
            .filter(|s| !victims.contains(&s.partition))
        {
            let value = format!("while-{victim}-down-{}", state.partition).into_bytes();
            let ack = produce_one(&producer, topic, Some(state.partition), None, &value)
                .await
                .map_err(|e| {
                    format!(
                        "producing to {topic}-{} with node {victim} down: {e}",
                        state.partition
                    )
                })?;
            more.push((ack, value));
        }

        // Back: every partition served again, every acknowledged record there.
        cluster.start_again(victim)?;
        cluster.wait_for_brokers(3).await?;
        cluster.wait_for_leaders(victim, topic, 6).await?;
        let read = read_all(cluster.node(victim)?, topic, partitions).await?;
        check_acknowledged(topic, &acked, &read)?;
        check_acknowledged(topic, &more, &read)?;
        Ok(())
    }
    .await;
    cluster.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_all_three_keeps_topics_configs_and_committed_offsets() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        cluster.wait_for_brokers(3).await?;
        let topic = "durable";
        create_topic_with(cluster.node(1)?, topic, 3, &[("retention.ms", "86400123")]).await?;
        cluster.wait_for_leaders(1, topic, 3).await?;
        let acked = produce_to_every_partition(cluster.node(2)?, topic, 3, 10).await?;
        commit_offset(&committer(cluster.node(3)?, "durable-group")?, topic, 7)?;
        let leaders_before = leaders(&cluster.wait_for_leaders(1, topic, 3).await?);

        cluster.restart_all()?;
        cluster.wait_for_brokers(3).await?;
        let after = cluster.wait_for_leaders(2, topic, 3).await?;
        ensure_eq!(
            leaders(&after),
            leaders_before,
            "leaders of {topic} after the restart"
        );

        for id in cluster.node_ids() {
            let topics = list_topics(cluster.node(id)?)?;
            ensure_eq!(
                topics.get(topic).copied(),
                Some(3),
                "{topic} as node {id} lists it"
            );
        }
        let node3 = cluster.node(3)?;
        eventually(
            &format!("retention.ms of {topic} through node 3"),
            || async {
                let retention = retention_ms(node3, topic).await?;
                ensure_eq!(
                    retention.as_deref(),
                    Some("86400123"),
                    "retention.ms of {topic}"
                );
                Ok(())
            },
        )
        .await?;

        let node1 = cluster.node(1)?;
        eventually(
            "the committed offset of durable-group through node 1",
            || async {
                let offset = committed_offset(&committer(node1, "durable-group")?, topic)?;
                ensure_eq!(offset, rdkafka::Offset::Offset(7), "committed offset");
                Ok(())
            },
        )
        .await?;

        let read = read_all(cluster.node(1)?, topic, 3).await?;
        check_acknowledged(topic, &acked, &read)?;
        Ok(())
    }
    .await;
    cluster.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_leader_answers_not_leader_and_rdkafka_moves_to_the_new_leader() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        cluster.wait_for_brokers(3).await?;
        let topic = "moving";
        create_topic(cluster.node(1)?, topic, 1).await?;
        let before = cluster.wait_for_leaders(1, topic, 1).await?;
        let leader = before.partition(0)?.leader;
        let other = cluster
            .node_ids()
            .into_iter()
            .find(|id| *id != leader)
            .ok_or("no non-leader")?;

        // A Produce for partition 0 sent straight to a broker that does not lead it.
        let identity = ProducerIdentity {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        let batch = record_batch(&[b"misdirected"], identity, 0);
        let mut connection = RawConnection::connect(cluster.node(other)?, Duration::from_secs(10))?;
        let response =
            connection.round_trip(api_key::PRODUCE, 3, &produce_v3(-1, topic, 0, &batch)?)?;
        let results = parse_produce_v3(&response)?;
        let result = results.first().ok_or("empty produce response")?;
        ensure_eq!(
            result.error_code,
            NOT_LEADER_OR_FOLLOWER,
            "produce to node {other} for {topic}-0 (led by {leader})"
        );

        // A producer that knows the old leader: the topic is deleted and created again (after
        // a filler topic) until partition 0's leader moves; the producer's cached metadata is then stale, and it must
        // find the new leader by itself.
        let producer = producer(
            cluster.node(other)?,
            &[("acks", "all"), ("enable.idempotence", "false")],
        )?;
        produce_one(&producer, topic, Some(0), None, b"before the move")
            .await
            .map_err(|e| format!("first produce: {e}"))?;
        let admin_client = admin(cluster.node(other)?)?;
        let mut moved_to = leader;
        for attempt in 0..6 {
            admin_client
                .delete_topics(&[topic], &admin_options())
                .await?;
            cluster
                .poll(&format!("{topic} deleted"), |cluster| {
                    topic_absent(cluster, other, topic)
                })
                .await?;
            // Another topic first, so that round-robin placement (which goes on from where the
            // previous topic stopped) does not start at the same broker again.
            create_topic(cluster.node(other)?, &format!("filler-{attempt}"), 1).await?;
            create_topic(cluster.node(other)?, topic, 1).await?;
            moved_to = cluster
                .wait_for_leaders(other, topic, 1)
                .await?
                .partition(0)?
                .leader;
            if moved_to != leader {
                break;
            }
        }
        ensure!(
            moved_to != leader,
            "{topic}-0 stayed on node {leader} over six re-creations"
        );
        let ack = produce_one(&producer, topic, Some(0), None, b"after the move")
            .await
            .map_err(|e| {
                format!("produce after {topic}-0 moved from {leader} to {moved_to}: {e}")
            })?;
        ensure_eq!(ack.partition, 0, "partition acknowledged");
        let read = read_all(cluster.node(moved_to)?, topic, 1).await?;
        let values: Vec<Option<Vec<u8>>> = read
            .get(&0)
            .map(|records| records.iter().map(|r| r.value.clone()).collect())
            .unwrap_or_default();
        ensure_eq!(
            values,
            vec![Some(b"after the move".to_vec())],
            "{topic}-0 after the move"
        );
        Ok(())
    }
    .await;
    cluster.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operations_work_from_every_broker() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        cluster.wait_for_brokers(3).await?;
        for id in cluster.node_ids() {
            let topic = format!("admin-from-{id}");
            let client = admin(cluster.node(id)?)?;

            // Raw, so the request goes to node `id` itself: an admin client would send it to
            // the controller, and a non-controller broker must forward it.
            let mut connection = RawConnection::connect(cluster.node(id)?, WAIT_TIMEOUT)?;
            let response = connection.round_trip(
                api_key::CREATE_TOPICS,
                4,
                &create_topics_v4(&topic, 2, 1),
            )?;
            ensure_eq!(
                parse_create_topics_v4(&response)?,
                vec![(topic.clone(), 0)],
                "node {id}: CreateTopics {topic}"
            );
            // Answered once committed, so the broker that answered knows it at once.
            let metadata = cluster.metadata_from(id, Some(&[topic.as_str()]))?;
            ensure_eq!(
                metadata.topic(&topic)?.partitions.len(),
                2,
                "node {id}: partitions of {topic} right after CreateTopics"
            );

            let grown = client
                .create_partitions([&NewPartitions::new(&topic, 5)], &admin_options())
                .await?;
            for result in grown {
                result.map_err(|(name, code)| {
                    format!("node {id}: CreatePartitions {name}: {code:?}")
                })?;
            }
            let altered = client
                .alter_configs(
                    [&AlterConfig::new(ResourceSpecifier::Topic(&topic))
                        .set("retention.ms", "3600000")],
                    &admin_options(),
                )
                .await?;
            for result in altered {
                result.map_err(|(resource, code)| {
                    format!("node {id}: AlterConfigs {resource:?}: {code:?}")
                })?;
            }

            // Every broker sees the grown topic and its config.
            for other in cluster.node_ids() {
                cluster.wait_for_leaders(other, &topic, 5).await?;
                let broker = cluster.node(other)?;
                eventually(
                    &format!("retention.ms of {topic} through node {other}"),
                    || async {
                        let retention = retention_ms(broker, &topic).await?;
                        ensure_eq!(retention.as_deref(), Some("3600000"), "retention.ms");
                        Ok(())
                    },
                )
                .await?;
            }

            let deleted = client
                .delete_topics(&[topic.as_str()], &admin_options())
                .await?;
            for result in deleted {
                result
                    .map_err(|(name, code)| format!("node {id}: DeleteTopics {name}: {code:?}"))?;
            }
            for other in cluster.node_ids() {
                cluster
                    .poll(
                        &format!("node {other} no longer lists {topic}"),
                        |cluster| topic_absent(cluster, other, &topic),
                    )
                    .await?;
            }
        }
        Ok(())
    }
    .await;
    cluster.check(result)
}

#[tokio::test]
async fn a_lone_node_is_broker_and_controller_of_its_own_cluster() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        create_topic(&broker, "alone", 3).await?;
        let metadata = runnel_e2e::cluster::metadata(&broker, Some(&["alone"]))?;
        ensure_eq!(metadata.broker_ids(), vec![0], "brokers");
        ensure_eq!(metadata.controller_id, 0, "controller");
        let topic = metadata.topic("alone")?;
        ensure_eq!(topic.error_code, 0, "error of alone");
        ensure_eq!(topic.partitions.len(), 3, "partitions of alone");
        for partition in &topic.partitions {
            ensure_eq!(
                partition.leader,
                0,
                "leader of alone-{}",
                partition.partition
            );
            ensure!(
                partition.leader_epoch >= 0,
                "leader epoch {}",
                partition.leader_epoch
            );
            ensure_eq!(partition.replicas, vec![0], "replicas");
            ensure_eq!(partition.isr, vec![0], "ISR");
            ensure!(
                partition.offline_replicas.is_empty(),
                "offline replicas {:?}",
                partition.offline_replicas
            );
        }
        let all = runnel_e2e::cluster::metadata(&broker, None)?;
        ensure!(all.topic("alone").is_ok(), "all topics: {:?}", all.topics);
        Ok(())
    }
    .await;
    broker.check(result)
}
