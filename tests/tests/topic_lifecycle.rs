//! A topic's life on disk and in Metadata: internal topics cannot be deleted by clients, and a
//! partition whose log is offline is reported without a leader.

use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use runnel_e2e::log_file::{partition_batches, segment_files};
use runnel_e2e::{
    admin, commit_offset, committer, create_topic, ensure, ensure_eq, list_topics, metadata_client,
    produce_one, producer, wait_until, Result, TestBroker, TestResult, REQUEST_TIMEOUT,
    WAIT_TIMEOUT,
};

const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The committed offset of partition 0 of `topic` for `consumer`'s group.
fn committed_offset(consumer: &BaseConsumer, topic: &str) -> Result<Offset> {
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    let list = consumer.committed_offsets(wanted, REQUEST_TIMEOUT)?;
    let element = list
        .find_partition(topic, 0)
        .ok_or("OffsetFetch returned no partition")?;
    Ok(element.offset())
}

/// DeleteTopics of `__consumer_offsets` from a client is refused with
/// TOPIC_AUTHORIZATION_FAILED (Kafka guards internal topics with ACLs; an unauthorised delete
/// gets this code), and the topic and the committed offsets it holds survive, also across a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_offsets_topic_is_refused_and_offsets_survive() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "tracked";
        let group = "survivors";
        create_topic(&broker, topic, 1).await?;
        commit_offset(&committer(&broker, group)?, topic, 7)?;
        ensure!(
            list_topics(&broker)?.contains_key(OFFSETS_TOPIC),
            "{OFFSETS_TOPIC} exists after a commit"
        );

        let results = admin(&broker)?
            .delete_topics(&[OFFSETS_TOPIC], &AdminOptions::new())
            .await?;
        ensure_eq!(
            results,
            vec![Err((
                OFFSETS_TOPIC.to_string(),
                RDKafkaErrorCode::TopicAuthorizationFailed
            ))],
            "DeleteTopics {OFFSETS_TOPIC}"
        );
        ensure!(
            list_topics(&broker)?.contains_key(OFFSETS_TOPIC),
            "{OFFSETS_TOPIC} still listed after the refused delete"
        );
        ensure_eq!(
            committed_offset(&committer(&broker, group)?, topic)?,
            Offset::Offset(7),
            "committed offset after the refused delete"
        );
        broker.restart()?;
        ensure_eq!(
            committed_offset(&committer(&broker, group)?, topic)?,
            Offset::Offset(7),
            "committed offset after a restart"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// A partition whose log cannot be opened (a flipped byte inside a middle batch: mid-log
/// corruption) is offline: Metadata reports it with LEADER_NOT_AVAILABLE and leader -1, not as
/// led by this node, while the topic's other partitions are reported as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_partition_has_no_leader_in_metadata() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "partly";
        let damaged = 1;
        create_topic(&broker, topic, 3).await?;
        let producer = producer(&broker, &[("acks", "all")])?;
        for partition in 0..3 {
            // One batch per record, so the damaged partition has intact batches after the
            // flipped one (what tells corruption from a torn tail).
            for round in 0..5 {
                produce_one(
                    &producer,
                    topic,
                    Some(partition),
                    None,
                    format!("round {round}").as_bytes(),
                )
                .await?;
            }
        }
        drop(producer);
        // Unclean: recovery verifies the batches after its checkpoint, and finds the damage.
        broker.kill9()?;
        let dir = broker.partition_dir(topic, damaged);
        let batches = partition_batches(&dir)?;
        let middle = batches.get(batches.len() / 2).ok_or("no middle batch")?;
        let segment = segment_files(&dir)?
            .first()
            .ok_or("no segment file")?
            .clone();
        let mut bytes = std::fs::read(&segment)?;
        // A byte inside the records of the middle batch (after its 61-byte header).
        let at = usize::try_from(middle.position + 61 + 5)?;
        *bytes.get_mut(at).ok_or("batch position past the file")? ^= 0x10;
        std::fs::write(&segment, &bytes)?;
        broker.start_again()?;

        // The warm-up after start-up opens every log: wait until it found the damage.
        let client = metadata_client(&broker, &[])?;
        let partitions = || -> Result<Vec<(i32, i32, Option<RDKafkaRespErr>)>> {
            let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
            let described = metadata
                .topics()
                .first()
                .ok_or("Metadata returned no topic")?;
            Ok(described
                .partitions()
                .iter()
                .map(|p| (p.id(), p.leader(), p.error()))
                .collect())
        };
        wait_until(
            "Metadata reports the damaged partition offline",
            WAIT_TIMEOUT,
            || {
                let seen = partitions().map(|all| {
                    all.iter()
                        .any(|(id, _, error)| *id == damaged && error.is_some())
                });
                async move { seen }
            },
        )
        .await?;
        let mut all = partitions()?;
        all.sort_by_key(|(id, _, _)| *id);
        ensure_eq!(all.len(), 3, "partitions in Metadata");
        for (id, leader, error) in all {
            if id == damaged {
                ensure_eq!(
                    (leader, error),
                    (
                        -1,
                        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
                    ),
                    "leader and error of the offline partition {id}"
                );
            } else {
                ensure!(
                    leader >= 0 && error.is_none(),
                    "partition {id} is served: leader {leader}, error {error:?}"
                );
            }
        }
        Ok(())
    }
    .await;
    broker.check(result)
}
