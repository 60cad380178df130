//! A topic's life on disk and in Metadata: partition directories belong to one topic id (a
//! topic recreated under an old name never serves the old one's records, even after a crashed
//! delete; a data directory of the layout before topic ids upgrades in place), internal topics
//! cannot be deleted by clients, and a partition whose log is offline is reported without a
//! leader.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Offset;
use runnel_e2e::log_file::{partition_batches, segment_files};
use runnel_e2e::{
    admin, admin_options, commit_offset, committed_offset, committer, consume_n, consumer_assigned,
    create_topic, create_topic_with, ensure, ensure_eq, list_topics, metadata_client, produce_all,
    produce_one, producer, read_all, wait_until, Consumed, Record, Result, TestBroker, TestResult,
    REQUEST_TIMEOUT, WAIT_TIMEOUT,
};

const OFFSETS_TOPIC: &str = "__consumer_offsets";

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
            .delete_topics(&[OFFSETS_TOPIC], &admin_options())
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

/// The values of every record of `topic` (one partition), read from the beginning.
async fn values(broker: &TestBroker, topic: &str) -> Result<Vec<String>> {
    let stored = read_all(broker, topic, 1).await?;
    Ok(stored
        .values()
        .flatten()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect())
}

/// Produces `count` records valued `<prefix> <i>` to partition 0 of `topic`, acks=all.
async fn produce_values(
    broker: &TestBroker,
    topic: &str,
    prefix: &str,
    count: usize,
) -> Result<()> {
    let records: Vec<Record> = (0..count)
        .map(|i| (None, format!("{prefix} {i}").into_bytes()))
        .collect();
    produce_all(
        &producer(broker, &[("acks", "all")])?,
        topic,
        Some(0),
        &records,
    )
    .await?;
    Ok(())
}

/// Entries of the data dir whose name starts with `<topic>-`.
fn partition_entries(broker: &TestBroker, topic: &str) -> Result<Vec<String>> {
    let prefix = format!("{topic}-");
    let mut names: Vec<String> = std::fs::read_dir(broker.data_dir())?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    Ok(names)
}

/// Copies the directory `from` (files only, one level: a partition directory) to `to`.
fn copy_partition_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)?.flatten() {
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// A delete that crashed after its commit point (the metadata log no longer has the topic) but
/// before the partition directories were removed: the next start removes them, and a topic
/// created again under that name starts empty. With directories keyed by name alone, the new
/// topic adopted the old directory and served the deleted records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_after_a_delete_that_crashed_midway_serves_no_old_record() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "reborn";
        create_topic(&broker, topic, 1).await?;
        produce_values(&broker, topic, "old", 20).await?;
        broker.kill9()?;
        let dir = broker.partition_dir(topic, 0);
        let saved = broker.data_dir().join("..").join("saved-partition");
        copy_partition_dir(&dir, &saved)?;
        broker.start_again()?;
        let deleted = admin(&broker)?
            .delete_topics(&[topic], &admin_options())
            .await?;
        ensure_eq!(deleted, vec![Ok(topic.to_string())], "DeleteTopics");
        broker.kill9()?;
        // The state a crash right after the delete's commit point leaves: the directory is
        // still there.
        copy_partition_dir(&saved, &dir)?;
        broker.start_again()?;
        ensure!(
            !list_topics(&broker)?.contains_key(topic),
            "the deleted topic is gone after the restart"
        );
        ensure!(
            !dir.exists(),
            "the deleted topic's directory is removed at start-up"
        );
        create_topic(&broker, topic, 1).await?;
        produce_values(&broker, topic, "new", 3).await?;
        let expected: Vec<String> = (0..3).map(|i| format!("new {i}")).collect();
        ensure_eq!(
            values(&broker, topic).await?,
            expected,
            "records of the recreated topic"
        );
        ensure_eq!(
            partition_entries(&broker, topic)?.len(),
            1,
            "partition directories named {topic}-* (only the new topic's)"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// The other half-done delete: the partition directory was renamed for deletion but the topic
/// file is still there (a delete that renames first, or an operator). The topic still exists,
/// starts empty, the leftover directory is removed at start-up, and delete + create gives an
/// empty topic again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_directory_renamed_for_deletion_is_never_served() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "halfgone";
        create_topic(&broker, topic, 1).await?;
        produce_values(&broker, topic, "old", 20).await?;
        broker.kill9()?;
        let dir = broker.partition_dir(topic, 0);
        let mut doomed = dir.clone().into_os_string();
        doomed.push("-delete");
        std::fs::rename(&dir, &doomed)?;
        broker.start_again()?;
        ensure_eq!(values(&broker, topic).await?.len(), 0, "records served");
        ensure!(
            !Path::new(&doomed).exists(),
            "the -delete directory was removed at start-up"
        );
        let deleted = admin(&broker)?
            .delete_topics(&[topic], &admin_options())
            .await?;
        ensure_eq!(deleted, vec![Ok(topic.to_string())], "DeleteTopics");
        create_topic(&broker, topic, 1).await?;
        ensure_eq!(
            values(&broker, topic).await?.len(),
            0,
            "records after recreating"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// A data directory of the layout before topic ids (`<topic>-<partition>/`, no
/// `partition.metadata`) upgrades in place: every record and committed offset is still there,
/// and each directory gets its `partition.metadata` and id-keyed name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_layout_data_directory_upgrades_in_place() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "legacy";
        let partitions = 3;
        create_topic(&broker, topic, partitions).await?;
        let records: Vec<Record> = (0..300)
            .map(|i| {
                (
                    Some(format!("k{}", i % 7).into_bytes()),
                    format!("v{i}").into_bytes(),
                )
            })
            .collect();
        produce_all(
            &producer(&broker, &[("acks", "all")])?,
            topic,
            None,
            &records,
        )
        .await?;
        commit_offset(&committer(&broker, "old-group")?, topic, 42)?;
        let before = read_all(&broker, topic, partitions).await?;
        ensure!(broker.terminate()?.success(), "SIGTERM exit status");

        // Back to the old layout: no partition.metadata, no id in the directory name.
        let mut downgraded = 0;
        for entry in std::fs::read_dir(broker.data_dir())?.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            let Some((old_name, id)) = name.rsplit_once('.') else {
                continue;
            };
            if path.is_dir() && id.len() == 32 {
                std::fs::remove_file(path.join("partition.metadata"))?;
                std::fs::rename(&path, broker.data_dir().join(old_name))?;
                downgraded += 1;
            }
        }
        ensure!(
            downgraded > usize::try_from(partitions)?,
            "downgraded {downgraded} directories (the topic's and __consumer_offsets')"
        );

        broker.start_again()?;
        ensure!(
            read_all(&broker, topic, partitions).await? == before,
            "records after the upgrade differ from those before"
        );
        ensure_eq!(
            committed_offset(&committer(&broker, "old-group")?, topic)?,
            Offset::Offset(42),
            "committed offset after the upgrade"
        );
        for partition in 0..partitions {
            let dir = broker.partition_dir(topic, partition);
            let metadata = std::fs::read_to_string(dir.join("partition.metadata"))?;
            ensure!(
                metadata.starts_with("version: 0\ntopic_id: "),
                "partition.metadata of {}: {metadata:?}",
                dir.display()
            );
        }
        ensure!(
            !broker.data_dir().join(format!("{topic}-0")).exists(),
            "the old-layout directory is gone"
        );
        // Stable: another restart changes nothing.
        broker.restart()?;
        ensure!(
            read_all(&broker, topic, partitions).await? == before,
            "records after a second restart differ"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Produces racing deletes and recreations of their topic (best effort: a bounded number of
/// rounds, tiny segments so that a stale log would roll files into its directory): whatever
/// the last incarnation serves is exactly what it serves again after a restart, with dense
/// offsets, so no write of an earlier incarnation's log reached its directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_racing_delete_and_recreate_never_land_in_the_new_topic() -> TestResult {
    const ROUNDS: usize = 60;
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "churn";
        let configs = [("segment.bytes", "1024")];
        create_topic_with(&broker, topic, 1, &configs).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let producer = producer(
                &broker,
                &[
                    ("acks", "1"),
                    ("linger.ms", "0"),
                    ("message.timeout.ms", "2000"),
                ],
            )?;
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut acked = 0usize;
                let mut sent = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    sent += 1;
                    // Errors are expected while the topic does not exist.
                    if produce_one(
                        &producer,
                        topic,
                        Some(0),
                        None,
                        format!("r{sent}").as_bytes(),
                    )
                    .await
                    .is_ok()
                    {
                        acked += 1;
                    }
                }
                acked
            })
        };
        let admin = admin(&broker)?;
        for round in 0..ROUNDS {
            let deleted = admin.delete_topics(&[topic], &admin_options()).await?;
            ensure_eq!(
                deleted,
                vec![Ok(topic.to_string())],
                "DeleteTopics in round {round}"
            );
            create_topic_with(&broker, topic, 1, &configs).await?;
        }
        stop.store(true, Ordering::Relaxed);
        let acked = writer.await?;
        ensure!(
            acked > 0,
            "no produce succeeded while the topic was churned"
        );
        let before: Vec<Consumed> = read_all(&broker, topic, 1)
            .await?
            .into_values()
            .flatten()
            .collect();
        broker.restart()?;
        let after: Vec<Consumed> = read_all(&broker, topic, 1)
            .await?
            .into_values()
            .flatten()
            .collect();
        ensure_eq!(
            after,
            before,
            "records of the last incarnation after a restart"
        );
        // Nothing but the live topic's directory is left.
        ensure_eq!(
            partition_entries(&broker, topic)?.len(),
            1,
            "partition directories of {topic} after the restart"
        );
        let consumer = consumer_assigned(&broker, topic, &[0], Offset::Beginning)?;
        drop(consume_n(&consumer, before.len(), WAIT_TIMEOUT).await?);
        Ok(())
    }
    .await;
    broker.check(result)
}
