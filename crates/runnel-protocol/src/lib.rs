//! Runnel's Kafka wire codec: frame splitting, request/response encoding over the
//! `kafka-protocol` crate, and validation of v2 record batches (CRC32C, lengths, record counts,
//! capped decompression).
//!
//! This crate does no I/O and knows nothing of storage or of the broker: it turns bytes into
//! typed requests and typed responses into bytes, and it judges whether a record batch is sound.

pub mod batch;
pub mod batch_builder;
pub mod client;
pub mod compression;
mod error;
pub mod frame;
pub mod record_filter;
pub mod request;
pub mod response_frame;

pub use error::ProtocolError;
pub use kafka_protocol;
