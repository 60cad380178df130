//! The metadata image: the cluster as the committed metadata log says it is — brokers, topics,
//! partition states, producer-id blocks. Every node applies the log to its own image and every
//! handler reads it (through [`MetadataHandle::image`](super::handle::MetadataHandle::image));
//! nothing else holds cluster truth. Snapshots of the metadata log are this image, serialised.
//!
//! [`MetadataImage::apply`] is deterministic and never fails: the controller validated every
//! record against the same image before proposing it, so a record that does not fit (which
//! only a bug could produce) is skipped with a warning on every node alike.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{BrokerId, Endpoint, MetadataBatch, MetadataRecord, PartitionState};
use super::requests::ControllerReply;

/// Replies of forwarded requests remembered for retries (a client retrying across a controller
/// failover): enough for every request in flight, bounded so the image stays small.
const COMPLETED_REQUESTS_MAX: usize = 10_000;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// `node.id`.
    pub id: BrokerId,
    /// Its current process start.
    pub incarnation: Uuid,
    /// Its advertised listeners.
    pub endpoints: Vec<Endpoint>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Fenced brokers lead nothing and are not listed to clients.
    pub fenced: bool,
    /// This incarnation shut down (controlled shutdown): it is never unfenced again.
    #[serde(default)]
    pub shut_down: bool,
}

impl BrokerRegistration {
    /// The endpoint of the listener named `listener`, if it has one.
    pub fn endpoint(&self, listener: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.listener == listener)
    }
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    /// Name.
    pub name: String,
    /// Id.
    pub id: Uuid,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// Partition states, by index.
    pub partitions: Vec<PartitionState>,
}

impl TopicImage {
    /// The partition with this index.
    pub fn partition(&self, index: i32) -> Option<&PartitionState> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    /// The partition count.
    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partitions.len()).unwrap_or(i32::MAX)
    }
}

/// The cluster's metadata at one log index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// The metadata log index this image reflects (0: nothing applied).
    pub applied_index: u64,
    /// Registered brokers, fenced or not.
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// Topics by id.
    pub topics: BTreeMap<Uuid, Arc<TopicImage>>,
    /// Topic ids by name.
    pub topic_ids: BTreeMap<String, Uuid>,
    /// The first producer id no block has taken.
    pub next_producer_id: i64,
    /// Replies of recent forwarded requests, by request id, oldest first.
    completed_requests: VecDeque<(Uuid, ControllerReply)>,
}

impl MetadataImage {
    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    /// The topic with id `id`.
    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicImage>> {
        self.topics.get(&id)
    }

    /// The state of partition `index` of topic `name`.
    pub fn partition(&self, name: &str, index: i32) -> Option<&PartitionState> {
        self.topic(name).and_then(|t| t.partition(index))
    }

    /// The state of partition `index` of the topic with id `topic_id`.
    pub fn partition_by_id(&self, topic_id: Uuid, index: i32) -> Option<&PartitionState> {
        self.topic_by_id(topic_id).and_then(|t| t.partition(index))
    }

    /// Brokers that are registered and not fenced, by id.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Whether `broker` is registered and unfenced.
    pub fn is_unfenced(&self, broker: BrokerId) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    /// The reply a request with this id already got, if it committed.
    pub fn completed_reply(&self, request_id: Uuid) -> Option<&ControllerReply> {
        self.completed_requests
            .iter()
            .rev()
            .find(|(id, _)| *id == request_id)
            .map(|(_, reply)| reply)
    }

    /// Applies one committed batch at log index `index`.
    pub fn apply(&mut self, index: u64, batch: &MetadataBatch) {
        for record in &batch.records {
            self.apply_record(record);
        }
        if let (Some(id), Some(reply)) = (batch.request_id, &batch.reply) {
            if self.completed_requests.len() >= COMPLETED_REQUESTS_MAX {
                self.completed_requests.pop_front();
            }
            self.completed_requests.push_back((id, reply.clone()));
        }
        self.applied_index = index;
    }

    fn apply_record(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation,
                endpoints,
                rack,
            } => {
                self.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        id: *broker_id,
                        incarnation: *incarnation,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced: false,
                        shut_down: false,
                    },
                );
            }
            MetadataRecord::FenceBroker { broker_id } => self.set_fenced(*broker_id, true),
            MetadataRecord::UnfenceBroker { broker_id } => self.set_fenced(*broker_id, false),
            MetadataRecord::ShutDownBroker { broker_id } => match self.brokers.get_mut(broker_id) {
                Some(registration) => registration.shut_down = true,
                None => skipped(record, "no such broker"),
            },
            MetadataRecord::CreateTopic {
                name,
                topic_id,
                configs,
                partitions,
            } => {
                if self.topic_ids.contains_key(name) || self.topics.contains_key(topic_id) {
                    skipped(record, "the topic exists");
                    return;
                }
                self.topic_ids.insert(name.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    Arc::new(TopicImage {
                        name: name.clone(),
                        id: *topic_id,
                        configs: configs.clone(),
                        partitions: partitions.clone(),
                    }),
                );
            }
            MetadataRecord::AddPartitions {
                topic_id,
                partitions,
            } => self.change_topic(record, *topic_id, |topic| {
                topic.partitions.extend(partitions.iter().cloned());
            }),
            MetadataRecord::DeleteTopic { topic_id } => match self.topics.remove(topic_id) {
                Some(topic) => {
                    self.topic_ids.remove(&topic.name);
                }
                None => skipped(record, "no such topic"),
            },
            MetadataRecord::ChangePartition {
                topic_id,
                partition,
                state,
            } => {
                let exists = self
                    .topics
                    .get(topic_id)
                    .is_some_and(|t| t.partition(*partition).is_some());
                if !exists {
                    skipped(record, "no such partition");
                    return;
                }
                self.change_topic(record, *topic_id, |topic| {
                    if let Some(slot) = usize::try_from(*partition)
                        .ok()
                        .and_then(|i| topic.partitions.get_mut(i))
                    {
                        *slot = state.clone();
                    }
                });
            }
            MetadataRecord::SetTopicConfigs { topic_id, configs } => {
                self.change_topic(record, *topic_id, |topic| topic.configs = configs.clone());
            }
            MetadataRecord::ProducerIdsBlock { first, count, .. } => {
                self.next_producer_id = self.next_producer_id.max(first.saturating_add(*count));
            }
        }
    }

    fn set_fenced(&mut self, broker: BrokerId, fenced: bool) {
        match self.brokers.get_mut(&broker) {
            Some(registration) => registration.fenced = fenced,
            None => tracing::warn!(
                broker,
                fenced,
                "metadata record for an unregistered broker skipped"
            ),
        }
    }

    /// Replaces a topic by `change(copy)`; other images sharing the old `Arc` keep it.
    fn change_topic(
        &mut self,
        record: &MetadataRecord,
        topic_id: Uuid,
        change: impl FnOnce(&mut TopicImage),
    ) {
        match self.topics.get_mut(&topic_id) {
            Some(topic) => change(Arc::make_mut(topic)),
            None => skipped(record, "no such topic"),
        }
    }
}

fn skipped(record: &MetadataRecord, why: &str) {
    tracing::warn!(
        ?record,
        why,
        "metadata record does not fit the image; skipped"
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn state(leader: BrokerId) -> PartitionState {
        PartitionState {
            replicas: vec![leader],
            isr: vec![leader],
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    fn batch(records: Vec<MetadataRecord>) -> MetadataBatch {
        MetadataBatch {
            request_id: None,
            reply: None,
            records,
        }
    }

    #[test]
    fn topics_are_created_changed_and_deleted() {
        let mut image = MetadataImage::default();
        let id = Uuid::new_v4();
        image.apply(
            1,
            &batch(vec![MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id: id,
                configs: BTreeMap::new(),
                partitions: vec![state(1)],
            }]),
        );
        let before = image.clone();
        image.apply(
            2,
            &batch(vec![
                MetadataRecord::AddPartitions {
                    topic_id: id,
                    partitions: vec![state(2)],
                },
                MetadataRecord::ChangePartition {
                    topic_id: id,
                    partition: 0,
                    state: state(3),
                },
            ]),
        );
        assert_eq!(image.topic("t").unwrap().partition_count(), 2);
        assert_eq!(image.partition("t", 0).unwrap().leader, 3);
        // The earlier image is untouched (copy on write).
        assert_eq!(before.partition("t", 0).unwrap().leader, 1);
        assert_eq!(image.applied_index, 2);
        image.apply(
            3,
            &batch(vec![MetadataRecord::DeleteTopic { topic_id: id }]),
        );
        assert!(image.topic("t").is_none() && image.topics.is_empty());
    }

    #[test]
    fn a_record_that_does_not_fit_changes_nothing() {
        let mut image = MetadataImage::default();
        image.apply(
            1,
            &batch(vec![MetadataRecord::ChangePartition {
                topic_id: Uuid::new_v4(),
                partition: 0,
                state: state(1),
            }]),
        );
        assert!(image.topics.is_empty());
        assert_eq!(image.applied_index, 1);
    }

    #[test]
    fn a_committed_request_keeps_its_reply_and_the_image_round_trips() {
        let mut image = MetadataImage::default();
        let request = Uuid::new_v4();
        image.apply(
            1,
            &MetadataBatch {
                request_id: Some(request),
                reply: Some(ControllerReply::Done),
                records: vec![MetadataRecord::ProducerIdsBlock {
                    broker_id: 1,
                    first: 0,
                    count: 1000,
                }],
            },
        );
        assert_eq!(image.completed_reply(request), Some(&ControllerReply::Done));
        assert_eq!(image.next_producer_id, 1000);
        let json = serde_json::to_vec(&image).unwrap();
        let back: MetadataImage = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, image);
    }
}
