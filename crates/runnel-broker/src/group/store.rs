//! The I/O side of groups: `__consumer_offsets` (created on first write with
//! `offsets.topic.num.partitions` partitions and `cleanup.policy=compact`), appending offset
//! commits, group metadata and tombstones to the partition that owns each group, rebuilding the
//! coordinator from the topic on start, and the timer task that drives session, rebalance and
//! retention timeouts.
//!
//! Writes are acknowledged once committed: fsynced here and, on a replicated
//! `__consumer_offsets`, on every in-sync replica (the partition's high watermark past them),
//! so the coordinator that takes over after a failover loads every acknowledged commit.
//! They are appended as the leader of the partition's current leader epoch, as produce
//! appends (`PartitionLog::append_as_leader`): a write of a leadership that has just ended is
//! refused by storage instead of landing between the new leader's batches. Group-metadata
//! appends keep the order of the changes (the coordinator's write order); the wait for their
//! commit happens after that order is released. Storage calls run on the blocking pool.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use runnel_protocol::batch::{next_offset_after, read_records};
use runnel_protocol::batch_builder::{build_batch, NewRecord};
use runnel_storage::{AppendOutcome, CrcCheck, PartitionLog};
use tokio::time::Instant;

use super::coordinator::{
    AssignmentToStore, CommittedOffset, DescribedGroup, GroupCoordinator, Now,
};
use super::records::{
    decode_group_metadata_value, decode_key, decode_offset_commit_value, group_metadata_key,
    group_metadata_value, offset_commit_key, offset_commit_value, OffsetsKey,
};
use super::{partition_for, OFFSETS_TOPIC};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::TopicImage;
use crate::topics::{Partition, Topic, TopicRegistry};

/// Bytes read from `__consumer_offsets` per step while loading.
const LOAD_READ_BYTES: usize = 1 << 20;
/// Decompression cap while loading (our own batches are uncompressed).
const LOAD_UNCOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// `__consumer_offsets` as the image has it, created (through the controller) on first use
/// with `offsets.topic.num.partitions` partitions and `cleanup.policy=compact`. Never created
/// through Metadata auto-creation.
async fn offsets_topic(broker: &Broker) -> Result<Arc<TopicImage>, BrokerError> {
    let image = broker.metadata.image();
    if let Some(topic) = image.topic(OFFSETS_TOPIC) {
        // Another request may have just created it: its partitions exist here once this
        // node's logs follow the image that has it.
        broker.topics.wait_synced(image.applied_index).await?;
        return Ok(Arc::clone(topic));
    }
    broker
        .create_topic(
            OFFSETS_TOPIC,
            broker.config.offsets_topic_num_partitions,
            BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
        )
        .await
}

/// The broker coordinating `group_id`: the leader of its `__consumer_offsets` partition
/// (`None` while it has none). Creates the topic if it does not exist yet.
pub async fn coordinator_of(
    broker: &Broker,
    group_id: &str,
) -> Result<Option<crate::metadata::BrokerId>, BrokerError> {
    let topic = offsets_topic(broker).await?;
    let index = partition_for(group_id, topic.partition_count());
    Ok(topic
        .partition(index)
        .map(|p| p.leader)
        .filter(|leader| *leader != crate::metadata::NO_LEADER))
}

/// How long a group write waits for its replicas (Kafka's `offsets.commit.timeout.ms`
/// default); then the client is told to retry.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A group write appended (and fsynced here) by the leader of its `__consumer_offsets`
/// partition, not yet known to be committed: [`wait_committed`] waits for that.
#[derive(Debug)]
struct AppendedGroupWrite {
    partition: Arc<Partition>,
    log: Arc<PartitionLog>,
    /// The leader epoch the append was made under; the commit must happen in it.
    leader_epoch: i32,
    last_offset: i64,
    /// [`COMMIT_TIMEOUT`] after the append started.
    deadline: Instant,
}

/// Appends `records` for `group_id` as one batch to its partition and fsyncs it, as the
/// leader at the leader epoch the replica manager knows (`PartitionLog::append_as_leader`,
/// as produce does): an append of a leadership that has just ended is refused in storage.
/// `None` when there is nothing to write. Returns once appended; [`wait_committed`] waits for
/// the commit, so callers that order appends (the group-metadata writes) need not hold their
/// order across that wait.
///
/// Errors: NOT_LEADER_OR_FOLLOWER (which groups answer as NOT_COORDINATOR) when this node does
/// not lead the group's partition, or stopped leading it; NOT_ENOUGH_REPLICAS (answered as
/// COORDINATOR_NOT_AVAILABLE) when the ISR is below `min.insync.replicas`.
async fn append_group_records(
    broker: &Broker,
    group_id: &str,
    records: Vec<NewRecord>,
) -> Result<Option<AppendedGroupWrite>, BrokerError> {
    if records.is_empty() {
        return Ok(None);
    }
    let topic = offsets_topic(broker).await?;
    let index = partition_for(group_id, topic.partition_count());
    let (_, partition) = broker.led_partition(&broker.metadata.image(), OFFSETS_TOPIC, index)?;
    broker.replicas.check_acks_all(&partition)?;
    let log = partition.log().await?;
    let deadline = Instant::now() + COMMIT_TIMEOUT;
    let replicas = Arc::clone(&broker.replicas);
    let (appending, appending_log) = (Arc::clone(&partition), Arc::clone(&log));
    let (leader_epoch, last_offset) = tokio::task::spawn_blocking(move || {
        let leader_epoch = replicas.prepare_leader_append(&appending, &appending_log)?;
        append_and_flush(&appending_log, &records, Some(leader_epoch))
            .map(|last_offset| (leader_epoch, last_offset))
    })
    .await??;
    broker.notify_appended();
    Ok(Some(AppendedGroupWrite {
        partition,
        log,
        leader_epoch,
        last_offset,
        deadline,
    }))
}

/// Waits until `appended` is committed (on every in-sync replica, the HW past it) in the
/// leader epoch it was appended under.
///
/// Errors: NOT_LEADER_OR_FOLLOWER when leadership moved; NOT_ENOUGH_REPLICAS_AFTER_APPEND or
/// REQUEST_TIMED_OUT (both answered as COORDINATOR_NOT_AVAILABLE) when the ISR cannot take it.
async fn wait_committed(
    broker: &Broker,
    appended: Option<AppendedGroupWrite>,
) -> Result<(), BrokerError> {
    let Some(appended) = appended else {
        return Ok(());
    };
    let committed = broker
        .replicas
        .wait_committed(
            &appended.partition,
            &appended.log,
            appended.leader_epoch,
            appended.last_offset,
            appended.deadline,
            i64::try_from(COMMIT_TIMEOUT.as_millis()).unwrap_or(i64::MAX),
        )
        .await;
    broker.notify_high_watermark();
    committed
}

/// Appends `records` for `group_id` and waits until they are committed (fsynced here and on
/// the ISR, as a produce with acks=all). Errors as [`append_group_records`] and
/// [`wait_committed`].
async fn append_durably(
    broker: &Broker,
    group_id: &str,
    records: Vec<NewRecord>,
) -> Result<(), BrokerError> {
    let appended = append_group_records(broker, group_id, records).await?;
    wait_committed(broker, appended).await
}

/// Appends `records` as one batch to `log` and fsyncs it; returns the batch's last offset.
/// With `leader_epoch`, as the leader of that epoch (refused once it is no longer stamped in
/// the log); without, as a plain append (re-homing at load, before any client is served).
/// Blocking.
fn append_and_flush(
    log: &PartitionLog,
    records: &[NewRecord],
    leader_epoch: Option<i32>,
) -> Result<i64, BrokerError> {
    let batch = build_batch(records, Now::current().wall_ms)
        .ok_or_else(|| BrokerError::InvalidRequest("group record too large".into()))?;
    let outcome = match leader_epoch {
        // Built here, so its CRC is ours; storage still verifies it (it is cheap).
        Some(epoch) => log.append_as_leader(&batch, None, CrcCheck::Verify, epoch)?,
        None => log.append(&batch)?,
    };
    let last_offset = match outcome {
        AppendOutcome::Appended { last_offset, .. }
        | AppendOutcome::Duplicate { last_offset, .. } => last_offset,
    };
    log.flush(last_offset)?;
    Ok(last_offset)
}

/// The log of partition `index` of the local `__consumer_offsets`. Blocking (it may open it).
fn offsets_log(topic: &Topic, index: i32) -> Result<Arc<PartitionLog>, BrokerError> {
    topic
        .partition(index)
        .ok_or_else(|| BrokerError::UnknownTopicOrPartition(format!("{OFFSETS_TOPIC}-{index}")))?
        .log_blocking()
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
/// that are gone). The appends are serialised so that records reach the log in the order of
/// the changes; the waits for their commits are not (a group write stalled on its replicas
/// holds no other group's write). A failed write is logged; the group stays as it is in
/// memory.
pub async fn write_group_metadata(broker: &Broker) {
    let appended = {
        let _order = broker.groups.write_order().lock().await;
        let mut appended = Vec::new();
        for (group_id, snapshot) in broker.groups.take_dirty() {
            if snapshot.is_none() && broker.metadata.image().topic(OFFSETS_TOPIC).is_none() {
                continue;
            }
            let record = group_metadata_record(&group_id, snapshot.as_ref());
            let outcome = append_group_records(broker, &group_id, vec![record]).await;
            appended.push((group_id, outcome));
        }
        appended
    };
    for (group_id, outcome) in appended {
        let written = match outcome {
            Ok(appended) => wait_committed(broker, appended).await,
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            tracing::error!(group = %group_id, %error, "writing group metadata failed");
        }
    }
}

/// The group-metadata record of `group_id`: its `snapshot`, or a tombstone.
fn group_metadata_record(group_id: &str, snapshot: Option<&DescribedGroup>) -> NewRecord {
    NewRecord {
        key: Some(group_metadata_key(group_id)),
        value: snapshot.map(group_metadata_value),
        headers: Vec::new(),
    }
}

/// Writes `snapshot` as the metadata of `group_id`: appended in the order of other group
/// writes, then waited for (committed on the ISR) without holding that order.
async fn write_group_snapshot(
    broker: &Broker,
    group_id: &str,
    snapshot: &DescribedGroup,
) -> Result<(), BrokerError> {
    let appended = {
        let _order = broker.groups.write_order().lock().await;
        append_group_records(
            broker,
            group_id,
            vec![group_metadata_record(group_id, Some(snapshot))],
        )
        .await?
    };
    wait_committed(broker, appended).await
}

/// Writes the metadata of a generation whose leader handed in the assignment (in the order of
/// other group writes), and reports the outcome to the coordinator, which only then answers
/// the members' SyncGroups: with their assignments, or with the error.
pub async fn store_assignment(broker: &Broker, stored: &AssignmentToStore) {
    let written = write_group_snapshot(broker, &stored.group_id, &stored.snapshot).await;
    if let Err(error) = &written {
        tracing::error!(group = %stored.group_id, %error, "writing the group assignment failed");
    }
    broker.groups.assignment_stored(
        stored,
        written.map_err(|e| e.as_group_store_error()),
        Now::current(),
    );
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

/// Rebuilds the groups of the `__consumer_offsets` partitions in `only` (of `count`), if the
/// topic exists here: each such partition is read from its log start, later records overriding earlier ones, tombstones removing. Blocking.
///
/// A record belongs in its group's partition ([`partition_for`]). One found elsewhere (written
/// by a Runnel that used `hash & 0x7fffffff`, which differs for negative hashes) is a stray: it
/// is applied unless a record of the same key was already read in the home partition, and a
/// home record read later overrides it, so the home partition always wins whatever order the
/// partitions are read in. Groups with live strays are then re-homed: their current state is
/// written to the home partition and the strays are tombstoned, in that order, so a crash in
/// between loses nothing (the next load sees both and prefers home).
pub fn load(
    topics: &TopicRegistry,
    groups: &GroupCoordinator,
    count: i32,
    only: &BTreeSet<i32>,
) -> Result<(), BrokerError> {
    let Some(topic) = topics.get(OFFSETS_TOPIC) else {
        return Ok(());
    };
    let now = Now::current();
    let mut applied = 0usize;
    // Keys read in their home partition, and whether each stray key's last record was live.
    let mut at_home: HashSet<OffsetsKey> = HashSet::new();
    let mut strays: BTreeMap<(OffsetsKey, i32), bool> = BTreeMap::new();
    for partition in topic
        .partitions
        .values()
        .filter(|p| only.contains(&p.index))
    {
        let log = partition.log_blocking()?;
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
                let Some(key) = record.key.as_deref().and_then(decode_logged) else {
                    continue;
                };
                let value = record.value.as_deref();
                if partition_for(key.group(), count) == partition.index {
                    at_home.insert(key.clone());
                } else {
                    strays.insert((key.clone(), partition.index), value.is_some());
                    if at_home.contains(&key) {
                        continue;
                    }
                }
                applied += 1;
                apply_record(groups, key, value, now);
            }
            offset = next.max(offset.saturating_add(1));
        }
    }
    tracing::info!(
        records = applied,
        "consumer groups loaded from {OFFSETS_TOPIC}"
    );
    let mut live: BTreeMap<String, Vec<(OffsetsKey, i32)>> = BTreeMap::new();
    for ((key, index), is_live) in strays {
        if is_live {
            live.entry(key.group().to_string())
                .or_default()
                .push((key, index));
        }
    }
    for (group_id, keys) in live {
        if !only.contains(&partition_for(&group_id, count)) {
            // Its home is coordinated elsewhere: the broker loading that partition moves it.
            continue;
        }
        if let Err(error) = rehome(&topic, count, groups, &group_id, &keys) {
            // Still served from memory; the next start tries again.
            tracing::error!(group = %group_id, %error, "moving a group to its {OFFSETS_TOPIC} partition failed");
        }
    }
    Ok(())
}

/// Writes the current state of the stray `keys` of `group_id` to its home partition, then
/// tombstones them where they were found. Blocking.
fn rehome(
    topic: &Topic,
    count: i32,
    groups: &GroupCoordinator,
    group_id: &str,
    keys: &[(OffsetsKey, i32)],
) -> Result<(), BrokerError> {
    let home = partition_for(group_id, count);
    let mut current = Vec::new();
    let mut tombstones: BTreeMap<i32, Vec<NewRecord>> = BTreeMap::new();
    for (key, index) in keys {
        let (key_bytes, value) = match key {
            OffsetsKey::OffsetCommit {
                group,
                topic,
                partition,
            } => (
                offset_commit_key(group, topic, *partition),
                groups
                    .committed(group, Some(&[(topic.clone(), *partition)]))
                    .into_values()
                    .next()
                    .map(|offset| offset_commit_value(&offset)),
            ),
            OffsetsKey::GroupMetadata { group } => (
                group_metadata_key(group),
                groups.snapshot(group).as_ref().map(group_metadata_value),
            ),
        };
        if let Some(value) = value {
            current.push(NewRecord {
                key: Some(key_bytes.clone()),
                value: Some(value),
                headers: Vec::new(),
            });
        }
        tombstones.entry(*index).or_default().push(NewRecord {
            key: Some(key_bytes),
            value: None,
            headers: Vec::new(),
        });
    }
    if !current.is_empty() {
        append_and_flush(&*offsets_log(topic, home)?, &current, None)?;
    }
    for (index, records) in &tombstones {
        append_and_flush(&*offsets_log(topic, *index)?, records, None)?;
    }
    tracing::info!(
        group = %group_id,
        records = current.len(),
        from = ?tombstones.keys().collect::<Vec<_>>(),
        to = home,
        "group moved to its {OFFSETS_TOPIC} partition (Kafka's partitioning)"
    );
    Ok(())
}

/// The key of a stored record, or `None` (logged) if it cannot be decoded.
fn decode_logged(key: &[u8]) -> Option<OffsetsKey> {
    decode_key(key)
        .inspect_err(|error| tracing::warn!(%error, "skipping a record of {OFFSETS_TOPIC}"))
        .ok()
}

fn apply_record(groups: &GroupCoordinator, key: OffsetsKey, value: Option<&[u8]>, now: Now) {
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

/// On every broker, for the groups it coordinates: when a topic leaves the metadata image
/// (deleted, through whichever broker), its committed offsets are dropped and tombstoned.
/// Runs for the life of the broker.
async fn drop_offsets_of_deleted_topics(broker: Arc<Broker>) {
    let mut images = broker.metadata.subscribe();
    let ids = |image: &crate::metadata::MetadataImage| -> BTreeMap<uuid::Uuid, String> {
        image
            .topics
            .values()
            .map(|t| (t.id, t.name.clone()))
            .collect()
    };
    let mut known = ids(&images.borrow_and_update());
    while images.changed().await.is_ok() {
        let image = Arc::clone(&images.borrow_and_update());
        // By id: a topic deleted and created again under its name is a deleted topic too.
        let deleted: Vec<String> = known
            .iter()
            .filter(|(id, _)| !image.topics.contains_key(*id))
            .map(|(_, name)| name.clone())
            .collect();
        known = ids(&image);
        for topic in deleted {
            drop_topic_offsets(&broker, &topic).await;
        }
    }
}

/// Drives the coordinator's timeouts (sessions, join phases, KIP-394 member ids) and the
/// periodic offset expiry (`offsets.retention.check.interval.ms`), writing what they change.
/// Runs for the life of the broker.
pub async fn run_timers(broker: Arc<Broker>) {
    tokio::spawn(drop_offsets_of_deleted_topics(Arc::clone(&broker)));
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

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
