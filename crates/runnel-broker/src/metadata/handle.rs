//! [`MetadataHandle`]: what the rest of the broker sees of the control plane — the current
//! image, a way to submit requests to the active controller, and the quorum's state. The
//! quorum driver (`metadata::quorum`) serves the other end of these channels; tests can serve
//! them with anything that follows the same contract.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::image::MetadataImage;
use super::records::BrokerId;
use super::requests::{Committed, ControllerRequest};

/// Why a submitted request got no answer from the controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SubmitError {
    /// No controller is known (an election is running) or it could not be reached in time;
    /// clients map this to a retriable error (REQUEST_TIMED_OUT / NOT_CONTROLLER).
    #[error("no active controller answered in time: {0}")]
    Unavailable(String),
    /// The node asked does not lead the metadata quorum; it names the leader it knows.
    #[error("not the active controller (leader: {leader:?})")]
    NotController {
        /// The leader as the asked node knows it.
        leader: Option<BrokerId>,
    },
    /// The node is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// One request on its way to the controller.
#[derive(Debug)]
pub struct Submission {
    /// Unique per request (retries keep it), so a commit is never applied twice.
    pub request_id: Uuid,
    /// What to do.
    pub request: ControllerRequest,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Committed, SubmitError>>,
}

/// One voter (or observer) of the metadata quorum, as DescribeQuorum reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QuorumReplica {
    /// Node id.
    pub id: BrokerId,
    /// Last log index known to be on it (-1 unknown).
    pub log_end_offset: i64,
    /// Wall-clock ms of the leader's last contact with it (-1 unknown).
    pub last_fetch_timestamp: i64,
    /// Wall-clock ms at which it was last known caught up (-1 unknown).
    pub last_caught_up_timestamp: i64,
}

/// The metadata quorum as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QuorumState {
    /// The Raft leader = the active controller, if known.
    pub leader_id: Option<BrokerId>,
    /// The Raft term (KRaft's leader epoch).
    pub leader_epoch: i64,
    /// The committed log index (KRaft's high watermark).
    pub high_watermark: i64,
    /// Voters.
    pub voters: Vec<QuorumReplica>,
    /// Observers (non-voting nodes).
    pub observers: Vec<QuorumReplica>,
}

/// How long a submission waits for the controller, and then for this node's image to catch up
/// with the commit, before it fails with [`SubmitError::Unavailable`].
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker's view of the control plane. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MetadataHandle {
    image: watch::Receiver<Arc<MetadataImage>>,
    submissions: mpsc::Sender<Submission>,
    quorum: watch::Receiver<QuorumState>,
}

impl MetadataHandle {
    /// A handle over the driver's channels.
    pub fn new(
        image: watch::Receiver<Arc<MetadataImage>>,
        submissions: mpsc::Sender<Submission>,
        quorum: watch::Receiver<QuorumState>,
    ) -> MetadataHandle {
        MetadataHandle {
            image,
            submissions,
            quorum,
        }
    }

    /// The current image (cheap: an `Arc`).
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.borrow())
    }

    /// A receiver that sees every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// The quorum as this node sees it.
    pub fn quorum(&self) -> QuorumState {
        self.quorum.borrow().clone()
    }

    /// The active controller, if known.
    pub fn controller_id(&self) -> Option<BrokerId> {
        self.quorum.borrow().leader_id
    }

    /// Has the controller carry out `request`; answers once it is committed and this node's
    /// image has applied it (so a Metadata request that follows sees the change).
    pub async fn submit(&self, request: ControllerRequest) -> Result<Committed, SubmitError> {
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            request_id: Uuid::new_v4(),
            request,
            reply,
        };
        let committed = tokio::time::timeout(SUBMIT_TIMEOUT, async {
            self.submissions
                .send(submission)
                .await
                .map_err(|_| SubmitError::ShuttingDown)?;
            answer.await.map_err(|_| SubmitError::ShuttingDown)?
        })
        .await
        .map_err(|_| SubmitError::Unavailable("timed out".into()))??;
        self.wait_for_index(committed.index).await?;
        Ok(committed)
    }

    /// Waits until this node's image has applied log index `index`.
    pub async fn wait_for_index(&self, index: u64) -> Result<(), SubmitError> {
        let mut image = self.image.clone();
        tokio::time::timeout(SUBMIT_TIMEOUT, image.wait_for(|i| i.applied_index >= index))
            .await
            .map_err(|_| SubmitError::Unavailable("the metadata image did not catch up".into()))?
            .map_err(|_| SubmitError::ShuttingDown)?;
        Ok(())
    }
}
