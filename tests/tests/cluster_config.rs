//! Cluster configuration with Kafka's names (docs/cluster.md, "Roles and configuration"):
//! every misconfiguration stops the node at start with one line naming the problem; a data
//! directory formatted for another cluster or node is refused; a KRaft-style combined node
//! configured with `--set` or a TOML file starts; a broker serves clients on each of its named
//! listeners; DescribeConfigs of the broker lists Kafka's broker settings with their sources.

use std::net::SocketAddr;
use std::time::Duration;

use rdkafka::admin::{ConfigResource, ConfigSource, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use runnel_e2e::{
    admin, admin_options, ensure, ensure_eq, free_addr, metadata_client, produce_one, producer,
    Result, TestBroker, TestResult, WAIT_TIMEOUT,
};

/// The broker's own output, without the harness's start banners.
fn broker_output(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| !line.starts_with("=== runnel-e2e:") && !line.trim().is_empty())
        .collect()
}

/// The refusal is a non-zero exit and exactly one line of output, which mentions `mentions`.
fn check_refusal(
    args: &[&str],
    status: std::process::ExitStatus,
    log: &str,
    mentions: &str,
) -> Result<()> {
    ensure!(
        !status.success(),
        "runnel {args:?} exited with {status}, expected a non-zero exit code\n{log}"
    );
    let output = broker_output(log);
    ensure!(
        output.len() == 1 && output.iter().all(|line| line.contains(mentions)),
        "runnel {args:?} failed ({status}) without one line mentioning {mentions:?}:\n{log}"
    );
    Ok(())
}

/// Runs the node with exactly `args` (and a data dir): it must refuse to start.
fn refused(args: &[&str], mentions: &str) -> TestResult {
    let (status, log) = TestBroker::expect_start_failure_with_listeners(args)?;
    Ok(check_refusal(args, status, &log, mentions)?)
}

fn port() -> Result<u16> {
    Ok(free_addr()?.port())
}

/// `--set` arguments of a three-voter combined node 1, listeners on free ports, with `changes`
/// replacing (or, with an empty value, removing) settings.
fn kraft_args(changes: &[(&str, &str)]) -> Result<Vec<String>> {
    let (client, controller) = (port()?, port()?);
    let voters = format!(
        "1@127.0.0.1:{controller},2@127.0.0.1:{},3@127.0.0.1:{}",
        port()?,
        port()?
    );
    let listeners = format!("PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}");
    let mut settings = vec![
        ("process.roles", "broker,controller".to_string()),
        ("node.id", "1".to_string()),
        ("controller.quorum.voters", voters),
        ("listeners", listeners),
        ("controller.listener.names", "CONTROLLER".to_string()),
        ("cluster.id", "MkU3OEVBNTcwNTJENDM2Qk".to_string()),
    ];
    for (name, value) in changes {
        settings.retain(|(n, _)| n != name);
        if !value.is_empty() {
            settings.push((name, (*value).to_string()));
        }
    }
    Ok(settings
        .into_iter()
        .flat_map(|(name, value)| ["--set".to_string(), format!("{name}={value}")])
        .collect())
}

fn kraft_refused(changes: &[(&str, &str)], mentions: &str) -> TestResult {
    let args = kraft_args(changes)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, mentions)
}

#[test]
fn node_id_not_among_the_voters_is_refused() -> TestResult {
    kraft_refused(
        &[("node.id", "4")],
        "node.id 4 is not among controller.quorum.voters",
    )
}

#[test]
fn duplicate_voter_ids_are_refused() -> TestResult {
    kraft_refused(
        &[("controller.quorum.voters", "1@127.0.0.1:1,1@127.0.0.1:2")],
        "voter id 1 appears twice",
    )
}

#[test]
fn unparseable_voters_are_refused() -> TestResult {
    kraft_refused(
        &[("controller.quorum.voters", "1@127.0.0.1")],
        "controller.quorum.voters: `1@127.0.0.1` is not ID@HOST:PORT",
    )
}

#[test]
fn unparseable_listeners_are_refused() -> TestResult {
    refused(
        &["--set", "listeners=PLAINTEXT//127.0.0.1:9092"],
        "listeners: `PLAINTEXT//127.0.0.1:9092` is not NAME://HOST:PORT",
    )
}

#[test]
fn duplicate_listener_names_and_ports_are_refused() -> TestResult {
    let (a, b) = (port()?, port()?);
    refused(
        &[
            "--set",
            &format!("listeners=PLAINTEXT://127.0.0.1:{a},PLAINTEXT://127.0.0.1:{b}"),
        ],
        "listener name PLAINTEXT appears twice",
    )?;
    refused(
        &[
            "--set",
            &format!("listeners=INTERNAL://127.0.0.1:{a},EXTERNAL://127.0.0.2:{a}"),
        ],
        &format!("both use port {a}"),
    )
}

#[test]
fn an_advertised_listener_that_is_not_a_listener_is_refused() -> TestResult {
    let a = port()?;
    refused(
        &[
            "--set",
            &format!("listeners=INTERNAL://127.0.0.1:{a}"),
            "--set",
            "advertised.listeners=EXTERNAL://example.com:19092",
        ],
        "advertised.listeners: EXTERNAL is not a listener",
    )
}

#[test]
fn a_controller_without_its_controller_listener_is_refused() -> TestResult {
    kraft_refused(
        &[("listeners", "PLAINTEXT://127.0.0.1:9092")],
        "listeners has no controller listener (CONTROLLER",
    )
}

#[test]
fn listeners_other_than_plaintext_are_refused() -> TestResult {
    let a = port()?;
    refused(
        &["--set", &format!("listeners=SSL://127.0.0.1:{a}")],
        "listener SSL uses SSL: only PLAINTEXT is served",
    )?;
    refused(
        &["--set", &format!("listeners=ODD://127.0.0.1:{a}")],
        "listener ODD has no entry in listener.security.protocol.map",
    )
}

#[test]
fn an_inter_broker_listener_that_is_not_a_listener_is_refused() -> TestResult {
    refused(
        &["--set", "inter.broker.listener.name=REPLICATION"],
        "inter.broker.listener.name: REPLICATION is not a client listener",
    )
}

#[test]
fn unsupported_process_roles_are_refused() -> TestResult {
    refused(
        &["--set", "process.roles=controller"],
        "controller-only nodes are not supported yet",
    )?;
    refused(
        &["--set", "process.roles=worker"],
        "process.roles: `worker`",
    )?;
    refused(
        &["--set", "process.roles=broker"],
        "process.roles=broker needs controller.quorum.voters",
    )
}

#[test]
fn several_voters_without_a_cluster_id_are_refused() -> TestResult {
    kraft_refused(
        &[("cluster.id", "")],
        "cluster.id is required with 3 voters",
    )?;
    kraft_refused(&[("cluster.id", "not/an/id")], "cluster.id `not/an/id`")
}

#[test]
fn a_shorthand_and_its_kafka_setting_together_are_refused() -> TestResult {
    // The harness passes --listen and --advertise.
    let (status, log) =
        TestBroker::expect_start_failure(None, &["--set", "listeners=PLAINTEXT://127.0.0.1:1"])?;
    Ok(check_refusal(
        &["--listen", "--set listeners"],
        status,
        &log,
        "`listen` (flag --listen) and `listeners` are both set",
    )?)
}

#[test]
fn a_data_dir_of_another_cluster_is_refused() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "cluster.id=FirstCluster"])?;
    broker.terminate()?;
    broker.set_extra_args(&["--set", "cluster.id=SecondCluster"]);
    let status = broker.start_again_expecting_failure()?;
    let log = broker.log();
    // The first run's log is in the same file: look at the second run's output only.
    let second = log
        .rsplit("=== runnel-e2e: start #2")
        .next()
        .unwrap_or_default();
    let result = check_refusal(
        &["--set", "cluster.id=SecondCluster"],
        status,
        second.split_once('\n').map_or("", |(_, rest)| rest),
        "formatted for cluster.id FirstCluster, but this node is configured with cluster.id SecondCluster",
    );
    broker.check(result)
}

#[test]
fn a_data_dir_of_another_node_is_refused() -> TestResult {
    let mut broker = TestBroker::start(&["--node-id", "1"])?;
    broker.terminate()?;
    broker.set_extra_args(&["--node-id", "2"]);
    let status = broker.start_again_expecting_failure()?;
    let log = broker.log();
    let second = log
        .rsplit("=== runnel-e2e: start #2")
        .next()
        .unwrap_or_default();
    let result = check_refusal(
        &["--node-id", "2"],
        status,
        second.split_once('\n').map_or("", |(_, rest)| rest),
        "formatted for node.id 1, but this node is configured with node.id 2",
    );
    broker.check(result)
}

/// A single-voter KRaft combined node, configured as Kafka's `server.properties` would be.
fn single_voter_kraft(client: SocketAddr, controller: u16) -> Vec<(String, String)> {
    vec![
        ("process.roles".into(), "broker,controller".into()),
        ("node.id".into(), "1".into()),
        (
            "controller.quorum.voters".into(),
            format!("1@127.0.0.1:{controller}"),
        ),
        (
            "listeners".into(),
            format!("PLAINTEXT://{client},CONTROLLER://127.0.0.1:{controller}"),
        ),
        (
            "advertised.listeners".into(),
            format!("PLAINTEXT://{client}"),
        ),
        ("controller.listener.names".into(), "CONTROLLER".into()),
        ("cluster.id".into(), "MkU3OEVBNTcwNTJENDM2Qk".into()),
    ]
}

async fn describe_broker(broker: &TestBroker, node_id: i32) -> Result<ConfigResource> {
    let results = admin(broker)?
        .describe_configs(&[ResourceSpecifier::Broker(node_id)], &admin_options())
        .await?;
    Ok(results
        .into_iter()
        .next()
        .ok_or("DescribeConfigs returned no resource")?
        .map_err(|code| format!("DescribeConfigs broker {node_id}: {code:?}"))?)
}

/// `name`'s value, whether its source is the static broker config (else the default), and
/// whether it is read-only.
fn broker_entry(resource: &ConfigResource, name: &str) -> Result<(Option<String>, bool, bool)> {
    let entry = resource
        .get(name)
        .ok_or_else(|| format!("DescribeConfigs of the broker lists no {name}"))?;
    let explicit = match &entry.source {
        ConfigSource::StaticBroker => true,
        ConfigSource::Default => false,
        other => return Err(format!("{name}: source {other:?}").into()),
    };
    Ok((entry.value.clone(), explicit, entry.is_read_only))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kraft_combined_node_configured_with_set_starts_and_describes_itself() -> TestResult {
    let client = free_addr()?;
    let controller = port()?;
    let settings = single_voter_kraft(client, controller);
    let args: Vec<String> = settings
        .iter()
        .flat_map(|(name, value)| ["--set".to_string(), format!("{name}={value}")])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = TestBroker::start_with_listeners(client, &args)?;
    let result = async {
        let metadata = metadata_client(&broker, &[])?
            .fetch_metadata(None, WAIT_TIMEOUT)
            .map_err(|e| format!("Metadata: {e}"))?;
        ensure_eq!(
            metadata
                .brokers()
                .iter()
                .map(|b| (b.id(), b.host().to_string(), b.port()))
                .collect::<Vec<_>>(),
            vec![(1, client.ip().to_string(), i32::from(client.port()))],
            "brokers in Metadata"
        );
        let node = describe_broker(&broker, 1).await?;
        ensure_eq!(
            broker_entry(&node, "listeners")?,
            (
                Some(format!(
                    "PLAINTEXT://{client},CONTROLLER://127.0.0.1:{controller}"
                )),
                true,
                true
            ),
            "listeners"
        );
        ensure_eq!(
            broker_entry(&node, "node.id")?,
            (Some("1".to_string()), true, true),
            "node.id"
        );
        ensure_eq!(
            broker_entry(&node, "process.roles")?,
            (Some("broker,controller".to_string()), true, true),
            "process.roles"
        );
        ensure_eq!(
            broker_entry(&node, "controller.quorum.voters")?,
            (Some(format!("1@127.0.0.1:{controller}")), true, true),
            "controller.quorum.voters"
        );
        // Kafka's settings that Runnel does not act on: Kafka's default, read-only.
        ensure_eq!(
            broker_entry(&node, "log.flush.interval.messages")?,
            (Some("9223372036854775807".to_string()), false, true),
            "log.flush.interval.messages"
        );
        ensure_eq!(
            broker_entry(&node, "num.io.threads")?,
            (Some("8".to_string()), false, true),
            "num.io.threads"
        );
        ensure_eq!(
            broker_entry(&node, "broker.session.timeout.ms")?,
            (Some("9000".to_string()), false, true),
            "broker.session.timeout.ms"
        );
        ensure!(
            node.entries.len() >= 100,
            "DescribeConfigs lists {} broker settings, expected Kafka's (100+)",
            node.entries.len()
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kraft_combined_node_configured_in_a_toml_file_starts() -> TestResult {
    let client = free_addr()?;
    let controller = port()?;
    let dir = tempfile::tempdir().map_err(runnel_e2e::Error::from)?;
    let path = dir.path().join("server.toml");
    // Kafka's dotted names, quoted or not.
    let toml: String = single_voter_kraft(client, controller)
        .iter()
        .enumerate()
        .map(|(index, (name, value))| {
            if index % 2 == 0 {
                format!("\"{name}\" = \"{value}\"\n")
            } else {
                format!("{name} = \"{value}\"\n")
            }
        })
        .collect();
    std::fs::write(&path, toml).map_err(runnel_e2e::Error::from)?;
    let path = path.display().to_string();
    let broker = TestBroker::start_with_listeners(client, &["--config", &path])?;
    let result = async {
        let node = describe_broker(&broker, 1).await?;
        ensure_eq!(
            broker_entry(&node, "cluster.id")?,
            (Some("MkU3OEVBNTcwNTJENDM2Qk".to_string()), true, true),
            "cluster.id"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_serves_clients_on_each_named_listener() -> TestResult {
    let (internal, external) = (free_addr()?, free_addr()?);
    let listeners = format!("listeners=INTERNAL://{internal},EXTERNAL://{external}");
    let advertised = format!(
        "advertised.listeners=INTERNAL://{internal},EXTERNAL://localhost:{}",
        external.port()
    );
    let broker = TestBroker::start_with_listeners(
        internal,
        &[
            "--set",
            &listeners,
            "--set",
            &advertised,
            "--set",
            "inter.broker.listener.name=INTERNAL",
        ],
    )?;
    let result = async {
        // Records produced through the INTERNAL listener...
        let topic = "two-listeners";
        let producer = producer(&broker, &[("acks", "all")])?;
        produce_one(&producer, topic, Some(0), None, b"through internal")
            .await
            .map_err(|e| format!("produce through INTERNAL ({internal}): {e}"))?;
        // ...and a client that bootstraps through the EXTERNAL listener is served there.
        let external_client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", external.to_string())
            .set("group.id", "runnel-e2e")
            .set("broker.address.family", "v4")
            .create()?;
        let metadata = external_client
            .fetch_metadata(Some(topic), WAIT_TIMEOUT)
            .map_err(|e| format!("Metadata through EXTERNAL ({external}): {e}"))?;
        ensure!(
            metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.partitions().len() == 1),
            "Metadata through EXTERNAL lacks {topic}"
        );
        ensure_eq!(metadata.brokers().len(), 1, "brokers through EXTERNAL");
        let (low, high) = external_client
            .fetch_watermarks(topic, 0, Duration::from_secs(30))
            .map_err(|e| format!("ListOffsets through EXTERNAL: {e}"))?;
        ensure_eq!((low, high), (0, 1), "watermarks through EXTERNAL");
        let node = describe_broker(&broker, 0).await?;
        ensure_eq!(
            broker_entry(&node, "advertised.listeners")?.0,
            Some(format!(
                "INTERNAL://{internal},EXTERNAL://localhost:{}",
                external.port()
            )),
            "advertised.listeners"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}
