//! One logical write per request id: the view of a history in which the
//! attempts of one request (a write or cas sent again with the same
//! `request_id` after an `info`, or delivered twice) are one operation.
//!
//! A request id applies at most once, so its attempts are one write that
//! took effect at most once, somewhere between the first attempt's
//! invocation and the first acknowledgement. Seen as separate operations, a
//! retry acknowledged after a later write would look like the value coming
//! back. In [`merge`]'s view:
//! - the first `ok` attempt stands for the request, its invocation moved to
//!   the first attempt's; when none is `ok`, the first `info` attempt does;
//! - the other attempts become `fail` (they are not effects of their own);
//! - the request's `deadline_ns` is the latest of its attempts'.
//!
//! Requests whose attempts all failed are left as they are. Operation ids
//! stay the same, so a checker's citations still name the history's ops.

use std::collections::BTreeMap;

use crate::history::Op;
use crate::operation::{History, Outcome};

/// The attempts of each request id of a register write or cas, by key.
pub fn requests(history: &History) -> BTreeMap<(u32, &str), Vec<usize>> {
    let mut out: BTreeMap<(u32, &str), Vec<usize>> = BTreeMap::new();
    for op in &history.ops {
        if let (Op::Write(_) | Op::Cas(..), Some(id)) = (&op.op, &op.request_id) {
            out.entry((op.key, id.as_str())).or_default().push(op.id);
        }
    }
    out
}

/// `history` with the attempts of each request merged into one operation.
pub fn merge(history: &History) -> History {
    let mut out = history.clone();
    for ((_, id), attempts) in requests(history) {
        if attempts.len() < 2 {
            continue;
        }
        let ops = &history.ops;
        let first = attempts.iter().map(|&i| ops[i].invoke_ns).min().unwrap_or(0);
        let pick = |o: Outcome| attempts.iter().copied().find(|&i| ops[i].outcome == o);
        let Some(rep) = pick(Outcome::Ok).or_else(|| pick(Outcome::Info)) else { continue };
        let deadline = attempts
            .iter()
            .filter(|&&i| ops[i].outcome != Outcome::Fail)
            .filter_map(|&i| ops[i].deadline_ns)
            .max();
        for &i in &attempts {
            let op = &mut out.ops[i];
            if i == rep {
                op.invoke_ns = first;
                op.deadline_ns = deadline.or(op.deadline_ns);
            } else {
                op.outcome = Outcome::Fail;
                op.error = Some(format!("an attempt of request {id}, merged into #{rep}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;

    fn attempt(p: u32, t: u64, end: Option<&str>, id: &str) -> Vec<Event> {
        let inv =
            Event::invoke(p, "n1", Op::Write(5), t).with_key(2).with_request_id(id).with_deadline(t + 50);
        let done = match end {
            Some("ok") => Event::ok(p, "n1", Op::Write(5), t + 10),
            Some("fail") => Event::fail(p, "n1", Op::Write(5), t + 10, "409"),
            _ => Event::info(p, "n1", Op::Write(5), t + 10, "timeout"),
        };
        vec![inv, done.with_key(2)]
    }

    #[test]
    fn the_first_ack_stands_for_the_request_from_its_first_invocation() {
        let mut events = attempt(0, 100, None, "a");
        events.extend(attempt(1, 200, Some("ok"), "a"));
        events.extend(attempt(2, 300, Some("ok"), "a"));
        events.extend(attempt(3, 400, Some("ok"), "b"));
        let h = History::from_events(events).expect("pairs");
        let m = merge(&h);
        let outcomes: Vec<Outcome> = m.ops.iter().map(|o| o.outcome).collect();
        assert_eq!(outcomes, [Outcome::Fail, Outcome::Ok, Outcome::Fail, Outcome::Ok]);
        assert_eq!((m.ops[1].invoke_ns, m.ops[1].complete_ns), (100, Some(210)));
        assert_eq!(m.ops[1].deadline_ns, Some(350), "the latest attempt's deadline");
        assert_eq!(m.ops[3], h.ops[3], "a request of one attempt is unchanged");
    }

    #[test]
    fn without_an_ack_the_first_unknown_attempt_stands_for_it() {
        let mut events = attempt(0, 100, Some("fail"), "a");
        events.extend(attempt(1, 200, None, "a"));
        events.extend(attempt(2, 300, None, "a"));
        let m = merge(&History::from_events(events).expect("pairs"));
        let outcomes: Vec<Outcome> = m.ops.iter().map(|o| o.outcome).collect();
        assert_eq!(outcomes, [Outcome::Fail, Outcome::Info, Outcome::Fail]);
        assert_eq!(m.ops[1].invoke_ns, 100);
    }
}
