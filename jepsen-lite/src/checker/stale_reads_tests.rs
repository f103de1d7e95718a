//! Tests of the stale_reads checker on synthetic histories.

use super::*;
use crate::history::Event;
use crate::operation::PairingError;

/// Builds a history op by op: each op its own process, on key 1.
#[derive(Default)]
struct H(Vec<Event>, u32);

impl H {
    fn op(&mut self, node: &str, op: Op, end: &str, t: (u64, u64)) -> &mut Self {
        let p = self.1;
        self.1 += 1;
        self.0.push(Event::invoke(p, node, op.clone(), t.0).with_key(1));
        self.0.push(
            match end {
                "ok" => Event::ok(p, node, op, t.1),
                "fail" => Event::fail(p, node, op, t.1, "cas_mismatch"),
                _ => Event::info(p, node, op, t.1, "timeout"),
            }
            .with_key(1),
        );
        self
    }

    fn stale(&mut self, node: &str, seen: (i64, u64, u64), t: (u64, u64)) -> &mut Self {
        self.op(node, Op::ReadStale(Some(seen)), "ok", t)
    }

    fn check(&self) -> Result<StaleReadsReport, PairingError> {
        Ok(check(&History::from_events(self.0.clone())?, &Config { initial: Some(1) }))
    }
}

const MS: u64 = 1_000_000;

/// 1 at revision 3; write 5 (revision 10), cas 5→7 (revision 12); stale and
/// blocking reads on n1 and n2.
fn valid() -> H {
    let mut h = H::default();
    h.stale("n1", (1, 4, 3), (0, 5))
        .op("n1", Op::Write(5), "ok", (10, 20))
        .stale("n2", (1, 9, 3), (25, 30))
        .stale("n1", (5, 10, 10), (31, 35))
        .op("n2", Op::Cas(5, 7), "info", (40, 50))
        .op("n1", Op::ReadBlocking(10, 500, Some((7, 12, 12))), "ok", (60, 70))
        .op("n2", Op::ReadBlocking(12, 500, Some((7, 12, 12))), "ok", (80, 80 + 600 * MS))
        .op("n2", Op::Write(9), "fail", (90, 95));
    h
}

#[test]
fn honest_stale_reads_are_valid() -> Result<(), PairingError> {
    let r = valid().check()?;
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    assert_eq!((r.stale_reads, r.blocking_reads, r.woken), (3, 2, 1));
    Ok(())
}

#[test]
fn a_value_never_written_or_from_the_future_is_invalid() -> Result<(), PairingError> {
    for (v, what) in [(99, "never written"), (9, "every write failed")] {
        let mut h = valid();
        h.stale("n1", (v, 12, 12), (100, 110));
        let r = h.check()?;
        assert_eq!(r.valid, Validity::Invalid, "{v}: {}", r.summary());
        assert!(r.unwritten[0].message.contains(what), "{}", r.summary());
    }
    let mut h = valid();
    h.stale("n1", (11, 12, 12), (100, 110)).op("n2", Op::Write(11), "ok", (120, 130));
    let r = h.check()?;
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert!(r.unwritten[0].message.contains("after the read completed"), "{}", r.summary());
    Ok(())
}

#[test]
fn an_index_going_back_on_one_node_is_invalid_unless_a_fault_came_between() -> Result<(), PairingError> {
    let mut h = valid();
    h.stale("n1", (5, 10, 10), (100, 110));
    let r = h.check()?;
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert_eq!(r.went_back[0].ops, vec![5, 8], "index 12, then 10");
    // The same after a nemesis event (n1 may have restarted).
    let mut h = valid();
    h.0.push(Event::invoke(99, "nemesis", Op::Start("kill {n1}".into()), 96));
    h.0.push(Event::ok(99, "nemesis", Op::Start("kill {n1}".into()), 97));
    h.stale("n1", (5, 10, 10), (100, 110));
    let r = h.check()?;
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    Ok(())
}

#[test]
fn a_value_older_than_its_index_is_invalid() -> Result<(), PairingError> {
    // n2 says index 15 but serves 5 (revision 10): 7 was written at 12.
    let mut h = valid();
    h.stale("n2", (5, 15, 10), (100, 110));
    let r = h.check()?;
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert!(r.not_current[0].message.contains("changed at revision 12"), "{}", r.summary());
    // A blocking query past index 12 that returns the value of revision 10.
    let mut h = valid();
    h.op("n2", Op::ReadBlocking(12, 500, Some((5, 13, 10))), "ok", (100, 110));
    let r = h.check()?;
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert_eq!(r.not_current.len(), 1, "{}", r.summary());
    Ok(())
}

#[test]
fn a_blocking_query_answering_early_without_a_newer_index_is_invalid() -> Result<(), PairingError> {
    let mut h = valid();
    h.op("n1", Op::ReadBlocking(12, 500, Some((7, 12, 12))), "ok", (100, 100 + 20 * MS));
    let r = h.check()?;
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert_eq!(r.answered_early[0].ops, vec![8]);
    Ok(())
}
