//! The Runnel broker: a TCP server speaking the Kafka protocol, one handler per Kafka API,
//! a topic registry over `runnel-storage` partition logs.
//!
//! `main.rs` only parses the command line; everything else starts from [`run`].

pub mod broker;
pub mod cli;
pub mod config;
pub mod control_plane;
pub mod controller;
pub mod error;
pub mod flusher;
pub mod group;
pub mod handlers;
pub mod log_dirs;
pub mod log_manager;
pub mod meta_properties;
pub mod metadata;
pub mod partition_dir;
pub mod producer_ids;
pub mod replication;
pub mod server;
pub mod topic_config;
pub mod topics;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use error::BrokerError;
pub use server::run;
