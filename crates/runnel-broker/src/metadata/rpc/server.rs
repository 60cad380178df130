//! The receiving side of node-to-node traffic: accepts peers on the controller listener and
//! answers their requests — Raft messages with the local Raft node, forwarded controller
//! requests with the handler the controller service installs. Requests of one connection are
//! answered concurrently (bounded), each answer tagged with its correlation id.
//!
//! A peer is disconnected, and the server goes on serving the others, when it sends a frame
//! whose size is out of bounds, an unknown kind, a body that does not decode, or another
//! cluster id (that one gets a [`Reply::Refused`] first).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::Raft;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{
    encode_response, read_request, write_frame, ControllerCall, Envelope, JoinAsObserver, Reply,
    RequestFrame, Sender, KIND_APPEND_ENTRIES, KIND_CONTROLLER_REQUEST, KIND_INSTALL_SNAPSHOT,
    KIND_JOIN_AS_OBSERVER, KIND_VOTE,
};
use crate::metadata::handle::SubmitError;
use crate::metadata::raft::TypeConfig;
use crate::metadata::records::BrokerId;
use crate::metadata::requests::{Committed, ControllerRequest};

/// Peers connected at once; more wait in the accept queue.
const CONNECTIONS_MAX: usize = 256;
/// Requests of one connection answered at once; the next waits for a slot.
const IN_FLIGHT_PER_CONNECTION_MAX: usize = 64;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Carries out a controller request forwarded by a peer (installed by the controller
/// service): the request's id and the request, answered once committed.
pub type ControllerHandler =
    Arc<dyn Fn(Uuid, ControllerRequest) -> BoxFuture<Result<Committed, SubmitError>> + Send + Sync>;

/// What the server answers with.
pub(crate) struct ServerContext {
    pub(crate) cluster_id: String,
    pub(crate) node_id: BrokerId,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) controller: Arc<RwLock<Option<ControllerHandler>>>,
}

/// A running controller-listener server. Dropping it does not stop it; [`RpcServer::shutdown`]
/// does.
#[derive(Debug)]
pub struct RpcServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RpcServer {
    /// Serves peers on `listener`.
    pub(crate) fn start(
        listener: TcpListener,
        context: Arc<ServerContext>,
    ) -> std::io::Result<RpcServer> {
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, context));
        Ok(RpcServer { local_addr, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, context: Arc<ServerContext>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    // Connection tasks live in the set: aborting the accept loop aborts them all.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let context = Arc::clone(&context);
                    connections.spawn(async move {
                        serve_connection(stream, peer, context).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "controller listener: accept failed");
                    drop(slot);
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => drop(slot),
        }
    }
}

/// A request decoded and checked, ready to answer.
enum Incoming {
    Vote(VoteRequest<u64>),
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Controller(ControllerCall),
    Join(JoinAsObserver),
}

/// Why a peer is disconnected.
enum Disconnect {
    /// Garbage: no answer.
    Garbage(String),
    /// Another cluster: answered with this refusal first.
    Refused(String),
}

fn decode(frame: &RequestFrame, cluster_id: &str) -> Result<Incoming, Disconnect> {
    fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Disconnect> {
        serde_json::from_slice::<Envelope<T>>(bytes)
            .map(|e| e.body)
            .map_err(|e| Disconnect::Garbage(format!("undecodable body: {e}")))
    }
    let sender: Sender = serde_json::from_slice(&frame.body)
        .map_err(|e| Disconnect::Garbage(format!("undecodable envelope: {e}")))?;
    if sender.cluster_id != cluster_id {
        return Err(Disconnect::Refused(format!(
            "node {} belongs to cluster {:?}, this node to cluster {:?}",
            sender.from, sender.cluster_id, cluster_id
        )));
    }
    match frame.kind {
        KIND_VOTE => body(&frame.body).map(Incoming::Vote),
        KIND_APPEND_ENTRIES => body(&frame.body).map(Incoming::AppendEntries),
        KIND_INSTALL_SNAPSHOT => body(&frame.body).map(Incoming::InstallSnapshot),
        KIND_CONTROLLER_REQUEST => body(&frame.body).map(Incoming::Controller),
        KIND_JOIN_AS_OBSERVER => body(&frame.body).map(Incoming::Join),
        kind => Err(Disconnect::Garbage(format!("unknown kind {kind}"))),
    }
}

/// Largest metadata snapshot a peer may send: the image of a very large cluster (a million
/// partitions is ~100 MB of JSON) with room to spare.
const SNAPSHOT_BYTES_MAX: u64 = 512 * 1024 * 1024;

fn reply_bytes<T: Serialize>(reply: &Reply<T>) -> Vec<u8> {
    serde_json::to_vec(reply).unwrap_or_else(|e| {
        // Our own types always serialise; should one not, the peer gets a refusal, not a hang.
        serde_json::to_vec(&Reply::<()>::Refused(format!("unencodable answer: {e}")))
            .unwrap_or_default()
    })
}

async fn answer(incoming: Incoming, context: &ServerContext) -> Vec<u8> {
    match incoming {
        Incoming::Vote(request) => reply_bytes(&Reply::Ok(context.raft.vote(request).await)),
        Incoming::AppendEntries(request) => {
            reply_bytes(&Reply::Ok(context.raft.append_entries(request).await))
        }
        Incoming::InstallSnapshot(request) => {
            // openraft writes each chunk at the offset the sender names, into memory: an
            // offset far beyond any snapshot would make it allocate without bound.
            if request.offset > SNAPSHOT_BYTES_MAX {
                return reply_bytes(&Reply::<()>::Refused(format!(
                    "snapshot chunk at offset {} is beyond the largest snapshot ({SNAPSHOT_BYTES_MAX} bytes)",
                    request.offset
                )));
            }
            reply_bytes(&Reply::Ok(context.raft.install_snapshot(request).await))
        }
        Incoming::Controller(call) => {
            let handler = context
                .controller
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            // A node that knows it does not lead says so (with the leader it knows) without
            // troubling its controller; one that believes it leads lets the controller decide
            // (which confirms leadership with a quorum before it acts).
            let leader = context.raft.current_leader().await;
            let leader = leader.and_then(|l| BrokerId::try_from(l).ok());
            let result = match (handler, leader) {
                (_, leader) if leader != Some(context.node_id) => {
                    Err(SubmitError::NotController { leader })
                }
                (Some(handler), _) => handler(call.request_id, call.request).await,
                (None, _) => Err(SubmitError::Unavailable(
                    "the controller is not running yet".into(),
                )),
            };
            reply_bytes(&Reply::Ok(result))
        }
        Incoming::Join(join) => reply_bytes(&Reply::Ok(add_observer(join, context).await)),
    }
}

/// Adds a broker-only node as a Raft learner (an observer: it receives the log, votes in
/// nothing), if this node leads and the node is not a voter.
async fn add_observer(join: JoinAsObserver, context: &ServerContext) -> Result<(), SubmitError> {
    let id = u64::try_from(join.node_id)
        .map_err(|_| SubmitError::Unavailable(format!("bad node id {}", join.node_id)))?;
    let (is_voter, known) = {
        let metrics = context.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        (
            membership.voter_ids().any(|v| v == id),
            membership
                .get_node(&id)
                .is_some_and(|node| node.addr == join.addr),
        )
    };
    if is_voter {
        return Err(SubmitError::Unavailable(format!(
            "node {} is a voter, not an observer",
            join.node_id
        )));
    }
    if known {
        return Ok(());
    }
    match context
        .raft
        .add_learner(id, openraft::BasicNode::new(join.addr.clone()), false)
        .await
    {
        Ok(_) => {
            tracing::info!(node = join.node_id, addr = %join.addr, "metadata quorum: observer added");
            Ok(())
        }
        Err(openraft::error::RaftError::APIError(
            openraft::error::ClientWriteError::ForwardToLeader(forward),
        )) => Err(SubmitError::NotController {
            leader: forward.leader_id.and_then(|l| BrokerId::try_from(l).ok()),
        }),
        Err(e) => Err(SubmitError::Unavailable(e.to_string())),
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, context: Arc<ServerContext>) {
    let (mut reader, mut writer) = stream.into_split();
    let (responses, mut outgoing) = mpsc::channel::<Vec<u8>>(IN_FLIGHT_PER_CONNECTION_MAX);
    let mut writer_task = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if let Err(error) = write_frame(&mut writer, &frame).await {
                tracing::debug!(%peer, %error, "controller listener: write failed");
                return;
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION_MAX));
    loop {
        let frame = tokio::select! {
            frame = read_request(&mut reader) => frame,
            // The writer failed: the connection is of no use.
            _ = &mut writer_task => return,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(super::FrameError::Closed) => break,
            Err(error) => {
                tracing::warn!(%peer, %error, "controller listener: bad frame; disconnecting");
                break;
            }
        };
        let incoming = match decode(&frame, &context.cluster_id) {
            Ok(incoming) => incoming,
            Err(Disconnect::Garbage(why)) => {
                tracing::warn!(%peer, kind = frame.kind, %why, "controller listener: disconnecting");
                break;
            }
            Err(Disconnect::Refused(why)) => {
                tracing::error!(%peer, %why, "controller listener: peer of another cluster refused");
                let body = reply_bytes(&Reply::<()>::Refused(why));
                if let Some(response) = encode_response(frame.correlation_id, &body) {
                    let _ = responses.send(response).await;
                }
                break;
            }
        };
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let context = Arc::clone(&context);
        let responses = responses.clone();
        let correlation_id = frame.correlation_id;
        tokio::spawn(async move {
            let body = answer(incoming, &context).await;
            match encode_response(correlation_id, &body) {
                Some(response) => {
                    let _ = responses.send(response).await;
                }
                None => tracing::warn!(%peer, "controller listener: answer larger than a frame"),
            }
            drop(permit);
        });
    }
    // Answers still being worked on go out; then the writer ends and the socket closes.
    drop(responses);
    drop(reader);
    let _ = writer_task.await;
}
