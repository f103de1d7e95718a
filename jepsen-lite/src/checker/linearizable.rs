//! Linearizability of the register workload.
//!
//! **Property.** The `read`, `write` and `cas` operations on each register
//! key are linearizable: there is a total order of the operations that
//! happened which respects real time (an operation that completed before
//! another was invoked comes first) and in which every operation is legal for
//! a single integer register per key starting at [`Config::initial`]: a read
//! returns the last value written, a `cas [e, n]` succeeds only on `e` and
//! then leaves `n`.
//! - An `ok` operation happened, at one instant between its invocation and
//!   its completion.
//! - A `fail` operation did not happen: it is dropped.
//! - An `info` (indeterminate) write or cas may have happened at any instant
//!   after its invocation, or never. An `info` read observed nothing: it is
//!   dropped.
//!
//! **Keys.** Each key is an independent register (events without `key` are
//! key 0). Linearizability is local (Herlihy & Wing): a history is
//! linearizable iff each object's sub-history is, so each key is searched on
//! its own, as Porcupine partitions a key-value history. The verdict is
//! invalid when a key is, unknown when none is but one is undecided.
//! [`Config::max_steps`] and [`Config::max_cache_bytes`] apply to each key.
//!
//! **Search.** Wing & Gong's depth-first search with Lowe's memoization, on
//! the entry list Porcupine uses: the operations become a doubly linked list
//! of call and return entries ordered by time (calls first on ties, so
//! touching intervals count as concurrent). Deciding an operation lifts its
//! call and return out of the list; backtracking puts them back. At a node
//! the search tries, as the next operation, each call before the first
//! return left (no other can go next without an operation completing
//! before it was invoked). Reaching the first return of a definite operation
//! that is still in the list is a dead end: backtrack.
//!
//! **Tight linearizations.** Call a linearization *tight* when every
//! indeterminate operation in it is followed at once by an *observer* of the
//! value it leaves (a read of it, a cas expecting it). *If the history is
//! linearizable, it has a tight linearization.* Take one with the fewest
//! indeterminate operations. After an indeterminate `x` leaving `v` comes a
//! legal operation: a read of `v` or a cas expecting `v` (observers), a
//! write, or nothing (a read of another value or a cas expecting one would be
//! illegal). If a write or nothing, removing `x` leaves a legal order (the
//! write does not depend on the value before it) that still respects real
//! time, with fewer indeterminate operations: a contradiction. The search
//! only looks for tight linearizations; four reductions and a bound follow.
//!
//! 1. *An indeterminate write or cas that no observer can follow is left
//!    out* (below: its horizon is before its invocation, or it has none).
//! 2. *An indeterminate operation is linearized only if an observer follows
//!    at once:* the node records that the last operation linearized was
//!    indeterminate, and then refuses a write; this flag is part of the memo
//!    key. (A cas expecting another value, a read of another value, are
//!    illegal there anyway.)
//! 3. *A read of the current value among the candidates is linearized first
//!    and alone;* when that fails, the node fails. Proof: let `C` be a tight
//!    completion from this node with the fewest indeterminate operations, and
//!    `r` the read. `r·(C−r)` is legal (`r` reads the current value; removing
//!    a read keeps the rest legal) and respects real time (`r`'s call is
//!    before every return left). It is tight: the node's last operation, if
//!    indeterminate, is followed by `r`, an observer; an indeterminate `x`
//!    that `r` followed in `C` is now followed by what followed `r`, and if
//!    that is not an observer of `x`'s value, removing `x` (and then any
//!    indeterminate operation left without an observer) gives a tight
//!    completion with fewer, against the choice of `C`.
//!
//! 4. *A node where a value is needed that nothing left can write is a dead
//!    end:* the register holds a known value other than `v`, a definite
//!    operation left observes `v` (a read of it, a cas expecting it), and no
//!    operation left leaves `v` (a write of it, a cas to it). The observer
//!    needs `v` at its turn, and the register only comes to hold `v` through
//!    an operation that leaves it; the unknown initial value is the only
//!    other source, and it is gone once the value is known. With unique
//!    written values this cuts a wrong order of writes as soon as the
//!    overwritten value still has a reader left, instead of when the search
//!    reaches that reader's return.
//!    (An indeterminate cas expecting `v` may be left out, so it needs
//!    nothing.) The explanation then names the last invoked such observer.
//!
//! **Horizons.** In a tight linearization an indeterminate `x` is followed
//! by an observer `o`; if `o` is indeterminate too, by an observer of `o`'s
//! value, and so on: the chain ends at a definite operation `d` (the last
//! operation of a tight linearization is definite), which `x` precedes. So
//! `x` is linearized before every operation invoked after `d` completed.
//! The *horizon* of `x` is the latest completion of a definite observer of
//! its value, or the horizon of an indeterminate cas expecting its value
//! (computed as a fixpoint, so cycles of cas are fine): `d`'s completion is
//! at most that. The search gives `x` its horizon as its return: `x` is
//! linearized before any operation invoked after it, or never. Reaching
//! `x`'s return means every choice of a next operation was tried: what is
//! left is that `x` never happened, a move the search takes alone (like the
//! read of reduction 3), deciding `x` as omitted. The list ends, and the
//! search succeeds, when every operation is decided. Before, an
//! indeterminate operation stayed open to the end of the history, and with
//! it every memo key had to name all operations.
//!
//! **The windowed memo.** A node's *decided set* (operations linearized or
//! omitted) is named by the first return `ρ` left in the list and the calls
//! left before it: *the decided set is every operation whose call is before
//! `ρ`, except those calls.* Proof: along the path to the node the first
//! return left only moves later, as entries are only lifted. An operation is
//! linearized only when its call is before the first return at that time,
//! so before `ρ`; it is omitted only when its return is the first one then,
//! so its call is before `ρ` too. And every operation whose return is before
//! `ρ` is decided (its return was lifted), while an operation whose call is
//! before `ρ` and whose return is after it is decided iff its call was lifted.
//! So the memo key is `(ρ, the calls before ρ, value, flag)`: its size is the
//! number of operations open at `ρ`, the concurrency (with indeterminate
//! operations open until their horizon), not the length of the history. Two
//! nodes with one key have one future (what can follow depends only on the
//! operations left, the value and the flag), so a key seen before is not
//! explored again.
//!
//! The search stops with [`Validity::Unknown`] past [`Config::max_steps`]
//! steps or [`Config::max_cache_bytes`] of memo on a key. It keeps no
//! record of its dead ends; on an invalid key it runs again, the same way,
//! remembering the deepest one for the explanation.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Report, Validity};
use crate::history::{Op, Workload};
use crate::operation::{History, Operation};

mod candidates;
mod search;
mod supply;

use search::{Candidate, Deepest, Search, SearchOutcome};
#[cfg(test)]
use search::{Step, apply};

/// The checker's name in `results.json`.
pub const NAME: &str = "linearizable";

/// Settings of the linearizability search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Every key's value before the first operation; `null`: unknown, and
    /// the first operation that depends on it decides it.
    pub initial: Option<i64>,
    /// Search steps (entries visited) on one key before giving up with `unknown`.
    pub max_steps: u64,
    /// Approximate bytes of memoized states on one key before giving up with `unknown`.
    pub max_cache_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { initial: None, max_steps: 10_000_000, max_cache_bytes: 512 << 20 }
    }
}

/// The checker's verdict and figures, over every key.
#[derive(Debug, Clone, Serialize)]
pub struct LinearizableReport {
    pub valid: Validity,
    /// Keys searched.
    pub keys: usize,
    /// Operations searched (ok, and indeterminate writes and cas).
    pub ops: usize,
    /// Of those, the indeterminate ones.
    pub indeterminate: usize,
    /// Left out: failed operations, indeterminate reads, and indeterminate
    /// writes and cas that no observer can follow.
    pub dropped: usize,
    /// Steps, over every key.
    pub steps: u64,
    /// The largest memo of one key: states, and approximate bytes.
    pub cache_entries: usize,
    pub cache_bytes: u64,
    pub elapsed_ms: u64,
    /// The keys found not linearizable.
    pub invalid_keys: Vec<u32>,
    /// The keys whose search gave up.
    pub unknown_keys: Vec<u32>,
    /// The first invalid key's violation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violation: Option<Violation>,
    /// Why the verdict is `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// Each key's verdict and figures, by key.
    pub per_key: Vec<KeyReport>,
}

/// One key's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    pub key: u32,
    pub valid: Validity,
    pub ops: usize,
    pub indeterminate: usize,
    pub dropped: usize,
    pub steps: u64,
    pub cache_entries: usize,
    pub elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
}

/// Where the search of a key got stuck, at its deepest.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The key.
    pub key: u32,
    /// The operation that completed without any order able to include it.
    pub op: usize,
    /// The longest linearizable prefix found: op ids in linearization order.
    pub linearized: Vec<usize>,
    /// The register's value after that prefix (`null`: still unknown).
    pub value: Option<i64>,
    /// Operations invoked but not linearized at that point, none of which could go next.
    pub pending: Vec<usize>,
    /// Every register operation on the key (ids), to replay its history.
    pub key_ops: Vec<usize>,
    /// The same, for humans.
    pub explanation: String,
}

impl Report for LinearizableReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let mut text = format!(
            "{} ops on {} ({} indeterminate, {} dropped), {} steps, {} ms",
            self.ops,
            plural_keys(self.keys),
            self.indeterminate,
            self.dropped,
            self.steps,
            self.elapsed_ms
        );
        if let Some(v) = &self.violation {
            text.push_str(&format!("\n{}", v.explanation));
            if self.invalid_keys.len() > 1 {
                text.push_str(&format!("\nInvalid keys: {}", list(&self.invalid_keys)));
            }
        }
        if let Some(reason) = &self.unknown_reason {
            text.push_str(&format!("\n{reason}"));
        }
        text
    }

    fn cited_ops(&self) -> Vec<usize> {
        self.violation.as_ref().map(|v| vec![v.op]).unwrap_or_default()
    }
}

fn plural_keys(n: usize) -> String {
    if n == 1 { "1 key".to_string() } else { format!("{n} keys") }
}

fn list(keys: &[u32]) -> String {
    keys.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Checks the register operations of `history`, each key on its own.
pub fn check(history: &History, config: &Config) -> LinearizableReport {
    let started = Instant::now();
    let mut by_key: BTreeMap<u32, Vec<&Operation>> = BTreeMap::new();
    // Linearizable reads, writes and cas; other register reads (stale ones) are not judged here.
    for op in history
        .ops_of(Workload::Register)
        .filter(|o| matches!(o.op, Op::Read(_) | Op::Write(_) | Op::Cas(..)))
    {
        by_key.entry(op.key).or_default().push(op);
    }
    let mut report = LinearizableReport {
        valid: Validity::Valid,
        keys: by_key.len(),
        ops: 0,
        indeterminate: 0,
        dropped: 0,
        steps: 0,
        cache_entries: 0,
        cache_bytes: 0,
        elapsed_ms: 0,
        invalid_keys: Vec::new(),
        unknown_keys: Vec::new(),
        violation: None,
        unknown_reason: None,
        per_key: Vec::with_capacity(by_key.len()),
    };
    let mut reasons = Vec::new();
    for (&key, ops) in &by_key {
        let key_started = Instant::now();
        let c = candidates::candidates(ops);
        let mut search = Search::new(&c.ops, config, false);
        let outcome = search.run(config.initial);
        let mut k = KeyReport {
            key,
            valid: Validity::Valid,
            ops: c.ops.len(),
            indeterminate: c.indeterminate,
            dropped: c.dropped,
            steps: search.steps,
            cache_entries: search.cache_entries(),
            elapsed_ms: millis(key_started),
            unknown_reason: None,
        };
        report.ops += k.ops;
        report.indeterminate += k.indeterminate;
        report.dropped += k.dropped;
        report.steps += k.steps;
        report.cache_entries = report.cache_entries.max(k.cache_entries);
        report.cache_bytes = report.cache_bytes.max(search.cache_bytes());
        match outcome {
            SearchOutcome::Linearizable => {}
            SearchOutcome::GaveUp(reason) => {
                k.valid = Validity::Unknown;
                reasons.push(format!("key {key}: {reason}"));
                k.unknown_reason = Some(reason);
                report.unknown_keys.push(key);
            }
            SearchOutcome::NotLinearizable => {
                k.valid = Validity::Invalid;
                report.invalid_keys.push(key);
                if report.violation.is_none() {
                    // The same search again, remembering where it got stuck.
                    let mut again = Search::new(&c.ops, config, true);
                    again.run(config.initial);
                    report.violation =
                        again.deepest.take().map(|d| violation(history, key, ops, &again.ops, d));
                }
            }
        }
        report.per_key.push(k);
    }
    if !report.invalid_keys.is_empty() {
        report.valid = Validity::Invalid;
    } else if !report.unknown_keys.is_empty() {
        report.valid = Validity::Unknown;
    }
    if !reasons.is_empty() {
        report.unknown_reason = Some(format!("undecided: {}", reasons.join("; ")));
    }
    report.elapsed_ms = millis(started);
    report
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

// === the violation ===

/// How many linearized operations the explanation lists, ending at the dead end.
const PREFIX_SHOWN: usize = 10;

fn violation(
    history: &History,
    key: u32,
    key_ops: &[&Operation],
    ops: &[Candidate],
    d: Deepest,
) -> Violation {
    let op_of = |i: usize| -> Option<&Operation> { history.ops.get(ops[i].id) };
    let describe = |i: usize| op_of(i).map_or_else(|| format!("#{}", ops[i].id), Operation::describe);
    let value = d.value.map_or_else(|| "unknown".to_string(), |v| v.to_string());
    let mut text = format!(
        "not linearizable: key {key} ({} operations): {} cannot be linearized.\nThe longest linearizable prefix has {} of {} \
         operations and leaves the register at {value}",
        key_ops.len(),
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
        key,
        op: ops[d.stuck].id,
        linearized: d.linearized.iter().map(|&i| ops[i].id).collect(),
        value: d.value,
        pending: d.pending.iter().map(|&i| ops[i].id).collect(),
        key_ops: key_ops.iter().map(|o| o.id).collect(),
        explanation: text,
    }
}

#[cfg(test)]
mod tests;
