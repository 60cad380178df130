//! FindCoordinator (key 10), v0–4: on a single node every group and transactional id is
//! coordinated here. v4 batches keys (`coordinator_keys`); older versions ask for one key.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;

/// FindCoordinator v4 moved keys into an array.
const BATCHED_VERSION: i16 = 4;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: FindCoordinatorRequest,
) -> Result<FindCoordinatorResponse, BrokerError> {
    let node_id = BrokerId(broker.config.node_id);
    let host = broker.config.advertise_host.clone();
    let port = broker.config.advertise_port;
    if context.api_version >= BATCHED_VERSION {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(node_id)
                    .with_host(host.clone().into())
                    .with_port(port)
            })
            .collect();
        return Ok(FindCoordinatorResponse::default().with_coordinators(coordinators));
    }
    Ok(FindCoordinatorResponse::default()
        .with_node_id(node_id)
        .with_host(host.into())
        .with_port(port))
}
