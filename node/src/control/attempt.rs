//! How a request to the leader ends: what each failed attempt means for the
//! request (follow the leader, wait for one, or answer), and what to answer
//! when the request deadline passes, from what the attempts went through.
//!
//! The point is that a 503 says what happened (see the README's error
//! codes): `no_leader` when no leader could be asked, `leader_changed` when
//! one took a write and went away before answering (its outcome unknown),
//! `no_quorum` when the leader cannot reach a majority, and `timeout` only
//! when the request timeout passed while an attempt was in flight. A broken
//! connection to the leader used to be reported as `timeout` a few
//! milliseconds into the request.
//!
//! Pure: the loops in [`super::replica`] feed it and do the I/O. Every write
//! carries a request id, so sending it again after an attempt whose outcome
//! is unknown is safe: the state machine answers a retry from its memory.

use std::time::Duration;

use ferry_raft_store::{NodeId, NodeInfo};

use crate::cluster::frame::FrameError;
use crate::cluster::message::WriteError;
use crate::cluster::transport::TransportError;
use crate::control::replica::ReplicaError;

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// This node's own cluster server.
    Local,
    /// The node the request was forwarded to as the leader, described by
    /// [`describe`].
    Leader(&'a str),
}

/// What to do after an attempt failed.
#[derive(Debug)]
pub enum Next {
    /// Ask this node instead (at most a few hops).
    Follow { leader_id: NodeId, leader: NodeInfo },
    /// No leader to ask now: wait a moment and try again; why.
    Wait(String),
    /// A leader had the request and went away before answering: its
    /// outcome is unknown. Wait and send it again; why.
    Lost(String),
    /// The request ends with this answer.
    Answer(ReplicaError),
}

/// What `e`, answered by `from`, means for a request that changes something
/// (`write`: a write or a membership change) or for a read.
pub fn after_write_error(e: WriteError, from: Source<'_>, write: bool) -> Next {
    let who = match from {
        Source::Local => "this node",
        Source::Leader(who) => who,
    };
    match e {
        WriteError::ForwardToLeader { leader_id, leader } => Next::Follow { leader_id, leader },
        WriteError::NoLeader => Next::Wait(format!("{who} knows no leader (an election may be under way)")),
        WriteError::LeaderChanged => {
            Next::Lost(format!("{who} stepped down as the leader while the write was in its log"))
        }
        WriteError::NoQuorum { since_ms, proposed } => Next::Answer(ReplicaError::NoQuorum(format!(
            "{who}, the leader, has had no answer from a majority of voters for {since_ms} ms{}",
            match (write, proposed) {
                (false, _) => "",
                (true, true) => {
                    "; the write is in its log and may still commit if they come back: retry with the \
                     same request id"
                }
                (true, false) => "; the write was not proposed",
            }
        ))),
        WriteError::Timeout { timeout_ms } => Next::Answer(ReplicaError::Timeout(format!(
            "{who}, the leader, gave up after its own {timeout_ms} ms timeout{}",
            if write { "; the write may still commit: retry with the same request id" } else { "" }
        ))),
        WriteError::Membership { message } => Next::Answer(ReplicaError::Refused(message)),
        e @ WriteError::FeatureNotEnabled { .. } => {
            Next::Answer(ReplicaError::FeatureNotEnabled(e.to_string()))
        }
        WriteError::DeadlineExceeded { late_ms } => Next::Answer(ReplicaError::DeadlineExceeded(format!(
            "{who}, the leader, could propose the write only {late_ms} ms after its deadline (the request \
             timeout), so it did not: the write was not applied and never will be"
        ))),
        // This node's Raft stopped: it is shutting down.
        WriteError::Fatal { message } if from == Source::Local => Next::Answer(ReplicaError::Fatal(message)),
        // The leader's Raft stopped (it is shutting down) with the write in
        // its hands: the next leader may or may not have it.
        WriteError::Fatal { message } => Next::Lost(format!("the leader, {who}, stopped ({message})")),
    }
}

/// What a failed call to the leader `who` ([`describe`]) means: nothing was sent
/// ([`Next::Wait`]), the exchange broke after the request went out
/// ([`Next::Lost`]), or the request ends ([`Next::Answer`]).
pub fn after_transport_error(e: &TransportError, who: &str) -> Next {
    if e.is_unreachable() {
        return Next::Wait(format!("the last known leader, {who}, is unreachable ({e})"));
    }
    match e {
        // The call's own deadline is the request's.
        TransportError::Timeout { .. } => Next::Answer(ReplicaError::Timeout(format!(
            "no answer from the leader, {who}, within the request timeout"
        ))),
        // The leader died, restarted or closed the connection with the
        // request in its hands (a write error may also mean it never got it:
        // unknown either way).
        TransportError::Frame { source: FrameError::Closed | FrameError::Io(_), .. } => {
            Next::Lost(format!("the connection to the leader, {who}, broke before it answered ({e})"))
        }
        // Its answer could not be read, or the request not sent: asking
        // again would fail the same way.
        _ => Next::Answer(ReplicaError::Unavailable(format!("the leader, {who}: {e}"))),
    }
}

/// What the attempts of one request went through, kept for the answer at
/// the deadline. Only an attempt a leader works on is marked
/// ([`Progress::asking`]): one that only looks for a leader (a follower's
/// own server, which answers at once; a leader last found unreachable)
/// leaves the request waiting for one, so a deadline that falls during it
/// is `no_leader`, not `timeout`.
#[derive(Debug, Default)]
pub struct Progress {
    /// The attempt in flight: who is being asked.
    asking: Option<String>,
    /// Whether that is this node's own cluster server.
    here: bool,
    /// Why no leader could be asked, when the last attempt found none.
    waiting: Option<String>,
    /// Why an earlier attempt's outcome is unknown, if one is.
    lost: Option<String>,
}

impl Progress {
    /// An attempt to `who` starts.
    pub fn asking(&mut self, who: impl Into<String>) {
        self.asking = Some(who.into());
        self.here = false;
    }

    /// An attempt on this node (which proposes, if it leads) starts.
    pub fn asking_here(&mut self) {
        self.asking = Some("this node (the leader)".into());
        self.here = true;
    }

    /// The attempt in flight ended.
    pub fn answered(&mut self) {
        self.asking = None;
    }

    /// No leader could be asked, because of `why`.
    pub fn waiting(&mut self, why: String) {
        self.asking = None;
        self.waiting = Some(why);
    }

    /// The attempt's outcome is unknown, because of `why`.
    pub fn lost(&mut self, why: String) {
        self.asking = None;
        self.lost = Some(why);
        self.waiting = None;
    }

    /// The answer when the request timeout `budget` passed: with an
    /// attempt in flight, `no_quorum` if it is this node's and this node
    /// leads without a majority's acknowledgement for `no_quorum_ms`
    /// ([`crate::cluster::leadership::quorum_lost`]), else `timeout`; with
    /// none, `leader_changed` if an attempt's outcome is unknown, else
    /// `no_leader`. `write` says whether the request changes anything (a
    /// write or membership change) or is a read.
    pub fn at_deadline(&self, write: bool, budget: Duration, no_quorum_ms: Option<u64>) -> ReplicaError {
        let ms = (budget + Duration::from_micros(500)).as_millis();
        let retry = if write { "; it may still commit: retry with the same request id" } else { "" };
        if let (true, Some(_), Some(since)) = (self.here, &self.asking, no_quorum_ms) {
            let proposed = if write {
                "; the write is in its log and may still commit if they come back: retry with the same \
                 request id"
            } else {
                ""
            };
            return ReplicaError::NoQuorum(format!(
                "this node, the leader, has had no answer from a majority of voters for {since} ms, past \
                 the request timeout ({ms} ms){proposed}"
            ));
        }
        if let Some(who) = &self.asking {
            return ReplicaError::Timeout(format!(
                "no answer from {who} within the request timeout ({ms} ms){retry}"
            ));
        }
        if let Some(lost) = &self.lost {
            return ReplicaError::LeaderChanged(format!(
                "{lost}, and no leader answered within the request timeout ({ms} ms); the write may or may \
                 not have committed: retry with the same request id"
            ));
        }
        let why = self.waiting.as_deref().unwrap_or("no leader is known");
        ReplicaError::NoLeader(format!("none within the request timeout ({ms} ms): {why}"))
    }
}

/// `node 2 (n2) at 127.0.0.2:7947`, for messages.
pub fn describe(id: NodeId, info: &NodeInfo) -> String {
    match info.name.as_str() {
        "" => format!("node {id} at {}", info.cluster_addr),
        name => format!("node {id} ({name}) at {}", info.cluster_addr),
    }
}

#[cfg(test)]
mod tests;
