//! The accept loop: a semaphore caps connections (`max.connections`); shutdown stops accepting,
//! lets in-flight requests finish, then flushes and checkpoints every log.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::connection;
use super::shutdown::{signal_received, Shutdown};
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
    let connections = Arc::new(Semaphore::new(broker.config.max_connections));
    let shutdown = Shutdown::new();
    let stop = signal_received();
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
                let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                    tracing::warn!(%peer, "max.connections reached; connection refused");
                    continue;
                };
                let Some(guard) = shutdown.guard() else { break };
                let broker = Arc::clone(&broker);
                tokio::spawn(async move {
                    connection::serve(broker, stream, peer, guard).await;
                    drop(permit);
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    shutdown.drain().await;
    let closing = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || closing.close()).await?;
    tracing::info!("runnel stopped cleanly");
    Ok(())
}
