//! One chaos run, start to end: clean what an earlier killed run left, build the cluster, create
//! the topic, run the workload while the fault schedule plays, heal, wait for the cluster to
//! serve, drain, write the history, check it, write the report. [`check_dir`] re-checks a run's
//! directory later.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_e2e::cluster::ClusterMetadata;
use runnel_e2e::Result;
use tokio::sync::watch;

use crate::checker::check;
use crate::client_log::client_log_dir;
use crate::cluster::{clean_leftovers, ensure_out_dir_unused, ChaosCluster, StorageOptions};
use crate::command::{output, Signal};
use crate::faults::{heal, heal_network, inject};
use crate::forensics::{explain_duplicates, replica_drains};
use crate::history::{Event, FaultPhase};
use crate::netns::{node_ids, NetworkPlan, NODE_COUNT};
use crate::recorder::Recorder;
use crate::report::{read_history, read_report, write_report, RunReport, RunSettings, REPORT_JSON};
use crate::schedule::{fault_schedule, FaultKind, MIN_QUIET_MS};
use crate::workload::{self, WorkloadOptions, PARTITIONS, TOPIC};

/// The history's file name in the output directory.
pub const HISTORY_FILE: &str = "history.jsonl";
/// The run's settings (seed, duration, faults), for `runnel-chaos check`.
const SETTINGS_FILE: &str = "settings.json";
/// How long the cluster may take to form at the start, and to serve again after the last heal.
const SERVE_TIMEOUT: Duration = Duration::from_secs(120);
/// Workload size: producers, group consumers, and each producer's pause between sends
/// (3 × 40 sends/s: enough to see every fault, light enough for a shared 2-core machine).
const PRODUCERS: u32 = 3;
const CONSUMERS: u32 = 2;
const SEND_INTERVAL: Duration = Duration::from_millis(25);
/// The topic's min.insync.replicas (crate::cluster sets it).
const MIN_INSYNC_REPLICAS: usize = 2;
/// How long stopping a group consumer (leaving the group) may take.
const CONSUMER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What `runnel-chaos run` was asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Seed of the fault schedule.
    pub seed: u64,
    /// How long the workload and faults run.
    pub duration: Duration,
    /// The fault kinds to draw from.
    pub faults: Vec<FaultKind>,
    /// Where the history, report, logs and node data go (emptied first).
    pub out_dir: PathBuf,
    /// The `runnel` binary.
    pub runnel_bin: PathBuf,
    /// The `runnel-faultfs` binary (power loss needs it).
    pub faultfs_bin: PathBuf,
    /// The producers' `message.timeout.ms`.
    pub message_timeout_ms: u64,
}

/// How a run ended.
pub struct RunOutcome {
    /// The report (its summary line is printed).
    pub report: RunReport,
    /// Problems of the harness or the cluster that are not history anomalies (the cluster not
    /// serving again, a node exiting on its own, an incomplete drain): each fails the run too.
    pub problems: Vec<String>,
}

/// Sets a flag when dropped: stops the consumer threads however the run ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Performs one run (see the module doc).
pub async fn run(options: RunOptions) -> Result<RunOutcome> {
    for removed in clean_leftovers() {
        eprintln!("runnel-chaos: removed leftover {removed}");
    }
    let out_dir = &options.out_dir;
    ensure_out_dir_unused(out_dir)?;
    if out_dir.exists() {
        std::fs::remove_dir_all(out_dir)
            .map_err(|e| format!("emptying {}: {e}", out_dir.display()))?;
    }
    std::fs::create_dir_all(out_dir)?;
    // Absolute: mount points are compared with /proc/self/mounts, and nodes get their paths.
    let out_dir = &std::fs::canonicalize(out_dir)?;
    let settings = RunSettings {
        seed: options.seed,
        duration_s: options.duration.as_secs(),
        faults: options.faults.iter().map(|k| k.name().to_owned()).collect(),
        message_timeout_ms: Some(options.message_timeout_ms),
    };
    std::fs::write(
        out_dir.join(SETTINGS_FILE),
        serde_json::to_string_pretty(&settings)?,
    )?;
    let in_use =
        output(&["ip", "-4", "addr"])? + &output(&["ip", "-4", "route", "show", "table", "all"])?;
    let plan = NetworkPlan::new(std::process::id(), &in_use);
    let storage = StorageOptions {
        tmpfs: options.faults.contains(&FaultKind::DiskFull),
        faultfs_bin: options
            .faults
            .contains(&FaultKind::PowerLoss)
            .then(|| options.faultfs_bin.clone()),
    };
    let mut cluster =
        ChaosCluster::start(plan.clone(), out_dir, options.runnel_bin.clone(), &storage)?;
    let bootstrap = plan.bootstrap();
    eprintln!(
        "runnel-chaos: cluster at {bootstrap}, output in {}",
        out_dir.display()
    );
    wait_serving(&plan, None, NODE_COUNT as usize).await?;
    workload::create_topic(&bootstrap, Instant::now() + SERVE_TIMEOUT).await?;
    wait_serving(&plan, Some(TOPIC), NODE_COUNT as usize).await?;

    let recorder = Arc::new(Recorder::create(&out_dir.join(HISTORY_FILE))?);
    let workload_options = WorkloadOptions {
        bootstrap: bootstrap.clone(),
        producers: PRODUCERS,
        consumers: CONSUMERS,
        send_interval: SEND_INTERVAL,
        client_log_dir: Some(client_log_dir(out_dir)),
        message_timeout_ms: options.message_timeout_ms,
    };
    let (stop_producers, stop_rx) = watch::channel(false);
    let mut producers = Vec::new();
    for id in 0..workload_options.producers {
        producers.push(tokio::spawn(workload::run_producer(
            id,
            workload_options.clone(),
            Arc::clone(&recorder),
            stop_rx.clone(),
        )));
    }
    let stop_consumers = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let mut consumers = Vec::new();
    for id in 0..workload_options.consumers {
        let options = workload_options.clone();
        let recorder = Arc::clone(&recorder);
        let stop = Arc::clone(&stop_consumers.0);
        consumers.push(tokio::task::spawn_blocking(move || {
            workload::run_consumer(id, &options, recorder, stop)
        }));
    }

    let mut problems = Vec::new();
    play_faults(&mut cluster, &options, &recorder, &mut problems).await?;
    problems.extend(cluster.take_problems());

    // Heal everything (the schedule heals each fault; this is for a fault whose heal failed)
    // and bring every node back.
    heal_network(&plan);
    for id in node_ids() {
        cluster.signal(id, Signal::CONT)?;
        cluster.spawn(id)?;
    }
    let _ = stop_producers.send(true);
    for producer in producers {
        match producer.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(format!("producer: {e}")),
            Err(e) => problems.push(format!("producer task: {e}")),
        }
    }
    // Settled (full ISR, every node agreeing) is what the drain should see; if the cluster
    // does not get there, that is a problem of its own, and the drain still runs once the
    // nodes agree on leaders with min.insync.replicas in sync, so the history is checked.
    let mut all_in_sync = true;
    let serving = match wait_serving(&plan, Some(TOPIC), NODE_COUNT as usize).await {
        Ok(()) => Ok(()),
        Err(e) => {
            problems.push(format!("after the last heal: {e}"));
            all_in_sync = false;
            wait_serving(&plan, Some(TOPIC), MIN_INSYNC_REPLICAS).await
        }
    };
    if serving.is_ok() {
        let catch_up_bootstrap = bootstrap.clone();
        let caught_up = tokio::task::spawn_blocking(move || {
            workload::wait_group_caught_up(&catch_up_bootstrap)
        })
        .await;
        match caught_up {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(e.to_string()),
            Err(e) => problems.push(format!("group catch-up task: {e}")),
        }
    }
    stop_consumers.0.store(true, Ordering::SeqCst);
    for consumer in consumers {
        match tokio::time::timeout(CONSUMER_STOP_TIMEOUT, consumer).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => problems.push(format!("consumer: {e}")),
            Ok(Err(e)) => problems.push(format!("consumer task: {e}")),
            Err(_) => problems.push(format!(
                "a consumer did not stop within {CONSUMER_STOP_TIMEOUT:?}"
            )),
        }
    }
    match serving {
        Err(e) => problems.push(format!("no drain: {e}")),
        Ok(()) => {
            let drain_recorder = Arc::clone(&recorder);
            let drained = tokio::task::spawn_blocking(move || {
                workload::drain(&bootstrap, "drain", &drain_recorder)
            })
            .await;
            match drained {
                // Every replica in sync: each node's own log must hold what the drain read.
                Ok(Ok(ranges)) if all_in_sync => {
                    for event in replica_drains(out_dir, TOPIC, &ranges, recorder.now_ms()) {
                        recorder.record(|_| event);
                    }
                }
                Ok(Ok(_)) => problems.push(
                    "replicas not compared with the drain: the cluster never had every replica \
                     in sync"
                        .to_owned(),
                ),
                Ok(Err(e)) => problems.push(e.to_string()),
                Err(e) => problems.push(format!("drain task: {e}")),
            }
        }
    }
    for (id, status) in cluster.exited_nodes()? {
        problems.push(format!("node {id} exited on its own with {status}"));
    }
    recorder.finish()?;
    // Before the nodes stop: a disk-full run's tmpfs goes with them.
    let events = read_history(&out_dir.join(HISTORY_FILE))?;
    let duplicates = explain_duplicates(out_dir, TOPIC, &events);
    problems.extend(cluster.shut_down());
    let mut report = RunReport::new(settings, &events, check(&events));
    report.duplicates = duplicates;
    report.problems = problems.clone();
    write_report(out_dir, &report)?;
    Ok(RunOutcome { report, problems })
}

/// Plays the fault schedule for the run's duration: wait, inject, hold, heal; a node that
/// exited on its own is a problem, and is started again.
async fn play_faults(
    cluster: &mut ChaosCluster,
    options: &RunOptions,
    recorder: &Recorder,
    problems: &mut Vec<String>,
) -> Result<()> {
    let duration_ms = u64::try_from(options.duration.as_millis())?;
    let schedule = fault_schedule(options.seed, duration_ms, &options.faults);
    let start = tokio::time::Instant::now();
    let mut healed_at = start;
    for step in &schedule {
        // An injection or heal that ran long must not eat the next quiet time: the cluster
        // gets at least the minimum after each heal (later faults shift; the run's end holds).
        let planned = start + Duration::from_millis(step.start_ms);
        let earliest = healed_at + Duration::from_millis(MIN_QUIET_MS);
        if planned.max(earliest) + Duration::from_millis(step.hold_ms) > start + options.duration {
            break;
        }
        tokio::time::sleep_until(planned.max(earliest)).await;
        note_exited_nodes(cluster, problems)?;
        let fault = inject(cluster, step, |target| {
            recorder.record(|time_ms| Event::Fault {
                time_ms,
                kind: step.kind.name().to_owned(),
                target: target.to_owned(),
                phase: FaultPhase::Start,
            });
        })
        .await?;
        eprintln!(
            "runnel-chaos: {}ms {} {} for {}ms",
            recorder.now_ms(),
            fault.kind,
            fault.target,
            step.hold_ms
        );
        tokio::time::sleep(Duration::from_millis(step.hold_ms)).await;
        heal(cluster, &fault)?;
        recorder.record(|time_ms| Event::Fault {
            time_ms,
            kind: fault.kind.name().to_owned(),
            target: fault.target.clone(),
            phase: FaultPhase::Heal,
        });
        healed_at = tokio::time::Instant::now();
    }
    tokio::time::sleep_until(start + options.duration).await;
    note_exited_nodes(cluster, problems)
}

fn note_exited_nodes(cluster: &mut ChaosCluster, problems: &mut Vec<String>) -> Result<()> {
    for (id, status) in cluster.exited_nodes()? {
        eprintln!("runnel-chaos: node {id} exited on its own with {status}; starting it again");
        problems.push(format!("node {id} exited on its own with {status}"));
        cluster.spawn(id)?;
    }
    Ok(())
}

/// Waits until the cluster has settled: every node answers Metadata, lists all
/// [`NODE_COUNT`] brokers and names a controller, and (with `topic`) every node names the same
/// leader and leader epoch for each partition, with at least `isr_min` replicas in sync. A node that rejoins
/// after a partition may still believe in its old leadership for a moment and answer with its
/// old high watermark; the drain must not start before every node agrees. Errors after
/// [`SERVE_TIMEOUT`] with the last disagreement.
async fn wait_serving(
    plan: &NetworkPlan,
    topic: Option<&'static str>,
    isr_min: usize,
) -> Result<()> {
    let deadline = Instant::now() + SERVE_TIMEOUT;
    loop {
        let mut answers = Vec::new();
        for id in node_ids() {
            let addr = plan.client_addr(id);
            let topics = topic.map(|t| vec![t]);
            let answer = tokio::task::spawn_blocking(move || {
                runnel_e2e::cluster::metadata_at(addr, topics.as_deref())
            })
            .await?;
            answers.push((id, answer.map_err(|e| e.to_string())));
        }
        let problem = match settled_problem(&answers, topic, isr_min) {
            None => return Ok(()),
            Some(problem) => problem,
        };
        if Instant::now() >= deadline {
            return Err(format!("cluster not settled within {SERVE_TIMEOUT:?}: {problem}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Why the nodes' Metadata `answers` do not show a settled cluster (see [`wait_serving`]).
fn settled_problem(
    answers: &[(i32, std::result::Result<ClusterMetadata, String>)],
    topic: Option<&str>,
    isr_min: usize,
) -> Option<String> {
    let mut views = Vec::new();
    for (id, answer) in answers {
        let metadata = match answer {
            Ok(metadata) => metadata,
            Err(e) => return Some(format!("node {id}: {e}")),
        };
        if metadata.brokers.len() != NODE_COUNT as usize || metadata.controller_id < 0 {
            return Some(format!(
                "node {id}: brokers {:?}, controller {}",
                metadata.broker_ids(),
                metadata.controller_id
            ));
        }
        let Some(name) = topic else { continue };
        let found = match metadata.topic(name) {
            Ok(found) => found,
            Err(e) => return Some(format!("node {id}: {e}")),
        };
        let settled = found.error_code == 0
            && found.partitions.len() == PARTITIONS as usize
            && found
                .partitions
                .iter()
                .all(|p| p.leader >= 1 && p.isr.len() >= isr_min);
        if !settled {
            return Some(format!("node {id}: {found:?}"));
        }
        let mut leaders: Vec<(i32, i32, i32)> = found
            .partitions
            .iter()
            .map(|p| (p.partition, p.leader, p.leader_epoch))
            .collect();
        leaders.sort_unstable();
        views.push((*id, leaders));
    }
    let (first_id, first) = views.first()?;
    views
        .iter()
        .find(|(_, leaders)| leaders != first)
        .map(|(id, leaders)| {
            format!(
                "node {first_id} says (partition, leader, epoch) {first:?}, node {id} {leaders:?}"
            )
        })
}

/// `runnel-chaos check DIR`: checks a run's history again and rewrites its report.
pub fn check_dir(out_dir: &Path) -> Result<RunReport> {
    let settings_path = out_dir.join(SETTINGS_FILE);
    let settings: RunSettings = serde_json::from_str(
        &std::fs::read_to_string(&settings_path)
            .map_err(|e| format!("{}: {e}", settings_path.display()))?,
    )?;
    // The nodes' logs as the run left them (a tmpfs node's are gone: nothing found).
    let events = read_history(&out_dir.join(HISTORY_FILE))?;
    let mut report = RunReport::new(settings, &events, check(&events));
    report.duplicates = explain_duplicates(out_dir, TOPIC, &events);
    // The run's problems are not in the history: keep what the earlier report recorded.
    report.problems = read_report(&out_dir.join(REPORT_JSON))
        .map(|earlier| earlier.problems)
        .unwrap_or_default();
    write_report(out_dir, &report)?;
    Ok(report)
}
