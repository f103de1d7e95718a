//! The nodes' power-loss disks: one powerfs mount per node, served by a
//! thread of this process, mounted on the node's data dir before the node
//! starts (so the node's `ip netns exec` mount namespace inherits it) and
//! unmounted when [`Disks`] is dropped — at teardown, on Ctrl-C and on a
//! panic. A crashed run's mounts (named after its PID) are removed by
//! [`clear_leftovers`] at the next start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::fuse::PowerFsFuse;
use super::model::{Model, Owner};

/// Bytes the files of one node's disk may hold in all. A node's data dir
/// holds a few MiB in a test run; the durable copy shares unchanged pages,
/// so one disk takes at most twice this in memory.
pub const CAP: u64 = 256 << 20;

/// The mount's source name, followed by `.` and the owning PID.
const FS_NAME: &str = "ferry-powerfs";

/// Why a disk could not be mounted, cut or cleared.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("mounting powerfs on {path}: {source} (needs root and /dev/fuse)")]
    Mount { path: PathBuf, source: std::io::Error },
    #[error("creating the mount point {path}: {source}")]
    MountPoint { path: PathBuf, source: std::io::Error },
    #[error("reading /proc/self/mounts: {0}")]
    Mounts(std::io::Error),
    #[error("unmounting {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("node n{0} has no powerfs disk")]
    NoDisk(usize),
}

#[derive(Debug)]
struct Disk {
    model: Arc<Mutex<Model>>,
    path: PathBuf,
    /// Dropping it unmounts.
    session: Option<fuser::BackgroundSession>,
}

/// The mounted disks, by node.
#[derive(Debug, Default)]
pub struct Disks {
    disks: BTreeMap<usize, Disk>,
}

impl Disks {
    /// Mounts an empty disk on each `(node, data dir)`.
    pub fn mount(dirs: impl IntoIterator<Item = (usize, PathBuf)>) -> Result<Self, DiskError> {
        let mut out = Disks::default();
        for (i, path) in dirs {
            std::fs::create_dir_all(&path)
                .map_err(|source| DiskError::MountPoint { path: path.clone(), source })?;
            let owner = Owner { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
            let model = Arc::new(Mutex::new(Model::new(CAP, owner)));
            let mut config = fuser::Config::default();
            config.mount_options = vec![
                fuser::MountOption::FSName(format!("{FS_NAME}.{}", std::process::id())),
                fuser::MountOption::RW,
            ];
            let session = fuser::spawn_mount(PowerFsFuse::new(Arc::clone(&model)), &path, &config)
                .map_err(|source| DiskError::Mount { path: path.clone(), source })?;
            out.disks.insert(i, Disk { model, path, session: Some(session) });
        }
        Ok(out)
    }

    /// Cuts the power of the disks of `nodes`: their unsynced data is lost
    /// and they fail every request until [`Disks::power_on`]. Kill the
    /// nodes first: a process that writes through a cut sees `EIO`.
    pub fn cut(&self, nodes: &[usize]) -> Result<(), DiskError> {
        self.each(nodes, Model::power_cut)
    }

    /// Powers the disks of `nodes` back on, with what survived.
    pub fn power_on(&self, nodes: &[usize]) -> Result<(), DiskError> {
        self.each(nodes, Model::power_on)
    }

    fn each(&self, nodes: &[usize], f: impl Fn(&mut Model)) -> Result<(), DiskError> {
        for &i in nodes {
            let disk = self.disks.get(&i).ok_or(DiskError::NoDisk(i))?;
            f(&mut disk.model.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        }
        Ok(())
    }

    /// Unmounts every disk (their data is gone with them).
    pub fn unmount_all(&mut self) {
        for (_, mut disk) in std::mem::take(&mut self.disks) {
            // fuser unmounts on drop; a mount still busy is detached.
            drop(disk.session.take());
            if mounted(&disk.path) {
                let _ = nix::mount::umount2(&disk.path, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        self.unmount_all();
    }
}

/// Unmounts the powerfs mounts of runs whose process is gone; returns
/// their mount points.
pub fn clear_leftovers() -> Result<Vec<PathBuf>, DiskError> {
    let mut removed = Vec::new();
    for (source, path) in mounts()? {
        let Some(pid) = source.strip_prefix(FS_NAME).and_then(|s| s.strip_prefix('.')) else { continue };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|source| DiskError::Unmount { path: path.clone(), source })?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Whether `path` is a mount point of a powerfs disk.
fn mounted(path: &Path) -> bool {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts().is_ok_and(|m| m.iter().any(|(s, p)| s.starts_with(FS_NAME) && (p == path || *p == canonical)))
}

/// `(source, mount point)` of every mount of this mount namespace.
fn mounts() -> Result<Vec<(String, PathBuf)>, DiskError> {
    let text = std::fs::read_to_string("/proc/self/mounts").map_err(DiskError::Mounts)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((unescape(f.next()?), PathBuf::from(unescape(f.next()?))))
        })
        .collect())
}

/// Undoes /proc/mounts' octal escapes (`\040` for a space, and so on).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape(r"/tmp/a\040b\134c"), r"/tmp/a b\c");
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(unescape(r"bad\09"), r"bad\09");
    }
}
