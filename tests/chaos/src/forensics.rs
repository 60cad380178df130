//! What the nodes' own logs hold, read from their segment files after the drain: each replica's
//! records, recorded as a drain of its own ([`replica_drains`]) so the checker holds every
//! replica to the rules of the drain (dense, the same value at each offset); and where a
//! duplicated value's copies came from: reads the nodes' segment files (after the drain,
//! before the nodes stop) and names, for each copy, the producer id, producer epoch and
//! sequence its batch carries. Copies with the same (producer id, epoch, sequence) are one send
//! the broker accepted twice (a broker bug); copies under different producer ids, epochs or
//! sequences are the client sending the value again under a new identity, which no broker can
//! recognise as a retry (librdkafka does this after an epoch bump). The verdict goes into the report; the
//! duplicate stays an anomaly either way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use runnel_storage::{BatchHeader, LOG_OVERHEAD_BYTES};
use serde::{Deserialize, Serialize};

use crate::history::Event;
use crate::netns::node_ids;

/// One stored copy of a value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredCopy {
    /// The node whose log holds it.
    pub node: i32,
    /// Its partition and offset.
    pub partition: i32,
    pub offset: i64,
    /// The identity its batch carries: producer id, producer epoch, the record's sequence.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub sequence: i32,
    /// The leader epoch the batch was written in.
    pub leader_epoch: i32,
}

/// What the copies of the duplicated values show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateVerdicts {
    /// Values whose copies (on one node) share producer id, epoch and sequence.
    pub same_identity: u64,
    /// Values whose copies carry different producer ids, epochs or sequences.
    pub new_identity: u64,
    /// Values whose copies could not be found in any node's log.
    pub not_found: u64,
}

/// The file the copies are listed in, in the run's output directory.
pub const DUPLICATES_FILE: &str = "duplicates.md";

/// Finds the copies of the values `events` show duplicated in the logs of the run in
/// `out_dir` (its nodes' data directories must still be readable: call before a tmpfs is
/// unmounted), lists them in [`DUPLICATES_FILE`] and returns the verdicts.
pub fn explain_duplicates(out_dir: &Path, topic: &str, events: &[Event]) -> DuplicateVerdicts {
    let values = duplicated_values(events);
    if values.is_empty() {
        return DuplicateVerdicts::default();
    }
    let copies = find_copies(out_dir, topic, &values);
    let (verdicts, text) = judge(&values, &copies);
    let _ = std::fs::write(out_dir.join(DUPLICATES_FILE), text);
    verdicts
}

/// Where node `node` of the run in `out_dir` keeps its partitions: the faultfs mount or the
/// plain data directory while the run is up, faultfs's backing directory after it.
fn node_data_dir(out_dir: &Path, node: i32) -> PathBuf {
    let node_dir = out_dir.join("nodes").join(node.to_string());
    let candidates = [
        node_dir.join("data"),
        node_dir.join("disk").join("data"),
        node_dir.join("disk").join("backing"),
    ];
    candidates
        .iter()
        .find(|dir| std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()))
        .cloned()
        .unwrap_or_else(|| node_dir.join("data"))
}

/// The reader name of node `node`'s log in the history: this prefix and the node id.
pub const REPLICA_READER_PREFIX: &str = "replica-";

/// See [`REPLICA_READER_PREFIX`].
pub fn replica_reader(node: i32) -> String {
    format!("{REPLICA_READER_PREFIX}{node}")
}

/// Each node's log of `topic` within the drain's `ranges` (partition → (start, end)), as
/// `Drained` events of reader [`replica_reader`] and one `DrainEnd` per partition and node:
/// after the cluster settled with every replica in sync, each replica holds every offset below
/// the high watermark with the value the leader served. Call while the nodes' data directories
/// are readable.
pub fn replica_drains(
    out_dir: &Path,
    topic: &str,
    ranges: &BTreeMap<i32, (i64, i64)>,
    time_ms: u64,
) -> Vec<Event> {
    let mut events = Vec::new();
    for node in node_ids() {
        let reader = replica_reader(node);
        scan_node_log(out_dir, node, topic, |partition, _, offset, _, value| {
            let below_end = ranges
                .get(&partition)
                .is_some_and(|&(start, end)| (start..end).contains(&offset));
            if below_end {
                events.push(Event::Drained {
                    time_ms,
                    reader: reader.clone(),
                    partition,
                    offset,
                    value: value.to_owned(),
                });
            }
        });
        for (&partition, &(start, end)) in ranges {
            events.push(Event::DrainEnd {
                time_ms,
                reader: reader.clone(),
                partition,
                start_offset: start,
                end_offset: end,
            });
        }
    }
    events
}

/// The values a drain (any reader) read at more than one position.
pub fn duplicated_values(events: &[Event]) -> BTreeSet<String> {
    let mut positions: BTreeMap<&str, BTreeSet<(i32, i64)>> = BTreeMap::new();
    for event in events {
        if let Event::Drained {
            partition,
            offset,
            value,
            ..
        } = event
        {
            positions
                .entry(value)
                .or_default()
                .insert((*partition, *offset));
        }
    }
    positions
        .into_iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(value, _)| value.to_owned())
        .collect()
}

/// Every stored copy of each of `values` in the nodes' logs of `topic` in the run in `out_dir`.
pub fn find_copies(
    out_dir: &Path,
    topic: &str,
    values: &BTreeSet<String>,
) -> BTreeMap<String, Vec<StoredCopy>> {
    let mut copies: BTreeMap<String, Vec<StoredCopy>> = BTreeMap::new();
    if values.is_empty() {
        return copies;
    }
    for node in node_ids() {
        scan_node_log(
            out_dir,
            node,
            topic,
            |partition, header, offset, sequence, value| {
                if values.contains(value) {
                    copies
                        .entry(value.to_owned())
                        .or_default()
                        .push(StoredCopy {
                            node,
                            partition,
                            offset,
                            producer_id: header.producer_id,
                            producer_epoch: header.producer_epoch,
                            sequence,
                            leader_epoch: header.partition_leader_epoch,
                        });
                }
            },
        );
    }
    copies
}

/// Calls `each(partition, header, offset, sequence, value)` for every record of `topic` in
/// node `node`'s log (every partition directory, every segment in offset order).
fn scan_node_log(
    out_dir: &Path,
    node: i32,
    topic: &str,
    mut each: impl FnMut(i32, &BatchHeader, i64, i32, &str),
) {
    for (partition, dir) in partition_dirs(&node_data_dir(out_dir, node), topic) {
        for segment in segment_files(&dir) {
            let Ok(bytes) = std::fs::read(&segment) else {
                continue;
            };
            scan_segment(&bytes, |header, offset, sequence, value| {
                each(partition, header, offset, sequence, value);
            });
        }
    }
}

/// Judges each value's copies (see the module doc) and writes them as markdown.
pub fn judge(
    values: &BTreeSet<String>,
    copies: &BTreeMap<String, Vec<StoredCopy>>,
) -> (DuplicateVerdicts, String) {
    let mut verdicts = DuplicateVerdicts::default();
    let mut text = String::new();
    for value in values {
        let found = copies.get(value).map(Vec::as_slice).unwrap_or_default();
        // One node's log is enough to judge (every node holds the same copies once the
        // cluster settled); take the node with the most copies.
        let on_node = node_ids()
            .map(|node| found.iter().filter(|c| c.node == node).collect::<Vec<_>>())
            .max_by_key(Vec::len)
            .unwrap_or_default();
        let identities: BTreeSet<(i64, i16, i32)> = on_node
            .iter()
            .map(|c| (c.producer_id, c.producer_epoch, c.sequence))
            .collect();
        let verdict = if on_node.len() < 2 {
            verdicts.not_found += 1;
            "fewer than two copies in any node's log"
        } else if identities.len() > 1 {
            verdicts.new_identity += 1;
            "sent again by the client under a new producer id, epoch or sequence"
        } else {
            verdicts.same_identity += 1;
            "the same producer id, epoch and sequence stored twice: a broker bug"
        };
        let _ = writeln!(text, "- `{value}`: {verdict}");
        for copy in found {
            let _ = writeln!(
                text,
                "  - node {} partition {} offset {}: producer {} epoch {} sequence {}, \
                 leader epoch {}",
                copy.node,
                copy.partition,
                copy.offset,
                copy.producer_id,
                copy.producer_epoch,
                copy.sequence,
                copy.leader_epoch
            );
        }
    }
    (verdicts, text)
}

/// The partition directories of `topic` under `data_dir` (`<topic>-<p>.<id>`), deleted ones
/// (`-delete`) left out.
fn partition_dirs(data_dir: &Path, topic: &str) -> Vec<(i32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with("-delete") {
            continue;
        }
        let Some(rest) = name.strip_prefix(topic).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let index = rest.split('.').next().and_then(|p| p.parse::<i32>().ok());
        if let Some(index) = index {
            dirs.push((index, entry.path()));
        }
    }
    dirs.sort();
    dirs
}

/// The `.log` files of a partition directory, in name (base offset) order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|ext| ext == "log"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Calls `each(header, offset, sequence, value)` for every record of every whole batch in a
/// segment's bytes; stops at the first torn or zero batch (a preallocated or torn tail).
fn scan_segment(bytes: &[u8], mut each: impl FnMut(&BatchHeader, i64, i32, &str)) {
    let mut position = 0usize;
    while let Some(rest) = bytes.get(position..).filter(|r| !r.is_empty()) {
        let Ok(header) = BatchHeader::parse(rest) else {
            return;
        };
        let Ok(size) = usize::try_from(header.size_bytes()) else {
            return;
        };
        let Some(batch) = rest.get(..size).filter(|_| size > LOG_OVERHEAD_BYTES) else {
            return;
        };
        position += size;
        let Ok(records) = runnel_protocol::batch::read_records(batch, 16 << 20) else {
            continue;
        };
        for record in records {
            let Some(value) = record.value.as_deref() else {
                continue;
            };
            let delta = i32::try_from(record.offset - header.base_offset).unwrap_or(0);
            let sequence = if header.base_sequence < 0 {
                -1
            } else {
                runnel_storage::increment_sequence(header.base_sequence, delta)
            };
            each(
                &header,
                record.offset,
                sequence,
                &String::from_utf8_lossy(value),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;
    use runnel_protocol::batch_builder::{build_batch, NewRecord};
    use runnel_storage::{rewrite_crc, set_base_offset};

    use crate::checker::AnomalyClass;

    fn copy(node: i32, offset: i64, epoch: i16, sequence: i32) -> StoredCopy {
        StoredCopy {
            node,
            partition: 0,
            offset,
            producer_id: 7,
            producer_epoch: epoch,
            sequence,
            leader_epoch: 1,
        }
    }

    #[test]
    fn copies_under_one_identity_are_a_broker_bug_and_under_two_epochs_a_client_resend() {
        let values: BTreeSet<String> = ["a", "b", "c"].map(str::to_owned).into();
        let copies: BTreeMap<String, Vec<StoredCopy>> = [
            ("a".to_owned(), vec![copy(1, 4, 0, 9), copy(1, 8, 0, 9)]),
            ("b".to_owned(), vec![copy(2, 4, 0, 9), copy(2, 8, 1, 0)]),
            ("c".to_owned(), vec![copy(3, 4, 0, 9)]),
        ]
        .into();
        let (verdicts, text) = judge(&values, &copies);
        assert_eq!(
            verdicts,
            DuplicateVerdicts {
                same_identity: 1,
                new_identity: 1,
                not_found: 1
            }
        );
        assert!(text.contains("`a`: the same producer id"), "{text}");
        assert!(text.contains("`b`: sent again by the client"), "{text}");
    }

    #[test]
    fn only_values_drained_at_two_positions_are_duplicated() {
        let drained = |partition, offset, value: &str| Event::Drained {
            time_ms: 0,
            reader: "drain".to_owned(),
            partition,
            offset,
            value: value.to_owned(),
        };
        let events = vec![
            drained(0, 0, "a"),
            drained(0, 1, "b"),
            drained(1, 0, "a"),
            drained(0, 1, "b"),
        ];
        assert_eq!(duplicated_values(&events), ["a".to_owned()].into());
    }

    /// Batches of a test segment: `(base offset, values)`.
    type Batches<'a> = &'a [(i64, &'a [&'a str])];

    /// A segment's bytes: one batch per `(base offset, values)`, producer 7 epoch 3, each
    /// batch's base sequence its base offset.
    fn segment_of(batches: Batches<'_>) -> Vec<u8> {
        let mut segment = Vec::new();
        for &(base_offset, values) in batches {
            let records: Vec<NewRecord> = values
                .iter()
                .map(|v| NewRecord {
                    key: None,
                    value: Some(v.as_bytes().to_vec()),
                    headers: Vec::new(),
                })
                .collect();
            let mut batch = build_batch(&records, 0).expect("batch").to_vec();
            set_base_offset(&mut batch, base_offset).expect("base offset");
            // producerId (43..51), producerEpoch (51..53), baseSequence (53..57).
            batch[43..51].copy_from_slice(&7i64.to_be_bytes());
            batch[51..53].copy_from_slice(&3i16.to_be_bytes());
            let base_sequence = i32::try_from(base_offset).expect("small");
            batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
            rewrite_crc(&mut batch).expect("crc");
            segment.extend_from_slice(&batch);
        }
        segment
    }

    /// Checks a history of "x" and "y" acknowledged at 0/0 and 0/1 and drained so, with the
    /// three nodes' logs as given.
    fn check_with_replicas(node_2: &[&str]) -> crate::checker::CheckResult {
        use crate::checker::tests::{drain_end, drained, invoke, ok};
        let out = tempfile::tempdir().expect("tempdir");
        let logs: [(i32, Batches<'_>); 3] = [
            (1, &[(0, &["x", "y"])]),
            (2, &[(0, node_2)]),
            // Node 3 also holds an unreplicated tail past the end: not compared.
            (3, &[(0, &["x", "y"]), (2, &["tail"])]),
        ];
        for (node, batches) in logs {
            let dir = out.path().join(format!(
                "nodes/{node}/data/chaos-0.0123456789abcdef0123456789abcdef"
            ));
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("00000000000000000000.log"), segment_of(batches))
                .expect("write");
        }
        let mut events = vec![
            invoke("x"),
            ok("x", 0, 0),
            invoke("y"),
            ok("y", 0, 1),
            drained("drain", 0, 0, "x"),
            drained("drain", 0, 1, "y"),
            drain_end("drain", 0, 0, 2),
        ];
        let ranges: BTreeMap<i32, (i64, i64)> = [(0, (0, 2))].into();
        let replicas = replica_drains(out.path(), "chaos", &ranges, 0);
        // One `Drained` per record below the end and one `DrainEnd`, per node.
        let expected = 2 + node_2.len().min(2) + 2 + 3;
        assert_eq!(replicas.len(), expected, "{replicas:?}");
        events.extend(replicas);
        crate::checker::check(&events)
    }

    #[test]
    fn copies_are_found_in_every_nodes_log_with_their_batch_identity() {
        let out = tempfile::tempdir().expect("tempdir");
        for node in [1, 2] {
            let dir = out.path().join(format!(
                "nodes/{node}/data/chaos-1.0123456789abcdef0123456789abcdef"
            ));
            std::fs::create_dir_all(&dir).expect("mkdir");
            // "x" at offsets 0 and 2 (sequences 0 and 2): sent twice, under two sequences.
            let batches: Batches<'_> = &[(0, &["x", "y"]), (2, &["x"])];
            std::fs::write(dir.join("00000000000000000000.log"), segment_of(batches))
                .expect("write");
        }
        let values: BTreeSet<String> = ["x".to_owned()].into();
        let copies = find_copies(out.path(), "chaos", &values);
        let found = copies.get("x").expect("x found");
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found
            .iter()
            .all(|c| c.partition == 1 && c.producer_id == 7 && c.producer_epoch == 3));
        let offsets: BTreeSet<(i32, i64, i32)> = found
            .iter()
            .map(|c| (c.node, c.offset, c.sequence))
            .collect();
        assert_eq!(offsets, [(1, 0, 0), (1, 2, 2), (2, 0, 0), (2, 2, 2)].into());
        let (verdicts, _) = judge(&values, &copies);
        assert_eq!(verdicts.new_identity, 1);
    }

    #[test]
    fn replicas_agreeing_with_the_drain_pass() {
        let result = check_with_replicas(&["x", "y"]);
        assert_eq!(result.anomaly_total(), 0, "{result:?}");
    }

    #[test]
    fn a_replica_holding_another_value_below_the_drains_end_is_a_divergent_drain() {
        // Node 2 disagrees with the drain and with each other replica at 0/1; "q" was also
        // never sent.
        let result = check_with_replicas(&["x", "q"]);
        assert_eq!(result.count(AnomalyClass::DivergentDrain), 3, "{result:?}");
        assert_eq!(result.count(AnomalyClass::Phantom), 1, "{result:?}");
        assert_eq!(result.anomaly_total(), 4, "{result:?}");
    }

    #[test]
    fn a_replica_missing_an_offset_below_the_drains_end_is_a_gap() {
        let result = check_with_replicas(&["x"]);
        assert_eq!(result.count(AnomalyClass::Gap), 1, "{result:?}");
        assert_eq!(result.anomaly_total(), 1, "{result:?}");
    }

    #[test]
    fn a_segment_scan_reads_each_records_identity_and_stops_at_a_zero_tail() {
        let mut segment = segment_of(&[(0, &["x", "y"]), (2, &["z", "w"])]);
        segment.extend_from_slice(&[0u8; 100]);
        let mut seen = Vec::new();
        scan_segment(&segment, |header, offset, sequence, value| {
            seen.push((
                offset,
                header.producer_id,
                header.producer_epoch,
                sequence,
                value.to_owned(),
            ));
        });
        let expected: Vec<(i64, i64, i16, i32, String)> = ["x", "y", "z", "w"]
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, 7, 3, i as i32, (*v).to_owned()))
            .collect();
        assert_eq!(seen, expected);
    }
}
