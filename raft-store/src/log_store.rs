//! The Raft log and vote on sled: tree `log` holds entries under big-endian
//! u64 index keys (so iteration follows index order), tree `meta` holds the
//! vote, the last purged log id and the committed hint.
//!
//! Durability: `append` inserts the entries (readable at once) and returns;
//! a flusher task reports them flushed to openraft only after a flush that
//! began after they were inserted has completed: sled's `flush_async`, then
//! an `fdatasync` of sled's files ([`DiskSync`]; sled's flush alone does not
//! survive a power cut). It takes every append queued while its last flush
//! ran and covers them with one (group commit), completing them in append
//! order. An fsync inside
//! `append` would block RaftCore's task for its whole duration, and a sled
//! batch per append woke sled's whole thread pool (its threads took more
//! CPU than all the rest of the node). openraft 0.9 itself still waits for
//! each append's callback before its next message, so a leader commits one
//! entry per fsync; the node's write batcher puts many writes in one entry.
//! `save_vote` returns only once the vote is on disk (flushed and synced).
//! Truncation and purge are not synced on their own: sled recovers a prefix
//! of its writes, and the next append's sync covers them (a truncation lost
//! with the entries after it leaves the follower as it was before the
//! leader's request; a purge lost leaves entries its snapshot covers). The committed hint is
//! written at most every [`COMMITTED_EVERY`] by a background task (and when
//! the store is dropped): one sled write per commit cost about a fifth of a
//! write's CPU, and the hint only tells a restarting node how far it may
//! re-apply before it hears from a leader. Both trees live in one
//! sled `Db`, whose single log makes a crash recover to a prefix of the
//! writes, so `purge` can record `last_purged` and then delete.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogId, RaftLogReader};

use crate::codec::{decode, encode};
use crate::disk_sync::DiskSync;
use crate::error::{StoreError, storage_err};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOG_TREE: &str = "log";
const META_TREE: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// How often a new committed hint is written.
pub const COMMITTED_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The sled-backed Raft log store. Cloning is cheap: clones share the trees
/// (openraft uses a clone as its log reader).
#[derive(Debug, Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    committed: Arc<CommittedHint>,
    /// The flusher task's queue, shared by the clones; the task starts at
    /// the first append (inside the runtime) and ends with the last clone.
    flusher: Arc<OnceLock<Flusher>>,
    /// The first index not purged (0: none purged). Reads start here, so
    /// entries a purge still has to delete in the background are never
    /// served.
    readable_from: Arc<AtomicU64>,
    /// Syncs sled's files after each flush.
    sync: Arc<DiskSync>,
}

type Flusher = tokio::sync::mpsc::UnboundedSender<LogFlushed<TypeConfig>>;

/// Reports queued appends flushed: one flush and sync, begun after they
/// were all inserted, for every append that queued while the previous one
/// ran.
async fn flusher(
    log: sled::Tree,
    sync: Arc<DiskSync>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>,
) {
    let mut waiting = Vec::new();
    while queue.recv_many(&mut waiting, 1024).await > 0 {
        let result = flush_and_sync(&log, &sync).await.map_err(|e| e.to_string());
        for callback in waiting.drain(..) {
            callback.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
    }
}

/// The committed hint openraft saved last and has not been written yet.
#[derive(Debug)]
struct CommittedHint {
    meta: sled::Tree,
    pending: Mutex<Option<Option<LogId>>>,
    writer: OnceLock<()>,
}

impl CommittedHint {
    fn pending(&self) -> std::sync::MutexGuard<'_, Option<Option<LogId>>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the pending hint, if any.
    fn write(&self) -> Result<(), StoreError> {
        let Some(committed) = self.pending().take() else { return Ok(()) };
        let bytes = encode(&committed).map_err(|e| StoreError::codec("committed", e))?;
        self.meta.insert(KEY_COMMITTED, bytes)?;
        Ok(())
    }
}

impl Drop for CommittedHint {
    fn drop(&mut self) {
        if let Err(e) = self.write() {
            tracing::warn!(error = %e, "could not write the committed hint");
        }
    }
}

/// Writes `hint` every [`COMMITTED_EVERY`] while a store holds it.
async fn write_committed(hint: Weak<CommittedHint>) {
    loop {
        tokio::time::sleep(COMMITTED_EVERY).await;
        let Some(hint) = hint.upgrade() else { return };
        if let Err(e) = hint.write() {
            tracing::warn!(error = %e, "could not write the committed hint");
        }
    }
}

/// Removes every entry of `log` with an index in `range`, in one atomic batch.
fn remove_range(log: &sled::Tree, range: impl RangeBounds<[u8; 8]>) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for k in log.range(range).keys() {
        batch.remove(k?);
    }
    log.apply_batch(batch)?;
    Ok(())
}

/// Removes every entry of `log` with an index in `range`, one by one. A
/// sled batch holds the database's write lock for all of it (tens of
/// milliseconds for a purge), and every append waits for that lock; single
/// removes take it shared, briefly.
fn remove_each(log: &sled::Tree, range: impl RangeBounds<[u8; 8]>) -> Result<(), StoreError> {
    for k in log.range(range).keys() {
        log.remove(k?)?;
    }
    Ok(())
}

/// sled's flush of everything written so far, then the sync that makes it
/// survive a power cut.
async fn flush_and_sync(tree: &sled::Tree, sync: &Arc<DiskSync>) -> Result<(), StoreError> {
    tree.flush_async().await?;
    sync.sync().await
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    /// Opens the log store's trees in `db`; `sync` is the [`DiskSync`] of
    /// `db`'s directory.
    pub fn open(db: &sled::Db, sync: Arc<DiskSync>) -> Result<Self, StoreError> {
        let meta = db.open_tree(META_TREE)?;
        let committed = Arc::new(CommittedHint {
            meta: meta.clone(),
            pending: Mutex::new(None),
            writer: OnceLock::new(),
        });
        let mut store = Self {
            log: db.open_tree(LOG_TREE)?,
            meta,
            committed,
            flusher: Arc::default(),
            readable_from: Arc::default(),
            sync,
        };
        let purged: Option<LogId> = store.read_meta(KEY_LAST_PURGED)?;
        store.readable_from = Arc::new(AtomicU64::new(purged.map_or(0, |p| p.index + 1)));
        Ok(store)
    }

    fn read_meta<T: crate::codec::Persisted>(&self, k: &[u8]) -> Result<Option<T>, StoreError> {
        match self.meta.get(k)? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|e| StoreError::codec(String::from_utf8_lossy(k), e)),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, k: &[u8], value: &T) -> Result<(), StoreError> {
        let bytes = encode(value).map_err(|e| StoreError::codec(String::from_utf8_lossy(k), e))?;
        self.meta.insert(k, bytes)?;
        Ok(())
    }

    fn decode_entry(index_key: &[u8], value: &[u8]) -> Result<Entry, StoreError> {
        decode(value).map_err(|e| StoreError::codec(format!("log entry at key {index_key:?}"), e))
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.log.last()? {
            None => Ok(None),
            Some((k, v)) => Ok(Some(*Self::decode_entry(&k, &v)?.get_log_id())),
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        flush_and_sync(&self.log, &self.sync).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let read_err = storage_err::<StoreError>(ErrorSubject::Logs, ErrorVerb::Read);
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        }
        .max(self.readable_from.load(Ordering::Acquire));
        let mut out = Vec::new();
        for kv in self.log.range(key(start)..) {
            let (k, v) = kv.map_err(|e| read_err(e.into()))?;
            let entry = Self::decode_entry(&k, &v).map_err(&read_err)?;
            if !range.contains(&entry.get_log_id().index) {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let err = storage_err::<StoreError>(ErrorSubject::Logs, ErrorVerb::Read);
        let last_purged_log_id: Option<LogId> = self.read_meta(KEY_LAST_PURGED).map_err(&err)?;
        let last_log_id = self.last_entry_id().map_err(err)?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let write = || async {
            self.write_meta(KEY_VOTE, vote)?;
            flush_and_sync(&self.meta, &self.sync).await
        };
        write().await.map_err(storage_err(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE).map_err(storage_err(ErrorSubject::Vote, ErrorVerb::Read))
    }

    /// A hint only: it may lag the state machine's `last_applied`, which is
    /// the source of truth. Written within [`COMMITTED_EVERY`] (see the
    /// module docs), not flushed (the next append or vote flushes it).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *self.committed.pending() = Some(committed);
        self.committed.writer.get_or_init(|| {
            tokio::spawn(write_committed(Arc::downgrade(&self.committed)));
        });
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Some(pending) = *self.committed.pending() {
            return Ok(pending);
        }
        let committed: Option<Option<LogId>> =
            self.read_meta(KEY_COMMITTED).map_err(storage_err(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Plain inserts, not a sled batch: sled seals its IO buffer at the
        // end of every batch and hands the write to its thread pool, whose
        // seven idle threads all wake for each task. A leader appends one
        // entry per client write, so that was a pool task per write. The
        // entries go in index order, and sled recovers a prefix of its
        // writes, so a crash leaves a prefix of them: a valid log, and none
        // of it reported flushed.
        for entry in entries {
            let id = *entry.get_log_id();
            let bytes = encode(&entry).map_err(|e| {
                StoreError::codec(format!("log entry {id}"), e)
                    .into_storage(ErrorSubject::Log(id), ErrorVerb::Write)
            })?;
            self.log
                .insert(key(id.index), bytes)
                .map_err(|e| StoreError::from(e).into_storage(ErrorSubject::Log(id), ErrorVerb::Write))?;
        }
        // Readable now; durable (and reported so) once the flusher's next
        // flush and sync return.
        let queue = self.flusher.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(flusher(self.log.clone(), Arc::clone(&self.sync), rx));
            tx
        });
        if let Err(unsent) = queue.send(callback) {
            // The flusher is gone (the runtime is shutting down): flush here.
            let flushed = self.flush().await.map_err(|e| std::io::Error::other(e.to_string()));
            unsent.0.log_io_completed(flushed);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the raft log");
        remove_range(&self.log, key(log_id.index)..)
            .map_err(storage_err(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    /// Records the purge, hides the purged entries from reads at once, and
    /// deletes them one by one on a blocking thread. A purge removes
    /// thousands of entries (every `snapshot_logs`): openraft awaits it
    /// inside RaftCore, and as one sled batch it held sled's write lock, and
    /// so every append, for 20-30 ms. A purge cut
    /// short (crash, shutdown) leaves entries below `last_purged`, which
    /// nothing reads and the next purge deletes.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the raft log");
        self.write_meta(KEY_LAST_PURGED, &log_id)
            .map_err(storage_err(ErrorSubject::Logs, ErrorVerb::Delete))?;
        self.readable_from.fetch_max(log_id.index + 1, Ordering::AcqRel);
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = remove_each(&log, ..=key(log_id.index)) {
                tracing::warn!(%log_id, error = %e, "could not delete purged log entries (the next purge retries)");
            }
        });
        Ok(())
    }
}
