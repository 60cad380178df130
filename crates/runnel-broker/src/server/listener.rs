//! The accept loop: one listening socket per client listener (`listeners` minus the controller
//! listeners, which the metadata quorum serves), all accepted by one loop that takes turns
//! between them; connections of every listener share the limits `max.connections` and
//! `max.connections.per.ip` and the shutdown. Each connection knows its listener's name, so
//! Metadata answers with that listener's endpoints. Shutdown stops accepting, lets in-flight requests finish for up
//! to `shutdown.timeout.ms` (then cuts the connections still busy), then flushes and
//! checkpoints every log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::connection;
use super::connection_limits::ConnectionLimits;
use super::shutdown::{Shutdown, StopSignals};
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::BrokerError;

/// Runs a broker until SIGTERM/SIGINT. Errors are start-up failures (data dir, port).
pub fn run(config: BrokerConfig) -> Result<(), BrokerError> {
    if let Some(fault) = config
        .explicit
        .get("storage.fault.injection")
        .filter(|fault| !fault.trim().is_empty())
    {
        tracing::warn!(%fault, "storage fault injection is on: a testing knob, never for production");
    }
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
    let listeners = bind_client_listeners(&config).await?;
    let broker = Arc::new(tokio::task::spawn_blocking(move || Broker::open(config)).await??);
    for (name, listener) in &listeners {
        let advertised = broker
            .config
            .advertised_listeners
            .iter()
            .find(|a| *a.name == **name)
            .map(|a| format!("{}:{}", a.host, a.port))
            .unwrap_or_default();
        let address = listener
            .local_addr()
            .map_or_else(|_| String::new(), |a| a.to_string());
        tracing::info!(listener = %name, %address, %advertised, "listening");
    }
    let address = listeners
        .first()
        .and_then(|(_, listener)| listener.local_addr().ok())
        .unwrap_or(address);
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
    let mut turn = 0;
    loop {
        tokio::select! {
            (name, accepted) = accept_any(&listeners, &mut turn) => {
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
                    connection::serve(broker, stream, peer, name, guard).await;
                    drop(slot);
                });
            }
            // Reap finished connections so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stop => break,
        }
    }
    drop(listeners);
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
    // Controlled shutdown: the controller fences this broker now, moving leadership away.
    broker.shutdown_control_plane().await;
    let closing = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || closing.close()).await?;
    tracing::info!("runnel stopped cleanly");
    Ok(())
}

/// Binds every client listener, in the order of `listeners`. A listener that cannot bind
/// stops the start-up, naming its address.
async fn bind_client_listeners(
    config: &BrokerConfig,
) -> Result<Vec<(Arc<str>, TcpListener)>, BrokerError> {
    let mut bound = Vec::new();
    for listener in config.client_listeners() {
        let address = listener
            .bind_address()
            .map_err(|source| BrokerError::Listen {
                address: SocketAddr::from(([0, 0, 0, 0], listener.port)),
                source,
            })?;
        let socket = TcpListener::bind(address)
            .await
            .map_err(|source| BrokerError::Listen { address, source })?;
        bound.push((Arc::from(listener.name.as_str()), socket));
    }
    Ok(bound)
}

/// The next connection on any of `listeners`, with its listener's name. Takes turns (`turn`
/// is where the next poll starts) so a busy listener cannot starve the others. Cancellation
/// safe: a connection is only taken when it is returned.
async fn accept_any(
    listeners: &[(Arc<str>, TcpListener)],
    turn: &mut usize,
) -> (Arc<str>, std::io::Result<(TcpStream, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        let count = listeners.len();
        for step in 0..count {
            let index = (*turn + step) % count;
            if let Some((name, listener)) = listeners.get(index) {
                if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                    *turn = (index + 1) % count;
                    return Poll::Ready((Arc::clone(name), accepted));
                }
            }
        }
        Poll::Pending
    })
    .await
}
