//! Checkers: pure functions from a [`History`] to a verdict, one property per
//! file. [`check_all`] runs those whose operations the history holds.
//!
//! | checker | needs | property |
//! |---|---|---|
//! | [`linearizable`] | `read`/`write`/`cas` | each register key's history is linearizable |
//! | [`bounded_indeterminacy`] | `write`/`cas` with `deadline_ns` | an indeterminate write takes effect before its deadline or never |
//! | [`idempotency`] | `read`/`write`/`cas`, request ids | a request id applies at most once, and its retries answer as it did |
//! | [`stale_reads`] | `read_stale`/`read_blocking` | stale reads and blocking queries serve written, current, monotonic state |
//! | [`lost_writes`] | `add`/`read_set` | a final read holds every acknowledged add, and no failed one |
//! | [`leaders`] | `status` | at most one leader per term |
//! | [`convergence`] | `status` | after the last heal, every node reaches the same applied index and table |
//! | [`availability`] | `connect` | new connections succeed during faults and after heal, above thresholds |
//! | [`static_stability`] | `connect` | during faults, connections through every live node succeed (≥ 99.9 %) |
//! | [`catch_up`] | `status` | what was applied during a fault reaches every node within a bound of its heal |

pub mod availability;
pub mod bounded_indeterminacy;
pub mod catch_up;
pub mod convergence;
pub mod idempotency;
pub mod leaders;
pub mod linearizable;
pub mod lost_writes;
pub mod stale_reads;
pub mod static_stability;

use serde::{Deserialize, Serialize, Serializer};

use crate::history::Workload;
use crate::operation::History;

/// A bound after a heal and the nodes it applies to, the settings of
/// [`convergence`] and [`catch_up`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealBound {
    /// Milliseconds after the heal.
    pub bound_ms: u64,
    /// The nodes judged; empty: every node sampled during the run.
    pub nodes: Vec<String>,
}

impl Default for HealBound {
    fn default() -> Self {
        HealBound { bound_ms: 10_000, nodes: Vec::new() }
    }
}

/// A checker's verdict: serialized as `true`, `false` or `"unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker could not decide (a search budget ran out, nothing to judge).
    Unknown,
}

impl Validity {
    /// `VALID`, `INVALID` or `UNKNOWN`.
    pub fn label(self) -> &'static str {
        match self {
            Validity::Valid => "VALID",
            Validity::Invalid => "INVALID",
            Validity::Unknown => "UNKNOWN",
        }
    }
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => s.serialize_bool(true),
            Validity::Invalid => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

/// What every checker's report offers besides its JSON details.
pub trait Report: Serialize {
    fn validity(&self) -> Validity;
    /// A few lines for `summary.txt`: the verdict's reason and the figures.
    fn summary(&self) -> String;
    /// Operations the report cites as evidence (ids into [`History::ops`]).
    fn cited_ops(&self) -> Vec<usize> {
        Vec::new()
    }
}

/// One checker's result, as `check_all` returns it.
#[derive(Debug, Clone)]
pub struct CheckerResult {
    pub name: &'static str,
    pub validity: Validity,
    pub summary: String,
    /// The report as JSON, starting with `"valid"`.
    pub details: serde_json::Value,
    pub cited_ops: Vec<usize>,
}

impl CheckerResult {
    /// Wraps a checker's report.
    pub fn new(name: &'static str, report: &impl Report) -> Self {
        let details = serde_json::to_value(report)
            .unwrap_or_else(|e| serde_json::json!({"valid": "unknown", "error": e.to_string()}));
        CheckerResult {
            name,
            validity: report.validity(),
            summary: report.summary(),
            details,
            cited_ops: report.cited_ops(),
        }
    }
}

/// Every checker's settings; the run directory's `checker.json` holds them,
/// any field may be left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckConfig {
    pub linearizable: linearizable::Config,
    pub stale_reads: stale_reads::Config,
    pub leaders: leaders::Config,
    pub convergence: convergence::Config,
    pub availability: availability::Config,
    pub static_stability: static_stability::Config,
    pub catch_up: catch_up::Config,
}

/// Runs every checker that applies to the operations in `history`, in a fixed order.
pub fn check_all(history: &History, config: &CheckConfig) -> Vec<CheckerResult> {
    let mut results = Vec::new();
    if history.has(Workload::Register) {
        // The attempts of one request id are one write (crate::retries).
        let report = linearizable::check(&crate::retries::merge(history), &config.linearizable);
        results.push(CheckerResult::new(linearizable::NAME, &report));
        results.push(CheckerResult::new(idempotency::NAME, &idempotency::check(history)));
        let report = stale_reads::check(history, &config.stale_reads);
        results.push(CheckerResult::new(stale_reads::NAME, &report));
    }
    if bounded_indeterminacy::applies(history) {
        let report = bounded_indeterminacy::check(history);
        results.push(CheckerResult::new(bounded_indeterminacy::NAME, &report));
    }
    if history.has(Workload::Set) {
        results.push(CheckerResult::new(lost_writes::NAME, &lost_writes::check(history)));
    }
    if history.has(Workload::Status) {
        results.push(CheckerResult::new(leaders::NAME, &leaders::check(history, &config.leaders)));
        let report = convergence::check(history, &config.convergence);
        results.push(CheckerResult::new(convergence::NAME, &report));
        results.push(CheckerResult::new(catch_up::NAME, &catch_up::check(history, &config.catch_up)));
    }
    if history.has(Workload::Traffic) {
        let report = availability::check(history, &config.availability);
        results.push(CheckerResult::new(availability::NAME, &report));
        let report = static_stability::check(history, &config.static_stability);
        results.push(CheckerResult::new(static_stability::NAME, &report));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_acknowledged_after_a_later_write_is_one_write_for_linearizability() {
        use crate::history::{Event, Op};
        // Request a (write 5) times out, 7 is written, a's retry answers
        // its original success: 5 took effect before 7, once.
        let write = |p, v, id: &str, t| Event::invoke(p, "n1", Op::Write(v), t).with_request_id(id);
        let h = History::from_events(vec![
            write(0, 5, "a", 0),
            Event::info(0, "n1", Op::Write(5), 10, "timeout"),
            write(1, 7, "b", 20),
            Event::ok(1, "n1", Op::Write(7), 30),
            write(2, 5, "a", 40),
            Event::ok(2, "n1", Op::Write(5), 50),
            Event::invoke(3, "n1", Op::Read(None), 60),
            Event::ok(3, "n1", Op::Read(Some(7)), 70),
        ])
        .expect("pairs");
        let results = check_all(&h, &CheckConfig::default());
        let lin = results.iter().find(|r| r.name == linearizable::NAME).expect("checked");
        assert_eq!(lin.validity, Validity::Valid, "{}", lin.summary);
    }

    #[test]
    fn validity_serializes_as_bool_or_unknown() -> serde_json::Result<()> {
        assert_eq!(serde_json::to_string(&Validity::Valid)?, "true");
        assert_eq!(serde_json::to_string(&Validity::Invalid)?, "false");
        assert_eq!(serde_json::to_string(&Validity::Unknown)?, "\"unknown\"");
        Ok(())
    }

    #[test]
    fn the_config_file_may_be_partial_but_not_misspelled() {
        let c: CheckConfig =
            serde_json::from_str(r#"{"linearizable": {"initial": 3}}"#).expect("a partial config parses");
        assert_eq!(c.linearizable.initial, Some(3));
        assert_eq!(c.availability, availability::Config::default());
        let e = serde_json::from_str::<CheckConfig>(r#"{"linearisable": {}}"#).expect_err("unknown field");
        assert!(e.to_string().contains("linearisable"), "{e}");
    }
}
