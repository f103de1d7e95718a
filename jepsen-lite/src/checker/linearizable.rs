//! Linearizability of the register workload.
//!
//! **Property.** The `read`, `write` and `cas` operations on the one register
//! (a route's backend weight) are linearizable: there is a total order of the
//! operations that happened which respects real time (an operation that
//! completed before another was invoked comes first) and in which every
//! operation is legal for a single integer register starting at
//! [`Config::initial`]: a read returns the last value written, a `cas [e, n]`
//! succeeds only on `e` and then leaves `n`.
//! - An `ok` operation happened, at one instant between its invocation and
//!   its completion.
//! - A `fail` operation did not happen: it is dropped.
//! - An `info` (indeterminate) write or cas may have happened at any instant
//!   after its invocation, or never: it is given a completion at +∞ and may
//!   be left out of the order. An `info` read observed nothing: it is dropped.
//!
//! **Search.** Wing & Gong's depth-first search with Lowe's memoization, on
//! the entry list Porcupine uses: the history becomes a doubly linked list of
//! call and return entries ordered by time (calls first on ties, so touching
//! intervals count as concurrent). Linearizing an operation lifts its call and
//! return out of the list; backtracking puts them back (unlift). Reaching a
//! return whose call could not be linearized backtracks; a `(linearized set,
//! register value)` pair seen before is not explored again. Reaching the
//! return of an indeterminate operation means only indeterminate calls are
//! left: the history is linearizable.
//!
//! **Indeterminate operations** are what makes the search blow up: each may
//! or may not be in every prefix. Two reductions keep it small, neither of
//! which changes the verdict. In a linearization, what follows an
//! indeterminate write or cas (which leaves value `v`) is either an observer
//! of `v` (a read of `v`, a cas expecting `v`), or a write, which makes the
//! indeterminate operation pointless: removing it leaves a linearization. So
//! (1) an indeterminate write whose value no read or cas ever observes is
//! left out, and (2) the search only linearizes an indeterminate operation
//! if an observer follows it at once (no plain write next); this flag is part
//! of the memo key.
//!
//! **Reads** are the other source of blow-up: concurrent reads of one value
//! can go in any order. A read of the current value among the candidates (a
//! call before the first return) is linearized first and alone: it changes
//! nothing, and no remaining operation completed before it was invoked, so
//! any linearization from here can be reordered to start with it. When it
//! fails, the node fails, without trying the other candidates.
//!
//! The search stops with
//! [`Validity::Unknown`] past [`Config::max_steps`] steps or
//! [`Config::max_cache_bytes`] of memo.

use std::collections::HashSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Report, Validity};
use crate::history::Op;
use crate::operation::{History, Operation, Outcome};

mod search;

#[cfg(test)]
use search::apply;
use search::{Candidate, Deepest, Search, SearchOutcome, Step};

/// The checker's name in `results.json`.
pub const NAME: &str = "linearizable";

/// Settings of the linearizability search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The register's value before the first operation; `null`: unknown, and
    /// the first operation that depends on it decides it.
    pub initial: Option<i64>,
    /// Search steps (entries visited) before giving up with `unknown`.
    pub max_steps: u64,
    /// Approximate bytes of memoized states before giving up with `unknown`.
    pub max_cache_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { initial: None, max_steps: 10_000_000, max_cache_bytes: 512 << 20 }
    }
}

/// The checker's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct LinearizableReport {
    pub valid: Validity,
    /// Operations searched (ok, and indeterminate writes and cas).
    pub ops: usize,
    /// Of those, the indeterminate ones.
    pub indeterminate: usize,
    /// Left out: failed operations, indeterminate reads, and indeterminate
    /// writes whose value nothing observed.
    pub dropped: usize,
    pub steps: u64,
    pub cache_entries: usize,
    pub elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violation: Option<Violation>,
    /// Why the verdict is `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
}

/// Where the search got stuck, at its deepest.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The operation that completed without any order able to include it.
    pub op: usize,
    /// The longest linearizable prefix found: op ids in linearization order.
    pub linearized: Vec<usize>,
    /// The register's value after that prefix (`null`: still unknown).
    pub value: Option<i64>,
    /// Operations invoked but not linearized at that point, none of which could go next.
    pub pending: Vec<usize>,
    /// The same, for humans.
    pub explanation: String,
}

impl Report for LinearizableReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let figures = format!(
            "{} ops ({} indeterminate, {} dropped), {} steps, {} ms",
            self.ops, self.indeterminate, self.dropped, self.steps, self.elapsed_ms
        );
        match (&self.violation, &self.unknown_reason) {
            (Some(v), _) => format!("{figures}\n{}", v.explanation),
            (None, Some(reason)) => format!("{figures}\n{reason}"),
            (None, None) => figures,
        }
    }

    fn cited_ops(&self) -> Vec<usize> {
        self.violation.as_ref().map(|v| vec![v.op]).unwrap_or_default()
    }
}
fn candidates(history: &History) -> (Vec<(Candidate, u64, u64)>, usize) {
    // Values some read or cas observed.
    let observed: HashSet<i64> = history
        .ops
        .iter()
        .filter_map(|op| match (&op.op, op.outcome) {
            (Op::Read(Some(v)), Outcome::Ok) | (Op::Cas(v, _), Outcome::Ok | Outcome::Info) => Some(*v),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    let mut dropped = 0;
    for op in &history.ops {
        let step = match (&op.op, op.outcome) {
            (_, Outcome::Fail) | (Op::Read(_), Outcome::Info) => {
                dropped += usize::from(matches!(op.op, Op::Read(_) | Op::Write(_) | Op::Cas(..)));
                continue;
            }
            (Op::Read(Some(v)), _) => Step::Read(*v),
            (Op::Write(v), _) => Step::Write(*v),
            (Op::Cas(e, n), _) => Step::Cas(*e, *n),
            _ => continue,
        };
        let indeterminate = op.outcome == Outcome::Info;
        if let (true, Step::Write(v) | Step::Cas(_, v)) = (indeterminate, step)
            && !observed.contains(&v)
        {
            dropped += 1;
            continue;
        }
        let ret = if indeterminate { u64::MAX } else { op.complete_ns.unwrap_or(u64::MAX) };
        out.push((Candidate { id: op.id, step, indeterminate }, op.invoke_ns, ret));
    }
    (out, dropped)
}

/// Checks the register operations of `history`.
pub fn check(history: &History, config: &Config) -> LinearizableReport {
    let started = Instant::now();
    let (ops, dropped) = candidates(history);
    let indeterminate = ops.iter().filter(|(c, ..)| c.indeterminate).count();
    let mut search = Search::new(&ops, config);
    let outcome = search.run(config.initial);
    let mut report = LinearizableReport {
        valid: Validity::Valid,
        ops: ops.len(),
        indeterminate,
        dropped,
        steps: search.steps,
        cache_entries: search.cache_entries(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        violation: None,
        unknown_reason: None,
    };
    match outcome {
        SearchOutcome::Linearizable => {}
        SearchOutcome::GaveUp(reason) => {
            report.valid = Validity::Unknown;
            report.unknown_reason = Some(reason);
        }
        SearchOutcome::NotLinearizable => {
            report.valid = Validity::Invalid;
            report.violation = search.deepest.map(|d| violation(history, &search.ops, d));
        }
    }
    report
}

// === the search ===

/// How many linearized operations the explanation lists, ending at the dead end.
const PREFIX_SHOWN: usize = 10;

fn violation(history: &History, ops: &[Candidate], d: Deepest) -> Violation {
    let op_of = |i: usize| -> Option<&Operation> { history.ops.get(ops[i].id) };
    let describe = |i: usize| op_of(i).map_or_else(|| format!("#{}", ops[i].id), Operation::describe);
    let value = d.value.map_or_else(|| "unknown".to_string(), |v| v.to_string());
    let mut text = format!(
        "not linearizable: {} cannot be linearized.\nThe longest linearizable prefix has {} of {} \
         operations and leaves the register at {value}",
        describe(d.stuck),
        d.linearized.len(),
        ops.len()
    );
    let skipped = d.linearized.len().saturating_sub(PREFIX_SHOWN);
    if !d.linearized.is_empty() {
        text.push_str(if skipped > 0 { "; it ends with:" } else { ":" });
        for &i in &d.linearized[skipped..] {
            text.push_str(&format!("\n  {}", describe(i)));
        }
    } else {
        text.push('.');
    }
    text.push_str(&format!("\nFrom there, none of these operations can take effect next without a dead end (register at {value}):"));
    for &i in &d.pending {
        text.push_str(&format!("\n  {}", describe(i)));
    }
    Violation {
        op: ops[d.stuck].id,
        linearized: d.linearized.iter().map(|&i| ops[i].id).collect(),
        value: d.value,
        pending: d.pending.iter().map(|&i| ops[i].id).collect(),
        explanation: text,
    }
}

#[cfg(test)]
mod tests;
