//! Who may join a cluster (docs/cluster.md): a node configured with another `cluster.id` is
//! refused by the quorum's peers and never listed, and a broker-only node
//! (`process.roles=broker`) joins as an observer of the metadata log and serves partitions.

use runnel_e2e::client::{create_topic, produce_all, producer, read_all};
use runnel_e2e::{ensure, ensure_eq, TestCluster, TestResult};

/// The `cluster.id` the odd node out is given.
const OTHER_CLUSTER_ID: &str = "QW5vdGhlckNsdXN0ZXJJZA";

fn other_cluster(id: i32) -> Vec<String> {
    if id == 3 {
        vec!["--set".into(), format!("cluster.id={OTHER_CLUSTER_ID}")]
    } else {
        Vec::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_and_never_listed() -> TestResult {
    let mut cluster = TestCluster::start_custom(3, 0, other_cluster)?;
    let result = async {
        // Nodes 1 and 2 are a majority of three: they form the quorum without node 3.
        cluster
            .poll("nodes 1 and 2 list each other, and only each other", |c| {
                for id in [1, 2] {
                    let listed = c.metadata_from(id, None)?.broker_ids();
                    ensure_eq!(listed, vec![1, 2], "brokers listed by node {id}");
                }
                Ok(())
            })
            .await?;
        // Node 3's peers refuse it, and it learns why.
        cluster
            .poll("node 3 logs that its peers refuse it", |c| {
                let log = c.node(3)?.log();
                ensure!(
                    log.contains("metadata quorum peer refuses this node"),
                    "node 3 has not logged a refusal yet"
                );
                Ok(())
            })
            .await?;
        let refused_by_peers = [1, 2].iter().any(|id| {
            cluster
                .node(*id)
                .is_ok_and(|n| n.log().contains("peer of another cluster refused"))
        });
        ensure!(refused_by_peers, "no peer logged refusing node 3");
        // The cluster works without it.
        let topic = "members";
        create_topic(cluster.node(1)?, topic, 4).await?;
        let listed = cluster.metadata_from(2, Some(&[topic]))?;
        let leaders: Vec<i32> = listed
            .topic(topic)?
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        ensure!(
            leaders.iter().all(|l| [1, 2].contains(l)),
            "partitions placed on the refused node: {leaders:?}"
        );
        Ok(())
    }
    .await;
    cluster.check(result)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_joins_as_an_observer_and_leads_partitions() -> TestResult {
    let mut cluster = TestCluster::start_custom(3, 1, |_| Vec::new())?;
    let result = async {
        let listed = cluster.wait_for_brokers(4).await?;
        for (id, metadata) in &listed {
            ensure_eq!(
                metadata.broker_ids(),
                vec![1, 2, 3, 4],
                "brokers listed by node {id}"
            );
            ensure!(
                (1..=3).contains(&metadata.controller_id),
                "node {id} names controller {} (only voters can be)",
                metadata.controller_id
            );
        }
        let topic = "with-observer";
        // Created through the observer: forwarded to the active controller.
        create_topic(cluster.node(4)?, topic, 8).await?;
        let metadata = cluster.metadata_from(1, Some(&[topic]))?;
        let on_observer = metadata
            .topic(topic)?
            .partitions
            .iter()
            .filter(|p| p.leader == 4)
            .count();
        ensure_eq!(
            on_observer,
            2,
            "partitions led by the broker-only node (8 over 4 brokers)"
        );
        // Records produced through a voter reach the observer's partitions, and read back.
        let records: Vec<_> = (0..40)
            .map(|i| {
                (
                    Some(format!("k{i}").into_bytes()),
                    format!("v{i}").into_bytes(),
                )
            })
            .collect();
        let acked = produce_all(&producer(cluster.node(1)?, &[])?, topic, None, &records).await?;
        ensure_eq!(acked.len(), records.len(), "records acknowledged");
        let read = read_all(cluster.node(4)?, topic, 8).await?;
        let total: usize = read.values().map(Vec::len).sum();
        ensure_eq!(
            total,
            records.len(),
            "records read back through the observer"
        );
        Ok(())
    }
    .await;
    cluster.check(result)?;
    Ok(())
}
