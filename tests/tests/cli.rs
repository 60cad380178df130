//! Command line: bad flags, unknown settings and a port in use stop the broker at startup with
//! a non-zero exit code and an error naming the problem.

use std::net::TcpListener;

use runnel_e2e::{ensure, Result, TestBroker, TestResult};

/// The broker's own output, without the harness's start banners.
fn broker_output(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| !line.starts_with("=== runnel-e2e:") && !line.trim().is_empty())
        .collect()
}

fn expect_refusal(
    extra_args: &[&str],
    listen_on: Option<&TcpListener>,
    mentions: &str,
) -> Result<()> {
    let addr = listen_on.map(TcpListener::local_addr).transpose()?;
    let (status, log) = TestBroker::expect_start_failure(addr, extra_args)?;
    let output = broker_output(&log);
    ensure!(
        !status.success(),
        "runnel {extra_args:?} exited with {status}, expected a non-zero exit code\n{log}"
    );
    ensure!(
        output.iter().any(|line| line.contains(mentions)),
        "runnel {extra_args:?} failed ({status}) without an error mentioning {mentions:?}:\n{log}"
    );
    Ok(())
}

#[test]
fn unknown_flag_is_refused() -> TestResult {
    Ok(expect_refusal(&["--no-such-flag"], None, "--no-such-flag")?)
}

#[test]
fn unknown_setting_is_refused() -> TestResult {
    Ok(expect_refusal(
        &["--set", "no.such.setting=1"],
        None,
        "no.such.setting",
    )?)
}

#[test]
fn invalid_setting_value_is_refused() -> TestResult {
    Ok(expect_refusal(
        &["--set", "num.partitions=many"],
        None,
        "num.partitions",
    )?)
}

#[test]
fn port_in_use_is_refused() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(runnel_e2e::Error::from)?;
    let port = listener
        .local_addr()
        .map_err(runnel_e2e::Error::from)?
        .port()
        .to_string();
    Ok(expect_refusal(&[], Some(&listener), &port)?)
}

#[test]
fn unreadable_config_file_is_refused() -> TestResult {
    Ok(expect_refusal(
        &["--config", "/nonexistent/runnel.toml"],
        None,
        "/nonexistent/runnel.toml",
    )?)
}

#[test]
fn unknown_setting_in_config_file_is_refused() -> TestResult {
    let dir = tempfile::tempdir().map_err(runnel_e2e::Error::from)?;
    let path = dir.path().join("runnel.toml");
    std::fs::write(&path, "num.partitions = 3\nbogus.setting = 1\n")
        .map_err(runnel_e2e::Error::from)?;
    let path = path.to_string_lossy().into_owned();
    Ok(expect_refusal(&["--config", &path], None, "bogus.setting")?)
}

#[test]
fn data_dir_that_cannot_be_created_is_refused() -> TestResult {
    // A directory cannot be created below a character device.
    Ok(expect_refusal(
        &["--data-dir", "/dev/null/runnel-data"],
        None,
        "/dev/null/runnel-data",
    )?)
}

/// `--version` and `--help` answer on stdout with exit code 0 and start no broker.
#[test]
fn version_and_help_are_printed() -> TestResult {
    Ok(check_version_and_help()?)
}

fn check_version_and_help() -> Result<()> {
    let bin = runnel_e2e::runnel_bin()?;
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map_err(runnel_e2e::Error::from)?;
    let stdout = String::from_utf8_lossy(&version.stdout);
    ensure!(
        version.status.success()
            && stdout.trim() == format!("runnel {}", env!("CARGO_PKG_VERSION")),
        "--version: {} {stdout:?}",
        version.status
    );
    let help = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .map_err(runnel_e2e::Error::from)?;
    let stdout = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--advertise",
        "--data-dir",
        "--node-id",
        "--config",
        "--set",
    ] {
        ensure!(
            help.status.success() && stdout.contains(flag),
            "--help ({}) does not mention {flag}:\n{stdout}",
            help.status
        );
    }
    Ok(())
}
