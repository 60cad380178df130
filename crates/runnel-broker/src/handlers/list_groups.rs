//! ListGroups (key 16), v0–5: every group this coordinator knows, offsets-only ones included;
//! v4 filters by state (case-insensitive), v5 by type (all groups here are `classic`).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;

/// v4 added the state filter and `group_state`.
const STATE_VERSION: i16 = 4;
/// v5 added the type filter and `group_type`.
const TYPE_VERSION: i16 = 5;
/// The only group type of the classic protocol.
const CLASSIC: &str = "classic";

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: ListGroupsRequest,
) -> Result<ListGroupsResponse, BrokerError> {
    let version = context.api_version;
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types_match = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case(CLASSIC));
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|_| types_match)
        .filter(|g| states.is_empty() || states.contains(&g.state.name().to_ascii_lowercase()))
        .map(|g| {
            let listed = ListedGroup::default()
                .with_group_id(StrBytes::from_string(g.group_id).into())
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            let listed = if version >= STATE_VERSION {
                listed.with_group_state(StrBytes::from_static_str(g.state.name()))
            } else {
                listed
            };
            if version >= TYPE_VERSION {
                listed.with_group_type(StrBytes::from_static_str(CLASSIC))
            } else {
                listed
            }
        })
        .collect();
    Ok(ListGroupsResponse::default().with_groups(groups))
}
