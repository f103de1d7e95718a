//! The sled stores across a reopen of the database, and snapshots moved
//! between stores: nothing acknowledged is lost, the state machine reopens
//! at its snapshot and re-applying the log after it gives back the state it
//! had, and a state installed from a snapshot equals the state it was built
//! from, request ids included.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ferry_client::RouteSpec;
use ferry_raft_store::log_store::COMMITTED_EVERY;
use ferry_raft_store::types::{Entry, LogId, Vote};
use ferry_raft_store::{
    ClusterState, Command, DiskSync, LogStore, NodeInfo, RECENT_CAPACITY, Request, Response,
    StateMachineStore, SyncMode,
};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};

fn open(path: &Path) -> Result<(sled::Db, LogStore, StateMachineStore)> {
    let db = ferry_raft_store::open_db(path, Duration::from_secs(10))?;
    let (log, sm) = ferry_raft_store::open(&db, &sync(path)?)?;
    Ok((db, log, sm))
}

fn sync(path: &Path) -> Result<Arc<DiskSync>> {
    Ok(Arc::new(DiskSync::open(path, SyncMode::Fdatasync)?))
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn route(name: &str, listen: &str) -> RouteSpec {
    serde_json::from_value(serde_json::json!({
        "name": name, "listen": listen,
        "backends": [{"id": "a", "addr": "127.0.0.1:9001"}]
    }))
    .expect("valid route json")
}

fn normal(index: u64, id: Option<u128>, command: Command) -> Entry {
    let request = match id {
        Some(id) => Request::with_id(id, command),
        None => Request::new(command),
    };
    Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(request) }
}

fn membership(index: u64) -> Entry {
    let nodes = BTreeMap::from([(
        1,
        NodeInfo {
            name: "n1".into(),
            cluster_addr: "127.0.0.1:7947".into(),
            admin_addr: "127.0.0.1:7948".into(),
        },
    )]);
    let m = Membership::new(vec![[1].into()], nodes);
    Entry { log_id: log_id(1, index), payload: EntryPayload::Membership(m) }
}

fn put(index: u64, id: Option<u128>, name: &str, port: u16) -> Entry {
    normal(index, id, Command::PutRoute { route: route(name, &format!(":{port}")), cas: None })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_vote_and_state_survive_a_reopen() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let entries = vec![
        Entry { log_id: log_id(1, 1), payload: EntryPayload::Blank },
        membership(2),
        put(3, Some(7), "web", 7000),
        put(4, None, "api", 7001),
        normal(5, None, Command::DeleteRoute { name: "api".into(), cas: Some(4) }),
        normal(6, Some(8), Command::DeleteRoute { name: "missing".into(), cas: None }),
    ];
    let vote = Vote::new_committed(1, 1);
    let (at_snapshot, before, membership_before) = {
        let (_db, mut log, mut sm) = open(dir.path())?;
        log.blocking_append(entries.clone()).await?;
        log.save_vote(&vote).await?;
        log.save_committed(Some(log_id(1, 6))).await?;
        let mut responses = sm.apply(entries[..3].to_vec()).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        let at_snapshot = sm.state();
        responses.extend(sm.apply(entries[3..].to_vec()).await?);
        assert_eq!(responses.len(), 6, "one response per entry");
        assert_eq!(responses[2], Response::Applied { index: 3, revision: 3 });
        assert!(matches!(responses[5], Response::Rejected { .. }));
        log.purge(log_id(1, 2)).await?;
        (at_snapshot, sm.state(), sm.applied_state().await?.1)
    };
    // Everything dropped: the lock is released and a reopen sees it all.
    let (_db, mut log, mut sm) = open(dir.path())?;
    assert_eq!(log.read_vote().await?, Some(vote));
    assert_eq!(log.read_committed().await?, Some(log_id(1, 6)));
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 6)));
    assert_eq!(log.try_get_log_entries(0..100).await?, entries[2..].to_vec());
    assert_eq!(log.try_get_log_entries(4..=5).await?, entries[3..5].to_vec());
    // The state machine wrote nothing per apply: it reopens at its snapshot,
    // and re-applying the log after it (as openraft does) gives back the
    // state it had, request ids included.
    let (applied, membership) = sm.applied_state().await?;
    assert_eq!((applied, &membership), (Some(log_id(1, 3)), &membership_before));
    assert_eq!(*sm.state(), *at_snapshot);
    sm.apply(log.try_get_log_entries(4..=6).await?).await?;
    assert_eq!(sm.applied_state().await?.0, Some(log_id(1, 6)));
    assert_eq!(*sm.state(), *before);
    assert_eq!(sm.state().index, 5);
    assert_eq!(sm.state().routes.keys().collect::<Vec<_>>(), ["web"]);
    assert!(sm.state().recent.get(7).is_some() && sm.state().recent.get(8).is_some());
    // Truncation is durable too.
    log.truncate(log_id(1, 5)).await?;
    drop((log, sm, _db));
    let (_db, mut log, _sm) = open(dir.path())?;
    assert_eq!(log.get_log_state().await?.last_log_id, Some(log_id(1, 4)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_memory_survives_a_reopen_in_the_snapshot() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let total = RECENT_CAPACITY as u64 + 250;
    let before = {
        let (_db, _log, mut sm) = open(dir.path())?;
        let mut index = 1;
        // Batches of varying size, so evictions cross batch boundaries.
        while index <= total {
            let n = (index % 997).max(1);
            let batch: Vec<Entry> = (index..(index + n).min(total + 1))
                .map(|i| put(i, Some(u128::from(i)), &format!("r{}", i % 5), 7000 + (i % 5) as u16))
                .collect();
            index += batch.len() as u64;
            sm.apply(batch).await?;
        }
        sm.get_snapshot_builder().await.build_snapshot().await?;
        sm.state()
    };
    assert_eq!(before.recent.len(), RECENT_CAPACITY);
    assert_eq!(before.recent.first_seq(), 250);
    let (_db, _log, sm) = open(dir.path())?;
    assert_eq!(*sm.state(), *before);
    assert_eq!(sm.last_applied(), Some(log_id(1, total)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_installed_elsewhere_equals_the_source_and_survives_a_reopen() -> Result<()> {
    let (src_dir, dst_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (_src_db, _src_log, mut src) = open(src_dir.path())?;
    src.apply(vec![membership(1), put(2, Some(1), "web", 7000), put(3, Some(2), "api", 7001)]).await?;
    let snapshot = src.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));

    let expected: ClusterState = (*src.state()).clone();
    {
        let (_db, _log, mut dst) = open(dst_dir.path())?;
        // The destination has its own stale config, which the snapshot replaces.
        dst.apply(vec![put(1, Some(99), "stale", 7100)]).await?;
        let watch = dst.watch();
        let mut changes = watch.subscribe();
        let mut buf = dst.begin_receiving_snapshot().await?;
        *buf = (*snapshot.snapshot).clone();
        dst.install_snapshot(&snapshot.meta, buf).await?;
        assert!(changes.has_changed()?, "installing a snapshot notifies subscribers");
        // Subscribers see the config; the request ids stay in the store.
        let seen = changes.borrow_and_update().clone();
        assert_eq!(
            (&seen.routes, &seen.chaos, seen.index),
            (&expected.routes, &expected.chaos, expected.index)
        );
        assert!(seen.recent.is_empty());
        assert_eq!(*dst.state(), expected);
        assert!(dst.state().recent.get(99).is_none());
        assert_eq!(dst.applied_state().await?, src.applied_state().await?);
        let current = dst.get_current_snapshot().await?.expect("a current snapshot");
        assert_eq!(current.meta, snapshot.meta);
    }
    let (_db, _log, mut dst) = open(dst_dir.path())?;
    assert_eq!(*dst.state(), expected);
    assert_eq!(dst.applied_state().await?.0, Some(log_id(1, 3)));
    assert_eq!(dst.get_current_snapshot().await?.map(|s| s.meta), Some(snapshot.meta));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_is_an_error_not_a_panic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_db, _log, mut sm) = open(dir.path())?;
    let mut src = sm.get_snapshot_builder().await;
    let snapshot = src.build_snapshot().await?;
    for junk in [vec![], vec![0, 9, 1, 2], vec![0, 1, 0xff, 0xff, 0xff]] {
        let mut buf = sm.begin_receiving_snapshot().await?;
        *buf.get_mut() = junk;
        assert!(sm.install_snapshot(&snapshot.meta, buf).await.is_err());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_hint_is_written_within_its_period_and_on_drop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, mut log, _sm) = open(dir.path())?;
    log.save_committed(Some(log_id(1, 3))).await?;
    assert_eq!(log.read_committed().await?, Some(log_id(1, 3)), "answered before it is written");
    // Another store on the same database reads only what was written.
    let deadline = tokio::time::Instant::now() + COMMITTED_EVERY * 20;
    loop {
        let mut other = LogStore::open(&db, sync(dir.path())?)?;
        if other.read_committed().await? == Some(log_id(1, 3)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not written within {:?}", COMMITTED_EVERY * 20);
        tokio::time::sleep(COMMITTED_EVERY / 5).await;
    }
    // A value saved just before the store goes away is written on drop.
    log.save_committed(Some(log_id(1, 4))).await?;
    drop((log, _sm));
    let mut other = LogStore::open(&db, sync(dir.path())?)?;
    assert_eq!(other.read_committed().await?, Some(log_id(1, 4)));
    Ok(())
}

/// A purge hides the purged entries at once and deletes them in the
/// background; entries a cut-short purge left behind stay hidden after a
/// reopen, and the next purge deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_entries_are_hidden_at_once_and_deleted_in_the_background() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let blank = |i: u64| Entry { log_id: log_id(1, i), payload: EntryPayload::Blank };
    let entries: Vec<Entry> = (1..=200).map(blank).collect();
    let below = |db: &sled::Db, index: u64| -> Result<usize> {
        Ok(db.open_tree("log")?.range(..=index.to_be_bytes()).count())
    };
    {
        let (db, mut log, _sm) = open(dir.path())?;
        log.blocking_append(entries.clone()).await?;
        log.purge(log_id(1, 150)).await?;
        assert_eq!(log.try_get_log_entries(0..).await?, entries[150..].to_vec());
        assert_eq!(
            log.get_log_reader().await.try_get_log_entries(100..160).await?,
            entries[150..159].to_vec()
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while below(&db, 150)? > 0 {
            assert!(tokio::time::Instant::now() < deadline, "purged entries were never deleted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(below(&db, 200)?, 50);
        // As if a purge had been cut short: entries below `last_purged`.
        let tree = db.open_tree("log")?;
        for e in &entries[..10] {
            tree.insert(e.log_id.index.to_be_bytes(), tree.get(200u64.to_be_bytes())?.expect("entry 200"))?;
        }
        db.flush()?;
    }
    let (db, mut log, _sm) = open(dir.path())?;
    let state = log.get_log_state().await?;
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 150)), Some(log_id(1, 200))));
    assert_eq!(log.try_get_log_entries(0..).await?, entries[150..].to_vec(), "left-overs are served");
    log.purge(log_id(1, 160)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while below(&db, 160)? > 0 {
        assert!(tokio::time::Instant::now() < deadline, "left-overs were never deleted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(log.try_get_log_entries(0..).await?, entries[160..].to_vec());
    Ok(())
}
