//! The simulated cluster: nodes, the controller, a lossy network and producers, advanced one
//! step at a time by a seeded schedule. Leader and follower logic is the real `state.rs`; the
//! world only moves messages and bytes around it, the way the replica manager and the fetcher
//! do.

use crate::metadata::records::{BrokerId, NO_LEADER};
use crate::replication::state::{
    follower_high_watermark, follower_last_fetched_epoch, follower_truncation_offset, IsrChange,
    LeaderState, Membership, ReplicaFetchCheck,
};

use super::check::{Checker, Violation};
use super::controller::{AlterOutcome, ControllerModel, TOPIC};
use super::replica::{Batch, Replica, Role};
use super::rng::Rng;

/// Simulated milliseconds per step.
const STEP_MS: i64 = 10;
/// `replica.lag.time.max.ms`.
const LAG_MAX_MS: i64 = 300;
/// A message is delivered at most this many steps after it is sent.
const DELAY_STEPS_MAX: u64 = 6;
/// A fetch unanswered this long is sent again (the previous one or its answer was lost).
const FETCH_RETRY_STEPS: u64 = 2 * DELAY_STEPS_MAX + 2;
/// An AlterPartition is sent again only once the previous attempt can no longer arrive, so
/// the controller never sees a copy the leader has given up on.
const ALTER_RETRY_STEPS: u64 = 2 * DELAY_STEPS_MAX + 2;
/// Batches a fetch answer carries at most.
const FETCH_BATCHES_MAX: usize = 8;

/// A deliberately broken variant, to prove the checker catches real bugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    /// The protocol of docs/replication.md.
    Correct,
    /// acks=all answered at the leader's write, before replication and fsync.
    AckOnLeaderWrite,
    /// A follower fetches on without fsyncing what it appended.
    FetchBeforeFsync,
    /// A restarted node truncates its log to its HW checkpoint (pre-KIP-101 Kafka).
    TruncateToHighWatermarkOnRestart,
    /// Registering a new incarnation does not fence the old one: a restarted leader keeps its
    /// leader epoch although it lost its unfsynced tail.
    KeepLeaderEpochOnRestart,
    /// A truncation at or past the log end leaves the epoch cache alone, so the entry of an
    /// epoch this node led without writing stays at its log end.
    TruncateAtLogEndKeepsEpochs,
}

/// How one run is shaped.
#[derive(Debug, Clone, Copy)]
pub(super) struct SimConfig {
    pub(super) nodes: usize,
    pub(super) min_insync_replicas: usize,
    pub(super) fault_steps: u64,
    pub(super) heal_steps: u64,
    pub(super) variant: Variant,
}

#[derive(Debug, Clone)]
enum FetchOutcome {
    Records {
        batches: Vec<Batch>,
        high_watermark: i64,
    },
    Diverging {
        epoch: i32,
        end_offset: i64,
    },
    Error,
}

#[derive(Debug, Clone)]
enum Message {
    Fetch {
        from: BrokerId,
        to: BrokerId,
        current_leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
    },
    FetchReply {
        from: BrokerId,
        to: BrokerId,
        leader_epoch: i32,
        fetch_offset: i64,
        outcome: FetchOutcome,
    },
    AlterPartition {
        from: BrokerId,
        change: IsrChange,
    },
    AlterReply {
        to: BrokerId,
        change: IsrChange,
        outcome: AlterOutcome,
    },
}

/// What a run saw, to show the simulation is not vacuous.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stats {
    pub(super) acked: u64,
    pub(super) crashes: u64,
    pub(super) leader_changes: u64,
    pub(super) divergence_truncations: u64,
    pub(super) isr_changes: u64,
}

pub(super) struct World {
    rng: Rng,
    config: SimConfig,
    step: u64,
    faults: bool,
    nodes: Vec<Replica>,
    controller: ControllerModel,
    network: Vec<(u64, Message)>,
    checker: Checker,
    next_payload: u64,
    incarnations: u128,
    pub(super) stats: Stats,
    /// Print every event (`RUNNEL_SIM_TRACE=1`, for one seed).
    pub(super) trace: bool,
}

impl World {
    pub(super) fn new(seed: u64, config: SimConfig) -> Self {
        let ids: Vec<BrokerId> = (1..=config.nodes as BrokerId).collect();
        let incarnation = |id: BrokerId| id as u128;
        let controller = ControllerModel::new(
            &ids,
            incarnation,
            config.variant != Variant::KeepLeaderEpochOnRestart,
        );
        World {
            rng: Rng::new(seed),
            config,
            step: 0,
            faults: true,
            nodes: ids
                .iter()
                .map(|id| Replica::new(*id, incarnation(*id)))
                .collect(),
            controller,
            network: Vec::new(),
            checker: Checker::default(),
            next_payload: 1,
            incarnations: 1_000,
            stats: Stats::default(),
            trace: false,
        }
    }

    /// Runs the faulty phase, then heals (every node up, no losses) and lets it settle.
    pub(super) fn run(&mut self) -> Result<(), Violation> {
        for _ in 0..self.config.fault_steps {
            self.step()?;
        }
        self.faults = false;
        for index in 0..self.nodes.len() {
            if !self.nodes[index].up {
                self.restart(index);
            }
        }
        for _ in 0..self.config.heal_steps {
            self.step()?;
        }
        self.stats.acked = self.checker.acked_count() as u64;
        let Some(leader) = self.current_leader() else {
            return Err(Violation {
                invariant: "liveness (a healed cluster settles)",
                detail: format!("no leader: {:?}", self.controller.partition()),
            });
        };
        self.checker.on_leader(&self.nodes[leader])?;
        self.check_settled(leader)
    }

    /// After healing, with producers stopped: every replica is in the ISR and holds the
    /// leader's log, and the HW covers it all.
    fn check_settled(&self, leader: usize) -> Result<(), Violation> {
        let leader = &self.nodes[leader];
        let isr = self
            .controller
            .partition()
            .map(|p| p.isr.len())
            .unwrap_or(0);
        let settled = isr == self.nodes.len()
            && leader.high_watermark == leader.log_end_offset()
            && self.nodes.iter().all(|n| n.log == leader.log);
        if settled {
            return Ok(());
        }
        let nodes: Vec<String> = self.nodes.iter().map(Replica::describe).collect();
        Err(Violation {
            invariant: "liveness (a healed cluster settles)",
            detail: format!("{:?}\n{}", self.controller.partition(), nodes.join("\n")),
        })
    }

    fn trace(&self, event: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("step {}: {}", self.step, event());
        }
    }

    fn now_ms(&self) -> i64 {
        self.step as i64 * STEP_MS
    }

    fn index_of(&self, id: BrokerId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The node the controller names leader, if it is up and acts as leader.
    fn current_leader(&self) -> Option<usize> {
        let leader = self.controller.partition()?.leader;
        let index = self.index_of(leader)?;
        matches!(self.nodes[index].role, Role::Leader(_)).then_some(index)
    }

    fn step(&mut self) -> Result<(), Violation> {
        self.step += 1;
        if self.faults {
            self.inject_faults();
        }
        self.controller_heartbeats();
        self.propagate_metadata()?;
        self.deliver()?;
        for index in 0..self.nodes.len() {
            if self.nodes[index].up {
                self.act(index);
            }
        }
        self.produce();
        self.answer_produces()?;
        self.checker.after_step(&self.nodes)
    }

    fn inject_faults(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up)
            .collect();
        let down: Vec<usize> = (0..self.nodes.len())
            .filter(|i| !self.nodes[*i].up)
            .collect();
        if self.rng.chance(15) {
            if let Some(index) = self.rng.pick(&up) {
                self.nodes[index].crash();
                self.stats.crashes += 1;
                self.trace(|| format!("crash {}", self.nodes[index].describe()));
            }
        }
        // Rarely, every node at once (power loss).
        if self.rng.chance(2) {
            for index in up.iter().copied() {
                self.nodes[index].crash();
                self.stats.crashes += 1;
                self.trace(|| format!("crash (all) {}", self.nodes[index].describe()));
            }
        }
        if self.rng.chance(60) {
            if let Some(index) = self.rng.pick(&down) {
                self.restart(index);
            }
        }
        // Missed heartbeats of a live node (a slow or partitioned broker).
        if self.rng.chance(8) {
            if let Some(index) = self.rng.pick(&up) {
                let id = self.nodes[index].id;
                self.controller.fence(id);
                self.trace(|| format!("fence live {id}: {:?}", self.controller.partition()));
            }
        }
    }

    fn restart(&mut self, index: usize) {
        self.incarnations += 1;
        let incarnation = self.incarnations;
        let node = &mut self.nodes[index];
        if self.config.variant == Variant::TruncateToHighWatermarkOnRestart {
            let high_watermark = node.high_watermark;
            node.truncate_to(high_watermark);
        }
        node.restart(incarnation);
        let id = node.id;
        self.controller.register(id, incarnation);
        self.trace(|| format!("restart {id}: {:?}", self.controller.partition()));
    }

    /// Session timeouts fence dead nodes; heartbeats of live, registered, fenced ones unfence
    /// them.
    fn controller_heartbeats(&mut self) {
        for index in 0..self.nodes.len() {
            let node = &self.nodes[index];
            let registration = self.controller.image.brokers.get(&node.id);
            let fenced = registration.is_none_or(|b| b.fenced);
            let current = registration.is_some_and(|b| b.incarnation.as_u128() == node.incarnation);
            let id = node.id;
            if !node.up && !fenced && self.rng.chance(100) {
                self.controller.fence(id);
                self.trace(|| format!("fence dead {id}: {:?}", self.controller.partition()));
            } else if node.up && fenced && current && self.rng.chance(100) {
                self.controller.unfence(id);
                self.trace(|| format!("unfence {id}: {:?}", self.controller.partition()));
            }
        }
    }

    /// Each live node applies some of the committed metadata batches it lacks.
    fn propagate_metadata(&mut self) -> Result<(), Violation> {
        for index in 0..self.nodes.len() {
            if !self.nodes[index].up {
                continue;
            }
            let applied = self.nodes[index].image.applied_index;
            let available = self.controller.log.len() as u64 - applied;
            let count = self.rng.below(available + 1);
            if count == 0 {
                continue;
            }
            for position in applied..applied + count {
                let batch = &self.controller.log[position as usize];
                self.nodes[index].image.apply(position + 1, batch);
            }
            self.refresh_role(index)?;
        }
        Ok(())
    }

    /// What the node's image now says it is, as the replica manager would act on it.
    fn refresh_role(&mut self, index: usize) -> Result<(), Violation> {
        let now_ms = self.now_ms();
        let min_insync = self.config.min_insync_replicas;
        let node = &mut self.nodes[index];
        // A new process acts only once the image holds its own registration: before that, the
        // image speaks of its previous incarnation.
        let registered = node
            .image
            .brokers
            .get(&node.id)
            .is_some_and(|b| b.incarnation.as_u128() == node.incarnation);
        let state = node.image.partition(TOPIC, 0).cloned();
        let Some(state) = state.filter(|_| registered) else {
            node.role = Role::Idle;
            return Ok(());
        };
        let membership = Membership {
            partition_epoch: state.partition_epoch,
            replicas: state.replicas.clone(),
            isr: state.isr.clone(),
        };
        if state.leader == node.id {
            if let Role::Leader(leader) = &mut node.role {
                if leader.leader_epoch() == state.leader_epoch {
                    leader.apply_partition_change(membership, now_ms);
                    return Ok(());
                }
            }
            // Become leader: the epoch starts at our log end; the HW is the checkpoint's.
            node.epochs
                .assign(state.leader_epoch, node.log_end_offset());
            node.set_high_watermark(node.high_watermark.min(node.log_end_offset()));
            node.role = Role::Leader(LeaderState::new(
                node.id,
                state.leader_epoch,
                membership,
                node.high_watermark,
                min_insync,
                now_ms,
            ));
            node.pending_acks.clear();
            node.alter_sent = None;
            self.stats.leader_changes += 1;
            self.trace(|| {
                format!(
                    "leads epoch {}: {}",
                    state.leader_epoch,
                    self.nodes[index].describe()
                )
            });
            return self.checker.on_leader(&self.nodes[index]);
        }
        let follows = state.leader != NO_LEADER && state.replicas.contains(&node.id);
        let same = matches!(node.role, Role::Follower { leader, leader_epoch }
            if leader == state.leader && leader_epoch == state.leader_epoch);
        // Not (or no longer) leading: waiting produces get NOT_LEADER_OR_FOLLOWER.
        node.pending_acks.clear();
        node.alter_sent = None;
        if follows && !same {
            node.role = Role::Follower {
                leader: state.leader,
                leader_epoch: state.leader_epoch,
            };
            node.fetch_sent = None;
            let id = node.id;
            self.trace(|| format!("{id} follows {} epoch {}", state.leader, state.leader_epoch));
        } else if !follows {
            node.role = Role::Idle;
        }
        Ok(())
    }

    fn send(&mut self, message: Message) {
        let duplicable = matches!(message, Message::Fetch { .. } | Message::FetchReply { .. });
        if self.faults && self.rng.chance(50) {
            return;
        }
        let at = self.step + 1 + self.rng.below(DELAY_STEPS_MAX);
        if self.faults && duplicable && self.rng.chance(30) {
            let again = self.step + 1 + self.rng.below(DELAY_STEPS_MAX);
            self.network.push((again, message.clone()));
        }
        self.network.push((at, message));
    }

    /// Delivers every due message, in a random order.
    fn deliver(&mut self) -> Result<(), Violation> {
        let step = self.step;
        let mut due = Vec::new();
        let mut index = 0;
        while index < self.network.len() {
            if self.network[index].0 <= step {
                due.push(self.network.swap_remove(index).1);
            } else {
                index += 1;
            }
        }
        while !due.is_empty() {
            let pick = self.rng.below(due.len() as u64) as usize;
            let message = due.swap_remove(pick);
            self.handle(message)?;
        }
        Ok(())
    }

    fn handle(&mut self, message: Message) -> Result<(), Violation> {
        match message {
            Message::Fetch {
                from,
                to,
                current_leader_epoch,
                fetch_offset,
                last_fetched_epoch,
            } => {
                let Some(index) = self.index_of(to).filter(|i| self.nodes[*i].up) else {
                    return Ok(());
                };
                let now_ms = self.now_ms();
                let node = &mut self.nodes[index];
                let log_end_offset = node.log_end_offset();
                let durable = node.durable;
                let check = match &node.role {
                    Role::Leader(leader) => leader.check_replica_fetch(
                        current_leader_epoch,
                        fetch_offset,
                        last_fetched_epoch,
                        &node.epochs,
                        log_end_offset,
                    ),
                    _ => ReplicaFetchCheck::FencedLeaderEpoch,
                };
                let outcome = match (check, &mut node.role) {
                    (ReplicaFetchCheck::Serve, Role::Leader(leader))
                        if fetch_offset <= log_end_offset =>
                    {
                        leader.record_follower_fetch(from, fetch_offset, log_end_offset, now_ms);
                        leader.advance_high_watermark(durable);
                        let high_watermark = leader.high_watermark();
                        node.set_high_watermark(high_watermark);
                        let start = fetch_offset as usize;
                        let end = node.log.len().min(start + FETCH_BATCHES_MAX);
                        FetchOutcome::Records {
                            batches: node.log[start..end].to_vec(),
                            high_watermark,
                        }
                    }
                    (ReplicaFetchCheck::Diverging { epoch, end_offset }, _) => {
                        FetchOutcome::Diverging { epoch, end_offset }
                    }
                    (ReplicaFetchCheck::UnknownFetchedEpoch, _) => {
                        return Err(Violation {
                            invariant: "leader cannot place a follower's epoch",
                            detail: format!(
                                "leader {to} asked by {from} for epoch {last_fetched_epoch} \
                                 at {fetch_offset}; cache {:?}",
                                node.epochs.entries()
                            ),
                        });
                    }
                    _ => FetchOutcome::Error,
                };
                self.send(Message::FetchReply {
                    from: to,
                    to: from,
                    leader_epoch: current_leader_epoch,
                    fetch_offset,
                    outcome,
                });
                Ok(())
            }
            Message::FetchReply {
                from,
                to,
                leader_epoch,
                fetch_offset,
                outcome,
            } => self.on_fetch_reply(to, from, leader_epoch, fetch_offset, outcome),
            Message::AlterPartition { from, change } => {
                let outcome = self.controller.alter_partition(from, &change);
                self.trace(|| format!("alter from {from} {change:?}: {outcome:?}"));
                if outcome == AlterOutcome::Committed {
                    self.stats.isr_changes += 1;
                }
                self.send(Message::AlterReply {
                    to: from,
                    change,
                    outcome,
                });
                Ok(())
            }
            Message::AlterReply {
                to,
                change,
                outcome,
            } => {
                let Some(index) = self.index_of(to).filter(|i| self.nodes[*i].up) else {
                    return Ok(());
                };
                let node = &mut self.nodes[index];
                let ours = node
                    .alter_sent
                    .as_ref()
                    .is_some_and(|(sent, _)| *sent == change);
                if !ours {
                    return Ok(());
                }
                node.alter_sent = None;
                if outcome == AlterOutcome::Refused {
                    if let Some(leader) = node.leader_state() {
                        leader.isr_change_failed();
                    }
                }
                Ok(())
            }
        }
    }

    fn on_fetch_reply(
        &mut self,
        to: BrokerId,
        from: BrokerId,
        leader_epoch: i32,
        fetch_offset: i64,
        outcome: FetchOutcome,
    ) -> Result<(), Violation> {
        let Some(index) = self.index_of(to).filter(|i| self.nodes[*i].up) else {
            return Ok(());
        };
        let node = &mut self.nodes[index];
        let current = matches!(node.role, Role::Follower { leader, leader_epoch: epoch }
            if leader == from && epoch == leader_epoch);
        if !current || fetch_offset != node.log_end_offset() {
            return Ok(());
        }
        node.fetch_sent = None;
        match outcome {
            FetchOutcome::Records {
                batches,
                high_watermark,
            } => {
                for batch in batches {
                    if batch.offset == node.log_end_offset() {
                        node.append(batch);
                    }
                }
                let durable = node.durable;
                node.set_high_watermark(follower_high_watermark(high_watermark, durable));
                self.trace(|| {
                    format!(
                        "fetched from {from} (HW {high_watermark}): {}",
                        self.nodes[index].describe()
                    )
                });
            }
            FetchOutcome::Diverging { epoch, end_offset } => {
                let cut = follower_truncation_offset(
                    epoch,
                    end_offset,
                    &node.epochs,
                    node.log_end_offset(),
                );
                self.trace(|| {
                    format!(
                        "diverging ({epoch}, {end_offset}) from {from}: cut to {cut}: {}",
                        self.nodes[index].describe()
                    )
                });
                let node = &mut self.nodes[index];
                self.checker.on_truncate(node, cut)?;
                if cut < node.log_end_offset() {
                    self.stats.divergence_truncations += 1;
                }
                let keeps_epochs = self.config.variant == Variant::TruncateAtLogEndKeepsEpochs;
                if !(keeps_epochs && cut >= node.log_end_offset()) {
                    node.truncate_to(cut);
                }
            }
            FetchOutcome::Error => {}
        }
        Ok(())
    }

    /// A live node's own moves: a follower fetches (after fsyncing what it appended); a
    /// leader fsyncs now and then, moves its HW, and proposes ISR changes.
    fn act(&mut self, index: usize) {
        match self.nodes[index].role {
            Role::Idle => {}
            Role::Follower {
                leader,
                leader_epoch,
            } => self.act_as_follower(index, leader, leader_epoch),
            Role::Leader(_) => self.act_as_leader(index),
        }
    }

    fn act_as_follower(&mut self, index: usize, leader: BrokerId, leader_epoch: i32) {
        let step = self.step;
        let fsync_now = self.rng.chance(400);
        // The fsync and the next fetch may take a few steps: a crash can come between the
        // append and its fsync.
        let ready = self.rng.chance(600);
        let node = &mut self.nodes[index];
        let waiting = node
            .fetch_sent
            .is_some_and(|sent| step < sent + FETCH_RETRY_STEPS);
        if waiting || !ready {
            return;
        }
        // replica.fsync.before.fetch: the fetch offset is always durable here.
        if self.config.variant != Variant::FetchBeforeFsync || fsync_now {
            node.fsync();
        }
        node.fetch_sent = Some(step);
        let fetch = Message::Fetch {
            from: node.id,
            to: leader,
            current_leader_epoch: leader_epoch,
            fetch_offset: node.log_end_offset(),
            last_fetched_epoch: follower_last_fetched_epoch(&node.epochs),
        };
        self.send(fetch);
    }

    fn act_as_leader(&mut self, index: usize) {
        let step = self.step;
        let now_ms = self.now_ms();
        let fsync_now = self.rng.chance(400);
        let node = &mut self.nodes[index];
        if fsync_now {
            node.fsync();
        }
        let durable = node.durable;
        let Role::Leader(leader) = &mut node.role else {
            return;
        };
        let moved = leader.advance_high_watermark(durable);
        let epoch_start = node
            .epochs
            .epoch_start_offset(leader.leader_epoch())
            .unwrap_or(i64::MAX);
        if !leader.has_pending_isr_change() {
            node.alter_sent = None;
        }
        let proposal = match &node.alter_sent {
            Some((change, sent)) if step >= sent + ALTER_RETRY_STEPS => Some(change.clone()),
            Some(_) => None,
            None => leader.propose_isr_change(now_ms, LAG_MAX_MS, epoch_start),
        };
        if let Some(high_watermark) = moved {
            node.set_high_watermark(high_watermark);
        }
        if let Some(change) = proposal {
            node.alter_sent = Some((change.clone(), step));
            let from = node.id;
            self.send(Message::AlterPartition { from, change });
        }
    }

    /// A producer sends one acks=all record, usually to the leader the controller names,
    /// sometimes to any node (stale metadata).
    fn produce(&mut self) {
        // Producers stop half-way through healing, so that the cluster can settle.
        let quiet_from = self.config.fault_steps + self.config.heal_steps / 2;
        if !self.rng.chance(600) || self.step > quiet_from {
            return;
        }
        let named = self
            .controller
            .partition()
            .and_then(|p| self.index_of(p.leader));
        let target = if self.rng.chance(100) {
            self.rng.below(self.nodes.len() as u64) as usize
        } else {
            match named {
                Some(index) => index,
                None => return,
            }
        };
        let payload = self.next_payload;
        let node = &mut self.nodes[target];
        if !node.up {
            return;
        }
        let Role::Leader(leader) = &node.role else {
            return;
        };
        if !leader.has_min_isr() {
            return;
        }
        let batch = Batch {
            offset: node.log_end_offset(),
            epoch: leader.leader_epoch(),
            payload,
        };
        self.next_payload += 1;
        node.append(batch);
        node.pending_acks.push((batch.offset, payload));
    }

    /// Answers the produces whose records are below their leader's HW.
    fn answer_produces(&mut self) -> Result<(), Violation> {
        let ack_on_write = self.config.variant == Variant::AckOnLeaderWrite;
        let mut answered = Vec::new();
        for node in &mut self.nodes {
            if !node.up || !matches!(node.role, Role::Leader(_)) {
                continue;
            }
            let high_watermark = if ack_on_write {
                node.log_end_offset()
            } else {
                node.high_watermark
            };
            node.pending_acks.retain(|(offset, payload)| {
                let done = *offset < high_watermark;
                if done {
                    answered.push((*offset, *payload));
                }
                !done
            });
        }
        for (offset, payload) in answered {
            self.checker.on_ack(offset, payload)?;
        }
        Ok(())
    }
}
