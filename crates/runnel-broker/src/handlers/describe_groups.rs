//! DescribeGroups (key 15), v0–5: state, protocol and members of each group; member metadata
//! and assignments only while Stable, as Kafka does. An unknown group is reported as `Dead`
//! without an error (before v6).

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::GroupError;

/// v3 added `include_authorized_operations`.
const AUTHORIZED_OPERATIONS_VERSION: i16 = 3;
/// v4 added members' `group_instance_id`.
const STATIC_MEMBER_VERSION: i16 = 4;
/// "Not requested" in Kafka's encoding.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// Without ACLs every group operation is allowed: READ (3), DELETE (6), DESCRIBE (8).
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: DescribeGroupsRequest,
) -> Result<DescribeGroupsResponse, BrokerError> {
    let version = context.api_version;
    let operations =
        if version >= AUTHORIZED_OPERATIONS_VERSION && request.include_authorized_operations {
            GROUP_OPERATIONS_ALL
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        };
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            if group_id.is_empty() {
                return DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_error_code(BrokerError::Group(GroupError::InvalidGroupId).code())
                    .with_authorized_operations(operations);
            }
            let described = broker.groups.describe(&group_id);
            let members = described
                .members
                .into_iter()
                .map(|m| {
                    let member = DescribedGroupMember::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_client_id(StrBytes::from_string(m.client_id))
                        .with_client_host(StrBytes::from_string(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment);
                    if version >= STATIC_MEMBER_VERSION {
                        member
                            .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                    } else {
                        member
                    }
                })
                .collect();
            DescribedGroup::default()
                .with_group_id(group_id)
                .with_group_state(StrBytes::from_static_str(described.state.name()))
                .with_protocol_type(StrBytes::from_string(described.protocol_type))
                .with_protocol_data(StrBytes::from_string(described.protocol_name))
                .with_members(members)
                .with_authorized_operations(operations)
        })
        .collect();
    Ok(DescribeGroupsResponse::default().with_groups(groups))
}
