//! Produce with acks=0, 1 and -1: acknowledged records are stored where the acknowledgement
//! says; with acks=0 (no response at all) the records still arrive.

use rdkafka::Offset;
use runnel_e2e::{
    consume_n, consumer_assigned, create_topic, ensure_eq, produce_all, producer, read_all,
    wait_until, watermarks, Record, TestBroker, TestResult, WAIT_TIMEOUT,
};

const RECORDS: usize = 500;
const PARTITIONS: i32 = 2;

fn records(acks: &str) -> Vec<Record> {
    (0..RECORDS)
        .map(|i| {
            (
                Some(format!("k{}", i % 7).into_bytes()),
                format!("acks={acks} #{i}").into_bytes(),
            )
        })
        .collect()
}

async fn acknowledged_records_are_stored(acks: &str) -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "acks";
        create_topic(&broker, topic, PARTITIONS).await?;
        let producer = producer(&broker, &[("acks", acks)])?;
        let records = records(acks);
        let acked = produce_all(&producer, topic, None, &records).await?;
        // acks=1 records become visible (the high watermark passes them) once a background
        // flush makes them durable, moments after their acknowledgement.
        wait_until("every record visible", WAIT_TIMEOUT, || async {
            let mut visible = 0;
            for partition in 0..PARTITIONS {
                visible += watermarks(&broker, topic, partition)?.1;
            }
            Ok(visible == RECORDS as i64)
        })
        .await?;
        let by_partition = read_all(&broker, topic, PARTITIONS).await?;
        let total: usize = by_partition.values().map(Vec::len).sum();
        ensure_eq!(total, RECORDS, "records read back");
        for (index, (ack, (_, value))) in acked.iter().zip(&records).enumerate() {
            let stored = by_partition
                .get(&ack.partition)
                .and_then(|records| records.get(usize::try_from(ack.offset).ok()?))
                .ok_or_else(|| format!("record {index} acknowledged at {ack:?} is not stored"))?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_1_records_are_stored_where_acknowledged() -> TestResult {
    acknowledged_records_are_stored("1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_records_are_stored_where_acknowledged() -> TestResult {
    acknowledged_records_are_stored("-1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_0_records_arrive() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "acks-zero";
        create_topic(&broker, topic, 1).await?;
        let producer = producer(&broker, &[("acks", "0")])?;
        let records = records("0");
        // With acks=0 the delivery report comes when the request is sent, not stored.
        produce_all(&producer, topic, Some(0), &records).await?;
        let consumer = consumer_assigned(&broker, topic, &[0], Offset::Beginning)?;
        let read = consume_n(&consumer, RECORDS, WAIT_TIMEOUT).await?;
        for (index, record) in read.iter().enumerate() {
            ensure_eq!(record.offset, index as i64, "offset of record {index}");
            ensure_eq!(
                record.value.as_deref(),
                records.get(index).map(|(_, v)| v.as_slice()),
                "value at offset {index}"
            );
        }
        Ok(())
    }
    .await;
    broker.check(result)
}
