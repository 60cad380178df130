//! Membership: JoinGroup, SyncGroup, Heartbeat and LeaveGroup, session and rebalance timeouts.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::state::{Group, Member};
use super::types::*;
use super::{GroupCoordinator, State};

impl GroupCoordinator {
    /// JoinGroup.
    pub fn join(&self, request: JoinRequest, now: Now) -> Reply<JoinResult> {
        if let Err(error) = self.owns(&request.group_id) {
            return Reply::Now(JoinResult::error(error, &request.member_id));
        }
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

    /// SyncGroup. When this is the leader's sync, the outcome carries the group metadata to
    /// store: nobody is answered until [`assignment_stored`](Self::assignment_stored) reports
    /// the write, so a failed write fails the sync instead of handing out an assignment that a
    /// restart would forget.
    pub fn sync(&self, request: SyncRequest, now: Now) -> SyncOutcome {
        if let Err(error) = self.owns(&request.group_id) {
            return SyncOutcome::now(SyncResult::error(error));
        }
        let outcome = {
            let mut state = self.lock();
            sync_locked(&mut state.groups, request, now)
        };
        self.wake_timers();
        outcome
    }

    /// The leader's assignment was written (`Ok`) or not: completes the generation (Stable,
    /// every waiting member gets its assignment), or answers every waiting member with the
    /// error and rebalances, as Kafka's coordinator does after a failed `storeGroup`. Nothing
    /// happens if the group moved on meanwhile (another rebalance already answered them).
    pub fn assignment_stored(
        &self,
        stored: &AssignmentToStore,
        outcome: Result<(), GroupError>,
        now: Now,
    ) {
        {
            let mut state = self.lock();
            let Some(group) = state.groups.get_mut(&stored.group_id) else {
                return;
            };
            if group.state != GroupState::CompletingRebalance
                || group.generation_id != stored.generation_id
                || group.assignment_pending != Some(stored.generation_id)
            {
                return;
            }
            group.assignment_pending = None;
            match outcome {
                Ok(()) => {
                    group.transition(GroupState::Stable, now);
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
                Err(error) => {
                    tracing::warn!(
                        group = %group.group_id,
                        generation = group.generation_id,
                        %error,
                        "storing the assignment failed: the sync fails and the group rebalances"
                    );
                    for member in group.members.values_mut() {
                        member.assignment = Bytes::new();
                        member.heartbeat_deadline = now.at + member.session();
                        member.reply_sync(SyncResult::error(error));
                    }
                    self.prepare_rebalance(group, now);
                }
            }
        }
        self.wake_timers();
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
        self.owns(group_id)?;
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
        self.owns(group_id)?;
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

fn sync_locked(groups: &mut HashMap<String, Group>, request: SyncRequest, now: Now) -> SyncOutcome {
    let fail = |error| SyncOutcome::now(SyncResult::error(error));
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
            SyncOutcome::now(SyncResult {
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
            let mut store = None;
            if group.leader.as_deref() == Some(request.member_id.as_str())
                && group.assignment_pending != Some(group.generation_id)
            {
                let mut assignments: HashMap<String, Bytes> =
                    request.assignments.into_iter().collect();
                for member in group.members.values_mut() {
                    member.assignment = assignments.remove(&member.member_id).unwrap_or_default();
                }
                group.assignment_pending = Some(group.generation_id);
                store = Some(AssignmentToStore {
                    group_id: group.group_id.clone(),
                    generation_id: group.generation_id,
                    snapshot: group.describe(true),
                });
            }
            SyncOutcome {
                reply: Reply::Later(rx),
                store,
            }
        }
    }
}
