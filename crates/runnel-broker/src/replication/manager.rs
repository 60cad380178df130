//! `ReplicaManager`: per local partition, this node's role — leader (with the pure
//! [`LeaderState`]: follower progress, HW, ISR proposals) or follower (the HW its fetcher
//! reports) — driven by image changes and fetches (docs/replication.md).
//!
//! Every high-watermark read goes through [`ReplicaManager::high_watermark`], which advances a
//! leader's HW from its durable offset first: a flush needs no hook to become visible, and the
//! events that can move a HW (a flush finishing, a follower fetch, an ISR change) wake the
//! waiters of that partition ([`Replica::changed`]) and the broker's long-polling fetches.
//!
//! A leader's state is built lazily, the first time a request needs it with the log open
//! (stamping the new epoch into the log's epoch cache and reading the HW checkpoint): start-up
//! opens no log for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::Duration;

use runnel_storage::StorageError;
use runnel_storage::{LeaderEpochCache, PartitionLog};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::state::{LeaderState, Membership, ReplicaFetchCheck};
use super::FollowedPartition;
use crate::broker::HighWatermarkSignal;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metadata::requests::AlterPartitionError;
use crate::metadata::{
    BrokerId, ControllerReply, ControllerRequest, MetadataHandle, MetadataImage, PartitionState,
};
use crate::topics::{Partition, TopicRegistry};

/// A partition is named by its topic id and index.
type PartitionKey = (Uuid, i32);

/// What this node is for one of its partitions.
#[derive(Debug)]
enum Role {
    /// The image names this node leader.
    Leader(Leadership),
    /// Another broker leads it (or none does: `leader` -1).
    Follower {
        leader: BrokerId,
        leader_epoch: i32,
        /// What the fetcher reported (the leader's HW capped by our durable offset).
        high_watermark: i64,
    },
}

/// The leader role at one leader epoch.
#[derive(Debug)]
struct Leadership {
    leader_epoch: i32,
    partition: Box<PartitionState>,
    min_insync: usize,
    /// Built on first use with the log open ([`leader_state`]).
    state: Option<LeaderState>,
    /// Whether the log already stamps this leadership's epoch ([`stamp_leader_epoch`], done
    /// outside the role lock), so that [`leader_state`] need not take the log's writer lock.
    epoch_stamped: bool,
    /// The HW this node knew when it became leader (a follower's, from its leader).
    inherited_high_watermark: i64,
}

/// One local partition's replication state.
#[derive(Debug)]
pub struct Replica {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub index: i32,
    /// The local log.
    pub partition: Arc<Partition>,
    role: StdMutex<Role>,
    /// Bumped when the HW moves or the role changes: waiting produces watch it.
    changed: watch::Sender<u64>,
    /// The HW last written to the checkpoint file, and the log directory it went to.
    checkpointed: StdMutex<Option<(std::path::PathBuf, i64)>>,
}

impl Replica {
    fn lock(&self) -> MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn not_leader(&self, leader: BrokerId, leader_epoch: i32) -> BrokerError {
        BrokerError::NotLeaderOrFollower {
            topic: self.topic.clone(),
            partition: self.index,
            leader,
            leader_epoch,
        }
    }
}

/// Stamps a new leadership's epoch into the log (`PartitionLog::set_leader_epoch`) without
/// holding the role lock: it takes the log's writer lock, which a move to another log dir
/// holds while it copies (up to a segment), and every other use of the role (metadata apply,
/// replica fetches, HW reads, acks=all checks) would wait behind it. Binding appends to the
/// epoch is unchanged: a leader append is still checked against the stamp under the writer
/// lock (`append_as_leader`), and [`leader_state`] stamps under the role lock if this did
/// not (it failed, or the leadership changed meanwhile). Blocking.
fn stamp_leader_epoch(replica: &Replica, log: &PartitionLog) {
    let unstamped = match &*replica.lock() {
        Role::Leader(leadership) if leadership.state.is_none() && !leadership.epoch_stamped => {
            Some(leadership.leader_epoch)
        }
        _ => None,
    };
    let Some(epoch) = unstamped else {
        return;
    };
    // A failure is left for `leader_state` to meet again and report.
    if log.set_leader_epoch(epoch).is_ok() {
        if let Role::Leader(leadership) = &mut *replica.lock() {
            if leadership.leader_epoch == epoch {
                leadership.epoch_stamped = true;
            }
        }
    }
}

/// The leader state of `leadership`, built now if this is its first use: the log's epoch
/// cache gets the epoch at the current LEO (fsynced; see [`stamp_leader_epoch`]), the HW is
/// the larger of the checkpoint and what this node knew as a follower, never above what it
/// holds durably.
fn leader_state<'a>(
    node: BrokerId,
    leadership: &'a mut Leadership,
    log: &PartitionLog,
    now_ms: i64,
) -> Result<&'a mut LeaderState, BrokerError> {
    if leadership.state.is_none() {
        if !leadership.epoch_stamped {
            log.set_leader_epoch(leadership.leader_epoch)?;
        }
        let durable = log.flushed_offset().min(log.log_end_offset());
        let high_watermark = log
            .read_high_watermark()
            .unwrap_or(0)
            .max(leadership.inherited_high_watermark)
            .clamp(log.log_start_offset().min(durable), durable);
        leadership.state = Some(LeaderState::new(
            node,
            leadership.leader_epoch,
            membership(&leadership.partition),
            high_watermark,
            leadership.min_insync,
            now_ms,
        ));
    }
    leadership
        .state
        .as_mut()
        .ok_or_else(|| BrokerError::InvalidRequest("leader state missing".into()))
}

/// The part of a partition's state the leader state follows.
fn membership(state: &PartitionState) -> Membership {
    Membership {
        partition_epoch: state.partition_epoch,
        replicas: state.replicas.clone(),
        isr: state.isr.clone(),
    }
}

/// The log's leader-epoch cache, as the pure state machine reads it.
fn epoch_cache(log: &PartitionLog) -> LeaderEpochCache {
    let mut cache = LeaderEpochCache::new();
    for entry in log.epoch_entries() {
        cache.assign(entry.epoch, entry.start_offset);
    }
    cache
}

/// What a replica fetch may read, once checked (docs/replication.md "Leader" 1–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaRead {
    /// Serve records from the fetch offset up to the LEO; the HW to report.
    Serve {
        /// The leader's HW after recording the follower's progress.
        high_watermark: i64,
    },
    /// The follower's log diverged: answer `diverging_epoch` and no records.
    Diverging {
        /// The epoch the follower must truncate in.
        epoch: i32,
        /// Its end offset here.
        end_offset: i64,
        /// The leader's HW.
        high_watermark: i64,
    },
}

/// `current_leader_epoch` of a request (-1: none given) against the epoch `current` of this
/// node: older → FENCED_LEADER_EPOCH, newer → UNKNOWN_LEADER_EPOCH.
pub fn check_leader_epoch(requested: i32, current: i32) -> Result<(), BrokerError> {
    if requested < 0 || requested == current {
        Ok(())
    } else if requested < current {
        Err(BrokerError::FencedLeaderEpoch { requested, current })
    } else {
        Err(BrokerError::UnknownLeaderEpoch { requested, current })
    }
}

/// The follower side as the manager drives it (the fetchers, `replication/fetcher.rs`).
pub trait FollowerSide: Send + Sync {
    /// The full set of partitions to follow now (replaces the previous set).
    fn set_followed(&self, partitions: Vec<FollowedPartition>);
    /// Stops every fetcher: none writes a log after this returns.
    fn shutdown(&self);
}

impl FollowerSide for super::fetcher::Fetchers {
    fn set_followed(&self, partitions: Vec<FollowedPartition>) {
        super::fetcher::Fetchers::set_followed(self, partitions);
    }

    fn shutdown(&self) {
        super::fetcher::Fetchers::shutdown(self);
    }
}

/// Every partition this node holds, its role, and the waits on it.
pub struct ReplicaManager {
    node_id: BrokerId,
    /// This process's registration (`None` under a test's own control plane, which registers
    /// nothing): while the image names another incarnation of `node_id`, this process is a
    /// stale one and acts on no partition ([`ReplicaManager::apply`]).
    incarnation: Option<Uuid>,
    /// Whether the last image applied named another incarnation (to log the change once).
    superseded: std::sync::atomic::AtomicBool,
    config: Arc<BrokerConfig>,
    metadata: MetadataHandle,
    replicas: StdMutex<HashMap<PartitionKey, Arc<Replica>>>,
    /// The broker-wide signal long-polling fetches wait on.
    high_watermark_signal: HighWatermarkSignal,
    /// The follower side, started by the broker after the manager exists.
    fetchers: std::sync::OnceLock<Box<dyn FollowerSide>>,
    started: std::time::Instant,
}

impl std::fmt::Debug for ReplicaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaManager")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Pause before asking the controller again about an ISR change whose outcome is unknown.
const ALTER_PARTITION_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether `replica` still leads at `leader_epoch` with partition epoch `partition_epoch`: the
/// base an ISR proposal was made on.
fn proposal_base_is_current(replica: &Replica, leader_epoch: i32, partition_epoch: i32) -> bool {
    matches!(&*replica.lock(), Role::Leader(Leadership { state: Some(leader), .. })
        if leader.leader_epoch() == leader_epoch && leader.partition_epoch() == partition_epoch)
}

impl ReplicaManager {
    /// An empty manager for the process registered as `incarnation` of `config.node_id`;
    /// [`ReplicaManager::apply`] fills it from the image.
    pub fn new(
        config: Arc<BrokerConfig>,
        incarnation: Option<Uuid>,
        metadata: MetadataHandle,
        high_watermark_signal: HighWatermarkSignal,
    ) -> ReplicaManager {
        ReplicaManager {
            node_id: config.node_id,
            incarnation,
            superseded: std::sync::atomic::AtomicBool::new(false),
            config,
            metadata,
            replicas: StdMutex::new(HashMap::new()),
            high_watermark_signal,
            fetchers: std::sync::OnceLock::new(),
            started: std::time::Instant::now(),
        }
    }

    /// Hands the follower side to the manager (once, at start-up).
    pub fn set_fetchers(&self, fetchers: Box<dyn FollowerSide>) {
        if self.fetchers.set(fetchers).is_err() {
            tracing::warn!("replica fetchers started twice; keeping the first");
        }
    }

    /// Stops the follower side (graceful shutdown): no fetcher writes a log after this.
    pub fn shutdown_fetchers(&self) {
        if let Some(fetchers) = self.fetchers.get() {
            fetchers.shutdown();
        }
    }

    /// Milliseconds since the manager started: the clock of [`LeaderState`].
    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PartitionKey, Arc<Replica>>> {
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The replica of partition `index` of topic `topic_id`, if this node holds it.
    pub fn replica(&self, topic_id: Uuid, index: i32) -> Option<Arc<Replica>> {
        self.lock().get(&(topic_id, index)).cloned()
    }

    /// Follows a new image (after the topic registry synced it): every local partition gets
    /// its role; a new leader epoch here starts a new leadership (built on first use); a new
    /// ISR at the same epoch reaches the leader state; a lost leadership fails the produces
    /// waiting on it; the fetchers get the full set of followed partitions. Blocking only in
    /// the fetchers' hand-over (none of it does I/O).
    ///
    /// While the image names another incarnation of this node id (a newer process registered
    /// with it, and this one still runs), every partition is treated as led by nobody: this
    /// process leads nothing (produces get NOT_LEADER_OR_FOLLOWER, waiters are woken) and
    /// follows nothing, so two processes of one id never both write a partition's log.
    pub fn apply(&self, image: &MetadataImage, topics: &TopicRegistry) {
        let superseded = self.superseded_by(image);
        let was_superseded = self
            .superseded
            .swap(superseded.is_some(), std::sync::atomic::Ordering::Relaxed);
        match superseded {
            Some(current) if !was_superseded => {
                tracing::warn!(node = self.node_id, incarnation = ?self.incarnation, %current,
                    "another process registered with this node id: acting on no partition");
            }
            None if was_superseded => {
                tracing::warn!(node = self.node_id, incarnation = ?self.incarnation,
                    "this process is the registered one again");
            }
            _ => {}
        }
        let mut followed = Vec::new();
        let mut next = HashMap::new();
        let mut woken = Vec::new();
        let mut roles = Vec::new();
        // A copy: lookups meanwhile still find every replica (an empty map would expose a
        // leader's uncommitted records through the fallback HW).
        let previous = self.lock().clone();
        for topic in topics.all() {
            let Some(topic_image) = image.topic_by_id(topic.id) else {
                continue;
            };
            let min_insync =
                usize::try_from(topic.config.min_insync_replicas(&self.config).max(1)).unwrap_or(1);
            for (index, partition) in &topic.partitions {
                let Some(state) = topic_image.partition(*index) else {
                    continue;
                };
                let state = match superseded {
                    None => state.clone(),
                    Some(_) => PartitionState {
                        leader: crate::metadata::NO_LEADER,
                        ..state.clone()
                    },
                };
                let key = (topic.id, *index);
                let replica = match previous.get(&key) {
                    Some(existing) if Arc::ptr_eq(&existing.partition, partition) => {
                        Arc::clone(existing)
                    }
                    _ => Arc::new(Replica {
                        topic: topic.name.clone(),
                        topic_id: topic.id,
                        index: *index,
                        partition: Arc::clone(partition),
                        role: StdMutex::new(Role::Follower {
                            leader: -1,
                            leader_epoch: -1,
                            high_watermark: 0,
                        }),
                        changed: watch::channel(0).0,
                        checkpointed: StdMutex::new(None),
                    }),
                };
                roles.push((Arc::clone(&replica), state.clone(), min_insync));
                if state.leader != self.node_id && state.leader >= 0 {
                    followed.push(FollowedPartition {
                        topic: topic.name.clone(),
                        topic_id: topic.id,
                        partition: Arc::clone(partition),
                        leader: state.leader,
                        leader_epoch: state.leader_epoch,
                    });
                }
                next.insert(key, replica);
            }
        }
        // The fetchers drop what this node no longer follows before any role changes: once
        // `set_followed` returns no fetcher appends to those logs, so a new leader never sees
        // an old leader's batch land after its own epoch started.
        if let Some(fetchers) = self.fetchers.get() {
            fetchers.set_followed(followed);
        }
        for (replica, state, min_insync) in roles {
            if self.follow_state(&replica, &state, min_insync) {
                woken.push(replica);
            }
        }
        *self.lock() = next;
        // Replicas gone (topic deleted, reassigned) wake their waiters: they are not leaders.
        for (key, replica) in previous {
            if !self.lock().contains_key(&key) {
                *replica.lock() = Role::Follower {
                    leader: -1,
                    leader_epoch: -1,
                    high_watermark: 0,
                };
                woken.push(replica);
            }
        }
        for replica in &woken {
            replica.bump();
        }
        if !woken.is_empty() {
            self.high_watermark_signal.notify();
        }
    }

    /// The incarnation the image registers for this node id, when it is not this process's.
    fn superseded_by(&self, image: &MetadataImage) -> Option<Uuid> {
        let mine = self.incarnation?;
        image
            .brokers
            .get(&self.node_id)
            .map(|registration| registration.incarnation)
            .filter(|current| *current != mine)
    }

    /// Moves `replica` to what `state` says; true when its waiters must look again.
    fn follow_state(&self, replica: &Replica, state: &PartitionState, min_insync: usize) -> bool {
        let mut role = replica.lock();
        let leads = state.leader == self.node_id;
        match &mut *role {
            Role::Leader(leadership) if leads && leadership.leader_epoch == state.leader_epoch => {
                let changed =
                    *leadership.partition != *state || leadership.min_insync != min_insync;
                if changed {
                    *leadership.partition = state.clone();
                    leadership.min_insync = min_insync;
                    if let Some(leader) = leadership.state.as_mut() {
                        leader.set_min_insync_replicas(min_insync);
                        leader.apply_partition_change(membership(state), self.now_ms());
                    }
                }
                changed
            }
            Role::Follower {
                leader,
                leader_epoch,
                ..
            } if !leads && *leader == state.leader && *leader_epoch == state.leader_epoch => false,
            current => {
                let high_watermark = match current {
                    Role::Leader(Leadership {
                        state: Some(leader),
                        ..
                    }) => leader.high_watermark(),
                    Role::Leader(_) => 0,
                    Role::Follower { high_watermark, .. } => *high_watermark,
                };
                *current = if leads {
                    tracing::debug!(topic = %replica.topic, partition = replica.index,
                        leader_epoch = state.leader_epoch, "leading");
                    Role::Leader(Leadership {
                        leader_epoch: state.leader_epoch,
                        partition: Box::new(state.clone()),
                        min_insync,
                        state: None,
                        epoch_stamped: false,
                        inherited_high_watermark: high_watermark,
                    })
                } else {
                    Role::Follower {
                        leader: state.leader,
                        leader_epoch: state.leader_epoch,
                        high_watermark,
                    }
                };
                true
            }
        }
    }

    /// The high watermark of `partition` (whose log is `log`): offsets below it are
    /// committed and visible. A leader's is first advanced from its durable offset; a
    /// follower's is what its fetcher reported; a partition the manager does not know (a
    /// moment between a registry sync and the manager's) has its durable offset, the rule of
    /// a single replica.
    pub fn high_watermark(&self, partition: &Partition, log: &PartitionLog) -> i64 {
        let Some(replica) = self.replica(partition.topic_id(), partition.index) else {
            return log.flushed_offset();
        };
        self.advance(&replica, log)
            // The leadership could not start (its log failed): nothing more is visible.
            .unwrap_or_else(|_| log.log_start_offset())
    }

    /// Advances a leader's HW from its durable offset (waking waiters when it moved) and
    /// returns the replica's HW.
    fn advance(&self, replica: &Replica, log: &PartitionLog) -> Result<i64, BrokerError> {
        stamp_leader_epoch(replica, log);
        let (high_watermark, moved) = {
            let mut role = replica.lock();
            match &mut *role {
                Role::Leader(leadership) => {
                    let leader = leader_state(self.node_id, leadership, log, self.now_ms())?;
                    let moved = leader.advance_high_watermark(log.flushed_offset());
                    (leader.high_watermark(), moved.is_some())
                }
                Role::Follower { high_watermark, .. } => {
                    ((*high_watermark).min(log.flushed_offset()), false)
                }
            }
        };
        if moved {
            replica.bump();
            self.high_watermark_signal.notify();
        }
        Ok(high_watermark)
    }

    /// The follower side's report: the HW of a followed partition (the leader's, capped by
    /// our durable offset). Ignored for a partition this node leads or does not hold.
    pub fn set_follower_high_watermark(&self, topic_id: Uuid, partition: i32, hw: i64) {
        let Some(replica) = self.replica(topic_id, partition) else {
            return;
        };
        let mut role = replica.lock();
        if let Role::Follower { high_watermark, .. } = &mut *role {
            // A follower's HW follows the leader's, which only moves forward during an epoch;
            // a new leader may start lower, and the follower follows it.
            *high_watermark = hw;
        }
    }

    /// Before an acks=all append: this node leads the partition, and its ISR has
    /// `min.insync.replicas` members (else NOT_ENOUGH_REPLICAS). Returns the leader epoch the
    /// wait for the commit is bound to.
    pub fn check_acks_all(&self, partition: &Partition) -> Result<i32, BrokerError> {
        let replica = self
            .replica(partition.topic_id(), partition.index)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(format!("{}", partition.index)))?;
        let role = replica.lock();
        match &*role {
            Role::Leader(leadership) => {
                let isr = leadership.partition.isr.len();
                if isr < leadership.min_insync {
                    return Err(BrokerError::NotEnoughReplicas {
                        topic: replica.topic.clone(),
                        partition: replica.index,
                        isr,
                        min_insync: leadership.min_insync,
                    });
                }
                Ok(leadership.leader_epoch)
            }
            Role::Follower {
                leader,
                leader_epoch,
                ..
            } => Err(replica.not_leader(*leader, *leader_epoch)),
        }
    }

    /// Makes sure the leader state of `partition` exists (stamping the leader epoch into the
    /// log's epoch cache) and returns its leader epoch, which the append must be made under
    /// (`PartitionLog::append_as_leader`). Blocking (an fsync on the first use of a
    /// leadership). Errors: NOT_LEADER_OR_FOLLOWER, storage errors.
    pub fn prepare_leader_append(
        &self,
        partition: &Partition,
        log: &PartitionLog,
    ) -> Result<i32, BrokerError> {
        let Some(replica) = self.replica(partition.topic_id(), partition.index) else {
            // Between the registry's sync and this manager's: no role yet, so no append (its
            // epoch would be unknown and its records above any HW this node could vouch for).
            return Err(BrokerError::NotLeaderOrFollower {
                topic: partition.topic().to_owned(),
                partition: partition.index,
                leader: -1,
                leader_epoch: -1,
            });
        };
        stamp_leader_epoch(&replica, log);
        let mut role = replica.lock();
        match &mut *role {
            Role::Leader(leadership) => {
                let epoch = leadership.leader_epoch;
                leader_state(self.node_id, leadership, log, self.now_ms()).map(|_| epoch)
            }
            Role::Follower {
                leader,
                leader_epoch,
                ..
            } => Err(replica.not_leader(*leader, *leader_epoch)),
        }
    }

    /// Waits until offsets up to `last_offset` are committed (HW > `last_offset`) under the
    /// leadership of `leader_epoch`. The caller has waited for this node's own fsync of them.
    ///
    /// Errors: NOT_LEADER_OR_FOLLOWER when leadership moved; NOT_ENOUGH_REPLICAS_AFTER_APPEND
    /// when the ISR fell below `min.insync.replicas`; REQUEST_TIMED_OUT at `deadline`.
    pub async fn wait_committed(
        &self,
        partition: &Partition,
        log: &PartitionLog,
        leader_epoch: i32,
        last_offset: i64,
        deadline: Instant,
        timeout_ms: i64,
    ) -> Result<(), BrokerError> {
        let Some(replica) = self.replica(partition.topic_id(), partition.index) else {
            return Err(BrokerError::UnknownTopicOrPartition(format!(
                "{}",
                partition.index
            )));
        };
        let mut changes = replica.changed.subscribe();
        loop {
            changes.borrow_and_update();
            let high_watermark = self.advance(&replica, log)?;
            {
                let role = replica.lock();
                match &*role {
                    Role::Leader(leadership) if leadership.leader_epoch == leader_epoch => {
                        if high_watermark > last_offset {
                            return Ok(());
                        }
                        if leadership.partition.isr.len() < leadership.min_insync {
                            return Err(BrokerError::NotEnoughReplicasAfterAppend {
                                topic: replica.topic.clone(),
                                partition: replica.index,
                            });
                        }
                    }
                    Role::Leader(leadership) => {
                        return Err(replica.not_leader(self.node_id, leadership.leader_epoch))
                    }
                    Role::Follower {
                        leader,
                        leader_epoch,
                        ..
                    } => return Err(replica.not_leader(*leader, *leader_epoch)),
                }
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(replica.not_leader(-1, -1));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(BrokerError::ReplicationTimedOut {
                        topic: replica.topic.clone(),
                        partition: replica.index,
                        timeout_ms,
                    });
                }
            }
        }
    }

    /// A replica fetch from `follower` (docs/replication.md "Leader" 1–3): the epoch checks,
    /// the divergence check, and — when it may be served — the follower's progress recorded
    /// and the HW advanced (waking waiters). Blocking (it may build the leader state).
    ///
    /// Errors: NOT_LEADER_OR_FOLLOWER (not the leader, or `follower` is not a replica),
    /// FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH.
    pub fn replica_fetch(
        &self,
        partition: &Partition,
        log: &PartitionLog,
        follower: BrokerId,
        current_leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
    ) -> Result<ReplicaRead, BrokerError> {
        let replica = self
            .replica(partition.topic_id(), partition.index)
            .ok_or(BrokerError::NotAReplica(follower))?;
        let now_ms = self.now_ms();
        stamp_leader_epoch(&replica, log);
        let (read, moved, proposal) = {
            let mut role = replica.lock();
            let Role::Leader(leadership) = &mut *role else {
                let (leader, epoch) = match &*role {
                    Role::Follower {
                        leader,
                        leader_epoch,
                        ..
                    } => (*leader, *leader_epoch),
                    Role::Leader(l) => (self.node_id, l.leader_epoch),
                };
                return Err(replica.not_leader(leader, epoch));
            };
            // A leader is not its own follower: a fetch under its own id is as foreign as one
            // from a broker outside the replica set (Kafka: NOT_LEADER_OR_FOLLOWER).
            if follower == self.node_id || !leadership.partition.replicas.contains(&follower) {
                return Err(BrokerError::NotAReplica(follower));
            }
            check_leader_epoch(current_leader_epoch, leadership.leader_epoch)?;
            let leader = leader_state(self.node_id, leadership, log, self.now_ms())?;
            match leader.check_replica_fetch(
                current_leader_epoch,
                fetch_offset,
                last_fetched_epoch,
                &epoch_cache(log),
                log.log_end_offset(),
            ) {
                ReplicaFetchCheck::Serve => {
                    // After the divergence check (a follower ahead of us with an older epoch
                    // must learn where it diverged), progress is recorded only for an offset
                    // this log has, as Kafka updates a follower's state only after a read in
                    // range: a follower claiming more could otherwise count as caught up and
                    // join the ISR with a log that diverges.
                    let (log_start_offset, log_end_offset) =
                        (log.log_start_offset(), log.log_end_offset());
                    if fetch_offset < log_start_offset || fetch_offset > log_end_offset {
                        return Err(BrokerError::Storage(StorageError::OffsetOutOfRange {
                            offset: fetch_offset,
                            log_start_offset,
                            log_end_offset,
                        }));
                    }
                    leader.record_follower_fetch(
                        follower,
                        fetch_offset,
                        log.log_end_offset(),
                        now_ms,
                    );
                    let moved = leader
                        .advance_high_watermark(log.flushed_offset())
                        .is_some();
                    let proposal = self.propose(&replica, leader, log, now_ms);
                    (
                        ReplicaRead::Serve {
                            high_watermark: leader.high_watermark(),
                        },
                        moved,
                        proposal,
                    )
                }
                ReplicaFetchCheck::Diverging { epoch, end_offset } => (
                    ReplicaRead::Diverging {
                        epoch,
                        end_offset,
                        high_watermark: leader.high_watermark(),
                    },
                    false,
                    None,
                ),
                ReplicaFetchCheck::FencedLeaderEpoch => {
                    return Err(BrokerError::FencedLeaderEpoch {
                        requested: current_leader_epoch,
                        current: leadership.leader_epoch,
                    })
                }
                ReplicaFetchCheck::UnknownLeaderEpoch => {
                    return Err(BrokerError::UnknownLeaderEpoch {
                        requested: current_leader_epoch,
                        current: leadership.leader_epoch,
                    })
                }
                ReplicaFetchCheck::UnknownFetchedEpoch => {
                    return Err(BrokerError::Storage(
                        runnel_storage::StorageError::OffsetOutOfRange {
                            offset: fetch_offset,
                            log_start_offset: log.log_start_offset(),
                            log_end_offset: log.log_end_offset(),
                        },
                    ))
                }
            }
        };
        if moved {
            replica.bump();
            self.high_watermark_signal.notify();
        }
        if let Some(request) = proposal {
            self.submit_alter(&replica, request);
        }
        Ok(read)
    }

    /// The ISR change `leader` proposes now (none while one is in flight), as the request
    /// for the controller.
    fn propose(
        &self,
        replica: &Replica,
        leader: &mut LeaderState,
        log: &PartitionLog,
        now_ms: i64,
    ) -> Option<ControllerRequest> {
        // Where our epoch starts: a joining follower must have passed it (so it truncated any
        // diverging tail).
        let epoch_start = log
            .epoch_entries()
            .iter()
            .rev()
            .find(|e| e.epoch == leader.leader_epoch())
            .map_or(0, |e| e.start_offset);
        let lag_max_ms = i64::try_from(self.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
        let change = leader.propose_isr_change(now_ms, lag_max_ms, epoch_start)?;
        Some(ControllerRequest::AlterPartition {
            broker_id: self.node_id,
            topic_id: replica.topic_id,
            partition: replica.index,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            isr: change.isr,
        })
    }

    /// Sends an `AlterPartition` to the controller in the background. The leader acts on the
    /// committed image only (`apply`); a refusal of a proposal whose base is still current
    /// (an added member fenced, say) frees the partition for the next proposal; an unknown
    /// outcome is asked again; a refusal for stale epochs waits for the newer state, which the
    /// image brings.
    fn submit_alter(&self, replica: &Arc<Replica>, request: ControllerRequest) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ControllerRequest::AlterPartition {
            leader_epoch,
            partition_epoch,
            ..
        } = &request
        else {
            return;
        };
        let (leader_epoch, partition_epoch) = (*leader_epoch, *partition_epoch);
        tracing::info!(topic = %replica.topic, partition = replica.index, ?request, "proposing an ISR change");
        let metadata = self.metadata.clone();
        let replica = Arc::clone(replica);
        drop(runtime.spawn(async move {
            let refusal = loop {
                match metadata.submit(request.clone()).await {
                    Ok(committed) => match committed.reply {
                        ControllerReply::AlterPartition(Ok(_)) => return,
                        ControllerReply::AlterPartition(Err(
                            AlterPartitionError::FencedLeaderEpoch { .. }
                            | AlterPartitionError::InvalidUpdateVersion { .. },
                        )) => return,
                        other => break format!("{other:?}"),
                    },
                    // The outcome is unknown: the change may have been committed. Dropping the
                    // pending change now could let the HW pass a member the controller already
                    // added (KIP-497's maximal ISR), so ask again while the proposal's base is
                    // current; a committed first attempt makes the retry stale, and the image
                    // brings the result.
                    Err(error) => {
                        tracing::info!(topic = %replica.topic, partition = replica.index, %error,
                            "ISR change outcome unknown; asking again");
                        tokio::time::sleep(ALTER_PARTITION_RETRY).await;
                        if !proposal_base_is_current(&replica, leader_epoch, partition_epoch) {
                            return;
                        }
                    }
                }
            };
            tracing::info!(topic = %replica.topic, partition = replica.index, reason = %refusal, "ISR change refused");
            if let Role::Leader(Leadership {
                state: Some(leader),
                ..
            }) = &mut *replica.lock()
            {
                if leader.leader_epoch() == leader_epoch
                    && leader.partition_epoch() == partition_epoch
                {
                    leader.isr_change_failed();
                }
            }
        }));
    }

    /// One pass of the periodic work (blocking): every leader proposes the ISR change it
    /// needs (a laggard out), and HWs that moved are checkpointed.
    pub fn tick(&self) {
        let now_ms = self.now_ms();
        let replicas: Vec<Arc<Replica>> = self.lock().values().cloned().collect();
        for replica in replicas {
            let Some(log) = replica.partition.opened_log() else {
                continue;
            };
            let (high_watermark, proposal) = {
                let mut role = replica.lock();
                match &mut *role {
                    Role::Leader(Leadership {
                        state: Some(leader),
                        ..
                    }) => {
                        let proposal = self.propose(&replica, leader, &log, now_ms);
                        (leader.high_watermark(), proposal)
                    }
                    Role::Leader(_) => continue,
                    Role::Follower { high_watermark, .. } => (*high_watermark, None),
                }
            };
            if let Some(request) = proposal {
                self.submit_alter(&replica, request);
            }
            checkpoint(&replica, &log, high_watermark);
        }
    }

    /// Writes every known HW to its checkpoint (graceful shutdown). Blocking.
    pub fn checkpoint_all(&self) {
        let replicas: Vec<Arc<Replica>> = self.lock().values().cloned().collect();
        for replica in replicas {
            let Some(log) = replica.partition.opened_log() else {
                continue;
            };
            let high_watermark = match &*replica.lock() {
                Role::Leader(Leadership {
                    state: Some(leader),
                    ..
                }) => leader.high_watermark(),
                Role::Leader(_) => continue,
                Role::Follower { high_watermark, .. } => *high_watermark,
            };
            checkpoint(&replica, &log, high_watermark);
        }
    }

    /// Runs [`ReplicaManager::tick`] every `replica.lag.time.max.ms / 2` (at least every
    /// 100 ms, at most every 5 s so that checkpoints stay fresh) until the manager is dropped.
    pub fn start_periodic(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let period =
            Duration::from_millis((self.config.replica_lag_time_max_ms / 2).clamp(100, 5_000));
        let manager = Arc::downgrade(self);
        drop(runtime.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                if tokio::task::spawn_blocking(move || manager.tick())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
}

/// Writes `high_watermark` to the replica's checkpoint if it changed since the last write.
fn checkpoint(replica: &Replica, log: &PartitionLog, high_watermark: i64) {
    let mut last = replica
        .checkpointed
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // Per directory: a log moved to another log dir needs its own checkpoint written.
    if last
        .as_ref()
        .is_some_and(|(dir, written)| *written == high_watermark && dir == log.dir())
    {
        return;
    }
    match log.write_high_watermark(high_watermark) {
        Ok(()) => *last = Some((log.dir().to_path_buf(), high_watermark)),
        Err(error) => {
            tracing::warn!(topic = %replica.topic, partition = replica.index, %error, "high-watermark checkpoint failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use runnel_protocol::batch_builder::{build_batch, NewRecord};
    use tokio::time::{Duration, Instant};

    use runnel_storage::{PartitionLog, StorageError};
    use std::path::Path;

    use super::{
        check_leader_epoch, stamp_leader_epoch, FollowerSide, ReplicaManager, ReplicaRead, Role,
    };
    use crate::broker::{testing, Broker};
    use crate::error::BrokerError;
    use crate::metadata::{BrokerId, MetadataBatch, MetadataImage, MetadataRecord, PartitionState};
    use crate::replication::FollowedPartition;
    use crate::topics::Partition;

    /// Guards against a hang only; never a performance threshold.
    const HANG_DEADLINE: Duration = Duration::from_secs(60);

    /// Applies `record` to the image of `control` as the next batch; waits for the broker.
    async fn change(broker: &Broker, control: &testing::FakeControlPlane, record: MetadataRecord) {
        let mut image = MetadataImage::clone(&broker.metadata.image());
        let index = image.applied_index + 1;
        image.apply(
            index,
            &MetadataBatch {
                request_id: None,
                reply: None,
                records: vec![record],
            },
        );
        control.image.send_replace(Arc::new(image));
        broker.topics.wait_synced(index).await.unwrap();
    }

    /// Node 0 leads `t-0` at epoch 3, node 1 follows, both in sync.
    async fn two_replicas(dir: &std::path::Path) -> (Broker, testing::FakeControlPlane) {
        let image = testing::image(&[0, 1], &[("t", vec![testing::partition(&[0, 1], 0)])]);
        let (metadata, control) = testing::fake(image, 0);
        (testing::open(dir, metadata).await, control)
    }

    /// Appends two records to `partition` as the leader `replicas` knows and flushes them;
    /// returns the last offset.
    async fn append_two(replicas: &Arc<ReplicaManager>, partition: &Arc<Partition>) -> i64 {
        let log = partition.log().await.unwrap();
        let (replicas, partition) = (Arc::clone(replicas), Arc::clone(partition));
        tokio::task::spawn_blocking(move || {
            replicas.prepare_leader_append(&partition, &log).unwrap();
            let record = NewRecord {
                key: None,
                value: Some(b"v".to_vec()),
                headers: Vec::new(),
            };
            log.append(&build_batch(&[record.clone(), record], 0).unwrap())
                .unwrap();
            log.flush(1).unwrap();
            1
        })
        .await
        .unwrap()
    }

    /// Waits, on a task of its own, until offsets up to `last` of `partition` are committed
    /// at `epoch` (or the hang deadline).
    fn spawn_wait_committed(
        replicas: &Arc<ReplicaManager>,
        partition: &Arc<Partition>,
        log: &Arc<PartitionLog>,
        epoch: i32,
        last: i64,
    ) -> tokio::task::JoinHandle<Result<(), BrokerError>> {
        let (replicas, partition, log) =
            (Arc::clone(replicas), Arc::clone(partition), Arc::clone(log));
        tokio::spawn(async move {
            let deadline = Instant::now() + HANG_DEADLINE;
            replicas
                .wait_committed(&partition, &log, epoch, last, deadline, 60_000)
                .await
        })
    }

    #[test]
    fn a_request_epoch_older_is_fenced_newer_unknown_none_or_equal_passes() {
        assert!(check_leader_epoch(-1, 5).is_ok());
        assert!(check_leader_epoch(5, 5).is_ok());
        assert!(matches!(
            check_leader_epoch(4, 5),
            Err(BrokerError::FencedLeaderEpoch { .. })
        ));
        assert!(matches!(
            check_leader_epoch(6, 5),
            Err(BrokerError::UnknownLeaderEpoch { .. })
        ));
    }

    /// A new leadership's epoch is stamped into the log outside the role lock, so building
    /// its leader state (under the role lock) no longer takes the log's writer lock, which a
    /// move to another log dir holds while it copies: here the HW is read while a move's copy
    /// holds the writer lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stamped_leadership_builds_its_state_while_a_move_holds_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, _control) = two_replicas(dir.path()).await;
        let partition = Arc::clone(broker.topics.get("t").unwrap().partition(0).unwrap());
        let log = partition.log().await.unwrap();
        let replica = broker.replicas.replica(partition.topic_id(), 0).unwrap();
        assert!(matches!(&*replica.lock(), Role::Leader(l) if l.state.is_none()));
        stamp_leader_epoch(&replica, &log);
        assert!(matches!(&*replica.lock(), Role::Leader(l) if l.epoch_stamped));

        let replicas = Arc::clone(&broker.replicas);
        let copying = Arc::clone(&log);
        let answered = tokio::task::spawn_blocking(move || {
            let mut answered = false;
            let _ = copying.close_for_move(Path::new("/elsewhere"), |_| {
                let (sent, received) = std::sync::mpsc::channel();
                let log = Arc::clone(&copying);
                std::thread::spawn(move || {
                    let _ = sent.send(replicas.high_watermark(&partition, &log));
                });
                answered = received.recv_timeout(HANG_DEADLINE).is_ok();
                // Not moved after all: the log stays as it was.
                Err::<(), _>(StorageError::EmptyAppend)
            });
            answered
        })
        .await
        .unwrap();
        assert!(answered, "the HW read waited for the move's copy");
        assert!(matches!(&*replica.lock(), Role::Leader(l) if l.state.is_some()));
        assert_eq!(log.latest_epoch(), Some(3));
    }

    /// An acks=all wait ends only when the in-sync follower has fetched past the batch: the
    /// leader's own fsync is not enough, and the HW consumers see stays behind until then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_all_waits_for_the_in_sync_follower() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, _control) = two_replicas(dir.path()).await;
        let partition = Arc::clone(broker.topics.get("t").unwrap().partition(0).unwrap());
        let log = partition.log().await.unwrap();
        let epoch = broker.replicas.check_acks_all(&partition).unwrap();
        assert_eq!(epoch, 3);
        let last = append_two(&broker.replicas, &partition).await;
        assert_eq!(
            log.end_offset_for_epoch(3),
            (3, 2),
            "appends carry the epoch"
        );
        assert_eq!(
            broker.high_watermark(&partition, &log),
            0,
            "follower unknown"
        );

        let waiting = spawn_wait_committed(&broker.replicas, &partition, &log, epoch, last);
        // Stale and future epochs are refused and record nothing; a non-replica too.
        for (current, fenced) in [(2, true), (4, false)] {
            let refused = broker
                .replicas
                .replica_fetch(&partition, &log, 1, current, 2, 3);
            assert!(
                matches!(
                    (&refused, fenced),
                    (Err(BrokerError::FencedLeaderEpoch { .. }), true)
                        | (Err(BrokerError::UnknownLeaderEpoch { .. }), false)
                ),
                "{refused:?}"
            );
        }
        assert!(matches!(
            broker.replicas.replica_fetch(&partition, &log, 7, 3, 2, 3),
            Err(BrokerError::NotAReplica(7))
        ));
        assert_eq!(broker.high_watermark(&partition, &log), 0);

        // The follower fetches from offset 2: it holds both records durably.
        assert_eq!(
            broker
                .replicas
                .replica_fetch(&partition, &log, 1, 3, 2, 3)
                .unwrap(),
            ReplicaRead::Serve { high_watermark: 2 }
        );
        tokio::time::timeout(HANG_DEADLINE, waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(broker.high_watermark(&partition, &log), 2);

        // A follower whose last batch is of an epoch this leader never had diverges.
        assert_eq!(
            broker
                .replicas
                .replica_fetch(&partition, &log, 1, 3, 5, 2)
                .unwrap(),
            ReplicaRead::Diverging {
                epoch: 2,
                end_offset: 0,
                high_watermark: 2
            }
        );
    }

    /// acks=all is refused before the append below `min.insync.replicas`, and a produce
    /// waiting for its commit is told NOT_LEADER_OR_FOLLOWER when leadership moves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_all_is_refused_below_the_minimum_and_fails_when_leadership_moves() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, control) = two_replicas(dir.path()).await;
        let topic_id = broker.topics.get("t").unwrap().id;
        let partition = Arc::clone(broker.topics.get("t").unwrap().partition(0).unwrap());
        let log = partition.log().await.unwrap();
        change(
            &broker,
            &control,
            MetadataRecord::SetTopicConfigs {
                topic_id,
                configs: BTreeMap::from([("min.insync.replicas".into(), "2".into())]),
            },
        )
        .await;
        let epoch = broker.replicas.check_acks_all(&partition).unwrap();
        let last = append_two(&broker.replicas, &partition).await;
        let waiting = spawn_wait_committed(&broker.replicas, &partition, &log, epoch, last);

        // Node 1 leaves the ISR: below the minimum, the waiter and new produces are refused.
        let shrunk = PartitionState {
            isr: vec![0],
            partition_epoch: 4,
            ..testing::partition(&[0, 1], 0)
        };
        change(
            &broker,
            &control,
            MetadataRecord::ChangePartition {
                topic_id,
                partition: 0,
                state: shrunk.clone(),
            },
        )
        .await;
        let outcome = tokio::time::timeout(HANG_DEADLINE, waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                outcome,
                Err(BrokerError::NotEnoughReplicasAfterAppend { .. })
            ),
            "{outcome:?}"
        );
        assert!(matches!(
            broker.replicas.check_acks_all(&partition),
            Err(BrokerError::NotEnoughReplicas {
                isr: 1,
                min_insync: 2,
                ..
            })
        ));

        // Leadership moves to node 1: a new acks=all wait is answered NOT_LEADER_OR_FOLLOWER.
        change(
            &broker,
            &control,
            MetadataRecord::ChangePartition {
                topic_id,
                partition: 0,
                state: PartitionState {
                    isr: vec![0, 1],
                    leader: 1,
                    leader_epoch: 4,
                    partition_epoch: 5,
                    ..shrunk
                },
            },
        )
        .await;
        let deadline = Instant::now() + HANG_DEADLINE;
        assert!(matches!(
            broker
                .replicas
                .wait_committed(&partition, &log, epoch, last, deadline, 60_000)
                .await,
            Err(BrokerError::NotLeaderOrFollower { leader: 1, .. })
        ));
    }

    /// A followed set as (topic, leader) pairs.
    type Followed = Vec<(String, BrokerId)>;

    /// The follower side of a test: every followed set handed over.
    #[derive(Clone, Default)]
    struct RecordedFollowed(Arc<std::sync::Mutex<Vec<Followed>>>);

    impl RecordedFollowed {
        fn last(&self) -> Followed {
            self.0.lock().unwrap().last().cloned().unwrap_or_default()
        }
    }

    impl FollowerSide for RecordedFollowed {
        fn set_followed(&self, partitions: Vec<FollowedPartition>) {
            let followed = partitions
                .into_iter()
                .map(|p| (p.topic, p.leader))
                .collect();
            self.0.lock().unwrap().push(followed);
        }

        fn shutdown(&self) {}
    }

    /// `image` with `records` applied as its next batch.
    fn next_image(image: &MetadataImage, records: Vec<MetadataRecord>) -> MetadataImage {
        let mut next = image.clone();
        next.apply(
            image.applied_index + 1,
            &MetadataBatch {
                request_id: None,
                reply: None,
                records,
            },
        );
        next
    }

    /// A process whose node id another process registered with since (a newer incarnation in
    /// the image) leads nothing and follows nothing, even while the image still names node 0
    /// leader: its waiting acks=all produce is told NOT_LEADER_OR_FOLLOWER, a new one and a
    /// leader append are refused, a replica fetch is not served. Registered again, it acts
    /// again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_superseded_incarnation_leads_and_follows_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let image = testing::image(
            &[0, 1],
            &[
                ("led", vec![testing::partition(&[0, 1], 0)]),
                ("followed", vec![testing::partition(&[1, 0], 1)]),
            ],
        );
        let mine = image.brokers[&0].incarnation;
        let (metadata, _control) = testing::fake(image.clone(), 0);
        let broker = testing::open(dir.path(), metadata).await;
        // A manager of its own, registered as `mine`, over the broker's logs.
        let manager = Arc::new(ReplicaManager::new(
            Arc::clone(&broker.config),
            Some(mine),
            broker.metadata.clone(),
            broker.high_watermark_signal(),
        ));
        let followed = RecordedFollowed::default();
        manager.set_fetchers(Box::new(followed.clone()));
        manager.apply(&image, &broker.topics);
        assert_eq!(followed.last(), vec![("followed".to_string(), 1)]);

        let partition = Arc::clone(broker.topics.get("led").unwrap().partition(0).unwrap());
        let log = partition.log().await.unwrap();
        let epoch = manager.check_acks_all(&partition).unwrap();
        let last = append_two(&manager, &partition).await;
        // Node 1 has not fetched: the commit waits.
        let waiting = spawn_wait_committed(&manager, &partition, &log, epoch, last);

        // Another process registers as node 0; the controller has not moved anything yet.
        let superseded = next_image(
            &image,
            vec![MetadataRecord::RegisterBroker {
                broker_id: 0,
                incarnation: uuid::Uuid::new_v4(),
                endpoints: image.brokers[&0].endpoints.clone(),
                rack: None,
            }],
        );
        assert_eq!(
            superseded
                .topic("led")
                .unwrap()
                .partition(0)
                .unwrap()
                .leader,
            0
        );
        manager.apply(&superseded, &broker.topics);
        assert_eq!(followed.last(), Vec::new(), "follows nothing");
        let outcome = tokio::time::timeout(HANG_DEADLINE, waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                outcome,
                Err(BrokerError::NotLeaderOrFollower { leader: -1, .. })
            ),
            "{outcome:?}"
        );
        assert!(matches!(
            manager.check_acks_all(&partition),
            Err(BrokerError::NotLeaderOrFollower { .. })
        ));
        let (appending, appending_log) = (Arc::clone(&partition), Arc::clone(&log));
        let manager_for_append = Arc::clone(&manager);
        let refused = tokio::task::spawn_blocking(move || {
            manager_for_append.prepare_leader_append(&appending, &appending_log)
        })
        .await
        .unwrap();
        assert!(
            matches!(refused, Err(BrokerError::NotLeaderOrFollower { .. })),
            "{refused:?}"
        );
        let fetch = manager.replica_fetch(&partition, &log, 1, epoch, 1, epoch);
        assert!(
            matches!(fetch, Err(BrokerError::NotLeaderOrFollower { .. })),
            "{fetch:?}"
        );

        // This process registers again (its lifecycle does when told it is fenced).
        let registered_again = next_image(
            &superseded,
            vec![MetadataRecord::RegisterBroker {
                broker_id: 0,
                incarnation: mine,
                endpoints: image.brokers[&0].endpoints.clone(),
                rack: None,
            }],
        );
        manager.apply(&registered_again, &broker.topics);
        assert_eq!(followed.last(), vec![("followed".to_string(), 1)]);
        assert_eq!(manager.check_acks_all(&partition).unwrap(), epoch);
    }
}
