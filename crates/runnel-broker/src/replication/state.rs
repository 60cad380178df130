//! The replica state machine of docs/replication.md: a leader's view of its followers (fetch
//! offsets, when each was last caught up), the high watermark, ISR change proposals, the
//! diverging-epoch check of a replica fetch (KIP-320), and where a follower truncates.
//!
//! Pure: no I/O, no clock (time is an argument, in ms), no async. The replica manager drives it
//! from image changes and fetches; the simulator (`replication/sim`) drives the very same
//! functions through crashes, lost messages and elections and checks the invariants.

use std::collections::BTreeMap;

use runnel_storage::LeaderEpochCache;

use crate::metadata::records::BrokerId;

/// Kafka's "no epoch" (`current_leader_epoch` / `last_fetched_epoch` not sent).
pub const NO_EPOCH: i32 = -1;

/// What a leader does with a replica fetch ([`LeaderState::check_replica_fetch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaFetchCheck {
    /// Record the follower's progress and serve records from its fetch offset.
    Serve,
    /// The follower's log diverges from ours: answer `diverging_epoch = (epoch, end_offset)`
    /// and no records; it truncates ([`follower_truncation_offset`]) and fetches again.
    Diverging {
        /// The largest epoch of ours at or below the follower's `last_fetched_epoch`.
        epoch: i32,
        /// Where that epoch ends in our log.
        end_offset: i64,
    },
    /// The follower's `current_leader_epoch` is older than ours: FENCED_LEADER_EPOCH.
    FencedLeaderEpoch,
    /// The follower's `current_leader_epoch` is newer than ours (we have not seen the image
    /// that moved leadership yet): UNKNOWN_LEADER_EPOCH.
    UnknownLeaderEpoch,
    /// Our epoch cache cannot place the follower's `last_fetched_epoch` (it is newer than all
    /// of ours, or our cache is empty): OFFSET_OUT_OF_RANGE. Unreachable with clean elections
    /// (a leader assigns its epoch before serving); never answered by truncating to HW.
    UnknownFetchedEpoch,
}

/// An ISR change the leader asks the controller for (AlterPartition), based on the committed
/// state at `leader_epoch` / `partition_epoch`; the controller refuses it if either is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    /// The leader epoch the proposal is based on.
    pub leader_epoch: i32,
    /// The partition epoch the proposal is based on.
    pub partition_epoch: i32,
    /// The proposed ISR (always holds the leader).
    pub isr: Vec<BrokerId>,
}

/// A committed partition state as far as the leader's side cares: who replicates it, who is
/// in sync, and the partition epoch of that state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The partition epoch of this state.
    pub partition_epoch: i32,
    /// Assigned replicas.
    pub replicas: Vec<BrokerId>,
    /// The committed ISR.
    pub isr: Vec<BrokerId>,
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FollowerProgress {
    /// The fetch offset of its last accepted fetch (durable on it); `None` until it fetches in
    /// this leader epoch.
    fetch_offset: Option<i64>,
    /// When it last was caught up (ms).
    last_caught_up_ms: i64,
    /// When it last fetched, and our log end offset then (ms, offset).
    last_fetch: Option<(i64, i64)>,
}

/// The leader's side of one partition for one leader epoch: created when the image names this
/// node leader with a new epoch, dropped when it stops leading.
///
/// Invariants: the high watermark never goes backwards; it moves only while the committed ISR
/// has `min_insync_replicas` members, and never past the leader's durable offset or the fetch
/// offset of any member of the maximal ISR (committed ISR plus pending additions).
#[derive(Debug, Clone)]
pub struct LeaderState {
    node: BrokerId,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    /// The ISR proposed to the controller and not yet committed or refused.
    pending_isr: Option<Vec<BrokerId>>,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    high_watermark: i64,
    min_insync_replicas: usize,
}

impl LeaderState {
    /// The state of a new leader `node` of `leader_epoch`, with the committed `membership`,
    /// its checkpointed `high_watermark` (the caller clamps it to the log end offset) and
    /// `min.insync.replicas`. Every follower's progress is unknown, and counts as caught up at
    /// `now_ms` (it gets `replica.lag.time.max.ms` to fetch).
    pub fn new(
        node: BrokerId,
        leader_epoch: i32,
        membership: Membership,
        high_watermark: i64,
        min_insync_replicas: usize,
        now_ms: i64,
    ) -> Self {
        let mut state = LeaderState {
            node,
            leader_epoch,
            partition_epoch: membership.partition_epoch,
            replicas: Vec::new(),
            isr: Vec::new(),
            pending_isr: None,
            followers: BTreeMap::new(),
            high_watermark,
            min_insync_replicas,
        };
        state.set_membership(membership.replicas, membership.isr, now_ms);
        state
    }

    /// This node.
    pub fn node(&self) -> BrokerId {
        self.node
    }

    /// The leader epoch this state serves.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// The committed partition epoch this state knows.
    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    /// The high watermark: offsets below it are committed.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Whether the committed ISR has at least `min.insync.replicas` members: acks=all is
    /// accepted and the high watermark moves only then.
    pub fn has_min_isr(&self) -> bool {
        self.isr.len() >= self.min_insync_replicas
    }

    /// A new `min.insync.replicas` (a config change): the HW rule and acks=all use it from now
    /// on, so lowering it lets a HW held by the old minimum move again.
    pub fn set_min_insync_replicas(&mut self, min_insync_replicas: usize) {
        self.min_insync_replicas = min_insync_replicas;
    }

    /// Whether an ISR change is in flight.
    pub fn has_pending_isr_change(&self) -> bool {
        self.pending_isr.is_some()
    }

    /// A committed partition change at our leader epoch (ISR, replicas, partition epoch), as
    /// the image shows it. Ignored unless its partition epoch is newer than ours. Any pending
    /// proposal is settled by it (committed, or overtaken by another change).
    pub fn apply_partition_change(&mut self, membership: Membership, now_ms: i64) {
        if membership.partition_epoch <= self.partition_epoch {
            return;
        }
        self.partition_epoch = membership.partition_epoch;
        self.pending_isr = None;
        self.set_membership(membership.replicas, membership.isr, now_ms);
    }

    /// The controller refused our pending proposal and the committed state is still the one
    /// it was based on (e.g. an added member is fenced). Not for a refusal because our epochs
    /// are stale: then a newer state is committed — possibly our own proposal, retried — and
    /// the pending change must hold until [`apply_partition_change`](Self::apply_partition_change)
    /// brings it, or the high watermark could pass a member the controller already added.
    pub fn isr_change_failed(&mut self) {
        self.pending_isr = None;
    }

    /// Validates a replica fetch: `current_leader_epoch` and `last_fetched_epoch` as the
    /// follower sent them ([`NO_EPOCH`] if absent), `epochs` and `log_end_offset` our log's.
    pub fn check_replica_fetch(
        &self,
        current_leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        epochs: &LeaderEpochCache,
        log_end_offset: i64,
    ) -> ReplicaFetchCheck {
        if current_leader_epoch != NO_EPOCH {
            if current_leader_epoch < self.leader_epoch {
                return ReplicaFetchCheck::FencedLeaderEpoch;
            }
            if current_leader_epoch > self.leader_epoch {
                return ReplicaFetchCheck::UnknownLeaderEpoch;
            }
        }
        if last_fetched_epoch == NO_EPOCH {
            return ReplicaFetchCheck::Serve;
        }
        let (epoch, end_offset) = epochs.end_offset_for(last_fetched_epoch, log_end_offset);
        if epoch == NO_EPOCH || end_offset < 0 {
            return ReplicaFetchCheck::UnknownFetchedEpoch;
        }
        if epoch < last_fetched_epoch || end_offset < fetch_offset {
            return ReplicaFetchCheck::Diverging { epoch, end_offset };
        }
        ReplicaFetchCheck::Serve
    }

    /// Records an accepted fetch ([`ReplicaFetchCheck::Serve`]) from `follower` at
    /// `fetch_offset` (durable on it) while our log ends at `log_end_offset`, at `now_ms`.
    /// A follower is caught up if it fetched up to our current end, or up to our end as of its
    /// previous fetch (then since that fetch). Fetches from a non-replica are ignored.
    pub fn record_follower_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        log_end_offset: i64,
        now_ms: i64,
    ) {
        let Some(progress) = self.followers.get_mut(&follower) else {
            return;
        };
        if fetch_offset >= log_end_offset {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if let Some((fetch_ms, end_then)) = progress.last_fetch {
            if fetch_offset >= end_then {
                progress.last_caught_up_ms = progress.last_caught_up_ms.max(fetch_ms);
            }
        }
        progress.fetch_offset = Some(fetch_offset);
        progress.last_fetch = Some((now_ms, log_end_offset));
    }

    /// Recomputes the high watermark from our durable offset and the followers' fetch offsets:
    /// min over the maximal ISR, only while [`has_min_isr`](Self::has_min_isr), only forwards.
    /// A member whose progress is unknown holds it. Returns the new value if it moved.
    pub fn advance_high_watermark(&mut self, leader_durable_offset: i64) -> Option<i64> {
        if !self.has_min_isr() {
            return None;
        }
        let mut candidate = leader_durable_offset;
        for member in self.maximal_isr() {
            if member == self.node {
                continue;
            }
            match self.followers.get(&member).and_then(|p| p.fetch_offset) {
                Some(offset) => candidate = candidate.min(offset),
                None => return None,
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            Some(candidate)
        } else {
            None
        }
    }

    /// The ISR change to propose now, if any and none is in flight (it then is): members not
    /// caught up for more than `lag_max_ms` leave; replicas outside the ISR whose fetch offset
    /// reached the high watermark and `epoch_start_offset` (where our epoch starts, so they
    /// have truncated any diverging tail) join. The leader never leaves.
    pub fn propose_isr_change(
        &mut self,
        now_ms: i64,
        lag_max_ms: i64,
        epoch_start_offset: i64,
    ) -> Option<IsrChange> {
        if self.pending_isr.is_some() {
            return None;
        }
        let lagging = |member: &BrokerId| {
            *member != self.node
                && self
                    .followers
                    .get(member)
                    .is_some_and(|p| now_ms.saturating_sub(p.last_caught_up_ms) > lag_max_ms)
        };
        let mut proposed: Vec<BrokerId> =
            self.isr.iter().copied().filter(|m| !lagging(m)).collect();
        for replica in &self.replicas {
            if proposed.contains(replica) || lagging(replica) {
                continue;
            }
            let caught_up = self
                .followers
                .get(replica)
                .and_then(|p| p.fetch_offset)
                .is_some_and(|offset| {
                    offset >= self.high_watermark && offset >= epoch_start_offset
                });
            if caught_up {
                proposed.push(*replica);
            }
        }
        if !proposed.contains(&self.node) {
            proposed.insert(0, self.node);
        }
        if proposed == self.isr {
            return None;
        }
        self.pending_isr = Some(proposed.clone());
        Some(IsrChange {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr: proposed,
        })
    }

    /// The committed ISR plus any member a pending proposal adds.
    fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut members = self.isr.clone();
        for added in self.pending_isr.iter().flatten() {
            if !members.contains(added) {
                members.push(*added);
            }
        }
        members
    }

    /// Takes new membership; followers that stay keep their progress, new ones start unknown
    /// and caught up at `now_ms`.
    fn set_membership(&mut self, replicas: Vec<BrokerId>, isr: Vec<BrokerId>, now_ms: i64) {
        self.followers
            .retain(|follower, _| replicas.contains(follower));
        for replica in &replicas {
            if *replica != self.node {
                self.followers.entry(*replica).or_insert(FollowerProgress {
                    fetch_offset: None,
                    last_caught_up_ms: now_ms,
                    last_fetch: None,
                });
            }
        }
        self.replicas = replicas;
        self.isr = isr;
    }
}

/// Where a follower truncates on `diverging_epoch = (epoch, end_offset)` from its leader,
/// given its own epoch cache and log end offset: the end of the last epoch both logs share,
/// never by high watermark alone (KIP-101). If our largest epoch at or below `epoch` is an
/// older one, we cut to where that epoch ends for us; the next fetch carries it as
/// `last_fetched_epoch` and the leader checks again.
pub fn follower_truncation_offset(
    diverging_epoch: i32,
    diverging_end_offset: i64,
    own: &LeaderEpochCache,
    own_log_end_offset: i64,
) -> i64 {
    let (own_epoch, own_end) = own.end_offset_for(diverging_epoch, own_log_end_offset);
    let cut = if own_epoch == NO_EPOCH || own_end < 0 {
        diverging_end_offset
    } else if own_epoch == diverging_epoch {
        diverging_end_offset.min(own_end)
    } else {
        own_end
    };
    cut.min(own_log_end_offset).max(0)
}

/// The `last_fetched_epoch` a follower sends: the latest epoch of its epoch cache (Kafka's
/// `log.latestEpoch`), not the epoch of its last batch. They differ after this node led an
/// epoch in which it wrote nothing: the cache then says that epoch starts at the log end, and
/// batches of older epochs appended there from the new leader would sit under it unnoticed —
/// the cache would then misplace where those epochs end, and a follower asking this node
/// later could cut below its HW. Sending the cache's epoch makes the leader answer
/// `diverging_epoch`, and the truncation drops the empty epoch first.
pub fn follower_last_fetched_epoch(own: &LeaderEpochCache) -> i32 {
    own.latest_epoch().unwrap_or(NO_EPOCH)
}

/// A follower's high watermark: the leader's, but never past what it has fsynced itself.
pub fn follower_high_watermark(leader_high_watermark: i64, own_durable_offset: i64) -> i64 {
    leader_high_watermark.min(own_durable_offset)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const LAG_MS: i64 = 30_000;

    fn membership(partition_epoch: i32, replicas: &[BrokerId], isr: &[BrokerId]) -> Membership {
        Membership {
            partition_epoch,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
        }
    }

    /// Node 1 leads epoch 5 of replicas 1, 2, 3 (all in sync), HW 10, min ISR 2, at t = 0.
    fn leader() -> LeaderState {
        LeaderState::new(1, 5, membership(7, &[1, 2, 3], &[1, 2, 3]), 10, 2, 0)
    }

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::new();
        for (epoch, start) in entries {
            assert!(cache.assign(*epoch, *start));
        }
        cache
    }

    #[test]
    fn high_watermark_is_the_minimum_over_the_isr_and_waits_for_unknown_followers() {
        let mut state = leader();
        assert_eq!(
            state.advance_high_watermark(20),
            None,
            "no follower fetched yet"
        );
        state.record_follower_fetch(2, 15, 20, 1);
        assert_eq!(state.advance_high_watermark(20), None, "follower 3 unknown");
        state.record_follower_fetch(3, 12, 20, 1);
        assert_eq!(state.advance_high_watermark(20), Some(12));
        state.record_follower_fetch(3, 20, 20, 2);
        assert_eq!(
            state.advance_high_watermark(18),
            Some(15),
            "bounded by follower 2"
        );
        assert_eq!(state.advance_high_watermark(14), None, "never backwards");
        assert_eq!(state.high_watermark(), 15);
    }

    #[test]
    fn high_watermark_never_passes_the_leaders_durable_offset() {
        let mut state = leader();
        state.record_follower_fetch(2, 30, 30, 1);
        state.record_follower_fetch(3, 30, 30, 1);
        assert_eq!(state.advance_high_watermark(22), Some(22));
    }

    #[test]
    fn high_watermark_holds_below_min_insync_replicas() {
        let mut state = LeaderState::new(1, 5, membership(7, &[1, 2, 3], &[1]), 10, 2, 0);
        assert!(!state.has_min_isr());
        assert_eq!(state.advance_high_watermark(20), None);
        // With min ISR 1, a lone leader's HW is its durable offset (today's behaviour).
        let mut alone = LeaderState::new(1, 5, membership(7, &[1], &[1]), 10, 1, 0);
        assert!(alone.has_min_isr());
        assert_eq!(alone.advance_high_watermark(20), Some(20));
    }

    #[test]
    fn a_pending_expansion_counts_towards_the_high_watermark() {
        let mut state = LeaderState::new(1, 5, membership(7, &[1, 2, 3], &[1, 2]), 10, 1, 0);
        state.record_follower_fetch(2, 40, 40, 1);
        state.record_follower_fetch(3, 10, 40, 1);
        let change = state.propose_isr_change(1, LAG_MS, 0).unwrap();
        assert_eq!(change.isr, vec![1, 2, 3]);
        assert_eq!((change.leader_epoch, change.partition_epoch), (5, 7));
        assert_eq!(
            state.advance_high_watermark(40),
            None,
            "3 is in the maximal ISR at 10"
        );
        state.record_follower_fetch(3, 25, 40, 2);
        assert_eq!(state.advance_high_watermark(40), Some(25));
        // Refused: back to the committed ISR.
        state.isr_change_failed();
        assert_eq!(state.advance_high_watermark(40), Some(40));
    }

    #[test]
    fn only_one_isr_change_is_in_flight_and_a_commit_settles_it() {
        let mut state = leader();
        state.record_follower_fetch(2, 10, 10, 1);
        let change = state.propose_isr_change(LAG_MS + 1, LAG_MS, 0).unwrap();
        assert_eq!(
            change.isr,
            vec![1, 2],
            "3 never fetched: caught up only at t=0"
        );
        assert_eq!(state.propose_isr_change(LAG_MS + 2, LAG_MS, 0), None);
        // A stale image (same partition epoch) changes nothing.
        state.apply_partition_change(membership(7, &[1, 2, 3], &[1, 2, 3]), 5);
        assert!(state.has_pending_isr_change());
        state.apply_partition_change(membership(8, &[1, 2, 3], &[1, 2]), LAG_MS + 3);
        assert!(!state.has_pending_isr_change());
        assert_eq!(state.isr(), &[1, 2]);
        assert_eq!(state.partition_epoch(), 8);
        state.record_follower_fetch(2, 10, 10, LAG_MS + 4);
        assert_eq!(state.propose_isr_change(LAG_MS + 4, LAG_MS, 0), None);
    }

    #[test]
    fn a_follower_is_caught_up_when_it_reaches_the_end_as_of_its_previous_fetch() {
        let mut state = leader();
        // t=1000: 2 fetches at 10 while our end is 20 (not caught up now, no previous fetch).
        state.record_follower_fetch(2, 10, 20, 1_000);
        state.record_follower_fetch(3, 20, 20, 1_000);
        // t=20000: 2 fetches at 20 (our end as of its previous fetch) while we are at 30: it
        // was caught up at t=1000.
        state.record_follower_fetch(2, 20, 30, 20_000);
        state.record_follower_fetch(3, 30, 30, 20_000);
        assert_eq!(state.propose_isr_change(LAG_MS + 999, LAG_MS, 0), None);
        let change = state.propose_isr_change(LAG_MS + 1_001, LAG_MS, 0).unwrap();
        assert_eq!(change.isr, vec![1, 3]);
    }

    #[test]
    fn a_caught_up_replica_rejoins_only_past_the_high_watermark_and_the_epoch_start() {
        let mut state = LeaderState::new(1, 5, membership(7, &[1, 2, 3], &[1, 2]), 10, 1, 0);
        state.record_follower_fetch(2, 30, 30, 1);
        state.record_follower_fetch(3, 9, 30, 1);
        assert_eq!(
            state.propose_isr_change(2, LAG_MS, 0),
            None,
            "3 is below HW 10"
        );
        state.record_follower_fetch(3, 12, 30, 2);
        assert_eq!(
            state.propose_isr_change(3, LAG_MS, 15),
            None,
            "below the epoch start"
        );
        state.record_follower_fetch(3, 15, 30, 3);
        let change = state.propose_isr_change(4, LAG_MS, 15).unwrap();
        assert_eq!(change.isr, vec![1, 2, 3]);
    }

    #[test]
    fn the_leader_never_proposes_to_remove_itself_and_ignores_strangers() {
        let mut state = leader();
        state.record_follower_fetch(9, 100, 100, 1);
        let change = state.propose_isr_change(10 * LAG_MS, LAG_MS, 0).unwrap();
        assert_eq!(change.isr, vec![1]);
    }

    #[test]
    fn membership_changes_keep_the_progress_of_followers_that_stay() {
        let mut state = LeaderState::new(1, 5, membership(7, &[1, 2], &[1, 2]), 0, 1, 0);
        state.record_follower_fetch(2, 8, 8, 1);
        state.apply_partition_change(membership(8, &[1, 2, 4], &[1, 2]), 2);
        assert_eq!(
            state.advance_high_watermark(8),
            Some(8),
            "4 is not in the ISR"
        );
        state.record_follower_fetch(4, 8, 8, 3);
        assert_eq!(
            state.propose_isr_change(4, LAG_MS, 0).unwrap().isr,
            vec![1, 2, 4]
        );
    }

    #[test]
    fn fetches_with_another_leader_epoch_are_fenced_or_unknown() {
        let state = leader();
        let epochs = cache(&[(5, 0)]);
        assert_eq!(
            state.check_replica_fetch(4, 0, NO_EPOCH, &epochs, 10),
            ReplicaFetchCheck::FencedLeaderEpoch
        );
        assert_eq!(
            state.check_replica_fetch(6, 0, NO_EPOCH, &epochs, 10),
            ReplicaFetchCheck::UnknownLeaderEpoch
        );
        assert_eq!(
            state.check_replica_fetch(NO_EPOCH, 0, NO_EPOCH, &epochs, 10),
            ReplicaFetchCheck::Serve
        );
    }

    #[test]
    fn a_follower_past_the_end_of_its_epoch_diverges() {
        let state = leader();
        // Our log: epoch 1 from 0, epoch 3 from 50, epoch 5 from 80; end 100.
        let epochs = cache(&[(1, 0), (3, 50), (5, 80)]);
        let check = |offset, epoch| state.check_replica_fetch(5, offset, epoch, &epochs, 100);
        assert_eq!(check(60, 3), ReplicaFetchCheck::Serve);
        assert_eq!(check(80, 3), ReplicaFetchCheck::Serve);
        assert_eq!(
            check(85, 3),
            ReplicaFetchCheck::Diverging {
                epoch: 3,
                end_offset: 80
            }
        );
        // Epoch 2 is not ours: the largest below it is 1, which ended at 50.
        assert_eq!(
            check(40, 2),
            ReplicaFetchCheck::Diverging {
                epoch: 1,
                end_offset: 50
            }
        );
        assert_eq!(check(100, 5), ReplicaFetchCheck::Serve);
        assert_eq!(
            check(101, 5),
            ReplicaFetchCheck::Diverging {
                epoch: 5,
                end_offset: 100
            }
        );
        assert_eq!(check(100, 6), ReplicaFetchCheck::UnknownFetchedEpoch);
        assert_eq!(
            state.check_replica_fetch(5, 3, 1, &LeaderEpochCache::new(), 0),
            ReplicaFetchCheck::UnknownFetchedEpoch
        );
    }

    #[test]
    fn a_follower_truncates_to_the_end_of_the_last_shared_epoch() {
        // Follower: epoch 1 from 0, epoch 3 from 50; end 90.
        let own = cache(&[(1, 0), (3, 50)]);
        // The leader's epoch 3 ended at 80: cut there.
        assert_eq!(follower_truncation_offset(3, 80, &own, 90), 80);
        // The leader's ended later than our log: nothing to cut.
        assert_eq!(follower_truncation_offset(3, 95, &own, 90), 90);
        // The leader's epoch 2 (which we never had) ended at 60: our floor is 1, ending at 50.
        assert_eq!(follower_truncation_offset(2, 60, &own, 90), 50);
        // The leader's epoch 1 ended at 40, before ours did.
        assert_eq!(follower_truncation_offset(1, 40, &own, 90), 40);
        // An empty cache: the leader's end, within our log.
        assert_eq!(
            follower_truncation_offset(1, 40, &LeaderEpochCache::new(), 30),
            30
        );
    }

    #[test]
    fn a_follower_that_led_an_empty_epoch_sends_that_epoch_and_is_told_to_cut_it() {
        // We led epoch 5 from 16 and wrote nothing; the new leader (epochs 4 from 8, 6 from 19)
        // has epoch-4 batches up to 19.
        let own = cache(&[(1, 0), (4, 8), (5, 16)]);
        assert_eq!(follower_last_fetched_epoch(&own), 5);
        assert_eq!(
            follower_last_fetched_epoch(&LeaderEpochCache::new()),
            NO_EPOCH
        );
        let leader = LeaderState::new(2, 6, membership(9, &[2, 3], &[2, 3]), 8, 1, 0);
        let leaders = cache(&[(1, 0), (4, 8), (6, 19)]);
        let check = leader.check_replica_fetch(6, 16, 5, &leaders, 25);
        assert_eq!(
            check,
            ReplicaFetchCheck::Diverging {
                epoch: 4,
                end_offset: 19
            }
        );
        // Our epoch 4 ends at 16 (where our empty epoch 5 starts): cut there, which drops it.
        assert_eq!(follower_truncation_offset(4, 19, &own, 16), 16);
    }

    #[test]
    fn a_follower_high_watermark_never_passes_its_durable_offset() {
        assert_eq!(follower_high_watermark(50, 40), 40);
        assert_eq!(follower_high_watermark(30, 40), 30);
    }
}
