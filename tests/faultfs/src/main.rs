//! `runnel-faultfs --backing B --mount M --control S [--unsynced-bytes-max N]`: mounts the
//! fault-injecting passthrough of B at M, answers commands on the unix socket S (created once
//! the mount is up, so its existence means "mounted"), and unmounts on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Arg, Command};
use runnel_faultfs::control;
use runnel_faultfs::fs::{check_backing_root, FaultFs, Shared};

/// Default cap on unsynced bytes per mount: past it, files are written back (they survive).
const UNSYNCED_BYTES_MAX_DEFAULT: u64 = 1 << 30;

struct Options {
    backing: PathBuf,
    mount: PathBuf,
    control: PathBuf,
    unsynced_bytes_max: u64,
}

fn parse_options() -> Result<Options, clap::Error> {
    let path = |id: &'static str, help: &'static str| {
        Arg::new(id)
            .long(id)
            .value_name("PATH")
            .required(true)
            .value_parser(clap::value_parser!(PathBuf))
            .help(help)
    };
    let mut matches = Command::new("runnel-faultfs")
        .about("FUSE passthrough that holds unsynced writes and drops them on command")
        .arg(path("backing", "Directory holding what was fsynced"))
        .arg(path("mount", "Mount point (an existing empty directory)"))
        .arg(path(
            "control",
            "Unix socket for commands: drop-unsynced, stats, fail-writes on|off",
        ))
        .arg(
            Arg::new("unsynced-bytes-max")
                .long("unsynced-bytes-max")
                .value_name("BYTES")
                .value_parser(clap::value_parser!(u64))
                .help("Unsynced bytes held before a file is written back (default 1 GiB)"),
        )
        .try_get_matches()?;
    let mut take = |id: &str| matches.remove_one::<PathBuf>(id).unwrap_or_default();
    Ok(Options {
        backing: take("backing"),
        mount: take("mount"),
        control: take("control"),
        unsynced_bytes_max: matches
            .remove_one::<u64>("unsynced-bytes-max")
            .unwrap_or(UNSYNCED_BYTES_MAX_DEFAULT),
    })
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        // --help and --version exit 0 on stdout; usage errors exit 2 on stderr.
        Err(error) => error.exit(),
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("runnel-faultfs: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: Options) -> std::io::Result<()> {
    check_backing_root(&options.backing)?;
    let backing = std::fs::canonicalize(&options.backing)?;
    let shared = Shared::new(backing, options.unsynced_bytes_max)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("runnel-faultfs".to_string()),
        fuser::MountOption::Subtype("runnel-faultfs".to_string()),
    ];
    let session = fuser::spawn_mount(FaultFs::new(Arc::clone(&shared)), &options.mount, &config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        // A socket left by a previous run that was killed would make bind fail.
        match std::fs::remove_file(&options.control) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let listener = tokio::net::UnixListener::bind(&options.control)?;
        eprintln!(
            "runnel-faultfs: {} mounted at {}, control socket {}",
            options.backing.display(),
            options.mount.display(),
            options.control.display()
        );
        tokio::select! {
            () = control::serve(listener, Arc::clone(&shared)) => {}
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        Ok(())
    });
    let _ = std::fs::remove_file(&options.control);
    let unmounted = unmount(session, &options.mount);
    // After the unmount nothing writes any more; what is unsynced now is written back.
    let failed = shared.write_back_all()?;
    if failed > 0 {
        return Err(std::io::Error::other(format!(
            "{failed} files could not be written back at unmount"
        )));
    }
    served.and(unmounted)
}

/// Unmounts and waits for the FUSE session to end. A plain unmount fails while a file on the
/// mount is open (EBUSY), and exiting then would leave a dead mount ("transport endpoint is not
/// connected"); so the mount is detached instead (gone from the namespace at once) and the
/// session serves the open files until the last one is closed, then ends.
fn unmount(session: fuser::BackgroundSession, mount: &Path) -> std::io::Result<()> {
    match rustix::mount::unmount(mount, rustix::mount::UnmountFlags::empty()) {
        Ok(()) => {}
        Err(rustix::io::Errno::BUSY) => {
            eprintln!(
                "runnel-faultfs: {} is still in use: detached, serving its open files until \
                 they are closed",
                mount.display()
            );
            rustix::mount::unmount(mount, rustix::mount::UnmountFlags::DETACH)?;
        }
        Err(errno) => return Err(errno.into()),
    }
    session.join()
}
