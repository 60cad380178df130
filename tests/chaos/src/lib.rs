//! The chaos harness (docs/reliability.md): a seeded workload against a three-node cluster, faults
//! on a seeded schedule, every operation recorded in a [`history`], and a checker over it.
//!
//! The runner: [`netns`] (the network plan), [`cluster`] (nodes in namespaces, their storage),
//! [`schedule`] and [`faults`] (what is injected when, and how), [`workload`] (producers,
//! consumers, drain), [`recorder`] (the history file), [`run`] (one run, end to end).

pub mod checker;
pub mod client_log;
pub mod cluster;
pub mod command;
pub mod faults;
pub mod forensics;
pub mod history;
pub mod netns;
pub mod recorder;
pub mod report;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod workload;
