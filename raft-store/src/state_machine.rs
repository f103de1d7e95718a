//! The Raft state machine on sled: applies committed entries to the
//! [`ClusterState`], persists it, builds and installs snapshots, and publishes
//! every new state to the node through a [`StateWatch`].
//!
//! # On disk (tree `sm`)
//! - `meta`: last applied log id, membership, config index, first sequence
//!   number of the request-id memory;
//! - `route/<name>`, `chaos/<name>`: one key per route and policy;
//! - `recent/<seq, big-endian u64>`: one key per remembered request id;
//! - `snapshot`: the current snapshot (metadata and bytes).
//!
//! One apply batch becomes one sled `Batch` holding the new `meta` and only
//! the keys the batch changed, so it is atomic and costs O(changes), not
//! O(state): writing the whole state per batch would rewrite the 10,000
//! remembered request ids (hundreds of KB, beyond sled's inline-value size)
//! on every write. Installing a snapshot rewrites the whole tree in one batch.
//!
//! Apply is not fsynced on its own: the log is the durable record, and a
//! state machine that restarts behind is brought forward by re-applying the
//! log. Building or installing a snapshot flushes before openraft may purge
//! the log it covers.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec::{decode, encode};
use crate::command::{Response, Target};
use crate::error::{StoreError, storage_err};
use crate::recent::RecentRequests;
use crate::snapshot::{SnapshotEnvelope, StoredSnapshot};
use crate::state::ClusterState;
use crate::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const SM_TREE: &str = "sm";
const KEY_META: &[u8] = b"meta";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const ROUTE_PREFIX: &str = "route/";
const CHAOS_PREFIX: &str = "chaos/";
const RECENT_PREFIX: &[u8] = b"recent/";

/// The state machine's position, persisted under `meta`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SmMeta {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    index: u64,
    recent_first_seq: u64,
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
    meta: SmMeta,
    /// The whole state, request ids included, changed in place by `apply`
    /// (cloning it per batch, with up to 10,000 remembered request ids, cost
    /// more than the rest of a write).
    state: ClusterState,
    watch: StateWatch,
}

/// Builds a snapshot of the state as it was when the builder was made.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: sled::Db,
    tree: sled::Tree,
    state: Arc<ClusterState>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
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

fn route_key(name: &str) -> Vec<u8> {
    format!("{ROUTE_PREFIX}{name}").into_bytes()
}

fn chaos_key(name: &str) -> Vec<u8> {
    format!("{CHAOS_PREFIX}{name}").into_bytes()
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
    /// Opens the state machine in `db`, loading the state it last persisted.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let tree = db.open_tree(SM_TREE)?;
        let (meta, state) = load(&tree)?;
        let watch = StateWatch { tx: Arc::new(watch::Sender::new(Arc::new(published(&state)))) };
        Ok(Self { db: db.clone(), tree, meta, state, watch })
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
        self.meta.last_applied
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

/// Reads `meta` and every object key back into a state.
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
        recent.push(dec::<(u128, Response)>(&k, &v)?);
    }
    state.recent = RecentRequests::from_parts(meta.recent_first_seq, recent);
    Ok((meta, state))
}

/// A batch that replaces the whole tree content (but the snapshot key) with
/// `state` and `meta`.
fn full_rewrite(tree: &sled::Tree, meta: &SmMeta, state: &ClusterState) -> Result<sled::Batch, StoreError> {
    let mut batch = sled::Batch::default();
    for prefix in [ROUTE_PREFIX.as_bytes(), CHAOS_PREFIX.as_bytes(), RECENT_PREFIX] {
        for k in tree.scan_prefix(prefix).keys() {
            batch.remove(k?);
        }
    }
    for (name, r) in &state.routes {
        batch.insert(route_key(name), enc("route", r)?);
    }
    for (name, p) in &state.chaos {
        batch.insert(chaos_key(name), enc("chaos policy", p)?);
    }
    for (i, entry) in state.recent.iter().enumerate() {
        batch
            .insert(recent_key(state.recent.first_seq().saturating_add(i as u64)), enc("request id", entry)?);
    }
    batch.insert(KEY_META, enc("state machine meta", meta)?);
    Ok(batch)
}

/// The objects one apply batch changed.
#[derive(Debug, Default)]
struct Changes {
    routes: BTreeSet<String>,
    chaos: BTreeSet<String>,
}

/// A batch writing the changes from `old_recent` (first, end) to `state`.
fn incremental(
    meta: &SmMeta,
    state: &ClusterState,
    changes: &Changes,
    old_recent: (u64, u64),
) -> Result<sled::Batch, StoreError> {
    let mut batch = sled::Batch::default();
    for name in &changes.routes {
        match state.routes.get(name) {
            Some(r) => batch.insert(route_key(name), enc("route", r)?),
            None => batch.remove(route_key(name)),
        }
    }
    for name in &changes.chaos {
        match state.chaos.get(name) {
            Some(p) => batch.insert(chaos_key(name), enc("chaos policy", p)?),
            None => batch.remove(chaos_key(name)),
        }
    }
    let (old_first, old_end) = old_recent;
    let (new_first, new_end) = (state.recent.first_seq(), state.recent.end_seq());
    for seq in old_first..new_first.min(old_end) {
        batch.remove(recent_key(seq));
    }
    for seq in old_end.max(new_first)..new_end {
        if let Some(entry) = state.recent.entry(seq) {
            batch.insert(recent_key(seq), enc("request id", entry)?);
        }
    }
    batch.insert(KEY_META, enc("state machine meta", meta)?);
    Ok(batch)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.meta.last_applied, self.meta.membership.clone()))
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
        // Applied in place: a failure below is a storage error, which stops
        // Raft on this node, so no half-applied state is ever served.
        let next = &mut self.state;
        let mut meta = self.meta.clone();
        let old_recent = (next.recent.first_seq(), next.recent.end_seq());
        let mut changes = Changes::default();
        let mut responses = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            meta.last_applied = Some(log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Internal { index: log_id.index },
                EntryPayload::Normal(req) => {
                    let response = next.apply(log_id.index, &req);
                    if matches!(response, Response::Applied { index, .. } if index == log_id.index) {
                        match req.command.target() {
                            Target::Route(name) => changes.routes.insert(name.to_owned()),
                            Target::Chaos(name) => changes.chaos.insert(name.to_owned()),
                        };
                    }
                    response
                }
                EntryPayload::Membership(m) => {
                    meta.membership = StoredMembership::new(Some(log_id), m);
                    Response::Internal { index: log_id.index }
                }
            };
            responses.push(response);
        }
        meta.index = next.index;
        meta.recent_first_seq = next.recent.first_seq();
        let err = storage_err::<StoreError>(ErrorSubject::StateMachine, ErrorVerb::Write);
        let batch = incremental(&meta, next, &changes, old_recent).map_err(err)?;
        self.tree.apply_batch(batch).map_err(storage_err(ErrorSubject::StateMachine, ErrorVerb::Write))?;
        self.meta = meta;
        self.publish();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            tree: self.tree.clone(),
            state: Arc::new(self.state.clone()),
            last_applied: self.meta.last_applied,
            membership: self.meta.membership.clone(),
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
        let sm_meta = SmMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            index: envelope.state.index,
            recent_first_seq: envelope.state.recent.first_seq(),
        };
        let write = || async {
            let mut batch = full_rewrite(&self.tree, &sm_meta, &envelope.state)?;
            batch.insert(KEY_SNAPSHOT, enc("snapshot", &StoredSnapshot { meta: meta.clone(), data })?);
            self.tree.apply_batch(batch)?;
            self.tree.flush_async().await?;
            Ok::<_, StoreError>(())
        };
        write().await.map_err(storage_err(subject(), ErrorVerb::Write))?;
        tracing::info!(snapshot = %meta.snapshot_id, index = envelope.state.index, "installed snapshot");
        self.meta = sm_meta;
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
        let envelope = SnapshotEnvelope {
            state: ClusterState::clone(&self.state),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        };
        let data = envelope.to_bytes().map_err(|e| err(StoreError::codec("snapshot", e)))?;
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
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.store(&stored)
            .await
            .map_err(storage_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write))?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = stored.data.len(), "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl SnapshotBuilder {
    /// Makes `stored` the current snapshot unless a newer one (installed
    /// meanwhile) is already there, then flushes.
    async fn store(&self, stored: &StoredSnapshot) -> Result<(), StoreError> {
        let new = enc("snapshot", stored)?;
        loop {
            let current = self.tree.get(KEY_SNAPSHOT)?;
            if let Some(cur) = &current {
                let cur: StoredSnapshot = dec(KEY_SNAPSHOT, cur)?;
                if cur.meta.last_log_id > stored.meta.last_log_id {
                    return Ok(());
                }
            }
            if self.tree.compare_and_swap(KEY_SNAPSHOT, current, Some(new.as_slice()))?.is_ok() {
                break;
            }
        }
        self.tree.flush_async().await?;
        Ok(())
    }
}
