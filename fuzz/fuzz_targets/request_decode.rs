//! Request decoding as the broker does it (`server/connection.rs`): peek the API, decode the
//! header, look the version up in the registry, decode the body, for every (API key, version)
//! that `handlers::HANDLERS` serves.
//!
//! Input: byte 0 picks a registry row, byte 1 a version within its range, byte 2 the mode, the
//! rest is the frame body. Mode bit 0 clear: a valid header for the chosen key and version is
//! put in front of the rest, so the body decoder is always reached. Mode bit 0 set: the rest is
//! the whole frame, header included (byte 0 and 1 then only matter for the seed).
//!
//! Asserts: nothing panics; `scripts/fuzz.sh` runs it with `-malloc_limit_mb=128` and
//! `-rss_limit_mb=512`, so a wire count that turns into a large allocation is a crash; a
//! decoded header agrees with `peek_api`.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use runnel_broker::handlers::{self, HANDLERS};
use runnel_protocol::kafka_protocol::messages::RequestHeader;
use runnel_protocol::kafka_protocol::protocol::{Encodable, StrBytes};
use runnel_protocol::request::{decode_request_body, decode_request_header, peek_api};

fuzz_target!(|data: &[u8]| {
    let [row, version, mode, rest @ ..] = data else {
        return;
    };
    let Some(handler) = HANDLERS.get(usize::from(*row) % HANDLERS.len().max(1)) else {
        return;
    };
    let span = u16::try_from(handler.max_version - handler.min_version).unwrap_or(0) + 1;
    let chosen_version =
        handler.min_version + i16::try_from(u16::from(*version) % span).unwrap_or(0);

    let frame = if mode & 1 == 0 {
        let mut frame = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(handler.api_key as i16)
            .with_request_api_version(chosen_version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("fuzz")));
        if header
            .encode(
                &mut frame,
                handler.api_key.request_header_version(chosen_version),
            )
            .is_err()
        {
            return;
        }
        frame.extend_from_slice(rest);
        frame.freeze()
    } else {
        Bytes::copy_from_slice(rest)
    };

    let peeked = peek_api(&frame);
    let request = match decode_request_header(frame) {
        Ok(request) => request,
        Err(error) => {
            assert!(mode & 1 == 1, "our own header was refused: {error}");
            return;
        }
    };
    let api_key = request.api_key;
    let version = request.header.request_api_version;
    assert_eq!(peeked, Ok((api_key as i16, version)));
    if mode & 1 == 0 {
        assert_eq!((api_key, version), (handler.api_key, chosen_version));
        assert_eq!(request.header.correlation_id, 7);
    }
    // The broker never decodes a body at a version it does not serve.
    if handlers::find(api_key, version).is_none() {
        return;
    }
    let mut body = request.body;
    let _ = decode_request_body(api_key, version, &mut body);
});
