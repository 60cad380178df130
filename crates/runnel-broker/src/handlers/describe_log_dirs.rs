//! DescribeLogDirs (key 35), v1–4 (v0 is gone from the codec, as from Kafka 4): one result per
//! log dir of `log.dirs` (the data dir alone by default), as an absolute path, with every local
//! partition (led or followed) of the requested topics (`null`: all) it holds and its size in
//! bytes. Requested topics and partitions this node does not hold are left out, as Kafka does.
//! v4 adds the volume's total and usable bytes (`statvfs`; -1 when it fails).
//!
//! A partition being moved to another log dir (AlterReplicaLogDirs) is listed in its current
//! dir and, in the target dir, as a future replica (`is_future_key`) whose `offset_lag` is the
//! current log end minus the offset its copy reaches and whose size is the bytes copied so far
//! (Kafka's meaning). Current replicas report a lag of 0.
//!
//! Offline logs: Kafka fails a whole directory at once and then reports it with
//! KAFKA_STORAGE_ERROR and no partitions, never listing its partitions elsewhere. Here a log
//! goes offline on its own (a failed open, fsync or write), so an offline partition is left out,
//! and a log dir is reported as Kafka reports an offline one only when every local partition
//! in it is offline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::log_dirs::LogDirMoves;
use crate::topics::{Partition, Topic};

/// What a volume field holds when it is not known (Kafka's `UNKNOWN_VOLUME_BYTES`).
const UNKNOWN_VOLUME_BYTES: i64 = -1;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: DescribeLogDirsRequest,
) -> Result<DescribeLogDirsResponse, BrokerError> {
    let local = broker.topics.all();
    let selected = select(&local, request.topics);
    let topics = Arc::clone(&broker.topics);
    // Opening a log not yet opened, and statvfs, are blocking I/O.
    let results = tokio::task::spawn_blocking(move || {
        topics
            .log_dirs()
            .iter()
            .map(|log_dir| describe_log_dir(log_dir, &topics.moves, &local, &selected))
            .collect()
    })
    .await?;
    Ok(DescribeLogDirsResponse::default().with_results(results))
}

/// The local partitions asked for, by topic (sorted, each once): every one for `None`.
fn select(
    local: &[Arc<Topic>],
    requested: Option<Vec<DescribableLogDirTopic>>,
) -> Vec<(TopicName, Vec<Arc<Partition>>)> {
    let Some(requested) = requested else {
        return local
            .iter()
            .map(|topic| {
                let name = TopicName(StrBytes::from_string(topic.name.clone()));
                (name, topic.partitions.values().cloned().collect())
            })
            .collect();
    };
    // A topic or partition named twice is described once (Kafka takes a set).
    let mut wanted: BTreeMap<TopicName, BTreeSet<i32>> = BTreeMap::new();
    for topic in requested {
        wanted
            .entry(topic.topic)
            .or_default()
            .extend(topic.partitions);
    }
    wanted
        .into_iter()
        .filter_map(|(name, indexes)| {
            let topic = local.iter().find(|t| t.name == name.as_str())?;
            let partitions = indexes
                .into_iter()
                .filter_map(|index| topic.partition(index).cloned())
                .collect();
            Some((name, partitions))
        })
        .collect()
}

/// One log dir's entry. Blocking: it may open logs and calls `statvfs`.
fn describe_log_dir(
    log_dir: &Path,
    moves: &LogDirMoves,
    local: &[Arc<Topic>],
    selected: &[(TopicName, Vec<Arc<Partition>>)],
) -> DescribeLogDirsResult {
    let mut topics = Vec::with_capacity(selected.len());
    for (name, partitions) in selected {
        let mut described = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let future = moves
                .future_replica(partition.topic_id(), partition.index)
                .filter(|future| future.log_dir == log_dir);
            if partition.log_dir() != log_dir && future.is_none() {
                continue;
            }
            // An offline log is left out (see the module comment); a log whose topic was
            // deleted meanwhile is no longer local.
            let Ok(log) = partition.log_blocking() else {
                continue;
            };
            let entry = DescribeLogDirsPartition::default().with_partition_index(partition.index);
            described.push(match future {
                Some(future) => entry
                    .with_partition_size(i64::try_from(future.copied_bytes).unwrap_or(i64::MAX))
                    .with_offset_lag(
                        log.log_end_offset()
                            .saturating_sub(future.copied_end_offset)
                            .max(0),
                    )
                    .with_is_future_key(true),
                None => entry
                    .with_partition_size(i64::try_from(log.size_bytes()).unwrap_or(i64::MAX))
                    .with_offset_lag(0)
                    .with_is_future_key(false),
            });
        }
        if !described.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(name.clone())
                    .with_partitions(described),
            );
        }
    }
    let (total_bytes, usable_bytes) = volume_bytes(log_dir);
    let result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(
            absolute(log_dir).display().to_string(),
        ))
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    match log_dir_offline(log_dir, local) {
        Some(error) => result.with_error_code(error.code()),
        None => result.with_topics(topics),
    }
}

/// Why `log_dir` counts as offline: every local partition's log in it is (and there is one).
fn log_dir_offline(log_dir: &Path, local: &[Arc<Topic>]) -> Option<BrokerError> {
    let mut reason = None;
    for partition in local
        .iter()
        .flat_map(|t| t.partitions.values())
        .filter(|p| p.log_dir() == log_dir)
    {
        if !partition.is_offline() {
            return None;
        }
        // The log is known offline, so this opens nothing: it only reads why.
        reason = reason.or_else(|| partition.log_blocking().err());
    }
    reason
}

/// A log dir as an absolute path (relative to the working directory if it was given
/// relative); as configured if even that fails.
fn absolute(log_dir: &Path) -> PathBuf {
    std::path::absolute(log_dir).unwrap_or_else(|_| log_dir.to_path_buf())
}

/// (total, usable) bytes of the volume holding `dir`, as Kafka's `getTotalSpace` and
/// `getUsableSpace` (what an unprivileged writer may still allocate).
fn volume_bytes(dir: &Path) -> (i64, i64) {
    match rustix::fs::statvfs(dir) {
        Ok(stat) => {
            let bytes = |blocks: u64| {
                i64::try_from(blocks.saturating_mul(stat.f_frsize)).unwrap_or(i64::MAX)
            };
            (bytes(stat.f_blocks), bytes(stat.f_bavail))
        }
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "DescribeLogDirs: statvfs failed");
            (UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use kafka_protocol::error::ResponseError;

    use super::*;
    use crate::broker::testing;
    use crate::partition_dir::partition_dir;

    fn context() -> RequestContext {
        RequestContext {
            api_version: 4,
            client_id: None,
            client_host: Arc::from("/127.0.0.1"),
            listener: Arc::from("PLAINTEXT"),
        }
    }

    /// Node 0 on `data_dir`, holding partitions `local` of topic `t` (whose log directories in
    /// `offline` are plain files, so those logs fail to open); partition `local.len()` lives on
    /// node 1.
    async fn broker(data_dir: &Path, local: i32, offline: &[i32]) -> Broker {
        let mut partitions: Vec<_> = (0..local).map(|_| testing::partition(&[0], 0)).collect();
        partitions.push(testing::partition(&[1], 1));
        let image = testing::image(&[0, 1], &[("t", partitions)]);
        let topic_id = image.topic("t").unwrap().id;
        for index in offline {
            std::fs::write(partition_dir(data_dir, "t", *index, topic_id), b"not a dir").unwrap();
        }
        let (metadata, _control) = testing::fake(image, 0);
        testing::open(data_dir, metadata).await
    }

    async fn describe(
        broker: &Broker,
        topics: Option<Vec<DescribableLogDirTopic>>,
    ) -> DescribeLogDirsResult {
        let request = DescribeLogDirsRequest::default().with_topics(topics);
        let mut response = handle(broker, &context(), request).await.unwrap();
        assert_eq!(response.results.len(), 1);
        response.results.remove(0)
    }

    fn described(result: &DescribeLogDirsResult) -> Vec<(String, i32)> {
        result
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.to_string(), p.partition_index))
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_offline_partition_is_left_out_of_an_online_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), 2, &[1]).await;

        let all = describe(&broker, None).await;
        assert_eq!(all.error_code, 0);
        assert_eq!(described(&all), [("t".to_string(), 0)]);
        assert!(Path::new(all.log_dir.as_str()).is_absolute());
        assert!(all.total_bytes > 0 && all.usable_bytes >= 0);

        // Duplicates once; a remote, unknown or offline partition and an unknown topic: left out.
        let asked = vec![
            DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![0, 0, 1, 2, 9]),
            DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![0]),
            DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("absent")))
                .with_partitions(vec![0]),
        ];
        let some = describe(&broker, Some(asked)).await;
        assert_eq!(some.error_code, 0);
        assert_eq!(described(&some), [("t".to_string(), 0)]);
    }

    /// With two log dirs each lists the partitions it holds; a partition being moved is also
    /// listed in its target dir as a future replica lagging by what is not copied yet.
    #[test]
    fn each_log_dir_lists_its_partitions_and_future_replicas() {
        let root = tempfile::tempdir().unwrap();
        let dirs = [root.path().join("a"), root.path().join("b")];
        let listed = format!("{},{}", dirs[0].display(), dirs[1].display());
        let config = crate::config::BrokerConfig::load(None, &[("log.dirs".into(), listed)]);
        let topics = crate::topics::TopicRegistry::new(Arc::new(config.unwrap()), 0);
        topics.sync(&testing::image(
            &[0],
            &[("t", vec![testing::partition(&[0], 0); 2])],
        ));
        let local = topics.all();
        let partition = Arc::clone(&local[0].partitions[&0]);
        let log = partition.log_blocking().unwrap();
        for _ in 0..3 {
            log.append(&testing::record_batch(b"v")).unwrap();
        }
        topics.moves.record(
            &partition,
            Some(crate::log_dirs::FutureReplica {
                log_dir: dirs[1].clone(),
                copied_end_offset: 1,
                copied_bytes: 70,
            }),
        );
        let selected = select(&local, None);
        let in_a = describe_log_dir(&dirs[0], &topics.moves, &local, &selected);
        let in_b = describe_log_dir(&dirs[1], &topics.moves, &local, &selected);
        assert_eq!(described(&in_a), [("t".to_string(), 0)]);
        assert_eq!(
            described(&in_b),
            [("t".to_string(), 0), ("t".to_string(), 1)]
        );
        let current = &in_a.topics[0].partitions[0];
        assert!(!current.is_future_key && current.offset_lag == 0 && current.partition_size > 0);
        let future = &in_b.topics[0].partitions[0];
        assert!(future.is_future_key);
        assert_eq!((future.offset_lag, future.partition_size), (2, 70));
        assert!(!in_b.topics[0].partitions[1].is_future_key);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_data_dir_is_offline_when_every_local_partition_is() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), 2, &[0, 1]).await;

        let result = describe(&broker, None).await;
        assert_eq!(result.error_code, ResponseError::KafkaStorageError.code());
        assert!(result.topics.is_empty());
    }
}
