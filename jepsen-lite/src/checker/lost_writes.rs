//! No lost acknowledged writes (the set workload).
//!
//! **Property.** The final reads are the `ok` `read_set` operations invoked
//! after every `add` that completed had completed (adds still open at the end
//! are indeterminate and do not delay them). Every final read:
//! - holds the element of every `ok` add (else that acknowledged write was lost);
//! - holds no element whose adds all failed (a `fail` add definitely did not
//!   happen, so seeing it means a rejected write was applied);
//! - holds no element no add ever attempted.
//!
//! Elements of indeterminate (`info`) adds may or may not be present; the
//! report counts those present as `recovered`. Without a final read the
//! verdict is unknown.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Report, Validity};
use crate::history::{Op, Workload};
use crate::operation::{History, Outcome};

/// The checker's name in `results.json`.
pub const NAME: &str = "lost_writes";

/// At most this many elements are listed per kind of violation.
const LISTED: usize = 100;

/// The checker's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct LostWritesReport {
    pub valid: Validity,
    /// Distinct elements added, acknowledged (some add ok), failed (every add failed) and indeterminate.
    pub attempted: usize,
    pub acknowledged: usize,
    pub failed: usize,
    pub indeterminate: usize,
    /// Final reads (op ids).
    pub final_reads: Vec<usize>,
    /// Indeterminate elements present in a final read.
    pub recovered: usize,
    /// Acknowledged elements missing from a final read (up to 100).
    pub lost: Vec<u64>,
    pub lost_count: usize,
    /// Failed elements present in a final read (up to 100).
    pub failed_present: Vec<u64>,
    pub failed_present_count: usize,
    /// Elements never added yet present (up to 100).
    pub unexpected: Vec<u64>,
    pub unexpected_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// The adds of the first lost elements and the reads missing them, as evidence.
    #[serde(skip)]
    cited: Vec<usize>,
}

impl Report for LostWritesReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "{} elements added: {} acknowledged, {} failed, {} indeterminate ({} recovered); {} final reads",
            self.attempted,
            self.acknowledged,
            self.failed,
            self.indeterminate,
            self.recovered,
            self.final_reads.len()
        );
        let mut list = |what: &str, count: usize, elements: &[u64]| {
            if count > 0 {
                let shown: Vec<String> = elements.iter().take(20).map(u64::to_string).collect();
                let more = if count > shown.len() { ", …" } else { "" };
                s.push_str(&format!("\n{count} {what}: {}{more}", shown.join(", ")));
            }
        };
        list("acknowledged adds lost", self.lost_count, &self.lost);
        list("failed adds present", self.failed_present_count, &self.failed_present);
        list("elements present that were never added", self.unexpected_count, &self.unexpected);
        if let Some(reason) = &self.unknown_reason {
            s.push_str(&format!("\n{reason}"));
        }
        s
    }

    fn cited_ops(&self) -> Vec<usize> {
        self.cited.clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Acknowledged,
    Failed,
    Indeterminate,
}

/// Checks the set workload of `history`.
pub fn check(history: &History) -> LostWritesReport {
    // element -> (status, the op id of an add of it)
    let mut elements: BTreeMap<u64, (Status, usize)> = BTreeMap::new();
    let mut last_add_done = 0;
    for op in history.ops_of(Workload::Set) {
        let Op::Add(e) = op.op else { continue };
        let status = match op.outcome {
            Outcome::Ok => Status::Acknowledged,
            Outcome::Fail => Status::Failed,
            Outcome::Info => Status::Indeterminate,
        };
        if let Some(t) = op.complete_ns {
            last_add_done = last_add_done.max(t);
        }
        let entry = elements.entry(e).or_insert((status, op.id));
        // Acknowledged beats indeterminate beats failed.
        if status == Status::Acknowledged || (status == Status::Indeterminate && entry.0 == Status::Failed) {
            *entry = (status, op.id);
        }
    }
    let count = |s: Status| elements.values().filter(|(st, _)| *st == s).count();
    let mut report = LostWritesReport {
        valid: Validity::Valid,
        attempted: elements.len(),
        acknowledged: count(Status::Acknowledged),
        failed: count(Status::Failed),
        indeterminate: count(Status::Indeterminate),
        final_reads: Vec::new(),
        recovered: 0,
        lost: Vec::new(),
        lost_count: 0,
        failed_present: Vec::new(),
        failed_present_count: 0,
        unexpected: Vec::new(),
        unexpected_count: 0,
        unknown_reason: None,
        cited: Vec::new(),
    };
    let (mut lost, mut failed_present, mut unexpected, mut recovered) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for op in history.ops_of(Workload::Set) {
        let (Op::ReadSet(Some(read)), Outcome::Ok) = (&op.op, op.outcome) else { continue };
        if op.invoke_ns < last_add_done {
            continue;
        }
        report.final_reads.push(op.id);
        let read: BTreeSet<u64> = read.iter().copied().collect();
        let mut bad = false;
        for (e, (status, add)) in &elements {
            let present = read.contains(e);
            match (status, present) {
                (Status::Acknowledged, false) => {
                    bad = true;
                    if lost.insert(*e) && lost.len() <= 3 {
                        report.cited.push(*add);
                    }
                }
                (Status::Failed, true) => {
                    bad = true;
                    if failed_present.insert(*e) && failed_present.len() <= 3 {
                        report.cited.push(*add);
                    }
                }
                (Status::Indeterminate, true) => {
                    recovered.insert(*e);
                }
                _ => {}
            }
        }
        for e in read.iter().filter(|e| !elements.contains_key(e)) {
            bad = true;
            unexpected.insert(*e);
        }
        if bad {
            report.cited.push(op.id);
        }
    }
    report.recovered = recovered.len();
    report.lost_count = lost.len();
    report.failed_present_count = failed_present.len();
    report.unexpected_count = unexpected.len();
    report.lost = lost.into_iter().take(LISTED).collect();
    report.failed_present = failed_present.into_iter().take(LISTED).collect();
    report.unexpected = unexpected.into_iter().take(LISTED).collect();
    if report.lost_count + report.failed_present_count + report.unexpected_count > 0 {
        report.valid = Validity::Invalid;
    } else if report.final_reads.is_empty() {
        report.valid = Validity::Unknown;
        report.unknown_reason =
            Some("no final read: no ok read_set was invoked after the last add completed".to_string());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;
    use crate::operation::PairingError;

    /// Adds 1..=3 (ok), 4 (fail), 5 (info), then a final read of `read`.
    fn run(read: &[u64]) -> Result<LostWritesReport, PairingError> {
        let mut events = Vec::new();
        for (e, t) in [(1, 0), (2, 10), (3, 20), (4, 30), (5, 40)] {
            events.push(Event::invoke(0, "n1", Op::Add(e), t));
            events.push(match e {
                4 => Event::fail(0, "n1", Op::Add(e), t + 5, "409"),
                5 => Event::info(0, "n1", Op::Add(e), t + 5, "timeout"),
                _ => Event::ok(0, "n1", Op::Add(e), t + 5),
            });
        }
        // A read during the adds is not final: it may miss anything.
        events.push(Event::invoke(1, "n2", Op::ReadSet(None), 12));
        events.push(Event::ok(1, "n2", Op::ReadSet(Some(vec![])), 13));
        events.push(Event::invoke(1, "n2", Op::ReadSet(None), 100));
        events.push(Event::ok(1, "n2", Op::ReadSet(Some(read.to_vec())), 110));
        Ok(check(&History::from_events(events)?))
    }

    #[test]
    fn a_final_read_with_every_acknowledged_add_is_valid() -> Result<(), PairingError> {
        let r = run(&[1, 2, 3])?;
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
        assert_eq!((r.attempted, r.acknowledged, r.failed, r.indeterminate), (5, 3, 1, 1));
        assert_eq!(r.final_reads, vec![6]);
        assert_eq!(r.recovered, 0);
        let r = run(&[1, 2, 3, 5])?;
        assert_eq!(r.valid, Validity::Valid, "an indeterminate add may be present: {}", r.summary());
        assert_eq!(r.recovered, 1);
        Ok(())
    }

    #[test]
    fn a_lost_acknowledged_add_is_invalid() -> Result<(), PairingError> {
        let r = run(&[1, 3, 5])?;
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.lost, vec![2]);
        assert!(r.summary().contains("1 acknowledged adds lost: 2"), "{}", r.summary());
        assert_eq!(r.cited_ops(), vec![1, 6], "the add and the read");
        Ok(())
    }

    #[test]
    fn a_failed_add_that_appears_is_invalid() -> Result<(), PairingError> {
        let r = run(&[1, 2, 3, 4])?;
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.failed_present, vec![4]);
        Ok(())
    }

    #[test]
    fn an_element_never_added_is_invalid() -> Result<(), PairingError> {
        let r = run(&[1, 2, 3, 99])?;
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.unexpected, vec![99]);
        Ok(())
    }

    #[test]
    fn without_a_final_read_the_verdict_is_unknown() -> Result<(), PairingError> {
        let h = History::from_events(vec![
            Event::invoke(0, "n1", Op::ReadSet(None), 0),
            Event::invoke(1, "n1", Op::Add(1), 1),
            Event::ok(0, "n1", Op::ReadSet(Some(vec![])), 2),
            Event::ok(1, "n1", Op::Add(1), 3),
        ])?;
        let r = check(&h);
        assert_eq!(r.valid, Validity::Unknown, "{}", r.summary());
        Ok(())
    }
}
