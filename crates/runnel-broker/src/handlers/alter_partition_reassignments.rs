//! AlterPartitionReassignments (key 45), v0–1 (KIP-455): carried out by the controller
//! (docs/replication.md, "Reassignments") and answered per partition once committed and this
//! node's image has it. A partition's `replicas` is its target replica list; null cancels the
//! reassignment in progress. The answer means the reassignment started (or was cancelled):
//! ListPartitionReassignments shows it until every target replica is in sync.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::requests::{PartitionOutcome, PartitionReassignment};
use crate::metadata::{ControllerReply, ControllerRequest};

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> Result<AlterPartitionReassignmentsResponse, BrokerError> {
    let partitions: Vec<PartitionReassignment> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| PartitionReassignment {
                topic: topic.name.to_string(),
                partition: p.partition_index,
                replicas: p
                    .replicas
                    .as_ref()
                    .map(|replicas| replicas.iter().map(|b| b.0).collect()),
            })
        })
        .collect();
    let asked = ControllerRequest::AlterPartitionReassignments {
        partitions: partitions.clone(),
        allow_replication_factor_change: request.allow_replication_factor_change,
    };
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change);
    let outcomes = match broker.submit(asked).await {
        Ok(ControllerReply::Reassignments(outcomes)) => outcomes,
        Ok(other) => {
            let error = BrokerError::ControllerUnavailable(format!(
                "unexpected controller reply {other:?}"
            ));
            return Ok(refused(response, &partitions, &error));
        }
        Err(error) => return Ok(refused(response, &partitions, &error)),
    };
    Ok(response.with_responses(by_topic(outcomes.into_iter().map(partition_response))))
}

fn partition_response(outcome: PartitionOutcome) -> (String, ReassignablePartitionResponse) {
    let response = ReassignablePartitionResponse::default().with_partition_index(outcome.partition);
    let response = match outcome.error {
        Some(error) => response
            .with_error_code(error.code)
            .with_error_message(Some(StrBytes::from_string(error.message))),
        None => response,
    };
    (outcome.topic, response)
}

/// Every partition asked for gets `error`, and so does the request.
fn refused(
    response: AlterPartitionReassignmentsResponse,
    partitions: &[PartitionReassignment],
    error: &BrokerError,
) -> AlterPartitionReassignmentsResponse {
    let message = || Some(StrBytes::from_string(error.to_string()));
    let results = partitions.iter().map(|p| {
        (
            p.topic.clone(),
            ReassignablePartitionResponse::default()
                .with_partition_index(p.partition)
                .with_error_code(error.code())
                .with_error_message(message()),
        )
    });
    response
        .with_error_code(error.code())
        .with_error_message(message())
        .with_responses(by_topic(results))
}

fn by_topic(
    results: impl Iterator<Item = (String, ReassignablePartitionResponse)>,
) -> Vec<ReassignableTopicResponse> {
    group_by_topic(results)
        .into_iter()
        .map(|(topic, partitions)| {
            ReassignableTopicResponse::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect()
}

/// Per-partition items grouped by topic, topics in the order first met, items in order.
pub(super) fn group_by_topic<T>(items: impl Iterator<Item = (String, T)>) -> Vec<(String, Vec<T>)> {
    let mut grouped: Vec<(String, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match grouped.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, group)) => group.push(item),
            None => grouped.push((topic, vec![item])),
        }
    }
    grouped
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn items_are_grouped_by_topic_in_the_order_first_met() {
        let grouped = group_by_topic(
            [("b", 1), ("a", 0), ("b", 0)]
                .map(|(t, p)| (t.to_string(), p))
                .into_iter(),
        );
        assert_eq!(
            grouped,
            vec![("b".to_string(), vec![1, 0]), ("a".to_string(), vec![0])]
        );
    }

    #[test]
    fn a_refusal_names_every_partition_asked_for() {
        let asked = ["t", "t", "u"].map(|topic| PartitionReassignment {
            topic: topic.into(),
            partition: 0,
            replicas: None,
        });
        let error = BrokerError::ControllerUnavailable("no quorum".into());
        let response = refused(
            AlterPartitionReassignmentsResponse::default(),
            &asked,
            &error,
        );
        assert_eq!(response.error_code, error.code());
        assert_eq!(response.responses.len(), 2);
        assert_eq!(response.responses[0].partitions.len(), 2);
        assert_eq!(response.responses[1].partitions[0].error_code, error.code());
    }
}
