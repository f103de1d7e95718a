//! Synthetic histories: the zombie write, and the cases the check
//! must not flag.

use super::*;
use crate::history::Event;

const S: u64 = 1_000_000_000;

/// A history builder: operations of key 1 in each process's order.
#[derive(Default)]
struct Builder {
    events: Vec<Event>,
}

impl Builder {
    /// An operation that completes `ok` (a read carries its result).
    fn ok(mut self, p: u32, op: Op, from: u64, to: u64) -> Self {
        let invoked = if let Op::Read(_) = op { Op::Read(None) } else { op.clone() };
        self.events.push(Event::invoke(p, "n1", invoked, from).with_key(1));
        self.events.push(Event::ok(p, "n1", op, to).with_key(1));
        self
    }

    /// An indeterminate write or cas with a deadline.
    fn info(mut self, p: u32, op: Op, from: u64, to: u64, deadline: u64) -> Self {
        self.events.push(Event::invoke(p, "n2", op.clone(), from).with_key(1).with_deadline(deadline));
        self.events.push(Event::info(p, "n2", op, to, "503").with_key(1));
        self
    }

    fn fault(mut self, description: &str, from: u64, to: u64) -> Self {
        let p = 900 + self.events.len() as u32;
        self.events.push(Event::invoke(p, "nemesis", Op::Start(description.into()), from));
        self.events.push(Event::ok(p, "nemesis", Op::Start(description.into()), from));
        self.events.push(Event::invoke(p, "nemesis", Op::Stop("heal".into()), to));
        self.events.push(Event::ok(p, "nemesis", Op::Stop("heal".into()), to));
        self
    }

    fn check(mut self) -> IndeterminacyReport {
        self.events.sort_by_key(|e| e.time_ns);
        let history = History::from_events(self.events).expect("a well-formed history");
        assert!(applies(&history));
        check(&history)
    }
}

/// The reproduction: write 7 through an isolated node times out
/// (deadline 5 s), write 2 through the leader is acknowledged, reads see 2
/// at 6 s, and 7 comes back at 28 s.
fn zombie() -> Builder {
    Builder::default()
        .info(0, Op::Write(7), S, 4 * S, 5 * S)
        .ok(1, Op::Write(2), 3 * S, 3 * S + S / 10)
        .ok(2, Op::Read(Some(2)), 6 * S, 6 * S + S / 10)
        .ok(3, Op::Read(Some(2)), 6 * S, 6 * S + S / 10)
        .ok(2, Op::Read(Some(7)), 28 * S, 28 * S + S / 10)
        .ok(3, Op::Read(Some(7)), 28 * S, 28 * S + S / 10)
}

#[test]
fn the_zombie_write_is_found_with_its_witnesses() {
    let r = zombie().check();
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert_eq!(r.judged, 1);
    let late = &r.late[0];
    assert_eq!((late.op, late.key, late.value, late.deadline_ns), (0, 1, 7, 5 * S));
    assert_eq!((late.other_value, late.observed), (2, 4), "the first read of 2, a read of 7");
    assert!(r.summary().contains("(deadline 5.000s) took effect after its deadline"), "{}", r.summary());
    assert_eq!(r.cited_ops(), vec![0, 2, 4]);
}

#[test]
fn a_write_seen_before_its_deadline_or_never_passes() {
    // Seen at 2 s, overwritten at 3 s: it took effect before its deadline.
    let r = Builder::default()
        .info(0, Op::Write(7), S, 4 * S, 5 * S)
        .ok(2, Op::Read(Some(7)), 2 * S, 2 * S + 1)
        .ok(1, Op::Write(2), 3 * S, 3 * S + 1)
        .ok(2, Op::Read(Some(2)), 6 * S, 6 * S + 1)
        .check();
    assert_eq!((r.valid, r.judged), (Validity::Valid, 1), "{}", r.summary());
    // Never seen.
    let r = Builder::default()
        .info(0, Op::Write(7), S, 4 * S, 5 * S)
        .ok(1, Op::Write(2), 3 * S, 3 * S + 1)
        .ok(2, Op::Read(Some(2)), 28 * S, 28 * S + 1)
        .check();
    assert_eq!((r.valid, r.judged), (Validity::Valid, 1), "{}", r.summary());
}

#[test]
fn an_other_value_seen_across_the_deadline_is_no_witness() {
    // The read of 2 began before the deadline: 7 may have followed it in time.
    let r = Builder::default()
        .info(0, Op::Write(7), S, 4 * S, 5 * S)
        .ok(1, Op::Write(2), 3 * S, 3 * S + 1)
        .ok(2, Op::Read(Some(2)), 4 * S, 6 * S)
        .ok(2, Op::Read(Some(7)), 28 * S, 28 * S + 1)
        .check();
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
}

#[test]
fn writes_and_cas_are_witnesses_too() {
    // An indeterminate cas 1→7; after the deadline an ok write of 3, then a cas expecting 7.
    let r = Builder::default()
        .ok(1, Op::Write(1), 0, 1)
        .info(0, Op::Cas(1, 7), S, 4 * S, 5 * S)
        .ok(1, Op::Write(3), 6 * S, 6 * S + 1)
        .ok(1, Op::Cas(7, 8), 20 * S, 20 * S + 1)
        .check();
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert_eq!((r.late[0].op, r.late[0].other_value, r.late[0].observed), (1, 2, 3));
}

#[test]
fn a_value_written_twice_is_skipped_and_counted() {
    let r = zombie().ok(4, Op::Write(7), 40 * S, 40 * S + 1).check();
    assert_eq!((r.valid, r.judged, r.not_unique), (Validity::Valid, 0, 1), "{}", r.summary());
    assert!(r.summary().contains("1 whose value is not unique on its key"), "{}", r.summary());
}

#[test]
fn a_majority_fault_during_the_deadline_exempts_the_write() {
    for fault in ["kill-all n1,n2,n3", "power-loss {n1,n2,n3}"] {
        let r = zombie().fault(fault, 2 * S, 10 * S).check();
        assert_eq!(
            (r.valid, r.judged, r.majority_fault),
            (Validity::Valid, 0, 1),
            "{fault}: {}",
            r.summary()
        );
    }
    // A minority fault, or a majority fault after the deadline, does not.
    for (fault, from, to) in [("kill n2", 2 * S, 10 * S), ("kill-all n1,n2,n3", 6 * S, 10 * S)] {
        let r = zombie().fault(fault, from, to).check();
        assert_eq!(r.valid, Validity::Invalid, "{fault}: {}", r.summary());
    }
}

#[test]
fn the_attempts_of_one_request_are_one_write_with_the_last_deadline() {
    let attempt = |p: u32, from: u64, deadline: u64| {
        let op = Op::Write(7);
        let id = "r-7";
        [
            Event::invoke(p, "n2", op.clone(), from).with_key(1).with_request_id(id).with_deadline(deadline),
            Event::info(p, "n2", op, from + S, "503").with_key(1),
        ]
    };
    // Retried at 20 s (deadline 24 s): 2 read at 25 s, 7 at 28 s, late for the retry too.
    let late = |retry_deadline: u64| {
        let mut b = zombie().ok(4, Op::Read(Some(2)), 25 * S, 25 * S + 1);
        b.events.retain(|e| e.process != 0);
        b.events.extend(attempt(0, S, 5 * S));
        b.events.extend(attempt(10, 20 * S, retry_deadline));
        b.check()
    };
    let r = late(24 * S);
    assert_eq!((r.valid, r.judged, r.not_unique), (Validity::Invalid, 1, 0), "{}", r.summary());
    assert_eq!(r.late[0].deadline_ns, 24 * S, "the retry's deadline");
    // With a retry whose deadline is past the read of 7, the request may have taken effect in time.
    let r = late(30 * S);
    assert_eq!((r.valid, r.judged), (Validity::Valid, 1), "{}", r.summary());
}

#[test]
fn histories_without_deadlines_do_not_apply() {
    let h = History::from_events(vec![
        Event::invoke(0, "n1", Op::Write(7), 0),
        Event::info(0, "n1", Op::Write(7), 1, "timeout"),
    ])
    .expect("pairs");
    assert!(!applies(&h));
    let r = check(&h);
    assert_eq!((r.valid, r.judged, r.no_deadline), (Validity::Valid, 0, 1));
}
