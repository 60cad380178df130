//! ApiVersions (key 18): the served APIs and versions, straight from the registry.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseKind};

use super::{RequestContext, HANDLERS};
use crate::broker::Broker;
use crate::error::BrokerError;

pub(crate) async fn handle(
    _broker: &Broker,
    _context: &RequestContext,
    _request: ApiVersionsRequest,
) -> Result<ApiVersionsResponse, BrokerError> {
    // Only defaults in the tagged fields: old librdkafka (Debian's kcat) rejects unexpected ones.
    Ok(ApiVersionsResponse::default().with_api_keys(served_versions()))
}

/// The KIP-511 answer to an ApiVersions request above our maximum (sent as v0).
pub fn unsupported_version() -> ResponseKind {
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_api_keys(served_versions()),
    )
}

fn served_versions() -> Vec<ApiVersion> {
    HANDLERS
        .iter()
        .map(|h| {
            ApiVersion::default()
                .with_api_key(h.api_key as i16)
                .with_min_version(h.min_version)
                .with_max_version(h.max_version)
        })
        .collect()
}
