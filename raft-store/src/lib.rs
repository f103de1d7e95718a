//! ferry-raft-store: the Raft storage layer of ferry — openraft's type
//! configuration, a sled-backed log store and state machine, snapshots, and
//! the replicated config schema with its deterministic apply logic.
//!
//! # Layout
//! - [`types`]: [`TypeConfig`], [`NodeInfo`] and openraft type aliases.
//! - [`command`]: [`Command`], [`Request`], [`Response`], [`StateError`].
//! - [`state`]: [`ClusterState`] and the pure [`check`]/apply logic.
//! - [`recent`]: the bounded memory of request ids for idempotent retries.
//! - [`digest`]: the digest of a command, kept with its request id.
//! - [`log_store`]: [`LogStore`], the Raft log and vote on sled.
//! - [`disk_sync`]: [`DiskSync`], the `fdatasync` after sled's flush.
//! - [`state_machine`]: [`StateMachineStore`] and [`StateWatch`].
//! - [`snapshot`]: the snapshot envelope.
//! - [`codec`]: the versioned encoding of everything persisted.
//! - [`legacy`]: format versions 1 and 2 of the types that changed since.
//! - [`config`]: [`raft_config`] with ferry's snapshot policy.
//! - [`election`]: the election timer that replaces openraft's.
//! - [`leader`]: [`known_leader`], who leads as this node can truthfully say.
//! - [`error`]: [`StoreError`], the error of the stores.
//!
//! # Use
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let db = ferry_raft_store::open_db("data/raft".as_ref(), std::time::Duration::from_secs(5))?;
//! let sync = ferry_raft_store::DiskSync::open("data/raft".as_ref(), ferry_raft_store::SyncMode::Fdatasync)?;
//! let (log_store, state_machine) = ferry_raft_store::open(&db, &std::sync::Arc::new(sync))?;
//! let applied = state_machine.watch(); // keep before handing the store to Raft
//! let mut changes = applied.subscribe();
//! // Raft::new(id, config, network, log_store, state_machine).await?;
//! changes.changed().await?;
//! println!("config index {}", applied.state().index);
//! # Ok(()) }
//! ```
//!
//! The routes are [`ferry_client::RouteSpec`] and the policies
//! [`ferry_client::chaos::ChaosPolicy`]: one schema and one validator for the
//! admin API and the replicated state.

pub mod codec;
pub mod command;
pub mod config;
pub mod digest;
pub mod disk_sync;
pub mod election;
pub mod error;
pub mod leader;
pub mod legacy;
pub mod log_store;
pub mod recent;
pub mod snapshot;
pub mod state;
pub mod state_machine;
pub mod types;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use command::{Command, Request, Response, StateError, Target};
pub use config::{RaftTimers, raft_config};
pub use disk_sync::{DiskSync, SyncMode};
pub use error::StoreError;
pub use leader::{RaftMetrics, is_leader, known_leader};
pub use log_store::LogStore;
pub use recent::RECENT_CAPACITY;
pub use state::{ClusterState, StoredPolicy, StoredRoute, check};
pub use state_machine::{StateMachineStore, StateWatch};
pub use types::{NodeId, NodeInfo, TypeConfig};

/// Opens (or creates) the sled database at `path`.
///
/// sled locks the directory. Inside one process the lock can outlive a
/// `Raft::shutdown()` for a moment (openraft's workers drop their store
/// handles asynchronously), so a lock failure is retried every 20 ms for up
/// to `lock_wait`. This blocks the thread: call it at startup or from
/// `spawn_blocking`. Open the database once per process and share it.
pub fn open_db(path: &Path, lock_wait: Duration) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + lock_wait;
    loop {
        match sled::Config::new().path(path).open() {
            Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// sled reports a held lock as `Io(Other, "could not acquire lock on …")`.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Opens the log store and the state machine, both in `db`; `sync` is the
/// [`DiskSync`] of `db`'s directory, which both call after sled's flush.
pub fn open(db: &sled::Db, sync: &Arc<DiskSync>) -> Result<(LogStore, StateMachineStore), StoreError> {
    Ok((LogStore::open(db, Arc::clone(sync))?, StateMachineStore::open(db, Arc::clone(sync))?))
}
