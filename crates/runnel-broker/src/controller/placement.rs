//! Replica placement: which brokers hold each new partition. Round-robin over the unfenced
//! brokers, starting where the previous placement stopped; with racks, the broker list
//! alternates racks so that consecutive replicas (one partition's) land on distinct racks
//! where the racks allow it. Also the checks of a manual assignment. Pure functions.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;

use crate::metadata::records::{BrokerId, PartitionState};
use crate::metadata::requests::AdminError;
use crate::metadata::MetadataImage;

/// The unfenced brokers in placement order: by id, or — when any broker has a rack —
/// interleaved by rack (the first broker of each rack, then the second of each, …), racks in
/// name order, brokers without a rack forming one rack of their own.
pub fn placement_order(image: &MetadataImage) -> Vec<BrokerId> {
    let brokers: Vec<_> = image.unfenced_brokers().collect();
    if brokers.iter().all(|b| b.rack.is_none()) {
        return brokers.iter().map(|b| b.id).collect();
    }
    let mut by_rack: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
    for broker in &brokers {
        by_rack
            .entry(broker.rack.as_deref())
            .or_default()
            .push(broker.id);
    }
    let mut racks: Vec<std::vec::IntoIter<BrokerId>> =
        by_rack.into_values().map(Vec::into_iter).collect();
    let mut order = Vec::with_capacity(brokers.len());
    while order.len() < brokers.len() {
        for rack in &mut racks {
            if let Some(id) = rack.next() {
                order.push(id);
            }
        }
    }
    order
}

/// Where round-robin placement starts: one past where the previous topic stopped, derived
/// from the image (the total partition count), so every controller continues alike.
pub fn placement_start(image: &MetadataImage) -> usize {
    image.topics.values().map(|t| t.partitions.len()).sum()
}

/// Replicas for `partitions` new partitions of `replication_factor` replicas each, round-robin
/// over `order` from `start`. Partition `p` gets `order[start + p ..][..rf]` (wrapping).
///
/// Errors: INVALID_REPLICATION_FACTOR when `replication_factor` is below 1 or above the
/// number of brokers.
pub fn place(
    order: &[BrokerId],
    start: usize,
    partitions: usize,
    replication_factor: i16,
) -> Result<Vec<Vec<BrokerId>>, AdminError> {
    let rf = usize::try_from(replication_factor).unwrap_or(0);
    if rf < 1 {
        return Err(AdminError {
            code: ResponseError::InvalidReplicationFactor.code(),
            message: format!("replication factor must be at least 1, not {replication_factor}"),
        });
    }
    if rf > order.len() {
        return Err(AdminError {
            code: ResponseError::InvalidReplicationFactor.code(),
            message: format!(
                "unable to replicate the partition {rf} time(s): only {} broker(s) are registered and unfenced",
                order.len()
            ),
        });
    }
    let n = order.len();
    Ok((0..partitions)
        .map(|p| {
            (0..rf)
                .filter_map(|r| {
                    order
                        .get((start.wrapping_add(p).wrapping_add(r)) % n)
                        .copied()
                })
                .collect()
        })
        .collect())
}

/// Checks a manual assignment: every list non-empty, without duplicates, naming only
/// registered unfenced brokers, all of one length (the replication factor, returned).
///
/// Errors: INVALID_REPLICA_ASSIGNMENT naming the problem.
pub fn validate_assignment(
    image: &MetadataImage,
    assignment: &[Vec<BrokerId>],
) -> Result<usize, AdminError> {
    let invalid = |message: String| AdminError {
        code: ResponseError::InvalidReplicaAssignment.code(),
        message,
    };
    let Some(first) = assignment.first() else {
        return Err(invalid("the manual assignment is empty".into()));
    };
    let rf = first.len();
    for (index, replicas) in assignment.iter().enumerate() {
        if replicas.len() != rf && !replicas.is_empty() {
            return Err(invalid(
                "all partitions in the manual assignment must have the same number of replicas"
                    .into(),
            ));
        }
        check_replica_list(image, replicas)
            .map_err(|reason| invalid(format!("partition {index} {reason}")))?;
    }
    Ok(rf)
}

/// Checks one partition's replica list: non-empty, without duplicates, naming only
/// registered unfenced brokers. The error says what is wrong with it ("lists a broker more
/// than once"), for the caller to name the partition.
pub fn check_replica_list(image: &MetadataImage, replicas: &[BrokerId]) -> Result<(), String> {
    if replicas.is_empty() {
        return Err("has an empty replica list".into());
    }
    let distinct: BTreeSet<_> = replicas.iter().collect();
    if distinct.len() != replicas.len() {
        return Err("lists a broker more than once".into());
    }
    if let Some(unknown) = replicas.iter().find(|b| !image.is_unfenced(**b)) {
        return Err(format!(
            "names broker {unknown}, which is not registered and unfenced"
        ));
    }
    Ok(())
}

/// A new partition's state: all replicas in sync, the first one leads, epochs 0.
pub fn new_partition(replicas: Vec<BrokerId>) -> PartitionState {
    PartitionState {
        leader: replicas
            .first()
            .copied()
            .unwrap_or(crate::metadata::NO_LEADER),
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
        partition_epoch: 0,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;
    use crate::metadata::{MetadataBatch, MetadataRecord};

    /// Applies `records` to `image` as one batch at the next log index.
    pub(crate) fn apply(image: &mut MetadataImage, records: Vec<MetadataRecord>) {
        let index = image.applied_index + 1;
        image.apply(
            index,
            &MetadataBatch {
                records,
                ..MetadataBatch::default()
            },
        );
    }

    /// An image with these brokers registered (unfenced), with racks if given.
    pub(crate) fn image_with(brokers: &[(BrokerId, Option<&str>)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        let records = brokers
            .iter()
            .map(|(id, rack)| MetadataRecord::RegisterBroker {
                broker_id: *id,
                incarnation: uuid::Uuid::new_v4(),
                endpoints: Vec::new(),
                rack: rack.map(str::to_string),
            })
            .collect();
        image.apply(
            1,
            &MetadataBatch {
                records,
                ..MetadataBatch::default()
            },
        );
        image
    }

    #[test]
    fn round_robin_spreads_partitions_evenly() {
        let image = image_with(&[(1, None), (2, None), (3, None)]);
        let order = placement_order(&image);
        assert_eq!(order, vec![1, 2, 3]);
        let placed = place(&order, 0, 12, 1).unwrap();
        let mut counts = BTreeMap::new();
        for replicas in &placed {
            *counts.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(counts, BTreeMap::from([(1, 4), (2, 4), (3, 4)]));
        // Starting elsewhere rotates.
        assert_eq!(place(&order, 1, 2, 1).unwrap(), vec![vec![2], vec![3]]);
        // RF 2: distinct consecutive brokers.
        assert_eq!(
            place(&order, 2, 2, 2).unwrap(),
            vec![vec![3, 1], vec![1, 2]]
        );
    }

    #[test]
    fn racks_alternate() {
        let image = image_with(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
        ]);
        let order = placement_order(&image);
        assert_eq!(order, vec![1, 3, 5, 2, 4]);
        let racks: BTreeMap<BrokerId, &str> =
            BTreeMap::from([(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")]);
        for start in 0..5 {
            for replicas in place(&order, start, 5, 2).unwrap() {
                assert_ne!(racks[&replicas[0]], racks[&replicas[1]], "{replicas:?}");
            }
        }
    }

    #[test]
    fn replication_factor_bounds() {
        let order = vec![1, 2];
        let too_many = place(&order, 0, 1, 3).unwrap_err();
        assert_eq!(
            too_many.code,
            ResponseError::InvalidReplicationFactor.code()
        );
        let zero = place(&order, 0, 1, 0).unwrap_err();
        assert_eq!(zero.code, ResponseError::InvalidReplicationFactor.code());
        let none = place(&[], 0, 1, 1).unwrap_err();
        assert_eq!(none.code, ResponseError::InvalidReplicationFactor.code());
    }

    #[test]
    fn manual_assignments_are_checked() {
        let image = image_with(&[(1, None), (2, None)]);
        let code = |a: &[Vec<BrokerId>]| validate_assignment(&image, a).map_err(|e| e.code);
        let bad = Err(ResponseError::InvalidReplicaAssignment.code());
        assert_eq!(code(&[vec![1], vec![2]]), Ok(1));
        assert_eq!(code(&[vec![1, 2], vec![2, 1]]), Ok(2));
        assert_eq!(code(&[vec![1], vec![9]]), bad, "unknown broker");
        assert_eq!(code(&[vec![1, 1]]), bad, "duplicate");
        assert_eq!(code(&[vec![1], vec![1, 2]]), bad, "uneven");
        assert_eq!(code(&[vec![]]), bad, "empty list");
        assert_eq!(code(&[]), bad, "no partitions");
        let mut fenced = image.clone();
        fenced.apply(
            2,
            &MetadataBatch {
                records: vec![MetadataRecord::FenceBroker { broker_id: 2 }],
                ..MetadataBatch::default()
            },
        );
        assert_eq!(
            validate_assignment(&fenced, &[vec![2]]).map_err(|e| e.code),
            bad,
            "fenced broker"
        );
        assert_eq!(
            placement_order(&fenced),
            vec![1],
            "fenced brokers get nothing"
        );
    }
}
