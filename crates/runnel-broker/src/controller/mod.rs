//! The active controller's decisions: pure functions from the metadata image (and a request, or
//! the clock) to metadata records and a reply. No I/O here: the service that feeds requests in
//! and proposes the records lives in `service.rs`. Design: docs/cluster.md, "The controller".
//!
//! - `decide.rs`: [`Controller::decide`], one request → records + reply.
//! - `placement.rs`, `elections.rs`: replica placement; fencing and leader elections (clean,
//!   unclean, preferred).
//! - `alter_partition.rs`: a leader's ISR change (AlterPartition).
//! - `elect_leaders.rs`: ElectLeaders, and the preferred-leader check of
//!   `auto.leader.rebalance.enable`.
//! - `reassign.rs`: AlterPartitionReassignments, and completing a reassignment once every
//!   target replica is in sync.
//! - `heartbeats.rs`: [`HeartbeatTracker`], which sessions expired.
//! - `service.rs`: [`ControllerService`], serialises decisions, proposes them to the
//!   [`MetadataLog`](crate::metadata::MetadataLog), forwards to the leader, fences.
//! - `in_memory.rs`: [`InMemoryLog`], a one-node log in memory, for unit tests.
//! - `lifecycle.rs`: [`BrokerLifecycle`], every broker's registration and heartbeats.

pub mod alter_partition;
pub mod decide;
pub mod elect_leaders;
pub mod elections;
pub mod heartbeats;
pub mod in_memory;
pub mod lifecycle;
pub mod placement;
pub mod reassign;
pub mod service;

pub use decide::{Controller, ControllerSettings, Decision, PRODUCER_ID_BLOCK_SIZE};
pub use elections::fence;
pub use heartbeats::HeartbeatTracker;
pub use in_memory::{
    start_in_memory, start_in_memory_from, InMemoryController, InMemoryLog, NoForwarder,
};
pub use lifecycle::BrokerLifecycle;
pub use service::ControllerService;
