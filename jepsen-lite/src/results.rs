//! `results.json` and `summary.txt`: the verdicts of a checked history.
//!
//! ```json
//! {"valid": false, "unknown": [], "checkers": {
//!   "linearizable": {"valid": true, "ops": 412, ...},
//!   "lost_writes": {"valid": false, "lost": [17], ...}}}
//! ```
//! `valid` is false when any checker found a violation; checkers that could
//! not decide are `"valid": "unknown"` and listed in `unknown`. A run with
//! no violation but an undecided checker is *undecided*, not valid: it exits
//! with [`EXIT_UNDECIDED`] and `summary.txt` ends with `UNDECIDED`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::checker::{CheckerResult, Validity};
use crate::faults::fault_windows;
use crate::operation::{History, secs};

/// The content of `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// No checker found a violation.
    pub valid: bool,
    /// Checkers that could not decide.
    pub unknown: Vec<String>,
    /// Each checker's report, by name.
    pub checkers: BTreeMap<String, serde_json::Value>,
}

/// Exit status: no checker found a violation and every one decided.
pub const EXIT_VALID: u8 = 0;
/// Exit status: some checker found a violation.
pub const EXIT_INVALID: u8 = 1;
/// Exit status: no violation found, but some checker could not decide. Not
/// 2 ("no verdict: bad input or a broken run"), after which nothing was
/// checked or written: here every file is written, and the remedy differs
/// (a larger search budget, a longer run), so scripts can tell them apart.
pub const EXIT_UNDECIDED: u8 = 3;

impl Results {
    pub fn new(checks: &[CheckerResult]) -> Self {
        let names = |v: Validity| -> Vec<String> {
            checks.iter().filter(|c| c.validity == v).map(|c| c.name.to_string()).collect()
        };
        Results {
            valid: names(Validity::Invalid).is_empty(),
            unknown: names(Validity::Unknown),
            checkers: checks.iter().map(|c| (c.name.to_string(), c.details.clone())).collect(),
        }
    }

    /// The overall verdict: invalid when a checker found a violation, else
    /// unknown when a checker could not decide, else valid.
    pub fn verdict(&self) -> Validity {
        if !self.valid {
            Validity::Invalid
        } else if !self.unknown.is_empty() {
            Validity::Unknown
        } else {
            Validity::Valid
        }
    }

    /// The exit status of `jepsen-lite test` and `check` for this verdict.
    pub fn exit_status(&self) -> u8 {
        match self.verdict() {
            Validity::Valid => EXIT_VALID,
            Validity::Invalid => EXIT_INVALID,
            Validity::Unknown => EXIT_UNDECIDED,
        }
    }

    /// The pretty-printed JSON, with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        s.push('\n');
        s
    }
}

/// The text of `summary.txt`: the history's figures, each checker's verdict
/// and reasons, and the overall verdict on the last line.
pub fn summary(history: &History, checks: &[CheckerResult]) -> String {
    let mut processes: Vec<u32> = history.ops.iter().map(|o| o.process).collect();
    processes.sort_unstable();
    processes.dedup();
    let mut s = format!(
        "{}, {} by {} over {}; {}\n",
        plural(history.events.len(), "event"),
        plural(history.ops.len(), "operation"),
        plural(processes.len(), "process"),
        secs(history.end_ns()),
        plural(fault_windows(history).len(), "fault window")
    );
    if checks.is_empty() {
        s.push_str("no checker applies to the operations of this history\n");
    }
    for c in checks {
        s.push_str(&format!("{}: {}\n", c.name, c.validity.label()));
        for line in c.summary.lines() {
            s.push_str(&format!("  {line}\n"));
        }
    }
    let invalid: Vec<&str> =
        checks.iter().filter(|c| c.validity == Validity::Invalid).map(|c| c.name).collect();
    let unknown: Vec<&str> =
        checks.iter().filter(|c| c.validity == Validity::Unknown).map(|c| c.name).collect();
    if !invalid.is_empty() {
        s.push_str(&format!("INVALID: {}\n", invalid.join(", ")));
    } else if !unknown.is_empty() {
        s.push_str(&format!(
            "UNDECIDED: {} (no violation found, but not every checker could decide)\n",
            unknown.join(", ")
        ));
    } else {
        s.push_str("VALID\n");
    }
    s
}

/// `1 process`, `2 processes`.
fn plural(n: usize, word: &str) -> String {
    match (n, word.ends_with('s')) {
        (1, _) => format!("1 {word}"),
        (_, true) => format!("{n} {word}es"),
        (_, false) => format!("{n} {word}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{CheckConfig, check_all};
    use crate::history::{Event, Op};
    use crate::operation::PairingError;

    #[test]
    fn results_name_the_violated_checker() -> Result<(), PairingError> {
        let h = History::from_events(vec![
            Event::invoke(0, "n1", Op::Write(1), 0),
            Event::ok(0, "n1", Op::Write(1), 10),
            Event::invoke(0, "n1", Op::Read(None), 20),
            Event::ok(0, "n1", Op::Read(Some(2)), 30),
            Event::invoke(1, "n2", Op::Add(1), 0),
            Event::ok(1, "n2", Op::Add(1), 5),
            Event::invoke(1, "n2", Op::ReadSet(None), 40),
            Event::ok(1, "n2", Op::ReadSet(Some(vec![1])), 50),
        ])?;
        let checks = check_all(&h, &CheckConfig::default());
        let r = Results::new(&checks);
        assert!(!r.valid);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("results.json is JSON");
        assert_eq!(json["checkers"]["linearizable"]["valid"], false);
        assert_eq!(json["checkers"]["lost_writes"]["valid"], true);
        let text = summary(&h, &checks);
        assert!(
            text.starts_with("8 events, 4 operations by 2 processes over 0.000s; 0 fault windows\n"),
            "{text}"
        );
        assert!(text.contains("linearizable: INVALID\n  "), "{text}");
        assert!(text.ends_with("INVALID: linearizable\n"), "{text}");
        assert_eq!((r.verdict(), r.exit_status()), (Validity::Invalid, EXIT_INVALID));
        Ok(())
    }

    #[test]
    fn an_undecided_checker_makes_the_run_undecided_not_valid() -> Result<(), PairingError> {
        let h = History::from_events(vec![
            Event::invoke(1, "n2", Op::Add(1), 0),
            Event::ok(1, "n2", Op::Add(1), 5),
        ])?;
        let checks = check_all(&h, &CheckConfig::default());
        let r = Results::new(&checks);
        assert!(r.valid);
        assert_eq!(r.unknown, vec!["lost_writes".to_string()]);
        assert_eq!((r.verdict(), r.exit_status()), (Validity::Unknown, EXIT_UNDECIDED));
        let text = summary(&h, &checks);
        assert!(
            text.ends_with(
                "\nUNDECIDED: lost_writes (no violation found, but not every checker could decide)\n"
            ),
            "{text}"
        );
        Ok(())
    }
}
