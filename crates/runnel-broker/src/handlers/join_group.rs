//! JoinGroup (key 11), v0–9: joins a member to a group and waits for the rebalance's join phase
//! to end (a long poll). v4+ new members first get MEMBER_ID_REQUIRED with their id (KIP-394);
//! v5+ carry `group.instance.id` (static membership, KIP-345). Protocol type and metadata are
//! opaque bytes.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::{lost_join, store, GroupError, JoinRequest, Now};

/// v1 added `rebalance_timeout_ms` (v0 uses the session timeout for both).
const REBALANCE_TIMEOUT_VERSION: i16 = 1;
/// v4: a new member must rejoin with the id it was given (KIP-394).
const MEMBER_ID_REQUIRED_VERSION: i16 = 4;
/// v5: member `group_instance_id` in the response.
const STATIC_MEMBER_VERSION: i16 = 5;
/// v7: `protocol_type` in the response, and a nullable `protocol_name`.
const PROTOCOL_TYPE_VERSION: i16 = 7;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: JoinGroupRequest,
) -> Result<JoinGroupResponse, BrokerError> {
    let version = context.api_version;
    // A member's metadata is stored in one `__consumer_offsets` record: refuse what could not
    // be written rather than failing the group later.
    let metadata_bytes: usize = request.protocols.iter().map(|p| p.metadata.len()).sum();
    let member_id = request.member_id.to_string();
    let result = if metadata_bytes > broker.config.message_max_bytes {
        tracing::info!(group = %request.group_id.0, metadata_bytes, "JoinGroup metadata too large");
        return Ok(error_response(
            version,
            &member_id,
            &BrokerError::Protocol(runnel_protocol::ProtocolError::BatchTooLarge {
                size_bytes: metadata_bytes,
                limit_bytes: broker.config.message_max_bytes,
            }),
        ));
    } else {
        let join = JoinRequest {
            group_id: request.group_id.to_string(),
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id.map(|s| s.to_string()),
            client_id: context.client_id.clone().unwrap_or_default(),
            client_host: context.client_host.to_string(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: if version >= REBALANCE_TIMEOUT_VERSION {
                request.rebalance_timeout_ms
            } else {
                request.session_timeout_ms
            },
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            require_known_member_id: version >= MEMBER_ID_REQUIRED_VERSION,
        };
        broker
            .groups
            .join(join, Now::current())
            .wait(|| lost_join(&member_id))
            .await
    };
    // A static member's replacement may have changed stored metadata.
    store::write_group_metadata(broker).await;
    if let Some(error) = result.error {
        if error != GroupError::MemberIdRequired {
            tracing::debug!(group = %request.group_id.0, %error, "JoinGroup refused");
        }
        return Ok(error_response(
            version,
            &result.member_id,
            &BrokerError::Group(error),
        ));
    }
    let members = result
        .members
        .into_iter()
        .map(|m| {
            let member = JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                .with_metadata(m.metadata);
            if version >= STATIC_MEMBER_VERSION {
                member.with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
            } else {
                member
            }
        })
        .collect();
    let response = JoinGroupResponse::default()
        .with_generation_id(result.generation_id)
        .with_protocol_name(Some(StrBytes::from_string(
            result.protocol_name.unwrap_or_default(),
        )))
        .with_leader(StrBytes::from_string(result.leader))
        .with_member_id(StrBytes::from_string(result.member_id))
        .with_members(members);
    Ok(if version >= PROTOCOL_TYPE_VERSION {
        response.with_protocol_type(result.protocol_type.map(StrBytes::from_string))
    } else {
        response
    })
}

fn error_response(version: i16, member_id: &str, error: &BrokerError) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(error.code())
        .with_generation_id(-1)
        .with_protocol_name(if version >= PROTOCOL_TYPE_VERSION {
            None
        } else {
            Some(StrBytes::default())
        })
        .with_member_id(StrBytes::from_string(member_id.to_string()))
}
