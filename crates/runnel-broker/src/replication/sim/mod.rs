//! The deterministic replication simulator (tests only; docs/replication.md, "Simulator"):
//! N nodes, each with an in-memory log, a durable prefix and the real epoch cache; the real
//! metadata image and election functions as the controller; a network that drops, delays,
//! reorders and duplicates; crashes that lose unfsynced bytes; acks=all producers. Leader and
//! follower decisions are the real `replication::state` functions. The invariants of
//! docs/replication.md are checked after every step; a failing seed prints its reproduction.
//!
//! `RUNNEL_SIM_SEED=<seed>` reruns one seed; `RUNNEL_SIM_SEEDS=<count>` sets how many seeds
//! `simulate_many_seeds` runs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod check;
mod controller;
mod replica;
mod rng;
mod world;

use rng::Rng;
use world::{SimConfig, Stats, Variant, World};

/// Seeds `simulate_many_seeds` runs by default.
const SEEDS_DEFAULT: u64 = 2_000;

/// The shape of the run for `seed`: 2 to 5 nodes (mostly 3), a min ISR from 1 to all.
fn config_for(seed: u64, variant: Variant) -> SimConfig {
    let mut rng = Rng::new(seed ^ 0x5EED);
    let nodes = match rng.below(10) {
        0 => 2,
        1 => 4,
        2 => 5,
        _ => 3,
    };
    SimConfig {
        nodes,
        min_insync_replicas: 1 + rng.below(nodes as u64) as usize,
        fault_steps: 400,
        heal_steps: 200,
        variant,
    }
}

fn run_seed(seed: u64, variant: Variant) -> Result<Stats, String> {
    let config = config_for(seed, variant);
    let mut world = World::new(seed, config);
    world.trace = std::env::var("RUNNEL_SIM_TRACE").is_ok();
    match world.run() {
        Ok(()) => Ok(world.stats),
        Err(violation) => Err(format!(
            "seed {seed} ({} nodes, min ISR {}): invariant {violation}",
            config.nodes, config.min_insync_replicas
        )),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn simulate_many_seeds() {
    let seeds: Vec<u64> = match env_u64("RUNNEL_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("RUNNEL_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT)).collect(),
    };
    let mut total = Stats::default();
    for seed in &seeds {
        match run_seed(*seed, Variant::Correct) {
            Ok(stats) => {
                total.acked += stats.acked;
                total.crashes += stats.crashes;
                total.leader_changes += stats.leader_changes;
                total.divergence_truncations += stats.divergence_truncations;
                total.isr_changes += stats.isr_changes;
            }
            Err(failure) => panic!(
                "{failure}\nreproduce: RUNNEL_SIM_SEED={seed} cargo nextest run -p runnel-broker \
                 replication::sim::simulate_many_seeds"
            ),
        }
    }
    eprintln!("{} seeds: {total:?}", seeds.len());
    // Not vacuous: the runs acknowledged records, crashed nodes, moved leadership, cut
    // diverging tails and changed ISRs.
    if seeds.len() > 100 {
        assert!(total.acked > 0 && total.crashes > 0 && total.leader_changes > 0);
        assert!(
            total.divergence_truncations > 0 && total.isr_changes > 0,
            "{total:?}"
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    let first = run_seed(7, Variant::Correct);
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(first, run_seed(7, Variant::Correct));
}

/// The first seed below `limit` on which `variant` breaks an invariant.
fn first_failure(variant: Variant, limit: u64) -> Option<String> {
    (0..limit).find_map(|seed| run_seed(seed, variant).err())
}

#[test]
fn the_checker_catches_acks_before_replication() {
    let failure = first_failure(Variant::AckOnLeaderWrite, 500);
    assert!(
        failure.is_some(),
        "acks at the leader's write went unnoticed"
    );
    eprintln!("caught: {}", failure.unwrap_or_default());
}

#[test]
fn the_checker_catches_a_follower_that_fetches_before_fsync() {
    let failure = first_failure(Variant::FetchBeforeFsync, 2_000);
    assert!(failure.is_some(), "fetching before fsync went unnoticed");
    eprintln!("caught: {}", failure.unwrap_or_default());
}

#[test]
fn the_checker_catches_truncation_to_the_high_watermark_on_restart() {
    let failure = first_failure(Variant::TruncateToHighWatermarkOnRestart, 2_000);
    assert!(
        failure.is_some(),
        "truncating to HW on restart went unnoticed"
    );
    eprintln!("caught: {}", failure.unwrap_or_default());
}

#[test]
fn the_checker_catches_a_restarted_leader_keeping_its_epoch() {
    let failure = first_failure(Variant::KeepLeaderEpochOnRestart, 2_000);
    assert!(
        failure.is_some(),
        "a restarted leader keeping its epoch went unnoticed"
    );
    eprintln!("caught: {}", failure.unwrap_or_default());
}

#[test]
fn the_checker_catches_a_truncation_at_the_log_end_that_keeps_an_empty_epoch() {
    let failure = first_failure(Variant::TruncateAtLogEndKeepsEpochs, 2_000);
    assert!(
        failure.is_some(),
        "an empty epoch kept at the log end went unnoticed"
    );
    eprintln!("caught: {}", failure.unwrap_or_default());
}
