//! Helpers for the hostile-input and overload tests: the survival check every such test ends
//! with (same process alive, a fresh client can produce and consume, peak memory bounded), and
//! raw encoders for requests the tests take apart byte by byte.

use std::time::Duration;

use rdkafka::Offset;

use crate::wire::{put_i16, put_i32, put_i64, put_string, Reader};
use crate::{
    consume_n, consumer_assigned, ensure, ensure_eq, produce_one, producer, Result, TestBroker,
};

/// How much the broker's peak RSS may grow while a hostile test runs.
pub const RSS_GROWTH_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Kafka error codes the hostile tests expect.
pub mod error_code {
    /// CORRUPT_MESSAGE.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// MESSAGE_TOO_LARGE.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// NOT_LEADER_OR_FOLLOWER.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// INVALID_REQUIRED_ACKS.
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    /// OUT_OF_ORDER_SEQUENCE_NUMBER.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// INVALID_PRODUCER_EPOCH.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// KAFKA_STORAGE_ERROR.
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// INVALID_RECORD.
    pub const INVALID_RECORD: i16 = 87;
    /// INVALID_TOPIC_EXCEPTION.
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
}

/// The broker's peak RSS at the start of a test, to compare against at its end.
#[derive(Debug, Clone, Copy)]
pub struct RssBaseline(u64);

impl RssBaseline {
    /// Reads the broker's current peak RSS.
    pub fn take(broker: &TestBroker) -> Result<RssBaseline> {
        Ok(RssBaseline(broker.peak_rss_bytes()?))
    }

    /// Resets the broker's peak RSS to its current RSS and takes that: growth is then measured
    /// from what the broker holds now, not from an earlier peak.
    pub fn reset(broker: &TestBroker) -> Result<RssBaseline> {
        broker.reset_peak_rss()?;
        RssBaseline::take(broker)
    }

    /// Errors unless the broker's peak RSS grew by less than `limit_bytes` since the baseline.
    pub fn check_growth(&self, broker: &TestBroker, limit_bytes: u64, what: &str) -> Result<()> {
        let peak = broker.peak_rss_bytes()?;
        let grown = peak.saturating_sub(self.0);
        ensure!(
            grown < limit_bytes,
            "{what}: broker peak RSS grew by {} KiB (from {} KiB to {} KiB), limit {} KiB",
            grown / 1024,
            self.0 / 1024,
            peak / 1024,
            limit_bytes / 1024
        );
        Ok(())
    }
}

/// The end of every hostile test: the same broker process still runs, a fresh producer and a
/// fresh consumer still work, and peak RSS grew by less than [`RSS_GROWTH_BYTES_MAX`].
pub async fn check_survived(
    broker: &mut TestBroker,
    baseline: RssBaseline,
    what: &str,
) -> Result<()> {
    check_survived_within(broker, baseline, RSS_GROWTH_BYTES_MAX, what).await
}

/// [`check_survived`] with its own bound on peak RSS growth, for loads whose row names one.
pub async fn check_survived_within(
    broker: &mut TestBroker,
    baseline: RssBaseline,
    rss_growth_bytes_max: u64,
    what: &str,
) -> Result<()> {
    ensure!(broker.is_running()?, "{what}: the broker process exited");
    let value = format!("alive after {what}");
    let producer = producer(broker, &[("message.timeout.ms", "20000")])?;
    let acked = produce_one(&producer, "survivor", Some(0), None, value.as_bytes())
        .await
        .map_err(|e| format!("{what}: a fresh producer failed afterwards: {e}"))?;
    let consumer = consumer_assigned(broker, "survivor", &[0], Offset::Offset(acked.offset))?;
    let records = consume_n(&consumer, 1, Duration::from_secs(30))
        .await
        .map_err(|e| format!("{what}: a fresh consumer failed afterwards: {e}"))?;
    ensure_eq!(
        records.first().and_then(|r| r.value.clone()),
        Some(value.into_bytes()),
        "{what}: record read back by a fresh consumer"
    );
    ensure!(
        broker.is_running()?,
        "{what}: the broker process exited during the check"
    );
    baseline.check_growth(broker, rss_growth_bytes_max, what)
}

/// A complete frame: the size prefix, then `frame` (header and body as raw bytes).
pub fn framed(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 4);
    put_i32(&mut out, frame.len() as i32);
    out.extend_from_slice(frame);
    out
}

/// Request header v1 bytes: api key, version, correlation id, client id.
pub fn header_v1(api_key: i16, api_version: i16, correlation_id: i32) -> Vec<u8> {
    let mut out = Vec::new();
    put_i16(&mut out, api_key);
    put_i16(&mut out, api_version);
    put_i32(&mut out, correlation_id);
    put_string(&mut out, "runnel-hostile");
    out
}

/// Produce v3 body writing each `(partition, batch)` of one topic.
pub fn produce_v3_partitions(acks: i16, topic: &str, batches: &[(i32, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    put_i16(&mut body, -1); // transactional_id: null
    put_i16(&mut body, acks);
    put_i32(&mut body, 30_000); // timeout_ms
    put_i32(&mut body, 1); // one topic
    put_string(&mut body, topic);
    put_i32(&mut body, batches.len() as i32);
    for (partition, batch) in batches {
        put_i32(&mut body, *partition);
        put_i32(&mut body, batch.len() as i32);
        body.extend_from_slice(batch);
    }
    body
}

/// Recomputes the CRC32C of a v2 batch after a test changed bytes it covers.
pub fn fix_crc(batch: &mut [u8]) {
    let crc = crate::wire::crc32c(batch.get(21..).unwrap_or_default());
    if let Some(field) = batch.get_mut(17..21) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
}

/// Fetch v4 body (replica id, one partition from `offset`, up to 1 MiB); v4 is the oldest
/// version served.
pub fn fetch_v4(replica_id: i32, topic: &str, partition: i32, offset: i64) -> Vec<u8> {
    fetch_v4_up_to(replica_id, topic, partition, offset, 1024 * 1024)
}

/// [`fetch_v4`] asking for up to `max_bytes` (for the response and the partition).
pub fn fetch_v4_up_to(
    replica_id: i32,
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: i32,
) -> Vec<u8> {
    let mut body = Vec::new();
    put_i32(&mut body, replica_id);
    put_i32(&mut body, 0); // max_wait_ms
    put_i32(&mut body, 1); // min_bytes
    put_i32(&mut body, max_bytes);
    body.push(0); // isolation_level: read uncommitted
    put_i32(&mut body, 1); // one topic
    put_string(&mut body, topic);
    put_i32(&mut body, 1); // one partition
    put_i32(&mut body, partition);
    put_i64(&mut body, offset);
    put_i32(&mut body, max_bytes); // partition_max_bytes
    body
}

/// One partition of a Fetch v4 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    /// Partition index.
    pub partition: i32,
    /// Kafka error code.
    pub error_code: i16,
    /// High watermark reported.
    pub high_watermark: i64,
    /// Bytes of record batches returned.
    pub records_bytes: usize,
}

/// Parses a Fetch v4 response body.
pub fn parse_fetch_v4(body: &[u8]) -> Result<Vec<FetchedPartition>> {
    let mut reader = Reader::new(body);
    let _throttle_time_ms = reader.i32()?;
    let topics = reader.i32()?;
    ensure!(
        (0..=100).contains(&topics),
        "fetch response: {topics} topics"
    );
    let mut out = Vec::new();
    for _ in 0..topics {
        let _topic = reader.string()?;
        let partitions = reader.i32()?;
        ensure!(
            (0..=1000).contains(&partitions),
            "fetch response: {partitions} partitions"
        );
        for _ in 0..partitions {
            let partition = reader.i32()?;
            let error_code = reader.i16()?;
            let high_watermark = reader.i64()?;
            let _last_stable_offset = reader.i64()?;
            let aborted = reader.i32()?;
            ensure!(
                aborted <= 0,
                "fetch response: {aborted} aborted transactions"
            );
            let records = reader.i32()?;
            let records_bytes = usize::try_from(records.max(0))?;
            let rest = reader.rest();
            reader = Reader::new(
                rest.get(records_bytes..)
                    .ok_or("fetch response: records run past the end")?,
            );
            out.push(FetchedPartition {
                partition,
                error_code,
                high_watermark,
                records_bytes,
            });
        }
    }
    Ok(out)
}
