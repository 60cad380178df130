//! Running the system tools the harness drives (`ip`, `nft`, `tc`, `mount`): an argv in, its
//! exit status checked, its stderr in the error. Signals go through the kill(2) system call, not
//! the `kill` binary, so the harness needs no procps.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use runnel_e2e::Result;
pub use rustix::process::Signal;

/// Runs `argv`; an error names the command and carries its stderr.
pub fn run(argv: &[String]) -> Result<()> {
    run_with_stdin(argv, None)
}

/// Runs `argv`, ignoring failure (for heals and clean-up of what may not exist).
pub fn run_quietly(argv: &[String]) {
    let _ = run(argv);
}

/// Runs `argv` with `stdin` written to its standard input.
pub fn run_with_stdin(argv: &[String], stdin: Option<&str>) -> Result<()> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} failed with {}: {}",
        argv.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )
    .into())
}

/// Runs `argv` and returns its standard output.
pub fn output(argv: &[&str]) -> Result<String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command for `program` (a node or its runnel-faultfs) that dies with the harness: wrapped
/// in `setpriv --pdeathsig KILL` (util-linux, which execs, so the child's pid is still the
/// program's) where setpriv has that option; without it, a SIGKILLed harness leaves its
/// children to the next run's [`clean_leftovers`](crate::cluster::clean_leftovers). The signal
/// fires when the spawning thread exits: the harness spawns from its runtime's threads, which
/// outlive the cluster.
pub fn child_command(program: impl AsRef<OsStr>) -> Command {
    static SETPRIV_PDEATHSIG: OnceLock<bool> = OnceLock::new();
    let wrap = *SETPRIV_PDEATHSIG.get_or_init(|| {
        output(&["setpriv", "--help"]).is_ok_and(|help| help.contains("--pdeathsig"))
    });
    if !wrap {
        return Command::new(program);
    }
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "KILL", "--"]).arg(program);
    command
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: Signal) -> Result<()> {
    let raw = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
    let target = rustix::process::Pid::from_raw(raw).ok_or_else(|| format!("bad pid {pid}"))?;
    rustix::process::kill_process(target, signal)
        .map_err(|e| format!("signal {signal:?} to pid {pid}: {e}"))?;
    Ok(())
}

/// Whether process `pid` exists.
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn a_signal_reaches_the_process_without_a_kill_binary() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        signal(child.id(), Signal::KILL).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9));
    }

    #[test]
    fn a_child_command_runs_the_program_itself() {
        let mut child = child_command("sleep").arg("30").spawn().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap();
        signal(child.id(), Signal::KILL).unwrap();
        child.wait().unwrap();
        // setpriv may not have exec'd yet; either way the pid ends as the program.
        assert!(comm.trim() == "sleep" || comm.trim() == "setpriv", "{comm}");
    }
}
