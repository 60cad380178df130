//! Heartbeat (key 12), v0–4: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to
//! rejoin. v3+ carry `group.instance.id` (a fenced static member gets FENCED_INSTANCE_ID).

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::Now;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: HeartbeatRequest,
) -> Result<HeartbeatResponse, BrokerError> {
    let instance_id = request.group_instance_id.map(|s| s.to_string());
    let outcome = broker.groups.heartbeat(
        &request.group_id,
        &request.member_id,
        instance_id.as_ref(),
        request.generation_id,
        Now::current(),
    );
    Ok(HeartbeatResponse::default()
        .with_error_code(outcome.err().map_or(0, |e| BrokerError::Group(e).code())))
}
