//! This node's replica of the cluster config: the Raft handle plus what the
//! admin API needs from it.
//!
//! - Writes are accepted on any node: a follower forwards to the leader over
//!   the cluster transport, following at most a few leader changes, waiting
//!   out elections, and sending a write again when a leader went away with it
//!   (its request id makes that safe). At the request deadline it gives up
//!   with an error that says what happened ([`super::attempt`]) instead of
//!   hanging. The leader never proposes a write after its deadline: a
//!   forwarded write states it on the leader's clock
//!   ([`crate::cluster::deadline`]).
//! - Linearizable reads go through a read barrier. The leader confirms its
//!   leadership with a quorum (openraft's `ensure_linearizable`). A follower
//!   asks the leader for that read index, then waits until it has applied
//!   that far itself.
//! - Stale reads and blocking queries read the local state machine.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use ferry_client::api::RaftStatus;
use ferry_client::api::{RaftMembership, RaftPeer, Role};
use ferry_raft_store::types::Raft;
use ferry_raft_store::{ClusterState, NodeId, RaftMetrics, Request, Response, StateWatch, known_leader};
use openraft::ServerState;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::contacts::Contacts;
use crate::cluster::deadline;
use crate::cluster::leadership;
use crate::cluster::message::{MembershipChange, Message, WriteError};
use crate::cluster::server::ClusterServer;
use crate::cluster::transport::{Transport, TransportError};
use crate::control::attempt::{self, Next, Progress, Source};

/// Whether a request may be sent again after a leader went away with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// It carries a request id: a second apply answers the first's response.
    Yes,
    /// It does not (a membership change).
    No,
}

/// What a request sends to the leader when this node does not lead.
#[derive(Debug, Clone, Copy)]
enum Outgoing<'a> {
    /// A write, sent with its deadline on the leader's clock.
    Write(&'a Request),
    /// Another request, sent as it is.
    Plain(&'a Message),
}

/// Most leader hops one request follows.
const MAX_HOPS: usize = 3;
/// Pause before asking again while no leader is known.
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(50);

/// Why a request to the cluster could not be answered. Each 503 variant is
/// one error code of the admin API (README, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// No leader could be asked until the deadline: none was known, or the
    /// one known was unreachable. Retry later (503 `no_leader`).
    #[error("no leader: {0}")]
    NoLeader(String),
    /// A leader had the write and went away (stepped down, stopped, or its
    /// connection broke) before answering, and no leader answered by the
    /// deadline: the write may or may not have committed. Retry with the
    /// same request id (503 `leader_changed`).
    #[error("leader changed: {0}")]
    LeaderChanged(String),
    /// The leader cannot reach a majority of voters (503 `no_quorum`).
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The request timeout passed while the request was in flight: a write
    /// may still commit. Retry with the same request id (503 `timeout`).
    #[error("timeout: {0}")]
    Timeout(String),
    /// The leader's answer could not be read, or the request not sent (a
    /// peer of another version?) (503 `unavailable`).
    #[error("the leader could not be asked: {0}")]
    Unavailable(String),
    /// The write's deadline passed before the leader could propose it: it
    /// was not applied and never will be (503 `deadline_exceeded`).
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// Raft stopped on this node (500).
    #[error("raft is stopped on this node: {0}")]
    Fatal(String),
    /// The leader refused a membership change; nothing changed (409).
    #[error("{0}")]
    Refused(String),
    /// The write uses a feature not every member speaks yet; nothing was
    /// proposed (409 `feature_not_enabled`).
    #[error("{0}")]
    FeatureNotEnabled(String),
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

    /// This node's cluster server.
    pub fn server(&self) -> &ClusterServer {
        &self.server
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
    /// waits out an election, follows up to `MAX_HOPS` leader changes, sends
    /// the write again when a leader went away with it, and never runs past
    /// the deadline.
    pub async fn write(&self, req: Request, deadline: Instant) -> Result<Response, ReplicaError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let extract = |m| match m {
            Message::ClientWriteResult(r) => Some(r),
            _ => None,
        };
        let progress = Mutex::new(Progress::default());
        let call = self.leader_call(
            || self.server.write(req.clone(), deadline),
            Outgoing::Write(&req),
            extract,
            deadline,
            &progress,
            Resend::Yes,
        );
        match tokio::time::timeout_at(deadline, call).await {
            Ok(r) => r,
            Err(_) => Err(lock(&progress).at_deadline(true, budget, self.quorum_lost(budget))),
        }
    }

    /// Has the leader perform `change` (leave, force-leave) by `deadline`,
    /// following leader changes like [`Self::write`]. Returns the log index
    /// of the committed membership.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
        deadline: Instant,
    ) -> Result<u64, ReplicaError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let msg = Message::ChangeMembership(change.clone());
        let extract = |m| match m {
            Message::ChangeMembershipResult(r) => Some(r),
            _ => None,
        };
        let progress = Mutex::new(Progress::default());
        let local = || self.server.change_membership(change.clone());
        // Not sent again after a leader went away with it: a second
        // removal of a removed node is refused, which would hide that the
        // first one may have worked.
        let call = self.leader_call(local, Outgoing::Plain(&msg), extract, deadline, &progress, Resend::No);
        match tokio::time::timeout_at(deadline, call).await {
            Ok(r) => r,
            Err(_) => Err(lock(&progress).at_deadline(true, budget, self.quorum_lost(budget))),
        }
    }

    /// Runs `local` here; when this node is not the leader, sends `outgoing` to
    /// the leader instead (at most `MAX_HOPS` real hops), waiting out
    /// elections, and, if `resend`, starting over when a leader went away
    /// with the request (else that ends it, `leader_changed`). Runs until it
    /// has an answer: the caller bounds it by the deadline and answers from
    /// `progress` when that passes.
    async fn leader_call<T, F, Fut>(
        &self,
        local: F,
        outgoing: Outgoing<'_>,
        extract: fn(Message) -> Option<Result<T, WriteError>>,
        deadline: Instant,
        progress: &Mutex<Progress>,
        resend: Resend,
    ) -> Result<T, ReplicaError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, WriteError>>,
    {
        let mut hops = 0;
        // An attempt that only looks for a leader is not marked as asking
        // one (see `Progress`): this node when it does not lead (it answers
        // at once), and a leader last found unreachable.
        let mut unreachable: Option<String> = None;
        let ask_here = || async {
            if self.leads() {
                lock(progress).asking_here();
            }
            let r = local().await;
            lock(progress).answered();
            r
        };
        let mut next = ask_here().await.map_err(|e| attempt::after_write_error(e, Source::Local, true));
        loop {
            match next {
                Ok(v) => return Ok(v),
                Err(Next::Follow { leader_id, leader }) if leader_id != self.node_id && hops < MAX_HOPS => {
                    let who = attempt::describe(leader_id, &leader);
                    let addr = &leader.cluster_addr;
                    if unreachable.as_ref() != Some(addr) {
                        lock(progress).asking(format!("the leader, {who}"));
                    }
                    let forwarded = match outgoing {
                        Outgoing::Write(req) => self.forward_write(addr, req, deadline).await,
                        Outgoing::Plain(msg) => self.forward(addr, msg, deadline).await,
                    };
                    lock(progress).answered();
                    unreachable = match &forwarded {
                        Err(e) if e.is_unreachable() => Some(addr.clone()),
                        _ => None,
                    };
                    next = match forwarded {
                        // Only a forward that reached a node counts as a hop:
                        // while the old leader is dead, this node keeps naming
                        // it until the election ends.
                        Ok(answer) => {
                            let kind = answer.kind();
                            let Some(r) = extract(answer) else { return Err(unexpected_kind(kind)) };
                            hops += 1;
                            r.map_err(|e| attempt::after_write_error(e, Source::Leader(&who), true))
                        }
                        Err(e) => Err(attempt::after_transport_error(&e, &who)),
                    };
                }
                Err(Next::Follow { leader_id, .. }) => {
                    let why = if leader_id == self.node_id {
                        "this node is named the leader but does not lead yet".to_string()
                    } else {
                        format!("the leader moved more than {MAX_HOPS} times during the request")
                    };
                    lock(progress).waiting(why);
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    next = ask_here().await.map_err(|e| attempt::after_write_error(e, Source::Local, true));
                }
                Err(Next::Wait(why)) => {
                    lock(progress).waiting(why);
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    next = ask_here().await.map_err(|e| attempt::after_write_error(e, Source::Local, true));
                }
                Err(Next::Lost(why)) if resend == Resend::No => {
                    return Err(ReplicaError::LeaderChanged(format!(
                        "{why}; it may or may not have happened"
                    )));
                }
                Err(Next::Lost(why)) => {
                    // Safe to send again: the request id makes a second
                    // apply answer the first one's response.
                    tracing::debug!(%why, "a leader went away with a request; sending it again");
                    lock(progress).lost(why);
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    next = ask_here().await.map_err(|e| attempt::after_write_error(e, Source::Local, true));
                }
                Err(Next::Answer(e)) => return Err(e),
            }
        }
    }

    /// Returns once this node has applied every write committed before the
    /// call: the config index a linearizable read may then serve.
    pub async fn read_barrier(&self, deadline: Instant) -> Result<(), ReplicaError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let progress = Mutex::new(Progress::default());
        match tokio::time::timeout_at(deadline, self.read_barrier_inner(deadline, &progress)).await {
            Ok(r) => r,
            Err(_) => Err(lock(&progress).at_deadline(false, budget, self.quorum_lost(budget))),
        }
    }

    async fn read_barrier_inner(
        &self,
        deadline: Instant,
        progress: &Mutex<Progress>,
    ) -> Result<(), ReplicaError> {
        let mut local = true;
        // As in `leader_call`: probes for a leader are not marked as asking.
        let mut unreachable: Option<String> = None;
        loop {
            let answer = if local {
                if self.leads() {
                    lock(progress).asking_here();
                }
                self.server
                    .read_index()
                    .await
                    .map_err(|e| attempt::after_write_error(e, Source::Local, false))
            } else {
                match self.leader_addr() {
                    Some(addr) => {
                        let id = self.raft.metrics().borrow().current_leader;
                        let who =
                            id.map_or_else(|| format!("node at {addr}"), |id| format!("node {id} at {addr}"));
                        if unreachable.as_ref() != Some(&addr) {
                            lock(progress).asking(format!("the leader, {who}"));
                        }
                        let forwarded = self.forward(&addr, &Message::ReadIndex, deadline).await;
                        unreachable = match &forwarded {
                            Err(e) if e.is_unreachable() => Some(addr.clone()),
                            _ => None,
                        };
                        match forwarded {
                            Ok(Message::ReadIndexResult(r)) => {
                                r.map_err(|e| attempt::after_write_error(e, Source::Leader(&who), false))
                            }
                            Ok(other) => return Err(unexpected(&other)),
                            Err(e) => Err(attempt::after_transport_error(&e, &who)),
                        }
                    }
                    None => Err(Next::Wait("this node knows no leader".into())),
                }
            };
            lock(progress).answered();
            match answer {
                // The leader's own barrier already waited for its apply.
                Ok(_) if local => return Ok(()),
                Ok(index) => {
                    lock(progress)
                        .asking(format!("this node (applying up to the leader's read index {index})"));
                    return self.wait_applied(index, deadline).await;
                }
                Err(Next::Follow { leader_id, .. }) if leader_id != self.node_id && local => local = false,
                // A read changes nothing: a leader lost on the way is just
                // no leader to ask.
                Err(Next::Follow { .. }) => {
                    lock(progress).waiting("the leader moved during the read".into());
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    local = true;
                }
                Err(Next::Wait(why) | Next::Lost(why)) => {
                    lock(progress).waiting(why);
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    local = true;
                }
                Err(Next::Answer(e)) => return Err(e),
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
                raft: if voters.contains(&id) { RaftMembership::Voter } else { RaftMembership::Learner },
                last_contact_ms: self.contacts.since_contact(id).map(|d| d.as_millis() as u64),
            })
            .collect();
        RaftStatus {
            node_id: self.node_id,
            role: match m.state {
                ServerState::Leader => Role::Leader,
                ServerState::Follower => Role::Follower,
                ServerState::Candidate => Role::Candidate,
                ServerState::Learner => Role::Learner,
                ServerState::Shutdown => Role::Shutdown,
            },
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
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => ReplicaError::Timeout(format!(
                    "this node did not apply up to index {index} within the request timeout"
                )),
                openraft::metrics::WaitError::ShuttingDown => ReplicaError::Fatal(e.to_string()),
            })
    }

    /// Whether this node leads now (a local attempt then proposes).
    fn leads(&self) -> bool {
        let rx = self.raft.metrics();
        let term = leadership::Term::current(&rx.borrow());
        term.is_some()
    }

    /// How long this node has led without a majority's acknowledgement,
    /// if it leads and that is past the quorum timeout; `waited`: how long
    /// the request waited.
    fn quorum_lost(&self, waited: Duration) -> Option<u64> {
        let rx = self.raft.metrics();
        leadership::quorum_lost(&rx.borrow(), waited, self.server.config().quorum_timeout)
    }

    /// Sends `msg` to the leader at `addr`, within what is left until
    /// `deadline`; a call that ends without a reply resets its connection,
    /// so the leader never gets the request later (a membership change
    /// would act on it).
    async fn forward(&self, addr: &str, msg: &Message, deadline: Instant) -> Result<Message, TransportError> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.transport.call_or_abort(addr, msg, left).await
    }

    /// Sends the write `req` to the leader at `addr` with its deadline
    /// ([`deadline::forward_write`]), or, under the fault switch
    /// `no-write-deadline`, as a plain [`Message::ClientWrite`].
    async fn forward_write(
        &self,
        addr: &str,
        req: &Request,
        deadline: Instant,
    ) -> Result<Message, TransportError> {
        if !self.server.config().check_deadlines {
            return self.forward(addr, &Message::ClientWrite(req.clone()), deadline).await;
        }
        deadline::forward_write(&self.transport, addr, req, deadline).await
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// The progress of a request (never held across an await).
fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unexpected(msg: &Message) -> ReplicaError {
    unexpected_kind(msg.kind())
}

fn unexpected_kind(kind: &str) -> ReplicaError {
    ReplicaError::Unavailable(format!("unexpected {kind} answer from the leader"))
}
