//! Write deadlines across nodes without synchronized clocks, and how a
//! follower forwards a write with its deadline ([`forward_write`]).
//!
//! Every write has a deadline: the node that received it answers by then
//! (`[admin] request_timeout_ms` after it received it), and the leader never
//! proposes it after then. So a write answered 503 was proposed before its
//! deadline or never will be (issue 22: a write that had timed out reached
//! the leader after a partition healed and overwrote a newer one).
//!
//! A follower forwarding a write states its deadline on the leader's clock,
//! which it learns with one round trip just before: it asks for a
//! [`ClockReading`] (the leader's monotonic time `L`, taken at some real
//! time between the question and the answer), receives it at its own time
//! `F`, and sends the deadline `D` as `L + (D - F)`. Because `L` was read
//! no later than `F`, that moment on the leader's clock comes no later than
//! `D` in real time: the deadline can only move earlier, by at most the
//! round trip, whatever the two clocks read. A relative budget ("4.9 s
//! left") would not do: it says nothing about how long the frame then
//! waited in a kernel buffer (a stalled leader reads it late), and wall
//! clocks would make both safety and availability depend on how well the
//! nodes' clocks agree. What remains assumed is that two monotonic clocks
//! run at the same rate over one request timeout (quartz drifts by
//! microseconds over seconds).
//!
//! A reading carries an epoch, random per server: a leader that restarted
//! between the reading and the write has another clock, and the write is
//! refused as sent to no leader (it retries with a new reading).

use ferry_raft_store::Request;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cluster::message::{ErrorCode, Message, WriteError};
use crate::cluster::transport::{Transport, TransportError};

/// Time kept back from a forwarded write's deadline so that the leader's
/// refusal can reach the follower before the follower gives up itself.
pub const REPLY_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// A node's monotonic clock as the cluster transport states it: time since
/// the node's server started, and an epoch naming that start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalClock {
    epoch: u64,
    base: Instant,
}

/// The answer to [`Message::Clock`](crate::cluster::message::Message::Clock):
/// the leader's time when it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ClockReading {
    /// The clock's epoch (random per server start).
    pub epoch: u64,
    /// Nanoseconds since the clock's base.
    pub now_ns: u64,
}

/// A write's deadline on the leader's clock (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PeerDeadline {
    /// The epoch of the reading it was computed from.
    pub epoch: u64,
    /// The deadline, in nanoseconds since that clock's base.
    pub at_ns: u64,
}

ferry_client::self_describing!(ClockReading, PeerDeadline);

impl LocalClock {
    /// A clock starting now, with a random epoch.
    pub fn start() -> Self {
        Self::new(fastrand::u64(..), Instant::now())
    }

    /// A clock with `epoch` counting from `base`.
    pub fn new(epoch: u64, base: Instant) -> Self {
        Self { epoch, base }
    }

    /// The reading at `now`.
    pub fn reading(&self, now: Instant) -> ClockReading {
        let ns = now.saturating_duration_since(self.base).as_nanos();
        ClockReading { epoch: self.epoch, now_ns: u64::try_from(ns).unwrap_or(u64::MAX) }
    }

    /// `deadline` as a local instant, or `None` if it was computed from
    /// another clock (this node restarted since the sender's reading).
    pub fn local(&self, deadline: PeerDeadline) -> Option<Instant> {
        if deadline.epoch != self.epoch {
            return None;
        }
        Some(self.base + std::time::Duration::from_nanos(deadline.at_ns))
    }
}

/// `deadline` (on this node's clock) on the clock of the peer that answered
/// `reading`, received here at `received`; `None` if the deadline is not
/// after `received`.
pub fn on_peer(reading: ClockReading, received: Instant, deadline: Instant) -> Option<PeerDeadline> {
    let left = deadline.checked_duration_since(received).filter(|d| !d.is_zero())?;
    let left_ns = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
    Some(PeerDeadline { epoch: reading.epoch, at_ns: reading.now_ns.saturating_add(left_ns) })
}

/// Sends the write `req` to the leader at `addr` with its deadline on the
/// leader's clock, read just before with [`Message::Clock`], kept a little
/// before `deadline` ([`REPLY_MARGIN`], at most a tenth of what is left)
/// so that a refusal is back in time. A leader older than deadlines (it
/// refuses [`Message::Clock`] as malformed) gets a plain
/// [`Message::ClientWrite`]. Both calls reset their connection if they end
/// without a reply ([`Transport::call_or_abort`]). Returns the leader's
/// answer, or, when the deadline left no time to send, the refusal the
/// leader would give.
pub async fn forward_write(
    transport: &Transport,
    addr: &str,
    req: &Request,
    deadline: Instant,
) -> Result<Message, TransportError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let reading = match transport.call_or_abort(addr, &Message::Clock, left).await {
        Ok(Message::ClockResult(reading)) => Some(reading),
        Err(TransportError::Remote { code: ErrorCode::Malformed, .. }) => None,
        // Not an answer to a clock question: the caller reports it.
        Ok(other) => return Ok(other),
        Err(e) => return Err(e),
    };
    let received = Instant::now();
    let left = deadline.saturating_duration_since(received);
    let msg = match reading {
        Some(reading) => {
            let by = deadline.checked_sub(REPLY_MARGIN.min(left / 10)).unwrap_or(deadline);
            match on_peer(reading, received, by) {
                Some(deadline) => Message::ClientWriteBy { request: req.clone(), deadline },
                None => {
                    let late = received.saturating_duration_since(by);
                    return Ok(Message::ClientWriteResult(Err(WriteError::deadline_exceeded(late))));
                }
            }
        }
        None => Message::ClientWrite(req.clone()),
    };
    transport.call_or_abort(addr, &msg, left).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Two nodes whose clocks started 100 s apart agree on a deadline up to
    /// the reading's delay, and only ever move it earlier.
    #[test]
    fn a_deadline_moves_to_the_peer_clock_and_only_earlier() {
        let t0 = Instant::now();
        let leader = LocalClock::new(7, t0);
        // The follower's clock is another base: nothing shared but real time.
        let real = t0 + Duration::from_secs(100);
        // The leader reads its clock at `real`; the answer arrives 30 ms later.
        let reading = leader.reading(real);
        let received = real + Duration::from_millis(30);
        let deadline = received + Duration::from_secs(5);
        let on_leader = on_peer(reading, received, deadline).expect("in the future");
        let local = leader.local(on_leader).expect("same epoch");
        assert_eq!(local, deadline - Duration::from_millis(30), "earlier by the reading's delay");
        assert!(local <= deadline);
    }

    #[test]
    fn a_past_deadline_or_another_epoch_has_no_peer_deadline() {
        let t0 = Instant::now();
        let leader = LocalClock::new(1, t0);
        let reading = leader.reading(t0 + Duration::from_secs(1));
        let received = t0 + Duration::from_secs(2);
        assert_eq!(on_peer(reading, received, received), None);
        assert_eq!(on_peer(reading, received, received - Duration::from_millis(1)), None);
        let d = on_peer(reading, received, received + Duration::from_secs(1)).expect("future");
        let restarted = LocalClock::new(2, t0);
        assert_eq!(restarted.local(d), None);
    }
}
