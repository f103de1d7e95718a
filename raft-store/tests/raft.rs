//! A real single-node openraft on the sled stores, restarted inside one
//! process: writes, an idempotent retry, a snapshot with log purge, and a
//! restart that keeps every acknowledged write.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_client::RouteSpec;
use ferry_raft_store::types::Raft;
use ferry_raft_store::{
    Command, NodeInfo, RaftTimers, Request, Response, StateError, StateWatch, TypeConfig,
};
use openraft::ServerState;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

/// A network with no peers: a sole voter never sends an RPC.
struct NoPeers;

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;
    async fn new_client(&mut self, _target: u64, _node: &NodeInfo) -> NoPeers {
        NoPeers
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<u64, NodeInfo, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("no peers in this test")))
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64, InstallSnapshotError>>>
    {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        Err(unreachable())
    }
}

async fn start(path: &Path) -> Result<(Raft, StateWatch)> {
    let db = ferry_raft_store::open_db(path, Duration::from_secs(10))?;
    let sync = Arc::new(ferry_raft_store::DiskSync::open(path, ferry_raft_store::SyncMode::Fdatasync)?);
    let (log, sm) = ferry_raft_store::open(&db, &sync)?;
    let watch = sm.watch();
    let config = ferry_raft_store::raft_config("test", RaftTimers::default())?;
    let raft = Raft::new(1, Arc::new(config), NoPeers, log, sm).await?;
    Ok((raft, watch))
}

fn put(name: &str, port: u16, id: u128) -> Request {
    let route: RouteSpec = serde_json::from_value(serde_json::json!({
        "name": name, "listen": format!(":{port}"),
        "backends": [{"id": "a", "addr": "127.0.0.1:9001"}]
    }))
    .expect("valid route json");
    Request::with_id(id, Command::PutRoute { route, cas: None })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_keeps_writes_across_an_in_process_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let wait = Some(Duration::from_secs(10));
    let (first, last_index) = {
        let (raft, watch) = start(dir.path()).await?;
        let node =
            NodeInfo { name: "n1".into(), cluster_addr: "127.0.0.1:7947".into(), admin_addr: "x".into() };
        raft.initialize(BTreeMap::from([(1, node)])).await?;
        raft.wait(wait).state(ServerState::Leader, "leader").await?;
        let mut changes = watch.subscribe();
        let first = raft.client_write(put("web", 7000, 1)).await?.data;
        let Response::Applied { index, .. } = first else { anyhow::bail!("write rejected: {first:?}") };
        // The watch saw the write.
        changes.wait_for(|s| s.index >= index).await?;
        assert!(watch.state().routes.contains_key("web"));
        // A retry of the same request answers the original response; the
        // same id with another request is refused.
        assert_eq!(raft.client_write(put("web", 7000, 1)).await?.data, first);
        let reused = Response::Rejected { error: StateError::RequestIdReused { id: 1 } };
        assert_eq!(raft.client_write(put("web", 7999, 1)).await?.data, reused);
        assert_eq!(watch.state().routes["web"].spec.listen, ":7000");
        let mut applied = None;
        for i in 0..20u16 {
            applied =
                Some(raft.client_write(put(&format!("r{i}"), 7100 + i, 100 + u128::from(i))).await?.log_id);
        }
        // The last write's log id, not the metrics: they are published asynchronously and may lag.
        let applied = applied.context("no write")?;
        raft.trigger().snapshot().await?;
        raft.wait(wait).snapshot(applied, "snapshot").await?;
        raft.trigger().purge_log(applied.index).await?;
        raft.wait(wait).purged(Some(applied), "purged").await?;
        let last = raft.client_write(put("after-snapshot", 7500, 500)).await?.data;
        raft.shutdown().await?;
        (first, last.into_result()?)
    };

    // openraft releases the store handles asynchronously; open_db retries the lock.
    let (raft, watch) = start(dir.path()).await?;
    raft.wait(wait).applied_index_at_least(Some(last_index), "re-applied").await?;
    let state = watch.state();
    assert_eq!(state.routes.len(), 22);
    assert!(state.routes.contains_key("after-snapshot"));
    assert_eq!(state.index, last_index);
    // The watched state carries no request ids; the state machine does.
    assert!(state.recent.is_empty());
    // Still a working leader: the sole voter resumes in the same term.
    raft.wait(wait).state(ServerState::Leader, "leader again").await?;
    // The ids and their digests survived the snapshot and the restart.
    assert_eq!(raft.client_write(put("web", 7000, 1)).await?.data, first);
    let reused = Response::Rejected { error: StateError::RequestIdReused { id: 1 } };
    assert_eq!(raft.client_write(put("web", 7999, 1)).await?.data, reused);
    raft.client_write(put("late", 7600, 600)).await?;
    raft.shutdown().await?;
    Ok(())
}
