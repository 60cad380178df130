//! Partition logs on disk for Runnel: segments of Kafka v2 record batches, sparse offset
//! indexes, crash recovery, idempotent-producer state and group-committed fsyncs.
//!
//! This crate knows offsets and bytes only: never a Kafka request, never a socket, no async
//! runtime. It is synchronous; the broker calls it from blocking threads.

mod batch_header;
mod checkpoint;
mod cleaner;
mod error;
mod group_flush;
mod index_file;
mod io;
mod leader_epoch;
mod offset_index;
mod partition_log;
mod producer_state;
mod read_buffers;
mod records;
mod recovery;
mod segment;
mod sparse_index;
mod sys;
mod time_index;

#[cfg(test)]
mod crash_matrix_tests;
#[cfg(test)]
mod replica_crash_tests;
#[cfg(test)]
mod replica_log_tests;
#[cfg(test)]
mod sim_crash_tests;
#[cfg(test)]
mod sim_fault_tests;
#[cfg(test)]
mod test_support;

pub use batch_header::set_partition_leader_epoch;
pub use batch_header::{increment_sequence, set_base_offset, verify_crc, BatchHeader};
pub use batch_header::{rewrite_crc, set_log_append_time};
pub use batch_header::{HEADER_SIZE_BYTES, LOG_OVERHEAD_BYTES, NO_PRODUCER_ID};
/// Small durable files (the broker's topic and id files use the same atomic write).
pub use checkpoint::{sync_dir, write_atomically as write_file_atomically};
pub use cleaner::{CleanStats, CompactionPolicy, DEDUPE_BUFFER_BYTES_DEFAULT};
pub use error::{BatchDefect, StorageError, UnwrittenCause};
pub use group_flush::flush_logs;
pub use io::{FaultInjection, FaultKind, InvalidFaultInjection, SimDisk, Storage};
pub use leader_epoch::{EpochEntry, LeaderEpochCache};
pub use partition_log::{
    AppendOutcome, CrcCheck, LogConfig, PartitionLog, RetentionPolicy, TimestampOffset,
};
pub use producer_state::PRODUCER_ID_EXPIRATION_MS_DEFAULT;
pub use records::{RecordError, RecordReader, RecordSummary};
