//! openraft's network over the cluster transport: a [`Network`] factory that
//! makes one [`PeerClient`] per target, and the RPCs of a client.
//!
//! Every RPC runs under the hard TTL openraft passes in [`RPCOption`] (the
//! heartbeat interval for AppendEntries, `install_snapshot_timeout` for each
//! snapshot chunk). Errors map onto what openraft does next: an unreachable
//! peer is backed off, a timeout or a broken exchange is retried, a batch too
//! large for one frame is split, and a Raft error from the peer is passed on
//! as a remote error.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_raft_store::election::{PreVoteRequest, PreVoter};
use ferry_raft_store::{NodeId, NodeInfo, TypeConfig};
use openraft::RPCTypes;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::cluster::message::{ErrorCode, Message};
use crate::cluster::transport::{Transport, TransportError};

/// The error of one RPC, as openraft wants it.
type RpcError<E = RaftError<NodeId>> = RPCError<NodeId, NodeInfo, E>;

/// openraft's network factory for node `id`: hand it to `Raft::new`.
#[derive(Debug, Clone)]
pub struct Network {
    id: NodeId,
    transport: Arc<Transport>,
}

impl Network {
    /// The network of node `id` over `transport`.
    pub fn new(id: NodeId, transport: Arc<Transport>) -> Self {
        Self { id, transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            id: self.id,
            target,
            addr: node.cluster_addr.clone(),
            transport: Arc::clone(&self.transport),
        }
    }
}

/// openraft's client for one peer: RPCs to its cluster address.
#[derive(Debug, Clone)]
pub struct PeerClient {
    id: NodeId,
    target: NodeId,
    addr: String,
    transport: Arc<Transport>,
}

impl PeerClient {
    /// The peer's cluster address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn call(&self, msg: &Message, option: &RPCOption) -> Result<Message, TransportError> {
        self.transport.call_timeout(&self.addr, msg, option.hard_ttl()).await
    }

    fn error<E: Error>(&self, action: RPCTypes, e: TransportError) -> RpcError<E> {
        match e {
            e if e.is_unreachable() => RPCError::Unreachable(Unreachable::new(&e)),
            TransportError::Timeout { timeout, .. } => {
                RPCError::Timeout(Timeout { action, id: self.id, target: self.target, timeout })
            }
            e => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn unexpected<E: Error>(&self, action: RPCTypes, reply: &Message) -> RpcError<E> {
        let e = std::io::Error::other(format!(
            "{} answered a {action} request with a {} message",
            self.addr,
            reply.kind()
        ));
        RPCError::Network(NetworkError::new(&e))
    }

    fn remote<E: Error>(&self, e: E) -> RpcError<E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

/// Longest pause between retries to an unreachable peer. openraft's default
/// is a constant 500 ms: a peer that restarts in that gap hears nothing for
/// its lease plus election timeout, campaigns with a higher term and deposes
/// a healthy leader (seen in ops/bench/config.sh). Retrying well within the
/// election timeout keeps a restarting node a follower.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// 50, 100, 200, 200, ... ms.
fn retry_backoff() -> impl Iterator<Item = Duration> + Send + 'static {
    (0u32..).map(|i| Duration::from_millis(50u64 << i.min(8)).min(MAX_RETRY_BACKOFF))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(retry_backoff())
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let entries = rpc.entries.len() as u64;
        let msg = Message::AppendEntries(rpc);
        match self.call(&msg, &option).await {
            Ok(Message::AppendEntriesResult(Ok(resp))) => Ok(resp),
            Ok(Message::AppendEntriesResult(Err(e))) => Err(self.remote(e)),
            Ok(other) => Err(self.unexpected(RPCTypes::AppendEntries, &other)),
            // The batch does not fit one frame: openraft retries with fewer entries.
            Err(e) if e.is_too_large() && entries > 1 => {
                Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)))
            }
            Err(e) => Err(self.error(RPCTypes::AppendEntries, e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<RaftError<NodeId, InstallSnapshotError>>> {
        let msg = Message::InstallSnapshot(rpc);
        let reply = self.call(&msg, &option).await.map_err(|e| self.error(RPCTypes::InstallSnapshot, e))?;
        match reply {
            Message::InstallSnapshotResult(Ok(resp)) => Ok(resp),
            Message::InstallSnapshotResult(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(RPCTypes::InstallSnapshot, &other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let msg = Message::Vote(rpc);
        let reply = self.call(&msg, &option).await.map_err(|e| self.error(RPCTypes::Vote, e))?;
        match reply {
            Message::VoteResult(Ok(resp)) => Ok(resp),
            Message::VoteResult(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(RPCTypes::Vote, &other)),
        }
    }
}

/// Pre-vote requests ([`ferry_raft_store::election`]) over the cluster
/// transport.
#[derive(Debug, Clone)]
pub struct TransportPreVoter {
    transport: Arc<Transport>,
}

impl TransportPreVoter {
    /// Asks peers through `transport`.
    pub fn new(transport: Arc<Transport>) -> Self {
        Self { transport }
    }
}

impl PreVoter for TransportPreVoter {
    fn ask(
        &self,
        target: NodeId,
        node: NodeInfo,
        req: PreVoteRequest,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Option<bool>> + Send>> {
        let transport = Arc::clone(&self.transport);
        Box::pin(async move {
            match transport.call_timeout(&node.cluster_addr, &Message::PreVote(req), timeout).await {
                Ok(Message::PreVoteResult(granted)) => Some(granted),
                // A peer of a version before pre-vote cannot decode the
                // request; it votes as it always did.
                Err(TransportError::Remote { code: ErrorCode::Malformed, .. }) => Some(true),
                Ok(other) => {
                    tracing::warn!(target, reply = other.kind(), "unexpected reply to a pre-vote");
                    None
                }
                Err(error) => {
                    tracing::debug!(target, %error, "no pre-vote answer");
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn retries_to_an_unreachable_peer_stay_well_within_an_election_timeout() {
        let delays: Vec<Duration> = retry_backoff().take(10).collect();
        assert_eq!(delays[0], Duration::from_millis(50));
        assert_eq!(delays[1], Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= MAX_RETRY_BACKOFF), "{delays:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ferry_raft_store::{Command, Request};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    use tokio::net::TcpListener;

    use super::*;
    use crate::cluster::frame::MAX_FRAME_BYTES;
    use crate::cluster::stats::TransportStats;
    use crate::cluster::transport::TransportConfig;

    async fn client(addr: String) -> PeerClient {
        let stats = Arc::new(TransportStats::default());
        let transport = Arc::new(Transport::new("c", TransportConfig::default(), stats));
        let node = NodeInfo { name: "n2".into(), cluster_addr: addr, admin_addr: String::new() };
        Network::new(1, transport).new_client(2, &node).await
    }

    fn append(entry_bytes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        let entries = entry_bytes
            .iter()
            .zip(1u64..)
            .map(|(&n, index)| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(Request::new(Command::DeleteRoute {
                    name: "x".repeat(n),
                    cas: None,
                })),
            })
            .collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries,
            leader_commit: None,
        }
    }

    #[tokio::test]
    async fn cluster_network_maps_transport_errors_for_openraft() {
        let option = RPCOption::new(Duration::from_millis(200));
        // Nothing listens: unreachable (openraft backs off).
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed_addr = closed.local_addr().expect("addr").to_string();
        drop(closed);
        let mut peer = client(closed_addr).await;
        let err = peer.append_entries(append(&[]), option.clone()).await.expect_err("unreachable");
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

        // Too many bytes for one frame: openraft is asked to send half the entries.
        let half = MAX_FRAME_BYTES / 2 + 1;
        let err = peer.append_entries(append(&[half, half]), option.clone()).await.expect_err("too large");
        assert!(matches!(&err, RPCError::PayloadTooLarge(p) if p.entries_hint() == 1), "{err:?}");
        // A single entry that cannot fit is a plain network error.
        let err =
            peer.append_entries(append(&[MAX_FRAME_BYTES]), option.clone()).await.expect_err("too large");
        assert!(matches!(err, RPCError::Network(_)), "{err:?}");

        // A peer that never answers: a timeout of the RPC's hard TTL.
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut peer = client(silent.local_addr().expect("addr").to_string()).await;
        let held = tokio::spawn(async move { silent.accept().await.map(|(s, _)| s) });
        let err = peer
            .vote(openraft::raft::VoteRequest::new(Vote::new(2, 1), None), option)
            .await
            .expect_err("timeout");
        assert!(
            matches!(&err, RPCError::Timeout(t) if t.timeout == Duration::from_millis(200) && t.target == 2 && t.id == 1),
            "{err:?}"
        );
        held.abort();
    }
}
