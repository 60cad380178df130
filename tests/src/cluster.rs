//! [`TestCluster`]: several real `runnel` processes on 127.0.0.1 forming one cluster (combined
//! broker + controller nodes with ids `1..=n`, one metadata quorum of all of them), and a raw
//! Metadata request to see what each of them says about the cluster.
//!
//! Each node is a [`TestBroker`] (same binary lookup, data dir, log and process handling), started
//! with Kafka's KRaft settings instead of `--listen`/`--advertise`:
//!
//! ```text
//! --set node.id=N --set process.roles=broker,controller
//! --set controller.quorum.voters=1@127.0.0.1:C1,2@127.0.0.1:C2,3@127.0.0.1:C3
//! --set listeners=PLAINTEXT://127.0.0.1:PN,CONTROLLER://127.0.0.1:CN
//! --set advertised.listeners=PLAINTEXT://127.0.0.1:PN
//! --set controller.listener.names=CONTROLLER --set cluster.id=...
//! ```
//!
//! Every node is spawned before any is waited for: a node may wait for its quorum before it
//! serves clients.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::wire::{put_i32, put_string, RawConnection, Reader};
use crate::{ensure, free_addr, Error, Failure, Result, TestBroker, WAIT_TIMEOUT};

/// The `cluster.id` every [`TestCluster`] uses (22 characters of base64, as Kafka's).
pub const CLUSTER_ID: &str = "UnVubmVsVGVzdENsdXN0ZXI";

/// Metadata API key.
const METADATA: i16 = 3;
/// The Metadata version [`metadata`] speaks: the last non-flexible one with leader epochs
/// (v7: controller id, offline replicas, leader epoch).
const METADATA_VERSION: i16 = 7;
/// Read and write timeout of one raw Metadata round trip.
const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// One node of a [`TestCluster`]: its broker process and its controller listener.
struct Node {
    id: i32,
    broker: TestBroker,
    controller_addr: SocketAddr,
}

/// A cluster of `runnel` processes on 127.0.0.1, each with its own client port, controller port
/// and data dir (kept across restarts). Node ids are `1..=n`. Killed on drop; a failing test
/// prints every node's log (see [`TestCluster::check`]).
pub struct TestCluster {
    nodes: Vec<Node>,
}

impl TestCluster {
    /// Starts `count` combined nodes forming one quorum and waits until each accepts client
    /// connections (not until they agree: see [`wait_for_brokers`](Self::wait_for_brokers)).
    pub fn start(count: usize) -> Result<TestCluster> {
        TestCluster::start_with(count, &[])
    }

    /// [`start`](Self::start) with `extra_args` given to every node (such as
    /// `--set num.partitions=3`).
    pub fn start_with(count: usize, extra_args: &[&str]) -> Result<TestCluster> {
        let extra: Vec<String> = extra_args.iter().map(|a| (*a).to_owned()).collect();
        TestCluster::start_custom(count, 0, |_| extra.clone())
    }

    /// `voters` combined nodes (ids `1..=voters`) forming the quorum, plus `observers`
    /// broker-only nodes (`process.roles=broker`, ids after the voters) that join it; node `id`
    /// gets `extra_args(id)` after the common settings (a later `--set` of a name wins).
    pub fn start_custom(
        voters: usize,
        observers: usize,
        extra_args: impl Fn(i32) -> Vec<String>,
    ) -> Result<TestCluster> {
        ensure!(voters >= 1, "a cluster needs at least one voter");
        let mut ports = Vec::new();
        for _ in 0..voters + observers {
            ports.push((free_addr()?, free_addr()?));
        }
        let voter_list = ports
            .iter()
            .take(voters)
            .zip(1..)
            .map(|((_, controller), id)| format!("{id}@{controller}"))
            .collect::<Vec<_>>()
            .join(",");
        let voter_count = i32::try_from(voters)?;
        let mut nodes = Vec::new();
        for ((client_addr, controller_addr), id) in ports.into_iter().zip(1..) {
            let roles = if id <= voter_count {
                "broker,controller"
            } else {
                "broker"
            };
            let mut args: Vec<String> = [
                format!("node.id={id}"),
                format!("process.roles={roles}"),
                format!("controller.quorum.voters={voter_list}"),
                format!("listeners=PLAINTEXT://{client_addr},CONTROLLER://{controller_addr}"),
                format!("advertised.listeners=PLAINTEXT://{client_addr}"),
                "controller.listener.names=CONTROLLER".to_owned(),
                format!("cluster.id={CLUSTER_ID}"),
            ]
            .into_iter()
            .flat_map(|setting| ["--set".to_owned(), setting])
            .collect();
            args.extend(extra_args(id));
            nodes.push(Node {
                id,
                broker: TestBroker::unstarted_node(client_addr, &args)?,
                controller_addr,
            });
        }
        let mut cluster = TestCluster { nodes };
        match cluster.spawn_all() {
            Ok(()) => Ok(cluster),
            Err(e) => Err(cluster.with_logs(&e.to_string()).into()),
        }
    }

    fn spawn_all(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            node.broker.spawn_process()?;
        }
        for node in &mut self.nodes {
            let id = node.id;
            node.broker
                .wait_ready()
                .map_err(|e| format!("node {id}: {e}"))?;
        }
        Ok(())
    }

    /// The node ids, `1..=n`.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    /// Node `id`'s broker: its address, data dir, log; the client helpers (`producer`,
    /// `admin`, …) take it to bootstrap from that one node.
    pub fn node(&self, id: i32) -> Result<&TestBroker> {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .map(|node| &node.broker)
            .ok_or_else(|| format!("no node {id} in the cluster").into())
    }

    fn node_mut(&mut self, id: i32) -> Result<&mut TestBroker> {
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .map(|node| &mut node.broker)
            .ok_or_else(|| format!("no node {id} in the cluster").into())
    }

    /// Node `id`'s controller listener (the quorum's port).
    pub fn controller_addr(&self, id: i32) -> Result<SocketAddr> {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .map(|node| node.controller_addr)
            .ok_or_else(|| format!("no node {id} in the cluster").into())
    }

    /// Every node's client address, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.broker.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Sends SIGKILL to node `id` and reaps it: a crash.
    pub fn kill9(&mut self, id: i32) -> Result<()> {
        self.node_mut(id)?.kill9()
    }

    /// Sends SIGSTOP to node `id`: it stops running without closing a socket (a hung
    /// process). Undo with [`resume`](Self::resume); SIGKILL and drop work on it as on a
    /// running one.
    pub fn pause(&self, id: i32) -> Result<()> {
        self.send_signal(id, "-STOP")
    }

    /// Sends SIGCONT to node `id`, which [`pause`](Self::pause) stopped.
    pub fn resume(&self, id: i32) -> Result<()> {
        self.send_signal(id, "-CONT")
    }

    /// `kill <signal>` to node `id`'s process.
    fn send_signal(&self, id: i32, signal: &str) -> Result<()> {
        let pid = self
            .node(id)?
            .pid()
            .ok_or_else(|| format!("node {id} is not running"))?;
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill {signal} for node {id}: {status}");
        Ok(())
    }

    /// Sends SIGTERM to node `id` and waits for it to exit; returns its exit status.
    pub fn terminate(&mut self, id: i32) -> Result<ExitStatus> {
        self.node_mut(id)?.terminate()
    }

    /// Starts node `id` again (same ports, same data dir) after [`kill9`](Self::kill9) or
    /// [`terminate`](Self::terminate), and waits until it accepts connections.
    pub fn start_again(&mut self, id: i32) -> Result<()> {
        self.node_mut(id)?.start_again()
    }

    /// SIGTERM node `id` if it runs (its exit status must be 0), then start it again.
    pub fn restart(&mut self, id: i32) -> Result<()> {
        self.node_mut(id)?.restart()
    }

    /// SIGTERM every running node at once, as `docker compose down` does (each must exit with
    /// 0), then start all of them again, spawning all before waiting for any (a node may wait
    /// for its quorum).
    pub fn restart_all(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if let Some(pid) = node.broker.pid() {
                // `terminate` below sends SIGTERM again and waits; this one lets every node
                // start shutting down before the first is waited for.
                std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()?;
            }
        }
        for node in &mut self.nodes {
            if node.broker.pid().is_some() {
                let status = node.broker.terminate()?;
                ensure!(
                    status.success(),
                    "node {} exited with {status} after SIGTERM, expected exit code 0",
                    node.id
                );
            }
        }
        self.spawn_all()
    }

    /// Whether node `id`'s process runs.
    pub fn is_running(&mut self, id: i32) -> Result<bool> {
        self.node_mut(id)?.is_running()
    }

    /// The ids of the nodes whose process runs.
    pub fn running_ids(&mut self) -> Result<Vec<i32>> {
        let mut running = Vec::new();
        for node in &mut self.nodes {
            if node.broker.is_running()? {
                running.push(node.id);
            }
        }
        Ok(running)
    }

    /// A raw Metadata (v7) request to node `id`: all topics if `topics` is `None`, never
    /// auto-creating.
    pub fn metadata_from(&self, id: i32, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
        metadata(self.node(id)?, topics).map_err(|e| format!("Metadata from node {id}: {e}").into())
    }

    /// Waits until every running node lists exactly `count` brokers and names an active
    /// controller (a `controller_id` ≥ 0), and returns what each said, by node id. Errors
    /// after [`WAIT_TIMEOUT`] with the last answers.
    pub async fn wait_for_brokers(&mut self, count: usize) -> Result<Vec<(i32, ClusterMetadata)>> {
        let running = self.running_ids()?;
        let what =
            format!("every running node ({running:?}) lists {count} brokers and a controller");
        self.poll(&what, |cluster| {
            let mut answers = Vec::new();
            for &id in &running {
                let metadata = cluster.metadata_from(id, Some(&[]))?;
                if metadata.brokers.len() != count || metadata.controller_id < 0 {
                    return Err(format!("node {id} says {metadata:?}").into());
                }
                answers.push((id, metadata));
            }
            Ok(answers)
        })
        .await
    }

    /// The active controller: the `controller_id` a running node reports, once it is a running
    /// node (after a controller is killed, nodes may name it until a new one is elected).
    pub async fn controller_id(&mut self) -> Result<i32> {
        let running = self.running_ids()?;
        self.poll("a running node names a running controller", |cluster| {
            let mut last: Result<i32> = Err("no running node".into());
            for &id in &running {
                match cluster.metadata_from(id, Some(&[])) {
                    Ok(metadata) if running.contains(&metadata.controller_id) => {
                        return Ok(metadata.controller_id)
                    }
                    Ok(metadata) => {
                        last = Err(format!(
                            "node {id} names controller {} (running: {running:?})",
                            metadata.controller_id
                        )
                        .into())
                    }
                    Err(e) => last = Err(e),
                }
            }
            last
        })
        .await
    }

    /// Waits until node `from` reports `topic` with `partitions` partitions, each with a
    /// leader (≥ 0), and returns the topic as it says it.
    pub async fn wait_for_leaders(
        &mut self,
        from: i32,
        topic: &str,
        partitions: usize,
    ) -> Result<TopicMetadata> {
        let what = format!("node {from} reports {partitions} led partitions of {topic}");
        self.poll(&what, |cluster| {
            let metadata = cluster.metadata_from(from, Some(&[topic]))?;
            let found = metadata.topic(topic)?;
            ensure!(
                found.error_code == 0
                    && found.partitions.len() == partitions
                    && found.partitions.iter().all(|p| p.leader >= 0),
                "node {from} says {found:?}"
            );
            Ok(found.clone())
        })
        .await
    }

    /// Calls `attempt` every 50 ms until it returns `Ok`, which is returned; after
    /// [`WAIT_TIMEOUT`] errors with `what` and the last error.
    pub async fn poll<T, F>(&mut self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(&mut TestCluster) -> Result<T>,
    {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let error = match attempt(self) {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(
                    format!("timed out after {WAIT_TIMEOUT:?}: {what}; last: {error}").into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Passes `result` through, appending every node's log to an error.
    pub fn check<T>(&self, result: Result<T>) -> Result<T, Failure> {
        result.map_err(|e| Failure::from(Error::from(self.with_logs(&e.to_string()))))
    }

    /// `error` followed by every node's log.
    fn with_logs(&self, error: &str) -> String {
        let mut text = error.to_owned();
        for node in &self.nodes {
            text = node
                .broker
                .failure_text(&format!("{text}\n=== node {} ===", node.id));
        }
        text
    }
}

/// What one node says in a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// The brokers it lists, in its order.
    pub brokers: Vec<BrokerMetadata>,
    /// `cluster_id`.
    pub cluster_id: Option<String>,
    /// `controller_id`: the active controller, -1 if none is known.
    pub controller_id: i32,
    /// The topics asked for (or all).
    pub topics: Vec<TopicMetadata>,
}

impl ClusterMetadata {
    /// The broker ids listed, sorted.
    pub fn broker_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self.brokers.iter().map(|b| b.node_id).collect();
        ids.sort_unstable();
        ids
    }

    /// The topic named `name`, or an error naming what was listed.
    pub fn topic(&self, name: &str) -> Result<&TopicMetadata> {
        self.topics
            .iter()
            .find(|topic| topic.name == name)
            .ok_or_else(|| format!("topic {name} not in Metadata: {:?}", self.topics).into())
    }
}

/// One broker of a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// Broker id.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, if set.
    pub rack: Option<String>,
}

/// One topic of a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Kafka error code of the topic (0 = none, 3 = unknown topic).
    pub error_code: i16,
    /// Topic name.
    pub name: String,
    /// Whether it is internal (`__consumer_offsets`).
    pub is_internal: bool,
    /// Its partitions, in the order listed.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// The partition with index `partition`.
    pub fn partition(&self, partition: i32) -> Result<&PartitionMetadata> {
        self.partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| format!("{}: no partition {partition}", self.name).into())
    }
}

/// One partition of a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Kafka error code (0 = none, 5 = LEADER_NOT_AVAILABLE).
    pub error_code: i16,
    /// Partition index.
    pub partition: i32,
    /// Leader broker id, -1 if none.
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica ids.
    pub isr: Vec<i32>,
    /// Replicas that are offline.
    pub offline_replicas: Vec<i32>,
}

/// Sends a Metadata v7 request to `broker` (all topics if `topics` is `None`; no
/// auto-creation) and parses the response.
pub fn metadata(broker: &TestBroker, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
    metadata_at(broker.addr(), topics)
}

/// [`metadata`] from the broker at `addr`.
pub fn metadata_at(addr: SocketAddr, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
    let mut body = Vec::new();
    match topics {
        None => put_i32(&mut body, -1),
        Some(topics) => {
            put_i32(&mut body, i32::try_from(topics.len())?);
            for topic in topics {
                put_string(&mut body, topic);
            }
        }
    }
    body.push(0); // allow_auto_topic_creation: false
    let mut connection = RawConnection::connect_addr(addr, RAW_TIMEOUT)?;
    let response = connection.round_trip(METADATA, METADATA_VERSION, &body)?;
    parse_metadata_v7(&response)
}

/// Parses a Metadata v7 response body.
pub fn parse_metadata_v7(body: &[u8]) -> Result<ClusterMetadata> {
    let mut reader = Reader::new(body);
    let _throttle_time_ms = reader.i32()?;
    let broker_count = array_len(&mut reader, "brokers")?;
    let mut brokers = Vec::new();
    for _ in 0..broker_count {
        brokers.push(BrokerMetadata {
            node_id: reader.i32()?,
            host: reader.string()?,
            port: reader.i32()?,
            rack: reader.nullable_string()?,
        });
    }
    let cluster_id = reader.nullable_string()?;
    let controller_id = reader.i32()?;
    let topic_count = array_len(&mut reader, "topics")?;
    let mut topics = Vec::new();
    for _ in 0..topic_count {
        let error_code = reader.i16()?;
        let name = reader.string()?;
        let is_internal = reader.bool()?;
        let partition_count = array_len(&mut reader, "partitions")?;
        let mut partitions = Vec::new();
        for _ in 0..partition_count {
            partitions.push(PartitionMetadata {
                error_code: reader.i16()?,
                partition: reader.i32()?,
                leader: reader.i32()?,
                leader_epoch: reader.i32()?,
                replicas: i32_array(&mut reader)?,
                isr: i32_array(&mut reader)?,
                offline_replicas: i32_array(&mut reader)?,
            });
        }
        topics.push(TopicMetadata {
            error_code,
            name,
            is_internal,
            partitions,
        });
    }
    Ok(ClusterMetadata {
        brokers,
        cluster_id,
        controller_id,
        topics,
    })
}

fn array_len(reader: &mut Reader<'_>, what: &str) -> Result<i32> {
    let len = reader.i32()?;
    ensure!(
        (0..=100_000).contains(&len),
        "Metadata response: {len} {what}"
    );
    Ok(len)
}

fn i32_array(reader: &mut Reader<'_>) -> Result<Vec<i32>> {
    let len = array_len(reader, "replica ids")?;
    (0..len).map(|_| reader.i32()).collect()
}
