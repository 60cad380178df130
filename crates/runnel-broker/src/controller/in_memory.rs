//! [`InMemoryLog`]: a metadata log of one node, in memory: always the leader, a batch commits
//! the moment it is proposed; nothing survives a restart. For unit tests of the controller and
//! of code above it (brokers run the Raft quorum, `metadata::raft`, even alone). [`NoForwarder`]: the
//! forwarder of a node that is the only controller. [`start_in_memory`] wires them up.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::decide::ControllerSettings;
use super::service::ControllerService;
use crate::metadata::handle::{QuorumReplica, QuorumState};
use crate::metadata::records::{BrokerId, MetadataBatch};
use crate::metadata::requests::{Committed, ControllerRequest};
use crate::metadata::{
    Forwarder, Leadership, MetadataHandle, MetadataImage, MetadataLog, SubmitError,
};

/// Submissions waiting for the controller task.
const SUBMISSIONS_QUEUED_MAX: usize = 1024;

/// A one-node metadata log in memory: always leader; `propose` applies at once.
#[derive(Debug)]
pub struct InMemoryLog {
    node_id: BrokerId,
    image: watch::Sender<Arc<MetadataImage>>,
    quorum: watch::Sender<QuorumState>,
}

impl InMemoryLog {
    /// A log of node `node_id` starting from `image`.
    pub fn new(node_id: BrokerId, image: MetadataImage) -> InMemoryLog {
        let quorum = quorum_state(node_id, image.applied_index);
        InMemoryLog {
            node_id,
            image: watch::Sender::new(Arc::new(image)),
            quorum: watch::Sender::new(quorum),
        }
    }

    /// Every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.subscribe()
    }

    /// The quorum: this node alone, leading.
    pub fn subscribe_quorum(&self) -> watch::Receiver<QuorumState> {
        self.quorum.subscribe()
    }
}

fn quorum_state(node_id: BrokerId, applied_index: u64) -> QuorumState {
    let index = i64::try_from(applied_index).unwrap_or(i64::MAX);
    QuorumState {
        leader_id: Some(node_id),
        leader_epoch: 1,
        high_watermark: index,
        voters: vec![QuorumReplica {
            id: node_id,
            log_end_offset: index,
            last_fetch_timestamp: -1,
            last_caught_up_timestamp: -1,
        }],
        observers: Vec::new(),
    }
}

impl MetadataLog for InMemoryLog {
    async fn propose(&self, batch: MetadataBatch) -> Result<u64, SubmitError> {
        let mut index = 0;
        self.image.send_modify(|current| {
            index = current.applied_index + 1;
            let mut next = MetadataImage::clone(current);
            next.apply(index, &batch);
            *current = Arc::new(next);
        });
        let node_id = self.node_id;
        self.quorum
            .send_modify(|quorum| *quorum = quorum_state(node_id, index));
        Ok(index)
    }

    async fn leadership(&self) -> Leadership {
        Leadership::Leader
    }

    fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.borrow())
    }
}

/// The forwarder of a node with no other controller to forward to: always `Unavailable`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoForwarder;

impl Forwarder for NoForwarder {
    async fn forward(
        &self,
        leader: BrokerId,
        _request_id: Uuid,
        _request: ControllerRequest,
    ) -> Result<Committed, SubmitError> {
        Err(SubmitError::Unavailable(format!(
            "no route to controller {leader}: this node is the only controller"
        )))
    }
}

/// The in-memory controller service of a one-node cluster.
pub type InMemoryController = ControllerService<InMemoryLog, NoForwarder>;

/// A one-node control plane in memory, from an empty image: see [`start_in_memory_from`].
pub fn start_in_memory(
    node_id: BrokerId,
    settings: ControllerSettings,
) -> (MetadataHandle, Arc<InMemoryController>) {
    start_in_memory_from(node_id, settings, MetadataImage::default())
}

/// A one-node control plane in memory starting from `image`: an [`InMemoryLog`], its
/// controller service serving the returned handle's submissions, and its fencing task. The
/// tasks end once the handle (every clone) and the service are dropped. Must be called inside
/// a tokio runtime.
pub fn start_in_memory_from(
    node_id: BrokerId,
    settings: ControllerSettings,
    image: MetadataImage,
) -> (MetadataHandle, Arc<InMemoryController>) {
    let log = Arc::new(InMemoryLog::new(node_id, image));
    let (submit, submissions) = mpsc::channel(SUBMISSIONS_QUEUED_MAX);
    let handle = MetadataHandle::new(log.subscribe(), submit, log.subscribe_quorum());
    let service = Arc::new(ControllerService::new(node_id, log, NoForwarder, settings));
    drop(tokio::spawn(
        Arc::clone(&service).run_submissions(submissions),
    ));
    drop(service.spawn_fencing());
    (handle, service)
}
