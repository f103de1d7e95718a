//! Bounded indeterminacy of the register workload's writes.
//!
//! **Property.** An indeterminate (`info`, or never completed) `write` or
//! `cas` whose invocation carries a deadline `D` (`deadline_ns`: invocation
//! plus the server's request timeout, after which the server promises the
//! operation can no longer take effect) took effect before `D`, or never.
//! A write that answered 503 must not come back later as a *zombie* and
//! overwrite newer acknowledged writes.
//!
//! **Requests.** The attempts of one request (a write or cas sent again
//! with the same `request_id`) are one write: it is indeterminate when no
//! attempt was acknowledged and one was `info`, and its deadline is the
//! latest of its attempts' that did not fail. (So the check reads the same
//! on a history whose retries are already merged into one operation.)
//!
//! **Witness.** Let `w` be such a write on key `k` leaving value `v`, and
//! let `v` be *unique to `w` on `k`*: no other `write` or `cas` invocation
//! on `k` (whatever its outcome, unless it is an attempt of `w`'s request)
//! leaves `v`. `w` took effect
//! after `D` if there are two `ok` operations on `k`:
//! - `a`, invoked at or after `D`, that left the register at a value other
//!   than `v` (a read of `u ≠ v`, a write of `u`, a cas to `u`), and
//! - `b`, invoked after `a` completed, that observed `v` (a read of `v`, a
//!   cas expecting `v`).
//!
//! *Soundness*, when the register is linearizable (the `linearizable`
//! checker judges that): `a` took effect at an instant `t_a ≥ D` inside its
//! interval and left `u ≠ v`; `b` took effect at `t_b` inside its interval,
//! so `t_b > t_a`, and saw `v`. A register changes only by writes and cas,
//! so some operation that leaves `v` took effect in `(t_a, t_b)`: only `w`
//! leaves `v`, so `w` took effect after `t_a ≥ D`. (The initial value does
//! not matter: `v` was gone at `t_a`.) The check is one-sided: a late write
//! that no later operation observed leaves no witness, so `true` means that
//! none was found.
//!
//! **Not judged**, and counted in the report:
//! - operations without a deadline (histories written before deadlines);
//! - operations whose value is not unique on their key: a read of `v` could
//!   then be another write's;
//! - operations whose `[invocation, deadline]` overlaps a fault window in
//!   which the nemesis took down every node or a majority at once (a `start`
//!   whose description begins with `power-loss` or `kill-all`). In Raft an
//!   entry the leader appended before its deadline, when the majority is
//!   lost, commits when the majority returns, whenever that is: no server
//!   can bound it, and the documented bound excludes it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Report, Validity};
use crate::faults::{FaultWindow, fault_windows};
use crate::history::{Op, Workload};
use crate::operation::{History, Operation, Outcome, secs};

/// The checker's name in `results.json`.
pub const NAME: &str = "bounded_indeterminacy";

/// Descriptions of the faults that take down every node or a majority.
pub const MAJORITY_FAULTS: [&str; 2] = ["power-loss", "kill-all"];

/// The violations listed in the summary; `results.json` has them all.
const SHOWN: usize = 5;

/// The checker's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct IndeterminacyReport {
    pub valid: Validity,
    /// Indeterminate writes and cas judged.
    pub judged: usize,
    /// Not judged: no deadline.
    pub no_deadline: usize,
    /// Not judged: another write or cas on the key leaves the same value.
    pub not_unique: usize,
    /// Not judged: a `power-loss` or `kill-all` fault overlaps the deadline.
    pub majority_fault: usize,
    /// Writes that took effect after their deadline, with their witnesses.
    pub late: Vec<LateWrite>,
}

/// A write that took effect after its deadline.
#[derive(Debug, Clone, Serialize)]
pub struct LateWrite {
    /// The indeterminate write or cas.
    pub op: usize,
    pub key: u32,
    pub value: i64,
    pub deadline_ns: u64,
    /// An ok operation invoked after the deadline that left another value.
    pub other_value: usize,
    /// An ok operation invoked after `other_value` completed that observed `value`.
    pub observed: usize,
    pub explanation: String,
}

impl Report for IndeterminacyReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let mut text = format!(
            "{} indeterminate writes judged; not judged: {} without a deadline, {} whose value is not \
             unique on its key, {} during a power-loss or kill-all fault",
            self.judged, self.no_deadline, self.not_unique, self.majority_fault
        );
        if !self.late.is_empty() {
            text.push_str(&format!("\n{} took effect after their deadline:", self.late.len()));
        }
        for late in self.late.iter().take(SHOWN) {
            text.push_str(&format!("\n{}", late.explanation));
        }
        if self.late.len() > SHOWN {
            text.push_str(&format!("\n... and {} more in results.json", self.late.len() - SHOWN));
        }
        text
    }

    fn cited_ops(&self) -> Vec<usize> {
        self.late.iter().take(SHOWN).flat_map(|l| [l.op, l.other_value, l.observed]).collect()
    }
}

/// True when the history has register operations with a deadline: the
/// checker applies.
pub fn applies(history: &History) -> bool {
    history.ops_of(Workload::Register).any(|o| o.deadline_ns.is_some())
}

/// The value a register operation leaves, when it is a write or cas.
fn written(op: &Op) -> Option<i64> {
    match op {
        Op::Write(v) | Op::Cas(_, v) => Some(*v),
        _ => None,
    }
}

/// Checks every indeterminate write and cas of `history` that has a deadline.
pub fn check(history: &History) -> IndeterminacyReport {
    let majority: Vec<FaultWindow> = fault_windows(history)
        .into_iter()
        .filter(|w| MAJORITY_FAULTS.iter().any(|p| w.description.starts_with(p)))
        .collect();
    let mut by_key: HashMap<u32, Vec<&Operation>> = HashMap::new();
    for op in history.ops_of(Workload::Register) {
        by_key.entry(op.key).or_default().push(op);
    }
    let mut report = IndeterminacyReport {
        valid: Validity::Valid,
        judged: 0,
        no_deadline: 0,
        not_unique: 0,
        majority_fault: 0,
        late: Vec::new(),
    };
    let mut keys: Vec<u32> = by_key.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        check_key(history, &by_key[&key], &majority, &mut report);
    }
    report.late.sort_by_key(|l| l.op);
    if !report.late.is_empty() {
        report.valid = Validity::Invalid;
    }
    report
}

/// An ok operation and the value it left.
#[derive(Debug, Clone, Copy)]
struct Left {
    invoke: u64,
    complete: u64,
    id: usize,
    value: i64,
}

/// Over the ok operations invoked from some point on: the one that
/// completed first, and the first to complete among those that left
/// another value than it.
#[derive(Debug, Clone, Copy, Default)]
struct Earliest {
    first: Option<Left>,
    other: Option<Left>,
}

impl Earliest {
    fn with(self, l: Left) -> Self {
        // On ties the earlier invoked (`l`, as the suffix grows backwards) wins.
        let earlier = |a: Option<Left>| a.is_none_or(|a| l.complete <= a.complete);
        match self.first {
            Some(f) if !earlier(Some(f)) => {
                if f.value != l.value && earlier(self.other) {
                    Earliest { other: Some(l), ..self }
                } else {
                    self
                }
            }
            Some(f) if f.value != l.value => Earliest { first: Some(l), other: Some(f) },
            _ => Earliest { first: Some(l), other: self.other },
        }
    }

    /// The first to complete that left something other than `v`.
    fn leaving_other_than(self, v: i64) -> Option<Left> {
        match self.first {
            Some(f) if f.value != v => Some(f),
            _ => self.other,
        }
    }
}

/// Who sent a write: its request id (the attempts of one request share it),
/// or, without one, the operation itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Sender<'a> {
    Request(&'a str),
    Op(usize),
}

fn sender(op: &Operation) -> Sender<'_> {
    op.request_id.as_deref().map_or(Sender::Op(op.id), Sender::Request)
}

fn check_key(
    history: &History,
    ops: &[&Operation],
    majority: &[FaultWindow],
    report: &mut IndeterminacyReport,
) {
    // The writes and cas leaving each value, and who sent them.
    let mut writes: BTreeMap<i64, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        if let Some(v) = written(&op.op) {
            writes.entry(v).or_default().push(op);
        }
    }
    // Ok operations by invocation, with the value each left.
    let mut left: Vec<Left> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter_map(|o| {
            let value = match o.op {
                Op::Read(Some(u)) | Op::Write(u) | Op::Cas(_, u) => u,
                _ => return None,
            };
            Some(Left { invoke: o.invoke_ns, complete: o.complete_ns?, id: o.id, value })
        })
        .collect();
    left.sort_by_key(|l| (l.invoke, l.id));
    let mut suffix = vec![Earliest::default(); left.len() + 1];
    for i in (0..left.len()).rev() {
        suffix[i] = suffix[i + 1].with(left[i]);
    }
    // The latest invocation of an ok observer of each value.
    let mut last_observer: HashMap<i64, (u64, usize)> = HashMap::new();
    for o in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        let (Op::Read(Some(v)) | Op::Cas(v, _)) = o.op else { continue };
        let latest = last_observer.entry(v).or_insert((o.invoke_ns, o.id));
        if o.invoke_ns > latest.0 {
            *latest = (o.invoke_ns, o.id);
        }
    }
    for (&v, attempts) in &writes {
        // One request, sent once or retried: indeterminate when no attempt
        // was acknowledged and one may have taken effect.
        let Some(w) = attempts.iter().find(|o| o.outcome == Outcome::Info) else { continue };
        if attempts.iter().any(|o| sender(o) != sender(w)) {
            report.not_unique += 1;
            continue;
        }
        if attempts.iter().any(|o| o.outcome == Outcome::Ok) {
            continue;
        }
        // The request may take effect until its last attempt's deadline.
        let live = || attempts.iter().filter(|o| o.outcome != Outcome::Fail);
        let Some(deadline) =
            live().map(|o| o.deadline_ns).collect::<Option<Vec<u64>>>().and_then(|d| d.into_iter().max())
        else {
            report.no_deadline += 1;
            continue;
        };
        let invoke = attempts.iter().map(|o| o.invoke_ns).min().unwrap_or(w.invoke_ns);
        if majority.iter().any(|f| f.start_ns <= deadline && f.end_ns.is_none_or(|end| end >= invoke)) {
            report.majority_fault += 1;
            continue;
        }
        report.judged += 1;
        let from = left.partition_point(|l| l.invoke < deadline);
        let Some(a) = suffix[from].leaving_other_than(v) else { continue };
        let Some(&(b_invoke, b)) = last_observer.get(&v) else { continue };
        if b_invoke > a.complete {
            report.late.push(late_write(history, w, v, deadline, a.id, b));
        }
    }
}

fn late_write(
    history: &History,
    w: &Operation,
    value: i64,
    deadline_ns: u64,
    a: usize,
    b: usize,
) -> LateWrite {
    let describe = |id: usize| history.ops.get(id).map_or_else(|| format!("#{id}"), Operation::describe);
    let explanation = format!(
        "{} (deadline {}) took effect after its deadline: {} was invoked after the deadline and left \
         another value, then {} saw {value}",
        describe(w.id),
        secs(deadline_ns),
        describe(a),
        describe(b)
    );
    LateWrite { op: w.id, key: w.key, value, deadline_ns, other_value: a, observed: b, explanation }
}

#[cfg(test)]
mod tests;
