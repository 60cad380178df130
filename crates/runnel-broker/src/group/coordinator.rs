//! `GroupCoordinator`: Kafka's classic group protocol as a state machine without I/O.
//!
//! States: `Empty → PreparingRebalance → CompletingRebalance → Stable`, back to
//! `PreparingRebalance` when membership or subscriptions change, and `Dead` once deleted.
//! JoinGroup and SyncGroup are long polls: a call returns [`Reply::Later`] with a receiver that
//! is answered when the rebalance moves on. Time is an argument ([`Now`]); [`next_deadline`]
//! and [`expire`] let a timer task (or a test) drive session and rebalance timeouts.
//!
//! Invariants: every waiting join or sync is answered exactly once (a replaced or removed
//! member's waiter gets an error); `static_members` maps each instance id to a current member;
//! a group's generation only grows.
//!
//! [`next_deadline`]: GroupCoordinator::next_deadline
//! [`expire`]: GroupCoordinator::expire

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The moment an operation happens: a monotonic instant for deadlines, wall-clock ms for what
/// is stored (commit timestamps, state timestamps).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for timeouts.
    pub at: Instant,
    /// Milliseconds since the Unix epoch, for stored timestamps and retention.
    pub wall_ms: i64,
}

impl Now {
    /// The current time.
    pub fn current() -> Now {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Now {
            at: Instant::now(),
            wall_ms,
        }
    }
}

/// Group settings (from the broker's `group.*` and `offset*` settings).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members.
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.max.size`: members per group.
    pub max_size: usize,
    /// `offset.metadata.max.bytes`: longest metadata string of a commit.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes` in ms: offsets of an empty group older than this expire.
    pub offsets_retention_ms: i64,
}

/// The errors of the group protocol; `BrokerError::Group` maps them to Kafka codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member id is not (or no longer) in the group.
    #[error("unknown member id")]
    UnknownMemberId,
    /// The generation is not the group's current one.
    #[error("illegal generation")]
    IllegalGeneration,
    /// The group is rebalancing: rejoin.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// Another member took over this `group.instance.id`.
    #[error("fenced by a newer member with the same group.instance.id")]
    FencedInstanceId,
    /// Protocol type or protocols incompatible with the group's.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// Session timeout outside the broker's bounds.
    #[error("session timeout outside group.min/max.session.timeout.ms")]
    InvalidSessionTimeout,
    /// KIP-394: rejoin with the member id given in this response.
    #[error("member id required")]
    MemberIdRequired,
    /// `group.max.size` reached.
    #[error("group is full (group.max.size)")]
    GroupMaxSizeReached,
    /// The group is being deleted or loaded: retry.
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// An empty group id.
    #[error("invalid group id")]
    InvalidGroupId,
    /// No such group.
    #[error("group id not found")]
    GroupIdNotFound,
    /// DeleteGroups on a group that has members.
    #[error("group is not empty")]
    NonEmptyGroup,
    /// Commit metadata longer than `offset.metadata.max.bytes`.
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    /// OffsetDelete for a topic the group's members subscribe to.
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
}

/// The classic protocol states, named as Kafka names them in ListGroups and DescribeGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (possibly committed offsets).
    Empty,
    /// Collecting joins for the next generation.
    PreparingRebalance,
    /// Generation formed; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assignment distributed; members heartbeat.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// An immediate answer or one that comes when the rebalance progresses.
#[derive(Debug)]
pub enum Reply<T> {
    /// Answered now.
    Now(T),
    /// Answered later through this channel.
    Later(oneshot::Receiver<T>),
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The group.
    pub group_id: String,
    /// Empty for a new member.
    pub member_id: String,
    /// `group.instance.id` (static membership, v5+).
    pub group_instance_id: Option<String>,
    /// The client's id, for DescribeGroups and generated member ids.
    pub client_id: String,
    /// The client's address, for DescribeGroups.
    pub client_host: String,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `rebalance.timeout.ms` (v0: the session timeout).
    pub rebalance_timeout_ms: i32,
    /// Protocol type (`consumer`, `connect`, …); opaque.
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference; metadata opaque.
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member_id: bool,
}

/// One member as the leader sees it in the join response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// The member's metadata for the selected protocol.
    pub metadata: Bytes,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// Error, if any (with MEMBER_ID_REQUIRED, `member_id` is set).
    pub error: Option<GroupError>,
    /// The new generation (-1 on error).
    pub generation_id: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The selected protocol.
    pub protocol_name: Option<String>,
    /// Leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    fn error(error: GroupError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup request, decoded.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// The group.
    pub group_id: String,
    /// The member.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// The generation it joined.
    pub generation_id: i32,
    /// v5: must match the group's protocol type if given.
    pub protocol_type: Option<String>,
    /// v5: must match the selected protocol if given.
    pub protocol_name: Option<String>,
    /// The leader's assignment per member id (empty for followers).
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    /// Error, if any.
    pub error: Option<GroupError>,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The selected protocol.
    pub protocol_name: Option<String>,
    /// This member's assignment (empty bytes when none).
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: GroupError) -> SyncResult {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// The result of removing one member in LeaveGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveOutcome {
    /// The member id given (or found by instance id).
    pub member_id: String,
    /// Its instance id as given.
    pub group_instance_id: Option<String>,
    /// Error for this member.
    pub error: Option<GroupError>,
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to read.
    pub offset: i64,
    /// Leader epoch of the committed record, -1 if unknown.
    pub leader_epoch: i32,
    /// Client metadata string.
    pub metadata: String,
    /// When committed, ms since the epoch.
    pub commit_timestamp_ms: i64,
}

/// A group in ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// Group id.
    pub group_id: String,
    /// Protocol type, empty for groups that only store offsets.
    pub protocol_type: String,
    /// State.
    pub state: GroupState,
}

/// A member in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata of the selected protocol (Stable only).
    pub metadata: Bytes,
    /// Assignment (Stable only).
    pub assignment: Bytes,
    /// Rebalance timeout, ms.
    pub rebalance_timeout_ms: i32,
    /// Session timeout, ms.
    pub session_timeout_ms: i32,
}

/// A group in DescribeGroups, and the group metadata stored in `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    /// Group id.
    pub group_id: String,
    /// State.
    pub state: GroupState,
    /// Protocol type ("" for none).
    pub protocol_type: String,
    /// Selected protocol ("" unless Stable for describe; the stored one for snapshots).
    pub protocol_name: String,
    /// Generation.
    pub generation_id: i32,
    /// Leader's member id.
    pub leader: Option<String>,
    /// When the group entered its state, ms since the epoch.
    pub state_timestamp_ms: i64,
    /// Members.
    pub members: Vec<DescribedMember>,
}

#[derive(Debug)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    /// The session expires here unless the member is waiting in a join or sync.
    heartbeat_deadline: Instant,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn session(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.session_timeout_ms).unwrap_or(0))
    }

    fn reply_join(&mut self, result: JoinResult) {
        if let Some(waiter) = self.join_waiter.take() {
            // The client may have gone; nothing to do then.
            let _ = waiter.send(result);
        }
    }

    fn reply_sync(&mut self, result: SyncResult) {
        if let Some(waiter) = self.sync_waiter.take() {
            let _ = waiter.send(result);
        }
    }
}

#[derive(Debug)]
struct Group {
    group_id: String,
    state: GroupState,
    state_timestamp_ms: i64,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Instance id → member id of static members.
    static_members: HashMap<String, String>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, awaiting the rejoin (until the deadline).
    pending_members: HashMap<String, Instant>,
    /// End of the join phase while PreparingRebalance.
    rebalance_deadline: Option<Instant>,
    /// While the first rebalance of an empty group waits `group.initial.rebalance.delay.ms`:
    /// the latest the join phase may be extended to.
    initial_join_limit: Option<Instant>,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
}

impl Group {
    fn new(group_id: &str, now: Now) -> Group {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: now.wall_ms,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline: None,
            initial_join_limit: None,
            offsets: BTreeMap::new(),
        }
    }

    fn transition(&mut self, state: GroupState, now: Now) {
        self.state = state;
        self.state_timestamp_ms = now.wall_ms;
    }

    /// Whether every member supports one of `protocols` along with the group's current set.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.all_members_support(name))
    }

    fn all_members_support(&self, protocol: &str) -> bool {
        self.members
            .values()
            .all(|m| m.protocols.iter().any(|(name, _)| name == protocol))
    }

    /// Kafka's selection: candidates supported by every member; each member votes for its most
    /// preferred candidate; most votes wins (ties by name, for determinism).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.all_members_support(name))
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name))
            {
                *votes.entry(name).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(name, _)| name.clone())
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn max_rebalance_timeout(&self) -> Duration {
        let ms = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// Checks a static member's instance id against the member id it claims.
    fn check_fenced(
        &self,
        member_id: &str,
        instance_id: Option<&String>,
    ) -> Result<(), GroupError> {
        if let Some(instance_id) = instance_id {
            if let Some(current) = self.static_members.get(instance_id) {
                if current != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
            }
        }
        Ok(())
    }

    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&String>,
    ) -> Result<(), GroupError> {
        self.check_fenced(member_id, instance_id)?;
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(GroupError::UnknownMemberId)
        }
    }

    fn describe(&self, with_metadata: bool) -> DescribedGroup {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        DescribedGroup {
            group_id: self.group_id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            generation_id: self.generation_id,
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| DescribedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if with_metadata {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if with_metadata {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                })
                .collect(),
        }
    }
}

/// All groups: membership, rebalances and committed offsets, in memory. `Send + Sync`; every
/// method takes the one lock briefly and never across an `.await`.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    state: Mutex<State>,
    /// Wakes the timer task when a deadline may have moved earlier.
    deadlines_changed: tokio::sync::Notify,
    /// Held while group metadata is written, so records reach the log in the order of changes.
    write_order: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<String, Group>,
    /// Groups whose metadata must be (re)written to `__consumer_offsets`.
    dirty: BTreeSet<String>,
}

impl GroupCoordinator {
    /// An empty coordinator.
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        GroupCoordinator {
            config,
            state: Mutex::new(State::default()),
            deadlines_changed: tokio::sync::Notify::new(),
            write_order: tokio::sync::Mutex::new(()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Updates are small and complete under the lock; a panic elsewhere leaves valid state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock that orders group metadata writes (held across the write, an async mutex).
    pub fn write_order(&self) -> &tokio::sync::Mutex<()> {
        &self.write_order
    }

    /// Resolves when a deadline may have changed (for the timer task).
    pub async fn deadlines_changed(&self) {
        self.deadlines_changed.notified().await;
    }

    fn wake_timers(&self) {
        self.deadlines_changed.notify_one();
    }

    /// JoinGroup.
    pub fn join(&self, request: JoinRequest, now: Now) -> Reply<JoinResult> {
        let reply = {
            let mut state = self.lock();
            self.join_locked(&mut state, request, now)
        };
        self.wake_timers();
        reply
    }

    fn join_locked(&self, state: &mut State, request: JoinRequest, now: Now) -> Reply<JoinResult> {
        let fail = |error| Reply::Now(JoinResult::error(error, &request.member_id));
        if request.group_id.is_empty() {
            return fail(GroupError::InvalidGroupId);
        }
        if request.session_timeout_ms < self.config.min_session_timeout_ms
            || request.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(GroupError::InvalidSessionTimeout);
        }
        let known_member = !request.member_id.is_empty();
        if known_member && !state.groups.contains_key(&request.group_id) {
            return fail(GroupError::UnknownMemberId);
        }
        if !state.groups.contains_key(&request.group_id)
            && (request.protocol_type.is_empty() || request.protocols.is_empty())
        {
            return fail(GroupError::InconsistentGroupProtocol);
        }
        let State { groups, dirty } = state;
        let group = groups
            .entry(request.group_id.clone())
            .or_insert_with(|| Group::new(&request.group_id, now));
        if group.state == GroupState::Dead {
            return fail(GroupError::CoordinatorNotAvailable);
        }
        if !group.supports(&request.protocol_type, &request.protocols) {
            // Static members replacing themselves are judged after the replacement below
            // only if the group would otherwise accept them; keep Kafka's order: protocols first.
            return fail(GroupError::InconsistentGroupProtocol);
        }
        if known_member {
            return self.join_known_member(group, dirty, request, now);
        }
        // A new member, or a static member restarting with an empty member id.
        if let Some(instance_id) = request.group_instance_id.clone() {
            if let Some(old_id) = group.static_members.get(&instance_id).cloned() {
                return self.replace_static_member(group, dirty, request, &old_id, now);
            }
        }
        if group.members.len() >= self.config.max_size {
            return fail(GroupError::GroupMaxSizeReached);
        }
        let prefix = request
            .group_instance_id
            .as_deref()
            .unwrap_or(&request.client_id);
        let member_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        if request.require_known_member_id && request.group_instance_id.is_none() {
            let deadline = now.at + session_of(&request);
            group.pending_members.insert(member_id.clone(), deadline);
            return Reply::Now(JoinResult::error(GroupError::MemberIdRequired, &member_id));
        }
        self.add_member_and_rebalance(group, request, member_id, now)
    }

    fn join_known_member(
        &self,
        group: &mut Group,
        dirty: &mut BTreeSet<String>,
        request: JoinRequest,
        now: Now,
    ) -> Reply<JoinResult> {
        let member_id = request.member_id.clone();
        if group.pending_members.remove(&member_id).is_some() {
            if group.members.len() >= self.config.max_size {
                return Reply::Now(JoinResult::error(
                    GroupError::GroupMaxSizeReached,
                    &member_id,
                ));
            }
            return self.add_member_and_rebalance(group, request, member_id, now);
        }
        if let Err(error) = group.check_member(&member_id, request.group_instance_id.as_ref()) {
            return Reply::Now(JoinResult::error(error, &member_id));
        }
        let _ = dirty;
        match group.state {
            GroupState::PreparingRebalance => {
                let rx = self.update_member(group, &request, now);
                self.maybe_complete_join(group, now);
                Reply::Later(rx)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let unchanged = group
                    .members
                    .get(&member_id)
                    .is_some_and(|m| m.protocols == request.protocols);
                let is_leader = group.leader.as_deref() == Some(&member_id);
                if unchanged && (group.state == GroupState::CompletingRebalance || !is_leader) {
                    // A follower (or anyone before the sync) resending the same join: answer
                    // with the current generation, no rebalance.
                    if let Some(member) = group.members.get_mut(&member_id) {
                        member.heartbeat_deadline = now.at + member.session();
                    }
                    return Reply::Now(current_join_result(group, &member_id));
                }
                let rx = self.update_member(group, &request, now);
                self.prepare_rebalance(group, now);
                self.maybe_complete_join(group, now);
                Reply::Later(rx)
            }
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(JoinResult::error(GroupError::UnknownMemberId, &member_id))
            }
        }
    }

    /// KIP-345: a static member rejoining with an empty member id takes over its instance id;
    /// the old member id is fenced. In a Stable group with unchanged protocols, no rebalance.
    fn replace_static_member(
        &self,
        group: &mut Group,
        dirty: &mut BTreeSet<String>,
        request: JoinRequest,
        old_id: &str,
        now: Now,
    ) -> Reply<JoinResult> {
        let Some(mut member) = group.members.remove(old_id) else {
            // The map said it was there; repair and treat as new.
            if let Some(instance_id) = &request.group_instance_id {
                group.static_members.remove(instance_id);
            }
            let member_id = format!("{}-{}", request.client_id, uuid::Uuid::new_v4());
            return self.add_member_and_rebalance(group, request, member_id, now);
        };
        member.reply_join(JoinResult::error(GroupError::FencedInstanceId, old_id));
        member.reply_sync(SyncResult::error(GroupError::FencedInstanceId));
        let prefix = request
            .group_instance_id
            .clone()
            .unwrap_or_else(|| request.client_id.clone());
        let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        member.member_id = new_id.clone();
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.protocols = request.protocols.clone();
        member.heartbeat_deadline = now.at + member.session();
        group.members.insert(new_id.clone(), member);
        if let Some(instance_id) = &request.group_instance_id {
            group
                .static_members
                .insert(instance_id.clone(), new_id.clone());
        }
        if group.leader.as_deref() == Some(old_id) {
            group.leader = Some(new_id.clone());
        }
        // Kafka's rule: no rebalance if the group would still select the same protocol.
        let protocol_unchanged = group.select_protocol() == group.protocol_name;
        match group.state {
            GroupState::Stable if protocol_unchanged => {
                dirty.insert(group.group_id.clone());
                Reply::Now(current_join_result(group, &new_id))
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                if let Some(member) = group.members.get_mut(&new_id) {
                    member.join_waiter = Some(tx);
                }
                if group.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(group, now);
                }
                self.maybe_complete_join(group, now);
                Reply::Later(rx)
            }
        }
    }

    fn add_member_and_rebalance(
        &self,
        group: &mut Group,
        request: JoinRequest,
        member_id: String,
        now: Now,
    ) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id.clone(),
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(tx),
            sync_waiter: None,
            heartbeat_deadline: now.at
                + Duration::from_millis(u64::try_from(request.session_timeout_ms).unwrap_or(0)),
        };
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type);
        }
        if let Some(instance_id) = request.group_instance_id {
            group.static_members.insert(instance_id, member_id.clone());
        }
        group.members.insert(member_id, member);
        match group.state {
            GroupState::PreparingRebalance => {
                // During the initial delay every new member pushes the end out by one delay.
                if let (Some(limit), Some(_)) = (group.initial_join_limit, group.rebalance_deadline)
                {
                    let extended = (now.at + self.config.initial_rebalance_delay).min(limit);
                    group.rebalance_deadline = Some(extended);
                }
            }
            _ => self.prepare_rebalance(group, now),
        }
        self.maybe_complete_join(group, now);
        Reply::Later(rx)
    }

    /// Records a known member's new join: protocols, timeouts, waiter.
    fn update_member(
        &self,
        group: &mut Group,
        request: &JoinRequest,
        now: Now,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(member) = group.members.get_mut(&request.member_id) {
            // A retried join replaces the earlier waiter; that one is told to rejoin.
            member.reply_join(JoinResult::error(
                GroupError::RebalanceInProgress,
                &request.member_id,
            ));
            member.protocols = request.protocols.clone();
            member.session_timeout_ms = request.session_timeout_ms;
            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
            member.client_id = request.client_id.clone();
            member.client_host = request.client_host.clone();
            member.join_waiter = Some(tx);
            member.heartbeat_deadline = now.at + member.session();
        }
        rx
    }

    fn prepare_rebalance(&self, group: &mut Group, now: Now) {
        if group.state == GroupState::CompletingRebalance {
            for member in group.members.values_mut() {
                member.assignment = Bytes::new();
                member.reply_sync(SyncResult::error(GroupError::RebalanceInProgress));
            }
        }
        let rebalance_timeout = group.max_rebalance_timeout();
        if group.state == GroupState::Empty {
            let delay = self.config.initial_rebalance_delay.min(rebalance_timeout);
            group.rebalance_deadline = Some(now.at + delay);
            group.initial_join_limit = Some(now.at + rebalance_timeout);
        } else {
            group.rebalance_deadline = Some(now.at + rebalance_timeout);
            group.initial_join_limit = None;
        }
        tracing::info!(
            group = %group.group_id,
            generation = group.generation_id,
            members = group.members.len(),
            "rebalance: preparing"
        );
        group.transition(GroupState::PreparingRebalance, now);
    }

    /// Completes the join phase if everyone has joined (outside the initial delay) or the
    /// deadline passed.
    fn maybe_complete_join(&self, group: &mut Group, now: Now) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let deadline_passed = group.rebalance_deadline.is_none_or(|d| now.at >= d);
        let waiting_initial_delay =
            group.initial_join_limit.is_some() && !self.config.initial_rebalance_delay.is_zero();
        if deadline_passed || (!waiting_initial_delay && group.all_members_joined()) {
            self.complete_join(group, now);
        }
    }

    fn complete_join(&self, group: &mut Group, now: Now) {
        // Dynamic members that did not rejoin are out; static ones stay until their session
        // expires (KIP-345).
        let missing: Vec<String> = group
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in missing {
            remove_member(group, &member_id);
        }
        group.rebalance_deadline = None;
        group.initial_join_limit = None;
        group.generation_id = group.generation_id.saturating_add(1);
        if group.members.is_empty() {
            group.protocol_name = None;
            group.leader = None;
            group.transition(GroupState::Empty, now);
            return;
        }
        group.protocol_name = group.select_protocol();
        if group
            .leader
            .as_ref()
            .is_none_or(|leader| !group.members.contains_key(leader))
        {
            // Prefer a member that rejoined, so the leader can answer promptly.
            group.leader = group
                .members
                .values()
                .find(|m| m.join_waiter.is_some())
                .or_else(|| group.members.values().next())
                .map(|m| m.member_id.clone());
        }
        group.transition(GroupState::CompletingRebalance, now);
        tracing::info!(
            group = %group.group_id,
            generation = group.generation_id,
            members = group.members.len(),
            protocol = group.protocol_name.as_deref().unwrap_or(""),
            "rebalance: join phase complete"
        );
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let all: Vec<JoinedMember> = group
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        let leader = group.leader.clone().unwrap_or_default();
        for member in group.members.values_mut() {
            member.heartbeat_deadline = now.at + member.session();
            let is_leader = member.member_id == leader;
            let result = JoinResult {
                error: None,
                generation_id: group.generation_id,
                protocol_type: group.protocol_type.clone(),
                protocol_name: Some(protocol.clone()),
                leader: leader.clone(),
                member_id: member.member_id.clone(),
                members: if is_leader { all.clone() } else { Vec::new() },
            };
            member.reply_join(result);
        }
    }

    /// SyncGroup.
    pub fn sync(&self, request: SyncRequest, now: Now) -> Reply<SyncResult> {
        let reply = {
            let mut state = self.lock();
            let State { groups, dirty } = &mut *state;
            sync_locked(groups, dirty, request, now)
        };
        self.wake_timers();
        reply
    }

    /// Heartbeat: Ok keeps the session alive; REBALANCE_IN_PROGRESS tells the member to rejoin.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&String>,
        generation_id: i32,
        now: Now,
    ) -> Result<(), GroupError> {
        let mut state = self.lock();
        let group = state
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if group.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        group.check_member(member_id, instance_id)?;
        if group.state == GroupState::Empty {
            return Err(GroupError::UnknownMemberId);
        }
        if generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.heartbeat_deadline = now.at + member.session();
        }
        match group.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for several members (v3+), or one (v0–2, `members` of one with no instance).
    pub fn leave(
        &self,
        group_id: &str,
        members: Vec<(String, Option<String>)>,
        now: Now,
    ) -> Result<Vec<LeaveOutcome>, GroupError> {
        let outcomes = {
            let mut state = self.lock();
            let State { groups, dirty } = &mut *state;
            let group = groups
                .get_mut(group_id)
                .ok_or(GroupError::UnknownMemberId)?;
            if group.state == GroupState::Dead {
                return Err(GroupError::CoordinatorNotAvailable);
            }
            let mut outcomes = Vec::with_capacity(members.len());
            let mut removed_any = false;
            for (member_id, instance_id) in members {
                let error = self.leave_one(group, &member_id, instance_id.as_ref());
                removed_any |= error.is_none();
                outcomes.push(LeaveOutcome {
                    member_id,
                    group_instance_id: instance_id,
                    error,
                });
            }
            if removed_any {
                self.after_member_removed(group, dirty, now);
            }
            outcomes
        };
        self.wake_timers();
        Ok(outcomes)
    }

    fn leave_one(
        &self,
        group: &mut Group,
        member_id: &str,
        instance_id: Option<&String>,
    ) -> Option<GroupError> {
        if group.pending_members.remove(member_id).is_some() {
            return None;
        }
        let target = match instance_id {
            Some(instance_id) => match group.static_members.get(instance_id) {
                None => return Some(GroupError::UnknownMemberId),
                // Kafka: an instance id with a member id that is not its current one is fenced;
                // an unknown (empty) member id means "whoever holds the instance id".
                Some(current) if !member_id.is_empty() && current != member_id => {
                    return Some(GroupError::FencedInstanceId)
                }
                Some(current) => current.clone(),
            },
            None => member_id.to_string(),
        };
        if !group.members.contains_key(&target) {
            return Some(GroupError::UnknownMemberId);
        }
        if let Some(mut member) = remove_member(group, &target) {
            member.reply_join(JoinResult::error(GroupError::UnknownMemberId, &target));
            member.reply_sync(SyncResult::error(GroupError::UnknownMemberId));
        }
        None
    }

    /// After members left or expired: rebalance, or complete a join that was waiting for them.
    fn after_member_removed(&self, group: &mut Group, dirty: &mut BTreeSet<String>, now: Now) {
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if group.members.is_empty() {
                    group.generation_id = group.generation_id.saturating_add(1);
                    group.protocol_name = None;
                    group.leader = None;
                    if group.state == GroupState::CompletingRebalance {
                        // Nobody left to sync.
                    }
                    group.transition(GroupState::Empty, now);
                    dirty.insert(group.group_id.clone());
                } else {
                    self.prepare_rebalance(group, now);
                    self.maybe_complete_join(group, now);
                }
            }
            GroupState::PreparingRebalance => {
                self.maybe_complete_join(group, now);
                if group.state == GroupState::Empty {
                    dirty.insert(group.group_id.clone());
                }
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// The earliest moment [`expire`](Self::expire) has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let state = self.lock();
        state
            .groups
            .values()
            .flat_map(|group| {
                let members = group
                    .members
                    .values()
                    .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none())
                    .map(|m| m.heartbeat_deadline);
                group
                    .rebalance_deadline
                    .into_iter()
                    .chain(group.pending_members.values().copied())
                    .chain(members)
                    .collect::<Vec<_>>()
            })
            .min()
    }

    /// Runs every timeout due at `now`: expired sessions leave their group (which rebalances),
    /// expired KIP-394 member ids are forgotten, and join phases past their deadline complete.
    pub fn expire(&self, now: Now) {
        {
            let mut state = self.lock();
            let State { groups, dirty } = &mut *state;
            for group in groups.values_mut() {
                group
                    .pending_members
                    .retain(|_, deadline| now.at < *deadline);
                let expired: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| {
                        m.join_waiter.is_none()
                            && m.sync_waiter.is_none()
                            && now.at >= m.heartbeat_deadline
                    })
                    .map(|m| m.member_id.clone())
                    .collect();
                for member_id in &expired {
                    tracing::info!(group = %group.group_id, member = %member_id, "session expired");
                    remove_member(group, member_id);
                }
                if !expired.is_empty() {
                    self.after_member_removed(group, dirty, now);
                }
                if group.state == GroupState::PreparingRebalance {
                    self.maybe_complete_join(group, now);
                    if group.state == GroupState::Empty {
                        dirty.insert(group.group_id.clone());
                    }
                }
            }
        }
        // No wake-up here: the timer task is the caller and recomputes its deadline.
    }

    /// Takes the groups whose metadata changed, with what to write for each: the group's
    /// current metadata, or `None` (a tombstone) for a group that no longer exists.
    pub fn take_dirty(&self) -> Vec<(String, Option<DescribedGroup>)> {
        let mut state = self.lock();
        let dirty = std::mem::take(&mut state.dirty);
        dirty
            .into_iter()
            .map(|group_id| {
                let snapshot = state
                    .groups
                    .get(&group_id)
                    .filter(|g| g.state != GroupState::Dead)
                    .map(|g| g.describe(true));
                (group_id, snapshot)
            })
            .collect()
    }

    /// Whether an OffsetCommit may be applied, creating an offsets-only group for a simple
    /// consumer (generation < 0, empty member id). A member's commit keeps its session alive.
    pub fn validate_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&String>,
        generation_id: i32,
        now: Now,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let mut state = self.lock();
        let group = match state.groups.get_mut(group_id) {
            Some(group) => group,
            None if generation_id < 0 => state
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now)),
            None => return Err(GroupError::IllegalGeneration),
        };
        if group.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        group.check_fenced(member_id, instance_id)?;
        if generation_id < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        let member = group
            .members
            .get_mut(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        member.heartbeat_deadline = now.at + member.session();
        Ok(())
    }

    /// Records durable commits (after they were written to `__consumer_offsets`), or restores
    /// them while loading.
    pub fn apply_commits(
        &self,
        group_id: &str,
        offsets: Vec<((String, i32), CommittedOffset)>,
        now: Now,
    ) {
        let mut state = self.lock();
        let group = state
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now));
        group.offsets.extend(offsets);
    }

    /// Forgets offsets (OffsetDelete, deleted topics, tombstones while loading).
    pub fn remove_offsets(&self, group_id: &str, partitions: &[(String, i32)]) {
        let mut state = self.lock();
        if let Some(group) = state.groups.get_mut(group_id) {
            for partition in partitions {
                group.offsets.remove(partition);
            }
        }
    }

    /// Committed offsets: of `partitions`, or all when `None`. Missing ones are left out.
    pub fn committed(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> BTreeMap<(String, i32), CommittedOffset> {
        let state = self.lock();
        let Some(group) = state.groups.get(group_id) else {
            return BTreeMap::new();
        };
        match partitions {
            None => group.offsets.clone(),
            Some(wanted) => wanted
                .iter()
                .filter_map(|p| group.offsets.get(p).map(|o| (p.clone(), o.clone())))
                .collect(),
        }
    }

    /// Every (group, partition) with an offset on `topic` (for dropping a deleted topic's).
    pub fn offsets_of_topic(&self, topic: &str) -> Vec<(String, (String, i32))> {
        let state = self.lock();
        state
            .groups
            .values()
            .flat_map(|g| {
                g.offsets
                    .keys()
                    .filter(|(t, _)| t == topic)
                    .map(|k| (g.group_id.clone(), k.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// ListGroups: every group (including offsets-only ones).
    pub fn list(&self) -> Vec<ListedGroup> {
        let state = self.lock();
        let mut groups: Vec<ListedGroup> = state
            .groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| ListedGroup {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups
    }

    /// DescribeGroups: member metadata and assignments only when Stable (as Kafka does); an
    /// unknown group is described as Dead.
    pub fn describe(&self, group_id: &str) -> DescribedGroup {
        let state = self.lock();
        match state.groups.get(group_id) {
            Some(group) => {
                let stable = group.state == GroupState::Stable;
                let mut described = group.describe(stable);
                if !stable {
                    described.protocol_name = String::new();
                }
                described
            }
            None => DescribedGroup {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                generation_id: 0,
                leader: None,
                state_timestamp_ms: 0,
                members: Vec::new(),
            },
        }
    }

    /// The subscribed protocol metadata of every member (for OffsetDelete's subscription check),
    /// or an error if the group does not exist.
    pub fn member_metadata(
        &self,
        group_id: &str,
    ) -> Result<(GroupState, String, Vec<Bytes>), GroupError> {
        let state = self.lock();
        let group = state
            .groups
            .get(group_id)
            .filter(|g| g.state != GroupState::Dead)
            .ok_or(GroupError::GroupIdNotFound)?;
        let protocol = group.protocol_name.clone().unwrap_or_default();
        Ok((
            group.state,
            group.protocol_type.clone().unwrap_or_default(),
            group
                .members
                .values()
                .map(|m| m.metadata_for(&protocol))
                .collect(),
        ))
    }

    /// DeleteGroups, step one: marks an empty group Dead and returns its offsets (to tombstone).
    pub fn delete(&self, group_id: &str) -> Result<Vec<(String, i32)>, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let mut state = self.lock();
        let State { groups, dirty } = &mut *state;
        let group = groups
            .get_mut(group_id)
            .filter(|g| g.state != GroupState::Dead)
            .ok_or(GroupError::GroupIdNotFound)?;
        if group.state != GroupState::Empty {
            return Err(GroupError::NonEmptyGroup);
        }
        let offsets = group.offsets.keys().cloned().collect();
        groups.remove(group_id);
        dirty.insert(group_id.to_string());
        Ok(offsets)
    }

    /// Offsets to expire at `now` (`offsets.retention.minutes`): every offset of an empty group
    /// once the group has been empty and the offset unchanged for the retention period. Groups
    /// left empty without offsets are removed (and tombstoned).
    pub fn expired_offsets(&self, now: Now) -> Vec<(String, (String, i32))> {
        let retention = self.config.offsets_retention_ms;
        let mut state = self.lock();
        let State { groups, dirty } = &mut *state;
        let mut expired = Vec::new();
        for group in groups.values_mut() {
            if group.state != GroupState::Empty {
                continue;
            }
            let since = group.state_timestamp_ms;
            let doomed: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(_, o)| {
                    now.wall_ms.saturating_sub(o.commit_timestamp_ms.max(since)) >= retention
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in doomed {
                group.offsets.remove(&key);
                expired.push((group.group_id.clone(), key));
            }
        }
        let empty: Vec<String> = groups
            .values()
            .filter(|g| g.state == GroupState::Empty && g.offsets.is_empty())
            .filter(|g| now.wall_ms.saturating_sub(g.state_timestamp_ms) >= retention)
            .map(|g| g.group_id.clone())
            .collect();
        for group_id in empty {
            groups.remove(&group_id);
            dirty.insert(group_id);
        }
        expired
    }

    /// Restores a group from its stored metadata (loading): Stable with its members if it had
    /// any (their sessions start now), else Empty.
    pub fn restore_group(&self, snapshot: DescribedGroup, now: Now) {
        let mut state = self.lock();
        let group = state
            .groups
            .entry(snapshot.group_id.clone())
            .or_insert_with(|| Group::new(&snapshot.group_id, now));
        group.generation_id = snapshot.generation_id;
        group.protocol_type = Some(snapshot.protocol_type.clone()).filter(|t| !t.is_empty());
        group.protocol_name = Some(snapshot.protocol_name.clone()).filter(|t| !t.is_empty());
        group.leader = snapshot.leader.clone();
        group.state_timestamp_ms = snapshot.state_timestamp_ms;
        group.members.clear();
        group.static_members.clear();
        let protocol = snapshot.protocol_name.clone();
        for m in snapshot.members {
            if let Some(instance_id) = &m.group_instance_id {
                group
                    .static_members
                    .insert(instance_id.clone(), m.member_id.clone());
            }
            let session = Duration::from_millis(u64::try_from(m.session_timeout_ms).unwrap_or(0));
            group.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![(protocol.clone(), m.metadata)],
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    heartbeat_deadline: now.at + session,
                },
            );
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        drop(state);
        self.wake_timers();
    }

    /// Forgets a group (a tombstone while loading).
    pub fn forget_group(&self, group_id: &str) {
        let mut state = self.lock();
        if let Some(group) = state.groups.get_mut(group_id) {
            group.members.clear();
            group.static_members.clear();
            group.state = GroupState::Empty;
            group.generation_id = 0;
            group.protocol_type = None;
            group.protocol_name = None;
            group.leader = None;
        }
    }
}

fn session_of(request: &JoinRequest) -> Duration {
    Duration::from_millis(u64::try_from(request.session_timeout_ms).unwrap_or(0))
}

/// Removes a member and its static mapping; returns it so its waiters can be answered.
fn remove_member(group: &mut Group, member_id: &str) -> Option<Member> {
    let member = group.members.remove(member_id)?;
    if let Some(instance_id) = &member.group_instance_id {
        if group.static_members.get(instance_id).map(String::as_str) == Some(member_id) {
            group.static_members.remove(instance_id);
        }
    }
    Some(member)
}

/// The join answer for the current generation (no rebalance happened).
fn current_join_result(group: &Group, member_id: &str) -> JoinResult {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let is_leader = group.leader.as_deref() == Some(member_id);
    JoinResult {
        error: None,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members: if is_leader {
            group
                .members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn sync_locked(
    groups: &mut HashMap<String, Group>,
    dirty: &mut BTreeSet<String>,
    request: SyncRequest,
    now: Now,
) -> Reply<SyncResult> {
    let fail = |error| Reply::Now(SyncResult::error(error));
    let Some(group) = groups.get_mut(&request.group_id) else {
        return fail(GroupError::UnknownMemberId);
    };
    if group.state == GroupState::Dead {
        return fail(GroupError::CoordinatorNotAvailable);
    }
    if let Err(error) = group.check_member(&request.member_id, request.group_instance_id.as_ref()) {
        return fail(error);
    }
    if request.generation_id != group.generation_id {
        return fail(GroupError::IllegalGeneration);
    }
    let type_mismatch = request
        .protocol_type
        .as_ref()
        .is_some_and(|t| group.protocol_type.as_ref() != Some(t));
    let name_mismatch = request
        .protocol_name
        .as_ref()
        .is_some_and(|n| group.protocol_name.as_ref() != Some(n));
    if type_mismatch || name_mismatch {
        return fail(GroupError::InconsistentGroupProtocol);
    }
    match group.state {
        GroupState::Empty | GroupState::Dead => fail(GroupError::UnknownMemberId),
        GroupState::PreparingRebalance => fail(GroupError::RebalanceInProgress),
        GroupState::Stable => {
            let Some(member) = group.members.get_mut(&request.member_id) else {
                return fail(GroupError::UnknownMemberId);
            };
            member.heartbeat_deadline = now.at + member.session();
            Reply::Now(SyncResult {
                error: None,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol_name.clone(),
                assignment: member.assignment.clone(),
            })
        }
        GroupState::CompletingRebalance => {
            let (tx, rx) = oneshot::channel();
            if let Some(member) = group.members.get_mut(&request.member_id) {
                member.reply_sync(SyncResult::error(GroupError::RebalanceInProgress));
                member.sync_waiter = Some(tx);
                member.heartbeat_deadline = now.at + member.session();
            }
            if group.leader.as_deref() == Some(&request.member_id) {
                let mut assignments: HashMap<String, Bytes> =
                    request.assignments.into_iter().collect();
                for member in group.members.values_mut() {
                    member.assignment = assignments.remove(&member.member_id).unwrap_or_default();
                }
                group.transition(GroupState::Stable, now);
                dirty.insert(group.group_id.clone());
                let protocol_type = group.protocol_type.clone();
                let protocol_name = group.protocol_name.clone();
                for member in group.members.values_mut() {
                    let result = SyncResult {
                        error: None,
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol_name.clone(),
                        assignment: member.assignment.clone(),
                    };
                    member.heartbeat_deadline = now.at + member.session();
                    member.reply_sync(result);
                }
            }
            Reply::Later(rx)
        }
    }
}

impl<T> Reply<T> {
    /// The answer, waiting for it if needed; `lost` if the coordinator dropped the waiter
    /// without answering (it never should).
    pub async fn wait(self, lost: impl FnOnce() -> T) -> T {
        match self {
            Reply::Now(answer) => answer,
            Reply::Later(receiver) => receiver.await.unwrap_or_else(|_| lost()),
        }
    }
}

/// An error answer for a join whose waiter was lost.
pub fn lost_join(member_id: &str) -> JoinResult {
    JoinResult::error(GroupError::RebalanceInProgress, member_id)
}

/// An error answer for a sync whose waiter was lost.
pub fn lost_sync() -> SyncResult {
    SyncResult::error(GroupError::RebalanceInProgress)
}
