//! A request id applies at most once (the register workload).
//!
//! **Property.** Every write and cas carries a request id; its retries and
//! duplicate deliveries carry the same id, and written values are unique per
//! key. So a value v whose writes all share one request id is written at
//! most once, and:
//! - **not re-applied:** there are no three `ok` linearizable `read`s of one
//!   key where the first sees v, the second (invoked after the first
//!   completed) sees another value, and the third (invoked after the second
//!   completed) sees v again: v came back, so its request applied twice;
//! - **one revision:** the stale and blocking reads never see v at two route
//!   revisions (each revision is the index of a change that wrote it);
//!   values nobody in the history wrote (the initial ones) are not judged;
//! - **consistent answers:** no attempt of a request id answers `fail` when
//!   it was invoked after an earlier attempt of that id was acknowledged (a
//!   retry of an applied request answers as the original did). A `fail`
//!   whose `error` starts with `cannot connect` was never sent (the node was
//!   down), so it is no answer.
//!
//! Linearizable reads are trusted here: a run whose reads are stale (the
//! `linearizable` checker says so) may also fail the first point.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Report, Validity};
use crate::history::{Op, Workload};
use crate::operation::{History, Operation, Outcome};
use crate::retries;

/// The checker's name in `results.json`.
pub const NAME: &str = "idempotency";

/// At most this many violations are listed per kind.
const LISTED: usize = 20;

/// A violation: what happened and the ops that show it.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub key: u32,
    pub request_id: Option<String>,
    pub message: String,
    pub ops: Vec<usize>,
}

/// The checker's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct IdempotencyReport {
    pub valid: Validity,
    /// Request ids sent, those sent more than once, and their attempts.
    pub requests: usize,
    pub retried: usize,
    pub attempts: usize,
    /// Values of one request id, and the ok reads checked for them.
    pub values_checked: usize,
    pub reads_checked: usize,
    pub reapplied: Vec<Violation>,
    pub revisions: Vec<Violation>,
    pub inconsistent: Vec<Violation>,
}

impl Report for IdempotencyReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "{} request ids ({} sent more than once, {} attempts); {} values of one request checked against {} reads",
            self.requests, self.retried, self.attempts, self.values_checked, self.reads_checked
        );
        for v in self.reapplied.iter().chain(&self.revisions).chain(&self.inconsistent) {
            s.push_str(&format!("\nkey {}: {}", v.key, v.message));
        }
        s
    }

    fn cited_ops(&self) -> Vec<usize> {
        self.reapplied
            .iter()
            .chain(&self.revisions)
            .chain(&self.inconsistent)
            .flat_map(|v| v.ops.clone())
            .collect()
    }
}

/// Checks the register workload of `history`.
pub fn check(history: &History) -> IdempotencyReport {
    let requests = retries::requests(history);
    let mut report = IdempotencyReport {
        valid: Validity::Valid,
        requests: requests.len(),
        retried: requests.values().filter(|a| a.len() > 1).count(),
        attempts: requests.values().map(Vec::len).sum(),
        values_checked: 0,
        reads_checked: 0,
        reapplied: Vec::new(),
        revisions: Vec::new(),
        inconsistent: Vec::new(),
    };
    // (key, value) -> the request ids that wrote it.
    let mut writers: HashMap<(u32, i64), Vec<Option<&str>>> = HashMap::new();
    for op in history.ops_of(Workload::Register) {
        if let Op::Write(v) | Op::Cas(_, v) = op.op {
            writers.entry((op.key, v)).or_default().push(op.request_id.as_deref());
        }
    }
    let one_request = |key: u32, v: i64| -> Option<String> {
        let ids = writers.get(&(key, v))?;
        let first = ids.first().copied().flatten()?;
        ids.iter().all(|id| *id == Some(first)).then(|| first.to_string())
    };
    report.values_checked = writers.keys().filter(|(k, v)| one_request(*k, *v).is_some()).count();

    let mut reads: BTreeMap<u32, Vec<&Operation>> = BTreeMap::new();
    for op in history.ops_of(Workload::Register) {
        if let (Op::Read(Some(_)), Outcome::Ok, Some(_)) = (&op.op, op.outcome, op.complete_ns) {
            reads.entry(op.key).or_default().push(op);
        }
    }
    for (key, reads) in &reads {
        report.reads_checked += reads.len();
        for (v, ops) in comebacks(reads) {
            if let Some(id) = one_request(*key, v) {
                let message = format!(
                    "value {v}, written only by request {id}, was read (#{}), overwritten (#{} read another value) and read again (#{}): the request applied twice",
                    ops[0], ops[1], ops[2]
                );
                report.reapplied.push(Violation {
                    key: *key,
                    request_id: Some(id),
                    message,
                    ops: ops.to_vec(),
                });
            }
        }
    }

    // (key, value) -> revision -> the first op that saw it.
    let mut seen: BTreeMap<(u32, i64), BTreeMap<u64, usize>> = BTreeMap::new();
    for op in history.ops_of(Workload::Register) {
        if let (Op::ReadStale(Some((v, _, r))) | Op::ReadBlocking(_, _, Some((v, _, r))), Outcome::Ok) =
            (&op.op, op.outcome)
        {
            seen.entry((op.key, *v)).or_default().entry(*r).or_insert(op.id);
        }
    }
    for ((key, v), revisions) in &seen {
        // Only values of one request: the routes' initial values are
        // created by the suite, which may send a creation twice.
        if revisions.len() > 1 && one_request(*key, *v).is_some() {
            let ops: Vec<usize> = revisions.values().copied().take(2).collect();
            let at: Vec<String> = revisions.keys().map(u64::to_string).collect();
            let message = format!(
                "value {v} was seen at revisions {} (#{} and #{}): written more than once",
                at.join(", "),
                ops[0],
                ops[1]
            );
            report.revisions.push(Violation { key: *key, request_id: one_request(*key, *v), message, ops });
        }
    }

    for ((key, id), attempts) in &requests {
        let ops: Vec<&Operation> = attempts.iter().map(|&i| &history.ops[i]).collect();
        let acked = ops
            .iter()
            .filter(|o| o.outcome == Outcome::Ok)
            .filter_map(|o| o.complete_ns.map(|t| (t, o.id)))
            .min();
        let Some((acked_at, acked_op)) = acked else { continue };
        if let Some(bad) =
            ops.iter().find(|o| o.outcome == Outcome::Fail && o.invoke_ns > acked_at && answered(o))
        {
            let message = format!(
                "request {id} was acknowledged (#{acked_op}) but a later attempt answered fail (#{}: {})",
                bad.id,
                bad.error.as_deref().unwrap_or("no reason")
            );
            report.inconsistent.push(Violation {
                key: *key,
                request_id: Some(id.to_string()),
                message,
                ops: vec![acked_op, bad.id],
            });
        }
    }

    if !(report.reapplied.is_empty() && report.revisions.is_empty() && report.inconsistent.is_empty()) {
        report.valid = Validity::Invalid;
    }
    report.reapplied.truncate(LISTED);
    report.revisions.truncate(LISTED);
    report.inconsistent.truncate(LISTED);
    report
}

/// Whether a `fail` is a node's answer: not one whose connection was refused
/// (`cannot connect …`, what `ferry_client` says when nothing was sent).
fn answered(op: &Operation) -> bool {
    !op.error.as_deref().is_some_and(|e| e.starts_with("cannot connect"))
}

/// Values that come back among one key's ok reads: for each, the first
/// witness `[read of v, later read of another value, later read of v]`.
fn comebacks(reads: &[&Operation]) -> Vec<(i64, [usize; 3])> {
    let value = |o: &Operation| if let Op::Read(Some(v)) = o.op { v } else { i64::MIN };
    let done = |o: &Operation| o.complete_ns.unwrap_or(u64::MAX);
    let mut by_invoke: Vec<&Operation> = reads.to_vec();
    by_invoke.sort_by_key(|o| o.invoke_ns);
    // suffix[i]: the two earliest-completing reads, of different values,
    // among by_invoke[i..].
    let mut suffix: Vec<[Option<&Operation>; 2]> = vec![[None, None]; by_invoke.len() + 1];
    for i in (0..by_invoke.len()).rev() {
        let o = by_invoke[i];
        suffix[i] = match suffix[i + 1] {
            [None, _] => [Some(o), None],
            [Some(a), b] if value(a) == value(o) => [Some(if done(o) < done(a) { o } else { a }), b],
            // a's value differs from o's and a was the earliest of all.
            [Some(a), _] if done(o) < done(a) => [Some(o), Some(a)],
            [Some(a), Some(b)] if done(b) <= done(o) => [Some(a), Some(b)],
            [Some(a), _] => [Some(a), Some(o)],
        };
    }
    let after = |t: u64| by_invoke.partition_point(|o| o.invoke_ns <= t);
    // value -> (the earliest-completing read of it, the latest-invoked read of it)
    let mut per_value: BTreeMap<i64, (&Operation, &Operation)> = BTreeMap::new();
    for &o in &by_invoke {
        let e = per_value.entry(value(o)).or_insert((o, o));
        if done(o) < done(e.0) {
            e.0 = o;
        }
        if o.invoke_ns > e.1.invoke_ns {
            e.1 = o;
        }
    }
    let mut out = Vec::new();
    for (v, (first, last)) in per_value {
        let candidates = suffix[after(done(first))];
        let Some(other) = candidates.into_iter().flatten().find(|o| value(o) != v) else { continue };
        if last.invoke_ns > done(other) {
            out.push((v, [first.id, other.id, last.id]));
        }
    }
    out
}

#[cfg(test)]
#[path = "idempotency_tests.rs"]
mod tests;
