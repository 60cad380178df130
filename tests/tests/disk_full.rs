//! Disk full while producing: the data dir is a small tmpfs. Once it fills, produce gets
//! KAFKA_STORAGE_ERROR and nothing partial becomes visible; everything acknowledged before
//! reads back; when space returns (a topic deleted) writes resume; the broker never exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::admin::AdminOptions;
use runnel_e2e::hostile::{check_survived, error_code, RssBaseline};
use runnel_e2e::wire::{
    api_key, parse_produce_v3, produce_v3, record_batch, ProducerIdentity, RawConnection,
};
use runnel_e2e::{
    admin, create_topic, ensure, ensure_eq, read_all, watermarks, Result, TestBroker, TestResult,
    WAIT_TIMEOUT,
};

const TMPFS_SIZE: &str = "size=8m";
const RECORDS_PER_BATCH: usize = 16;
const VALUE_BYTES: usize = 4096;
/// Bound on the batches the test sends into the 8 MiB disk (about 130 fit).
const BATCHES_MAX: usize = 1_000;

/// A tmpfs mounted over a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", TMPFS_SIZE, "tmpfs"])
            .arg(dir)
            .status()
            .map_err(|e| format!("running mount (this test needs root): {e}"))?;
        ensure!(
            status.success(),
            "mount -t tmpfs on {} failed ({status}); this test needs root",
            dir.display()
        );
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the broker may still hold files open while it is being killed.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn batch(round: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..RECORDS_PER_BATCH)
        .map(|i| {
            let mut value = format!("{round}-{i}-").into_bytes();
            value.resize(VALUE_BYTES, b'.');
            value
        })
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    record_batch(
        &refs,
        ProducerIdentity {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        },
        now_ms,
    )
}

/// Produces `batch` with acks=all; returns (error code, base offset).
fn produce(connection: &mut RawConnection, topic: &str, batch: &[u8]) -> Result<(i16, i64)> {
    let body = produce_v3(-1, topic, 0, batch)?;
    let response = connection.round_trip(api_key::PRODUCE, 3, &body)?;
    let result = parse_produce_v3(&response)?
        .into_iter()
        .next()
        .ok_or("no partition in the produce response")?;
    Ok((result.error_code, result.base_offset))
}

/// Total size of the `.log` segments of one partition.
fn log_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "log") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_writes_loses_nothing_and_recovers() -> TestResult {
    let mut broker = TestBroker::start(&[])?;
    // Mounted over the data dir of a stopped broker; unmounted only after the broker is killed.
    let mut tmpfs: Option<Tmpfs> = None;
    let result = async {
        broker.terminate()?;
        tmpfs = Some(Tmpfs::mount(&broker.data_dir())?);
        broker.start_again()?;
        let baseline = RssBaseline::take(&broker)?;
        create_topic(&broker, "ballast", 1).await?;
        create_topic(&broker, "fill", 1).await?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(60))?;

        // Ballast to free later: about 2 MiB.
        for round in 0..30 {
            let (code, _) = produce(&mut connection, "ballast", &batch(round))?;
            ensure_eq!(code, 0, "ballast batch {round}");
        }

        let mut acked_bytes = 0u64;
        let mut acked_batches = 0usize;
        let mut refused = None;
        for round in 0..BATCHES_MAX {
            let bytes = batch(round);
            let (code, base_offset) = produce(&mut connection, "fill", &bytes)?;
            if code != 0 {
                refused = Some((round, code));
                break;
            }
            ensure_eq!(
                base_offset,
                (acked_batches * RECORDS_PER_BATCH) as i64,
                "base offset of fill batch {round}"
            );
            acked_bytes += bytes.len() as u64;
            acked_batches += 1;
        }
        let (round, code) =
            refused.ok_or(format!("{BATCHES_MAX} batches fitted on an 8 MiB tmpfs"))?;
        ensure_eq!(
            code,
            error_code::KAFKA_STORAGE_ERROR,
            "error code once the disk is full (batch {round})"
        );
        ensure!(acked_batches > 0, "nothing fitted before the disk was full");
        // A refused write leaves nothing behind: the log holds exactly the acknowledged bytes.
        ensure_eq!(
            log_bytes(&broker.partition_dir("fill", 0))?,
            acked_bytes,
            "bytes in fill-0's segments after the refused write"
        );
        let acked_records = (acked_batches * RECORDS_PER_BATCH) as i64;
        ensure_eq!(
            watermarks(&broker, "fill", 0)?,
            (0, acked_records),
            "fill-0 watermarks after the refused write"
        );
        // A second attempt is refused the same way, not half-written.
        let (code, _) = produce(&mut connection, "fill", &batch(round))?;
        ensure_eq!(
            code,
            error_code::KAFKA_STORAGE_ERROR,
            "retry on a full disk"
        );
        ensure_eq!(
            log_bytes(&broker.partition_dir("fill", 0))?,
            acked_bytes,
            "bytes in fill-0's segments after the retry"
        );

        // Everything acknowledged reads back, byte for byte.
        let stored = read_all(&broker, "fill", 1).await?;
        let records: Vec<_> = stored.values().flatten().collect();
        ensure_eq!(records.len() as i64, acked_records, "records read back");
        for (index, record) in records.iter().enumerate() {
            let (round, i) = (index / RECORDS_PER_BATCH, index % RECORDS_PER_BATCH);
            let mut expected = format!("{round}-{i}-").into_bytes();
            expected.resize(VALUE_BYTES, b'.');
            ensure!(
                record.value.as_deref() == Some(expected.as_slice()),
                "record at offset {} differs from what was acknowledged",
                record.offset
            );
        }

        // Space returns: delete the ballast topic, then writes resume.
        let admin = admin(&broker)?;
        let results = admin
            .delete_topics(&["ballast"], &AdminOptions::new())
            .await?;
        for result in results {
            result.map_err(|(topic, e)| format!("deleting {topic}: {e}"))?;
        }
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let (code, base_offset) = produce(&mut connection, "fill", &batch(round))?;
            if code == 0 {
                ensure_eq!(
                    base_offset,
                    acked_records,
                    "first offset after space returned"
                );
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "produce still fails with {code} {WAIT_TIMEOUT:?} after the ballast was deleted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(connection);
        check_survived(&mut broker, baseline, "a full disk").await
    }
    .await;
    let result = broker.check(result);
    let _ = broker.kill9();
    drop(tmpfs);
    result
}
