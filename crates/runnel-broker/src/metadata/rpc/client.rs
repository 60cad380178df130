//! The sending side of node-to-node traffic: one connection per peer, reused by every caller
//! (Raft replication, elections, forwarded requests), opened on first use and again after a
//! failure. Requests carry correlation ids, so several may be in flight on the connection; each
//! caller waits for its own answer up to its own timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::{encode_request, read_response, write_frame, Envelope, Reply};
use crate::metadata::records::BrokerId;

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames waiting for the connection's writer.
const OUTGOING_FRAMES_MAX: usize = 64;

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer could not be reached.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// Its address.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The connection failed or closed before the answer came.
    #[error("connection to {0} lost")]
    ConnectionLost(String),
    /// No answer within the timeout.
    #[error("no answer from {0} in time")]
    TimedOut(String),
    /// The peer refused us (another cluster id).
    #[error("refused by {addr}: {reason}")]
    Refused {
        /// Its address.
        addr: String,
        /// What it said.
        reason: String,
    },
    /// The request does not fit in a frame ([`super::FRAME_BYTES_MAX`]).
    #[error("request of {0} bytes larger than a frame")]
    TooLarge(usize),
    /// The request could not be encoded, or the answer decoded.
    #[error("bad message: {0}")]
    Codec(String),
}

/// State shared by a connection and its reader and writer tasks.
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<HashMap<i32, oneshot::Sender<Vec<u8>>>>,
    closed: AtomicBool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<Vec<u8>>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection dead; every waiting caller learns it (its sender is dropped).
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.pending().clear();
    }
}

#[derive(Debug)]
struct Connection {
    frames: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    next_correlation: AtomicI32,
}

/// A client of one peer's controller listener.
#[derive(Debug)]
pub struct PeerClient {
    addr: String,
    cluster_id: String,
    from: BrokerId,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl PeerClient {
    /// A client of the peer at `addr` (`host:port`), sending as node `from` of `cluster_id`.
    /// Connects on first use.
    pub fn new(addr: String, cluster_id: String, from: BrokerId) -> PeerClient {
        PeerClient {
            addr,
            cluster_id,
            from,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `body` as a request of `kind` and decodes the answer, all within `timeout`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: i16,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let envelope = Envelope {
            cluster_id: self.cluster_id.clone(),
            from: self.from,
            body,
        };
        let json = serde_json::to_vec(&envelope).map_err(|e| CallError::Codec(e.to_string()))?;
        let answer = tokio::time::timeout(timeout, self.round_trip(kind, &json))
            .await
            .map_err(|_| CallError::TimedOut(self.addr.clone()))??;
        match serde_json::from_slice::<Reply<Resp>>(&answer) {
            Ok(Reply::Ok(resp)) => Ok(resp),
            Ok(Reply::Refused(reason)) => Err(CallError::Refused {
                addr: self.addr.clone(),
                reason,
            }),
            Err(e) => Err(CallError::Codec(format!("answer from {}: {e}", self.addr))),
        }
    }

    async fn round_trip(&self, kind: i16, json: &[u8]) -> Result<Vec<u8>, CallError> {
        let connection = self.connection().await?;
        let correlation = connection.next_correlation.fetch_add(1, Ordering::Relaxed);
        let frame =
            encode_request(correlation, kind, json).ok_or(CallError::TooLarge(json.len()))?;
        let (tx, rx) = oneshot::channel();
        connection.shared.pending().insert(correlation, tx);
        // Removes the waiter however this call ends (answer, timeout, cancellation).
        let _pending = PendingGuard {
            shared: &connection.shared,
            correlation,
        };
        if connection.frames.send(frame).await.is_err() {
            connection.shared.close();
            return Err(CallError::ConnectionLost(self.addr.clone()));
        }
        rx.await
            .map_err(|_| CallError::ConnectionLost(self.addr.clone()))
    }

    /// The live connection, opening a new one if there is none or it failed.
    async fn connection(&self) -> Result<Arc<Connection>, CallError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            if !connection.shared.closed.load(Ordering::SeqCst) {
                return Ok(Arc::clone(connection));
            }
        }
        *slot = None;
        // Bounded: a peer whose host is gone must not hold the slot for the kernel's minutes.
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            .map_err(|error| CallError::Connect {
                addr: self.addr.clone(),
                error,
            })?;
        let _ = stream.set_nodelay(true);
        let connection = Arc::new(spawn_connection(stream, self.addr.clone()));
        *slot = Some(Arc::clone(&connection));
        Ok(connection)
    }
}

struct PendingGuard<'a> {
    shared: &'a Shared,
    correlation: i32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending().remove(&self.correlation);
    }
}

/// Starts the reader and writer tasks of a new connection. The writer ends when every sender
/// of frames is gone (the connection was replaced or its client dropped) or a write fails; it
/// stops the reader on its way out.
fn spawn_connection(stream: TcpStream, addr: String) -> Connection {
    let (mut reader, mut writer) = stream.into_split();
    let shared = Arc::new(Shared::default());
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(OUTGOING_FRAMES_MAX);
    let reader_shared = Arc::clone(&shared);
    let reader_addr = addr.clone();
    let reader_task = tokio::spawn(async move {
        loop {
            match read_response(&mut reader).await {
                Ok((correlation, body)) => {
                    let waiter = reader_shared.pending().remove(&correlation);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(body);
                    }
                }
                Err(error) => {
                    tracing::debug!(peer = %reader_addr, %error, "controller connection closed");
                    reader_shared.close();
                    return;
                }
            }
        }
    });
    let writer_shared = Arc::clone(&shared);
    tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if writer_shared.closed.load(Ordering::SeqCst) {
                break;
            }
            if let Err(error) = write_frame(&mut writer, &frame).await {
                tracing::debug!(peer = %addr, %error, "controller connection write failed");
                break;
            }
        }
        writer_shared.close();
        reader_task.abort();
    });
    Connection {
        frames,
        shared,
        next_correlation: AtomicI32::new(0),
    }
}
