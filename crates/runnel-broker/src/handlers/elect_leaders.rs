//! ElectLeaders (key 43), v0–2: carried out by the controller (docs/replication.md,
//! "Preferred leader") and answered per partition once committed and this node's image has
//! it. PREFERRED (0, the only type of v0) moves leadership to the first replica if it is in
//! sync and unfenced; UNCLEAN (1) gives a leaderless partition a leader, out of the ISR if
//! need be. A null topic list is every partition (and the answer leaves out those needing no
//! election).

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::requests::ElectionType;
use crate::metadata::{ControllerReply, ControllerRequest};

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: ElectLeadersRequest,
) -> Result<ElectLeadersResponse, BrokerError> {
    let partitions: Option<Vec<(String, Vec<i32>)>> =
        request.topic_partitions.as_ref().map(|topics| {
            topics
                .iter()
                .map(|t| (t.topic.to_string(), t.partitions.clone()))
                .collect()
        });
    let Some(election_type) = ElectionType::from_code(request.election_type) else {
        let error =
            BrokerError::InvalidRequest(format!("unknown election type {}", request.election_type));
        return Ok(refused(partitions.as_deref(), &error));
    };
    let asked = ControllerRequest::ElectLeaders {
        election_type,
        partitions: partitions.clone(),
    };
    let outcomes = match broker.submit(asked).await {
        Ok(ControllerReply::Elections(outcomes)) => outcomes,
        Ok(other) => {
            let error = BrokerError::ControllerUnavailable(format!(
                "unexpected controller reply {other:?}"
            ));
            return Ok(refused(partitions.as_deref(), &error));
        }
        Err(error) => return Ok(refused(partitions.as_deref(), &error)),
    };
    Ok(
        ElectLeadersResponse::default().with_replica_election_results(by_topic(
            outcomes.into_iter().map(|outcome| {
                let result = PartitionResult::default().with_partition_id(outcome.partition);
                let result = match outcome.error {
                    Some(error) => result
                        .with_error_code(error.code)
                        .with_error_message(Some(StrBytes::from_string(error.message))),
                    None => result,
                };
                (outcome.topic, result)
            }),
        )),
    )
}

/// Every partition asked for gets `error`, and so does the request (v1+).
fn refused(partitions: Option<&[(String, Vec<i32>)]>, error: &BrokerError) -> ElectLeadersResponse {
    let results = partitions
        .unwrap_or_default()
        .iter()
        .flat_map(|(topic, indexes)| {
            indexes.iter().map(|index| {
                (
                    topic.clone(),
                    PartitionResult::default()
                        .with_partition_id(*index)
                        .with_error_code(error.code())
                        .with_error_message(Some(StrBytes::from_string(error.to_string()))),
                )
            })
        });
    ElectLeadersResponse::default()
        .with_error_code(error.code())
        .with_replica_election_results(by_topic(results))
}

/// Partition results grouped by topic, topics in the order first met.
fn by_topic(
    results: impl Iterator<Item = (String, PartitionResult)>,
) -> Vec<ReplicaElectionResult> {
    let mut grouped: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, result) in results {
        match grouped.iter_mut().find(|g| g.topic.as_str() == topic) {
            Some(group) => group.partition_result.push(result),
            None => grouped.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    grouped
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use kafka_protocol::error::ResponseError;

    use super::*;
    use crate::metadata::requests::ElectionOutcome;

    #[test]
    fn results_are_grouped_by_topic_in_request_order() {
        let outcomes = [("b", 1), ("a", 0), ("b", 0)].map(|(topic, partition)| ElectionOutcome {
            topic: topic.into(),
            partition,
            error: None,
        });
        let grouped = by_topic(outcomes.into_iter().map(|o| {
            (
                o.topic,
                PartitionResult::default().with_partition_id(o.partition),
            )
        }));
        let shape: Vec<(String, Vec<i32>)> = grouped
            .iter()
            .map(|g| {
                (
                    g.topic.to_string(),
                    g.partition_result.iter().map(|p| p.partition_id).collect(),
                )
            })
            .collect();
        assert_eq!(shape, vec![("b".into(), vec![1, 0]), ("a".into(), vec![0])]);
    }

    #[test]
    fn a_refusal_names_every_partition_asked_for() {
        let asked = vec![("t".to_string(), vec![0, 1])];
        let error = BrokerError::InvalidRequest("unknown election type 7".into());
        let response = refused(Some(&asked), &error);
        assert_eq!(response.error_code, ResponseError::InvalidRequest.code());
        assert_eq!(
            response.replica_election_results[0].partition_result.len(),
            2
        );
        assert!(refused(None, &error).replica_election_results.is_empty());
    }
}
