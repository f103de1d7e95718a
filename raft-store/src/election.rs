//! ferry's election timer and pre-vote, which replace openraft 0.9's timer.
//!
//! openraft 0.9 lets a follower campaign only after its leader lease
//! (`election_timeout_max`) *plus* an election timeout drawn once per
//! process from `[election_timeout_min, election_timeout_max)`, checked on a
//! tick of 1.5 heartbeats. With a 150–300 ms range that is 450–600 ms of
//! silence before a follower even asks for votes, where etcd (and the Raft
//! paper) wait a random time in the configured range. The fixed draw also
//! means two followers that collide once can collide again at every retry.
//!
//! So [`raft_config`](crate::raft_config) turns openraft's own timer off
//! (`enable_elect = false`) and [`Election::run`] drives elections instead:
//! - a follower that has heard nothing from a leader for a time drawn from
//!   `[election_timeout_min_ms, election_timeout_max_ms)` campaigns; the time
//!   is drawn again for every wait, as etcd does;
//! - "heard from a leader" is [`Election::touch`]: the cluster server calls
//!   it when it accepts an AppendEntries or InstallSnapshot (the sender's
//!   vote is not older than ours) and when it grants a vote;
//! - before it calls `Raft::trigger().elect()`, which raises its term, the
//!   node asks the voters for a **pre-vote** (Raft thesis §9.6, etcd's
//!   `PreVote`): a voter grants one only if it has not heard from a leader
//!   within the lease, is not the leader, its term is below the one the
//!   candidate would take, and the candidate's log is at least as up to
//!   date. Without it, a node that restarts or comes back from a partition
//!   and times out before the leader reaches it raises its term, and the
//!   leader steps down at its next AppendEntries: a needless election;
//! - a leader and a node that is not a voter never campaign, and keep their
//!   contact fresh so that a leader that steps down waits a full timeout;
//! - a single voter elects itself at once (after a restart, say);
//! - **a follower that sees its leader's connection close** (EOF or reset
//!   on the connection that last brought the leader's AppendEntries:
//!   [`Election::contact_on`], [`Election::connection_lost`]) and then finds
//!   the leader's cluster port refusing connections does not wait for the
//!   timeout. A leader process that dies (crash, `kill -9`, exit) closes
//!   its sockets, and every follower hears it within a round trip, as
//!   ZooKeeper's followers do; the probe tells that apart from a pooled
//!   connection the live leader closed. It asks for pre-votes once openraft's
//!   vote lease ([`RaftTimers::vote_lease_ms`], two heartbeats) has passed
//!   since its last contact, plus a random part of a heartbeat so that two
//!   followers rarely campaign together; a voter that saw the close too
//!   grants from then on, one that did not still waits for the full
//!   pre-vote lease. If that early attempt fails, the normal timer runs.
//!   A live leader is not deposed by a lost connection: it reconnects and
//!   refreshes both leases within a heartbeat.
//!
//! Voters refuse real votes during openraft's vote lease after hearing from
//! a leader, and pre-votes during the longer pre-vote lease
//! ([`RaftTimers::leader_lease_ms`], one heartbeat below the election
//! timeout's lower bound), so a follower that lost the leader together with
//! the others finds their leases expired.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use openraft::ServerState;
use openraft::storage::RaftLogStorage;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::RaftTimers;
use crate::log_store::LogStore;
use crate::types::{LogId, NodeId, NodeInfo, Raft};

/// A pre-vote request: "would you vote for me at `term`?" Self-describing
/// on the cluster port ([`ferry_client::selfdesc`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PreVoteRequest {
    /// The node asking.
    pub candidate: NodeId,
    /// The term it would campaign for (its current term + 1).
    pub term: u64,
    /// Its last log id.
    pub last_log_id: Option<LogId>,
}

ferry_client::self_describing!(PreVoteRequest);

/// Asks one voter for a pre-vote. The node implements it over the cluster
/// transport.
pub trait PreVoter: Send + Sync + 'static {
    /// `Some(granted)`, or `None` when `target` did not answer within
    /// `timeout`.
    fn ask(
        &self,
        target: NodeId,
        node: NodeInfo,
        req: PreVoteRequest,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Option<bool>> + Send>>;
}

/// One node's election timer and pre-vote state. Share it (it is in an
/// `Arc`) between the cluster server, which calls [`Election::touch`] and
/// [`Election::pre_vote`], and one [`Election::run`] task.
pub struct Election {
    raft: Raft,
    log: LogStore,
    timers: RaftTimers,
    base: Instant,
    /// Microseconds since `base` of the last contact with a leader.
    last_us: AtomicU64,
    /// The connection that last brought a leader's message (0: none).
    leader_conn: AtomicU64,
    /// That connection closed and no leader has been heard from since.
    leader_gone: AtomicBool,
    /// Wakes [`Election::run`] when the leader's connection closes.
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("timers", &self.timers)
            .field("since_contact", &self.last_contact().elapsed())
            .finish_non_exhaustive()
    }
}

/// What the timer does when a timeout has passed without contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// Leader, learner, or not yet a member: never campaigns.
    Stay,
    /// A voter among others: asks for pre-votes, then campaigns.
    Campaign,
    /// The only voter: campaigns without waiting.
    Alone,
}

impl Election {
    /// The election state of `raft`, whose log store `log` is (a clone of
    /// the store handed to `Raft::new`), timed by `timers`. Contact starts
    /// now: a node that just started waits a full timeout.
    pub fn new(raft: Raft, log: LogStore, timers: RaftTimers) -> Arc<Self> {
        Arc::new(Self {
            raft,
            log,
            timers,
            base: Instant::now(),
            last_us: AtomicU64::new(0),
            leader_conn: AtomicU64::new(0),
            leader_gone: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Records contact with a leader (or a granted vote) now.
    pub fn touch(&self) {
        let us = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_us.fetch_max(us, Ordering::Relaxed);
        self.leader_gone.store(false, Ordering::Relaxed);
    }

    /// Records contact with a leader that arrived on connection `conn` (a
    /// number the caller gives each connection, never 0).
    pub fn contact_on(&self, conn: u64) {
        self.touch();
        self.leader_conn.store(conn, Ordering::Relaxed);
    }

    /// Connection `conn` was closed or reset by its peer. When it is the one
    /// the leader last spoke on, this node connects to the leader's cluster
    /// port once: only if that is refused (the process is gone, not just a
    /// pooled connection closed) and no leader spoke meanwhile is the leader
    /// presumed gone, and this node campaigns early and grants early
    /// pre-votes (see the module doc).
    pub fn connection_lost(self: &Arc<Self>, conn: u64) {
        if conn == 0
            || self.leader_conn.compare_exchange(conn, 0, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let Some(addr) = self.leader_addr() else { return };
        let contact = self.last_us.load(Ordering::Relaxed);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let wait = Duration::from_millis(this.timers.heartbeat_ms.max(1));
            let probe = tokio::time::timeout(wait, tokio::net::TcpStream::connect(&addr)).await;
            let refused = matches!(&probe, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused);
            if refused && this.last_us.load(Ordering::Relaxed) == contact {
                tracing::info!(%addr, "the leader's connection closed and its cluster port refuses connections");
                this.leader_gone.store(true, Ordering::Relaxed);
                this.wake.notify_one();
            }
        });
    }

    /// The cluster address of the leader this node knows, if any.
    fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = crate::leader::known_leader(&m)?;
        m.membership_config.membership().get_node(&leader).map(|n| n.cluster_addr.clone())
    }

    /// Whether the leader's connection closed with no contact since.
    pub fn leader_gone(&self) -> bool {
        self.leader_gone.load(Ordering::Relaxed)
    }

    /// The last contact.
    pub fn last_contact(&self) -> Instant {
        self.base + Duration::from_micros(self.last_us.load(Ordering::Relaxed))
    }

    fn leases(&self) -> Leases {
        Leases {
            pre_vote: Duration::from_millis(self.timers.leader_lease_ms()),
            vote: Duration::from_millis(self.timers.vote_lease_ms()),
        }
    }

    /// This node's answer to a pre-vote request.
    pub async fn pre_vote(&self, req: &PreVoteRequest) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let Ok(state) = self.log.clone().get_log_state().await else { return false };
        let voter = Voter {
            is_leader: m.state == ServerState::Leader,
            since_contact: self.last_contact().elapsed(),
            leader_gone: self.leader_gone(),
            term: m.vote.leader_id().term,
            last_log_id: state.last_log_id,
        };
        let granted = voter.grants(req, self.leases());
        tracing::debug!(candidate = req.candidate, term = req.term, granted, "pre-vote");
        granted
    }

    fn expiry(&self) -> Expiry {
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            return Expiry::Stay;
        }
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if !voters.contains(&m.id) {
            Expiry::Stay
        } else if voters.len() == 1 {
            Expiry::Alone
        } else {
            Expiry::Campaign
        }
    }

    /// Asks every other voter for a pre-vote; true when a quorum of every
    /// config of the (possibly joint) membership grants, this node included.
    async fn pre_vote_quorum(&self, peers: &dyn PreVoter) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let Ok(state) = self.log.clone().get_log_state().await else { return false };
        let req = PreVoteRequest {
            candidate: m.id,
            term: m.vote.leader_id().term + 1,
            last_log_id: state.last_log_id,
        };
        let membership = m.membership_config.membership().clone();
        // Each vote request of the real election is bounded the same way.
        let timeout = Duration::from_millis(self.timers.vote_timeout_ms());
        let mut asks = tokio::task::JoinSet::new();
        for id in membership.voter_ids().filter(|id| *id != m.id) {
            if let Some(node) = membership.get_node(&id) {
                let ask = peers.ask(id, node.clone(), req.clone(), timeout);
                asks.spawn(async move { (id, ask.await) });
            }
        }
        let joint = membership.get_joint_config();
        let mut granted = BTreeSet::from([m.id]);
        // Stop at the first quorum; dropping the set cancels the rest.
        while !has_quorum(joint, &granted) {
            match asks.join_next().await {
                Some(Ok((id, Some(true)))) => {
                    granted.insert(id);
                }
                Some(_) => {}
                None => break,
            }
        }
        let quorum = has_quorum(joint, &granted);
        tracing::info!(term = req.term, granted = ?granted, quorum, "pre-vote");
        quorum
    }

    /// Drives this node's elections until `stop` completes or Raft stops.
    pub async fn run(self: Arc<Self>, peers: impl PreVoter, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut timeout = draw_timeout(self.timers);
        let mut early = draw_early(self.timers);
        // The timer runs from the last contact or this node's last attempt,
        // whichever is later. An attempt does not count as contact: a node
        // whose pre-vote failed must still grant the others theirs (as
        // etcd's candidates do), or two followers that lost the leader
        // together keep refusing each other.
        let mut attempted = Instant::now();
        // The contact (`last_us`) an early attempt was made after: one
        // early attempt per lost leader.
        let mut early_spent: Option<u64> = None;
        loop {
            let gone = self.leader_gone() && early_spent != Some(self.last_us.load(Ordering::Relaxed));
            let base = self.last_contact().max(attempted);
            let deadline = match self.expiry() {
                Expiry::Alone => Instant::now(),
                _ if gone => self.last_contact() + early.min(timeout),
                _ => base + timeout,
            };
            if deadline > Instant::now() {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep_until(deadline) => {}
                    () = self.wake.notified() => {}
                }
                // Contact may have come meanwhile: wait out the new deadline.
                continue;
            }
            if self.raft.metrics().borrow().running_state.is_err() {
                return;
            }
            let expiry = self.expiry();
            let campaign = match expiry {
                Expiry::Stay => false,
                Expiry::Alone => true,
                Expiry::Campaign => {
                    tracing::info!(
                        silent_ms =
                            u64::try_from(self.last_contact().elapsed().as_millis()).unwrap_or(u64::MAX),
                        leader_connection_closed = gone,
                        "no leader heard: asking for pre-votes"
                    );
                    self.pre_vote_quorum(&peers).await
                }
            };
            if campaign && self.raft.trigger().elect().await.is_err() {
                return;
            }
            // Early or not, the next attempt waits a full timeout. A leader
            // or non-voter keeps its contact fresh instead, so that a leader
            // that steps down waits a full timeout too.
            if expiry == Expiry::Stay {
                self.touch();
            }
            attempted = Instant::now();
            if gone {
                early_spent = Some(self.last_us.load(Ordering::Relaxed));
            }
            timeout = draw_timeout(self.timers);
            early = draw_early(self.timers);
            // A lone voter whose election is in flight must not spin.
            if expiry == Expiry::Alone {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(timeout) => {}
                }
            }
        }
    }
}

/// What a voter knows when it answers a pre-vote.
#[derive(Debug, Clone, Copy)]
struct Voter {
    is_leader: bool,
    since_contact: Duration,
    /// It saw the leader's connection close, and no leader since.
    leader_gone: bool,
    term: u64,
    last_log_id: Option<LogId>,
}

/// How long after contact with a leader a voter refuses.
#[derive(Debug, Clone, Copy)]
struct Leases {
    /// Pre-votes, while the leader may still be alive.
    pre_vote: Duration,
    /// Real votes (openraft's lease): after this, a voter that saw the
    /// leader's connection close grants a pre-vote.
    vote: Duration,
}

impl Voter {
    fn grants(&self, req: &PreVoteRequest, leases: Leases) -> bool {
        let silent =
            self.since_contact >= leases.pre_vote || (self.leader_gone && self.since_contact >= leases.vote);
        !self.is_leader && silent && req.term > self.term && req.last_log_id >= self.last_log_id
    }
}

/// Whether `granted` holds a majority of every config in `joint`.
fn has_quorum(joint: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !joint.is_empty() && joint.iter().all(|config| config.intersection(granted).count() * 2 > config.len())
}

/// How long after its last contact a follower that saw its leader's
/// connection close campaigns: openraft's vote lease plus a random part of a
/// heartbeat, in `[vote lease, vote lease + heartbeat)`.
pub fn draw_early(timers: RaftTimers) -> Duration {
    let lease = timers.vote_lease_ms() * 1_000;
    Duration::from_micros(fastrand::u64(lease..lease + timers.heartbeat_ms.max(1) * 1_000))
}

/// A random election timeout in `[min, max)` of `timers`.
pub fn draw_timeout(timers: RaftTimers) -> Duration {
    let min = timers.election_timeout_min_ms;
    let max = timers.election_timeout_max_ms.max(min + 1);
    Duration::from_micros(fastrand::u64(min * 1_000..max * 1_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    #[test]
    fn timeouts_are_drawn_from_the_configured_range_and_vary() {
        let timers =
            RaftTimers { heartbeat_ms: 30, election_timeout_min_ms: 150, election_timeout_max_ms: 300 };
        let draws: Vec<Duration> = (0..1_000).map(|_| draw_timeout(timers)).collect();
        assert!(draws.iter().all(|d| *d >= Duration::from_millis(150) && *d < Duration::from_millis(300)));
        let low = draws.iter().filter(|d| **d < Duration::from_millis(225)).count();
        assert!((300..700).contains(&low), "{low} of 1000 draws in the lower half");
    }

    #[test]
    fn a_pre_vote_is_granted_only_to_an_up_to_date_candidate_once_the_leader_is_silent() {
        let lease = Leases { pre_vote: Duration::from_millis(120), vote: Duration::from_millis(60) };
        let voter = Voter {
            is_leader: false,
            since_contact: Duration::from_millis(150),
            leader_gone: false,
            term: 5,
            last_log_id: log_id(5, 10),
        };
        let req = PreVoteRequest { candidate: 2, term: 6, last_log_id: log_id(5, 10) };
        assert!(voter.grants(&req, lease));
        // Heard from a leader within the lease.
        assert!(!Voter { since_contact: Duration::from_millis(100), ..voter }.grants(&req, lease));
        // ...unless its connection closed since: then after the vote lease.
        let gone = Voter { leader_gone: true, ..voter };
        assert!(Voter { since_contact: Duration::from_millis(70), ..gone }.grants(&req, lease));
        assert!(!Voter { since_contact: Duration::from_millis(50), ..gone }.grants(&req, lease));
        // The leader itself.
        assert!(!Voter { is_leader: true, ..voter }.grants(&req, lease));
        // The candidate would not raise the term past ours.
        assert!(!Voter { term: 6, ..voter }.grants(&req, lease));
        // The candidate's log is behind: shorter, or from an older term.
        assert!(!voter.grants(&PreVoteRequest { last_log_id: log_id(5, 9), ..req.clone() }, lease));
        assert!(!voter.grants(&PreVoteRequest { last_log_id: log_id(4, 12), ..req.clone() }, lease));
        assert!(voter.grants(&PreVoteRequest { last_log_id: log_id(6, 1), ..req }, lease));
    }

    #[test]
    fn a_quorum_is_a_majority_of_every_config() {
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        let three = vec![set(&[1, 2, 3])];
        assert!(has_quorum(&three, &set(&[1, 3])));
        assert!(!has_quorum(&three, &set(&[1])));
        assert!(!has_quorum(&three, &set(&[1, 9])));
        let joint = vec![set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert!(!has_quorum(&joint, &set(&[1, 2, 3])));
        assert!(has_quorum(&joint, &set(&[1, 3, 4])));
        assert!(!has_quorum(&[], &set(&[1])));
    }

    #[test]
    fn early_campaigns_start_after_the_vote_lease_within_a_heartbeat() {
        let timers =
            RaftTimers { heartbeat_ms: 30, election_timeout_min_ms: 150, election_timeout_max_ms: 300 };
        let draws: Vec<Duration> = (0..1_000).map(|_| draw_early(timers)).collect();
        assert!(draws.iter().all(|d| *d >= Duration::from_millis(60) && *d < Duration::from_millis(90)));
        assert!(draws.iter().any(|d| *d != draws[0]), "early waits must vary");
    }
}
