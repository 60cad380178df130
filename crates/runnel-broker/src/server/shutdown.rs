//! Shutdown signalling: one `watch` flips to `true` on SIGTERM/SIGINT; every connection task
//! holds a clone of a `mpsc::Sender` so the server knows when all of them have finished
//! (the channel closes when the last clone drops). The wait is bounded by
//! `shutdown.timeout.ms`: a request that never finishes (a Fetch long-poll, a client that keeps
//! sending) must not keep the process, and the final flush, from happening.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};

/// Held by every connection task; its drop tells the server the task is done.
#[derive(Debug, Clone)]
pub(crate) struct ShutdownGuard {
    /// Never sent on; only dropped.
    _done: mpsc::Sender<()>,
    signal: watch::Receiver<bool>,
}

impl ShutdownGuard {
    /// Resolves once shutdown has been requested.
    pub(crate) async fn requested(&mut self) {
        // An error means the sender is gone, which only happens when the server is gone.
        let _ = self.signal.wait_for(|stop| *stop).await;
    }
}

/// The server's end: trigger shutdown, then wait for every guard to drop.
#[derive(Debug)]
pub(crate) struct Shutdown {
    signal: watch::Sender<bool>,
    done_tx: Option<mpsc::Sender<()>>,
    done_rx: mpsc::Receiver<()>,
}

impl Shutdown {
    pub(crate) fn new() -> Shutdown {
        let (signal, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Shutdown {
            signal,
            done_tx: Some(done_tx),
            done_rx,
        }
    }

    /// A guard for one more task.
    pub(crate) fn guard(&self) -> Option<ShutdownGuard> {
        self.done_tx.as_ref().map(|done| ShutdownGuard {
            _done: done.clone(),
            signal: self.signal.subscribe(),
        })
    }

    /// Signals every task and waits until all guards are dropped, or `timeout` passes: returns
    /// whether every task finished in time.
    pub(crate) async fn drain(mut self, timeout: Duration) -> bool {
        self.signal.send_replace(true);
        self.done_tx = None;
        tokio::time::timeout(timeout, self.done_rx.recv())
            .await
            .is_ok()
    }
}

/// SIGINT and SIGTERM handlers, installed before the listener binds: a signal that arrives
/// while the broker is still starting is then a graceful stop, not the default instant death.
#[derive(Debug)]
pub(crate) struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    pub(crate) fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub(crate) async fn received(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = self.terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    }
}
