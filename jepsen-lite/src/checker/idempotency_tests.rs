//! Tests of the idempotency checker on synthetic histories.

use super::*;
use crate::history::Event;
use crate::operation::PairingError;

/// Builds a history op by op: each op its own process, on key 1.
#[derive(Default)]
struct H(Vec<Event>, u32);

impl H {
    fn op(&mut self, op: Op, end: &str, t: (u64, u64), id: Option<&str>) -> &mut Self {
        let p = self.1;
        self.1 += 1;
        let invoke = Event::invoke(p, "n1", op.clone(), t.0).with_key(1);
        self.0.push(match id {
            Some(id) => invoke.with_request_id(id),
            None => invoke,
        });
        let done = match end {
            "ok" => Event::ok(p, "n1", op, t.1),
            "fail" => Event::fail(p, "n1", op, t.1, "cas_mismatch"),
            _ => Event::info(p, "n1", op, t.1, "timeout"),
        };
        self.0.push(done.with_key(1));
        self
    }

    fn read(&mut self, v: i64, t: (u64, u64)) -> &mut Self {
        self.op(Op::Read(Some(v)), "ok", t, None)
    }

    fn check(&self) -> Result<IdempotencyReport, PairingError> {
        Ok(check(&History::from_events(self.0.clone())?))
    }
}

/// Request `a` writes 5 (first attempt unknown, the retry acknowledged),
/// `b` writes 7; reads see 1, 5, 7; stale reads see 5 at revision 10.
fn valid() -> H {
    let mut h = H::default();
    h.read(1, (0, 5))
        .op(Op::Write(5), "info", (10, 20), Some("a"))
        .op(Op::Write(5), "ok", (30, 40), Some("a"))
        .read(5, (50, 60))
        .op(Op::ReadStale(Some((5, 12, 10))), "ok", (55, 65), None)
        .op(Op::Cas(5, 7), "ok", (70, 80), Some("b"))
        .read(7, (90, 100))
        .op(Op::ReadStale(Some((5, 11, 10))), "ok", (95, 99), None);
    h
}

#[test]
fn retries_that_apply_once_are_valid() -> Result<(), PairingError> {
    let r = valid().check()?;
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    assert_eq!((r.requests, r.retried, r.attempts), (2, 1, 3));
    assert_eq!((r.values_checked, r.reads_checked), (2, 3));
    Ok(())
}

#[test]
fn a_double_apply_is_invalid() -> Result<(), PairingError> {
    // A duplicate of request a, delivered after 7 was written, applies again.
    let mut h = valid();
    h.op(Op::Write(5), "ok", (110, 120), Some("a")).read(5, (130, 140));
    let r = h.check()?;
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert_eq!(r.reapplied.len(), 1, "{}", r.summary());
    assert_eq!(r.reapplied[0].ops, vec![3, 6, 9], "read 5, read 7, read 5 again");
    assert!(r.summary().contains("value 5, written only by request a"), "{}", r.summary());
    Ok(())
}

#[test]
fn a_value_of_two_requests_may_come_back() -> Result<(), PairingError> {
    // Not what the workload does (values are unique), but then a value
    // coming back proves nothing about one request.
    let mut h = valid();
    h.op(Op::Write(5), "ok", (110, 120), Some("c")).read(5, (130, 140));
    let r = h.check()?;
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    Ok(())
}

#[test]
fn overlapping_reads_are_no_witness() -> Result<(), PairingError> {
    // The read of 7 overlaps the second read of 5: they may be in either order.
    let mut h = H::default();
    h.op(Op::Write(5), "ok", (0, 5), Some("a"))
        .read(5, (10, 20))
        .op(Op::Write(7), "ok", (21, 25), Some("b"))
        .read(7, (30, 50))
        .read(5, (40, 60));
    let r = h.check()?;
    assert!(r.reapplied.is_empty(), "{}", r.summary());
    Ok(())
}

#[test]
fn a_value_at_two_revisions_is_invalid() -> Result<(), PairingError> {
    let mut h = valid();
    h.op(Op::ReadStale(Some((5, 20, 14))), "ok", (110, 120), None);
    let r = h.check()?;
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert_eq!(r.revisions.len(), 1);
    assert_eq!(r.revisions[0].request_id.as_deref(), Some("a"));
    // The initial value, which the suite wrote before the history began, is not judged.
    let mut h = valid();
    h.op(Op::ReadStale(Some((1, 3, 2))), "ok", (110, 120), None).op(
        Op::ReadStale(Some((1, 4, 3))),
        "ok",
        (130, 140),
        None,
    );
    assert_eq!(h.check()?.valid, Validity::Valid);
    Ok(())
}

#[test]
fn a_retry_that_fails_after_an_ack_is_invalid() -> Result<(), PairingError> {
    let mut h = valid();
    h.op(Op::Cas(5, 7), "fail", (110, 120), Some("b"));
    let r = h.check()?;
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert_eq!(r.inconsistent[0].ops, vec![5, 8], "the ack and the later fail");
    // A node that cannot be reached gives no answer.
    let mut h = valid();
    let refused =
        Event::fail(20, "n2", Op::Cas(5, 7), 120, "cannot connect to 10.213.7.2:7948: Connection refused");
    h.0.push(Event::invoke(20, "n2", Op::Cas(5, 7), 110).with_key(1).with_request_id("b"));
    h.0.push(refused.with_key(1));
    assert_eq!(h.check()?.valid, Validity::Valid);
    // Failing while the acknowledged attempt was still open is allowed.
    let mut h = valid();
    h.op(Op::Cas(5, 7), "fail", (75, 85), Some("b"));
    assert_eq!(h.check()?.valid, Validity::Valid);
    Ok(())
}
