//! The stores sync sled's files (`fdatasync`, [`DiskSync`]) before they tell
//! Raft something is on disk: an append is reported flushed only after a
//! sync that began after it, a vote is saved only after one, a blob file
//! sled wrote for a large value is synced with it, and `SyncMode::Skip` (the
//! fault switch) syncs nothing; a snapshot is synced before openraft may
//! purge the log it covers.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ferry_raft_store::types::{Entry, LogId, Vote};
use ferry_raft_store::{DiskSync, LogStore, SyncMode};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload};

/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn blank(index: u64) -> Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Blank }
}

fn open(path: &Path, sync: DiskSync) -> Result<(sled::Db, LogStore, Arc<DiskSync>)> {
    let db = ferry_raft_store::open_db(path, WAIT)?;
    let sync = Arc::new(sync);
    let log = LogStore::open(&db, Arc::clone(&sync))?;
    Ok((db, log, sync))
}

/// A sync observer that says when a sync has completed and then holds the
/// syncing thread until released, so a test can look at what the store did
/// while its sync was not yet over.
struct Gate {
    entered: Receiver<()>,
    release: Sender<()>,
}

fn gated(path: &Path) -> Result<(DiskSync, Gate)> {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
    let sync = DiskSync::open(path, SyncMode::Fdatasync)?.with_observer(Box::new(move |_| {
        let _ = entered_tx.lock().map(|tx| tx.send(()));
        let _ = release_rx.lock().map(|rx| rx.recv_timeout(WAIT));
    }));
    Ok((sync, Gate { entered, release }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_is_reported_flushed_only_after_the_sync() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = ferry_raft_store::open_db(dir.path(), WAIT)?;
    drop(db);
    let (sync, gate) = gated(dir.path())?;
    let (_db, mut log, sync) = open(dir.path(), sync)?;
    let append = tokio::spawn(async move { log.blocking_append([blank(1), blank(2)]).await });
    let entered = tokio::task::spawn_blocking(move || gate.entered.recv_timeout(WAIT).map(|()| gate)).await?;
    let gate = entered.context("the append's flush never synced the data file")?;
    // The sync has run but is not over: the append must not be reported yet.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(!append.is_finished(), "the append was reported flushed before its sync was over");
    gate.release.send(())?;
    tokio::time::timeout(WAIT, append).await.context("append not reported after its sync")???;
    ensure!(sync.syncs() >= 1, "syncs: {}", sync.syncs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_is_saved_only_after_a_sync() -> Result<()> {
    let dir = tempfile::tempdir()?;
    drop(ferry_raft_store::open_db(dir.path(), WAIT)?);
    let (_db, mut log, sync) = open(dir.path(), DiskSync::open(dir.path(), SyncMode::Fdatasync)?)?;
    ensure!(sync.syncs() == 0, "the syncs at open are not counted");
    log.save_vote(&Vote::new(1, 1)).await?;
    ensure!(sync.syncs() == 1, "syncs after a vote: {}", sync.syncs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_file_sled_wrote_for_a_large_value_is_synced_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = ferry_raft_store::open_db(dir.path(), WAIT)?;
    let sync = DiskSync::open(dir.path(), SyncMode::Fdatasync)?;
    let before = sync.blob_syncs();
    // Over sled's blob threshold (a quarter of its 512 KiB segment).
    db.insert("large", vec![7u8; 300 * 1024])?;
    db.flush()?;
    let blobs = std::fs::read_dir(dir.path().join("blobs"))?.count();
    ensure!(blobs >= 1, "sled wrote no blob file for a 300 KiB value");
    sync.sync_blocking()?;
    ensure!(sync.blob_syncs() > before, "the new blob file was not synced");
    let after = sync.blob_syncs();
    sync.sync_blocking()?;
    ensure!(sync.blob_syncs() == after, "an unchanged blob file was synced again");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_sync_reports_appends_flushed_without_syncing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    drop(ferry_raft_store::open_db(dir.path(), WAIT)?);
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    let sync = DiskSync::open(dir.path(), SyncMode::Skip)?.with_observer(Box::new(move |_| {
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    let (_db, mut log, sync) = open(dir.path(), sync)?;
    tokio::time::timeout(WAIT, log.blocking_append([blank(1)])).await??;
    log.save_vote(&Vote::new(1, 1)).await?;
    ensure!(sync.syncs() == 0 && calls.load(std::sync::atomic::Ordering::Relaxed) == 0, "skip-sync synced");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_snapshot_is_synced_before_it_is_returned() -> Result<()> {
    use openraft::RaftSnapshotBuilder;
    use openraft::storage::RaftStateMachine;
    let dir = tempfile::tempdir()?;
    let db = ferry_raft_store::open_db(dir.path(), WAIT)?;
    let sync = Arc::new(DiskSync::open(dir.path(), SyncMode::Fdatasync)?);
    let mut sm = ferry_raft_store::StateMachineStore::open(&db, Arc::clone(&sync))?;
    sm.apply([blank(1)]).await?;
    sm.get_snapshot_builder().await.build_snapshot().await?;
    ensure!(sync.syncs() == 1, "syncs after a snapshot: {}", sync.syncs());
    Ok(())
}
