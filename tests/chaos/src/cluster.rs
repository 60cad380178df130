//! [`ChaosCluster`]: three `runnel` nodes, each in its own network namespace ([`NetworkPlan`]),
//! with their data under the run's output directory, optionally on a small tmpfs (disk full)
//! and under `runnel-faultfs` (power loss). Everything it makes — processes, mounts,
//! namespaces — it removes when dropped, and [`clean_leftovers`] removes what a killed harness
//! left behind.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use runnel_e2e::cluster::{metadata_at, ClusterMetadata};
use runnel_e2e::{ensure, Result};

use crate::command::{
    child_command, output, process_exists, run, run_quietly, run_with_stdin, signal, Signal,
};
use crate::netns::{namespace_owner, node_ids, NetworkPlan};

/// The `cluster.id` of every chaos cluster.
pub const CLUSTER_ID: &str = "UnVubmVsQ2hhb3NDbHVzdGVy";
/// `broker.session.timeout.ms`: short, so that a paused or cut-off node is fenced quickly.
pub const BROKER_SESSION_TIMEOUT_MS: u64 = 3_000;
/// Size of a node's data tmpfs when disk-full is selected: far above what a run writes, small
/// enough to fill at once.
const DATA_TMPFS_BYTES: u64 = 256 << 20;
/// How long to wait for a runnel-faultfs mount to appear.
const FAULTFS_MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to exit on SIGTERM (its `shutdown.timeout.ms` is 5 s).
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a SIGKILLed node may take to be reaped. A node blocked in a FUSE request does not
/// die until the request ends; after this the harness aborts the FUSE connection.
const NODE_REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long runnel-faultfs may take to unmount on SIGTERM.
const FAULTFS_UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// The file holding the harness's pid in the output directory: a later run removes the
/// mounts of a directory whose harness is gone.
const PID_FILE: &str = "harness.pid";

/// Where each node's data lives, and what the harness puts under it.
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// Put every node's data on its own small tmpfs (needed by the disk-full fault).
    pub tmpfs: bool,
    /// Put every node's data dir under runnel-faultfs (needed by the power-loss fault): the
    /// binary to run.
    pub faultfs_bin: Option<PathBuf>,
}

/// A node's runnel-faultfs process and its control socket.
struct FaultFs {
    child: Child,
    mount: PathBuf,
    control: PathBuf,
}

/// One node: its process (when running), its directories.
struct Node {
    id: i32,
    /// `<out>/nodes/<id>`.
    dir: PathBuf,
    /// The tmpfs mount point, or a plain directory: runnel's data (or faultfs's backing) and
    /// the disk-full filler live here.
    disk_dir: PathBuf,
    /// What runnel gets as `--data-dir`.
    data_dir: PathBuf,
    tmpfs_mounted: bool,
    faultfs: Option<FaultFs>,
    child: Option<Child>,
    starts: u32,
    /// runnel-faultfs's written-back files at the last power loss.
    written_back_files: u64,
}

/// Three runnel nodes in network namespaces. Dropping it kills the nodes and removes the
/// mounts and namespaces.
pub struct ChaosCluster {
    plan: NetworkPlan,
    runnel_bin: PathBuf,
    nodes: Vec<Node>,
    /// Harness problems met while stopping nodes (a node that would not die), for the report.
    problems: Vec<String>,
}

impl ChaosCluster {
    /// Builds the network, the nodes' storage, and starts the three nodes (without waiting for
    /// them to serve). `out_dir` must exist.
    pub fn start(
        plan: NetworkPlan,
        out_dir: &Path,
        runnel_bin: PathBuf,
        storage: &StorageOptions,
    ) -> Result<ChaosCluster> {
        fs::write(out_dir.join(PID_FILE), std::process::id().to_string())?;
        let mut nodes = Vec::new();
        for id in node_ids() {
            let dir = out_dir.join("nodes").join(id.to_string());
            let disk_dir = dir.join("disk");
            fs::create_dir_all(&disk_dir)?;
            let data_dir = if storage.faultfs_bin.is_some() {
                dir.join("data")
            } else {
                disk_dir.join("data")
            };
            nodes.push(Node {
                id,
                dir,
                disk_dir,
                data_dir,
                tmpfs_mounted: false,
                faultfs: None,
                child: None,
                starts: 0,
                written_back_files: 0,
            });
        }
        // From here on, Drop removes whatever was made, whichever step fails.
        let mut cluster = ChaosCluster {
            plan,
            runnel_bin,
            nodes,
            problems: Vec::new(),
        };
        for command in cluster.plan.setup_commands() {
            run(&command)?;
        }
        for node in &mut cluster.nodes {
            if storage.tmpfs {
                run(&[
                    "mount".into(),
                    "-t".into(),
                    "tmpfs".into(),
                    "-o".into(),
                    format!("size={DATA_TMPFS_BYTES}"),
                    format!("rcchaos{}", std::process::id()),
                    node.disk_dir.display().to_string(),
                ])?;
                node.tmpfs_mounted = true;
            }
            match &storage.faultfs_bin {
                Some(bin) => node.faultfs = Some(FaultFs::mount(bin, &node.dir, &node.disk_dir)?),
                None => fs::create_dir_all(&node.data_dir)?,
            }
        }
        for id in node_ids() {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// The network plan (addresses, namespaces).
    pub fn plan(&self) -> &NetworkPlan {
        &self.plan
    }

    fn node_mut(&mut self, id: i32) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .ok_or_else(|| format!("no node {id}").into())
    }

    /// Starts node `id` (again), in its namespace, logging to `<node dir>/runnel.log`.
    pub fn spawn(&mut self, id: i32) -> Result<()> {
        let namespace = self.plan.node_namespace(id);
        let args = node_args(&self.plan, id);
        let bin = self.runnel_bin.clone();
        let node = self.node_mut(id)?;
        if node.child.is_some() {
            return Ok(());
        }
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("runnel.log"))?;
        writeln!(log, "=== runnel-chaos: start #{} ===", node.starts)?;
        let mut command = child_command("ip");
        command
            .args(["netns", "exec", &namespace])
            .arg(&bin)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        // Every RUNNEL_* variable is a broker setting to the broker.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RUNNEL_") {
                command.env_remove(name);
            }
        }
        // setpriv and `ip netns exec` exec (no fork): the child's pid is runnel's.
        let child = command
            .spawn()
            .map_err(|e| format!("starting node {id} ({}): {e}", bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILLs node `id` and reaps it (a crash); nothing if it is not running.
    pub fn kill(&mut self, id: i32) -> Result<()> {
        let node = self.node_mut(id)?;
        let problem = node.stop(None);
        self.problems.extend(problem);
        Ok(())
    }

    /// Stops node `id` as an operator would (SIGTERM, then SIGKILL if it has not exited
    /// within [`NODE_STOP_TIMEOUT`]) and starts it again: what brings a log directory that
    /// went offline (a failed write, disk full) back, through recovery.
    pub fn restart(&mut self, id: i32) -> Result<()> {
        let node = self.node_mut(id)?;
        let problem = node.stop(Some(NODE_STOP_TIMEOUT));
        self.problems.extend(problem);
        self.spawn(id)
    }

    /// Sends `name` (`STOP`, `CONT`) to node `id`'s process, if it runs.
    pub fn signal(&mut self, id: i32, name: Signal) -> Result<()> {
        let node = self.node_mut(id)?;
        if let Some(child) = node.child.as_mut() {
            if child.try_wait()?.is_none() {
                signal(child.id(), name)?;
            }
        }
        Ok(())
    }

    /// Node ids whose process has exited on its own (not killed by the harness): a node
    /// crash the report must show. Each is reaped and left stopped.
    pub fn exited_nodes(&mut self) -> Result<Vec<(i32, String)>> {
        let mut exited = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    exited.push((node.id, status.to_string()));
                    node.child = None;
                }
            }
        }
        Ok(exited)
    }

    /// Tells node `id`'s runnel-faultfs to drop every write not yet fsynced (the node must be
    /// stopped: a power loss). Returns its answer (`ok <files> <bytes>` dropped). Files the
    /// faultfs wrote back since the last power loss (its memory cap was hit) kept unsynced
    /// data through this one: the power loss was partial, a harness problem of the run.
    pub fn drop_unsynced(&mut self, id: i32) -> Result<String> {
        let node = self.node_mut(id)?;
        let faultfs = node
            .faultfs
            .as_ref()
            .ok_or("power loss needs runnel-faultfs under the data dirs")?;
        let written_back = faultfs.written_back_files()?;
        let answer = faultfs.drop_unsynced()?;
        let new_write_backs = written_back.saturating_sub(node.written_back_files);
        node.written_back_files = written_back;
        if new_write_backs > 0 {
            self.problems.push(format!(
                "harness: power loss on node {id} was partial: runnel-faultfs had written back \
                 {new_write_backs} file(s) (its memory cap), so their unsynced data survived"
            ));
        }
        Ok(format!(
            "{answer}; written back since the last power loss: {new_write_backs}"
        ))
    }

    /// Fills node `id`'s data tmpfs with a filler file until the device is full.
    pub fn fill_disk(&mut self, id: i32) -> Result<()> {
        let node = self.node_mut(id)?;
        ensure!(node.tmpfs_mounted, "disk-full needs the data tmpfs");
        let mut filler = File::create(node.disk_dir.join("filler"))?;
        let block = vec![0u8; 1 << 20];
        loop {
            match filler.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => return Ok(()), // ENOSPC
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes node `id`'s filler file.
    pub fn free_disk(&mut self, id: i32) -> Result<()> {
        let node = self.node_mut(id)?;
        match fs::remove_file(node.disk_dir.join("filler")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// A Metadata request to node `id` (all topics if `topics` is `None`), from the host.
    pub fn metadata(&self, id: i32, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
        metadata_at(self.plan.client_addr(id), topics)
    }

    /// Harness problems met so far (see [`Node::stop`]); each fails the run.
    pub fn take_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.problems)
    }

    /// Tears the cluster down (as dropping it does) and returns the harness problems met.
    pub fn shut_down(mut self) -> Vec<String> {
        self.tear_down();
        self.take_problems()
    }

    /// Kills every node, stops every faultfs (all at once: each may take a while to unmount),
    /// removes the mounts and the network. Idempotent.
    fn tear_down(&mut self) {
        for node in &mut self.nodes {
            let problem = node.stop(None);
            self.problems.extend(problem);
        }
        let faultfs: Vec<FaultFs> = self
            .nodes
            .iter_mut()
            .filter_map(|node| node.faultfs.take())
            .collect();
        FaultFs::unmount_all(faultfs);
        for node in &mut self.nodes {
            if node.tmpfs_mounted {
                run_quietly(&[
                    "umount".into(),
                    "-l".into(),
                    node.disk_dir.display().to_string(),
                ]);
                node.tmpfs_mounted = false;
            }
        }
        for command in self.plan.teardown_commands() {
            run_quietly(&command);
        }
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        self.tear_down();
        for problem in self.take_problems() {
            eprintln!("runnel-chaos: harness problem: {problem}");
        }
    }
}

impl Node {
    /// Stops the node's process, if it runs: SIGTERM and up to `grace` to exit (an operator's
    /// stop), else at once SIGKILL (a crash; a stopped process dies of it too), then reaps it
    /// within [`NODE_REAP_TIMEOUT`]. A node blocked in a FUSE request cannot die until the
    /// request ends, so then the FUSE connection is aborted (or, failing that, its
    /// runnel-faultfs SIGKILLed) and the node reaped again. Returns that harness problem.
    fn stop(&mut self, grace: Option<Duration>) -> Option<String> {
        let mut child = self.child.take()?;
        if let Some(grace) = grace {
            let _ = signal(child.id(), Signal::TERM);
            if reap_within(&mut child, grace) {
                return None;
            }
        }
        let _ = child.kill();
        if reap_within(&mut child, NODE_REAP_TIMEOUT) {
            return None;
        }
        let mut problem = format!(
            "harness: node {} was not reaped within {NODE_REAP_TIMEOUT:?} of SIGKILL",
            self.id
        );
        if let Some(faultfs) = self.faultfs.as_mut() {
            match abort_fuse_connection(&faultfs.mount) {
                Ok(()) => problem.push_str("; aborted its FUSE connection"),
                Err(e) => {
                    let _ = faultfs.child.kill();
                    problem.push_str(&format!(
                        "; aborting its FUSE connection failed ({e}), SIGKILLed its runnel-faultfs"
                    ));
                }
            }
        }
        if !reap_within(&mut child, NODE_REAP_TIMEOUT) {
            problem.push_str(&format!(
                "; pid {} still not reaped, left running",
                child.id()
            ));
        }
        Some(problem)
    }
}

/// Waits up to `timeout` for `child` to exit; whether it was reaped.
fn reap_within(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => return false,
        }
    }
}

/// Aborts the FUSE connection of the file system mounted at `mount` (every request pending on
/// it fails, so processes blocked in one can die). The connection is named by the mount's
/// device minor, read from /proc/self/mountinfo: a stat of the mount could block too.
fn abort_fuse_connection(mount: &Path) -> Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let minor = fuse_device_minor(&mountinfo, mount)
        .ok_or_else(|| format!("{} is not in /proc/self/mountinfo", mount.display()))?;
    let abort = format!("/sys/fs/fuse/connections/{minor}/abort");
    fs::write(&abort, "1").map_err(|e| format!("{abort}: {e}"))?;
    Ok(())
}

/// The device minor of the mount at `mount` in `mountinfo` (fields: id, parent, major:minor,
/// root, mount point, ...); the last such mount if several are stacked.
fn fuse_device_minor(mountinfo: &str, mount: &Path) -> Option<u32> {
    let target = mount.display().to_string();
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.nth(2)?;
            let point = fields.nth(1)?;
            (point == target).then_some(device)
        })
        .next_back()
        .and_then(|device| device.split_once(':')?.1.parse().ok())
}

impl FaultFs {
    /// Starts runnel-faultfs over `<disk_dir>/backing`, mounted at `<node_dir>/data`, and waits
    /// for the mount.
    fn mount(bin: &Path, node_dir: &Path, disk_dir: &Path) -> Result<FaultFs> {
        let backing = disk_dir.join("backing");
        let mount = node_dir.join("data");
        let control = node_dir.join("faultfs.sock");
        fs::create_dir_all(&backing)?;
        fs::create_dir_all(&mount)?;
        let _ = fs::remove_file(&control);
        let log = File::create(node_dir.join("faultfs.log"))?;
        let child = child_command(bin)
            .arg("--backing")
            .arg(&backing)
            .arg("--mount")
            .arg(&mount)
            .arg("--control")
            .arg(&control)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut faultfs = FaultFs {
            child,
            mount,
            control,
        };
        let deadline = Instant::now() + FAULTFS_MOUNT_TIMEOUT;
        while !(is_mounted(&faultfs.mount) && faultfs.control.exists()) {
            if let Some(status) = faultfs.child.try_wait()? {
                return Err(format!("runnel-faultfs exited with {status} before mounting").into());
            }
            if Instant::now() >= deadline {
                let error = format!(
                    "runnel-faultfs did not mount {} within {FAULTFS_MOUNT_TIMEOUT:?}",
                    faultfs.mount.display()
                );
                faultfs.unmount();
                return Err(error.into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(faultfs)
    }

    /// `drop-unsynced\n` on the control socket; the answer must be `ok <files> <bytes>`.
    fn drop_unsynced(&self) -> Result<String> {
        self.command("drop-unsynced")
    }

    /// How many files runnel-faultfs has written back so far (the 4th field of `stats`):
    /// unsynced data it made durable because its memory cap was hit.
    fn written_back_files(&self) -> Result<u64> {
        let answer = self.command("stats")?;
        parse_written_back(&answer)
            .ok_or_else(|| format!("runnel-faultfs answered {answer:?} to stats").into())
    }

    /// Sends `line` on the control socket; the answer must start with `ok`.
    fn command(&self, line: &str) -> Result<String> {
        let mut stream = UnixStream::connect(&self.control)
            .map_err(|e| format!("{}: {e}", self.control.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(format!("{line}\n").as_bytes())?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer)?;
        ensure!(
            answer.split_whitespace().next() == Some("ok"),
            "runnel-faultfs at {} answered {answer:?} to {line}",
            self.control.display()
        );
        Ok(answer.trim().to_owned())
    }

    /// SIGTERM (runnel-faultfs unmounts on it), bounded; then SIGKILL and a lazy unmount for
    /// whatever is left.
    fn unmount(self) {
        FaultFs::unmount_all(vec![self]);
    }

    /// [`unmount`](Self::unmount) for several at once, within one [`FAULTFS_UNMOUNT_TIMEOUT`].
    fn unmount_all(mut all: Vec<FaultFs>) {
        for faultfs in &all {
            let _ = signal(faultfs.child.id(), Signal::TERM);
        }
        let deadline = Instant::now() + FAULTFS_UNMOUNT_TIMEOUT;
        while all
            .iter_mut()
            .any(|faultfs| matches!(faultfs.child.try_wait(), Ok(None)))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for faultfs in &mut all {
            let _ = faultfs.child.kill();
            let _ = faultfs.child.wait();
            if is_mounted(&faultfs.mount) {
                run_quietly(&[
                    "umount".into(),
                    "-l".into(),
                    faultfs.mount.display().to_string(),
                ]);
            }
        }
    }
}

/// The settings of node `id` (after `--data-dir`): a combined broker and controller, as
/// tests/src/cluster.rs starts them, with short timeouts so faults are noticed within seconds.
pub fn node_args(plan: &NetworkPlan, id: i32) -> Vec<String> {
    let client = plan.client_addr(id);
    let controller = plan.controller_addr(id);
    [
        format!("node.id={id}"),
        "process.roles=broker,controller".to_owned(),
        format!("controller.quorum.voters={}", plan.quorum_voters()),
        format!("listeners=PLAINTEXT://{client},CONTROLLER://{controller}"),
        format!("advertised.listeners=PLAINTEXT://{client}"),
        "controller.listener.names=CONTROLLER".to_owned(),
        format!("cluster.id={CLUSTER_ID}"),
        format!("broker.session.timeout.ms={BROKER_SESSION_TIMEOUT_MS}"),
        "broker.heartbeat.interval.ms=500".to_owned(),
        "replica.lag.time.max.ms=5000".to_owned(),
        "default.replication.factor=3".to_owned(),
        "min.insync.replicas=2".to_owned(),
        "offsets.topic.num.partitions=3".to_owned(),
        "group.initial.rebalance.delay.ms=0".to_owned(),
        "shutdown.timeout.ms=5000".to_owned(),
    ]
    .into_iter()
    .flat_map(|setting| ["--set".to_owned(), setting])
    .collect()
}

fn is_mounted(path: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let target = path.display().to_string();
    mounts
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some(target.as_str()))
}

/// Removes what a harness that was killed (SIGKILL leaves no chance to clean up) left behind:
/// processes in and namespaces named `rc<pid>…` whose pid is gone, and the mounts of output
/// directories whose `harness.pid` names a dead process. Returns what it removed.
pub fn clean_leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    let me = std::process::id();
    let namespaces = output(&["ip", "netns", "list"]).unwrap_or_default();
    for name in namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        match namespace_owner(name) {
            Some(owner) if owner != me && !process_exists(owner) => {
                let pids = output(&["ip", "netns", "pids", name]).unwrap_or_default();
                for pid in pids.lines().filter_map(|p| p.trim().parse::<u32>().ok()) {
                    let _ = signal(pid, Signal::KILL);
                }
                run_quietly(&["ip".into(), "netns".into(), "del".into(), name.to_owned()]);
                removed.push(format!("namespace {name}"));
            }
            _ => {}
        }
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for mount_point in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let path = Path::new(mount_point);
        let Some(out_dir) = leftover_out_dir(path) else {
            continue;
        };
        // Only a directory whose harness is known and gone: a mount without harness.pid may
        // belong to a harness that is just starting, or to something else entirely.
        if !harness_pid(&out_dir).is_some_and(|pid| pid != me && !process_exists(pid)) {
            continue;
        }
        for pid in faultfs_serving(mount_point) {
            let _ = signal(pid, Signal::KILL);
            removed.push(format!("runnel-faultfs process {pid}"));
        }
        run_quietly(&["umount".into(), "-l".into(), mount_point.to_owned()]);
        removed.push(format!("mount {mount_point}"));
    }
    removed
}

/// The runnel-faultfs processes serving `mount_point` (`--mount <mount_point>` in their
/// command line): a killed harness leaves them running.
fn faultfs_serving(mount_point: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_faultfs = args.first().is_some_and(|a| a.ends_with(b"runnel-faultfs"));
            is_faultfs
                && args
                    .windows(2)
                    .any(|w| w == [b"--mount".as_slice(), mount_point.as_bytes()])
        })
        .collect()
}

/// The output directory of a mount point the harness makes (`<out>/nodes/<id>/disk` or
/// `<out>/nodes/<id>/data`).
/// The pid in `out_dir`'s harness.pid, if there is one.
fn harness_pid(out_dir: &Path) -> Option<u32> {
    fs::read_to_string(out_dir.join(PID_FILE))
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
}

/// Errors if `out_dir` belongs to a harness that is still running (two runs in one directory
/// would empty each other's output and unmount each other's nodes).
pub fn ensure_out_dir_unused(out_dir: &Path) -> Result<()> {
    match harness_pid(out_dir) {
        Some(pid) if process_exists(pid) => Err(format!(
            "{} is in use by a running harness (pid {pid} in its {PID_FILE})",
            out_dir.display()
        )
        .into()),
        _ => Ok(()),
    }
}

/// The written-back files of a runnel-faultfs `stats` answer
/// (`ok <files> <bytes> <written-back files> <directory operations>`).
fn parse_written_back(stats: &str) -> Option<u64> {
    let mut fields = stats.split_whitespace();
    (fields.next()? == "ok").then_some(())?;
    fields.nth(2)?.parse().ok()
}

fn leftover_out_dir(mount_point: &Path) -> Option<PathBuf> {
    let leaf = mount_point.file_name()?.to_str()?;
    let node = mount_point.parent()?;
    let nodes = node.parent()?;
    let is_ours = matches!(leaf, "disk" | "data")
        && node.file_name()?.to_str()?.parse::<i32>().is_ok()
        && nodes.file_name()?.to_str()? == "nodes";
    is_ours.then(|| nodes.parent().map(Path::to_path_buf))?
}

/// Applies `script` (nftables) in node `id`'s namespace.
pub fn apply_firewall(plan: &NetworkPlan, id: i32, script: &str) -> Result<()> {
    let argv: Vec<String> = [
        "ip",
        "netns",
        "exec",
        &plan.node_namespace(id),
        "nft",
        "-f",
        "-",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    run_with_stdin(&argv, Some(script))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn node_settings_name_the_node_and_its_quorum() {
        let plan = NetworkPlan::new(77, "");
        let args = node_args(&plan, 2).join(" ");
        assert!(args.starts_with("--set node.id=2 --set process.roles=broker,controller"));
        assert!(args.contains(&format!(
            "--set listeners=PLAINTEXT://{0}:9092,CONTROLLER://{0}:9093",
            plan.node_ip(2)
        )));
        assert!(args.contains(&format!(
            "--set controller.quorum.voters={}",
            plan.quorum_voters()
        )));
        assert!(args.contains("--set min.insync.replicas=2"));
    }

    #[test]
    fn the_fuse_connection_is_named_by_the_mounts_device_minor() {
        let mountinfo = "22 1 0:21 / /proc rw - proc proc rw\n\
            97 29 0:52 / /out/nodes/1/data rw,nosuid - fuse.runnel-faultfs faultfs rw\n\
            98 29 0:53 / /out/nodes/2/data rw,nosuid - fuse.runnel-faultfs faultfs rw\n";
        assert_eq!(
            fuse_device_minor(mountinfo, Path::new("/out/nodes/2/data")),
            Some(53)
        );
        assert_eq!(
            fuse_device_minor(mountinfo, Path::new("/out/nodes/3/data")),
            None
        );
    }

    #[test]
    fn an_out_dir_of_a_running_harness_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ensure_out_dir_unused(dir.path()).unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs::write(dir.path().join(PID_FILE), live.id().to_string()).unwrap();
        let refused = ensure_out_dir_unused(dir.path());
        live.kill().unwrap();
        live.wait().unwrap();
        assert!(refused.is_err());
        // Reaped: the pid names no process any more.
        ensure_out_dir_unused(dir.path()).unwrap();
    }

    #[test]
    fn written_back_files_are_the_third_number_of_stats() {
        assert_eq!(parse_written_back("ok 3 4096 2 1"), Some(2));
        assert_eq!(parse_written_back("ok 3 4096"), None);
        assert_eq!(parse_written_back("error unknown command"), None);
    }

    #[test]
    fn leftover_mounts_are_recognised_by_path() {
        assert_eq!(
            leftover_out_dir(Path::new("/x/out/nodes/2/disk")),
            Some(PathBuf::from("/x/out"))
        );
        assert_eq!(
            leftover_out_dir(Path::new("/x/out/nodes/3/data")),
            Some(PathBuf::from("/x/out"))
        );
        assert_eq!(leftover_out_dir(Path::new("/x/out/nodes/a/data")), None);
        assert_eq!(leftover_out_dir(Path::new("/var/lib/docker")), None);
        assert_eq!(leftover_out_dir(Path::new("/")), None);
    }
}
