//! The control plane's data: the records of the metadata log, the image every node applies
//! them to, the requests brokers make of the active controller, and the handle handlers read
//! it all through. Design: docs/cluster.md.

pub mod handle;
pub mod image;
pub mod log;
pub mod raft;
pub mod records;
pub mod requests;
pub mod rpc;

pub use handle::{MetadataHandle, QuorumState, Submission, SubmitError};
pub use image::{BrokerRegistration, MetadataImage, TopicImage};
pub use log::{Forwarder, Leadership, MetadataLog};
pub use raft::{QuorumConfig, QuorumError, RaftQuorum};
pub use records::{BrokerId, Endpoint, MetadataBatch, MetadataRecord, PartitionState, NO_LEADER};
pub use requests::{Committed, ControllerReply, ControllerRequest};
pub use rpc::server::{BoxFuture, ControllerHandler};
