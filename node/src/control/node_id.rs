//! The node id: set in `[cluster] node_id`, or a random one created on first
//! start and kept in `<data_dir>/node_id`, so a node keeps its id across
//! restarts and a new data dir is always a new node (ids are never reused).

use std::io::Write;
use std::path::Path;

/// The file holding the id, in the data dir.
pub const FILE: &str = "node_id";

/// Ids stay below 2^53 so that JSON clients that parse numbers as doubles
/// (JavaScript, jq) read them exactly.
const MAX_ID: u64 = (1 << 53) - 1;

/// Why the node id could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path} is corrupt: expected a node id, found {found:?}")]
    Corrupt { path: String, found: String },
    #[error(
        "cluster.node_id is {configured} but the data dir belongs to node {stored} ({path}): use that id or another data dir"
    )]
    Mismatch { configured: u64, stored: u64, path: String },
}

/// Returns this node's id: the stored one, checked against `configured`
/// (0 = not configured), or a new one (the configured or a random id) that
/// is stored durably before it is returned.
pub fn resolve(data_dir: &Path, configured: u64) -> Result<u64, NodeIdError> {
    let path = data_dir.join(FILE);
    let shown = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored = text.trim().parse::<u64>().ok().filter(|&id| id > 0).ok_or_else(|| {
                NodeIdError::Corrupt { path: shown.clone(), found: text.trim().to_string() }
            })?;
            if configured != 0 && configured != stored {
                return Err(NodeIdError::Mismatch { configured, stored, path: shown });
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = if configured != 0 { configured } else { fastrand::u64(1..=MAX_ID) };
            store(data_dir, id).map_err(|source| NodeIdError::Write { path: shown, source })?;
            Ok(id)
        }
        Err(source) => Err(NodeIdError::Read { path: shown, source }),
    }
}

/// Writes the id to a temporary file, syncs it and renames it into place,
/// so a crash leaves either no id or the whole id.
fn store(data_dir: &Path, id: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{id}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(FILE))?;
    std::fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_id_is_created_once_and_kept() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let id = resolve(dir.path(), 0)?;
        assert!((1..=MAX_ID).contains(&id));
        assert_eq!(resolve(dir.path(), 0)?, id);
        assert_eq!(resolve(dir.path(), id)?, id, "configuring the stored id is fine");
        let other = tempfile::tempdir()?;
        assert_ne!(resolve(other.path(), 0)?, id, "a new data dir is a new node");
        Ok(())
    }

    #[test]
    fn a_configured_id_is_stored_and_a_different_one_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        assert_eq!(resolve(dir.path(), 7)?, 7);
        assert_eq!(resolve(dir.path(), 0)?, 7);
        let e = resolve(dir.path(), 8).expect_err("mismatch");
        assert!(e.to_string().contains("belongs to node 7"), "{e}");
        Ok(())
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_new_id() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(FILE), "garbage\n")?;
        let e = resolve(dir.path(), 0).expect_err("corrupt");
        assert!(e.to_string().contains("is corrupt"), "{e}");
        Ok(())
    }
}
