//! The seeded workload: idempotent acks=all producers sending unique values (`p<producer>-<n>`)
//! at a bounded rate, group consumers reading and committing, and the drain that reads every
//! partition from its start to its high watermark after the run. Every operation is recorded.
//!
//! A send is recorded as invoke, then ok (with the delivery report's partition and offset),
//! fail only when the client refused it before it could leave (the local queue), and info for
//! every other error: a delivery error after the request may have left says nothing certain.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinSet;

use runnel_e2e::Result;

use crate::client_log::{enable_debug, ClientLog, ProducerLog};
use crate::history::Event;
use crate::recorder::Recorder;

/// The workload's topic.
pub const TOPIC: &str = "chaos";
/// Its partitions.
pub const PARTITIONS: i32 = 3;
/// The consumer group.
const GROUP: &str = "chaos-group";
/// Sends a producer may have in flight; more waits (bounds memory and the history's open sends).
const MAX_IN_FLIGHT: usize = 32;
/// librdkafka's `message.timeout.ms` unless `--message-timeout-ms` says otherwise: 0, no
/// timeout. When a message times out, librdkafka's idempotent producer bumps its epoch and
/// re-sends the records still queued, some of them possibly written already, under the new
/// epoch with sequences from 0: copies no broker can recognise as retries. The forensics of
/// seed 1002 replayed with 20 s found 169 such copies, every one under a newer epoch than the
/// first (docs/reliability.md); runs with 120 s on an overloaded machine had them too. Without
/// a timeout a send waits until the cluster takes it, so every duplicate left is the broker's.
/// The run's end still bounds the wait ([`OPEN_SENDS_BOUND`]).
pub const MESSAGE_TIMEOUT_MS_DEFAULT: u64 = 0;
/// How long a producer waits at the end of the run for its open sends without a message
/// timeout; what is still open after it counts as indeterminate.
pub const OPEN_SENDS_BOUND: Duration = Duration::from_secs(180);
/// How often a group consumer commits what it has read.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long the drain may take before it gives up on a partition.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the watermarks must stay unchanged before the drain reads to them.
const WATERMARKS_STABLE_FOR: Duration = Duration::from_secs(2);
/// How long the drain waits at most for the watermarks to stay unchanged.
const WATERMARKS_SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the workload runs.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// Producers (ids `0..producers`).
    pub producers: u32,
    /// Group consumers (ids `0..consumers`).
    pub consumers: u32,
    /// Time between two sends of one producer.
    pub send_interval: Duration,
    /// Where each client writes its librdkafka log (`None`: no client logs).
    pub client_log_dir: Option<PathBuf>,
    /// The producers' `message.timeout.ms`.
    pub message_timeout_ms: u64,
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "10000")
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "2000");
    config
}

/// Creates the workload topic (RF 3, min.insync.replicas=2), retrying while the cluster forms.
pub async fn create_topic(bootstrap: &str, deadline: Instant) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(3))
        .set("min.insync.replicas", "2");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    loop {
        let error = match admin.create_topics([&topic], &options).await {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) => return Ok(()),
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => return Ok(()),
                Some(Err((_, code))) => code.to_string(),
                None => "no result".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("creating topic {TOPIC}: {error}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A new idempotent producer; `incarnation` counts the producers this workload producer has
/// started (a fatal error starts another), so each gets its own log file.
fn new_producer(
    id: u32,
    incarnation: u32,
    options: &WorkloadOptions,
    recorder: &Arc<Recorder>,
) -> Result<FutureProducer<ProducerLog>> {
    let log = ClientLog::open(
        options.client_log_dir.as_deref(),
        &format!("producer-{id}.{incarnation}"),
        Arc::clone(recorder),
    );
    let mut config = client_config(&options.bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", options.message_timeout_ms.to_string())
        .set("request.timeout.ms", "5000")
        .set("retry.backoff.ms", "100")
        .set("linger.ms", "5");
    // The idempotence state machine: producer id, epoch bumps and their reasons.
    enable_debug(&mut config, "eos");
    Ok(config.create_with_context(ProducerLog(log))?)
}

/// Runs producer `id` until `stop` turns true, then waits (bounded) for its open sends.
/// Returns the number of sends invoked.
pub async fn run_producer(
    id: u32,
    options: WorkloadOptions,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) -> Result<u64> {
    let mut incarnation = 0;
    let mut producer = new_producer(id, incarnation, &options, &recorder)?;
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut ticker = tokio::time::interval(options.send_interval);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        while in_flight.len() >= MAX_IN_FLIGHT {
            in_flight.join_next().await;
        }
        if producer.client().fatal_error().is_some() {
            // An idempotent producer's fatal error (e.g. a sequence it cannot recover) ends
            // it: let its sends complete, then start a new one (a new producer id).
            while in_flight.join_next().await.is_some() {}
            incarnation += 1;
            producer = new_producer(id, incarnation, &options, &recorder)?;
        }
        sent += 1;
        let value = format!("p{id}-{sent}");
        recorder.record(|time_ms| Event::SendInvoke {
            time_ms,
            producer: id,
            value: value.clone(),
        });
        let record = FutureRecord::to(TOPIC).key(&value).payload(&value);
        match producer.send_result(record) {
            Ok(delivery) => {
                let recorder = Arc::clone(&recorder);
                in_flight.spawn(async move {
                    let outcome = delivery.await;
                    recorder.record(|time_ms| match outcome {
                        Ok(Ok(delivery)) if delivery.offset < 0 => Event::SendOkOffsetUnknown {
                            time_ms,
                            producer: id,
                            value,
                            partition: delivery.partition,
                        },
                        Ok(Ok(delivery)) => Event::SendOk {
                            time_ms,
                            producer: id,
                            value,
                            partition: delivery.partition,
                            offset: delivery.offset,
                        },
                        Ok(Err((error, _))) => Event::SendInfo {
                            time_ms,
                            producer: id,
                            value,
                            error: error.to_string(),
                        },
                        Err(_) => Event::SendInfo {
                            time_ms,
                            producer: id,
                            value,
                            error: "delivery report lost (producer dropped)".to_owned(),
                        },
                    });
                });
            }
            // Refused by the client before anything left: certainly not written.
            Err((error, _)) => recorder.record(|time_ms| Event::SendFail {
                time_ms,
                producer: id,
                value,
                error: error.to_string(),
            }),
        }
    }
    // Every open send completes within message.timeout.ms, if there is one (as ok or info); the
    // margin covers a delivery report queued behind it. Past that (or past OPEN_SENDS_BOUND
    // without a timeout), what is open stays an invoke without a completion, which the checker
    // counts as indeterminate.
    let drain = async { while in_flight.join_next().await.is_some() {} };
    let bound = match options.message_timeout_ms {
        0 => OPEN_SENDS_BOUND,
        ms => Duration::from_millis(ms.saturating_add(10_000)),
    };
    if tokio::time::timeout(bound, drain).await.is_err() {
        eprintln!("runnel-chaos: producer {id}: sends still open after {bound:?}");
        in_flight.abort_all();
    }
    Ok(sent)
}

/// Records each new assignment of a group consumer (eager rebalances: every assignment is new)
/// before the client takes it up: `assign` starts the fetch of the committed offsets, so every
/// commit recorded before `Assigned` completed before that fetch (the checker's rule 5 relies on
/// it).
struct GroupContext {
    consumer: u32,
    recorder: Arc<Recorder>,
    assignment: Arc<AtomicU64>,
    /// Whether the consumer holds an assignment: false from a revoke (or a lost assignment)
    /// to the next assign.
    holding: Arc<AtomicBool>,
    log: ClientLog,
}

impl ClientContext for GroupContext {
    /// librdkafka logs a reset of a fetch position caused by an error (offset out of range) as
    /// a warning of facility `OFFSET`: record it, so the checker does not take the reads after
    /// it for reading backwards. Every line goes to the consumer's log file.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.write(level, fac, log_message);
        if let Some(partition) = offset_reset_partition(fac, log_message) {
            let assignment = self.assignment.load(Ordering::SeqCst);
            self.recorder.record(|time_ms| Event::OffsetReset {
                time_ms,
                consumer: self.consumer,
                assignment,
                partition,
                detail: log_message.to_owned(),
            });
            eprintln!(
                "runnel-chaos: consumer {} client {level:?} {fac}: {log_message}",
                self.consumer
            );
        }
    }
}

/// The partition of a librdkafka `OFFSET` log line `<topic> [<partition>]: offset reset ...`
/// about the workload topic.
fn offset_reset_partition(fac: &str, message: &str) -> Option<i32> {
    if fac != "OFFSET" {
        return None;
    }
    let rest = message.strip_prefix(TOPIC)?.strip_prefix(" [")?;
    let (partition, rest) = rest.split_once(']')?;
    rest.starts_with(": offset reset")
        .then(|| partition.parse().ok())?
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assignment = self.assignment.fetch_add(1, Ordering::SeqCst) + 1;
                let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                self.recorder.record(|time_ms| Event::Assigned {
                    time_ms,
                    consumer: self.consumer,
                    assignment,
                    partitions,
                });
                self.holding.store(true, Ordering::SeqCst);
            }
            Rebalance::Revoke(_) => self.holding.store(false, Ordering::SeqCst),
            Rebalance::Error(_) => {}
        }
    }
}

/// Runs group consumer `id` (blocking: a thread of its own) until `stop` is set: records every
/// read, commits what it read every [`COMMIT_INTERVAL`] synchronously and records each commit
/// that succeeded.
pub fn run_consumer(
    id: u32,
    options: &WorkloadOptions,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let assignment = Arc::new(AtomicU64::new(0));
    let holding = Arc::new(AtomicBool::new(false));
    let context = GroupContext {
        consumer: id,
        recorder: Arc::clone(&recorder),
        assignment: Arc::clone(&assignment),
        holding: Arc::clone(&holding),
        log: ClientLog::open(
            options.client_log_dir.as_deref(),
            &format!("consumer-{id}"),
            Arc::clone(&recorder),
        ),
    };
    let mut config = client_config(&options.bootstrap);
    config
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000");
    // The group protocol (joins, syncs, heartbeats, commits) and offset resets; also lets the
    // OFFSET warnings reach `GroupContext::log` (without a log level they never do).
    enable_debug(&mut config, "cgrp");
    let consumer: BaseConsumer<GroupContext> = config.create_with_context(context)?;
    consumer.subscribe(&[TOPIC])?;
    let mut reads = 0u64;
    // Next offset per partition read within the current assignment, not yet committed.
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let mut positions_assignment = 0u64;
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let polled = consumer.poll(Duration::from_millis(100));
        let current = assignment.load(Ordering::SeqCst);
        if current != positions_assignment || !holding.load(Ordering::SeqCst) {
            // Positions of an earlier (or a revoked) assignment are not ours to commit any
            // more. Committing them anyway fails with UNKNOWN_MEMBER_ID while the client
            // rejoins, and librdkafka then drops the member id its join is using and starts
            // the join over: with a commit every interval, the group never forms again
            // (seeds 1002 and 1004, after every node was killed).
            positions.clear();
            positions_assignment = current;
        }
        if let Some(Ok(message)) = polled {
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default());
            recorder.record(|time_ms| Event::Read {
                time_ms,
                consumer: id,
                assignment: current,
                partition: message.partition(),
                offset: message.offset(),
                value: value.into_owned(),
            });
            positions.insert(message.partition(), message.offset() + 1);
            reads += 1;
        }
        if last_commit.elapsed() >= COMMIT_INTERVAL && !positions.is_empty() {
            last_commit = Instant::now();
            commit(&consumer, id, &recorder, &mut positions)?;
        }
    }
    Ok(reads)
}

fn commit(
    consumer: &BaseConsumer<GroupContext>,
    id: u32,
    recorder: &Recorder,
    positions: &mut BTreeMap<i32, i64>,
) -> Result<()> {
    let mut list = TopicPartitionList::new();
    for (&partition, &offset) in positions.iter() {
        list.add_partition_offset(TOPIC, partition, Offset::Offset(offset))?;
    }
    // A failed commit (a rebalance, a coordinator away) is not recorded: the group's offset
    // is then unknown, and the positions are committed again at the next interval while the
    // assignment lasts (a revoke or lost assignment clears them: see `run_consumer`).
    if consumer.commit(&list, CommitMode::Sync).is_ok() {
        for (partition, offset) in std::mem::take(positions) {
            recorder.record(|time_ms| Event::CommitOk {
                time_ms,
                consumer: id,
                partition,
                offset,
            });
        }
    }
    Ok(())
}

/// How long the group consumers get, after the producers stopped and the cluster settled, to
/// commit every partition up to its high watermark.
pub const GROUP_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(90);

/// Waits until the group has committed every partition up to its high watermark: liveness of
/// the group consumers after the last heal (a group that stopped reading would pass every
/// safety rule). Blocking. Errors after [`GROUP_CATCH_UP_TIMEOUT`] with what is behind.
pub fn wait_group_caught_up(bootstrap: &str) -> Result<()> {
    // The same group id, never subscribing: OffsetFetch only, it does not join the group.
    let observer: BaseConsumer = client_config(bootstrap).set("group.id", GROUP).create()?;
    let deadline = Instant::now() + GROUP_CATCH_UP_TIMEOUT;
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition(TOPIC, partition);
    }
    loop {
        let behind = group_lag(&observer, &list, deadline);
        match behind {
            Ok(behind) if behind.is_empty() => return Ok(()),
            _ if Instant::now() >= deadline => {
                return Err(format!(
                    "group {GROUP} did not commit up to the high watermarks within \
                     {GROUP_CATCH_UP_TIMEOUT:?}: {behind:?}"
                )
                .into())
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The partitions whose committed offset is below the high watermark, as
/// `(partition, committed, high watermark)`.
fn group_lag(
    observer: &BaseConsumer,
    list: &TopicPartitionList,
    deadline: Instant,
) -> Result<Vec<(i32, i64, i64)>> {
    let committed = observer.committed_offsets(list.clone(), Duration::from_secs(5))?;
    let ends = watermarks(observer, deadline)?;
    let mut behind = Vec::new();
    for (partition, (_, high)) in ends {
        let offset = committed
            .find_partition(TOPIC, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            })
            .unwrap_or(-1);
        if offset < high {
            behind.push((partition, offset, high));
        }
    }
    Ok(behind)
}

/// Each partition's (log start offset, high watermark).
pub type Watermarks = BTreeMap<i32, (i64, i64)>;

/// Reads every partition of the topic from its log start offset to its high watermark with a
/// fresh group-less consumer and records each record (`Drained`) and each partition's range
/// (`DrainEnd`). Blocking. Returns each partition's range read. Errors if a partition could not
/// be read to its end in time (its `DrainEnd` is still recorded: what is missing shows in the
/// check).
///
/// Producers have stopped, but after a restart a leader's high watermark can lag its log until
/// the followers fetch again: the drain starts once the watermarks have not moved for
/// [`WATERMARKS_STABLE_FOR`] (or after [`WATERMARKS_SETTLE_TIMEOUT`]), and after reading to
/// them reads on while a fresh look finds a watermark grew. Reading more can only show more.
pub fn drain(bootstrap: &str, reader: &str, recorder: &Recorder) -> Result<Watermarks> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "chaos-drain")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut ranges = settled_watermarks(&consumer, deadline)?;
    let mut list = TopicPartitionList::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for (&partition, &(low, _)) in &ranges {
        list.add_partition_offset(TOPIC, partition, Offset::Offset(low))?;
        next.insert(partition, low);
    }
    consumer.assign(&list)?;
    let mut drained = 0u64;
    loop {
        while !unfinished(&ranges, &next).is_empty() && Instant::now() < deadline {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let partition = message.partition();
            let high = ranges.get(&partition).map_or(0, |(_, high)| *high);
            if message.offset() >= high {
                continue;
            }
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            recorder.record(|time_ms| Event::Drained {
                time_ms,
                reader: reader.to_owned(),
                partition,
                offset: message.offset(),
                value,
            });
            next.insert(partition, message.offset() + 1);
            drained += 1;
        }
        if Instant::now() >= deadline {
            break;
        }
        let again = watermarks(&consumer, deadline)?;
        if !raise_high_watermarks(&mut ranges, &again) {
            break;
        }
    }
    for (&partition, &(low, high)) in &ranges {
        recorder.record(|time_ms| Event::DrainEnd {
            time_ms,
            reader: reader.to_owned(),
            partition,
            start_offset: low,
            end_offset: high,
        });
    }
    let left = unfinished(&ranges, &next);
    if !left.is_empty() {
        return Err(format!(
            "drain: partitions {left:?} not read to their high watermark within {DRAIN_TIMEOUT:?} \
             ({drained} records read)"
        )
        .into());
    }
    Ok(ranges)
}

/// The partitions whose next offset to read is below their high watermark.
fn unfinished(ranges: &Watermarks, next: &BTreeMap<i32, i64>) -> Vec<i32> {
    ranges
        .iter()
        .filter(|(p, (_, high))| next.get(p).is_some_and(|n| n < high))
        .map(|(p, _)| *p)
        .collect()
}

/// Raises each high watermark in `ranges` that `again` shows higher; whether any grew.
fn raise_high_watermarks(ranges: &mut Watermarks, again: &Watermarks) -> bool {
    let mut grew = false;
    for (partition, (_, high)) in ranges.iter_mut() {
        if let Some(&(_, newer)) = again.get(partition) {
            if newer > *high {
                *high = newer;
                grew = true;
            }
        }
    }
    grew
}

/// Every partition's watermarks (ListOffsets), retried until `deadline`.
fn watermarks(consumer: &BaseConsumer, deadline: Instant) -> Result<Watermarks> {
    let mut ranges = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let range = loop {
            match consumer.fetch_watermarks(TOPIC, partition, Duration::from_secs(5)) {
                Ok(range) => break range,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("watermarks of {TOPIC}-{partition}: {e}").into())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        ranges.insert(partition, range);
    }
    Ok(ranges)
}

/// The watermarks once they have not changed for [`WATERMARKS_STABLE_FOR`], or the last seen
/// after [`WATERMARKS_SETTLE_TIMEOUT`] (the drain's re-check covers a later growth).
fn settled_watermarks(consumer: &BaseConsumer, deadline: Instant) -> Result<Watermarks> {
    let settle_deadline = deadline.min(Instant::now() + WATERMARKS_SETTLE_TIMEOUT);
    let mut last = watermarks(consumer, deadline)?;
    let mut unchanged_since = Instant::now();
    while unchanged_since.elapsed() < WATERMARKS_STABLE_FOR && Instant::now() < settle_deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = watermarks(consumer, deadline)?;
        if now != last {
            last = now;
            unchanged_since = Instant::now();
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_reset_warning_names_its_partition() {
        let line = "chaos [2]: offset reset (at offset 120 (leader epoch 3), broker 1) to \
                    offset BEGINNING (leader epoch -1): fetch failed due to requested offset not \
                    available on the broker: Broker: Offset out of range";
        assert_eq!(offset_reset_partition("OFFSET", line), Some(2));
        assert_eq!(offset_reset_partition("FETCH", line), None);
        assert_eq!(
            offset_reset_partition("OFFSET", "other [2]: offset reset"),
            None
        );
        assert_eq!(
            offset_reset_partition("OFFSET", "chaos [2]: committed"),
            None
        );
    }

    #[test]
    fn a_grown_high_watermark_reopens_its_partition_for_the_drain() {
        let mut ranges: Watermarks = [(0, (0, 10)), (1, (0, 5))].into();
        let next: BTreeMap<i32, i64> = [(0, 10), (1, 5)].into();
        assert!(unfinished(&ranges, &next).is_empty());
        // A restarted leader's watermark caught up with its log after the first read.
        let again: Watermarks = [(0, (0, 12)), (1, (0, 5))].into();
        assert!(raise_high_watermarks(&mut ranges, &again));
        assert_eq!(unfinished(&ranges, &next), vec![0]);
        // Never lowered: what was read stays expected.
        let lower: Watermarks = [(0, (0, 3)), (1, (0, 5))].into();
        assert!(!raise_high_watermarks(&mut ranges, &lower));
        assert_eq!(ranges.get(&0), Some(&(0, 12)));
    }
}
