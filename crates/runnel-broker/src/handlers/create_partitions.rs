//! CreatePartitions (key 37), v0–3: grows topics (never shrinks), carried out by the controller
//! (counts, manual assignments, `validate_only`) and answered per topic once committed.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::requests::NewPartitions;
use crate::metadata::ControllerRequest;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: CreatePartitionsRequest,
) -> Result<CreatePartitionsResponse, BrokerError> {
    if request.topics.is_empty() {
        return Ok(CreatePartitionsResponse::default());
    }
    let asked = request
        .topics
        .iter()
        .map(|topic| NewPartitions {
            name: topic.name.to_string(),
            count: topic.count,
            assignment: topic.assignments.as_ref().map(|assignments| {
                assignments
                    .iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            }),
        })
        .collect();
    let mut outcomes = broker
        .submit_topics(ControllerRequest::CreatePartitions {
            topics: asked,
            validate_only: request.validate_only,
        })
        .await
        .map(Vec::into_iter);
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let outcome = match &mut outcomes {
            Err(error) => Err(BrokerError::ControllerUnavailable(error.to_string())),
            Ok(outcomes) => match outcomes.next() {
                Some(outcome) => outcome.error.map_or(Ok(()), |e| Err(BrokerError::from(e))),
                None => Err(BrokerError::ControllerUnavailable(
                    "the controller answered fewer topics than asked".into(),
                )),
            },
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
