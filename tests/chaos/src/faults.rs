//! Injecting and healing the faults of [`FaultKind`] on a [`ChaosCluster`]. A fault's target
//! is chosen when it starts, from the step's random `pick` and, for the leader and the
//! controller, from what the cluster reports then.

use std::net::Ipv4Addr;

use runnel_e2e::cluster::{metadata_at, ClusterMetadata};
use runnel_e2e::Result;

use crate::cluster::{apply_firewall, ChaosCluster};
use crate::command::{run, run_quietly, Signal};
use crate::netns::{node_ids, NetworkPlan, NODE_COUNT};
use crate::schedule::{FaultKind, FaultStep};
use crate::workload::{PARTITIONS, TOPIC};

/// netem on the chosen node: delay, jitter (ms) and loss (%). Enough to trip request timeouts
/// now and then without making the node unreachable.
const NETEM_DELAY_MS: u64 = 150;
const NETEM_JITTER_MS: u64 = 100;
const NETEM_LOSS_PERCENT: u64 = 10;
/// Without netem: a token bucket of this rate (kbit/s) queueing up to this long (ms).
const SLOW_LINK_KBIT: u64 = 2_000;
const SLOW_LINK_LATENCY_MS: u64 = 300;

/// What a started fault needs to be healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heal {
    /// Start these (killed) nodes again.
    Restart(Vec<i32>),
    /// SIGCONT this node.
    Resume(i32),
    /// Remove every partition rule.
    OpenNetwork,
    /// Remove the netem of this node.
    RemoveNetem(i32),
    /// Delete the filler on this node's disk and restart the node: a log directory a failed
    /// write took offline stays offline until the broker restarts (as in Kafka).
    FreeDisk(i32),
}

/// A fault that has started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFault {
    /// Its kind.
    pub kind: FaultKind,
    /// What it hit, as the history records it (`2`, `all`, `1|2,3`, `1|3 bridge 2`, `2->1`).
    pub target: String,
    heal: Heal,
}

/// The node `pick` names among `1..=NODE_COUNT`, and the two others in order.
fn pick_node(pick: u64) -> (i32, i32, i32) {
    let index = i32::try_from(pick % NODE_COUNT as u64).unwrap_or(0);
    let node = index + 1;
    let others: Vec<i32> = node_ids().filter(|&n| n != node).collect();
    match others.as_slice() {
        [a, b] => (node, *a, *b),
        _ => (node, node, node),
    }
}

/// Asks every node in turn for Metadata of the topic (blocking, bounded by the raw request's
/// timeouts) and returns the first answer naming a controller.
async fn cluster_metadata(plan: &NetworkPlan) -> Option<ClusterMetadata> {
    for node in node_ids() {
        let addr = plan.client_addr(node);
        let answer = tokio::task::spawn_blocking(move || metadata_at(addr, Some(&[TOPIC]))).await;
        if let Ok(Ok(metadata)) = answer {
            if metadata.controller_id >= 0 {
                return Some(metadata);
            }
        }
    }
    None
}

/// Starts `step`'s fault on `cluster`. `begin` is called with the target once it is chosen
/// and before anything is done to it, so the history's fault start precedes its effects.
pub async fn inject(
    cluster: &mut ChaosCluster,
    step: &FaultStep,
    mut begin: impl FnMut(&str),
) -> Result<ActiveFault> {
    let (node, other_a, other_b) = pick_node(step.pick);
    let plan = cluster.plan().clone();
    let (target, heal) = match step.kind {
        FaultKind::KillOne => {
            begin(&node.to_string());
            cluster.kill(node)?;
            (node.to_string(), Heal::Restart(vec![node]))
        }
        FaultKind::KillLeader => {
            let partition = i32::try_from(step.pick % PARTITIONS as u64).unwrap_or(0);
            let leader = cluster_metadata(&plan).await.and_then(|m| {
                let topic = m.topic(TOPIC).ok()?;
                let leader = topic.partition(partition).ok()?.leader;
                (leader >= 1).then_some(leader)
            });
            // No leader known (the cluster is still recovering): the picked node instead,
            // recorded as such.
            let (victim, target) = match leader {
                Some(leader) => (leader, format!("{leader} (leader of {TOPIC}-{partition})")),
                None => (
                    node,
                    format!("{node} (leader of {TOPIC}-{partition} unknown)"),
                ),
            };
            begin(&target);
            cluster.kill(victim)?;
            (target, Heal::Restart(vec![victim]))
        }
        FaultKind::KillController => {
            let controller = cluster_metadata(&plan)
                .await
                .map(|m| m.controller_id)
                .filter(|&id| id >= 1);
            let (victim, target) = match controller {
                Some(id) => (id, format!("{id} (controller)")),
                None => (node, format!("{node} (controller unknown)")),
            };
            begin(&target);
            cluster.kill(victim)?;
            (target, Heal::Restart(vec![victim]))
        }
        FaultKind::KillAll | FaultKind::PowerLoss => {
            begin("all");
            for id in node_ids() {
                cluster.kill(id)?;
            }
            if step.kind == FaultKind::PowerLoss {
                for id in node_ids() {
                    let dropped = cluster.drop_unsynced(id)?;
                    eprintln!("runnel-chaos: power loss: node {id}'s runnel-faultfs: {dropped}");
                }
            }
            ("all".to_owned(), Heal::Restart(node_ids().collect()))
        }
        FaultKind::Pause => {
            begin(&node.to_string());
            cluster.signal(node, Signal::STOP)?;
            (node.to_string(), Heal::Resume(node))
        }
        FaultKind::PartitionOne => {
            let everyone = [plan.node_ip(other_a), plan.node_ip(other_b), plan.host_ip()];
            let target = format!("{node}|{other_a},{other_b},clients");
            begin(&target);
            apply_firewall(&plan, node, &plan.firewall_script(&everyone, &everyone))?;
            (target, Heal::OpenNetwork)
        }
        FaultKind::PartitionSplit => {
            let peers = [plan.node_ip(other_a), plan.node_ip(other_b)];
            let target = format!("{node}|{other_a},{other_b}");
            begin(&target);
            apply_firewall(&plan, node, &plan.firewall_script(&peers, &peers))?;
            (target, Heal::OpenNetwork)
        }
        FaultKind::PartitionBridge => {
            // `node` is the bridge; the two others cannot reach each other.
            let target = format!("{other_a}|{other_b} bridge {node}");
            begin(&target);
            cut(&plan, other_a, plan.node_ip(other_b))?;
            (target, Heal::OpenNetwork)
        }
        FaultKind::OneWayLoss => {
            // `node` drops everything `other_a` sends it; its own packets still arrive.
            let from = [plan.node_ip(other_a)];
            let target = format!("{other_a}->{node}");
            begin(&target);
            apply_firewall(&plan, node, &plan.firewall_script(&from, &[]))?;
            (target, Heal::OpenNetwork)
        }
        FaultKind::Netem => {
            let netem =
                plan.netem_command(node, NETEM_DELAY_MS, NETEM_JITTER_MS, NETEM_LOSS_PERCENT);
            // The fallback shows in the target the harness prints, not in the history's start.
            begin(&node.to_string());
            let target = match run(&netem) {
                Ok(()) => node.to_string(),
                Err(e) if e.to_string().contains("qdisc kind is unknown") => {
                    // A kernel built without sch_netem (such as this CI's): the same loss with
                    // nftables, and delay as queueing in a slow token bucket.
                    apply_firewall(&plan, node, &plan.random_loss_script(NETEM_LOSS_PERCENT))?;
                    run(&plan.slow_link_command(node, SLOW_LINK_KBIT, SLOW_LINK_LATENCY_MS))?;
                    format!("{node} (no netem in this kernel: nftables loss + tbf)")
                }
                Err(e) => return Err(e),
            };
            (target, Heal::RemoveNetem(node))
        }
        FaultKind::DiskFull => {
            begin(&node.to_string());
            cluster.fill_disk(node)?;
            (node.to_string(), Heal::FreeDisk(node))
        }
    };
    Ok(ActiveFault {
        kind: step.kind,
        target,
        heal,
    })
}

/// Both directions between node `node` and `peer` dropped (at `node`).
fn cut(plan: &NetworkPlan, node: i32, peer: Ipv4Addr) -> Result<()> {
    apply_firewall(plan, node, &plan.firewall_script(&[peer], &[peer]))
}

/// Heals `fault`.
pub fn heal(cluster: &mut ChaosCluster, fault: &ActiveFault) -> Result<()> {
    match &fault.heal {
        Heal::Restart(nodes) => {
            for &id in nodes {
                cluster.spawn(id)?;
            }
        }
        Heal::Resume(id) => cluster.signal(*id, Signal::CONT)?,
        Heal::OpenNetwork => heal_network(cluster.plan()),
        Heal::RemoveNetem(id) => {
            run_quietly(&cluster.plan().netem_heal_command(*id));
            run_quietly(&cluster.plan().firewall_heal_command(*id));
        }
        Heal::FreeDisk(id) => {
            cluster.free_disk(*id)?;
            cluster.restart(*id)?;
        }
    }
    Ok(())
}

/// Removes every partition rule and netem of every node (idempotent).
pub fn heal_network(plan: &NetworkPlan) {
    for id in node_ids() {
        run_quietly(&plan.firewall_heal_command(id));
        run_quietly(&plan.netem_heal_command(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pick_names_one_node_and_the_two_others() {
        assert_eq!(pick_node(0), (1, 2, 3));
        assert_eq!(pick_node(4), (2, 1, 3));
        assert_eq!(pick_node(5), (3, 1, 2));
    }
}
