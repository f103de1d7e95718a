//! `TimerQueue`: foca's timers, delivered in deadline order with submission
//! order breaking ties.
//!
//! foca expects a probe's `SendIndirectProbe` before the next
//! `ProbeRandomMember` even when both fall due at once (foca issue #26); one
//! heap keyed by `(deadline, seq)` in the driver's `select!` gives that order,
//! where a spawned sleep per timer would race.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use tokio::time::Instant;

/// Pending timers of type `T` with deadlines of type `D` (a tokio `Instant`
/// in the driver, virtual time in [`crate::sim`]), earliest first.
#[derive(Debug)]
pub struct TimerQueue<T, D = Instant> {
    heap: BinaryHeap<Reverse<Entry<T, D>>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry<T, D> {
    at: D,
    seq: u64,
    timer: T,
}

impl<T, D: Ord> PartialEq for Entry<T, D> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}

impl<T, D: Ord> Eq for Entry<T, D> {}

impl<T, D: Ord> PartialOrd for Entry<T, D> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T, D: Ord> Ord for Entry<T, D> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at).then(self.seq.cmp(&other.seq))
    }
}

impl<T, D: Ord> Default for TimerQueue<T, D> {
    fn default() -> Self {
        Self { heap: BinaryHeap::new(), next_seq: 0 }
    }
}

impl<T, D: Ord + Copy> TimerQueue<T, D> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `timer` for `at`; after every timer already due at `at`.
    pub fn push(&mut self, at: D, timer: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry { at, seq, timer }));
    }

    /// The earliest deadline, if any timer is pending.
    pub fn next_deadline(&self) -> Option<D> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Removes and returns the earliest timer due at or before `now`.
    pub fn pop_due(&mut self, now: D) -> Option<T> {
        if self.next_deadline()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| e.timer)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn same_deadline_keeps_submission_order() {
        let now = Instant::now();
        let mut q = TimerQueue::new();
        for i in 0..100 {
            q.push(now, i);
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop_due(now)).collect();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn earlier_deadline_first_and_future_timers_wait() {
        let now = Instant::now();
        let mut q = TimerQueue::new();
        q.push(now + Duration::from_millis(30), "late");
        q.push(now + Duration::from_millis(10), "early");
        q.push(now + Duration::from_millis(10), "early-second");
        q.push(now + Duration::from_secs(60), "future");
        let later = now + Duration::from_millis(30);
        assert_eq!(q.next_deadline(), Some(now + Duration::from_millis(10)));
        assert_eq!(q.pop_due(later), Some("early"));
        assert_eq!(q.pop_due(later), Some("early-second"));
        assert_eq!(q.pop_due(later), Some("late"));
        assert_eq!(q.pop_due(later), None);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn foca_probe_timers_due_together_keep_probe_order() {
        // The #26 case: the indirect probe submitted first must run first.
        let now = Instant::now();
        let mut q = TimerQueue::new();
        q.push(now, foca::Timer::<u8>::SendIndirectProbe { probed_id: 1, token: 0 });
        q.push(now, foca::Timer::<u8>::ProbeRandomMember(0));
        assert!(matches!(q.pop_due(now), Some(foca::Timer::SendIndirectProbe { .. })));
        assert!(matches!(q.pop_due(now), Some(foca::Timer::ProbeRandomMember(_))));
    }
}
