//! The in-memory records of a group and its members, with the checks every operation shares.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::types::*;

#[derive(Debug)]
pub(super) struct Member {
    pub(super) member_id: String,
    pub(super) group_instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout_ms: i32,
    pub(super) rebalance_timeout_ms: i32,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    pub(super) join_waiter: Option<oneshot::Sender<JoinResult>>,
    pub(super) sync_waiter: Option<oneshot::Sender<SyncResult>>,
    /// The session expires here unless the member is waiting in a join or sync.
    pub(super) heartbeat_deadline: Instant,
}

impl Member {
    pub(super) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    pub(super) fn session(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.session_timeout_ms).unwrap_or(0))
    }

    pub(super) fn reply_join(&mut self, result: JoinResult) {
        if let Some(waiter) = self.join_waiter.take() {
            // The client may have gone; nothing to do then.
            let _ = waiter.send(result);
        }
    }

    pub(super) fn reply_sync(&mut self, result: SyncResult) {
        if let Some(waiter) = self.sync_waiter.take() {
            let _ = waiter.send(result);
        }
    }
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) group_id: String,
    pub(super) state: GroupState,
    pub(super) state_timestamp_ms: i64,
    pub(super) generation_id: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol_name: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    /// Instance id → member id of static members.
    pub(super) static_members: HashMap<String, String>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, awaiting the rejoin (until the deadline).
    pub(super) pending_members: HashMap<String, Instant>,
    /// End of the join phase while PreparingRebalance.
    pub(super) rebalance_deadline: Option<Instant>,
    /// While the first rebalance of an empty group waits `group.initial.rebalance.delay.ms`:
    /// the latest the join phase may be extended to.
    pub(super) initial_join_limit: Option<Instant>,
    pub(super) offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// The generation whose leader's assignment is being written (nobody is answered, and a
    /// repeated leader sync stores nothing more, until the write is reported).
    pub(super) assignment_pending: Option<i32>,
}

impl Group {
    pub(super) fn new(group_id: &str, now: Now) -> Group {
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
            assignment_pending: None,
        }
    }

    pub(super) fn transition(&mut self, state: GroupState, now: Now) {
        self.state = state;
        self.state_timestamp_ms = now.wall_ms;
    }

    /// Whether every member supports one of `protocols` along with the group's current set.
    pub(super) fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.all_members_support(name))
    }

    pub(super) fn all_members_support(&self, protocol: &str) -> bool {
        self.members
            .values()
            .all(|m| m.protocols.iter().any(|(name, _)| name == protocol))
    }

    /// Kafka's selection: candidates supported by every member; each member votes for its most
    /// preferred candidate; most votes wins (ties by name, for determinism).
    pub(super) fn select_protocol(&self) -> Option<String> {
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

    pub(super) fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    pub(super) fn max_rebalance_timeout(&self) -> Duration {
        let ms = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// Checks a static member's instance id against the member id it claims.
    pub(super) fn check_fenced(
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

    pub(super) fn check_member(
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

    pub(super) fn describe(&self, with_metadata: bool) -> DescribedGroup {
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
