//! Request and response codec over the `kafka-protocol` crate.
//!
//! The crate's own header decoder panics on frames under four bytes, so the API key and version
//! are read here first; callers then decide (from their handler registry) whether the version is
//! served before the body is decoded at all.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::frame::{FRAME_SIZE_PREFIX_BYTES, REQUEST_HEADER_BYTES_MIN};
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

/// Encodes a response with its header and size prefix, ready to write to the socket.
pub fn encode_response(
    api_key: ApiKey,
    correlation_id: i32,
    version: i16,
    response: &ResponseKind,
) -> Result<Bytes, ProtocolError> {
    let encode_error = |reason: String| ProtocolError::Encode {
        what: format!("{api_key:?} v{version} response"),
        reason,
    };
    // A Fetch response carries megabytes of records: size it exactly, so the buffer is
    // allocated once instead of doubling (which held up to twice the response, plus the copy
    // being grown from, at the peak). Other responses are small.
    let body_bytes = match response {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version).unwrap_or(0),
        _ => 0,
    };
    let mut buf = BytesMut::with_capacity(RESPONSE_HEADER_BYTES_MAX + body_bytes);
    buf.put_i32(0); // the size, patched below once known
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(|e| encode_error(e.to_string()))?;
    response
        .encode(&mut buf, version)
        .map_err(|e| encode_error(e.to_string()))?;
    let size = i32::try_from(buf.len() - FRAME_SIZE_PREFIX_BYTES)
        .map_err(|_| encode_error(format!("{} bytes do not fit a frame", buf.len())))?;
    if let Some(prefix) = buf.get_mut(..FRAME_SIZE_PREFIX_BYTES) {
        prefix.copy_from_slice(&size.to_be_bytes());
    }
    Ok(buf.freeze())
}
