//! [`BrokerLifecycle`]: what every broker does with the controller over its life — register at
//! start (a new incarnation per process start, retried until the controller answers), then
//! heartbeat every `broker.heartbeat.interval.ms`, register again when the controller says the
//! registration is gone (`fenced: true`), and at shutdown tell the controller, so that
//! leadership moves away at once instead of after the session timeout.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::metadata::records::{BrokerId, Endpoint};
use crate::metadata::requests::{ControllerReply, ControllerRequest};
use crate::metadata::{MetadataHandle, SubmitError};

/// How long the controlled-shutdown request may take before the broker stops anyway (the
/// controller then fences it after the session timeout).
const SHUTDOWN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait between failed registrations: the first, doubled up to the heartbeat interval.
const REGISTER_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Registration state, as `wait_registered` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Registering,
    Registered,
    Stopped,
}

/// This broker's registration and heartbeats, on a task of its own.
#[derive(Debug)]
pub struct BrokerLifecycle {
    handle: MetadataHandle,
    broker_id: BrokerId,
    incarnation: Uuid,
    state: watch::Receiver<State>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl BrokerLifecycle {
    /// Starts registering broker `broker_id` with its advertised `endpoints` and `rack`, then
    /// heartbeating every `heartbeat_interval`. Must be called inside a tokio runtime.
    pub fn start(
        handle: MetadataHandle,
        broker_id: BrokerId,
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
        heartbeat_interval: Duration,
    ) -> BrokerLifecycle {
        let incarnation = Uuid::new_v4();
        let (state_tx, state) = watch::channel(State::Registering);
        let (stop, stopped) = watch::channel(false);
        let session = Session {
            handle: handle.clone(),
            broker_id,
            incarnation,
            endpoints,
            rack,
            heartbeat_interval,
            state: state_tx,
            stopped,
        };
        let task = tokio::spawn(session.run());
        BrokerLifecycle {
            handle,
            broker_id,
            incarnation,
            state,
            stop,
            task,
        }
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> Uuid {
        self.incarnation
    }

    /// Waits until the controller has answered the first registration (and this node's image
    /// holds it).
    ///
    /// Errors: `ShuttingDown` if the lifecycle stopped first.
    pub async fn wait_registered(&self) -> Result<(), SubmitError> {
        let mut state = self.state.clone();
        let reached = state
            .wait_for(|s| *s != State::Registering)
            .await
            .map_err(|_| SubmitError::ShuttingDown)?;
        match *reached {
            State::Registered => Ok(()),
            _ => Err(SubmitError::ShuttingDown),
        }
    }

    /// Stops heartbeating and asks the controller to fence this broker now (controlled
    /// shutdown), waiting at most a few seconds for it. Best effort: on failure the controller
    /// fences the broker after the session timeout.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let request = ControllerRequest::BrokerShutdown {
            broker_id: self.broker_id,
            incarnation: self.incarnation,
        };
        match tokio::time::timeout(SHUTDOWN_REQUEST_TIMEOUT, self.handle.submit(request)).await {
            Ok(Ok(_)) => tracing::info!(broker = self.broker_id, "controlled shutdown: fenced"),
            Ok(Err(error)) => {
                tracing::warn!(broker = self.broker_id, %error, "controlled shutdown request failed")
            }
            Err(_) => tracing::warn!(
                broker = self.broker_id,
                "controlled shutdown request timed out"
            ),
        }
    }
}

/// The task's side.
struct Session {
    handle: MetadataHandle,
    broker_id: BrokerId,
    incarnation: Uuid,
    endpoints: Vec<Endpoint>,
    rack: Option<String>,
    heartbeat_interval: Duration,
    state: watch::Sender<State>,
    stopped: watch::Receiver<bool>,
}

impl Session {
    async fn run(mut self) {
        'registering: loop {
            if !self.register().await {
                break;
            }
            let _ = self.state.send(State::Registered);
            loop {
                if self.pause(self.heartbeat_interval).await {
                    break 'registering;
                }
                let request = ControllerRequest::BrokerHeartbeat {
                    broker_id: self.broker_id,
                    incarnation: self.incarnation,
                };
                let answer = tokio::select! {
                    answer = tokio::time::timeout(
                        self.heartbeat_interval * 2,
                        self.handle.submit(request),
                    ) => answer,
                    _ = self.stopped.wait_for(|stop| *stop) => break 'registering,
                };
                match answer {
                    Ok(Ok(committed)) => {
                        if committed.reply == (ControllerReply::Heartbeat { fenced: true }) {
                            tracing::warn!(
                                broker = self.broker_id,
                                "the controller does not know this broker's registration; registering again"
                            );
                            continue 'registering;
                        }
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(broker = self.broker_id, %error, "heartbeat failed")
                    }
                    Err(_) => tracing::debug!(broker = self.broker_id, "heartbeat timed out"),
                }
            }
        }
        let _ = self.state.send(State::Stopped);
    }

    /// Registers until the controller answers; false if stopped first.
    async fn register(&mut self) -> bool {
        let mut backoff = REGISTER_BACKOFF_MIN;
        loop {
            if *self.stopped.borrow() {
                return false;
            }
            let request = ControllerRequest::RegisterBroker {
                broker_id: self.broker_id,
                incarnation: self.incarnation,
                endpoints: self.endpoints.clone(),
                rack: self.rack.clone(),
            };
            let submitted = tokio::select! {
                answer = self.handle.submit(request) => answer,
                _ = self.stopped.wait_for(|stop| *stop) => return false,
            };
            match submitted {
                Ok(_) => {
                    tracing::info!(broker = self.broker_id, incarnation = %self.incarnation,
                        "registered with the controller");
                    return true;
                }
                Err(error) => {
                    tracing::warn!(broker = self.broker_id, %error,
                        "registration failed; retrying");
                }
            }
            if self.pause(backoff).await {
                return false;
            }
            backoff = (backoff * 2).min(self.heartbeat_interval.max(REGISTER_BACKOFF_MIN));
        }
    }

    /// Sleeps `duration`; true if told to stop meanwhile.
    async fn pause(&mut self, duration: Duration) -> bool {
        // A dropped `BrokerLifecycle` (no `shutdown`) stops the task too: `wait_for` fails.
        let stop = tokio::select! {
            () = tokio::time::sleep(duration) => false,
            _ = self.stopped.wait_for(|stop| *stop) => true,
        };
        stop || *self.stopped.borrow()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::{start_in_memory, ControllerSettings};
    use crate::metadata::requests::NewTopic;
    use crate::metadata::NO_LEADER;

    const INTERVAL: Duration = Duration::from_secs(2);

    fn endpoint() -> Endpoint {
        Endpoint {
            listener: "PLAINTEXT".into(),
            host: "localhost".into(),
            port: 9092,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn registers_then_controlled_shutdown_takes_leadership_away() {
        let (handle, _service) = start_in_memory(1, ControllerSettings::default());
        let lifecycle = BrokerLifecycle::start(
            handle.clone(),
            1,
            vec![endpoint()],
            Some("r1".into()),
            INTERVAL,
        );
        lifecycle.wait_registered().await.unwrap();
        let image = handle.image();
        let registration = image.brokers.get(&1).unwrap();
        assert_eq!(registration.incarnation, lifecycle.incarnation());
        assert_eq!(registration.endpoints, vec![endpoint()]);
        assert_eq!(registration.rack.as_deref(), Some("r1"));
        assert!(!registration.fenced);
        handle
            .submit(ControllerRequest::CreateTopics {
                topics: vec![NewTopic {
                    name: "t".into(),
                    partitions: 3,
                    replication_factor: 1,
                    assignment: None,
                    configs: BTreeMap::new(),
                    topic_id: None,
                }],
                validate_only: false,
            })
            .await
            .unwrap();
        assert!(handle
            .image()
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.leader == 1));
        lifecycle.shutdown().await;
        let image = handle.image();
        assert!(!image.is_unfenced(1));
        assert!(image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.leader == NO_LEADER));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fenced_broker_is_unfenced_by_its_heartbeat_and_a_lost_registration_is_renewed() {
        let (handle, _service) = start_in_memory(1, ControllerSettings::default());
        let lifecycle = BrokerLifecycle::start(handle.clone(), 1, Vec::new(), None, INTERVAL);
        lifecycle.wait_registered().await.unwrap();
        // Fenced behind its back (as the session timeout would): the next heartbeat unfences.
        handle
            .submit(ControllerRequest::BrokerShutdown {
                broker_id: 1,
                incarnation: lifecycle.incarnation(),
            })
            .await
            .unwrap();
        assert!(!handle.image().is_unfenced(1));
        // Half-way between heartbeats, so that none is in flight during the next step.
        tokio::time::sleep(INTERVAL * 2 + INTERVAL / 2).await;
        assert!(handle.image().is_unfenced(1));
        // Another incarnation registered under its id: the heartbeat is answered "fenced",
        // and the broker registers again with its own incarnation.
        handle
            .submit(ControllerRequest::RegisterBroker {
                broker_id: 1,
                incarnation: Uuid::new_v4(),
                endpoints: Vec::new(),
                rack: None,
            })
            .await
            .unwrap();
        assert_ne!(
            handle.image().brokers[&1].incarnation,
            lifecycle.incarnation()
        );
        tokio::time::sleep(INTERVAL * 2).await;
        assert_eq!(
            handle.image().brokers[&1].incarnation,
            lifecycle.incarnation()
        );
        lifecycle.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn wait_registered_fails_if_stopped_first() {
        // A handle nobody serves: registration never succeeds.
        let (submit, _unserved) = tokio::sync::mpsc::channel(1);
        let (_image_tx, image) = watch::channel(std::sync::Arc::default());
        let (_quorum_tx, quorum) = watch::channel(crate::metadata::QuorumState::default());
        let handle = MetadataHandle::new(image, submit, quorum);
        let lifecycle = BrokerLifecycle::start(handle, 1, Vec::new(), None, INTERVAL);
        let _ = lifecycle.stop.send(true);
        assert_eq!(
            lifecycle.wait_registered().await,
            Err(SubmitError::ShuttingDown)
        );
    }
}
