//! Contact with each Raft peer: when this node last heard from it, under
//! which name, and the log lines about a peer becoming unreachable.
//!
//! Every Raft RPC this node sends ([`PeerClient`](super::PeerClient), the
//! pre-vote) reports its outcome here, and the cluster server reports the
//! AppendEntries and snapshots a leader sends. That gives:
//! - the last contact per peer and the leader's quorum (`/v1/status`,
//!   `ferry_raft_has_quorum`): a peer counts as reachable while it was
//!   heard from within the contact timeout (the election timeout's upper
//!   bound, after which a follower stops waiting for its leader);
//! - one WARN line when a peer becomes unreachable (no answer within the
//!   contact timeout), one INFO line when it answers again, and a reminder
//!   every [`REMIND_EVERY`] while it stays unreachable, with the number of
//!   failed RPCs. openraft's own per-RPC lines (several per heartbeat) are
//!   filtered out by `telemetry::raft_noise`.
//!
//! Names come from the Raft membership, gossip and status probes
//! ([`Contacts::learn_name`]); a peer whose name is not known yet is logged
//! by id alone.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::time::Duration;

use ferry_raft_store::NodeId;
use tokio::time::Instant;
use tracing::{info, warn};

/// How often a peer that stays unreachable is logged again.
pub const REMIND_EVERY: Duration = Duration::from_secs(30);

/// The contact timeout when none is given (openraft's default election
/// timeout's upper bound is close).
pub const DEFAULT_CONTACT_TIMEOUT: Duration = Duration::from_secs(1);

/// See the module doc. Shared (`Arc`) by the network, the cluster server and
/// the status.
#[derive(Debug)]
pub struct Contacts {
    timeout: Duration,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
}

#[derive(Debug, Default)]
struct Peer {
    name: String,
    last_ok: Option<Instant>,
    /// Set by the first failure after the last answer.
    failing: Option<Failing>,
}

#[derive(Debug)]
struct Failing {
    /// The first failure since the last answer.
    since: Instant,
    failures: u64,
    /// When the peer was last logged unreachable (none: not yet).
    reported: Option<Instant>,
}

/// A line to log, decided under the lock and logged after it.
enum Line {
    Unreachable,
    Still { down_for: Duration, failures: u64 },
    Back { down_for: Duration, failures: u64 },
}

impl Default for Contacts {
    fn default() -> Self {
        Self::new(DEFAULT_CONTACT_TIMEOUT)
    }
}

impl Contacts {
    /// A peer not heard from within `timeout` counts as unreachable.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, peers: Mutex::new(BTreeMap::new()) }
    }

    /// The contact timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Peer `id` answered an RPC, or (a leader) sent one this node accepted.
    pub fn answered(&self, id: NodeId) {
        let now = Instant::now();
        let (line, name) = {
            let mut peers = self.lock();
            let peer = peers.entry(id).or_default();
            peer.last_ok = Some(now);
            let line = peer.failing.take().and_then(|f| {
                f.reported.map(|_| Line::Back { down_for: now - f.since, failures: f.failures })
            });
            (line, peer.name.clone())
        };
        if let Some(line) = line {
            log(id, &name, &line, &"");
        }
    }

    /// An RPC to peer `id` failed with `error`.
    pub fn failed(&self, id: NodeId, error: &dyn Display) {
        let now = Instant::now();
        let (line, name) = {
            let mut peers = self.lock();
            let peer = peers.entry(id).or_default();
            let last_ok = peer.last_ok;
            let f = peer.failing.get_or_insert(Failing { since: now, failures: 0, reported: None });
            f.failures += 1;
            // Unreachable once nothing was heard for the contact timeout
            // (since the first failure, for a peer never heard from): one
            // lost heartbeat among answers is not worth a line.
            let heard = last_ok.unwrap_or(f.since);
            let line = match f.reported {
                None if now.saturating_duration_since(heard) >= self.timeout => {
                    f.reported = Some(now);
                    Some(Line::Unreachable)
                }
                Some(at) if now.saturating_duration_since(at) >= REMIND_EVERY => {
                    f.reported = Some(now);
                    Some(Line::Still { down_for: now - f.since, failures: f.failures })
                }
                _ => None,
            };
            (line, peer.name.clone())
        };
        if let Some(line) = line {
            log(id, &name, &line, error);
        }
    }

    /// Records the name of node `id` (an empty name is ignored).
    pub fn learn_name(&self, id: NodeId, name: &str) {
        if name.is_empty() {
            return;
        }
        let mut peers = self.lock();
        let peer = peers.entry(id).or_default();
        if peer.name != name {
            peer.name = name.to_string();
        }
    }

    /// The name of node `id`, if known.
    pub fn name(&self, id: NodeId) -> Option<String> {
        self.lock().get(&id).map(|p| p.name.clone()).filter(|n| !n.is_empty())
    }

    /// How long ago peer `id` was last heard from; none if never.
    pub fn since_contact(&self, id: NodeId) -> Option<Duration> {
        let last = self.lock().get(&id)?.last_ok?;
        Some(Instant::now().saturating_duration_since(last))
    }

    /// Whether peer `id` was heard from within the contact timeout.
    pub fn reachable(&self, id: NodeId) -> bool {
        self.since_contact(id).is_some_and(|d| d <= self.timeout)
    }

    /// Whether a majority of `voters` was heard from within the contact
    /// timeout, counting `me` (the leader asking) when it is a voter.
    pub fn quorum(&self, me: NodeId, voters: &std::collections::BTreeSet<NodeId>) -> bool {
        let live = voters.iter().filter(|&&v| v == me || self.reachable(v)).count();
        !voters.is_empty() && live > voters.len() / 2
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Peer>> {
        // A panic while holding the lock leaves plain data: keep using it.
        self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `n2 (id 42)`, or `42` when the name is not known.
pub fn node_label(id: NodeId, name: &str) -> String {
    if name.is_empty() { id.to_string() } else { format!("{name} (id {id})") }
}

fn log(id: NodeId, name: &str, line: &Line, error: &dyn Display) {
    let peer = node_label(id, name);
    match *line {
        Line::Unreachable => warn!(peer = %peer, error = %error, "raft peer unreachable"),
        Line::Still { down_for, failures } => warn!(
            peer = %peer,
            unreachable_for_s = down_for.as_secs(),
            failed_rpcs = failures,
            error = %error,
            "raft peer still unreachable"
        ),
        Line::Back { down_for, failures } => info!(
            peer = %peer,
            unreachable_for_ms = down_for.as_millis() as u64,
            failed_rpcs = failures,
            "raft peer reachable again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::log_capture::LogCapture;

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_peer_is_logged_once_then_reminded_then_back() {
        let buf = LogCapture::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let c = Contacts::new(Duration::from_millis(400));
        c.learn_name(2, "n2");
        c.answered(2);
        assert!(c.reachable(2));
        // Failing every 50 ms for 65 s: one line at 400 ms, then one
        // every 30 s.
        for _ in 0..1_300 {
            tokio::time::advance(Duration::from_millis(50)).await;
            c.failed(2, &"connection refused");
        }
        assert!(!c.reachable(2));
        let warned = buf.lines();
        assert_eq!(warned.len(), 3, "{warned:#?}");
        assert!(warned[0].contains("WARN") && warned[0].contains("raft peer unreachable"), "{warned:#?}");
        assert!(warned[0].contains("n2 (id 2)") && warned[0].contains("connection refused"));
        assert!(warned[1].contains("still unreachable") && warned[2].contains("still unreachable"));
        c.answered(2);
        c.answered(2);
        let all = buf.lines();
        assert_eq!(all.len(), 4, "{all:#?}");
        assert!(
            all[3].contains("INFO")
                && all[3].contains("reachable again")
                && all[3].contains("failed_rpcs=1300")
        );
        assert_eq!(c.since_contact(2), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_has_a_quorum_while_a_majority_of_voters_was_heard_from() {
        let c = Contacts::new(Duration::from_millis(400));
        let three = std::collections::BTreeSet::from([1, 2, 3]);
        assert!(!c.quorum(1, &three), "nobody heard from yet");
        c.answered(2);
        assert!(c.quorum(1, &three), "itself and n2");
        tokio::time::advance(Duration::from_millis(300)).await;
        c.answered(3);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(c.quorum(1, &three), "n3 within the timeout");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(!c.quorum(1, &three), "both followers silent for longer than the timeout");
        assert_eq!(c.since_contact(2), Some(Duration::from_millis(800)));
        assert!(c.quorum(1, &std::collections::BTreeSet::from([1])), "a single voter");
        assert!(!c.quorum(9, &std::collections::BTreeSet::from([1, 2])), "a leader outside the voters");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_heartbeat_among_answers_is_not_logged() {
        let c = Contacts::new(Duration::from_millis(400));
        let buf = LogCapture::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        for i in 0..100 {
            tokio::time::advance(Duration::from_millis(100)).await;
            if i % 3 == 0 { c.failed(3, &"timeout") } else { c.answered(3) }
        }
        assert!(buf.lines().is_empty(), "{:#?}", buf.lines());
        assert_eq!(c.name(3), None, "never named");
        assert_eq!(node_label(3, ""), "3");
    }
}
