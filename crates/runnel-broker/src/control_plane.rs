//! Starts this node's control plane (docs/cluster.md): the metadata quorum on openraft, the
//! controller service on top of it (deciding while this node leads, forwarding otherwise), and
//! the [`MetadataHandle`] the broker reads the image and submits requests through. A lone node
//! with no voters configured runs exactly this, as a one-voter quorum.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::BrokerConfig;
use crate::controller::{ControllerService, ControllerSettings};
use crate::error::BrokerError;
use crate::metadata::{ControllerHandler, MetadataHandle, QuorumConfig, RaftQuorum};

/// Submissions a node may have queued for its controller service at once; senders wait
/// beyond it.
const SUBMISSIONS_QUEUED_MAX: usize = 1024;

/// The running control plane of this node.
#[derive(Debug)]
pub struct ControlPlane {
    /// What the broker reads and submits through.
    pub handle: MetadataHandle,
    quorum: RaftQuorum,
    fencing: JoinHandle<()>,
    submissions: JoinHandle<()>,
}

impl ControlPlane {
    /// Starts the quorum (recovering the metadata log: a restarted node's image is rebuilt
    /// before this returns) and the controller service. Runs inside the runtime.
    ///
    /// Errors: `Config`-style quorum errors (a log formatted for other voters, a controller
    /// listener that cannot bind) as `BrokerError::Metadata`.
    pub async fn start(
        config: &BrokerConfig,
        cluster_id: &str,
    ) -> Result<ControlPlane, BrokerError> {
        let quorum_config = quorum_config(config, cluster_id)?;
        let quorum =
            RaftQuorum::start(quorum_config)
                .await
                .map_err(|error| BrokerError::Metadata {
                    path: config.data_dir.join("__cluster_metadata"),
                    source: std::io::Error::other(error.to_string()),
                })?;
        let service = Arc::new(ControllerService::new(
            config.node_id,
            Arc::new(quorum.clone()),
            quorum.clone(),
            controller_settings(config),
        ));
        let forwarded = Arc::clone(&service);
        let handler: ControllerHandler = Arc::new(move |request_id, request| {
            let service = Arc::clone(&forwarded);
            Box::pin(async move { service.handle_forwarded(request_id, request).await })
        });
        quorum.set_controller_handler(handler);
        let (submit, submissions) = mpsc::channel(SUBMISSIONS_QUEUED_MAX);
        let submissions = tokio::spawn(Arc::clone(&service).run_submissions(submissions));
        let fencing = service.spawn_fencing();
        let handle = MetadataHandle::new(quorum.image_receiver(), submit, quorum.quorum_receiver());
        Ok(ControlPlane {
            handle,
            quorum,
            fencing,
            submissions,
        })
    }

    /// Stops the controller service and leaves the quorum (after the broker's controlled
    /// shutdown, which needs both).
    pub async fn shutdown(&self) {
        self.fencing.abort();
        self.submissions.abort();
        self.quorum.shutdown().await;
    }
}

/// The controller's settings from the broker's.
pub fn controller_settings(config: &BrokerConfig) -> ControllerSettings {
    ControllerSettings {
        session_timeout: std::time::Duration::from_millis(config.broker_session_timeout_ms),
        heartbeat_interval: std::time::Duration::from_millis(config.broker_heartbeat_interval_ms),
        ..ControllerSettings::from_config(config)
    }
}

/// The quorum's part of the configuration: voters (none: this node alone), where to serve
/// peers (the controller listener), and whether this node only observes (`process.roles=broker`).
fn quorum_config(config: &BrokerConfig, cluster_id: &str) -> Result<QuorumConfig, BrokerError> {
    let mut quorum = QuorumConfig::new(
        config.node_id,
        config.data_dir.clone(),
        cluster_id.to_string(),
    );
    quorum.voters = config
        .quorum_voters
        .iter()
        .map(|v| (v.id, format!("{}:{}", v.host, v.port)))
        .collect();
    quorum.observer = !config.process_roles.controller;
    if !quorum.voters.is_empty() {
        if let Some(listener) = config.controller_listener() {
            let address = listener
                .bind_address()
                .map_err(|source| BrokerError::Metadata {
                    path: config.data_dir.clone(),
                    source: std::io::Error::other(format!(
                        "controller listener {}: {source}",
                        listener.name
                    )),
                })?;
            quorum.controller_listen = Some(address);
            if quorum.observer {
                // The leader pushes the log to an observer: it must reach this listener.
                quorum.controller_advertised = Some(format!(
                    "{}:{}",
                    reachable_host(config, &listener.host),
                    listener.port
                ));
            }
        }
    }
    Ok(quorum)
}

/// A host other nodes can reach: the listener's own unless it is a wildcard, else the host
/// this broker advertises to clients.
fn reachable_host(config: &BrokerConfig, host: &str) -> String {
    match host {
        "" | "0.0.0.0" | "::" | "[::]" => config.advertise_host.clone(),
        named => named.to_string(),
    }
}
