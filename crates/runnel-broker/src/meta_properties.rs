//! `<data.dir>/meta.properties`: which cluster and which node a data directory belongs to, in
//! Kafka's format (`version=1`, `cluster.id=…`, `node.id=…`).
//!
//! Written once when a directory is first used, checked at every start after: a directory
//! formatted for another `cluster.id` or another `node.id` is refused, so a node never serves
//! (or votes with) another node's or another cluster's data. A file from before node ids were
//! recorded gets this node's id added.

use std::path::{Path, PathBuf};

use crate::error::BrokerError;

/// The file's name inside the data directory.
pub const FILE_NAME: &str = "meta.properties";

/// The identity a data directory is formatted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    /// The cluster's id.
    pub cluster_id: String,
    /// The node's id; `None` in a file written before node ids were recorded.
    pub node_id: Option<i32>,
}

/// Why a data directory's `meta.properties` is refused.
#[derive(Debug, thiserror::Error)]
pub enum MetaPropertiesError {
    /// Formatted for another cluster.
    #[error("data directory is formatted for cluster.id {found}, but this node is configured with cluster.id {configured}")]
    ClusterIdMismatch {
        /// In the file.
        found: String,
        /// In the configuration.
        configured: String,
    },
    /// Formatted for another node.
    #[error("data directory is formatted for node.id {found}, but this node is configured with node.id {configured}")]
    NodeIdMismatch {
        /// In the file.
        found: i32,
        /// In the configuration.
        configured: i32,
    },
    /// No `cluster.id` line.
    #[error("no cluster.id")]
    MissingClusterId,
    /// A `node.id` that is not an integer.
    #[error("node.id `{0}` is not an integer")]
    BadNodeId(String),
}

impl MetaProperties {
    /// Parses the file's text: `key=value` lines; `#` comments and other keys are ignored.
    ///
    /// # Errors
    /// No `cluster.id`, or a `node.id` that is not an integer.
    pub fn parse(text: &str) -> Result<MetaProperties, MetaPropertiesError> {
        let value = |key: &str| {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| line.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
        let cluster_id = value("cluster.id")
            .filter(|id| !id.is_empty())
            .ok_or(MetaPropertiesError::MissingClusterId)?;
        let node_id = value("node.id")
            .map(|id| id.parse().map_err(|_| MetaPropertiesError::BadNodeId(id)))
            .transpose()?;
        Ok(MetaProperties {
            cluster_id,
            node_id,
        })
    }

    /// The file's text, in Kafka's layout.
    pub fn render(&self) -> String {
        let mut text = format!("version=1\ncluster.id={}\n", self.cluster_id);
        if let Some(node_id) = self.node_id {
            text.push_str(&format!("node.id={node_id}\n"));
        }
        text
    }
}

/// Checks (or, for a fresh directory, writes) `meta.properties` for node `node_id` of the
/// cluster `configured_cluster_id` (`None`: any; a fresh directory then gets a generated id),
/// and returns the cluster id in effect. Blocking.
///
/// # Errors
/// The directory is formatted for another cluster or node, the file is unreadable or
/// malformed, or it cannot be written.
pub fn load_or_format(
    data_dir: &Path,
    node_id: i32,
    configured_cluster_id: Option<&str>,
) -> Result<String, BrokerError> {
    let path = data_dir.join(FILE_NAME);
    let invalid = |path: PathBuf, error: MetaPropertiesError| BrokerError::Metadata {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = MetaProperties::parse(&text).map_err(|e| invalid(path.clone(), e))?;
            if let Some(configured) = configured_cluster_id.filter(|c| *c != found.cluster_id) {
                return Err(invalid(
                    path,
                    MetaPropertiesError::ClusterIdMismatch {
                        found: found.cluster_id,
                        configured: configured.to_string(),
                    },
                ));
            }
            match found.node_id {
                Some(found_node) if found_node != node_id => Err(invalid(
                    path,
                    MetaPropertiesError::NodeIdMismatch {
                        found: found_node,
                        configured: node_id,
                    },
                )),
                Some(_) => Ok(found.cluster_id),
                None => {
                    let upgraded = MetaProperties {
                        node_id: Some(node_id),
                        ..found
                    };
                    runnel_storage::write_file_atomically(&path, upgraded.render().as_bytes())?;
                    Ok(upgraded.cluster_id)
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster_id = configured_cluster_id
                .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
            let formatted = MetaProperties {
                cluster_id,
                node_id: Some(node_id),
            };
            runnel_storage::write_file_atomically(&path, formatted.render().as_bytes())?;
            Ok(formatted.cluster_id)
        }
        Err(source) => Err(BrokerError::Metadata { path, source }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_is_formatted_and_then_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_format(dir.path(), 3, Some("abc")).unwrap();
        assert_eq!(id, "abc");
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text, "version=1\ncluster.id=abc\nnode.id=3\n");
        assert_eq!(load_or_format(dir.path(), 3, Some("abc")).unwrap(), "abc");
        assert_eq!(load_or_format(dir.path(), 3, None).unwrap(), "abc");
    }

    #[test]
    fn a_single_node_generates_its_cluster_id_once() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_format(dir.path(), 0, None).unwrap();
        assert!(!id.is_empty());
        assert_eq!(load_or_format(dir.path(), 0, None).unwrap(), id);
    }

    #[test]
    fn another_cluster_or_node_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        load_or_format(dir.path(), 1, Some("abc")).unwrap();
        let error = load_or_format(dir.path(), 1, Some("xyz"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cluster.id abc") && error.contains("cluster.id xyz"),
            "{error}"
        );
        let error = load_or_format(dir.path(), 2, Some("abc"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("node.id 1") && error.contains("node.id 2"),
            "{error}"
        );
    }

    #[test]
    fn an_old_file_without_node_id_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "#\n#Mon Dec 07\nversion=1\ncluster.id=old\n").unwrap();
        assert_eq!(load_or_format(dir.path(), 5, None).unwrap(), "old");
        assert_eq!(
            MetaProperties::parse(&std::fs::read_to_string(&path).unwrap()).unwrap(),
            MetaProperties {
                cluster_id: "old".into(),
                node_id: Some(5)
            }
        );
        assert!(load_or_format(dir.path(), 6, None).is_err());
    }

    #[test]
    fn malformed_files_are_refused() {
        assert!(matches!(
            MetaProperties::parse("version=1\n"),
            Err(MetaPropertiesError::MissingClusterId)
        ));
        assert!(matches!(
            MetaProperties::parse("cluster.id=a\nnode.id=x\n"),
            Err(MetaPropertiesError::BadNodeId(_))
        ));
    }
}
