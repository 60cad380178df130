//! Fetch (key 1), v4–16: read whole batches from each partition up to the high watermark
//! (`Broker::high_watermark`: committed and durable) within the partition and response byte
//! limits; long-poll until `min_bytes` are available or `max_wait_ms` passes, woken when a
//! high watermark moves rather than by polling.
//!
//! A fetch from a follower (`replica_id` >= 0, in `replica_state` from v15) is checked by the
//! replica manager (leader epochs, a diverging log: docs/replication.md "Leader" 1–3), records
//! the follower's progress, and reads up to the log end; its long-poll is also woken by
//! appends. A consumer's `current_leader_epoch` fences a stale or too-new leader.
//!
//! Fetch sessions (KIP-227) are not kept: every response carries session id 0, which tells the
//! client to send full fetch requests — always legal.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use tokio::runtime::RuntimeFlavor;
use tokio::time::Instant;

use super::cluster::{broker_endpoint, named_leader};
use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::replication::manager::{check_leader_epoch, ReplicaManager, ReplicaRead};
use crate::topics::Partition;

/// Longest long-poll we honour, whatever the client asks: a waiting fetch holds its connection.
const MAX_WAIT_MS_CAP: i32 = 30_000;
/// Largest response a long-poll reads on its worker thread (under `block_in_place`) once a
/// high watermark move woke it (see `handle`); a wait for more bytes re-reads on the blocking
/// pool instead.
const WOKEN_READ_BYTES_MAX: usize = 1024 * 1024;
/// Fetch v13 replaced topic names by topic ids.
const TOPIC_ID_VERSION: i16 = 13;
/// Fetch v15 moved the replica id into `replica_state`.
const REPLICA_STATE_VERSION: i16 = 15;

/// One partition to read, resolved against the registry.
struct PartitionRead {
    index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    /// A follower's `last_fetched_epoch` (-1: none).
    last_fetched_epoch: i32,
    /// The request's `current_leader_epoch` (-1: none).
    current_leader_epoch: i32,
    partition: Result<Arc<Partition>, BrokerError>,
}

/// Who is fetching.
#[derive(Debug, Clone, Copy)]
enum Fetcher {
    Consumer,
    /// A follower replica, by broker id.
    Replica(i32),
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
    let fetcher = if replica_id >= 0 {
        Fetcher::Replica(replica_id)
    } else {
        Fetcher::Consumer
    };
    let reads = Arc::new(resolve(broker, &request, context.api_version, fetcher));
    let response_bytes_max = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(broker.config.fetch_max_bytes);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_wait = Duration::from_millis(
        u64::try_from(request.max_wait_ms.clamp(0, MAX_WAIT_MS_CAP)).unwrap_or(0),
    );
    let deadline = Instant::now() + max_wait;
    let mut advances = broker.subscribe_high_watermark();
    let mut appends = broker.subscribe_appended();
    let mut woken = false;
    // `block_in_place` needs the multi-threaded runtime the broker runs on.
    let can_block_in_place =
        tokio::runtime::Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread;
    loop {
        // Mark the current count of high watermark moves as seen *before* reading, so a flush
        // that lands while we read still wakes the wait below.
        advances.borrow_and_update();
        appends.borrow_and_update();
        // The first read may touch any part of the log, so it runs on the blocking pool. A
        // re-read after a wake-up finds only what it read before plus what was just flushed
        // (appended moments ago), both in the page cache: it runs on this thread under `block_in_place` (the runtime
        // hands this worker's other tasks to another thread meanwhile), capped, which spares a
        // consumer at the tail the wait for a pool thread to wake and for the worker to be
        // woken back (e2e p50 at 1,000 records/s acks=all 0.41 → 0.30 ms, docs/performance.md).
        // A wait for more bytes than the cap keeps reading on the pool, so it is answered in
        // full.
        let (topics, bytes, any_error) =
            match woken_read_bytes_max(woken, min_bytes, response_bytes_max) {
                Some(bytes_max) if can_block_in_place => tokio::task::block_in_place(|| {
                    read_all(&broker.replicas, fetcher, &reads, bytes_max)
                }),
                _ => {
                    let batch = Arc::clone(&reads);
                    let replicas = Arc::clone(&broker.replicas);
                    tokio::task::spawn_blocking(move || {
                        read_all(&replicas, fetcher, &batch, response_bytes_max)
                    })
                    .await?
                }
            };
        woken = true;
        if bytes >= min_bytes || any_error || Instant::now() >= deadline {
            return Ok(FetchResponse::default()
                .with_session_id(0)
                .with_responses(topics)
                .with_node_endpoints(leader_endpoints(broker, &reads, &context.listener)));
        }
        tokio::select! {
            changed = advances.changed() => {
                if changed.is_err() {
                    // The broker is going away: answer with what we have.
                    return Ok(FetchResponse::default().with_responses(topics));
                }
            }
            // Followers read past the high watermark: an append is news to them.
            changed = appends.changed(), if matches!(fetcher, Fetcher::Replica(_)) => {
                if changed.is_err() {
                    return Ok(FetchResponse::default().with_responses(topics));
                }
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Fetch v16+: the endpoints of the leaders named in NOT_LEADER_OR_FOLLOWER answers.
fn leader_endpoints(broker: &Broker, reads: &[TopicRead], listener: &str) -> Vec<NodeEndpoint> {
    let leaders: std::collections::BTreeSet<i32> = reads
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter_map(|read| read.partition.as_ref().err().and_then(named_leader))
        .map(|(leader, _)| leader)
        .collect();
    if leaders.is_empty() {
        return Vec::new();
    }
    let image = broker.metadata.image();
    leaders
        .into_iter()
        .filter_map(|leader| broker_endpoint(&image, leader, listener))
        .map(|e| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(e.id))
                .with_host(e.host.into())
                .with_port(e.port)
                .with_rack(e.rack.map(Into::into))
        })
        .collect()
}

/// The response size a read may have when it runs on its worker thread (under
/// `block_in_place`), or `None` when it must run on the blocking pool: only a re-read after a
/// wake-up (`woken`) of a fetch whose `min_bytes` that size can satisfy runs inline.
fn woken_read_bytes_max(woken: bool, min_bytes: usize, response_bytes_max: usize) -> Option<usize> {
    (woken && min_bytes <= WOKEN_READ_BYTES_MAX)
        .then(|| response_bytes_max.min(WOKEN_READ_BYTES_MAX))
}

fn resolve(
    broker: &Broker,
    request: &FetchRequest,
    version: i16,
    fetcher: Fetcher,
) -> Vec<TopicRead> {
    let image = broker.metadata.image();
    request
        .topics
        .iter()
        .map(|fetch_topic| {
            let name: Result<String, BrokerError> = if version >= TOPIC_ID_VERSION {
                image
                    .topic_by_id(fetch_topic.topic_id)
                    .map(|t| t.name.clone())
                    .ok_or(BrokerError::UnknownTopicId(fetch_topic.topic_id))
            } else {
                Ok(fetch_topic.topic.to_string())
            };
            let partitions = fetch_topic
                .partitions
                .iter()
                .map(|p| PartitionRead {
                    index: p.partition,
                    fetch_offset: p.fetch_offset,
                    max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                    last_fetched_epoch: p.last_fetched_epoch,
                    current_leader_epoch: p.current_leader_epoch,
                    partition: match &name {
                        Ok(name) => broker.led_partition(&image, name, p.partition).and_then(
                            |(_, partition)| match fetcher {
                                // The replica manager checks a follower's epochs.
                                Fetcher::Replica(_) => Ok(partition),
                                Fetcher::Consumer => check_leader_epoch(
                                    p.current_leader_epoch,
                                    image
                                        .topic(name)
                                        .and_then(|t| t.partition(p.partition))
                                        .map_or(-1, |s| s.leader_epoch),
                                )
                                .map(|()| partition),
                            },
                        ),
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
    replicas: &ReplicaManager,
    fetcher: Fetcher,
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
                    let (partition, log) = match read.partition.as_ref() {
                        Ok(partition) => match partition.log_blocking() {
                            Ok(log) => (partition, log),
                            Err(error) => {
                                any_error = true;
                                return data.with_error_code(error.code());
                            }
                        },
                        Err(error) => {
                            any_error = true;
                            // Fetch v12+: the leader to go to instead.
                            let current_leader = named_leader(error).map_or_else(
                                LeaderIdAndEpoch::default,
                                |(leader, epoch)| {
                                    LeaderIdAndEpoch::default()
                                        .with_leader_id(BrokerId(leader))
                                        .with_leader_epoch(epoch)
                                },
                            );
                            return data
                                .with_error_code(error.code())
                                .with_current_leader(current_leader);
                        }
                    };
                    // A consumer reads what is committed (and durable here), a follower up to
                    // the log end once its fetch is checked and its progress recorded.
                    let (high_watermark, read_up_to) = match fetcher {
                        Fetcher::Consumer => {
                            let hw = replicas.high_watermark(partition, &log);
                            (hw, hw)
                        }
                        Fetcher::Replica(follower) => match replicas.replica_fetch(
                            partition,
                            &log,
                            follower,
                            read.current_leader_epoch,
                            read.fetch_offset,
                            read.last_fetched_epoch,
                        ) {
                            Ok(ReplicaRead::Serve { high_watermark }) => {
                                (high_watermark, log.log_end_offset())
                            }
                            Ok(ReplicaRead::Diverging {
                                epoch,
                                end_offset,
                                high_watermark,
                            }) => {
                                // KIP-320: the follower truncates, then fetches again.
                                any_error = true;
                                return data
                                    .with_high_watermark(high_watermark)
                                    .with_last_stable_offset(high_watermark)
                                    .with_log_start_offset(log.log_start_offset())
                                    .with_diverging_epoch(
                                        EpochEndOffset::default()
                                            .with_epoch(epoch)
                                            .with_end_offset(end_offset),
                                    );
                            }
                            Err(error) => {
                                any_error = true;
                                return data.with_error_code(error.code());
                            }
                        },
                    };
                    let log_start_offset = log.log_start_offset();
                    let data = data
                        .with_high_watermark(high_watermark)
                        .with_last_stable_offset(high_watermark)
                        .with_log_start_offset(log_start_offset);
                    // KIP-74: the first batch of the response is returned even above the limits,
                    // so that a consumer can always make progress; nothing after it may exceed
                    // the partition's or the response's remaining bytes.
                    let limit = read.max_bytes.min(budget);
                    let records = if total == 0 {
                        log.read(read.fetch_offset, limit.max(1), read_up_to)
                    } else if limit == 0 {
                        return data;
                    } else {
                        log.read_at_most(read.fetch_offset, limit, read_up_to)
                    };
                    match records {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use std::sync::Arc;

    use std::time::Duration;

    use bytes::Bytes;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    use runnel_protocol::batch_builder::{build_batch, NewRecord};
    use runnel_storage::CrcCheck;
    use tokio::time::Instant;

    use super::{handle, woken_read_bytes_max, WOKEN_READ_BYTES_MAX};
    use crate::broker::testing;
    use crate::broker::Broker;
    use crate::handlers::RequestContext;

    /// A request of `api_version` from a local client on the PLAINTEXT listener.
    fn plaintext_context(api_version: i16) -> RequestContext {
        RequestContext {
            api_version,
            client_id: None,
            client_host: Arc::from("/127.0.0.1"),
            listener: Arc::from("PLAINTEXT"),
        }
    }

    /// (high watermark, last stable offset, record bytes) of a fetch of `t-0` from offset 0.
    async fn fetch_from_zero(broker: &Broker) -> (i64, i64, usize) {
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName("t".to_string().into()))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let context = plaintext_context(12);
        let response = handle(broker, &context, request).await.unwrap();
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        (
            partition.high_watermark,
            partition.last_stable_offset,
            partition.records.as_ref().map_or(0, |r| r.len()),
        )
    }

    /// Visible means durable: a fetch serves nothing at or past the flushed offset, whatever
    /// has been appended, and reports the flushed offset as the high watermark.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetch_serves_only_what_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let image = testing::image(&[0], &[("t", vec![testing::partition(&[0], 0)])]);
        let (metadata, _control) = testing::fake(image, 0);
        let broker = testing::open(dir.path(), metadata).await;
        let topic = broker.topics.get("t").unwrap();
        let log = topic.partition(0).unwrap().log().await.unwrap();
        let record = NewRecord {
            key: None,
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
        };
        let batch = build_batch(&[record.clone(), record], 0).unwrap();
        log.append(&batch).unwrap();
        assert_eq!((log.log_end_offset(), log.flushed_offset()), (2, 0));
        assert_eq!(
            fetch_from_zero(&broker).await,
            (0, 0, 0),
            "before the flush"
        );

        log.flush(1).unwrap();
        assert_eq!(
            fetch_from_zero(&broker).await,
            (2, 2, batch.len()),
            "after it"
        );

        // A second batch appended but not flushed stays invisible behind the first.
        log.append(&batch).unwrap();
        assert_eq!(
            fetch_from_zero(&broker).await,
            (2, 2, batch.len()),
            "appended again"
        );
    }

    /// A follower's fetch at the log end long-polls, and the leader's append answers it at
    /// once (`notify_appended`), not its `max_wait_ms`: on a paused clock the fetch is still
    /// waiting when the append lands and returns the records with no time passed since.
    /// Under acks=all every round of replication waits on this wake-up (docs/replication.md).
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_waiting_replica_fetch_is_answered_by_the_append_not_its_max_wait() {
        let dir = tempfile::tempdir().unwrap();
        let image = testing::image(&[0, 1], &[("t", vec![testing::partition(&[0, 1], 0)])]);
        let (metadata, _control) = testing::fake(image, 0);
        let broker = testing::open(dir.path(), metadata).await;
        let topic = broker.topics.get("t").unwrap();
        let partition = topic.partition(0).unwrap();
        let log = partition.log().await.unwrap();
        let leader_epoch = broker
            .replicas
            .prepare_leader_append(partition, &log)
            .unwrap();
        let request = FetchRequest::default()
            .with_replica_state(ReplicaState::default().with_replica_id(BrokerId(1)))
            .with_max_wait_ms(30_000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(partition.topic_id())
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(leader_epoch)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let context = plaintext_context(16);
        let fetch = handle(&broker, &context, request);
        tokio::pin!(fetch);
        tokio::select! {
            answered = &mut fetch => panic!("answered with nothing to read: {answered:?}"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }

        let batch = testing::record_batch(b"v");
        log.append_as_leader(&batch, None, CrcCheck::Verify, leader_epoch)
            .unwrap();
        broker.notify_appended();
        let appended_at = Instant::now();
        let response = fetch.await.unwrap();
        assert_eq!(Instant::now(), appended_at, "answered without waiting on");
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, 0);
        assert_eq!(data.records.as_ref().map(Bytes::len), Some(batch.len()));
    }

    #[test]
    fn only_a_woken_read_that_can_meet_min_bytes_runs_inline_and_capped() {
        let cap = WOKEN_READ_BYTES_MAX;
        // The first read of a fetch may touch any part of the log.
        assert_eq!(woken_read_bytes_max(false, 1, 50 << 20), None);
        // A woken consumer at the tail reads here, at most the cap, or less if it asked less.
        assert_eq!(woken_read_bytes_max(true, 1, 50 << 20), Some(cap));
        assert_eq!(woken_read_bytes_max(true, 1, 4096), Some(4096));
        assert_eq!(woken_read_bytes_max(true, cap, 50 << 20), Some(cap));
        // A capped read could never reach a larger min_bytes: it waits on the pool's reads.
        assert_eq!(woken_read_bytes_max(true, cap + 1, 50 << 20), None);
    }
}
