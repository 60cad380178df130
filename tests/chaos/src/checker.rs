//! The checker: rules a correct cluster never breaks, checked over a recorded history
//! (docs/reliability.md, "The checker"). Pure functions over `&[Event]`, no I/O (reading a
//! history file is `report::read_history`). It knows nothing of how the history was made
//! (namespaces, faults, clients).
//!
//! Why it cannot be fooled: every value is sent once and is unique across the run, so a value
//! names one send; the drain reads every offset of every partition from its log start to its
//! high watermark, so the drained log is the whole committed log, not a sample; and a history
//! whose drain is missing or unfinished is itself an anomaly (`incomplete-drain`), never a pass.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::Event;

/// At most this many examples are kept per anomaly class; the count is always complete.
pub const EXAMPLES_PER_CLASS_MAX: usize = 20;

/// A kind of wrong behaviour the checker finds (docs/reliability.md lists the rule for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyClass {
    /// An acknowledged value is not in the drained log.
    Lost,
    /// A value is in the drained log more than once (acknowledged or indeterminate alike).
    Duplicated,
    /// An acknowledged value is in the drained log once, but not at its acknowledged
    /// partition/offset.
    Moved,
    /// A value in the drain or in a read was never sent.
    Phantom,
    /// A value whose send certainly failed is in the drain or in a read.
    FailedButPresent,
    /// A drain skipped offsets between its partition's log start and its end offset.
    Gap,
    /// Two drains (or one drain twice) hold different values at one partition/offset.
    DivergentDrain,
    /// A partition was written or read but never fully drained, so nothing about it can be
    /// proven.
    IncompleteDrain,
    /// A consumer read an offset at or below one it had read before, within one assignment.
    ReadBackwards,
    /// A consumer jumped over offsets within one assignment.
    ReadSkip,
    /// A consumer's commits for a partition went down within one assignment, or a new owner of
    /// a partition committed or started reading below the group's offset committed before its
    /// assignment began (a committed offset lost or rolled back).
    CommitBackwards,
    /// A consumer read a value other than the drained one at that partition/offset.
    DisagreeingRead,
    /// A consumer read an offset at or past the drain's end: data served, then lost.
    ReadPastEnd,
}

impl AnomalyClass {
    /// Every class, in report order.
    pub const ALL: [AnomalyClass; 13] = [
        AnomalyClass::Lost,
        AnomalyClass::Duplicated,
        AnomalyClass::Moved,
        AnomalyClass::Phantom,
        AnomalyClass::FailedButPresent,
        AnomalyClass::Gap,
        AnomalyClass::DivergentDrain,
        AnomalyClass::IncompleteDrain,
        AnomalyClass::ReadBackwards,
        AnomalyClass::ReadSkip,
        AnomalyClass::CommitBackwards,
        AnomalyClass::DisagreeingRead,
        AnomalyClass::ReadPastEnd,
    ];

    /// The class's name as reports and docs spell it (`failed-but-present`).
    pub fn name(self) -> &'static str {
        match self {
            AnomalyClass::Lost => "lost",
            AnomalyClass::Duplicated => "duplicated",
            AnomalyClass::Moved => "moved",
            AnomalyClass::Phantom => "phantom",
            AnomalyClass::FailedButPresent => "failed-but-present",
            AnomalyClass::Gap => "gap",
            AnomalyClass::DivergentDrain => "divergent-drain",
            AnomalyClass::IncompleteDrain => "incomplete-drain",
            AnomalyClass::ReadBackwards => "read-backwards",
            AnomalyClass::ReadSkip => "read-skip",
            AnomalyClass::CommitBackwards => "commit-backwards",
            AnomalyClass::DisagreeingRead => "disagreeing-read",
            AnomalyClass::ReadPastEnd => "read-past-end",
        }
    }
}

impl fmt::Display for AnomalyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the checker found: a complete count per anomaly class and up to
/// [`EXAMPLES_PER_CLASS_MAX`] human-readable examples of each. Classes with no anomaly are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// How many anomalies of each class were found.
    pub anomaly_counts: BTreeMap<AnomalyClass, u64>,
    /// Examples of each class, the first ones found (history order), at most
    /// [`EXAMPLES_PER_CLASS_MAX`] per class.
    pub anomalies: BTreeMap<AnomalyClass, Vec<String>>,
}

impl CheckResult {
    /// True when no rule was broken.
    pub fn is_clean(&self) -> bool {
        self.anomaly_counts.is_empty()
    }

    /// All anomalies, every class together.
    pub fn anomaly_total(&self) -> u64 {
        self.anomaly_counts.values().sum()
    }

    /// How many anomalies of `class` were found.
    pub fn count(&self, class: AnomalyClass) -> u64 {
        self.anomaly_counts.get(&class).copied().unwrap_or(0)
    }

    fn record(&mut self, class: AnomalyClass, example: String) {
        *self.anomaly_counts.entry(class).or_insert(0) += 1;
        let examples = self.anomalies.entry(class).or_default();
        if examples.len() < EXAMPLES_PER_CLASS_MAX {
            examples.push(example);
        }
    }
}

/// Checks every rule over `events` (one run's history, in recorded order).
pub fn check(events: &[Event]) -> CheckResult {
    let mut result = CheckResult::default();
    let drained = DrainedLog::new(events, &mut result);
    check_acknowledged_values(events, &drained, &mut result);
    check_sent_values(events, &drained, &mut result);
    check_drains_dense(&drained, &mut result);
    check_drains_agree(&drained, &mut result);
    check_every_partition_drained(events, &drained, &mut result);
    check_reads_in_order(events, &mut result);
    check_commits_forward(events, &mut result);
    check_reads_match_drain(events, &drained, &mut result);
    result
}

/// A partition/offset.
type Position = (i32, i64);

/// One reader's drain of one partition.
#[derive(Default)]
struct ReaderDrain<'a> {
    /// Offset → value, as this reader read it.
    records: BTreeMap<i64, &'a str>,
    /// `(start_offset, end_offset)` from its `DrainEnd`; `None` if the drain never finished.
    bounds: Option<(i64, i64)>,
}

/// The log after the run, as the drain read it: every reader's view, and their union.
#[derive(Default)]
struct DrainedLog<'a> {
    /// Each (reader, partition) drain.
    drains: BTreeMap<(&'a str, i32), ReaderDrain<'a>>,
    /// Where each value was found, over all readers (a position several readers read counts
    /// once).
    positions_by_value: BTreeMap<&'a str, BTreeSet<Position>>,
    /// The values drained at each position (more than one only if drains diverge).
    values_at: HashMap<Position, BTreeSet<&'a str>>,
    /// Per partition, the highest end offset any finished drain reached.
    end_offsets: BTreeMap<i32, i64>,
}

impl<'a> DrainedLog<'a> {
    /// Collects the drain events. One reader reading two values at one offset is a
    /// divergent drain, recorded here as it is found.
    fn new(events: &'a [Event], result: &mut CheckResult) -> Self {
        let mut log = DrainedLog::default();
        for event in events {
            match event {
                Event::Drained {
                    reader,
                    partition,
                    offset,
                    value,
                    ..
                } => {
                    let drain = log.drains.entry((reader.as_str(), *partition)).or_default();
                    if let Some(earlier) = drain.records.insert(*offset, value.as_str()) {
                        if earlier != value {
                            result.record(
                                AnomalyClass::DivergentDrain,
                                format!(
                                    "reader {reader} drained {partition}/{offset} twice: \
                                     {earlier:?} then {value:?}"
                                ),
                            );
                        }
                    }
                    log.positions_by_value
                        .entry(value.as_str())
                        .or_default()
                        .insert((*partition, *offset));
                    log.values_at
                        .entry((*partition, *offset))
                        .or_default()
                        .insert(value.as_str());
                }
                Event::DrainEnd {
                    reader,
                    partition,
                    start_offset,
                    end_offset,
                    ..
                } => {
                    let drain = log.drains.entry((reader.as_str(), *partition)).or_default();
                    drain.bounds = Some((*start_offset, *end_offset));
                    let end = log.end_offsets.entry(*partition).or_insert(*end_offset);
                    *end = (*end).max(*end_offset);
                }
                _ => {}
            }
        }
        log
    }

    fn positions_of(&self, value: &str) -> Option<&BTreeSet<Position>> {
        self.positions_by_value.get(value)
    }
}

fn format_positions(positions: &BTreeSet<Position>) -> String {
    let listed: Vec<String> = positions
        .iter()
        .map(|(partition, offset)| format!("{partition}/{offset}"))
        .collect();
    listed.join(", ")
}

/// Rule 1: every acknowledged value is in the drained log exactly once, at the partition/offset
/// its acknowledgement named (lost, duplicated, moved). A value acknowledged at an unknown offset
/// (`SendOkOffsetUnknown`) must be there exactly once too, in its partition.
fn check_acknowledged_values(events: &[Event], drained: &DrainedLog<'_>, result: &mut CheckResult) {
    for event in events {
        let (value, partition, offset) = match event {
            Event::SendOk {
                value,
                partition,
                offset,
                ..
            } => (value, *partition, Some(*offset)),
            Event::SendOkOffsetUnknown {
                value, partition, ..
            } => (value, *partition, None),
            _ => continue,
        };
        let acknowledged_at = match offset {
            Some(offset) => format!("{partition}/{offset}"),
            None => format!("{partition}/(offset unknown)"),
        };
        let in_place = |positions: &BTreeSet<Position>| match offset {
            Some(offset) => positions.contains(&(partition, offset)),
            None => positions.iter().any(|(at, _)| *at == partition),
        };
        match drained.positions_of(value) {
            None => result.record(
                AnomalyClass::Lost,
                format!("{value:?} acknowledged at {acknowledged_at} is not in the drain"),
            ),
            Some(positions) if positions.len() > 1 => result.record(
                AnomalyClass::Duplicated,
                format!(
                    "{value:?} acknowledged at {acknowledged_at} is in the drain at {}",
                    format_positions(positions)
                ),
            ),
            Some(positions) if !in_place(positions) => result.record(
                AnomalyClass::Moved,
                format!(
                    "{value:?} acknowledged at {acknowledged_at} is in the drain at {}",
                    format_positions(positions)
                ),
            ),
            Some(_) => {}
        }
    }
}

/// Rule 2: nothing is in the drain or in a read that was never sent (phantom); nothing whose
/// send failed is anywhere (failed-but-present); a value not acknowledged (indeterminate or never
/// completed) is in the drain at most once (duplicated). Each value is reported once per class.
fn check_sent_values(events: &[Event], drained: &DrainedLog<'_>, result: &mut CheckResult) {
    let mut invoked = HashSet::new();
    let mut acknowledged = HashSet::new();
    let mut failed = HashSet::new();
    for event in events {
        match event {
            Event::SendInvoke { value, .. } => {
                invoked.insert(value.as_str());
            }
            Event::SendOk { value, .. } | Event::SendOkOffsetUnknown { value, .. } => {
                acknowledged.insert(value.as_str());
            }
            Event::SendFail { value, .. } => {
                failed.insert(value.as_str());
            }
            _ => {}
        }
    }
    // Each value is judged once, where it was first seen: in the drain, else in a read.
    let drain_places = drained
        .positions_by_value
        .iter()
        .map(|(value, positions)| (*value, Place::Drain(positions)));
    let read_places = events.iter().filter_map(|event| match event {
        Event::Read {
            consumer,
            partition,
            offset,
            value,
            ..
        } => Some((
            value.as_str(),
            Place::Read {
                consumer: *consumer,
                position: (*partition, *offset),
            },
        )),
        _ => None,
    });
    let mut judged = HashSet::new();
    for (value, place) in drain_places.chain(read_places) {
        if !judged.insert(value) {
            continue;
        }
        if !invoked.contains(value) {
            result.record(
                AnomalyClass::Phantom,
                format!("{value:?} {place} was never sent"),
            );
        } else if failed.contains(value) {
            result.record(
                AnomalyClass::FailedButPresent,
                format!("{value:?} {place}, but its send failed"),
            );
        }
    }
    for (value, positions) in &drained.positions_by_value {
        if positions.len() > 1 && !acknowledged.contains(value) {
            result.record(
                AnomalyClass::Duplicated,
                format!(
                    "{value:?} (not acknowledged) is in the drain at {}",
                    format_positions(positions)
                ),
            );
        }
    }
}

/// Where a value was seen.
enum Place<'p> {
    Drain(&'p BTreeSet<Position>),
    Read { consumer: u32, position: Position },
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Drain(positions) => {
                write!(f, "is in the drain at {}", format_positions(positions))
            }
            Place::Read {
                consumer,
                position: (partition, offset),
            } => write!(f, "was read by consumer {consumer} at {partition}/{offset}"),
        }
    }
}

/// Rule 3a: each finished drain holds every offset from its partition's log start to its end
/// offset (offsets are dense without compaction or transactions). One anomaly per missing range.
fn check_drains_dense(drained: &DrainedLog<'_>, result: &mut CheckResult) {
    for ((reader, partition), drain) in &drained.drains {
        let Some((start_offset, end_offset)) = drain.bounds else {
            continue;
        };
        let mut expected = start_offset;
        for &offset in drain
            .records
            .range(start_offset..end_offset)
            .map(|(o, _)| o)
        {
            if offset > expected {
                result.record(
                    AnomalyClass::Gap,
                    format!(
                        "reader {reader} partition {partition}: offsets {expected}..{offset} \
                         missing (log {start_offset}..{end_offset})"
                    ),
                );
            }
            expected = offset + 1;
        }
        if expected < end_offset {
            result.record(
                AnomalyClass::Gap,
                format!(
                    "reader {reader} partition {partition}: offsets {expected}..{end_offset} \
                     missing (log {start_offset}..{end_offset})"
                ),
            );
        }
    }
}

/// Rule 3b: two drains of one partition hold the same value wherever both read an offset.
/// One anomaly per offset and pair of readers.
fn check_drains_agree(drained: &DrainedLog<'_>, result: &mut CheckResult) {
    let mut by_partition: BTreeMap<i32, Vec<(&str, &ReaderDrain<'_>)>> = BTreeMap::new();
    for ((reader, partition), drain) in &drained.drains {
        by_partition
            .entry(*partition)
            .or_default()
            .push((reader, drain));
    }
    for (partition, drains) in &by_partition {
        for (index, (first_reader, first)) in drains.iter().enumerate() {
            for (second_reader, second) in drains.iter().skip(index + 1) {
                for (offset, first_value) in &first.records {
                    let Some(second_value) = second.records.get(offset) else {
                        continue;
                    };
                    if first_value != second_value {
                        result.record(
                            AnomalyClass::DivergentDrain,
                            format!(
                                "partition {partition} offset {offset}: reader {first_reader} \
                                 drained {first_value:?}, reader {second_reader} {second_value:?}"
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Rule 3c: every partition the history wrote, read or committed has a finished drain, and every
/// drain that read records finished: an unfinished drain proves nothing, so it cannot pass.
fn check_every_partition_drained(
    events: &[Event],
    drained: &DrainedLog<'_>,
    result: &mut CheckResult,
) {
    for ((reader, partition), drain) in &drained.drains {
        if drain.bounds.is_none() {
            result.record(
                AnomalyClass::IncompleteDrain,
                format!("reader {reader} partition {partition}: drained records but never ended"),
            );
        }
    }
    let mut used = BTreeSet::new();
    for event in events {
        match event {
            Event::SendOk { partition, .. }
            | Event::SendOkOffsetUnknown { partition, .. }
            | Event::Read { partition, .. }
            | Event::CommitOk { partition, .. } => {
                used.insert(*partition);
            }
            Event::Assigned { partitions, .. } => used.extend(partitions.iter().copied()),
            _ => {}
        }
    }
    for partition in used {
        if !drained.end_offsets.contains_key(&partition) {
            result.record(
                AnomalyClass::IncompleteDrain,
                format!("partition {partition} was used but no drain of it finished"),
            );
        }
    }
}

/// Rule 4: within one assignment (and between offset resets the client reported), a consumer
/// reads each partition's offsets one after another (+1 each time): not back (read-backwards, including the same offset again) and not over any
/// offset (read-skip). Offsets are dense, so jumping over offsets the drain lacks is still a skip.
fn check_reads_in_order(events: &[Event], result: &mut CheckResult) {
    let mut last_read: HashMap<(u32, u64, i32), i64> = HashMap::new();
    for event in events {
        if let Event::OffsetReset {
            consumer,
            assignment,
            partition,
            ..
        } = event
        {
            // The client moved its position: the next read starts a new sequence.
            last_read.remove(&(*consumer, *assignment, *partition));
            continue;
        }
        let Event::Read {
            consumer,
            assignment,
            partition,
            offset,
            ..
        } = event
        else {
            continue;
        };
        let Some(previous) = last_read.insert((*consumer, *assignment, *partition), *offset) else {
            continue;
        };
        let class = if *offset <= previous {
            AnomalyClass::ReadBackwards
        } else if *offset > previous + 1 {
            AnomalyClass::ReadSkip
        } else {
            continue;
        };
        result.record(
            class,
            format!(
                "consumer {consumer} assignment {assignment} partition {partition}: read \
                 {offset} after {previous}"
            ),
        );
    }
}

/// A group consumer's current assignment, as rule 5 follows it.
#[derive(Default)]
struct Ownership {
    /// The consumer's latest `Assigned` (0 before the first).
    assignment: u64,
    /// Per assigned partition, the group's committed offset (and who committed it) when the
    /// assignment began: the latest commit that had completed by then.
    committed_before: HashMap<i32, (i64, u32)>,
    /// Per partition, this consumer's latest commit within the assignment.
    own_commits: HashMap<i32, i64>,
    /// Partitions whose first read of the assignment has been seen.
    read: HashSet<i32>,
}

impl Ownership {
    /// The anomaly's description if `offset` (a commit, or the first read of `partition`) is
    /// below the group's offset committed before this assignment began.
    fn below_committed_before(&self, partition: i32, offset: i64) -> Option<String> {
        let (committed, by) = self.committed_before.get(&partition)?;
        (offset < *committed).then(|| {
            format!(
                "consumer {by} had committed {committed} before assignment {} began",
                self.assignment
            )
        })
    }
}

/// Rule 5: committed offsets are never lost or rolled back. (a) Within one assignment, a
/// consumer's successful commits for a partition never go down. (b) A consumer's commits, and
/// its first read of each partition, in an assignment are never below the group's committed
/// offset when that assignment began: the latest commit (in history order) that had completed
/// before its `Assigned`. A new owner starts at or after what was committed before it took over.
///
/// Not a rule: commits of different consumers in completion order. Kafka's classic group
/// protocol validates a commit's generation under the group lock but appends it without, and
/// OffsetFetch sees only completed commits, so an old owner's commit may complete after the new
/// owner fetched the previous offset, and the new owner's later commit is then lower.
fn check_commits_forward(events: &[Event], result: &mut CheckResult) {
    let mut group_committed: HashMap<i32, (i64, u32)> = HashMap::new();
    let mut owners: HashMap<u32, Ownership> = HashMap::new();
    for event in events {
        match event {
            Event::Assigned {
                consumer,
                assignment,
                partitions,
                ..
            } => {
                let committed_before = partitions
                    .iter()
                    .filter_map(|partition| {
                        let committed = group_committed.get(partition)?;
                        Some((*partition, *committed))
                    })
                    .collect();
                owners.insert(
                    *consumer,
                    Ownership {
                        assignment: *assignment,
                        committed_before,
                        ..Ownership::default()
                    },
                );
            }
            Event::Read {
                consumer,
                assignment,
                partition,
                offset,
                ..
            } => {
                let Some(owner) = owners.get_mut(consumer) else {
                    continue;
                };
                if owner.assignment != *assignment || !owner.read.insert(*partition) {
                    continue;
                }
                if let Some(why) = owner.below_committed_before(*partition, *offset) {
                    result.record(
                        AnomalyClass::CommitBackwards,
                        format!(
                            "partition {partition}: consumer {consumer} started reading \
                             assignment {assignment} at {offset}, but {why}"
                        ),
                    );
                }
            }
            Event::CommitOk {
                consumer,
                partition,
                offset,
                ..
            } => {
                let owner = owners.entry(*consumer).or_default();
                let previous = owner.own_commits.insert(*partition, *offset);
                let why = match previous {
                    Some(previous) if *offset < previous => Some(format!(
                        "it had committed {previous} in the same assignment {}",
                        owner.assignment
                    )),
                    _ => owner.below_committed_before(*partition, *offset),
                };
                if let Some(why) = why {
                    result.record(
                        AnomalyClass::CommitBackwards,
                        format!("partition {partition}: consumer {consumer} committed {offset}, but {why}"),
                    );
                }
                group_committed.insert(*partition, (*offset, *consumer));
            }
            _ => {}
        }
    }
}

/// Rule 6: every read agrees with the drain: the value read at a partition/offset is the value
/// drained there (disagreeing-read); an offset at or past the drain's end was served and then
/// lost (read-past-end).
fn check_reads_match_drain(events: &[Event], drained: &DrainedLog<'_>, result: &mut CheckResult) {
    for event in events {
        let Event::Read {
            consumer,
            partition,
            offset,
            value,
            ..
        } = event
        else {
            continue;
        };
        let (class, drain_there) = match drained.values_at.get(&(*partition, *offset)) {
            Some(values) if values.contains(value.as_str()) => continue,
            Some(values) => (
                AnomalyClass::DisagreeingRead,
                format!("the drain holds {values:?} there"),
            ),
            None => match drained.end_offsets.get(partition) {
                Some(end_offset) if offset < end_offset => (
                    AnomalyClass::DisagreeingRead,
                    format!("the drain has no record there (end {end_offset})"),
                ),
                Some(end_offset) => (
                    AnomalyClass::ReadPastEnd,
                    format!("the drain ends at {end_offset}"),
                ),
                None => (
                    AnomalyClass::ReadPastEnd,
                    "the partition has no finished drain".to_owned(),
                ),
            },
        };
        result.record(
            class,
            format!("consumer {consumer} read {value:?} at {partition}/{offset}; {drain_there}"),
        );
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;

    /// Builders for hand-made histories (also used by the report's tests).
    pub(crate) fn invoke(value: &str) -> Event {
        Event::SendInvoke {
            time_ms: 0,
            producer: 0,
            value: value.into(),
        }
    }

    pub(crate) fn ok(value: &str, partition: i32, offset: i64) -> Event {
        Event::SendOk {
            time_ms: 0,
            producer: 0,
            value: value.into(),
            partition,
            offset,
        }
    }

    pub(crate) fn ok_offset_unknown(value: &str, partition: i32) -> Event {
        Event::SendOkOffsetUnknown {
            time_ms: 0,
            producer: 0,
            value: value.into(),
            partition,
        }
    }

    pub(crate) fn assigned(consumer: u32, assignment: u64, partitions: &[i32]) -> Event {
        Event::Assigned {
            time_ms: 0,
            consumer,
            assignment,
            partitions: partitions.to_vec(),
        }
    }

    pub(crate) fn fail(value: &str) -> Event {
        Event::SendFail {
            time_ms: 0,
            producer: 0,
            value: value.into(),
            error: "not sent".into(),
        }
    }

    pub(crate) fn info(value: &str) -> Event {
        Event::SendInfo {
            time_ms: 0,
            producer: 0,
            value: value.into(),
            error: "timed out".into(),
        }
    }

    pub(crate) fn read(
        consumer: u32,
        assignment: u64,
        partition: i32,
        offset: i64,
        value: &str,
    ) -> Event {
        Event::Read {
            time_ms: 0,
            consumer,
            assignment,
            partition,
            offset,
            value: value.into(),
        }
    }

    pub(crate) fn commit(consumer: u32, partition: i32, offset: i64) -> Event {
        Event::CommitOk {
            time_ms: 0,
            consumer,
            partition,
            offset,
        }
    }

    pub(crate) fn drained(reader: &str, partition: i32, offset: i64, value: &str) -> Event {
        Event::Drained {
            time_ms: 0,
            reader: reader.into(),
            partition,
            offset,
            value: value.into(),
        }
    }

    pub(crate) fn drain_end(reader: &str, partition: i32, start: i64, end: i64) -> Event {
        Event::DrainEnd {
            time_ms: 0,
            reader: reader.into(),
            partition,
            start_offset: start,
            end_offset: end,
        }
    }

    /// A correct run: three values acknowledged on two partitions, one indeterminate value that
    /// landed, one failed value that did not, a consumer reading and committing in order, and
    /// two readers draining partition 0 identically.
    pub(crate) fn good_history() -> Vec<Event> {
        vec![
            invoke("p0-0"),
            invoke("p0-1"),
            invoke("p1-0"),
            invoke("p1-1"),
            invoke("p1-2"),
            ok("p0-0", 0, 0),
            ok("p0-1", 0, 1),
            ok("p1-0", 1, 0),
            info("p1-1"),
            fail("p1-2"),
            assigned(7, 1, &[0, 1]),
            read(7, 1, 0, 0, "p0-0"),
            read(7, 1, 0, 1, "p0-1"),
            read(7, 1, 1, 0, "p1-0"),
            commit(7, 0, 2),
            commit(7, 1, 1),
            drained("node1", 0, 0, "p0-0"),
            drained("node1", 0, 1, "p0-1"),
            drain_end("node1", 0, 0, 2),
            drained("node2", 0, 0, "p0-0"),
            drained("node2", 0, 1, "p0-1"),
            drain_end("node2", 0, 0, 2),
            drained("node1", 1, 0, "p1-0"),
            drained("node1", 1, 1, "p1-1"),
            drain_end("node1", 1, 0, 2),
        ]
    }

    fn only(result: &CheckResult, class: AnomalyClass, count: u64) {
        assert_eq!(
            result.anomaly_counts,
            BTreeMap::from([(class, count)]),
            "{:#?}",
            result.anomalies
        );
    }

    /// `good_history` with the events matching `remove` dropped and `add` appended.
    fn altered(remove: impl Fn(&Event) -> bool, add: Vec<Event>) -> Vec<Event> {
        let mut events: Vec<Event> = good_history().into_iter().filter(|e| !remove(e)).collect();
        events.extend(add);
        events
    }

    fn is_drained(event: &Event, at_partition: i32, at_offset: i64) -> bool {
        matches!(event, Event::Drained { partition, offset, .. }
            if *partition == at_partition && *offset == at_offset)
    }

    #[test]
    fn a_good_history_is_clean() {
        let result = check(&good_history());
        assert!(result.is_clean(), "{:#?}", result.anomalies);
        assert_eq!(result.anomaly_total(), 0);
    }

    #[test]
    fn an_empty_history_is_clean() {
        assert!(check(&[]).is_clean());
    }

    #[test]
    fn an_acknowledged_value_missing_from_the_drain_is_lost() {
        // Partition 1 drained without its acknowledged offset 0: lost, and a gap.
        let events = altered(|e| is_drained(e, 1, 0), vec![]);
        let result = check(&events);
        assert_eq!(result.count(AnomalyClass::Lost), 1);
        assert_eq!(result.count(AnomalyClass::Gap), 1);
        // The consumer's read of it no longer matches the drain either.
        assert_eq!(result.count(AnomalyClass::DisagreeingRead), 1);
        assert_eq!(result.anomaly_total(), 3);
        assert!(result.anomalies[&AnomalyClass::Lost][0].contains("\"p1-0\""));
    }

    #[test]
    fn an_acknowledged_value_past_the_drain_end_is_lost() {
        // The log was truncated below an acknowledged offset: the drain is dense but short.
        let events = vec![
            invoke("a"),
            invoke("b"),
            ok("a", 0, 0),
            ok("b", 0, 1),
            drained("r", 0, 0, "a"),
            drain_end("r", 0, 0, 1),
        ];
        only(&check(&events), AnomalyClass::Lost, 1);
    }

    #[test]
    fn an_acknowledged_value_twice_in_the_drain_is_duplicated() {
        let events = altered(
            |e| matches!(e, Event::DrainEnd { partition: 1, .. }),
            vec![drained("node1", 1, 2, "p1-0"), drain_end("node1", 1, 0, 3)],
        );
        only(&check(&events), AnomalyClass::Duplicated, 1);
    }

    #[test]
    fn an_acknowledged_value_at_another_offset_is_moved() {
        let events = vec![
            invoke("a"),
            invoke("b"),
            ok("a", 0, 0),
            ok("b", 0, 1),
            drained("r", 0, 0, "b"),
            drained("r", 0, 1, "a"),
            drain_end("r", 0, 0, 2),
        ];
        only(&check(&events), AnomalyClass::Moved, 2);
    }

    #[test]
    fn an_acknowledged_value_in_another_partition_is_moved() {
        let events = vec![
            invoke("a"),
            ok("a", 0, 0),
            drained("r", 1, 0, "a"),
            drain_end("r", 1, 0, 1),
            drain_end("r", 0, 0, 0),
        ];
        only(&check(&events), AnomalyClass::Moved, 1);
    }

    #[test]
    fn a_value_never_sent_is_phantom_in_the_drain_and_in_reads() {
        let in_drain = altered(
            |e| matches!(e, Event::DrainEnd { partition: 1, .. }),
            vec![drained("node1", 1, 2, "ghost"), drain_end("node1", 1, 0, 3)],
        );
        only(&check(&in_drain), AnomalyClass::Phantom, 1);

        let in_read = vec![
            read(1, 1, 0, 0, "ghost"),
            drained("r", 0, 0, "ghost"),
            drain_end("r", 0, 0, 1),
        ];
        // One value, one phantom, wherever it was seen.
        only(&check(&in_read), AnomalyClass::Phantom, 1);
    }

    #[test]
    fn a_failed_value_found_anywhere_is_failed_but_present() {
        let in_drain = altered(
            |e| matches!(e, Event::DrainEnd { partition: 1, .. }),
            vec![drained("node1", 1, 2, "p1-2"), drain_end("node1", 1, 0, 3)],
        );
        only(&check(&in_drain), AnomalyClass::FailedButPresent, 1);

        // Read but not in the drain: failed-but-present, and the read was of data then lost.
        let in_read = altered(|_| false, vec![read(7, 1, 1, 2, "p1-2")]);
        let result = check(&in_read);
        assert_eq!(result.count(AnomalyClass::FailedButPresent), 1);
        assert_eq!(result.count(AnomalyClass::ReadPastEnd), 1);
        assert_eq!(result.count(AnomalyClass::ReadSkip), 1);
        assert_eq!(result.anomaly_total(), 3);
    }

    #[test]
    fn an_indeterminate_value_twice_in_the_drain_is_duplicated() {
        let events = altered(
            |e| matches!(e, Event::DrainEnd { partition: 1, .. }),
            vec![drained("node1", 1, 2, "p1-1"), drain_end("node1", 1, 0, 3)],
        );
        only(&check(&events), AnomalyClass::Duplicated, 1);
    }

    #[test]
    fn a_never_completed_value_twice_in_the_drain_is_duplicated() {
        let events = vec![
            invoke("a"),
            drained("r", 0, 0, "a"),
            drained("r", 0, 1, "a"),
            drain_end("r", 0, 0, 2),
        ];
        only(&check(&events), AnomalyClass::Duplicated, 1);
    }

    #[test]
    fn missing_offsets_inside_a_drain_are_gaps() {
        // Offsets 1 and 2 are absent in the middle, 5 at the end: two missing ranges.
        let events = vec![
            invoke("a"),
            invoke("b"),
            invoke("c"),
            drained("r", 0, 0, "a"),
            drained("r", 0, 3, "b"),
            drained("r", 0, 4, "c"),
            drain_end("r", 0, 0, 6),
        ];
        let result = check(&events);
        only(&result, AnomalyClass::Gap, 2);
        assert!(result.anomalies[&AnomalyClass::Gap][0].contains("offsets 1..3"));
        assert!(result.anomalies[&AnomalyClass::Gap][1].contains("offsets 5..6"));
    }

    #[test]
    fn a_drain_missing_its_first_offsets_has_a_gap() {
        let events = vec![
            invoke("b"),
            drained("r", 0, 2, "b"),
            drain_end("r", 0, 0, 3),
        ];
        only(&check(&events), AnomalyClass::Gap, 1);
    }

    #[test]
    fn drains_that_disagree_are_divergent() {
        let events = vec![
            invoke("a"),
            invoke("b"),
            drained("node1", 0, 0, "a"),
            drain_end("node1", 0, 0, 1),
            drained("node2", 0, 0, "b"),
            drain_end("node2", 0, 0, 1),
        ];
        only(&check(&events), AnomalyClass::DivergentDrain, 1);
    }

    #[test]
    fn one_reader_draining_two_values_at_an_offset_is_divergent() {
        let events = vec![
            invoke("a"),
            invoke("b"),
            drained("r", 0, 0, "a"),
            drained("r", 0, 0, "b"),
            drain_end("r", 0, 0, 1),
        ];
        only(&check(&events), AnomalyClass::DivergentDrain, 1);
    }

    #[test]
    fn drains_of_different_lengths_agree_on_their_common_prefix() {
        let events = vec![
            invoke("a"),
            invoke("b"),
            drained("node1", 0, 0, "a"),
            drained("node1", 0, 1, "b"),
            drain_end("node1", 0, 0, 2),
            drained("node2", 0, 0, "a"),
            drain_end("node2", 0, 0, 1),
        ];
        assert!(check(&events).is_clean());
    }

    #[test]
    fn an_unfinished_or_missing_drain_is_incomplete() {
        // Partition 1's drain never ended.
        let unfinished = altered(
            |e| matches!(e, Event::DrainEnd { partition: 1, .. }),
            vec![],
        );
        let result = check(&unfinished);
        // The unfinished drain, and partition 1 being used without a finished drain.
        only(&result, AnomalyClass::IncompleteDrain, 2);

        // No drain at all: every acknowledged value is lost, every read unprovable.
        let undrained = altered(
            |e| matches!(e, Event::Drained { .. } | Event::DrainEnd { .. }),
            vec![],
        );
        let result = check(&undrained);
        assert_eq!(result.count(AnomalyClass::Lost), 3);
        assert_eq!(result.count(AnomalyClass::IncompleteDrain), 2);
        assert_eq!(result.count(AnomalyClass::ReadPastEnd), 3);
    }

    #[test]
    fn reading_an_offset_again_or_earlier_in_one_assignment_is_backwards() {
        let again = altered(|_| false, vec![read(7, 1, 0, 1, "p0-1")]);
        only(&check(&again), AnomalyClass::ReadBackwards, 1);

        let earlier = altered(|_| false, vec![read(7, 1, 0, 0, "p0-0")]);
        only(&check(&earlier), AnomalyClass::ReadBackwards, 1);
    }

    #[test]
    fn reading_again_in_a_new_assignment_is_allowed() {
        let events = altered(
            |_| false,
            vec![
                read(7, 2, 0, 0, "p0-0"),
                read(7, 2, 0, 1, "p0-1"),
                read(8, 1, 0, 1, "p0-1"),
            ],
        );
        assert!(check(&events).is_clean());
    }

    #[test]
    fn reading_earlier_after_a_reported_offset_reset_is_a_new_sequence() {
        let mut events = reads(0, 1, 0..5);
        events.push(Event::OffsetReset {
            time_ms: 0,
            consumer: 0,
            assignment: 1,
            partition: 0,
            detail: "chaos [0]: offset reset".into(),
        });
        events.extend(reads(0, 1, 0..3));
        let mut result = CheckResult::default();
        check_reads_in_order(&events, &mut result);
        assert!(result.is_clean(), "{result:?}");
        // Without the reset the same reads go backwards.
        let mut events = reads(0, 1, 0..5);
        events.extend(reads(0, 1, 0..3));
        let mut result = CheckResult::default();
        check_reads_in_order(&events, &mut result);
        assert!(!result.is_clean());
    }

    #[test]
    fn jumping_over_an_offset_in_one_assignment_is_a_skip() {
        let events = vec![
            invoke("a"),
            invoke("b"),
            invoke("c"),
            read(1, 1, 0, 0, "a"),
            read(1, 1, 0, 2, "c"),
            drained("r", 0, 0, "a"),
            drained("r", 0, 1, "b"),
            drained("r", 0, 2, "c"),
            drain_end("r", 0, 0, 3),
        ];
        only(&check(&events), AnomalyClass::ReadSkip, 1);
    }

    #[test]
    fn jumping_over_a_gap_the_drain_shows_is_still_a_skip() {
        // The log lost offset 1 (a gap); the consumer went from 0 to 2 "correctly" for that log,
        // but offsets are dense, so the read skipped too.
        let events = vec![
            invoke("a"),
            invoke("c"),
            read(1, 1, 0, 0, "a"),
            read(1, 1, 0, 2, "c"),
            drained("r", 0, 0, "a"),
            drained("r", 0, 2, "c"),
            drain_end("r", 0, 0, 3),
        ];
        let result = check(&events);
        assert_eq!(result.count(AnomalyClass::ReadSkip), 1);
        assert_eq!(result.count(AnomalyClass::Gap), 1);
        assert_eq!(result.anomaly_total(), 2);
    }

    /// "a" acknowledged in partition 0 at an unknown offset, then drained at each of
    /// `drained_at` (partition, offset), the offsets of each partition from 0 up, no gaps.
    fn offset_unknown_history(drained_at: &[(i32, i64)]) -> Vec<Event> {
        let mut events = vec![invoke("a"), ok_offset_unknown("a", 0)];
        events.extend(drained_at.iter().map(|(p, o)| drained("r", *p, *o, "a")));
        for partition in [0, 1] {
            let end = drained_at.iter().filter(|(p, _)| *p == partition).count() as i64;
            events.push(drain_end("r", partition, 0, end));
        }
        events
    }

    #[test]
    fn an_acknowledged_value_at_an_unknown_offset_once_in_its_partition_is_clean() {
        let result = check(&offset_unknown_history(&[(0, 0)]));
        assert!(result.is_clean(), "{:#?}", result.anomalies);
    }

    #[test]
    fn an_acknowledged_value_at_an_unknown_offset_missing_is_lost() {
        only(&check(&offset_unknown_history(&[])), AnomalyClass::Lost, 1);
    }

    #[test]
    fn an_acknowledged_value_at_an_unknown_offset_twice_is_duplicated_once() {
        let events = offset_unknown_history(&[(0, 0), (0, 1)]);
        only(&check(&events), AnomalyClass::Duplicated, 1);
    }

    #[test]
    fn an_acknowledged_value_at_an_unknown_offset_in_another_partition_is_moved() {
        let events = offset_unknown_history(&[(1, 0)]);
        only(&check(&events), AnomalyClass::Moved, 1);
    }

    /// Values `v<offset>` at offsets `0..end` of partition 0, drained.
    fn partition_zero_log(end: i64) -> Vec<Event> {
        let mut events: Vec<Event> = (0..end).map(|o| invoke(&format!("v{o}"))).collect();
        events.extend((0..end).map(|o| drained("r", 0, o, &format!("v{o}"))));
        events.push(drain_end("r", 0, 0, end));
        events
    }

    fn reads(consumer: u32, assignment: u64, offsets: std::ops::Range<i64>) -> Vec<Event> {
        offsets
            .map(|o| read(consumer, assignment, 0, o, &format!("v{o}")))
            .collect()
    }

    /// Partition 0's log of 10, assigned to consumer 0, which reads it up to each of `commits`
    /// and commits there.
    fn owned_by_consumer_zero(commits: &[i64]) -> Vec<Event> {
        let mut events = partition_zero_log(10);
        events.push(assigned(0, 1, &[0]));
        let mut next = 0;
        for &offset in commits {
            events.extend(reads(0, 1, next..offset));
            events.push(commit(0, 0, offset));
            next = offset;
        }
        events
    }

    #[test]
    fn a_consumers_lower_commit_in_one_assignment_is_backwards() {
        let events = altered(|_| false, vec![commit(7, 0, 1)]);
        only(&check(&events), AnomalyClass::CommitBackwards, 1);
    }

    #[test]
    fn equal_commits_and_commits_on_other_partitions_are_allowed() {
        let events = altered(|_| false, vec![commit(8, 0, 2), commit(8, 1, 2)]);
        assert!(check(&events).is_clean());
    }

    /// The seed-42 interleaving, which Kafka's classic group protocol allows: consumer 0's
    /// commit of 8 (generation checked before the rebalance) completes after consumer 1 took
    /// the partition over from the committed 4; consumer 1 then commits 6, lower than 8. Later
    /// consumer 0 gets the partition back and starts at the group's offset then, 6.
    #[test]
    fn an_old_owners_late_commit_then_a_lower_one_of_the_new_owner_is_allowed() {
        let mut events = owned_by_consumer_zero(&[4]);
        events.extend(reads(0, 1, 4..8));
        events.push(assigned(1, 1, &[0]));
        events.push(commit(0, 0, 8));
        events.extend(reads(1, 1, 4..6));
        events.push(commit(1, 0, 6));
        events.push(assigned(0, 2, &[0]));
        events.extend(reads(0, 2, 6..10));
        events.push(commit(0, 0, 10));
        let result = check(&events);
        assert!(result.is_clean(), "{:#?}", result.anomalies);
    }

    #[test]
    fn a_new_owner_starting_below_a_commit_completed_before_its_assignment_is_caught() {
        let mut events = owned_by_consumer_zero(&[8]);
        // The coordinator lost or rolled back the commit of 8: the new owner starts at 4.
        events.push(assigned(1, 1, &[0]));
        events.extend(reads(1, 1, 4..6));
        events.push(commit(1, 0, 6));
        let result = check(&events);
        only(&result, AnomalyClass::CommitBackwards, 2);
        assert!(result.anomalies[&AnomalyClass::CommitBackwards][0].contains("started reading"));
        assert!(result.anomalies[&AnomalyClass::CommitBackwards][1].contains("committed 6"));
    }

    #[test]
    fn a_read_of_another_value_than_the_drained_one_disagrees() {
        // Consumer 8 read p0-1 at offset 0, where the drain holds p0-0.
        let events = altered(|_| false, vec![read(8, 1, 0, 0, "p0-1")]);
        only(&check(&events), AnomalyClass::DisagreeingRead, 1);
    }

    #[test]
    fn a_read_past_the_drain_end_was_served_then_lost() {
        // p1-1 was indeterminate; consumer 8 read it at 1/5, but the log ends at 2.
        let events = altered(|_| false, vec![read(8, 1, 1, 5, "p1-1")]);
        only(&check(&events), AnomalyClass::ReadPastEnd, 1);
    }

    #[test]
    fn examples_are_capped_but_counts_are_complete() {
        let mut events = Vec::new();
        for offset in 0..(EXAMPLES_PER_CLASS_MAX as i64 + 5) {
            let value = format!("v{offset}");
            events.push(invoke(&value));
            events.push(ok(&value, 0, offset));
        }
        events.push(drain_end("r", 0, 0, 0));
        let result = check(&events);
        assert_eq!(
            result.count(AnomalyClass::Lost),
            EXAMPLES_PER_CLASS_MAX as u64 + 5
        );
        assert_eq!(
            result.anomalies[&AnomalyClass::Lost].len(),
            EXAMPLES_PER_CLASS_MAX
        );
    }
}
