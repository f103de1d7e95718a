//! Re-announcing after foca dropped out of the cluster.
//!
//! When foca learns that the cluster holds it down it renews its identity
//! ([`foca::Identity::renew`]) and *resets*: it stops probing, gossiping and
//! announcing to down members, and waits for a message addressed to the new
//! identity. It sends one round of gossip, but addressed to the identities
//! it holds for the others. After a partition both sides hold the other down
//! and tell each other so (`TurnUndead`), so every member renews at once:
//! each renewed member drops the others' gossip (addressed to its old
//! identity), nobody runs timers, and the cluster stays split for good (the
//! `partition-long` nemesis of jepsen-lite saw the leader's view frozen for
//! the rest of the run, so autopilot never re-added the removed minority).
//! foca does the same after going idle (every other member down).
//!
//! Serf re-joins in that case; here the node announces itself, from the
//! moment foca reports `Rejoin` or `Idle` until it reports `Active`, every
//! `every` to up to [`FANOUT`] of the addresses it knows (members in any
//! state, in turn). A member accepts an Announce by address whatever
//! identity it holds for the sender, answers it with a Feed addressed to the
//! new identity, and that makes foca active again.

use std::net::SocketAddr;
use std::ops::Add;
use std::time::Duration;

use foca::OwnedNotification;

use crate::identity::NodeIdentity;

/// Members announced to per round.
pub const FANOUT: usize = 3;

/// When to announce again, and to whom next.
#[derive(Debug, Clone)]
pub struct Reannounce<T> {
    next: Option<T>,
    every: Duration,
    cursor: usize,
}

impl<T: Copy + Ord + Add<Duration, Output = T>> Reannounce<T> {
    /// Rounds `every` apart while foca is out of the cluster.
    pub fn new(every: Duration) -> Self {
        Self { next: None, every, cursor: 0 }
    }

    /// Starts (a rejoin, going idle) or stops (active again) the rounds.
    pub fn on_notification(&mut self, n: &OwnedNotification<NodeIdentity>, now: T) {
        match n {
            OwnedNotification::Rejoin(_) | OwnedNotification::Idle if self.next.is_none() => {
                self.next = Some(now);
            }
            OwnedNotification::Active => self.next = None,
            _ => {}
        }
    }

    /// No more rounds (the node left).
    pub fn stop(&mut self) {
        self.next = None;
    }

    /// When the next round is due, if one is.
    pub fn deadline(&self) -> Option<T> {
        self.next
    }

    /// If a round is due at `now`: the gossip addresses to announce to this
    /// round, taken in turn from `known` (but `own`), and the next round
    /// scheduled.
    pub fn take_due<'a>(
        &mut self,
        now: T,
        own: SocketAddr,
        known: impl Iterator<Item = &'a NodeIdentity>,
    ) -> Vec<SocketAddr> {
        if self.next.is_none_or(|at| at > now) {
            return Vec::new();
        }
        self.next = Some(now + self.every);
        let mut addrs: Vec<SocketAddr> = known.map(|m| m.gossip_addr).filter(|a| *a != own).collect();
        addrs.sort_unstable();
        addrs.dedup();
        if addrs.is_empty() {
            return addrs;
        }
        let start = self.cursor % addrs.len();
        let take = FANOUT.min(addrs.len());
        self.cursor = start + take;
        addrs.iter().cycle().skip(start).take(take).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(port: u16) -> NodeIdentity {
        let a = SocketAddr::from(([127, 0, 0, 1], port));
        NodeIdentity::new(u64::from(port), format!("n{port}"), a, a, a)
    }

    #[test]
    fn rounds_run_from_a_rejoin_until_active_and_rotate_over_the_members() {
        let own = member(1);
        let others: Vec<NodeIdentity> = (2..=6).map(member).collect();
        let mut r = Reannounce::new(Duration::from_secs(1));
        let t0 = Duration::from_secs(10);
        assert!(r.take_due(t0, own.gossip_addr, others.iter()).is_empty(), "connected: no rounds");
        r.on_notification(&OwnedNotification::Rejoin(own.clone()), t0);
        assert_eq!(r.deadline(), Some(t0), "the first round at once");
        let first = r.take_due(t0, own.gossip_addr, others.iter().chain([&own]));
        assert_eq!(first.len(), FANOUT);
        assert!(!first.contains(&own.gossip_addr));
        assert!(r.take_due(t0, own.gossip_addr, others.iter()).is_empty(), "not due again yet");
        let second = r.take_due(t0 + Duration::from_secs(1), own.gossip_addr, others.iter());
        let mut both: Vec<_> = first.iter().chain(&second).copied().collect();
        both.sort_unstable();
        both.dedup();
        assert_eq!(both.len(), others.len(), "two rounds reach all five: {first:?} {second:?}");
        r.on_notification(&OwnedNotification::Active, t0 + Duration::from_secs(2));
        assert_eq!(r.deadline(), None);
        assert!(r.take_due(t0 + Duration::from_secs(5), own.gossip_addr, others.iter()).is_empty());
        r.on_notification(&OwnedNotification::Idle, t0 + Duration::from_secs(6));
        assert_eq!(r.deadline(), Some(t0 + Duration::from_secs(6)), "idle starts rounds too");
    }
}
