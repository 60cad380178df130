//! Allocation of idempotent producer ids that stay unique across restarts.
//!
//! Ids are handed out from blocks: the end of the current block is persisted (atomically) before
//! any id from it is used, so after a crash the next block starts past every id ever issued.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::error::BrokerError;

/// Ids reserved per write of the block file.
const BLOCK_SIZE: i64 = 1000;
const FILE_NAME: &str = "producer-id-block";

/// Hands out producer ids; thread-safe.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    path: PathBuf,
    /// (next id to hand out, end of the persisted block, exclusive)
    state: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    /// Reads the persisted block end from the data dir (0 when absent).
    pub fn load(data_dir: &std::path::Path) -> Result<ProducerIdAllocator, BrokerError> {
        let path = data_dir.join(FILE_NAME);
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map_err(|_| BrokerError::Metadata {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not an integer"),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(BrokerError::Metadata { path, source }),
        };
        Ok(ProducerIdAllocator {
            path,
            state: Mutex::new((next, next)),
        })
    }

    /// The next unused producer id. Blocking (may write the block file): call off the runtime.
    pub fn allocate(&self) -> Result<i64, BrokerError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (next, block_end) = *state;
        if next >= block_end {
            let new_end = next + BLOCK_SIZE;
            runnel_storage::write_file_atomically(&self.path, new_end.to_string().as_bytes())?;
            *state = (next, new_end);
        }
        state.0 = next + 1;
        Ok(next)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = ProducerIdAllocator::load(dir.path()).unwrap();
        let a = first.allocate().unwrap();
        let b = first.allocate().unwrap();
        assert_eq!(b, a + 1);
        drop(first);
        let second = ProducerIdAllocator::load(dir.path()).unwrap();
        assert!(second.allocate().unwrap() > b);
    }
}
