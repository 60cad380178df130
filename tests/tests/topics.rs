//! Topic lifecycle: auto-creation on and off, CreateTopics errors and validate_only,
//! DeleteTopics and recreating the same name.

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;
use runnel_e2e::{
    admin, admin_options, consume_n, consumer_assigned, create_topic, ensure, ensure_eq,
    list_topics, metadata_client, produce_all, produce_one, producer, wait_until, watermarks,
    Record, Result, TestBroker, TestResult, REQUEST_TIMEOUT, WAIT_TIMEOUT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_new_topic_auto_creates_it_with_num_partitions() -> TestResult {
    let broker = TestBroker::start(&["--set", "num.partitions=4"])?;
    let result = async {
        let producer = producer(&broker, &[])?;
        let ack = produce_one(&producer, "auto-by-produce", None, Some(b"k"), b"v").await?;
        ensure_eq!(ack.offset, 0, "offset of the first record in a new topic");
        let topics = list_topics(&broker)?;
        ensure_eq!(
            topics.get("auto-by-produce").copied(),
            Some(4),
            "partitions of the auto-created topic (listed topics {topics:?})"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_for_new_topic_auto_creates_it() -> TestResult {
    let broker = TestBroker::start(&["--set", "num.partitions=3"])?;
    let result = async {
        let client = metadata_client(&broker, &[("allow.auto.create.topics", "true")])?;
        // The first metadata response may list the topic as being created (LEADER_NOT_AVAILABLE
        // in Kafka); poll until it is there.
        wait_until(
            "topic auto-by-metadata listed with 3 partitions",
            WAIT_TIMEOUT,
            || {
                let metadata = client.fetch_metadata(Some("auto-by-metadata"), REQUEST_TIMEOUT);
                async move {
                    let metadata = metadata?;
                    Ok(metadata.topics().iter().any(|t| {
                        t.name() == "auto-by-metadata"
                            && t.error().is_none()
                            && t.partitions().len() == 3
                    }))
                }
            },
        )
        .await?;
        ensure_eq!(
            list_topics(&broker)?.get("auto-by-metadata").copied(),
            Some(3),
            "partitions listed for auto-by-metadata"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_disabled_rejects_unknown_topic() -> TestResult {
    let broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let producer = producer(
            &broker,
            &[
                ("message.timeout.ms", "10000"),
                // Don't wait the default 30 s for the topic to "propagate".
                ("topic.metadata.propagation.max.ms", "1000"),
            ],
        )?;
        match produce_one(&producer, "never-created", None, None, b"v").await {
            Ok(ack) => {
                return Err(format!("produce to a missing topic succeeded at {ack:?}").into())
            }
            Err(e) => {
                let code = e.rdkafka_error_code();
                ensure!(
                    matches!(
                        code,
                        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                            | Some(RDKafkaErrorCode::UnknownTopic)
                    ),
                    "produce to a missing topic failed with {e} ({code:?}), expected \
                     UnknownTopicOrPartition"
                );
            }
        }
        let topics = list_topics(&broker)?;
        ensure!(
            !topics.contains_key("never-created"),
            "topic was created although auto.create.topics.enable=false: {topics:?}"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Creates one topic and returns the error code of its per-topic result.
async fn create_error(
    broker: &TestBroker,
    topic: NewTopic<'_>,
    validate_only: bool,
) -> Result<Option<RDKafkaErrorCode>> {
    let admin = admin(broker)?;
    let options = admin_options().validate_only(validate_only);
    let results = admin.create_topics([&topic], &options).await?;
    ensure_eq!(results.len(), 1, "CreateTopics results");
    Ok(results
        .into_iter()
        .next()
        .and_then(|r| r.err())
        .map(|(_, code)| code))
}

fn topic(name: &str, partitions: i32) -> NewTopic<'_> {
    NewTopic::new(name, partitions, TopicReplication::Fixed(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_reports_each_error() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        ensure_eq!(
            create_error(&broker, topic("dup", 2), false).await?,
            None,
            "create dup"
        );
        ensure_eq!(
            create_error(&broker, topic("dup", 2), false).await?,
            Some(RDKafkaErrorCode::TopicAlreadyExists),
            "create dup again"
        );
        let too_long = "x".repeat(250);
        for bad_name in ["bad/name", "", ".", "..", "bad name", too_long.as_str()] {
            ensure_eq!(
                create_error(&broker, topic(bad_name, 1), false).await?,
                Some(RDKafkaErrorCode::InvalidTopic),
                "create topic named {bad_name:?}"
            );
        }
        ensure_eq!(
            create_error(
                &broker,
                topic("bad-policy", 1).set("cleanup.policy", "bogus"),
                false
            )
            .await?,
            Some(RDKafkaErrorCode::InvalidConfig),
            "create with cleanup.policy=bogus"
        );
        ensure_eq!(
            create_error(
                &broker,
                topic("unknown-config", 1).set("no.such.config", "1"),
                false
            )
            .await?,
            Some(RDKafkaErrorCode::InvalidConfig),
            "create with an unknown config name"
        );
        ensure_eq!(
            create_error(&broker, topic("zero-partitions", 0), false).await?,
            Some(RDKafkaErrorCode::InvalidPartitions),
            "create with 0 partitions"
        );
        ensure_eq!(
            create_error(
                &broker,
                NewTopic::new("rf-two", 1, TopicReplication::Fixed(2)),
                false
            )
            .await?,
            Some(RDKafkaErrorCode::InvalidReplicationFactor),
            "create with replication factor 2 on one broker"
        );
        let topics = list_topics(&broker)?;
        let created: Vec<&String> = topics.keys().filter(|t| !t.starts_with("__")).collect();
        ensure_eq!(created, vec!["dup"], "topics after the failed creates");
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_validate_only_creates_nothing() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        ensure_eq!(
            create_error(&broker, topic("validated", 3), true).await?,
            None,
            "validate_only create of a valid topic"
        );
        ensure_eq!(
            create_error(&broker, topic("bad/validated", 3), true).await?,
            Some(RDKafkaErrorCode::InvalidTopic),
            "validate_only create of an invalid name"
        );
        let topics = list_topics(&broker)?;
        ensure!(
            topics.keys().all(|t| t.starts_with("__")),
            "validate_only created topics: {topics:?}"
        );
        // The name is still free.
        ensure_eq!(
            create_error(&broker, topic("validated", 3), false).await?,
            None,
            "create"
        );
        ensure_eq!(
            list_topics(&broker)?.get("validated").copied(),
            Some(3),
            "partitions of validated"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_topic_recreated_is_fresh_and_empty() -> TestResult {
    let broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let name = "recycled";
        create_topic(&broker, name, 2).await?;
        let old: Vec<Record> = (0..20)
            .map(|i| (None, format!("old {i}").into_bytes()))
            .collect();
        produce_all(&producer(&broker, &[])?, name, Some(1), &old).await?;
        ensure_eq!(
            watermarks(&broker, name, 1)?,
            (0, 20),
            "watermarks before delete"
        );

        let admin = admin(&broker)?;
        let deleted = admin.delete_topics(&[name], &admin_options()).await?;
        ensure!(
            deleted.iter().all(|r| r.is_ok()),
            "DeleteTopics {name}: {deleted:?}"
        );
        wait_until("deleted topic no longer listed", WAIT_TIMEOUT, || async {
            Ok(!list_topics(&broker)?.contains_key(name))
        })
        .await?;
        let again = admin.delete_topics(&[name], &admin_options()).await?;
        ensure!(
            matches!(
                again.as_slice(),
                [Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))]
            ),
            "deleting a deleted topic: {again:?}, expected UnknownTopicOrPartition"
        );

        create_topic(&broker, name, 1).await?;
        ensure_eq!(
            list_topics(&broker)?.get(name).copied(),
            Some(1),
            "partitions of the recreated topic"
        );
        ensure_eq!(
            watermarks(&broker, name, 0)?,
            (0, 0),
            "watermarks of the recreated topic"
        );
        // A fresh producer: the old one has cached metadata of the deleted topic.
        let ack = produce_one(&producer(&broker, &[])?, name, Some(0), None, b"new 0").await?;
        ensure_eq!(ack.offset, 0, "offset of the first record after recreating");
        let consumer = consumer_assigned(&broker, name, &[0], Offset::Beginning)?;
        let read = consume_n(&consumer, 1, WAIT_TIMEOUT).await?;
        ensure_eq!(
            read.first().and_then(|r| r.value.clone()),
            Some(b"new 0".to_vec()),
            "only record of the recreated topic"
        );
        ensure_eq!(
            watermarks(&broker, name, 0)?,
            (0, 1),
            "watermarks after one produce"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}
