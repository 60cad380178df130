//! The fetcher's answer handling against real logs in temporary directories, and a whole
//! fetcher against a fake leader speaking the Kafka protocol over TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{ApiKey, FetchResponse, RequestKind, ResponseKind};
use runnel_protocol::batch_builder::{build_batch, NewRecord};
use runnel_protocol::request::{decode_request_body, decode_request_header, encode_response};
use runnel_storage::{LogConfig, PartitionLog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

use kafka_protocol::error::ResponseError;
use tokio::time::Instant;

use super::apply::*;
use super::task::*;
use super::*;
use crate::config::BrokerConfig;
use crate::metadata::{Endpoint, MetadataBatch, MetadataRecord, PartitionState};
use crate::topics::TopicRegistry;

/// Guards against a hang only; never a performance threshold.
const HANG_DEADLINE: Duration = Duration::from_secs(60);

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<NewRecord> = values
        .iter()
        .map(|value| NewRecord {
            key: None,
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
        })
        .collect();
    build_batch(&records, 1_000).unwrap()
}

fn open_log(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, LogConfig::default()).unwrap()
}

/// Appends `batches` as leader of `epoch`.
fn lead(log: &PartitionLog, epoch: i32, batches: &[&[&str]]) {
    log.set_leader_epoch(epoch).unwrap();
    for values in batches {
        log.append(&batch(values)).unwrap();
    }
}

/// Everything in `log` from `offset`, as a fetch would serve it.
fn read_from(log: &PartitionLog, offset: i64) -> Bytes {
    log.read(offset, usize::MAX, log.log_end_offset()).unwrap()
}

fn answer(records: Bytes, high_watermark: i64) -> PartitionData {
    PartitionData::default()
        .with_high_watermark(high_watermark)
        .with_log_start_offset(0)
        .with_records(Some(records))
}

#[test]
fn records_land_at_the_leaders_offsets_byte_for_byte() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (open_log(leader_dir.path()), open_log(follower_dir.path()));
    lead(&leader, 3, &[&["a", "b"], &["c"], &["d", "e", "f"]]);

    let applied = apply_partition_data(&follower, 0, &answer(read_from(&leader, 0), 2));
    assert_eq!(applied.unwrap(), Applied::Records);
    assert_eq!(follower.log_end_offset(), 6);
    assert_eq!(read_from(&follower, 0), read_from(&leader, 0));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());

    // The next fetch continues from the follower's end, in a new leader epoch.
    lead(&leader, 4, &[&["g"]]);
    let applied = apply_partition_data(&follower, 6, &answer(read_from(&leader, 6), 6));
    assert_eq!(applied.unwrap(), Applied::Records);
    assert_eq!(read_from(&follower, 0), read_from(&leader, 0));
    assert_eq!(follower.latest_epoch(), Some(4));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
}

#[test]
fn a_stale_answer_is_not_appended_twice() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (open_log(leader_dir.path()), open_log(follower_dir.path()));
    lead(&leader, 1, &[&["a"], &["b"]]);
    let data = answer(read_from(&leader, 0), 2);
    apply_partition_data(&follower, 0, &data).unwrap();
    // The same answer again (a fetch from 0 applied after the log moved on) changes nothing.
    assert_eq!(
        apply_partition_data(&follower, 0, &data).unwrap(),
        Applied::Records
    );
    assert_eq!(read_from(&follower, 0), read_from(&leader, 0));
}

#[test]
fn a_diverging_epoch_truncates_to_where_the_logs_agree() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (open_log(leader_dir.path()), open_log(follower_dir.path()));
    // Both hold epoch 1's [0, 3); the follower then led epoch 2 alone and wrote [3, 5), which
    // nobody copied; the leader of epoch 3 wrote its own records from 3.
    lead(&leader, 1, &[&["a", "b"], &["c"]]);
    apply_partition_data(&follower, 0, &answer(read_from(&leader, 0), 3)).unwrap();
    lead(&follower, 2, &[&["lost-1", "lost-2"]]);
    lead(&leader, 3, &[&["d"], &["e"]]);
    assert_eq!(follower.log_end_offset(), 5);

    // The leader's answer to last_fetched_epoch 2: its largest epoch <= 2 is 1, ending at 3.
    let diverging = PartitionData::default()
        .with_high_watermark(3)
        .with_diverging_epoch(EpochEndOffset::default().with_epoch(1).with_end_offset(3));
    assert_eq!(
        apply_partition_data(&follower, 5, &diverging).unwrap(),
        Applied::LogChanged
    );
    assert_eq!(follower.log_end_offset(), 3);
    assert_eq!(follower.latest_epoch(), Some(1));

    apply_partition_data(&follower, 3, &answer(read_from(&leader, 3), 5)).unwrap();
    assert_eq!(read_from(&follower, 0), read_from(&leader, 0));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
}

#[test]
fn truncation_never_passes_our_own_end_of_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let follower = open_log(dir.path());
    lead(&follower, 1, &[&["a"], &["b"]]);
    lead(&follower, 2, &[&["c"], &["d"]]);
    // The leader says epoch 1 ends at 3, but ours ends at 2 (epoch 2 starts there).
    assert_eq!(follower_truncation_offset(1, 3, &follower), 2);
    // An epoch we never had: as far as the leader's end, never past ours.
    assert_eq!(follower_truncation_offset(0, 1, &follower), 0);
    assert_eq!(follower_truncation_offset(2, 10, &follower), 4);
}

#[test]
fn a_leader_log_start_past_our_end_starts_the_log_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let follower = open_log(dir.path());
    lead(&follower, 1, &[&["a"]]);
    let behind = PartitionData::default()
        .with_high_watermark(60)
        .with_log_start_offset(50);
    assert_eq!(
        apply_partition_data(&follower, 1, &behind).unwrap(),
        Applied::LogChanged
    );
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (50, 50)
    );

    // The same when the leader says so with OFFSET_OUT_OF_RANGE.
    let out_of_range = PartitionData::default()
        .with_error_code(ResponseError::OffsetOutOfRange.code())
        .with_log_start_offset(70);
    assert_eq!(
        apply_partition_data(&follower, 50, &out_of_range).unwrap(),
        Applied::LogChanged
    );
    assert_eq!(follower.log_start_offset(), 70);
}

#[test]
fn leader_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let follower = open_log(dir.path());
    lead(&follower, 1, &[&["a"]]);
    let refused = |error: ResponseError| {
        let data = PartitionData::default()
            .with_error_code(error.code())
            .with_records(Some(batch(&["x"])));
        apply_partition_data(&follower, 1, &data)
    };
    assert!(matches!(
        refused(ResponseError::FencedLeaderEpoch),
        Err(ApplyError::Fenced)
    ));
    for error in [
        ResponseError::NotLeaderOrFollower,
        ResponseError::UnknownLeaderEpoch,
        ResponseError::UnknownTopicId,
    ] {
        assert!(
            matches!(refused(error), Err(ApplyError::Refused(e)) if e == error),
            "{error:?}"
        );
    }
    assert_eq!(follower.log_end_offset(), 1);
}

#[test]
fn leader_endpoints_prefer_the_inter_broker_listener() {
    let mut image = MetadataImage::default();
    register(
        &mut image,
        1,
        &[("CONTROLLER", 9093), ("EXTERNAL", 9094), ("INTERNAL", 9095)],
    );
    let mut config = fetcher_config("INTERNAL");
    assert_eq!(leader_addr(&image, 1, &config).unwrap(), "127.0.0.1:9095");
    config.listener_name = "MISSING".into();
    assert_eq!(leader_addr(&image, 1, &config).unwrap(), "127.0.0.1:9094");
    assert!(leader_addr(&image, 2, &config).is_err());
}

fn fetcher_config(listener: &str) -> FetcherConfig {
    FetcherConfig {
        listener_name: listener.into(),
        controller_listener_names: vec!["CONTROLLER".into()],
        max_wait_ms: 200,
        max_bytes: 1 << 20,
        fsync_before_fetch: true,
        frame_bytes_max: 4 << 20,
    }
}

fn apply_metadata(image: &mut MetadataImage, records: Vec<MetadataRecord>) {
    let index = image.applied_index + 1;
    image.apply(
        index,
        &MetadataBatch {
            request_id: None,
            reply: None,
            records,
        },
    );
}

fn register(image: &mut MetadataImage, broker_id: BrokerId, listeners: &[(&str, u16)]) {
    let endpoints = listeners
        .iter()
        .map(|(name, port)| Endpoint {
            listener: (*name).into(),
            host: "127.0.0.1".into(),
            port: *port,
        })
        .collect();
    apply_metadata(
        image,
        vec![MetadataRecord::RegisterBroker {
            broker_id,
            incarnation: Uuid::new_v4(),
            endpoints,
            rack: None,
        }],
    );
}

/// Creates topic "t" with one partition led by broker 1 at epoch 2 and followed by broker 0.
fn create_followed_topic(image: &mut MetadataImage) -> Uuid {
    let topic_id = Uuid::new_v4();
    apply_metadata(
        image,
        vec![MetadataRecord::CreateTopic {
            name: "t".into(),
            topic_id,
            configs: BTreeMap::new(),
            partitions: vec![PartitionState {
                replicas: vec![1, 0],
                isr: vec![1, 0],
                leader: 1,
                leader_epoch: 2,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            }],
        }],
    );
    topic_id
}

/// Node 0's topic registry in `data_dir`, synced with `image`.
fn registry(data_dir: &Path, image: &MetadataImage) -> TopicRegistry {
    let overrides = [("data.dir".to_string(), data_dir.display().to_string())];
    let topics = TopicRegistry::new(Arc::new(BrokerConfig::load(None, &overrides).unwrap()), 0);
    topics.sync(image);
    topics
}

fn follow_state(topics: &TopicRegistry, active: bool) -> Arc<FollowState> {
    let topic = topics.get("t").unwrap();
    Arc::new(FollowState {
        followed: FollowedPartition {
            topic: "t".into(),
            topic_id: topic.id,
            partition: Arc::clone(&topic.partitions[&0]),
            leader: 1,
            leader_epoch: 2,
        },
        active: Mutex::new(active),
        reported_high_watermark: AtomicI64::new(-1),
    })
}

/// A partition dropped from the followed set is neither changed nor reported, even by an answer
/// already in flight; a followed one is, once per new high watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_followed_partitions_are_changed_and_reported() {
    let (data, leader_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open_log(leader_dir.path());
    lead(&leader, 2, &[&["a"], &["b"]]);
    let mut image = MetadataImage::default();
    create_followed_topic(&mut image);
    let topics = registry(data.path(), &image);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&reports);
    let (_image_tx, image_rx) = watch::channel(Arc::new(image));
    let shared = Shared {
        node_id: 0,
        config: fetcher_config("PLAINTEXT"),
        image: image_rx,
        on_high_watermark: Arc::new(move |topic, index, hw| {
            sink.lock().unwrap().push((topic, index, hw));
        }),
    };
    for active in [false, true, true] {
        let state = follow_state(&topics, active);
        let log = state.followed.partition.log().await.unwrap();
        let fetched = FetchedPartition {
            state: Arc::clone(&state),
            log: Arc::clone(&log),
            fetch_offset: log.log_end_offset(),
        };
        let data = answer(read_from(&leader, log.log_end_offset()), 1);
        let outcome = apply_partition(&shared, &fetched, &data);
        if active {
            assert_eq!(outcome, PartitionOutcome::Applied);
            assert_eq!(log.log_end_offset(), 2);
        } else {
            assert_eq!(outcome, PartitionOutcome::Skipped);
            assert_eq!(
                log.log_end_offset(),
                0,
                "a dropped partition was appended to"
            );
        }
        // Reported again with the same value: not reported twice.
        apply_partition(&shared, &fetched, &data);
    }
    let topic_id = topics.get("t").unwrap().id;
    // One report per followed state (each new epoch starts afresh), none for the dropped one.
    assert_eq!(
        *reports.lock().unwrap(),
        vec![(topic_id, 0, 1), (topic_id, 0, 1)]
    );
}

#[test]
fn a_fenced_partition_waits_for_a_new_epoch_and_a_refused_one_retries() {
    let data = tempfile::tempdir().unwrap();
    let mut image = MetadataImage::default();
    create_followed_topic(&mut image);
    let topics = registry(data.path(), &image);
    let (fenced, refused) = (follow_state(&topics, true), follow_state(&topics, true));
    let mut partitions = vec![
        PartitionFetch::new(Arc::clone(&fenced)),
        PartitionFetch::new(Arc::clone(&refused)),
    ];
    record_outcomes(
        &mut partitions,
        vec![
            (fenced, PartitionOutcome::Fenced),
            (refused, PartitionOutcome::Retry("not leader yet".into())),
        ],
    );
    let later = Instant::now() + BACKOFF_MAX;
    assert!(partitions[0].paused && !partitions[0].fetchable(later));
    assert!(!partitions[1].paused && partitions[1].fetchable(later));
    assert!(
        !partitions[1].fetchable(Instant::now()),
        "retried only after a pause"
    );

    // The same set keeps what was learnt; a new epoch (a new state) starts afresh.
    partitions.truncate(1);
    let set = vec![Arc::clone(&partitions[0].state)];
    refresh_partitions(&mut partitions, &set);
    assert!(partitions[0].paused);
    refresh_partitions(&mut partitions, &[follow_state(&topics, true)]);
    assert_eq!(partitions.len(), 1);
    assert!(!partitions[0].paused);
}

/// A leader that serves its log to replica 0 at `epoch`, one request per connection (so the
/// fetcher has to reconnect every time), waiting up to the request's long poll for records.
async fn serve_fake_leader(
    listener: TcpListener,
    log: Arc<PartitionLog>,
    topic_id: Uuid,
    epoch: i32,
    appended: watch::Receiver<i64>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let size = stream.read_i32().await.unwrap();
        let mut frame = vec![0u8; usize::try_from(size).unwrap()];
        stream.read_exact(&mut frame).await.unwrap();
        let request = decode_request_header(Bytes::from(frame)).unwrap();
        let version = request.header.request_api_version;
        let mut body = request.body;
        let RequestKind::Fetch(fetch) =
            decode_request_body(ApiKey::Fetch, version, &mut body).unwrap()
        else {
            unreachable!("the fetcher sends only Fetch");
        };
        assert_eq!(version, super::super::client::FETCH_VERSION);
        assert_eq!(fetch.replica_state.replica_id.0, 0);
        let asked = &fetch.topics[0].partitions[0];
        assert_eq!(fetch.topics[0].topic_id, topic_id);
        assert_eq!(asked.current_leader_epoch, epoch);
        let offset = asked.fetch_offset;
        let mut appended = appended.clone();
        let wait = Duration::from_millis(u64::try_from(fetch.max_wait_ms).unwrap());
        let _ = tokio::time::timeout(wait, appended.wait_for(|&end| end > offset)).await;
        let records = log.read(offset, usize::MAX, log.log_end_offset()).unwrap();
        let response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![PartitionData::default()
                    .with_partition_index(asked.partition)
                    .with_high_watermark(log.log_end_offset())
                    .with_log_start_offset(0)
                    .with_records(Some(records))])]);
        let frame = encode_response(
            ApiKey::Fetch,
            request.header.correlation_id,
            version,
            &ResponseKind::Fetch(response),
        )
        .unwrap()
        .to_bytes();
        stream.write_all(&frame).await.unwrap();
        // Closed after one answer: the fetcher's next fetch finds it closed and reconnects.
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetcher_copies_its_leaders_log_and_reports_the_high_watermark() {
    let data = tempfile::tempdir().unwrap();
    let leader_dir = tempfile::tempdir().unwrap();
    let leader_log = Arc::new(open_log(leader_dir.path()));
    lead(&leader_log, 2, &[&["a", "b"], &["c"]]);
    let (appended_tx, appended_rx) = watch::channel(leader_log.log_end_offset());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut image = MetadataImage::default();
    register(&mut image, 1, &[("PLAINTEXT", port)]);
    register(&mut image, 0, &[("PLAINTEXT", 1)]);
    let topic_id = create_followed_topic(&mut image);
    let topics = registry(data.path(), &image);
    let partition = Arc::clone(&topics.get("t").unwrap().partitions[&0]);
    tokio::spawn(serve_fake_leader(
        listener,
        Arc::clone(&leader_log),
        topic_id,
        2,
        appended_rx,
    ));

    let (high_watermark_tx, mut high_watermark) = watch::channel((Uuid::nil(), -1, -1i64));
    let on_high_watermark: OnHighWatermark = Arc::new(move |topic, index, hw| {
        high_watermark_tx.send_replace((topic, index, hw));
    });
    let (_image_tx, image_rx) = watch::channel(Arc::new(image));
    let fetchers = Fetchers::start(0, fetcher_config("PLAINTEXT"), image_rx, on_high_watermark);
    fetchers.set_followed(vec![FollowedPartition {
        topic: "t".into(),
        topic_id,
        partition: Arc::clone(&partition),
        leader: 1,
        leader_epoch: 2,
    }]);
    assert_eq!(fetchers.leaders(), vec![1]);

    let reached = |end: i64| {
        move |&(topic, index, hw): &(Uuid, i32, i64)| topic == topic_id && index == 0 && hw == end
    };
    tokio::time::timeout(HANG_DEADLINE, high_watermark.wait_for(reached(3)))
        .await
        .expect("the follower high watermark never reached 3")
        .unwrap();
    let follower_log = partition.log().await.unwrap();
    assert_eq!(read_from(&follower_log, 0), read_from(&leader_log, 0));
    assert!(
        follower_log.flushed_offset() >= 3,
        "fsynced before fetching on"
    );

    // Records the leader appends later arrive through the long poll.
    lead(&leader_log, 2, &[&["d"]]);
    appended_tx.send_replace(leader_log.log_end_offset());
    tokio::time::timeout(HANG_DEADLINE, high_watermark.wait_for(reached(4)))
        .await
        .expect("the follower high watermark never reached 4")
        .unwrap();
    assert_eq!(read_from(&follower_log, 0), read_from(&leader_log, 0));

    fetchers.set_followed(Vec::new());
    assert!(fetchers.leaders().is_empty());
    fetchers.shutdown();
}
