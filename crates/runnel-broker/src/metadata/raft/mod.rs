//! The metadata quorum (docs/cluster.md, "The metadata quorum"): one replicated log,
//! `__cluster_metadata`, driven by openraft 0.9. [`RaftQuorum`] opens the storage
//! ([`log_store`], [`state_machine`]), runs the Raft node, serves peers on the controller
//! listener ([`crate::metadata::rpc`]), and is the [`MetadataLog`] the controller proposes to
//! and the [`Forwarder`] that carries requests to the leader.
//!
//! A node with no voters configured is a one-voter quorum of itself: the same code, no
//! network. It is leader, with its log re-applied, when [`RaftQuorum::start`] returns.
//!
//! Timing: heartbeats every [`HEARTBEAT_INTERVAL_MS`] (openraft also uses it as the
//! append-entries timeout, so it leaves room for a follower's fsync on a busy machine);
//! elections after [`ELECTION_TIMEOUT_MIN_MS`]..[`ELECTION_TIMEOUT_MAX_MS`] without a leader,
//! so a killed controller is replaced in about two seconds, well inside the brokers' session
//! timeout (9 s), and a slow heartbeat or two does not start an election.

pub mod log_store;
mod reserve;
pub mod state_machine;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::metrics::RaftMetrics;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use self::log_store::LogStore;
use self::state_machine::StateMachine;
use super::handle::{QuorumReplica, QuorumState, SubmitError, SUBMIT_TIMEOUT};
use super::image::MetadataImage;
use super::log::{Forwarder, Leadership, MetadataLog};
use super::records::{BrokerId, MetadataBatch};
use super::requests::{Committed, ControllerRequest};
use super::rpc::network::{NetworkFactory, Peers};
use super::rpc::server::{ControllerHandler, RpcServer, ServerContext};
use super::rpc::{ControllerCall, KIND_CONTROLLER_REQUEST};

openraft::declare_raft_types!(
    /// openraft's types for the metadata log: entries carry a [`MetadataBatch`], applying one
    /// answers its log index, nodes are `node.id`s with their controller endpoint.
    pub TypeConfig:
        D = MetadataBatch,
        R = u64,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The metadata log's directory inside the data directory.
pub const METADATA_DIR_NAME: &str = "__cluster_metadata";
/// Raft heartbeat interval (and append-entries timeout).
pub const HEARTBEAT_INTERVAL_MS: u64 = 300;
/// Shortest wait without a leader before a follower stands for election.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 1_000;
/// Longest such wait (each node draws its own timeout in between, so elections rarely tie).
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 2_000;
/// A snapshot of the image is taken after this many entries; the log before it is purged.
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 1_000;
/// How long a lone node's start waits to lead its own quorum (it happens at once; this only
/// guards against a hang).
const SINGLE_NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`MetadataLog::leadership`] may take to confirm leadership with a quorum.
const LEADERSHIP_TIMEOUT: Duration = Duration::from_secs(5);
/// Snapshot chunks on the wire: JSON spells bytes as numbers (up to 4 characters each), so a
/// 1 MiB chunk stays well inside the 16 MiB frame cap.
const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Entries per append-entries request (openraft's default is 300; a batch creating a topic
/// with thousands of partitions is large, and a request must fit a 16 MiB frame).
const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// Time to send and install one snapshot chunk.
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;

/// How to run this node's part of the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// `node.id`.
    pub node_id: BrokerId,
    /// `controller.quorum.voters`: id and `host:port` of each voter's controller listener.
    /// Empty: this node alone is the quorum (no network).
    pub voters: Vec<(BrokerId, String)>,
    /// The broker's data directory; the log lives in its `__cluster_metadata/`.
    pub data_dir: PathBuf,
    /// `cluster.id`: peers with another one are refused.
    pub cluster_id: String,
    /// Where to serve peers. `None` with voters: this node's own entry of `voters`.
    /// Required for an observer.
    pub controller_listen: Option<SocketAddr>,
    /// `process.roles=broker`: this node is not a voter; it asks the leader to replicate the
    /// log to it (a Raft learner: it applies the log and votes in nothing). Needs `voters`,
    /// must not be one of them, and needs a `controller_listen` the leader can reach.
    pub observer: bool,
    /// An observer's controller listener as the leader reaches it (`host:port`); `None`: the
    /// `controller_listen` address itself (which must then not be a wildcard address).
    pub controller_advertised: Option<String>,
    /// Entries between snapshots ([`SNAPSHOT_LOGS_SINCE_LAST`]; tests use fewer).
    pub snapshot_logs_since_last: u64,
}

impl QuorumConfig {
    /// A lone node's quorum (no voters, no listener) in `data_dir`.
    pub fn new(node_id: BrokerId, data_dir: PathBuf, cluster_id: String) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters: Vec::new(),
            data_dir,
            cluster_id,
            controller_listen: None,
            observer: false,
            controller_advertised: None,
            snapshot_logs_since_last: SNAPSHOT_LOGS_SINCE_LAST,
        }
    }
}

/// Why the quorum could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The configuration cannot work (named in the message).
    #[error("metadata quorum: {0}")]
    Config(String),
    /// The metadata log's files could not be read or written.
    #[error("metadata log {path}: {error}")]
    Storage {
        /// Its directory.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The controller listener could not be bound.
    #[error("controller listener {addr}: {error}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// openraft refused to start or initialise.
    #[error("metadata quorum: {0}")]
    Raft(String),
}

struct Inner {
    node_id: BrokerId,
    raft: Raft<TypeConfig>,
    image: watch::Receiver<Arc<MetadataImage>>,
    quorum: watch::Receiver<QuorumState>,
    peers: Arc<Peers>,
    controller: Arc<RwLock<Option<ControllerHandler>>>,
    server: Option<RpcServer>,
    metrics_task: JoinHandle<()>,
    join_task: Option<JoinHandle<()>>,
}

/// This node's part of the metadata quorum. Cheap to clone (all clones drive the same node).
#[derive(Debug, Clone)]
pub struct RaftQuorum {
    inner: Arc<Inner>,
}

fn raft_id(id: BrokerId) -> Result<u64, QuorumError> {
    u64::try_from(id).map_err(|_| QuorumError::Config(format!("node id {id} is negative")))
}

fn broker_id(id: u64) -> Option<BrokerId> {
    BrokerId::try_from(id).ok()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(-1)
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftQuorum")
            .field("node_id", &self.node_id)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl RaftQuorum {
    /// Opens the metadata log in `<data_dir>/__cluster_metadata/`, starts the Raft node and —
    /// with voters — the controller-listener server, and initialises a pristine log with the
    /// configured voters (every voter may do so: they all write the same first entry). A lone
    /// node returns once it leads and its image holds everything committed before.
    pub async fn start(config: QuorumConfig) -> Result<RaftQuorum, QuorumError> {
        RaftQuorum::start_with_listener(config, None).await
    }

    /// [`RaftQuorum::start`], serving peers on `listener` (already bound, e.g. with the other
    /// listeners at start-up) instead of binding `controller_listen`. A lone node ignores it.
    pub async fn start_with_listener(
        config: QuorumConfig,
        listener: Option<TcpListener>,
    ) -> Result<RaftQuorum, QuorumError> {
        let id = raft_id(config.node_id)?;
        let mut members = BTreeMap::new();
        for (voter, addr) in &config.voters {
            let node = BasicNode::new(addr.clone());
            if members.insert(raft_id(*voter)?, node).is_some() {
                return Err(QuorumError::Config(format!(
                    "voter id {voter} appears twice"
                )));
            }
        }
        let observer_addr = if config.observer {
            observer_address(&config, &members, id)?
        } else {
            if !members.is_empty() && !members.contains_key(&id) {
                return Err(QuorumError::Config(format!(
                    "node id {} is not among the voters {:?}",
                    config.node_id,
                    members.keys().collect::<Vec<_>>()
                )));
            }
            None
        };
        let alone = members.is_empty();
        if alone {
            members.insert(id, BasicNode::new(""));
        }

        let dir = config.data_dir.join(METADATA_DIR_NAME);
        let (image_tx, image_rx) = watch::channel(Arc::new(MetadataImage::default()));
        let open_dir = dir.clone();
        let (log_store, state_machine) = tokio::task::spawn_blocking(move || {
            let opened = LogStore::open(&open_dir)?;
            if opened.truncated_bytes > 0 {
                tracing::warn!(
                    truncated_bytes = opened.truncated_bytes,
                    "metadata log: a torn tail was cut off at open"
                );
            }
            let state_machine = StateMachine::open(&open_dir, image_tx, opened.store.reserve())?;
            Ok::<_, std::io::Error>((opened.store, state_machine))
        })
        .await
        .map_err(|e| QuorumError::Raft(format!("opening the metadata log: {e}")))?
        .map_err(|error| QuorumError::Storage {
            path: dir.clone(),
            error,
        })?;

        let raft_config = Config {
            cluster_name: config.cluster_id.clone(),
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            heartbeat_interval: HEARTBEAT_INTERVAL_MS,
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            max_in_snapshot_log_to_keep: 0,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            ..Config::default()
        }
        .validate()
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let peers = Arc::new(Peers::new(config.cluster_id.clone(), config.node_id));
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            NetworkFactory::new(Arc::clone(&peers)),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        if initialized {
            // Changing the voters of an existing log is not supported: refuse to start rather
            // than run a node no quorum will ever answer.
            let stored: BTreeSet<u64> = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            let configured: BTreeSet<u64> = members.keys().copied().collect();
            if stored != configured {
                let _ = raft.shutdown().await;
                return Err(QuorumError::Config(format!(
                    "the metadata log in {} has voters {stored:?}, but the configuration names \
                     {configured:?}; changing the voters is not supported",
                    dir.display()
                )));
            }
        }

        let controller = Arc::new(RwLock::new(None));
        let server = if alone {
            None
        } else {
            let addr = match config.controller_listen {
                Some(addr) => addr.to_string(),
                None => members
                    .get(&id)
                    .map(|node| node.addr.clone())
                    .unwrap_or_default(),
            };
            let bound = match listener {
                Some(listener) => Ok(listener),
                None => TcpListener::bind(&addr).await,
            };
            let listener = match bound {
                Ok(listener) => listener,
                Err(error) => {
                    let _ = raft.shutdown().await;
                    return Err(QuorumError::Bind { addr, error });
                }
            };
            let context = Arc::new(ServerContext {
                cluster_id: config.cluster_id.clone(),
                node_id: config.node_id,
                raft: raft.clone(),
                controller: Arc::clone(&controller),
            });
            Some(
                RpcServer::start(listener, context)
                    .map_err(|error| QuorumError::Bind { addr, error })?,
            )
        };

        if !initialized && observer_addr.is_none() {
            match raft.initialize(members.clone()).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(QuorumError::Raft(format!("initialising: {e}"))),
            }
        }

        let (quorum_tx, quorum_rx) = watch::channel(QuorumState::default());
        let metrics_task = tokio::spawn(publish_quorum_state(raft.metrics(), quorum_tx));
        let join_task = observer_addr.map(|addr| {
            tokio::spawn(join_as_observer(
                raft.clone(),
                Arc::clone(&peers),
                members,
                config.node_id,
                addr,
            ))
        });
        let quorum = RaftQuorum {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                raft,
                image: image_rx,
                quorum: quorum_rx,
                peers,
                controller,
                server,
                metrics_task,
                join_task,
            }),
        };
        if alone {
            let ready = tokio::time::timeout(SINGLE_NODE_READY_TIMEOUT, async {
                // Its own election takes one vote write; then it confirms it has applied all.
                let mut metrics = quorum.inner.raft.metrics();
                metrics
                    .wait_for(|m| m.current_leader == Some(id))
                    .await
                    .map_err(|_| ())?;
                drop(metrics);
                match quorum.leadership().await {
                    Leadership::Leader => Ok(()),
                    Leadership::Follower { .. } => Err(()),
                }
            })
            .await;
            if !matches!(ready, Ok(Ok(()))) {
                quorum.shutdown().await;
                return Err(QuorumError::Raft(
                    "a lone node did not become the leader of its own quorum".into(),
                ));
            }
        }
        Ok(quorum)
    }

    /// `node.id`.
    pub fn node_id(&self) -> BrokerId {
        self.inner.node_id
    }

    /// A receiver of every new image (for [`MetadataHandle::new`](super::MetadataHandle::new)).
    pub fn image_receiver(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.inner.image.clone()
    }

    /// A receiver of the quorum's state (leader, term, voters and their progress).
    pub fn quorum_receiver(&self) -> watch::Receiver<QuorumState> {
        self.inner.quorum.clone()
    }

    /// The leader as this node knows it (`None` during an election).
    pub fn leader(&self) -> Option<BrokerId> {
        self.inner
            .raft
            .metrics()
            .borrow()
            .current_leader
            .and_then(broker_id)
    }

    /// Where the controller-listener server listens (`None` for a lone node).
    pub fn controller_addr(&self) -> Option<SocketAddr> {
        self.inner.server.as_ref().map(RpcServer::local_addr)
    }

    /// Installs the handler of controller requests forwarded by peers (the controller
    /// service); until then they are answered `Unavailable` (or `NotController`).
    pub fn set_controller_handler(&self, handler: ControllerHandler) {
        *self
            .inner
            .controller
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// Waits up to `timeout` for a leader to be known; returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<BrokerId> {
        let mut metrics = self.inner.raft.metrics();
        let found = tokio::time::timeout(timeout, metrics.wait_for(|m| m.current_leader.is_some()))
            .await
            .ok()?
            .ok()?
            .current_leader;
        found.and_then(broker_id)
    }

    /// The Raft node (for tests and diagnostics).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// Stops serving peers and stops the Raft node. Proposals fail afterwards.
    pub async fn shutdown(&self) {
        if let Some(server) = &self.inner.server {
            server.shutdown();
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum: raft shutdown");
        }
        self.inner.metrics_task.abort();
        if let Some(join_task) = &self.inner.join_task {
            join_task.abort();
        }
    }

    /// Node `leader`'s controller address as the membership knows it.
    fn address_of(&self, leader: u64) -> Option<String> {
        self.inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }
}

/// An observer's address as the leader reaches it, after checking the observer's config.
fn observer_address(
    config: &QuorumConfig,
    members: &BTreeMap<u64, BasicNode>,
    id: u64,
) -> Result<Option<String>, QuorumError> {
    if members.is_empty() {
        return Err(QuorumError::Config(
            "a broker-only node needs controller.quorum.voters".into(),
        ));
    }
    if members.contains_key(&id) {
        return Err(QuorumError::Config(format!(
            "node id {} is a voter, so it cannot be broker-only",
            config.node_id
        )));
    }
    let listen = config.controller_listen.ok_or_else(|| {
        QuorumError::Config("a broker-only node needs a controller listener".into())
    })?;
    match &config.controller_advertised {
        Some(addr) => Ok(Some(addr.clone())),
        None if listen.ip().is_unspecified() => Err(QuorumError::Config(format!(
            "the controller listener {listen} is a wildcard address: the leader cannot reach it"
        ))),
        None => Ok(Some(listen.to_string())),
    }
}

/// How long an observer waits between rounds of asking the voters to add it.
const JOIN_RETRY: Duration = Duration::from_secs(1);

/// Asks the voters (the leader first, once known) to add this node as an observer, until the
/// membership this node has received lists it at `addr`.
async fn join_as_observer(
    raft: Raft<TypeConfig>,
    peers: Arc<Peers>,
    voters: BTreeMap<u64, BasicNode>,
    node_id: BrokerId,
    addr: String,
) {
    let request = super::rpc::JoinAsObserver {
        node_id,
        addr: addr.clone(),
    };
    let Ok(id) = u64::try_from(node_id) else {
        return;
    };
    loop {
        let joined = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some_and(|node| node.addr == addr);
        if joined {
            tracing::info!(node_id, "metadata quorum: joined as an observer");
            return;
        }
        let mut targets: Vec<u64> = voters.keys().copied().collect();
        if let Some(leader) = raft.metrics().borrow().current_leader {
            targets.retain(|t| *t != leader);
            targets.insert(0, leader);
        }
        for target in targets {
            let Some(node) = voters.get(&target) else {
                continue;
            };
            let answer = peers
                .client(target, &node.addr)
                .call::<_, Result<(), SubmitError>>(
                    super::rpc::KIND_JOIN_AS_OBSERVER,
                    &request,
                    LEADERSHIP_TIMEOUT,
                )
                .await;
            match answer {
                Ok(Ok(())) => break,
                Ok(Err(error)) => tracing::debug!(target, %error, "observer join refused"),
                Err(error) => tracing::debug!(target, %error, "observer join failed"),
            }
        }
        // Accepted or not, the membership arrives with the log; look again after a pause.
        tokio::time::sleep(JOIN_RETRY).await;
    }
}

fn submit_error<E: std::fmt::Display>(error: RaftError<u64, E>) -> SubmitError {
    match error {
        RaftError::Fatal(Fatal::Stopped) => SubmitError::ShuttingDown,
        other => SubmitError::Unavailable(other.to_string()),
    }
}

impl MetadataLog for RaftQuorum {
    async fn propose(&self, batch: MetadataBatch) -> Result<u64, SubmitError> {
        let written = tokio::time::timeout(SUBMIT_TIMEOUT, self.inner.raft.client_write(batch))
            .await
            .map_err(|_| {
                SubmitError::Unavailable("the metadata log did not commit in time".into())
            })?;
        match written {
            Ok(response) => Ok(response.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(SubmitError::NotController {
                    leader: forward.leader_id.and_then(broker_id),
                })
            }
            Err(e) => Err(submit_error(e)),
        }
    }

    async fn leadership(&self) -> Leadership {
        // Stopped on a fatal error (logged once by the quorum-state publisher): no leader
        // here, and no call into openraft, which would log an error for every check.
        if self.inner.raft.metrics().borrow().running_state.is_err() {
            return Leadership::Follower { leader: None };
        }
        let checked =
            tokio::time::timeout(LEADERSHIP_TIMEOUT, self.inner.raft.ensure_linearizable()).await;
        match checked {
            // Everything committed up to this term's first entry is applied to the image. The
            // controller decides on the image, so it must also hold the entries this leader
            // appended but has not committed yet (a leader that restarted with a tail of its
            // own term, e.g. a controlled shutdown no quorum heard): deciding without them
            // would decide on a state that they then overwrite.
            Ok(Ok(_)) => match self.wait_for_own_log_applied().await {
                true => Leadership::Leader,
                false => Leadership::Follower { leader: None },
            },
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                Leadership::Follower {
                    leader: forward.leader_id.and_then(broker_id),
                }
            }
            Ok(Err(_)) | Err(_) => Leadership::Follower { leader: None },
        }
    }

    fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.inner.image.borrow())
    }
}

impl RaftQuorum {
    /// Waits (up to `LEADERSHIP_TIMEOUT`) until the image has applied every entry in this
    /// node's log as it stands now; `false` on timeout or if this node stopped leading.
    async fn wait_for_own_log_applied(&self) -> bool {
        let mut metrics = self.inner.raft.metrics();
        let target = metrics.borrow().last_log_index;
        let caught_up = tokio::time::timeout(
            LEADERSHIP_TIMEOUT,
            metrics.wait_for(|m| {
                m.state != openraft::ServerState::Leader
                    || m.last_applied.map(|id| id.index) >= target
            }),
        )
        .await;
        matches!(caught_up, Ok(Ok(m)) if m.state == openraft::ServerState::Leader)
    }
}

impl Forwarder for RaftQuorum {
    async fn forward(
        &self,
        leader: BrokerId,
        request_id: Uuid,
        request: ControllerRequest,
    ) -> Result<Committed, SubmitError> {
        if leader == self.inner.node_id {
            let handler = self
                .inner
                .controller
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return match handler {
                Some(handler) => handler(request_id, request).await,
                None => Err(SubmitError::Unavailable(
                    "the controller is not running yet".into(),
                )),
            };
        }
        let id = u64::try_from(leader)
            .map_err(|_| SubmitError::Unavailable(format!("no node {leader}")))?;
        let addr = self
            .address_of(id)
            .ok_or_else(|| SubmitError::Unavailable(format!("node {leader} is not a voter")))?;
        let client = self.inner.peers.client(id, &addr);
        let call = ControllerCall {
            request_id,
            request,
        };
        client
            .call::<_, Result<Committed, SubmitError>>(
                KIND_CONTROLLER_REQUEST,
                &call,
                SUBMIT_TIMEOUT,
            )
            .await
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?
    }
}

/// What the quorum-state publisher remembers between metrics updates (leader only): when each
/// follower's matched index last moved, and when it last matched the leader's log end.
#[derive(Debug, Default)]
struct ReplicaTimes {
    matched: HashMap<u64, u64>,
    last_fetch_ms: HashMap<u64, i64>,
    last_caught_up_ms: HashMap<u64, i64>,
}

/// Publishes a [`QuorumState`] for every change of openraft's metrics, until Raft stops.
async fn publish_quorum_state(
    mut metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    quorum: watch::Sender<QuorumState>,
) {
    let mut times = ReplicaTimes::default();
    let mut stopped_reported = false;
    loop {
        let state = {
            let current = metrics.borrow_and_update();
            if let Err(fatal) = &current.running_state {
                // A storage error (or a panic) stops openraft for good; say so loudly, once.
                if !stopped_reported && !matches!(fatal, Fatal::Stopped) {
                    tracing::error!(
                        error = %fatal,
                        "the metadata quorum stopped on a fatal error: this node no longer \
                         takes part in the metadata log (admin requests time out) until it \
                         is restarted"
                    );
                }
                stopped_reported = true;
            }
            quorum_state(&current, &mut times)
        };
        quorum.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

fn quorum_state(metrics: &RaftMetrics<u64, BasicNode>, times: &mut ReplicaTimes) -> QuorumState {
    let now = now_ms();
    let own_end = metrics.last_log_index;
    let leading = metrics.current_leader == Some(metrics.id);
    let replica = |id: u64, times: &mut ReplicaTimes| -> QuorumReplica {
        let matched = if id == metrics.id {
            own_end
        } else if leading {
            metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|log_id| log_id.index)
        } else {
            None
        };
        if leading {
            if let Some(matched) = matched {
                if times.matched.insert(id, matched) != Some(matched) || id == metrics.id {
                    times.last_fetch_ms.insert(id, now);
                }
                if Some(matched) >= own_end {
                    times.last_caught_up_ms.insert(id, now);
                }
            }
        }
        QuorumReplica {
            id: broker_id(id).unwrap_or(-1),
            log_end_offset: matched.and_then(|m| i64::try_from(m).ok()).unwrap_or(-1),
            last_fetch_timestamp: if leading {
                times.last_fetch_ms.get(&id).copied().unwrap_or(-1)
            } else {
                -1
            },
            last_caught_up_timestamp: if leading {
                times.last_caught_up_ms.get(&id).copied().unwrap_or(-1)
            } else {
                -1
            },
        }
    };
    let membership = metrics.membership_config.membership();
    let voter_ids: BTreeSet<u64> = membership.voter_ids().collect();
    let voters = voter_ids.iter().map(|id| replica(*id, times)).collect();
    let observers = membership
        .learner_ids()
        .collect::<Vec<_>>()
        .into_iter()
        .map(|id| replica(id, times))
        .collect();
    QuorumState {
        leader_id: metrics.current_leader.and_then(broker_id),
        leader_epoch: i64::try_from(metrics.current_term).unwrap_or(i64::MAX),
        // Applied never passes committed, and follows it closely: openraft 0.9's metrics do
        // not carry the committed index itself.
        high_watermark: metrics
            .last_applied
            .and_then(|l| i64::try_from(l.index).ok())
            .unwrap_or(-1),
        voters,
        observers,
    }
}
