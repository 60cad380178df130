//! A real `runnel` broker with its data dir on the fault-injecting mount: kill -9, power loss
//! (`drop-unsynced`), restart. Every acks=all record (fsynced before its acknowledgement) is
//! still there at its acknowledged offset. acks=1 records acknowledged after the last fsync
//! may vanish (the broker fsyncs them in the background right after answering, so whether any
//! are still unsynced at the kill is a race the test does not control); whatever survives is
//! exactly what was acknowledged at that offset, offsets stay dense, and new records follow
//! the survivors: the broker truncated any torn tail and serves no garbage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::FaultFs;
use runnel_e2e::{
    create_topic, ensure, ensure_eq, produce_all, producer, read_all, Acked, Record, TestBroker,
    TestResult,
};

const TOPIC: &str = "power-loss";

fn numbered(prefix: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| (None, format!("{prefix} {i}").into_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_records_survive_power_loss_and_the_broker_restarts_cleanly() -> TestResult {
    // Declared first, dropped last: the broker stops before the mount goes.
    let Some(fs) = FaultFs::mount_unless_skipped(
        "acks_all_records_survive_power_loss_and_the_broker_restarts_cleanly",
        &[],
    )?
    else {
        return Ok(());
    };
    let data_dir = fs.mount_point().join("data");
    let data_dir = data_dir.display().to_string();
    let mut broker = TestBroker::start(&[
        "--data-dir",
        &data_dir,
        // acks=0/1 records are fsynced only by an acks=all round or this background flush:
        // an hour keeps the last acks=1 round unsynced for the whole test.
        "--set",
        "log.flush.interval.ms=3600000",
    ])?;
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
    let result = broker.check(result);
    drop(broker);
    if result.is_err() {
        eprintln!("--- runnel-faultfs log ---\n{}", fs.log());
    }
    result
}
