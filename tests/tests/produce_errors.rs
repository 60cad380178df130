//! What a producer learns when its records are refused: Produce v8+ `record_errors` naming each
//! keyless record sent to a compacted topic (KIP-467), compressed or not; an acks=0 produce
//! that fails closes its connection (its only way to tell the client); and DeleteRecords on
//! `__consumer_offsets` is refused.

use std::io::Read;
use std::time::Duration;

use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;
use runnel_e2e::hostile::{error_code, produce_v3_partitions};
use runnel_e2e::wire::{
    api_key, batch_of_section, parse_produce_v3, parse_produce_v8, record_batch, records_section,
    CloseOutcome, ProducerIdentity, RawConnection,
};
use runnel_e2e::{
    admin, admin_options, commit_offset, committer, create_topic, create_topic_with, ensure,
    ensure_eq, wait_until, watermarks, Result, TestBroker, TestResult,
};

/// LZ4's attribute bits.
const LZ4: i16 = 3;
const RECORDS: usize = 100;

fn no_identity() -> ProducerIdentity {
    ProducerIdentity {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// 100 records, those at 3, 13, …, 93 without a key; returns the section and those indexes.
fn records_with_ten_keyless() -> (Vec<u8>, Vec<i32>) {
    let keys: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| format!("key-{i}").into_bytes())
        .collect();
    let keyless: Vec<i32> = (0..RECORDS as i32).filter(|i| i % 10 == 3).collect();
    let records: Vec<(Option<&[u8]>, &[u8])> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let key = (!keyless.contains(&(i as i32))).then_some(key.as_slice());
            (key, b"value".as_slice())
        })
        .collect();
    (records_section(&records), keyless)
}

fn lz4(section: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
    std::io::copy(&mut section.take(u64::MAX), &mut encoder)?;
    Ok(encoder.finish()?)
}

/// On a compacted topic, under the default relaxed validation, a batch of 100 records of
/// which 10 have no key fails with INVALID_RECORD and `record_errors` listing exactly those
/// 10 relative offsets, uncompressed and lz4-compressed alike; nothing is appended. (Before
/// KIP-467 support the client could not tell which records failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_on_a_compacted_topic_are_listed_in_record_errors() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "keyed";
        create_topic_with(&broker, topic, 1, &[("cleanup.policy", "compact")]).await?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(60))?;
        let (section, keyless) = records_with_ten_keyless();
        let plain = batch_of_section(0, RECORDS, &section, no_identity(), now_ms());
        let compressed = batch_of_section(LZ4, RECORDS, &lz4(&section)?, no_identity(), now_ms());
        for (what, batch) in [("uncompressed", plain), ("lz4", compressed)] {
            let body = produce_v3_partitions(-1, topic, &[(0, batch)]);
            let results = parse_produce_v8(&connection.round_trip(api_key::PRODUCE, 8, &body)?)?;
            ensure_eq!(results.len(), 1, "{what}: partition results");
            let result = results.first().ok_or("no partition result")?;
            ensure_eq!(
                (result.partition, result.error_code, result.base_offset),
                (0, error_code::INVALID_RECORD, -1),
                "{what}: partition, error code and base offset"
            );
            let indexes: Vec<i32> = result.record_errors.iter().map(|(i, _)| *i).collect();
            ensure_eq!(indexes, keyless, "{what}: record_errors indexes");
            ensure!(
                result
                    .record_errors
                    .iter()
                    .all(|(_, message)| message.as_deref().is_some_and(|m| m.contains("key"))),
                "{what}: every record error says why: {:?}",
                result.record_errors
            );
            ensure!(
                result.error_message.is_some(),
                "{what}: no partition error message"
            );
            ensure_eq!(
                watermarks(&broker, topic, 0)?,
                (0, 0),
                "{what}: watermarks after the refused batch"
            );
        }
        // The same records, every one keyed, are taken.
        let keys: Vec<Vec<u8>> = (0..RECORDS).map(|i| format!("k{i}").into_bytes()).collect();
        let records: Vec<(Option<&[u8]>, &[u8])> = keys
            .iter()
            .map(|k| (Some(k.as_slice()), b"v".as_slice()))
            .collect();
        let batch = batch_of_section(
            LZ4,
            RECORDS,
            &lz4(&records_section(&records))?,
            no_identity(),
            now_ms(),
        );
        let body = produce_v3_partitions(-1, topic, &[(0, batch)]);
        let results = parse_produce_v8(&connection.round_trip(api_key::PRODUCE, 8, &body)?)?;
        ensure_eq!(
            results
                .first()
                .map(|r| (r.error_code, r.base_offset, r.record_errors.len())),
            Some((0, 0, 0)),
            "a keyed lz4 batch: error code, base offset, record errors"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// A failed acks=0 produce closes the connection, as Kafka does (no response is sent, so the
/// disconnect is how the client learns of it); a successful one keeps it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_acks_zero_produce_closes_the_connection() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "acks-zero";
        create_topic(&broker, topic, 1).await?;
        let good = record_batch(&[b"fine"], no_identity(), now_ms());
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(30))?;
        // Success: no response, and the connection still answers the next request.
        connection.send_request(
            api_key::PRODUCE,
            3,
            &produce_v3_partitions(0, topic, &[(0, good.clone())]),
        )?;
        let results = parse_produce_v3(&connection.round_trip(
            api_key::PRODUCE,
            3,
            &produce_v3_partitions(1, topic, &[(0, good.clone())]),
        )?)?;
        ensure_eq!(
            results.first().map(|r| (r.error_code, r.base_offset)),
            Some((0, 1)),
            "the acks=1 produce after an acks=0 one (error code, base offset)"
        );
        // Failures of each kind: an unknown partition, a corrupt batch.
        let mut corrupt = good.clone();
        if let Some(last) = corrupt.last_mut() {
            *last ^= 0xff;
        }
        for (what, partition, batch) in
            [("an unknown partition", 7, good), ("a bad CRC", 0, corrupt)]
        {
            let mut connection = RawConnection::connect(&broker, Duration::from_secs(30))?;
            connection.send_request(
                api_key::PRODUCE,
                3,
                &produce_v3_partitions(0, topic, &[(partition, batch)]),
            )?;
            ensure_eq!(
                connection.wait_closed(Duration::from_secs(20))?,
                CloseOutcome::Closed,
                "connection after an acks=0 produce to {what}"
            );
        }
        // The two good records, and nothing of the failed ones, become visible (acks=0/1
        // records once a background flush made them durable).
        wait_until("high watermark 2", Duration::from_secs(30), || async {
            Ok(watermarks(&broker, topic, 0)?.1 >= 2)
        })
        .await?;
        ensure_eq!(watermarks(&broker, topic, 0)?, (0, 2), "watermarks");
        Ok(())
    }
    .await;
    broker.check(result)
}

/// `__consumer_offsets` belongs to the group coordinator: DeleteRecords on it is refused with
/// INVALID_TOPIC_EXCEPTION, as in Kafka, and the committed offsets stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_on_an_internal_topic_is_refused() -> TestResult {
    let broker = TestBroker::start(&["--set", "offsets.topic.num.partitions=1"])?;
    let result = async {
        create_topic(&broker, "data", 1).await?;
        let consumer = committer(&broker, "internal-delete")?;
        commit_offset(&consumer, "data", 7)?;
        let before = watermarks(&broker, "__consumer_offsets", 0)?;
        ensure!(before.1 > 0, "the commit wrote nothing: {before:?}");
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("__consumer_offsets", 0, rdkafka::Offset::End)?;
        let results = admin(&broker)?
            .delete_records(&list, &admin_options())
            .await?;
        let element = results
            .find_partition("__consumer_offsets", 0)
            .ok_or("no DeleteRecords result")?;
        let code = element.error().err().and_then(|e| e.rdkafka_error_code());
        ensure_eq!(
            code,
            Some(RDKafkaErrorCode::InvalidTopic),
            "error of DeleteRecords on __consumer_offsets"
        );
        ensure_eq!(
            watermarks(&broker, "__consumer_offsets", 0)?,
            before,
            "watermarks of __consumer_offsets"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}
