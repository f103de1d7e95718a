//! Whether this node is still a leader that can commit: what a leader
//! waiting for a write, a read-index round or a membership change watches,
//! so that the wait ends with what happened.
//!
//! openraft 0.9 keeps a write's responder until the entry is applied or
//! truncated, and a leader that lost its majority never steps down on its
//! own. So:
//! - [`stepped_down`] ends the wait as soon as this node is no longer the
//!   leader of the term it proposed in: [`WriteError::LeaderChanged`] (the
//!   entry may or may not commit under the next leader).
//! - When a wait times out, [`quorum_lost`] says whether the leader has
//!   gone without a majority's acknowledgement for the quorum timeout
//!   (openraft's `millis_since_quorum_ack`): then the answer is
//!   [`WriteError::NoQuorum`], not [`WriteError::Timeout`].
//!
//! Once a write is proposed, the ack age is only a verdict at the end of
//! its wait, never a reason to give up early: a follower catching up on a
//! long log acknowledges only when a whole AppendEntries lands, so a live
//! majority can be silent for a second or more
//! (`a_new_leader_replicates_a_log_of_large_entries`), and a write that
//! would have committed must not be refused for it. *Before* proposing it
//! is a reason (the batcher's `refuse_without_quorum`): a leader that has
//! had no majority's acknowledgement for the quorum timeout proposes
//! nothing, since an entry it appended would commit whenever the majority
//! came back, long after the write's deadline. A write refused that way is
//! definitely not applied; a client retries it.
//!
//! [`judge`] and [`quorum_lost`] are pure functions of one metrics snapshot.

use std::time::Duration;

use ferry_raft_store::types::{Raft, Vote};
use ferry_raft_store::{NodeId, NodeInfo};
use openraft::{RaftMetrics, ServerState};

use crate::cluster::message::WriteError;

/// What this node was when it proposed: the leader of `vote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// This node's id.
    pub me: NodeId,
    /// Its vote as leader.
    pub vote: Vote,
}

impl Term {
    /// This node's leadership now, if it leads.
    pub fn current(m: &RaftMetrics<NodeId, NodeInfo>) -> Option<Term> {
        (m.state == ServerState::Leader && m.current_leader == Some(m.id))
            .then_some(Term { me: m.id, vote: m.vote })
    }
}

/// Whether the leader of `term` has stepped down, from one metrics snapshot.
pub fn judge(m: &RaftMetrics<NodeId, NodeInfo>, term: Term) -> Option<WriteError> {
    (Term::current(m) != Some(term)).then_some(WriteError::LeaderChanged)
}

/// How long this node, if it leads, has gone without an acknowledgement
/// from a majority of voters, when that is at least `quorum_timeout`.
/// `waited` counts for a leader no majority has acknowledged since it took
/// office (openraft reports no age then).
pub fn quorum_lost(
    m: &RaftMetrics<NodeId, NodeInfo>,
    waited: Duration,
    quorum_timeout: Duration,
) -> Option<u64> {
    Term::current(m)?;
    let since = m.millis_since_quorum_ack.map_or(waited, Duration::from_millis);
    (since >= quorum_timeout).then(|| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The error of a wait on this node that ended at `timeout` after
/// `waited`: [`WriteError::NoQuorum`] (the entry proposed) if the leader has
/// no majority, else [`WriteError::Timeout`].
pub fn timed_out(raft: &Raft, timeout: Duration, waited: Duration, quorum_timeout: Duration) -> WriteError {
    let lost = quorum_lost(&raft.metrics().borrow(), waited, quorum_timeout);
    match lost {
        Some(since_ms) => WriteError::NoQuorum { since_ms, proposed: true },
        None => WriteError::timeout(timeout),
    }
}

/// Resolves once this node, which proposed as the leader of `term`, is no
/// longer that leader (or Raft stopped); never otherwise. Cancel-safe: drop
/// it when the wait ends.
pub async fn stepped_down(raft: &Raft, term: Term) -> WriteError {
    let mut rx = raft.metrics();
    loop {
        if let Some(e) = judge(&rx.borrow_and_update(), term) {
            return e;
        }
        if rx.changed().await.is_err() {
            return WriteError::LeaderChanged;
        }
    }
}

/// Fills in how long a leader has been without a majority, for a
/// [`WriteError::NoQuorum`] made from an openraft error that does not say.
pub fn with_quorum_age(e: WriteError, raft: &Raft) -> WriteError {
    match e {
        WriteError::NoQuorum { since_ms: 0, proposed } => {
            let since_ms = raft.metrics().borrow().millis_since_quorum_ack.unwrap_or(0);
            WriteError::NoQuorum { since_ms, proposed }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader_metrics(id: NodeId, term: u64, since_ack: Option<u64>) -> RaftMetrics<NodeId, NodeInfo> {
        let mut m = RaftMetrics::new_initial(id);
        m.state = ServerState::Leader;
        m.current_leader = Some(id);
        m.current_term = term;
        m.vote = Vote::new_committed(term, id);
        m.millis_since_quorum_ack = since_ack;
        m
    }

    const Q: Duration = Duration::from_millis(400);

    #[test]
    fn a_leader_with_recent_acks_has_its_quorum() {
        let m = leader_metrics(1, 3, Some(50));
        let term = Term::current(&m).expect("leads");
        assert_eq!(judge(&m, term), None);
        assert_eq!(quorum_lost(&m, Duration::from_secs(9), Q), None);
    }

    #[test]
    fn acks_older_than_the_quorum_timeout_are_a_lost_quorum() {
        assert_eq!(quorum_lost(&leader_metrics(1, 3, Some(450)), Duration::ZERO, Q), Some(450));
        assert_eq!(quorum_lost(&leader_metrics(1, 3, Some(399)), Duration::ZERO, Q), None);
        // A leader never acknowledged counts from the start of the wait.
        let m = leader_metrics(1, 3, None);
        assert_eq!(quorum_lost(&m, Duration::from_millis(100), Q), None);
        assert_eq!(quorum_lost(&m, Duration::from_millis(2_500), Q), Some(2_500));
        // A follower has no quorum of its own to lose.
        let mut follower = leader_metrics(1, 3, None);
        follower.state = ServerState::Follower;
        follower.current_leader = Some(2);
        assert_eq!(quorum_lost(&follower, Duration::from_secs(9), Q), None);
    }

    #[test]
    fn stepping_down_or_a_new_term_is_a_leader_change() {
        let m = leader_metrics(1, 3, Some(0));
        let term = Term::current(&m).expect("leads");
        let mut follower = m.clone();
        follower.state = ServerState::Follower;
        follower.current_leader = Some(2);
        assert_eq!(judge(&follower, term), Some(WriteError::LeaderChanged));
        // Leader again, but of a later term: the old term's entry may be gone.
        assert_eq!(judge(&leader_metrics(1, 5, Some(0)), term), Some(WriteError::LeaderChanged));
        let mut candidate = m;
        candidate.state = ServerState::Candidate;
        candidate.current_leader = None;
        assert_eq!(judge(&candidate, term), Some(WriteError::LeaderChanged));
    }
}
