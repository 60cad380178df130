//! Figures of a three-node cluster for scripts/bench/cluster-figures.sh (docs/performance.md),
//! measured on real processes started by the test harness's [`TestCluster`]:
//!
//! - start-up: from spawning three fresh nodes to every node listing three brokers and a
//!   controller;
//! - controller failover, `--rounds` times: from kill -9 of the active controller to a new
//!   controller being named, to the first CreateTopics that succeeds through a surviving node
//!   with an admin client started then, and to the first that succeeds with an admin client
//!   started before the kill (librdkafka sends CreateTopics to the controller it last heard
//!   of; given 20 s more);
//! - 1,000 topics: created with one CreateTopics request each, one after the other, through
//!   the controller and then through a follower, then 1,000 more in a single request; each
//!   until every node lists them. Admin clients connect before the clock starts.
//!
//! ```text
//! cluster_figures [--rounds 3] [--topics 1000]
//! ```
//! Output: one `name=value` line per figure, times in milliseconds.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use runnel_e2e::{admin, admin_options, flag, Result, TestCluster, WAIT_TIMEOUT};

/// How long an admin client created before the failover is given to create a topic after it.
const LONG_LIVED_WAIT: Duration = Duration::from_secs(20);

fn ms(duration: Duration) -> String {
    format!("{:.0}", duration.as_secs_f64() * 1000.0)
}

type Admin = AdminClient<DefaultClientContext>;

/// Creates `names` (one partition each) with `client` in one request, retrying while no
/// controller answers; a retry that finds a topic already there counts it as created.
async fn create(client: &Admin, names: &[String]) -> Result<()> {
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, 1, TopicReplication::Fixed(1)))
        .collect();
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut retry = false;
    loop {
        let error = match client.create_topics(topics.iter(), &admin_options()).await {
            Err(e) => e.to_string(),
            Ok(results) => {
                let failed: Vec<String> = results
                    .into_iter()
                    .filter_map(|result| match result {
                        Ok(_) => None,
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if retry => None,
                        Err((name, code)) => Some(format!("{name}: {code:?}")),
                    })
                    .collect();
                if failed.is_empty() {
                    return Ok(());
                }
                failed.join(", ")
            }
        };
        if Instant::now() >= deadline {
            return Err(format!("CreateTopics: {error}").into());
        }
        retry = true;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every running node lists at least `count` topics.
async fn wait_topics(cluster: &mut TestCluster, count: usize) -> Result<()> {
    let running = cluster.running_ids()?;
    cluster
        .poll(&format!("every node lists {count} topics"), |cluster| {
            for &id in &running {
                let listed = cluster.metadata_from(id, None)?.topics.len();
                if listed < count {
                    return Err(format!("node {id} lists {listed}").into());
                }
            }
            Ok(())
        })
        .await
}

async fn run(cluster: &mut TestCluster, started: Instant) -> Result<()> {
    let rounds = flag("--rounds", 3)?;
    let topics = flag("--topics", 1000)?;
    let serving = started.elapsed();
    cluster.wait_for_brokers(3).await?;
    let ready = started.elapsed();
    println!("startup_serving_ms={}", ms(serving));
    println!("startup_three_brokers_ms={}", ms(ready));

    for round in 1..=rounds {
        let old = cluster.controller_id().await?;
        let survivor = cluster
            .node_ids()
            .into_iter()
            .find(|id| *id != old)
            .ok_or("no survivor")?;
        // A client that learned the old controller before the kill, as a long-running
        // application's admin client has.
        let long_lived = admin(cluster.node(survivor)?)?;
        create(&long_lived, &[format!("before-failover-{round}")]).await?;
        let killed = Instant::now();
        cluster.kill9(old)?;
        let new = cluster.controller_id().await?;
        let elected = killed.elapsed();
        // A client started once the new controller is named.
        let fresh = admin(cluster.node(survivor)?)?;
        create(&fresh, &[format!("failover-{round}")]).await?;
        let created = killed.elapsed();
        let long_lived_result = tokio::time::timeout(
            LONG_LIVED_WAIT,
            create(&long_lived, &[format!("failover-long-lived-{round}")]),
        )
        .await;
        let long_lived_ms = match long_lived_result {
            Ok(Ok(())) => ms(killed.elapsed()),
            Ok(Err(e)) => format!("failed({e})"),
            Err(_) => format!("none_within_{}", ms(LONG_LIVED_WAIT + created)),
        };
        println!(
            "failover_round={round} killed={old} new_controller={new} \
             new_controller_named_ms={} first_create_topics_ms={} \
             long_lived_client_create_topics_ms={long_lived_ms}",
            ms(elected),
            ms(created)
        );
        cluster.start_again(old)?;
        cluster.wait_for_brokers(3).await?;
    }

    // One admin client per node, connected before the clock starts: the figures are the
    // brokers' and the controller's, not librdkafka's start-up.
    let controller = cluster.controller_id().await?;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != controller)
        .ok_or("no follower")?;
    let mut listed = cluster.metadata_from(controller, None)?.topics.len();
    for (label, node) in [("controller", controller), ("follower", follower)] {
        let client = admin(cluster.node(node)?)?;
        create(&client, &[format!("warm-up-{label}")]).await?;
        listed += 1;
        let names: Vec<String> = (0..topics).map(|i| format!("{label}-{i}")).collect();
        let sequential = Instant::now();
        for name in &names {
            create(&client, std::slice::from_ref(name)).await?;
        }
        let answered = sequential.elapsed();
        listed += topics;
        wait_topics(cluster, listed).await?;
        println!(
            "create_{topics}_topics_one_request_each_through_{label}_ms={} listed_by_all_ms={}",
            ms(answered),
            ms(sequential.elapsed())
        );
    }

    let client = admin(cluster.node(follower)?)?;
    create(&client, &["warm-up-batch".to_owned()]).await?;
    listed += 1;
    let names: Vec<String> = (0..topics).map(|i| format!("batch-{i}")).collect();
    let batch = Instant::now();
    create(&client, &names).await?;
    let answered = batch.elapsed();
    listed += topics;
    wait_topics(cluster, listed).await?;
    println!(
        "create_{topics}_topics_one_request_through_follower_ms={} listed_by_all_ms={}",
        ms(answered),
        ms(batch.elapsed())
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::result::Result<(), runnel_e2e::Failure> {
    let started = Instant::now();
    let mut cluster = TestCluster::start(3)?;
    let result = run(&mut cluster, started).await;
    cluster.check(result)
}
