//! What one Fetch answer does to the followed logs (docs/replication.md, "Follower"): error
//! codes, `diverging_epoch` (truncate), the leader's log start (start afresh), records (append at
//! the leader's offsets, then fsync), and the follower high watermark. Runs on the blocking pool.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::FetchResponse;
use runnel_storage::{LeaderEpochCache, PartitionLog, StorageError};
use uuid::Uuid;

use super::task::FetchedPartition;
use super::{FollowState, Shared};
use crate::replication::state::{self, follower_high_watermark};

/// What became of one partition of a fetch.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PartitionOutcome {
    /// Applied (records appended, the log truncated or started afresh, or nothing new).
    Applied,
    /// The leader fenced our epoch: wait for a newer one.
    Fenced,
    /// Refused or failed: retry after a pause.
    Retry(String),
    /// No longer followed: nothing to do.
    Skipped,
}

/// Applies `response` to the fetched partitions' logs on the blocking pool (appends and fsyncs
/// block). Runs to completion even if the fetcher task is aborted meanwhile.
pub(super) async fn apply_on_blocking_pool(
    shared: &Arc<Shared>,
    fetched: Vec<FetchedPartition>,
    response: FetchResponse,
) -> Vec<(Arc<FollowState>, PartitionOutcome)> {
    let shared = Arc::clone(shared);
    let states: Vec<Arc<FollowState>> = fetched.iter().map(|p| Arc::clone(&p.state)).collect();
    match tokio::task::spawn_blocking(move || apply_response(&shared, fetched, response)).await {
        Ok(outcomes) => outcomes,
        Err(error) => states
            .into_iter()
            .map(|state| {
                let outcome = PartitionOutcome::Retry(format!("apply task failed: {error}"));
                (state, outcome)
            })
            .collect(),
    }
}

/// Applies each partition of `response` to its log. Blocking.
pub(super) fn apply_response(
    shared: &Shared,
    fetched: Vec<FetchedPartition>,
    response: FetchResponse,
) -> Vec<(Arc<FollowState>, PartitionOutcome)> {
    let mut answers: HashMap<(Uuid, i32), PartitionData> = HashMap::new();
    for topic in response.responses {
        for data in topic.partitions {
            answers.insert((topic.topic_id, data.partition_index), data);
        }
    }
    fetched
        .into_iter()
        .map(|partition| {
            let outcome = match answers.remove(&partition.state.key()) {
                Some(data) => apply_partition(shared, &partition, &data),
                // Asking again at once could spin: the leader has no answer for it now.
                None => PartitionOutcome::Retry("absent from the leader's answer".into()),
            };
            (partition.state, outcome)
        })
        .collect()
}

/// Applies one partition's answer: the log changes under its `active` lock (see the module
/// doc); the fsync runs outside it (harmless whoever leads, and `set_followed` must not wait for
/// it); the high watermark is reported if the partition is still followed. Blocking.
pub(super) fn apply_partition(
    shared: &Shared,
    partition: &FetchedPartition,
    data: &PartitionData,
) -> PartitionOutcome {
    let changed = {
        let active = partition.state.lock_active();
        if !*active {
            return PartitionOutcome::Skipped;
        }
        apply_partition_data(&partition.log, partition.fetch_offset, data)
    };
    let leader_high_watermark = match changed {
        Ok(Applied::Records) => data.high_watermark,
        Ok(Applied::LogChanged) => return PartitionOutcome::Applied,
        Err(ApplyError::Fenced) => return PartitionOutcome::Fenced,
        Err(error) => return PartitionOutcome::Retry(error.to_string()),
    };
    if shared.config.fsync_before_fetch {
        if let Err(error) = partition.log.flush(partition.log.log_end_offset()) {
            return PartitionOutcome::Retry(format!("flush failed: {error}"));
        }
    }
    let high_watermark =
        follower_high_watermark(leader_high_watermark, partition.log.flushed_offset());
    // Not under the `active` lock: the replica manager may hold its own lock while calling
    // `set_followed`, and take it again in this callback.
    if *partition.state.lock_active() {
        let reported = partition
            .state
            .reported_high_watermark
            .swap(high_watermark, Ordering::SeqCst);
        if reported != high_watermark {
            let followed = &partition.state.followed;
            (shared.on_high_watermark)(followed.topic_id, followed.partition.index, high_watermark);
        }
    }
    PartitionOutcome::Applied
}

/// Why a partition's answer was not applied.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApplyError {
    /// FENCED_LEADER_EPOCH: the image names an older epoch than the leader's.
    #[error("the leader fenced our leader epoch")]
    Fenced,
    /// Any other error code from the leader (not leading yet, topic unknown there yet, ...).
    #[error("the leader answered {0:?}")]
    Refused(ResponseError),
    /// An error code we do not know.
    #[error("the leader answered error code {0}")]
    UnknownError(i16),
    /// Appending, truncating or resetting failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What applying a partition's answer did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Applied {
    /// The leader's records (if any) are appended: the leader's high watermark applies.
    Records,
    /// The log was truncated or started afresh: fetch again before reporting anything.
    LogChanged,
}

/// Applies one partition's answer to `log`, which was fetched from `fetch_offset`
/// (docs/replication.md, "Follower"): error codes, `diverging_epoch`, the leader's log start,
/// records. Does not fsync. Blocking.
pub(super) fn apply_partition_data(
    log: &PartitionLog,
    fetch_offset: i64,
    data: &PartitionData,
) -> Result<Applied, ApplyError> {
    if let Some(error) = data.error_code.err() {
        return match error {
            ResponseError::FencedLeaderEpoch => Err(ApplyError::Fenced),
            // Our fetch offset is below the leader's log start: start afresh there.
            ResponseError::OffsetOutOfRange if data.log_start_offset > log.log_end_offset() => {
                log.reset_to(data.log_start_offset)?;
                Ok(Applied::LogChanged)
            }
            other => Err(ApplyError::Refused(other)),
        };
    }
    if data.error_code != 0 {
        return Err(ApplyError::UnknownError(data.error_code));
    }
    if data.diverging_epoch.epoch >= 0 {
        let truncate_at = follower_truncation_offset(
            data.diverging_epoch.epoch,
            data.diverging_epoch.end_offset,
            log,
        );
        log.truncate_to(truncate_at)?;
        return Ok(Applied::LogChanged);
    }
    if data.log_start_offset > log.log_end_offset() {
        log.reset_to(data.log_start_offset)?;
        return Ok(Applied::LogChanged);
    }
    let records = data.records.as_ref().filter(|r| !r.is_empty());
    // A fetcher aborted after an append may leave the log past the offset it fetched from;
    // the answer is then stale, and the next fetch starts from the new end.
    if let Some(records) = records.filter(|_| log.log_end_offset() == fetch_offset) {
        append(log, records)?;
    }
    Ok(Applied::Records)
}

fn append(log: &PartitionLog, records: &Bytes) -> Result<(), StorageError> {
    log.append_replicated(records).map(|_| ())
}

/// Where to truncate on `diverging_epoch = (epoch, end_offset)`: [`state::follower_truncation_offset`]
/// over this log's epoch cache. The caller holds the partition's `active` lock, so nothing
/// changes the log between reading its cache and its end.
pub(super) fn follower_truncation_offset(epoch: i32, end_offset: i64, log: &PartitionLog) -> i64 {
    let mut own = LeaderEpochCache::new();
    for entry in log.epoch_entries() {
        own.assign(entry.epoch, entry.start_offset);
    }
    state::follower_truncation_offset(epoch, end_offset, &own, log.log_end_offset())
}
