//! Static stability: a node cut off from the quorum keeps forwarding.
//!
//! **Property.** DESIGN promises that traffic is AP: a node forwards with the
//! routing table it last applied whatever Raft can or cannot do. So every
//! new TCP connection (`connect`) invoked while a fault is in effect, through
//! a node that is up, succeeds at a rate of at least [`Config::min_success`]
//! (the traffic route's backends include the node's own, which it always
//! reaches; the data plane fails over from the ones it cannot reach).
//!
//! Which node a fault affects is read from the `start` descriptions
//! ([`crate::fault_shape`]):
//! - a connection through a node that a window takes down (killed, paused,
//!   powered off) is excluded when it was open at any time from the
//!   window's start until [`Config::restart_grace_ms`] after its end: its
//!   failures are by design (a kill breaks the connections open through
//!   the node), and a restarted node needs a moment to listen again;
//! - a connection open across the start or the end of a fault window is
//!   not judged: a fault that starts may cut a path already open, and at
//!   a window's end a joined node leaves or is killed;
//! - a connection invoked under a fault the parser does not know, or under
//!   random packet loss (no link is certain), is not judged;
//! - every other connection invoked in a window is judged, whether its node
//!   is on the minority side, the majority side, or isolated.
//!
//! Connections outside every window are the availability checker's.
//! Without a judged connection there is nothing to hold against the run:
//! the verdict is valid, and the summary says nothing was judged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Report, Validity};
use crate::fault_shape::FaultShape;
use crate::faults::{FaultWindow, fault_windows};
use crate::history::Workload;
use crate::operation::{History, Outcome};

/// The checker's name in `results.json`.
pub const NAME: &str = "static_stability";

/// Most failed connections the report cites.
const MAX_CITED: usize = 10;

/// The threshold and the grace after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Minimum success rate (0 to 1) of judged connections.
    pub min_success: f64,
    /// How long after its window a node that was down is still excluded.
    pub restart_grace_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { min_success: 0.999, restart_grace_ms: 5_000 }
    }
}

/// Judged connections through one node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeFigures {
    pub attempts: usize,
    pub ok: usize,
}

/// The checker's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct StaticStabilityReport {
    pub valid: Validity,
    pub min_success: f64,
    /// Connections judged, and how many succeeded.
    pub attempts: usize,
    pub ok: usize,
    pub success_rate: Option<f64>,
    /// Judged connections by node.
    pub by_node: BTreeMap<String, NodeFigures>,
    /// Connections in a window through a node that was down (or restarting).
    pub excluded_down: usize,
    /// Connections in a window with random loss or an unknown fault, or
    /// open across a window's start or end.
    pub not_judged: usize,
    /// Failures by reason.
    pub failures: BTreeMap<String, usize>,
    /// The first failed judged connections (ids into the history's ops).
    pub cited: Vec<usize>,
}

impl Report for StaticStabilityReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let Some(rate) = self.success_rate else {
            return format!(
                "nothing judged: no connection through a live node during a fault ({} through nodes down, {} not judged)",
                self.excluded_down, self.not_judged
            );
        };
        let mut s = format!(
            "during faults, through live nodes: {}/{} ok = {rate:.4} (min {}); {} through nodes down, {} not judged",
            self.ok, self.attempts, self.min_success, self.excluded_down, self.not_judged
        );
        let mut reasons: Vec<(&String, &usize)> = self.failures.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = reasons.iter().take(3).map(|(r, n)| format!("{n}× {r}")).collect();
        if !top.is_empty() {
            s.push_str(&format!("\n  failures: {}", top.join(", ")));
        }
        s
    }

    fn cited_ops(&self) -> Vec<usize> {
        self.cited.clone()
    }
}

/// `n3` → 3.
pub(crate) fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix('n')?.parse().ok()
}

/// Checks the connections made during faults.
pub fn check(history: &History, config: &Config) -> StaticStabilityReport {
    let windows: Vec<(FaultWindow, FaultShape)> =
        fault_windows(history).into_iter().map(|w| (w.clone(), FaultShape::parse(&w.description))).collect();
    let grace = config.restart_grace_ms.saturating_mul(1_000_000);
    let mut r = StaticStabilityReport {
        valid: Validity::Valid,
        min_success: config.min_success,
        attempts: 0,
        ok: 0,
        success_rate: None,
        by_node: BTreeMap::new(),
        excluded_down: 0,
        not_judged: 0,
        failures: BTreeMap::new(),
        cited: Vec::new(),
    };
    for op in history.ops_of(Workload::Traffic) {
        let t = op.invoke_ns;
        let open: Vec<&FaultShape> = windows.iter().filter(|(w, _)| w.contains(t)).map(|(_, s)| s).collect();
        if open.is_empty() {
            continue;
        }
        let node = node_index(&op.node);
        let done = op.complete_ns.unwrap_or(u64::MAX);
        let down = windows.iter().any(|(w, s)| {
            node.is_some_and(|n| s.down.contains(&n))
                && done >= w.start_ns
                && w.end_ns.is_none_or(|end| t <= end.saturating_add(grace))
        });
        if down {
            r.excluded_down += 1;
            continue;
        }
        let across = |b: u64| t < b && done >= b;
        let straddles = windows.iter().any(|(w, _)| across(w.start_ns) || w.end_ns.is_some_and(across));
        if node.is_none() || straddles || open.iter().any(|s| !s.known || s.lossy) {
            r.not_judged += 1;
            continue;
        }
        r.attempts += 1;
        let figures = r.by_node.entry(op.node.clone()).or_default();
        figures.attempts += 1;
        if op.outcome == Outcome::Ok {
            r.ok += 1;
            figures.ok += 1;
        } else {
            *r.failures.entry(op.error.clone().unwrap_or_else(|| "indeterminate".into())).or_default() += 1;
            if r.cited.len() < MAX_CITED {
                r.cited.push(op.id);
            }
        }
    }
    if r.attempts > 0 {
        let rate = r.ok as f64 / r.attempts as f64;
        r.success_rate = Some(rate);
        r.valid = if rate < config.min_success { Validity::Invalid } else { Validity::Valid };
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, Op};
    use crate::operation::PairingError;

    const MS: u64 = 1_000_000;

    /// A fault `start` at 100 ms healed at 200 ms, then connects
    /// `(node, time ms, ok)` 1 ms long.
    fn history(start: &str, connects: &[(&str, u64, bool)]) -> Result<History, PairingError> {
        let mut events = vec![
            Event::invoke(99, "nemesis", Op::Start(start.into()), 100 * MS),
            Event::ok(99, "nemesis", Op::Start(start.into()), 101 * MS),
            Event::invoke(99, "nemesis", Op::Stop(start.into()), 199 * MS),
            Event::ok(99, "nemesis", Op::Stop(start.into()), 200 * MS),
        ];
        for (p, &(node, ms, ok)) in connects.iter().enumerate() {
            let p = p as u32;
            events.push(Event::invoke(p, node, Op::Connect(None), ms * MS));
            events.push(if ok {
                Event::ok(p, node, Op::Connect(Some(33)), ms * MS + MS)
            } else {
                Event::fail(p, node, Op::Connect(None), ms * MS + MS, "closed before the greeting")
            });
        }
        History::from_events(events)
    }

    fn config() -> Config {
        Config { min_success: 0.999, restart_grace_ms: 50 }
    }

    const HALVES: &str = "partition-random-halves n1x[n2,n3] n2x[n1] n3x[n1]";

    #[test]
    fn a_cut_off_node_that_keeps_forwarding_is_valid() -> Result<(), PairingError> {
        let c: Vec<(&str, u64, bool)> =
            (0..90).map(|i| (["n1", "n2", "n3"][i % 3], 105 + i as u64, true)).collect();
        let r = check(&history(HALVES, &c)?, &config());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
        assert_eq!(r.by_node.get("n1").map(|f| (f.attempts, f.ok)), Some((30, 30)));
        Ok(())
    }

    /// The violation: the minority node n1 stops forwarding new connections
    /// during the partition (one failure in 90 is below 99.9 %).
    #[test]
    fn a_cut_off_node_that_stops_forwarding_is_invalid() -> Result<(), PairingError> {
        let mut c: Vec<(&str, u64, bool)> =
            (0..90).map(|i| (["n1", "n2", "n3"][i % 3], 105 + i as u64, true)).collect();
        c[3].2 = false;
        let r = check(&history(HALVES, &c)?, &config());
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
        assert_eq!(r.cited.len(), 1);
        assert!(r.summary().contains("89/90 ok"), "{}", r.summary());
        assert!(r.summary().contains("1× closed before the greeting"), "{}", r.summary());
        Ok(())
    }

    #[test]
    fn killed_and_paused_nodes_are_excluded_until_the_grace_after_their_window_ends()
    -> Result<(), PairingError> {
        // n1 is down from 100 to 200 ms, + 50 ms of grace; n2 is up.
        let c = [("n1", 120, false), ("n1", 240, false), ("n2", 150, true), ("n1", 300, false)];
        let r = check(&history("kill n1", &c)?, &config());
        assert_eq!((r.excluded_down, r.attempts), (1, 1), "{}", r.summary());
        assert_eq!(
            r.valid,
            Validity::Valid,
            "the failure at 240 ms is the settling restart, outside every window"
        );
        let r = check(&history("kill-all down=n1,n2", &[("n2", 150, false)])?, &config());
        assert_eq!((r.valid, r.excluded_down, r.attempts), (Validity::Valid, 1, 0), "{}", r.summary());
        assert!(r.summary().starts_with("nothing judged"), "{}", r.summary());
        let r = check(&history("pause n2", &[("n1", 150, false)])?, &config());
        assert_eq!(r.valid, Validity::Invalid, "a live node's failure counts under a pause: {}", r.summary());
        Ok(())
    }

    /// A connection through n1 opened in another fault's window and broken
    /// when n1 is killed is not held against n1.
    #[test]
    fn a_connection_open_when_its_node_is_killed_is_excluded() -> Result<(), PairingError> {
        let mut h = history("kill n1", &[])?;
        let other = "partition-random-node n2 n2x[n1] n1x[n2]";
        let mut events = h.events.clone();
        events.extend([
            Event::invoke(98, "nemesis", Op::Start(other.into()), 50 * MS),
            Event::ok(98, "nemesis", Op::Start(other.into()), 51 * MS),
            Event::invoke(0, "n1", Op::Connect(None), 99 * MS),
            Event::fail(0, "n1", Op::Connect(None), 102 * MS, "greeting: Connection reset by peer"),
            Event::invoke(98, "nemesis", Op::Stop(other.into()), 300 * MS),
            Event::ok(98, "nemesis", Op::Stop(other.into()), 301 * MS),
        ]);
        events.sort_by_key(|e| e.time_ns);
        h = History::from_events(events)?;
        let r = check(&h, &config());
        assert_eq!((r.excluded_down, r.attempts), (1, 0), "{}", r.summary());
        Ok(())
    }

    /// Invoked during a fault, then cut when another fault starts: the
    /// new fault broke a path already open.
    #[test]
    fn a_connection_open_when_another_fault_starts_is_not_judged() -> Result<(), PairingError> {
        let h = history(HALVES, &[])?;
        let other = "partition-random-node n2 n2x[n1] n1x[n2]";
        let mut events = h.events.clone();
        events.extend([
            Event::invoke(0, "n3", Op::Connect(None), 140 * MS),
            Event::invoke(98, "nemesis", Op::Start(other.into()), 150 * MS),
            Event::ok(98, "nemesis", Op::Start(other.into()), 151 * MS),
            Event::fail(0, "n3", Op::Connect(None), 160 * MS, "timed out"),
            Event::invoke(1, "n3", Op::Connect(None), 170 * MS),
            Event::fail(1, "n3", Op::Connect(None), 171 * MS, "timed out"),
            Event::invoke(98, "nemesis", Op::Stop(other.into()), 300 * MS),
            Event::ok(98, "nemesis", Op::Stop(other.into()), 301 * MS),
        ]);
        events.sort_by_key(|e| e.time_ns);
        let r = check(&History::from_events(events)?, &config());
        assert_eq!((r.not_judged, r.attempts, r.valid), (1, 1, Validity::Invalid), "{}", r.summary());
        Ok(())
    }

    #[test]
    fn lossy_and_unknown_faults_are_not_judged() -> Result<(), PairingError> {
        let r = check(&history("packet-loss loss=0.20", &[("n1", 150, false)])?, &config());
        assert_eq!((r.valid, r.not_judged, r.attempts), (Validity::Valid, 1, 0), "{}", r.summary());
        let r = check(&history("meteor n1", &[("n1", 150, false)])?, &config());
        assert_eq!((r.valid, r.not_judged, r.attempts), (Validity::Valid, 1, 0), "{}", r.summary());
        Ok(())
    }
}
