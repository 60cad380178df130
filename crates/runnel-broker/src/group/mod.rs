//! Consumer groups, classic protocol: the [`GroupCoordinator`] state machine (membership,
//! generations, rebalances, committed offsets in memory) and the `__consumer_offsets` topic
//! where offsets and group metadata are kept as records ([`store`], [`records`]).
//!
//! The state machine does no I/O: it takes the time as an argument, answers long-polling joins
//! and syncs through oneshot channels, and reports which groups' metadata must be written. The
//! handlers and the timer task ([`store::run_timers`]) do the writes. One coordinator serves
//! every group on a single node; everything is keyed by group id so that groups can later move
//! to the broker leading their `__consumer_offsets` partition.

mod coordinator;
pub mod records;
pub mod store;

#[cfg(test)]
mod coordinator_tests;

pub use coordinator::{
    lost_join, lost_sync, CommittedOffset, DescribedGroup, DescribedMember, GroupConfig,
    GroupCoordinator, GroupError, GroupState, JoinRequest, JoinResult, JoinedMember, LeaveOutcome,
    ListedGroup, Now, Reply, SyncRequest, SyncResult,
};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The `__consumer_offsets` partition of a group, as Kafka computes it:
/// `Utils.abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode` over UTF-16 code
/// units and `Utils.abs` being `n & 0x7fffffff`.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = group_id.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    (hash & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::partition_for;

    #[test]
    fn partition_matches_kafka() {
        // Values from Java: Math.abs-free `("group".hashCode() & 0x7fffffff) % 50`.
        // "group".hashCode() = 98629247 → 98629247 % 50 = 47.
        assert_eq!(partition_for("group", 50), 47);
        // "".hashCode() = 0.
        assert_eq!(partition_for("", 50), 0);
        // A negative hash: "polygenelubricants".hashCode() = Integer.MIN_VALUE → & mask = 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // Non-ASCII goes by UTF-16 units: "é".hashCode() = 233.
        assert_eq!(partition_for("é", 50), 233 % 50);
    }
}
