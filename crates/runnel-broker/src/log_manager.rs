//! Log maintenance: the record reader storage borrows (see `runnel_storage::RecordReader`),
//! and the background task that applies retention and runs the log cleaner on every partition
//! at `log.retention.check.interval.ms`.
//!
//! All storage work runs on the blocking pool, one partition at a time, so maintenance never
//! competes with more than one core's worth of request handling.

use std::sync::Arc;
use std::time::Duration;

use runnel_protocol::record_filter::{batch_records, retain_records};
use runnel_storage::{RecordError, RecordReader, RecordSummary};

use crate::broker::Broker;

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

    fn retain(
        &self,
        batch: &[u8],
        keep: &mut dyn FnMut(i64) -> bool,
    ) -> Result<Option<Vec<u8>>, RecordError> {
        retain_records(batch, UNCOMPRESSED_BATCH_BYTES_MAX, keep)
            .map_err(|e| RecordError(e.to_string()))
    }
}

/// Runs retention and compaction on every partition forever, every
/// `log.retention.check.interval.ms`. Errors are logged per partition; the loop goes on.
pub async fn run_log_maintenance(broker: Arc<Broker>) {
    let period = Duration::from_millis(broker.config.log_retention_check_interval_ms);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for topic in broker.topics.all() {
            let retention = topic.config.retention_policy(&broker.config);
            let compaction = topic
                .config
                .is_compacted()
                .then(|| topic.config.compaction_policy());
            for partition in topic.partitions.clone() {
                let name = topic.name.clone();
                let log = Arc::clone(&partition.log);
                let index = partition.index;
                let outcome = tokio::task::spawn_blocking(move || {
                    let now_ms = now_ms();
                    if let Some(policy) = compaction {
                        if let Err(error) = log.clean(&policy, &ProtocolRecordReader, now_ms) {
                            tracing::error!(topic = %name, partition = index, %error, "log cleaning failed");
                        }
                    }
                    if let Err(error) = log.apply_retention(retention, now_ms) {
                        tracing::error!(topic = %name, partition = index, %error, "retention failed");
                    }
                })
                .await;
                if let Err(error) = outcome {
                    tracing::error!(%error, "log maintenance task failed");
                }
            }
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
