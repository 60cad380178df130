//! Harness for black-box tests: starts the real `runnel` binary on a free port with its own
//! temp data dir, and gives tests real Kafka clients (rdkafka) pointed at it.
//!
//! It knows the broker only through its command line, its TCP port and its documented data
//! layout (`<data-dir>/<topic>-<partition>.<topic id>/<base offset>.log`); never its code.
//!
//! Every test owns one [`TestBroker`]; a failing test prints the broker's log: a test's body runs
//! inside [`TestBroker::check`], which appends the log to the error, and a panic while a
//! `TestBroker` is alive prints the log from `Drop`.

pub mod client;
pub mod cluster;
pub mod hostile;
pub mod log_file;
pub mod wire;

pub use client::*;
pub use cluster::TestCluster;

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Error type of the harness and of every test: any error, with a message that says what
/// did not happen.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result of the harness and of test steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A test's failure, printed verbatim (with the broker log) by the test runner: the runner shows
/// a returned error with `Debug`, which for a plain error would print one escaped line.
pub struct Failure(String);

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure(format!("{error}\n{}", seed_note()))
    }
}

/// What every test returns.
pub type TestResult = std::result::Result<(), Failure>;

/// How long the broker may take to accept TCP connections after being spawned.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the broker may take to exit after SIGTERM.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// Generous deadline for anything a test waits for (records arriving, topics appearing). It
/// only guards against hangs; it is never a performance threshold.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Returns `Err` with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

/// Returns `Err` naming both values unless they are equal.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err(format!(
                        "{}: expected {:?}, got {:?}",
                        format!($($fmt)+),
                        right,
                        left
                    )
                    .into());
                }
            }
        }
    };
}

/// A `runnel` process serving on its own port with its own data dir, both kept across
/// [`restart`](TestBroker::restart). Killed on drop.
pub struct TestBroker {
    child: Option<Child>,
    addr: SocketAddr,
    extra_args: Vec<String>,
    temp_dir: tempfile::TempDir,
    starts: u32,
    /// Whether the harness passes `--listen`/`--advertise` (off when a test names the
    /// listeners itself: setting both a shorthand and `listeners` is an error).
    shorthands: bool,
}

impl TestBroker {
    /// Spawns `runnel` on a free 127.0.0.1 port with a fresh data dir and `extra_args` (such as
    /// `--set num.partitions=3`), and waits until it accepts TCP connections.
    ///
    /// Errors if the binary can't be built or spawned, or if it exits or doesn't accept
    /// connections within [`STARTUP_TIMEOUT`]; the error includes the broker log.
    pub fn start(extra_args: &[&str]) -> Result<TestBroker> {
        let mut broker = TestBroker::unstarted(free_addr()?, extra_args)?;
        broker
            .spawn()
            .map_err(|e| broker.failure_text(&e.to_string()))?;
        Ok(broker)
    }

    /// Runs `runnel` with `extra_args` on `addr` (a free port if `None`) and a fresh data dir,
    /// expecting it to fail at startup: returns its exit status and log once it exits. Errors
    /// if it is still running after [`STARTUP_TIMEOUT`].
    pub fn expect_start_failure(
        addr: Option<SocketAddr>,
        extra_args: &[&str],
    ) -> Result<(ExitStatus, String)> {
        let mut broker = TestBroker::unstarted(addr.map_or_else(free_addr, Ok)?, extra_args)?;
        let status = broker.spawn_expecting_exit()?;
        Ok((status, broker.log()))
    }

    fn unstarted(addr: SocketAddr, extra_args: &[&str]) -> Result<TestBroker> {
        Ok(TestBroker {
            child: None,
            addr,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            temp_dir: tempfile::Builder::new().prefix("runnel-e2e-").tempdir()?,
            starts: 0,
            shorthands: true,
        })
    }

    /// As [`start`](Self::start), but without the harness's `--listen`/`--advertise`: the test
    /// names the listeners in `extra_args` (`--set listeners=…`), and `addr` (one of them) is
    /// where the harness waits for the broker and clients bootstrap.
    pub fn start_with_listeners(addr: SocketAddr, extra_args: &[&str]) -> Result<TestBroker> {
        let mut broker = TestBroker::unstarted(addr, extra_args)?;
        broker.shorthands = false;
        broker
            .spawn()
            .map_err(|e| broker.failure_text(&e.to_string()))?;
        Ok(broker)
    }

    /// As [`expect_start_failure`](Self::expect_start_failure), but without the harness's
    /// `--listen`/`--advertise` (only `--data-dir` and `extra_args`).
    pub fn expect_start_failure_with_listeners(
        extra_args: &[&str],
    ) -> Result<(ExitStatus, String)> {
        let mut broker = TestBroker::unstarted(free_addr()?, extra_args)?;
        broker.shorthands = false;
        let status = broker.spawn_expecting_exit()?;
        Ok((status, broker.log()))
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The broker's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The data dir passed as `--data-dir`; it survives restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.temp_dir.path().join("data")
    }

    /// Directory of one partition's log segments: `<topic>-<partition>.<topic id>` (the
    /// documented layout, docs/storage-format.md), found by listing the data dir. If there is
    /// none (the topic does not exist), the path without the id, which does not exist either.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        let prefix = format!("{topic}-{partition}.");
        let keyed = std::fs::read_dir(self.data_dir()).ok().and_then(|entries| {
            entries.flatten().map(|e| e.path()).find(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(&prefix))
                    .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            })
        });
        keyed.unwrap_or_else(|| self.data_dir().join(format!("{topic}-{partition}")))
    }

    fn log_path(&self) -> PathBuf {
        self.temp_dir.path().join("broker.log")
    }

    /// Everything the broker (all its runs) wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        match std::fs::read(self.log_path()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("(no broker log at {}: {e})", self.log_path().display()),
        }
    }

    /// Passes `result` through, appending the broker log to an error so that a failing test
    /// shows what the broker did.
    pub fn check<T>(&self, result: Result<T>) -> Result<T, Failure> {
        result.map_err(|e| Failure::from(Error::from(self.failure_text(&e.to_string()))))
    }

    pub(crate) fn failure_text(&self, error: &str) -> String {
        format!(
            "{error}\n--- broker log ({}) ---\n{}\n--- end of broker log ---",
            self.log_path().display(),
            self.log()
        )
    }

    /// Sends SIGKILL and reaps the process: a crash, nothing flushed by the broker.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends SIGTERM and waits up to [`SHUTDOWN_TIMEOUT`] for the broker to exit, returning its
    /// exit status. If it doesn't exit in time it is killed and this errors.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err("terminate: broker is not running".into());
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        ensure!(
            status.success(),
            "kill -TERM {} failed: {status}",
            child.id()
        );
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                return Err(format!(
                    "broker did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM (killed it)"
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, check the exit status is 0, start again on the same port and data dir.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            let status = self.terminate()?;
            ensure!(
                status.success(),
                "broker exited with {status} after SIGTERM, expected exit code 0"
            );
        }
        self.spawn()
    }

    /// Replaces the extra arguments the next start uses (e.g. to restart without a testing
    /// knob the first start had).
    pub fn set_extra_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
    }

    /// Starts the broker again on the same port and data dir after [`kill9`](Self::kill9) or
    /// [`terminate`](Self::terminate).
    pub fn start_again(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "start_again: broker is still running");
        self.spawn()
    }

    /// Starts the broker again on the same data dir expecting it to refuse to start: returns
    /// its exit status once it exits; errors if it is still running after [`STARTUP_TIMEOUT`].
    pub fn start_again_expecting_failure(&mut self) -> Result<ExitStatus> {
        ensure!(
            self.child.is_none(),
            "start_again_expecting_failure: broker is running"
        );
        self.spawn_expecting_exit()
    }

    fn spawn_expecting_exit(&mut self) -> Result<ExitStatus> {
        self.spawn_process()?;
        let mut child = self.child.take().ok_or("broker process missing")?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                return Err(format!(
                    "broker was expected to fail at startup but still ran after \
                     {STARTUP_TIMEOUT:?} (killed it)"
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A broker not started yet, serving clients on `addr`, whose listeners `extra_args` name
    /// (no `--listen`/`--advertise`): a [`TestCluster`] node. The cluster spawns every node
    /// ([`spawn_process`](Self::spawn_process)) before it waits for any
    /// ([`wait_ready`](Self::wait_ready)): a node may wait for its quorum before serving.
    pub(crate) fn unstarted_node(addr: SocketAddr, extra_args: &[String]) -> Result<TestBroker> {
        let args: Vec<&str> = extra_args.iter().map(String::as_str).collect();
        let mut broker = TestBroker::unstarted(addr, &args)?;
        broker.shorthands = false;
        Ok(broker)
    }

    /// Whether the process is still running (not exited).
    pub fn is_running(&mut self) -> Result<bool> {
        match self.child.as_mut() {
            None => Ok(false),
            Some(child) => Ok(child.try_wait()?.is_none()),
        }
    }

    fn spawn(&mut self) -> Result<()> {
        self.spawn_process()?;
        self.wait_ready()
    }

    pub(crate) fn spawn_process(&mut self) -> Result<()> {
        let bin = runnel_bin()?;
        std::fs::create_dir_all(self.data_dir())?;
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let addr = self.addr.to_string();
        let data_dir = self.data_dir();
        let mut args: Vec<String> = Vec::new();
        if self.shorthands {
            args.extend(["--listen".into(), addr.clone(), "--advertise".into(), addr]);
        }
        args.extend(["--data-dir".into(), data_dir.display().to_string()]);
        args.extend(self.extra_args.iter().cloned());
        writeln!(
            log,
            "=== runnel-e2e: start #{} {} {} ===",
            self.starts,
            bin.display(),
            args.join(" ")
        )?;
        let stderr = log.try_clone()?;
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // Every RUNNEL_* variable is a broker setting to the broker, and an unknown one is a
        // start-up error: keep the harness's own (RUNNEL_BIN, RUNNEL_SEED) out of its sight.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RUNNEL_") {
                cmd.env_remove(name);
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub(crate) fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(format!(
                        "broker exited with {status} before accepting connections on {}",
                        self.addr
                    )
                    .into());
                }
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "broker did not accept connections on {} within {STARTUP_TIMEOUT:?}",
                    self.addr
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "{}\n--- broker log ({}) ---\n{}\n--- end of broker log ---",
                seed_note(),
                self.log_path().display(),
                self.log()
            );
        }
    }
}

/// A free TCP port on 127.0.0.1: bind port 0, read the port, release it.
pub fn free_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Path of the `runnel` binary: `$RUNNEL_BIN` if set; otherwise `target/<profile>/runnel` beside
/// this test executable (which lives in `target/<profile>/deps/`), built by `cargo build` once per
/// test process so the tests never run a stale broker.
pub fn runnel_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_or_build_runnel().map_err(|e| e.to_string()))
        .clone()
        .map_err(Into::into)
}

fn locate_or_build_runnel() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("RUNNEL_BIN") {
        let bin = PathBuf::from(bin);
        ensure!(bin.is_file(), "RUNNEL_BIN={} is not a file", bin.display());
        return Ok(bin);
    }
    let exe = std::env::current_exe()?;
    let deps_dir = exe.parent().ok_or("test executable has no parent dir")?;
    // Examples live in target/<profile>/examples/, tests in target/<profile>/deps/.
    let profile_dir = deps_dir
        .parent()
        .ok_or("test executable is not in target/<profile>/deps")?;
    let target_dir = profile_dir.parent().ok_or("no target dir")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("profile dir name is not UTF-8")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "runnel-broker", "--bin", "runnel"])
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(workspace) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        cmd.current_dir(workspace);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("running cargo build for runnel: {e}"))?;
    ensure!(
        status.success(),
        "cargo build -p runnel-broker failed: {status}"
    );
    let bin = profile_dir.join("runnel");
    ensure!(
        bin.is_file(),
        "runnel binary not found at {}",
        bin.display()
    );
    Ok(bin)
}

/// The value after `name` on this process's command line (`--rounds 3`), parsed, or `default`
/// when the flag is absent: the benchmark examples' flags.
pub fn flag<T>(name: &str, default: T) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(index) => Ok(args
            .get(index + 1)
            .ok_or_else(|| format!("{name} needs a value"))?
            .parse()?),
    }
}

/// The seed of this test process's randomness: `$RUNNEL_SEED` if set, else from the clock.
/// Printed with every failure so a run can be replayed.
pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        std::env::var("RUNNEL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
    })
}

fn seed_note() -> String {
    format!("replay with RUNNEL_SEED={}", seed())
}

/// A small seeded PRNG (xorshift64*), enough for choosing kill points and record sizes.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from [`seed`] mixed with `stream`, so each use gets its own sequence.
    pub fn new(stream: u64) -> Rng {
        Rng((seed() ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `low..high` (`high > low`).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low).max(1)
    }
}

/// Polls `condition` every 50 ms until it returns `Ok(true)` or `timeout` passes; on timeout
/// errors with "timed out after ..: {what}". An `Err` from `condition` is returned at once.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?}: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Memory of the broker process (hostile-input tests: growth must stay bounded).
// ---------------------------------------------------------------------------------------------

impl TestBroker {
    /// The broker process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resets the broker's peak RSS to its current RSS (`clear_refs` 5), so that the next
    /// [`TestBroker::peak_rss_bytes`] covers only what happens from here on.
    pub fn reset_peak_rss(&self) -> Result<()> {
        let pid = self.pid().ok_or("reset_peak_rss: broker is not running")?;
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
            .map_err(|e| format!("resetting the peak RSS of pid {pid}: {e}"))?;
        Ok(())
    }

    /// The broker's peak resident set size so far (`VmHWM` in `/proc/<pid>/status`), in bytes.
    /// Errors if the broker is not running or the field is missing.
    pub fn peak_rss_bytes(&self) -> Result<u64> {
        let pid = self.pid().ok_or("peak_rss_bytes: broker is not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no VmHWM line in /proc/{pid}/status"))?;
        Ok(kib * 1024)
    }
}
