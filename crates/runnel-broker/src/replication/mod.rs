//! Partition data replication (docs/replication.md): Kafka's ISR protocol. The leader's side
//! (follower progress, high watermark, ISR proposals, waiting produces) and the follower's side
//! (one fetcher per source broker) meet here.

pub mod manager;
pub mod state;

#[cfg(test)]
mod sim;

use std::sync::Arc;

use uuid::Uuid;

pub mod client;
pub mod fetcher;

use crate::metadata::records::BrokerId;
use crate::topics::Partition;

/// A partition this node follows, as the metadata image names it: the local replica and the
/// leader to copy it from. The replica manager hands the full set to the fetchers at every image
/// change; a partition missing from the set is no longer fetched.
#[derive(Debug, Clone)]
pub struct FollowedPartition {
    /// Topic name.
    pub topic: String,
    /// Topic id (Fetch v13+ names topics by id).
    pub topic_id: Uuid,
    /// The local replica.
    pub partition: Arc<Partition>,
    /// The broker leading it.
    pub leader: BrokerId,
    /// The leader epoch the image names (sent as `current_leader_epoch`).
    pub leader_epoch: i32,
}
