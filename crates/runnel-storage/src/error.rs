//! `StorageError`: every way a partition log operation can fail, with messages written for
//! operators (they name the file and byte position). This module knows nothing of Kafka error
//! codes; the broker maps these variants to codes in one place.

use std::path::{Path, PathBuf};

/// Why a record batch (from an append or on disk) was rejected. Positions are byte offsets
/// relative to the start of the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchDefect {
    /// Fewer bytes are present than the header or its `batchLength` claim.
    #[error("truncated: needs {needed_bytes} bytes, only {available_bytes} present")]
    Truncated {
        /// Bytes the batch claims to occupy (or the header size).
        needed_bytes: u64,
        /// Bytes actually present.
        available_bytes: u64,
    },
    /// Only magic 2 (the v2 record batch format) is stored.
    #[error("unsupported magic {0} (only 2 is supported)")]
    UnsupportedMagic(i8),
    /// `batchLength` is smaller than the fixed header it must contain.
    #[error("batch length {0} is smaller than the v2 header")]
    InvalidLength(i32),
    /// `lastOffsetDelta` or `recordsCount` is negative.
    #[error("negative {field}: {value}")]
    NegativeField {
        /// Name of the header field.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// The CRC32C stored in the header does not match the bytes.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC from the header.
        stored: u32,
        /// CRC computed over bytes 21.. of the batch.
        computed: u32,
    },
    /// Offsets in the log must strictly increase from batch to batch.
    #[error("base offset {found} is below the next expected offset {expected_min}")]
    OffsetNotIncreasing {
        /// The batch's base offset.
        found: i64,
        /// The smallest acceptable base offset.
        expected_min: i64,
    },
}

/// Errors from `PartitionLog`. A variant per condition; no string catch-alls.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system I/O call failed; `path` is the file or directory involved.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory the operation touched.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A batch handed to `append` is malformed; nothing was written.
    #[error("invalid record batch at byte {position} of the append: {defect}")]
    CorruptBatch {
        /// Byte position of the batch within the append buffer.
        position: u64,
        /// What is wrong with it.
        defect: BatchDefect,
    },
    /// A batch in a segment is damaged where truncation would lose data: inside the durable
    /// (checkpointed) part, or, found by recovery, after the checkpoint but with intact batches
    /// after it (mid-log corruption, which a crash does not produce). Never repaired by
    /// truncation: acknowledged data would silently disappear. Recovery leaves the `.log`
    /// files as they were, for an operator to inspect.
    #[error("segment {path}: corrupt batch at position {position}: {defect}")]
    CorruptSegment {
        /// The `.log` file.
        path: PathBuf,
        /// Byte position of the bad batch in the file.
        position: u64,
        /// What is wrong with it.
        defect: BatchDefect,
    },
    /// The recovery checkpoint says more bytes were flushed than the segment now holds.
    #[error(
        "segment {path} holds {size_bytes} bytes but the recovery checkpoint says \
         {checkpoint_position} bytes were flushed: durable data was lost"
    )]
    DurableDataLost {
        /// The `.log` file.
        path: PathBuf,
        /// Current file size in bytes.
        size_bytes: u64,
        /// Flushed size recorded in the checkpoint, in bytes.
        checkpoint_position: u64,
    },
    /// The recovery checkpoint names a segment that is not on disk.
    #[error("recovery checkpoint names segment {path}, which is missing: durable data was lost")]
    CheckpointSegmentMissing {
        /// The expected `.log` file.
        path: PathBuf,
    },
    /// The record reader could not read or rewrite a stored batch.
    #[error("segment {path}: unreadable records in the batch at position {position}: {source}")]
    UnreadableRecords {
        /// The `.log` file.
        path: PathBuf,
        /// Byte position of the batch in the file.
        position: u64,
        /// What the reader said.
        source: crate::records::RecordError,
    },
    /// An earlier write, fsync or write-out of this log failed, so what is on disk is not
    /// known: the log takes no appends, serves no reads and reports nothing more as flushed
    /// until it is reopened through recovery (a broker restart). Retrying the fsync would not
    /// help: Linux reports a write-back error once and then drops the pages ("fsyncgate").
    #[error("log {dir} failed and is offline until reopened through recovery: {cause}")]
    LogFailed {
        /// The partition directory.
        dir: PathBuf,
        /// The failure that took the log offline.
        #[source]
        cause: std::sync::Arc<StorageError>,
    },
    /// The log was copied to another directory and this handle retired (a move between log
    /// directories): it takes no appends and serves no reads; the partition's new log does.
    #[error("log {dir} moved to {to}")]
    LogMoved {
        /// The directory the log left.
        dir: PathBuf,
        /// The directory now holding it.
        to: PathBuf,
    },
    /// The leader-epoch checkpoint (`leader-epoch-checkpoint`) cannot be parsed. Not repaired
    /// by guessing: a wrong epoch history could make a follower keep records its leader does
    /// not have.
    #[error("leader epoch checkpoint {path} is damaged: {reason}")]
    CorruptLeaderEpochCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A replicated append's first batch starts below the log end offset: this replica's log
    /// and the leader's disagree about where it ends (the follower truncates or refetches).
    #[error(
        "replicated batch at offset {base_offset} is below the log end offset {log_end_offset}"
    )]
    ReplicaAppendBehindLogEnd {
        /// The log end offset the append had to start at or after.
        log_end_offset: i64,
        /// The first batch's base offset.
        base_offset: i64,
    },
    /// A leader's append for `epoch` while the log stamps `current`: the leadership ended
    /// (replicated data or a truncation came since) or never started here.
    #[error("append as leader of epoch {epoch} refused: the log now stamps {current:?}")]
    NotLeaderAtEpoch {
        /// The epoch the caller leads at.
        epoch: i32,
        /// The epoch the log stamps now, if any.
        current: Option<i32>,
    },
    /// `set_leader_epoch` was given an epoch older than the newest in the epoch cache.
    #[error("leader epoch {epoch} is older than the latest epoch {latest} of this log")]
    StaleLeaderEpoch {
        /// The epoch given.
        epoch: i32,
        /// The newest epoch in the cache.
        latest: i32,
    },
    /// The marker of a truncation in progress (`truncation-in-progress`) is damaged, so what
    /// the interrupted truncation was to cut is unknown.
    #[error("truncation marker {path} is damaged: the log cannot tell which records were cut")]
    CorruptTruncationMarker {
        /// The marker file.
        path: PathBuf,
    },
    /// `append` was called with no bytes.
    #[error("append of zero bytes")]
    EmptyAppend,
    /// The requested offset is outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// First offset in the log.
        log_start_offset: i64,
        /// Next offset to be assigned.
        log_end_offset: i64,
    },
    /// An idempotent producer's batch does not follow its previous one (a gap or reordering).
    #[error("producer {producer_id}: out-of-order sequence, expected {expected}, found {found}")]
    OutOfOrderSequence {
        /// The producer id.
        producer_id: i64,
        /// The base sequence that would have been accepted.
        expected: i32,
        /// The batch's base sequence.
        found: i32,
    },
    /// An idempotent producer's batch does not follow its previous one, and that producer's
    /// last batch here was not written (`cause`): the gap is the batches behind it, still in
    /// the client's pipeline. Answered with the same retriable, not-persisted error as the
    /// unwritten batch, as if the partition still refused it, so that the client resends its
    /// pipeline in order instead of taking the gap for lost data (librdkafka answers
    /// OUT_OF_ORDER_SEQUENCE_NUMBER there with an epoch bump).
    #[error(
        "producer {producer_id}: sequence {found} follows a batch that was not written here \
         ({cause:?}; expected {expected})"
    )]
    SequenceAfterUnwrittenBatch {
        /// The producer id.
        producer_id: i64,
        /// The base sequence that would have been accepted.
        expected: i32,
        /// The batch's base sequence.
        found: i32,
        /// Why the earlier batch was not written.
        cause: UnwrittenCause,
    },
    /// The batch's producer epoch is older than the producer's current epoch (a zombie).
    #[error("producer {producer_id}: epoch {found} is older than current epoch {current}")]
    InvalidProducerEpoch {
        /// The producer id.
        producer_id: i64,
        /// The epoch the log knows.
        current: i16,
        /// The batch's epoch.
        found: i16,
    },
    /// A retried (duplicate) idempotent batch arrived together with other batches; Kafka
    /// clients send one batch per partition, so this append is rejected whole.
    #[error("producer {producer_id}: duplicate batch inside a multi-batch append")]
    DuplicateInMultiBatchAppend {
        /// The producer id.
        producer_id: i64,
    },
}

/// Attaches the path to an `io::Result`, so every I/O error names its file.
pub(crate) trait IoResultExt<T> {
    /// Converts the error into `StorageError::Io` naming `path`.
    fn at(self, path: &Path) -> Result<T, StorageError>;
}

impl<T> IoResultExt<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Why an idempotent producer's batch was not written (see
/// [`StorageError::SequenceAfterUnwrittenBatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwrittenCause {
    /// The write failed and was undone (e.g. ENOSPC).
    WriteFailed,
    /// The caller refused it before writing (e.g. too few in-sync replicas for acks=all).
    Refused,
}
