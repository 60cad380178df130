//! Visible means durable: the high watermark is the flushed offset, so a consumer reads only
//! records a crash cannot take back. acks=0/1 records become visible through a background
//! flush (no acks=all produce needed), and after kill -9 every record a consumer received is
//! still there at the same offset.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::Offset;
use runnel_e2e::{
    check_dense, consume_n, consumer_assigned_with, create_topic, ensure, ensure_eq,
    expect_nothing, produce_all, producer, read_all, wait_until, watermarks, Consumed, Record,
    TestBroker, TestResult, WAIT_TIMEOUT,
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
