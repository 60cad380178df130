//! Group commit for acknowledgements that wait for durability (Produce acks=-1).
//!
//! One dedicated thread does the fsyncs: waiters queue `(log, offset)` and await a reply; the
//! thread takes everything queued, fsyncs each log once up to its current end (covering every
//! waiter of that log, and whatever was appended meanwhile), and answers them all. While an
//! fsync runs, new appends and new waiters pile up for the next one, so the fsync rate follows
//! the disk, not the request rate, and no blocking-pool thread sits on a lock per request.

use std::sync::Arc;

use runnel_storage::PartitionLog;
use tokio::sync::{mpsc, oneshot};

use crate::error::BrokerError;

/// Waiters queued at most; senders wait beyond this (backpressure, bounded memory).
const QUEUED_FLUSHES_MAX: usize = 16 * 1024;

/// The answer to one waiter: the fsync's error as text (one failure answers many waiters).
type FlushReply = oneshot::Sender<Result<(), String>>;

struct FlushRequest {
    log: Arc<PartitionLog>,
    offset: i64,
    done: FlushReply,
}

/// Handle to the flush thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Flusher {
    requests: mpsc::Sender<FlushRequest>,
}

impl Flusher {
    /// Starts the flush thread; it ends when the last `Flusher` is dropped.
    pub fn start() -> std::io::Result<Flusher> {
        let (requests, queue) = mpsc::channel(QUEUED_FLUSHES_MAX);
        std::thread::Builder::new()
            .name("runnel-flusher".into())
            .spawn(move || run(queue))?;
        Ok(Flusher { requests })
    }

    /// Queues a wait for every record of `log` up to and including `offset` to be fsynced;
    /// the returned [`FlushWait`] resolves once it is. A request that waits for several logs
    /// queues them all before waiting for any, so that one wake-up of the flush thread covers
    /// them all (one round trip instead of one per partition).
    pub async fn submit(&self, log: Arc<PartitionLog>, offset: i64) -> FlushWait {
        if log.flushed_offset() > offset {
            return FlushWait(None);
        }
        let (done, reply) = oneshot::channel();
        match self.requests.send(FlushRequest { log, offset, done }).await {
            Ok(()) => FlushWait(Some(reply)),
            // The reply's sender went with the request: waiting reports the stopped thread.
            Err(_) => FlushWait(Some(oneshot::channel().1)),
        }
    }
}

/// A queued flush (see [`Flusher::submit`]); `None` when the offset was already durable.
#[derive(Debug)]
pub struct FlushWait(Option<oneshot::Receiver<Result<(), String>>>);

impl FlushWait {
    /// Resolves once the fsync covering the offset has finished, with its outcome.
    pub async fn wait(self) -> Result<(), BrokerError> {
        let Some(reply) = self.0 else {
            return Ok(());
        };
        reply
            .await
            .map_err(|_| BrokerError::FlushFailed("the flush thread has stopped".into()))?
            .map_err(BrokerError::FlushFailed)
    }
}

fn run(mut queue: mpsc::Receiver<FlushRequest>) {
    let mut batch = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < QUEUED_FLUSHES_MAX {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        // One fsync per log, to the highest offset anyone waits for (flush covers the log end).
        let mut by_log: Vec<(Arc<PartitionLog>, i64, Vec<FlushReply>)> = Vec::new();
        for request in batch.drain(..) {
            match by_log
                .iter_mut()
                .find(|(log, _, _)| Arc::ptr_eq(log, &request.log))
            {
                Some((_, offset, waiters)) => {
                    *offset = (*offset).max(request.offset);
                    waiters.push(request.done);
                }
                None => by_log.push((request.log, request.offset, vec![request.done])),
            }
        }
        for (log, offset, waiters) in by_log {
            let result = log.flush(offset).map_err(|e| e.to_string());
            if let Err(error) = &result {
                tracing::error!(dir = %log.dir().display(), %error, "fsync failed");
            }
            for waiter in waiters {
                // A waiter that went away (its connection closed) needs no answer.
                let _ = waiter.send(result.clone());
            }
        }
    }
}
