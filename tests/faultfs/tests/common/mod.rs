//! A mounted `runnel-faultfs` binary for the tests: spawned over a fresh backing directory,
//! driven through its control socket, unmounted on drop even when the test fails.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// Only guards against hangs; never a performance threshold.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether this machine can mount FUSE file systems (root with /dev/fuse). Elsewhere the tests
/// print why they did not run; under CI (`CI=true`) a missing /dev/fuse fails the test instead,
/// so a CI without FUSE cannot pass these tests silently.
pub fn can_mount(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => true,
        Err(error) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{test}: cannot open /dev/fuse ({error}); CI must provide /dev/fuse")
        }
        Err(error) => {
            eprintln!("SKIPPED {test}: cannot open /dev/fuse ({error}); needs root and /dev/fuse");
            false
        }
    }
}

pub struct FaultFs {
    child: Option<Child>,
    dir: tempfile::TempDir,
    backing: PathBuf,
    unmounted: bool,
}

impl FaultFs {
    /// [`mount`](Self::mount), or `None` (after printing why) where FUSE cannot be mounted.
    pub fn mount_unless_skipped(test: &str, extra_args: &[&str]) -> Result<Option<FaultFs>> {
        if can_mount(test) {
            FaultFs::mount(extra_args).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Mounts a passthrough of a fresh backing directory.
    pub fn mount(extra_args: &[&str]) -> Result<FaultFs> {
        FaultFs::mount_over(None, extra_args)
    }

    /// Mounts a passthrough of `backing` (a fresh directory if `None`).
    pub fn mount_over(backing: Option<&Path>, extra_args: &[&str]) -> Result<FaultFs> {
        let dir = tempfile::Builder::new()
            .prefix("runnel-faultfs-")
            .tempdir()?;
        std::fs::create_dir(dir.path().join("mount"))?;
        let backing = match backing {
            Some(backing) => backing.to_path_buf(),
            None => {
                std::fs::create_dir(dir.path().join("backing"))?;
                dir.path().join("backing")
            }
        };
        let mut fs = FaultFs {
            child: None,
            dir,
            backing,
            unmounted: false,
        };
        let log = std::fs::File::create(fs.log_path())?;
        let child = Command::new(env!("CARGO_BIN_EXE_runnel-faultfs"))
            .arg("--backing")
            .arg(fs.backing())
            .arg("--mount")
            .arg(fs.mount_point())
            .arg("--control")
            .arg(fs.control_path())
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        fs.child = Some(child);
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        // The control socket appears once the mount is up.
        while UnixStream::connect(fs.control_path()).is_err() {
            if let Some(status) = fs
                .child
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
                return Err(format!("runnel-faultfs exited with {status}: {}", fs.log()).into());
            }
            if Instant::now() > deadline {
                return Err(
                    format!("no control socket after {MOUNT_TIMEOUT:?}: {}", fs.log()).into(),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(fs)
    }

    pub fn backing(&self) -> PathBuf {
        self.backing.clone()
    }

    pub fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mount")
    }

    fn control_path(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("faultfs.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Sends one command line, returns the answer line without its newline.
    pub fn command(&self, line: &str) -> Result<String> {
        let mut stream = UnixStream::connect(self.control_path())?;
        stream.set_read_timeout(Some(MOUNT_TIMEOUT))?;
        stream.write_all(format!("{line}\n").as_bytes())?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer)?;
        Ok(answer.trim_end().to_string())
    }

    /// `drop-unsynced`: (files, bytes) dropped.
    pub fn drop_unsynced(&self) -> Result<(u64, u64)> {
        let answer = self.command("drop-unsynced")?;
        let numbers: Vec<u64> = answer
            .strip_prefix("ok ")
            .ok_or_else(|| format!("drop-unsynced answered {answer:?}"))?
            .split(' ')
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        match numbers[..] {
            [files, bytes] => Ok((files, bytes)),
            _ => Err(format!("drop-unsynced answered {answer:?}").into()),
        }
    }

    /// SIGTERM, then waits for a clean exit (which unmounts).
    pub fn unmount(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                self.unmounted = true;
                if !status.success() {
                    return Err(
                        format!("runnel-faultfs exited with {status}: {}", self.log()).into(),
                    );
                }
                if is_mounted(&self.mount_point()) {
                    return Err(format!("still mounted after a clean exit: {}", self.log()).into());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                return Err(format!("runnel-faultfs ignored SIGTERM: {}", self.log()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        if self.child.is_some() && self.unmount().is_err() {
            eprintln!("runnel-faultfs did not stop cleanly:\n{}", self.log());
        }
        // Whatever happened to the process, leave no mount behind.
        if !self.unmounted || is_mounted(&self.mount_point()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.mount_point())
                .status();
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.display().to_string();
    mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(path.as_str()))
}
