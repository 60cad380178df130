//! The follower's side of replication (docs/replication.md, "Follower"): one fetcher task per
//! source broker, copying every partition this node follows from it byte for byte.
//!
//! A fetcher long-polls its leader with Fetch v16 as replica `node.id`, sending per partition
//! its durable log end offset, the leader epoch the image names and the epoch of its last batch.
//! Per partition of the answer it truncates where the leader says the logs diverge, starts the
//! log afresh when the leader's log start is past it, or appends the leader's batches at the
//! leader's offsets and fsyncs them before fetching on, then reports the follower high watermark
//! (the leader's, capped by what is durable here).
//!
//! What it must not know: who should lead (the replica manager hands it the full followed set at
//! every image change, [`Fetchers::set_followed`]), or how a log stores bytes (storage).
//!
//! Fencing: a partition's log is changed only under its `FollowState::active` lock, and only
//! while it is set; `set_followed` clears it for every partition it drops (or moves to a new
//! leader or epoch), waiting for a change in progress. So once `set_followed` returns, the
//! fetchers never again append to, truncate or reset a log this node no longer follows at that
//! epoch (a flush may still finish: harmless) — the replica manager may make it leader at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId as WireBrokerId, FetchRequest, FetchResponse};
use runnel_storage::{LeaderEpochCache, PartitionLog, StorageError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::client::{LeaderConnection, LeaderConnectionError};
use super::state::{self, follower_high_watermark};
use super::FollowedPartition;
use crate::config::BrokerConfig;
use crate::metadata::image::MetadataImage;
use crate::metadata::records::BrokerId;

/// Called with `(topic id, partition, high watermark)` when a followed partition's high
/// watermark changes: the leader's, capped by this replica's durable offset. Called from the
/// blocking pool, with no fetcher lock held; it should be quick. A report races with
/// [`Fetchers::set_followed`]: one may arrive just after the call that dropped the partition
/// returned, so the receiver ignores reports for partitions it does not consider followed.
pub type OnHighWatermark = Arc<dyn Fn(Uuid, i32, i64) + Send + Sync>;

/// Room in an answer frame beyond `replica.fetch.max.bytes` and `message.max.bytes`: headers
/// of every partition, and the one batch KIP-74 lets exceed the limits.
const FRAME_SLACK_BYTES: usize = 1 << 20;

/// First and last pause before retrying a failed connection or a partition the leader refused.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The fetchers' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetcherConfig {
    /// `inter.broker.listener.name`: the leader's endpoint to connect to.
    pub listener_name: String,
    /// `controller.listener.names`: never connected to by a fetcher (the fallback when the
    /// leader has no endpoint named `listener_name` is its first other endpoint).
    pub controller_listener_names: Vec<String>,
    /// `replica.fetch.wait.max.ms`: the long poll's length.
    pub max_wait_ms: i32,
    /// `replica.fetch.max.bytes`: records per fetch, and per partition.
    pub max_bytes: i32,
    /// `replica.fsync.before.fetch`: fsync what was appended before fetching on, so the fetch
    /// offset the leader sees is durable here.
    pub fsync_before_fetch: bool,
    /// Largest answer frame read; a larger one closes the connection.
    pub frame_bytes_max: usize,
}

impl FetcherConfig {
    /// The settings from the broker's configuration.
    pub fn from_broker(config: &BrokerConfig) -> FetcherConfig {
        let records_bytes_max = usize::try_from(config.replica_fetch_max_bytes)
            .unwrap_or(0)
            .max(config.message_max_bytes);
        FetcherConfig {
            listener_name: config.inter_broker_listener_name.clone(),
            controller_listener_names: config.controller_listener_names.clone(),
            max_wait_ms: config.replica_fetch_wait_max_ms,
            max_bytes: config.replica_fetch_max_bytes,
            fsync_before_fetch: config.replica_fsync_before_fetch,
            frame_bytes_max: records_bytes_max.saturating_add(FRAME_SLACK_BYTES),
        }
    }
}

/// The follower fetchers of this node: one task per broker it follows partitions from.
/// Cheap to share behind an `Arc`; every method is synchronous and returns quickly (at most it
/// waits for one partition's append in progress).
pub struct Fetchers {
    shared: Arc<Shared>,
    state: Mutex<FetcherSet>,
}

impl std::fmt::Debug for Fetchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetchers")
            .field("node_id", &self.shared.node_id)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// What every fetcher task reads.
struct Shared {
    node_id: BrokerId,
    config: FetcherConfig,
    image: watch::Receiver<Arc<MetadataImage>>,
    on_high_watermark: OnHighWatermark,
}

/// The followed partitions and the task per leader.
#[derive(Default)]
struct FetcherSet {
    partitions: HashMap<(Uuid, i32), Arc<FollowState>>,
    tasks: HashMap<BrokerId, LeaderFetcher>,
    shut_down: bool,
}

/// One leader's fetcher task and the partitions it copies.
struct LeaderFetcher {
    partitions: watch::Sender<Vec<Arc<FollowState>>>,
    task: JoinHandle<()>,
}

/// One partition followed from one leader at one leader epoch. A new leader or epoch makes a
/// new one, so everything a fetcher learned about the old one (a refusal, a pause) is dropped.
struct FollowState {
    followed: FollowedPartition,
    /// Whether the partition is still followed like this; the log is changed only while it is
    /// held and true (see the module doc).
    active: Mutex<bool>,
    /// The high watermark last reported (-1: none yet).
    reported_high_watermark: AtomicI64,
}

impl FollowState {
    fn key(&self) -> (Uuid, i32) {
        (self.followed.topic_id, self.followed.partition.index)
    }

    fn lock_active(&self) -> MutexGuard<'_, bool> {
        // A `bool` cannot be left half-written by a panic elsewhere.
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deactivate(&self) {
        *self.lock_active() = false;
    }
}

impl Fetchers {
    /// Fetchers for node `node_id`, following nothing yet. `image` supplies the leaders'
    /// endpoints (`MetadataHandle::subscribe`); `on_high_watermark` receives follower high
    /// watermarks. Tasks are spawned on the current tokio runtime by [`Fetchers::set_followed`].
    pub fn start(
        node_id: BrokerId,
        config: FetcherConfig,
        image: watch::Receiver<Arc<MetadataImage>>,
        on_high_watermark: OnHighWatermark,
    ) -> Fetchers {
        Fetchers {
            shared: Arc::new(Shared {
                node_id,
                config,
                image,
                on_high_watermark,
            }),
            state: Mutex::new(FetcherSet::default()),
        }
    }

    /// Replaces the followed set with `partitions` (all of them: one missing is no longer
    /// fetched; one led by this node or by nobody is ignored). A partition whose leader or leader epoch changed starts afresh (a paused one
    /// fetches again); a leader left with nothing to fetch loses its task, a new one gets one.
    ///
    /// When this returns, no fetcher changes (appends, truncates, resets) the log of a
    /// partition dropped from the set or moved to another leader or epoch, and none is doing so.
    /// After [`Fetchers::shutdown`] it does nothing.
    pub fn set_followed(&self, partitions: Vec<FollowedPartition>) {
        let mut set = self.lock_state();
        if set.shut_down {
            return;
        }
        let mut next: HashMap<(Uuid, i32), Arc<FollowState>> = HashMap::new();
        for followed in partitions {
            if followed.leader == self.shared.node_id || followed.leader < 0 {
                tracing::debug!(topic = %followed.topic, partition = followed.partition.index,
                    leader = followed.leader, "not followed: no other leader to fetch from");
                continue;
            }
            let key = (followed.topic_id, followed.partition.index);
            let kept = set.partitions.get(&key).filter(|current| {
                current.followed.leader == followed.leader
                    && current.followed.leader_epoch == followed.leader_epoch
                    && Arc::ptr_eq(&current.followed.partition, &followed.partition)
            });
            let state = kept.map_or_else(
                || {
                    Arc::new(FollowState {
                        followed,
                        active: Mutex::new(true),
                        reported_high_watermark: AtomicI64::new(-1),
                    })
                },
                Arc::clone,
            );
            next.insert(key, state);
        }
        for (key, old) in &set.partitions {
            if !next.get(key).is_some_and(|new| Arc::ptr_eq(new, old)) {
                old.deactivate();
            }
        }
        let mut by_leader: BTreeMap<BrokerId, Vec<Arc<FollowState>>> = BTreeMap::new();
        for state in next.values() {
            by_leader
                .entry(state.followed.leader)
                .or_default()
                .push(Arc::clone(state));
        }
        set.tasks.retain(|leader, fetcher| {
            let keep = by_leader.contains_key(leader);
            if !keep {
                fetcher.task.abort();
            }
            keep
        });
        for (leader, partitions) in by_leader {
            match set.tasks.get(&leader) {
                Some(fetcher) if !fetcher.task.is_finished() => {
                    fetcher.partitions.send_replace(partitions);
                }
                _ => {
                    let (sender, receiver) = watch::channel(partitions);
                    let task = tokio::spawn(run_leader_fetcher(
                        Arc::clone(&self.shared),
                        leader,
                        receiver,
                    ));
                    set.tasks.insert(
                        leader,
                        LeaderFetcher {
                            partitions: sender,
                            task,
                        },
                    );
                }
            }
        }
        set.partitions = next;
    }

    /// Stops every fetcher. When this returns no fetcher changes any log again (an append in
    /// progress has finished), so the logs may be closed.
    pub fn shutdown(&self) {
        let mut set = self.lock_state();
        set.shut_down = true;
        for (_, fetcher) in set.tasks.drain() {
            fetcher.task.abort();
        }
        for (_, state) in set.partitions.drain() {
            state.deactivate();
        }
    }

    /// The leaders this node currently runs a fetcher for (for tests and diagnostics).
    pub fn leaders(&self) -> Vec<BrokerId> {
        let mut leaders: Vec<BrokerId> = self.lock_state().tasks.keys().copied().collect();
        leaders.sort_unstable();
        leaders
    }

    fn lock_state(&self) -> MutexGuard<'_, FetcherSet> {
        // Every update of the set completes before the guard drops; a panic cannot tear it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Fetchers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Doubling pause, from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
#[derive(Debug, Clone, Copy)]
struct Backoff {
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
struct PartitionFetch {
    state: Arc<FollowState>,
    /// The leader fenced our epoch: wait for the image to name a newer one.
    paused: bool,
    /// Refused or failed: not fetched before this instant.
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// The last problem logged, so each is logged once, not once per fetch.
    problem: Option<String>,
}

impl PartitionFetch {
    fn new(state: Arc<FollowState>) -> PartitionFetch {
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

    fn fetchable(&self, now: Instant) -> bool {
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
struct FetchedPartition {
    state: Arc<FollowState>,
    log: Arc<PartitionLog>,
    fetch_offset: i64,
}

/// One leader's fetcher: fetch, apply, repeat, until aborted or the set is gone.
async fn run_leader_fetcher(
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
fn refresh_partitions(partitions: &mut Vec<PartitionFetch>, set: &[Arc<FollowState>]) {
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
async fn wait_for_change(
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
async fn connect(shared: &Shared, leader: BrokerId) -> Result<LeaderConnection, String> {
    let addr = leader_addr(&shared.image.borrow(), leader, &shared.config)?;
    LeaderConnection::connect(addr, shared.config.frame_bytes_max)
        .await
        .map_err(|error: LeaderConnectionError| error.to_string())
}

/// `host:port` of `leader` on the inter-broker listener, else its first endpoint that is not
/// a controller listener.
fn leader_addr(
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
async fn prepare_fetch(
    shared: &Shared,
    partitions: &mut [PartitionFetch],
) -> Vec<FetchedPartition> {
    let now = Instant::now();
    let mut fetched = Vec::new();
    for partition in partitions.iter_mut().filter(|p| p.fetchable(now)) {
        match partition.state.followed.partition.log().await {
            Ok(log) => fetched.push(FetchedPartition {
                state: Arc::clone(&partition.state),
                log: Arc::clone(log),
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
fn fetch_request(shared: &Shared, partitions: &[FetchedPartition]) -> FetchRequest {
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

/// What became of one partition of a fetch.
#[derive(Debug, PartialEq, Eq)]
enum PartitionOutcome {
    /// Applied (records appended, the log truncated or started afresh, or nothing new).
    Applied,
    /// The leader fenced our epoch: wait for a newer one.
    Fenced,
    /// Refused or failed: retry after a pause.
    Retry(String),
    /// Absent from the answer, or no longer followed: nothing to do.
    Skipped,
}

/// Applies `response` to the fetched partitions' logs on the blocking pool (appends and fsyncs
/// block). Runs to completion even if the fetcher task is aborted meanwhile.
async fn apply_on_blocking_pool(
    shared: &Arc<Shared>,
    fetched: Vec<FetchedPartition>,
    response: FetchResponse,
) -> Vec<(Arc<FollowState>, PartitionOutcome)> {
    let shared = Arc::clone(shared);
    let states: Vec<Arc<FollowState>> = fetched.iter().map(|p| Arc::clone(&p.state)).collect();
    match tokio::task::spawn_blocking(move || apply_response(&shared, fetched, response)).await {
        Ok(outcomes) => outcomes,
        Err(error) => states
            .into_iter()
            .map(|state| {
                let outcome = PartitionOutcome::Retry(format!("apply task failed: {error}"));
                (state, outcome)
            })
            .collect(),
    }
}

/// Applies each partition of `response` to its log. Blocking.
fn apply_response(
    shared: &Shared,
    fetched: Vec<FetchedPartition>,
    response: FetchResponse,
) -> Vec<(Arc<FollowState>, PartitionOutcome)> {
    let mut answers: HashMap<(Uuid, i32), PartitionData> = HashMap::new();
    for topic in response.responses {
        for data in topic.partitions {
            answers.insert((topic.topic_id, data.partition_index), data);
        }
    }
    fetched
        .into_iter()
        .map(|partition| {
            let outcome = match answers.remove(&partition.state.key()) {
                Some(data) => apply_partition(shared, &partition, &data),
                None => PartitionOutcome::Skipped,
            };
            (partition.state, outcome)
        })
        .collect()
}

/// Applies one partition's answer: the log changes under its `active` lock (see the module
/// doc); the fsync runs outside it (harmless whoever leads, and `set_followed` must not wait for
/// it); the high watermark is reported if the partition is still followed. Blocking.
fn apply_partition(
    shared: &Shared,
    partition: &FetchedPartition,
    data: &PartitionData,
) -> PartitionOutcome {
    let changed = {
        let active = partition.state.lock_active();
        if !*active {
            return PartitionOutcome::Skipped;
        }
        apply_partition_data(&partition.log, partition.fetch_offset, data)
    };
    let leader_high_watermark = match changed {
        Ok(Applied::Records) => data.high_watermark,
        Ok(Applied::LogChanged) => return PartitionOutcome::Applied,
        Err(ApplyError::Fenced) => return PartitionOutcome::Fenced,
        Err(error) => return PartitionOutcome::Retry(error.to_string()),
    };
    if shared.config.fsync_before_fetch {
        if let Err(error) = partition.log.flush(partition.log.log_end_offset()) {
            return PartitionOutcome::Retry(format!("flush failed: {error}"));
        }
    }
    let high_watermark =
        follower_high_watermark(leader_high_watermark, partition.log.flushed_offset());
    // Not under the `active` lock: the replica manager may hold its own lock while calling
    // `set_followed`, and take it again in this callback.
    if *partition.state.lock_active() {
        let reported = partition
            .state
            .reported_high_watermark
            .swap(high_watermark, Ordering::SeqCst);
        if reported != high_watermark {
            let followed = &partition.state.followed;
            (shared.on_high_watermark)(followed.topic_id, followed.partition.index, high_watermark);
        }
    }
    PartitionOutcome::Applied
}

/// Why a partition's answer was not applied.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// FENCED_LEADER_EPOCH: the image names an older epoch than the leader's.
    #[error("the leader fenced our leader epoch")]
    Fenced,
    /// Any other error code from the leader (not leading yet, topic unknown there yet, ...).
    #[error("the leader answered {0:?}")]
    Refused(ResponseError),
    /// An error code we do not know.
    #[error("the leader answered error code {0}")]
    UnknownError(i16),
    /// Appending, truncating or resetting failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What applying a partition's answer did.
#[derive(Debug, PartialEq, Eq)]
enum Applied {
    /// The leader's records (if any) are appended: the leader's high watermark applies.
    Records,
    /// The log was truncated or started afresh: fetch again before reporting anything.
    LogChanged,
}

/// Applies one partition's answer to `log`, which was fetched from `fetch_offset`
/// (docs/replication.md, "Follower"): error codes, `diverging_epoch`, the leader's log start,
/// records. Does not fsync. Blocking.
fn apply_partition_data(
    log: &PartitionLog,
    fetch_offset: i64,
    data: &PartitionData,
) -> Result<Applied, ApplyError> {
    if let Some(error) = data.error_code.err() {
        return match error {
            ResponseError::FencedLeaderEpoch => Err(ApplyError::Fenced),
            // Our fetch offset is below the leader's log start: start afresh there.
            ResponseError::OffsetOutOfRange if data.log_start_offset > log.log_end_offset() => {
                log.reset_to(data.log_start_offset)?;
                Ok(Applied::LogChanged)
            }
            other => Err(ApplyError::Refused(other)),
        };
    }
    if data.error_code != 0 {
        return Err(ApplyError::UnknownError(data.error_code));
    }
    if data.diverging_epoch.epoch >= 0 {
        let truncate_at = follower_truncation_offset(
            data.diverging_epoch.epoch,
            data.diverging_epoch.end_offset,
            log,
        );
        log.truncate_to(truncate_at)?;
        return Ok(Applied::LogChanged);
    }
    if data.log_start_offset > log.log_end_offset() {
        log.reset_to(data.log_start_offset)?;
        return Ok(Applied::LogChanged);
    }
    let records = data.records.as_ref().filter(|r| !r.is_empty());
    // A fetcher aborted after an append may leave the log past the offset it fetched from;
    // the answer is then stale, and the next fetch starts from the new end.
    if let Some(records) = records.filter(|_| log.log_end_offset() == fetch_offset) {
        append(log, records)?;
    }
    Ok(Applied::Records)
}

fn append(log: &PartitionLog, records: &Bytes) -> Result<(), StorageError> {
    log.append_replicated(records).map(|_| ())
}

/// Where to truncate on `diverging_epoch = (epoch, end_offset)`: [`state::follower_truncation_offset`]
/// over this log's epoch cache. The caller holds the partition's `active` lock, so nothing
/// changes the log between reading its cache and its end.
fn follower_truncation_offset(epoch: i32, end_offset: i64, log: &PartitionLog) -> i64 {
    let mut own = LeaderEpochCache::new();
    for entry in log.epoch_entries() {
        own.assign(entry.epoch, entry.start_offset);
    }
    state::follower_truncation_offset(epoch, end_offset, &own, log.log_end_offset())
}

/// Takes each partition's outcome into the task's view.
fn record_outcomes(
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

#[cfg(test)]
#[path = "fetcher_tests.rs"]
mod tests;
