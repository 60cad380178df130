//! Replicated partitions as the controller places and elects them (docs/replication.md,
//! "Controller"), seen through Metadata on every broker of a three-node cluster: placement with
//! a replication factor, explicit assignments, the refusal of a factor above the brokers,
//! leadership moving off a broker that shuts down, and ElectLeaders (key 43) over the wire.
//! Metadata only: copying records to followers is another page's (tests/tests/replication.rs).

#![allow(clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use runnel_e2e::cluster::{PartitionMetadata, TopicMetadata};
use runnel_e2e::wire::{
    elect_leaders_v1, parse_elect_leaders_v1, ElectionResult, RawConnection, ELECT_LEADERS,
};
use runnel_e2e::{admin, admin_options, ensure, ensure_eq, Result, TestCluster, TestResult};

const ELECTION_PREFERRED: i8 = 0;
const ELECTION_UNCLEAN: i8 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
const ELECTION_NOT_NEEDED: i16 = 84;

/// Creates `topics` through node 1's admin client; returns each topic's error (None: created).
async fn create(
    cluster: &TestCluster,
    topics: &[NewTopic<'_>],
) -> Result<Vec<(String, Option<RDKafkaErrorCode>)>> {
    let admin = admin(cluster.node(1)?)?;
    let results = admin.create_topics(topics, &admin_options()).await?;
    Ok(results
        .into_iter()
        .map(|result| match result {
            Ok(name) => (name, None),
            Err((name, code)) => (name, Some(code)),
        })
        .collect())
}

/// The replicas as a set.
fn set(brokers: &[i32]) -> BTreeSet<i32> {
    brokers.iter().copied().collect()
}

/// Waits until every node in `nodes` reports `topic` as `check` wants it.
async fn poll_topic(
    cluster: &mut TestCluster,
    nodes: &[i32],
    topic: &str,
    what: &str,
    check: impl Fn(&TopicMetadata) -> Result<()>,
) -> Result<()> {
    let description = format!("nodes {nodes:?}: {topic} {what}");
    cluster
        .poll(&description, |c| {
            for &id in nodes {
                let metadata = c.metadata_from(id, Some(&[topic]))?;
                let found = metadata.topic(topic)?;
                ensure_eq!(found.error_code, 0, "node {id}: {topic}'s error");
                check(found).map_err(|e| format!("node {id}: {e}"))?;
            }
            Ok(())
        })
        .await
}

/// ElectLeaders v1 to node `id`: the top-level error and every partition's result.
fn elect(
    cluster: &TestCluster,
    id: i32,
    election_type: i8,
    partitions: &[(&str, &[i32])],
) -> Result<(i16, Vec<ElectionResult>)> {
    let mut connection = RawConnection::connect(cluster.node(id)?, Duration::from_secs(10))?;
    let body = elect_leaders_v1(election_type, Some(partitions));
    parse_elect_leaders_v1(&connection.round_trip(ELECT_LEADERS, 1, &body)?)
}

fn result(topic: &str, partition: i32, error_code: i16) -> ElectionResult {
    ElectionResult {
        topic: topic.into(),
        partition,
        error_code,
    }
}

/// Creates `topic` (one partition on replicas [2, 3, 1], so 2 is the preferred leader), waits
/// until 2 leads with every replica in sync, then stops node 2 (SIGTERM) and waits until 3
/// leads.
async fn lead_away_from_preferred_replica(cluster: &mut TestCluster, topic: &str) -> Result<()> {
    cluster.wait_for_brokers(3).await?;
    let assignment: &[&[i32]] = &[&[2, 3, 1]];
    let created = create(
        cluster,
        &[NewTopic::new(
            topic,
            1,
            TopicReplication::Variable(assignment),
        )],
    )
    .await?;
    ensure_eq!(created, vec![(topic.to_string(), None)], "CreateTopics");
    poll_topic(cluster, &[1, 3], topic, "is led by 2", |t| {
        led_by_preferred_with_all_in_sync(&t.partitions[0])
    })
    .await?;
    let status = cluster.terminate(2)?;
    ensure!(status.success(), "node 2 exited with {status}");
    poll_topic(cluster, &[1, 3], topic, "is led by 3", |t| {
        ensure_eq!(t.partitions[0].leader, 3, "leader");
        Ok(())
    })
    .await
}

fn led_by_preferred_with_all_in_sync(p: &PartitionMetadata) -> Result<()> {
    ensure!(
        p.leader == p.replicas[0] && set(&p.isr) == set(&p.replicas),
        "partition {} is {p:?}",
        p.partition
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_topics_are_placed_with_every_replica_in_sync() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        cluster.wait_for_brokers(3).await?;
        let assignment: &[&[i32]] = &[&[3, 1, 2], &[2, 3, 1]];
        let created = create(
            &cluster,
            &[
                NewTopic::new("three", 3, TopicReplication::Fixed(3)),
                NewTopic::new("four", 1, TopicReplication::Fixed(4)),
                NewTopic::new("assigned", 2, TopicReplication::Variable(assignment)),
            ],
        )
        .await?;
        ensure_eq!(
            created,
            vec![
                ("three".to_string(), None),
                (
                    "four".to_string(),
                    Some(RDKafkaErrorCode::InvalidReplicationFactor)
                ),
                ("assigned".to_string(), None),
            ],
            "CreateTopics results"
        );
        poll_topic(
            &mut cluster,
            &[1, 2, 3],
            "three",
            "has 3 in-sync replicas per partition",
            |t| {
                ensure_eq!(t.partitions.len(), 3, "partitions");
                for p in &t.partitions {
                    ensure_eq!(set(&p.replicas), set(&[1, 2, 3]), "replicas");
                    led_by_preferred_with_all_in_sync(p)?;
                }
                let leaders: BTreeSet<i32> = t.partitions.iter().map(|p| p.leader).collect();
                ensure_eq!(leaders, set(&[1, 2, 3]), "leaders spread round-robin");
                Ok(())
            },
        )
        .await?;
        poll_topic(
            &mut cluster,
            &[1, 2, 3],
            "assigned",
            "follows its assignment",
            |t| {
                ensure_eq!(t.partitions.len(), 2, "partitions");
                for (p, replicas) in t.partitions.iter().zip(assignment) {
                    ensure_eq!(p.replicas, replicas.to_vec(), "replicas of {}", p.partition);
                    led_by_preferred_with_all_in_sync(p)?;
                }
                Ok(())
            },
        )
        .await
    }
    .await;
    cluster.check(result)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_leader_hands_its_partitions_to_in_sync_replicas() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        cluster.wait_for_brokers(3).await?;
        let assignment: &[&[i32]] = &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]];
        let created = create(
            &cluster,
            &[NewTopic::new(
                "moving",
                3,
                TopicReplication::Variable(assignment),
            )],
        )
        .await?;
        ensure_eq!(created, vec![("moving".to_string(), None)], "CreateTopics");
        poll_topic(
            &mut cluster,
            &[1, 3],
            "moving",
            "is led by preferred replicas",
            |t| {
                t.partitions
                    .iter()
                    .try_for_each(led_by_preferred_with_all_in_sync)
            },
        )
        .await?;
        let epoch_before = cluster
            .metadata_from(1, Some(&["moving"]))?
            .topic("moving")?
            .partitions[1]
            .leader_epoch;

        // Controlled shutdown: node 2 leaves every ISR, partition 1 moves to the next in-sync
        // replica (3, in replica order) with a new leader epoch.
        let status = cluster.terminate(2)?;
        ensure!(status.success(), "node 2 exited with {status}");
        poll_topic(
            &mut cluster,
            &[1, 3],
            "moving",
            "has left node 2 out",
            |t| {
                for p in &t.partitions {
                    ensure!(!p.isr.contains(&2), "partition {} is {p:?}", p.partition);
                    ensure!(
                        p.isr.contains(&p.leader),
                        "partition {} is {p:?}",
                        p.partition
                    );
                    ensure_eq!(
                        p.replicas,
                        assignment[p.partition as usize].to_vec(),
                        "replicas"
                    );
                }
                ensure_eq!(t.partitions[1].leader, 3, "partition 1's leader");
                ensure!(
                    t.partitions[1].leader_epoch > epoch_before,
                    "partition 1's leader epoch did not move: {:?}",
                    t.partitions[1]
                );
                ensure_eq!(
                    (t.partitions[0].leader, t.partitions[2].leader),
                    (1, 3),
                    "the other leaders"
                );
                Ok(())
            },
        )
        .await?;

        // ElectLeaders PREFERRED, answered per partition by any node (forwarded).
        let (error, results) = elect(
            &cluster,
            3,
            ELECTION_PREFERRED,
            &[("moving", &[0, 1, 2]), ("nowhere", &[0])],
        )?;
        ensure_eq!(error, 0, "top-level error");
        ensure_eq!(
            results,
            vec![
                result("moving", 0, ELECTION_NOT_NEEDED),
                result("moving", 1, PREFERRED_LEADER_NOT_AVAILABLE),
                result("moving", 2, ELECTION_NOT_NEEDED),
                result("nowhere", 0, UNKNOWN_TOPIC_OR_PARTITION),
            ],
            "preferred election while node 2 is down"
        );
        let (_, results) = elect(&cluster, 1, ELECTION_UNCLEAN, &[("moving", &[1])])?;
        ensure_eq!(
            results,
            vec![result("moving", 1, ELECTION_NOT_NEEDED)],
            "an unclean election of a led partition"
        );

        // Back: registered again, still out of the ISRs (its leaders add it once it has
        // caught up), leadership where it moved.
        cluster.start_again(2)?;
        cluster.wait_for_brokers(3).await?;
        let moving = cluster.metadata_from(2, Some(&["moving"]))?;
        ensure_eq!(
            moving.topic("moving")?.partitions[1].leader,
            3,
            "partition 1's leader"
        );
        Ok(())
    }
    .await;
    cluster.check(result)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_election_returns_leadership_once_the_replica_is_back_in_sync() -> TestResult {
    let mut cluster = TestCluster::start(3)?;
    let result = async {
        lead_away_from_preferred_replica(&mut cluster, "returning").await?;
        cluster.start_again(2)?;
        // Its leader (3) adds it back to the ISR once it has fetched up to the log end.
        poll_topic(
            &mut cluster,
            &[1, 2, 3],
            "returning",
            "has 2 back in sync",
            |t| {
                ensure!(t.partitions[0].isr.contains(&2), "{:?}", t.partitions[0]);
                Ok(())
            },
        )
        .await?;
        let (error, results) = elect(&cluster, 1, ELECTION_PREFERRED, &[("returning", &[0])])?;
        ensure_eq!(
            (error, results),
            (0, vec![result("returning", 0, 0)]),
            "preferred election"
        );
        poll_topic(
            &mut cluster,
            &[1, 2, 3],
            "returning",
            "is led by 2 again",
            |t| led_by_preferred_with_all_in_sync(&t.partitions[0]),
        )
        .await
    }
    .await;
    cluster.check(result)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_leader_rebalance_returns_leadership_to_the_preferred_replica() -> TestResult {
    let mut cluster =
        TestCluster::start_with(3, &["--set", "leader.imbalance.check.interval.seconds=1"])?;
    let result = async {
        lead_away_from_preferred_replica(&mut cluster, "rebalanced").await?;
        // Back in sync, the periodic check (every second here) hands leadership back to 2
        // without any request.
        cluster.start_again(2)?;
        poll_topic(
            &mut cluster,
            &[1, 2, 3],
            "rebalanced",
            "is led by 2 again",
            |t| led_by_preferred_with_all_in_sync(&t.partitions[0]),
        )
        .await
    }
    .await;
    cluster.check(result)?;
    Ok(())
}
