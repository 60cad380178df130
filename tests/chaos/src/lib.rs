//! The chaos harness (docs/reliability.md): a seeded workload against a three-node cluster, faults
//! on a seeded schedule, every operation recorded in a [`history`], and a checker over it.

pub mod checker;
pub mod history;
pub mod report;
