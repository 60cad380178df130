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
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::FollowedPartition;
use crate::config::BrokerConfig;
use crate::metadata::image::MetadataImage;
use crate::metadata::records::BrokerId;
use task::run_leader_fetcher;

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
    /// Largest answer frame read; a larger one closes the connection (and is retried, logged
    /// once: raise `socket.request.max.bytes` or `replica.fetch.max.bytes`).
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
            // A topic's `max.message.bytes` may exceed the broker's: a batch that large is still
            // served whole (KIP-74), so the cap is at least what this broker accepts itself.
            frame_bytes_max: records_bytes_max
                .saturating_add(FRAME_SLACK_BYTES)
                .max(config.socket_request_max_bytes),
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

mod apply;
mod task;

#[cfg(test)]
#[path = "fetcher_tests.rs"]
mod tests;
