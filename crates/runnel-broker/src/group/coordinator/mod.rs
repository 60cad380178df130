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

mod membership;
mod offsets;
mod state;
mod types;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use state::{Group, Member};
pub use types::*;

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
    /// Which groups this broker coordinates: `None` all of them (no `__consumer_offsets`
    /// yet), else those whose `__consumer_offsets` partition this broker leads and has loaded.
    ownership: Mutex<Option<Ownership>>,
}

/// The `__consumer_offsets` partitions this broker coordinates the groups of.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ownership {
    /// The topic's partition count.
    partitions: i32,
    /// The partitions led here and loaded.
    owned: BTreeSet<i32>,
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
            ownership: Mutex::new(None),
        }
    }

    /// From now on this broker coordinates only the groups whose `__consumer_offsets`
    /// partition (of `partitions`) is in `owned`; the others get NOT_COORDINATOR.
    pub fn set_ownership(&self, partitions: i32, owned: BTreeSet<i32>) {
        *self
            .ownership
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Ownership { partitions, owned });
    }

    /// The `__consumer_offsets` partitions coordinated here, if ownership is set.
    pub fn owned_partitions(&self) -> Option<BTreeSet<i32>> {
        self.ownership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|o| o.owned.clone())
    }

    /// Whether this broker coordinates `group_id` now: NOT_COORDINATOR if not.
    pub fn owns(&self, group_id: &str) -> Result<(), GroupError> {
        match &*self
            .ownership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(o)
                if !o
                    .owned
                    .contains(&crate::group::partition_for(group_id, o.partitions)) =>
            {
                Err(GroupError::NotCoordinator)
            }
            _ => Ok(()),
        }
    }

    /// Drops every group `moved` names (this broker stopped leading its partition): its
    /// members, pending joins and syncs (their waiters get an error and look the coordinator
    /// up again) and offsets. Returns how many were dropped.
    pub fn unload(&self, moved: impl Fn(&str) -> bool) -> usize {
        let mut state = self.lock();
        let State { groups, dirty } = &mut *state;
        let before = groups.len();
        groups.retain(|group_id, _| !moved(group_id));
        dirty.retain(|group_id| !moved(group_id));
        before - groups.len()
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

    /// Takes the groups whose metadata changed, with what to write for each: the group's
    /// current metadata, or `None` (a tombstone) for a group that no longer exists.
    pub fn take_dirty(&self) -> Vec<(String, Option<DescribedGroup>)> {
        let mut state = self.lock();
        let dirty = std::mem::take(&mut state.dirty);
        dirty
            .into_iter()
            .map(|group_id| {
                let snapshot = snapshot_of(&state, &group_id);
                (group_id, snapshot)
            })
            .collect()
    }

    /// What a group metadata record of `group_id` holds now (`None`: no such group).
    pub fn snapshot(&self, group_id: &str) -> Option<DescribedGroup> {
        snapshot_of(&self.lock(), group_id)
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
        self.owns(group_id)?;
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
        self.owns(group_id)?;
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

/// The metadata to store for a group, `None` when it no longer exists.
fn snapshot_of(state: &State, group_id: &str) -> Option<DescribedGroup> {
    state
        .groups
        .get(group_id)
        .filter(|g| g.state != GroupState::Dead)
        .map(|g| g.describe(true))
}
