//! The accept loop: connections are admitted under `max.connections` and
//! `max.connections.per.ip`; shutdown stops accepting, lets in-flight requests finish for up
//! to `shutdown.timeout.ms` (then cuts the connections still busy), then flushes and
//! checkpoints every log.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::connection;
use super::connection_limits::ConnectionLimits;
use super::shutdown::{Shutdown, StopSignals};
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::BrokerError;

/// Runs a broker until SIGTERM/SIGINT. Errors are start-up failures (data dir, port).
pub fn run(config: BrokerConfig) -> Result<(), BrokerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("runnel")
        .build()
        .map_err(|source| BrokerError::Listen {
            address: config.listen,
            source,
        })?;
    runtime.block_on(serve(config))
}

async fn serve(config: BrokerConfig) -> Result<(), BrokerError> {
    let address = config.listen;
    let mut signals =
        StopSignals::install().map_err(|source| BrokerError::Listen { address, source })?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| BrokerError::Listen { address, source })?;
    let broker = Arc::new(tokio::task::spawn_blocking(move || Broker::open(config)).await??);
    tracing::info!(
        %address,
        advertised = %format!("{}:{}", broker.config.advertise_host, broker.config.advertise_port),
        data_dir = %broker.config.data_dir.display(),
        "runnel is serving"
    );
    // Logs open lazily; this opens the rest in the background while requests are served.
    let warm = Arc::clone(&broker);
    drop(tokio::task::spawn_blocking(move || warm.topics.open_all()));
    tokio::spawn(crate::group::store::run_timers(Arc::clone(&broker)));
    tokio::spawn(crate::log_manager::run_log_maintenance(Arc::clone(&broker)));
    tokio::spawn(crate::log_manager::run_periodic_flush(Arc::clone(&broker)));
    let limits = ConnectionLimits::new(
        broker.config.max_connections,
        broker.config.max_connections_per_ip,
    );
    let shutdown = Shutdown::new();
    let mut connections = JoinSet::new();
    let stop = signals.received();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Running out of file descriptors must not end the broker.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = limits.admit(peer.ip()) else {
                    tracing::debug!(%peer, "connection limit reached (max.connections or max.connections.per.ip); closed");
                    continue;
                };
                let Some(guard) = shutdown.guard() else { break };
                let broker = Arc::clone(&broker);
                connections.spawn(async move {
                    connection::serve(broker, stream, peer, guard).await;
                    drop(slot);
                });
            }
            // Reap finished connections so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stop => break,
        }
    }
    drop(listener);
    let timeout = Duration::from_millis(broker.config.shutdown_timeout_ms);
    if !shutdown.drain(timeout).await {
        tracing::warn!(
            connections = connections.len(),
            timeout_ms = broker.config.shutdown_timeout_ms,
            "in-flight requests still running after shutdown.timeout.ms; closing their connections"
        );
        connections.abort_all();
    }
    // Aborted tasks end at their next await; after this no connection task runs.
    while connections.join_next().await.is_some() {}
    let closing = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || closing.close()).await?;
    tracing::info!("runnel stopped cleanly");
    Ok(())
}
