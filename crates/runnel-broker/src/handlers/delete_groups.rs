//! DeleteGroups (key 42), v0–2: deletes empty groups with their committed offsets (tombstones
//! in `__consumer_offsets`); a group with members gets NON_EMPTY_GROUP, an unknown one
//! GROUP_ID_NOT_FOUND.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::store;

pub(crate) async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: DeleteGroupsRequest,
) -> Result<DeleteGroupsResponse, BrokerError> {
    let mut results = Vec::with_capacity(request.groups_names.len().min(1024));
    for group_id in request.groups_names {
        let outcome = match broker.groups.delete(&group_id) {
            Ok(offsets) => store::tombstone_offsets(broker, &group_id, &offsets).await,
            Err(error) => Err(BrokerError::Group(error)),
        };
        if let Err(error) = &outcome {
            tracing::debug!(group = %group_id.0, %error, "DeleteGroups refused");
        }
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(outcome.err().map_or(0, |e| e.code())),
        );
    }
    store::write_group_metadata(broker).await;
    Ok(DeleteGroupsResponse::default().with_results(results))
}
