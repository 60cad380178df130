//! Request and response codec over the `kafka-protocol` crate.
//!
//! The crate's own header decoder panics on frames under four bytes, so the API key and version
//! are read here first; callers then decide (from their handler registry) whether the version is
//! served before the body is decoded at all.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, FetchResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::buf::ChunkedBytesMut;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::frame::{FRAME_SIZE_PREFIX_BYTES, REQUEST_HEADER_BYTES_MIN};
use crate::response_frame::{ResponseFrame, SHARE_BYTES_MIN};
use crate::ProtocolError;

/// A request whose header is decoded and whose body is still bytes.
#[derive(Debug, Clone)]
pub struct RequestFrame {
    /// The decoded request header (api key, version, correlation id, client id).
    pub header: RequestHeader,
    /// The API the header names.
    pub api_key: ApiKey,
    /// The undecoded body, positioned just after the header.
    pub body: Bytes,
}

/// The API key and version at the front of a request frame, read without decoding the rest.
pub fn peek_api(frame: &[u8]) -> Result<(i16, i16), ProtocolError> {
    let mut prefix = frame.get(..4).ok_or(ProtocolError::FrameTooShort {
        size_bytes: frame.len(),
    })?;
    Ok((prefix.get_i16(), prefix.get_i16()))
}

/// Decodes the request header at the front of `frame`.
///
/// Errors: [`ProtocolError::FrameTooShort`] for frames that cannot hold a header,
/// [`ProtocolError::UnknownApiKey`] for keys Kafka does not define, and
/// [`ProtocolError::Decode`] for a malformed header.
pub fn decode_request_header(frame: Bytes) -> Result<RequestFrame, ProtocolError> {
    if frame.len() < REQUEST_HEADER_BYTES_MIN {
        return Err(ProtocolError::FrameTooShort {
            size_bytes: frame.len(),
        });
    }
    let (api_key_raw, api_version) = peek_api(&frame)?;
    let api_key = ApiKey::try_from(api_key_raw).map_err(|()| ProtocolError::UnknownApiKey {
        api_key: api_key_raw,
    })?;
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, api_key.request_header_version(api_version))
        .map_err(|e| ProtocolError::Decode {
            what: format!("{api_key:?} v{api_version} request header"),
            reason: e.to_string(),
        })?;
    Ok(RequestFrame {
        header,
        api_key,
        body,
    })
}

/// Decodes a request body at `version`; the caller has checked that the version is served.
pub fn decode_request_body(
    api_key: ApiKey,
    version: i16,
    body: &mut Bytes,
) -> Result<RequestKind, ProtocolError> {
    RequestKind::decode(api_key, body, version).map_err(|e| ProtocolError::Decode {
        what: format!("{api_key:?} v{version} request body"),
        reason: e.to_string(),
    })
}

/// Size prefix plus the largest response header (correlation id and an empty tagged-field
/// section), with room to spare; small responses grow from here.
const RESPONSE_HEADER_BYTES_MAX: usize = 256;

/// Encodes a response with its size prefix and header, ready to write to the socket. The
/// record data of a Fetch response is referenced, not copied: see [`ResponseFrame`].
pub fn encode_response(
    api_key: ApiKey,
    correlation_id: i32,
    version: i16,
    response: &ResponseKind,
) -> Result<ResponseFrame, ProtocolError> {
    let encode_error = |reason: String| ProtocolError::Encode {
        what: format!("{api_key:?} v{version} response"),
        reason,
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    if let ResponseKind::Fetch(fetch) = response {
        // The size goes first and the records are not in our buffer, so it is computed up
        // front; only the bytes that are copied need room.
        let frame_bytes = header
            .compute_size(header_version)
            .and_then(|header_bytes| Ok(header_bytes + fetch.compute_size(version)?))
            .map_err(|e| encode_error(e.to_string()))?;
        let size = i32::try_from(frame_bytes)
            .map_err(|_| encode_error(format!("{frame_bytes} bytes do not fit a frame")))?;
        let copied_bytes = frame_bytes.saturating_sub(shared_record_bytes(fetch));
        let mut buf = ChunkedBytesMut::new(FRAME_SIZE_PREFIX_BYTES + copied_bytes, SHARE_BYTES_MIN);
        buf.put_i32(size);
        header
            .encode(&mut buf, header_version)
            .and_then(|()| fetch.encode(&mut buf, version))
            .map_err(|e| encode_error(e.to_string()))?;
        if buf.len() != FRAME_SIZE_PREFIX_BYTES + frame_bytes {
            let encoded = buf.len() - FRAME_SIZE_PREFIX_BYTES;
            return Err(encode_error(format!(
                "encoded {encoded} bytes where {frame_bytes} were computed"
            )));
        }
        return Ok(ResponseFrame::from(buf));
    }
    let mut buf = BytesMut::with_capacity(RESPONSE_HEADER_BYTES_MAX);
    buf.put_i32(0); // the size, patched below once known
    header
        .encode(&mut buf, header_version)
        .and_then(|()| response.encode(&mut buf, version))
        .map_err(|e| encode_error(e.to_string()))?;
    let size = i32::try_from(buf.len() - FRAME_SIZE_PREFIX_BYTES)
        .map_err(|_| encode_error(format!("{} bytes do not fit a frame", buf.len())))?;
    if let Some(prefix) = buf.get_mut(..FRAME_SIZE_PREFIX_BYTES) {
        prefix.copy_from_slice(&size.to_be_bytes());
    }
    Ok(ResponseFrame::from(buf.freeze()))
}

/// Record bytes of a Fetch response large enough to be written from their own buffers.
fn shared_record_bytes(fetch: &FetchResponse) -> usize {
    fetch
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .filter_map(|partition| partition.records.as_ref())
        .map(Bytes::len)
        .filter(|&len| len >= SHARE_BYTES_MIN)
        .sum()
}
