//! openraft's network over [`PeerClient`]s: one client per peer, shared by every openraft
//! network instance for that peer (replication stream, elections) and by request forwarding.
//! A peer that cannot be reached (or refuses us) is `Unreachable` (openraft backs off); any
//! other failure is a `NetworkError`; an error of the remote Raft node is a `RemoteError`; an
//! append-entries request too large for a frame is `PayloadTooLarge` (openraft sends fewer
//! entries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::{CallError, PeerClient};
use super::{KIND_APPEND_ENTRIES, KIND_INSTALL_SNAPSHOT, KIND_VOTE};
use crate::metadata::raft::TypeConfig;
use crate::metadata::records::BrokerId;

type NodeId = u64;

/// The clients of this node's peers, by node id; a peer's client is replaced if its address
/// changes.
#[derive(Debug)]
pub struct Peers {
    cluster_id: String,
    from: BrokerId,
    clients: Mutex<HashMap<NodeId, Arc<PeerClient>>>,
}

impl Peers {
    /// No clients yet; they send as node `from` of `cluster_id`.
    pub fn new(cluster_id: String, from: BrokerId) -> Peers {
        Peers {
            cluster_id,
            from,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client of node `id` at `addr`.
    pub fn client(&self, id: NodeId, addr: &str) -> Arc<PeerClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        match clients.get(&id) {
            Some(client) if client.addr() == addr => Arc::clone(client),
            _ => {
                let client = Arc::new(PeerClient::new(
                    addr.to_string(),
                    self.cluster_id.clone(),
                    self.from,
                ));
                clients.insert(id, Arc::clone(&client));
                client
            }
        }
    }
}

/// openraft's network factory.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    peers: Arc<Peers>,
}

impl NetworkFactory {
    /// A factory over `peers`.
    pub fn new(peers: Arc<Peers>) -> NetworkFactory {
        NetworkFactory { peers }
    }
}

/// openraft's network to one peer.
#[derive(Debug)]
pub struct Network {
    target: NodeId,
    client: Arc<PeerClient>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            target,
            client: self.peers.client(target, &node.addr),
        }
    }
}

impl Network {
    async fn call<Req, Resp, E>(
        &self,
        kind: i16,
        request: &Req,
        timeout: Duration,
        entries_hint: u64,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .client
            .call(kind, request, timeout)
            .await
            .map_err(|e| match &e {
                CallError::Refused { .. } => {
                    tracing::error!(peer = self.target, error = %e, "metadata quorum peer refuses this node");
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                CallError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::TooLarge(_) => RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(entries_hint).with_source_error(&e),
                ),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // Too large for a frame: openraft retries with half the entries (down to one).
        let hint = u64::try_from(rpc.entries.len() / 2).unwrap_or(1).max(1);
        self.call(KIND_APPEND_ENTRIES, &rpc, option.hard_ttl(), hint)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(KIND_INSTALL_SNAPSHOT, &rpc, option.hard_ttl(), 1)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(KIND_VOTE, &rpc, option.hard_ttl(), 1).await
    }
}
