//! Node-to-node traffic on the controller listener (docs/cluster.md, "Node-to-node traffic"):
//! Raft messages and forwarded controller requests, in Kafka's framing with JSON bodies.
//!
//! ```text
//! request:  [i32 size][i32 correlation id][i16 kind][JSON body]
//! response: [i32 size][i32 correlation id][JSON body]
//! ```
//!
//! `size` counts the bytes after it. Every request body is an [`Envelope`] naming the sender's
//! cluster id and node id; a peer with another cluster id is answered [`Reply::Refused`] and
//! disconnected. Responses carry the request's correlation id and may leave out of order (a
//! forwarded controller request can wait seconds for its commit; Raft heartbeats must not wait
//! behind it). Frames are capped at [`FRAME_BYTES_MAX`], checked before the body is read; reads
//! and writes time out; a frame that does not parse closes the connection. Nothing here panics.
//!
//! This module knows frames and messages; [`server`] answers them (with the local Raft node and
//! the controller handler), [`client`] sends them, [`network`] is openraft's network on top.

pub mod client;
pub mod network;
pub mod server;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use super::records::BrokerId;
use super::requests::ControllerRequest;

/// Raft RequestVote.
pub const KIND_VOTE: i16 = 1;
/// Raft AppendEntries.
pub const KIND_APPEND_ENTRIES: i16 = 2;
/// Raft InstallSnapshot (one chunk).
pub const KIND_INSTALL_SNAPSHOT: i16 = 3;
/// A controller request forwarded to the active controller.
pub const KIND_CONTROLLER_REQUEST: i16 = 10;

/// A broker-only node asks the leader to replicate the log to it (add it as an observer).
pub const KIND_JOIN_AS_OBSERVER: i16 = 11;

/// Largest frame (after the size field) either side accepts: 16 MiB.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long the rest of a frame may take once its size has arrived, and how long a write may
/// take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A server connection with no request for this long is closed (peers reconnect on demand;
/// the Raft leader's heartbeats keep its connections busy).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes of `[i32 correlation id][i16 kind]` after the size of a request.
const REQUEST_HEADER_BYTES: usize = 6;
/// Bytes of `[i32 correlation id]` after the size of a response.
const RESPONSE_HEADER_BYTES: usize = 4;

/// The body of every request: who sends it, and the message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The sender's `cluster.id`.
    pub cluster_id: String,
    /// The sender's `node.id`.
    pub from: BrokerId,
    /// The message.
    pub body: T,
}

/// The sender fields of an [`Envelope`], read before the body is decoded.
#[derive(Debug, Deserialize)]
pub(crate) struct Sender {
    pub(crate) cluster_id: String,
    pub(crate) from: BrokerId,
}

/// Every response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply<T> {
    /// The answer.
    Ok(T),
    /// The request was refused (another cluster id); the connection closes after this.
    Refused(String),
}

/// The body of a forwarded controller request (kind 10); its answer is
/// `Result<Committed, SubmitError>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControllerCall {
    /// Unique per request, kept across retries.
    pub request_id: Uuid,
    /// The request.
    pub request: ControllerRequest,
}

/// The body of a join request (kind 11); its answer is `Result<(), SubmitError>`
/// (`NotController` from a voter that does not lead).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinAsObserver {
    /// The broker-only node's `node.id`.
    pub node_id: BrokerId,
    /// Its controller listener, as the leader reaches it (`host:port`).
    pub addr: String,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// A size outside `[header, FRAME_BYTES_MAX]`.
    #[error("frame size {0} out of bounds")]
    BadSize(i64),
    /// A read or write took longer than its timeout.
    #[error("timed out")]
    TimedOut,
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A request frame as read: correlation id, kind, JSON body.
#[derive(Debug)]
pub(crate) struct RequestFrame {
    pub(crate) correlation_id: i32,
    pub(crate) kind: i16,
    pub(crate) body: Vec<u8>,
}

/// Reads one frame's size and then its remaining bytes. Waits up to `idle` for the frame to
/// start, then [`IO_TIMEOUT`] for the rest; a size below `header_bytes` or above
/// [`FRAME_BYTES_MAX`] is refused before anything more is read.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    header_bytes: usize,
    idle: Option<Duration>,
) -> Result<Vec<u8>, FrameError> {
    let mut size = [0u8; 4];
    let first = async {
        match reader.read_exact(&mut size).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Closed),
            Err(e) => Err(FrameError::Io(e)),
        }
    };
    match idle {
        Some(idle) => tokio::time::timeout(idle, first)
            .await
            .map_err(|_| FrameError::TimedOut)??,
        None => first.await?,
    }
    let size = i32::from_be_bytes(size);
    let len = usize::try_from(size)
        .ok()
        .filter(|len| (header_bytes..=FRAME_BYTES_MAX).contains(len))
        .ok_or(FrameError::BadSize(i64::from(size)))?;
    let mut frame = vec![0u8; len];
    tokio::time::timeout(IO_TIMEOUT, reader.read_exact(&mut frame))
        .await
        .map_err(|_| FrameError::TimedOut)??;
    Ok(frame)
}

/// Reads one request frame (server side).
pub(crate) async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<RequestFrame, FrameError> {
    let frame = read_frame(reader, REQUEST_HEADER_BYTES, Some(IDLE_TIMEOUT)).await?;
    let (header, body) = frame
        .split_at_checked(REQUEST_HEADER_BYTES)
        .ok_or(FrameError::BadSize(0))?;
    let (correlation, kind) = header.split_at(4);
    Ok(RequestFrame {
        correlation_id: i32::from_be_bytes(correlation.try_into().map_err(|_| bad_header())?),
        kind: i16::from_be_bytes(kind.try_into().map_err(|_| bad_header())?),
        body: body.to_vec(),
    })
}

/// Reads one response frame (client side): correlation id and JSON body. Waits for the frame
/// to start as long as it takes (requests time out on their own).
pub(crate) async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<(i32, Vec<u8>), FrameError> {
    let mut frame = read_frame(reader, RESPONSE_HEADER_BYTES, None).await?;
    let body = frame.split_off(RESPONSE_HEADER_BYTES);
    let correlation = i32::from_be_bytes(frame.as_slice().try_into().map_err(|_| bad_header())?);
    Ok((correlation, body))
}

fn bad_header() -> FrameError {
    FrameError::BadSize(0)
}

/// Encodes a request frame.
pub(crate) fn encode_request(correlation_id: i32, kind: i16, body: &[u8]) -> Option<Vec<u8>> {
    let size = i32::try_from(REQUEST_HEADER_BYTES.checked_add(body.len())?).ok()?;
    if usize::try_from(size).ok()? > FRAME_BYTES_MAX {
        return None;
    }
    let mut out = Vec::with_capacity(body.len().saturating_add(10));
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(body);
    Some(out)
}

/// Encodes a response frame.
pub(crate) fn encode_response(correlation_id: i32, body: &[u8]) -> Option<Vec<u8>> {
    let size = i32::try_from(RESPONSE_HEADER_BYTES.checked_add(body.len())?).ok()?;
    if usize::try_from(size).ok()? > FRAME_BYTES_MAX {
        return None;
    }
    let mut out = Vec::with_capacity(body.len().saturating_add(8));
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    out.extend_from_slice(body);
    Some(out)
}

/// Writes `frame` within [`IO_TIMEOUT`].
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), FrameError> {
    tokio::time::timeout(IO_TIMEOUT, async {
        writer.write_all(frame).await?;
        writer.flush().await
    })
    .await
    .map_err(|_| FrameError::TimedOut)??;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let request = encode_request(7, KIND_VOTE, b"{}").unwrap();
        let frame = read_request(&mut request.as_slice()).await.unwrap();
        assert_eq!(
            (frame.correlation_id, frame.kind, frame.body.as_slice()),
            (7, KIND_VOTE, b"{}".as_slice())
        );
        let response = encode_response(9, b"[1]").unwrap();
        let (correlation, body) = read_response(&mut response.as_slice()).await.unwrap();
        assert_eq!((correlation, body.as_slice()), (9, b"[1]".as_slice()));
    }

    #[tokio::test]
    async fn sizes_out_of_bounds_are_refused_before_the_body() {
        for size in [-1i32, 0, 5, (FRAME_BYTES_MAX + 1) as i32, i32::MAX] {
            let mut bytes = size.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0; 16]);
            let err = read_request(&mut bytes.as_slice()).await.unwrap_err();
            assert!(matches!(err, FrameError::BadSize(_)), "{size}: {err}");
        }
        assert!(matches!(
            read_request(&mut [0u8, 0].as_slice()).await.unwrap_err(),
            FrameError::Closed
        ));
    }
}
