//! Allocation of idempotent producer ids, unique across brokers and restarts.
//!
//! Ids are handed out from blocks the controller allocates (`AllocateProducerIds`): the
//! metadata image's next free id only grows, and a block is committed in the metadata log
//! before any id from it is used, so no id is ever handed out twice. A pre-cluster data
//! directory recorded its allocator's high-water mark in a `producer-id-block` file;
//! [`legacy_floor`] reads it once so that the import (`ImportProducerIdFloor`) starts the
//! cluster's ids above it.

use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

use crate::error::BrokerError;
use crate::metadata::records::BrokerId;
use crate::metadata::requests::{ControllerReply, ControllerRequest};
use crate::metadata::{MetadataHandle, SubmitError};

/// The single-node allocator's file: the end (exclusive) of the last block it reserved.
pub const LEGACY_FILE_NAME: &str = "producer-id-block";

/// The first producer id the pre-cluster allocator of `data_dir` never handed out, if it
/// left a `producer-id-block` file.
///
/// Errors: `Metadata` if the file exists but cannot be read or holds no integer.
pub fn legacy_floor(data_dir: &Path) -> Result<Option<i64>, BrokerError> {
    let path = data_dir.join(LEGACY_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| BrokerError::Metadata {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not an integer"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BrokerError::Metadata { path, source }),
    }
}

/// Hands out producer ids from blocks obtained from the controller; thread-safe.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    handle: MetadataHandle,
    broker_id: BrokerId,
    /// (next id to hand out, end of the current block, exclusive); empty at first.
    block: Mutex<(i64, i64)>,
    /// Interim: the `producer-id-block` file to record each block's end in, while the
    /// metadata image is not durable (see [`ProducerIdAllocator::recording_floor`]).
    floor_file: Option<PathBuf>,
}

impl ProducerIdAllocator {
    /// An allocator for broker `broker_id` asking the controller through `handle`.
    pub fn new(handle: MetadataHandle, broker_id: BrokerId) -> ProducerIdAllocator {
        ProducerIdAllocator {
            handle,
            broker_id,
            block: Mutex::new((0, 0)),
            floor_file: None,
        }
    }

    /// Interim, for a broker whose controller keeps its image in memory only: records each
    /// block's end in `data_dir`'s `producer-id-block` file (atomically, before an id of the
    /// block is used), so that [`legacy_floor`] seeds the next start above every id handed
    /// out. Not needed (and not to be used) once the metadata log is durable.
    pub fn recording_floor(mut self, data_dir: &Path) -> ProducerIdAllocator {
        self.floor_file = Some(data_dir.join(LEGACY_FILE_NAME));
        self
    }

    /// The next unused producer id; asks the controller for a new block when the current one
    /// is used up (callers wait for it one at a time).
    ///
    /// Errors: `Controller` when no controller answered.
    pub async fn next(&self) -> Result<i64, BrokerError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let committed = self
                .handle
                .submit(ControllerRequest::AllocateProducerIds {
                    broker_id: self.broker_id,
                })
                .await?;
            match committed.reply {
                ControllerReply::ProducerIds { first, count } if count > 0 => {
                    let end = first.saturating_add(count);
                    if let Some(path) = self.floor_file.clone() {
                        tokio::task::spawn_blocking(move || {
                            runnel_storage::write_file_atomically(&path, end.to_string().as_bytes())
                        })
                        .await??;
                    }
                    *block = (first, end);
                }
                other => {
                    return Err(BrokerError::Controller(SubmitError::Unavailable(format!(
                        "unexpected answer to AllocateProducerIds: {other:?}"
                    ))))
                }
            }
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::controller::{start_in_memory, ControllerSettings, PRODUCER_ID_BLOCK_SIZE};

    #[tokio::test]
    async fn ids_never_repeat_across_allocators() {
        let (handle, _service) = start_in_memory(1, ControllerSettings::default());
        let first = Arc::new(ProducerIdAllocator::new(handle.clone(), 1));
        let second = ProducerIdAllocator::new(handle.clone(), 2);
        let mut seen = BTreeSet::new();
        for _ in 0..(PRODUCER_ID_BLOCK_SIZE + 5) {
            assert!(seen.insert(first.next().await.unwrap()));
            assert!(seen.insert(second.next().await.unwrap()));
        }
        // An allocator that replaces one (a restart) starts on a fresh block.
        let restarted = ProducerIdAllocator::new(handle.clone(), 1);
        assert!(seen.insert(restarted.next().await.unwrap()));
        assert_eq!(
            handle.image().next_producer_id,
            PRODUCER_ID_BLOCK_SIZE * 5,
            "two blocks each, then one"
        );
    }

    #[tokio::test]
    async fn the_legacy_floor_is_imported_and_ids_start_above_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(legacy_floor(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(LEGACY_FILE_NAME), "3000\n").unwrap();
        let floor = legacy_floor(dir.path()).unwrap().unwrap();
        assert_eq!(floor, 3000);
        let (handle, _service) = start_in_memory(1, ControllerSettings::default());
        handle
            .submit(ControllerRequest::ImportProducerIdFloor {
                broker_id: 1,
                floor,
            })
            .await
            .unwrap();
        let allocator = ProducerIdAllocator::new(handle, 1);
        assert_eq!(allocator.next().await.unwrap(), 3000);
        // Recording the floor (interim): the file moves past every block handed out.
        let recording =
            ProducerIdAllocator::new(allocator.handle.clone(), 1).recording_floor(dir.path());
        assert_eq!(
            recording.next().await.unwrap(),
            3000 + PRODUCER_ID_BLOCK_SIZE
        );
        assert_eq!(
            legacy_floor(dir.path()).unwrap(),
            Some(3000 + 2 * PRODUCER_ID_BLOCK_SIZE)
        );
        std::fs::write(dir.path().join(LEGACY_FILE_NAME), "x").unwrap();
        assert!(legacy_floor(dir.path()).is_err());
    }
}
