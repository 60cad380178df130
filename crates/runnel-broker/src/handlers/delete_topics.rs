//! DeleteTopics (key 20), v1–6: by name (v1–5 `topic_names`, v6 `topics`) or by id (v6).
//! Internal topics are refused (TOPIC_AUTHORIZATION_FAILED, see `TopicRegistry::delete`).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;

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
    let mut responses = Vec::with_capacity(targets.len().min(1024));
    for (name, id) in targets {
        let resolved = match &name {
            Some(name) => Ok(name.to_string()),
            None => broker
                .topics
                .get_by_id(id)
                .map(|t| t.name.clone())
                .ok_or(BrokerError::UnknownTopicId(id)),
        };
        let deleted = match resolved {
            Ok(topic_name) => broker.topics.delete(&topic_name).await,
            Err(error) => Err(error),
        };
        if let Ok(topic) = &deleted {
            crate::group::store::drop_topic_offsets(broker, &topic.name).await;
        }
        let result = DeletableTopicResult::default().with_name(name.clone());
        responses.push(match deleted {
            Ok(topic) => result
                .with_name(Some(StrBytes::from_string(topic.name.clone()).into()))
                .with_topic_id(topic.id),
            Err(error) => result
                .with_topic_id(id)
                .with_error_code(error.code())
                .with_error_message(Some(error.to_string().into())),
        });
    }
    Ok(DeleteTopicsResponse::default().with_responses(responses))
}
