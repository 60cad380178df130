//! FindCoordinator (key 10), v0–4: a group's coordinator is the leader of its
//! `__consumer_offsets` partition (the topic is created, through the controller, on the first
//! lookup); COORDINATOR_NOT_AVAILABLE while that partition has no leader. Transactional ids
//! (no transaction coordinator yet) are answered with this broker. v4 batches keys
//! (`coordinator_keys`); older versions ask for one key.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::cluster::{broker_endpoint, BrokerEndpoint};
use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::GroupError;

/// FindCoordinator v4 moved keys into an array.
const BATCHED_VERSION: i16 = 4;
/// `key_type` of a consumer group (1 is a transactional id).
const GROUP_KEY: i8 = 0;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: FindCoordinatorRequest,
) -> Result<FindCoordinatorResponse, BrokerError> {
    let keys = if context.api_version >= BATCHED_VERSION {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let found = coordinator(broker, context, request.key_type, &key).await;
        let answer = Coordinator::default().with_key(key);
        coordinators.push(match found {
            Ok(endpoint) => answer
                .with_node_id(BrokerId(endpoint.id))
                .with_host(endpoint.host.into())
                .with_port(endpoint.port),
            Err(error) => answer
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(error.code())
                .with_error_message(Some(error.to_string().into())),
        });
    }
    if context.api_version >= BATCHED_VERSION {
        return Ok(FindCoordinatorResponse::default().with_coordinators(coordinators));
    }
    let one = coordinators.into_iter().next().unwrap_or_default();
    Ok(FindCoordinatorResponse::default()
        .with_node_id(one.node_id)
        .with_host(one.host)
        .with_port(one.port)
        .with_error_code(one.error_code)
        .with_error_message(one.error_message.filter(|_| one.error_code != 0)))
}

async fn coordinator(
    broker: &Broker,
    context: &RequestContext,
    key_type: i8,
    key: &str,
) -> Result<BrokerEndpoint, BrokerError> {
    let not_available = || BrokerError::Group(GroupError::CoordinatorNotAvailable);
    let id = if key_type == GROUP_KEY {
        match crate::group::store::coordinator_of(broker, key).await {
            Ok(Some(leader)) => leader,
            Ok(None) | Err(BrokerError::ControllerUnavailable(_) | BrokerError::Controller(_)) => {
                return Err(not_available())
            }
            Err(error) => return Err(error),
        }
    } else {
        broker.node_id()
    };
    broker_endpoint(&broker.metadata.image(), id, &context.listener).ok_or_else(not_available)
}
