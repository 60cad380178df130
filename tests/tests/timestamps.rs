//! Offsets for times: ListOffsets by timestamp with in-order and out-of-order CreateTime
//! timestamps, and LogAppendTime topics (the broker stamps batches).

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use runnel_e2e::{
    admin, admin_options, ensure, ensure_eq, metadata_client, producer, Result, TestBroker,
    TestResult, REQUEST_TIMEOUT,
};
use std::time::Duration;

async fn create_with(broker: &TestBroker, topic: &str, configs: &[(&str, &str)]) -> Result<()> {
    let mut new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (name, value) in configs {
        new_topic = new_topic.set(name, value);
    }
    for result in admin(broker)?
        .create_topics([&new_topic], &admin_options())
        .await?
    {
        result.map_err(|(name, code)| format!("CreateTopics {name}: {code:?}"))?;
    }
    Ok(())
}

/// `offsets_for_times` for one partition: the offset librdkafka reports (-1 = none).
fn offset_for_time(broker: &TestBroker, topic: &str, timestamp_ms: i64) -> Result<i64> {
    let client = metadata_client(broker, &[])?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(timestamp_ms))?;
    let answer = client.offsets_for_times(list, REQUEST_TIMEOUT)?;
    let element = answer
        .find_partition(topic, 0)
        .ok_or("no answer for the partition")?;
    element.error()?;
    Ok(match element.offset() {
        Offset::Offset(offset) => offset,
        Offset::End => -1,
        other => return Err(format!("unexpected offset {other:?}").into()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_for_times_with_out_of_order_create_times() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        create_with(&broker, "times", &[]).await?;
        let producer = producer(&broker, &[("linger.ms", "0")])?;
        // Offsets 0..5 with timestamps out of order.
        let timestamps = [1_000i64, 3_000, 2_000, 5_000, 4_000];
        for ts in timestamps {
            let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to("times")
                .payload(b"v".as_slice())
                .timestamp(ts);
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)?;
        }
        for (target, expected) in [
            (0, 0),
            (1_000, 0),
            (1_500, 1),
            (2_500, 1),
            (3_500, 3),
            (4_500, 3),
            (5_000, 3),
            (5_001, -1),
        ] {
            let offset = offset_for_time(&broker, "times", target)?;
            ensure_eq!(offset, expected, "offset for timestamp {target}");
        }
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topic_is_stamped_by_the_broker() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        create_with(
            &broker,
            "appendtime",
            &[("message.timestamp.type", "LogAppendTime")],
        )
        .await?;
        let producer = producer(&broker, &[("linger.ms", "0")])?;
        let before = now_ms();
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to("appendtime")
            .payload(b"v".as_slice())
            .timestamp(1_000);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
        // The client's 1 000 ms was replaced by the broker's clock.
        ensure_eq!(
            offset_for_time(&broker, "appendtime", 2_000)?,
            0,
            "stamped offset"
        );
        ensure_eq!(
            offset_for_time(&broker, "appendtime", before - 1)?,
            0,
            "offset at the append time"
        );
        ensure!(
            offset_for_time(&broker, "appendtime", now_ms() + 60_000)? == -1,
            "nothing is stamped in the future"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
