//! Group writes on a replicated `__consumer_offsets` (node 0 leads its one partition at epoch
//! 3, node 1 follows and is in sync), driven through a hand-run control plane: what storage
//! refuses, and which write waits for which. Order of events only; deadlines guard hangs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use runnel_protocol::batch_builder::{build_batch, NewRecord};
use runnel_storage::{PartitionLog, StorageError};
use tokio::time::Instant;

use super::{commit_offsets, write_group_snapshot};
use crate::broker::{testing, Broker};
use crate::error::BrokerError;
use crate::group::coordinator::{CommittedOffset, DescribedGroup, GroupError, GroupState};
use crate::group::OFFSETS_TOPIC;
use crate::replication::manager::ReplicaRead;
use crate::topics::Partition;

/// Guards against a hang only; never a performance threshold.
const HANG_DEADLINE: Duration = Duration::from_secs(60);

/// A broker (node 0) leading `__consumer_offsets-0` at epoch 3, with node 1 in the ISR, and
/// that partition with its log.
async fn replicated_offsets(
    dir: &std::path::Path,
) -> (
    Arc<Broker>,
    testing::FakeControlPlane,
    Arc<Partition>,
    Arc<PartitionLog>,
) {
    let image = testing::image(
        &[0, 1],
        &[(OFFSETS_TOPIC, vec![testing::partition(&[0, 1], 0)])],
    );
    let (metadata, control) = testing::fake(image, 0);
    let broker = Arc::new(testing::open(dir, metadata).await);
    let partition = Arc::clone(
        broker
            .topics
            .get(OFFSETS_TOPIC)
            .unwrap()
            .partition(0)
            .unwrap(),
    );
    let log = partition.log().await.unwrap();
    (broker, control, partition, log)
}

/// Polls until `log` ends at `offset`; fails naming it at the hang deadline.
async fn wait_for_log_end(log: &PartitionLog, offset: i64) {
    let deadline = Instant::now() + HANG_DEADLINE;
    while log.log_end_offset() != offset {
        assert!(
            Instant::now() < deadline,
            "the log never ended at {offset} (it ends at {})",
            log.log_end_offset()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn snapshot(group_id: &str) -> DescribedGroup {
    DescribedGroup {
        group_id: group_id.into(),
        state: GroupState::Stable,
        protocol_type: "consumer".into(),
        protocol_name: "range".into(),
        generation_id: 1,
        leader: None,
        state_timestamp_ms: 0,
        members: Vec::new(),
    }
}

/// The window storage closes: the replica manager still has node 0 leading at epoch 3, but
/// the fetcher of the next leadership has already appended a batch of the new leader (which
/// clears the epoch the log stamps). An offset commit then is refused by storage — nothing
/// lands between the new leader's batches — and answered NOT_COORDINATOR, and the
/// coordinator does not record it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_a_leadership_that_just_ended_is_refused_by_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _control, partition, log) = replicated_offsets(dir.path()).await;
    let replicated_end = {
        let (broker, partition, log) = (
            Arc::clone(&broker),
            Arc::clone(&partition),
            Arc::clone(&log),
        );
        tokio::task::spawn_blocking(move || {
            assert_eq!(
                broker
                    .replicas
                    .prepare_leader_append(&partition, &log)
                    .unwrap(),
                3
            );
            let record = NewRecord {
                key: Some(b"new leader".to_vec()),
                value: Some(b"v".to_vec()),
                headers: Vec::new(),
            };
            log.append_replicated(&build_batch(&[record], 0).unwrap())
                .unwrap();
            log.log_end_offset()
        })
        .await
        .unwrap()
    };

    let committed = CommittedOffset {
        offset: 5,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    };
    let outcome = commit_offsets(&broker, "g", vec![(("t".into(), 0), committed)]).await;
    match &outcome {
        Err(error @ BrokerError::Storage(StorageError::NotLeaderAtEpoch { epoch: 3, .. })) => {
            assert_eq!(error.as_group_store_error(), GroupError::NotCoordinator);
        }
        other => panic!("expected a refusal by storage, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), replicated_end, "nothing appended");
    assert!(broker.groups.committed("g", None).is_empty());
}

/// Two group-metadata writes while the in-sync follower has not fetched: the second is
/// appended while the first still waits for its commit (it is not queued behind that wait),
/// and both are acknowledged once the follower fetches past them. (The first's wait could end
/// otherwise only by its 5 s timeout, which would fail it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_write_is_not_queued_behind_another_ones_wait_for_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _control, partition, log) = replicated_offsets(dir.path()).await;
    let write = |group_id: &'static str| {
        let broker = Arc::clone(&broker);
        tokio::spawn(
            async move { write_group_snapshot(&broker, group_id, &snapshot(group_id)).await },
        )
    };

    let first = write("a");
    wait_for_log_end(&log, 1).await;
    let second = write("b");
    wait_for_log_end(&log, 2).await;
    assert!(!first.is_finished(), "the first write waits for node 1");
    assert!(!second.is_finished(), "the second write waits for node 1");

    // Node 1 fetches from offset 2: it holds both writes; the HW passes them.
    assert_eq!(
        broker
            .replicas
            .replica_fetch(&partition, &log, 1, 3, 2, 3)
            .unwrap(),
        ReplicaRead::Serve { high_watermark: 2 }
    );
    for (name, write) in [("first", first), ("second", second)] {
        let written = tokio::time::timeout(HANG_DEADLINE, write)
            .await
            .unwrap()
            .unwrap();
        assert!(written.is_ok(), "{name}: {written:?}");
    }
}
