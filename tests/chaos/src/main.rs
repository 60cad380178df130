//! `runnel-chaos`: the chaos harness's command line (docs/reliability.md).
//!
//! ```text
//! runnel-chaos run [--seed N] [--duration SECS] [--faults a,b,...] [--out DIR]
//!                  [--runnel PATH] [--faultfs PATH] [--message-timeout-ms MS]
//! runnel-chaos check DIR          check a run's history again, rewrite its report
//! runnel-chaos summarize PATH...  sum report.json files into the results table
//! ```
//!
//! `run` exits 0 only when the checker finds no anomaly and the cluster served again after the
//! last heal; 1 otherwise; 2 on a usage or harness error. SIGINT/SIGTERM end the run, and the
//! cluster, mounts and namespaces are removed before exiting.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use runnel_chaos::report::summarize;
use runnel_chaos::run::{check_dir, run, RunOptions, RunOutcome};
use runnel_chaos::schedule::FaultKind;
use runnel_chaos::workload::MESSAGE_TIMEOUT_MS_DEFAULT;
use runnel_e2e::Result;
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage:
  runnel-chaos run [--seed N] [--duration SECS] [--faults a,b,...] [--out DIR] [--runnel PATH] [--faultfs PATH] [--message-timeout-ms MS]
  runnel-chaos check DIR
  runnel-chaos summarize PATH...";

/// The faults of `run` without `--faults`: all but power-loss, which needs runnel-faultfs.
const DEFAULT_FAULTS: &str = "kill-one,kill-leader,kill-controller,kill-all,pause,partition-one,\
partition-split,partition-bridge,one-way-loss,netem,disk-full";
/// How long the runtime may take to stop its tasks after the run.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, rest)) if command == "run" => run_command(rest),
        Some((command, [dir])) if command == "check" => check_command(dir),
        Some((command, paths)) if command == "summarize" && !paths.is_empty() => {
            let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
            summarize(&paths)
                .map(|table| {
                    print!("{table}");
                    ExitCode::SUCCESS
                })
                .map_err(Into::into)
        }
        _ => Err(USAGE.into()),
    };
    result.unwrap_or_else(|e| {
        eprintln!("runnel-chaos: {e}");
        ExitCode::from(2)
    })
}

fn check_command(dir: &str) -> Result<ExitCode> {
    let report = check_dir(&PathBuf::from(dir))?;
    println!("{}", report.summary_line());
    Ok(exit_code(
        report.check.is_clean() && report.problems.is_empty(),
    ))
}

fn exit_code(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Parses `run`'s flags.
fn parse_run(args: &[String]) -> Result<RunOptions> {
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .ok_or("the executable has no directory")?;
    let mut seed = None;
    let mut duration_s = 60u64;
    let mut faults = FaultKind::parse_list(DEFAULT_FAULTS)?;
    let mut out_dir = None;
    let mut runnel_bin = exe_dir.join("runnel");
    let mut faultfs_bin = exe_dir.join("runnel-faultfs");
    let mut message_timeout_ms = MESSAGE_TIMEOUT_MS_DEFAULT;
    let mut words = args.iter();
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--seed" => seed = Some(value.parse().map_err(|e| format!("--seed {value}: {e}"))?),
            "--duration" => {
                duration_s = value
                    .parse()
                    .map_err(|e| format!("--duration {value}: {e}"))?
            }
            "--faults" => faults = FaultKind::parse_list(value)?,
            "--out" => out_dir = Some(PathBuf::from(value)),
            "--runnel" => runnel_bin = PathBuf::from(value),
            "--faultfs" => faultfs_bin = PathBuf::from(value),
            "--message-timeout-ms" => {
                message_timeout_ms = value
                    .parse()
                    .map_err(|e| format!("--message-timeout-ms {value}: {e}"))?
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}").into()),
        }
    }
    let seed = match seed {
        Some(seed) => seed,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    };
    if !runnel_bin.is_file() {
        return Err(format!(
            "no runnel binary at {} (cargo build -p runnel-broker, or --runnel PATH)",
            runnel_bin.display()
        )
        .into());
    }
    if faults.contains(&FaultKind::PowerLoss) && !faultfs_bin.is_file() {
        return Err(format!(
            "power-loss needs runnel-faultfs, not found at {} (cargo build -p runnel-faultfs, \
             or --faultfs PATH)",
            faultfs_bin.display()
        )
        .into());
    }
    Ok(RunOptions {
        seed,
        duration: Duration::from_secs(duration_s),
        faults,
        out_dir: out_dir.unwrap_or_else(|| PathBuf::from(format!("target/chaos/seed-{seed}"))),
        runnel_bin,
        faultfs_bin,
        message_timeout_ms,
    })
}

fn run_command(args: &[String]) -> Result<ExitCode> {
    let options = parse_run(args)?;
    let out_dir = options.out_dir.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        // Losing the select drops the run, and with it the cluster: processes, mounts and
        // namespaces are removed before the error is returned.
        tokio::select! {
            outcome = run(options) => outcome,
            _ = interrupt.recv() => Err("interrupted (SIGINT); cluster removed".into()),
            _ = terminate.recv() => Err("terminated (SIGTERM); cluster removed".into()),
        }
    });
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    let RunOutcome { report, problems } = outcome?;
    for problem in &problems {
        eprintln!("runnel-chaos: problem: {problem}");
    }
    println!("{}", report.summary_line());
    eprintln!(
        "runnel-chaos: report in {}/report.md; replay: {}",
        out_dir.display(),
        report.reproduce_command()
    );
    Ok(exit_code(report.check.is_clean() && problems.is_empty()))
}
