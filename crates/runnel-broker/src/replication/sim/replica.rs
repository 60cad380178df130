//! One simulated node's copy of the partition: an in-memory log of one-record batches, the
//! prefix that is fsynced, the leader-epoch cache (the real one), the high watermark and its
//! checkpoint, the node's own metadata image and its role. A crash keeps only what is durable.

use runnel_storage::LeaderEpochCache;

use crate::metadata::records::BrokerId;
use crate::metadata::MetadataImage;
use crate::replication::state::{IsrChange, LeaderState};

/// One batch of one record: its offset, the leader epoch stamped in it, and a payload id
/// unique in the whole run (the record's "bytes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Batch {
    pub(super) offset: i64,
    pub(super) epoch: i32,
    pub(super) payload: u64,
}

/// What the node does for the partition, as its image says.
#[derive(Debug)]
pub(super) enum Role {
    /// Not registered yet (this incarnation), not a replica, or no leader to follow.
    Idle,
    Leader(LeaderState),
    Follower {
        leader: BrokerId,
        leader_epoch: i32,
    },
}

#[derive(Debug)]
pub(super) struct Replica {
    pub(super) id: BrokerId,
    pub(super) up: bool,
    pub(super) incarnation: u128,
    pub(super) log: Vec<Batch>,
    pub(super) durable: i64,
    pub(super) epochs: LeaderEpochCache,
    pub(super) high_watermark: i64,
    hw_checkpoint: i64,
    pub(super) image: MetadataImage,
    pub(super) role: Role,
    /// The step a fetch was sent at, while it is unanswered.
    pub(super) fetch_sent: Option<u64>,
    /// acks=all produces waiting for the high watermark: (offset, payload).
    pub(super) pending_acks: Vec<(i64, u64)>,
    /// The AlterPartition in flight and the step it was sent at.
    pub(super) alter_sent: Option<(IsrChange, u64)>,
}

impl Replica {
    pub(super) fn new(id: BrokerId, incarnation: u128) -> Self {
        Replica {
            id,
            up: true,
            incarnation,
            log: Vec::new(),
            durable: 0,
            epochs: LeaderEpochCache::new(),
            high_watermark: 0,
            hw_checkpoint: 0,
            image: MetadataImage::default(),
            role: Role::Idle,
            fetch_sent: None,
            pending_acks: Vec::new(),
            alter_sent: None,
        }
    }

    pub(super) fn log_end_offset(&self) -> i64 {
        self.log.len() as i64
    }

    pub(super) fn fsync(&mut self) {
        self.durable = self.log_end_offset();
    }

    /// Appends at the log end (leader write or replicated batch); the epoch cache learns a
    /// newer epoch from the batch, as `append_replicated` does.
    pub(super) fn append(&mut self, batch: Batch) {
        assert_eq!(
            batch.offset,
            self.log_end_offset(),
            "appends are contiguous"
        );
        if self
            .epochs
            .latest_epoch()
            .is_none_or(|latest| batch.epoch > latest)
        {
            self.epochs.assign(batch.epoch, batch.offset);
        }
        self.log.push(batch);
    }

    /// Cuts every batch at and after `offset` (durably, like `PartitionLog::truncate_to`).
    pub(super) fn truncate_to(&mut self, offset: i64) {
        self.log.truncate(usize::try_from(offset).unwrap_or(0));
        self.durable = self.durable.min(offset);
        self.epochs.truncate_from_end(offset);
    }

    pub(super) fn set_high_watermark(&mut self, high_watermark: i64) {
        self.high_watermark = high_watermark;
        self.hw_checkpoint = high_watermark;
    }

    /// Power loss: everything not fsynced is gone; the epoch cache is fitted to the recovered
    /// log at open; the high watermark comes back from its checkpoint, clamped to the log.
    pub(super) fn crash(&mut self) {
        self.up = false;
        self.truncate_to(self.durable);
        self.high_watermark = self.hw_checkpoint.min(self.log_end_offset());
        self.role = Role::Idle;
        self.fetch_sent = None;
        self.pending_acks.clear();
        self.alter_sent = None;
    }

    /// A new process: a new incarnation, the metadata image rebuilt from the log.
    pub(super) fn restart(&mut self, incarnation: u128) {
        self.up = true;
        self.incarnation = incarnation;
        self.image = MetadataImage::default();
    }

    /// One line for traces.
    pub(super) fn describe(&self) -> String {
        let tail: Vec<(i64, i32, u64)> = self
            .log
            .iter()
            .rev()
            .take(6)
            .rev()
            .map(|b| (b.offset, b.epoch, b.payload))
            .collect();
        format!(
            "node {} up {} LEO {} durable {} HW {} epochs {:?} tail {:?} role {:?}",
            self.id,
            self.up,
            self.log_end_offset(),
            self.durable,
            self.high_watermark,
            self.epochs.entries(),
            tail,
            self.role
        )
    }

    /// The leader state, if this node leads.
    pub(super) fn leader_state(&mut self) -> Option<&mut LeaderState> {
        match &mut self.role {
            Role::Leader(state) => Some(state),
            _ => None,
        }
    }
}
