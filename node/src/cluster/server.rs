//! The server side of the cluster port: the accept loop, one task per
//! connection, and the dispatch of requests to the local Raft.
//!
//! A connection carries one request at a time: read a frame, handle it,
//! write the reply. A frame that cannot be accepted (foreign cluster id, other
//! wire version, malformed, oversized) is answered with [`Message::Error`]
//! when the stream still allows it, logged, counted, and the connection is
//! closed: after a bad frame the stream cannot be trusted to be in step.
//!
//! A connection whose first byte is `\r` (a PROXY v2 signature; a frame
//! starts with 0) is a peer hop, handed to the [`HopServer`] when one is set
//! ([`ClusterServer::with_hops`]). A hop gives back its connection permit:
//! hops are long-lived data connections, bounded by the hop server's own
//! limit, and must not starve Raft of connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use ferry_raft_store::election::Election;
use ferry_raft_store::types::Raft;
use ferry_raft_store::{Request, Response};
use openraft::raft::AppendEntriesResponse;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cluster::batcher::{Batcher, Limits, ReadRounds};
use crate::cluster::contacts::Contacts;
use crate::cluster::deadline::LocalClock;
use crate::cluster::frame::{
    FRAME_FIRST_BYTE, FrameError, decode_payload, encode_frame, read_frame, write_frame,
};
use crate::cluster::leadership;
use crate::cluster::message::{BindReport, ErrorCode, MembershipChange, Message, NodeStatus, WriteError};
use crate::cluster::stats::{TransportStats, bump};
use crate::cluster::versions::Versions;
use crate::dataplane::hop::HopServer;
use crate::dataplane::listen_failures::ListenFailures;
use crate::dataplane::proxy_v2::SIGNATURE;

/// Limits of the cluster server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Connections served at once; further peers wait in the accept backlog.
    pub max_connections: usize,
    /// A connection with no request for this long is closed (peers reconnect
    /// on demand).
    pub idle_timeout: Duration,
    /// Longest wait for a write, a read-index round or a membership change
    /// to complete before answering [`WriteError::Timeout`]: the node's
    /// request timeout (`[admin] request_timeout_ms`). A caller on another
    /// node gives up at its own deadline (its transport call), so only a
    /// real timeout is ever called one (a leader without a majority then
    /// says so: [`ServerConfig::quorum_timeout`]).
    pub write_timeout: Duration,
    /// A wait that ends on a leader that has had no acknowledgement from a
    /// majority of voters for this long answers [`WriteError::NoQuorum`]
    /// rather than [`WriteError::Timeout`]:
    /// the longest election timeout (`[cluster] election_timeout_max_ms`),
    /// after which followers that lost it would have campaigned. Only a
    /// verdict when a wait ends ([`crate::cluster::leadership`]).
    pub quorum_timeout: Duration,
    /// Whether writes past their deadline are refused rather than proposed
    /// ([`crate::cluster::deadline`]), and this node forwards writes with
    /// theirs. `false` only under the fault switch `no-write-deadline`.
    pub check_deadlines: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 256,
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(5),
            quorum_timeout: Duration::from_secs(1),
            check_deadlines: true,
        }
    }
}

/// Longest wait to deliver an error reply before closing anyway.
const ERROR_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest wait for a membership change autopilot makes (two commits:
/// joint, then uniform). One asked for through the API waits up to
/// [`ServerConfig::write_timeout`].
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(3);

// A hop and a frame are told apart by their first byte.
const _: () = assert!(FRAME_FIRST_BYTE != SIGNATURE[0]);

/// Pause after a failed `accept` (for example out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Answers cluster requests with the local Raft node.
#[derive(Clone)]
pub struct ClusterServer {
    raft: Raft,
    node_name: String,
    bootstrap_expect: u32,
    /// This node's admin address, for [`Message::NodeStatus`].
    admin_addr: String,
    cluster_id: String,
    stats: Arc<TransportStats>,
    config: ServerConfig,
    hops: Option<HopServer>,
    /// The election timer's state: touched when a leader is heard from or a
    /// vote granted, and asked for pre-votes ([`ferry_raft_store::election`]).
    election: Option<Arc<Election>>,
    /// Told of every AppendEntries and snapshot a leader sends that this
    /// node accepts (contact with the leader).
    contacts: Option<Arc<Contacts>>,
    /// Client writes, batched while earlier ones are being appended.
    batcher: Batcher,
    /// Read-index rounds, shared by the reads that queue during one.
    reads: ReadRounds,
    /// The routes this node could not bind ([`Message::BindFailures`]).
    bind_failures: Arc<ArcSwap<ListenFailures>>,
    /// The clock forwarded writes state their deadline on
    /// ([`Message::Clock`]).
    clock: LocalClock,
    /// The gate on features: what every member speaks.
    versions: Option<Versions>,
    /// The last frame refused for holding what this build cannot read (a
    /// field or variant of a newer protocol), and when.
    unreadable: Arc<Mutex<Option<(tokio::time::Instant, String)>>>,
}

impl ClusterServer {
    /// A server for the cluster `cluster_id` backed by `raft`, counting into
    /// `stats` (share them with the node's [`Transport`](crate::cluster::Transport)).
    pub fn new(
        raft: Raft,
        cluster_id: impl Into<String>,
        stats: Arc<TransportStats>,
        config: ServerConfig,
    ) -> Self {
        let limits = Limits { write_timeout: config.write_timeout, quorum_timeout: config.quorum_timeout };
        Self {
            batcher: Batcher::new(raft.clone(), limits, Arc::clone(&stats))
                .check_deadlines(config.check_deadlines),
            reads: ReadRounds::new(raft.clone(), limits, Arc::clone(&stats)),
            raft,
            node_name: String::new(),
            bootstrap_expect: 0,
            admin_addr: String::new(),
            cluster_id: cluster_id.into(),
            stats,
            config,
            hops: None,
            election: None,
            contacts: None,
            bind_failures: Arc::default(),
            clock: LocalClock::start(),
            versions: None,
            unreadable: Arc::default(),
        }
    }

    /// Answers [`Message::BindFailures`] from `failures` (the node's
    /// listeners'); without it, with none.
    pub fn with_bind_failures(mut self, failures: Arc<ArcSwap<ListenFailures>>) -> Self {
        self.bind_failures = failures;
        self
    }

    /// Feeds `election` (the node's election timer): contact with a leader
    /// when this server accepts its AppendEntries or InstallSnapshot, a
    /// granted vote, and pre-vote requests. Without it pre-votes are refused.
    pub fn with_election(mut self, election: Arc<Election>) -> Self {
        self.election = Some(election);
        self
    }

    /// Reports contact with the leader to `contacts` too.
    pub fn with_contacts(mut self, contacts: Arc<Contacts>) -> Self {
        self.contacts = Some(contacts);
        self
    }

    /// Refuses writes using a feature some member does not speak
    /// ([`Versions::check`]). Without it, every feature is allowed.
    pub fn with_versions(mut self, versions: Versions) -> Self {
        self.versions = Some(versions);
        self
    }

    /// Contact with the leader `vote` names.
    fn heard_from(&self, vote: &ferry_raft_store::types::Vote) {
        if let (Some(c), Some(leader)) = (&self.contacts, vote.leader_id().voted_for()) {
            c.answered(leader);
        }
    }

    fn touch(&self) {
        if let Some(e) = &self.election {
            e.touch();
        }
    }

    /// Contact with a leader on connection `conn` (0: not over a connection).
    fn contact_on(&self, conn: u64) {
        match &self.election {
            Some(e) if conn != 0 => e.contact_on(conn),
            Some(e) => e.touch(),
            None => {}
        }
    }

    /// The node name and `bootstrap_expect` that [`Message::NodeStatus`]
    /// reports.
    pub fn with_identity(mut self, name: impl Into<String>, bootstrap_expect: u32) -> Self {
        self.node_name = name.into();
        self.bootstrap_expect = bootstrap_expect;
        self
    }

    /// The admin address that [`Message::NodeStatus`] reports.
    pub fn with_admin_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.admin_addr = addr.to_string();
        self
    }

    /// Serves peer hops with `hops` too (without, a hop is refused as an
    /// oversized frame).
    pub fn with_hops(mut self, hops: HopServer) -> Self {
        self.hops = Some(hops);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The reply to one request.
    pub async fn handle(&self, msg: Message) -> Message {
        self.handle_on(msg, 0).await
    }

    /// The reply to one request that arrived on connection `conn` (0: none).
    async fn handle_on(&self, msg: Message, conn: u64) -> Message {
        match msg {
            Message::Ping => Message::Pong,
            Message::AppendEntries(rpc) => {
                let sender = rpc.vote;
                let result = self.raft.append_entries(rpc).await;
                if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    self.contact_on(conn);
                    self.heard_from(&sender);
                }
                Message::AppendEntriesResult(result)
            }
            Message::Vote(rpc) => {
                let result = self.raft.vote(rpc).await;
                if matches!(&result, Ok(r) if r.vote_granted) {
                    self.touch();
                }
                Message::VoteResult(result)
            }
            Message::InstallSnapshot(rpc) => {
                let sender = rpc.vote;
                let result = self.raft.install_snapshot(rpc).await;
                if matches!(&result, Ok(r) if r.vote <= sender) {
                    self.contact_on(conn);
                    self.heard_from(&sender);
                }
                Message::InstallSnapshotResult(result)
            }
            Message::PreVote(req) => Message::PreVoteResult(match &self.election {
                Some(e) => e.pre_vote(&req).await,
                None => false,
            }),
            // A write from a node older than deadlines: its deadline runs
            // from its arrival.
            Message::ClientWrite(req) => {
                let deadline = tokio::time::Instant::now() + self.config.write_timeout;
                Message::ClientWriteResult(self.write(req, deadline).await)
            }
            Message::Clock => Message::ClockResult(self.clock.reading(tokio::time::Instant::now())),
            Message::ClientWriteBy { request, deadline } => {
                Message::ClientWriteResult(match self.clock.local(deadline) {
                    Some(deadline) => self.write(request, deadline).await,
                    // This node restarted since the sender read its clock:
                    // the write was not proposed; the sender asks again.
                    None => Err(WriteError::NoLeader),
                })
            }
            Message::ReadIndex => Message::ReadIndexResult(self.read_index().await),
            Message::NodeStatus => Message::NodeStatusResult(self.node_status().await),
            Message::BindFailures => Message::BindFailuresResult(self.bind_report()),
            Message::ChangeMembership(change) => {
                Message::ChangeMembershipResult(self.change_membership(change).await)
            }
            other => Message::Error {
                code: ErrorCode::Unexpected,
                message: format!("a {} message is not a request", other.kind()),
            },
        }
    }

    /// This node's id, name, whether it has Raft state, and how far it has
    /// applied.
    pub async fn node_status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let initialized = self.raft.is_initialized().await.unwrap_or(true);
        NodeStatus {
            node_id: m.id,
            name: self.node_name.clone(),
            initialized,
            applied_index: m.last_applied.map(|l| l.index),
            bootstrap_expect: self.bootstrap_expect,
            version: crate::version::version(),
            protocol: crate::version::PROTOCOL,
            features: crate::version::features_of(crate::version::PROTOCOL),
            admin_addr: self.admin_addr.clone(),
        }
    }

    /// This node's id, name and the routes it could not bind.
    pub fn bind_report(&self) -> BindReport {
        BindReport::new(self.raft.metrics().borrow().id, &self.node_name, &self.bind_failures.load())
    }

    /// Performs `change` if this node is the leader; otherwise names the
    /// leader. Waits for the new membership to commit (bounded by the write
    /// timeout, then [`WriteError::NoQuorum`] if the leader hears from no
    /// majority), and answers at once if this node steps down meanwhile
    /// ([`leadership`]).
    pub async fn change_membership(&self, change: MembershipChange) -> Result<u64, WriteError> {
        let MembershipChange::Remove { node_id } = change;
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|id| id == node_id);
        let known = membership.get_node(&node_id).is_some();
        if !ferry_raft_store::is_leader(&m) {
            return Err(
                match ferry_raft_store::known_leader(&m)
                    .and_then(|l| membership.get_node(&l).map(|n| (l, n.clone())))
                {
                    Some((leader_id, leader)) => WriteError::ForwardToLeader { leader_id, leader },
                    None => WriteError::NoLeader,
                },
            );
        }
        if !known {
            return Err(WriteError::Membership { message: format!("node {node_id} is not a member") });
        }
        if is_voter && membership.voter_ids().count() == 1 {
            return Err(WriteError::Membership {
                message: format!("node {node_id} is the last voter: removing it would end the cluster"),
            });
        }
        let ids = std::collections::BTreeSet::from([node_id]);
        let change = if is_voter {
            openraft::ChangeMembers::RemoveVoters(ids)
        } else {
            openraft::ChangeMembers::RemoveNodes(ids)
        };
        let term = leadership::Term { me: m.id, vote: m.vote };
        let (wait, started) = (self.config.write_timeout, tokio::time::Instant::now());
        let commit = async {
            match timeout(wait, self.raft.change_membership(change, false)).await {
                Ok(Ok(resp)) => Ok(resp.log_id.index),
                Ok(Err(openraft::error::RaftError::APIError(
                    openraft::error::ClientWriteError::ChangeMembershipError(e),
                ))) => Err(WriteError::Membership { message: e.to_string() }),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(self.timed_out(started)),
            }
        };
        tokio::select! {
            biased;
            r = commit => r,
            e = leadership::stepped_down(&self.raft, term) => Err(e),
        }
    }

    /// Confirms leadership with a quorum and returns the index a
    /// linearizable read must wait for (waiting for it locally as well).
    /// Reads that arrive while a round is running share the next one
    /// ([`ReadRounds`], which also explains the index).
    pub async fn read_index(&self) -> Result<u64, WriteError> {
        // The round has its own bounds; this one covers the queue before it.
        let started = tokio::time::Instant::now();
        match timeout(self.config.write_timeout, self.reads.read_index()).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out(started)),
        }
    }

    /// Proposes `req` if this node is the leader, sharing a log entry with
    /// writes that queue behind earlier ones ([`Batcher`]); otherwise names
    /// the leader. Not proposed once `deadline` has passed (the batcher
    /// checks right before proposing): [`WriteError::DeadlineExceeded`].
    /// A write using a feature some member does not speak is refused
    /// ([`WriteError::FeatureNotEnabled`]) by whichever node it reaches
    /// first, leader or not: a leader that is itself behind could not even
    /// read a forwarded one.
    pub async fn write(&self, req: Request, deadline: tokio::time::Instant) -> Result<Response, WriteError> {
        let started = tokio::time::Instant::now();
        let used = req.command.features();
        if let Some(versions) = self.versions.as_ref().filter(|_| !used.is_empty()) {
            versions.check(&used).await?;
        }
        match timeout(self.config.write_timeout, self.batcher.write(req, deadline)).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out(started)),
        }
    }

    /// The last frame this node refused for holding a field or variant it
    /// does not know, if that was within `recent`: what a newer peer sent
    /// that this build cannot read.
    pub fn unreadable_within(&self, recent: Duration) -> Option<String> {
        let last = self.unreadable.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        last.filter(|(at, _)| at.elapsed() <= recent).map(|(_, why)| why)
    }

    /// The error of a wait that began at `started` and ran out the write
    /// timeout: no quorum, or a timeout ([`leadership::timed_out`]).
    fn timed_out(&self, started: tokio::time::Instant) -> WriteError {
        let (wait, quorum) = (self.config.write_timeout, self.config.quorum_timeout);
        leadership::timed_out(&self.raft, wait, started.elapsed(), quorum)
    }

    /// Serves one accepted connection: a peer hop or a sequence of frames,
    /// told apart by the first byte.
    async fn dispatch(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        if let Some(hops) = &self.hops {
            let mut first = [0u8; 1];
            let peeked = tokio::select! {
                _ = shutdown.cancelled() => return,
                peeked = timeout(self.config.idle_timeout, stream.peek(&mut first)) => peeked,
            };
            match peeked {
                Ok(Ok(1)) if first[0] == SIGNATURE[0] => {
                    drop(permit);
                    return hops.serve(stream, peer, shutdown).await;
                }
                // A frame, or garbage the frame reader refuses.
                Ok(Ok(1)) => {}
                // Closed, failed or idle before a byte: nothing to serve.
                _ => return,
            }
        }
        self.connection(stream, peer, shutdown).await;
        drop(permit);
    }

    async fn connection(&self, mut stream: TcpStream, peer: SocketAddr, shutdown: CancellationToken) {
        static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
        let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        // The peer closed or reset the connection (not our shutdown, an idle
        // timeout or a refused frame): if the leader spoke on it, it is
        // presumably gone.
        let lost = || {
            if let Some(e) = &self.election {
                e.connection_lost(conn);
            }
        };
        loop {
            let read = tokio::select! {
                _ = shutdown.cancelled() => return,
                read = timeout(self.config.idle_timeout, read_frame(&mut stream)) => read,
            };
            let payload = match read {
                Ok(Ok(payload)) => payload,
                Ok(Err(FrameError::Closed)) => return lost(),
                Ok(Err(e @ FrameError::TooLarge { .. })) => return self.refuse(&mut stream, peer, e).await,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "cluster connection broken");
                    return lost();
                }
                Err(_) => {
                    tracing::debug!(%peer, "closing idle cluster connection");
                    return;
                }
            };
            let msg = match decode_payload(&payload, &self.cluster_id) {
                Ok(msg) => msg,
                Err(e) => return self.refuse(&mut stream, peer, e).await,
            };
            let kind = msg.kind();
            let reply = tokio::select! {
                _ = shutdown.cancelled() => return,
                reply = self.handle_on(msg, conn) => reply,
            };
            let refused = matches!(reply, Message::Error { .. });
            if refused {
                bump(&self.stats.malformed);
                tracing::warn!(%peer, request = kind, "refused a cluster message that is not a request");
            }
            let frame = match encode_frame(&self.cluster_id, &reply) {
                Ok(frame) => frame,
                Err(e) => {
                    self.stats.count_frame_error(&e);
                    tracing::warn!(%peer, request = kind, error = %e, "cannot encode a cluster reply");
                    return;
                }
            };
            let written = tokio::select! {
                _ = shutdown.cancelled() => return,
                written = write_frame(&mut stream, &frame) => written,
            };
            if let Err(e) = written {
                tracing::debug!(%peer, error = %e, "cannot write a cluster reply");
                return lost();
            }
            if refused {
                return;
            }
        }
    }

    /// Logs and counts a frame that cannot be accepted and answers it with an
    /// error (best effort); the caller then closes the connection.
    async fn refuse(&self, stream: &mut TcpStream, peer: SocketAddr, e: FrameError) {
        self.stats.count_frame_error(&e);
        let code = match &e {
            FrameError::WrongCluster { cluster_id } => {
                tracing::warn!(
                    %peer, foreign_cluster_id = %cluster_id, cluster_id = %self.cluster_id,
                    "refused a cluster connection from another cluster"
                );
                ErrorCode::WrongCluster
            }
            FrameError::WrongVersion { version } => {
                tracing::warn!(
                    %peer, peer_protocol = version, protocol = crate::version::PROTOCOL,
                    "refused a cluster frame of a protocol outside this node's window"
                );
                ErrorCode::WrongVersion
            }
            FrameError::Malformed(m) if crate::version::is_newer_data(m) => {
                tracing::error!(
                    %peer, error = %e, protocol = crate::version::PROTOCOL,
                    "refused a cluster frame holding what this build cannot read: a newer ferry wrote it; \
                     upgrade this node (README, Upgrading)"
                );
                *self.unreadable.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((tokio::time::Instant::now(), format!("from {peer}: {m}")));
                ErrorCode::Malformed
            }
            _ => {
                tracing::warn!(%peer, error = %e, "refused a malformed cluster frame");
                ErrorCode::Malformed
            }
        };
        let reply = Message::Error { code, message: e.to_string() };
        if let Ok(frame) = encode_frame(&self.cluster_id, &reply) {
            let _ = timeout(ERROR_REPLY_TIMEOUT, write_frame(stream, &frame)).await;
        }
    }
}

impl std::fmt::Debug for ClusterServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterServer")
            .field("cluster_id", &self.cluster_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Serves the cluster port on `listener` until `shutdown` is cancelled, then
/// stops accepting, closes every connection and returns once their tasks have
/// ended. A request in flight at shutdown gets no reply. Connection tasks log
/// in the span `serve` runs in.
pub async fn serve(listener: TcpListener, server: ClusterServer, shutdown: CancellationToken) {
    let server = Arc::new(server);
    let limit = Arc::new(Semaphore::new(server.config.max_connections.max(1)));
    let tasks = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "cluster port: accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        bump(&server.stats.connections_accepted);
        let server = Arc::clone(&server);
        let shutdown = shutdown.clone();
        // Connection logs inherit the caller's span (the node id, when the
        // composition root instruments `serve`).
        tasks.spawn(
            async move {
                server.dispatch(stream, peer, shutdown, permit).await;
            }
            .in_current_span(),
        );
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}
