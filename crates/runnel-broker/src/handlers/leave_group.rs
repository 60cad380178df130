//! LeaveGroup (key 13), v0–5: members leave (v3+ batched, by member id or instance id) and the
//! group rebalances without waiting for their sessions to expire.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::{store, Now};

/// v3 batched members.
const BATCHED_VERSION: i16 = 3;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: LeaveGroupRequest,
) -> Result<LeaveGroupResponse, BrokerError> {
    let batched = context.api_version >= BATCHED_VERSION;
    let members: Vec<(String, Option<String>)> = if batched {
        request
            .members
            .into_iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let outcome = broker
        .groups
        .leave(&request.group_id, members, Now::current());
    store::write_group_metadata(broker).await;
    let outcomes = match outcome {
        Ok(outcomes) => outcomes,
        Err(error) => {
            return Ok(
                LeaveGroupResponse::default().with_error_code(BrokerError::Group(error).code())
            )
        }
    };
    let first_error = outcomes.iter().find_map(|o| o.error);
    let response = LeaveGroupResponse::default()
        .with_error_code(first_error.map_or(0, |e| BrokerError::Group(e).code()));
    if !batched {
        return Ok(response);
    }
    Ok(response.with_members(
        outcomes
            .into_iter()
            .map(|o| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string(o.member_id))
                    .with_group_instance_id(o.group_instance_id.map(StrBytes::from_string))
                    .with_error_code(o.error.map_or(0, |e| BrokerError::Group(e).code()))
            })
            .collect(),
    ))
}
