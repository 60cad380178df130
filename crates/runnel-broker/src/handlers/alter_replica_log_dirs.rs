//! AlterReplicaLogDirs (key 34), v1–2: moves local partitions to another of this broker's log
//! dirs (`log.dirs`). Answered once each request is checked, as Kafka answers once the future
//! replica is created; the moves then run in the background, one at a time
//! (`log_dirs::move_partition`), and DescribeLogDirs shows each as a future replica until it
//! is done. Per partition: LOG_DIR_NOT_FOUND (57) for a path that is not one of `log.dirs`,
//! UNKNOWN_TOPIC_OR_PARTITION for a partition this node does not hold, KAFKA_STORAGE_ERROR for
//! one whose log is offline; a partition already in that dir is a success that moves nothing.
//! A move that fails (I/O) leaves the log where it was, serving, and is logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, TopicName,
};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topics::Partition;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: AlterReplicaLogDirsRequest,
) -> Result<AlterReplicaLogDirsResponse, BrokerError> {
    let mut results: BTreeMap<TopicName, Vec<AlterReplicaLogDirPartitionResult>> = BTreeMap::new();
    let mut moves: Vec<(Arc<Partition>, PathBuf)> = Vec::new();
    for dir in request.dirs {
        let target = configured_log_dir(broker.topics.log_dirs(), Path::new(dir.path.as_str()));
        for topic in dir.topics {
            for index in topic.partitions {
                let checked = target
                    .clone()
                    .ok_or_else(|| BrokerError::LogDirNotFound(dir.path.to_string()))
                    .and_then(|target| {
                        let partition = local_partition(broker, &topic.name, index)?;
                        if partition.is_offline() {
                            // Says why (opens nothing: the log is known offline).
                            partition.log_blocking()?;
                        }
                        Ok((partition, target))
                    });
                let result =
                    AlterReplicaLogDirPartitionResult::default().with_partition_index(index);
                let result = match checked {
                    Ok(moving) => {
                        moves.push(moving);
                        result
                    }
                    Err(error) => result.with_error_code(error.code()),
                };
                results.entry(topic.name.clone()).or_default().push(result);
            }
        }
    }
    if !moves.is_empty() {
        let topics = Arc::clone(&broker.topics);
        // Not awaited: a move copies a whole log; the request is answered once checked.
        drop(tokio::task::spawn_blocking(move || {
            for (partition, target) in moves {
                if let Err(error) =
                    crate::log_dirs::move_partition(&topics.moves, &partition, &target)
                {
                    tracing::error!(topic = %partition.topic(), partition = partition.index,
                        target = %target.display(), %error, "moving a partition to another log dir failed; it stays where it was");
                }
            }
        }));
    }
    Ok(AlterReplicaLogDirsResponse::default().with_results(
        results
            .into_iter()
            .map(|(name, partitions)| {
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(name)
                    .with_partitions(partitions)
            })
            .collect(),
    ))
}

/// The configured log dir `path` names (as given, or as an absolute path, as DescribeLogDirs
/// reports it), if any.
fn configured_log_dir(log_dirs: &[PathBuf], path: &Path) -> Option<PathBuf> {
    let absolute = |dir: &Path| std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    log_dirs
        .iter()
        .find(|dir| absolute(dir) == absolute(path))
        .cloned()
}

/// The partition hosted here. Errors: `ReplicaNotAvailable` for a partition the cluster has
/// but with no replica on this node (as Kafka answers; reassignment tools retry on it),
/// `UnknownTopicOrPartition` for one the cluster does not have.
fn local_partition(
    broker: &Broker,
    name: &TopicName,
    index: i32,
) -> Result<Arc<Partition>, BrokerError> {
    if let Some(partition) = broker
        .topics
        .get(name.as_str())
        .and_then(|topic| topic.partition(index).cloned())
    {
        return Ok(partition);
    }
    let named = format!("{}-{index}", name.as_str());
    let image = broker.metadata.image();
    match image.topic(name.as_str()).and_then(|t| t.partition(index)) {
        Some(_) => Err(BrokerError::ReplicaNotAvailable(named)),
        None => Err(BrokerError::UnknownTopicOrPartition(named)),
    }
}
