//! OffsetFetch (key 9), v1–9: committed offsets of a group (v8+: of several groups), -1 with
//! empty metadata where nothing is committed so that `auto.offset.reset` applies. A null topic
//! list (v2+) asks for every committed offset of the group.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::CommittedOffset;

/// v8 batched groups.
const MULTI_GROUP_VERSION: i16 = 8;
/// v5 added `committed_leader_epoch`.
const LEADER_EPOCH_VERSION: i16 = 5;

/// One partition's answer: offset (or -1), leader epoch, metadata.
type Answer = (i32, i64, i32, String);

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: OffsetFetchRequest,
) -> Result<OffsetFetchResponse, BrokerError> {
    let version = context.api_version;
    if version >= MULTI_GROUP_VERSION {
        let groups = request
            .groups
            .into_iter()
            .map(|group| {
                let wanted = group.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes))
                        .collect::<Vec<_>>()
                });
                let topics = fetch(broker, &group.group_id, wanted, version)
                    .into_iter()
                    .map(|(name, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(StrBytes::from_string(name).into())
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(index, offset, epoch, metadata)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(index)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(StrBytes::from_string(metadata)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                let error_code = broker
                    .groups
                    .owns(&group.group_id)
                    .err()
                    .map_or(0, |e| BrokerError::Group(e).code());
                OffsetFetchResponseGroup::default()
                    .with_group_id(group.group_id)
                    .with_error_code(error_code)
                    .with_topics(topics)
            })
            .collect();
        return Ok(OffsetFetchResponse::default().with_groups(groups));
    }
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect::<Vec<_>>()
    });
    let topics = fetch(broker, &request.group_id, wanted, version)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(StrBytes::from_string(name).into())
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, offset, epoch, metadata)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(StrBytes::from_string(metadata)))
                        })
                        .collect(),
                )
        })
        .collect();
    // The top-level error code (v2+): NOT_COORDINATOR when another broker coordinates the
    // group (a group's partition is loaded before this broker claims it, so
    // COORDINATOR_LOAD_IN_PROGRESS cannot happen).
    let error_code = match broker.groups.owns(&request.group_id) {
        Err(error) if version >= TOP_LEVEL_ERROR_VERSION => BrokerError::Group(error).code(),
        _ => 0,
    };
    Ok(OffsetFetchResponse::default()
        .with_error_code(error_code)
        .with_topics(topics))
}

/// OffsetFetch v2 added the top-level `error_code`.
const TOP_LEVEL_ERROR_VERSION: i16 = 2;

/// Answers for the wanted partitions (all committed ones when `None`), by topic.
fn fetch(
    broker: &Broker,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    version: i16,
) -> BTreeMap<String, Vec<Answer>> {
    let epoch_of = |o: &CommittedOffset| {
        if version >= LEADER_EPOCH_VERSION {
            o.leader_epoch
        } else {
            -1
        }
    };
    let mut out: BTreeMap<String, Vec<Answer>> = BTreeMap::new();
    match wanted {
        None => {
            for ((topic, partition), offset) in broker.groups.committed(group_id, None) {
                out.entry(topic).or_default().push((
                    partition,
                    offset.offset,
                    epoch_of(&offset),
                    offset.metadata,
                ));
            }
        }
        Some(topics) => {
            let keys: Vec<(String, i32)> = topics
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                .collect();
            let committed = broker.groups.committed(group_id, Some(&keys));
            for (topic, partition) in keys {
                let answer = match committed.get(&(topic.clone(), partition)) {
                    Some(o) => (partition, o.offset, epoch_of(o), o.metadata.clone()),
                    None => (partition, -1, -1, String::new()),
                };
                out.entry(topic).or_default().push(answer);
            }
        }
    }
    out
}
