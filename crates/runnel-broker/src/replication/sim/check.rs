//! The invariants of docs/replication.md, checked after every step (and at the events that
//! can break them: a truncation, a node becoming leader, an acknowledgement).
//!
//! Agreement below HW (2) is checked against one global committed prefix: the first time any
//! replica's HW passes an offset, its batch there becomes the committed batch, and every
//! replica whose HW passes that offset, then or later, must hold the same batch. That is the
//! pairwise check made transitive, and incremental (each replica re-checks only what its HW
//! newly covers).

use std::collections::BTreeMap;
use std::fmt;

use crate::metadata::records::BrokerId;

use super::replica::{Batch, Replica, Role};

/// A broken invariant.
#[derive(Debug)]
pub(super) struct Violation {
    pub(super) invariant: &'static str,
    pub(super) detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

fn violation(invariant: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { invariant, detail })
}

#[derive(Default)]
pub(super) struct Checker {
    committed: Vec<Batch>,
    acked: BTreeMap<i64, u64>,
    /// Per replica: offsets below this were checked against `committed`.
    checked: BTreeMap<BrokerId, i64>,
    /// Per replica leading: (leader epoch, HW) last seen.
    leader_high_watermarks: BTreeMap<BrokerId, (i32, i64)>,
}

impl Checker {
    pub(super) fn acked_count(&self) -> usize {
        self.acked.len()
    }

    /// An acks=all produce was answered at `offset`.
    pub(super) fn on_ack(&mut self, offset: i64, payload: u64) -> Result<(), Violation> {
        match self.acked.insert(offset, payload) {
            Some(earlier) if earlier != payload => violation(
                "1 (acknowledged record changed)",
                format!("offset {offset} acknowledged as {earlier}, then as {payload}"),
            ),
            _ => Ok(()),
        }
    }

    /// Invariant 1: a node about to serve as leader holds every acknowledged record.
    pub(super) fn on_leader(&self, replica: &Replica) -> Result<(), Violation> {
        for (offset, payload) in &self.acked {
            let held = usize::try_from(*offset)
                .ok()
                .and_then(|i| replica.log.get(i))
                .map(|b| b.payload);
            if held != Some(*payload) {
                return violation(
                    "1 (acknowledged record lost)",
                    format!(
                        "leader {} lacks record {payload} acknowledged at offset {offset} \
                         (holds {held:?}, log end {})",
                        replica.id,
                        replica.log_end_offset()
                    ),
                );
            }
        }
        Ok(())
    }

    /// Invariant 4: a replica truncating to `offset` never cuts below its HW.
    pub(super) fn on_truncate(&mut self, replica: &Replica, offset: i64) -> Result<(), Violation> {
        if offset < replica.high_watermark {
            return violation(
                "4 (truncation below HW)",
                format!(
                    "replica {} truncates to {offset} below its HW {}",
                    replica.id, replica.high_watermark
                ),
            );
        }
        let checked = self.checked.entry(replica.id).or_insert(0);
        *checked = (*checked).min(offset);
        Ok(())
    }

    /// Invariants 2, 3 and 5 over every replica.
    pub(super) fn after_step(&mut self, replicas: &[Replica]) -> Result<(), Violation> {
        for replica in replicas {
            if replica.high_watermark > replica.durable {
                return violation(
                    "5 (HW above durable offset)",
                    format!(
                        "replica {} HW {} > durable {}",
                        replica.id, replica.high_watermark, replica.durable
                    ),
                );
            }
            self.check_agreement(replica)?;
            if let Role::Leader(state) = &replica.role {
                let seen = (state.leader_epoch(), replica.high_watermark);
                if let Some((epoch, hw)) = self.leader_high_watermarks.insert(replica.id, seen) {
                    if epoch == seen.0 && seen.1 < hw {
                        return violation(
                            "3 (leader HW went backwards)",
                            format!("leader {} epoch {epoch}: HW {hw} -> {}", replica.id, seen.1),
                        );
                    }
                }
            } else {
                self.leader_high_watermarks.remove(&replica.id);
            }
        }
        Ok(())
    }

    fn check_agreement(&mut self, replica: &Replica) -> Result<(), Violation> {
        let checked = self.checked.entry(replica.id).or_insert(0);
        *checked = (*checked).min(replica.high_watermark);
        for offset in *checked..replica.high_watermark {
            let Some(batch) = usize::try_from(offset)
                .ok()
                .and_then(|i| replica.log.get(i))
            else {
                return violation(
                    "5 (HW above log end)",
                    format!("replica {} HW {}", replica.id, replica.high_watermark),
                );
            };
            match usize::try_from(offset)
                .ok()
                .and_then(|i| self.committed.get(i))
            {
                Some(committed) if committed != batch => {
                    return violation(
                        "2 (replicas disagree below HW)",
                        format!(
                            "replica {} holds {batch:?} below its HW {}, committed is {committed:?}",
                            replica.id, replica.high_watermark
                        ),
                    );
                }
                Some(_) => {}
                None => self.committed.push(*batch),
            }
        }
        *checked = replica.high_watermark;
        Ok(())
    }
}
