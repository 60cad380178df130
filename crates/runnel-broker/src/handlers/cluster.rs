//! What several handlers need from the metadata image: brokers' endpoints on the listener a
//! request arrived on, and the leader named by a NOT_LEADER_OR_FOLLOWER.

use crate::error::BrokerError;
use crate::metadata::{BrokerId, BrokerRegistration, MetadataImage};

/// A broker as clients reach it on one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerEndpoint {
    /// Broker id.
    pub id: BrokerId,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i32,
    /// `broker.rack`.
    pub rack: Option<String>,
}

fn endpoint_of(broker: &BrokerRegistration, listener: &str) -> Option<BrokerEndpoint> {
    broker.endpoint(listener).map(|e| BrokerEndpoint {
        id: broker.id,
        host: e.host.clone(),
        port: i32::from(e.port),
        rack: broker.rack.clone(),
    })
}

/// Every unfenced broker with an endpoint on `listener`, by id.
pub(crate) fn live_brokers(image: &MetadataImage, listener: &str) -> Vec<BrokerEndpoint> {
    image
        .unfenced_brokers()
        .filter_map(|b| endpoint_of(b, listener))
        .collect()
}

/// Broker `id`'s endpoint on `listener`, if it is registered, unfenced and has one.
pub(crate) fn broker_endpoint(
    image: &MetadataImage,
    id: BrokerId,
    listener: &str,
) -> Option<BrokerEndpoint> {
    image
        .brokers
        .get(&id)
        .filter(|b| !b.fenced)
        .and_then(|b| endpoint_of(b, listener))
}

/// The leader id and epoch a NOT_LEADER_OR_FOLLOWER names (for `current_leader` fields).
pub(crate) fn named_leader(error: &BrokerError) -> Option<(BrokerId, i32)> {
    match error {
        BrokerError::NotLeaderOrFollower {
            leader,
            leader_epoch,
            ..
        } => Some((*leader, *leader_epoch)),
        _ => None,
    }
}
