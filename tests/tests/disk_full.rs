//! Disk full while producing: the data dir is a small tmpfs. Once it fills, produce gets
//! KAFKA_STORAGE_ERROR and nothing partial becomes visible; everything acknowledged before
//! reads back; an idempotent producer's pipeline behind a refused write is refused as not
//! persisted (not out of order) and lands once when resent; when space returns (a topic
//! deleted) writes resume; the broker never exits. A
//! SyncGroup whose group metadata cannot be written fails instead of answering success.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::admin::AdminOptions;
use runnel_e2e::hostile::{check_survived, error_code, RssBaseline};
use runnel_e2e::wire::{
    api_key, init_producer_id_v0, parse_init_producer_id_v0, parse_produce_v3, produce_v3, put_i32,
    put_string, record_batch, ProducerIdentity, RawConnection, Reader,
};
use runnel_e2e::{
    admin, commit_offset, committer, create_topic, ensure, ensure_eq, read_all, watermarks, Result,
    TestBroker, TestResult, WAIT_TIMEOUT,
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
    let identity = ProducerIdentity {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    batch_of(round, identity)
}

/// Batch `round`'s records ([`RECORDS_PER_BATCH`] values of [`VALUE_BYTES`]) as `identity`.
fn batch_of(round: usize, identity: ProducerIdentity) -> Vec<u8> {
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
    record_batch(&refs, identity, now_ms)
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
        create_topic(&broker, "idempotent", 1).await?;
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(60))?;

        // An idempotent producer writes its first batch while there is room.
        let body = connection.round_trip(api_key::INIT_PRODUCER_ID, 0, &init_producer_id_v0())?;
        let (code, producer_id, producer_epoch) = parse_init_producer_id_v0(&body)?;
        ensure_eq!(code, 0, "InitProducerId");
        let idempotent = |round: usize| {
            let base_sequence = i32::try_from(round * RECORDS_PER_BATCH).unwrap_or(i32::MAX);
            batch_of(
                round,
                ProducerIdentity {
                    producer_id,
                    producer_epoch,
                    base_sequence,
                },
            )
        };
        ensure_eq!(
            produce(&mut connection, "idempotent", &idempotent(0))?,
            (0, 0),
            "the idempotent producer's first batch"
        );

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

        // The idempotent producer's next batch is refused by the full disk; the one it had
        // pipelined behind it has a sequence gap only because that write failed here: it is
        // answered as a storage error too (retriable, not persisted), not OUT_OF_ORDER_SEQUENCE,
        // which librdkafka takes for lost data and answers with an epoch bump.
        for round in [1, 2] {
            let (code, _) = produce(&mut connection, "idempotent", &idempotent(round))?;
            ensure_eq!(
                code,
                error_code::KAFKA_STORAGE_ERROR,
                "idempotent batch {round} on a full disk"
            );
        }

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
        // The producer resends its pipeline in order: each batch lands once, at its offsets.
        for round in [1, 2] {
            let expected = (round * RECORDS_PER_BATCH) as i64;
            ensure_eq!(
                produce(&mut connection, "idempotent", &idempotent(round))?,
                (0, expected),
                "idempotent batch {round} resent after space returned"
            );
        }
        ensure_eq!(
            watermarks(&broker, "idempotent", 0)?,
            (0, 3 * RECORDS_PER_BATCH as i64),
            "idempotent-0 holds the three batches once"
        );
        drop(connection);
        check_survived(&mut broker, baseline, "a full disk").await
    }
    .await;
    let result = broker.check(result);
    let _ = broker.kill9();
    drop(tmpfs);
    result
}

/// JoinGroup (key 11) and SyncGroup (key 14), hand-encoded at v0: librdkafka answers a failed
/// SyncGroup by finding the coordinator and rejoining in a loop, which hides the error code.
const JOIN_GROUP: i16 = 11;
const SYNC_GROUP: i16 = 14;
/// NOT_COORDINATOR: what Kafka's `storeGroup` answers for a storage error.
const NOT_COORDINATOR: i16 = 16;

/// Fills the filesystem of `dir` to the last page with a file of its own.
fn fill_filesystem(dir: &Path) -> Result<PathBuf> {
    use std::io::Write;
    let path = dir.join(".ballast");
    let mut file = std::fs::File::create(&path)?;
    // Large writes, then single bytes: a write fails only once no page is left.
    for size in [64 * 1024, 1] {
        let chunk = vec![b'b'; size];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(path)
}

/// The leader of a new generation hands in its assignment while the disk is full: the group
/// metadata cannot be written, so the SyncGroup fails (NOT_COORDINATOR, as Kafka maps a storage
/// error in `storeGroup`) instead of handing out an assignment a restart would forget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_group_fails_when_the_assignment_cannot_be_stored() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "group.initial.rebalance.delay.ms=0"])?;
    let mut tmpfs: Option<Tmpfs> = None;
    let result = async {
        broker.terminate()?;
        tmpfs = Some(Tmpfs::mount(&broker.data_dir())?);
        broker.start_again()?;
        // A commit of another group creates __consumer_offsets (the group below lives in a
        // partition that stays empty: its first write needs a fresh page).
        create_topic(&broker, "t", 1).await?;
        let committer = committer(&broker, "offsets-creator")?;
        commit_offset(&committer, "t", 0)?;
        fill_filesystem(&broker.data_dir())?;

        let group = "assignment-on-full-disk";
        let mut connection = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
        let mut join = Vec::new();
        put_string(&mut join, group);
        put_i32(&mut join, 10_000); // session_timeout_ms
        put_string(&mut join, ""); // member_id
        put_string(&mut join, "consumer");
        put_i32(&mut join, 1);
        put_string(&mut join, "range");
        put_i32(&mut join, 0); // empty metadata
        let response = connection.round_trip(JOIN_GROUP, 0, &join)?;
        let mut reader = Reader::new(&response);
        ensure_eq!(reader.i16()?, 0, "JoinGroup error");
        let generation_id = reader.i32()?;
        let _protocol = reader.string()?;
        let leader = reader.string()?;
        let member_id = reader.string()?;
        ensure_eq!(leader, member_id, "the only member leads");

        let mut sync = Vec::new();
        put_string(&mut sync, group);
        put_i32(&mut sync, generation_id);
        put_string(&mut sync, &member_id);
        put_i32(&mut sync, 1);
        put_string(&mut sync, &member_id);
        put_i32(&mut sync, 3);
        sync.extend_from_slice(b"abc");
        let response = connection.round_trip(SYNC_GROUP, 0, &sync)?;
        let mut reader = Reader::new(&response);
        ensure_eq!(
            reader.i16()?,
            NOT_COORDINATOR,
            "SyncGroup error when the group metadata cannot be written"
        );
        ensure_eq!(reader.i32()?, 0, "assignment bytes handed out");
        ensure!(broker.is_running()?, "the broker exited");
        Ok(())
    }
    .await;
    let result = broker.check(result);
    let _ = broker.kill9();
    drop(tmpfs);
    result
}
