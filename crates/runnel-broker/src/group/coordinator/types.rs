//! The coordinator's vocabulary: requests, answers, errors, states and settings, shared by
//! the membership and offset halves and by the handlers.

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
    /// This broker cannot store the group's state (its `__consumer_offsets` partition is
    /// offline): find the coordinator again.
    #[error("not the coordinator")]
    NotCoordinator,
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

/// What a SyncGroup did: the answer (now or later) and, for the leader's sync, the group
/// metadata the caller must write before anyone is answered.
#[derive(Debug)]
pub struct SyncOutcome {
    /// The member's answer.
    pub reply: Reply<SyncResult>,
    /// To write, then report with `GroupCoordinator::assignment_stored`.
    pub store: Option<AssignmentToStore>,
}

impl SyncOutcome {
    pub(super) fn now(result: SyncResult) -> SyncOutcome {
        SyncOutcome {
            reply: Reply::Now(result),
            store: None,
        }
    }
}

/// The group metadata of a generation whose leader handed in the assignment.
#[derive(Debug, Clone)]
pub struct AssignmentToStore {
    /// The group.
    pub group_id: String,
    /// The generation the assignment belongs to.
    pub generation_id: i32,
    /// The metadata record's content (members with their assignments).
    pub snapshot: DescribedGroup,
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
    pub(super) fn error(error: GroupError, member_id: &str) -> JoinResult {
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
    pub(super) fn error(error: GroupError) -> SyncResult {
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
