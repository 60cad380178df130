//! Idempotent producer: InitProducerId, sequence numbers, and a replayed batch appended once.

use std::collections::HashSet;
use std::time::Duration;

use runnel_e2e::wire::{
    api_key, init_producer_id_v0, parse_init_producer_id_v0, parse_produce_v3, produce_v3,
    record_batch, PartitionProduceResult, ProducerIdentity, RawConnection,
};
use runnel_e2e::{
    create_topic, ensure, ensure_eq, produce_all, producer, read_all, watermarks, Record, Result,
    TestBroker, TestResult,
};

const RECORDS: usize = 3_000;
const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_writes_each_record_once() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "idempotent";
        create_topic(&broker, topic, PARTITIONS).await?;
        let producer = producer(
            &broker,
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("max.in.flight.requests.per.connection", "5"),
                ("retries", "1000"),
                // Small batches: many in flight at once per partition.
                ("batch.num.messages", "50"),
            ],
        )?;
        let records: Vec<Record> = (0..RECORDS)
            .map(|i| {
                (
                    Some(format!("k{}", i % 11).into_bytes()),
                    format!("{i}").into_bytes(),
                )
            })
            .collect();
        produce_all(&producer, topic, None, &records).await?;
        let by_partition = read_all(&broker, topic, PARTITIONS).await?;
        let mut seen = HashSet::new();
        for record in by_partition.values().flatten() {
            let value = record.value.as_deref().ok_or("record without value")?;
            let index: usize = std::str::from_utf8(value)?.parse()?;
            ensure!(
                seen.insert(index),
                "record {index} stored twice (second at partition {} offset {})",
                record.partition,
                record.offset
            );
        }
        ensure_eq!(seen.len(), RECORDS, "distinct records read back");
        Ok(())
    }
    .await;
    broker.check(result)
}

fn produce_raw(
    connection: &mut RawConnection,
    topic: &str,
    values: &[&[u8]],
    identity: ProducerIdentity,
) -> Result<PartitionProduceResult> {
    let batch = record_batch(values, identity, 1_700_000_000_000);
    let body = produce_v3(-1, topic, 0, &batch)?;
    let response = connection.round_trip(api_key::PRODUCE, 3, &body)?;
    let results = parse_produce_v3(&response)?;
    ensure_eq!(
        results.len(),
        1,
        "partition results in the produce response"
    );
    results
        .into_iter()
        .next()
        .ok_or_else(|| "no partition result".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_idempotent_batch_is_appended_once() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "replay";
        create_topic(&broker, topic, 1).await?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(30))?;
        let response =
            connection.round_trip(api_key::INIT_PRODUCER_ID, 0, &init_producer_id_v0())?;
        let (error_code, producer_id, producer_epoch) = parse_init_producer_id_v0(&response)?;
        ensure_eq!(error_code, 0, "InitProducerId error code");
        ensure!(
            producer_id >= 0,
            "InitProducerId returned producer id {producer_id}"
        );
        let identity = |base_sequence| ProducerIdentity {
            producer_id,
            producer_epoch,
            base_sequence,
        };

        let first = produce_raw(&mut connection, topic, &[b"a", b"b", b"c"], identity(0))?;
        ensure_eq!((first.error_code, first.base_offset), (0, 0), "first batch");
        let second = produce_raw(&mut connection, topic, &[b"d", b"e"], identity(3))?;
        ensure_eq!(
            (second.error_code, second.base_offset),
            (0, 3),
            "second batch"
        );

        // A client retrying the second batch (its response was lost) gets the original offset
        // back and nothing is appended.
        let replay = produce_raw(&mut connection, topic, &[b"d", b"e"], identity(3))?;
        ensure_eq!(replay.error_code, 0, "error code of the replayed batch");
        ensure_eq!(replay.base_offset, 3, "base offset of the replayed batch");
        ensure_eq!(
            watermarks(&broker, topic, 0)?,
            (0, 5),
            "watermarks after the replay"
        );

        // A gap in the sequence is refused: OUT_OF_ORDER_SEQUENCE_NUMBER (45).
        let gap = produce_raw(&mut connection, topic, &[b"z"], identity(10))?;
        ensure_eq!(
            gap.error_code,
            45,
            "error code of a batch with a sequence gap"
        );
        ensure_eq!(
            watermarks(&broker, topic, 0)?,
            (0, 5),
            "watermarks after the refused batch"
        );

        // The next sequence still works.
        let third = produce_raw(&mut connection, topic, &[b"f"], identity(5))?;
        ensure_eq!((third.error_code, third.base_offset), (0, 5), "third batch");

        let stored = read_all(&broker, topic, 1).await?;
        let values: Vec<Vec<u8>> = stored
            .values()
            .flatten()
            .filter_map(|r| r.value.clone())
            .collect();
        let expected: Vec<Vec<u8>> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        ensure_eq!(values, expected, "values stored");
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_restart_is_appended_once() -> TestResult {
    let mut broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "replay-restart";
        create_topic(&broker, topic, 1).await?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(30))?;
        let response =
            connection.round_trip(api_key::INIT_PRODUCER_ID, 0, &init_producer_id_v0())?;
        let (error_code, producer_id, producer_epoch) = parse_init_producer_id_v0(&response)?;
        ensure_eq!(error_code, 0, "InitProducerId error code");
        let identity = ProducerIdentity {
            producer_id,
            producer_epoch,
            base_sequence: 0,
        };
        let first = produce_raw(&mut connection, topic, &[b"a", b"b"], identity)?;
        ensure_eq!((first.error_code, first.base_offset), (0, 0), "first batch");
        drop(connection);

        // The producer state (last sequences per producer) survives a restart: the client's
        // retry after reconnecting is recognised as a duplicate.
        broker.restart()?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(30))?;
        let replay = produce_raw(&mut connection, topic, &[b"a", b"b"], identity)?;
        ensure_eq!(
            (replay.error_code, replay.base_offset),
            (0, 0),
            "replay of the first batch after a restart"
        );
        ensure_eq!(
            watermarks(&broker, topic, 0)?,
            (0, 2),
            "watermarks after the replay"
        );
        // A new producer id after the restart: InitProducerId never hands out an id twice.
        let response =
            connection.round_trip(api_key::INIT_PRODUCER_ID, 0, &init_producer_id_v0())?;
        let (error_code, second_id, _) = parse_init_producer_id_v0(&response)?;
        ensure_eq!(error_code, 0, "InitProducerId error code after restart");
        ensure!(
            second_id != producer_id,
            "InitProducerId handed out producer id {producer_id} again after a restart"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Each of the last five batches of a producer, replayed, returns its original offset and
/// appends nothing; a batch from an older epoch is fenced (INVALID_PRODUCER_EPOCH).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_of_the_last_five_batches_and_old_epochs_append_nothing() -> TestResult {
    let mut broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "replay-window";
        create_topic(&broker, topic, 1).await?;
        let baseline = runnel_e2e::hostile::RssBaseline::take(&broker)?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(30))?;
        let response =
            connection.round_trip(api_key::INIT_PRODUCER_ID, 0, &init_producer_id_v0())?;
        let (error_code, producer_id, producer_epoch) = parse_init_producer_id_v0(&response)?;
        ensure_eq!(error_code, 0, "InitProducerId error code");
        let identity = |producer_epoch, base_sequence| ProducerIdentity {
            producer_id,
            producer_epoch,
            base_sequence,
        };
        // Eight batches of two records: sequences 0, 2, .., 14 at offsets 0, 2, .., 14.
        let values: Vec<Vec<u8>> = (0..16).map(|i| format!("v{i}").into_bytes()).collect();
        let pair = |batch: usize| -> Vec<&[u8]> {
            values
                .iter()
                .skip(batch * 2)
                .take(2)
                .map(Vec::as_slice)
                .collect()
        };
        for batch in 0..8 {
            let sequence = (batch * 2) as i32;
            let result = produce_raw(
                &mut connection,
                topic,
                &pair(batch),
                identity(producer_epoch, sequence),
            )?;
            ensure_eq!(
                (result.error_code, result.base_offset),
                (0, i64::from(sequence)),
                "batch {batch}"
            );
        }
        for batch in 3..8 {
            let sequence = (batch * 2) as i32;
            let replay = produce_raw(
                &mut connection,
                topic,
                &pair(batch),
                identity(producer_epoch, sequence),
            )?;
            ensure_eq!(
                (replay.error_code, replay.base_offset),
                (0, i64::from(sequence)),
                "replay of batch {batch} (one of the last five)"
            );
            ensure_eq!(
                watermarks(&broker, topic, 0)?,
                (0, 16),
                "watermarks after replaying batch {batch}"
            );
        }
        // A new epoch starts again at sequence 0; the old epoch is then fenced.
        let bumped = produce_raw(
            &mut connection,
            topic,
            &[b"new epoch"],
            identity(producer_epoch + 1, 0),
        )?;
        ensure_eq!(
            (bumped.error_code, bumped.base_offset),
            (0, 16),
            "first batch of the next epoch"
        );
        let fenced = produce_raw(
            &mut connection,
            topic,
            &[b"stale"],
            identity(producer_epoch, 16),
        )?;
        ensure_eq!(
            fenced.error_code,
            47,
            "error code of a batch from the old epoch (INVALID_PRODUCER_EPOCH)"
        );
        ensure_eq!(
            watermarks(&broker, topic, 0)?,
            (0, 17),
            "watermarks after the fenced batch"
        );
        drop(connection);
        runnel_e2e::hostile::check_survived(&mut broker, baseline, "replays and an old epoch").await
    }
    .await;
    broker.check(result)
}

/// OUT_OF_ORDER_SEQUENCE_NUMBER.
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

/// [`produce_raw`] of one record, checking the partition's error code.
fn produce_expecting(
    connection: &mut RawConnection,
    topic: &str,
    identity: ProducerIdentity,
    error_code: i16,
    what: &str,
) -> Result<PartitionProduceResult> {
    let result = produce_raw(connection, topic, &[b"v"], identity)?;
    ensure_eq!(result.error_code, error_code, "{what}");
    Ok(result)
}

/// With `producer.id.expiration.ms=3000`, a producer that goes quiet is forgotten: a batch with
/// its old id and a sequence that leaves a gap, refused while its state is held, is appended
/// once it expired, as Kafka appends the first batch of a producer it has no state for. A
/// producer that keeps writing keeps its state: its gaps are still refused and its replays
/// still answered with the original offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_producer_expires_and_a_live_one_does_not() -> TestResult {
    let broker = TestBroker::start(&[
        "--set",
        "producer.id.expiration.ms=3000",
        "--set",
        "log.retention.check.interval.ms=500",
    ])?;
    let result = async {
        let topic = "expiry";
        create_topic(&broker, topic, 1).await?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(30))?;
        let mut new_producer = || -> Result<i64> {
            let response =
                connection.round_trip(api_key::INIT_PRODUCER_ID, 0, &init_producer_id_v0())?;
            let (error_code, producer_id, _) = parse_init_producer_id_v0(&response)?;
            ensure_eq!(error_code, 0, "InitProducerId error code");
            Ok(producer_id)
        };
        let (quiet, live) = (new_producer()?, new_producer()?);
        let identity = |producer_id, base_sequence| ProducerIdentity {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        };
        let c = &mut connection;
        produce_expecting(
            c,
            topic,
            identity(quiet, 0),
            0,
            "quiet producer, first batch",
        )?;
        produce_expecting(
            c,
            topic,
            identity(quiet, 5),
            OUT_OF_ORDER_SEQUENCE_NUMBER,
            "a gap while the quiet producer's state is held",
        )?;
        let mut live_sequence = 0;
        produce_expecting(c, topic, identity(live, 0), 0, "live producer, first batch")?;

        // The live producer writes on; the quiet one's gap is retried until it is accepted.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let last_live = loop {
            live_sequence += 1;
            let last_live = produce_expecting(
                c,
                topic,
                identity(live, live_sequence),
                0,
                "live producer, next batch",
            )?;
            let retry = produce_raw(c, topic, &[b"v"], identity(quiet, 5))?;
            if retry.error_code == 0 {
                break last_live;
            }
            ensure_eq!(
                retry.error_code,
                OUT_OF_ORDER_SEQUENCE_NUMBER,
                "the quiet producer's gap before expiry"
            );
            ensure!(
                std::time::Instant::now() < deadline,
                "the quiet producer's state never expired"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };

        // The live producer was not forgotten.
        let replay = produce_expecting(
            c,
            topic,
            identity(live, live_sequence),
            0,
            "a replay of the live producer's last batch",
        )?;
        ensure_eq!(
            replay.base_offset,
            last_live.base_offset,
            "a replay of the live producer's last batch answers its original offset"
        );
        produce_expecting(
            c,
            topic,
            identity(live, live_sequence + 3),
            OUT_OF_ORDER_SEQUENCE_NUMBER,
            "a gap of the live producer",
        )?;
        // The quiet producer is known again from its accepted batch on.
        produce_expecting(
            c,
            topic,
            identity(quiet, 9),
            OUT_OF_ORDER_SEQUENCE_NUMBER,
            "a gap after the quiet producer wrote again",
        )?;
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Until transactions exist, `init_transactions()` must fail at once with a fatal error that
/// says what happened, not retry a bare INVALID_REQUEST until its timeout; the broker logs the
/// transactional id it refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_transactions_fails_fast_with_a_fatal_error() -> TestResult {
    use rdkafka::error::KafkaError;
    use rdkafka::producer::Producer;
    use rdkafka::types::RDKafkaErrorCode;

    let broker = TestBroker::start(&[])?;
    let result = async {
        let transactional_id = "payments-tx-1";
        let producer = producer(&broker, &[("transactional.id", transactional_id)])?;
        // The deadline only guards against a hang: librdkafka retries a non-fatal error until
        // it, and ends with a timeout error, which the check below rejects.
        let outcome = tokio::task::spawn_blocking(move || {
            producer.init_transactions(Duration::from_secs(30))
        })
        .await?;
        match outcome {
            Ok(()) => {
                return Err("init_transactions succeeded without a transaction coordinator".into())
            }
            Err(KafkaError::Transaction(error)) => {
                ensure_eq!(
                    error.code(),
                    RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
                    "init_transactions error ({error})"
                );
                ensure!(
                    error.is_fatal(),
                    "init_transactions error is not fatal: {error}"
                );
            }
            Err(other) => return Err(format!("init_transactions: unexpected {other}").into()),
        }
        ensure!(
            broker.log().contains(transactional_id),
            "the broker log does not name the refused transactional id"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}
