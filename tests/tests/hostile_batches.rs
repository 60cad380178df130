//! Hostile record batches inside well-formed Produce requests: bad CRC, lying lengths and
//! counts, old magic, unknown codecs, oversized batches and compression bombs, compressed
//! records that do not decode, writes to internal topics, bad acks, and Fetch requests that
//! claim to come from a follower. The bad partition gets its Kafka error, the good partition of
//! the same request is appended, and the broker survives with bounded memory.

use std::io::Read;
use std::time::Duration;

use runnel_e2e::hostile::{
    check_survived, error_code, fetch_v4, fix_crc, parse_fetch_v4, produce_v3_partitions,
    RssBaseline,
};
use runnel_e2e::wire::{
    api_key, parse_produce_v3, put_i32, put_i64, put_varint, record_batch, PartitionProduceResult,
    ProducerIdentity, RawConnection,
};
use runnel_e2e::{
    commit_offset, committer, create_topic, create_topic_with, ensure, ensure_eq, watermarks,
    Result, TestBroker, TestResult,
};

const TOPIC: &str = "hostile";
const HEADER_BYTES: usize = 61;
const TIMESTAMP_MS: i64 = 1_700_000_000_000;
const MIB: u64 = 1024 * 1024;
/// Broker flags for Kafka's depth of validation: every compressed batch decoded and walked.
const STRICT: &[&str] = &["--set", "produce.batch.validation=strict"];
/// LZ4's attribute bits.
const LZ4: i16 = 3;

fn no_identity() -> ProducerIdentity {
    ProducerIdentity {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    }
}

fn good_batch() -> Vec<u8> {
    record_batch(&[b"good"], no_identity(), now_ms())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(TIMESTAMP_MS, |d| d.as_millis() as i64)
}

/// A batch with the header of a one-record batch, `attributes`, and `records` as its records
/// section; lengths and CRC made consistent.
fn batch_with_records(attributes: i16, records: &[u8]) -> Vec<u8> {
    let mut batch: Vec<u8> = good_batch().into_iter().take(HEADER_BYTES).collect();
    batch.extend_from_slice(records);
    let batch_length = (batch.len() - 12) as i32;
    if let Some(field) = batch.get_mut(8..12) {
        field.copy_from_slice(&batch_length.to_be_bytes());
    }
    if let Some(field) = batch.get_mut(21..23) {
        field.copy_from_slice(&attributes.to_be_bytes());
    }
    fix_crc(&mut batch);
    batch
}

fn set_bytes(batch: &mut [u8], at: usize, bytes: &[u8]) -> Result<()> {
    let size_bytes = batch.len();
    batch
        .get_mut(at..at + bytes.len())
        .ok_or_else(|| format!("batch of {size_bytes} bytes has no field at {at}"))?
        .copy_from_slice(bytes);
    Ok(())
}

/// Sends `bad` to partition 0 and a good batch to partition 1 in one Produce v3 request and
/// returns partition 0's error code, after checking partition 1 succeeded and partition 0 was
/// left untouched.
fn produce_bad_beside_good(
    broker: &TestBroker,
    connection: &mut RawConnection,
    bad: Vec<u8>,
) -> Result<i16> {
    let before = (watermarks(broker, TOPIC, 0)?, watermarks(broker, TOPIC, 1)?);
    let body = produce_v3_partitions(-1, TOPIC, &[(0, bad), (1, good_batch())]);
    let response = connection.round_trip(api_key::PRODUCE, 3, &body)?;
    let results = parse_produce_v3(&response)?;
    let result = |partition| -> Result<PartitionProduceResult> {
        results
            .iter()
            .find(|r| r.partition == partition)
            .cloned()
            .ok_or_else(|| format!("no result for partition {partition}").into())
    };
    let (bad, good) = (result(0)?, result(1)?);
    ensure_eq!(good.error_code, 0, "error code of the good partition");
    ensure_eq!(
        good.base_offset,
        before.1 .1,
        "base offset of the good partition"
    );
    ensure!(bad.error_code != 0, "the bad batch was accepted: {bad:?}");
    ensure_eq!(
        watermarks(broker, TOPIC, 0)?,
        before.0,
        "watermarks of the partition that got the bad batch"
    );
    Ok(bad.error_code)
}

async fn with_two_partitions<F>(args: &[&str], what: &str, body: F) -> TestResult
where
    F: FnOnce(&TestBroker, &mut RawConnection) -> Result<()>,
{
    let mut broker = TestBroker::start(args)?;
    let result = async {
        create_topic(&broker, TOPIC, 2).await?;
        let baseline = RssBaseline::take(&broker)?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(60))?;
        body(&broker, &mut connection)?;
        drop(connection);
        check_survived(&mut broker, baseline, what).await
    }
    .await;
    broker.check(result)
}

fn expect_code(got: i16, allowed: &[i16], what: &str) -> Result<()> {
    ensure!(
        allowed.contains(&got),
        "{what}: error code {got}, expected one of {allowed:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_batches_fail_their_partition_only() -> TestResult {
    with_two_partitions(&[], "corrupt batches", |broker, connection| {
        let corrupt = [error_code::CORRUPT_MESSAGE];
        let corrupt_or_invalid = [error_code::CORRUPT_MESSAGE, error_code::INVALID_RECORD];

        let mut bad_crc = good_batch();
        let last = bad_crc.len() - 1;
        if let Some(byte) = bad_crc.get_mut(last) {
            *byte ^= 0x01;
        }
        let got = produce_bad_beside_good(broker, connection, bad_crc)?;
        expect_code(got, &corrupt, "a flipped bit (bad CRC)")?;

        // The same for a compressed batch: the CRC is checked however deep validation goes.
        let good = good_batch();
        let mut bad_lz4_crc = batch_with_records(LZ4, good.get(HEADER_BYTES..).unwrap_or_default());
        let last = bad_lz4_crc.len() - 1;
        if let Some(byte) = bad_lz4_crc.get_mut(last) {
            *byte ^= 0x01;
        }
        let got = produce_bad_beside_good(broker, connection, bad_lz4_crc)?;
        expect_code(got, &corrupt, "a flipped bit in an lz4 batch (bad CRC)")?;

        let mut too_long = good_batch();
        let claimed = (too_long.len() - 12 + 100) as i32;
        set_bytes(&mut too_long, 8, &claimed.to_be_bytes())?;
        let got = produce_bad_beside_good(broker, connection, too_long)?;
        expect_code(got, &corrupt, "batchLength past the end")?;

        let mut too_short = good_batch();
        let claimed = (too_short.len() - 12 - 3) as i32;
        set_bytes(&mut too_short, 8, &claimed.to_be_bytes())?;
        let got = produce_bad_beside_good(broker, connection, too_short)?;
        expect_code(got, &corrupt_or_invalid, "batchLength short of the bytes")?;

        let mut below_header = good_batch();
        set_bytes(&mut below_header, 8, &10i32.to_be_bytes())?;
        let got = produce_bad_beside_good(broker, connection, below_header)?;
        expect_code(got, &corrupt, "batchLength below the header size")?;

        for (count, what) in [(5, "recordsCount 5 for 1 record"), (0, "recordsCount 0")] {
            let mut lying = good_batch();
            set_bytes(&mut lying, 57, &i32::to_be_bytes(count))?;
            set_bytes(&mut lying, 23, &i32::to_be_bytes(count - 1))?;
            fix_crc(&mut lying);
            let got = produce_bad_beside_good(broker, connection, lying)?;
            expect_code(got, &corrupt_or_invalid, what)?;
        }
        let mut huge_count = good_batch();
        set_bytes(&mut huge_count, 57, &i32::MAX.to_be_bytes())?;
        set_bytes(&mut huge_count, 23, &(i32::MAX - 1).to_be_bytes())?;
        fix_crc(&mut huge_count);
        let got = produce_bad_beside_good(broker, connection, huge_count)?;
        expect_code(got, &corrupt_or_invalid, "recordsCount 2^31-1")?;

        for codec in 5..=7i16 {
            let good = good_batch();
            let batch = batch_with_records(codec, good.get(HEADER_BYTES..).unwrap_or_default());
            let got = produce_bad_beside_good(broker, connection, batch)?;
            expect_code(got, &corrupt_or_invalid, &format!("codec bits {codec}"))?;
        }
        Ok(())
    })
    .await
}

/// A v0 (magic 0) or v1 (magic 1) message, as clients before Kafka 0.11 sent them.
fn legacy_message(magic: u8) -> Vec<u8> {
    let value = vec![b'v'; 100];
    let mut message = vec![magic, 0]; // magic, attributes
    if magic == 1 {
        put_i64(&mut message, TIMESTAMP_MS);
    }
    put_i32(&mut message, -1); // null key
    put_i32(&mut message, value.len() as i32);
    message.extend_from_slice(&value);
    let mut crc_and_message = runnel_e2e::wire::crc32c(&message).to_be_bytes().to_vec();
    crc_and_message.extend_from_slice(&message);
    let mut entry = Vec::new();
    put_i64(&mut entry, 0); // offset
    put_i32(&mut entry, crc_and_message.len() as i32);
    entry.extend_from_slice(&crc_and_message);
    entry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_message_formats_fail_their_partition_only() -> TestResult {
    with_two_partitions(&[], "magic 0 and 1", |broker, connection| {
        let allowed = [error_code::CORRUPT_MESSAGE, error_code::INVALID_RECORD];
        for magic in [0u8, 1] {
            let got = produce_bad_beside_good(broker, connection, legacy_message(magic))?;
            expect_code(got, &allowed, &format!("a magic {magic} message"))?;
            // The v2 layout with the magic byte changed.
            let mut relabelled = good_batch();
            set_bytes(&mut relabelled, 16, &[magic])?;
            let got = produce_bad_beside_good(broker, connection, relabelled)?;
            expect_code(got, &allowed, &format!("a v2 batch labelled magic {magic}"))?;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_over_max_message_bytes_is_refused() -> TestResult {
    let args = ["--set", "message.max.bytes=100000"];
    with_two_partitions(
        &args,
        "a batch over max.message.bytes",
        |broker, connection| {
            let value = vec![b'x'; 150_000];
            let big = record_batch(&[&value], no_identity(), now_ms());
            let got = produce_bad_beside_good(broker, connection, big)?;
            expect_code(
                got,
                &[error_code::MESSAGE_TOO_LARGE],
                "a 150 kB batch with message.max.bytes=100000",
            )
        },
    )
    .await
}

/// `prefix` then `zeros_bytes` zeros, compressed with `codec` (Kafka's attribute bits) and
/// streamed, so the test never holds the inflated bytes.
fn bomb(codec: i16, prefix: &[u8], zeros_bytes: u64) -> Result<Vec<u8>> {
    let mut input = prefix.chain(std::io::repeat(0).take(zeros_bytes));
    Ok(match codec {
        1 => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::copy(&mut input, &mut encoder)?;
            encoder.finish()?
        }
        2 => {
            // One raw block, as librdkafka sends snappy.
            let mut all = Vec::new();
            input.read_to_end(&mut all)?;
            snap::raw::Encoder::new().compress_vec(&all)?
        }
        3 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            std::io::copy(&mut input, &mut encoder)?;
            encoder.finish()?
        }
        4 => {
            let mut encoder = zstd::stream::Encoder::new(Vec::new(), 19)?;
            std::io::copy(&mut input, &mut encoder)?;
            encoder.finish()?
        }
        other => return Err(format!("no codec {other}").into()),
    })
}

/// The start of one well-formed record whose value is `value_bytes` long (the value follows).
fn record_prefix(value_bytes: u64) -> Result<Vec<u8>> {
    let value_bytes = i64::try_from(value_bytes)?;
    let mut fields = vec![0u8]; // attributes
    put_varint(&mut fields, 0); // timestamp delta
    put_varint(&mut fields, 0); // offset delta
    put_varint(&mut fields, -1); // null key
    put_varint(&mut fields, value_bytes);
    // The value, then a header count of 0, complete the record.
    let length = i64::try_from(fields.len())? + value_bytes + 1;
    let mut prefix = Vec::new();
    put_varint(&mut prefix, length);
    prefix.extend_from_slice(&fields);
    Ok(prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_bombs_are_refused_with_memory_bounded() -> TestResult {
    with_two_partitions(STRICT, "compression bombs", |broker, connection| {
        let too_large = [error_code::MESSAGE_TOO_LARGE];
        let any_refusal = [
            error_code::MESSAGE_TOO_LARGE,
            error_code::CORRUPT_MESSAGE,
            error_code::INVALID_RECORD,
        ];
        // Streaming codecs inflate far past the decompression cap within max.message.bytes.
        for (codec, name, inflated_bytes) in [
            (1, "gzip", 512 * MIB),
            (3, "lz4", 128 * MIB),
            (4, "zstd", 1024 * MIB),
        ] {
            // One record whose value is the whole bomb: only the cap stops it.
            let records = bomb(codec, &record_prefix(inflated_bytes)?, inflated_bytes)?;
            ensure!(
                records.len() < 1_000_000,
                "{name} bomb of {} bytes does not fit max.message.bytes",
                records.len()
            );
            let got =
                produce_bad_beside_good(broker, connection, batch_with_records(codec, &records))?;
            expect_code(
                got,
                &too_large,
                &format!("a {name} bomb of one {inflated_bytes}-byte record"),
            )?;
            // Plain zeros: refused as soon as they fail to parse as records.
            let zeros = bomb(codec, &[], inflated_bytes)?;
            let got =
                produce_bad_beside_good(broker, connection, batch_with_records(codec, &zeros))?;
            expect_code(
                got,
                &any_refusal,
                &format!("a {name} bomb of {inflated_bytes} zeros"),
            )?;
        }
        // Snappy cannot inflate a 1 MB batch past about 22 MB, under the cap: zeros fail as
        // records, and a raw block claiming 4 GiB is refused before anything is allocated.
        let zeros = bomb(2, &[], 16 * MIB)?;
        let got = produce_bad_beside_good(broker, connection, batch_with_records(2, &zeros))?;
        expect_code(got, &any_refusal, "a snappy bomb of 16 MiB zeros")?;
        let lie = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00];
        let got = produce_bad_beside_good(broker, connection, batch_with_records(2, &lie))?;
        expect_code(got, &any_refusal, "a snappy block claiming 4 GiB")?;
        Ok(())
    })
    .await
}

/// Snappy has no streaming form: a batch's records are decompressed whole (up to 4 ×
/// `max.message.bytes`). A produce request naming many partitions, each a small snappy batch
/// that inflates to 2 MiB, must not decompress them all at once: the broker validates a few
/// batches at a time, so memory stays bounded however many partitions a request names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_snappy_batches_in_one_request_hold_bounded_memory() -> TestResult {
    const PARTITIONS: i32 = 100;
    const VALUE_BYTES: u64 = 2 * MIB;
    let mut broker = TestBroker::start(STRICT)?;
    let result = async {
        let topic = "snappy-wide";
        create_topic(&broker, topic, PARTITIONS).await?;
        let baseline = RssBaseline::take(&broker)?;
        // One valid record whose value is 2 MiB of zeros: about 100 KB on the wire.
        // The value's zeros, then a zero header count, complete the record.
        let records = bomb(2, &record_prefix(VALUE_BYTES)?, VALUE_BYTES + 1)?;
        let batch = batch_with_records(2, &records);
        let batches: Vec<(i32, Vec<u8>)> = (0..PARTITIONS).map(|p| (p, batch.clone())).collect();
        let body = produce_v3_partitions(-1, topic, &batches);
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(60))?;
        for round in 0..3 {
            let results = parse_produce_v3(&connection.round_trip(api_key::PRODUCE, 3, &body)?)?;
            ensure_eq!(
                results.len(),
                PARTITIONS as usize,
                "results in round {round}"
            );
            for result in results {
                ensure_eq!(
                    result.error_code,
                    0,
                    "round {round}, partition {}",
                    result.partition
                );
            }
        }
        drop(connection);
        check_survived(
            &mut broker,
            baseline,
            "100 snappy batches of 2 MiB in one request",
        )
        .await
    }
    .await;
    broker.check(result)
}

/// An lz4 batch whose records section is not lz4 at all (a plain record), with a CRC that
/// matches: what a broken producer could send.
fn undecodable_lz4_batch() -> Vec<u8> {
    let good = good_batch();
    batch_with_records(LZ4, good.get(HEADER_BYTES..).unwrap_or_default())
}

/// With the default `produce.batch.validation=relaxed`, a compressed batch is checked by its
/// header and CRC: one whose records do not decode is stored as sent and served back byte for
/// byte (its consumer, not the broker, decodes it), except on a compacted topic, whose records
/// are always walked for their keys. With `strict` (Kafka's depth) it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_compressed_records_are_refused_when_strict_or_compacted() -> TestResult {
    with_two_partitions(STRICT, "undecodable lz4 records", |broker, connection| {
        let got = produce_bad_beside_good(broker, connection, undecodable_lz4_batch())?;
        expect_code(
            got,
            &[error_code::CORRUPT_MESSAGE],
            "undecodable lz4 records, strict",
        )
    })
    .await?;

    let mut broker = TestBroker::start(&[])?;
    let result = async {
        create_topic(&broker, TOPIC, 1).await?;
        create_topic_with(&broker, "keyed", 1, &[("cleanup.policy", "compact")]).await?;
        let baseline = RssBaseline::take(&broker)?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(60))?;
        let batch = undecodable_lz4_batch();
        for (topic, expected) in [(TOPIC, 0), ("keyed", error_code::CORRUPT_MESSAGE)] {
            let body = produce_v3_partitions(-1, topic, &[(0, batch.clone())]);
            let results = parse_produce_v3(&connection.round_trip(api_key::PRODUCE, 3, &body)?)?;
            ensure_eq!(
                results.first().map(|r| r.error_code),
                Some(expected),
                "error code of undecodable lz4 records on {topic}, relaxed"
            );
        }
        ensure_eq!(
            watermarks(&broker, "keyed", 0)?,
            (0, 0),
            "watermarks of the compacted topic"
        );
        let response = connection.round_trip(api_key::FETCH, 4, &fetch_v4(-1, TOPIC, 0, 0))?;
        let fetched = parse_fetch_v4(&response)?;
        ensure_eq!(
            fetched
                .first()
                .map(|p| (p.error_code, p.high_watermark, p.records_bytes)),
            Some((0, 1, batch.len())),
            "fetch of the stored batch (error, high watermark, bytes)"
        );
        // The leader rewrites the base offset and stamps its leader epoch into
        // `partition_leader_epoch` (bytes 12..16, outside the CRC); the rest is as produced.
        ensure!(
            response
                .windows(batch.len())
                .any(|window| window.get(16..) == batch.get(16..)),
            "the fetched batch differs from the one produced (after its base offset, length and leader epoch)"
        );
        drop(connection);
        check_survived(&mut broker, baseline, "undecodable lz4 records, relaxed").await
    }
    .await;
    broker.check(result)
}

/// Only the broker writes `__consumer_offsets`: a Produce to it fails with
/// INVALID_TOPIC_EXCEPTION, as in Kafka, and the committed offsets stay readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_an_internal_topic_is_refused() -> TestResult {
    let broker = TestBroker::start(&["--set", "offsets.topic.num.partitions=1"])?;
    let result = async {
        create_topic(&broker, TOPIC, 1).await?;
        let consumer = committer(&broker, "internal-write")?;
        commit_offset(&consumer, TOPIC, 7)?;
        let before = watermarks(&broker, "__consumer_offsets", 0)?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(60))?;
        for batch in [good_batch(), undecodable_lz4_batch()] {
            let body = produce_v3_partitions(-1, "__consumer_offsets", &[(0, batch)]);
            let results = parse_produce_v3(&connection.round_trip(api_key::PRODUCE, 3, &body)?)?;
            ensure_eq!(
                results.first().map(|r| r.error_code),
                Some(error_code::INVALID_TOPIC_EXCEPTION),
                "error code of a produce to __consumer_offsets"
            );
        }
        ensure_eq!(
            watermarks(&broker, "__consumer_offsets", 0)?,
            before,
            "watermarks of __consumer_offsets"
        );
        commit_offset(&consumer, TOPIC, 8)?;
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_outside_minus_one_to_one_get_invalid_required_acks() -> TestResult {
    with_two_partitions(&[], "bad acks", |broker, connection| {
        for acks in [2i16, -2, 100, i16::MIN] {
            let before = watermarks(broker, TOPIC, 0)?;
            let body = produce_v3_partitions(acks, TOPIC, &[(0, good_batch()), (1, good_batch())]);
            let response = connection.round_trip(api_key::PRODUCE, 3, &body)?;
            let results = parse_produce_v3(&response)?;
            ensure_eq!(results.len(), 2, "partition results for acks={acks}");
            for result in &results {
                ensure_eq!(
                    result.error_code,
                    error_code::INVALID_REQUIRED_ACKS,
                    "error code of partition {} with acks={acks}",
                    result.partition
                );
            }
            ensure_eq!(
                watermarks(broker, TOPIC, 0)?,
                before,
                "watermarks after acks={acks}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_claiming_to_be_a_replica_is_refused_without_effect() -> TestResult {
    with_two_partitions(&[], "replica fetches", |broker, connection| {
        let body = produce_v3_partitions(-1, TOPIC, &[(0, good_batch())]);
        let response = connection.round_trip(api_key::PRODUCE, 3, &body)?;
        ensure_eq!(
            parse_produce_v3(&response)?.first().map(|r| r.error_code),
            Some(0),
            "seed produce"
        );
        let before = watermarks(broker, TOPIC, 0)?;
        // A follower would fetch past the high watermark to advance it; refuse every claim.
        for replica_id in [0, 1, i32::MAX] {
            for offset in [0, before.1, before.1 + 10] {
                let response = connection.round_trip(
                    api_key::FETCH,
                    4,
                    &fetch_v4(replica_id, TOPIC, 0, offset),
                )?;
                let partitions = parse_fetch_v4(&response)?;
                ensure_eq!(partitions.len(), 1, "partitions in the fetch response");
                let partition = partitions.first().ok_or("no partition")?;
                ensure_eq!(
                    partition.error_code,
                    error_code::NOT_LEADER_OR_FOLLOWER,
                    "fetch as replica {replica_id} from {offset}"
                );
                ensure_eq!(
                    partition.records_bytes,
                    0,
                    "record bytes returned to replica {replica_id}"
                );
            }
        }
        ensure_eq!(
            watermarks(broker, TOPIC, 0)?,
            before,
            "watermarks after replica fetches"
        );
        // A consumer fetch (replica id -1) is still served.
        let response = connection.round_trip(api_key::FETCH, 4, &fetch_v4(-1, TOPIC, 0, 0))?;
        let partitions = parse_fetch_v4(&response)?;
        let partition = partitions.first().ok_or("no partition")?;
        ensure_eq!(partition.error_code, 0, "consumer fetch error code");
        ensure_eq!(
            partition.high_watermark,
            before.1,
            "consumer fetch high watermark"
        );
        ensure!(
            partition.records_bytes > 0,
            "consumer fetch returned no records"
        );
        Ok(())
    })
    .await
}
