//! Produce (key 0), v3–11: validate each partition's batches, append them, and acknowledge by
//! `acks` — 0 and 1 after the write, -1 only once the batch is fsynced (group commit in the log).
//!
//! Partitions are appended concurrently on the blocking pool; a bad partition gets its error
//! code while the others succeed. An append that has started always finishes, even if the client
//! goes away (the blocking task is never cancelled).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use runnel_protocol::batch::{validate_batches, BatchLimits};
use runnel_protocol::ProtocolError;
use runnel_storage::AppendOutcome;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topics::Partition;

/// Decompressed size allowed for one batch at least; raised to 4 × `max.message.bytes` for
/// topics that allow bigger batches. Decompression stops at this cap (compression bombs).
const UNCOMPRESSED_BATCH_BYTES_MIN: usize = 64 * 1024 * 1024;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: ProduceRequest,
) -> Result<ProduceResponse, BrokerError> {
    let acks = request.acks;
    let transactional = request.transactional_id.is_some();
    let mut pending = Vec::new();
    for topic_data in request.topic_data {
        let name = topic_data.name.to_string();
        let topic = broker.topics.get(&name);
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len().min(1024));
        for data in topic_data.partition_data {
            let index = data.index;
            let started = match (&topic, acks, transactional) {
                (_, acks, _) if !matches!(acks, -1..=1) => {
                    Err(BrokerError::InvalidRequiredAcks(acks))
                }
                (_, _, true) => Err(BrokerError::Unsupported("transactional produce")),
                (None, _, _) => Err(BrokerError::UnknownTopicOrPartition(name.clone())),
                (Some(topic), _, _) => match topic.partition(index) {
                    None => Err(BrokerError::UnknownTopicOrPartition(format!(
                        "{name}-{index}"
                    ))),
                    Some(partition) => {
                        let limits = batch_limits(topic.config.max_message_bytes(&broker.config));
                        let policy = TopicPolicy::of(&topic.config);
                        Ok(start_append(
                            Arc::clone(partition),
                            data,
                            limits,
                            acks,
                            policy,
                        ))
                    }
                },
            };
            partitions.push((index, started));
        }
        pending.push((topic_data.name, partitions));
    }

    let mut responses = Vec::with_capacity(pending.len());
    let mut appended = false;
    for (name, partitions) in pending {
        let mut partition_responses = Vec::with_capacity(partitions.len());
        for (index, started) in partitions {
            let outcome = match started {
                Ok(task) => task.await.map_err(BrokerError::from).and_then(|r| r),
                Err(error) => Err(error),
            };
            let response = PartitionProduceResponse::default().with_index(index);
            partition_responses.push(match outcome {
                Ok((outcome, log_start_offset, log_append_time_ms)) => {
                    let base_offset = match outcome {
                        AppendOutcome::Appended { base_offset, .. } => {
                            appended = true;
                            base_offset
                        }
                        AppendOutcome::Duplicate { base_offset, .. } => base_offset,
                    };
                    response
                        .with_base_offset(base_offset)
                        .with_log_start_offset(log_start_offset)
                        .with_log_append_time_ms(log_append_time_ms)
                }
                Err(error) => {
                    tracing::debug!(topic = %name.0, partition = index, %error, "produce refused");
                    response
                        .with_error_code(error.code())
                        .with_base_offset(-1)
                        .with_error_message(Some(error.to_string().into()))
                }
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partition_responses),
        );
    }
    if appended {
        broker.notify_appended();
    }
    Ok(ProduceResponse::default().with_responses(responses))
}

fn batch_limits(max_message_bytes: usize) -> BatchLimits {
    BatchLimits {
        max_batch_bytes: max_message_bytes,
        max_uncompressed_bytes: max_message_bytes
            .saturating_mul(4)
            .max(UNCOMPRESSED_BATCH_BYTES_MIN),
    }
}

/// (outcome, log start offset, log append time or -1).
type AppendTask = tokio::task::JoinHandle<Result<(AppendOutcome, i64, i64), BrokerError>>;

/// The topic configs a produce honours, copied out of the topic.
#[derive(Debug, Clone, Copy)]
struct TopicPolicy {
    log_append_time: bool,
    before_max_ms: i64,
    after_max_ms: i64,
    compacted: bool,
    flush_messages: i64,
}

impl TopicPolicy {
    fn of(config: &crate::topic_config::TopicConfig) -> TopicPolicy {
        let (before_max_ms, after_max_ms) = config.timestamp_bounds_ms();
        TopicPolicy {
            log_append_time: config.log_append_time(),
            before_max_ms,
            after_max_ms,
            compacted: config.is_compacted(),
            flush_messages: config.flush_policy().0,
        }
    }

    /// Checks the validated batches against the topic: keys on compacted topics, and (for
    /// CreateTime) timestamps within `message.timestamp.before/after.max.ms` of `now_ms`.
    fn check(
        &self,
        records: &[u8],
        batches: &[runnel_protocol::batch::ValidatedBatch],
        now_ms: i64,
    ) -> Result<(), BrokerError> {
        for batch in batches {
            if batch.is_control {
                continue;
            }
            if self.compacted && batch.has_null_key {
                return Err(BrokerError::InvalidRecord(
                    "compacted topic requires every record to have a key",
                ));
            }
            if self.log_append_time {
                continue;
            }
            let base_timestamp = records
                .get(batch.position..)
                .and_then(|b| runnel_storage::BatchHeader::parse(b).ok())
                .map_or(batch.max_timestamp, |h| h.base_timestamp);
            let too_old =
                now_ms.saturating_sub(base_timestamp.min(batch.max_timestamp)) > self.before_max_ms;
            let too_new = batch.max_timestamp.saturating_sub(now_ms) > self.after_max_ms;
            if too_old || too_new {
                return Err(BrokerError::InvalidTimestamp {
                    timestamp_ms: if too_new {
                        batch.max_timestamp
                    } else {
                        base_timestamp
                    },
                    now_ms,
                });
            }
        }
        Ok(())
    }
}

/// Validates, appends and (for acks=-1) fsyncs on the blocking pool.
fn start_append(
    partition: Arc<Partition>,
    data: PartitionProduceData,
    limits: BatchLimits,
    acks: i16,
    policy: TopicPolicy,
) -> AppendTask {
    tokio::task::spawn_blocking(move || {
        let records: Bytes = data
            .records
            .ok_or_else(|| ProtocolError::InvalidBatch("records are null".into()))?;
        let batches = validate_batches(&records, &limits)?;
        let now_ms = crate::log_manager::now_ms();
        policy.check(&records, &batches, now_ms)?;
        let log = &partition.log;
        let log_append_time_ms = policy.log_append_time.then_some(now_ms);
        let outcome = log.append_with_time(&records, log_append_time_ms)?;
        let last_offset = match outcome {
            AppendOutcome::Appended { last_offset, .. }
            | AppendOutcome::Duplicate { last_offset, .. } => last_offset,
        };
        let unflushed = log.log_end_offset().saturating_sub(log.flushed_offset());
        if acks == -1 || unflushed >= policy.flush_messages {
            log.flush(last_offset)?;
        }
        Ok((
            outcome,
            log.log_start_offset(),
            log_append_time_ms.unwrap_or(-1),
        ))
    })
}
