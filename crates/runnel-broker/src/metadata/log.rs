//! [`MetadataLog`]: the replicated log the controller writes its decisions to. The Raft quorum
//! (`metadata::raft`) is the real one; [`InMemoryLog`](crate::controller::InMemoryLog)-style
//! stand-ins serve unit tests. The controller service (`controller::service`) is written
//! against this trait only.

use std::future::Future;
use std::sync::Arc;

use super::handle::SubmitError;
use super::image::MetadataImage;
use super::records::{BrokerId, MetadataBatch};

/// Who leads the metadata log, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// This node leads, and its image holds everything committed before its term: it may
    /// decide on this image.
    Leader,
    /// Another node leads (if known).
    Follower {
        /// The leader, if known.
        leader: Option<BrokerId>,
    },
}

/// The metadata log as the controller uses it.
pub trait MetadataLog: Send + Sync + 'static {
    /// Appends `batch`; resolves once it is committed and applied to this node's image, with
    /// its log index. Fails with [`SubmitError::Unavailable`] if this node lost leadership.
    fn propose(
        &self,
        batch: MetadataBatch,
    ) -> impl Future<Output = Result<u64, SubmitError>> + Send;

    /// Whether this node leads now; as leader, resolves only once everything committed in
    /// earlier terms is applied to the image.
    fn leadership(&self) -> impl Future<Output = Leadership> + Send;

    /// This node's current image.
    fn image(&self) -> Arc<MetadataImage>;
}

/// Carries a request to the active controller on another node (the node-to-node transport,
/// `metadata::rpc`), for a node that does not lead.
pub trait Forwarder: Send + Sync + 'static {
    /// Sends `request` (with its id, kept across retries) to node `leader`'s controller and
    /// waits for its answer. A peer that does not lead answers
    /// [`SubmitError::NotController`] with the leader it knows.
    fn forward(
        &self,
        leader: BrokerId,
        request_id: uuid::Uuid,
        request: super::requests::ControllerRequest,
    ) -> impl Future<Output = Result<super::requests::Committed, SubmitError>> + Send;
}
