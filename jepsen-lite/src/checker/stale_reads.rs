//! Stale reads and blocking queries serve real, committed, monotonic state
//! (the register workload's `read_stale` and `read_blocking`).
//!
//! **Property.** Each `ok` stale read or blocking query of a key answers
//! `[value, index, revision]`: the register, the node's config index and
//! the route's revision (the index of the change that wrote it).
//! - **written:** the value is `initial`, or some write or cas of it on that
//!   key that did not `fail` was invoked before the read completed (a stale
//!   read may be old, never invented or from the future);
//! - **monotonic:** on one node, a read invoked after another read completed
//!   has an index at least as high, unless a nemesis event (a restart may
//!   reload an older applied state) falls between the first's invocation
//!   and the second's completion;
//! - **current at its index:** the revision is at most the index, and no
//!   read of that key saw a revision after it and at most the index (the
//!   state at index I holds the last write at or before I);
//! - **blocking:** a blocking query `?index=N&wait=W` answers an index above
//!   N, or lasted at least W. With the point above, its value is at least
//!   as new as the state at index N.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{Report, Validity};
use crate::history::{Op, Workload};
use crate::operation::{History, Operation, Outcome};

/// The checker's name in `results.json`.
pub const NAME: &str = "stale_reads";

/// At most this many violations are listed per kind.
const LISTED: usize = 20;

/// Settings: the registers' value at the start, if known (else a value
/// nobody wrote is not judged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub initial: Option<i64>,
}

/// A violation: what happened and the ops that show it.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub message: String,
    pub ops: Vec<usize>,
}

/// The checker's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct StaleReadsReport {
    pub valid: Validity,
    pub stale_reads: usize,
    pub blocking_reads: usize,
    /// Blocking queries that answered before their wait, with a newer index.
    pub woken: usize,
    pub unwritten: Vec<Violation>,
    pub went_back: Vec<Violation>,
    pub not_current: Vec<Violation>,
    pub answered_early: Vec<Violation>,
}

impl StaleReadsReport {
    fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.unwritten.iter().chain(&self.went_back).chain(&self.not_current).chain(&self.answered_early)
    }
}

impl Report for StaleReadsReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "{} stale reads, {} blocking queries ({} woken by a newer index)",
            self.stale_reads, self.blocking_reads, self.woken
        );
        for v in self.violations() {
            s.push_str(&format!("\n{}", v.message));
        }
        s
    }

    fn cited_ops(&self) -> Vec<usize> {
        self.violations().flat_map(|v| v.ops.clone()).collect()
    }
}

/// One ok stale or blocking read.
struct Seen<'a> {
    op: &'a Operation,
    value: i64,
    index: u64,
    revision: u64,
}

/// Checks the stale and blocking reads of `history`.
pub fn check(history: &History, config: &Config) -> StaleReadsReport {
    let mut seen = Vec::new();
    let mut report = StaleReadsReport {
        valid: Validity::Valid,
        stale_reads: 0,
        blocking_reads: 0,
        woken: 0,
        unwritten: Vec::new(),
        went_back: Vec::new(),
        not_current: Vec::new(),
        answered_early: Vec::new(),
    };
    for op in history.ops_of(Workload::Register) {
        let (result, blocking) = match &op.op {
            Op::ReadStale(r) => (r, None),
            Op::ReadBlocking(after, wait, r) => (r, Some((*after, *wait))),
            _ => continue,
        };
        let (Some((value, index, revision)), Outcome::Ok) = (result, op.outcome) else { continue };
        if let Some((after, wait_ms)) = blocking {
            report.blocking_reads += 1;
            let lasted = op.complete_ns.unwrap_or(u64::MAX).saturating_sub(op.invoke_ns);
            if *index > after {
                report.woken += 1;
            } else if lasted < wait_ms.saturating_mul(1_000_000) {
                report.answered_early.push(Violation {
                    message: format!(
                        "#{} blocking query for an index above {after} answered index {index} after {} ms, before its {wait_ms} ms wait",
                        op.id,
                        lasted / 1_000_000
                    ),
                    ops: vec![op.id],
                });
            }
        } else {
            report.stale_reads += 1;
        }
        seen.push(Seen { op, value: *value, index: *index, revision: *revision });
    }
    written(history, config, &seen, &mut report);
    monotonic(history, &seen, &mut report);
    current(&seen, &mut report);
    let bad = report.violations().next().is_some();
    for list in
        [&mut report.unwritten, &mut report.went_back, &mut report.not_current, &mut report.answered_early]
    {
        list.truncate(LISTED);
    }
    if bad {
        report.valid = Validity::Invalid;
    }
    report
}

/// The value was written, by a write invoked before the read completed.
fn written(history: &History, config: &Config, seen: &[Seen], report: &mut StaleReadsReport) {
    // (key, value) -> the earliest invocation of a write of it that did not fail.
    let mut first_write: HashMap<(u32, i64), u64> = HashMap::new();
    let mut attempted: BTreeSet<(u32, i64)> = BTreeSet::new();
    for op in history.ops_of(Workload::Register) {
        let (Op::Write(v) | Op::Cas(_, v)) = op.op else { continue };
        attempted.insert((op.key, v));
        if op.outcome != Outcome::Fail {
            let t = first_write.entry((op.key, v)).or_insert(op.invoke_ns);
            *t = (*t).min(op.invoke_ns);
        }
    }
    for s in seen {
        if config.initial == Some(s.value) {
            continue;
        }
        let key = s.op.key;
        let done = s.op.complete_ns.unwrap_or(u64::MAX);
        let problem = match first_write.get(&(key, s.value)) {
            Some(&t) if t < done => continue,
            Some(_) => "whose first write was invoked after the read completed",
            None if attempted.contains(&(key, s.value)) => "whose every write failed",
            None if config.initial.is_none() => continue,
            None => "that was never written",
        };
        report.unwritten.push(Violation {
            message: format!("#{} on key {key} read value {} {problem}", s.op.id, s.value),
            ops: vec![s.op.id],
        });
    }
}

/// Per node, the index never goes back between nemesis events.
fn monotonic(history: &History, seen: &[Seen], report: &mut StaleReadsReport) {
    let mut events: Vec<u64> = history
        .ops_of(Workload::Nemesis)
        .flat_map(|o| [Some(o.invoke_ns), o.complete_ns])
        .flatten()
        .collect();
    events.sort_unstable();
    let epoch = |t: u64| events.partition_point(|&e| e <= t);
    // (node, epoch of invocation) -> reads that also completed in it.
    let mut groups: BTreeMap<(&str, usize), Vec<&Seen>> = BTreeMap::new();
    for s in seen {
        let (Some(done), e) = (s.op.complete_ns, epoch(s.op.invoke_ns)) else { continue };
        if epoch(done) == e {
            groups.entry((s.op.node.as_str(), e)).or_default().push(s);
        }
    }
    for ((node, _), reads) in groups {
        let mut by_done = reads.clone();
        by_done.sort_by_key(|s| s.op.complete_ns);
        let mut by_invoke = reads;
        by_invoke.sort_by_key(|s| s.op.invoke_ns);
        let mut highest: Option<&Seen> = None;
        let mut next = 0;
        for r in by_invoke {
            while next < by_done.len() && by_done[next].op.complete_ns < Some(r.op.invoke_ns) {
                if highest.is_none_or(|h| by_done[next].index > h.index) {
                    highest = Some(by_done[next]);
                }
                next += 1;
            }
            if let Some(h) = highest
                && r.index < h.index
            {
                report.went_back.push(Violation {
                    message: format!(
                        "#{} on {node} answered index {} after #{} had answered index {}",
                        r.op.id, r.index, h.op.id, h.index
                    ),
                    ops: vec![h.op.id, r.op.id],
                });
            }
        }
    }
}

/// The revision read is the key's last change at or before the index read.
fn current(seen: &[Seen], report: &mut StaleReadsReport) {
    // key -> revision -> a read that saw it
    let mut revisions: BTreeMap<u32, BTreeMap<u64, usize>> = BTreeMap::new();
    for s in seen {
        revisions.entry(s.op.key).or_default().entry(s.revision).or_insert(s.op.id);
    }
    for s in seen {
        let key = s.op.key;
        if s.revision > s.index {
            report.not_current.push(Violation {
                message: format!(
                    "#{} on key {key} read revision {} above its index {}",
                    s.op.id, s.revision, s.index
                ),
                ops: vec![s.op.id],
            });
            continue;
        }
        let newer = revisions
            .get(&key)
            .filter(|_| s.revision < s.index)
            .and_then(|r| r.range(s.revision + 1..=s.index).next());
        if let Some((r, &other)) = newer {
            report.not_current.push(Violation {
                message: format!(
                    "#{} on key {key} read value {} at revision {} and index {}, but #{other} saw the key changed at revision {r}",
                    s.op.id, s.value, s.revision, s.index
                ),
                ops: vec![s.op.id, other],
            });
        }
    }
}

#[cfg(test)]
#[path = "stale_reads_tests.rs"]
mod tests;
