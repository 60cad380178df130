//! Fetch (key 1), v4–16: read whole batches from each partition up to the high watermark within
//! the partition and response byte limits; long-poll until `min_bytes` are available or
//! `max_wait_ms` passes, woken by appends rather than by polling.
//!
//! Fetch sessions (KIP-227) are not kept: every response carries session id 0, which tells the
//! client to send full fetch requests — always legal.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::time::Instant;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topics::{Partition, Topic};

/// Longest long-poll we honour, whatever the client asks: a waiting fetch holds its connection.
const MAX_WAIT_MS_CAP: i32 = 30_000;
/// Fetch v13 replaced topic names by topic ids.
const TOPIC_ID_VERSION: i16 = 13;
/// Fetch v15 moved the replica id into `replica_state`.
const REPLICA_STATE_VERSION: i16 = 15;

/// One partition to read, resolved against the registry.
struct PartitionRead {
    index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    partition: Result<Arc<Partition>, BrokerError>,
}

/// One topic of the request, resolved.
struct TopicRead {
    name: TopicName,
    id: uuid::Uuid,
    partitions: Vec<PartitionRead>,
}

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: FetchRequest,
) -> Result<FetchResponse, BrokerError> {
    // Fetch v15 moved the replica id into `replica_state`; consumers send -1 there.
    let replica_id = if context.api_version >= REPLICA_STATE_VERSION {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let mut reads = resolve(broker, &request, context.api_version);
    if replica_id >= 0 {
        for read in reads.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            read.partition = Err(BrokerError::NotAReplica(replica_id));
        }
    }
    let reads = Arc::new(reads);
    let response_bytes_max = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(broker.config.fetch_max_bytes);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_wait = Duration::from_millis(
        u64::try_from(request.max_wait_ms.clamp(0, MAX_WAIT_MS_CAP)).unwrap_or(0),
    );
    let deadline = Instant::now() + max_wait;
    let mut appends = broker.subscribe_appends();
    loop {
        // Mark the current append count as seen *before* reading, so an append that lands
        // while we read still wakes the wait below.
        appends.borrow_and_update();
        let batch = Arc::clone(&reads);
        let (topics, bytes, any_error) =
            tokio::task::spawn_blocking(move || read_all(&batch, response_bytes_max)).await?;
        if bytes >= min_bytes || any_error || Instant::now() >= deadline {
            return Ok(FetchResponse::default()
                .with_session_id(0)
                .with_responses(topics));
        }
        tokio::select! {
            changed = appends.changed() => {
                if changed.is_err() {
                    // The broker is going away: answer with what we have.
                    return Ok(FetchResponse::default().with_responses(topics));
                }
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn resolve(broker: &Broker, request: &FetchRequest, version: i16) -> Vec<TopicRead> {
    request
        .topics
        .iter()
        .map(|fetch_topic| {
            let topic: Result<Arc<Topic>, BrokerError> = if version >= TOPIC_ID_VERSION {
                broker
                    .topics
                    .get_by_id(fetch_topic.topic_id)
                    .ok_or(BrokerError::UnknownTopicId(fetch_topic.topic_id))
            } else {
                broker.topics.get(&fetch_topic.topic).ok_or_else(|| {
                    BrokerError::UnknownTopicOrPartition(fetch_topic.topic.to_string())
                })
            };
            let partitions = fetch_topic
                .partitions
                .iter()
                .map(|p| PartitionRead {
                    index: p.partition,
                    fetch_offset: p.fetch_offset,
                    max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                    partition: match &topic {
                        Ok(topic) => topic.partition(p.partition).cloned().ok_or_else(|| {
                            BrokerError::UnknownTopicOrPartition(format!(
                                "{}-{}",
                                topic.name, p.partition
                            ))
                        }),
                        Err(BrokerError::UnknownTopicId(id)) => {
                            Err(BrokerError::UnknownTopicId(*id))
                        }
                        Err(_) => Err(BrokerError::UnknownTopicOrPartition(
                            fetch_topic.topic.to_string(),
                        )),
                    },
                })
                .collect();
            TopicRead {
                name: fetch_topic.topic.clone(),
                id: fetch_topic.topic_id,
                partitions,
            }
        })
        .collect()
}

/// Reads every partition in request order within the response budget. Blocking.
fn read_all(
    reads: &[TopicRead],
    response_bytes_max: usize,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut budget = response_bytes_max;
    let mut total = 0;
    let mut any_error = false;
    let topics = reads
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|read| {
                    let data = PartitionData::default()
                        .with_partition_index(read.index)
                        .with_aborted_transactions(Some(Vec::new()))
                        .with_records(Some(Bytes::new()));
                    let log = match read
                        .partition
                        .as_ref()
                        .map_err(|e| e.code())
                        .and_then(|p| p.log().map_err(|e| e.code()))
                    {
                        Ok(log) => log,
                        Err(code) => {
                            any_error = true;
                            return data.with_error_code(code);
                        }
                    };
                    // On a single node the high watermark is the log end.
                    let high_watermark = log.log_end_offset();
                    let log_start_offset = log.log_start_offset();
                    let data = data
                        .with_high_watermark(high_watermark)
                        .with_last_stable_offset(high_watermark)
                        .with_log_start_offset(log_start_offset);
                    // KIP-74: the first batch of the response is returned even above the limits,
                    // so that a consumer can always make progress.
                    let limit = if total == 0 {
                        read.max_bytes.max(1)
                    } else {
                        read.max_bytes.min(budget)
                    };
                    if limit == 0 {
                        return data;
                    }
                    match log.read(read.fetch_offset, limit, high_watermark) {
                        Ok(records) => {
                            total += records.len();
                            budget = budget.saturating_sub(records.len());
                            data.with_records(Some(records))
                        }
                        Err(error) => {
                            any_error = true;
                            data.with_error_code(BrokerError::from(error).code())
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic.name.clone())
                .with_topic_id(topic.id)
                .with_partitions(partitions)
        })
        .collect();
    (topics, total, any_error)
}
