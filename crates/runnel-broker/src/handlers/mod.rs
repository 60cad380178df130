//! The API registry: one row per Kafka API this broker serves (key, version range, handler).
//!
//! Dispatch and the ApiVersions response both derive from [`HANDLERS`], so nothing else lists
//! API keys and no version is advertised without a handler. To add an API: write
//! `handlers/<api>.rs` with `pub(crate) async fn handle(&Broker, &RequestContext, Request) ->
//! Result<Response, BrokerError>`, add one `api!` row, and add a test in `tests/`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use crate::broker::Broker;
use crate::error::BrokerError;

mod alter_configs;
mod alter_partition_reassignments;
mod alter_replica_log_dirs;
pub mod api_versions;
mod cluster;
#[cfg(test)]
mod cluster_tests;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_quorum;
mod describe_topic_partitions;
mod elect_leaders;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;

/// What a handler learns about the request besides its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The version the client used; responses are encoded at the same version.
    pub api_version: i16,
    /// The client's self-reported id, for logs.
    pub client_id: Option<String>,
    /// The client's address as Kafka reports it (`/127.0.0.1`), for DescribeGroups.
    pub client_host: Arc<str>,
    /// The name of the listener the request arrived on (`PLAINTEXT`, `INTERNAL`, …): Metadata,
    /// FindCoordinator and DescribeCluster answer with brokers' endpoints on it.
    pub listener: Arc<str>,
}

/// What a handler answers: the response, or — for work whose ordered part is done but whose
/// acknowledgement must wait (Produce with acks=-1 waiting for its fsync) — a future that
/// completes the response. The connection takes the next request while a `Later` finishes,
/// and still writes responses in request order.
#[allow(clippy::large_enum_variant)] // one per request, moved once: boxing would only add an allocation
pub enum Reply {
    /// The response is ready.
    Now(ResponseKind),
    /// The response is ready once this resolves.
    Later(Pin<Box<dyn Future<Output = Result<ResponseKind, BrokerError>> + Send>>),
}

/// A handler's future, boxed so that every row of the table has one type.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, BrokerError>> + Send>>;

/// One row of the registry.
#[derive(Debug, Clone, Copy)]
pub struct ApiHandler {
    /// The API.
    pub api_key: ApiKey,
    /// Lowest version served.
    pub min_version: i16,
    /// Highest version served.
    pub max_version: i16,
    /// Runs the request (the body's variant always matches `api_key`).
    pub handle: fn(Arc<Broker>, RequestContext, RequestKind) -> HandlerFuture,
}

/// A registry row: unwraps the request variant, calls `$module::handle`, wraps the response.
/// `deferred` rows return a future of the response (see [`Reply::Later`]).
macro_rules! api {
    ($key:ident, $min:literal ..= $max:literal, $module:ident) => {
        api!(@row $key, $min, $max, |broker, context, request| {
            Ok(Reply::Now(ResponseKind::$key(
                $module::handle(&broker, &context, request).await?,
            )))
        })
    };
    ($key:ident, $min:literal ..= $max:literal, $module:ident, deferred) => {
        api!(@row $key, $min, $max, |broker, context, request| {
            let completion = $module::handle(&broker, &context, request).await?;
            Ok(Reply::Later(Box::pin(async move {
                completion.await.map(ResponseKind::$key)
            })))
        })
    };
    (@row $key:ident, $min:literal, $max:literal, |$broker:ident, $context:ident, $request:ident| $body:block) => {
        ApiHandler {
            api_key: ApiKey::$key,
            min_version: $min,
            max_version: $max,
            handle: |$broker, $context, request| {
                Box::pin(async move {
                    match request {
                        RequestKind::$key($request) => $body,
                        other => Err(BrokerError::InvalidRequest(format!(
                            "{} body under api key {:?}",
                            stringify!($key),
                            std::mem::discriminant(&other)
                        ))),
                    }
                })
            },
        }
    };
}

/// Every API served, with the versions whose fields are honoured.
pub static HANDLERS: &[ApiHandler] = &[
    api!(Produce, 3..=11, produce, deferred),
    api!(Fetch, 4..=16, fetch),
    api!(ListOffsets, 1..=8, list_offsets),
    api!(DeleteRecords, 0..=2, delete_records),
    api!(DescribeConfigs, 1..=4, describe_configs),
    api!(AlterConfigs, 0..=2, alter_configs),
    api!(IncrementalAlterConfigs, 0..=1, incremental_alter_configs),
    api!(CreatePartitions, 0..=3, create_partitions),
    api!(DescribeLogDirs, 1..=4, describe_log_dirs),
    api!(AlterReplicaLogDirs, 1..=2, alter_replica_log_dirs),
    api!(Metadata, 0..=13, metadata),
    api!(OffsetCommit, 2..=9, offset_commit),
    api!(OffsetFetch, 1..=9, offset_fetch),
    api!(FindCoordinator, 0..=4, find_coordinator),
    api!(JoinGroup, 0..=9, join_group),
    api!(Heartbeat, 0..=4, heartbeat),
    api!(LeaveGroup, 0..=5, leave_group),
    api!(SyncGroup, 0..=5, sync_group, deferred),
    api!(DescribeGroups, 0..=5, describe_groups),
    api!(ListGroups, 0..=5, list_groups),
    api!(ApiVersions, 0..=4, api_versions),
    api!(CreateTopics, 2..=7, create_topics),
    api!(DeleteTopics, 1..=6, delete_topics),
    api!(InitProducerId, 0..=4, init_producer_id),
    api!(DeleteGroups, 0..=2, delete_groups),
    api!(OffsetDelete, 0..=0, offset_delete),
    api!(DescribeQuorum, 0..=1, describe_quorum),
    api!(DescribeCluster, 0..=2, describe_cluster),
    api!(DescribeTopicPartitions, 0..=0, describe_topic_partitions),
    api!(OffsetForLeaderEpoch, 2..=4, offset_for_leader_epoch),
    api!(ElectLeaders, 0..=2, elect_leaders),
    api!(
        AlterPartitionReassignments,
        0..=1,
        alter_partition_reassignments
    ),
    api!(
        ListPartitionReassignments,
        0..=0,
        list_partition_reassignments
    ),
];

/// The handler for `api_key` if `version` is within its served range.
pub fn find(api_key: ApiKey, version: i16) -> Option<&'static ApiHandler> {
    HANDLERS
        .iter()
        .find(|h| h.api_key == api_key && (h.min_version..=h.max_version).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_within_what_the_codec_supports() {
        for handler in HANDLERS {
            let codec = handler.api_key.valid_versions();
            assert!(
                handler.min_version >= codec.min && handler.max_version <= codec.max,
                "{:?}",
                handler.api_key
            );
            assert_eq!(
                HANDLERS
                    .iter()
                    .filter(|h| h.api_key == handler.api_key)
                    .count(),
                1
            );
        }
    }

    #[test]
    fn readme_table_matches_the_registry() {
        let readme = include_str!("../../../../README.md");
        for handler in HANDLERS {
            let row = format!(
                "| {:?} | {} | {}–{} |",
                handler.api_key, handler.api_key as i16, handler.min_version, handler.max_version
            );
            assert!(readme.contains(&row), "README.md lacks the row `{row}`");
        }
    }
}
