//! The Raft state machine on sled: applies committed entries to the
//! [`ClusterState`] in memory, persists it as snapshots, builds and installs
//! them, and publishes every new state to the node through a [`StateWatch`].
//!
//! # On disk (tree `sm`)
//! - `snapshot`: the current snapshot (metadata and bytes): the whole state
//!   at its last log id.
//! - Written by versions before 2026-11-21 17:40, read when newer than the
//!   snapshot, removed by the next install: `meta` (last applied log id,
//!   membership, config index, first sequence number of the request-id
//!   memory), `route/<name>`, `chaos/<name>`, and
//!   `recent/<seq, big-endian u64>`.
//!
//! Apply writes nothing: the Raft log is the durable record. On open the
//! state machine starts from its snapshot, and openraft re-applies the log
//! after it (up to the persisted commit index at once, the rest once a
//! leader is known). A snapshot is built every few thousand entries, so the
//! replay is short. Persisting the state on every apply cost four sled
//! operations per write on every node, about a third of a write's CPU
//! (ops/bench: 2,157 -> 2,967 writes/s at c=32 without them). Building or
//! installing a snapshot flushes and syncs ([`DiskSync`]: the snapshot, over
//! sled's blob threshold, is a file of its own) before openraft may purge the
//! log it covers.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec::{decode, encode};
use crate::command::Response;
use crate::disk_sync::DiskSync;
use crate::error::{StoreError, storage_err};
use crate::recent::{RecentRequests, Remembered};
use crate::snapshot::{SnapshotEnvelope, StoredSnapshot};
use crate::state::ClusterState;
use crate::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const SM_TREE: &str = "sm";
const KEY_META: &[u8] = b"meta";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const ROUTE_PREFIX: &str = "route/";
const CHAOS_PREFIX: &str = "chaos/";
const RECENT_PREFIX: &[u8] = b"recent/";

/// The state machine's position as versions that persisted every apply
/// wrote it under `meta` (read only, by [`load`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SmMeta {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    index: u64,
    recent_first_seq: u64,
}

impl SmMeta {
    pub(crate) fn from_parts(
        last_applied: Option<LogId>,
        membership: StoredMembership,
        index: u64,
        recent_first_seq: u64,
    ) -> Self {
        Self { last_applied, membership, index, recent_first_seq }
    }
}

/// A cheap, cloneable view of the applied config for the node: the current
/// state and a watch that fires after every applied batch and every installed
/// snapshot.
#[derive(Debug, Clone)]
pub struct StateWatch {
    tx: Arc<watch::Sender<Arc<ClusterState>>>,
}

impl StateWatch {
    /// A receiver of every new state (it starts with the current one marked seen).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.tx.subscribe()
    }

    /// The state as of the last applied batch.
    pub fn state(&self) -> Arc<ClusterState> {
        self.tx.borrow().clone()
    }
}

/// The sled-backed Raft state machine.
#[derive(Debug)]
pub struct StateMachineStore {
    db: sled::Db,
    tree: sled::Tree,
    /// The last applied log id and the membership in force there.
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// The whole state, request ids included, changed in place by `apply`
    /// (cloning it per batch, with up to 10,000 remembered request ids, cost
    /// more than the rest of a write).
    state: ClusterState,
    watch: StateWatch,
    sync: Arc<DiskSync>,
}

/// Builds a snapshot of the state as it was when the builder was made.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: sled::Db,
    tree: sled::Tree,
    state: Arc<ClusterState>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    sync: Arc<DiskSync>,
}

/// What readers see: the config and its index, without the request ids
/// (only the state machine needs them), so publishing never copies them.
fn published(state: &ClusterState) -> ClusterState {
    ClusterState {
        routes: state.routes.clone(),
        chaos: state.chaos.clone(),
        index: state.index,
        recent: crate::recent::RecentRequests::default(),
    }
}

fn recent_key(seq: u64) -> Vec<u8> {
    [RECENT_PREFIX, &seq.to_be_bytes()].concat()
}

fn enc<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    encode(value).map_err(|e| StoreError::codec(what, e))
}

fn dec<T: crate::codec::Persisted>(what: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    decode(bytes)
        .map_err(|e| StoreError::codec(format!("state machine key {}", String::from_utf8_lossy(what)), e))
}

impl StateMachineStore {
    /// Opens the state machine in `db`, loading the state it last persisted;
    /// `sync` is the [`DiskSync`] of `db`'s directory.
    pub fn open(db: &sled::Db, sync: Arc<DiskSync>) -> Result<Self, StoreError> {
        let tree = db.open_tree(SM_TREE)?;
        let (meta, mut state) = load(&tree)?;
        let (mut last_applied, mut membership) = (meta.last_applied, meta.membership);
        let snapshot = match tree.get(KEY_SNAPSHOT)? {
            None => None,
            Some(v) => Some(dec::<StoredSnapshot>(KEY_SNAPSHOT, &v)?),
        };
        if let Some(snapshot) = snapshot.filter(|s| s.meta.last_log_id > last_applied) {
            let envelope = SnapshotEnvelope::from_bytes(&snapshot.data)
                .map_err(|e| StoreError::codec("stored snapshot", e))?;
            (last_applied, membership) = (snapshot.meta.last_log_id, snapshot.meta.last_membership);
            state = envelope.state;
        }
        let watch = StateWatch { tx: Arc::new(watch::Sender::new(Arc::new(published(&state)))) };
        Ok(Self { db: db.clone(), tree, last_applied, membership, state, watch, sync })
    }

    /// A handle for the node to read and watch the applied config; keep it
    /// before handing the store to `Raft::new`.
    pub fn watch(&self) -> StateWatch {
        self.watch.clone()
    }

    /// The whole state as of the last applied batch, request ids included
    /// (a copy: for tests and tools; the node reads [`StateWatch`]).
    pub fn state(&self) -> Arc<ClusterState> {
        Arc::new(self.state.clone())
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    /// Shows the current state to the node's readers.
    fn publish(&self) {
        self.watch.tx.send_replace(Arc::new(published(&self.state)));
    }

    fn read_current_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        match self.tree.get(KEY_SNAPSHOT)? {
            None => Ok(None),
            Some(v) => dec(KEY_SNAPSHOT, &v).map(Some),
        }
    }
}

/// Reads the keys of the per-apply layout (versions before snapshots were
/// the only persisted state) back into a state.
fn load(tree: &sled::Tree) -> Result<(SmMeta, ClusterState), StoreError> {
    let meta: SmMeta = match tree.get(KEY_META)? {
        None => SmMeta::default(),
        Some(v) => dec(KEY_META, &v)?,
    };
    let mut state = ClusterState { index: meta.index, ..Default::default() };
    for kv in tree.scan_prefix(ROUTE_PREFIX) {
        let (k, v) = kv?;
        let route: crate::state::StoredRoute = dec(&k, &v)?;
        state.routes.insert(route.spec.name.clone(), route);
    }
    for kv in tree.scan_prefix(CHAOS_PREFIX) {
        let (k, v) = kv?;
        let policy: crate::state::StoredPolicy = dec(&k, &v)?;
        state.chaos.insert(policy.policy.name.clone(), policy);
    }
    let mut recent = Vec::new();
    for (n, kv) in tree.scan_prefix(RECENT_PREFIX).enumerate() {
        let (k, v) = kv?;
        if k.as_ref() != recent_key(meta.recent_first_seq.saturating_add(n as u64)).as_slice() {
            return Err(StoreError::Corrupt(format!(
                "request-id memory is not contiguous from sequence {}",
                meta.recent_first_seq
            )));
        }
        // Written by versions 1 and 2 only: no digest.
        let (id, response) = dec::<(u128, Response)>(&k, &v)?;
        recent.push(Remembered::new(id, None, response));
    }
    state.recent = RecentRequests::from_parts(meta.recent_first_seq, recent);
    Ok((meta, state))
}

/// A batch removing the keys of the per-apply layout.
fn remove_legacy(tree: &sled::Tree) -> Result<sled::Batch, StoreError> {
    let mut batch = sled::Batch::default();
    for prefix in [ROUTE_PREFIX.as_bytes(), CHAOS_PREFIX.as_bytes(), RECENT_PREFIX] {
        for k in tree.scan_prefix(prefix).keys() {
            batch.remove(k?);
        }
    }
    batch.remove(KEY_META);
    Ok(batch)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(Vec::new());
        }
        // Applied in place, in memory only (see the module docs).
        let mut responses = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            self.last_applied = Some(log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Internal { index: log_id.index },
                EntryPayload::Normal(req) => self.state.apply(log_id.index, &req),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(log_id), m);
                    Response::Internal { index: log_id.index }
                }
            };
            responses.push(response);
        }
        self.publish();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            tree: self.tree.clone(),
            state: Arc::new(self.state.clone()),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            sync: Arc::clone(&self.sync),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let envelope = SnapshotEnvelope::from_bytes(&data).map_err(|e| {
            StoreError::codec("received snapshot", e).into_storage(subject(), ErrorVerb::Read)
        })?;
        if envelope.last_applied != meta.last_log_id {
            let msg = format!(
                "snapshot {} claims last log id {:?} but holds state at {:?}",
                meta.snapshot_id, meta.last_log_id, envelope.last_applied
            );
            return Err(StoreError::Corrupt(msg).into_storage(subject(), ErrorVerb::Read));
        }
        let write = || async {
            let mut batch = remove_legacy(&self.tree)?;
            batch.insert(KEY_SNAPSHOT, enc("snapshot", &StoredSnapshot { meta: meta.clone(), data })?);
            self.tree.apply_batch(batch)?;
            self.tree.flush_async().await?;
            self.sync.sync().await
        };
        write().await.map_err(storage_err(subject(), ErrorVerb::Write))?;
        tracing::info!(snapshot = %meta.snapshot_id, index = envelope.state.index, "installed snapshot");
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.state = envelope.state;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = self
            .read_current_snapshot()
            .map_err(storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let err = storage_err::<StoreError>(ErrorSubject::Snapshot(None), ErrorVerb::Write);
        // Copy and encode on a blocking thread: with ten thousand request
        // ids this takes milliseconds, which on the runtime's thread would
        // hold up RaftCore and every write behind it.
        let (state, last_applied, membership) =
            (Arc::clone(&self.state), self.last_applied, self.membership.clone());
        let data = tokio::task::spawn_blocking(move || {
            SnapshotEnvelope { state: ClusterState::clone(&state), last_applied, membership }.to_bytes()
        })
        .await
        .map_err(|e| err(StoreError::Task(format!("snapshot encoding: {e}"))))?
        .map_err(|e| err(StoreError::codec("snapshot", e)))?;
        let unique =
            self.db.generate_id().map_err(storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{unique}", l.leader_id, l.index),
            None => format!("none-{unique}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let stored = Arc::new(StoredSnapshot { meta: meta.clone(), data });
        // sled writes a value this large to its own blob file, synchronously:
        // keep that off the runtime's thread too.
        let (tree, to_store, sync) = (self.tree.clone(), Arc::clone(&stored), Arc::clone(&self.sync));
        tokio::task::spawn_blocking(move || store_snapshot(&tree, &to_store, &sync))
            .await
            .map_err(|e| StoreError::Task(format!("snapshot store: {e}")))
            .and_then(|stored| stored)
            .map_err(storage_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write))?;
        let stored = Arc::try_unwrap(stored).unwrap_or_else(|shared| StoredSnapshot::clone(&shared));
        tracing::info!(snapshot = %meta.snapshot_id, bytes = stored.data.len(), "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

/// Makes `stored` the current snapshot in `tree` unless a newer one
/// (installed meanwhile) is already there, then flushes and syncs. Blocking.
fn store_snapshot(tree: &sled::Tree, stored: &StoredSnapshot, sync: &DiskSync) -> Result<(), StoreError> {
    let new = enc("snapshot", stored)?;
    loop {
        let current = tree.get(KEY_SNAPSHOT)?;
        if let Some(cur) = &current {
            let cur: StoredSnapshot = dec(KEY_SNAPSHOT, cur)?;
            if cur.meta.last_log_id > stored.meta.last_log_id {
                return Ok(());
            }
        }
        if tree.compare_and_swap(KEY_SNAPSHOT, current, Some(new.as_slice()))?.is_ok() {
            break;
        }
    }
    tree.flush()?;
    sync.sync_blocking()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StoredRoute;
    use openraft::CommittedLeaderId;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    /// A state machine tree as versions that persisted every apply left it.
    /// `value` as format version 2 wrote it (the per-apply layout existed
    /// only in versions 1 and 2).
    fn enc_v2<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = vec![0, 2];
        bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard()).expect("encode");
        out
    }

    /// Writes the per-apply layout of versions 1 and 2 at `at` (its route is
    /// the version-2 fixture's) and returns the state it holds.
    fn write_legacy(tree: &sled::Tree, at: u64) -> Result<ClusterState, StoreError> {
        let text = include_str!("../tests/fixtures/stored_route_v2.hex").trim();
        let route_bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let route: StoredRoute = dec(b"route/web", &route_bytes)?;
        let mut state = ClusterState { index: at, ..Default::default() };
        state.routes.insert(route.spec.name.clone(), route);
        state.recent.insert(Remembered::new(5, None, Response::Applied { index: at, revision: at }));
        // SmMeta: last applied, membership (empty), index, first sequence.
        let meta = (Some(log_id(at)), StoredMembership::default(), at, 0u64);
        tree.insert(KEY_META, enc_v2(&meta))?;
        tree.insert(format!("{ROUTE_PREFIX}web"), route_bytes)?;
        // That layout kept (id, response) pairs: 5, Applied (0) { at, at }.
        let pair = (5u128, 0u8, at, at);
        tree.insert(recent_key(state.recent.first_seq()), enc_v2(&pair))?;
        Ok(state)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_per_apply_layout_of_older_versions_is_read_until_a_snapshot_is_newer()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path()).open()?;
        let sync = Arc::new(DiskSync::open(dir.path(), crate::SyncMode::Fdatasync)?);
        let legacy = write_legacy(&db.open_tree(SM_TREE)?, 7)?;
        let mut sm = StateMachineStore::open(&db, Arc::clone(&sync))?;
        assert_eq!(*sm.state(), legacy, "no snapshot: the old layout is the state");
        assert_eq!(sm.applied_state().await?.0, Some(log_id(7)));
        // A newer snapshot wins over the old keys, and installing one
        // removes them.
        let mut newer = legacy.clone();
        newer.index = 9;
        newer.routes.clear();
        let envelope = SnapshotEnvelope {
            state: newer.clone(),
            last_applied: Some(log_id(9)),
            membership: Default::default(),
        };
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(9)),
            last_membership: Default::default(),
            snapshot_id: "s9".into(),
        };
        sm.install_snapshot(&meta, Box::new(Cursor::new(envelope.to_bytes()?))).await?;
        drop(sm);
        let sm = StateMachineStore::open(&db, sync)?;
        assert_eq!(*sm.state(), newer);
        let tree = db.open_tree(SM_TREE)?;
        assert!(tree.get(KEY_META)?.is_none() && tree.scan_prefix(RECENT_PREFIX).next().is_none());
        Ok(())
    }
}
