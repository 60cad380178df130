//! Group commit for acknowledgements that wait for durability (Produce acks=-1).
//!
//! One dedicated thread does the fsyncs: waiters queue `(log, offset)` and await a reply; the
//! thread takes everything queued, flushes each log once up to its current end (covering every
//! waiter of that log, and whatever was appended meanwhile; logs that allow it share one device
//! cache flush, see `runnel_storage::flush_logs`), and answers them all. While an
//! fsync runs, new appends and new waiters pile up for the next one, so the fsync rate follows
//! the disk, not the request rate, and no blocking-pool thread sits on a lock per request.
//!
//! A round whose waiters all come from bulk producers (requests of at least
//! [`BULK_RECORDS_MIN`] records for the partition: producers that batch with `linger.ms` or
//! full batches) waits up to the commit delay (`log.flush.commit.delay.ms`) for more waiters
//! before it fsyncs, so that a producer sending a request every millisecond or two gets one
//! fsync per few requests rather than one each: each fdatasync costs device round trips and
//! wake-ups that, on a small machine, come out of the CPU the clients and the broker share. A
//! waiter with fewer records (a producer sending records as they come, `linger.ms=0`) ends the
//! wait at once, so low-latency producers never pay for it.

use std::sync::Arc;
use std::time::Duration;

use runnel_storage::{flush_logs, PartitionLog};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::BrokerError;

/// Records one request must have appended to a partition for its acks=-1 wait to be a bulk
/// producer's, which may wait the commit delay for company (see the module docs).
pub const BULK_RECORDS_MIN: i64 = 100;

/// Waiters queued at most; senders wait beyond this (backpressure, bounded memory).
const QUEUED_FLUSHES_MAX: usize = 16 * 1024;

/// The answer to one waiter: the fsync's error as text (one failure answers many waiters).
type FlushReply = oneshot::Sender<Result<(), String>>;

struct FlushRequest {
    log: Arc<PartitionLog>,
    offset: i64,
    /// From a bulk producer: may wait for the commit delay.
    bulk: bool,
    done: FlushReply,
}

/// How the flush thread makes appends durable.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    /// How long a round of bulk producers may wait for more waiters
    /// (`log.flush.commit.delay.ms`, see the module docs).
    pub commit_delay: Duration,
    /// Whether logs may share one device cache flush (`log.flush.device.flush.shared`, see
    /// `runnel_storage::flush_logs`).
    pub device_flush_shared: bool,
}

/// Handle to the flush thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Flusher {
    requests: mpsc::Sender<FlushRequest>,
}

impl Flusher {
    /// Starts the flush thread; it ends when the last `Flusher` is dropped.
    pub fn start(policy: FlushPolicy) -> std::io::Result<Flusher> {
        let (requests, queue) = mpsc::channel(QUEUED_FLUSHES_MAX);
        // The thread's own timer, for the commit delay; it runs nothing but the flush loop.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        std::thread::Builder::new()
            .name("runnel-flusher".into())
            .spawn(move || runtime.block_on(run(queue, policy)))?;
        Ok(Flusher { requests })
    }

    /// Queues a wait for every record of `log` up to and including `offset` to be fsynced;
    /// the returned [`FlushWait`] resolves once it is. A request that waits for several logs
    /// queues them all before waiting for any, so that one wake-up of the flush thread covers
    /// them all (one round trip instead of one per partition).
    ///
    /// `records` is how many records the request appended to `log`: from
    /// [`BULK_RECORDS_MIN`] on, the fsync may wait the commit delay.
    pub async fn submit(&self, log: Arc<PartitionLog>, offset: i64, records: i64) -> FlushWait {
        if log.flushed_offset() > offset {
            return FlushWait(None);
        }
        let (done, reply) = oneshot::channel();
        let request = FlushRequest {
            log,
            offset,
            bulk: records >= BULK_RECORDS_MIN,
            done,
        };
        match self.requests.send(request).await {
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

async fn run(mut queue: mpsc::Receiver<FlushRequest>, policy: FlushPolicy) {
    let commit_delay = policy.commit_delay;
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        let deadline = Instant::now() + commit_delay;
        batch.push(first);
        take_queued(&mut queue, &mut batch);
        // The commit delay, for rounds of bulk producers only (see the module docs).
        while !commit_delay.is_zero()
            && batch.len() < QUEUED_FLUSHES_MAX
            && batch.iter().all(|request| request.bulk)
        {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(more)) => {
                    batch.push(more);
                    take_queued(&mut queue, &mut batch);
                }
                Ok(None) | Err(_) => break,
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
        let requests: Vec<(&PartitionLog, i64)> = by_log
            .iter()
            .map(|(log, offset, _)| (log.as_ref(), *offset))
            .collect();
        let results = flush_logs(&requests, policy.device_flush_shared);
        for ((log, _, waiters), result) in by_log.iter_mut().zip(results) {
            let result = result.map_err(|e| e.to_string());
            if let Err(error) = &result {
                tracing::error!(dir = %log.dir().display(), %error, "fsync failed");
            }
            for waiter in waiters.drain(..) {
                // A waiter that went away (its connection closed) needs no answer.
                let _ = waiter.send(result.clone());
            }
        }
    }
}

/// Moves whatever is queued into `batch`, up to [`QUEUED_FLUSHES_MAX`].
fn take_queued(queue: &mut mpsc::Receiver<FlushRequest>, batch: &mut Vec<FlushRequest>) {
    while batch.len() < QUEUED_FLUSHES_MAX {
        match queue.try_recv() {
            Ok(more) => batch.push(more),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use runnel_protocol::batch_builder::{build_batch, NewRecord};
    use runnel_storage::{LogConfig, PartitionLog};

    use super::*;

    /// A delay no test waits out: a wait that ends shows something other than the timer
    /// ended it.
    const LONG_DELAY: Duration = Duration::from_secs(600);
    const PATIENCE: Duration = Duration::from_secs(30);

    fn policy(commit_delay: Duration) -> FlushPolicy {
        FlushPolicy {
            commit_delay,
            device_flush_shared: true,
        }
    }

    fn log_with_a_record(dir: &std::path::Path) -> Arc<PartitionLog> {
        let log = PartitionLog::open(dir, LogConfig::default()).unwrap();
        let record = NewRecord {
            key: None,
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
        };
        log.append(&build_batch(&[record], 0).unwrap()).unwrap();
        Arc::new(log)
    }

    #[tokio::test]
    async fn a_bulk_round_waits_until_a_small_request_joins_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_a_record(dir.path());
        let flusher = Flusher::start(policy(LONG_DELAY)).unwrap();
        let bulk = flusher.submit(Arc::clone(&log), 0, BULK_RECORDS_MIN).await;
        let bulk = tokio::spawn(bulk.wait());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !bulk.is_finished(),
            "a bulk round fsynced before the commit delay"
        );
        assert_eq!(log.flushed_offset(), 0, "nothing fsynced during the delay");

        let small = flusher.submit(Arc::clone(&log), 0, 1).await;
        tokio::time::timeout(PATIENCE, small.wait())
            .await
            .expect("a small request waited for the commit delay")
            .unwrap();
        tokio::time::timeout(PATIENCE, bulk)
            .await
            .expect("the bulk request was not answered with the small one")
            .unwrap()
            .unwrap();
        assert_eq!(log.flushed_offset(), 1);
    }

    #[tokio::test]
    async fn a_failed_fsync_answers_every_waiter_with_the_error_and_every_later_one_too() {
        use runnel_storage::{FaultInjection, FaultKind, Storage};
        let dir = tempfile::tempdir().unwrap();
        let storage =
            Storage::real().with_faults(FaultInjection::new(FaultKind::FsyncError, 0, ".log"));
        let log =
            Arc::new(PartitionLog::open_on(storage, dir.path(), LogConfig::default()).unwrap());
        let record = NewRecord {
            key: None,
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
        };
        log.append(&build_batch(std::slice::from_ref(&record), 0).unwrap())
            .unwrap();
        log.append(&build_batch(std::slice::from_ref(&record), 0).unwrap())
            .unwrap();
        // A commit delay, so both waiters share the round whose fsync fails.
        let flusher = Flusher::start(policy(LONG_DELAY)).unwrap();
        let first = flusher.submit(Arc::clone(&log), 0, BULK_RECORDS_MIN).await;
        let second = flusher.submit(Arc::clone(&log), 1, 1).await;
        for wait in [first, second] {
            let answer = tokio::time::timeout(PATIENCE, wait.wait())
                .await
                .expect("a waiter was not answered");
            assert!(
                answer.is_err(),
                "a waiter of a failed fsync was told success"
            );
        }
        // The fault fired once: only the log's failed state keeps the retry from succeeding.
        log.append(&build_batch(&[record], 0).unwrap()).unwrap_err();
        let later = flusher.submit(Arc::clone(&log), 1, 1).await;
        let answer = tokio::time::timeout(PATIENCE, later.wait())
            .await
            .expect("a later waiter was not answered");
        assert!(answer.is_err(), "a later waiter was told success");
        assert_eq!(log.flushed_offset(), 0);
    }

    #[tokio::test]
    async fn without_a_delay_bulk_rounds_fsync_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_a_record(dir.path());
        let flusher = Flusher::start(policy(Duration::ZERO)).unwrap();
        let bulk = flusher
            .submit(Arc::clone(&log), 0, BULK_RECORDS_MIN * 10)
            .await;
        tokio::time::timeout(PATIENCE, bulk.wait())
            .await
            .expect("a bulk round waited with no commit delay")
            .unwrap();
        assert_eq!(log.flushed_offset(), 1);
    }
}
