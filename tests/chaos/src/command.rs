//! Running the system tools the harness drives (`ip`, `nft`, `tc`, `mount`, `kill`): an argv
//! in, its exit status checked, its stderr in the error.

use std::io::Write;
use std::process::{Command, Stdio};

use runnel_e2e::Result;

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

/// Sends `signal` (`KILL`, `STOP`, `CONT`) to process `pid`.
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    run(&["kill".to_owned(), format!("-{signal}"), pid.to_string()])
}

/// Whether process `pid` exists.
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
