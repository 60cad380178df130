//! The metadata log's state machine: committed entries applied to the [`MetadataImage`], each
//! new image published on a `watch` for the broker; snapshots are the image, serialised, in
//! `<data.dir>/__cluster_metadata/snapshot` (JSON `{"meta": …, "image": …}`, atomically
//! replaced). The image itself is not persisted on apply: a restart rebuilds it from the
//! snapshot plus the committed log tail (openraft re-applies up to the `committed` hint).
//! A snapshot write that fails for lack of space uses the metadata log's space reserve
//! (`reserve.rs`): a failed snapshot stops the Raft node for good.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::reserve::{write_atomically, Reserve};
use super::TypeConfig;
use crate::metadata::MetadataImage;

/// The snapshot file.
pub(crate) const SNAPSHOT_FILE: &str = "snapshot";

type NodeId = u64;

/// The snapshot file's content.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    image: MetadataImage,
}

/// Serialises snapshot file writes (a snapshot is built on its own task while another may be
/// installed) and keeps the newest: an older snapshot never replaces a newer one.
#[derive(Debug, Default)]
struct SnapshotFile {
    last_log_id: Option<LogId<NodeId>>,
}

/// The state machine openraft drives.
#[derive(Debug)]
pub struct StateMachine {
    dir: PathBuf,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    publisher: watch::Sender<Arc<MetadataImage>>,
    snapshot_file: Arc<Mutex<SnapshotFile>>,
    reserve: Arc<Mutex<Reserve>>,
}

/// Builds a snapshot of the image as it was when the builder was made.
#[derive(Debug)]
pub struct SnapshotBuilder {
    dir: PathBuf,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    snapshot_file: Arc<Mutex<SnapshotFile>>,
    reserve: Arc<Mutex<Reserve>>,
}

fn io_error(what: String) -> io::Error {
    io::Error::other(what)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io_error(format!("metadata snapshot I/O task failed: {e}")))?
}

fn read_snapshot_file(dir: &Path) -> io::Result<Option<StoredSnapshot>> {
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_error(format!("{}: unreadable snapshot: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the snapshot file unless a snapshot at or past `meta.last_log_id` is already there.
fn write_snapshot_file(
    dir: &Path,
    lock: &Mutex<SnapshotFile>,
    reserve: &Mutex<Reserve>,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    image: &MetadataImage,
) -> io::Result<()> {
    let mut current = lock.lock().unwrap_or_else(|p| p.into_inner());
    if current.last_log_id.is_some() && current.last_log_id >= meta.last_log_id {
        return Ok(());
    }
    #[derive(Serialize)]
    struct Borrowed<'a> {
        meta: &'a SnapshotMeta<NodeId, BasicNode>,
        image: &'a MetadataImage,
    }
    let bytes = serde_json::to_vec(&Borrowed { meta, image })?;
    let path = dir.join(SNAPSHOT_FILE);
    let needed = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    reserve
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .write_with(needed, || write_atomically(&path, &bytes))?;
    current.last_log_id = meta.last_log_id;
    Ok(())
}

impl StateMachine {
    /// Loads the snapshot in `dir` (if any) as the starting image and publishes it. Blocking.
    pub(crate) fn open(
        dir: &Path,
        publisher: watch::Sender<Arc<MetadataImage>>,
        reserve: Arc<Mutex<Reserve>>,
    ) -> io::Result<StateMachine> {
        let stored = read_snapshot_file(dir)?;
        let (image, last_applied, last_membership) = match stored {
            Some(s) => (s.image, s.meta.last_log_id, s.meta.last_membership),
            None => (MetadataImage::default(), None, StoredMembership::default()),
        };
        let image = Arc::new(image);
        publisher.send_replace(Arc::clone(&image));
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            image,
            last_applied,
            last_membership,
            publisher,
            snapshot_file: Arc::new(Mutex::new(SnapshotFile {
                last_log_id: last_applied,
            })),
            reserve,
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let snapshot_id = match self.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let image = Arc::clone(&self.image);
        let dir = self.dir.clone();
        let lock = Arc::clone(&self.snapshot_file);
        let reserve = Arc::clone(&self.reserve);
        let written_meta = meta.clone();
        let data = blocking(move || {
            write_snapshot_file(&dir, &lock, &reserve, &written_meta, &image)?;
            Ok(serde_json::to_vec(image.as_ref())?)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(snapshot = %meta, "metadata snapshot written");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<u64>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let image = Arc::make_mut(&mut self.image);
        for entry in entries {
            let index = entry.log_id.index;
            match entry.payload {
                EntryPayload::Normal(batch) => image.apply(index, &batch),
                EntryPayload::Blank => image.applied_index = index,
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    image.applied_index = index;
                }
            }
            self.last_applied = Some(entry.log_id);
            replies.push(index);
        }
        // The image is published after the whole batch: readers see committed states only.
        self.publisher.send_replace(Arc::clone(&self.image));
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            image: Arc::clone(&self.image),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_file: Arc::clone(&self.snapshot_file),
            reserve: Arc::clone(&self.reserve),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let image: MetadataImage = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let image = Arc::new(image);
        let dir = self.dir.clone();
        let lock = Arc::clone(&self.snapshot_file);
        let reserve = Arc::clone(&self.reserve);
        let written_meta = meta.clone();
        let written_image = Arc::clone(&image);
        blocking(move || write_snapshot_file(&dir, &lock, &reserve, &written_meta, &written_image))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(snapshot = %meta, "metadata snapshot installed");
        self.image = image;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.publisher.send_replace(Arc::clone(&self.image));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let dir = self.dir.clone();
        let stored = blocking(move || {
            let Some(stored) = read_snapshot_file(&dir)? else {
                return Ok(None);
            };
            let data = serde_json::to_vec(&stored.image)?;
            Ok(Some((stored.meta, data)))
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
