//! The run's report (docs/reliability.md, "Reading a report"): what was sent, read and committed,
//! which faults were injected and how long the cluster took to serve again after each heal, and
//! the checker's anomalies. Written as `report.md` (for people), `report.json` (for
//! [`aggregate`], which sums many runs into the docs' results table) and one summary line.
//!
//! Recovery times are reported, never asserted: they depend on the machine's load. The files
//! here are the module's only I/O: [`read_history`], [`write_report`], [`read_report`],
//! [`summarize`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::{self, Display, Write as _};
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checker::{AnomalyClass, CheckResult};
use crate::forensics::{DuplicateVerdicts, REPLICA_READER_PREFIX};
use crate::history::{Event, FaultPhase, Millis};
use crate::workload::MESSAGE_TIMEOUT_MS_DEFAULT;

/// Faults issue 24 names that the harness does not inject, each with the reason (printed in every
/// report and in docs/reliability.md).
pub const SKIPPED_FAULTS: [(&str, &str); 1] = [(
    "clock-jump",
    "network namespaces share the machine's clock, so jumping one node's clock would mean \
     changing the machine's or an LD_PRELOAD time shim, neither of which the harness does",
)];

/// What a run was asked to do; the history does not record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSettings {
    /// The seed of the workload and the fault schedule.
    pub seed: u64,
    /// How long the workload ran, in seconds.
    pub duration_s: u64,
    /// The fault kinds selected (`--faults`), as named there.
    pub faults: Vec<String>,
    /// The producers' `message.timeout.ms` (`--message-timeout-ms`); `None` in reports of runs
    /// from before the flag (they used 20 s, then the default).
    #[serde(default)]
    pub message_timeout_ms: Option<u64>,
}

/// Sends by outcome. Each counts distinct values (a value names one send).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendCounts {
    /// Values handed to a producer (`SendInvoke`).
    pub invoked: u64,
    /// Values acknowledged (`SendOk`, and `SendOkOffsetUnknown`: acknowledged in a partition at
    /// an offset the client did not report).
    pub acknowledged: u64,
    /// The part of `acknowledged` whose offset the client did not report
    /// (`SendOkOffsetUnknown`).
    #[serde(default)]
    pub acknowledged_offset_unknown: u64,
    /// Values certainly not written (`SendFail`).
    pub failed: u64,
    /// Values whose outcome is unknown: `SendInfo`, or invoked with no completion at all.
    pub indeterminate: u64,
    /// The part of `indeterminate` that never completed (the run ended first).
    pub never_completed: u64,
}

/// One fault kind within a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultKindReport {
    /// Fault cycles: how many times this fault started.
    pub cycles: u64,
    /// How many times it was healed.
    pub heals: u64,
    /// Values acknowledged while this fault was the latest one (from its start until the next
    /// fault starts, its heal and recovery included).
    pub acknowledged: u64,
    /// Recovery time after each heal, in milliseconds (from `Recovered` events, in order).
    /// Heals with no recovery before the next fault or the end are `heals - recovery_ms.len()`.
    pub recovery_ms: Vec<Millis>,
}

impl FaultKindReport {
    /// The longest recovery, if any was recorded.
    pub fn recovery_ms_worst(&self) -> Option<Millis> {
        self.recovery_ms.iter().copied().max()
    }

    /// The median recovery (the lower middle for an even count), if any was recorded.
    pub fn recovery_ms_median(&self) -> Option<Millis> {
        let mut sorted = self.recovery_ms.clone();
        sorted.sort_unstable();
        let middle = sorted.len().checked_sub(1)? / 2;
        sorted.get(middle).copied()
    }

    /// Heals after which the history shows no recovery.
    pub fn unrecovered(&self) -> u64 {
        self.heals.saturating_sub(self.recovery_ms.len() as u64)
    }
}

/// Everything one run's report says; `report.json` is this, serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// What the run was asked to do.
    pub settings: RunSettings,
    /// Sends by outcome.
    pub sends: SendCounts,
    /// Records received by group consumers (`Read` events).
    pub reads: u64,
    /// Successful offset commits (`CommitOk` events).
    pub commits: u64,
    /// Partition assignments handed to group consumers (`Assigned` events).
    pub assignments: u64,
    /// Fetch positions the consumers' client reset (`OffsetReset` events): each restarts rule
    /// 4's sequence, so a non-zero count is worth a look.
    #[serde(default)]
    pub offset_resets: u64,
    /// Distinct partition/offsets the drain read (the whole log the checker saw).
    pub drained_records: u64,
    /// Partition replicas whose own log (a node's segment files) was compared with the drain.
    #[serde(default)]
    pub replica_logs_compared: u64,
    /// Per fault kind injected (by the name the history uses).
    pub faults: BTreeMap<String, FaultKindReport>,
    /// The checker's findings.
    pub check: CheckResult,
    /// Where the duplicated values' copies came from (the nodes' logs; `duplicates.md`).
    #[serde(default)]
    pub duplicates: DuplicateVerdicts,
    /// Problems of the run that are not history anomalies (the cluster not serving again, a
    /// node exiting on its own, the group not catching up, an incomplete drain): each fails
    /// the run too.
    #[serde(default)]
    pub problems: Vec<String>,
}

impl RunReport {
    /// Builds the report of one run from its history and the checker's result over it.
    pub fn new(settings: RunSettings, events: &[Event], check: CheckResult) -> RunReport {
        RunReport {
            settings,
            sends: count_sends(events),
            reads: count_events(events, |e| matches!(e, Event::Read { .. })),
            commits: count_events(events, |e| matches!(e, Event::CommitOk { .. })),
            assignments: count_events(events, |e| matches!(e, Event::Assigned { .. })),
            offset_resets: count_events(events, |e| matches!(e, Event::OffsetReset { .. })),
            drained_records: count_drained_positions(events),
            replica_logs_compared: count_events(
                events,
                |e| matches!(e, Event::DrainEnd { reader, .. } if reader.starts_with(REPLICA_READER_PREFIX)),
            ),
            faults: fault_reports(events),
            check,
            duplicates: DuplicateVerdicts::default(),
            problems: Vec::new(),
        }
    }

    /// Fault cycles of every kind together.
    pub fn cycles(&self) -> u64 {
        self.faults.values().map(|fault| fault.cycles).sum()
    }

    /// The one-line summary the harness prints:
    /// `chaos seed=<s> duration=<d>s faults=<..> cycles=<n> acked=<n> indeterminate=<n> anomalies=<n>`.
    pub fn summary_line(&self) -> String {
        format!(
            "chaos seed={} duration={}s faults={} cycles={} acked={} indeterminate={} anomalies={}",
            self.settings.seed,
            self.settings.duration_s,
            self.settings.faults.join(","),
            self.cycles(),
            self.sends.acknowledged,
            self.sends.indeterminate,
            self.check.anomaly_total(),
        )
    }

    /// The command that replays this run's workload and fault schedule.
    pub fn reproduce_command(&self) -> String {
        let mut command = format!(
            "scripts/chaos.sh --seed {} --duration {} --faults {}",
            self.settings.seed,
            self.settings.duration_s,
            self.settings.faults.join(",")
        );
        match self.settings.message_timeout_ms {
            Some(ms) if ms != MESSAGE_TIMEOUT_MS_DEFAULT => {
                command.push_str(&format!(" --message-timeout-ms {ms}"));
            }
            _ => {}
        }
        command
    }

    /// `report.md`: the summary, then operations, faults and anomalies with examples.
    pub fn to_markdown(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_markdown(&mut text);
        text
    }

    fn write_markdown(&self, out: &mut String) -> fmt::Result {
        let verdict = if self.check.is_clean() {
            "no anomalies".to_owned()
        } else {
            format!("{} ANOMALIES", self.check.anomaly_total())
        };
        writeln!(out, "# Chaos run, seed {}: {verdict}\n", self.settings.seed)?;
        writeln!(out, "`{}`\n", self.summary_line())?;
        writeln!(out, "Reproduce: `{}`\n", self.reproduce_command())?;
        for (fault, reason) in SKIPPED_FAULTS {
            writeln!(out, "Not injected: {fault} ({reason}).")?;
        }

        let sends = &self.sends;
        writeln!(out, "\n## Operations\n")?;
        writeln!(out, "| what | count |\n|---|---:|")?;
        let rows = [
            ("sends invoked", sends.invoked),
            ("acknowledged", sends.acknowledged),
            (
                "of which acknowledged, offset unknown",
                sends.acknowledged_offset_unknown,
            ),
            ("failed (certainly not written)", sends.failed),
            ("indeterminate", sends.indeterminate),
            ("of which never completed", sends.never_completed),
            ("records read by group consumers", self.reads),
            ("offset commits", self.commits),
            ("consumer offset resets", self.offset_resets),
            ("assignments", self.assignments),
            ("records drained", self.drained_records),
            (
                "partition replicas compared with the drain",
                self.replica_logs_compared,
            ),
        ];
        for (what, count) in rows {
            writeln!(out, "| {what} | {count} |")?;
        }

        writeln!(out, "\n## Faults\n")?;
        if self.faults.is_empty() {
            writeln!(out, "No fault was injected.")?;
        } else {
            writeln!(
                out,
                "| fault | cycles | heals | acknowledged | recovered | not recovered | \
                 median recovery | worst recovery |\n|---|---:|---:|---:|---:|---:|---:|---:|"
            )?;
            for (kind, fault) in &self.faults {
                writeln!(
                    out,
                    "| {kind} | {} | {} | {} | {} | {} | {} | {} |",
                    fault.cycles,
                    fault.heals,
                    fault.acknowledged,
                    fault.recovery_ms.len(),
                    fault.unrecovered(),
                    OptionalMillis(fault.recovery_ms_median()),
                    OptionalMillis(fault.recovery_ms_worst()),
                )?;
            }
            writeln!(
                out,
                "\nRecovery: from a heal to the first acknowledged send after it; measured, \
                 not asserted."
            )?;
        }

        writeln!(out, "\n## Anomalies\n")?;
        writeln!(out, "| class | count |\n|---|---:|")?;
        for class in AnomalyClass::ALL {
            writeln!(out, "| {class} | {} |", self.check.count(class))?;
        }
        for (class, examples) in &self.check.anomalies {
            writeln!(
                out,
                "\n### {class} ({} found, first {} shown)\n",
                self.check.count(*class),
                examples.len()
            )?;
            for example in examples {
                writeln!(out, "- {example}")?;
            }
        }
        if !self.problems.is_empty() {
            writeln!(out, "\n## Run problems ({})\n", self.problems.len())?;
            for problem in &self.problems {
                writeln!(out, "- {problem}")?;
            }
        }
        let duplicates = &self.duplicates;
        if self.check.count(AnomalyClass::Duplicated) > 0 {
            writeln!(
                out,
                "\nThe duplicated values' copies in the nodes' logs (each copy's producer id, \
                 epoch and sequence in `duplicates.md`): {} under one identity (the broker \
                 stored one send twice), {} under a new producer id, epoch or sequence (the client sent \
                 the value again), {} not found.",
                duplicates.same_identity, duplicates.new_identity, duplicates.not_found
            )?;
        }
        Ok(())
    }
}

/// A duration in milliseconds, or `-` when there is none.
struct OptionalMillis(Option<Millis>);

impl Display for OptionalMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ms) => write!(f, "{ms} ms"),
            None => f.write_str("-"),
        }
    }
}

fn count_events(events: &[Event], which: impl Fn(&Event) -> bool) -> u64 {
    events.iter().filter(|event| which(event)).count() as u64
}

fn count_sends(events: &[Event]) -> SendCounts {
    let mut invoked = HashSet::new();
    let mut acknowledged = HashSet::new();
    let mut offset_unknown = HashSet::new();
    let mut failed = HashSet::new();
    let mut unknown = HashSet::new();
    for event in events {
        match event {
            Event::SendInvoke { value, .. } => invoked.insert(value.as_str()),
            Event::SendOk { value, .. } => acknowledged.insert(value.as_str()),
            Event::SendOkOffsetUnknown { value, .. } => {
                offset_unknown.insert(value.as_str());
                acknowledged.insert(value.as_str())
            }
            Event::SendFail { value, .. } => failed.insert(value.as_str()),
            Event::SendInfo { value, .. } => unknown.insert(value.as_str()),
            _ => false,
        };
    }
    let never_completed = invoked
        .iter()
        .filter(|value| {
            !acknowledged.contains(*value) && !failed.contains(*value) && !unknown.contains(*value)
        })
        .count() as u64;
    SendCounts {
        invoked: invoked.len() as u64,
        acknowledged: acknowledged.len() as u64,
        acknowledged_offset_unknown: offset_unknown.len() as u64,
        failed: failed.len() as u64,
        indeterminate: unknown.len() as u64 + never_completed,
        never_completed,
    }
}

fn count_drained_positions(events: &[Event]) -> u64 {
    let positions: BTreeSet<(i32, i64)> = events
        .iter()
        .filter_map(|event| match event {
            Event::Drained {
                partition, offset, ..
            } => Some((*partition, *offset)),
            _ => None,
        })
        .collect();
    positions.len() as u64
}

/// Per fault kind: cycles, heals, the acknowledgements while it was the latest fault, and the
/// recovery after each of its heals (a `Recovered` belongs to the fault recorded last before it).
fn fault_reports(events: &[Event]) -> BTreeMap<String, FaultKindReport> {
    let mut faults: BTreeMap<String, FaultKindReport> = BTreeMap::new();
    let mut latest: Option<&str> = None;
    let mut acknowledged_latest: HashSet<&str> = HashSet::new();
    for event in events {
        match event {
            Event::Fault { kind, phase, .. } => {
                let fault = faults.entry(kind.clone()).or_default();
                match phase {
                    FaultPhase::Start => fault.cycles += 1,
                    FaultPhase::Heal => fault.heals += 1,
                }
                latest = Some(kind.as_str());
            }
            Event::SendOk { value, .. } | Event::SendOkOffsetUnknown { value, .. } => {
                // A value acknowledged twice (a broken history) counts once.
                if let Some(kind) = latest {
                    if acknowledged_latest.insert(value.as_str()) {
                        faults.entry(kind.to_owned()).or_default().acknowledged += 1;
                    }
                }
            }
            Event::Recovered { after_ms, .. } => {
                if let Some(kind) = latest {
                    faults
                        .entry(kind.to_owned())
                        .or_default()
                        .recovery_ms
                        .push(*after_ms);
                }
            }
            _ => {}
        }
    }
    faults
}

/// One row of docs/reliability.md's results table: one fault kind over many runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsRow {
    /// The fault kind, or `all` for the totals row.
    pub fault: String,
    /// Runs that injected it.
    pub runs: u64,
    /// Fault cycles over those runs.
    pub cycles: u64,
    /// Values acknowledged while it was the latest fault (the totals row: every acknowledged
    /// value, before the first fault too).
    pub acknowledged: u64,
    /// Anomalies of the runs that injected it: a run's anomalies are not tied to one fault, so a
    /// run with several kinds counts its anomalies under each (the totals row counts them once).
    pub anomalies: u64,
    /// Run problems (see [`RunReport::problems`]) of the runs that injected it, counted like
    /// anomalies.
    pub problems: u64,
    /// The longest recovery after one of its heals, in milliseconds.
    pub recovery_ms_worst: Option<Millis>,
}

/// Sums many runs into the results table: one row per fault kind (by name), then an `all` row.
pub fn aggregate(reports: &[RunReport]) -> Vec<ResultsRow> {
    let mut rows: BTreeMap<&str, ResultsRow> = BTreeMap::new();
    let mut total = ResultsRow {
        fault: "all".to_owned(),
        ..ResultsRow::default()
    };
    for report in reports {
        let anomalies = report.check.anomaly_total();
        let problems = report.problems.len() as u64;
        for (kind, fault) in &report.faults {
            let row = rows.entry(kind).or_insert_with(|| ResultsRow {
                fault: kind.clone(),
                ..ResultsRow::default()
            });
            row.runs += 1;
            row.cycles += fault.cycles;
            row.acknowledged += fault.acknowledged;
            row.anomalies += anomalies;
            row.problems += problems;
            row.recovery_ms_worst = row.recovery_ms_worst.max(fault.recovery_ms_worst());
            total.recovery_ms_worst = total.recovery_ms_worst.max(fault.recovery_ms_worst());
        }
        total.runs += 1;
        total.cycles += report.cycles();
        total.acknowledged += report.sends.acknowledged;
        total.anomalies += anomalies;
        total.problems += problems;
    }
    let mut table: Vec<ResultsRow> = rows.into_values().collect();
    table.push(total);
    table
}

/// The results table in docs/reliability.md's markdown, header included.
pub fn results_table(rows: &[ResultsRow]) -> String {
    let mut text = String::from(
        "| fault | runs | cycles | acknowledged records | anomalies | run problems | worst recovery |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.fault,
            row.runs,
            row.cycles,
            row.acknowledged,
            row.anomalies,
            row.problems,
            OptionalMillis(row.recovery_ms_worst)
        );
    }
    text
}

/// The report files a run writes into its output directory.
pub const REPORT_JSON: &str = "report.json";
/// See [`REPORT_JSON`].
pub const REPORT_MARKDOWN: &str = "report.md";

/// How deep [`summarize`] looks for `report.json` below each directory it is given.
const SUMMARIZE_DEPTH_MAX: usize = 4;

/// An I/O or parse error, naming the file it happened on.
fn error_at(path: &Path, error: impl Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {error}", path.display()),
    )
}

/// Reads a `history.jsonl` (one [`Event`] per line; blank lines are skipped). A line that is not
/// an event is an error naming the file and line: a damaged history is never checked in part.
pub fn read_history(path: &Path) -> io::Result<Vec<Event>> {
    let file = std::fs::File::open(path).map_err(|error| error_at(path, error))?;
    let mut events = Vec::new();
    for (index, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|error| error_at(path, error))?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line)
            .map_err(|error| error_at(path, format_args!("line {}: {error}", index + 1)))?;
        events.push(event);
    }
    Ok(events)
}

/// Writes `report.md` and `report.json` into `dir` (which must exist).
pub fn write_report(dir: &Path, report: &RunReport) -> io::Result<()> {
    let json_path = dir.join(REPORT_JSON);
    let json = serde_json::to_string_pretty(report).map_err(|error| error_at(&json_path, error))?;
    std::fs::write(&json_path, json + "\n").map_err(|error| error_at(&json_path, error))?;
    let markdown_path = dir.join(REPORT_MARKDOWN);
    std::fs::write(&markdown_path, report.to_markdown())
        .map_err(|error| error_at(&markdown_path, error))
}

/// Reads one `report.json`.
pub fn read_report(path: &Path) -> io::Result<RunReport> {
    let json = std::fs::read_to_string(path).map_err(|error| error_at(path, error))?;
    serde_json::from_str(&json).map_err(|error| error_at(path, error))
}

/// `runnel-chaos summarize PATH...`: every `report.json` given or found below the directories
/// given (a few levels deep, in name order), summed into the results table's markdown.
/// Finding no report is an error: an empty table must not look like a result.
pub fn summarize(paths: &[PathBuf]) -> io::Result<String> {
    let mut files = Vec::new();
    for path in paths {
        find_reports(path, SUMMARIZE_DEPTH_MAX, &mut files)?;
    }
    if files.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {REPORT_JSON} found in {paths:?}"),
        ));
    }
    let reports = files
        .iter()
        .map(|file| read_report(file))
        .collect::<io::Result<Vec<_>>>()?;
    Ok(results_table(&aggregate(&reports)))
}

fn find_reports(path: &Path, depth_left: usize, found: &mut Vec<PathBuf>) -> io::Result<()> {
    if path.is_file() {
        found.push(path.to_owned());
        return Ok(());
    }
    let report = path.join(REPORT_JSON);
    if report.is_file() {
        found.push(report);
        return Ok(());
    }
    let Some(depth_left) = depth_left.checked_sub(1) else {
        return Ok(());
    };
    let mut children = std::fs::read_dir(path)
        .map_err(|error| error_at(path, error))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|error| error_at(path, error))?;
    children.sort();
    for child in children.iter().filter(|child| child.is_dir()) {
        find_reports(child, depth_left, found)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::checker::check;
    use crate::checker::tests::{
        drain_end, drained, fail, good_history, info, invoke, ok, ok_offset_unknown,
    };

    fn fault(kind: &str, phase: FaultPhase) -> Event {
        Event::Fault {
            time_ms: 0,
            kind: kind.into(),
            target: "1".into(),
            phase,
        }
    }

    fn recovered(after_ms: Millis) -> Event {
        Event::Recovered {
            time_ms: 0,
            after_ms,
        }
    }

    fn settings(faults: &[&str]) -> RunSettings {
        RunSettings {
            seed: 42,
            duration_s: 60,
            faults: faults.iter().map(|kind| (*kind).to_owned()).collect(),
            message_timeout_ms: Some(MESSAGE_TIMEOUT_MS_DEFAULT),
        }
    }

    /// Two kill-one cycles and one pause cycle around acknowledged sends; the second kill-one
    /// heal never recovers.
    fn faulty_history() -> Vec<Event> {
        use FaultPhase::{Heal, Start};
        vec![
            invoke("a"),
            ok("a", 0, 0),
            fault("kill-one", Start),
            invoke("b"),
            invoke("c"),
            info("b"),
            fault("kill-one", Heal),
            recovered(300),
            ok("c", 0, 1),
            fault("pause", Start),
            invoke("d"),
            fail("d"),
            fault("pause", Heal),
            recovered(900),
            fault("kill-one", Start),
            invoke("e"),
            invoke("f"),
            ok("e", 0, 2),
            fault("kill-one", Heal),
            drained("r", 0, 0, "a"),
            drained("r", 0, 1, "c"),
            drained("r", 0, 2, "e"),
            drain_end("r", 0, 0, 3),
        ]
    }

    #[test]
    fn counts_sends_by_outcome() {
        let report = RunReport::new(settings(&[]), &good_history(), check(&good_history()));
        assert_eq!(
            report.sends,
            SendCounts {
                invoked: 5,
                acknowledged: 3,
                acknowledged_offset_unknown: 0,
                failed: 1,
                indeterminate: 1,
                never_completed: 0,
            }
        );
        assert_eq!(
            (report.reads, report.commits, report.assignments),
            (3, 2, 1)
        );
        assert_eq!(report.drained_records, 4);
        assert!(report.faults.is_empty());
    }

    #[test]
    fn an_acknowledgement_at_an_unknown_offset_counts_as_acknowledged_and_apart() {
        let mut events = faulty_history();
        // During the second kill-one cycle, before its heal.
        let heal = events.len() - 5;
        events.splice(heal..heal, [invoke("g"), ok_offset_unknown("g", 0)]);
        let report = RunReport::new(settings(&["kill-one", "pause"]), &events, check(&events));
        assert_eq!(report.sends.acknowledged, 4);
        assert_eq!(report.sends.acknowledged_offset_unknown, 1);
        assert_eq!(report.faults["kill-one"].acknowledged, 3);
        assert!(report
            .to_markdown()
            .contains("| of which acknowledged, offset unknown | 1 |"));
    }

    #[test]
    fn a_send_without_completion_is_indeterminate() {
        let events = faulty_history();
        let report = RunReport::new(settings(&["kill-one", "pause"]), &events, check(&events));
        // b: info, f: no completion.
        assert_eq!(report.sends.indeterminate, 2);
        assert_eq!(report.sends.never_completed, 1);
        assert_eq!(report.sends.acknowledged, 3);
        assert_eq!(report.sends.failed, 1);
    }

    #[test]
    fn faults_count_cycles_acknowledgements_and_recoveries_per_kind() {
        let events = faulty_history();
        let report = RunReport::new(settings(&["kill-one", "pause"]), &events, check(&events));
        let kill_one = &report.faults["kill-one"];
        assert_eq!((kill_one.cycles, kill_one.heals), (2, 2));
        // c (acknowledged after the first heal) and e; a came before any fault.
        assert_eq!(kill_one.acknowledged, 2);
        assert_eq!(kill_one.recovery_ms, vec![300]);
        assert_eq!(kill_one.unrecovered(), 1);
        let pause = &report.faults["pause"];
        assert_eq!((pause.cycles, pause.acknowledged), (1, 0));
        assert_eq!(pause.recovery_ms_worst(), Some(900));
        assert_eq!(report.cycles(), 3);
    }

    #[test]
    fn recovery_median_and_worst() {
        let fault = FaultKindReport {
            recovery_ms: vec![500, 100, 300, 900],
            ..FaultKindReport::default()
        };
        assert_eq!(fault.recovery_ms_median(), Some(300));
        assert_eq!(fault.recovery_ms_worst(), Some(900));
        let none = FaultKindReport::default();
        assert_eq!(
            (none.recovery_ms_median(), none.recovery_ms_worst()),
            (None, None)
        );
    }

    #[test]
    fn the_summary_line_has_the_agreed_shape() {
        let events = faulty_history();
        let report = RunReport::new(settings(&["kill-one", "pause"]), &events, check(&events));
        assert_eq!(
            report.summary_line(),
            "chaos seed=42 duration=60s faults=kill-one,pause cycles=3 acked=3 \
             indeterminate=2 anomalies=0"
        );
        assert_eq!(
            report.reproduce_command(),
            "scripts/chaos.sh --seed 42 --duration 60 --faults kill-one,pause"
        );
        // A message timeout other than the default is part of the replay.
        let mut shorter = report.clone();
        shorter.settings.message_timeout_ms = Some(20_000);
        assert_eq!(
            shorter.reproduce_command(),
            "scripts/chaos.sh --seed 42 --duration 60 --faults kill-one,pause \
             --message-timeout-ms 20000"
        );
    }

    #[test]
    fn the_markdown_shows_the_verdict_faults_and_anomaly_examples() {
        let events = faulty_history();
        let clean = RunReport::new(settings(&["kill-one"]), &events, check(&events)).to_markdown();
        assert!(clean.contains("no anomalies"), "{clean}");
        assert!(clean.contains("| kill-one | 2 | 2 | 2 | 1 | 1 | 300 ms | 300 ms |"));
        assert!(clean.contains("Not injected: clock-jump ("));

        // Drop the drain of offset 1: c is lost, and the drain has a gap.
        let broken: Vec<Event> = events
            .into_iter()
            .filter(|event| !matches!(event, Event::Drained { offset: 1, .. }))
            .collect();
        let report = RunReport::new(settings(&["kill-one"]), &broken, check(&broken));
        let text = report.to_markdown();
        assert!(text.contains("2 ANOMALIES"), "{text}");
        assert!(text.contains("| lost | 1 |"));
        assert!(text.contains("### lost (1 found, first 1 shown)"));
        assert!(text.contains("\"c\" acknowledged at 0/1 is not in the drain"));
    }

    #[test]
    fn aggregate_sums_runs_per_fault_kind_and_in_total() {
        let events = faulty_history();
        let clean = RunReport::new(settings(&["kill-one", "pause"]), &events, check(&events));
        let broken_events: Vec<Event> = events
            .iter()
            .filter(|event| !matches!(event, Event::Drained { offset: 2, .. }))
            .cloned()
            .collect();
        let mut broken = RunReport::new(
            settings(&["kill-one"]),
            &broken_events,
            check(&broken_events),
        );
        broken.faults.remove("pause");
        broken.settings.seed = 43;
        broken.problems = vec!["the group did not catch up".to_owned()];

        let rows = aggregate(&[clean, broken]);
        let fault_names: Vec<&str> = rows.iter().map(|row| row.fault.as_str()).collect();
        assert_eq!(fault_names, ["kill-one", "pause", "all"]);
        assert_eq!(
            rows[0],
            ResultsRow {
                fault: "kill-one".into(),
                runs: 2,
                cycles: 4,
                acknowledged: 4,
                anomalies: 2,
                problems: 1,
                recovery_ms_worst: Some(300),
            }
        );
        assert_eq!(
            (
                rows[1].runs,
                rows[1].cycles,
                rows[1].anomalies,
                rows[1].problems
            ),
            (1, 1, 0, 0)
        );
        assert_eq!(
            rows[2],
            ResultsRow {
                fault: "all".into(),
                runs: 2,
                cycles: 5,
                acknowledged: 6,
                anomalies: 2,
                problems: 1,
                recovery_ms_worst: Some(900),
            }
        );
        let table = results_table(&rows);
        assert!(
            table.contains("| all | 2 | 5 | 6 | 2 | 1 | 900 ms |"),
            "{table}"
        );
    }

    #[test]
    fn reports_round_trip_through_files_and_summarize_finds_them() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let events = faulty_history();
        let report = RunReport::new(settings(&["kill-one", "pause"]), &events, check(&events));
        for run in ["run-1", "nested/run-2"] {
            let dir = root.path().join(run);
            std::fs::create_dir_all(&dir)?;
            write_report(&dir, &report)?;
            assert_eq!(read_report(&dir.join(REPORT_JSON))?, report);
            assert_eq!(
                std::fs::read_to_string(dir.join(REPORT_MARKDOWN))?,
                report.to_markdown()
            );
        }
        // Anomaly classes are map keys in report.json: they round-trip by name.
        let broken_events: Vec<Event> = events
            .iter()
            .filter(|event| !matches!(event, Event::Drained { offset: 0, .. }))
            .cloned()
            .collect();
        let broken = RunReport::new(settings(&["pause"]), &broken_events, check(&broken_events));
        let broken_dir = root.path().join("run-3");
        std::fs::create_dir_all(&broken_dir)?;
        write_report(&broken_dir, &broken)?;
        let json = std::fs::read_to_string(broken_dir.join(REPORT_JSON))?;
        assert!(json.contains("\"lost\": 1"), "{json}");
        assert_eq!(read_report(&broken_dir.join(REPORT_JSON))?, broken);

        let table = summarize(&[root.path().to_owned()])?;
        assert!(
            table.contains("| all | 3 | 9 | 9 | 2 | 0 | 900 ms |"),
            "{table}"
        );

        let empty = tempfile::tempdir()?;
        assert!(summarize(&[empty.path().to_owned()]).is_err());
        Ok(())
    }

    #[test]
    fn a_history_file_round_trips_and_a_damaged_line_is_an_error() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("history.jsonl");
        let mut text = String::new();
        for event in good_history() {
            text.push_str(&serde_json::to_string(&event)?);
            text.push_str("\n\n");
        }
        std::fs::write(&path, &text)?;
        assert_eq!(read_history(&path)?, good_history());

        text.push_str("{\"type\":\"send_ok\",\"value\":\n");
        std::fs::write(&path, &text)?;
        let message = read_history(&path)
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("line 51"), "{message}");
        Ok(())
    }
}
