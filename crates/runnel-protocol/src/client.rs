//! The client side of the codec, for a broker that talks Kafka to another broker (a follower
//! fetching from its leader): encode a request frame, judge a response's size prefix, decode a
//! response frame. The mirror image of [`crate::request`], over the same `kafka-protocol` types.
//!
//! No I/O here: the caller reads the 4-byte size prefix, asks [`response_frame_bytes`] whether
//! that many bytes may be read, reads them, and hands them to [`decode_response`].

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::frame::FRAME_SIZE_PREFIX_BYTES;
use crate::ProtocolError;

/// The `client_id` a follower's requests carry: the leader's logs name who is fetching.
pub const REPLICA_CLIENT_ID: &str = "runnel-replica";

/// The smallest response frame: a correlation id (response header v0).
pub const RESPONSE_HEADER_BYTES_MIN: usize = 4;

/// A decoded response and the correlation id it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientResponse<T> {
    /// The correlation id of the request this answers.
    pub correlation_id: i32,
    /// The response body.
    pub body: T,
}

/// Encodes `request` at `version` as a complete frame: size prefix, request header (v1 or v2 as
/// the version's flexibility demands) with `correlation_id` and `client_id`, then the body.
///
/// Errors: [`ProtocolError::Encode`] when the request cannot be written at that version (a
/// field the version lacks, a string too long) or the frame would exceed `i32::MAX` bytes.
pub fn encode_request<R: Request>(
    version: i16,
    correlation_id: i32,
    client_id: &str,
    request: &R,
) -> Result<Bytes, ProtocolError> {
    let api_key = api_key_of::<R>()?;
    let encode_error = |reason: String| ProtocolError::Encode {
        what: format!("{api_key:?} v{version} request"),
        reason,
    };
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let header_version = R::header_version(version);
    let frame_bytes = header
        .compute_size(header_version)
        .and_then(|header_bytes| Ok(header_bytes + request.compute_size(version)?))
        .map_err(|e| encode_error(e.to_string()))?;
    let size = i32::try_from(frame_bytes)
        .map_err(|_| encode_error(format!("{frame_bytes} bytes do not fit a frame")))?;
    let mut buf = BytesMut::with_capacity(FRAME_SIZE_PREFIX_BYTES + frame_bytes);
    buf.put_i32(size);
    header
        .encode(&mut buf, header_version)
        .and_then(|()| request.encode(&mut buf, version))
        .map_err(|e| encode_error(e.to_string()))?;
    Ok(buf.freeze())
}

/// The body size a response's size prefix announces, if it may be read: at least a correlation
/// id, at most `frame_bytes_max`. Judged before anything is allocated for the body; on an error
/// the caller closes the connection (the stream cannot be resynchronised).
pub fn response_frame_bytes(
    size_prefix: i32,
    frame_bytes_max: usize,
) -> Result<usize, ProtocolError> {
    match usize::try_from(size_prefix) {
        Ok(size) if (RESPONSE_HEADER_BYTES_MIN..=frame_bytes_max).contains(&size) => Ok(size),
        Ok(size) if size < RESPONSE_HEADER_BYTES_MIN => {
            Err(ProtocolError::FrameTooShort { size_bytes: size })
        }
        _ => Err(ProtocolError::FrameSize {
            size_bytes: i64::from(size_prefix),
            frame_bytes_max,
        }),
    }
}

/// Decodes a response frame (without its size prefix) to request `R` sent at `version`:
/// response header v0 or v1 as the version demands, then the body. Record data in the body
/// (a Fetch response's `records`) shares `frame`'s buffer rather than being copied.
///
/// Errors: [`ProtocolError::Decode`] for a malformed or truncated frame, or one with bytes
/// left over after the body (a version mismatch would otherwise pass unnoticed).
pub fn decode_response<R: Request>(
    version: i16,
    frame: Bytes,
) -> Result<ClientResponse<R::Response>, ProtocolError> {
    let api_key = api_key_of::<R>()?;
    let decode_error = |what: &str, reason: String| ProtocolError::Decode {
        what: format!("{api_key:?} v{version} response {what}"),
        reason,
    };
    let mut buf = frame;
    let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
        .map_err(|e| decode_error("header", e.to_string()))?;
    let body =
        R::Response::decode(&mut buf, version).map_err(|e| decode_error("body", e.to_string()))?;
    if !buf.is_empty() {
        return Err(decode_error(
            "body",
            format!("{} bytes left over", buf.len()),
        ));
    }
    Ok(ClientResponse {
        correlation_id: header.correlation_id,
        body,
    })
}

fn api_key_of<R: Request>() -> Result<ApiKey, ProtocolError> {
    ApiKey::try_from(R::KEY).map_err(|()| ProtocolError::UnknownApiKey { api_key: R::KEY })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use bytes::Buf;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
    use kafka_protocol::messages::fetch_response::{
        EpochEndOffset, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{
        BrokerId, FetchRequest, FetchResponse, HeartbeatRequest, RequestKind, ResponseKind,
    };
    use kafka_protocol::protocol::Message;

    use super::*;
    use crate::request::{decode_request_body, decode_request_header, encode_response};

    fn fetch_request() -> FetchRequest {
        FetchRequest::default()
            .with_replica_state(ReplicaState::default().with_replica_id(BrokerId(2)))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(uuid::Uuid::from_u128(7))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(3)
                    .with_current_leader_epoch(4)
                    .with_fetch_offset(100)
                    .with_last_fetched_epoch(3)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(1 << 20)])])
    }

    /// Splits the size prefix off a frame, checking it names the rest exactly.
    fn body_of(frame: Bytes) -> Bytes {
        let mut frame = frame;
        let size = frame.get_i32();
        assert_eq!(response_frame_bytes(size, usize::MAX).unwrap(), frame.len());
        frame
    }

    #[test]
    fn a_fetch_request_decodes_on_the_broker_side_as_sent() {
        // v11: header v1 (not flexible), topic names; v16: header v2, topic ids, replica state.
        for version in [11, 16, FetchRequest::VERSIONS.max] {
            let mut request = fetch_request();
            if version < 13 {
                request.topics[0].topic = kafka_protocol::messages::TopicName("t".into());
                request.topics[0].topic_id = uuid::Uuid::nil();
                request.topics[0].partitions[0].last_fetched_epoch = -1;
            }
            if version < 15 {
                request.replica_state = ReplicaState::default();
                request.replica_id = BrokerId(2);
            }
            let frame = encode_request(version, 42, REPLICA_CLIENT_ID, &request).unwrap();
            let decoded = decode_request_header(body_of(frame)).unwrap();
            assert_eq!(decoded.api_key, ApiKey::Fetch);
            assert_eq!(decoded.header.request_api_version, version);
            assert_eq!(decoded.header.correlation_id, 42);
            assert_eq!(decoded.header.client_id.as_deref(), Some(REPLICA_CLIENT_ID));
            let mut body = decoded.body;
            let RequestKind::Fetch(back) =
                decode_request_body(ApiKey::Fetch, version, &mut body).unwrap()
            else {
                panic!("not a fetch");
            };
            assert!(body.is_empty(), "v{version}: bytes left over");
            assert_eq!(back, request, "v{version}");
        }
    }

    #[test]
    fn a_fetch_response_encoded_by_the_broker_decodes_as_sent() {
        let records = Bytes::from(vec![9u8; 5000]);
        let response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic_id(uuid::Uuid::from_u128(7))
                .with_partitions(vec![
                    PartitionData::default()
                        .with_partition_index(3)
                        .with_high_watermark(90)
                        .with_log_start_offset(10)
                        .with_records(Some(records.clone())),
                    PartitionData::default()
                        .with_partition_index(4)
                        .with_diverging_epoch(
                            EpochEndOffset::default().with_epoch(2).with_end_offset(50),
                        ),
                ])]);
        let version = 16;
        let frame = encode_response(
            ApiKey::Fetch,
            77,
            version,
            &ResponseKind::Fetch(response.clone()),
        )
        .unwrap()
        .to_bytes();
        let decoded = decode_response::<FetchRequest>(version, body_of(frame)).unwrap();
        assert_eq!(decoded.correlation_id, 77);
        assert_eq!(decoded.body, response);
        assert_eq!(
            decoded.body.responses[0].partitions[0].records.as_ref(),
            Some(&records)
        );
    }

    #[test]
    fn a_non_flexible_request_uses_header_v1_and_its_response_header_v0() {
        let request = HeartbeatRequest::default().with_generation_id(5);
        let frame = encode_request(0, 9, REPLICA_CLIENT_ID, &request).unwrap();
        let decoded = decode_request_header(body_of(frame)).unwrap();
        assert_eq!(decoded.api_key, ApiKey::Heartbeat);
        assert_eq!(decoded.header.correlation_id, 9);

        let response = kafka_protocol::messages::HeartbeatResponse::default();
        let frame = encode_response(
            ApiKey::Heartbeat,
            9,
            0,
            &ResponseKind::Heartbeat(response.clone()),
        )
        .unwrap()
        .to_bytes();
        // Header v0: just the correlation id; body v0: the error code.
        assert_eq!(frame.len(), 4 + 4 + 2);
        let decoded = decode_response::<HeartbeatRequest>(0, body_of(frame)).unwrap();
        assert_eq!(decoded.correlation_id, 9);
        assert_eq!(decoded.body, response);
    }

    #[test]
    fn truncated_and_padded_responses_are_refused() {
        let frame = encode_response(
            ApiKey::Fetch,
            1,
            16,
            &ResponseKind::Fetch(FetchResponse::default()),
        )
        .unwrap()
        .to_bytes();
        let body = body_of(frame);
        for cut in 0..body.len() {
            assert!(
                decode_response::<FetchRequest>(16, body.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut padded = BytesMut::from(&body[..]);
        padded.put_u8(0);
        assert!(decode_response::<FetchRequest>(16, padded.freeze()).is_err());
    }

    #[test]
    fn hostile_response_sizes_are_refused_before_reading() {
        for size in [-1, 0, 3] {
            assert!(response_frame_bytes(size, 1024).is_err(), "size {size}");
        }
        assert!(response_frame_bytes(1025, 1024).is_err());
        assert_eq!(response_frame_bytes(4, 1024), Ok(4));
        assert_eq!(response_frame_bytes(1024, 1024), Ok(1024));
    }
}
