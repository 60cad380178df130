//! One client connection: split frames, decode the header, check the version against the
//! handler registry, run the handler, write the response. Requests are *started* one at a time
//! in arrival order (so appends keep the order a producer sent them in); a reply that has to
//! wait (acks=-1 waiting for its fsync) finishes in its own task while the next request starts,
//! and a writer task sends responses strictly in request order, as Kafka requires.
//!
//! Anything malformed closes this connection only: the caller logs it and the broker goes on.

use std::io::{ErrorKind, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use runnel_protocol::frame::{bytes_wanted, split_frame};
use runnel_protocol::request::{decode_request_body, decode_request_header, encode_response};
use runnel_protocol::response_frame::ResponseFrame;
use runnel_protocol::ProtocolError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::shutdown::ShutdownGuard;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::handlers::{self, Reply, RequestContext};

/// Bytes read from the socket at most per read call: a claimed large frame is filled gradually,
/// so memory follows the bytes that actually arrive, not the size the client announced.
const READ_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Responses a connection may owe at once. Past this the connection stops reading requests
/// until the client takes responses: bounded memory per connection, backpressure for
/// pipelining clients (librdkafka keeps up to 1,000,000 requests in flight by default).
/// Large because an owed acks=-1 reply is small (its records are already in the log) and a
/// small window couples appends to fsyncs: when one fsync stalls (tens of ms on a busy disk),
/// a 10,000 records/s producer with linger 0 owes hundreds of one-record requests; with 128
/// the connection stopped reading, the socket filled with tiny requests, and the backlog
/// outlived the stall (e2e p99 190 ms against 17 ms in the same A/B on 2026-12-05).
const IN_FLIGHT_RESPONSES_MAX: usize = 2048;
/// Read buffer taken when bytes arrive on a connection that holds no partial request. An idle
/// connection holds no read buffer at all.
const READ_BUFFER_BYTES_INITIAL: usize = 8 * 1024;
/// Encoded response bytes a connection may have queued before it stops starting requests:
/// a client that pipelines large fetches but never reads holds at most this plus one response
/// (at most `fetch.max.bytes`), not `IN_FLIGHT_RESPONSES_MAX` large responses.
const QUEUED_RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

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
    /// An acks=0 produce failed: it gets no response, so, as Kafka does, the connection is
    /// closed, which is the only way the client can learn of it (it then refreshes metadata).
    #[error("acks=0 produce failed (error code {0})")]
    AcksZeroFailed(i16),
}

/// Serves one connection until the client leaves, it misbehaves, or shutdown is requested.
pub(super) async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    mut shutdown: ShutdownGuard,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "set_nodelay failed");
    }
    match serve_requests(&broker, stream, peer, &listener, &mut shutdown).await {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(CloseReason::Io(error)) => tracing::debug!(%peer, %error, "connection lost"),
        Err(CloseReason::Idle) => tracing::debug!(%peer, "idle connection closed"),
        Err(reason) => tracing::info!(%peer, %reason, "closing connection"),
    }
}

async fn serve_requests(
    broker: &Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: &Arc<str>,
    shutdown: &mut ShutdownGuard,
) -> Result<(), CloseReason> {
    // Kafka's form of a member's host in DescribeGroups.
    let client_host: Arc<str> = Arc::from(format!("/{}", peer.ip()));
    let frame_bytes_max = broker.config.socket_request_max_bytes;
    // `connections.max.idle.ms` bounds both silence and slow drips: the connection must
    // complete a request (or take a response) within this long, or it is closed.
    let idle = Duration::from_millis(broker.config.connections_max_idle_ms);
    let (mut reader, writer) = stream.into_split();
    let (responses, queued) = mpsc::channel(IN_FLIGHT_RESPONSES_MAX);
    let queued_bytes = Arc::new(QueuedBytes::default());
    let writer = tokio::spawn(write_responses(
        writer,
        queued,
        Arc::clone(&queued_bytes),
        idle,
    ));
    let mut buf = BytesMut::new();
    let mut idle_deadline = Instant::now() + idle;
    let read_result = 'serve: loop {
        let mut failed = None;
        while let Some(frame) = match split_frame(&mut buf, frame_bytes_max) {
            Ok(frame) => frame,
            Err(e) => {
                failed = Some(e.into());
                None
            }
        } {
            // Large responses the client has not taken yet hold back the next request.
            tokio::select! {
                () = queued_bytes.below(QUEUED_RESPONSE_BYTES_MAX) => {}
                () = responses.closed() => break 'serve Ok(()),
                () = shutdown.requested() => break 'serve Ok(()),
            }
            match handle_frame(broker, frame, &client_host, listener).await {
                // A full queue waits here: the client gets no further reads until it takes
                // its responses (backpressure instead of buffering).
                Ok(Some(pending)) => {
                    queued_bytes.add(pending.ready_len());
                    if responses.send(pending).await.is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(reason) => {
                    failed = Some(reason);
                    break;
                }
            }
            idle_deadline = Instant::now() + idle;
        }
        if let Some(reason) = failed {
            break Err(reason);
        }
        let wanted = match bytes_wanted(&buf, frame_bytes_max) {
            Ok(wanted) => wanted,
            Err(e) => break Err(e.into()),
        };
        tokio::select! {
            read = read_more(&mut reader, &mut buf, wanted) => match read {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e.into()),
            },
            () = tokio::time::sleep_until(idle_deadline) => break Err(CloseReason::Idle),
            () = responses.closed() => break Ok(()),
            () = shutdown.requested() => break Ok(()),
        }
    };
    // Responses already owed are still written (in-flight requests finish), then we close.
    drop(responses);
    let write_result = writer.await.map_err(|e| CloseReason::Handler(e.into()))?;
    read_result.and(write_result)
}

/// Reads at least one byte into `buf`, wanting `wanted` more. A connection with nothing
/// buffered waits for the socket to become readable before it takes a buffer, so ten thousand
/// idle connections hold no read buffers.
async fn read_more(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    wanted: usize,
) -> std::io::Result<usize> {
    if !buf.is_empty() {
        buf.reserve(wanted.clamp(1, READ_CHUNK_BYTES_MAX));
        return reader.read_buf(buf).await;
    }
    loop {
        // Frames already handed out keep their own part of the old allocation alive.
        *buf = BytesMut::new();
        reader.readable().await?;
        buf.reserve(wanted.clamp(READ_BUFFER_BYTES_INITIAL, READ_CHUNK_BYTES_MAX));
        match reader.try_read_buf(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

/// Encoded bytes of the ready responses a connection has queued but not yet written.
#[derive(Default)]
struct QueuedBytes {
    bytes: AtomicUsize,
    written: Notify,
}

impl QueuedBytes {
    fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    fn remove(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.written.notify_one();
    }

    /// Returns once fewer than `limit` bytes are queued.
    async fn below(&self, limit: usize) {
        while self.bytes.load(Ordering::Acquire) >= limit {
            // `notify_one` stores a permit when nobody waits, so a write that lands between
            // the check and this await still wakes us.
            self.written.notified().await;
        }
    }
}

/// A response owed to the client, in request order.
enum PendingResponse {
    /// Encoded and ready.
    Ready(ResponseFrame),
    /// Completing in its own task (acks=-1 waiting for fsync); `None` means nothing is sent.
    /// These are small (produce responses), so they are bounded by count alone.
    Completing(JoinHandle<Result<Option<ResponseFrame>, CloseReason>>),
}

impl PendingResponse {
    /// Bytes counted against [`QUEUED_RESPONSE_BYTES_MAX`].
    fn ready_len(&self) -> usize {
        match self {
            PendingResponse::Ready(frame) => frame.len(),
            PendingResponse::Completing(_) => 0,
        }
    }
}

/// Writes owed responses in request order; ends when the reader is done and the queue is empty,
/// or on the first failure (which closes the connection).
async fn write_responses(
    mut writer: OwnedWriteHalf,
    mut queued: mpsc::Receiver<PendingResponse>,
    queued_bytes: Arc<QueuedBytes>,
    idle: Duration,
) -> Result<(), CloseReason> {
    while let Some(pending) = queued.recv().await {
        let counted = pending.ready_len();
        let response = match pending {
            PendingResponse::Ready(frame) => Some(frame),
            PendingResponse::Completing(task) => {
                task.await.map_err(|e| CloseReason::Handler(e.into()))??
            }
        };
        if let Some(frame) = response {
            tokio::time::timeout(idle, write_frame(&mut writer, frame))
                .await
                .map_err(|_| CloseReason::Idle)??;
        }
        queued_bytes.remove(counted);
    }
    Ok(())
}

/// Slices handed to one vectored write.
const WRITE_SLICES_MAX: usize = 64;

/// Writes a response frame's chunks in order with vectored writes, releasing each chunk (often
/// a partition's records, read straight from the log) as soon as it is on the socket.
async fn write_frame(writer: &mut OwnedWriteHalf, frame: ResponseFrame) -> std::io::Result<()> {
    let mut chunks = frame.into_chunks();
    let mut next = 0;
    while next < chunks.len() {
        let mut written = {
            let slices: Vec<IoSlice<'_>> = chunks
                .iter()
                .skip(next)
                .take(WRITE_SLICES_MAX)
                .map(|chunk| IoSlice::new(chunk))
                .collect();
            writer.write_vectored(&slices).await?
        };
        if written == 0 && chunks.iter().skip(next).any(|chunk| !chunk.is_empty()) {
            return Err(ErrorKind::WriteZero.into());
        }
        while let Some(chunk) = chunks.get_mut(next) {
            if written < chunk.len() {
                chunk.advance(written);
                break;
            }
            written -= chunk.len();
            *chunk = Bytes::new();
            next += 1;
        }
    }
    Ok(())
}

/// Runs one request up to its reply; `None` means no response is owed (a Produce with acks=0
/// whose work is complete).
async fn handle_frame(
    broker: &Arc<Broker>,
    frame: Bytes,
    client_host: &Arc<str>,
    listener: &Arc<str>,
) -> Result<Option<PendingResponse>, CloseReason> {
    let request = decode_request_header(frame)?;
    let version = request.header.request_api_version;
    let correlation_id = request.header.correlation_id;
    let api_key = request.api_key;
    let handler = handlers::find(api_key, version);
    let Some(handler) = handler else {
        if api_key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 with UNSUPPORTED_VERSION and our ranges, so the client can
            // retry with a version we serve.
            let response = handlers::api_versions::unsupported_version();
            return Ok(Some(PendingResponse::Ready(encode_response(
                ApiKey::ApiVersions,
                correlation_id,
                0,
                &response,
            )?)));
        }
        return Err(CloseReason::UnsupportedVersion { api_key, version });
    };
    let mut body = request.body;
    let decoded = decode_request_body(api_key, version, &mut body)?;
    let acks_zero = matches!(&decoded, RequestKind::Produce(p) if p.acks == 0);
    let context = RequestContext {
        api_version: version,
        client_id: request.header.client_id.map(|s| s.to_string()),
        client_host: Arc::clone(client_host),
        listener: Arc::clone(listener),
    };
    let encode = move |response: &ResponseKind| -> Result<Option<ResponseFrame>, CloseReason> {
        if acks_zero {
            return match first_produce_error(response) {
                Some(code) => Err(CloseReason::AcksZeroFailed(code)),
                None => Ok(None),
            };
        }
        Ok(Some(encode_response(
            api_key,
            correlation_id,
            version,
            response,
        )?))
    };
    match (handler.handle)(Arc::clone(broker), context, decoded).await? {
        Reply::Now(response) => Ok(encode(&response)?.map(PendingResponse::Ready)),
        Reply::Later(completion) => {
            let task = tokio::spawn(async move { encode(&completion.await?) });
            Ok(Some(PendingResponse::Completing(task)))
        }
    }
}

/// The first partition error code of a Produce response, if any partition failed.
fn first_produce_error(response: &ResponseKind) -> Option<i16> {
    let ResponseKind::Produce(produce) = response else {
        return None;
    };
    produce
        .responses
        .iter()
        .flat_map(|topic| &topic.partition_responses)
        .map(|partition| partition.error_code)
        .find(|code| *code != 0)
}
