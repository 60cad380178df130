//! The network the harness builds inside this machine: one network namespace per node and one
//! "switch" namespace holding the bridge that joins them and the host, all named after the
//! harness's pid (`rc<pid>…`) so a later run can find and remove what a killed run left.
//!
//! ```text
//!  root namespace            rc<pid>sw (switch)              rc<pid>n<K> (node K)
//!  rc<pid>h 10.X.Y.1 ── veth ── rc<pid>hs ┐
//!                                          br0 ── rc<pid>a<K> ── veth ── eth0 10.X.Y.1K
//! ```
//!
//! The bridge lives in its own namespace, not the root one: with `br_netfilter` loaded (Docker
//! loads it) bridged frames cross the root namespace's iptables FORWARD chain, whose policy
//! Docker sets to DROP, so nodes could not reach each other. A fresh namespace has no rules.
//! Faults ([`firewall_script`], [`netem_args`]) act inside the node namespaces only: the
//! machine's own firewall and interfaces are never touched.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Nodes in the cluster; ids `1..=NODE_COUNT`.
pub const NODE_COUNT: i32 = 3;
/// Client port of every node (each has its own address).
pub const CLIENT_PORT: u16 = 9092;
/// Controller (Raft, heartbeats) port of every node.
pub const CONTROLLER_PORT: u16 = 9093;
/// Every namespace and interface the harness makes starts with this.
pub const NAME_PREFIX: &str = "rc";
/// The nftables table the harness's partitions live in (inside a node namespace).
const FIREWALL_TABLE: &str = "runnel_chaos";

/// Names and addresses of one run's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// `rc<pid>`.
    prefix: String,
    /// The `X.Y` of `10.X.Y.0/24`.
    subnet: (u8, u8),
}

impl NetworkPlan {
    /// The plan of harness process `pid`, on the first `10.X.Y.0/24` derived from the pid that
    /// `in_use` (the text of `ip -4 addr` and `ip -4 route`) does not mention.
    pub fn new(pid: u32, in_use: &str) -> NetworkPlan {
        let x = 200 + (pid % 50) as u8;
        let mut y = ((pid / 50) % 256) as u8;
        for _ in 0..256 {
            if !in_use.contains(&format!("10.{x}.{y}.")) {
                break;
            }
            y = y.wrapping_add(1);
        }
        NetworkPlan {
            prefix: format!("{NAME_PREFIX}{pid}"),
            subnet: (x, y),
        }
    }

    /// The namespace holding the bridge.
    pub fn switch_namespace(&self) -> String {
        format!("{}sw", self.prefix)
    }

    /// Node `node`'s namespace.
    pub fn node_namespace(&self, node: i32) -> String {
        format!("{}n{node}", self.prefix)
    }

    /// The host's (client's) interface in the root namespace.
    pub fn host_interface(&self) -> String {
        format!("{}h", self.prefix)
    }

    /// The host's address: clients connect from it.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 1)
    }

    /// Node `node`'s address (`.11`, `.12`, `.13`).
    pub fn node_ip(&self, node: i32) -> Ipv4Addr {
        let host = u8::try_from(10 + node).unwrap_or(u8::MAX);
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, host)
    }

    /// Node `node`'s client listener.
    pub fn client_addr(&self, node: i32) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.node_ip(node), CLIENT_PORT))
    }

    /// Node `node`'s controller listener.
    pub fn controller_addr(&self, node: i32) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.node_ip(node), CONTROLLER_PORT))
    }

    /// Every node's client listener, comma-separated (`bootstrap.servers`).
    pub fn bootstrap(&self) -> String {
        node_ids()
            .map(|node| self.client_addr(node).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `controller.quorum.voters`: every node votes.
    pub fn quorum_voters(&self) -> String {
        node_ids()
            .map(|node| format!("{node}@{}", self.controller_addr(node)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The commands (argv) that build the network, in order.
    pub fn setup_commands(&self) -> Vec<Vec<String>> {
        let switch = self.switch_namespace();
        let host_if = self.host_interface();
        let host_peer = format!("{}hs", self.prefix);
        let mut commands = vec![
            argv(&["ip", "netns", "add", &switch]),
            netns_exec(&switch, &["ip", "link", "set", "lo", "up"]),
            netns_exec(&switch, &["ip", "link", "add", "br0", "type", "bridge"]),
            netns_exec(&switch, &["ip", "link", "set", "br0", "up"]),
            argv(&[
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &host_peer, "netns",
                &switch,
            ]),
            netns_exec(
                &switch,
                &["ip", "link", "set", &host_peer, "master", "br0", "up"],
            ),
            argv(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", self.host_ip()),
                "dev",
                &host_if,
            ]),
            argv(&["ip", "link", "set", &host_if, "up"]),
        ];
        for node in node_ids() {
            let namespace = self.node_namespace(node);
            let switch_port = format!("{}a{node}", self.prefix);
            commands.extend([
                argv(&["ip", "netns", "add", &namespace]),
                netns_exec(&namespace, &["ip", "link", "set", "lo", "up"]),
                argv(&[
                    "ip",
                    "link",
                    "add",
                    &switch_port,
                    "netns",
                    &switch,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &namespace,
                ]),
                netns_exec(
                    &switch,
                    &["ip", "link", "set", &switch_port, "master", "br0", "up"],
                ),
                netns_exec(
                    &namespace,
                    &[
                        "ip",
                        "addr",
                        "add",
                        &format!("{}/24", self.node_ip(node)),
                        "dev",
                        "eth0",
                    ],
                ),
                netns_exec(&namespace, &["ip", "link", "set", "eth0", "up"]),
            ]);
        }
        commands
    }

    /// The commands that remove the network: deleting a namespace deletes its veth ends, and a
    /// veth's peer (the host interface included) goes with it.
    pub fn teardown_commands(&self) -> Vec<Vec<String>> {
        let mut namespaces: Vec<String> = node_ids().map(|n| self.node_namespace(n)).collect();
        namespaces.push(self.switch_namespace());
        namespaces
            .iter()
            .map(|namespace| argv(&["ip", "netns", "del", namespace]))
            .collect()
    }

    /// An nftables script for node `node`'s namespace that drops every packet from
    /// `blocked_from` and to `blocked_to` (replacing any earlier one).
    pub fn firewall_script(&self, blocked_from: &[Ipv4Addr], blocked_to: &[Ipv4Addr]) -> String {
        let mut script = format!(
            "table inet {FIREWALL_TABLE}\ndelete table inet {FIREWALL_TABLE}\n\
             table inet {FIREWALL_TABLE} {{\n"
        );
        for (chain, direction, addresses) in [
            ("input", "saddr", blocked_from),
            ("output", "daddr", blocked_to),
        ] {
            script.push_str(&format!(
                "  chain {chain} {{\n    type filter hook {chain} priority 0; policy accept;\n"
            ));
            if !addresses.is_empty() {
                let set: Vec<String> = addresses.iter().map(Ipv4Addr::to_string).collect();
                script.push_str(&format!(
                    "    ip {direction} {{ {} }} drop\n",
                    set.join(", ")
                ));
            }
            script.push_str("  }\n");
        }
        script.push_str("}\n");
        script
    }

    /// An nftables script for a node's namespace that drops `loss_percent` % of the packets
    /// on its link, both ways, at random: the loss half of netem, for kernels without netem.
    pub fn random_loss_script(&self, loss_percent: u64) -> String {
        let mut script = format!(
            "table inet {FIREWALL_TABLE}\ndelete table inet {FIREWALL_TABLE}\n\
             table inet {FIREWALL_TABLE} {{\n"
        );
        for (chain, interface) in [("input", "iifname"), ("output", "oifname")] {
            script.push_str(&format!(
                "  chain {chain} {{\n    type filter hook {chain} priority 0; policy accept;\n    \
                 {interface} \"eth0\" numgen random mod 100 < {loss_percent} drop\n  }}\n"
            ));
        }
        script.push_str("}\n");
        script
    }

    /// A token bucket on node `node`'s link (`rate_kbit`, queueing up to `latency_ms`): packets
    /// wait in its queue under load, the delay half of netem for kernels without netem.
    pub fn slow_link_command(&self, node: i32, rate_kbit: u64, latency_ms: u64) -> Vec<String> {
        root_qdisc_command(
            &self.node_namespace(node),
            &[
                "tbf",
                "rate",
                &format!("{rate_kbit}kbit"),
                "burst",
                "32kbit",
                "latency",
                &format!("{latency_ms}ms"),
            ],
        )
    }

    /// Heals every partition in node `node`'s namespace (its only nftables rules are ours).
    pub fn firewall_heal_command(&self, node: i32) -> Vec<String> {
        netns_exec(&self.node_namespace(node), &["nft", "flush", "ruleset"])
    }

    /// `tc netem` on node `node`'s interface: `delay_ms` ± `jitter_ms`, `loss_percent` loss.
    pub fn netem_command(
        &self,
        node: i32,
        delay_ms: u64,
        jitter_ms: u64,
        loss_percent: u64,
    ) -> Vec<String> {
        netem_args(
            &self.node_namespace(node),
            delay_ms,
            jitter_ms,
            loss_percent,
        )
    }

    /// Removes node `node`'s netem (an error when there is none, which callers ignore).
    pub fn netem_heal_command(&self, node: i32) -> Vec<String> {
        netns_exec(
            &self.node_namespace(node),
            &["tc", "qdisc", "del", "dev", "eth0", "root"],
        )
    }
}

/// The node ids, `1..=NODE_COUNT`.
pub fn node_ids() -> impl Iterator<Item = i32> {
    1..=NODE_COUNT
}

fn netem_args(namespace: &str, delay_ms: u64, jitter_ms: u64, loss_percent: u64) -> Vec<String> {
    root_qdisc_command(
        namespace,
        &[
            "netem",
            "delay",
            &format!("{delay_ms}ms"),
            &format!("{jitter_ms}ms"),
            "loss",
            &format!("{loss_percent}%"),
        ],
    )
}

/// `tc qdisc add dev eth0 root <qdisc…>` in `namespace`.
fn root_qdisc_command(namespace: &str, qdisc: &[&str]) -> Vec<String> {
    let mut command = vec!["tc", "qdisc", "add", "dev", "eth0", "root"];
    command.extend_from_slice(qdisc);
    netns_exec(namespace, &command)
}

/// `ip netns exec <namespace> <command…>`.
pub fn netns_exec(namespace: &str, command: &[&str]) -> Vec<String> {
    let mut args = argv(&["ip", "netns", "exec", namespace]);
    args.extend(command.iter().map(|s| (*s).to_owned()));
    args
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| (*s).to_owned()).collect()
}

/// The pid in a harness-made namespace's name (`rc<pid>sw`, `rc<pid>n<K>`), if it is one.
pub fn namespace_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let suffix = rest.get(digits.len()..)?;
    let ours = suffix == "sw"
        || suffix
            .strip_prefix('n')
            .is_some_and(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_digit()));
    if digits.is_empty() || !ours {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_follow_the_pid() {
        let plan = NetworkPlan::new(123_456, "");
        assert_eq!(plan.switch_namespace(), "rc123456sw");
        assert_eq!(plan.node_namespace(2), "rc123456n2");
        assert_eq!(plan.host_interface(), "rc123456h");
        assert_eq!(plan.host_ip(), Ipv4Addr::new(10, 206, 165, 1));
        assert_eq!(plan.node_ip(3), Ipv4Addr::new(10, 206, 165, 13));
        assert_eq!(
            plan.bootstrap(),
            "10.206.165.11:9092,10.206.165.12:9092,10.206.165.13:9092"
        );
        assert_eq!(
            plan.quorum_voters(),
            "1@10.206.165.11:9093,2@10.206.165.12:9093,3@10.206.165.13:9093"
        );
        // Linux interface names hold at most 15 bytes, even with the largest pid (2^22).
        let big = NetworkPlan::new(4_194_304, "");
        assert!(big.host_interface().len() <= 15);
        assert!(format!("{}a3", big.prefix).len() <= 15);
    }

    #[test]
    fn a_subnet_in_use_is_skipped() {
        let routes = "10.206.165.0/24 dev docker0 proto kernel scope link src 10.206.165.1\n\
                      10.206.166.0/24 dev br-x";
        let plan = NetworkPlan::new(123_456, routes);
        assert_eq!(plan.host_ip(), Ipv4Addr::new(10, 206, 167, 1));
    }

    #[test]
    fn setup_builds_every_namespace_and_teardown_removes_them() {
        let plan = NetworkPlan::new(77, "");
        let setup = plan.setup_commands();
        let added: Vec<&str> = setup
            .iter()
            .filter(|c| c.get(..3) == Some(&["ip".into(), "netns".into(), "add".into()]))
            .filter_map(|c| c.get(3).map(String::as_str))
            .collect();
        assert_eq!(added, ["rc77sw", "rc77n1", "rc77n2", "rc77n3"]);
        let deleted: Vec<String> = plan
            .teardown_commands()
            .into_iter()
            .filter_map(|c| c.get(3).cloned())
            .collect();
        let mut added_sorted: Vec<String> = added.iter().map(|s| (*s).to_owned()).collect();
        added_sorted.sort();
        let mut deleted_sorted = deleted.clone();
        deleted_sorted.sort();
        assert_eq!(added_sorted, deleted_sorted);
        assert!(setup
            .iter()
            .any(|c| c.join(" ") == "ip netns exec rc77n2 ip addr add 10.227.1.12/24 dev eth0"));
    }

    #[test]
    fn firewall_and_netem_commands() {
        let plan = NetworkPlan::new(77, "");
        let script = plan.firewall_script(&[plan.node_ip(2)], &[plan.node_ip(2), plan.host_ip()]);
        assert!(script.contains("ip saddr { 10.227.1.12 } drop"));
        assert!(script.contains("ip daddr { 10.227.1.12, 10.227.1.1 } drop"));
        let open = plan.firewall_script(&[], &[]);
        assert!(!open.contains("drop"));
        assert_eq!(
            plan.netem_command(1, 100, 50, 10).join(" "),
            "ip netns exec rc77n1 tc qdisc add dev eth0 root netem delay 100ms 50ms loss 10%"
        );
        let loss = plan.random_loss_script(10);
        assert!(loss.contains("iifname \"eth0\" numgen random mod 100 < 10 drop"));
        assert!(loss.contains("oifname \"eth0\" numgen random mod 100 < 10 drop"));
        assert_eq!(
            plan.slow_link_command(2, 1000, 400).join(" "),
            "ip netns exec rc77n2 tc qdisc add dev eth0 root tbf rate 1000kbit burst 32kbit latency 400ms"
        );
        assert_eq!(
            plan.firewall_heal_command(3).join(" "),
            "ip netns exec rc77n3 nft flush ruleset"
        );
    }

    #[test]
    fn leftover_namespaces_are_recognised_by_name() {
        assert_eq!(namespace_owner("rc123sw"), Some(123));
        assert_eq!(namespace_owner("rc123n2"), Some(123));
        assert_eq!(namespace_owner("rc123x"), None);
        assert_eq!(namespace_owner("rcsw"), None);
        assert_eq!(namespace_owner("docker"), None);
        assert_eq!(namespace_owner("rc12n"), None);
    }
}
