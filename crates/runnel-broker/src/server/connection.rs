//! One client connection: split frames, decode the header, check the version against the
//! handler registry, run the handler, write the response. Requests are served one at a time in
//! arrival order, so responses leave in request order as Kafka requires.
//!
//! Anything malformed closes this connection only: the caller logs it and the broker goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind};
use runnel_protocol::frame::{bytes_wanted, split_frame};
use runnel_protocol::request::{decode_request_body, decode_request_header, encode_response};
use runnel_protocol::ProtocolError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::shutdown::ShutdownGuard;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::handlers::{self, RequestContext};

/// Bytes read from the socket at most per read call: a claimed large frame is filled gradually,
/// so memory follows the bytes that actually arrive, not the size the client announced.
const READ_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Initial read buffer per connection.
const READ_BUFFER_BYTES_INITIAL: usize = 8 * 1024;

/// Why a connection was closed by us.
#[derive(Debug, thiserror::Error)]
enum CloseReason {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("{api_key:?} v{version} is not served")]
    UnsupportedVersion { api_key: ApiKey, version: i16 },
    #[error("handler failed: {0}")]
    Handler(#[from] BrokerError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no complete request or response within connections.max.idle.ms")]
    Idle,
}

/// Serves one connection until the client leaves, it misbehaves, or shutdown is requested.
pub(super) async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: ShutdownGuard,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "set_nodelay failed");
    }
    match serve_requests(&broker, stream, peer, &mut shutdown).await {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(CloseReason::Io(error)) => tracing::debug!(%peer, %error, "connection lost"),
        Err(CloseReason::Idle) => tracing::debug!(%peer, "idle connection closed"),
        Err(reason) => tracing::info!(%peer, %reason, "closing connection"),
    }
}

async fn serve_requests(
    broker: &Arc<Broker>,
    mut stream: TcpStream,
    peer: SocketAddr,
    shutdown: &mut ShutdownGuard,
) -> Result<(), CloseReason> {
    // Kafka's form of a member's host in DescribeGroups.
    let client_host: Arc<str> = Arc::from(format!("/{}", peer.ip()));
    let frame_bytes_max = broker.config.socket_request_max_bytes;
    // `connections.max.idle.ms` bounds both silence and slow drips: the connection must
    // complete a request (or take a response) within this long, or it is closed.
    let idle = Duration::from_millis(broker.config.connections_max_idle_ms);
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES_INITIAL);
    let mut idle_deadline = Instant::now() + idle;
    loop {
        while let Some(frame) = split_frame(&mut buf, frame_bytes_max)? {
            if let Some(response) = handle_frame(broker, frame, &client_host).await? {
                tokio::time::timeout(idle, stream.write_all(&response))
                    .await
                    .map_err(|_| CloseReason::Idle)??;
            }
            idle_deadline = Instant::now() + idle;
        }
        let wanted = bytes_wanted(&buf, frame_bytes_max)?;
        buf.reserve(wanted.clamp(1, READ_CHUNK_BYTES_MAX));
        tokio::select! {
            read = stream.read_buf(&mut buf) => {
                if read? == 0 {
                    return Ok(());
                }
            }
            () = tokio::time::sleep_until(idle_deadline) => return Err(CloseReason::Idle),
            () = shutdown.requested() => return Ok(()),
        }
    }
}

/// Runs one request; `None` means no response is sent (Produce with acks=0).
async fn handle_frame(
    broker: &Arc<Broker>,
    frame: Bytes,
    client_host: &Arc<str>,
) -> Result<Option<Bytes>, CloseReason> {
    let request = decode_request_header(frame)?;
    let version = request.header.request_api_version;
    let correlation_id = request.header.correlation_id;
    let handler = handlers::find(request.api_key, version);
    let Some(handler) = handler else {
        if request.api_key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 with UNSUPPORTED_VERSION and our ranges, so the client can
            // retry with a version we serve.
            let response = handlers::api_versions::unsupported_version();
            return Ok(Some(encode_response(
                ApiKey::ApiVersions,
                correlation_id,
                0,
                &response,
            )?));
        }
        return Err(CloseReason::UnsupportedVersion {
            api_key: request.api_key,
            version,
        });
    };
    let mut body = request.body;
    let decoded = decode_request_body(request.api_key, version, &mut body)?;
    let acks_zero = matches!(&decoded, RequestKind::Produce(p) if p.acks == 0);
    let context = RequestContext {
        api_version: version,
        client_id: request.header.client_id.map(|s| s.to_string()),
        client_host: Arc::clone(client_host),
    };
    let response = (handler.handle)(Arc::clone(broker), context, decoded).await?;
    if acks_zero {
        return Ok(None);
    }
    Ok(Some(encode_response(
        request.api_key,
        correlation_id,
        version,
        &response,
    )?))
}
