//! A follower's connection to its leader: Kafka's own wire protocol on the leader's
//! `inter.broker.listener.name` listener, one request in flight at a time (a fetcher waits for
//! each answer before it asks again), encoded with `runnel_protocol::client`.
//!
//! It knows nothing of partitions or logs: it sends a Fetch and hands back the decoded answer.
//! Any failure leaves the connection unusable (a half-read frame cannot be resynchronised); the
//! caller drops it and connects again.

use std::time::Duration;

use kafka_protocol::messages::{FetchRequest, FetchResponse};
use runnel_protocol::client::{
    decode_response, encode_request, response_frame_bytes, REPLICA_CLIENT_ID,
};
use runnel_protocol::ProtocolError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fetch v16: topics named by id (v13), `replica_state` (v15), `diverging_epoch` (v12).
pub const FETCH_VERSION: i16 = 16;

/// How long opening a connection may take: a leader whose host is gone must not hold the
/// fetcher for the kernel's minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an answer may take beyond the long poll the request asks for (Kafka's
/// `replica.socket.timeout.ms` default).
const ANSWER_TIMEOUT_BEYOND_WAIT: Duration = Duration::from_secs(30);

/// Why a request to the leader got no usable answer. Every one ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum LeaderConnectionError {
    /// The leader could not be reached.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// `host:port` of the leader's endpoint.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// Reading or writing failed, or the leader closed the connection.
    #[error("connection to {addr} failed: {error}")]
    Io {
        /// `host:port` of the leader's endpoint.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// No answer in time.
    #[error("no answer from {addr} within {timeout_ms} ms")]
    TimedOut {
        /// `host:port` of the leader's endpoint.
        addr: String,
        /// How long we waited.
        timeout_ms: u128,
    },
    /// The request could not be encoded, or the answer was malformed or too large.
    #[error("bad frame to or from {addr}: {error}")]
    Protocol {
        /// `host:port` of the leader's endpoint.
        addr: String,
        /// What was wrong.
        error: ProtocolError,
    },
    /// The answer names another request than the one sent.
    #[error("answer from {addr} carries correlation id {got}, expected {expected}")]
    CorrelationMismatch {
        /// `host:port` of the leader's endpoint.
        addr: String,
        /// The id sent.
        expected: i32,
        /// The id received.
        got: i32,
    },
}

/// An open connection to a leader.
#[derive(Debug)]
pub struct LeaderConnection {
    stream: TcpStream,
    addr: String,
    next_correlation_id: i32,
    /// Largest answer accepted; a larger size prefix closes the connection before its body is
    /// read.
    frame_bytes_max: usize,
}

impl LeaderConnection {
    /// Connects to `addr` (`host:port`), within a bounded time.
    pub async fn connect(
        addr: String,
        frame_bytes_max: usize,
    ) -> Result<LeaderConnection, LeaderConnectionError> {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        let stream = match connected {
            Ok(stream) => stream,
            Err(error) => return Err(LeaderConnectionError::Connect { addr, error }),
        };
        // Fetches are small requests answered at once: Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        Ok(LeaderConnection {
            stream,
            addr,
            next_correlation_id: 0,
            frame_bytes_max,
        })
    }

    /// The leader's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` as Fetch [`FETCH_VERSION`] and waits for its answer: the request's own
    /// `max_wait_ms` plus a fixed margin. On any error the connection must be dropped.
    pub async fn fetch(
        &mut self,
        request: &FetchRequest,
    ) -> Result<FetchResponse, LeaderConnectionError> {
        let long_poll = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
        let timeout = long_poll + ANSWER_TIMEOUT_BEYOND_WAIT;
        match tokio::time::timeout(timeout, self.round_trip(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(LeaderConnectionError::TimedOut {
                addr: self.addr.clone(),
                timeout_ms: timeout.as_millis(),
            }),
        }
    }

    async fn round_trip(
        &mut self,
        request: &FetchRequest,
    ) -> Result<FetchResponse, LeaderConnectionError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(FETCH_VERSION, correlation_id, REPLICA_CLIENT_ID, request)
            .map_err(|error| self.protocol_error(error))?;
        self.stream
            .write_all(&frame)
            .await
            .map_err(|error| self.io_error(error))?;
        let size_prefix = self
            .stream
            .read_i32()
            .await
            .map_err(|error| self.io_error(error))?;
        let frame_bytes = response_frame_bytes(size_prefix, self.frame_bytes_max)
            .map_err(|error| self.protocol_error(error))?;
        let mut body = vec![0u8; frame_bytes];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|error| self.io_error(error))?;
        let answer = decode_response::<FetchRequest>(FETCH_VERSION, body.into())
            .map_err(|error| self.protocol_error(error))?;
        if answer.correlation_id != correlation_id {
            return Err(LeaderConnectionError::CorrelationMismatch {
                addr: self.addr.clone(),
                expected: correlation_id,
                got: answer.correlation_id,
            });
        }
        Ok(answer.body)
    }

    fn io_error(&self, error: std::io::Error) -> LeaderConnectionError {
        LeaderConnectionError::Io {
            addr: self.addr.clone(),
            error,
        }
    }

    fn protocol_error(&self, error: ProtocolError) -> LeaderConnectionError {
        LeaderConnectionError::Protocol {
            addr: self.addr.clone(),
            error,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use kafka_protocol::messages::{ApiKey, ResponseKind};
    use runnel_protocol::request::encode_response;
    use tokio::net::TcpListener;

    use super::*;

    /// A server that reads one request frame and answers with `answer(correlation id)`.
    async fn answering(answer: fn(i32) -> Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let size = stream.read_i32().await.unwrap();
            let mut frame = vec![0u8; usize::try_from(size).unwrap()];
            stream.read_exact(&mut frame).await.unwrap();
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            stream.write_all(&answer(correlation_id)).await.unwrap();
        });
        addr
    }

    fn fetch_answer(correlation_id: i32) -> Vec<u8> {
        let response = ResponseKind::Fetch(FetchResponse::default().with_throttle_time_ms(7));
        encode_response(ApiKey::Fetch, correlation_id, FETCH_VERSION, &response)
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn a_fetch_gets_its_answer() {
        let addr = answering(fetch_answer).await;
        let mut connection = LeaderConnection::connect(addr, 1 << 20).await.unwrap();
        let response = connection.fetch(&FetchRequest::default()).await.unwrap();
        assert_eq!(response.throttle_time_ms, 7);
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused_before_its_body_is_read() {
        let addr = answering(|_| i32::MAX.to_be_bytes().to_vec()).await;
        let mut connection = LeaderConnection::connect(addr, 1 << 20).await.unwrap();
        let error = connection
            .fetch(&FetchRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(error, LeaderConnectionError::Protocol { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_answer_to_another_request_is_refused() {
        let addr = answering(|correlation_id| fetch_answer(correlation_id + 1)).await;
        let mut connection = LeaderConnection::connect(addr, 1 << 20).await.unwrap();
        let error = connection
            .fetch(&FetchRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(error, LeaderConnectionError::CorrelationMismatch { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_is_an_error() {
        let addr = answering(|_| Vec::new()).await;
        let mut connection = LeaderConnection::connect(addr, 1 << 20).await.unwrap();
        let error = connection
            .fetch(&FetchRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(error, LeaderConnectionError::Io { .. }), "{error}");
    }
}
