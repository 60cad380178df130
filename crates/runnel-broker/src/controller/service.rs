//! [`ControllerService`]: the controller as a service on every node. On the active controller
//! (the metadata log's leader) it decides requests one at a time on the current image and
//! proposes the records; elsewhere it forwards them to the leader, following "not controller"
//! answers and retrying while no leader is known. On the leader it also fences brokers whose
//! heartbeats stopped.
//!
//! A request carries an id kept across retries: one the image has already answered (its
//! batch committed, then the sender timed out across a failover and retried) is answered from
//! the image, never applied twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::decide::{Controller, ControllerSettings, Decision, METADATA_BATCH_BYTES_MAX};
use super::elect_leaders::preferred_leader_moves;
use super::elections::fence;
use super::heartbeats::HeartbeatTracker;
use crate::metadata::handle::SUBMIT_TIMEOUT;
use crate::metadata::records::{BrokerId, MetadataBatch};
use crate::metadata::requests::{Committed, ControllerReply, ControllerRequest};
use crate::metadata::{Forwarder, Leadership, MetadataLog, Submission, SubmitError};

/// First wait before asking again while no controller answers; doubles up to the max.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Submissions served at once; more wait in the handle's channel (bounded too).
const SUBMISSIONS_IN_FLIGHT_MAX: usize = 1024;

/// The controller on one node: decides as leader, forwards as follower.
#[derive(Debug)]
pub struct ControllerService<L: MetadataLog, F: Forwarder> {
    node_id: BrokerId,
    log: Arc<L>,
    forwarder: F,
    controller: Controller,
    /// Held from deciding until the batch commits: decisions are made one at a time, each on
    /// the image the previous one left.
    decisions: Mutex<()>,
    heartbeats: StdMutex<HeartbeatTracker>,
    /// Whether this node led at the last look (a new term restarts the heartbeat grace).
    leading: AtomicBool,
}

impl<L: MetadataLog, F: Forwarder> ControllerService<L, F> {
    /// The service of node `node_id` over `log`, forwarding through `forwarder`.
    pub fn new(
        node_id: BrokerId,
        log: Arc<L>,
        forwarder: F,
        settings: ControllerSettings,
    ) -> ControllerService<L, F> {
        let tracker = HeartbeatTracker::new(settings.session_timeout, now());
        ControllerService {
            node_id,
            log,
            forwarder,
            controller: Controller::new(settings),
            decisions: Mutex::new(()),
            heartbeats: StdMutex::new(tracker),
            leading: AtomicBool::new(false),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> BrokerId {
        self.node_id
    }

    /// The metadata log.
    pub fn log(&self) -> &Arc<L> {
        &self.log
    }

    /// The decision rules and settings.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Carries out `request` (a submission of this node): decided here when this node leads,
    /// else forwarded to the leader. Retries while no leader is known or the leader cannot be
    /// reached, for up to [`SUBMIT_TIMEOUT`].
    ///
    /// Errors: `Unavailable` when no controller answered in time.
    pub async fn handle(
        &self,
        request_id: Uuid,
        request: ControllerRequest,
    ) -> Result<Committed, SubmitError> {
        let deadline = tokio::time::Instant::now() + SUBMIT_TIMEOUT;
        let mut backoff = RETRY_BACKOFF_MIN;
        let mut hint: Option<BrokerId> = None;
        let mut last_error = SubmitError::Unavailable("no controller is known".into());
        loop {
            let target = match self.log.leadership().await {
                Leadership::Leader => {
                    self.observe_leadership(true);
                    match self.decide_as_leader(request_id, &request).await {
                        // Leadership was lost mid-proposal: ask whoever leads now (the batch
                        // may have committed; the new leader answers it from the image).
                        Err(error @ SubmitError::Unavailable(_)) => {
                            last_error = error;
                            None
                        }
                        // Deposed between deciding and committing: the same request id goes to
                        // the new leader, which answers from the image if the batch committed.
                        Err(SubmitError::NotController { leader }) => {
                            last_error = SubmitError::NotController { leader };
                            leader.filter(|id| *id != self.node_id)
                        }
                        answer => return answer,
                    }
                }
                Leadership::Follower { leader } => {
                    self.observe_leadership(false);
                    hint.take().or(leader).filter(|id| *id != self.node_id)
                }
            };
            if let Some(leader) = target {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                let forwarded = tokio::time::timeout(
                    remaining,
                    self.forwarder.forward(leader, request_id, request.clone()),
                )
                .await
                .unwrap_or_else(|_| Err(SubmitError::Unavailable("timed out".into())));
                match forwarded {
                    Ok(committed) => return Ok(committed),
                    Err(SubmitError::NotController { leader: named }) => {
                        hint = named.filter(|id| *id != leader && *id != self.node_id);
                        last_error = SubmitError::NotController { leader: named };
                    }
                    Err(error) => last_error = error,
                }
            }
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(match last_error {
                    SubmitError::Unavailable(why) => SubmitError::Unavailable(why),
                    other => SubmitError::Unavailable(other.to_string()),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// Carries out a request another node forwarded: decided here if this node leads, else
    /// answered `NotController` with the leader this node knows (the sender follows it).
    pub async fn handle_forwarded(
        &self,
        request_id: Uuid,
        request: ControllerRequest,
    ) -> Result<Committed, SubmitError> {
        match self.log.leadership().await {
            Leadership::Leader => {
                self.observe_leadership(true);
                self.decide_as_leader(request_id, &request).await
            }
            Leadership::Follower { leader } => {
                self.observe_leadership(false);
                Err(SubmitError::NotController { leader })
            }
        }
    }

    /// Decides `request` on the current image and commits the records; answers from the
    /// image if the request was answered before. A decision with no records (validate-only,
    /// errors only, a heartbeat) proposes nothing and answers at the image's index.
    async fn decide_as_leader(
        &self,
        request_id: Uuid,
        request: &ControllerRequest,
    ) -> Result<Committed, SubmitError> {
        let _turn = self.decisions.lock().await;
        let image = self.log.image();
        if let Some(reply) = image.completed_reply(request_id) {
            return Ok(Committed {
                reply: reply.clone(),
                index: image.applied_index,
            });
        }
        let mut decision = self.controller.decide(&image, request);
        let batch_bytes = serde_json::to_vec(&decision.records).map_or(usize::MAX, |b| b.len());
        if batch_bytes > METADATA_BATCH_BYTES_MAX {
            // One entry of the metadata log must fit a node-to-node frame to be replicated.
            if let Some(refused) = Decision::refused(&decision.reply, batch_bytes) {
                decision = refused;
            }
        }
        self.track(request, &decision.reply);
        if decision.records.is_empty() {
            return Ok(Committed {
                reply: decision.reply,
                index: image.applied_index,
            });
        }
        let index = self
            .log
            .propose(MetadataBatch {
                request_id: Some(request_id),
                reply: Some(decision.reply.clone()),
                records: decision.records,
            })
            .await?;
        Ok(Committed {
            reply: decision.reply,
            index,
        })
    }

    /// Heartbeat bookkeeping for a broker request this leader answered.
    fn track(&self, request: &ControllerRequest, reply: &ControllerReply) {
        let mut tracker = self.tracker();
        match (request, reply) {
            (ControllerRequest::RegisterBroker { broker_id, .. }, _)
            | (
                ControllerRequest::BrokerHeartbeat { broker_id, .. },
                ControllerReply::Heartbeat { fenced: false },
            ) => tracker.heard(*broker_id, now()),
            (ControllerRequest::BrokerShutdown { broker_id, .. }, _) => tracker.forget(*broker_id),
            _ => {}
        }
    }

    /// Notes whether this node leads; on becoming leader, every broker gets a full session
    /// timeout before it can be fenced.
    fn observe_leadership(&self, leader: bool) {
        let was = self.leading.swap(leader, Ordering::AcqRel);
        if leader && !was {
            self.tracker().start_leading(now());
        }
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, HeartbeatTracker> {
        // The tracker holds instants only: a panic elsewhere cannot leave it inconsistent.
        self.heartbeats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// On the leader: fences every broker whose session expired, one batch per broker (each
    /// decided on the image the previous one left). Returns the brokers fenced.
    pub async fn fence_expired(&self) -> Vec<BrokerId> {
        if self.log.leadership().await != Leadership::Leader {
            self.observe_leadership(false);
            return Vec::new();
        }
        self.observe_leadership(true);
        let _turn = self.decisions.lock().await;
        let expired = self.tracker().expired(&self.log.image(), now());
        let mut fenced = Vec::new();
        for broker in expired {
            let records = fence(
                &self.log.image(),
                broker,
                self.controller.settings().unclean_leader_election_enable,
            );
            if records.is_empty() {
                continue;
            }
            let batch = MetadataBatch {
                request_id: None,
                reply: None,
                records,
            };
            match self.log.propose(batch).await {
                Ok(_) => {
                    tracing::warn!(
                        broker,
                        "broker fenced: no heartbeat for broker.session.timeout.ms"
                    );
                    self.tracker().forget(broker);
                    fenced.push(broker);
                }
                Err(error) => {
                    tracing::warn!(broker, %error, "fencing the broker failed; retried later");
                    break;
                }
            }
        }
        fenced
    }
}

impl<L: MetadataLog, F: Forwarder> ControllerService<L, F> {
    /// On the leader: moves leadership back to every preferred replica that is in sync and
    /// unfenced (`auto.leader.rebalance.enable`), in one batch. Returns the partitions moved.
    pub async fn rebalance_leaders(&self) -> usize {
        if self.log.leadership().await != Leadership::Leader {
            return 0;
        }
        let _turn = self.decisions.lock().await;
        let records = preferred_leader_moves(&self.log.image());
        if records.is_empty() {
            return 0;
        }
        let moved = records.len();
        let batch = MetadataBatch {
            request_id: None,
            reply: None,
            records,
        };
        match self.log.propose(batch).await {
            Ok(_) => {
                tracing::info!(
                    partitions = moved,
                    "leadership moved back to preferred replicas"
                );
                moved
            }
            Err(error) => {
                tracing::warn!(%error, "moving leadership to preferred replicas failed; retried at the next check");
                0
            }
        }
    }

    /// Serves a [`MetadataHandle`](crate::metadata::MetadataHandle)'s submissions until every
    /// handle is dropped: each is handled on its own task (at most
    /// `SUBMISSIONS_IN_FLIGHT_MAX` at once) and answered on its reply channel.
    pub async fn run_submissions(self: Arc<Self>, mut submissions: mpsc::Receiver<Submission>) {
        let slots = Arc::new(Semaphore::new(SUBMISSIONS_IN_FLIGHT_MAX));
        while let Some(submission) = submissions.recv().await {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let service = Arc::clone(&self);
            drop(tokio::spawn(async move {
                let answer = service
                    .handle(submission.request_id, submission.request)
                    .await;
                // The submitter may have given up (timed out); nobody to tell then.
                let _ = submission.reply.send(answer);
                drop(slot);
            }));
        }
    }

    /// Starts the controller's timers on one task: every `heartbeat_interval`, on the leader,
    /// fence brokers whose session expired; with `auto.leader.rebalance.enable`, every
    /// `leader.imbalance.check.interval.seconds`, move leadership back to preferred replicas.
    /// Ends once the service is dropped.
    pub fn spawn_fencing(self: &Arc<Self>) -> JoinHandle<()> {
        let settings = self.controller.settings();
        let fencing = every(
            Arc::downgrade(self),
            settings.heartbeat_interval,
            |service| {
                Box::pin(async move {
                    service.fence_expired().await;
                })
            },
        );
        let rebalance = settings.auto_leader_rebalance_enable.then(|| {
            every(
                Arc::downgrade(self),
                settings.leader_imbalance_check_interval,
                |service| {
                    Box::pin(async move {
                        service.rebalance_leaders().await;
                    })
                },
            )
        });
        tokio::spawn(async move {
            match rebalance {
                Some(rebalance) => {
                    tokio::join!(fencing, rebalance);
                }
                None => fencing.await,
            }
        })
    }
}

/// Runs `tick` on the service every `interval` until the service is dropped.
async fn every<S>(
    service: Weak<S>,
    interval: Duration,
    tick: impl Fn(Arc<S>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        tick(service).await;
    }
}

/// Now, on tokio's clock (so tests can pause it), as a std instant.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex as StdMutex;

    use super::*;
    use crate::controller::lifecycle::BrokerLifecycle;
    use crate::controller::start_in_memory;
    use crate::metadata::requests::NewTopic;
    use crate::metadata::MetadataImage;
    use kafka_protocol::error::ResponseError;

    fn create(name: &str) -> ControllerRequest {
        ControllerRequest::CreateTopics {
            topics: vec![NewTopic {
                name: name.into(),
                partitions: 2,
                replication_factor: -1,
                assignment: None,
                configs: BTreeMap::new(),
                topic_id: None,
            }],
            validate_only: false,
        }
    }

    fn register(broker_id: BrokerId) -> ControllerRequest {
        ControllerRequest::RegisterBroker {
            broker_id,
            incarnation: Uuid::new_v4(),
            endpoints: Vec::new(),
            rack: None,
        }
    }

    #[tokio::test]
    async fn a_request_commits_once_and_its_retry_is_answered_from_the_image() {
        let (handle, service) = start_in_memory(1, ControllerSettings::default());
        handle.submit(register(1)).await.unwrap();
        let id = Uuid::new_v4();
        let first = service.handle(id, create("t")).await.unwrap();
        let ControllerReply::Topics(outcomes) = &first.reply else {
            panic!("{first:?}")
        };
        assert!(outcomes[0].error.is_none());
        assert_eq!(handle.image().applied_index, first.index);
        let retry = service.handle(id, create("t")).await.unwrap();
        assert_eq!(retry, first, "the same reply, nothing applied again");
        assert_eq!(handle.image().applied_index, first.index);
        // A new request for the same topic is a new decision: the topic exists.
        let again = service.handle(Uuid::new_v4(), create("t")).await.unwrap();
        assert_ne!(again.reply, first.reply);
        // Nothing to commit: answered at the current index.
        let heartbeat = handle
            .submit(ControllerRequest::BrokerHeartbeat {
                broker_id: 7,
                incarnation: Uuid::new_v4(),
            })
            .await
            .unwrap();
        assert_eq!(heartbeat.reply, ControllerReply::Heartbeat { fenced: true });
        assert_eq!(heartbeat.index, handle.image().applied_index);
    }

    /// A decision too large for one metadata log entry commits nothing and says why; the
    /// partitions of an internal topic cannot be changed.
    #[tokio::test]
    async fn a_metadata_change_too_large_for_one_entry_is_refused() {
        let (handle, service) = start_in_memory(1, ControllerSettings::default());
        handle.submit(register(1)).await.unwrap();
        let topics = (0..20)
            .map(|i| NewTopic {
                name: format!("big-{i}"),
                partitions: 10_000,
                replication_factor: -1,
                assignment: None,
                configs: BTreeMap::new(),
                topic_id: None,
            })
            .collect();
        let before = handle.image().applied_index;
        let answer = service
            .handle(
                Uuid::new_v4(),
                ControllerRequest::CreateTopics {
                    topics,
                    validate_only: false,
                },
            )
            .await
            .unwrap();
        let ControllerReply::Topics(outcomes) = &answer.reply else {
            panic!("{answer:?}")
        };
        assert_eq!(outcomes.len(), 20);
        for outcome in outcomes {
            let error = outcome.error.as_ref().unwrap();
            assert_eq!(
                error.code,
                ResponseError::PolicyViolation.code(),
                "{error:?}"
            );
        }
        assert_eq!(handle.image().applied_index, before, "nothing committed");
        assert!(handle.image().topics.is_empty());

        let offsets = ControllerRequest::CreateTopics {
            topics: vec![NewTopic {
                name: "__consumer_offsets".into(),
                partitions: 3,
                replication_factor: -1,
                assignment: None,
                configs: BTreeMap::new(),
                topic_id: None,
            }],
            validate_only: false,
        };
        service.handle(Uuid::new_v4(), offsets).await.unwrap();
        let grow = ControllerRequest::CreatePartitions {
            topics: vec![crate::metadata::requests::NewPartitions {
                name: "__consumer_offsets".into(),
                count: 5,
                assignment: None,
            }],
            validate_only: false,
        };
        let answer = service.handle(Uuid::new_v4(), grow).await.unwrap();
        let ControllerReply::Topics(outcomes) = &answer.reply else {
            panic!("{answer:?}")
        };
        assert_eq!(
            outcomes[0].error.as_ref().map(|e| e.code),
            Some(ResponseError::InvalidRequest.code())
        );
    }

    /// A log led by another node (or by nobody).
    struct FollowerLog {
        leader: Option<BrokerId>,
    }

    impl MetadataLog for FollowerLog {
        async fn propose(&self, _batch: MetadataBatch) -> Result<u64, SubmitError> {
            Err(SubmitError::Unavailable("not the leader".into()))
        }

        async fn leadership(&self) -> Leadership {
            Leadership::Follower {
                leader: self.leader,
            }
        }

        fn image(&self) -> Arc<MetadataImage> {
            Arc::new(MetadataImage::default())
        }
    }

    /// Node 2 says node 3 leads; node 3 answers.
    #[derive(Default)]
    struct Peers {
        asked: StdMutex<Vec<BrokerId>>,
    }

    impl Forwarder for Arc<Peers> {
        async fn forward(
            &self,
            leader: BrokerId,
            _request_id: Uuid,
            _request: ControllerRequest,
        ) -> Result<Committed, SubmitError> {
            self.asked.lock().unwrap().push(leader);
            match leader {
                3 => Ok(Committed {
                    reply: ControllerReply::Done,
                    index: 9,
                }),
                _ => Err(SubmitError::NotController { leader: Some(3) }),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_forwards_to_the_leader_and_follows_not_controller() {
        let peers = Arc::new(Peers::default());
        let service = ControllerService::new(
            1,
            Arc::new(FollowerLog { leader: Some(2) }),
            Arc::clone(&peers),
            ControllerSettings::default(),
        );
        let answer = service.handle(Uuid::new_v4(), register(1)).await.unwrap();
        assert_eq!(answer.index, 9);
        assert_eq!(*peers.asked.lock().unwrap(), vec![2, 3]);
        // A forwarded request reaching a follower is not forwarded again.
        assert_eq!(
            service.handle_forwarded(Uuid::new_v4(), register(1)).await,
            Err(SubmitError::NotController { leader: Some(2) })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_leader_a_request_fails_after_the_submit_timeout() {
        let peers = Arc::new(Peers::default());
        let service = ControllerService::new(
            1,
            Arc::new(FollowerLog { leader: None }),
            Arc::clone(&peers),
            ControllerSettings::default(),
        );
        let started = tokio::time::Instant::now();
        let answer = service.handle(Uuid::new_v4(), register(1)).await;
        assert!(
            matches!(answer, Err(SubmitError::Unavailable(_))),
            "{answer:?}"
        );
        assert!(started.elapsed() <= SUBMIT_TIMEOUT);
        assert!(peers.asked.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn silent_brokers_are_fenced_heartbeating_ones_are_not() {
        let settings = ControllerSettings::default();
        let (handle, _service) = start_in_memory(1, settings.clone());
        let lifecycle = BrokerLifecycle::start(
            handle.clone(),
            1,
            Vec::new(),
            None,
            settings.heartbeat_interval,
        );
        lifecycle.wait_registered().await.unwrap();
        handle.submit(register(2)).await.unwrap();
        handle.submit(create("t")).await.unwrap();
        let led_by_2 = |image: &MetadataImage| {
            image
                .topic("t")
                .unwrap()
                .partitions
                .iter()
                .filter(|p| p.replicas == vec![2])
                .count()
        };
        assert_eq!(led_by_2(&handle.image()), 1);
        // Long past the session timeout (the paused clock jumps): 2 never heartbeated.
        tokio::time::sleep(settings.session_timeout * 4).await;
        let image = handle.image();
        assert!(image.is_unfenced(1), "1 heartbeats");
        assert!(!image.is_unfenced(2), "2 is silent");
        let offline = image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .filter(|p| p.leader == crate::metadata::NO_LEADER)
            .count();
        assert_eq!(offline, 1, "2's partition (RF 1) is offline");
        lifecycle.shutdown().await;
        assert!(!handle.image().is_unfenced(1), "controlled shutdown fences");
    }

    #[tokio::test(start_paused = true)]
    async fn the_periodic_check_moves_leadership_back_to_an_in_sync_preferred_replica() {
        for enabled in [true, false] {
            let settings = ControllerSettings {
                auto_leader_rebalance_enable: enabled,
                leader_imbalance_check_interval: Duration::from_secs(1),
                ..ControllerSettings::default()
            };
            let (handle, _service) = start_in_memory(1, settings);
            let first = register(1);
            let ControllerRequest::RegisterBroker { incarnation, .. } = first else {
                unreachable!()
            };
            handle.submit(first).await.unwrap();
            handle.submit(register(2)).await.unwrap();
            let topic = NewTopic {
                name: "t".into(),
                partitions: -1,
                replication_factor: -1,
                assignment: Some(vec![vec![1, 2]]),
                configs: BTreeMap::new(),
                topic_id: None,
            };
            handle
                .submit(ControllerRequest::CreateTopics {
                    topics: vec![topic],
                    validate_only: false,
                })
                .await
                .unwrap();
            handle
                .submit(ControllerRequest::BrokerShutdown {
                    broker_id: 1,
                    incarnation,
                })
                .await
                .unwrap();
            handle.submit(register(1)).await.unwrap();
            let image = handle.image();
            let state = image.partition("t", 0).unwrap().clone();
            assert_eq!((state.leader, state.isr.clone()), (2, vec![2]));
            let committed = handle
                .submit(ControllerRequest::AlterPartition {
                    broker_id: 2,
                    topic_id: image.topic("t").unwrap().id,
                    partition: 0,
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    isr: vec![2, 1],
                })
                .await
                .unwrap();
            assert!(matches!(
                committed.reply,
                ControllerReply::AlterPartition(Ok(_))
            ));
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let leader = handle.image().partition("t", 0).unwrap().leader;
            assert_eq!(leader, if enabled { 1 } else { 2 }, "enabled: {enabled}");
        }
    }
}
