//! This node's replica of the cluster config: the Raft handle plus what the
//! admin API needs from it.
//!
//! - Writes are accepted on any node: a follower forwards to the leader over
//!   the cluster transport, following at most a few leader changes, and
//!   gives up with [`ReplicaError::Unavailable`] at the request deadline
//!   instead of hanging.
//! - Linearizable reads go through a read barrier. The leader confirms its
//!   leadership with a quorum (openraft's `ensure_linearizable`). A follower
//!   asks the leader for that read index, then waits until it has applied
//!   that far itself.
//! - Stale reads and blocking queries read the local state machine.

use std::sync::Arc;
use std::time::Duration;

use ferry_client::api::RaftPeer;
pub use ferry_client::api::RaftStatus;
use ferry_raft_store::types::Raft;
use ferry_raft_store::{ClusterState, NodeId, RaftMetrics, Request, Response, StateWatch, known_leader};
use openraft::ServerState;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::contacts::Contacts;
use crate::cluster::message::{MembershipChange, Message, WriteError};
use crate::cluster::server::ClusterServer;
use crate::cluster::transport::Transport;

/// Most leader hops one request follows.
const MAX_HOPS: usize = 3;
/// Pause before asking again while no leader is known.
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(50);

/// Why a request to the cluster could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// No leader or no quorum within the deadline: retry later (503).
    #[error("the cluster has no leader or quorum: {0}")]
    Unavailable(String),
    /// The leader did not answer in time: a write may still commit. Retry with
    /// the same request id (503).
    #[error("no answer within the request timeout: {0}")]
    Timeout(String),
    /// Raft stopped on this node (500).
    #[error("raft is stopped on this node: {0}")]
    Fatal(String),
    /// The leader refused a membership change; nothing changed (409).
    #[error("{0}")]
    Refused(String),
}

/// See the module doc.
#[derive(Clone)]
pub struct Replica {
    node_id: NodeId,
    /// This node's name (`[node] name`).
    name: String,
    raft: Raft,
    watch: StateWatch,
    server: ClusterServer,
    transport: Arc<Transport>,
    contacts: Arc<Contacts>,
}

/// What a [`Replica`] is made of.
#[allow(missing_debug_implementations, reason = "openraft's Raft handle has no Debug")]
pub struct ReplicaParts {
    pub node_id: NodeId,
    pub name: String,
    pub raft: Raft,
    pub watch: StateWatch,
    pub server: ClusterServer,
    pub transport: Arc<Transport>,
    /// The contacts the node's Raft network and cluster server report to.
    pub contacts: Arc<Contacts>,
}

impl Replica {
    /// A replica over a running Raft node.
    pub fn new(p: ReplicaParts) -> Self {
        Self {
            node_id: p.node_id,
            name: p.name,
            raft: p.raft,
            watch: p.watch,
            server: p.server,
            transport: p.transport,
            contacts: p.contacts,
        }
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The state this node has applied (a stale read).
    pub fn state(&self) -> Arc<ClusterState> {
        self.watch.state()
    }

    /// Every applied change, as it happens.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.watch.subscribe()
    }

    /// Commits `req` through the leader, wherever it is, by `deadline`:
    /// waits out an election, follows up to `MAX_HOPS` leader changes, and
    /// never runs past the deadline.
    pub async fn write(&self, req: Request, deadline: Instant) -> Result<Response, ReplicaError> {
        match tokio::time::timeout_at(deadline, self.write_inner(req, deadline)).await {
            Ok(r) => r,
            Err(_) => Err(ReplicaError::Timeout(
                "no answer within the request timeout; the write may still commit".into(),
            )),
        }
    }

    async fn write_inner(&self, req: Request, deadline: Instant) -> Result<Response, ReplicaError> {
        let msg = Message::ClientWrite(req.clone());
        self.leader_call(
            || self.server.write(req.clone()),
            &msg,
            |m| match m {
                Message::ClientWriteResult(r) => Some(r),
                _ => None,
            },
            deadline,
        )
        .await
    }

    /// Has the leader perform `change` (leave, force-leave) by `deadline`,
    /// following leader changes like [`Self::write`]. Returns the log index
    /// of the committed membership.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
        deadline: Instant,
    ) -> Result<u64, ReplicaError> {
        let msg = Message::ChangeMembership(change.clone());
        let call = self.leader_call(
            || self.server.change_membership(change.clone()),
            &msg,
            |m| match m {
                Message::ChangeMembershipResult(r) => Some(r),
                _ => None,
            },
            deadline,
        );
        match tokio::time::timeout_at(deadline, call).await {
            Ok(r) => r,
            Err(_) => Err(ReplicaError::Timeout(
                "no answer within the request timeout; the change may still commit".into(),
            )),
        }
    }

    /// Runs `local` here; when this node is not the leader, sends `msg` to
    /// the leader instead (at most `MAX_HOPS` real hops), waiting out
    /// elections until `deadline`.
    async fn leader_call<T, F, Fut>(
        &self,
        local: F,
        msg: &Message,
        extract: fn(Message) -> Option<Result<T, WriteError>>,
        deadline: Instant,
    ) -> Result<T, ReplicaError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, WriteError>>,
    {
        let mut hops = 0;
        let mut result = local().await;
        loop {
            match result {
                Ok(v) => return Ok(v),
                Err(WriteError::ForwardToLeader { leader_id, leader })
                    if leader_id != self.node_id && hops < MAX_HOPS =>
                {
                    result = match self.forward(&leader.cluster_addr, msg, deadline).await {
                        // Only a forward that reached a node counts as a hop:
                        // while the old leader is dead, this node keeps naming
                        // it until the election ends.
                        Ok(answer) => {
                            let kind = answer.kind();
                            match extract(answer) {
                                Some(r) => {
                                    hops += 1;
                                    r
                                }
                                None => return Err(unexpected_kind(kind)),
                            }
                        }
                        // The leader we knew is gone: wait for the next one.
                        Err(ReplicaError::Unavailable(_)) => Err(WriteError::NoLeader),
                        Err(e) => return Err(e),
                    };
                }
                Err(WriteError::NoLeader | WriteError::ForwardToLeader { .. }) => {
                    wait_or_give_up(deadline, "no leader").await?;
                    result = local().await;
                }
                Err(e) => return Err(write_error(e)),
            }
        }
    }

    /// Returns once this node has applied every write committed before the
    /// call: the config index a linearizable read may then serve.
    pub async fn read_barrier(&self, deadline: Instant) -> Result<(), ReplicaError> {
        match tokio::time::timeout_at(deadline, self.read_barrier_inner(deadline)).await {
            Ok(r) => r,
            Err(_) => Err(ReplicaError::Timeout("no read index within the request timeout".into())),
        }
    }

    async fn read_barrier_inner(&self, deadline: Instant) -> Result<(), ReplicaError> {
        let mut local = true;
        loop {
            let answer = if local {
                self.server.read_index().await
            } else {
                match self.leader_addr() {
                    Some(addr) => match self.forward(&addr, &Message::ReadIndex, deadline).await {
                        Ok(Message::ReadIndexResult(r)) => r,
                        Ok(other) => return Err(unexpected(&other)),
                        Err(ReplicaError::Unavailable(_)) => Err(WriteError::NoLeader),
                        Err(e) => return Err(e),
                    },
                    None => Err(WriteError::NoLeader),
                }
            };
            match answer {
                // The leader's own barrier already waited for its apply.
                Ok(_) if local => return Ok(()),
                Ok(index) => return self.wait_applied(index, deadline).await,
                Err(WriteError::ForwardToLeader { leader_id, .. }) if leader_id != self.node_id => {
                    local = false
                }
                Err(WriteError::NoLeader | WriteError::ForwardToLeader { .. }) => {
                    wait_or_give_up(deadline, "no leader").await?;
                    local = true;
                }
                Err(e) => return Err(write_error(e)),
            }
        }
    }

    /// Raft's view of this node. The role and the leader come from one
    /// snapshot of the metrics and agree: `leader_id` is this node exactly
    /// when the role is `leader` ([`known_leader`]).
    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let leader_id = known_leader(&m);
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let peers = membership
            .nodes()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(&id, _)| RaftPeer {
                id,
                name: self.name_of(&m, id).unwrap_or_default(),
                raft: if voters.contains(&id) { "voter" } else { "learner" }.to_string(),
                last_contact_ms: self.contacts.since_contact(id).map(|d| d.as_millis() as u64),
            })
            .collect();
        RaftStatus {
            node_id: self.node_id,
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .to_string(),
            leader_id,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            leader_name: leader_id.and_then(|l| self.name_of(&m, l)),
            quorum: (m.state == ServerState::Leader).then(|| self.contacts.quorum(self.node_id, &voters)),
            peers,
        }
    }

    /// The name of node `id`: this node's own, the one in the Raft
    /// membership, or one learnt from gossip or a status probe.
    pub fn name_of(&self, m: &RaftMetrics, id: NodeId) -> Option<String> {
        if id == self.node_id {
            return Some(self.name.clone());
        }
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| self.contacts.name(id))
    }

    /// This node as log lines name it: `name (id N)`.
    pub fn label(&self) -> String {
        crate::cluster::contacts::node_label(self.node_id, &self.name)
    }

    /// Where RPC outcomes and names are kept.
    pub fn contacts(&self) -> &Arc<Contacts> {
        &self.contacts
    }

    fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = known_leader(&m)?;
        m.membership_config.membership().get_node(&leader).map(|n| n.cluster_addr.clone())
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ReplicaError> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|e| ReplicaError::Timeout(format!("applying up to index {index}: {e}")))
    }

    async fn forward(&self, addr: &str, msg: &Message, deadline: Instant) -> Result<Message, ReplicaError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReplicaError::Timeout("request deadline passed".into()));
        }
        self.transport.call_timeout(addr, msg, left).await.map_err(|e| {
            if e.is_unreachable() {
                ReplicaError::Unavailable(format!("leader at {addr} unreachable: {e}"))
            } else {
                ReplicaError::Timeout(format!("leader at {addr}: {e}"))
            }
        })
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

async fn wait_or_give_up(deadline: Instant, why: &str) -> Result<(), ReplicaError> {
    if Instant::now() + NO_LEADER_BACKOFF >= deadline {
        return Err(ReplicaError::Unavailable(why.to_string()));
    }
    tokio::time::sleep(NO_LEADER_BACKOFF).await;
    Ok(())
}

fn write_error(e: WriteError) -> ReplicaError {
    match e {
        WriteError::NoLeader | WriteError::ForwardToLeader { .. } => ReplicaError::Unavailable(e.to_string()),
        WriteError::Timeout { .. } => ReplicaError::Timeout(e.to_string()),
        WriteError::Fatal { message } => ReplicaError::Fatal(message),
        WriteError::Membership { message } => ReplicaError::Refused(message),
    }
}

fn unexpected(msg: &Message) -> ReplicaError {
    unexpected_kind(msg.kind())
}

fn unexpected_kind(kind: &str) -> ReplicaError {
    ReplicaError::Unavailable(format!("unexpected {kind} answer from the leader"))
}
