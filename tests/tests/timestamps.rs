//! Offsets for times: ListOffsets by timestamp with in-order and out-of-order CreateTime
//! timestamps, LogAppendTime topics (the broker stamps batches), and lookups over large
//! compressed batches (exact answers, bounded memory).

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use runnel_e2e::hostile::{error_code, produce_v3_partitions, RssBaseline, RSS_GROWTH_BYTES_MAX};
use runnel_e2e::wire::{
    api_key, crc32c, parse_produce_v3, produce_v3, put_i16, put_i32, put_i64, put_varint,
    record_batch, ProducerIdentity, RawConnection, Reader,
};
use runnel_e2e::{
    admin, admin_options, create_topic_with, ensure, ensure_eq, metadata_client, producer, Result,
    TestBroker, TestResult, REQUEST_TIMEOUT, WAIT_TIMEOUT,
};
use std::io::{Read, Write};
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

// ---------------------------------------------------------------------------------------------
// Lookups over large compressed batches: exact answers, bounded memory.
// ---------------------------------------------------------------------------------------------

/// Records per large batch, each with a value of [`LARGE_VALUE_BYTES`] zeros: the batch inflates
/// to about 200 MB and compresses (lz4) to under 1 MB.
const LARGE_RECORDS: i64 = 200;
const LARGE_VALUE_BYTES: u64 = 1_000_000;
/// ListOffsets' max-timestamp query (v7+).
const MAX_TIMESTAMP_QUERY: i64 = -3;

/// One lz4 v2 batch (base offset 0) of [`LARGE_RECORDS`] records whose timestamps are
/// `base_timestamp + i` for record `i`, each with [`LARGE_VALUE_BYTES`] zeros.
fn large_lz4_batch(base_timestamp: i64) -> Result<Vec<u8>> {
    let deltas: Vec<i64> = (0..LARGE_RECORDS).collect();
    lz4_batch(base_timestamp, &deltas, LARGE_VALUE_BYTES)
}

/// One lz4 v2 batch (base offset 0): record `i` has timestamp `base_timestamp + deltas[i]`
/// and a value of `value_bytes` zeros. Compressed as it is encoded (the test never holds the
/// inflated bytes).
fn lz4_batch(base_timestamp: i64, deltas: &[i64], value_bytes: u64) -> Result<Vec<u8>> {
    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
    for (index, delta) in deltas.iter().enumerate() {
        let mut fields = vec![0u8]; // attributes
        put_varint(&mut fields, *delta); // timestamp delta
        put_varint(&mut fields, i64::try_from(index)?); // offset delta
        put_varint(&mut fields, -1); // null key
        put_varint(&mut fields, i64::try_from(value_bytes)?);
        let length = i64::try_from(fields.len() as u64 + value_bytes + 1)?;
        let mut prefix = Vec::new();
        put_varint(&mut prefix, length);
        prefix.extend_from_slice(&fields);
        encoder.write_all(&prefix)?;
        std::io::copy(&mut std::io::repeat(0).take(value_bytes), &mut encoder)?;
        encoder.write_all(&[0])?; // no headers
    }
    let records = encoder.finish()?;
    let mut tail = Vec::new();
    put_i16(&mut tail, 3); // attributes: lz4, CreateTime
    put_i32(&mut tail, i32::try_from(deltas.len())? - 1); // last offset delta
    put_i64(&mut tail, base_timestamp);
    put_i64(
        &mut tail,
        base_timestamp + deltas.iter().max().copied().unwrap_or(0),
    ); // max
    put_i64(&mut tail, -1); // producer id
    put_i16(&mut tail, -1); // producer epoch
    put_i32(&mut tail, -1); // base sequence
    put_i32(&mut tail, i32::try_from(deltas.len())?);
    tail.extend_from_slice(&records);
    let mut batch = Vec::new();
    put_i64(&mut batch, 0); // base offset
    put_i32(&mut batch, i32::try_from(4 + 1 + 4 + tail.len())?); // batch length
    put_i32(&mut batch, -1); // partition leader epoch
    batch.push(2); // magic
    put_i32(&mut batch, crc32c(&tail) as i32);
    batch.extend_from_slice(&tail);
    Ok(batch)
}

/// Appends an unsigned varint (compact lengths of flexible versions).
fn put_uvarint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// ListOffsets v7 body: one partition of `topic` at `timestamp` (or a special one).
fn list_offsets_v7(topic: &str, partition: i32, timestamp: i64) -> Vec<u8> {
    let mut body = Vec::new();
    put_i32(&mut body, -1); // replica id
    body.push(0); // isolation level: read uncommitted
    put_uvarint(&mut body, 2); // one topic
    put_uvarint(&mut body, topic.len() as u64 + 1);
    body.extend_from_slice(topic.as_bytes());
    put_uvarint(&mut body, 2); // one partition
    put_i32(&mut body, partition);
    put_i32(&mut body, -1); // current leader epoch
    put_i64(&mut body, timestamp);
    body.extend_from_slice(&[0, 0, 0]); // tagged fields: partition, topic, request
    body
}

fn read_uvarint(reader: &mut Reader<'_>) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = reader.i8()? as u8;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("uvarint too long".into())
}

/// The `(error code, timestamp, offset)` of the one partition of a ListOffsets v7 response
/// body (after the correlation id: the header's tagged fields come first).
fn parse_list_offsets_v7(body: &[u8]) -> Result<(i16, i64, i64)> {
    let mut reader = Reader::new(body);
    read_uvarint(&mut reader)?; // response header tagged fields (none)
    reader.i32()?; // throttle time
    ensure_eq!(read_uvarint(&mut reader)?, 2, "topics in the response");
    let name_len = read_uvarint(&mut reader)?.saturating_sub(1);
    for _ in 0..name_len {
        reader.i8()?;
    }
    ensure_eq!(read_uvarint(&mut reader)?, 2, "partitions in the response");
    reader.i32()?; // partition index
    let error_code = reader.i16()?;
    let timestamp = reader.i64()?;
    let offset = reader.i64()?;
    Ok((error_code, timestamp, offset))
}

/// 100 partitions each hold one lz4 batch inflating to 200 MB; 200 concurrent ListOffsets (by
/// timestamp and max-timestamp) over them must answer exactly, and the broker's peak RSS must
/// grow by less than 64 MiB: lookups walk records streaming under the shared validation slots,
/// never decompressing a batch whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_over_large_lz4_batches_hold_bounded_memory() -> TestResult {
    const PARTITIONS: i32 = 100;
    const LOOKUPS: i32 = 200;
    const PARTITIONS_PER_PRODUCE: usize = 10;
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "large";
        create_topic_with(
            &broker,
            topic,
            PARTITIONS,
            &[("max.message.bytes", "8388608")],
        )
        .await?;
        let base_timestamp = now_ms();
        let batch = large_lz4_batch(base_timestamp)?;
        let mut connection = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
        let partitions: Vec<i32> = (0..PARTITIONS).collect();
        for chunk in partitions.chunks(PARTITIONS_PER_PRODUCE) {
            let batches: Vec<(i32, Vec<u8>)> = chunk.iter().map(|p| (*p, batch.clone())).collect();
            // acks=-1: answered once durable, so visible to the lookups below (the high
            // watermark is the flushed offset).
            let body = connection.round_trip(
                api_key::PRODUCE,
                3,
                &produce_v3_partitions(-1, topic, &batches),
            )?;
            for result in parse_produce_v3(&body)? {
                ensure_eq!(
                    result.error_code,
                    0,
                    "producing the large batch to partition {}",
                    result.partition
                );
            }
        }
        drop(connection);

        // What each lookup asks and must get back: (partition, query, timestamp, offset).
        let lookups: Vec<(i32, i64, i64, i64)> = (0..LOOKUPS)
            .map(|j| {
                let partition = j % PARTITIONS;
                if j % 2 == 0 {
                    // Spread over the batch: the walk stops at record `k`.
                    let k = i64::from(j * 37) % LARGE_RECORDS;
                    (partition, base_timestamp + k, base_timestamp + k, k)
                } else {
                    let last = LARGE_RECORDS - 1;
                    (partition, MAX_TIMESTAMP_QUERY, base_timestamp + last, last)
                }
            })
            .collect();
        let baseline = RssBaseline::reset(&broker)?;
        let mut connections = Vec::with_capacity(lookups.len());
        for (partition, query, _, _) in &lookups {
            let mut connection = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
            let correlation_id = connection.send_flexible_request(
                api_key::LIST_OFFSETS,
                7,
                &list_offsets_v7(topic, *partition, *query),
            )?;
            connections.push((connection, correlation_id));
        }
        let answers = tokio::task::spawn_blocking(move || {
            connections
                .into_iter()
                .map(|(mut connection, correlation_id)| {
                    parse_list_offsets_v7(&connection.read_response(correlation_id)?)
                })
                .collect::<Result<Vec<_>>>()
        })
        .await??;
        for ((partition, query, timestamp, offset), answer) in lookups.iter().zip(answers) {
            ensure_eq!(
                answer,
                (0, *timestamp, *offset),
                "ListOffsets of partition {partition} at {query}"
            );
        }
        baseline.check_growth(
            &broker,
            RSS_GROWTH_BYTES_MAX,
            "200 concurrent ListOffsets over 100 partitions of 200 MB lz4 batches",
        )
    }
    .await;
    broker.check(result)
}

// ---------------------------------------------------------------------------------------------
// A failed append leaves no time-index entry behind (issue 21, point 7).
// ---------------------------------------------------------------------------------------------

/// A produce of two batches whose append fails half way (the time-index write of its second
/// batch fails with ENOSPC, through the testing knob `storage.fault.injection`) is refused and
/// leaves nothing behind: the max-timestamp lookup then answers from the records in the log,
/// not from the timestamps of the failed append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_leaves_no_time_index_entry_behind() -> TestResult {
    let topic = "stamped";
    let mut broker = TestBroker::start(&[])?;
    let result = async {
        // A time-index entry for every batch.
        create_with(&broker, topic, &[("index.interval.bytes", "0")]).await?;
        // The partition directory's name holds the topic id, known once the topic exists: the
        // fault is set on a restart.
        ensure!(broker.terminate()?.success(), "SIGTERM exit status");
        let partition_dir = broker.partition_dir(topic, 0);
        let partition_dir = partition_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("no partition directory")?;
        let fault = format!(
            "storage.fault.injection=write-error-after:1:{partition_dir}/00000000000000000000.timeindex"
        );
        broker.set_extra_args(&["--set", &fault]);
        broker.start_again()?;
        let none = ProducerIdentity {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        let now = now_ms();
        let mut connection = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
        let mut produce = |batches: &[u8]| -> Result<(i16, i64)> {
            let body = produce_v3(-1, topic, 0, batches)?;
            let result = parse_produce_v3(&connection.round_trip(api_key::PRODUCE, 3, &body)?)?
                .into_iter()
                .next()
                .ok_or("no partition in the produce response")?;
            Ok((result.error_code, result.base_offset))
        };
        let mut failed = record_batch(&[b"lost-1"], none, now - 1_000);
        failed.extend(record_batch(&[b"lost-2"], none, now));
        ensure_eq!(
            produce(&failed)?.0,
            error_code::KAFKA_STORAGE_ERROR,
            "the produce whose time-index write failed"
        );
        let kept = record_batch(&[b"kept-1", b"kept-2"], none, now - 10_000);
        ensure_eq!(produce(&kept)?, (0, 0), "the next produce");

        let correlation_id = connection.send_flexible_request(
            api_key::LIST_OFFSETS,
            7,
            &list_offsets_v7(topic, 0, MAX_TIMESTAMP_QUERY),
        )?;
        ensure_eq!(
            parse_list_offsets_v7(&connection.read_response(correlation_id)?)?,
            (0, now - 10_000, 0),
            "max-timestamp lookup (error, timestamp, offset)"
        );
        ensure_eq!(
            offset_for_time(&broker, topic, now - 1_000)?,
            -1,
            "offset for a timestamp only the failed append had"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Inside one compressed batch with out-of-order timestamps, ListOffsets answers at the record:
/// the first record whose timestamp reaches the target, and for max-timestamp (-3) the record
/// carrying the largest timestamp, as Kafka does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_inside_one_compressed_batch_answer_at_the_record() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "inside";
        create_with(&broker, topic, &[]).await?;
        let base = now_ms();
        let batch = lz4_batch(base, &[0, 2_000, 1_000, 4_000, 3_000], 100)?;
        let mut connection = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
        // acks=-1: answered once durable, so visible to the lookups below.
        let body = connection.round_trip(
            api_key::PRODUCE,
            3,
            &produce_v3_partitions(-1, topic, &[(0, batch)]),
        )?;
        ensure_eq!(
            parse_produce_v3(&body)?.first().map(|r| r.error_code),
            Some(0),
            "producing the batch"
        );
        for (query, expected) in [
            (base, (base, 0)),
            (base + 1, (base + 2_000, 1)),
            (base + 1_500, (base + 2_000, 1)),
            (base + 2_500, (base + 4_000, 3)),
            (base + 4_000, (base + 4_000, 3)),
            (base + 4_001, (-1, -1)),
            (MAX_TIMESTAMP_QUERY, (base + 4_000, 3)),
        ] {
            let correlation_id = connection.send_flexible_request(
                api_key::LIST_OFFSETS,
                7,
                &list_offsets_v7(topic, 0, query),
            )?;
            let answer = parse_list_offsets_v7(&connection.read_response(correlation_id)?)?;
            ensure_eq!(
                answer,
                (0, expected.0, expected.1),
                "ListOffsets at {query} (base {base})"
            );
        }
        Ok(())
    }
    .await;
    broker.check(result)
}
