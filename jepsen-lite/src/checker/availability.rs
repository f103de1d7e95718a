//! Traffic availability: new connections through the nodes' route ports.
//!
//! **Property.** Each `connect` is placed in a phase by its invocation time:
//! - `down`: a fault in effect took the connection's node down (killed,
//!   paused, powered off: [`crate::fault_shape`]), so it fails by design;
//! - `during`: some fault is in effect ([`crate::faults`]);
//! - `settling`: no fault is in effect, but one was healed less than
//!   [`Config::settle_ms`] before;
//! - `healthy`: neither (before the first fault, between faults after
//!   settling, and after the last heal).
//!
//! An `ok` connect succeeded (the echoed bytes were verified); `fail` and
//! `info` (a timeout) failed. The success rate of `during` must be at least
//! [`Config::min_success_during`] and that of `healthy` at least
//! [`Config::min_success_healthy`]. `down` and `settling` are reported, not
//! judged. A
//! phase without connections is not judged; when neither is, the verdict is
//! unknown.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Report, Validity};
use crate::fault_shape::FaultShape;
use crate::faults::fault_windows;
use crate::history::Workload;
use crate::operation::{History, Outcome};

/// The checker's name in `results.json`.
pub const NAME: &str = "availability";

/// Thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Minimum success rate (0 to 1) of connections while a fault is in effect.
    pub min_success_during: f64,
    /// Minimum success rate of connections with no fault in effect.
    pub min_success_healthy: f64,
    /// How long after a heal connections are `settling` rather than `healthy`.
    pub settle_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { min_success_during: 0.5, min_success_healthy: 0.99, settle_ms: 2_000 }
    }
}

/// The connections of one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub attempts: usize,
    pub ok: usize,
    /// `ok / attempts`; null without attempts.
    pub success_rate: Option<f64>,
    /// The threshold it was held to (null: not judged).
    pub threshold: Option<f64>,
    /// Failures by reason (the completion's `error`, or `timeout` with none).
    pub failures: BTreeMap<String, usize>,
}

impl Phase {
    fn record(&mut self, outcome: Outcome, error: Option<&str>) {
        self.attempts += 1;
        if outcome == Outcome::Ok {
            self.ok += 1;
        } else {
            let default = if outcome == Outcome::Info { "indeterminate" } else { "failed" };
            *self.failures.entry(error.unwrap_or(default).to_string()).or_default() += 1;
        }
    }

    fn finish(&mut self, threshold: Option<f64>) -> Validity {
        if self.attempts == 0 {
            return Validity::Unknown;
        }
        let rate = self.ok as f64 / self.attempts as f64;
        self.success_rate = Some(rate);
        self.threshold = threshold;
        match threshold {
            Some(min) if rate < min => Validity::Invalid,
            Some(_) => Validity::Valid,
            None => Validity::Unknown,
        }
    }

    fn line(&self, name: &str) -> String {
        let Some(rate) = self.success_rate else { return format!("{name}: no connections") };
        let judged = self.threshold.map_or_else(|| " (not judged)".to_string(), |t| format!(" (min {t:.3})"));
        let mut s = format!("{name}: {}/{} ok = {rate:.3}{judged}", self.ok, self.attempts);
        let mut reasons: Vec<(&String, &usize)> = self.failures.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = reasons.iter().take(3).map(|(r, n)| format!("{n}× {r}")).collect();
        if !top.is_empty() {
            s.push_str(&format!("; failures: {}", top.join(", ")));
        }
        s
    }
}

/// The checker's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct AvailabilityReport {
    pub valid: Validity,
    /// Through a node a fault took down.
    pub down: Phase,
    pub during: Phase,
    pub settling: Phase,
    pub healthy: Phase,
}

impl Report for AvailabilityReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        [
            self.down.line("through nodes down"),
            self.during.line("during faults"),
            self.settling.line("settling"),
            self.healthy.line("healthy"),
        ]
        .join("\n")
    }
}

/// Checks the traffic workload of `history`.
pub fn check(history: &History, config: &Config) -> AvailabilityReport {
    let windows = fault_windows(history);
    let down_nodes: Vec<FaultShape> = windows.iter().map(|w| FaultShape::parse(&w.description)).collect();
    let settle = config.settle_ms.saturating_mul(1_000_000);
    let (mut during, mut settling, mut healthy) = (Phase::default(), Phase::default(), Phase::default());
    let mut down = Phase::default();
    for op in history.ops_of(Workload::Traffic) {
        let t = op.invoke_ns;
        let node = op.node.strip_prefix('n').and_then(|n| n.parse::<usize>().ok());
        let is_down = windows
            .iter()
            .zip(&down_nodes)
            .any(|(w, shape)| w.contains(t) && node.is_some_and(|n| shape.down.contains(&n)));
        let phase = if is_down {
            &mut down
        } else if windows.iter().any(|w| w.contains(t)) {
            &mut during
        } else if windows.iter().any(|w| w.end_ns.is_some_and(|end| t > end && t - end < settle)) {
            &mut settling
        } else {
            &mut healthy
        };
        phase.record(op.outcome, op.error.as_deref());
    }
    down.finish(None);
    let verdicts = [
        during.finish(Some(config.min_success_during)),
        settling.finish(None),
        healthy.finish(Some(config.min_success_healthy)),
    ];
    let valid = if verdicts.contains(&Validity::Invalid) {
        Validity::Invalid
    } else if verdicts.contains(&Validity::Valid) {
        Validity::Valid
    } else {
        Validity::Unknown
    };
    AvailabilityReport { valid, down, during, settling, healthy }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, Op};
    use crate::operation::PairingError;

    const MS: u64 = 1_000_000;

    /// n1 cut off from 100 to 200 ms; connects through n1 `(time ms, ok)`
    /// one ms long.
    fn history(connects: &[(u64, bool)]) -> Result<History, PairingError> {
        history_with("partition-random-node n1 n1x[n2] n2x[n1]", connects)
    }

    /// Fault `start` from 100 to 200 ms, and the connects through n1.
    fn history_with(start: &str, connects: &[(u64, bool)]) -> Result<History, PairingError> {
        let mut events = vec![
            Event::invoke(99, "nemesis", Op::Start(start.into()), 100 * MS),
            Event::ok(99, "nemesis", Op::Start(start.into()), 101 * MS),
            Event::invoke(99, "nemesis", Op::Stop("heal".into()), 199 * MS),
            Event::ok(99, "nemesis", Op::Stop("heal".into()), 200 * MS),
        ];
        for &(ms, ok) in connects {
            events.push(Event::invoke(0, "n1", Op::Connect(None), ms * MS));
            events.push(if ok {
                Event::ok(0, "n1", Op::Connect(Some(1024)), ms * MS + MS)
            } else {
                Event::fail(0, "n1", Op::Connect(None), ms * MS + MS, "connection refused")
            });
        }
        History::from_events(events)
    }

    fn config() -> Config {
        Config { min_success_during: 0.5, min_success_healthy: 0.9, settle_ms: 50 }
    }

    #[test]
    fn connections_are_split_by_phase() -> Result<(), PairingError> {
        // before: 10 ok; during: 3 ok of 4; settling: 1 failure; after: 10 ok
        let mut c: Vec<(u64, bool)> = (0..10).map(|i| (i * 5, true)).collect();
        c.extend([(110, true), (120, false), (130, true), (150, true), (210, false)]);
        c.extend((0..10).map(|i| (300 + i * 5, true)));
        let r = check(&history(&c)?, &config());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
        assert_eq!((r.during.attempts, r.during.ok), (4, 3));
        assert_eq!((r.settling.attempts, r.settling.ok), (1, 0));
        assert_eq!((r.healthy.attempts, r.healthy.ok), (20, 20));
        assert_eq!(r.during.failures.get("connection refused"), Some(&1));
        assert!(r.summary().contains("during faults: 3/4 ok = 0.750 (min 0.500)"), "{}", r.summary());
        Ok(())
    }

    #[test]
    fn too_many_failures_during_faults_are_invalid() -> Result<(), PairingError> {
        let c = [(110, false), (120, false), (130, true), (300, true)];
        let r = check(&history(&c)?, &config());
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
        Ok(())
    }

    #[test]
    fn failures_after_heal_are_invalid() -> Result<(), PairingError> {
        let mut c: Vec<(u64, bool)> = (0..8).map(|i| (300 + i * 5, true)).collect();
        c.extend([(400, false), (405, false)]);
        let r = check(&history(&c)?, &config());
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
        assert_eq!(r.healthy.success_rate, Some(0.8));
        Ok(())
    }

    /// The fault of `history` kills n1: its failures are its own phase,
    /// reported but not judged; n2's still count.
    #[test]
    fn connections_through_a_node_down_are_not_judged() -> Result<(), PairingError> {
        let c = [(110, false), (120, false), (130, false), (300, true)];
        let r = check(&history_with("kill n1", &c)?, &config());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
        assert_eq!((r.down.attempts, r.during.attempts), (3, 0));
        assert!(r.summary().contains("through nodes down: 0/3 ok = 0.000 (not judged)"), "{}", r.summary());
        Ok(())
    }

    #[test]
    fn only_settling_connections_are_unknown() -> Result<(), PairingError> {
        let r = check(&history(&[(210, false)])?, &config());
        assert_eq!(r.valid, Validity::Unknown, "{}", r.summary());
        Ok(())
    }
}
