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
    lost_join, lost_sync, AssignmentToStore, CommittedOffset, DescribedGroup, DescribedMember,
    GroupConfig, GroupCoordinator, GroupError, GroupState, JoinRequest, JoinResult, JoinedMember,
    LeaveOutcome, ListedGroup, Now, Reply, SyncOutcome, SyncRequest, SyncResult,
};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode`: over UTF-16 code units, wrapping.
fn java_hash_code(group_id: &str) -> i32 {
    group_id.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The `__consumer_offsets` partition of a group, as Kafka computes it:
/// `Utils.abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode` over UTF-16 code
/// units and `Utils.abs` mapping `Integer.MIN_VALUE` to 0 and otherwise being `Math.abs`.
///
/// Runnel before this formula used `hash & 0x7fffffff`, which differs for negative hashes;
/// [`store::load`] finds records left in such an old partition and moves them here.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = java_hash_code(group_id);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::{java_hash_code, partition_for};

    /// Values printed by Java 17 (`s.hashCode()`, and `Utils.abs(h) % 50` written out as
    /// `(h == Integer.MIN_VALUE ? 0 : Math.abs(h)) % 50`).
    #[test]
    fn partition_matches_kafka() {
        let cases = [
            ("group", 98_629_247, 47),
            ("", 0, 0),
            // Integer.MIN_VALUE: Utils.abs maps it to 0.
            ("polygenelubricants", i32::MIN, 0),
            // Negative hashes, where `& 0x7fffffff` (39, 46, 4) and Kafka's formula differ.
            ("billing", -109_829_509, 9),
            ("inventory-sync", -79_324_052, 2),
            ("clickstream-etl", -886_437_544, 44),
            // Non-ASCII goes by UTF-16 units.
            ("é", 233, 33),
        ];
        for (group, hash, partition) in cases {
            assert_eq!(java_hash_code(group), hash, "hashCode of {group:?}");
            assert_eq!(
                partition_for(group, 50),
                partition,
                "partition of {group:?}"
            );
        }
    }
}
