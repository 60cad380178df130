//! CreatePartitions (key 37), v0–3: grows topics (never shrinks); answered per topic. Manual
//! assignments, when given, must be one per new partition, each a non-empty list naming only
//! this broker (INVALID_REPLICA_ASSIGNMENT otherwise, checked after the partition count as
//! Kafka's controller does).

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: CreatePartitionsRequest,
) -> Result<CreatePartitionsResponse, BrokerError> {
    let mut results = Vec::with_capacity(request.topics.len().min(1024));
    for topic in request.topics {
        let outcome = match check_assignments(broker, &topic) {
            Err(error) => Err(error),
            Ok(()) => broker
                .topics
                .add_partitions(topic.name.as_str(), topic.count, request.validate_only)
                .await
                .map(|_| ()),
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(()) => result,
            Err(error) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from(error.to_string()))),
        });
    }
    Ok(CreatePartitionsResponse::default().with_results(results))
}

/// Checks manual assignments: one per partition added, none empty, each naming only this
/// broker. A topic that does not exist, or a count that does not grow it, is left to
/// `add_partitions` so that its error (UNKNOWN_TOPIC_OR_PARTITION, INVALID_PARTITIONS) comes
/// first, as in Kafka.
fn check_assignments(broker: &Broker, topic: &CreatePartitionsTopic) -> Result<(), BrokerError> {
    let Some(assignments) = &topic.assignments else {
        return Ok(());
    };
    let Some(existing) = broker.topics.get(topic.name.as_str()) else {
        return Ok(());
    };
    let current = i32::try_from(existing.partitions.len()).unwrap_or(i32::MAX);
    if topic.count <= current {
        return Ok(());
    }
    let added = i64::from(topic.count) - i64::from(current);
    let given = i64::try_from(assignments.len()).unwrap_or(i64::MAX);
    if given != added {
        return Err(BrokerError::InvalidReplicaAssignment(format!(
            "gives {given} entries for {added} new partitions"
        )));
    }
    if assignments.iter().any(|a| a.broker_ids.is_empty()) {
        return Err(BrokerError::InvalidReplicaAssignment(
            "has an empty replica list".into(),
        ));
    }
    if assignments
        .iter()
        .flat_map(|a| a.broker_ids.iter())
        .any(|id| id.0 != broker.config.node_id)
    {
        return Err(BrokerError::InvalidReplicaAssignment(
            "names a broker other than this one".into(),
        ));
    }
    Ok(())
}
