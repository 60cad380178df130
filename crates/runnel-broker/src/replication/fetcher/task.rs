//! One leader's fetcher task: which partitions to fetch now (pauses, back-offs), the
//! connection to the leader, the Fetch request, and what each answer taught about each
//! partition. What an answer does to a log is `apply.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{BrokerId as WireBrokerId, FetchRequest};
use runnel_storage::PartitionLog;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::apply::{apply_on_blocking_pool, PartitionOutcome};
use super::{FetcherConfig, FollowState, Shared, BACKOFF_MAX, BACKOFF_MIN};
use crate::metadata::image::MetadataImage;
use crate::metadata::records::BrokerId;
use crate::replication::client::{LeaderConnection, LeaderConnectionError};

/// Doubling pause, from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    fn take(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        now
    }
}

/// What a fetcher task knows of one partition, beyond what the set says.
pub(super) struct PartitionFetch {
    pub(super) state: Arc<FollowState>,
    /// The leader fenced our epoch: wait for the image to name a newer one.
    pub(super) paused: bool,
    /// Refused or failed: not fetched before this instant.
    pub(super) retry_at: Option<Instant>,
    pub(super) backoff: Backoff,
    /// The last problem logged, so each is logged once, not once per fetch.
    pub(super) problem: Option<String>,
}

impl PartitionFetch {
    pub(super) fn new(state: Arc<FollowState>) -> PartitionFetch {
        PartitionFetch {
            state,
            paused: false,
            retry_at: None,
            backoff: Backoff::new(),
            problem: None,
        }
    }

    fn name(&self) -> String {
        format!(
            "{}-{}",
            self.state.followed.topic, self.state.followed.partition.index
        )
    }

    pub(super) fn fetchable(&self, now: Instant) -> bool {
        !self.paused && self.retry_at.is_none_or(|at| at <= now)
    }

    /// Logs `problem` at WARN unless it is the one logged last.
    fn warn_once(&mut self, problem: String) {
        if self.problem.as_ref() != Some(&problem) {
            tracing::warn!(partition = %self.name(), leader = self.state.followed.leader,
                %problem, "follower fetch");
            self.problem = Some(problem);
        }
    }

    fn delay(&mut self, problem: String) {
        self.warn_once(problem);
        self.retry_at = Some(Instant::now() + self.backoff.take());
    }

    fn fetched(&mut self) {
        if self.problem.take().is_some() {
            tracing::info!(partition = %self.name(), leader = self.state.followed.leader,
                "follower fetch works again");
        }
        self.retry_at = None;
        self.backoff = Backoff::new();
    }
}

/// A partition in one fetch: its log and what was asked.
pub(super) struct FetchedPartition {
    pub(super) state: Arc<FollowState>,
    pub(super) log: Arc<PartitionLog>,
    pub(super) fetch_offset: i64,
}

/// One leader's fetcher: fetch, apply, repeat, until aborted or the set is gone.
pub(super) async fn run_leader_fetcher(
    shared: Arc<Shared>,
    leader: BrokerId,
    mut set: watch::Receiver<Vec<Arc<FollowState>>>,
) {
    let mut partitions: Vec<PartitionFetch> = Vec::new();
    let mut connection: Option<LeaderConnection> = None;
    let mut connection_backoff = Backoff::new();
    let mut connection_problem: Option<String> = None;
    loop {
        if set.has_changed().unwrap_or(false) || partitions.is_empty() {
            refresh_partitions(&mut partitions, &set.borrow_and_update());
        }
        let now = Instant::now();
        if !partitions.iter().any(|p| p.fetchable(now)) {
            let wake_at = partitions
                .iter()
                .filter(|p| !p.paused)
                .filter_map(|p| p.retry_at)
                .min();
            if !wait_for_change(&mut set, wake_at).await {
                return;
            }
            continue;
        }
        let live = match connection.take() {
            Some(live) => Ok(live),
            None => connect(&shared, leader).await,
        };
        let mut live = match live {
            Ok(live) => live,
            Err(problem) => {
                if connection_problem.as_ref() != Some(&problem) {
                    tracing::warn!(leader, %problem, "follower fetcher cannot reach its leader");
                    connection_problem = Some(problem);
                }
                let wake_at = Instant::now() + connection_backoff.take();
                if !wait_for_change(&mut set, Some(wake_at)).await {
                    return;
                }
                continue;
            }
        };
        let fetched = prepare_fetch(&shared, &mut partitions).await;
        if fetched.is_empty() {
            connection = Some(live);
            continue;
        }
        let request = fetch_request(&shared, &fetched);
        let response = match live.fetch(&request).await {
            Ok(response) => response,
            Err(error) => {
                let problem = error.to_string();
                if connection_problem.as_ref() != Some(&problem) {
                    tracing::warn!(leader, %problem, "follower fetch failed; reconnecting");
                    connection_problem = Some(problem);
                }
                let wake_at = Instant::now() + connection_backoff.take();
                if !wait_for_change(&mut set, Some(wake_at)).await {
                    return;
                }
                continue;
            }
        };
        if connection_problem.take().is_some() {
            tracing::info!(
                leader,
                addr = live.addr(),
                "follower fetcher reaches its leader again"
            );
        }
        connection = Some(live);
        connection_backoff = Backoff::new();
        if response.error_code != 0 {
            let problem = format!("leader answered error {}", response.error_code);
            for partition in &mut partitions {
                partition.delay(problem.clone());
            }
            continue;
        }
        let applied = apply_on_blocking_pool(&shared, fetched, response).await;
        record_outcomes(&mut partitions, applied);
    }
}

/// Rebuilds the task's partitions from the set, keeping what it knew of unchanged ones.
pub(super) fn refresh_partitions(partitions: &mut Vec<PartitionFetch>, set: &[Arc<FollowState>]) {
    let mut known: HashMap<(Uuid, i32), PartitionFetch> = partitions
        .drain(..)
        .map(|partition| (partition.state.key(), partition))
        .collect();
    for state in set {
        let kept = known
            .remove(&state.key())
            .filter(|partition| Arc::ptr_eq(&partition.state, state));
        partitions.push(kept.unwrap_or_else(|| PartitionFetch::new(Arc::clone(state))));
    }
}

/// Waits for a new followed set or until `wake_at`; false when the set's sender is gone (the
/// task should end).
pub(super) async fn wait_for_change(
    set: &mut watch::Receiver<Vec<Arc<FollowState>>>,
    wake_at: Option<Instant>,
) -> bool {
    match wake_at {
        Some(at) => tokio::select! {
            changed = set.changed() => changed.is_ok(),
            () = tokio::time::sleep_until(at) => true,
        },
        None => set.changed().await.is_ok(),
    }
}

/// Connects to `leader`'s replication endpoint as the current image names it.
pub(super) async fn connect(shared: &Shared, leader: BrokerId) -> Result<LeaderConnection, String> {
    let addr = leader_addr(&shared.image.borrow(), leader, &shared.config)?;
    LeaderConnection::connect(addr, shared.config.frame_bytes_max)
        .await
        .map_err(|error: LeaderConnectionError| error.to_string())
}

/// `host:port` of `leader` on the inter-broker listener, else its first endpoint that is not
/// a controller listener.
pub(super) fn leader_addr(
    image: &MetadataImage,
    leader: BrokerId,
    config: &FetcherConfig,
) -> Result<String, String> {
    let registration = image
        .brokers
        .get(&leader)
        .ok_or_else(|| format!("leader {leader} is not registered"))?;
    let endpoint = registration
        .endpoint(&config.listener_name)
        .or_else(|| {
            registration
                .endpoints
                .iter()
                .find(|e| !config.controller_listener_names.contains(&e.listener))
        })
        .ok_or_else(|| format!("leader {leader} has no endpoint for replication"))?;
    Ok(format!("{}:{}", endpoint.host, endpoint.port))
}

/// The partitions to fetch now, with their logs opened and, with `fsync_before_fetch`, any
/// unflushed tail flushed (a former leader's unflushed appends), so every fetch offset sent is
/// durable.
pub(super) async fn prepare_fetch(
    shared: &Shared,
    partitions: &mut [PartitionFetch],
) -> Vec<FetchedPartition> {
    let now = Instant::now();
    let mut fetched = Vec::new();
    for partition in partitions.iter_mut().filter(|p| p.fetchable(now)) {
        match partition.state.followed.partition.log().await {
            Ok(log) => fetched.push(FetchedPartition {
                state: Arc::clone(&partition.state),
                log: Arc::clone(&log),
                fetch_offset: log.log_end_offset(),
            }),
            Err(error) => partition.delay(format!("log unavailable: {error}")),
        }
    }
    if !shared.config.fsync_before_fetch
        || fetched
            .iter()
            .all(|p| p.log.flushed_offset() >= p.fetch_offset)
    {
        return fetched;
    }
    let logs: Vec<(Arc<PartitionLog>, i64)> = fetched
        .iter()
        .map(|p| (Arc::clone(&p.log), p.fetch_offset))
        .collect();
    let flushed = tokio::task::spawn_blocking(move || {
        logs.iter()
            .map(|(log, offset)| log.flush(*offset).map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
    })
    .await;
    let flushed = match flushed {
        Ok(flushed) => flushed,
        Err(error) => vec![Err(format!("flush task failed: {error}")); fetched.len()],
    };
    let mut ready = Vec::with_capacity(fetched.len());
    for (partition, result) in fetched.into_iter().zip(flushed) {
        match result {
            Ok(()) => ready.push(partition),
            Err(problem) => {
                if let Some(fetch) = partitions
                    .iter_mut()
                    .find(|p| Arc::ptr_eq(&p.state, &partition.state))
                {
                    fetch.delay(format!("flush before fetch failed: {problem}"));
                }
            }
        }
    }
    ready
}

/// Fetch v16 as replica `node_id` for `partitions`.
pub(super) fn fetch_request(shared: &Shared, partitions: &[FetchedPartition]) -> FetchRequest {
    let mut topics: BTreeMap<Uuid, Vec<FetchPartition>> = BTreeMap::new();
    for partition in partitions {
        let followed = &partition.state.followed;
        topics.entry(followed.topic_id).or_default().push(
            FetchPartition::default()
                .with_partition(followed.partition.index)
                .with_current_leader_epoch(followed.leader_epoch)
                .with_fetch_offset(partition.fetch_offset)
                .with_last_fetched_epoch(partition.log.latest_epoch().unwrap_or(-1))
                .with_log_start_offset(-1)
                .with_partition_max_bytes(shared.config.max_bytes),
        );
    }
    FetchRequest::default()
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(WireBrokerId(shared.node_id))
                .with_replica_epoch(-1),
        )
        .with_max_wait_ms(shared.config.max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(shared.config.max_bytes)
        // No fetch session (KIP-227): every fetch names every partition.
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    FetchTopic::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// Takes each partition's outcome into the task's view.
pub(super) fn record_outcomes(
    partitions: &mut [PartitionFetch],
    outcomes: Vec<(Arc<FollowState>, PartitionOutcome)>,
) {
    for (state, outcome) in outcomes {
        let Some(partition) = partitions
            .iter_mut()
            .find(|p| Arc::ptr_eq(&p.state, &state))
        else {
            continue;
        };
        match outcome {
            PartitionOutcome::Applied => partition.fetched(),
            PartitionOutcome::Fenced => {
                partition.warn_once(
                    "the leader fenced our leader epoch; waiting for the image to move".into(),
                );
                partition.paused = true;
            }
            PartitionOutcome::Retry(problem) => partition.delay(problem),
            PartitionOutcome::Skipped => {}
        }
    }
}
