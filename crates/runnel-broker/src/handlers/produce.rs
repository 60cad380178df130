//! Produce (key 0), v3–11: validate each partition's batches, append them, and acknowledge by
//! `acks` — 0 and 1 after the write, -1 only once the batch is committed: fsynced here (group
//! commit in the log) and on every in-sync replica, the high watermark past it
//! (docs/replication.md "Produce acks=all"). acks=-1 is refused before the append with
//! NOT_ENOUGH_REPLICAS while the ISR is below `min.insync.replicas`.
//! Whatever `acks`, records become visible to consumers only once committed
//! (`Broker::high_watermark`, never past the flushed offset): acks=0/1 appends queue a flush on
//! the flusher without waiting for it, which fsyncs at once or, for a request of at least
//! `flusher::BULK_RECORDS_MIN` records, within `log.flush.commit.delay.ms`.
//!
//! Partitions are appended concurrently on the blocking pool; a bad partition gets its error
//! code while the others succeed. An append that has started always finishes, even if the client
//! goes away (the blocking task is never cancelled).
//!
//! Two phases: `handle` returns once every batch is *appended* (so the connection's next
//! produce appends after this one — order per partition is kept), and hands back a future
//! that waits for the fsyncs acks=-1 needs. While that fsync runs the connection already
//! appends its next request, whose fsync then covers several requests (group commit across a
//! pipelining producer, not only across connections).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use runnel_protocol::batch::{records_without_key, validate_batches, BatchLimits, BatchValidation};
use runnel_protocol::ProtocolError;
use runnel_storage::{AppendOutcome, BatchHeader, CrcCheck, PartitionLog};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Duration, Instant};

use super::cluster::{broker_endpoint, named_leader};
use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::replication::manager::ReplicaManager;
use crate::topics::Partition;

/// Decompressed size allowed for one batch at least; raised to 4 × `max.message.bytes` for
/// topics that allow bigger batches. Decompression stops at this cap (compression bombs).
const UNCOMPRESSED_BATCH_BYTES_MIN: usize = 64 * 1024 * 1024;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: ProduceRequest,
) -> Result<impl Future<Output = Result<ProduceResponse, BrokerError>> + Send + 'static, BrokerError>
{
    let acks = request.acks;
    let timeout_ms = i64::from(request.timeout_ms.max(0));
    let commit_deadline =
        Instant::now() + Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
    let transactional = request.transactional_id.is_some();
    let mut pending = Vec::new();
    let image = broker.metadata.image();
    for topic_data in request.topic_data {
        let name = topic_data.name.to_string();
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len().min(1024));
        for data in topic_data.partition_data {
            let index = data.index;
            let started = match (acks, transactional) {
                (acks, _) if !matches!(acks, -1..=1) => Err(BrokerError::InvalidRequiredAcks(acks)),
                (_, true) => Err(BrokerError::Unsupported("transactional produce")),
                _ => match broker.led_partition(&image, &name, index) {
                    Err(error) => Err(error),
                    Ok((topic, _)) if topic.is_internal() => {
                        Err(BrokerError::InternalTopic(name.clone()))
                    }
                    Ok((topic, partition)) => match partition.log().await {
                        Err(offline) => Err(offline),
                        Ok(log) => match acks_all_epoch(&broker.replicas, acks, &partition) {
                            Err(refused) => {
                                if matches!(refused, BrokerError::NotEnoughReplicas { .. }) {
                                    note_refused_producer(&log, data.records.as_deref());
                                }
                                Err(refused)
                            }
                            Ok(leader_epoch) => {
                                let limits =
                                    batch_limits(topic.config.max_message_bytes(&broker.config));
                                let policy = TopicPolicy::of(&topic.config, &broker.config);
                                // Waits while the broker validates its maximum number of batches;
                                // never closed, so `None` cannot happen.
                                let slot = Arc::clone(&broker.validation_slots)
                                    .acquire_owned()
                                    .await
                                    .ok();
                                let append = start_append(
                                    Arc::clone(&broker.replicas),
                                    Arc::clone(&partition),
                                    Arc::clone(&log),
                                    data,
                                    limits,
                                    policy,
                                    slot,
                                );
                                Ok((Arc::clone(&log), partition, leader_epoch, append))
                            }
                        },
                    },
                },
            };
            partitions.push((index, started));
        }
        pending.push((topic_data.name, partitions));
    }

    // Phase 1: every append finishes (in request order per connection).
    let mut high_watermark_moved = false;
    let mut any_appended = false;
    let mut topics = Vec::with_capacity(pending.len());
    for (name, partitions) in pending {
        let mut results = Vec::with_capacity(partitions.len());
        for (index, started) in partitions {
            let outcome = match started {
                Ok((log, partition, leader_epoch, task)) => match task.await {
                    Ok(Ok(appended_batch)) => Ok((log, partition, leader_epoch, appended_batch)),
                    Ok(Err(error)) => Err(error),
                    Err(join) => Err(BrokerError::from(join)),
                },
                Err(error) => Err(error),
            };
            if let Ok((_, _, _, appended_batch)) = &outcome {
                high_watermark_moved |= appended_batch.high_watermark_moved;
                any_appended = true;
            }
            results.push((index, outcome));
        }
        topics.push((name, results));
    }
    if high_watermark_moved {
        broker.notify_high_watermark();
    }
    if any_appended {
        // Followers long-poll for records past the high watermark.
        broker.notify_appended();
    }

    // Phase 2: an fsync must cover each partition's last offset, for the records to become
    // visible; acks=-1 waits for it before answering, acks=0/1 answer at once and leave it to
    // a background task, which wakes waiting fetches once the fsyncs are done.
    let flusher = broker.flusher.clone();
    let replicas = Arc::clone(&broker.replicas);
    let signal = broker.high_watermark_signal();
    let listener = Arc::clone(&context.listener);
    Ok(async move {
        // Produce v10+: the endpoints of the leaders named in NOT_LEADER_OR_FOLLOWER answers.
        let mut leaders = std::collections::BTreeSet::new();
        // Every partition's wait is queued before any is awaited: one flush-thread wake-up.
        let mut queued = Vec::with_capacity(topics.len());
        let mut any_appended = false;
        for (name, results) in topics {
            let mut waits = Vec::with_capacity(results.len());
            for (index, outcome) in results {
                let wait = match &outcome {
                    Ok((log, _, _, appended_batch)) => Some(
                        flusher
                            .submit(
                                Arc::clone(log),
                                appended_batch.last_offset(),
                                appended_batch.records(),
                            )
                            .await,
                    ),
                    _ => None,
                };
                waits.push((index, outcome, wait));
            }
            queued.push((name, waits));
        }
        let mut responses = Vec::with_capacity(queued.len());
        let mut background = Vec::new();
        for (name, waits) in queued {
            let mut partition_responses = Vec::with_capacity(waits.len());
            for (index, outcome, wait) in waits {
                any_appended |= outcome.is_ok();
                let durable = match (outcome, wait) {
                    (Ok((log, partition, Some(leader_epoch), appended_batch)), Some(wait))
                        if acks == -1 =>
                    {
                        // Durable here first, then committed: on the ISR, the HW past it.
                        match wait.wait().await {
                            Ok(()) => replicas
                                .wait_committed(
                                    &partition,
                                    &log,
                                    leader_epoch,
                                    appended_batch.last_offset(),
                                    commit_deadline,
                                    timeout_ms,
                                )
                                .await
                                .map(|()| appended_batch),
                            Err(error) => Err(error),
                        }
                    }
                    (Ok((_, _, _, appended_batch)), wait) => {
                        background.extend(wait);
                        Ok(appended_batch)
                    }
                    (Err(error), _) => Err(error),
                };
                let response = PartitionProduceResponse::default().with_index(index);
                partition_responses.push(match durable {
                    Ok(appended_batch) => response
                        .with_base_offset(appended_batch.base_offset())
                        .with_log_start_offset(appended_batch.log_start_offset)
                        .with_log_append_time_ms(appended_batch.log_append_time_ms),
                    Err(error) => {
                        tracing::debug!(topic = %name.0, partition = index, %error, "produce refused");
                        let current_leader = named_leader(&error).map_or_else(
                            LeaderIdAndEpoch::default,
                            |(leader, epoch)| {
                                leaders.insert(leader);
                                LeaderIdAndEpoch::default()
                                    .with_leader_id(BrokerId(leader))
                                    .with_leader_epoch(epoch)
                            },
                        );
                        response
                            .with_current_leader(current_leader)
                            .with_error_code(error.code())
                            .with_base_offset(-1)
                            .with_record_errors(record_errors(&error))
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
        if !background.is_empty() {
            tokio::spawn(async move {
                for wait in background {
                    // A failed fsync is the flusher's to report; its records stay invisible.
                    let _ = wait.wait().await;
                }
                signal.notify();
            });
        } else if any_appended {
            signal.notify();
        }
        let node_endpoints = leaders
            .into_iter()
            .filter_map(|leader| broker_endpoint(&image, leader, &listener))
            .map(|e| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(e.id))
                    .with_host(e.host.into())
                    .with_port(e.port)
                    .with_rack(e.rack.map(Into::into))
            })
            .collect();
        Ok(ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(node_endpoints))
    })
}

/// KIP-467 `record_errors` (Produce v8+): the records that made the partition's batches fail,
/// by index, each with the reason; empty when the failure was not about particular records.
fn record_errors(error: &BrokerError) -> Vec<BatchIndexAndErrorMessage> {
    match error {
        BrokerError::RecordsWithoutKey(indexes) => indexes
            .iter()
            .map(|index| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(*index)
                    .with_batch_index_error_message(Some(
                        "compacted topic cannot accept a record without a key".into(),
                    ))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn batch_limits(max_message_bytes: usize) -> BatchLimits {
    BatchLimits {
        max_batch_bytes: max_message_bytes,
        max_uncompressed_bytes: max_message_bytes
            .saturating_mul(4)
            .max(UNCOMPRESSED_BATCH_BYTES_MIN),
    }
}

/// What one partition's append did.
#[derive(Debug, Clone, Copy)]
struct AppendedBatch {
    outcome: AppendOutcome,
    log_start_offset: i64,
    /// The time stamped on LogAppendTime topics, else -1.
    log_append_time_ms: i64,
    /// The append made more records durable (a roll, or a `flush.messages` flush), which
    /// moved the high watermark.
    high_watermark_moved: bool,
}

impl AppendedBatch {
    fn base_offset(&self) -> i64 {
        match self.outcome {
            AppendOutcome::Appended { base_offset, .. }
            | AppendOutcome::Duplicate { base_offset, .. } => base_offset,
        }
    }

    /// Records the request appended (or found already appended, for a duplicate).
    fn records(&self) -> i64 {
        self.last_offset() - self.base_offset() + 1
    }

    fn last_offset(&self) -> i64 {
        match self.outcome {
            AppendOutcome::Appended { last_offset, .. }
            | AppendOutcome::Duplicate { last_offset, .. } => last_offset,
        }
    }
}

type AppendTask = tokio::task::JoinHandle<Result<AppendedBatch, BrokerError>>;

/// The topic configs a produce honours, copied out of the topic.
#[derive(Debug, Clone, Copy)]
struct TopicPolicy {
    log_append_time: bool,
    before_max_ms: i64,
    after_max_ms: i64,
    compacted: bool,
    flush_messages: i64,
    /// `produce.batch.validation`, made strict on compacted topics (every key is needed).
    validation: BatchValidation,
}

impl TopicPolicy {
    fn of(
        config: &crate::topic_config::TopicConfig,
        broker: &crate::config::BrokerConfig,
    ) -> TopicPolicy {
        let (before_max_ms, after_max_ms) = config.timestamp_bounds_ms();
        let compacted = config.is_compacted();
        TopicPolicy {
            log_append_time: config.log_append_time(),
            before_max_ms,
            after_max_ms,
            compacted,
            flush_messages: config.flush_policy(broker).0,
            validation: if compacted {
                BatchValidation::Strict
            } else {
                broker.produce_batch_validation
            },
        }
    }

    /// Checks the validated batches against the topic: keys on compacted topics (listing
    /// every keyless record for `record_errors`), and (for CreateTime) timestamps within
    /// `message.timestamp.before/after.max.ms` of `now_ms`.
    fn check(
        &self,
        records: &[u8],
        batches: &[runnel_protocol::batch::ValidatedBatch],
        limits: &BatchLimits,
        now_ms: i64,
    ) -> Result<(), BrokerError> {
        // Validation walked every record of a compacted topic (strict), so `has_null_key` is
        // exact; the second walk, to name the records, happens only for a refused request.
        if self.compacted && batches.iter().any(|b| !b.is_control && b.has_null_key) {
            return Err(BrokerError::RecordsWithoutKey(records_without_key(
                records, limits,
            )?));
        }
        for batch in batches {
            if batch.is_control {
                continue;
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

/// acks=-1: the leader epoch its wait for the commit is bound to, once the ISR is checked
/// (NOT_ENOUGH_REPLICAS before the append); `None` for acks 0 and 1.
fn acks_all_epoch(
    replicas: &ReplicaManager,
    acks: i16,
    partition: &Partition,
) -> Result<Option<i32>, BrokerError> {
    if acks == -1 {
        replicas.check_acks_all(partition).map(Some)
    } else {
        Ok(None)
    }
}

/// Tells the log that the idempotent producer of `records` (if any) had a batch refused before
/// it was written, so that the batches it pipelined behind it get the same answer rather than
/// OUT_OF_ORDER_SEQUENCE_NUMBER should the refusal's cause clear before they arrive.
fn note_refused_producer(log: &PartitionLog, records: Option<&[u8]>) {
    let header = records.and_then(|records| BatchHeader::parse(records).ok());
    if let Some(header) = header.filter(|h| h.has_producer_id()) {
        log.note_refused_producer(header.producer_id);
    }
}

/// Validates and appends on the blocking pool; flushes when `flush.messages` asks for it
/// (the acks=-1 fsync is the caller's second phase). The append carries this node's leader
/// epoch ([`ReplicaManager::prepare_leader_append`]).
fn start_append(
    replicas: Arc<ReplicaManager>,
    partition: Arc<Partition>,
    log: Arc<PartitionLog>,
    data: PartitionProduceData,
    limits: BatchLimits,
    policy: TopicPolicy,
    validation_slot: Option<OwnedSemaphorePermit>,
) -> AppendTask {
    tokio::task::spawn_blocking(move || {
        // Held for the whole append: the validated records are dropped when it ends.
        let _slot = validation_slot;
        let records: Bytes = data
            .records
            .ok_or_else(|| ProtocolError::InvalidBatch("records are null".into()))?;
        let batches = validate_batches(&records, &limits, policy.validation)?;
        let now_ms = crate::log_manager::now_ms();
        policy.check(&records, &batches, &limits, now_ms)?;
        let log_append_time_ms = policy.log_append_time.then_some(now_ms);
        let leader_epoch = replicas.prepare_leader_append(&partition, &log)?;
        let flushed_before = log.flushed_offset();
        // `validate_batches` verified every batch's CRC32C over these bytes.
        let outcome = log.append_as_leader(
            &records,
            log_append_time_ms,
            CrcCheck::VerifiedByCaller,
            leader_epoch,
        )?;
        let mut appended = AppendedBatch {
            outcome,
            log_start_offset: log.log_start_offset(),
            log_append_time_ms: log_append_time_ms.unwrap_or(-1),
            high_watermark_moved: false,
        };
        let unflushed = log.log_end_offset().saturating_sub(log.flushed_offset());
        if unflushed >= policy.flush_messages {
            log.flush(appended.last_offset())?;
        }
        appended.high_watermark_moved = log.flushed_offset() > flushed_before;
        Ok(appended)
    })
}
