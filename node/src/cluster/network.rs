//! openraft's network over the cluster transport: a [`Network`] factory that
//! makes one [`PeerClient`] per target, and the RPCs of a client.
//!
//! Every RPC runs under the hard TTL openraft passes in [`RPCOption`] (the
//! heartbeat interval for AppendEntries, `install_snapshot_timeout` for each
//! snapshot chunk). Errors map onto what openraft does next: an unreachable
//! peer is backed off, a timeout or a broken exchange is retried, a batch over
//! [`APPEND_BATCH_BYTES`] is split, and a Raft error from the peer is passed
//! on as a remote error.
//!
//! Every outcome is reported to [`Contacts`]: the last contact per peer, the
//! leader's quorum, and one log line per peer becoming unreachable instead
//! of openraft's lines per failed RPC.

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

use crate::cluster::contacts::Contacts;
use crate::cluster::frame::FrameError;
use crate::cluster::message::{ErrorCode, Message};
use crate::cluster::transport::{Transport, TransportError};

/// Most payload bytes of an AppendEntries that carries more than one entry.
///
/// openraft 0.9 gives every AppendEntries one heartbeat interval (100 ms by
/// default) and, after a timeout, sends the same range again. A new leader
/// does not know how far each follower's log matches, so its first requests
/// carry up to `max_payload_entries` entries (openraft's default 300, ferry's
/// 64) from the middle of its log. With entries of tens of KiB (a route with
/// hundreds of backends) such a batch is megabytes: on a loaded machine
/// encoding, sending, decoding and persisting it takes longer than the
/// interval, and every retry times out. jepsen-lite saw a leader that never
/// caught up two followers after a heal, and a minute of elections in which
/// no leader committed anything. A larger batch is refused here before it
/// is sent, with a hint of how many entries fit; openraft retries at once
/// with that many. One entry is always sent whole.
///
/// The budget of each peer adapts below this: a multi-entry AppendEntries
/// that times out halves it (down to [`MIN_APPEND_BATCH_BYTES`]), one that
/// is answered doubles it again, so a slow follower or a short heartbeat
/// gets batches it can answer in time.
pub const APPEND_BATCH_BYTES: usize = 256 << 10;

/// The lowest adaptive budget of a multi-entry AppendEntries.
pub const MIN_APPEND_BATCH_BYTES: usize = 4 << 10;

/// The error of one RPC, as openraft wants it.
type RpcError<E = RaftError<NodeId>> = RPCError<NodeId, NodeInfo, E>;

/// openraft's network factory for node `id`: hand it to `Raft::new`.
#[derive(Debug, Clone)]
pub struct Network {
    id: NodeId,
    transport: Arc<Transport>,
    contacts: Arc<Contacts>,
}

impl Network {
    /// The network of node `id` over `transport`, with a contact timeout of
    /// [`DEFAULT_CONTACT_TIMEOUT`](crate::cluster::contacts::DEFAULT_CONTACT_TIMEOUT).
    pub fn new(id: NodeId, transport: Arc<Transport>) -> Self {
        Self { id, transport, contacts: Arc::new(Contacts::default()) }
    }

    /// Reports every RPC outcome to `contacts` instead.
    pub fn with_contacts(mut self, contacts: Arc<Contacts>) -> Self {
        self.contacts = contacts;
        self
    }

    /// Where RPC outcomes are reported.
    pub fn contacts(&self) -> &Arc<Contacts> {
        &self.contacts
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        self.contacts.learn_name(target, &node.name);
        PeerClient {
            id: self.id,
            target,
            addr: node.cluster_addr.clone(),
            transport: Arc::clone(&self.transport),
            contacts: Arc::clone(&self.contacts),
            append_budget: APPEND_BATCH_BYTES,
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
    contacts: Arc<Contacts>,
    /// Payload bytes a multi-entry AppendEntries may take now (see
    /// [`APPEND_BATCH_BYTES`]).
    append_budget: usize,
}

impl PeerClient {
    /// The peer's cluster address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn call(&self, msg: &Message, option: &RPCOption) -> Result<Message, TransportError> {
        let outcome = Outcome::new(&self.contacts, self.target);
        outcome.of(self.transport.call_timeout(&self.addr, msg, option.hard_ttl()).await)
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

    /// What openraft gets for an AppendEntries of `entries` entries.
    #[allow(clippy::result_large_err, reason = "openraft's own error type, as its RaftNetwork returns it")]
    fn append_result(
        &self,
        result: Result<Message, TransportError>,
        entries: u64,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        match result {
            Ok(Message::AppendEntriesResult(Ok(resp))) => Ok(resp),
            Ok(Message::AppendEntriesResult(Err(e))) => Err(self.remote(e)),
            Ok(other) => Err(self.unexpected(RPCTypes::AppendEntries, &other)),
            // Over the budget or the frame: openraft retries at once with fewer entries.
            Err(TransportError::Frame { source: FrameError::TooLarge { len, max }, .. }) if entries > 1 => {
                let hint = entries_that_fit(entries, len, max);
                Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)))
            }
            Err(e) => Err(self.error(RPCTypes::AppendEntries, e)),
        }
    }
}

/// Reports one RPC's outcome to [`Contacts`], also when openraft drops the
/// RPC at its deadline before the transport answered (then it failed).
struct Outcome<'a> {
    contacts: &'a Contacts,
    target: NodeId,
    reported: bool,
}

impl<'a> Outcome<'a> {
    fn new(contacts: &'a Contacts, target: NodeId) -> Self {
        Self { contacts, target, reported: false }
    }

    /// Reports `result` and passes it on. A request refused before it was
    /// sent (over the frame or batch budget) says nothing about the peer.
    fn of(mut self, result: Result<Message, TransportError>) -> Result<Message, TransportError> {
        self.reported = true;
        match &result {
            // A refusal from the peer is an answer too, unless it came from
            // a node of another cluster or version at that address.
            Ok(_) => self.contacts.answered(self.target),
            Err(e @ TransportError::Remote { .. }) if !e.is_unreachable() => {
                self.contacts.answered(self.target)
            }
            Err(e) if e.is_too_large() => {}
            Err(e) => self.contacts.failed(self.target, e),
        }
        result
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.contacts.failed(self.target, &"no answer before openraft's deadline for the RPC");
        }
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

/// How many of a batch's `entries` to send when they took `len` bytes and
/// `max` fit: the same share, at least one and fewer than before.
fn entries_that_fit(entries: u64, len: u64, max: usize) -> u64 {
    let share = u128::from(entries) * max as u128 / u128::from(len.max(1));
    u64::try_from(share).unwrap_or(u64::MAX).clamp(1, entries.saturating_sub(1).max(1))
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
        if entries <= 1 {
            let result = self.call(&msg, &option).await;
            return self.append_result(result, entries);
        }
        // openraft drops this future when the RPC's TTL passes, so the
        // halved budget is set first and stays unless an answer comes.
        let budget = self.append_budget;
        self.append_budget = (budget / 2).max(MIN_APPEND_BATCH_BYTES);
        let outcome = Outcome::new(&self.contacts, self.target);
        let result =
            outcome.of(self.transport.call_within(&self.addr, &msg, option.hard_ttl(), budget).await);
        self.append_budget = match &result {
            Ok(_) => budget.saturating_mul(2).min(APPEND_BATCH_BYTES),
            Err(TransportError::Timeout { .. }) => self.append_budget,
            // Not sent, or nothing learnt about how long a batch takes.
            Err(_) => budget,
        };
        self.append_result(result, entries)
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
    contacts: Arc<Contacts>,
}

impl TransportPreVoter {
    /// Asks peers through `transport`.
    pub fn new(transport: Arc<Transport>) -> Self {
        Self { transport, contacts: Arc::new(Contacts::default()) }
    }

    /// Reports every answer (or its absence) to `contacts`.
    pub fn with_contacts(mut self, contacts: Arc<Contacts>) -> Self {
        self.contacts = contacts;
        self
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
        let (transport, contacts) = (Arc::clone(&self.transport), Arc::clone(&self.contacts));
        Box::pin(async move {
            let outcome = Outcome::new(&contacts, target);
            let answer = transport.call_timeout(&node.cluster_addr, &Message::PreVote(req), timeout).await;
            match outcome.of(answer) {
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
    fn an_oversized_batch_is_cut_to_the_share_that_fits() {
        assert_eq!(entries_that_fit(300, 3_000_000, 250_000), 25);
        // At least one entry, and always fewer than were refused.
        assert_eq!(entries_that_fit(300, u64::MAX, 250_000), 1);
        assert_eq!(entries_that_fit(2, 300_000, 250_000), 1);
        assert_eq!(entries_that_fit(10, 0, 250_000), 9);
    }

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

    /// A peer on loopback that reads AppendEntries and answers them with
    /// success while `answer` is set, and otherwise never answers.
    async fn peer_answering(answer: Arc<std::sync::atomic::AtomicBool>) -> String {
        use std::sync::atomic::Ordering::SeqCst;

        use crate::cluster::frame::{encode_frame, read_frame, write_frame};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = Arc::clone(&answer);
                tokio::spawn(async move {
                    while read_frame(&mut stream).await.is_ok() {
                        if !answer.load(SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        let reply = Message::AppendEntriesResult(Ok(AppendEntriesResponse::Success));
                        let frame = encode_frame("c", &reply).expect("encode");
                        if write_frame(&mut stream, &frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_batch_that_times_out_halves_the_budget_and_an_answer_doubles_it() {
        use std::sync::atomic::Ordering::SeqCst;
        let answer = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut peer = client(peer_answering(Arc::clone(&answer)).await).await;
        let option = RPCOption::new(Duration::from_millis(100));
        let too_large = |r: &Result<AppendEntriesResponse<NodeId>, RpcError>, hint: u64| matches!(r, Err(RPCError::PayloadTooLarge(p)) if p.entries_hint() == hint);
        // 200 KiB fits the first budget (256 KiB): sent, and never answered.
        let r = peer.append_entries(append(&[50 << 10; 4]), option.clone()).await;
        assert!(matches!(r, Err(RPCError::Timeout(_))), "{r:?}");
        // The budget is 128 KiB now: the same batch is cut before it is sent.
        let r = peer.append_entries(append(&[50 << 10; 4]), option.clone()).await;
        assert!(too_large(&r, 2), "{r:?}");
        // openraft drops the future at its own deadline: that halves it too.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(50),
            peer.append_entries(append(&[50 << 10; 2]), RPCOption::new(Duration::from_secs(5))),
        )
        .await;
        assert!(cancelled.is_err(), "{cancelled:?}");
        let r = peer.append_entries(append(&[50 << 10; 2]), option.clone()).await;
        assert!(too_large(&r, 1), "64 KiB left: {r:?}");
        // Answers double it back, up to APPEND_BATCH_BYTES.
        answer.store(true, SeqCst);
        for batch in [1, 2, 4, 4] {
            let r = peer.append_entries(append(&vec![30 << 10; batch]), option.clone()).await;
            assert!(matches!(r, Ok(AppendEntriesResponse::Success)), "{batch} entries: {r:?}");
        }
        let r = peer.append_entries(append(&[50 << 10; 4]), option.clone()).await;
        assert!(matches!(r, Ok(AppendEntriesResponse::Success)), "{r:?}");
        let r = peer.append_entries(append(&[50 << 10; 6]), option).await;
        assert!(too_large(&r, 5), "never above {APPEND_BATCH_BYTES}: {r:?}");
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

        // Over the batch budget: openraft is asked for the share that fits,
        // before anything is sent (nothing listens, yet this is not
        // "unreachable").
        let err = peer.append_entries(append(&[64 << 10; 10]), option.clone()).await.expect_err("too large");
        assert!(matches!(&err, RPCError::PayloadTooLarge(p) if p.entries_hint() == 3), "{err:?}");
        // One entry over the budget is sent whole.
        let err =
            peer.append_entries(append(&[APPEND_BATCH_BYTES * 2]), option.clone()).await.expect_err("sent");
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        // Too many bytes for one frame: one entry each.
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
