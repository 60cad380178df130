//! Durability across restarts: graceful restart keeps everything, kill -9 under an acks=all
//! load loses no acknowledged record, and a torn tail is truncated at the last whole batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::producer::FutureRecord;
use rdkafka::Offset;
use runnel_e2e::hostile::{error_code, fetch_v4, parse_fetch_v4};
use runnel_e2e::log_file::{partition_batches, segment_files, zero_tail_bytes, StoredBatch};
use runnel_e2e::wire::{
    api_key, parse_produce_v3, produce_v3, record_batch, ProducerIdentity, RawConnection,
};
use runnel_e2e::{
    by_position, consume_n, consumer_assigned, create_topic, ensure, ensure_eq, produce_all,
    produce_one, producer, read_all, wait_until, watermarks, Acked, Record, Result, Rng,
    TestBroker, TestResult, WAIT_TIMEOUT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_all_records_and_offsets_continue() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "durable";
        let partitions = 3;
        create_topic(&broker, topic, partitions).await?;
        let before: Vec<Record> = (0..1_000)
            .map(|i| {
                (
                    Some(format!("k{}", i % 13).into_bytes()),
                    format!("before {i}").into_bytes(),
                )
            })
            .collect();
        let acked_before = produce_all(
            &producer(&broker, &[("acks", "all")])?,
            topic,
            None,
            &before,
        )
        .await?;

        broker.restart()?;

        let stored = read_all(&broker, topic, partitions).await?;
        let all: Vec<_> = stored.values().flatten().cloned().collect();
        ensure_eq!(all.len(), before.len(), "records after restart");
        check_acked(&all, &acked_before, &before)?;

        // New records continue each partition's offsets.
        let after: Vec<Record> = (0..300)
            .map(|i| {
                (
                    Some(format!("k{}", i % 13).into_bytes()),
                    format!("after {i}").into_bytes(),
                )
            })
            .collect();
        let acked_after =
            produce_all(&producer(&broker, &[("acks", "all")])?, topic, None, &after).await?;
        for (index, ack) in acked_after.iter().enumerate() {
            let existing = stored.get(&ack.partition).map(Vec::len).unwrap_or(0) as i64;
            ensure!(
                ack.offset >= existing,
                "record {index} produced after restart got offset {} in partition {}, which \
                 already held {existing} records",
                ack.offset,
                ack.partition
            );
        }
        let stored = read_all(&broker, topic, partitions).await?;
        let all: Vec<_> = stored.values().flatten().cloned().collect();
        ensure_eq!(
            all.len(),
            before.len() + after.len(),
            "records after the second produce"
        );
        check_acked(&all, &acked_before, &before)?;
        check_acked(&all, &acked_after, &after)?;
        Ok(())
    }
    .await;
    broker.check(result)
}

fn check_acked(all: &[runnel_e2e::Consumed], acked: &[Acked], records: &[Record]) -> Result<()> {
    let index = by_position(all);
    for (ack, (_, value)) in acked.iter().zip(records) {
        let stored = index
            .get(&(ack.partition, ack.offset))
            .ok_or_else(|| format!("acknowledged record at {ack:?} is missing"))?;
        ensure_eq!(
            stored.value.as_deref(),
            Some(value.as_slice()),
            "value at partition {} offset {}",
            ack.partition,
            ack.offset
        );
    }
    Ok(())
}

/// Every acknowledged record: where it landed and its value.
type AckLog = Vec<(Acked, Vec<u8>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_acks_all_load_loses_no_acknowledged_record() -> TestResult {
    kill_9_during_acks_all_load(&[], 200, "5", 2_000..6_000).await
}

/// The same with every partition fsynced on its own, instead of the flush rounds' shared
/// device cache flush that the test above gets (its partitions' appends land in their zero
/// tails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_acks_all_load_with_an_fdatasync_per_partition_loses_no_acknowledged_record(
) -> TestResult {
    let per_partition = ["--set", "log.flush.device.flush.shared=false"];
    kill_9_during_acks_all_load(&per_partition, 200, "5", 2_000..6_000).await
}

/// The same with requests of about a thousand records per partition, whose fsyncs wait for
/// company (the group-commit delay, made long here so that the kill lands while acks wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_bulk_acks_all_load_with_a_commit_delay_loses_no_acknowledged_record(
) -> TestResult {
    let delay = ["--set", "log.flush.commit.delay.ms=50"];
    kill_9_during_acks_all_load(&delay, 3_000, "20", 20_000..60_000).await
}

/// Produces windows of `window` records (acks=all, `linger_ms`) to 3 partitions until
/// `kill_after` are acknowledged, kills the broker with -9, restarts it, and checks every
/// acknowledged record is stored where it was acknowledged.
async fn kill_9_during_acks_all_load(
    broker_args: &[&str],
    window: usize,
    linger_ms: &str,
    kill_after: std::ops::Range<u64>,
) -> TestResult {
    let mut args = vec!["--set", "auto.create.topics.enable=false"];
    args.extend_from_slice(broker_args);
    let mut broker = TestBroker::start(&args)?;
    let result = async {
        let topic = "crash";
        let partitions = 3;
        create_topic(&broker, topic, partitions).await?;
        let kill_after = Rng::new(1).range(kill_after.start, kill_after.end) as usize;

        let producer = producer(
            &broker,
            &[
                ("acks", "all"),
                ("linger.ms", linger_ms),
                ("message.timeout.ms", "5000"),
                ("retries", "0"),
            ],
        )?;
        let acked: Arc<Mutex<AckLog>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            let producer = producer.clone();
            tokio::spawn(async move {
                let mut next = 0usize;
                // Windows of records in flight, until the broker is gone.
                while !stop.load(Ordering::Relaxed) {
                    let mut in_flight = Vec::with_capacity(window);
                    for _ in 0..window {
                        let value = format!("crash {next}").into_bytes();
                        let key = format!("k{}", next % 17).into_bytes();
                        next += 1;
                        let record = FutureRecord::to(topic).key(&key).payload(&value);
                        match producer.send_result(record) {
                            Ok(delivery) => in_flight.push((delivery, value.clone())),
                            Err(_) => break,
                        }
                    }
                    for (delivery, value) in in_flight {
                        if let Ok(Ok(delivered)) = delivery.await {
                            let ack = Acked {
                                partition: delivered.partition,
                                offset: delivered.offset,
                            };
                            if let Ok(mut acked) = acked.lock() {
                                acked.push((ack, value));
                            }
                        }
                    }
                }
            })
        };

        let count = || acked.lock().map(|a| a.len()).unwrap_or(0);
        wait_until(
            &format!("{kill_after} records acknowledged before the kill"),
            WAIT_TIMEOUT,
            || async { Ok(count() >= kill_after) },
        )
        .await?;
        broker.kill9()?;
        stop.store(true, Ordering::Relaxed);
        // Outstanding deliveries fail within message.timeout.ms; the load task then ends.
        tokio::time::timeout(WAIT_TIMEOUT, load)
            .await
            .map_err(|_| "producer task did not finish after the kill")??;
        drop(producer);

        broker.start_again()?;
        let stored = read_all(&broker, topic, partitions).await?;
        let all: Vec<_> = stored.values().flatten().cloned().collect();
        let index = by_position(&all);
        let acked = acked.lock().map_err(|_| "poisoned")?.clone();
        ensure!(
            acked.len() >= kill_after,
            "only {} acknowledged",
            acked.len()
        );
        for (ack, value) in &acked {
            let stored = index.get(&(ack.partition, ack.offset)).ok_or_else(|| {
                format!(
                    "acknowledged record {:?} at partition {} offset {} is missing after \
                     kill -9 and restart ({} acknowledged, {} stored)",
                    String::from_utf8_lossy(value),
                    ack.partition,
                    ack.offset,
                    acked.len(),
                    all.len()
                )
            })?;
            ensure_eq!(
                stored.value.as_deref(),
                Some(value.as_slice()),
                "value at partition {} offset {}",
                ack.partition,
                ack.offset
            );
        }
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Produces several batches to one partition in rounds, each awaited (so each is at least one
/// batch of its own); returns the values in offset order.
async fn produce_rounds(broker: &TestBroker, topic: &str) -> Result<Vec<Vec<u8>>> {
    let producer = producer(broker, &[("acks", "all")])?;
    let mut values = Vec::new();
    for round in 0..6 {
        let records: Vec<Record> = (0..25)
            .map(|i| (None, format!("round {round} record {i}").into_bytes()))
            .collect();
        produce_all(&producer, topic, Some(0), &records).await?;
        values.extend(records.into_iter().map(|(_, v)| v));
    }
    Ok(values)
}

/// Every value of a one-partition topic, in offset order.
async fn stored_values(broker: &TestBroker, topic: &str) -> Result<Vec<Vec<u8>>> {
    let stored = read_all(broker, topic, 1).await?;
    Ok(stored
        .values()
        .flatten()
        .filter_map(|r| r.value.clone())
        .collect())
}

/// Cuts the last batch of the partition's last segment in half; returns the cut batch.
fn cut_last_batch(dir: &std::path::Path) -> Result<StoredBatch> {
    let batches = partition_batches(dir)?;
    ensure!(
        batches.len() >= 2,
        "expected several batches, found {}",
        batches.len()
    );
    let last = batches.last().ok_or("no batches stored")?.clone();
    let last_file = segment_files(dir)?.last().ok_or("no segment file")?.clone();
    let file = std::fs::OpenOptions::new().write(true).open(&last_file)?;
    file.set_len(last.position + last.size_bytes / 2)?;
    file.sync_all()?;
    Ok(last)
}

/// acks=all in small requests: the partition keeps a zero tail ahead of its appends (so each
/// fsync overwrites allocated blocks instead of growing the file). kill -9 leaves the tail on
/// disk; the restart cuts it, says so at INFO rather than as a torn batch, and every
/// acknowledged record is where it was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_tail_left_by_kill_9_is_cut_and_loses_nothing() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "tail";
        create_topic(&broker, topic, 1).await?;
        let producer = producer(&broker, &[("acks", "all")])?;
        let mut records = Vec::new();
        let mut acked = Vec::new();
        for round in 0..30 {
            let batch: Vec<Record> = (0..10)
                .map(|i| (None, format!("round {round} record {i}").into_bytes()))
                .collect();
            acked.extend(produce_all(&producer, topic, Some(0), &batch).await?);
            records.extend(batch);
        }
        drop(producer);
        let dir = broker.partition_dir(topic, 0);
        let segment = segment_files(&dir)?
            .last()
            .ok_or("no segment file")?
            .clone();
        broker.kill9()?;
        let tail = zero_tail_bytes(&segment)?;
        ensure!(tail > 0, "no zero tail after 30 acks=all requests");

        broker.start_again()?;
        // Logs open lazily (the warm-up thread or the first request): wait for this one's
        // recovery to report the cut before looking at the file.
        wait_until("the zero tail cut on reopening", WAIT_TIMEOUT, || {
            let seen = broker
                .log()
                .lines()
                .any(|l| l.contains("INFO") && l.contains("cut the zero tail"));
            async move { Ok(seen) }
        })
        .await?;
        ensure_eq!(zero_tail_bytes(&segment)?, 0, "zero tail after the restart");
        let log = broker.log();
        ensure!(
            !log.contains("torn batch"),
            "the zero tail was reported as a torn batch"
        );
        let stored = read_all(&broker, topic, 1).await?;
        let all: Vec<_> = stored.values().flatten().collect();
        ensure_eq!(all.len(), records.len(), "records after the restart");
        for (ack, (_, value)) in acked.iter().zip(&records) {
            let found = all.iter().find(|r| r.offset == ack.offset);
            ensure_eq!(
                found.and_then(|r| r.value.as_deref()),
                Some(value.as_slice()),
                "record acknowledged at offset {}",
                ack.offset
            );
        }
        Ok(())
    }
    .await;
    broker.check(result)
}

/// A crash mid-write leaves a torn last batch: kill -9, cut the last batch in half, restart.
/// The partition ends at the last whole batch, everything before it reads back, and new
/// records continue from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_after_kill_9_is_truncated() -> TestResult {
    torn_tail_is_cut(Stop::Kill9).await
}

/// After a clean shutdown the whole log was fsynced and checkpointed, so a shorter file means
/// durable bytes vanished underneath the broker. It still starts (the other partitions must
/// not go down with this one), keeps the intact prefix, and reports the loss as an ERROR
/// naming the segment rather than truncating silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_after_clean_shutdown_is_cut_and_reported() -> TestResult {
    torn_tail_is_cut(Stop::Terminate).await
}

enum Stop {
    Kill9,
    Terminate,
}

async fn torn_tail_is_cut(stop: Stop) -> TestResult {
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "torn";
        create_topic(&broker, topic, 1).await?;
        let values = produce_rounds(&broker, topic).await?;
        match stop {
            Stop::Kill9 => broker.kill9()?,
            Stop::Terminate => {
                let status = broker.terminate()?;
                ensure!(
                    status.success(),
                    "broker exited with {status} after SIGTERM"
                );
            }
        }
        let dir = broker.partition_dir(topic, 0);
        let last = cut_last_batch(&dir)?;
        let whole = last.base_offset;

        broker.start_again()?;
        ensure_eq!(
            watermarks(&broker, topic, 0)?,
            (0, whole),
            "watermarks after cutting the batch at offsets {}..{} in half",
            last.base_offset,
            last.next_offset()
        );
        let read = stored_values(&broker, topic).await?;
        let expected: Vec<Vec<u8>> = values
            .iter()
            .take(usize::try_from(whole)?)
            .cloned()
            .collect();
        ensure!(
            read == expected,
            "records after recovery differ from the first {whole} produced"
        );

        let producer = producer(&broker, &[("acks", "all")])?;
        let acked = produce_all(
            &producer,
            topic,
            Some(0),
            &[(None, b"after recovery".to_vec())],
        )
        .await?;
        ensure_eq!(
            acked.first().map(|a| a.offset),
            Some(whole),
            "offset of the first record after recovery"
        );
        let stored = read_all(&broker, topic, 1).await?;
        let last_value = stored
            .values()
            .flatten()
            .last()
            .and_then(|r| r.value.clone());
        ensure_eq!(last_value, Some(b"after recovery".to_vec()), "last record");
        // The file on disk holds whole batches only, the new one at the cut.
        let batches = partition_batches(&dir)?;
        ensure!(
            batches.iter().any(|b| b.base_offset == whole),
            "no batch at offset {whole} after recovery: {batches:?}"
        );
        if matches!(stop, Stop::Terminate) {
            ensure!(
                broker.log().lines().any(|l| l.contains("ERROR")
                    && l.contains("durable data was lost")
                    && l.contains("00000000000000000000.log")),
                "no ERROR naming the damaged segment in the broker log"
            );
        }
        Ok(())
    }
    .await;
    broker.check(result)
}

/// A flipped bit inside a middle batch, with intact batches after it, is not what a crash
/// leaves: cutting there would silently drop the records after it. The broker starts, reports
/// the damage as an ERROR naming the segment, keeps that one partition offline
/// (KAFKA_STORAGE_ERROR) without touching its file, serves every other partition, and once the
/// operator repairs the byte and restarts, every record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_log_corruption_takes_only_that_partition_offline() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let (damaged, intact) = ("damaged", "intact");
        create_topic(&broker, damaged, 1).await?;
        create_topic(&broker, intact, 1).await?;
        let values = produce_rounds(&broker, damaged).await?;
        let intact_values = produce_rounds(&broker, intact).await?;
        // Unclean: the batches are past the recovery checkpoint, so recovery verifies them.
        broker.kill9()?;
        let dir = broker.partition_dir(damaged, 0);
        let batches = partition_batches(&dir)?;
        let middle = batches
            .get(batches.len() / 2)
            .ok_or("no middle batch")?
            .clone();
        let segment = segment_files(&dir)?
            .first()
            .ok_or("no segment file")?
            .clone();
        let original = std::fs::read(&segment)?;
        let mut flipped = original.clone();
        // A byte inside the records of the middle batch (after its 61-byte header).
        let at = usize::try_from(middle.position + 61 + 5)?;
        *flipped.get_mut(at).ok_or("batch position past the file")? ^= 0x10;
        std::fs::write(&segment, &flipped)?;

        broker.start_again()?;
        // The other topic is served as before.
        let read = stored_values(&broker, intact).await?;
        ensure!(read == intact_values, "the intact topic's records differ");
        // The damaged partition answers KAFKA_STORAGE_ERROR to produce and fetch.
        let mut raw = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
        let no_identity = ProducerIdentity {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        let batch = record_batch(&[b"refused"], no_identity, 0);
        let produced = parse_produce_v3(&raw.round_trip(
            api_key::PRODUCE,
            3,
            &produce_v3(-1, damaged, 0, &batch)?,
        )?)?;
        ensure_eq!(
            produced.iter().map(|p| p.error_code).collect::<Vec<_>>(),
            vec![error_code::KAFKA_STORAGE_ERROR],
            "produce to the damaged partition"
        );
        let fetched =
            parse_fetch_v4(&raw.round_trip(api_key::FETCH, 4, &fetch_v4(-1, damaged, 0, 0))?)?;
        ensure_eq!(
            fetched.iter().map(|p| p.error_code).collect::<Vec<_>>(),
            vec![error_code::KAFKA_STORAGE_ERROR],
            "fetch from the damaged partition"
        );
        ensure!(
            std::fs::read(&segment)? == flipped,
            "the damaged segment was modified"
        );
        ensure!(
            broker.log().lines().any(|l| l.contains("ERROR")
                && l.contains("corrupt batch")
                && l.contains(&format!("position {}", middle.position))
                && l.contains("00000000000000000000.log")),
            "no ERROR naming the damaged segment and position in the broker log"
        );

        // The operator restores the byte: everything is back.
        ensure!(broker.terminate()?.success(), "SIGTERM exit status");
        std::fs::write(&segment, &original)?;
        broker.start_again()?;
        let read = stored_values(&broker, damaged).await?;
        ensure!(
            read == values,
            "records after the repair differ from those produced"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Open file descriptors of process `pid`.
fn open_files(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Partition logs open lazily after a restart and an idle partition holds one descriptor (its
/// `.log`), not three: ten thousand partitions fit a 20,000-descriptor limit. Every partition
/// is still served, the ones written before the restart with their records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_partitions_reopen_lazily_with_one_file_each() -> TestResult {
    const PARTITIONS: i32 = 3_000;
    let mut broker = TestBroker::start(&["--set", "auto.create.topics.enable=false"])?;
    let result = async {
        let topic = "wide";
        create_topic(&broker, topic, PARTITIONS).await?;
        let written = [0, PARTITIONS / 2, PARTITIONS - 1];
        let before = producer(&broker, &[("acks", "all")])?;
        for partition in written {
            produce_one(&before, topic, Some(partition), None, b"before")
                .await
                .map_err(|e| format!("produce to partition {partition}: {e}"))?;
        }
        drop(before);
        ensure!(broker.terminate()?.success(), "SIGTERM exit status");
        broker.start_again()?;
        let opened = format!("partition logs opened partitions={PARTITIONS} offline=0");
        wait_until("every partition log opened", WAIT_TIMEOUT, || {
            let seen = broker.log().contains(&opened);
            async move { Ok(seen) }
        })
        .await?;
        let pid = broker.pid().ok_or("broker not running")?;
        let files = open_files(pid)?;
        let bound = usize::try_from(PARTITIONS)? + 200;
        ensure!(
            files < bound,
            "broker holds {files} descriptors for {PARTITIONS} idle partitions (bound {bound})"
        );
        for partition in written {
            ensure_eq!(
                watermarks(&broker, topic, partition)?,
                (0, 1),
                "watermarks of partition {partition} after the restart"
            );
        }
        let producer = producer(&broker, &[("acks", "all")])?;
        let acked = produce_one(&producer, topic, Some(PARTITIONS - 2), None, b"after")
            .await
            .map_err(|e| format!("produce after the restart: {e}"))?;
        ensure_eq!(acked.offset, 0, "first offset of a never-written partition");
        let consumer = consumer_assigned(&broker, topic, &[PARTITIONS - 1], Offset::Beginning)?;
        let records = consume_n(&consumer, 1, WAIT_TIMEOUT).await?;
        ensure_eq!(
            records.first().and_then(|r| r.value.clone()),
            Some(b"before".to_vec()),
            "record written before the restart"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_with_code_0() -> TestResult {
    let mut broker = TestBroker::start(&[])?;
    let result = async {
        let status = broker.terminate()?;
        ensure_eq!(status.code(), Some(0), "exit code after SIGTERM");
        Ok(())
    }
    .await;
    broker.check(result)
}

/// SIGTERM while clients sit in Fetch long-polls (asking for the longest wait, which the broker
/// caps at 30 s, beyond the harness's 20 s exit deadline): the broker waits
/// `shutdown.timeout.ms` for them, cuts their connections, and still flushes and checkpoints:
/// exit code 0, a clean-stop line, and the acknowledged record back after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_long_polls_in_flight_exits_after_the_shutdown_timeout() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "shutdown.timeout.ms=1000"])?;
    let result = async {
        let topic = "polled";
        create_topic(&broker, topic, 1).await?;
        let producer = producer(&broker, &[("acks", "all")])?;
        produce_one(&producer, topic, Some(0), None, b"acknowledged")
            .await
            .map_err(|e| format!("producing: {e}"))?;
        let mut long_poll = fetch_v4(-1, topic, 0, 1);
        long_poll.splice(4..8, i32::MAX.to_be_bytes());
        let mut polling = Vec::new();
        for _ in 0..4 {
            let mut connection = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
            connection.send_request(api_key::FETCH, 4, &long_poll)?;
            polling.push(connection);
        }
        // A round trip on another connection: the long-polls, sent first, are being served.
        let mut probe = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
        probe.round_trip(api_key::API_VERSIONS, 0, &[])?;

        let status = broker.terminate()?;
        ensure_eq!(status.code(), Some(0), "exit code after SIGTERM");
        let log = broker.log();
        ensure!(
            log.contains("shutdown.timeout.ms"),
            "no line says the long-polls were cut at shutdown.timeout.ms"
        );
        ensure!(
            log.contains("runnel stopped cleanly"),
            "the broker did not finish its clean stop (flush and checkpoints)"
        );
        drop(polling);
        broker.start_again()?;
        ensure_eq!(
            watermarks(&broker, topic, 0)?,
            (0, 1),
            "watermarks after the restart"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}
