//! Log maintenance: the record reader storage borrows (see `runnel_storage::RecordReader`),
//! the background task that applies retention and expires idempotent producers (every
//! `log.retention.check.interval.ms`) and runs the log cleaner (every `log.cleaner.backoff.ms`)
//! on every partition, and the one that applies `flush.ms`.
//!
//! All storage work runs on the blocking pool, one partition at a time, so maintenance never
//! competes with more than one core's worth of request handling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_protocol::batch::find_record;
use runnel_protocol::record_filter::{batch_records, retain_records};
use runnel_storage::{RecordError, RecordReader, RecordSummary};

use crate::broker::Broker;
use crate::topics::Topic;

/// Decompressed size allowed when the cleaner or a timestamp lookup reads a stored batch.
const UNCOMPRESSED_BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

/// `RecordReader` over the protocol crate's record walk and capped decompression.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProtocolRecordReader;

impl RecordReader for ProtocolRecordReader {
    fn records(&self, batch: &[u8]) -> Result<Vec<RecordSummary>, RecordError> {
        let records = batch_records(batch, UNCOMPRESSED_BATCH_BYTES_MAX)
            .map_err(|e| RecordError(e.to_string()))?;
        Ok(records
            .into_iter()
            .map(|r| RecordSummary {
                offset: r.offset,
                timestamp: r.timestamp,
                is_tombstone: r.value.is_none(),
                key: r.key,
            })
            .collect())
    }

    fn find_record(
        &self,
        batch: &[u8],
        wanted: &mut dyn FnMut(i64, i64) -> bool,
    ) -> Result<Option<(i64, i64)>, RecordError> {
        find_record(batch, UNCOMPRESSED_BATCH_BYTES_MAX, wanted)
            .map_err(|e| RecordError(e.to_string()))
    }

    fn retain(
        &self,
        batch: &[u8],
        keep: &mut dyn FnMut(i64) -> bool,
    ) -> Result<Option<Vec<u8>>, RecordError> {
        retain_records(batch, UNCOMPRESSED_BATCH_BYTES_MAX, keep)
            .map_err(|e| RecordError(e.to_string()))
    }
}

/// Runs retention and compaction on every partition forever, each on its own schedule:
/// retention every `log.retention.check.interval.ms` (default 5 min), the log cleaner every
/// `log.cleaner.backoff.ms` (default 15 s, as Kafka's cleaner threads back off between
/// passes), so a compacted topic does not wait for the retention check. Errors are logged per
/// partition; the loop goes on.
pub async fn run_log_maintenance(broker: Arc<Broker>) {
    let retention_period = Duration::from_millis(broker.config.log_retention_check_interval_ms);
    let cleaner_period = Duration::from_millis(broker.config.log_cleaner_backoff_ms);
    let start = tokio::time::Instant::now();
    let mut next_retention = start + retention_period;
    let mut next_clean = start + cleaner_period;
    loop {
        tokio::time::sleep_until(next_retention.min(next_clean)).await;
        let now = tokio::time::Instant::now();
        let retain = now >= next_retention;
        let clean = now >= next_clean;
        for topic in broker.topics.all() {
            let retention = retain.then(|| topic.config.retention_policy(&broker.config));
            let compaction = (clean && topic.config.is_compacted())
                .then(|| topic.config.compaction_policy(&broker.config));
            if retention.is_none() && compaction.is_none() {
                continue;
            }
            for partition in topic.partitions.values().cloned() {
                let name = topic.name.clone();
                let index = partition.index;
                let outcome = tokio::task::spawn_blocking(move || {
                    // Opens a log not used since start-up: retention applies to every one.
                    // An offline partition was reported when it failed to open (or its fsync
                    // or write failed).
                    let Ok(log) = partition.log_blocking() else {
                        return;
                    };
                    let now_ms = now_ms();
                    if let Some(policy) = compaction {
                        if let Err(error) = log.clean(&policy, &ProtocolRecordReader, now_ms) {
                            tracing::error!(topic = %name, partition = index, %error, "log cleaning failed");
                        }
                    }
                    if let Some(retention) = retention {
                        if let Err(error) = log.apply_retention(retention, now_ms) {
                            tracing::error!(topic = %name, partition = index, %error, "retention failed");
                        }
                    }
                    // With retention, as Kafka's producer expiry check runs on its own timer.
                    let expired = if retention.is_some() { log.expire_producers() } else { 0 };
                    if expired > 0 {
                        tracing::debug!(topic = %name, partition = index, expired, "expired idempotent producers");
                    }
                })
                .await;
                if let Err(error) = outcome {
                    tracing::error!(%error, "log maintenance task failed");
                }
            }
        }
        // The next pass starts a full period after this one ends (Kafka's backoff), so a long
        // pass never makes passes run back to back.
        let done = tokio::time::Instant::now();
        if retain {
            next_retention = done + retention_period;
        }
        if clean {
            next_clean = done + cleaner_period;
        }
    }
}

/// Longest pause of the periodic flush task; a topic's `flush.ms` shorter than this is checked
/// at its own period (no shorter than [`FLUSH_CHECK_MS_MIN`]).
const FLUSH_CHECK_MS_MAX: u64 = 1000;
/// Shortest pause of the periodic flush task, so `flush.ms=0` does not spin.
const FLUSH_CHECK_MS_MIN: u64 = 10;

/// Applies `flush.ms` (fsync at least this often) to partitions written with acks <= 1:
/// wakes at the smallest `flush.ms` of any topic (within 10..=1000 ms) and fsyncs every
/// partition of such a topic that has unflushed records and was last flushed by this task
/// `flush.ms` or more ago. acks=-1 produces flush on their own and need none of this. A
/// partition that rolled a segment since its last flush is flushed at the next wake-up
/// whatever its `flush.ms` (see `PartitionLog::roll_pending`).
pub async fn run_periodic_flush(broker: Arc<Broker>) {
    let mut last_flush: HashMap<(String, i32), Instant> = HashMap::new();
    loop {
        let topics = broker.topics.all();
        let flush_ms =
            |topic: &Topic| u64::try_from(topic.config.flush_policy(&broker.config).1).ok();
        let period_ms = topics
            .iter()
            .filter_map(|t| flush_ms(t))
            .min()
            .unwrap_or(FLUSH_CHECK_MS_MAX)
            .clamp(FLUSH_CHECK_MS_MIN, FLUSH_CHECK_MS_MAX);
        tokio::time::sleep(Duration::from_millis(period_ms)).await;
        let now = Instant::now();
        // Forget partitions of deleted topics.
        last_flush.retain(|(name, _), _| topics.iter().any(|t| &t.name == name));
        for topic in &topics {
            let interval_ms = flush_ms(topic).filter(|ms| *ms < i64::MAX as u64);
            for partition in topic.partitions.values() {
                // A log not opened since start-up has nothing unflushed.
                let Some(log) = partition.opened_log() else {
                    continue;
                };
                // A failed log (said so once) flushes nothing more until a restart.
                if log.is_failed() {
                    continue;
                }
                // A roll's fsyncs wait for the next flush whatever `flush.ms` says (Kafka
                // flushes a rolled segment at once): until then retention cannot delete it.
                if !log.roll_pending() {
                    // Checked before the bookkeeping: most partitions are idle on most ticks.
                    let Some(interval_ms) = interval_ms else {
                        continue;
                    };
                    if log.flushed_offset() >= log.log_end_offset() {
                        continue;
                    }
                    let last = last_flush
                        .entry((topic.name.clone(), partition.index))
                        .or_insert(now);
                    if !flush_due(
                        *last,
                        now,
                        interval_ms,
                        log.flushed_offset(),
                        log.log_end_offset(),
                    ) {
                        continue;
                    }
                }
                last_flush.insert((topic.name.clone(), partition.index), now);
                let outcome =
                    tokio::task::spawn_blocking(move || log.flush(log.log_end_offset())).await;
                match outcome {
                    // More records are durable, so visible: wake the fetches waiting for them.
                    Ok(Ok(())) => broker.notify_high_watermark(),
                    Ok(Err(error)) => {
                        tracing::error!(topic = %topic.name, partition = partition.index, %error, "periodic flush failed");
                    }
                    Err(error) => tracing::error!(%error, "periodic flush task failed"),
                }
            }
        }
    }
}

/// Whether a partition last flushed (by the periodic task) at `last` is due at `now`: it has
/// records not yet fsynced and `interval_ms` have passed.
fn flush_due(
    last: Instant,
    now: Instant,
    interval_ms: u64,
    flushed_offset: i64,
    log_end_offset: i64,
) -> bool {
    flushed_offset < log_end_offset
        && now.saturating_duration_since(last) >= Duration::from_millis(interval_ms)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_is_due_only_with_unflushed_records_after_the_interval() {
        let last = Instant::now();
        let later = last + Duration::from_millis(100);
        assert!(flush_due(last, later, 100, 5, 10));
        assert!(!flush_due(last, later, 101, 5, 10), "interval not over");
        assert!(!flush_due(last, later, 100, 10, 10), "nothing to flush");
        assert!(flush_due(last, later, 0, 9, 10));
    }
}
