//! Committed offsets: OffsetCommit validation, the in-memory table, and retention.

use std::collections::BTreeMap;

use super::state::Group;
use super::types::*;
use super::{GroupCoordinator, State};

impl GroupCoordinator {
    /// Whether an OffsetCommit may be applied, creating an offsets-only group for a simple
    /// consumer (generation < 0, empty member id). A member's commit keeps its session alive.
    ///
    /// As Kafka's classic group (`ClassicGroup.validateOffsetCommit`): a member of the current
    /// generation may commit while the group is Stable or PreparingRebalance (a cooperative
    /// member keeps committing the partitions it still owns while others join); the member
    /// and generation are checked first (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION), and only a
    /// valid commit in CompletingRebalance gets REBALANCE_IN_PROGRESS (its assignment is not
    /// known yet).
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
        self.owns(group_id)?;
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
        if generation_id < 0 && group.state == GroupState::Empty {
            group.check_fenced(member_id, instance_id)?;
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || instance_id.is_some() {
            group.check_member(member_id, instance_id)?;
            if generation_id != group.generation_id {
                return Err(GroupError::IllegalGeneration);
            }
        } else {
            // A simple consumer's commit (no member, no generation) needs an empty group.
            return Err(GroupError::UnknownMemberId);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.heartbeat_deadline = now.at + member.session();
        }
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
}
