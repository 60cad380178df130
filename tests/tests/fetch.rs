//! Fetch and ListOffsets: watermarks, starting at the end, seeking into the middle, long-poll
//! woken by a produce (one record, and a burst larger than one woken read), and a record
//! larger than the fetch size limits.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Offset;
use runnel_e2e::{
    check_dense, consume_n, consumer_assigned, consumer_assigned_with, create_topic, ensure,
    ensure_eq, expect_nothing, produce_all, produce_one, producer, watermarks, Record, TestBroker,
    TestResult, REQUEST_TIMEOUT, WAIT_TIMEOUT,
};

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<Record> {
    range
        .map(|i| (None, format!("{prefix} {i}").into_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_and_latest() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "offsets";
        create_topic(&broker, topic, 2).await?;
        ensure_eq!(
            watermarks(&broker, topic, 0)?,
            (0, 0),
            "watermarks of an empty partition"
        );
        let producer = producer(&broker, &[])?;
        produce_all(&producer, topic, Some(0), &numbered("r", 0..30)).await?;
        ensure_eq!(
            watermarks(&broker, topic, 0)?,
            (0, 30),
            "watermarks after 30 records"
        );
        ensure_eq!(
            watermarks(&broker, topic, 1)?,
            (0, 0),
            "watermarks of the untouched partition"
        );

        // Offset::End resolves through ListOffsets latest, at some point after assign():
        // produce one record at a time until the consumer gets one. It must never see the 30
        // records that existed before it was assigned.
        let consumer = consumer_assigned(&broker, topic, &[0], Offset::End)?;
        let deadline = std::time::Instant::now() + WAIT_TIMEOUT;
        let mut next = 30;
        let first = loop {
            let ack = produce_one(
                &producer,
                topic,
                Some(0),
                None,
                format!("late {next}").as_bytes(),
            )
            .await?;
            ensure_eq!(ack.offset, next, "offset of late record");
            next += 1;
            if let Ok(read) = consume_n(&consumer, 1, Duration::from_millis(500)).await {
                break read;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "consumer assigned at Offset::End received nothing within {WAIT_TIMEOUT:?}"
            );
        };
        let first = first.first().ok_or("no record")?.clone();
        ensure!(
            first.offset >= 30,
            "consumer assigned at Offset::End after 30 records read offset {}",
            first.offset
        );
        ensure_eq!(
            first.value.clone(),
            Some(format!("late {}", first.offset).into_bytes()),
            "value of the first record read from Offset::End"
        );
        // Everything after it follows densely.
        let rest = usize::try_from(next - first.offset - 1)?;
        let read = consume_n(&consumer, rest, WAIT_TIMEOUT).await?;
        check_dense(topic, 0, &read, first.offset + 1)?;
        ensure_eq!(
            watermarks(&broker, topic, 0)?,
            (0, next),
            "watermarks after the late records"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_and_seek_into_the_middle() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "seek";
        create_topic(&broker, topic, 1).await?;
        let records = numbered("r", 0..100);
        // Several produce calls, so the log holds several batches and seeks land inside them.
        let producer = producer(&broker, &[])?;
        for chunk in records.chunks(7) {
            produce_all(&producer, topic, Some(0), chunk).await?;
        }

        let consumer = consumer_assigned(&broker, topic, &[0], Offset::Offset(40))?;
        let read = consume_n(&consumer, 60, WAIT_TIMEOUT).await?;
        check_dense(topic, 0, &read, 40)?;
        for record in &read {
            ensure_eq!(
                record.value.clone(),
                Some(format!("r {}", record.offset).into_bytes()),
                "value at offset {}",
                record.offset
            );
        }
        expect_nothing(&consumer, Duration::from_millis(500)).await?;

        consumer.seek(topic, 0, Offset::Offset(73), REQUEST_TIMEOUT)?;
        let read = consume_n(&consumer, 27, WAIT_TIMEOUT).await?;
        check_dense(topic, 0, &read, 73)?;
        ensure_eq!(
            read.first().and_then(|r| r.value.clone()),
            Some(b"r 73".to_vec()),
            "value after seeking to 73"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Creates `topic` with one partition and a consumer of it from the beginning whose fetches
/// wait up to 10 s on the broker for one byte (plus `overrides`).
async fn tailing_consumer(
    broker: &TestBroker,
    topic: &str,
    overrides: &[(&str, &str)],
) -> runnel_e2e::Result<StreamConsumer> {
    create_topic(broker, topic, 1).await?;
    let mut config = vec![("fetch.wait.max.ms", "10000"), ("fetch.min.bytes", "1")];
    config.extend_from_slice(overrides);
    consumer_assigned_with(broker, topic, &[0], Offset::Beginning, &config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_returns_a_record_produced_while_waiting() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "long-poll";
        let consumer = tailing_consumer(&broker, topic, &[]).await?;
        // Fetches on the empty partition wait on the broker; none may fail.
        expect_nothing(&consumer, Duration::from_secs(2)).await?;
        let ack = produce_one(&producer(&broker, &[])?, topic, Some(0), None, b"wake up").await?;
        ensure_eq!(ack.offset, 0, "offset of the produced record");
        let read = consume_n(&consumer, 1, WAIT_TIMEOUT).await?;
        ensure_eq!(
            read.first().and_then(|r| r.value.clone()),
            Some(b"wake up".to_vec()),
            "record received by the waiting consumer"
        );
        // And once more: a second wait after the first one was answered.
        expect_nothing(&consumer, Duration::from_secs(1)).await?;
        produce_one(&producer(&broker, &[])?, topic, Some(0), None, b"again").await?;
        let read = consume_n(&consumer, 1, WAIT_TIMEOUT).await?;
        check_dense(topic, 0, &read, 1)?;
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_waiting_at_the_tail_receives_a_burst_larger_than_one_woken_read() -> TestResult
{
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "tail-burst";
        // Limits far above the broker's 1 MiB cap on a read woken by an append, so only that
        // cap splits the burst into several responses.
        let limits = [
            ("fetch.max.bytes", "52428800"),
            ("max.partition.fetch.bytes", "52428800"),
        ];
        let consumer = tailing_consumer(&broker, topic, &limits).await?;
        expect_nothing(&consumer, Duration::from_secs(1)).await?;
        // About 4 MiB in batches of up to 1 MB, while the consumer's fetch waits.
        let records: Vec<_> = (0..4000)
            .map(|i| {
                let mut value = format!("burst {i} ").into_bytes();
                value.resize(1024, b'.');
                (None, value)
            })
            .collect();
        let producer = producer(&broker, &[("linger.ms", "20")])?;
        produce_all(&producer, topic, Some(0), &records).await?;
        let read = consume_n(&consumer, records.len(), WAIT_TIMEOUT).await?;
        check_dense(topic, 0, &read, 0)?;
        for (consumed, (_, value)) in read.iter().zip(&records) {
            ensure!(
                consumed.value.as_ref() == Some(value),
                "record {} differs from what was produced",
                consumed.offset
            );
        }
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_larger_than_fetch_limits_is_still_returned() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "big-record";
        create_topic(&broker, topic, 1).await?;
        let big = vec![b'x'; 200 * 1024];
        let producer = producer(&broker, &[])?;
        produce_one(&producer, topic, Some(0), None, b"small").await?;
        produce_one(&producer, topic, Some(0), None, &big).await?;
        produce_one(&producer, topic, Some(0), None, b"after").await?;
        // Kafka returns the first batch even if it exceeds the limits (KIP-74), so a consumer
        // with small limits still makes progress.
        let consumer = consumer_assigned_with(
            &broker,
            topic,
            &[0],
            Offset::Beginning,
            &[
                ("message.max.bytes", "1000"),
                ("fetch.max.bytes", "1024"),
                ("max.partition.fetch.bytes", "1024"),
            ],
        )?;
        let read = consume_n(&consumer, 3, WAIT_TIMEOUT).await?;
        check_dense(topic, 0, &read, 0)?;
        ensure_eq!(
            read.get(1).and_then(|r| r.value.as_ref()).map(Vec::len),
            Some(big.len()),
            "size of the big record"
        );
        ensure_eq!(
            read.get(2).and_then(|r| r.value.clone()),
            Some(b"after".to_vec()),
            "record after the big one"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// KIP-74: only the first batch of a Fetch response may exceed the request's `max_bytes`.
/// Sixteen partitions each hold batches of about 256 KB; a consumer of all of them with
/// `fetch.max.bytes=1000000` refuses any response over its `receive.message.max.bytes` (and
/// reconnects, in a loop, as librdkafka did against a broker granting every partition its
/// first batch: 16 × 256 KB). It must read everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_response_stays_within_the_request_max_bytes() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "fetch-max-bytes";
        let partitions = 16;
        create_topic(&broker, topic, partitions).await?;
        let producer = producer(&broker, &[("linger.ms", "100"), ("batch.size", "262144")])?;
        let per_partition = 128;
        let value = vec![b'v'; 8000];
        for partition in 0..partitions {
            let records: Vec<Record> = (0..per_partition).map(|_| (None, value.clone())).collect();
            produce_all(&producer, topic, Some(partition), &records).await?;
        }
        let ids: Vec<i32> = (0..partitions).collect();
        let consumer = consumer_assigned_with(
            &broker,
            topic,
            &ids,
            Offset::Beginning,
            &[
                ("fetch.max.bytes", "1000000"),
                // Room for the response's framing beyond its records, no more.
                ("receive.message.max.bytes", "1100000"),
                // Several partitions' batches per response, so the request limit is what
                // binds, not the partition limit.
                ("max.partition.fetch.bytes", "300000"),
            ],
        )?;
        let total = usize::try_from(partitions)? * per_partition;
        let read = consume_n(&consumer, total, Duration::from_secs(30)).await?;
        for partition in 0..partitions {
            let mine: Vec<_> = read
                .iter()
                .filter(|r| r.partition == partition)
                .cloned()
                .collect();
            check_dense(topic, partition, &mine, 0)?;
        }
        Ok(())
    }
    .await;
    broker.check(result)
}
