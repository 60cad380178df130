//! DescribeCluster (key 60), v0–2: the cluster id, the active controller, and the brokers
//! (unfenced ones; v2 with `include_fenced_brokers` adds the fenced, marked so) with their
//! endpoints on the listener the request arrived on. Only broker endpoints are served
//! (`endpoint_type` 1); a request for controller endpoints (2) gets UNSUPPORTED_VERSION, as
//! from a Kafka broker.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;

/// DescribeCluster v1 added `endpoint_type`.
const ENDPOINT_TYPE_VERSION: i16 = 1;
/// Brokers' endpoints (KIP-919); 2 would be the controllers'.
const ENDPOINT_TYPE_BROKERS: i8 = 1;
/// "Authorized operations not requested" in Kafka's encoding.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: DescribeClusterRequest,
) -> Result<DescribeClusterResponse, BrokerError> {
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(broker.cluster_id.clone().into())
        .with_controller_id(BrokerId(broker.metadata.controller_id().unwrap_or(-1)))
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    if context.api_version >= ENDPOINT_TYPE_VERSION {
        response = response.with_endpoint_type(ENDPOINT_TYPE_BROKERS);
        if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
            return Ok(response
                .with_error_code(ResponseError::UnsupportedVersion.code())
                .with_error_message(Some(
                    "only broker endpoints (endpoint_type 1) are described".into(),
                )));
        }
    }
    let image = broker.metadata.image();
    let brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced || request.include_fenced_brokers)
        .filter_map(|b| {
            let endpoint = b.endpoint(&context.listener)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(endpoint.host.clone().into())
                    .with_port(i32::from(endpoint.port))
                    .with_rack(b.rack.clone().map(Into::into))
                    .with_is_fenced(b.fenced),
            )
        })
        .collect();
    Ok(response.with_brokers(brokers))
}
