//! What a RegisterBroker does to the incarnation it replaces. A broker that restarts fast
//! registers again before its session times out: the image still holds its previous
//! incarnation, unfenced, leading at the leader epochs it led before the restart. The new
//! process lost whatever that one had not fsynced, so leading at the same epochs could write
//! other records at offsets the followers already hold at that epoch — divergence that no
//! epoch comparison can see (docs/replication.md, "Controller"). Fencing the previous
//! incarnation in the same decision moves everything it led to a new leader epoch (and drops
//! it from the ISRs it was in) before the new one is registered.

use uuid::Uuid;

use super::elections::fence;
use crate::metadata::records::{BrokerId, MetadataRecord};
use crate::metadata::MetadataImage;

/// The records fencing `broker`'s registered incarnation when `incarnation` is a different,
/// new one: [`fence`]'s (new leaders or none at a new leader epoch for what it led, the ISRs
/// without it). Nothing when the image holds no registration of `broker`, holds this same
/// incarnation (a retried registration), or the previous one is fenced already.
/// `unclean_default`: the broker's `unclean.leader.election.enable`.
pub fn fence_previous_incarnation(
    image: &MetadataImage,
    broker: BrokerId,
    incarnation: Uuid,
    unclean_default: bool,
) -> Vec<MetadataRecord> {
    match image.brokers.get(&broker) {
        Some(previous) if previous.incarnation != incarnation => {
            fence(image, broker, unclean_default)
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::decide::Controller;
    use crate::metadata::records::{MetadataBatch, PartitionState};
    use crate::metadata::requests::ControllerRequest;

    fn incarnation(broker: BrokerId) -> Uuid {
        Uuid::from_u128(broker as u128)
    }

    /// Brokers 1-3 registered; "t" partition 0 on 1, 2, 3 and partition 1 on 1 alone, both
    /// led by 1 at leader epoch 5.
    fn image() -> MetadataImage {
        let mut records: Vec<MetadataRecord> = (1..=3)
            .map(|broker_id| MetadataRecord::RegisterBroker {
                broker_id,
                incarnation: incarnation(broker_id),
                endpoints: Vec::new(),
                rack: None,
            })
            .collect();
        let led_by_1 = |replicas: Vec<BrokerId>| PartitionState {
            isr: replicas.clone(),
            replicas,
            leader: 1,
            leader_epoch: 5,
            partition_epoch: 7,
        };
        records.push(MetadataRecord::CreateTopic {
            name: "t".into(),
            topic_id: Uuid::from_u128(99),
            configs: BTreeMap::new(),
            partitions: vec![led_by_1(vec![1, 2, 3]), led_by_1(vec![1])],
        });
        let mut image = MetadataImage::default();
        image.apply(
            1,
            &MetadataBatch {
                records,
                ..MetadataBatch::default()
            },
        );
        image
    }

    fn register(broker_id: BrokerId, incarnation: Uuid) -> ControllerRequest {
        ControllerRequest::RegisterBroker {
            broker_id,
            incarnation,
            endpoints: Vec::new(),
            rack: None,
        }
    }

    fn decide(image: &MetadataImage, request: &ControllerRequest) -> MetadataImage {
        let decision = Controller::default().decide(image, request);
        let mut next = image.clone();
        next.apply(
            image.applied_index + 1,
            &MetadataBatch {
                records: decision.records,
                ..MetadataBatch::default()
            },
        );
        next
    }

    #[test]
    fn a_new_incarnation_of_an_unfenced_leader_fences_the_previous_one() {
        let image = image();
        let records = fence_previous_incarnation(&image, 1, Uuid::from_u128(1001), false);
        assert_eq!(
            records.first(),
            Some(&MetadataRecord::FenceBroker { broker_id: 1 })
        );
        assert_eq!(
            records.len(),
            3,
            "one change per partition it led: {records:?}"
        );
    }

    #[test]
    fn a_restarted_leader_never_leads_at_an_epoch_of_its_previous_incarnation() {
        let after = decide(&image(), &register(1, Uuid::from_u128(1001)));
        let registration = &after.brokers[&1];
        assert_eq!(registration.incarnation, Uuid::from_u128(1001));
        assert!(!registration.fenced);
        // Replicated: a follower in sync leads now; the restarted broker left the ISR (its
        // leader adds it back once it has caught up).
        let replicated = after.partition("t", 0).unwrap();
        assert_eq!(replicated.leader, 2);
        assert_eq!(replicated.isr, vec![2, 3]);
        assert!(replicated.leader_epoch > 5, "{replicated:?}");
        // Its only replica: it leads again, but at a new epoch.
        let alone = after.partition("t", 1).unwrap();
        assert_eq!(alone.leader, 1);
        assert!(alone.leader_epoch > 5, "{alone:?}");
    }

    #[test]
    fn a_retried_registration_or_an_unknown_broker_fences_nothing() {
        let image = image();
        assert!(fence_previous_incarnation(&image, 1, incarnation(1), false).is_empty());
        assert!(fence_previous_incarnation(&image, 4, Uuid::from_u128(1004), false).is_empty());
        let after = decide(&image, &register(1, incarnation(1)));
        assert_eq!(after.partition("t", 0), image.partition("t", 0));
        assert_eq!(after.partition("t", 1), image.partition("t", 1));
    }

    #[test]
    fn a_new_incarnation_of_a_fenced_broker_adds_no_second_fence() {
        let mut image = image();
        let fenced = fence(&image, 1, false);
        image.apply(
            2,
            &MetadataBatch {
                records: fenced,
                ..MetadataBatch::default()
            },
        );
        assert!(fence_previous_incarnation(&image, 1, Uuid::from_u128(1001), false).is_empty());
    }
}
