//! SyncGroup (key 14), v0–5: the leader hands in the assignment; every member waits for its
//! own. The answer always carries a decodable (possibly empty) assignment. v5 checks the
//! protocol type and name against the group's (INCONSISTENT_GROUP_PROTOCOL). The leader's
//! assignment is written to `__consumer_offsets` before any member is answered; if that write
//! fails every member gets NOT_COORDINATOR (storage error) or COORDINATOR_NOT_AVAILABLE and the
//! group rebalances, as in Kafka.

use std::future::Future;
use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::{lost_sync, store, Now, SyncRequest};

/// v5 added protocol type and name to request and response.
const PROTOCOL_VERSION: i16 = 5;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    context: &RequestContext,
    request: SyncGroupRequest,
) -> Result<
    impl Future<Output = Result<SyncGroupResponse, BrokerError>> + Send + 'static,
    BrokerError,
> {
    let sync = SyncRequest {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.map(|s| s.to_string()),
        protocol_name: request.protocol_name.map(|s| s.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let outcome = broker.groups.sync(sync, Now::current());
    let broker = Arc::clone(broker);
    let api_version = context.api_version;
    // Deferred (spawned by the connection): once the leader's assignment is taken, its write
    // and the answers to every member complete even if this client goes away.
    Ok(async move {
        if let Some(stored) = &outcome.store {
            store::store_assignment(&broker, stored).await;
        }
        let result = outcome.reply.wait(lost_sync).await;
        let response = SyncGroupResponse::default()
            .with_error_code(result.error.map_or(0, |e| BrokerError::Group(e).code()))
            .with_assignment(result.assignment);
        Ok(if api_version >= PROTOCOL_VERSION {
            response
                .with_protocol_type(result.protocol_type.map(StrBytes::from_string))
                .with_protocol_name(result.protocol_name.map(StrBytes::from_string))
        } else {
            response
        })
    })
}
