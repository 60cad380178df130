//! DeleteTopics (key 20), v1–6: by name (v1–5 `topic_names`, v6 `topics`) or by id (v6),
//! carried out by the controller (internal topics are refused: TOPIC_AUTHORIZATION_FAILED) and
//! answered once committed; the deleted topics' committed offsets are then dropped from the
//! groups this node coordinates.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metadata::requests::TopicRef;
use crate::metadata::ControllerRequest;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: DeleteTopicsRequest,
) -> Result<DeleteTopicsResponse, BrokerError> {
    // v6 sends `topics` (name or id); older versions send `topic_names`.
    let targets: Vec<(Option<TopicName>, uuid::Uuid)> = request
        .topic_names
        .into_iter()
        .map(|name| (Some(name), uuid::Uuid::nil()))
        .chain(request.topics.into_iter().map(|t| (t.name, t.topic_id)))
        .collect();
    if targets.is_empty() {
        return Ok(DeleteTopicsResponse::default());
    }
    let refs = targets
        .iter()
        .map(|(name, id)| match name {
            Some(name) => TopicRef::Name(name.to_string()),
            None => TopicRef::Id(*id),
        })
        .collect();
    let outcomes = broker
        .submit_topics(ControllerRequest::DeleteTopics { topics: refs })
        .await;
    let mut responses = Vec::with_capacity(targets.len());
    let mut outcomes = outcomes.map(Vec::into_iter);
    for (name, id) in targets {
        let deleted = match &mut outcomes {
            Err(error) => Err(BrokerError::ControllerUnavailable(error.to_string())),
            Ok(outcomes) => match outcomes.next() {
                Some(outcome) => match outcome.error {
                    Some(error) => Err(BrokerError::from(error)),
                    None => Ok((outcome.name, outcome.topic_id)),
                },
                None => Err(BrokerError::ControllerUnavailable(
                    "the controller answered fewer topics than asked".into(),
                )),
            },
        };
        if let Ok((topic_name, _)) = &deleted {
            crate::group::store::drop_topic_offsets(broker, topic_name).await;
        }
        let result = DeletableTopicResult::default().with_name(name.clone());
        responses.push(match deleted {
            Ok((topic_name, topic_id)) => result
                .with_name(Some(StrBytes::from_string(topic_name).into()))
                .with_topic_id(topic_id),
            Err(error) => result
                .with_topic_id(id)
                .with_error_code(error.code())
                .with_error_message(Some(error.to_string().into())),
        });
    }
    Ok(DeleteTopicsResponse::default().with_responses(responses))
}
