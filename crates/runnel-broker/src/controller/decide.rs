//! [`Controller::decide`]: what the active controller does with one request, as a pure
//! function of the metadata image — the records to commit and the reply. Nothing here does
//! I/O or waits; `service.rs` feeds requests in and proposes the records.
//!
//! Topic requests are decided topic by topic, in request order, each on the image as the
//! earlier topics of the same request left it (so two topics of one request cannot collide,
//! and placement continues from one to the next); a topic that fails gets its error and adds
//! no record, the others go on.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use uuid::Uuid;

use super::alter_partition::{decide_isr_change, IsrChange};
use super::elect_leaders::decide_elections;
use super::elections::{elect_leaderless, fence};
use super::placement::{
    new_partition, place, placement_order, placement_start, validate_assignment,
};
use super::reassign::{complete_if_caught_up, decide_reassignments};
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::group::OFFSETS_TOPIC;
use crate::metadata::records::{MetadataBatch, MetadataRecord};
use crate::metadata::requests::{
    AdminError, ConfigChange, ControllerReply, ControllerRequest, NewPartitions, NewTopic,
    TopicConfigChange, TopicOutcome, TopicRef,
};
use crate::metadata::MetadataImage;
use crate::topic_config::TopicConfig;
use crate::topics::{collides, is_internal_name, validate_topic_name, PARTITIONS_PER_TOPIC_MAX};

/// Producer ids per `AllocateProducerIds` block.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// What the controller needs from the broker configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSettings {
    /// `num.partitions`: a CreateTopics with -1 partitions gets this many.
    pub num_partitions: i32,
    /// `default.replication.factor`: a CreateTopics with replication factor -1 gets this.
    pub default_replication_factor: i16,
    /// `offsets.topic.replication.factor`: `__consumer_offsets` gets min(this, unfenced
    /// brokers).
    pub offsets_topic_replication_factor: i16,
    /// `unclean.leader.election.enable`: the default of topics without the override.
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable`: move leadership back to preferred replicas.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`: how often.
    pub leader_imbalance_check_interval: Duration,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub session_timeout: Duration,
    /// `broker.heartbeat.interval.ms`: how often brokers heartbeat; the controller checks for
    /// expired sessions as often.
    pub heartbeat_interval: Duration,
}

impl Default for ControllerSettings {
    fn default() -> ControllerSettings {
        ControllerSettings {
            num_partitions: 1,
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval: Duration::from_secs(300),
            session_timeout: Duration::from_millis(9000),
            heartbeat_interval: Duration::from_millis(2000),
        }
    }
}

impl ControllerSettings {
    /// The settings of `config`; the session timeout and heartbeat interval keep their
    /// defaults (9 s, 2 s) until the configuration carries them — set them on the result.
    pub fn from_config(config: &BrokerConfig) -> ControllerSettings {
        ControllerSettings {
            num_partitions: config.num_partitions,
            default_replication_factor: config.default_replication_factor,
            offsets_topic_replication_factor: config.offsets_topic_replication_factor,
            unclean_leader_election_enable: config.unclean_leader_election_enable,
            auto_leader_rebalance_enable: config.auto_leader_rebalance_enable,
            leader_imbalance_check_interval: Duration::from_secs(
                config.leader_imbalance_check_interval_seconds,
            ),
            ..ControllerSettings::default()
        }
    }
}

/// What one request comes to: records to commit (none: nothing changes) and the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The records, applied atomically in this order.
    pub records: Vec<MetadataRecord>,
    /// The reply, sent once the records are committed.
    pub reply: ControllerReply,
}

impl Decision {
    fn new(records: Vec<MetadataRecord>, reply: ControllerReply) -> Decision {
        Decision { records, reply }
    }

    /// The decision for a topic request whose records would take `bytes` in the metadata
    /// log, more than one entry may ([`METADATA_BATCH_BYTES_MAX`]): nothing is committed, and
    /// every topic gets POLICY_VIOLATION saying why (the client splits it into smaller
    /// requests). `None` for other requests: their batches are small unless a broker leads
    /// tens of thousands of partitions (docs/cluster.md, "Known limits").
    pub fn refused(reply: &ControllerReply, bytes: usize) -> Option<Decision> {
        let ControllerReply::Topics(outcomes) = reply else {
            return None;
        };
        let message = format!(
            "the request's metadata change takes {bytes} bytes, more than one metadata log \
             entry may ({METADATA_BATCH_BYTES_MAX}); send fewer topics or partitions per request"
        );
        let outcomes = outcomes
            .iter()
            .map(|outcome| TopicOutcome {
                error: Some(AdminError {
                    code: ResponseError::PolicyViolation.code(),
                    message: message.clone(),
                }),
                ..outcome.clone()
            })
            .collect();
        Some(Decision::new(Vec::new(), ControllerReply::Topics(outcomes)))
    }
}

/// Largest encoding of one decision's records: a metadata log entry must fit a node-to-node
/// frame (16 MiB) with room to spare, or it could never be replicated.
pub const METADATA_BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The active controller's decision rules.
#[derive(Debug, Clone, Default)]
pub struct Controller {
    settings: ControllerSettings,
}

impl Controller {
    /// A controller deciding with `settings`.
    pub fn new(settings: ControllerSettings) -> Controller {
        Controller { settings }
    }

    /// Its settings.
    pub fn settings(&self) -> &ControllerSettings {
        &self.settings
    }

    /// The records and reply `request` comes to on `image`. Never fails: a request that
    /// cannot be carried out gets its error in the reply, per topic.
    pub fn decide(&self, image: &MetadataImage, request: &ControllerRequest) -> Decision {
        match request {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => self.create_topics(image, topics, *validate_only),
            ControllerRequest::DeleteTopics { topics } => delete_topics(image, topics),
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
            } => create_partitions(image, topics, *validate_only),
            ControllerRequest::AlterTopicConfigs {
                topics,
                validate_only,
            } => alter_configs(
                image,
                topics,
                *validate_only,
                self.settings.unclean_leader_election_enable,
            ),
            ControllerRequest::RegisterBroker {
                broker_id,
                incarnation,
                endpoints,
                rack,
            } => {
                let mut scratch = Scratch::new(image);
                // A new incarnation of a broker still registered (restarted within its session
                // timeout) is fenced first: what it led moves to a new leader epoch, so the new
                // process never writes at an epoch whose tail the old one may have lost, and it
                // leaves the ISRs until its leaders add it back.
                let restarted = image
                    .brokers
                    .get(broker_id)
                    .is_some_and(|b| b.incarnation != *incarnation);
                if restarted {
                    scratch.apply(fence(
                        image,
                        *broker_id,
                        self.settings.unclean_leader_election_enable,
                    ));
                }
                scratch.apply(vec![MetadataRecord::RegisterBroker {
                    broker_id: *broker_id,
                    incarnation: *incarnation,
                    endpoints: endpoints.clone(),
                    rack: rack.clone(),
                }]);
                let elections =
                    elect_leaderless(&scratch.image, self.settings.unclean_leader_election_enable);
                scratch.apply(elections);
                Decision::new(scratch.records, ControllerReply::Done)
            }
            ControllerRequest::BrokerHeartbeat {
                broker_id,
                incarnation,
            } => match image.brokers.get(broker_id) {
                Some(broker) if broker.incarnation == *incarnation && !broker.shut_down => {
                    let records = if broker.fenced {
                        let mut scratch = Scratch::new(image);
                        scratch.apply(vec![MetadataRecord::UnfenceBroker {
                            broker_id: *broker_id,
                        }]);
                        let elections = elect_leaderless(
                            &scratch.image,
                            self.settings.unclean_leader_election_enable,
                        );
                        scratch.apply(elections);
                        scratch.records
                    } else {
                        Vec::new()
                    };
                    Decision::new(records, ControllerReply::Heartbeat { fenced: false })
                }
                // Unknown, an earlier incarnation, or one that shut down: it must register
                // (again); a heartbeat that outlived its broker's shutdown unfences nothing.
                _ => Decision::new(Vec::new(), ControllerReply::Heartbeat { fenced: true }),
            },
            ControllerRequest::BrokerShutdown {
                broker_id,
                incarnation,
            } => {
                let current = image
                    .brokers
                    .get(broker_id)
                    .is_some_and(|b| b.incarnation == *incarnation);
                let records = if current {
                    let mut records = fence(
                        image,
                        *broker_id,
                        self.settings.unclean_leader_election_enable,
                    );
                    records.push(MetadataRecord::ShutDownBroker {
                        broker_id: *broker_id,
                    });
                    records
                } else {
                    Vec::new()
                };
                Decision::new(records, ControllerReply::Done)
            }
            ControllerRequest::AlterPartition {
                broker_id,
                topic_id,
                partition,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let change = IsrChange {
                    broker_id: *broker_id,
                    topic_id: *topic_id,
                    partition: *partition,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    isr,
                };
                // The ISR change may be the one that completes a reassignment.
                let decided = decide_isr_change(image, &change)
                    .map(|state| complete_if_caught_up(image, state));
                let records = match &decided {
                    Ok(state) if Some(state) != image.partition_by_id(*topic_id, *partition) => {
                        vec![MetadataRecord::ChangePartition {
                            topic_id: *topic_id,
                            partition: *partition,
                            state: state.clone(),
                        }]
                    }
                    _ => Vec::new(),
                };
                Decision::new(records, ControllerReply::AlterPartition(decided))
            }
            ControllerRequest::ElectLeaders {
                election_type,
                partitions,
            } => {
                let (records, outcomes) =
                    decide_elections(image, *election_type, partitions.as_deref());
                Decision::new(records, ControllerReply::Elections(outcomes))
            }
            ControllerRequest::AlterPartitionReassignments {
                partitions,
                allow_replication_factor_change,
            } => {
                let (records, outcomes) =
                    decide_reassignments(image, partitions, *allow_replication_factor_change);
                Decision::new(records, ControllerReply::Reassignments(outcomes))
            }
            ControllerRequest::AllocateProducerIds { broker_id } => {
                let first = image.next_producer_id.max(0);
                Decision::new(
                    vec![MetadataRecord::ProducerIdsBlock {
                        broker_id: *broker_id,
                        first,
                        count: PRODUCER_ID_BLOCK_SIZE,
                    }],
                    ControllerReply::ProducerIds {
                        first,
                        count: PRODUCER_ID_BLOCK_SIZE,
                    },
                )
            }
            ControllerRequest::ImportProducerIdFloor { broker_id, floor } => {
                let next = image.next_producer_id.max(0);
                let records = if *floor > next {
                    vec![MetadataRecord::ProducerIdsBlock {
                        broker_id: *broker_id,
                        first: next,
                        count: floor - next,
                    }]
                } else {
                    Vec::new()
                };
                Decision::new(records, ControllerReply::Done)
            }
        }
    }

    fn create_topics(
        &self,
        image: &MetadataImage,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Decision {
        let duplicates = duplicate_names(topics.iter().map(|t| t.name.as_str()));
        let mut scratch = Scratch::new(image);
        let mut outcomes = Vec::with_capacity(topics.len());
        for topic in topics {
            let decided = if duplicates.contains(&topic.name.as_str()) {
                Err(duplicate(&topic.name))
            } else {
                self.create_topic(&scratch.image, topic)
            };
            outcomes.push(match decided {
                Ok((topic_id, record)) => {
                    scratch.apply(vec![record]);
                    success(&topic.name, topic_id)
                }
                Err(error) => failure(&topic.name, Uuid::nil(), error),
            });
        }
        let records = if validate_only {
            Vec::new()
        } else {
            scratch.records
        };
        Decision::new(records, ControllerReply::Topics(outcomes))
    }

    fn create_topic(
        &self,
        image: &MetadataImage,
        topic: &NewTopic,
    ) -> Result<(Uuid, MetadataRecord), AdminError> {
        validate_topic_name(&topic.name).map_err(admin)?;
        if image.topic(&topic.name).is_some() {
            return Err(admin(BrokerError::TopicAlreadyExists(topic.name.clone())));
        }
        if image
            .topic_ids
            .keys()
            .any(|name| collides(name, &topic.name))
        {
            return Err(admin(BrokerError::InvalidTopic {
                name: topic.name.clone(),
                reason: "collides with an existing topic once '.' and '_' are treated alike",
            }));
        }
        if let Some(id) = topic.topic_id {
            if image.topic_by_id(id).is_some() {
                return Err(AdminError {
                    code: ResponseError::TopicAlreadyExists.code(),
                    message: format!("topic id {id} is taken by another topic"),
                });
            }
        }
        let config = TopicConfig::new(topic.configs.clone()).map_err(admin)?;
        let replicas = match &topic.assignment {
            Some(assignment) => {
                if topic.partitions != -1 || topic.replication_factor != -1 {
                    return Err(AdminError {
                        code: ResponseError::InvalidRequest.code(),
                        message: "a manual assignment takes -1 partitions and replication factor"
                            .into(),
                    });
                }
                check_partition_count(assignment.len())?;
                validate_assignment(image, assignment)?;
                assignment.clone()
            }
            None => {
                let partitions = match topic.partitions {
                    -1 => self.settings.num_partitions,
                    n => n,
                };
                if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
                    return Err(admin(BrokerError::InvalidPartitions(partitions)));
                }
                let order = placement_order(image);
                let replication_factor = match topic.replication_factor {
                    -1 if topic.name == OFFSETS_TOPIC => {
                        let brokers = i16::try_from(order.len()).unwrap_or(i16::MAX);
                        self.settings
                            .offsets_topic_replication_factor
                            .min(brokers.max(1))
                    }
                    -1 => self.settings.default_replication_factor,
                    n => n,
                };
                place(
                    &order,
                    placement_start(image),
                    usize::try_from(partitions).unwrap_or(0),
                    replication_factor,
                )?
            }
        };
        let topic_id = topic.topic_id.unwrap_or_else(Uuid::new_v4);
        Ok((
            topic_id,
            MetadataRecord::CreateTopic {
                name: topic.name.clone(),
                topic_id,
                configs: config.overrides().clone(),
                partitions: replicas.into_iter().map(new_partition).collect(),
            },
        ))
    }
}

fn delete_topics(image: &MetadataImage, topics: &[TopicRef]) -> Decision {
    let mut scratch = Scratch::new(image);
    let mut outcomes = Vec::with_capacity(topics.len());
    for target in topics {
        let found = match target {
            TopicRef::Name(name) => scratch
                .image
                .topic(name)
                .cloned()
                .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.clone())),
            TopicRef::Id(id) => scratch
                .image
                .topic_by_id(*id)
                .cloned()
                .ok_or(BrokerError::UnknownTopicId(*id)),
        };
        let outcome = match found {
            Ok(topic) if is_internal_name(&topic.name) => failure(
                &topic.name,
                topic.id,
                admin(BrokerError::InternalTopicDeletion(topic.name.clone())),
            ),
            Ok(topic) => {
                scratch.apply(vec![MetadataRecord::DeleteTopic { topic_id: topic.id }]);
                success(&topic.name, topic.id)
            }
            Err(error) => match target {
                TopicRef::Name(name) => failure(name, Uuid::nil(), admin(error)),
                TopicRef::Id(id) => failure("", *id, admin(error)),
            },
        };
        outcomes.push(outcome);
    }
    Decision::new(scratch.records, ControllerReply::Topics(outcomes))
}

fn create_partitions(
    image: &MetadataImage,
    topics: &[NewPartitions],
    validate_only: bool,
) -> Decision {
    let duplicates = duplicate_names(topics.iter().map(|t| t.name.as_str()));
    let mut scratch = Scratch::new(image);
    let mut outcomes = Vec::with_capacity(topics.len());
    for request in topics {
        let decided = if duplicates.contains(&request.name.as_str()) {
            Err(duplicate(&request.name))
        } else {
            add_partitions(&scratch.image, request)
        };
        outcomes.push(match decided {
            Ok((topic_id, record)) => {
                scratch.apply(vec![record]);
                success(&request.name, topic_id)
            }
            Err(error) => failure(&request.name, Uuid::nil(), error),
        });
    }
    let records = if validate_only {
        Vec::new()
    } else {
        scratch.records
    };
    Decision::new(records, ControllerReply::Topics(outcomes))
}

fn add_partitions(
    image: &MetadataImage,
    request: &NewPartitions,
) -> Result<(Uuid, MetadataRecord), AdminError> {
    let topic = image
        .topic(&request.name)
        .ok_or_else(|| admin(BrokerError::UnknownTopicOrPartition(request.name.clone())))?;
    if crate::topics::is_internal_name(&topic.name) {
        // The group (or transaction) → partition mapping depends on the partition count.
        return Err(AdminError {
            code: ResponseError::InvalidRequest.code(),
            message: format!(
                "the partitions of internal topic '{}' cannot be changed",
                topic.name
            ),
        });
    }
    let current = topic.partition_count();
    if request.count <= current {
        return Err(AdminError {
            code: ResponseError::InvalidPartitions.code(),
            message: format!(
                "topic '{}' has {current} partitions; a new count must be higher, not {}",
                request.name, request.count
            ),
        });
    }
    if request.count > PARTITIONS_PER_TOPIC_MAX {
        return Err(admin(BrokerError::InvalidPartitions(request.count)));
    }
    let added = usize::try_from(request.count - current).unwrap_or(0);
    // A partition being reassigned lists original and target replicas: count the target.
    let replication_factor = topic
        .partitions
        .first()
        .map_or(1, |p| p.target_replicas().len());
    let replicas = match &request.assignment {
        Some(assignment) => {
            if assignment.len() != added {
                return Err(AdminError {
                    code: ResponseError::InvalidReplicaAssignment.code(),
                    message: format!(
                        "the assignment gives {} entries for {added} new partitions",
                        assignment.len()
                    ),
                });
            }
            let given = validate_assignment(image, assignment)?;
            if given != replication_factor {
                return Err(AdminError {
                    code: ResponseError::InvalidReplicaAssignment.code(),
                    message: format!(
                        "the assignment has {given} replicas per partition; the topic has {replication_factor}"
                    ),
                });
            }
            assignment.clone()
        }
        None => place(
            &placement_order(image),
            placement_start(image),
            added,
            i16::try_from(replication_factor).unwrap_or(i16::MAX),
        )?,
    };
    Ok((
        topic.id,
        MetadataRecord::AddPartitions {
            topic_id: topic.id,
            partitions: replicas.into_iter().map(new_partition).collect(),
        },
    ))
}

/// Config changes, then the elections a newly allowed unclean election makes possible.
fn alter_configs(
    image: &MetadataImage,
    topics: &[TopicConfigChange],
    validate_only: bool,
    unclean_default: bool,
) -> Decision {
    let duplicates = duplicate_names(topics.iter().map(|t| t.name.as_str()));
    let mut scratch = Scratch::new(image);
    let mut outcomes = Vec::with_capacity(topics.len());
    for change in topics {
        let decided = if duplicates.contains(&change.name.as_str()) {
            Err(duplicate(&change.name))
        } else {
            alter_config(&scratch.image, change)
        };
        outcomes.push(match decided {
            Ok((topic_id, record)) => {
                scratch.apply(record.into_iter().collect());
                success(&change.name, topic_id)
            }
            Err(error) => failure(&change.name, Uuid::nil(), error),
        });
    }
    let elections = elect_leaderless(&scratch.image, unclean_default);
    scratch.apply(elections);
    let records = if validate_only {
        Vec::new()
    } else {
        scratch.records
    };
    Decision::new(records, ControllerReply::Topics(outcomes))
}

/// The topic's id and its `SetTopicConfigs` record (none if nothing changes).
fn alter_config(
    image: &MetadataImage,
    change: &TopicConfigChange,
) -> Result<(Uuid, Option<MetadataRecord>), AdminError> {
    let topic = image
        .topic(&change.name)
        .ok_or_else(|| admin(BrokerError::UnknownTopicOrPartition(change.name.clone())))?;
    let config = match &change.change {
        ConfigChange::Replace(overrides) => TopicConfig::new(overrides.clone()),
        ConfigChange::Incremental(ops) => TopicConfig::new(topic.configs.clone()).and_then(|c| {
            c.apply_ops(
                ops.iter()
                    .map(|op| (op.name.as_str(), op.op, op.value.as_deref())),
            )
        }),
    }
    .map_err(admin)?;
    let record = (config.overrides() != &topic.configs).then(|| MetadataRecord::SetTopicConfigs {
        topic_id: topic.id,
        configs: config.overrides().clone(),
    });
    Ok((topic.id, record))
}

/// The image as a decision's records so far leave it, and those records.
pub(super) struct Scratch {
    pub(super) image: MetadataImage,
    pub(super) records: Vec<MetadataRecord>,
}

impl Scratch {
    pub(super) fn new(image: &MetadataImage) -> Scratch {
        Scratch {
            image: image.clone(),
            records: Vec::new(),
        }
    }

    pub(super) fn apply(&mut self, records: Vec<MetadataRecord>) {
        if records.is_empty() {
            return;
        }
        let index = self.image.applied_index;
        let batch = MetadataBatch {
            records,
            ..MetadataBatch::default()
        };
        self.image.apply(index, &batch);
        self.records.extend(batch.records);
    }
}

/// Names given more than once.
fn duplicate_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in names {
        *counts.entry(name).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .map(|(name, _)| name)
        .collect()
}

fn duplicate(name: &str) -> AdminError {
    AdminError {
        code: ResponseError::InvalidRequest.code(),
        message: format!("topic '{name}' appears more than once in the request"),
    }
}

fn check_partition_count(count: usize) -> Result<(), AdminError> {
    let count = i32::try_from(count).unwrap_or(i32::MAX);
    if (1..=PARTITIONS_PER_TOPIC_MAX).contains(&count) {
        Ok(())
    } else {
        Err(admin(BrokerError::InvalidPartitions(count)))
    }
}

/// The Kafka error a broker error is answered with.
pub fn admin(error: BrokerError) -> AdminError {
    AdminError {
        code: error.code(),
        message: error.to_string(),
    }
}

fn success(name: &str, topic_id: Uuid) -> TopicOutcome {
    TopicOutcome {
        name: name.to_string(),
        topic_id,
        error: None,
    }
}

fn failure(name: &str, topic_id: Uuid, error: AdminError) -> TopicOutcome {
    TopicOutcome {
        name: name.to_string(),
        topic_id,
        error: Some(error),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::controller::placement::tests::image_with;
    use crate::metadata::records::BrokerId;
    use crate::metadata::requests::{AlterPartitionError, ConfigOp, ElectionType};
    use crate::metadata::NO_LEADER;

    fn controller() -> Controller {
        Controller::new(ControllerSettings {
            num_partitions: 3,
            ..ControllerSettings::default()
        })
    }

    fn new_topic(name: &str, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            assignment: None,
            configs: BTreeMap::new(),
            topic_id: None,
        }
    }

    fn create(topics: Vec<NewTopic>) -> ControllerRequest {
        ControllerRequest::CreateTopics {
            topics,
            validate_only: false,
        }
    }

    /// Decides `request` and applies its records; returns the reply's outcomes (if any).
    fn run(
        controller: &Controller,
        image: &mut MetadataImage,
        request: &ControllerRequest,
    ) -> ControllerReply {
        let decision = controller.decide(image, request);
        let index = image.applied_index + 1;
        image.apply(
            index,
            &MetadataBatch {
                request_id: None,
                reply: None,
                records: decision.records,
            },
        );
        decision.reply
    }

    fn errors(reply: &ControllerReply) -> Vec<Option<i16>> {
        match reply {
            ControllerReply::Topics(outcomes) => outcomes
                .iter()
                .map(|o| o.error.as_ref().map(|e| e.code))
                .collect(),
            other => panic!("not a topics reply: {other:?}"),
        }
    }

    fn code(error: ResponseError) -> Option<i16> {
        Some(error.code())
    }

    #[test]
    fn topics_spread_over_brokers_and_continue_where_the_last_stopped() {
        let c = controller();
        let mut image = image_with(&[(1, None), (2, None), (3, None)]);
        let reply = run(&c, &mut image, &create(vec![new_topic("a", 12, 1)]));
        assert_eq!(errors(&reply), vec![None]);
        let a = image.topic("a").unwrap();
        let mut leaders = BTreeMap::new();
        for p in &a.partitions {
            assert_eq!(p.replicas, vec![p.leader]);
            assert_eq!(p.isr, p.replicas);
            assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
            *leaders.entry(p.leader).or_insert(0) += 1;
        }
        assert_eq!(leaders, BTreeMap::from([(1, 4), (2, 4), (3, 4)]));
        // One-partition topics rotate over the brokers.
        let mut firsts = Vec::new();
        for name in ["b", "c", "d"] {
            run(&c, &mut image, &create(vec![new_topic(name, 1, -1)]));
            firsts.push(image.topic(name).unwrap().partitions[0].leader);
        }
        firsts.sort_unstable();
        assert_eq!(firsts, vec![1, 2, 3]);
        // -1 partitions: num.partitions.
        run(&c, &mut image, &create(vec![new_topic("e", -1, -1)]));
        assert_eq!(image.topic("e").unwrap().partition_count(), 3);
    }

    #[test]
    fn rack_aware_order_is_used() {
        let c = controller();
        let mut image = image_with(&[(1, Some("a")), (2, Some("a")), (3, Some("b"))]);
        run(&c, &mut image, &create(vec![new_topic("t", 3, 1)]));
        let leaders: Vec<_> = image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        assert_eq!(leaders, vec![1, 3, 2]);
    }

    #[test]
    fn names_duplicates_and_collisions_are_refused() {
        let c = controller();
        let mut image = image_with(&[(1, None)]);
        let reply = run(
            &c,
            &mut image,
            &create(vec![
                new_topic("a.b", 1, 1),
                new_topic("a_b", 1, 1),
                new_topic("bad name", 1, 1),
                new_topic("dup", 1, 1),
                new_topic("dup", 1, 1),
                new_topic("zero", 0, 1),
                new_topic("many", PARTITIONS_PER_TOPIC_MAX + 1, 1),
            ]),
        );
        assert_eq!(
            errors(&reply),
            vec![
                None,
                code(ResponseError::InvalidTopicException),
                code(ResponseError::InvalidTopicException),
                code(ResponseError::InvalidRequest),
                code(ResponseError::InvalidRequest),
                code(ResponseError::InvalidPartitions),
                code(ResponseError::InvalidPartitions),
            ]
        );
        assert_eq!(image.topic_ids.keys().collect::<Vec<_>>(), vec!["a.b"]);
        let again = run(&c, &mut image, &create(vec![new_topic("a.b", 1, 1)]));
        assert_eq!(
            errors(&again),
            vec![code(ResponseError::TopicAlreadyExists)]
        );
    }

    #[test]
    fn replication_factor_is_checked() {
        let c = controller();
        let mut image = image_with(&[(1, None), (2, None)]);
        let reply = run(
            &c,
            &mut image,
            &create(vec![
                new_topic("three", 1, 3),
                new_topic("two", 4, 2),
                new_topic("zero", 1, 0),
            ]),
        );
        assert_eq!(
            errors(&reply),
            vec![
                code(ResponseError::InvalidReplicationFactor),
                None,
                code(ResponseError::InvalidReplicationFactor)
            ]
        );
        let ControllerReply::Topics(outcomes) = &reply else {
            unreachable!()
        };
        assert!(outcomes[0]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("only 2 broker(s) are registered and unfenced"));
        for p in &image.topic("two").unwrap().partitions {
            assert_eq!(p.replicas.len(), 2);
            assert_eq!(p.isr, p.replicas, "all replicas start in sync");
            assert_eq!(p.leader, p.replicas[0], "the preferred replica leads");
        }
        // No broker at all.
        let mut empty = MetadataImage::default();
        let reply = run(&c, &mut empty, &create(vec![new_topic("t", 1, 1)]));
        assert_eq!(
            errors(&reply),
            vec![code(ResponseError::InvalidReplicationFactor)]
        );
    }

    #[test]
    fn default_and_offsets_topic_replication_factors() {
        let c = Controller::new(ControllerSettings {
            default_replication_factor: 3,
            ..ControllerSettings::default()
        });
        let mut image = image_with(&[(1, None), (2, None)]);
        // -1: default.replication.factor 3, above the 2 brokers.
        let reply = run(&c, &mut image, &create(vec![new_topic("d", 1, -1)]));
        assert_eq!(
            errors(&reply),
            vec![code(ResponseError::InvalidReplicationFactor)]
        );
        // __consumer_offsets: min(offsets.topic.replication.factor 3, 2 brokers).
        let reply = run(
            &c,
            &mut image,
            &create(vec![new_topic(OFFSETS_TOPIC, 4, -1)]),
        );
        assert_eq!(errors(&reply), vec![None]);
        let offsets = image.topic(OFFSETS_TOPIC).unwrap();
        assert!(offsets.partitions.iter().all(|p| p.replicas.len() == 2));
        let mut image = image_with(&[(1, None), (2, None), (3, None), (4, None)]);
        run(&c, &mut image, &create(vec![new_topic("d", 2, -1)]));
        run(
            &c,
            &mut image,
            &create(vec![new_topic(OFFSETS_TOPIC, 2, -1)]),
        );
        for name in ["d", OFFSETS_TOPIC] {
            let topic = image.topic(name).unwrap();
            assert!(
                topic.partitions.iter().all(|p| p.replicas.len() == 3),
                "{name}"
            );
        }
        // CreatePartitions keeps the topic's replication factor.
        let grow = ControllerRequest::CreatePartitions {
            topics: vec![NewPartitions {
                name: "d".into(),
                count: 5,
                assignment: None,
            }],
            validate_only: false,
        };
        assert_eq!(errors(&run(&c, &mut image, &grow)), vec![None]);
        let d = image.topic("d").unwrap();
        assert_eq!(d.partition_count(), 5);
        assert!(d
            .partitions
            .iter()
            .all(|p| p.replicas.len() == 3 && p.isr == p.replicas));
    }

    #[test]
    fn controlled_shutdown_moves_leadership_and_shrinks_isrs_then_preferred_election_returns_it() {
        let c = controller();
        let mut image = image_with(&[(1, None), (2, None), (3, None)]);
        run(&c, &mut image, &create(vec![new_topic("t", 3, 3)]));
        let incarnation = image.brokers[&1].incarnation;
        let before = image.topic("t").unwrap().clone();
        let shutdown = ControllerRequest::BrokerShutdown {
            broker_id: 1,
            incarnation,
        };
        assert_eq!(run(&c, &mut image, &shutdown), ControllerReply::Done);
        let after = image.topic("t").unwrap().clone();
        for (old, new) in before.partitions.iter().zip(&after.partitions) {
            assert!(!new.isr.contains(&1), "{new:?}");
            assert_ne!(new.leader, 1);
            assert!(new.isr.contains(&new.leader));
            if old.leader == 1 {
                assert_eq!(new.leader_epoch, old.leader_epoch + 1);
            }
        }
        // Back (a new incarnation), then its leader adds it to the ISR with AlterPartition.
        run(
            &c,
            &mut image,
            &ControllerRequest::RegisterBroker {
                broker_id: 1,
                incarnation: Uuid::new_v4(),
                endpoints: Vec::new(),
                rack: None,
            },
        );
        let topic = image.topic("t").unwrap().clone();
        for (index, state) in topic.partitions.iter().enumerate() {
            let mut isr = state.isr.clone();
            isr.push(1);
            let alter = ControllerRequest::AlterPartition {
                broker_id: state.leader,
                topic_id: topic.id,
                partition: i32::try_from(index).unwrap(),
                leader_epoch: state.leader_epoch,
                partition_epoch: state.partition_epoch,
                isr,
            };
            let ControllerReply::AlterPartition(Ok(committed)) = run(&c, &mut image, &alter) else {
                panic!("AlterPartition refused");
            };
            assert_eq!(
                &committed,
                image.partition("t", i32::try_from(index).unwrap()).unwrap()
            );
            assert_eq!(committed.isr.len(), 3);
            // The same request again: the state as it is, nothing committed.
            let again = c.decide(&image, &alter);
            assert!(again.records.is_empty());
            assert!(matches!(
                again.reply,
                ControllerReply::AlterPartition(Err(
                    AlterPartitionError::InvalidUpdateVersion { .. }
                ))
            ));
        }
        let elect = ControllerRequest::ElectLeaders {
            election_type: ElectionType::Preferred,
            partitions: None,
        };
        let ControllerReply::Elections(outcomes) = run(&c, &mut image, &elect) else {
            panic!("not an elections reply");
        };
        assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
        for (old, new) in before
            .partitions
            .iter()
            .zip(&image.topic("t").unwrap().partitions)
        {
            assert_eq!(
                new.leader, old.leader,
                "every partition led by its preferred replica"
            );
        }
    }

    #[test]
    fn a_new_incarnation_of_a_registered_broker_is_fenced_first() {
        let c = controller();
        let mut image = image_with(&[(1, None), (2, None)]);
        let mut replicated = new_topic("t", -1, -1);
        replicated.assignment = Some(vec![vec![1, 2]]);
        let mut single = new_topic("u", -1, -1);
        single.assignment = Some(vec![vec![1]]);
        run(&c, &mut image, &create(vec![replicated, single]));
        let register = |incarnation| ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation,
            endpoints: Vec::new(),
            rack: None,
        };
        // The same incarnation again (a retry) changes nothing.
        let same = image.brokers[&1].incarnation;
        assert_eq!(c.decide(&image, &register(same)).records.len(), 1);
        run(&c, &mut image, &register(Uuid::new_v4()));
        assert!(image.is_unfenced(1));
        let p0 = image.partition("t", 0).unwrap();
        assert_eq!(
            (p0.leader, p0.isr.clone(), p0.leader_epoch),
            (2, vec![2], 1)
        );
        // Its only replica: offline for the fence, then led again at a new epoch.
        let p1 = image.partition("u", 0).unwrap();
        assert_eq!(
            (p1.leader, p1.isr.clone(), p1.leader_epoch),
            (1, vec![1], 2)
        );
    }

    #[test]
    fn manual_assignments_and_imported_ids() {
        let c = controller();
        let mut image = image_with(&[(1, None), (2, None)]);
        let id = Uuid::new_v4();
        let mut assigned = new_topic("m", -1, -1);
        assigned.assignment = Some(vec![vec![2], vec![2], vec![1]]);
        assigned.topic_id = Some(id);
        let mut unknown = new_topic("u", -1, -1);
        unknown.assignment = Some(vec![vec![7]]);
        let mut both = new_topic("b", 2, -1);
        both.assignment = Some(vec![vec![1]]);
        let mut wide = new_topic("w", -1, -1);
        wide.assignment = Some(vec![vec![1, 2]]);
        let mut same_id = new_topic("other", 1, 1);
        same_id.topic_id = Some(id);
        let reply = run(
            &c,
            &mut image,
            &create(vec![assigned, unknown, both, wide, same_id]),
        );
        assert_eq!(
            errors(&reply),
            vec![
                None,
                code(ResponseError::InvalidReplicaAssignment),
                code(ResponseError::InvalidRequest),
                None,
                code(ResponseError::TopicAlreadyExists),
            ]
        );
        let m = image.topic("m").unwrap();
        assert_eq!(m.id, id);
        let leaders: Vec<_> = m.partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders, vec![2, 2, 1]);
        let w = &image.topic("w").unwrap().partitions[0];
        assert_eq!(
            (w.replicas.clone(), w.isr.clone(), w.leader),
            (vec![1, 2], vec![1, 2], 1)
        );
    }

    #[test]
    fn validate_only_commits_nothing_and_configs_are_validated() {
        let c = controller();
        let image = image_with(&[(1, None)]);
        let mut good = new_topic("g", 1, 1);
        good.configs = BTreeMap::from([
            ("retention.ms".into(), "100".into()),
            ("message.format.version".into(), "2.8".into()),
        ]);
        let mut bad = new_topic("b", 1, 1);
        bad.configs = BTreeMap::from([("retention.ms".into(), "x".into())]);
        let request = ControllerRequest::CreateTopics {
            topics: vec![good.clone(), bad],
            validate_only: true,
        };
        let decision = c.decide(&image, &request);
        assert!(decision.records.is_empty());
        assert_eq!(
            errors(&decision.reply),
            vec![None, code(ResponseError::InvalidConfig)]
        );
        let decision = c.decide(&image, &create(vec![good]));
        let MetadataRecord::CreateTopic { configs, .. } = &decision.records[0] else {
            panic!("{:?}", decision.records)
        };
        assert_eq!(
            configs,
            &BTreeMap::from([("retention.ms".to_string(), "100".to_string())]),
            "obsolete configs are dropped"
        );
    }

    #[test]
    fn delete_by_name_and_id_refusing_internal_topics() {
        let c = controller();
        let mut image = image_with(&[(1, None)]);
        run(
            &c,
            &mut image,
            &create(vec![
                new_topic("a", 1, 1),
                new_topic("b", 1, 1),
                new_topic("__consumer_offsets", 1, 1),
            ]),
        );
        let b = image.topic("b").unwrap().id;
        let missing = Uuid::new_v4();
        let reply = run(
            &c,
            &mut image,
            &ControllerRequest::DeleteTopics {
                topics: vec![
                    TopicRef::Name("a".into()),
                    TopicRef::Id(b),
                    TopicRef::Name("a".into()),
                    TopicRef::Id(missing),
                    TopicRef::Name("__consumer_offsets".into()),
                ],
            },
        );
        assert_eq!(
            errors(&reply),
            vec![
                None,
                None,
                code(ResponseError::UnknownTopicOrPartition),
                code(ResponseError::UnknownTopicId),
                code(ResponseError::TopicAuthorizationFailed),
            ]
        );
        let ControllerReply::Topics(outcomes) = &reply else {
            unreachable!()
        };
        assert_eq!((outcomes[1].name.as_str(), outcomes[1].topic_id), ("b", b));
        assert_eq!(
            image.topic_ids.keys().collect::<Vec<_>>(),
            vec!["__consumer_offsets"]
        );
    }

    #[test]
    fn partitions_are_added_and_checked() {
        let c = controller();
        let mut image = image_with(&[(1, None), (2, None)]);
        run(&c, &mut image, &create(vec![new_topic("t", 2, 1)]));
        let grow = |name: &str, count: i32, assignment: Option<Vec<Vec<BrokerId>>>| NewPartitions {
            name: name.into(),
            count,
            assignment,
        };
        let reply = run(
            &c,
            &mut image,
            &ControllerRequest::CreatePartitions {
                topics: vec![
                    grow("t", 4, None),
                    grow("nope", 4, None),
                    grow("t", 1, None),
                ],
                validate_only: false,
            },
        );
        // "t" twice in one request: both refused.
        assert_eq!(
            errors(&reply),
            vec![
                code(ResponseError::InvalidRequest),
                code(ResponseError::UnknownTopicOrPartition),
                code(ResponseError::InvalidRequest),
            ]
        );
        let requests = [
            (grow("t", 2, None), code(ResponseError::InvalidPartitions)),
            (
                grow("t", 4, Some(vec![vec![1]])),
                code(ResponseError::InvalidReplicaAssignment),
            ),
            (
                grow("t", 3, Some(vec![vec![1, 2]])),
                code(ResponseError::InvalidReplicaAssignment),
            ),
            (
                grow("t", 3, Some(vec![vec![5]])),
                code(ResponseError::InvalidReplicaAssignment),
            ),
            (grow("t", 3, Some(vec![vec![2]])), None),
            (grow("t", 5, None), None),
        ];
        for (request, expected) in requests {
            let reply = run(
                &c,
                &mut image,
                &ControllerRequest::CreatePartitions {
                    topics: vec![request.clone()],
                    validate_only: false,
                },
            );
            assert_eq!(errors(&reply), vec![expected], "{request:?}");
        }
        let t = image.topic("t").unwrap();
        assert_eq!(t.partition_count(), 5);
        assert_eq!(t.partitions[2].replicas, vec![2]);
        let leaders: BTreeSet<_> = t.partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders, BTreeSet::from([1, 2]));
        let decision = c.decide(
            &image,
            &ControllerRequest::CreatePartitions {
                topics: vec![grow("t", 6, None)],
                validate_only: true,
            },
        );
        assert_eq!(errors(&decision.reply), vec![None]);
        assert!(decision.records.is_empty());
    }

    #[test]
    fn configs_are_replaced_or_changed_incrementally() {
        let c = controller();
        let mut image = image_with(&[(1, None)]);
        run(&c, &mut image, &create(vec![new_topic("t", 1, 1)]));
        let alter = |change: ConfigChange| ControllerRequest::AlterTopicConfigs {
            topics: vec![TopicConfigChange {
                name: "t".into(),
                change,
            }],
            validate_only: false,
        };
        let op = |name: &str, op: i8, value: Option<&str>| ConfigOp {
            name: name.into(),
            op,
            value: value.map(str::to_string),
        };
        run(
            &c,
            &mut image,
            &alter(ConfigChange::Replace(BTreeMap::from([(
                "retention.ms".into(),
                "5".into(),
            )]))),
        );
        let reply = run(
            &c,
            &mut image,
            &alter(ConfigChange::Incremental(vec![
                op("segment.ms", 0, Some("100")),
                op("cleanup.policy", 2, Some("compact")),
            ])),
        );
        assert_eq!(errors(&reply), vec![None]);
        assert_eq!(
            image.topic("t").unwrap().configs,
            BTreeMap::from([
                ("cleanup.policy".to_string(), "delete,compact".to_string()),
                ("retention.ms".to_string(), "5".to_string()),
                ("segment.ms".to_string(), "100".to_string()),
            ])
        );
        let bad = run(
            &c,
            &mut image,
            &alter(ConfigChange::Incremental(vec![
                op("retention.ms", 1, None),
                op("segment.ms", 0, Some("nope")),
            ])),
        );
        assert_eq!(errors(&bad), vec![code(ResponseError::InvalidConfig)]);
        assert_eq!(image.topic("t").unwrap().configs.len(), 3, "all or nothing");
        let replaced = run(
            &c,
            &mut image,
            &alter(ConfigChange::Replace(BTreeMap::new())),
        );
        assert_eq!(errors(&replaced), vec![None]);
        assert!(image.topic("t").unwrap().configs.is_empty());
        let unknown = c.decide(
            &image,
            &ControllerRequest::AlterTopicConfigs {
                topics: vec![TopicConfigChange {
                    name: "nope".into(),
                    change: ConfigChange::Replace(BTreeMap::new()),
                }],
                validate_only: false,
            },
        );
        assert_eq!(
            errors(&unknown.reply),
            vec![code(ResponseError::UnknownTopicOrPartition)]
        );
    }

    #[test]
    fn broker_lifecycle_fences_and_unfences() {
        let c = controller();
        let mut image = MetadataImage::default();
        let incarnation = Uuid::new_v4();
        let register = ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation,
            endpoints: Vec::new(),
            rack: None,
        };
        assert_eq!(run(&c, &mut image, &register), ControllerReply::Done);
        assert!(image.is_unfenced(1));
        run(&c, &mut image, &create(vec![new_topic("t", 2, 1)]));
        let heartbeat = |incarnation| ControllerRequest::BrokerHeartbeat {
            broker_id: 1,
            incarnation,
        };
        let decision = c.decide(&image, &heartbeat(incarnation));
        assert!(decision.records.is_empty());
        assert_eq!(decision.reply, ControllerReply::Heartbeat { fenced: false });
        assert_eq!(
            c.decide(&image, &heartbeat(Uuid::new_v4())).reply,
            ControllerReply::Heartbeat { fenced: true }
        );
        // A shutdown from another incarnation changes nothing; from this one it fences.
        let shutdown = |incarnation| ControllerRequest::BrokerShutdown {
            broker_id: 1,
            incarnation,
        };
        assert!(c
            .decide(&image, &shutdown(Uuid::new_v4()))
            .records
            .is_empty());
        run(&c, &mut image, &shutdown(incarnation));
        assert!(!image.is_unfenced(1));
        assert!(image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.leader == NO_LEADER && p.leader_epoch == 1));
        // A heartbeat of the incarnation that shut down (one still in flight) unfences
        // nothing: the broker is gone.
        let late = c.decide(&image, &heartbeat(incarnation));
        assert!(late.records.is_empty(), "{:?}", late.records);
        assert_eq!(late.reply, ControllerReply::Heartbeat { fenced: true });
        // A registration (the restart) unfences and re-elects.
        let restart = ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation,
            endpoints: Vec::new(),
            rack: None,
        };
        run(&c, &mut image, &restart);
        assert!(image.is_unfenced(1));
        assert!(image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.leader == 1 && p.leader_epoch == 2));
        // A broker fenced for silence (not shut down) is unfenced by its next heartbeat.
        let silent = fence(&image, 1, false);
        let index = image.applied_index + 1;
        image.apply(
            index,
            &MetadataBatch {
                request_id: None,
                reply: None,
                records: silent,
            },
        );
        assert!(!image.is_unfenced(1));
        let reply = run(&c, &mut image, &heartbeat(incarnation));
        assert_eq!(reply, ControllerReply::Heartbeat { fenced: false });
        assert!(image.is_unfenced(1));
        // And a registration (a restart) after a shutdown.
        run(&c, &mut image, &shutdown(incarnation));
        let restart = ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation: Uuid::new_v4(),
            endpoints: Vec::new(),
            rack: None,
        };
        run(&c, &mut image, &restart);
        assert!(image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.leader == 1 && p.leader_epoch == 6));
        assert_eq!(
            c.decide(&image, &heartbeat(incarnation)).reply,
            ControllerReply::Heartbeat { fenced: true },
            "the old incarnation is gone"
        );
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let c = controller();
        let mut image = MetadataImage::default();
        let mut blocks = Vec::new();
        for broker_id in [1, 2, 1, 3] {
            let reply = run(
                &c,
                &mut image,
                &ControllerRequest::AllocateProducerIds { broker_id },
            );
            let ControllerReply::ProducerIds { first, count } = reply else {
                panic!("{reply:?}")
            };
            assert_eq!(count, PRODUCER_ID_BLOCK_SIZE);
            blocks.push(first);
        }
        assert_eq!(blocks, vec![0, 1000, 2000, 3000]);
        // An imported floor moves the next block past it, never back.
        let import = |floor| ControllerRequest::ImportProducerIdFloor {
            broker_id: 1,
            floor,
        };
        assert_eq!(run(&c, &mut image, &import(10_500)), ControllerReply::Done);
        assert!(c.decide(&image, &import(5)).records.is_empty());
        let reply = run(
            &c,
            &mut image,
            &ControllerRequest::AllocateProducerIds { broker_id: 2 },
        );
        assert_eq!(
            reply,
            ControllerReply::ProducerIds {
                first: 10_500,
                count: PRODUCER_ID_BLOCK_SIZE
            }
        );
    }
}
