//! What the harness saw, one [`Event`] per line of `history.jsonl` (JSON, `type`-tagged). The
//! checker reads nothing else, so a history written by one run can be checked again later.
//!
//! A send is recorded as an invoke followed by exactly one completion: ok (acknowledged at a
//! partition and offset), fail (certainly not written: the client never sent it) or info (the
//! outcome is unknown: a timeout or a connection lost after the request left). Values are unique
//! across the whole run, so a value names one send.

use serde::{Deserialize, Serialize};

/// Milliseconds since the run started.
pub type Millis = u64;

/// Whether a fault is being injected or healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    /// The fault begins.
    Start,
    /// The fault is healed (the cluster should recover from here).
    Heal,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A producer handed `value` to its client.
    SendInvoke {
        time_ms: Millis,
        producer: u32,
        value: String,
    },
    /// The broker acknowledged `value` (acks=all) at `partition`/`offset`.
    SendOk {
        time_ms: Millis,
        producer: u32,
        value: String,
        partition: i32,
        offset: i64,
    },
    /// The broker acknowledged `value` (acks=all) in `partition`, but the client did not say at
    /// which offset: librdkafka reports an idempotent retry of a batch the broker had already
    /// written (its first attempt's answer lost) as delivered at offset -1001 (unknown). Like a
    /// `SendOk`, the value must be in the log exactly once, in `partition`.
    SendOkOffsetUnknown {
        time_ms: Millis,
        producer: u32,
        value: String,
        partition: i32,
    },
    /// `value` was certainly not written.
    SendFail {
        time_ms: Millis,
        producer: u32,
        value: String,
        error: String,
    },
    /// The outcome of sending `value` is unknown: it may be in the log, at most once.
    SendInfo {
        time_ms: Millis,
        producer: u32,
        value: String,
        error: String,
    },
    /// A group consumer was assigned partitions; `assignment` is unique per consumer and grows
    /// with every new assignment, so reads can be checked within one assignment.
    Assigned {
        time_ms: Millis,
        consumer: u32,
        assignment: u64,
        partitions: Vec<i32>,
    },
    /// A group consumer received the record at `partition`/`offset`.
    Read {
        time_ms: Millis,
        consumer: u32,
        assignment: u64,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// The client of a group consumer reset its fetch position of `partition` (librdkafka's
    /// warning: the broker said the offset is out of range, so it went to
    /// `auto.offset.reset`=earliest). Reads of the partition after it start a new sequence (the
    /// checker's rule 4); the reset itself is not an anomaly: data lost below it is caught by
    /// the drain (rules 1, 6) and a restart below the committed offset by rule 5b.
    OffsetReset {
        time_ms: Millis,
        consumer: u32,
        assignment: u64,
        partition: i32,
        /// The client's log line.
        detail: String,
    },
    /// A consumer's offset commit succeeded: the group's next offset for `partition` is `offset`.
    CommitOk {
        time_ms: Millis,
        consumer: u32,
        partition: i32,
        offset: i64,
    },
    /// A fault started or was healed. `kind` is the fault's name (as `--faults` spells it),
    /// `target` what it hit (a node id, `all`, `1|2,3`, ...).
    Fault {
        time_ms: Millis,
        kind: String,
        target: String,
        phase: FaultPhase,
    },
    /// The cluster served requests again after the heal of the fault recorded last (the first
    /// acknowledged send after it); the report's recovery time.
    Recovered { time_ms: Millis, after_ms: Millis },
    /// After the run, every partition was read from its first offset to its end (the drain);
    /// each record read is one `Drained`. `reader` names who read it (several drains may read
    /// the same partition, e.g. one per broker after a leader change).
    Drained {
        time_ms: Millis,
        reader: String,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// The drain of `partition` by `reader` ended at `end_offset` (its high watermark then), and
    /// the partition's log starts at `start_offset`.
    DrainEnd {
        time_ms: Millis,
        reader: String,
        partition: i32,
        start_offset: i64,
        end_offset: i64,
    },
}
