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
                        Ok(start_append(Arc::clone(partition), data, limits, acks))
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
                Ok((outcome, log_start_offset)) => {
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

type AppendTask = tokio::task::JoinHandle<Result<(AppendOutcome, i64), BrokerError>>;

/// Validates, appends and (for acks=-1) fsyncs on the blocking pool.
fn start_append(
    partition: Arc<Partition>,
    data: PartitionProduceData,
    limits: BatchLimits,
    acks: i16,
) -> AppendTask {
    tokio::task::spawn_blocking(move || {
        let records: Bytes = data
            .records
            .ok_or_else(|| ProtocolError::InvalidBatch("records are null".into()))?;
        validate_batches(&records, &limits)?;
        let log = &partition.log;
        let outcome = log.append(&records)?;
        let last_offset = match outcome {
            AppendOutcome::Appended { last_offset, .. }
            | AppendOutcome::Duplicate { last_offset, .. } => last_offset,
        };
        if acks == -1 {
            log.flush(last_offset)?;
        }
        Ok((outcome, log.log_start_offset()))
    })
}
