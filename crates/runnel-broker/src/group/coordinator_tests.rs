//! The state machine driven with explicit times: no sleeps, no runtime clock. A test moves
//! time by building a later [`Now`] and calling `expire`, which is what the timer task does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::time::Instant;

use super::coordinator::*;

const SESSION_MS: i32 = 10_000;

fn config(initial_delay_ms: u64) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::from_millis(initial_delay_ms),
        min_session_timeout_ms: 6_000,
        max_session_timeout_ms: 300_000,
        max_size: 100,
        offset_metadata_max_bytes: 4096,
        offsets_retention_ms: 60_000,
    }
}

struct Clock {
    start: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    fn at(&self, ms: u64) -> Now {
        Now {
            at: self.start + Duration::from_millis(ms),
            wall_ms: 1_000_000 + i64::try_from(ms).unwrap(),
        }
    }
}

fn join_request(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: instance.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
            .collect(),
        require_known_member_id: true,
    }
}

fn now_answer<T: std::fmt::Debug>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(answer) => answer,
        Reply::Later(_) => panic!("expected an immediate answer"),
    }
}

fn later<T>(reply: Reply<T>) -> tokio::sync::oneshot::Receiver<T> {
    match reply {
        Reply::Later(receiver) => receiver,
        Reply::Now(_) => panic!("expected a pending answer"),
    }
}

fn answered<T: std::fmt::Debug>(receiver: &mut tokio::sync::oneshot::Receiver<T>) -> T {
    receiver.try_recv().expect("answer delivered")
}

/// KIP-394 round trip, then the join that waits: returns the member id and the pending join.
fn join_new(
    groups: &GroupCoordinator,
    now: Now,
    protocols: &[&str],
) -> (String, Reply<JoinResult>) {
    let first = now_answer(groups.join(join_request("", None, protocols), now));
    assert_eq!(first.error, Some(GroupError::MemberIdRequired));
    assert!(!first.member_id.is_empty());
    let member_id = first.member_id.clone();
    let reply = groups.join(join_request(&member_id, None, protocols), now);
    (member_id, reply)
}

/// SyncGroup; a leader's assignment is reported stored at once (the write succeeded).
fn sync(
    groups: &GroupCoordinator,
    member_id: &str,
    generation_id: i32,
    assignments: Vec<(String, Bytes)>,
    now: Now,
) -> Reply<SyncResult> {
    let outcome = sync_unstored(groups, member_id, generation_id, assignments, now);
    if let Some(stored) = &outcome.store {
        groups.assignment_stored(stored, Ok(()), now);
    }
    outcome.reply
}

/// SyncGroup, leaving a leader's assignment write to the caller.
fn sync_unstored(
    groups: &GroupCoordinator,
    member_id: &str,
    generation_id: i32,
    assignments: Vec<(String, Bytes)>,
    now: Now,
) -> SyncOutcome {
    groups.sync(
        SyncRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            generation_id,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments,
        },
        now,
    )
}

#[test]
fn a_lone_member_joins_leads_and_becomes_stable() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let (member, reply) = join_new(&groups, clock.at(0), &["range"]);
    let mut rx = later(reply);
    let joined = answered(&mut rx);
    assert_eq!(joined.error, None);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, member);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);
    assert_eq!(groups.describe("g").state, GroupState::CompletingRebalance);

    let synced = sync_unstored(
        &groups,
        &member,
        1,
        vec![(member.clone(), Bytes::from("a1"))],
        clock.at(1),
    );
    let stored = synced.store.expect("the leader's sync must be stored");
    assert_eq!(stored.generation_id, 1);
    assert_eq!(stored.snapshot.members[0].assignment, Bytes::from("a1"));
    let mut rx = later(synced.reply);
    assert!(
        matches!(rx.try_recv(), Err(TryRecvError::Empty)),
        "answered before the assignment was stored"
    );
    groups.assignment_stored(&stored, Ok(()), clock.at(1));
    assert_eq!(answered(&mut rx).assignment, Bytes::from("a1"));
    let described = groups.describe("g");
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.members[0].assignment, Bytes::from("a1"));
    assert_eq!(groups.heartbeat("g", &member, None, 1, clock.at(2)), Ok(()));
    assert_eq!(
        groups.heartbeat("g", &member, None, 0, clock.at(2)),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        groups.heartbeat("g", "nobody", None, 1, clock.at(2)),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_second_member_triggers_a_rebalance_and_both_get_the_new_generation() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let (a, reply) = join_new(&groups, clock.at(0), &["range", "roundrobin"]);
    answered(&mut later(reply));
    answered(&mut later(sync(&groups, &a, 1, vec![], clock.at(0))));

    let (b, reply_b) = join_new(&groups, clock.at(10), &["roundrobin", "range"]);
    let mut rx_b = later(reply_b);
    assert!(
        matches!(rx_b.try_recv(), Err(TryRecvError::Empty)),
        "waits for a"
    );
    assert_eq!(
        groups.heartbeat("g", &a, None, 1, clock.at(20)),
        Err(GroupError::RebalanceInProgress)
    );
    let mut rx_a = later(groups.join(
        join_request(&a, None, &["range", "roundrobin"]),
        clock.at(30),
    ));
    let joined_a = answered(&mut rx_a);
    let joined_b = answered(&mut rx_b);
    assert_eq!(joined_a.generation_id, 2);
    assert_eq!(joined_b.generation_id, 2);
    assert_eq!(joined_a.leader, a, "the leader stays while it is a member");
    assert_eq!(joined_a.members.len(), 2);
    assert!(
        joined_b.members.is_empty(),
        "only the leader sees the members"
    );
    // One vote each; ties go to the first name, which both support.
    assert_eq!(joined_a.protocol_name, joined_b.protocol_name);

    // The follower waits for the leader's assignment.
    let mut follower = later(sync(&groups, &b, 2, vec![], clock.at(40)));
    assert!(matches!(follower.try_recv(), Err(TryRecvError::Empty)));
    let mut leader = later(sync(
        &groups,
        &a,
        2,
        vec![
            (a.clone(), Bytes::from("pa")),
            (b.clone(), Bytes::from("pb")),
        ],
        clock.at(41),
    ));
    assert_eq!(answered(&mut follower).assignment, Bytes::from("pb"));
    assert_eq!(answered(&mut leader).assignment, Bytes::from("pa"));
}

#[test]
fn a_silent_member_is_evicted_after_its_session_timeout() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let (a, reply) = join_new(&groups, clock.at(0), &["range"]);
    answered(&mut later(reply));
    let (b, reply_b) = join_new(&groups, clock.at(0), &["range"]);
    let mut rx_a = later(groups.join(join_request(&a, None, &["range"]), clock.at(1)));
    answered(&mut rx_a);
    answered(&mut later(reply_b));
    let mut rx = later(sync(&groups, &a, 2, vec![], clock.at(2)));
    answered(&mut rx);
    assert_eq!(groups.describe("g").state, GroupState::Stable);

    // a heartbeats, b stays silent.
    for ms in (3_000..=9_000).step_by(3_000) {
        assert_eq!(groups.heartbeat("g", &a, None, 2, clock.at(ms)), Ok(()));
        groups.expire(clock.at(ms));
    }
    let deadline = groups.next_deadline().expect("b's session deadline");
    assert!(deadline <= clock.at(2 + SESSION_MS as u64).at);
    groups.expire(clock.at(2 + SESSION_MS as u64));
    let described = groups.describe("g");
    assert_eq!(described.state, GroupState::PreparingRebalance);
    assert!(described.members.iter().all(|m| m.member_id != b));
    assert_eq!(
        groups.heartbeat("g", &b, None, 2, clock.at(10_100)),
        Err(GroupError::UnknownMemberId)
    );
    // a rejoins alone: generation 3 with one member.
    let mut rx = later(groups.join(join_request(&a, None, &["range"]), clock.at(10_200)));
    let joined = answered(&mut rx);
    assert_eq!(joined.generation_id, 3);
    assert_eq!(joined.members.len(), 1);
}

#[test]
fn the_join_phase_ends_at_the_rebalance_timeout_without_the_missing_members() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let (a, reply) = join_new(&groups, clock.at(0), &["range"]);
    answered(&mut later(reply));
    let (_b, reply_b) = join_new(&groups, clock.at(0), &["range"]);
    let mut rx_b = later(reply_b);
    // a never rejoins (but keeps heartbeating, so only the rebalance timeout ends the wait).
    for ms in (5_000..30_000).step_by(5_000) {
        let _ = groups.heartbeat("g", &a, None, 1, clock.at(ms));
        groups.expire(clock.at(ms));
    }
    assert!(matches!(rx_b.try_recv(), Err(TryRecvError::Empty)));
    groups.expire(clock.at(30_000));
    let joined = answered(&mut rx_b);
    assert_eq!(joined.generation_id, 2);
    assert_eq!(joined.members.len(), 1, "a was dropped from the generation");
}

#[test]
fn the_initial_delay_gathers_members_into_one_generation() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(3_000));
    let (_a, reply_a) = join_new(&groups, clock.at(0), &["range"]);
    let mut rx_a = later(reply_a);
    groups.expire(clock.at(1_000));
    assert!(
        matches!(rx_a.try_recv(), Err(TryRecvError::Empty)),
        "still in the initial delay"
    );
    let (_b, reply_b) = join_new(&groups, clock.at(2_000), &["range"]);
    let mut rx_b = later(reply_b);
    groups.expire(clock.at(4_000));
    assert!(
        matches!(rx_a.try_recv(), Err(TryRecvError::Empty)),
        "b's join extended it"
    );
    groups.expire(clock.at(5_000));
    let (ja, jb) = (answered(&mut rx_a), answered(&mut rx_b));
    assert_eq!((ja.generation_id, jb.generation_id), (1, 1));
}

#[test]
fn a_static_member_restarting_keeps_the_generation_and_fences_its_old_id() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let mut rx = later(groups.join(join_request("", Some("i1"), &["range"]), clock.at(0)));
    let joined = answered(&mut rx);
    assert_eq!(joined.error, None, "static members skip MEMBER_ID_REQUIRED");
    let old = joined.member_id.clone();
    answered(&mut later(sync(
        &groups,
        &old,
        1,
        vec![(old.clone(), Bytes::from("p"))],
        clock.at(1),
    )));

    let rejoined = now_answer(groups.join(join_request("", Some("i1"), &["range"]), clock.at(2)));
    assert_eq!(rejoined.error, None);
    assert_eq!(rejoined.generation_id, 1, "no rebalance");
    assert_ne!(rejoined.member_id, old);
    assert_eq!(groups.describe("g").state, GroupState::Stable);
    let synced = now_answer(
        groups
            .sync(
                SyncRequest {
                    group_id: "g".into(),
                    member_id: rejoined.member_id.clone(),
                    group_instance_id: Some("i1".into()),
                    generation_id: 1,
                    protocol_type: None,
                    protocol_name: None,
                    assignments: vec![],
                },
                clock.at(3),
            )
            .reply,
    );
    assert_eq!(
        synced.assignment,
        Bytes::from("p"),
        "the assignment is kept"
    );
    assert_eq!(
        groups.heartbeat("g", &old, Some(&"i1".to_string()), 1, clock.at(4)),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(
        groups.heartbeat(
            "g",
            &rejoined.member_id,
            Some(&"i1".to_string()),
            1,
            clock.at(4)
        ),
        Ok(())
    );
}

#[test]
fn bad_joins_get_kafka_errors_and_leave_other_groups_alone() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let mut bad = join_request("", None, &["range"]);
    bad.session_timeout_ms = 1;
    assert_eq!(
        now_answer(groups.join(bad, clock.at(0))).error,
        Some(GroupError::InvalidSessionTimeout)
    );
    let mut bad = join_request("", None, &["range"]);
    bad.session_timeout_ms = i32::MAX;
    assert_eq!(
        now_answer(groups.join(bad, clock.at(0))).error,
        Some(GroupError::InvalidSessionTimeout)
    );
    let (_a, reply) = join_new(&groups, clock.at(0), &["range"]);
    answered(&mut later(reply));
    let mut other_type = join_request("", None, &["range"]);
    other_type.protocol_type = "connect".into();
    other_type.require_known_member_id = false;
    assert_eq!(
        now_answer(groups.join(other_type, clock.at(1))).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut no_common = join_request("", None, &["sticky"]);
    no_common.require_known_member_id = false;
    assert_eq!(
        now_answer(groups.join(no_common, clock.at(1))).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    assert_eq!(
        now_answer(groups.join(join_request("ghost", None, &["range"]), clock.at(1))).error,
        Some(GroupError::UnknownMemberId)
    );
    // Another group with another protocol type is unaffected.
    let mut connect = join_request("", None, &["default"]);
    connect.group_id = "h".into();
    connect.protocol_type = "connect".into();
    connect.require_known_member_id = false;
    let joined = answered(&mut later(groups.join(connect, clock.at(2))));
    assert_eq!(joined.error, None);
    assert_eq!(groups.list().len(), 2);
}

#[test]
fn commits_are_validated_like_kafka() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    // A simple consumer (assign + commit) creates an offsets-only group.
    assert_eq!(
        groups.validate_commit("simple", "", None, -1, clock.at(0)),
        Ok(())
    );
    assert_eq!(
        groups.validate_commit("nope", "", None, 5, clock.at(0)),
        Err(GroupError::IllegalGeneration)
    );
    let (a, reply) = join_new(&groups, clock.at(0), &["range"]);
    answered(&mut later(reply));
    assert_eq!(
        groups.validate_commit("g", &a, None, 1, clock.at(1)),
        Err(GroupError::RebalanceInProgress),
        "no commits before the assignment"
    );
    answered(&mut later(sync(&groups, &a, 1, vec![], clock.at(1))));
    assert_eq!(
        groups.validate_commit("g", &a, None, 1, clock.at(2)),
        Ok(())
    );
    assert_eq!(
        groups.validate_commit("g", &a, None, 7, clock.at(2)),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        groups.validate_commit("g", "", None, -1, clock.at(2)),
        Err(GroupError::UnknownMemberId),
        "a group with members does not take anonymous commits"
    );
}

/// Kafka's classic group in each state of a rebalance (a cooperative member keeps committing
/// the partitions it still owns while a new member joins).
#[test]
fn commits_during_a_rebalance_are_answered_like_kafka() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let (a, reply) = join_new(&groups, clock.at(0), &["cooperative-sticky"]);
    answered(&mut later(reply));
    answered(&mut later(sync(&groups, &a, 1, vec![], clock.at(0))));
    let (b, reply_b) = join_new(&groups, clock.at(10), &["cooperative-sticky"]);
    let mut rx_b = later(reply_b);
    assert_eq!(groups.describe("g").state, GroupState::PreparingRebalance);
    assert_eq!(
        groups.validate_commit("g", &a, None, 1, clock.at(11)),
        Ok(()),
        "PreparingRebalance, current generation: accepted"
    );
    let mut rx_a = later(groups.join(
        join_request(&a, None, &["cooperative-sticky"]),
        clock.at(20),
    ));
    assert_eq!(answered(&mut rx_a).generation_id, 2);
    assert_eq!(answered(&mut rx_b).generation_id, 2);
    assert_eq!(groups.describe("g").state, GroupState::CompletingRebalance);
    assert_eq!(
        groups.validate_commit("g", &b, None, 1, clock.at(21)),
        Err(GroupError::IllegalGeneration),
        "CompletingRebalance, old generation: the generation is checked first"
    );
    assert_eq!(
        groups.validate_commit("g", &b, None, 2, clock.at(21)),
        Err(GroupError::RebalanceInProgress),
        "CompletingRebalance, current generation: the assignment is not known yet"
    );
    assert_eq!(
        groups.validate_commit("g", "", None, -1, clock.at(21)),
        Err(GroupError::UnknownMemberId),
        "a simple consumer's commit to a group with members"
    );
    assert_eq!(
        groups.validate_commit("g", "stranger", None, 2, clock.at(21)),
        Err(GroupError::UnknownMemberId)
    );
    answered(&mut later(sync(&groups, &a, 2, vec![], clock.at(22))));
    assert_eq!(
        groups.validate_commit("g", &b, None, 2, clock.at(23)),
        Ok(())
    );
}

#[test]
fn leaving_empties_the_group_and_offsets_expire_after_retention() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let (a, reply) = join_new(&groups, clock.at(0), &["range"]);
    answered(&mut later(reply));
    answered(&mut later(sync(&groups, &a, 1, vec![], clock.at(1))));
    groups.apply_commits(
        "g",
        vec![(
            ("t".into(), 0),
            CommittedOffset {
                offset: 5,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: clock.at(2).wall_ms,
            },
        )],
        clock.at(2),
    );
    let _ = groups.take_dirty();
    let outcome = groups
        .leave("g", vec![(a.clone(), None)], clock.at(3))
        .unwrap();
    assert_eq!(outcome[0].error, None);
    assert_eq!(groups.describe("g").state, GroupState::Empty);
    assert_eq!(groups.take_dirty().len(), 1, "the empty group is written");
    assert_eq!(groups.delete("nope"), Err(GroupError::GroupIdNotFound));
    assert!(groups.expired_offsets(clock.at(30_000)).is_empty());
    let expired = groups.expired_offsets(clock.at(70_000));
    assert_eq!(expired, vec![("g".to_string(), ("t".to_string(), 0))]);
    assert!(groups.committed("g", None).is_empty());
}

#[test]
fn deleting_needs_an_empty_group() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let (a, reply) = join_new(&groups, clock.at(0), &["range"]);
    answered(&mut later(reply));
    assert_eq!(groups.delete("g"), Err(GroupError::NonEmptyGroup));
    groups.leave("g", vec![(a, None)], clock.at(1)).unwrap();
    assert_eq!(groups.delete("g"), Ok(vec![]));
    assert_eq!(groups.describe("g").state, GroupState::Dead);
    let dirty = groups.take_dirty();
    assert_eq!(
        dirty,
        vec![("g".to_string(), None)],
        "a tombstone is written"
    );
}

#[test]
fn a_restored_group_is_stable_and_expires_silent_members() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let (a, reply) = join_new(&groups, clock.at(0), &["range"]);
    answered(&mut later(reply));
    answered(&mut later(sync(
        &groups,
        &a,
        1,
        vec![(a.clone(), Bytes::from("x"))],
        clock.at(1),
    )));
    let snapshot = groups.snapshot("g").unwrap();

    let restored = GroupCoordinator::new(config(0));
    restored.restore_group(snapshot, clock.at(100));
    let described = restored.describe("g");
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.members[0].assignment, Bytes::from("x"));
    assert_eq!(restored.heartbeat("g", &a, None, 1, clock.at(200)), Ok(()));
    restored.expire(clock.at(200 + SESSION_MS as u64));
    assert_eq!(restored.describe("g").state, GroupState::Empty);
}

#[test]
fn a_failed_assignment_write_fails_every_sync_and_rebalances() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    let (a, reply) = join_new(&groups, clock.at(0), &["range"]);
    answered(&mut later(reply));
    answered(&mut later(sync(&groups, &a, 1, vec![], clock.at(0))));
    let (b, reply_b) = join_new(&groups, clock.at(10), &["range"]);
    let mut rx_b = later(reply_b);
    let mut rx_a = later(groups.join(join_request(&a, None, &["range"]), clock.at(20)));
    assert_eq!(answered(&mut rx_a).generation_id, 2);
    assert_eq!(answered(&mut rx_b).generation_id, 2);

    let follower = sync_unstored(&groups, &b, 2, vec![], clock.at(30));
    assert!(follower.store.is_none(), "only the leader's sync stores");
    let mut follower = later(follower.reply);
    let leader = sync_unstored(
        &groups,
        &a,
        2,
        vec![
            (a.clone(), Bytes::from("pa")),
            (b.clone(), Bytes::from("pb")),
        ],
        clock.at(31),
    );
    let stored = leader.store.expect("the leader's sync must be stored");
    let mut leader = later(leader.reply);
    assert!(matches!(leader.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(follower.try_recv(), Err(TryRecvError::Empty)));

    // The log directory failed under the write (KAFKA_STORAGE_ERROR → NOT_COORDINATOR).
    groups.assignment_stored(&stored, Err(GroupError::NotCoordinator), clock.at(32));
    for (who, rx) in [("leader", &mut leader), ("follower", &mut follower)] {
        let answer = answered(rx);
        assert_eq!(answer.error, Some(GroupError::NotCoordinator), "{who}");
        assert!(answer.assignment.is_empty(), "{who} got an assignment");
    }
    let described = groups.describe("g");
    assert_eq!(described.state, GroupState::PreparingRebalance);
    // A late report for the same generation changes nothing.
    groups.assignment_stored(&stored, Ok(()), clock.at(33));
    assert_eq!(groups.describe("g").state, GroupState::PreparingRebalance);
}

/// A coordinator serves only the groups of the `__consumer_offsets` partitions it owns; once
/// a partition moves away its groups are unloaded and every call for them is NOT_COORDINATOR.
#[test]
fn groups_of_a_partition_led_elsewhere_get_not_coordinator() {
    let clock = Clock::new();
    let groups = GroupCoordinator::new(config(0));
    // "g" hashes to partition 103 % 50 = 3 ("g".hashCode() = 103).
    assert_eq!(crate::group::partition_for("g", 50), 3);
    groups.set_ownership(50, [3].into_iter().collect());
    let joined = now_answer(groups.join(join_request("", None, &["range"]), clock.at(0)));
    assert_eq!(joined.error, Some(GroupError::MemberIdRequired));
    let offset = CommittedOffset {
        offset: 5,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    };
    groups.apply_commits("g", vec![(("t".into(), 0), offset)], clock.at(0));
    assert_eq!(groups.committed("g", None).len(), 1);

    // Partition 3 moves to another broker.
    groups.set_ownership(50, std::collections::BTreeSet::new());
    assert_eq!(
        groups.unload(|g| crate::group::partition_for(g, 50) == 3),
        1
    );
    assert!(groups.committed("g", None).is_empty());
    let refused = now_answer(groups.join(join_request("", None, &["range"]), clock.at(1)));
    assert_eq!(refused.error, Some(GroupError::NotCoordinator));
    assert_eq!(
        groups.heartbeat("g", "m", None, 1, clock.at(1)),
        Err(GroupError::NotCoordinator)
    );
    assert_eq!(
        groups.validate_commit("g", "", None, -1, clock.at(1)),
        Err(GroupError::NotCoordinator)
    );
    assert_eq!(groups.owns("other"), groups.owns("g"));
}
