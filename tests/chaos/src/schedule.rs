//! Which faults a run injects and when: a pure function of the seed, the duration and the
//! selected fault kinds, so `--seed N` replays the same schedule (the cluster's reaction to it
//! still depends on timing, which no seed controls).

use std::fmt;

use crate::rng::SplitMix64;

/// One kind of fault, named as `--faults` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL one node; restart it at the heal.
    KillOne,
    /// SIGKILL the leader of a chosen partition of the workload topic.
    KillLeader,
    /// SIGKILL the active controller.
    KillController,
    /// SIGKILL every node at once; restart all at the heal.
    KillAll,
    /// SIGSTOP one node for longer than the broker and consumer session timeouts, then SIGCONT.
    Pause,
    /// Cut one node off from everyone (its peers and the clients).
    PartitionOne,
    /// Split the nodes 1 | 2 (clients still reach all of them).
    PartitionSplit,
    /// Two nodes cannot reach each other; the third (the bridge) reaches both.
    PartitionBridge,
    /// One node drops every packet from one peer; the other direction still flows.
    OneWayLoss,
    /// `tc netem` delay, jitter and loss on one node's interface.
    Netem,
    /// Fill one node's data file system (a small tmpfs) until writes fail with ENOSPC.
    DiskFull,
    /// SIGKILL every node, drop every write not yet fsynced (runnel-faultfs), restart.
    PowerLoss,
}

impl FaultKind {
    /// Every kind, in `--faults` order.
    pub const ALL: [FaultKind; 12] = [
        FaultKind::KillOne,
        FaultKind::KillLeader,
        FaultKind::KillController,
        FaultKind::KillAll,
        FaultKind::Pause,
        FaultKind::PartitionOne,
        FaultKind::PartitionSplit,
        FaultKind::PartitionBridge,
        FaultKind::OneWayLoss,
        FaultKind::Netem,
        FaultKind::DiskFull,
        FaultKind::PowerLoss,
    ];

    /// The name `--faults` and the history use.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillOne => "kill-one",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillController => "kill-controller",
            FaultKind::KillAll => "kill-all",
            FaultKind::Pause => "pause",
            FaultKind::PartitionOne => "partition-one",
            FaultKind::PartitionSplit => "partition-split",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::OneWayLoss => "one-way-loss",
            FaultKind::Netem => "netem",
            FaultKind::DiskFull => "disk-full",
            FaultKind::PowerLoss => "power-loss",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Parses a comma-separated `--faults` list (duplicates dropped, order kept).
    pub fn parse_list(list: &str) -> Result<Vec<FaultKind>, String> {
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = FaultKind::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault {name:?}; known: {}", known.join(","))
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err("--faults names no fault".to_owned());
        }
        Ok(kinds)
    }

    /// How long the fault is held, in ms: a pause must outlast the broker session
    /// (`broker.session.timeout.ms`) and the consumers' `session.timeout.ms` so that fencing and
    /// rebalances really happen; the others long enough for clients to notice.
    fn hold_range_ms(self) -> (u64, u64) {
        match self {
            FaultKind::Pause => (PAUSE_HOLD_MIN_MS, PAUSE_HOLD_MIN_MS + 3_000),
            _ => (3_000, 8_000),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Shortest pause: above the consumers' session timeout (6 s, the broker's smallest allowed),
/// itself above the brokers' session timeout the harness sets.
pub const PAUSE_HOLD_MIN_MS: u64 = 7_000;

/// Quiet time between a heal and the next fault, in ms: the cluster recovers and the workload
/// makes progress, so each cycle starts from a working cluster.
const QUIET_RANGE_MS: (u64, u64) = (MIN_QUIET_MS, 6_000);
/// The shortest quiet time; the run keeps it after every heal even when a fault ran late.
pub const MIN_QUIET_MS: u64 = 3_000;

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultStep {
    /// When the fault starts, in ms after the workload starts.
    pub start_ms: u64,
    /// What it is.
    pub kind: FaultKind,
    /// How long it is held before the heal, in ms.
    pub hold_ms: u64,
    /// Random bits choosing the target when the fault starts (which node, which partition,
    /// which side of a split): targets such as "the leader" exist only at run time.
    pub pick: u64,
}

/// The faults of a run of `duration_ms`: quiet, fault, hold, heal, repeated; every fault is
/// healed before `duration_ms`. Kinds are drawn uniformly from `kinds`.
pub fn fault_schedule(seed: u64, duration_ms: u64, kinds: &[FaultKind]) -> Vec<FaultStep> {
    let mut rng = SplitMix64::new(seed, 0x5c4e_d01e);
    let mut steps = Vec::new();
    let mut now_ms = 0u64;
    if kinds.is_empty() {
        return steps;
    }
    loop {
        let quiet_ms = rng.range(QUIET_RANGE_MS.0, QUIET_RANGE_MS.1);
        let index = rng.range(0, kinds.len() as u64);
        let Some(&kind) = usize::try_from(index).ok().and_then(|i| kinds.get(i)) else {
            break;
        };
        let (low, high) = kind.hold_range_ms();
        let hold_ms = rng.range(low, high);
        let pick = rng.next_u64();
        let start_ms = now_ms + quiet_ms;
        if start_ms + hold_ms > duration_ms {
            break;
        }
        steps.push(FaultStep {
            start_ms,
            kind,
            hold_ms,
            pick,
        });
        now_ms = start_ms + hold_ms;
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_the_same_schedule() {
        let kinds = FaultKind::ALL;
        let a = fault_schedule(42, 600_000, &kinds);
        let b = fault_schedule(42, 600_000, &kinds);
        let c = fault_schedule(43, 600_000, &kinds);
        assert!(!a.is_empty());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn faults_are_selected_kinds_in_order_and_healed_before_the_end() {
        let kinds = [FaultKind::Pause, FaultKind::KillAll];
        for seed in 0..50 {
            let steps = fault_schedule(seed, 60_000, &kinds);
            let mut healed_ms = 0;
            for step in &steps {
                assert!(kinds.contains(&step.kind));
                assert!(step.start_ms >= healed_ms + QUIET_RANGE_MS.0);
                healed_ms = step.start_ms + step.hold_ms;
                assert!(healed_ms <= 60_000);
                if step.kind == FaultKind::Pause {
                    assert!(step.hold_ms >= PAUSE_HOLD_MIN_MS);
                }
            }
            assert!(steps.len() >= 3, "seed {seed}: {steps:?}");
        }
    }

    #[test]
    fn a_run_shorter_than_one_cycle_has_no_fault() {
        assert!(fault_schedule(1, 2_000, &FaultKind::ALL).is_empty());
        assert!(fault_schedule(1, 60_000, &[]).is_empty());
    }

    #[test]
    fn fault_names_round_trip_and_bad_lists_are_refused() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(
            FaultKind::parse_list("kill-one, pause,kill-one"),
            Ok(vec![FaultKind::KillOne, FaultKind::Pause])
        );
        assert!(FaultKind::parse_list("kill-one,bogus").is_err());
        assert!(FaultKind::parse_list("").is_err());
    }
}
