//! The I/O side of groups: `__consumer_offsets` (created on first write with
//! `offsets.topic.num.partitions` partitions and `cleanup.policy=compact`), appending offset
//! commits, group metadata and tombstones to the partition that owns each group, rebuilding the
//! coordinator from the topic on start, and the timer task that drives session, rebalance and
//! retention timeouts.
//!
//! Writes are fsynced before they are acknowledged. Storage calls run on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use runnel_protocol::batch::{next_offset_after, read_records};
use runnel_protocol::batch_builder::{build_batch, NewRecord};
use runnel_storage::AppendOutcome;
use tokio::time::Instant;

use super::coordinator::{CommittedOffset, GroupCoordinator, Now};
use super::records::{
    decode_group_metadata_value, decode_key, decode_offset_commit_value, group_metadata_key,
    group_metadata_value, offset_commit_key, offset_commit_value, OffsetsKey,
};
use super::{partition_for, OFFSETS_TOPIC};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topic_config::TopicConfig;
use crate::topics::{Topic, TopicRegistry, TopicSpec};

/// Bytes read from `__consumer_offsets` per step while loading.
const LOAD_READ_BYTES: usize = 1 << 20;
/// Decompression cap while loading (our own batches are uncompressed).
const LOAD_UNCOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// `__consumer_offsets`, created on first use. Never created through Metadata auto-creation.
async fn offsets_topic(broker: &Broker) -> Result<Arc<Topic>, BrokerError> {
    if let Some(topic) = broker.topics.get(OFFSETS_TOPIC) {
        return Ok(topic);
    }
    let config = TopicConfig::new(BTreeMap::from([(
        "cleanup.policy".to_string(),
        "compact".to_string(),
    )]))?;
    let spec = TopicSpec {
        name: OFFSETS_TOPIC.to_string(),
        partitions: broker.config.offsets_topic_num_partitions,
        config,
    };
    match broker.topics.create(spec, false).await {
        Ok(topic) => Ok(topic),
        Err(BrokerError::TopicAlreadyExists(_)) => broker
            .topics
            .get(OFFSETS_TOPIC)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(OFFSETS_TOPIC.to_string())),
        Err(error) => Err(error),
    }
}

/// Appends `records` for `group_id` to its partition and waits until they are fsynced.
async fn append_durably(
    broker: &Broker,
    group_id: &str,
    records: Vec<NewRecord>,
) -> Result<(), BrokerError> {
    if records.is_empty() {
        return Ok(());
    }
    let topic = offsets_topic(broker).await?;
    let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
    let index = partition_for(group_id, count);
    let partition = topic
        .partition(index)
        .cloned()
        .ok_or_else(|| BrokerError::UnknownTopicOrPartition(format!("{OFFSETS_TOPIC}-{index}")))?;
    let batch = build_batch(&records, Now::current().wall_ms)
        .ok_or_else(|| BrokerError::InvalidRequest("group record too large".into()))?;
    tokio::task::spawn_blocking(move || {
        let log = partition.log()?;
        let last_offset = match log.append(&batch)? {
            AppendOutcome::Appended { last_offset, .. }
            | AppendOutcome::Duplicate { last_offset, .. } => last_offset,
        };
        log.flush(last_offset)?;
        Ok::<(), BrokerError>(())
    })
    .await??;
    broker.notify_high_watermark();
    Ok(())
}

/// Writes committed offsets of one group durably (one batch), then records them in the
/// coordinator. Only then may the commit be acknowledged.
pub async fn commit_offsets(
    broker: &Broker,
    group_id: &str,
    offsets: Vec<((String, i32), CommittedOffset)>,
) -> Result<(), BrokerError> {
    let records = offsets
        .iter()
        .map(|((topic, partition), offset)| NewRecord {
            key: Some(offset_commit_key(group_id, topic, *partition)),
            value: Some(offset_commit_value(offset)),
            headers: Vec::new(),
        })
        .collect();
    append_durably(broker, group_id, records).await?;
    broker
        .groups
        .apply_commits(group_id, offsets, Now::current());
    Ok(())
}

/// Writes tombstones for offsets of one group (OffsetDelete, DeleteGroups, expiry, deleted
/// topics). The coordinator must have forgotten them already or do so after.
pub async fn tombstone_offsets(
    broker: &Broker,
    group_id: &str,
    partitions: &[(String, i32)],
) -> Result<(), BrokerError> {
    let records = partitions
        .iter()
        .map(|(topic, partition)| NewRecord {
            key: Some(offset_commit_key(group_id, topic, *partition)),
            value: None,
            headers: Vec::new(),
        })
        .collect();
    append_durably(broker, group_id, records).await
}

/// Writes the metadata of every group that changed since the last call (tombstones for groups
/// that are gone). Serialised so that records reach the log in the order of the changes. A
/// failed write is logged; the group stays as it is in memory.
pub async fn write_group_metadata(broker: &Broker) {
    let _order = broker.groups.write_order().lock().await;
    for (group_id, snapshot) in broker.groups.take_dirty() {
        let record = NewRecord {
            key: Some(group_metadata_key(&group_id)),
            value: snapshot.as_ref().map(group_metadata_value),
            headers: Vec::new(),
        };
        if snapshot.is_none() && broker.topics.get(OFFSETS_TOPIC).is_none() {
            continue;
        }
        if let Err(error) = append_durably(broker, &group_id, vec![record]).await {
            tracing::error!(group = %group_id, %error, "writing group metadata failed");
        }
    }
}

/// Drops the committed offsets of a deleted topic from every group.
pub async fn drop_topic_offsets(broker: &Broker, topic: &str) {
    let mut by_group: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
    for (group_id, partition) in broker.groups.offsets_of_topic(topic) {
        by_group.entry(group_id).or_default().push(partition);
    }
    for (group_id, partitions) in by_group {
        broker.groups.remove_offsets(&group_id, &partitions);
        if let Err(error) = tombstone_offsets(broker, &group_id, &partitions).await {
            tracing::error!(group = %group_id, %topic, %error, "dropping offsets failed");
        }
    }
}

/// Rebuilds the coordinator from `__consumer_offsets`, if it exists: every partition is read
/// from its log start, later records overriding earlier ones, tombstones removing. Blocking.
pub fn load(topics: &TopicRegistry, groups: &GroupCoordinator) -> Result<(), BrokerError> {
    let Some(topic) = topics.get(OFFSETS_TOPIC) else {
        return Ok(());
    };
    let now = Now::current();
    let mut applied = 0usize;
    for partition in &topic.partitions {
        let log = partition.log()?;
        let end = log.log_end_offset();
        let mut offset = log.log_start_offset();
        while offset < end {
            let bytes = log.read(offset, LOAD_READ_BYTES, end)?;
            let Some(next) = next_offset_after(&bytes) else {
                break;
            };
            for record in read_records(&bytes, LOAD_UNCOMPRESSED_BYTES_MAX)? {
                if record.offset < offset {
                    continue;
                }
                applied += 1;
                apply_record(groups, record.key.as_deref(), record.value.as_deref(), now);
            }
            offset = next.max(offset.saturating_add(1));
        }
    }
    tracing::info!(
        records = applied,
        "consumer groups loaded from {OFFSETS_TOPIC}"
    );
    Ok(())
}

fn apply_record(groups: &GroupCoordinator, key: Option<&[u8]>, value: Option<&[u8]>, now: Now) {
    let Some(key) = key else {
        return;
    };
    let key = match decode_key(key) {
        Ok(key) => key,
        Err(error) => {
            tracing::warn!(%error, "skipping a record of {OFFSETS_TOPIC}");
            return;
        }
    };
    match (key, value) {
        (
            OffsetsKey::OffsetCommit {
                group,
                topic,
                partition,
            },
            Some(value),
        ) => match decode_offset_commit_value(value) {
            Ok(offset) => groups.apply_commits(&group, vec![((topic, partition), offset)], now),
            Err(error) => tracing::warn!(%group, %error, "skipping an offset record"),
        },
        (
            OffsetsKey::OffsetCommit {
                group,
                topic,
                partition,
            },
            None,
        ) => groups.remove_offsets(&group, &[(topic, partition)]),
        (OffsetsKey::GroupMetadata { group }, Some(value)) => {
            match decode_group_metadata_value(&group, value) {
                Ok(snapshot) => groups.restore_group(snapshot, now),
                Err(error) => tracing::warn!(%group, %error, "skipping a group metadata record"),
            }
        }
        (OffsetsKey::GroupMetadata { group }, None) => groups.forget_group(&group),
    }
}

/// Drives the coordinator's timeouts (sessions, join phases, KIP-394 member ids) and the
/// periodic offset expiry (`offsets.retention.check.interval.ms`), writing what they change.
/// Runs for the life of the broker.
pub async fn run_timers(broker: Arc<Broker>) {
    let check_interval =
        Duration::from_millis(broker.config.offsets_retention_check_interval_ms.max(1));
    let mut next_retention_check = Instant::now() + check_interval;
    loop {
        let deadline = broker
            .groups
            .next_deadline()
            .map_or(next_retention_check, |d| d.min(next_retention_check));
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = broker.groups.deadlines_changed() => {}
        }
        let now = Now::current();
        broker.groups.expire(now);
        if now.at >= next_retention_check {
            next_retention_check = now.at + check_interval;
            let mut by_group: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
            for (group_id, partition) in broker.groups.expired_offsets(now) {
                by_group.entry(group_id).or_default().push(partition);
            }
            for (group_id, partitions) in by_group {
                tracing::info!(group = %group_id, offsets = partitions.len(), "offsets expired");
                if let Err(error) = tombstone_offsets(&broker, &group_id, &partitions).await {
                    tracing::error!(group = %group_id, %error, "writing expired offsets failed");
                }
            }
        }
        write_group_metadata(&broker).await;
    }
}
