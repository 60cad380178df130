//! The cluster settings (docs/cluster.md, "Roles and configuration"): named listeners, the
//! metadata quorum's voters, the node's roles and cluster id, parsed from Kafka's text forms
//! (`NAME://host:port,…`, `1@host:port,…`) and validated as a whole at load, so that a
//! misconfigured node stops at start with one line naming the problem, never half-working.
//!
//! Knows nothing of sockets or the quorum: it only says what the node must bind, advertise and
//! join. The shorthands `listen`/`advertise` (flags `--listen`/`--advertise`) become a
//! `PLAINTEXT` listener here.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use super::Settings;
use crate::metadata::Endpoint;

/// One named listener: `NAME://host:port`. Names are upper-cased, as Kafka normalises them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The listener's name (`PLAINTEXT`, `INTERNAL`, `CONTROLLER`, …).
    pub name: String,
    /// Host to bind (or, advertised, to connect to); empty binds every interface.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Listener {
    /// The socket address to bind: the host as an IP address (empty: `0.0.0.0`), else the
    /// host name resolved (its first address).
    ///
    /// # Errors
    /// The resolver's error for a name that does not resolve.
    pub fn bind_address(&self) -> std::io::Result<SocketAddr> {
        if self.host.is_empty() {
            return Ok(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                self.port,
            ));
        }
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address")
            })
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.name, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.name, self.host, self.port)
        }
    }
}

/// One voter of the metadata quorum: `id@host:port`, the host and port of its controller
/// listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// The voter's `node.id`.
    pub id: i32,
    /// Host of its controller listener.
    pub host: String,
    /// Port of its controller listener.
    pub port: u16,
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.id, self.host, self.port)
    }
}

/// `process.roles`: what this node does. Always `broker` today; `controller` too unless the
/// node is a broker only (controller-only nodes are not supported yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRoles {
    /// Serves clients.
    pub broker: bool,
    /// Votes in the metadata quorum (and may become the active controller).
    pub controller: bool,
}

impl fmt::Display for ProcessRoles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.broker, self.controller) {
            (true, true) => f.write_str("broker,controller"),
            (true, false) => f.write_str("broker"),
            (false, true) => f.write_str("controller"),
            (false, false) => Ok(()),
        }
    }
}

/// What is wrong with the cluster settings, in one line naming the setting and the value.
#[derive(Debug, thiserror::Error)]
pub enum ClusterConfigError {
    /// A shorthand and the Kafka setting it stands for were both given.
    #[error("`{shorthand}` (flag --{shorthand}) and `{setting}` are both set: give one of them")]
    ShorthandConflict {
        /// `listen` or `advertise`.
        shorthand: &'static str,
        /// `listeners` or `advertised.listeners`.
        setting: &'static str,
    },
    /// A listener that is not `NAME://host:port`.
    #[error("{setting}: `{value}` is not NAME://HOST:PORT ({reason})")]
    BadListener {
        /// `listeners` or `advertised.listeners` (or their shorthands).
        setting: &'static str,
        /// The entry as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two listeners with one name.
    #[error("{setting}: listener name {name} appears twice")]
    DuplicateListenerName {
        /// `listeners` or `advertised.listeners`.
        setting: &'static str,
        /// The name.
        name: String,
    },
    /// Two listeners on one port.
    #[error("listeners: {first} and {second} both use port {port}")]
    DuplicateListenerPort {
        /// The port.
        port: u16,
        /// One listener's name.
        first: String,
        /// The other's.
        second: String,
    },
    /// `listeners` has no listener for clients.
    #[error("listeners: no client listener (`{listeners}`: every one is a controller listener, controller.listener.names)")]
    NoClientListener {
        /// The listeners as given.
        listeners: String,
    },
    /// A host name in `listeners` that does not resolve.
    #[error("listeners: cannot resolve the host of {listener}: {source}")]
    UnresolvableListener {
        /// The listener.
        listener: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// An advertised listener whose name is not among `listeners`.
    #[error("advertised.listeners: {name} is not a listener (listeners: {listeners})")]
    UnknownAdvertisedListener {
        /// The name.
        name: String,
        /// The listener names.
        listeners: String,
    },
    /// A controller listener among the advertised (client) listeners.
    #[error("advertised.listeners: {name} is a controller listener (controller.listener.names); advertise client listeners only")]
    AdvertisedControllerListener {
        /// The name.
        name: String,
    },
    /// An advertised host clients cannot connect to.
    #[error("advertised.listeners: {name} advertises `{host}`, which clients cannot connect to; give a host name or address")]
    UnroutableAdvertisedHost {
        /// The listener.
        name: String,
        /// The host.
        host: String,
    },
    /// `listener.security.protocol.map` entry that is not `NAME:PROTOCOL`.
    #[error("listener.security.protocol.map: `{entry}` is not NAME:PROTOCOL")]
    BadSecurityProtocolMap {
        /// The entry.
        entry: String,
    },
    /// A listener with no security protocol.
    #[error(
        "listener {name} has no entry in listener.security.protocol.map (add `{name}:PLAINTEXT`)"
    )]
    MissingSecurityProtocol {
        /// The listener.
        name: String,
    },
    /// A listener with a protocol Runnel does not serve.
    #[error("listener {name} uses {protocol}: only PLAINTEXT is served (SSL and SASL are not supported yet)")]
    UnsupportedSecurityProtocol {
        /// The listener.
        name: String,
        /// Its protocol.
        protocol: String,
    },
    /// `inter.broker.listener.name` names no client listener.
    #[error("inter.broker.listener.name: {name} is not a client listener (client listeners: {listeners})")]
    UnknownInterBrokerListener {
        /// The name.
        name: String,
        /// The client listener names.
        listeners: String,
    },
    /// `controller.listener.names` is empty.
    #[error("controller.listener.names is empty: name the listener of node-to-node traffic (e.g. CONTROLLER)")]
    NoControllerListenerName,
    /// A controller node with voters but without its controller listener.
    #[error("listeners has no controller listener ({names}, from controller.listener.names): a controller needs one to reach the other voters")]
    MissingControllerListener {
        /// controller.listener.names.
        names: String,
    },
    /// `process.roles` other than the supported ones.
    #[error("process.roles: `{value}` is not one of `broker,controller`, `broker`")]
    BadProcessRoles {
        /// The value.
        value: String,
    },
    /// `process.roles=controller`.
    #[error("process.roles=controller: controller-only nodes are not supported yet (use `broker,controller`)")]
    ControllerOnly,
    /// A broker-only node without voters to join.
    #[error("process.roles=broker needs controller.quorum.voters: a broker-only node joins a quorum of other nodes")]
    BrokerWithoutQuorum,
    /// A voter that is not `id@host:port`.
    #[error("controller.quorum.voters: `{value}` is not ID@HOST:PORT ({reason})")]
    BadVoter {
        /// The entry.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two voters with one id.
    #[error("controller.quorum.voters: voter id {id} appears twice")]
    DuplicateVoter {
        /// The id.
        id: i32,
    },
    /// A controller node that is not a voter.
    #[error("node.id {node_id} is not among controller.quorum.voters ({voters}): a controller must be a voter")]
    NotAVoter {
        /// This node.
        node_id: i32,
        /// The voters.
        voters: String,
    },
    /// A multi-voter quorum without `cluster.id`.
    #[error("cluster.id is required with {voters} voters: give every node the same cluster.id")]
    MissingClusterId {
        /// Number of voters.
        voters: usize,
    },
    /// A `cluster.id` with characters other than `[A-Za-z0-9_-]`.
    #[error("cluster.id `{value}`: only letters, digits, `_` and `-` are allowed")]
    BadClusterId {
        /// The value.
        value: String,
    },
    /// A heartbeat interval not below the session timeout.
    #[error("broker.heartbeat.interval.ms ({heartbeat_ms}) must be below broker.session.timeout.ms ({session_ms})")]
    HeartbeatNotBelowSession {
        /// The interval.
        heartbeat_ms: u64,
        /// The timeout.
        session_ms: u64,
    },
}

/// The cluster settings, parsed and validated (see the matching fields of
/// [`BrokerConfig`](super::BrokerConfig)).
#[derive(Debug, Clone)]
pub(super) struct ClusterSettings {
    pub(super) listeners: Vec<Listener>,
    pub(super) advertised_listeners: Vec<Listener>,
    pub(super) controller_listener_names: Vec<String>,
    pub(super) inter_broker_listener_name: String,
    pub(super) process_roles: ProcessRoles,
    pub(super) quorum_voters: Vec<Voter>,
    pub(super) broker_rack: Option<String>,
    pub(super) cluster_id: Option<String>,
    /// The first client listener's bind address (the old `listen`).
    pub(super) listen: SocketAddr,
}

/// Parses and validates the cluster settings of `settings` for node `node_id`.
pub(super) fn parse(
    settings: &Settings,
    node_id: i32,
    session_ms: u64,
    heartbeat_ms: u64,
) -> Result<ClusterSettings, ClusterConfigError> {
    let explicit = |name: &str| settings.values.contains_key(name);
    let process_roles = parse_process_roles(&settings.raw("process.roles"))?;
    let quorum_voters = parse_voters(&settings.raw("controller.quorum.voters"))?;
    if !process_roles.controller && quorum_voters.is_empty() {
        return Err(ClusterConfigError::BrokerWithoutQuorum);
    }
    if process_roles.controller
        && !quorum_voters.is_empty()
        && !quorum_voters.iter().any(|v| v.id == node_id)
    {
        return Err(ClusterConfigError::NotAVoter {
            node_id,
            voters: join(&quorum_voters),
        });
    }
    let cluster_id = non_empty(settings.raw("cluster.id"));
    if let Some(id) = &cluster_id {
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ClusterConfigError::BadClusterId { value: id.clone() });
        }
    } else if quorum_voters.len() > 1 {
        return Err(ClusterConfigError::MissingClusterId {
            voters: quorum_voters.len(),
        });
    }

    // Listeners: `listeners`, or the `listen` shorthand (or its default) as PLAINTEXT.
    if explicit("listen") && explicit("listeners") {
        return Err(ClusterConfigError::ShorthandConflict {
            shorthand: "listen",
            setting: "listeners",
        });
    }
    let (listeners_setting, listeners_text) = if explicit("listen") {
        (
            "listen",
            format!("PLAINTEXT://{}", settings.raw("listen").trim()),
        )
    } else {
        ("listeners", settings.raw("listeners"))
    };
    let listeners = parse_listeners(listeners_setting, &listeners_text)?;
    check_unique_ports(&listeners)?;
    let controller_listener_names: Vec<String> =
        split_list(&settings.raw("controller.listener.names"))
            .map(str::to_ascii_uppercase)
            .collect();
    if controller_listener_names.is_empty() {
        return Err(ClusterConfigError::NoControllerListenerName);
    }
    let is_controller_listener = |name: &str| controller_listener_names.iter().any(|c| c == name);
    let client: Vec<&Listener> = listeners
        .iter()
        .filter(|l| !is_controller_listener(&l.name))
        .collect();
    let Some(first_client) = client.first() else {
        return Err(ClusterConfigError::NoClientListener {
            listeners: listeners_text,
        });
    };
    if process_roles.controller
        && !quorum_voters.is_empty()
        && !listeners.iter().any(|l| is_controller_listener(&l.name))
    {
        return Err(ClusterConfigError::MissingControllerListener {
            names: controller_listener_names.join(","),
        });
    }
    check_security_protocols(&settings.raw("listener.security.protocol.map"), &listeners)?;
    let listen =
        first_client
            .bind_address()
            .map_err(|source| ClusterConfigError::UnresolvableListener {
                listener: first_client.to_string(),
                source,
            })?;

    // Advertised: `advertised.listeners`, or the `advertise` shorthand as PLAINTEXT; client
    // listeners not named there are advertised as bound, 0.0.0.0 read as localhost.
    if explicit("advertise") && explicit("advertised.listeners") {
        return Err(ClusterConfigError::ShorthandConflict {
            shorthand: "advertise",
            setting: "advertised.listeners",
        });
    }
    let (advertised_setting, advertised_text) = if explicit("advertise") {
        (
            "advertise",
            format!("PLAINTEXT://{}", settings.raw("advertise").trim()),
        )
    } else {
        ("advertised.listeners", settings.raw("advertised.listeners"))
    };
    let given = parse_listeners(advertised_setting, &advertised_text)?;
    for advertised in &given {
        if is_controller_listener(&advertised.name) {
            return Err(ClusterConfigError::AdvertisedControllerListener {
                name: advertised.name.clone(),
            });
        }
        if !client.iter().any(|l| l.name == advertised.name) {
            return Err(ClusterConfigError::UnknownAdvertisedListener {
                name: advertised.name.clone(),
                listeners: names(&client),
            });
        }
        if advertised.host.is_empty() || is_unspecified(&advertised.host) {
            return Err(ClusterConfigError::UnroutableAdvertisedHost {
                name: advertised.name.clone(),
                host: advertised.host.clone(),
            });
        }
    }
    let advertised_listeners = client
        .iter()
        .map(|bound| {
            given
                .iter()
                .find(|a| a.name == bound.name)
                .cloned()
                .unwrap_or_else(|| Listener {
                    name: bound.name.clone(),
                    host: if bound.host.is_empty() || is_unspecified(&bound.host) {
                        "localhost".to_string()
                    } else {
                        bound.host.clone()
                    },
                    port: bound.port,
                })
        })
        .collect();

    let inter_broker_listener_name = match non_empty(settings.raw("inter.broker.listener.name")) {
        None => first_client.name.clone(),
        Some(name) => {
            let name = name.to_ascii_uppercase();
            if !client.iter().any(|l| l.name == name) {
                return Err(ClusterConfigError::UnknownInterBrokerListener {
                    name,
                    listeners: names(&client),
                });
            }
            name
        }
    };
    if heartbeat_ms >= session_ms {
        return Err(ClusterConfigError::HeartbeatNotBelowSession {
            heartbeat_ms,
            session_ms,
        });
    }
    Ok(ClusterSettings {
        listen,
        advertised_listeners,
        inter_broker_listener_name,
        broker_rack: non_empty(settings.raw("broker.rack")),
        controller_listener_names,
        listeners,
        process_roles,
        quorum_voters,
        cluster_id,
    })
}

/// The endpoints clients are told, one per advertised listener.
pub(super) fn endpoints(advertised: &[Listener]) -> Vec<Endpoint> {
    advertised
        .iter()
        .map(|l| Endpoint {
            listener: l.name.clone(),
            host: l.host.clone(),
            port: l.port,
        })
        .collect()
}

fn parse_process_roles(value: &str) -> Result<ProcessRoles, ClusterConfigError> {
    let roles: BTreeSet<String> = split_list(value).map(str::to_ascii_lowercase).collect();
    let count = split_list(value).count();
    let has = |role: &str| roles.contains(role);
    match (roles.len(), count, has("broker"), has("controller")) {
        (2, 2, true, true) => Ok(ProcessRoles {
            broker: true,
            controller: true,
        }),
        (1, 1, true, false) => Ok(ProcessRoles {
            broker: true,
            controller: false,
        }),
        (1, 1, false, true) => Err(ClusterConfigError::ControllerOnly),
        _ => Err(ClusterConfigError::BadProcessRoles {
            value: value.to_string(),
        }),
    }
}

fn parse_voters(value: &str) -> Result<Vec<Voter>, ClusterConfigError> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in split_list(value) {
        let bad = |reason| ClusterConfigError::BadVoter {
            value: entry.to_string(),
            reason,
        };
        let (id, address) = entry.split_once('@').ok_or_else(|| bad("no `@`"))?;
        let id: i32 = id
            .trim()
            .parse()
            .map_err(|_| bad("the id is not an integer"))?;
        if id < 0 {
            return Err(bad("the id is negative"));
        }
        let (host, port) = split_host_port(address).map_err(bad)?;
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if voters.iter().any(|v| v.id == id) {
            return Err(ClusterConfigError::DuplicateVoter { id });
        }
        voters.push(Voter { id, host, port });
    }
    Ok(voters)
}

fn parse_listeners(
    setting: &'static str,
    value: &str,
) -> Result<Vec<Listener>, ClusterConfigError> {
    let mut listeners: Vec<Listener> = Vec::new();
    for entry in split_list(value) {
        let bad = |reason| ClusterConfigError::BadListener {
            setting,
            value: entry.to_string(),
            reason,
        };
        let (name, address) = entry.split_once("://").ok_or_else(|| bad("no `://`"))?;
        let name = name.trim().to_ascii_uppercase();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad("the name must be letters, digits, `_` or `-`"));
        }
        let (host, port) = split_host_port(address).map_err(bad)?;
        if listeners.iter().any(|l| l.name == name) {
            return Err(ClusterConfigError::DuplicateListenerName { setting, name });
        }
        listeners.push(Listener { name, host, port });
    }
    Ok(listeners)
}

fn check_unique_ports(listeners: &[Listener]) -> Result<(), ClusterConfigError> {
    for (index, listener) in listeners.iter().enumerate() {
        if listener.port == 0 {
            continue;
        }
        if let Some(other) = listeners
            .iter()
            .skip(index + 1)
            .find(|l| l.port == listener.port)
        {
            return Err(ClusterConfigError::DuplicateListenerPort {
                port: listener.port,
                first: listener.name.clone(),
                second: other.name.clone(),
            });
        }
    }
    Ok(())
}

/// Every listener must map to PLAINTEXT. A name missing from the map that is itself a protocol
/// name (`SSL://…`) means that protocol, as in Kafka.
fn check_security_protocols(map: &str, listeners: &[Listener]) -> Result<(), ClusterConfigError> {
    let mut protocols = Vec::new();
    for entry in split_list(map) {
        let (name, protocol) = entry
            .split_once(':')
            .filter(|(n, p)| !n.trim().is_empty() && !p.trim().is_empty())
            .ok_or_else(|| ClusterConfigError::BadSecurityProtocolMap {
                entry: entry.to_string(),
            })?;
        protocols.push((
            name.trim().to_ascii_uppercase(),
            protocol.trim().to_ascii_uppercase(),
        ));
    }
    const PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
    for listener in listeners {
        let protocol = protocols
            .iter()
            .find(|(name, _)| *name == listener.name)
            .map(|(_, protocol)| protocol.clone())
            .or_else(|| {
                PROTOCOLS
                    .contains(&listener.name.as_str())
                    .then(|| listener.name.clone())
            })
            .ok_or_else(|| ClusterConfigError::MissingSecurityProtocol {
                name: listener.name.clone(),
            })?;
        if protocol != "PLAINTEXT" {
            return Err(ClusterConfigError::UnsupportedSecurityProtocol {
                name: listener.name.clone(),
                protocol,
            });
        }
    }
    Ok(())
}

/// `host:port`, `[v6]:port` or `:port` (every interface).
fn split_host_port(address: &str) -> Result<(String, u16), &'static str> {
    let address = address.trim();
    let (host, port) = address.rsplit_once(':').ok_or("no `:PORT`")?;
    let port: u16 = port.parse().map_err(|_| "the port is not 0..65535")?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').ok_or("unclosed `[`")?,
        None if host.contains(':') => return Err("an IPv6 address needs [brackets]"),
        None => host,
    };
    Ok((host.to_string(), port))
}

fn is_unspecified(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn non_empty(value: String) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn names(listeners: &[&Listener]) -> String {
    listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::super::{BrokerConfig, ConfigError};
    use super::*;

    fn load(overrides: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        let overrides: Vec<_> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BrokerConfig::load(None, &overrides)
    }

    fn error(overrides: &[(&str, &str)]) -> String {
        match load(overrides) {
            Ok(config) => panic!("{overrides:?} loaded: {config:?}"),
            Err(error) => {
                let text = error.to_string();
                assert!(!text.contains('\n'), "not one line: {text}");
                text
            }
        }
    }

    fn listener(name: &str, host: &str, port: u16) -> Listener {
        Listener {
            name: name.into(),
            host: host.into(),
            port,
        }
    }

    const KRAFT: &[(&str, &str)] = &[
        ("process.roles", "broker,controller"),
        ("node.id", "1"),
        (
            "controller.quorum.voters",
            "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293",
        ),
        (
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        ),
        ("advertised.listeners", "PLAINTEXT://127.0.0.1:9092"),
        ("controller.listener.names", "CONTROLLER"),
        ("cluster.id", "MkU3OEVBNTcwNTJENDM2Qk"),
    ];

    fn kraft_with(changes: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut settings: Vec<_> = KRAFT
            .iter()
            .filter(|(name, _)| !changes.iter().any(|(n, _)| n == name))
            .copied()
            .collect();
        settings.extend(changes.iter().filter(|(_, v)| !v.is_empty()));
        settings
    }

    #[test]
    fn zero_configuration_is_a_single_combined_node() {
        let config = load(&[]).unwrap();
        assert_eq!(
            config.listeners,
            vec![listener("PLAINTEXT", "0.0.0.0", 9092)]
        );
        assert_eq!(
            config.advertised_listeners,
            vec![listener("PLAINTEXT", "localhost", 9092)]
        );
        assert_eq!(config.listen.to_string(), "0.0.0.0:9092");
        assert_eq!(
            (config.advertise_host.as_str(), config.advertise_port),
            ("localhost", 9092)
        );
        assert_eq!(
            config.process_roles,
            ProcessRoles {
                broker: true,
                controller: true
            }
        );
        assert!(config.quorum_voters.is_empty());
        assert_eq!(config.controller_listener(), None);
        assert_eq!(config.inter_broker_listener_name, "PLAINTEXT");
        assert_eq!(config.cluster_id, None);
        assert_eq!(config.broker_rack, None);
        assert_eq!(
            (
                config.broker_session_timeout_ms,
                config.broker_heartbeat_interval_ms
            ),
            (9000, 2000)
        );
        assert_eq!(
            config.advertised_endpoints(),
            vec![Endpoint {
                listener: "PLAINTEXT".into(),
                host: "localhost".into(),
                port: 9092
            }]
        );
    }

    #[test]
    fn a_kraft_combined_node_loads() {
        let config = load(KRAFT).unwrap();
        assert_eq!(config.node_id, 1);
        assert_eq!(config.quorum_voters.len(), 3);
        assert_eq!(
            config.quorum_voters[1],
            Voter {
                id: 2,
                host: "127.0.0.1".into(),
                port: 9193
            }
        );
        assert_eq!(
            config.controller_listener(),
            Some(&listener("CONTROLLER", "127.0.0.1", 9093))
        );
        assert_eq!(
            config.client_listeners().collect::<Vec<_>>(),
            vec![&listener("PLAINTEXT", "127.0.0.1", 9092)]
        );
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.cluster_id.as_deref(), Some("MkU3OEVBNTcwNTJENDM2Qk"));
    }

    #[test]
    fn shorthands_are_plaintext_listeners() {
        let config = load(&[
            ("listen", "127.0.0.1:1234"),
            ("advertise", "example.com:99"),
        ])
        .unwrap();
        assert_eq!(
            config.listeners,
            vec![listener("PLAINTEXT", "127.0.0.1", 1234)]
        );
        assert_eq!(
            config.advertised_listeners,
            vec![listener("PLAINTEXT", "example.com", 99)]
        );
        assert_eq!(
            (config.advertise_host.as_str(), config.advertise_port),
            ("example.com", 99)
        );
        assert!(
            error(&[("listen", "127.0.0.1:1"), ("listeners", "PLAINTEXT://:2")])
                .contains("`listen` (flag --listen) and `listeners` are both set")
        );
        assert!(error(&[
            ("advertise", "a:1"),
            ("advertised.listeners", "PLAINTEXT://a:1")
        ])
        .contains("`advertised.listeners`"));
    }

    #[test]
    fn named_listeners_are_advertised_per_name() {
        let config = load(&[
            (
                "listeners",
                "internal://0.0.0.0:9092,EXTERNAL://[::]:19092,CONTROLLER://:9093",
            ),
            ("advertised.listeners", "EXTERNAL://localhost:19092"),
            ("inter.broker.listener.name", "INTERNAL"),
        ])
        .unwrap();
        assert_eq!(
            config.advertised_listeners,
            vec![
                listener("INTERNAL", "localhost", 9092),
                listener("EXTERNAL", "localhost", 19092)
            ]
        );
        assert_eq!(config.listeners[1], listener("EXTERNAL", "::", 19092));
        assert_eq!(config.controller_listener().map(|l| l.port), Some(9093));
        assert_eq!(config.inter_broker_listener_name, "INTERNAL");
        assert_eq!(config.listeners[1].to_string(), "EXTERNAL://[::]:19092");
    }

    #[test]
    fn every_misconfiguration_is_one_line_naming_it() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("listeners", "PLAINTEXT:/x:1")],
                "is not NAME://HOST:PORT",
            ),
            (&[("listeners", "PLAINTEXT://x")], "no `:PORT`"),
            (
                &[("listen", "x")],
                "listen: `PLAINTEXT://x` is not NAME://HOST:PORT",
            ),
            (&[("listeners", "PLAINTEXT://x:70000")], "port"),
            (
                &[("listeners", "A://:1,a://:2")],
                "listener name A appears twice",
            ),
            (&[("listeners", "A://:1,B://:1")], "both use port 1"),
            (&[("listeners", "CONTROLLER://:1")], "no client listener"),
            (
                &[("advertised.listeners", "OTHER://h:1")],
                "OTHER is not a listener",
            ),
            (
                &[("advertised.listeners", "PLAINTEXT://0.0.0.0:1")],
                "cannot connect to",
            ),
            (&[("listeners", "SSL://:1")], "only PLAINTEXT is served"),
            (
                &[
                    ("listeners", "PLAINTEXT://:1"),
                    ("listener.security.protocol.map", "PLAINTEXT:SASL_SSL"),
                ],
                "SASL_SSL",
            ),
            (
                &[("listeners", "ODD://:1")],
                "ODD has no entry in listener.security.protocol.map",
            ),
            (
                &[("listener.security.protocol.map", "PLAINTEXT")],
                "is not NAME:PROTOCOL",
            ),
            (
                &[("inter.broker.listener.name", "NOPE")],
                "inter.broker.listener.name: NOPE",
            ),
            (
                &[("process.roles", "controller")],
                "controller-only nodes are not supported yet",
            ),
            (&[("process.roles", "worker")], "process.roles: `worker`"),
            (&[("process.roles", "broker,broker")], "process.roles"),
            (
                &[("process.roles", "broker")],
                "needs controller.quorum.voters",
            ),
            (
                &[("controller.quorum.voters", "1@h")],
                "is not ID@HOST:PORT",
            ),
            (
                &[("controller.quorum.voters", "x@h:1")],
                "the id is not an integer",
            ),
            (
                &[("controller.listener.names", " ")],
                "controller.listener.names is empty",
            ),
            (&[("cluster.id", "a b")], "cluster.id `a b`"),
            (
                &[("broker.heartbeat.interval.ms", "9000")],
                "must be below broker.session.timeout.ms",
            ),
        ];
        for (settings, expected) in cases {
            let text = error(settings);
            assert!(
                text.contains(expected),
                "{settings:?}: `{text}` lacks `{expected}`"
            );
        }
        let kraft_cases: &[(&[(&'static str, &'static str)], &str)] = &[
            (
                &[("node.id", "4")],
                "node.id 4 is not among controller.quorum.voters",
            ),
            (
                &[("controller.quorum.voters", "1@h:1,1@h:2")],
                "voter id 1 appears twice",
            ),
            (
                &[("cluster.id", "")],
                "cluster.id is required with 3 voters",
            ),
            (
                &[("listeners", "PLAINTEXT://127.0.0.1:9092")],
                "no controller listener (CONTROLLER",
            ),
            (
                &[("advertised.listeners", "CONTROLLER://h:9093")],
                "CONTROLLER is a controller listener",
            ),
        ];
        for (changes, expected) in kraft_cases {
            let settings = kraft_with(changes);
            let text = error(&settings);
            assert!(
                text.contains(expected),
                "{changes:?}: `{text}` lacks `{expected}`"
            );
        }
    }

    #[test]
    fn a_broker_only_node_joins_voters_it_is_not_among() {
        let config = load(&kraft_with(&[
            ("process.roles", "broker"),
            ("node.id", "7"),
            ("listeners", "PLAINTEXT://127.0.0.1:9092"),
        ]))
        .unwrap();
        assert!(!config.process_roles.controller);
        assert_eq!(config.controller_listener(), None);
        assert_eq!(config.process_roles.to_string(), "broker");
    }

    #[test]
    fn one_voter_needs_no_cluster_id() {
        let config = load(&[
            ("controller.quorum.voters", "0@127.0.0.1:9093"),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
            ),
        ])
        .unwrap();
        assert_eq!(config.cluster_id, None);
        assert_eq!(config.quorum_voters.len(), 1);
    }

    #[test]
    fn kafka_names_work_in_a_toml_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runnel.toml");
        std::fs::write(
            &path,
            "\"process.roles\" = \"broker,controller\"\nnode.id = 2\n\
             \"controller.quorum.voters\" = \"1@h1:9093,2@h2:9093\"\n\
             controller.listener.names = \"CONTROLLER\"\n\
             listeners = \"PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\"\n\
             cluster.id = \"abc\"\nbroker.rack = \"r1\"\n",
        )
        .unwrap();
        let config = BrokerConfig::load(Some(&path), &[]).unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.quorum_voters.len(), 2);
        assert_eq!(config.broker_rack.as_deref(), Some("r1"));
        assert_eq!(config.cluster_id.as_deref(), Some("abc"));
    }
}
