//! A three-node cluster on 127.0.0.1 for the benchmark scripts (scripts/bench/replication.sh),
//! started with the test harness's [`TestCluster`] (the runnel of `RUNNEL_BIN`, or one it
//! builds), so scripts need not repeat the cluster's settings.
//!
//! ```text
//! bench_cluster [--nodes 3] [--seconds 300] < control
//! ```
//! Prints `bootstrap=<addr>,<addr>,<addr>` once every node lists every broker, then runs until
//! its standard input ends (the script closes it) or `--seconds` pass, whichever comes first,
//! and stops the nodes (their data dirs are removed). A failure prints every node's log.

use std::io::Read;
use std::time::Duration;

use runnel_e2e::{flag, Result, TestCluster};

/// `--nodes` and `--seconds`.
fn settings() -> Result<(usize, Duration)> {
    Ok((
        flag("--nodes", 3)?,
        Duration::from_secs(flag("--seconds", 300)?),
    ))
}

async fn run(cluster: &mut TestCluster, nodes: usize) -> Result<()> {
    cluster.wait_for_brokers(nodes).await?;
    println!("bootstrap={}", cluster.bootstrap());
    Ok(())
}

#[tokio::main]
async fn main() -> std::result::Result<(), runnel_e2e::Failure> {
    let (nodes, limit) = settings()?;
    let mut cluster = TestCluster::start(nodes)?;
    let started = run(&mut cluster, nodes).await;
    cluster.check(started)?;
    // Standard input ending is the stop signal; a thread, as stdin has no async read here.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = stop.send(());
    });
    let _ = tokio::time::timeout(limit, stopped).await;
    drop(cluster);
    Ok(())
}
