//! Makes what sled flushed survive a power cut: [`DiskSync`] calls
//! `fdatasync` on sled's files after sled's own flush.
//!
//! sled 0.34's flush writes its log to `<dir>/db` and ends with
//! `sync_file_range`, which starts and waits for the page cache's writeback
//! but neither flushes the disk's write cache nor the file's metadata (its
//! size, when the file grew): a write it reported flushed can be gone after
//! every node loses power. sled's own `fsync`s come from its background
//! flusher, about every 500 ms. Values too large for a page of the log
//! (about 128 KiB, in practice the state machine's snapshot) go to
//! `<dir>/blobs/<lsn>`, a new file per write, written and never synced; the
//! log only points at it.
//!
//! So after each flush that Raft relies on (an append before it is
//! reported, a vote before it is answered, a snapshot before the log it
//! covers may be purged) the store calls [`DiskSync::sync`]: every blob file
//! not synced yet, the blob directory if it gained one, then the data file,
//! with `fdatasync`. One call covers everything sled wrote before it, so the
//! log store's group commit gives one per batch of appends, not one per
//! entry. [`DiskSync::open`] syncs what sled writes once, at open (`conf`,
//! the data file, the directory entries of the files sled created or renamed,
//! such as its `snap.*` file).
//!
//! [`SyncMode::Skip`] turns it off (sled's flush alone, as before): the fault
//! switch `FERRYD_UNSAFE_FAULT=skip-sync` uses it to prove jepsen-lite's
//! power-loss nemesis catches the loss.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::StoreError;

/// Whether the stores sync sled's files after its flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// `fdatasync` after every flush Raft relies on (the default).
    #[default]
    Fdatasync,
    /// sled's flush alone: acknowledged writes can be lost on power loss.
    /// For fault injection only.
    Skip,
}

/// Called with the duration of each sync (for a metric).
pub type SyncObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// The handle that syncs one sled directory's files; shared by the stores.
pub struct DiskSync {
    mode: SyncMode,
    /// `<dir>/db`, sled's log and pages.
    data: File,
    data_path: PathBuf,
    blobs_dir: PathBuf,
    /// Blob files synced, with the length they had just before: a blob still
    /// being written when it was listed is synced again once it is longer.
    blobs: Mutex<HashMap<OsString, u64>>,
    syncs: AtomicU64,
    blob_syncs: AtomicU64,
    observer: Option<SyncObserver>,
}

impl std::fmt::Debug for DiskSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskSync")
            .field("mode", &self.mode)
            .field("blobs_dir", &self.blobs_dir)
            .field("syncs", &self.syncs())
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Sync { path: path.display().to_string(), source }
}

/// `fsync`s a directory, so the names created, renamed or removed in it
/// last. A filesystem that cannot sync a directory (`EINVAL`) orders its
/// metadata itself; FUSE answers an unimplemented one with success.
fn sync_dir(path: &Path) -> Result<(), StoreError> {
    match File::open(path).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(22) => Ok(()),
        other => other.map_err(io_err(path)),
    }
}

impl DiskSync {
    /// Opens the sync handle of the sled database in `dir` (open sled first:
    /// this syncs what its open wrote). With [`SyncMode::Skip`] it syncs
    /// nothing, now or later.
    pub fn open(dir: &Path, mode: SyncMode) -> Result<Self, StoreError> {
        let data_path = dir.join("db");
        let data = File::open(&data_path).map_err(io_err(&data_path))?;
        let sync = Self {
            mode,
            data,
            data_path: data_path.clone(),
            blobs_dir: dir.join("blobs"),
            blobs: Mutex::default(),
            syncs: AtomicU64::new(0),
            blob_syncs: AtomicU64::new(0),
            observer: None,
        };
        if mode == SyncMode::Fdatasync {
            let conf = dir.join("conf");
            File::open(&conf).and_then(|f| f.sync_all()).map_err(io_err(&conf))?;
            sync.data.sync_all().map_err(io_err(&data_path))?;
            sync.sync_blobs()?;
            sync_dir(&sync.blobs_dir)?;
            sync_dir(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        Ok(sync)
    }

    /// Calls `observer` with the duration of every sync from now on.
    pub fn with_observer(mut self, observer: SyncObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The mode this handle was opened with.
    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// Syncs completed since open (0 with [`SyncMode::Skip`]).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Blob files synced since open, those found at open included.
    pub fn blob_syncs(&self) -> u64 {
        self.blob_syncs.load(Ordering::Relaxed)
    }

    /// Makes everything sled flushed before this call durable, on a blocking
    /// thread. Call it after sled's flush.
    pub async fn sync(self: &Arc<Self>) -> Result<(), StoreError> {
        if self.mode == SyncMode::Skip {
            return Ok(());
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.sync_blocking())
            .await
            .map_err(|e| StoreError::Task(format!("disk sync: {e}")))?
    }

    /// [`Self::sync`] on this thread (for code already on a blocking thread).
    pub fn sync_blocking(&self) -> Result<(), StoreError> {
        if self.mode == SyncMode::Skip {
            return Ok(());
        }
        let started = Instant::now();
        // Blobs first: once the data file is synced, everything it points
        // at is on disk too.
        self.sync_blobs()?;
        self.data.sync_data().map_err(io_err(&self.data_path))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if let Some(observe) = &self.observer {
            observe(started.elapsed());
        }
        Ok(())
    }

    /// Syncs every blob file that is new or longer than when last synced,
    /// then the directory if one was new; forgets the removed ones.
    fn sync_blobs(&self) -> Result<(), StoreError> {
        let mut synced = self.blobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir_err = io_err(&self.blobs_dir);
        let mut present = Vec::new();
        let mut new_name = false;
        for entry in std::fs::read_dir(&self.blobs_dir).map_err(&dir_err)? {
            let entry = entry.map_err(&dir_err)?;
            let (name, path) = (entry.file_name(), entry.path());
            // The length before the sync: if sled is still writing the
            // blob, the next sync sees it longer and syncs it again.
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // sled removed it (garbage collection) since it was listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            let known = synced.get(&name).copied();
            if known != Some(len) {
                match File::open(&path) {
                    Ok(file) => file.sync_data().map_err(io_err(&path))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path)(e)),
                }
                self.blob_syncs.fetch_add(1, Ordering::Relaxed);
                new_name |= known.is_none();
                synced.insert(name.clone(), len);
            }
            present.push(name);
        }
        if new_name {
            sync_dir(&self.blobs_dir)?;
        }
        if synced.len() > present.len() {
            let present: std::collections::HashSet<_> = present.into_iter().collect();
            synced.retain(|name, _| present.contains(name));
        }
        Ok(())
    }
}
