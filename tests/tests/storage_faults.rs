//! A failed fsync takes its partition offline (issue 21, point 1). With the testing knob
//! `storage.fault.injection`, the first fdatasync of one partition's segment fails, as a disk
//! error would make it. Linux reports such an error once and marks the pages clean, so a
//! retried fsync would "succeed" without the data: the broker must never acknowledge after
//! it. A produce with acks=all gets KAFKA_STORAGE_ERROR, and so does every later produce and
//! fetch of that partition, while another partition is served as before; a restart reopens
//! the log through recovery and the partition serves again.

use runnel_e2e::hostile::{error_code, fetch_v4, parse_fetch_v4};
use runnel_e2e::wire::{
    api_key, parse_produce_v3, produce_v3, record_batch, ProducerIdentity, RawConnection,
};
use runnel_e2e::{create_topic, ensure, ensure_eq, Result, TestBroker, TestResult, WAIT_TIMEOUT};

const DOOMED: &str = "doomed";
const HEALTHY: &str = "healthy";

fn batch(value: &[u8]) -> Vec<u8> {
    let no_identity = ProducerIdentity {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    record_batch(&[value], no_identity, 0)
}

/// Produces `value` to partition 0 of `topic` with acks=all; returns the error code.
fn produce(connection: &mut RawConnection, topic: &str, value: &[u8]) -> Result<i16> {
    let body = produce_v3(-1, topic, 0, &batch(value))?;
    let response = connection.round_trip(api_key::PRODUCE, 3, &body)?;
    let result = parse_produce_v3(&response)?
        .into_iter()
        .next()
        .ok_or("no partition in the produce response")?;
    Ok(result.error_code)
}

/// Fetches partition 0 of `topic` from offset 0; returns the error code and the record bytes.
fn fetch(connection: &mut RawConnection, topic: &str) -> Result<(i16, usize)> {
    let response = connection.round_trip(api_key::FETCH, 4, &fetch_v4(-1, topic, 0, 0))?;
    let partition = parse_fetch_v4(&response)?
        .into_iter()
        .next()
        .ok_or("no partition in the fetch response")?;
    Ok((partition.error_code, partition.records_bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_acks_all_and_takes_only_its_partition_offline_until_restart(
) -> TestResult {
    let mut broker = TestBroker::start(&[])?;
    let result = async {
        create_topic(&broker, DOOMED, 1).await?;
        create_topic(&broker, HEALTHY, 1).await?;
        // The partition directory's name holds the topic id, known once the topic exists: the
        // fault is set on a restart.
        ensure!(broker.terminate()?.success(), "SIGTERM exit status");
        let doomed_dir = broker.partition_dir(DOOMED, 0);
        let doomed_dir = doomed_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("no partition directory")?;
        let fault = format!(
            "storage.fault.injection=fsync-error-after:0:{doomed_dir}/00000000000000000000.log"
        );
        broker.set_extra_args(&["--set", &fault]);
        broker.start_again()?;
        let mut connection = RawConnection::connect(&broker, WAIT_TIMEOUT)?;

        ensure_eq!(
            produce(&mut connection, DOOMED, b"its fsync fails")?,
            error_code::KAFKA_STORAGE_ERROR,
            "acks=all produce whose fsync failed"
        );
        // A retried fsync would succeed now (the fault fires once, as Linux reports it once):
        // only the log's failed state keeps this from being acknowledged.
        ensure_eq!(
            produce(&mut connection, DOOMED, b"after the failure")?,
            error_code::KAFKA_STORAGE_ERROR,
            "acks=all produce after the failed fsync"
        );
        ensure_eq!(
            fetch(&mut connection, DOOMED)?.0,
            error_code::KAFKA_STORAGE_ERROR,
            "fetch from the partition whose fsync failed"
        );

        // Every other partition is served as before.
        ensure_eq!(
            produce(&mut connection, HEALTHY, b"fine")?,
            0,
            "acks=all produce to another partition"
        );
        let (code, bytes) = fetch(&mut connection, HEALTHY)?;
        ensure!(
            code == 0 && bytes > 0,
            "fetch from another partition: error {code}, {bytes} bytes"
        );
        ensure!(
            broker
                .log()
                .lines()
                .any(|l| l.contains("ERROR") && l.contains("offline until it is reopened")),
            "no ERROR saying the log went offline in the broker log"
        );
        drop(connection);

        // A restart (without the fault) reopens the log through recovery.
        broker.set_extra_args(&[]);
        broker.restart()?;
        let mut connection = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
        ensure_eq!(
            produce(&mut connection, DOOMED, b"after the restart")?,
            0,
            "acks=all produce after the restart"
        );
        let (code, bytes) = fetch(&mut connection, DOOMED)?;
        ensure!(
            code == 0 && bytes > 0,
            "fetch after the restart: error {code}, {bytes} bytes"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}
