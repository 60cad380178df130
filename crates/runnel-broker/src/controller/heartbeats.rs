//! [`HeartbeatTracker`]: when the active controller last heard from each broker, in memory
//! only (a new controller starts afresh), and which sessions have expired. Time is passed in,
//! so it is tested without a clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::metadata::records::BrokerId;
use crate::metadata::MetadataImage;

/// Last heartbeat per broker, on the active controller.
#[derive(Debug, Clone)]
pub struct HeartbeatTracker {
    session_timeout: Duration,
    /// When this controller started leading: a broker not heard from since counts as heard
    /// then, so every broker gets a full session timeout from a new controller.
    grace_from: Instant,
    last_heard: BTreeMap<BrokerId, Instant>,
}

impl HeartbeatTracker {
    /// A tracker fencing after `session_timeout` of silence, leading since `now`.
    pub fn new(session_timeout: Duration, now: Instant) -> HeartbeatTracker {
        HeartbeatTracker {
            session_timeout,
            grace_from: now,
            last_heard: BTreeMap::new(),
        }
    }

    /// This node (again) became the active controller at `now`: forgets what it knew, and
    /// gives every broker a full session timeout from `now`.
    pub fn start_leading(&mut self, now: Instant) {
        self.grace_from = now;
        self.last_heard.clear();
    }

    /// A heartbeat (or registration) from `broker` at `now`.
    pub fn heard(&mut self, broker: BrokerId, now: Instant) {
        let last = self.last_heard.entry(broker).or_insert(now);
        *last = (*last).max(now);
    }

    /// `broker` left (controlled shutdown, fenced): nothing to track until it is heard again.
    pub fn forget(&mut self, broker: BrokerId) {
        self.last_heard.remove(&broker);
    }

    /// The unfenced brokers of `image` whose session has expired at `now`: not heard from
    /// (nor since this controller began leading) for a full session timeout.
    pub fn expired(&self, image: &MetadataImage, now: Instant) -> Vec<BrokerId> {
        image
            .unfenced_brokers()
            .filter(|broker| {
                let last = self
                    .last_heard
                    .get(&broker.id)
                    .copied()
                    .unwrap_or(self.grace_from)
                    .max(self.grace_from);
                now.saturating_duration_since(last) >= self.session_timeout
            })
            .map(|broker| broker.id)
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::controller::placement::tests::image_with;
    use crate::metadata::{MetadataBatch, MetadataRecord};

    const TIMEOUT: Duration = Duration::from_secs(9);

    #[test]
    fn a_silent_broker_expires_after_the_session_timeout() {
        let image = image_with(&[(1, None), (2, None)]);
        let start = Instant::now();
        let mut tracker = HeartbeatTracker::new(TIMEOUT, start);
        assert!(tracker.expired(&image, start).is_empty());
        tracker.heard(1, start + Duration::from_secs(5));
        assert!(tracker
            .expired(&image, start + TIMEOUT - Duration::from_millis(1))
            .is_empty());
        // 2 was never heard: its grace (from the start of leadership) is over; 1 is fine.
        assert_eq!(tracker.expired(&image, start + TIMEOUT), vec![2]);
        assert_eq!(
            tracker.expired(&image, start + Duration::from_secs(14)),
            vec![1, 2]
        );
    }

    #[test]
    fn a_new_leader_gives_every_broker_a_full_session() {
        let image = image_with(&[(1, None)]);
        let start = Instant::now();
        let mut tracker = HeartbeatTracker::new(TIMEOUT, start);
        tracker.heard(1, start);
        let later = start + Duration::from_secs(60);
        assert_eq!(tracker.expired(&image, later), vec![1]);
        tracker.start_leading(later);
        assert!(tracker.expired(&image, later + TIMEOUT / 2).is_empty());
        assert_eq!(tracker.expired(&image, later + TIMEOUT), vec![1]);
    }

    #[test]
    fn fenced_brokers_never_expire() {
        let mut image = image_with(&[(1, None)]);
        image.apply(
            2,
            &MetadataBatch {
                records: vec![MetadataRecord::FenceBroker { broker_id: 1 }],
                ..MetadataBatch::default()
            },
        );
        let start = Instant::now();
        let tracker = HeartbeatTracker::new(TIMEOUT, start);
        assert!(tracker
            .expired(&image, start + Duration::from_secs(100))
            .is_empty());
    }
}
