//! CreatePartitions (key 37), v0–3: grows topics (never shrinks); answered per topic. Manual
//! assignments may only name this broker.

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
        let foreign = topic.assignments.as_ref().is_some_and(|a| {
            a.iter()
                .flat_map(|x| x.broker_ids.iter())
                .any(|id| id.0 != broker.config.node_id)
        });
        let outcome = if foreign {
            Err(BrokerError::InvalidReplicaAssignment(
                "names a broker other than this one".into(),
            ))
        } else {
            broker
                .topics
                .add_partitions(topic.name.as_str(), topic.count, request.validate_only)
                .await
                .map(|_| ())
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
