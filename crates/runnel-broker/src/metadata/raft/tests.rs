//! The quorum in-process: one voter, three voters on 127.0.0.1 with free ports, restarts,
//! snapshots, forwarding, and peers that misbehave. Waits are bounded by deadlines only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::log_store::LOG_FILE;
use super::*;
use crate::metadata::records::MetadataRecord;
use crate::metadata::requests::ControllerReply;
use crate::metadata::rpc::client::{CallError, PeerClient};
use crate::metadata::rpc::KIND_VOTE;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Bounds every wait: long enough for elections on a loaded machine, short enough that a hang
/// fails the test.
const DEADLINE: Duration = Duration::from_secs(60);
const CLUSTER: &str = "test-cluster";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A batch that moves the image's next producer id to `(n + 1) * 1000`.
fn batch(n: i64) -> MetadataBatch {
    MetadataBatch {
        request_id: None,
        reply: None,
        records: vec![MetadataRecord::ProducerIdsBlock {
            broker_id: 0,
            first: n * 1000,
            count: 1000,
        }],
    }
}

async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lone(dir: &Path) -> QuorumConfig {
    QuorumConfig::new(0, dir.to_path_buf(), CLUSTER.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_voter_proposes_restarts_and_cuts_a_torn_tail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let quorum = RaftQuorum::start(lone(dir.path())).await?;
    println!("fresh single-node start: {:?}", started.elapsed());
    assert_eq!(quorum.leadership().await, Leadership::Leader);
    assert_eq!(quorum.leader(), Some(0));
    let mut last = 0;
    for n in 0..5 {
        last = quorum.propose(batch(n)).await?;
        // Answered once applied: the image already has it.
        assert!(quorum.image().applied_index >= last);
    }
    assert_eq!(quorum.image().next_producer_id, 5000);
    quorum.shutdown().await;
    drop(quorum);

    // A crash mid-append: half a record at the end of the log.
    let log = dir.path().join(METADATA_DIR_NAME).join(LOG_FILE);
    let mut file = std::fs::OpenOptions::new().append(true).open(&log)?;
    file.write_all(&[0, 0, 0, 200, 1, 2, 3, 4, b'{'])?;
    drop(file);

    let started = Instant::now();
    let quorum = RaftQuorum::start(lone(dir.path())).await?;
    println!("single-node restart: {:?}", started.elapsed());
    // Rebuilt from the log before start returned.
    let image = quorum.image();
    assert_eq!(image.next_producer_id, 5000);
    assert!(image.applied_index >= last);
    let next = quorum.propose(batch(5)).await?;
    assert!(next > last);
    assert_eq!(quorum.image().next_producer_id, 6000);
    quorum.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_other_voters_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let quorum = RaftQuorum::start(lone(dir.path())).await?;
    quorum.shutdown().await;
    drop(quorum);
    // The same directory, now configured as node 3 of three voters.
    let config = QuorumConfig {
        voters: vec![
            (1, format!("127.0.0.1:{}", free_port())),
            (2, format!("127.0.0.1:{}", free_port())),
            (3, format!("127.0.0.1:{}", free_port())),
        ],
        ..QuorumConfig::new(3, dir.path().to_path_buf(), CLUSTER.into())
    };
    let refused = RaftQuorum::start(config).await;
    assert!(
        matches!(&refused, Err(QuorumError::Config(m)) if m.contains("voters")),
        "{refused:?}"
    );
    // A node id outside the voters, and a voter named twice, are refused too.
    let config = QuorumConfig {
        voters: vec![(1, "127.0.0.1:1".into()), (1, "127.0.0.1:2".into())],
        ..QuorumConfig::new(1, dir.path().to_path_buf(), CLUSTER.into())
    };
    assert!(matches!(
        RaftQuorum::start(config).await,
        Err(QuorumError::Config(_))
    ));
    let config = QuorumConfig {
        voters: vec![(1, "127.0.0.1:1".into())],
        ..QuorumConfig::new(2, dir.path().to_path_buf(), CLUSTER.into())
    };
    assert!(matches!(
        RaftQuorum::start(config).await,
        Err(QuorumError::Config(_))
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_voter_restarts_from_snapshot_and_tail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = QuorumConfig {
        snapshot_logs_since_last: 20,
        ..lone(dir.path())
    };
    let quorum = RaftQuorum::start(config.clone()).await?;
    for n in 0..50 {
        quorum.propose(batch(n)).await?;
    }
    let mut metrics = quorum.raft().metrics();
    tokio::time::timeout(
        DEADLINE,
        metrics.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= 20) && m.purged.is_some()),
    )
    .await??;
    let snapshot_index = metrics.borrow().snapshot.map(|s| s.index).unwrap_or(0);
    quorum.shutdown().await;
    drop(quorum);

    let dir_path = dir.path().join(METADATA_DIR_NAME);
    assert!(dir_path.join(state_machine::SNAPSHOT_FILE).exists());
    let quorum = RaftQuorum::start(config).await?;
    assert_eq!(quorum.image().next_producer_id, 50_000);
    let metrics = quorum.raft().metrics().borrow().clone();
    assert!(metrics
        .purged
        .is_some_and(|p| p.index >= snapshot_index.min(20)));
    quorum.propose(batch(50)).await?;
    assert_eq!(quorum.image().next_producer_id, 51_000);
    quorum.shutdown().await;
    Ok(())
}

struct Node {
    /// Kept for the node's lifetime (deleted on drop).
    _dir: tempfile::TempDir,
    config: QuorumConfig,
    quorum: Option<RaftQuorum>,
}

async fn cluster(size: i32) -> Result<Vec<Node>, Box<dyn std::error::Error>> {
    let voters: Vec<(BrokerId, String)> = (0..size)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let mut nodes = Vec::new();
    for (id, _) in &voters {
        let dir = tempfile::tempdir()?;
        let config = QuorumConfig {
            voters: voters.clone(),
            snapshot_logs_since_last: 20,
            ..QuorumConfig::new(*id, dir.path().to_path_buf(), CLUSTER.into())
        };
        nodes.push(Node {
            _dir: dir,
            config,
            quorum: None,
        });
    }
    // Started together: each initialises the same voter set.
    let started = futures_join_all(nodes.iter().map(|n| RaftQuorum::start(n.config.clone()))).await;
    for (node, quorum) in nodes.iter_mut().zip(started) {
        node.quorum = Some(quorum?);
    }
    Ok(nodes)
}

/// Awaits every future (no `futures` crate here): spawned, then joined in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

fn running(nodes: &[Node]) -> impl Iterator<Item = &RaftQuorum> {
    nodes.iter().filter_map(|n| n.quorum.as_ref())
}

/// The leader all running nodes agree on, once they do.
async fn agreed_leader(nodes: &[Node]) -> BrokerId {
    let mut leader = None;
    eventually("the running nodes agree on a leader", || {
        let seen: Vec<_> = running(nodes).map(|q| q.leader()).collect();
        leader = seen.first().copied().flatten();
        leader.is_some()
            && seen.iter().all(|l| *l == leader)
            && leader.is_some_and(|l| nodes[l as usize].quorum.is_some())
    })
    .await;
    leader.unwrap()
}

async fn all_reach(nodes: &[Node], next_producer_id: i64) {
    eventually("every running image reaches the last proposal", || {
        running(nodes).all(|q| q.image().next_producer_id == next_producer_id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_replicate_fail_over_and_catch_up() -> TestResult {
    let mut nodes = cluster(3).await?;
    let leader = agreed_leader(&nodes).await;
    let quorum = nodes[leader as usize].quorum.clone().unwrap();
    assert_eq!(quorum.leadership().await, Leadership::Leader);
    for n in 0..5 {
        quorum.propose(batch(n)).await?;
    }
    all_reach(&nodes, 5000).await;
    // A follower refuses to propose and names the leader.
    let follower = (leader + 1) % 3;
    let follower_quorum = nodes[follower as usize].quorum.clone().unwrap();
    assert_eq!(
        follower_quorum.propose(batch(99)).await,
        Err(SubmitError::NotController {
            leader: Some(leader)
        })
    );
    assert_eq!(
        follower_quorum.leadership().await,
        Leadership::Follower {
            leader: Some(leader)
        }
    );
    let described = follower_quorum.quorum_receiver().borrow().clone();
    assert_eq!(described.leader_id, Some(leader));
    assert_eq!(described.voters.len(), 3);

    // The leader goes away: another is elected and proposals continue.
    quorum.shutdown().await;
    drop(quorum);
    nodes[leader as usize].quorum = None;
    let new_leader = agreed_leader(&nodes).await;
    assert_ne!(new_leader, leader);
    let new_quorum = nodes[new_leader as usize].quorum.clone().unwrap();
    for n in 5..30 {
        new_quorum.propose(batch(n)).await?;
    }
    all_reach(&nodes, 30_000).await;

    // The old leader comes back (same directory, same port) and catches up — past a snapshot
    // (threshold 20), so from the snapshot plus the tail.
    let old = &mut nodes[leader as usize];
    old.quorum = Some(RaftQuorum::start(old.config.clone()).await?);
    all_reach(&nodes, 30_000).await;
    let caught_up = nodes[leader as usize]
        .quorum
        .as_ref()
        .unwrap()
        .raft()
        .metrics();
    assert!(
        caught_up.borrow().snapshot.is_some(),
        "caught up without a snapshot"
    );
    new_quorum.propose(batch(30)).await?;
    all_reach(&nodes, 31_000).await;
    let state = new_quorum.quorum_receiver().borrow().clone();
    assert_eq!(state.leader_id, Some(new_leader));
    assert_eq!(state.voters.len(), 3);
    // The leader sees every voter's progress.
    eventually("the leader sees every voter caught up", || {
        let state = new_quorum.quorum_receiver().borrow().clone();
        state
            .voters
            .iter()
            .all(|v| v.log_end_offset >= state.high_watermark)
    })
    .await;
    drop(new_quorum);

    // All three stop and start again: the log is intact, a leader is elected, it goes on.
    for node in &mut nodes {
        if let Some(q) = node.quorum.take() {
            q.shutdown().await;
        }
    }
    let restarted =
        futures_join_all(nodes.iter().map(|n| RaftQuorum::start(n.config.clone()))).await;
    for (node, quorum) in nodes.iter_mut().zip(restarted) {
        node.quorum = Some(quorum?);
    }
    all_reach(&nodes, 31_000).await;
    let leader = agreed_leader(&nodes).await;
    let quorum = nodes[leader as usize].quorum.clone().unwrap();
    quorum.propose(batch(31)).await?;
    all_reach(&nodes, 32_000).await;
    for q in running(&nodes) {
        q.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_to_the_leaders_controller() -> TestResult {
    let nodes = cluster(3).await?;
    let leader = agreed_leader(&nodes).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for q in running(&nodes) {
        let me = q.node_id();
        let release = Arc::clone(&release);
        let entered = Arc::clone(&entered);
        let handler: ControllerHandler = Arc::new(move |_id, request| {
            let release = Arc::clone(&release);
            let entered = Arc::clone(&entered);
            Box::pin(async move {
                match request {
                    // Held until the test releases it: a slow decision.
                    ControllerRequest::BrokerShutdown { .. } => {
                        entered.store(true, std::sync::atomic::Ordering::SeqCst);
                        release.notified().await;
                        Ok(Committed {
                            reply: ControllerReply::Done,
                            index: 0,
                        })
                    }
                    ControllerRequest::AllocateProducerIds { broker_id } => Ok(Committed {
                        reply: ControllerReply::ProducerIds {
                            first: i64::from(broker_id),
                            count: i64::from(me),
                        },
                        index: 7,
                    }),
                    _ => Err(SubmitError::Unavailable("unexpected".into())),
                }
            })
        });
        q.set_controller_handler(handler);
    }
    let follower = nodes[((leader + 1) % 3) as usize].quorum.clone().unwrap();
    let committed = follower
        .forward(
            leader,
            Uuid::new_v4(),
            ControllerRequest::AllocateProducerIds { broker_id: 42 },
        )
        .await?;
    // Answered by the leader's handler (it names itself in `count`).
    assert_eq!(
        committed,
        Committed {
            reply: ControllerReply::ProducerIds {
                first: 42,
                count: i64::from(leader)
            },
            index: 7
        }
    );
    // A slow forwarded request does not hold up other requests on the same connection (a
    // stale vote request here; Raft heartbeats in general).
    let slow = tokio::spawn({
        let follower = follower.clone();
        async move {
            follower
                .forward(
                    leader,
                    Uuid::new_v4(),
                    ControllerRequest::BrokerShutdown {
                        broker_id: 1,
                        incarnation: Uuid::nil(),
                    },
                )
                .await
        }
    });
    eventually("the slow request reaches the leader's controller", || {
        entered.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let leader_addr = follower.address_of(leader as u64).unwrap();
    let same_connection = follower.inner.peers.client(leader as u64, &leader_addr);
    let stale_vote = openraft::raft::VoteRequest::<u64>::new(
        openraft::Vote::new(0, follower.node_id() as u64),
        None,
    );
    let answered = same_connection
        .call::<_, Result<openraft::raft::VoteResponse<u64>, RaftError<u64>>>(
            KIND_VOTE,
            &stale_vote,
            DEADLINE,
        )
        .await?;
    assert!(answered.is_ok_and(|v| !v.vote_granted));
    let leader_quorum = nodes[leader as usize].quorum.clone().unwrap();
    for n in 0..3 {
        leader_quorum.propose(batch(n)).await?;
    }
    all_reach(&nodes, 3000).await;
    assert!(!slow.is_finished());
    release.notify_one();
    let done = tokio::time::timeout(DEADLINE, slow).await??;
    assert_eq!(done.map(|c| c.reply), Ok(ControllerReply::Done));

    // A follower asked directly names the leader instead of answering.
    let asked = follower.node_id();
    assert_eq!(
        leader_quorum
            .forward(
                asked,
                Uuid::new_v4(),
                ControllerRequest::AllocateProducerIds { broker_id: 1 }
            )
            .await,
        Err(SubmitError::NotController {
            leader: Some(leader)
        })
    );
    // The leader forwarding to itself runs its own handler.
    let own = leader_quorum
        .forward(
            leader,
            Uuid::new_v4(),
            ControllerRequest::AllocateProducerIds { broker_id: 3 },
        )
        .await?;
    assert_eq!(
        own.reply,
        ControllerReply::ProducerIds {
            first: 3,
            count: i64::from(leader)
        }
    );
    for q in running(&nodes) {
        q.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_another_cluster_and_garbage_are_disconnected() -> TestResult {
    // Two voters, one running: its server is up (no election can finish; that does not matter).
    // Served on a listener bound beforehand.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bound = listener.local_addr()?;
    let dir = tempfile::tempdir()?;
    let config = QuorumConfig {
        voters: vec![(0, bound.to_string()), (1, "127.0.0.1:1".into())],
        ..QuorumConfig::new(0, dir.path().to_path_buf(), CLUSTER.into())
    };
    let quorum = RaftQuorum::start_with_listener(config, Some(listener)).await?;
    assert_eq!(quorum.controller_addr(), Some(bound));
    let addr = bound.to_string();
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(0, 1), None);

    // Another cluster id: refused, and the connection is closed.
    let stranger = PeerClient::new(addr.clone(), "another-cluster".into(), 1);
    let refused = stranger
        .call::<_, Result<openraft::raft::VoteResponse<u64>, RaftError<u64>>>(
            KIND_VOTE, &vote, DEADLINE,
        )
        .await;
    assert!(
        matches!(refused, Err(CallError::Refused { .. })),
        "{refused:?}"
    );

    // Garbage of every kind: each connection is closed, nothing is answered.
    let garbage: Vec<Vec<u8>> = vec![
        (-5i32).to_be_bytes().to_vec(),
        (64 * 1024 * 1024i32).to_be_bytes().to_vec(),
        super::super::rpc::encode_request(1, KIND_VOTE, b"not json").unwrap(),
        super::super::rpc::encode_request(
            1,
            77,
            b"{\"cluster_id\":\"test-cluster\",\"from\":1,\"body\":1}",
        )
        .unwrap(),
        super::super::rpc::encode_request(
            1,
            KIND_VOTE,
            b"{\"cluster_id\":\"test-cluster\",\"from\":1,\"body\":{\"no\":1}}",
        )
        .unwrap(),
    ];
    for bytes in garbage {
        let mut stream = TcpStream::connect(&addr).await?;
        stream.write_all(&bytes).await?;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf)).await?;
        // Closed (EOF or reset) with no answer.
        assert!(buf.is_empty(), "answered garbage: {buf:?}");
        drop(read);
    }

    // The server still serves a proper peer.
    let friend = PeerClient::new(addr, CLUSTER.into(), 1);
    let answer = friend
        .call::<_, Result<openraft::raft::VoteResponse<u64>, RaftError<u64>>>(
            KIND_VOTE, &vote, DEADLINE,
        )
        .await?;
    assert!(answer.is_ok(), "{answer:?}");
    quorum.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_observes_the_log() -> TestResult {
    let voter_addr = format!("127.0.0.1:{}", free_port());
    let voters = vec![(0, voter_addr)];
    let voter_dir = tempfile::tempdir()?;
    let voter = RaftQuorum::start(QuorumConfig {
        voters: voters.clone(),
        ..QuorumConfig::new(0, voter_dir.path().to_path_buf(), CLUSTER.into())
    })
    .await?;
    assert_eq!(voter.wait_for_leader(DEADLINE).await, Some(0));
    voter.propose(batch(0)).await?;

    let observer_dir = tempfile::tempdir()?;
    let observer_config = QuorumConfig {
        voters,
        observer: true,
        controller_listen: Some(format!("127.0.0.1:{}", free_port()).parse()?),
        ..QuorumConfig::new(5, observer_dir.path().to_path_buf(), CLUSTER.into())
    };
    let observer = RaftQuorum::start(observer_config.clone()).await?;
    voter.propose(batch(1)).await?;
    eventually("the observer applies the log", || {
        observer.image().next_producer_id == 2000
    })
    .await;
    eventually("the leader lists the observer", || {
        let state = voter.quorum_receiver().borrow().clone();
        state.voters.len() == 1 && state.observers.iter().any(|o| o.id == 5)
    })
    .await;
    assert_eq!(
        observer.propose(batch(9)).await,
        Err(SubmitError::NotController { leader: Some(0) })
    );
    assert_eq!(
        observer.leadership().await,
        Leadership::Follower { leader: Some(0) }
    );

    // Restarted, it is still an observer and catches up.
    observer.shutdown().await;
    drop(observer);
    voter.propose(batch(2)).await?;
    let observer = RaftQuorum::start(observer_config).await?;
    eventually("the restarted observer catches up", || {
        observer.image().next_producer_id == 3000
    })
    .await;

    // A broker-only node must not be a voter, and needs a reachable listener.
    let bad = QuorumConfig {
        voters: vec![(0, "127.0.0.1:1".into())],
        observer: true,
        controller_listen: Some("0.0.0.0:0".parse()?),
        ..QuorumConfig::new(6, observer_dir.path().to_path_buf(), CLUSTER.into())
    };
    assert!(matches!(
        RaftQuorum::start(bad.clone()).await,
        Err(QuorumError::Config(_))
    ));
    assert!(matches!(
        RaftQuorum::start(QuorumConfig { node_id: 0, ..bad }).await,
        Err(QuorumError::Config(_))
    ));
    observer.shutdown().await;
    voter.shutdown().await;
    Ok(())
}
