//! The messages of the cluster transport: Raft RPCs and their results,
//! writes forwarded from followers to the leader, health pings and errors.
//!
//! Every request has exactly one reply on the same connection. The variant
//! order is part of the wire format (bincode encodes the variant index):
//! append new variants at the end and keep the fixture test in `frame.rs`
//! passing.

use ferry_raft_store::election::PreVoteRequest;
use ferry_raft_store::{NodeId, NodeInfo, Request, Response, TypeConfig};
use openraft::error::{CheckIsLeaderError, ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::cluster::deadline::{ClockReading, PeerDeadline};

/// The result of a Raft AppendEntries RPC on the receiving node.
pub type AppendEntriesResult = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
/// The result of a Raft Vote RPC on the receiving node.
pub type VoteResult = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
/// The result of one InstallSnapshot chunk on the receiving node.
pub type InstallSnapshotResult =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;
/// The result of a write forwarded to the leader.
pub type ClientWriteResult = Result<Response, WriteError>;

/// One message of the cluster protocol (the body of an
/// [`Envelope`](crate::cluster::frame::Envelope)).
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// Health check; answered with [`Message::Pong`].
    Ping,
    /// The answer to [`Message::Ping`].
    Pong,
    /// Raft log replication and heartbeat, leader to follower.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// The answer to [`Message::AppendEntries`].
    AppendEntriesResult(AppendEntriesResult),
    /// Raft election, candidate to voter.
    Vote(VoteRequest<NodeId>),
    /// The answer to [`Message::Vote`].
    VoteResult(VoteResult),
    /// One bounded chunk of a snapshot (at most the Raft config's
    /// `snapshot_max_chunk_size` bytes of data).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// The answer to [`Message::InstallSnapshot`].
    InstallSnapshotResult(InstallSnapshotResult),
    /// A config write forwarded to the node believed to be the leader.
    ClientWrite(Request),
    /// The answer to [`Message::ClientWrite`].
    ClientWriteResult(ClientWriteResult),
    /// The request was refused; the sender closes the connection after it.
    Error {
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
    },
    // New variants go last: bincode encodes the variant index.
    /// A follower asks the leader for a read index: the leader confirms its
    /// leadership with a quorum and answers with the log index a
    /// linearizable read must wait for.
    ReadIndex,
    /// The answer to [`Message::ReadIndex`].
    ReadIndexResult(Result<u64, WriteError>),
    /// What a node is: asked before forming a cluster (has anyone Raft
    /// state?) and by `GET /v1/members` (applied index).
    NodeStatus,
    /// The answer to [`Message::NodeStatus`].
    NodeStatusResult(NodeStatus),
    /// A membership change for the leader (leave, force-leave).
    ChangeMembership(MembershipChange),
    /// The answer to [`Message::ChangeMembership`]: the log index of the
    /// committed membership.
    ChangeMembershipResult(Result<u64, WriteError>),
    /// Would the receiver vote for the sender? Asked before an election
    /// ([`ferry_raft_store::election`]).
    PreVote(PreVoteRequest),
    /// The answer to [`Message::PreVote`]: granted or not.
    PreVoteResult(bool),
    /// Which routes could the receiver not bind? Asked of every live member
    /// by `GET /v1/routes` and `GET /v1/routes/{name}`. A node older than
    /// this variant cannot decode it and refuses the frame as malformed;
    /// the asker reports that node as not answering.
    BindFailures,
    /// The answer to [`Message::BindFailures`].
    BindFailuresResult(BindReport),
    /// What time is it on the receiver's monotonic clock? Asked by a
    /// follower just before it forwards a write
    /// ([`crate::cluster::deadline`]). A node older than this variant
    /// refuses it as malformed; the follower then forwards the write as a
    /// plain [`Message::ClientWrite`], without a deadline.
    Clock,
    /// The answer to [`Message::Clock`].
    ClockResult(ClockReading),
    /// A config write forwarded to the node believed to be the leader, with
    /// its deadline on that node's clock: the leader does not propose it
    /// after it ([`WriteError::DeadlineExceeded`]). Answered with
    /// [`Message::ClientWriteResult`]. Sent only to a node that answered
    /// [`Message::Clock`], so never to a node that cannot decode it.
    ClientWriteBy {
        /// The write.
        request: Request,
        /// Its deadline on the receiver's clock.
        deadline: PeerDeadline,
    },
}

/// A node's answer to [`Message::BindFailures`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct BindReport {
    pub node_id: NodeId,
    pub name: String,
    /// Every route the node has no listener for, after its last attempt.
    pub failures: Vec<BindFailure>,
}

impl BindReport {
    /// The report of node `node_id` named `name`, whose listeners could not
    /// bind `failures`.
    pub fn new(
        node_id: NodeId,
        name: &str,
        failures: &crate::dataplane::listen_failures::ListenFailures,
    ) -> Self {
        let failures = failures
            .iter()
            .map(|(route, f)| BindFailure {
                route: route.clone(),
                addr: f.addr.to_string(),
                error: f.error.clone(),
            })
            .collect();
        Self { node_id, name: name.to_string(), failures }
    }
}

/// One route a node could not bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindFailure {
    pub route: String,
    /// The address it tried (its `listen` resolved on that node).
    pub addr: String,
    /// The error of its last attempt.
    pub error: String,
}

/// A node's answer to [`Message::NodeStatus`]. Informational, so a field
/// from a newer node is ignored rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub name: String,
    /// Whether the node has Raft state (a membership, a vote or a log).
    pub initialized: bool,
    pub applied_index: Option<u64>,
    /// The node's `bootstrap_expect` (0: it only joins).
    pub bootstrap_expect: u32,
    /// The node's version ([`crate::version::version`]).
    #[serde(default)]
    pub version: String,
    /// The node's cluster protocol ([`crate::version::PROTOCOL`]).
    #[serde(default)]
    pub protocol: u16,
    /// The features the node speaks ([`crate::version::FEATURES`]).
    #[serde(default)]
    pub features: Vec<String>,
    /// The node's admin API address (`[admin] addr`): how `GET /v1/members`
    /// names it on a cluster without gossip. Empty from older nodes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub admin_addr: String,
}

impl NodeStatus {
    /// The node's version and protocol, if it said (protocol 0: it did not).
    pub fn node_version(&self) -> Option<crate::version::NodeVersion> {
        (self.protocol > 0)
            .then(|| crate::version::NodeVersion { version: self.version.clone(), protocol: self.protocol })
    }
}

/// A membership change the leader performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub enum MembershipChange {
    /// Remove the node from the voters and learners. The leader refuses to
    /// remove its last voter.
    Remove { node_id: NodeId },
}

impl Message {
    /// A short name of the variant, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping => "ping",
            Message::Pong => "pong",
            Message::AppendEntries(_) => "append-entries",
            Message::AppendEntriesResult(_) => "append-entries-result",
            Message::Vote(_) => "vote",
            Message::VoteResult(_) => "vote-result",
            Message::InstallSnapshot(_) => "install-snapshot",
            Message::InstallSnapshotResult(_) => "install-snapshot-result",
            Message::ClientWrite(_) => "client-write",
            Message::ClientWriteResult(_) => "client-write-result",
            Message::ReadIndex => "read-index",
            Message::ReadIndexResult(_) => "read-index-result",
            Message::NodeStatus => "node-status",
            Message::NodeStatusResult(_) => "node-status-result",
            Message::ChangeMembership(_) => "change-membership",
            Message::ChangeMembershipResult(_) => "change-membership-result",
            Message::PreVote(_) => "pre-vote",
            Message::PreVoteResult(_) => "pre-vote-result",
            Message::BindFailures => "bind-failures",
            Message::BindFailuresResult(_) => "bind-failures-result",
            Message::Clock => "clock",
            Message::ClockResult(_) => "clock-result",
            Message::ClientWriteBy { .. } => "client-write-by",
            Message::Error { .. } => "error",
        }
    }
}

/// Why a node refused a request with [`Message::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub enum ErrorCode {
    /// The envelope's version is not one this node speaks.
    WrongVersion,
    /// The envelope names another cluster.
    WrongCluster,
    /// The frame could not be decoded, or is larger than the maximum.
    Malformed,
    /// The message is not a request (a reply sent as a request).
    Unexpected,
}

/// Why a forwarded write was not applied.
///
/// Every variant means the write did not commit (and never will), except
/// [`WriteError::Timeout`], [`WriteError::LeaderChanged`] and a
/// [`WriteError::NoQuorum`] with `proposed`, whose outcome is unknown: retry
/// with the same request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(remote = "Self")]
pub enum WriteError {
    /// This node is not the leader; `leader` is, as far as it knows.
    #[error("not the leader: forward to node {leader_id} ({leader})")]
    ForwardToLeader {
        /// The leader's node id.
        leader_id: NodeId,
        /// The leader's addresses.
        leader: NodeInfo,
    },
    /// This node is not the leader and knows no leader (an election is
    /// running, or the node lost its quorum). Retry later.
    #[error("no leader is known")]
    NoLeader,
    /// The leader did not commit the write within the server's write timeout.
    /// The write may still commit.
    #[error("write not committed within {timeout_ms} ms; it may still commit")]
    Timeout {
        /// The server's write timeout.
        timeout_ms: u64,
    },
    /// Raft stopped on this node (shutdown or a storage error).
    #[error("raft is stopped on this node: {message}")]
    Fatal {
        /// openraft's error.
        message: String,
    },
    // New variants go last: bincode encodes the variant index.
    /// A membership change was refused (another change in progress, the
    /// last voter, an unknown node); nothing changed.
    #[error("membership change refused: {message}")]
    Membership {
        /// Why.
        message: String,
    },
    /// This node is the leader but has had no answer from a majority of
    /// voters for `since_ms` (at least the server's quorum timeout). When
    /// `proposed`, the write was appended to its log before that was seen
    /// and may still commit if the majority comes back; otherwise it was
    /// not proposed.
    #[error(
        "the leader has had no answer from a majority of voters for {since_ms} ms; {}",
        if *proposed { "the write may still commit if they come back" } else { "the write was not proposed" }
    )]
    NoQuorum {
        /// How long since a majority last acknowledged the leader.
        since_ms: u64,
        /// Whether the write was in the leader's log.
        proposed: bool,
    },
    /// This node stopped being the leader while the write was in its log,
    /// uncommitted: a new leader may or may not commit it.
    #[error("the leader stepped down while the write was in flight; it may or may not commit")]
    LeaderChanged,
    /// The write's deadline passed before the leader could propose it
    /// (it waited in the leader's queue, or reached it late): it was not
    /// proposed and never will be. Only sent in answer to
    /// [`Message::ClientWriteBy`], so a node that cannot decode it never
    /// receives it.
    #[error(
        "the write's deadline passed {late_ms} ms before the leader could propose it; it was not applied"
    )]
    DeadlineExceeded {
        /// How far past the deadline the leader was when it refused.
        late_ms: u64,
    },
    /// The write uses a feature that some members do not speak yet
    /// ([`crate::cluster::versions`]): nothing was proposed.
    #[error(
        "the write uses feature {feature} (cluster protocol {since}), which not every member speaks yet: {}; \
         upgrade them, then retry",
        behind.join(", ")
    )]
    FeatureNotEnabled {
        /// The feature's name.
        feature: String,
        /// The protocol that introduced it.
        since: u16,
        /// The members behind: name, version and protocol, or why unknown.
        behind: Vec<String>,
    },
}

ferry_client::self_describing!(BindReport, NodeStatus, MembershipChange, ErrorCode, WriteError);

impl WriteError {
    /// [`WriteError::Timeout`] after `after`.
    pub fn timeout(after: std::time::Duration) -> Self {
        WriteError::Timeout { timeout_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX) }
    }

    /// [`WriteError::DeadlineExceeded`], `late` past the deadline.
    pub fn deadline_exceeded(late: std::time::Duration) -> Self {
        WriteError::DeadlineExceeded { late_ms: u64::try_from(late.as_millis()).unwrap_or(u64::MAX) }
    }
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>> for WriteError {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match (f.leader_id, f.leader_node) {
                (Some(leader_id), Some(leader)) => WriteError::ForwardToLeader { leader_id, leader },
                _ => WriteError::NoLeader,
            },
            // A plain write never changes membership; should openraft report
            // it anyway, the write did not happen.
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                WriteError::Fatal { message: e.to_string() }
            }
            RaftError::Fatal(f) => WriteError::Fatal { message: f.to_string() },
        }
    }
}

impl From<RaftError<NodeId, CheckIsLeaderError<NodeId, NodeInfo>>> for WriteError {
    fn from(e: RaftError<NodeId, CheckIsLeaderError<NodeId, NodeInfo>>) -> Self {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => match (f.leader_id, f.leader_node)
            {
                (Some(leader_id), Some(leader)) => WriteError::ForwardToLeader { leader_id, leader },
                _ => WriteError::NoLeader,
            },
            // The leader could not reach a quorum: no linearizable read now.
            // (openraft does not say for how long; 0 says "just now".)
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => {
                WriteError::NoQuorum { since_ms: 0, proposed: false }
            }
            RaftError::Fatal(f) => WriteError::Fatal { message: f.to_string() },
        }
    }
}
