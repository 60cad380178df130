//! Admission of new connections: `max.connections` overall and `max.connections.per.ip` per
//! client address. A refused connection is closed at once, before any byte is read.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts open connections, overall and per address.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    total: Arc<Semaphore>,
    per_ip: Arc<DashMap<IpAddr, usize>>,
    per_ip_max: usize,
}

/// Held for the life of one admitted connection; dropping it frees its slots.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    _total: OwnedSemaphorePermit,
    per_ip: Arc<DashMap<IpAddr, usize>>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub(crate) fn new(total_max: usize, per_ip_max: usize) -> ConnectionLimits {
        ConnectionLimits {
            total: Arc::new(Semaphore::new(total_max)),
            per_ip: Arc::new(DashMap::new()),
            per_ip_max,
        }
    }

    /// A slot for a connection from `ip`, or `None` when a limit is reached.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let total = Arc::clone(&self.total).try_acquire_owned().ok()?;
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.per_ip_max {
            return None;
        }
        *count += 1;
        drop(count);
        Some(ConnectionSlot {
            _total: total,
            per_ip: Arc::clone(&self.per_ip),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        // Remove the entry when the last connection of an address goes, so the map holds only
        // addresses with open connections.
        self.per_ip.remove_if_mut(&self.ip, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_and_slots_come_back() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none(), "per-ip limit");
        let _b1 = limits.admit(b).unwrap();
        assert!(limits.admit(b).is_none(), "total limit");
        drop(a1);
        assert!(limits.admit(a).is_some());
        assert_eq!(limits.per_ip.len(), 2);
    }
}
