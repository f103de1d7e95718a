//! The Raft log and vote on sled: tree `log` holds entries under big-endian
//! u64 index keys (so iteration follows index order), tree `meta` holds the
//! vote, the last purged log id and the committed hint.
//!
//! Durability: `append` inserts the entries (readable at once) and reports
//! them flushed to openraft only after `flush_async` (fsync) completes;
//! `save_vote` returns only once the vote is on disk. The committed hint is
//! written at most every [`COMMITTED_EVERY`] by a background task (and when
//! the store is dropped): one sled write per commit cost about a fifth of a
//! write's CPU, and the hint only tells a restarting node how far it may
//! re-apply before it hears from a leader. Both trees live in one
//! sled `Db`, whose single log makes a crash recover to a prefix of the
//! writes, so `purge` can record `last_purged` and then delete.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogId, RaftLogReader};

use crate::codec::{decode, encode};
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

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    /// Opens the log store's trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let meta = db.open_tree(META_TREE)?;
        let committed = Arc::new(CommittedHint {
            meta: meta.clone(),
            pending: Mutex::new(None),
            writer: OnceLock::new(),
        });
        Ok(Self { log: db.open_tree(LOG_TREE)?, meta, committed })
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

    /// Removes every entry with an index in `range`, in one atomic batch.
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for k in self.log.range(range).keys() {
            batch.remove(k?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.log.flush_async().await?;
        Ok(())
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
        };
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
            self.meta.flush_async().await?;
            Ok::<_, StoreError>(())
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
        let mut batch = sled::Batch::default();
        for entry in entries {
            let id = *entry.get_log_id();
            let bytes = encode(&entry).map_err(|e| {
                StoreError::codec(format!("log entry {id}"), e)
                    .into_storage(ErrorSubject::Log(id), ErrorVerb::Write)
            })?;
            batch.insert(&key(id.index), bytes);
        }
        self.log.apply_batch(batch).map_err(storage_err(ErrorSubject::Logs, ErrorVerb::Write))?;
        // Readable now; durable (and reported so) once fsync returns.
        let flushed = self.flush().await.map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the raft log");
        self.remove_range(key(log_id.index)..).map_err(storage_err(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the raft log");
        let purge = || {
            self.write_meta(KEY_LAST_PURGED, &log_id)?;
            self.remove_range(..=key(log_id.index))
        };
        purge().map_err(storage_err(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}
