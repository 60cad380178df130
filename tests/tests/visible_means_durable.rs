//! Visible means durable: the high watermark is the flushed offset, so a consumer reads only
//! records a crash cannot take back. acks=0/1 records become visible through a background
//! flush (no acks=all produce needed), after kill -9 every record a consumer received is
//! still there at the same offset, and a record whose fsync fails is never served.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::Offset;
use runnel_e2e::hostile::{error_code, fetch_v4, parse_fetch_v4};
use runnel_e2e::wire::{
    api_key, parse_produce_v3, produce_v3, record_batch, ProducerIdentity, RawConnection,
};
use runnel_e2e::{
    check_dense, consume_n, consumer_assigned_with, create_topic, create_topic_with, ensure,
    ensure_eq, expect_nothing, produce_all, producer, read_all, wait_until, watermarks, Consumed,
    Record, TestBroker, TestResult, WAIT_TIMEOUT,
};

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<Record> {
    range
        .map(|i| (None, format!("{prefix} {i}").into_bytes()))
        .collect()
}

/// Creates `topic` with one partition and a consumer of it from the beginning whose fetches
/// wait up to `fetch_wait_ms` for one byte.
async fn topic_and_consumer(
    broker: &TestBroker,
    topic: &str,
    fetch_wait_ms: &str,
) -> runnel_e2e::Result<StreamConsumer> {
    create_topic(broker, topic, 1).await?;
    consumer_assigned_with(
        broker,
        topic,
        &[0],
        Offset::Beginning,
        &[
            ("fetch.wait.max.ms", fetch_wait_ms),
            ("fetch.min.bytes", "1"),
        ],
    )
}

/// A consumer waiting at the tail (each fetch may wait the broker's longest long-poll, 30 s)
/// receives acks=0 and acks=1 records with no acks=all produce to flush them: the background
/// flush makes them durable, and its completion wakes the waiting fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_0_and_1_records_become_visible_without_an_acks_all_produce() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "background-flush";
        let consumer = topic_and_consumer(&broker, topic, "30000").await?;
        for (acks, range) in [("0", 0..200), ("1", 200..400)] {
            // The consumer's fetch is waiting at the tail before anything is produced.
            expect_nothing(&consumer, Duration::from_secs(1)).await?;
            let first = range.start;
            let records = numbered(&format!("acks={acks}"), range);
            let producer = producer(&broker, &[("acks", acks), ("linger.ms", "1")])?;
            produce_all(&producer, topic, Some(0), &records).await?;
            // Well under the consumer's 30 s wait: only a wake-up on the flush answers in time.
            let read = consume_n(&consumer, records.len(), Duration::from_secs(20)).await?;
            check_dense(topic, 0, &read, i64::try_from(first)?)?;
            for (consumed, (_, value)) in read.iter().zip(&records) {
                ensure!(
                    consumed.value.as_ref() == Some(value),
                    "record {} differs from what was produced",
                    consumed.offset
                );
            }
        }
        wait_until("high watermark 400", WAIT_TIMEOUT, || async {
            Ok(watermarks(&broker, topic, 0)? == (0, 400))
        })
        .await?;
        Ok(())
    }
    .await;
    broker.check(result)
}

/// A consumer reads concurrently with an acks=1 producer; the broker is killed (-9) once the
/// consumer has received a quarter of the records. After the restart, every record the
/// consumer received is stored at the offset it was received at.
///
/// kill -9 keeps the page cache, so this passes even when unflushed records are served; the
/// rule itself is proven by `handlers::fetch::tests::fetch_serves_only_what_is_flushed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_record_a_consumer_received() -> TestResult {
    const RECORDS: usize = 20_000;
    let mut broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "read-then-crash";
        let consumer = topic_and_consumer(&broker, topic, "100").await?;
        let producer = producer(&broker, &[("acks", "1"), ("linger.ms", "0")])?;
        let records = numbered("record", 0..RECORDS);
        let producing = tokio::spawn(async move {
            // In small steps, so that appends and flushes interleave with the reads.
            for chunk in records.chunks(100) {
                if produce_all(&producer, topic, Some(0), chunk).await.is_err() {
                    break;
                }
            }
        });
        let received: Vec<Consumed> = consume_n(&consumer, RECORDS / 4, WAIT_TIMEOUT).await?;
        broker.kill9()?;
        producing.abort();
        drop(consumer);
        check_dense(topic, 0, &received, 0)?;

        broker.start_again()?;
        let stored = read_all(&broker, topic, 1).await?;
        let stored: HashMap<i64, &Consumed> = stored
            .get(&0)
            .map(|records| records.iter().map(|r| (r.offset, r)).collect())
            .unwrap_or_default();
        for record in &received {
            let kept = stored.get(&record.offset).ok_or_else(|| {
                format!(
                    "offset {} was received, then lost in the crash",
                    record.offset
                )
            })?;
            ensure_eq!(
                &kept.value,
                &record.value,
                "value at offset {} after the crash",
                record.offset
            );
        }
        Ok(())
    }
    .await;
    broker.check(result)
}

/// A record acknowledged with acks=1 whose fsync fails is never served: fetches see nothing
/// of it (high watermark 0) until the background flush fails and takes the partition offline.
/// The topic's `flush.ms` is unlimited and the fault makes its first fsync fail, so before the
/// high watermark was the flushed offset, this record (in the page cache only) was served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acks_1_record_whose_fsync_fails_is_never_served() -> TestResult {
    let mut broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "unsynced";
        create_topic_with(&broker, topic, 1, &[("flush.ms", "9223372036854775807")]).await?;
        // The partition directory's name holds the topic id: the fault is set on a restart.
        ensure!(broker.terminate()?.success(), "SIGTERM exit status");
        let dir = broker.partition_dir(topic, 0);
        let dir = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("no partition directory")?;
        let fault =
            format!("storage.fault.injection=fsync-error-after:0:{dir}/00000000000000000000.log");
        broker.set_extra_args(&["--set", &fault]);
        broker.start_again()?;
        let mut connection = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
        let identity = ProducerIdentity {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        let batch = record_batch(&[b"never durable"], identity, 0);
        let produced = parse_produce_v3(&connection.round_trip(
            api_key::PRODUCE,
            3,
            &produce_v3(1, topic, 0, &batch)?,
        )?)?;
        ensure_eq!(
            produced.first().map(|r| (r.error_code, r.base_offset)),
            Some((0, 0)),
            "acks=1 produce (answered after the write)"
        );
        // Whether or not the background flush has failed yet, nothing is served; once it has,
        // the partition is offline.
        let deadline = std::time::Instant::now() + WAIT_TIMEOUT;
        loop {
            let response = connection.round_trip(api_key::FETCH, 4, &fetch_v4(-1, topic, 0, 0))?;
            let fetched = parse_fetch_v4(&response)?;
            let partition = fetched
                .first()
                .ok_or("no partition in the fetch response")?;
            ensure_eq!(
                (partition.records_bytes, partition.high_watermark.max(0)),
                (0, 0),
                "records and high watermark served of a record never fsynced (error {})",
                partition.error_code
            );
            if partition.error_code == error_code::KAFKA_STORAGE_ERROR {
                break;
            }
            ensure_eq!(partition.error_code, 0, "fetch error code");
            ensure!(
                std::time::Instant::now() < deadline,
                "the background flush never failed the partition"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
    .await;
    broker.check(result)
}
