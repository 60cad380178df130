//! Handlers over an image in which other brokers lead: NOT_LEADER_OR_FOLLOWER with the
//! leader to go to, brokers and coordinators on other nodes, fenced replicas offline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_request;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeQuorumRequest, FetchRequest, FindCoordinatorRequest,
    ListOffsetsRequest, MetadataRequest, ProduceRequest, TopicName,
};
use runnel_protocol::batch_builder::{build_batch, NewRecord};

use super::RequestContext;
use crate::broker::testing::{self, FakeControlPlane};
use crate::broker::Broker;
use crate::metadata::handle::QuorumReplica;
use crate::metadata::{MetadataBatch, MetadataImage, MetadataRecord, PartitionState, QuorumState};

fn context(api_version: i16) -> RequestContext {
    RequestContext {
        api_version,
        client_id: None,
        client_host: Arc::from("/127.0.0.1"),
        listener: Arc::from("PLAINTEXT"),
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(name.to_string().into())
}

/// Node 0 (this one) and node 1; `t` has partition 0 led here and partition 1 led by node 1.
async fn two_brokers(dir: &std::path::Path) -> (Broker, FakeControlPlane) {
    let image = testing::image(
        &[0, 1],
        &[(
            "t",
            vec![testing::partition(&[0], 0), testing::partition(&[1], 1)],
        )],
    );
    let (metadata, control) = testing::fake(image, 1);
    (testing::open(dir, metadata).await, control)
}

fn records() -> bytes::Bytes {
    let record = NewRecord {
        key: None,
        value: Some(b"v".to_vec()),
        headers: Vec::new(),
    };
    build_batch(&[record], 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_a_partition_led_elsewhere_names_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _control) = two_brokers(dir.path()).await;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name("t"))
            .with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records())),
                PartitionProduceData::default()
                    .with_index(1)
                    .with_records(Some(records())),
            ])]);
    let response = super::produce::handle(&broker, &context(11), request)
        .await
        .unwrap()
        .await
        .unwrap();
    let partitions = &response.responses[0].partition_responses;
    assert_eq!(partitions[0].error_code, 0, "led here: appended");
    assert_eq!(
        partitions[1].error_code,
        ResponseError::NotLeaderOrFollower.code()
    );
    assert_eq!(partitions[1].current_leader.leader_id, BrokerId(1));
    assert_eq!(partitions[1].current_leader.leader_epoch, 3);
    assert_eq!(response.node_endpoints.len(), 1);
    assert_eq!(response.node_endpoints[0].node_id, BrokerId(1));
    assert_eq!(response.node_endpoints[0].host.as_str(), "host-1");
    assert_eq!(response.node_endpoints[0].port, 9001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_and_list_offsets_of_a_partition_led_elsewhere_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _control) = two_brokers(dir.path()).await;
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name("t"))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(1)
                .with_partition_max_bytes(1 << 20)])]);
    let response = super::fetch::handle(&broker, &context(12), request)
        .await
        .unwrap();
    let partition = &response.responses[0].partitions[0];
    assert_eq!(
        partition.error_code,
        ResponseError::NotLeaderOrFollower.code()
    );
    assert_eq!(partition.current_leader.leader_id, BrokerId(1));
    assert_eq!(partition.current_leader.leader_epoch, 3);
    assert_eq!(
        response
            .node_endpoints
            .iter()
            .map(|e| (e.node_id.0, e.host.to_string(), e.port))
            .collect::<Vec<_>>(),
        [(1, "host-1".to_string(), 9001)]
    );

    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic_name("t"))
        .with_partitions(vec![
            ListOffsetsPartition::default()
                .with_partition_index(1)
                .with_timestamp(-1),
            ListOffsetsPartition::default()
                .with_partition_index(7)
                .with_timestamp(-1),
        ])]);
    let response = super::list_offsets::handle(&broker, &context(7), request)
        .await
        .unwrap();
    let partitions = &response.topics[0].partitions;
    assert_eq!(
        partitions[0].error_code,
        ResponseError::NotLeaderOrFollower.code()
    );
    assert_eq!(
        partitions[1].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lists_leaders_brokers_and_fenced_replicas_from_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, control) = two_brokers(dir.path()).await;
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name("t"))),
    ]));
    let response = super::metadata::handle(&broker, &context(12), request.clone())
        .await
        .unwrap();
    assert_eq!(response.controller_id, BrokerId(1));
    let brokers: Vec<(i32, String, i32)> = response
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect();
    assert_eq!(
        brokers,
        [(0, "host-0".into(), 9000), (1, "host-1".into(), 9001)]
    );
    let partitions = &response.topics[0].partitions;
    assert_eq!(
        (partitions[0].leader_id, partitions[1].leader_id),
        (BrokerId(0), BrokerId(1))
    );
    assert_eq!(partitions[1].leader_epoch, 3);
    assert_eq!(partitions[1].replica_nodes, [BrokerId(1)]);

    // Node 1 fenced, its partition offline: it is no longer listed, its replica is offline.
    let mut image = MetadataImage::clone(&broker.metadata.image());
    let topic_id = image.topic("t").unwrap().id;
    let mut offline = testing::partition(&[1], -1);
    offline.leader_epoch = 4;
    image.apply(
        2,
        &MetadataBatch {
            request_id: None,
            reply: None,
            records: vec![
                MetadataRecord::FenceBroker { broker_id: 1 },
                MetadataRecord::ChangePartition {
                    topic_id,
                    partition: 1,
                    state: offline,
                },
            ],
        },
    );
    control.image.send_replace(Arc::new(image));
    let response = super::metadata::handle(&broker, &context(12), request)
        .await
        .unwrap();
    assert_eq!(
        response
            .brokers
            .iter()
            .map(|b| b.node_id.0)
            .collect::<Vec<_>>(),
        [0]
    );
    let partition = &response.topics[0].partitions[1];
    assert_eq!(
        partition.error_code,
        ResponseError::LeaderNotAvailable.code()
    );
    assert_eq!(partition.leader_id, BrokerId(-1));
    assert_eq!(partition.offline_replicas, [BrokerId(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_coordinator_answers_the_leader_of_the_groups_offsets_partition() {
    let dir = tempfile::tempdir().unwrap();
    // "group" hashes to partition 47 of 50 (group/mod.rs): led by node 1; the rest by node 0.
    let mut partitions: Vec<_> = (0..50).map(|_| testing::partition(&[0], 0)).collect();
    partitions[47] = testing::partition(&[1], 1);
    partitions[9] = testing::partition(&[1], -1);
    let image = testing::image(&[0, 1], &[("__consumer_offsets", partitions)]);
    let (metadata, _control) = testing::fake(image, 0);
    let broker = testing::open(dir.path(), metadata).await;
    let request = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec!["group".into(), "billing".into()]);
    let response = super::find_coordinator::handle(&broker, &context(4), request)
        .await
        .unwrap();
    let group = &response.coordinators[0];
    assert_eq!(
        (
            group.error_code,
            group.node_id,
            group.host.as_str(),
            group.port
        ),
        (0, BrokerId(1), "host-1", 9001)
    );
    // "billing" hashes to partition 9, which has no leader.
    assert_eq!(
        response.coordinators[1].error_code,
        ResponseError::CoordinatorNotAvailable.code()
    );

    let request = FindCoordinatorRequest::default().with_key("group".into());
    let response = super::find_coordinator::handle(&broker, &context(3), request)
        .await
        .unwrap();
    assert_eq!((response.node_id, response.port), (BrokerId(1), 9001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_cluster_and_quorum_report_the_image_and_the_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, control) = two_brokers(dir.path()).await;
    let response = super::describe_cluster::handle(
        &broker,
        &context(1),
        DescribeClusterRequest::default().with_endpoint_type(1),
    )
    .await
    .unwrap();
    assert_eq!(response.error_code, 0);
    assert_eq!(response.cluster_id.as_str(), "cluster");
    assert_eq!(response.controller_id, BrokerId(1));
    assert_eq!(response.endpoint_type, 1);
    assert_eq!(
        response
            .brokers
            .iter()
            .map(|b| (b.broker_id.0, b.host.to_string(), b.port))
            .collect::<Vec<_>>(),
        [
            (0, "host-0".to_string(), 9000),
            (1, "host-1".to_string(), 9001)
        ]
    );

    control.quorum.send_replace(QuorumState {
        leader_id: Some(1),
        leader_epoch: 7,
        high_watermark: 42,
        voters: vec![
            QuorumReplica {
                id: 0,
                log_end_offset: 40,
                last_fetch_timestamp: 5,
                last_caught_up_timestamp: 4,
            },
            QuorumReplica {
                id: 1,
                log_end_offset: 42,
                last_fetch_timestamp: -1,
                last_caught_up_timestamp: -1,
            },
        ],
        observers: Vec::new(),
    });
    let request = DescribeQuorumRequest::default().with_topics(vec![
        describe_quorum_request::TopicData::default()
            .with_topic_name(topic_name("__cluster_metadata"))
            .with_partitions(vec![describe_quorum_request::PartitionData::default()]),
    ]);
    let response = super::describe_quorum::handle(&broker, &context(1), request)
        .await
        .unwrap();
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(
        (
            partition.leader_id,
            partition.leader_epoch,
            partition.high_watermark
        ),
        (BrokerId(1), 7, 42)
    );
    assert_eq!(
        partition
            .current_voters
            .iter()
            .map(|v| (v.replica_id.0, v.log_end_offset))
            .collect::<Vec<_>>(),
        [(0, 40), (1, 42)]
    );
}

/// A `__consumer_offsets` partition whose leadership moves away takes its groups with it
/// (NOT_COORDINATOR, offsets unloaded); when it comes back they are loaded from its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_follow_the_leadership_of_their_offsets_partition() {
    use crate::group::{partition_for, store, CommittedOffset, GroupError};
    let dir = tempfile::tempdir().unwrap();
    // Two replicas, the leader alone in sync: a commit is committed once the leader has it.
    let led_alone = |leader: i32| PartitionState {
        isr: vec![leader],
        ..testing::partition(&[0, 1], leader)
    };
    let partitions: Vec<_> = (0..50).map(|_| led_alone(0)).collect();
    let image = testing::image(
        &[0, 1],
        &[
            ("t", vec![testing::partition(&[0], 0)]),
            ("__consumer_offsets", partitions),
        ],
    );
    let (metadata, control) = testing::fake(image, 0);
    let broker = testing::open(dir.path(), metadata).await;
    assert_eq!(partition_for("g", 50), 3);
    let offset = CommittedOffset {
        offset: 5,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    };
    store::commit_offsets(&broker, "g", vec![(("t".into(), 0), offset)])
        .await
        .unwrap();
    assert_eq!(broker.groups.committed("g", None).len(), 1);

    // Partition 3 is now led by node 1.
    let move_leader = |leader: i32, index: u64| {
        let mut image = MetadataImage::clone(&broker.metadata.image());
        let topic_id = image.topic("__consumer_offsets").unwrap().id;
        let mut state = led_alone(leader);
        state.leader_epoch = i32::try_from(index).unwrap() + 3;
        image.apply(
            index,
            &MetadataBatch {
                request_id: None,
                reply: None,
                records: vec![MetadataRecord::ChangePartition {
                    topic_id,
                    partition: 3,
                    state,
                }],
            },
        );
        control.image.send_replace(Arc::new(image));
    };
    move_leader(1, 2);
    broker.topics.wait_synced(2).await.unwrap();
    assert_eq!(broker.groups.owns("g"), Err(GroupError::NotCoordinator));
    assert!(broker.groups.committed("g", None).is_empty());
    let elsewhere = CommittedOffset {
        offset: 9,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    };
    // Its log here is no longer the group's to write.
    assert!(matches!(
        store::commit_offsets(&broker, "g", vec![(("t".into(), 0), elsewhere)]).await,
        Err(crate::error::BrokerError::NotLeaderOrFollower { leader: 1, .. })
    ));

    // And back: the group's offsets are loaded from the partition's log.
    move_leader(0, 3);
    broker.topics.wait_synced(3).await.unwrap();
    assert_eq!(broker.groups.owns("g"), Ok(()));
    let committed = broker.groups.committed("g", None);
    assert_eq!(
        committed.values().map(|o| o.offset).collect::<Vec<_>>(),
        [5]
    );
}
