//! A real `runnel` broker with its data dir on the fault-injecting mount: kill -9, power loss
//! (`drop-unsynced`), restart. Every acks=all record (fsynced before its acknowledgement) is
//! still there at its acknowledged offset. acks=1 records acknowledged after the last fsync
//! may vanish (the broker fsyncs them in the background right after answering, so whether any
//! are still unsynced at the kill is a race the test does not control); whatever survives is
//! exactly what was acknowledged at that offset, offsets stay dense, and new records follow
//! the survivors: the broker truncated any torn tail and serves no garbage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{FaultFs, Result};
use rdkafka::Offset;
use runnel_e2e::{
    commit_offset, committed_offset, committer, create_topic, create_topic_with, ensure, ensure_eq,
    produce_all, producer, read_all, Acked, Record, TestBroker, TestResult,
};

const TOPIC: &str = "power-loss";

fn numbered(prefix: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| (None, format!("{prefix} {i}").into_bytes()))
        .collect()
}

/// A mount, and a broker with its data dir on it and `broker_args`; `None` where FUSE cannot be
/// mounted. The mount is first in the pair: dropped last, after the broker stopped.
fn broker_on_faultfs(test: &str, broker_args: &[&str]) -> Result<Option<(FaultFs, TestBroker)>> {
    let Some(fs) = FaultFs::mount_unless_skipped(test, &[])? else {
        return Ok(None);
    };
    let data_dir = fs.mount_point().join("data").display().to_string();
    let mut args = vec!["--data-dir", data_dir.as_str()];
    args.extend_from_slice(broker_args);
    let broker = TestBroker::start(&args)?;
    Ok(Some((fs, broker)))
}

/// The test's outcome, with the broker's log and the file system's on failure.
fn finish(fs: FaultFs, broker: TestBroker, result: Result<()>) -> TestResult {
    let result = broker.check(result);
    drop(broker);
    if result.is_err() {
        eprintln!("--- runnel-faultfs log ---\n{}", fs.log());
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_records_survive_power_loss_and_the_broker_restarts_cleanly() -> TestResult {
    let Some((fs, mut broker)) = broker_on_faultfs(
        "acks_all_records_survive_power_loss_and_the_broker_restarts_cleanly",
        // acks=0/1 records are fsynced only by an acks=all round or this background flush:
        // an hour keeps it from covering the last acks=1 round.
        &["--set", "log.flush.interval.ms=3600000"],
    )?
    else {
        return Ok(());
    };
    let result = async {
        create_topic(&broker, TOPIC, 1).await?;
        let all = producer(&broker, &[("acks", "all"), ("linger.ms", "0")])?;
        let one = producer(&broker, &[("acks", "1"), ("linger.ms", "0")])?;
        // acks=all, acks=1, acks=all (its fsync covers the acks=1 round before it), acks=1.
        let rounds = [
            numbered("all-a", 100),
            numbered("one-a", 50),
            numbered("all-b", 100),
            numbered("one-b", 50),
        ];
        let mut acked: Vec<Acked> = Vec::new();
        for (index, records) in rounds.iter().enumerate() {
            let producer = if index % 2 == 0 { &all } else { &one };
            acked.extend(produce_all(producer, TOPIC, Some(0), records).await?);
        }
        let sent: Vec<&Record> = rounds.iter().flatten().collect();
        for (index, ack) in acked.iter().enumerate() {
            ensure_eq!(
                ack.offset,
                index as i64,
                "acknowledged offset of record #{index}"
            );
        }
        drop((all, one));

        broker.kill9()?;
        let (files, bytes) = fs.drop_unsynced()?;
        eprintln!("power loss dropped {bytes} unsynced bytes in {files} files");
        broker.start_again()?;

        let survivors = read_all(&broker, TOPIC, 1)
            .await?
            .remove(&0)
            .unwrap_or_default();
        let acks_all_end = 250; // the end of the last acks=all round
        ensure!(
            (acks_all_end..=sent.len()).contains(&survivors.len()),
            "{} records after power loss: every acks=all record (the first {acks_all_end}) \
             must be there, and at most the {} sent",
            survivors.len(),
            sent.len()
        );
        eprintln!(
            "{} of the last 50 acks=1 records survived",
            survivors.len() - acks_all_end
        );
        for record in &survivors {
            let index = usize::try_from(record.offset)?;
            ensure!(
                record.value.as_deref() == Some(sent[index].1.as_slice()),
                "offset {}: read {:?}, acknowledged {:?}",
                record.offset,
                record.value.as_deref().map(String::from_utf8_lossy),
                String::from_utf8_lossy(&sent[index].1)
            );
        }
        let synced = survivors.len();

        // The log goes on right after the survivors.
        let all = producer(&broker, &[("acks", "all"), ("linger.ms", "0")])?;
        let after = produce_all(&all, TOPIC, Some(0), &numbered("after", 10)).await?;
        ensure_eq!(
            after[0].offset,
            synced as i64,
            "first offset after the restart"
        );
        let records = read_all(&broker, TOPIC, 1)
            .await?
            .remove(&0)
            .unwrap_or_default();
        ensure_eq!(records.len(), synced + 10, "records after producing again");
        Ok(())
    }
    .await;
    finish(fs, broker, result)
}

/// Many files and renames: segments rolled every 4 KiB on three partitions, and a consumer
/// group's committed offset (answered only once fsynced). After kill -9 and power loss every
/// acknowledged record is at its offset and the committed offset is the one committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_segments_and_committed_offsets_survive_power_loss() -> TestResult {
    let Some((fs, mut broker)) = broker_on_faultfs(
        "rolled_segments_and_committed_offsets_survive_power_loss",
        &[],
    )?
    else {
        return Ok(());
    };
    let result = async {
        let topic = "rolled";
        create_topic_with(&broker, topic, 3, &[("segment.bytes", "4096")]).await?;
        let all = producer(&broker, &[("acks", "all"), ("linger.ms", "0")])?;
        let mut sent: Vec<(i32, Vec<u8>)> = Vec::new();
        for partition in 0..3 {
            // 200 records of about 100 bytes in requests of 10 (one batch each: a batch never
            // spans segments): several 4 KiB segments.
            let records = numbered(&format!("p{partition} {:-<90}", ""), 200);
            let mut acked = Vec::new();
            for chunk in records.chunks(10) {
                acked.extend(produce_all(&all, topic, Some(partition), chunk).await?);
            }
            for (index, (ack, (_, value))) in acked.iter().zip(records).enumerate() {
                ensure_eq!(
                    ack.offset,
                    index as i64,
                    "acknowledged offset in partition {partition}"
                );
                sent.push((partition, value));
            }
        }
        drop(all);
        let group = committer(&broker, "power-loss-group")?;
        commit_offset(&group, topic, 123)?;
        drop(group);
        // The harness's partition_dir looks in its own data dir; this one is on the mount.
        let mut segments = 0;
        for dir in std::fs::read_dir(fs.mount_point().join("data"))? {
            let dir = dir?;
            if dir
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{topic}-0."))
            {
                for file in std::fs::read_dir(dir.path())? {
                    segments += usize::from(file?.file_name().to_string_lossy().ends_with(".log"));
                }
            }
        }
        ensure!(
            segments > 1,
            "partition 0 has {segments} segment(s): expected rolls"
        );

        broker.kill9()?;
        let (files, bytes) = fs.drop_unsynced()?;
        eprintln!("power loss dropped {bytes} unsynced bytes in {files} files");
        broker.start_again()?;

        let read = read_all(&broker, topic, 3).await?;
        for partition in 0..3 {
            let expected: Vec<&[u8]> = sent
                .iter()
                .filter(|(p, _)| *p == partition)
                .map(|(_, value)| value.as_slice())
                .collect();
            let got: Vec<&[u8]> = read
                .get(&partition)
                .map(|records| records.iter().filter_map(|r| r.value.as_deref()).collect())
                .unwrap_or_default();
            ensure!(
                got == expected,
                "partition {partition}: records differ after power loss"
            );
        }
        let group = committer(&broker, "power-loss-group")?;
        ensure_eq!(
            committed_offset(&group, topic)?,
            Offset::Offset(123),
            "committed offset after power loss"
        );
        Ok(())
    }
    .await;
    finish(fs, broker, result)
}
