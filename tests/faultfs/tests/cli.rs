//! The command line: what the harness relies on when it starts runnel-faultfs wrongly.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn faultfs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_runnel-faultfs"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn missing_arguments_are_a_usage_error() {
    let output = faultfs(&["--backing", "/tmp"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--mount"), "stderr: {stderr}");
}

#[test]
fn a_missing_backing_directory_fails_before_mounting() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let mount = dir.path().join("mount");
    std::fs::create_dir(&mount).unwrap();
    let control = dir.path().join("control.sock");
    let output = faultfs(&[
        "--backing",
        missing.to_str().unwrap(),
        "--mount",
        mount.to_str().unwrap(),
        "--control",
        control.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("runnel-faultfs: "), "stderr: {stderr}");
    assert!(!control.exists(), "no control socket without a mount");
}

#[test]
fn help_names_every_option() {
    let output = faultfs(&["--help"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for option in ["--backing", "--mount", "--control", "--unsynced-bytes-max"] {
        assert!(stdout.contains(option), "--help lacks {option}: {stdout}");
    }
}
