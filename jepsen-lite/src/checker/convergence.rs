//! Convergence after heal, from `/v1/status` samples.
//!
//! **Property.** Let `H` be the heal: the completion of the last nemesis
//! `stop` (the start of the run when there was no fault). Within
//! [`Config::bound_ms`] after `H`, there is one `(applied_index,
//! table_digest)` that every node reported in some `ok` status sample
//! completed in `[H, H + bound]`. The nodes are [`Config::nodes`], or, when
//! that is empty, every node that answered a status sample during the run.
//!
//! The verdict is unknown when a fault was never (known to be) healed, or
//! when the run ended before `H + bound` without having converged.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Report, Validity};
use crate::faults::{fault_windows, healed_at};
use crate::history::{Op, StatusSample};
use crate::operation::{History, Outcome, secs};

/// The checker's name in `results.json`.
pub const NAME: &str = "convergence";

/// The bound (how long after the last heal every node must have converged)
/// and the nodes that must converge.
pub type Config = super::HealBound;

/// What a node reported.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct NodeState {
    pub applied_index: Option<u64>,
    pub table_digest: Option<String>,
}

/// A node's last sample in the window, with its Raft role then: a node
/// left behind by an election storm shows it here.
#[derive(Debug, Clone, Serialize)]
pub struct LastSample {
    #[serde(flatten)]
    pub state: NodeState,
    pub time_ns: u64,
    pub role: Option<String>,
    pub term: u64,
    /// The leader it knew, by name when a sample named that node id.
    pub leader: Option<String>,
}

/// The checker's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct ConvergenceReport {
    pub valid: Validity,
    pub bound_ms: u64,
    /// The heal `H` (null: never healed).
    pub healed_at_ns: Option<u64>,
    pub nodes: Vec<String>,
    /// When every node had reported the common state, and how long after the heal.
    pub converged_at_ns: Option<u64>,
    pub converged_after_ms: Option<u64>,
    pub state: Option<NodeState>,
    /// Each node's last sample in the window (null when it answered none).
    pub last_samples: BTreeMap<String, Option<LastSample>>,
    /// The lowest and highest Raft term sampled in the window: many terms
    /// mean leaders kept changing after the heal.
    pub terms: Option<(u64, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Report for ConvergenceReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let mut s = match (self.healed_at_ns, self.converged_after_ms, &self.state) {
            (Some(h), Some(after), Some(state)) => format!(
                "{} nodes converged {after} ms after the heal at {} (bound {} ms): applied index {}, table {}",
                self.nodes.len(),
                secs(h),
                self.bound_ms,
                opt(&state.applied_index),
                opt(&state.table_digest)
            ),
            _ => format!("{} nodes, bound {} ms", self.nodes.len(), self.bound_ms),
        };
        if let Some(reason) = &self.reason {
            s.push_str(&format!("\n{reason}"));
        }
        if self.valid != Validity::Valid {
            if let Some((lo, hi)) = self.terms {
                s.push_str(&format!("\n  Raft terms {lo} to {hi} in the window"));
            }
            for (node, last) in &self.last_samples {
                s.push_str(&match last {
                    Some(l) => format!(
                        "\n  {node} at {}: applied index {}, table {}, {} in term {}, leader {}",
                        secs(l.time_ns),
                        opt(&l.state.applied_index),
                        opt(&l.state.table_digest),
                        l.role.as_deref().unwrap_or("no role"),
                        l.term,
                        l.leader.as_deref().unwrap_or("unknown")
                    ),
                    None => format!("\n  {node}: no sample in the window"),
                });
            }
        }
        s
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "null".to_string(), ToString::to_string)
}

/// Checks the status samples of `history` after the last heal.
pub fn check(history: &History, config: &Config) -> ConvergenceReport {
    let samples: Vec<(u64, &StatusSample)> = history
        .ops
        .iter()
        .filter_map(|op| match (&op.op, op.outcome, op.complete_ns) {
            (Op::Status(Some(s)), Outcome::Ok, Some(t)) => Some((t, s)),
            _ => None,
        })
        .collect();
    let nodes: BTreeSet<String> = if config.nodes.is_empty() {
        samples.iter().map(|(_, s)| s.node.clone()).collect()
    } else {
        config.nodes.iter().cloned().collect()
    };
    let healed = healed_at(&fault_windows(history));
    let mut report = ConvergenceReport {
        valid: Validity::Unknown,
        bound_ms: config.bound_ms,
        healed_at_ns: healed,
        nodes: nodes.iter().cloned().collect(),
        converged_at_ns: None,
        converged_after_ms: None,
        state: None,
        last_samples: nodes.iter().map(|n| (n.clone(), None)).collect(),
        terms: None,
        reason: None,
    };
    let Some(healed) = healed else {
        report.reason = Some("a fault was never healed: no stop completed ok after it".to_string());
        return report;
    };
    let deadline = healed.saturating_add(config.bound_ms.saturating_mul(1_000_000));
    let names: BTreeMap<u64, &str> =
        samples.iter().filter_map(|(_, s)| s.node_id.map(|id| (id, s.node.as_str()))).collect();
    // state -> node -> first time it reported it in the window
    let mut first: BTreeMap<NodeState, BTreeMap<&str, u64>> = BTreeMap::new();
    for &(t, s) in samples.iter().filter(|(t, s)| (healed..=deadline).contains(t) && nodes.contains(&s.node))
    {
        let state = NodeState { applied_index: s.applied_index, table_digest: s.table_digest.clone() };
        first.entry(state.clone()).or_default().entry(&s.node).or_insert(t);
        let leader =
            s.leader_id.map(|id| names.get(&id).map_or_else(|| id.to_string(), |n| (*n).to_string()));
        let last = LastSample { state, time_ns: t, role: s.role.clone(), term: s.term, leader };
        report.last_samples.insert(s.node.clone(), Some(last));
        report.terms =
            Some(report.terms.map_or((s.term, s.term), |(lo, hi)| (lo.min(s.term), hi.max(s.term))));
    }
    // The state every node reported, earliest first.
    let converged = first
        .into_iter()
        .filter(|(_, by_node)| by_node.len() == nodes.len())
        .filter_map(|(state, by_node)| by_node.values().max().map(|&t| (t, state)))
        .min();
    if let Some((t, state)) = converged {
        report.valid = Validity::Valid;
        report.converged_at_ns = Some(t);
        report.converged_after_ms = Some((t - healed) / 1_000_000);
        report.state = Some(state);
    } else if nodes.is_empty() {
        report.reason = Some("no node answered a status sample".to_string());
    } else if history.end_ns() < deadline {
        report.reason = Some(format!(
            "the run ended {} ms after the heal, before the bound, without converging",
            (history.end_ns().saturating_sub(healed)) / 1_000_000
        ));
    } else {
        report.valid = Validity::Invalid;
        report.reason =
            Some(format!("no common applied index and table within {} ms of the heal", config.bound_ms));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;
    use crate::operation::PairingError;

    const MS: u64 = 1_000_000;

    /// A partition from 0 to 100 ms, then samples `(node, time ms, applied, digest)`.
    fn history(samples: &[(&str, u64, u64, &str)]) -> Result<History, PairingError> {
        let mut events = vec![
            Event::invoke(99, "nemesis", Op::Start("partition".into()), 0),
            Event::ok(99, "nemesis", Op::Start("partition".into()), MS),
            Event::invoke(99, "nemesis", Op::Stop("heal".into()), 99 * MS),
            Event::ok(99, "nemesis", Op::Stop("heal".into()), 100 * MS),
        ];
        for &(node, ms, applied, digest) in samples {
            let s = StatusSample {
                node: node.to_string(),
                node_id: None,
                role: None,
                term: 1,
                leader_id: None,
                applied_index: Some(applied),
                table_digest: Some(digest.to_string()),
            };
            // One sampler process per node.
            let p = 100 + node.bytes().map(u32::from).sum::<u32>();
            events.push(Event::invoke(p, node, Op::Status(None), ms * MS - MS / 2));
            events.push(Event::ok(p, node, Op::Status(Some(s)), ms * MS));
        }
        History::from_events(events)
    }

    fn config(bound_ms: u64) -> Config {
        Config { bound_ms, nodes: Vec::new() }
    }

    #[test]
    fn nodes_that_catch_up_within_the_bound_converge() -> Result<(), PairingError> {
        let h = history(&[
            ("n1", 50, 7, "a"),
            ("n3", 50, 5, "x"),
            ("n1", 110, 9, "b"),
            ("n2", 120, 9, "b"),
            ("n3", 120, 8, "a"),
            ("n3", 300, 9, "b"),
        ])?;
        let r = check(&h, &config(1000));
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
        assert_eq!(r.converged_after_ms, Some(200));
        assert_eq!(r.state.as_ref().and_then(|s| s.applied_index), Some(9));
        Ok(())
    }

    #[test]
    fn a_node_left_behind_past_the_bound_is_invalid() -> Result<(), PairingError> {
        let h = history(&[
            ("n1", 110, 9, "b"),
            ("n2", 120, 9, "b"),
            ("n3", 120, 8, "a"),
            ("n3", 300, 9, "b"),
            ("n1", 400, 9, "b"),
        ])?;
        let r = check(&h, &config(150));
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
        assert!(
            r.summary().contains("n3 at 0.120s: applied index 8, table a, no role in term 1, leader unknown"),
            "{}",
            r.summary()
        );
        assert!(r.summary().contains("Raft terms 1 to 1 in the window"), "{}", r.summary());
        Ok(())
    }

    #[test]
    fn a_failure_names_each_nodes_role_term_and_leader() -> Result<(), PairingError> {
        let mut h = history(&[("n1", 110, 9, "b"), ("n2", 120, 8, "b"), ("n1", 900, 9, "b")])?;
        for op in &mut h.ops {
            if let Op::Status(Some(s)) = &mut op.op {
                let (id, role, term) = if s.node == "n1" { (11, "leader", 4) } else { (22, "follower", 6) };
                s.node_id = Some(id);
                s.role = Some(role.to_string());
                s.term = term;
                s.leader_id = Some(if s.node == "n1" { 11 } else { 33 });
            }
        }
        let r = check(&h, &config(500));
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
        let summary = r.summary();
        assert!(summary.contains("Raft terms 4 to 6 in the window"), "{summary}");
        assert!(summary.contains("table b, leader in term 4, leader n1"), "{summary}");
        // A leader id no sample names is printed as the id.
        assert!(summary.contains("table b, follower in term 6, leader 33"), "{summary}");
        Ok(())
    }

    #[test]
    fn the_same_index_with_another_table_is_not_converged() -> Result<(), PairingError> {
        let h = history(&[("n1", 110, 9, "b"), ("n2", 120, 9, "c"), ("n1", 900, 9, "b")])?;
        assert_eq!(check(&h, &config(500)).valid, Validity::Invalid);
        Ok(())
    }

    #[test]
    fn a_node_silent_after_the_heal_is_invalid() -> Result<(), PairingError> {
        let h = history(&[("n1", 50, 1, "a"), ("n2", 50, 1, "a"), ("n1", 110, 1, "a"), ("n1", 900, 1, "a")])?;
        let r = check(&h, &config(500));
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
        assert!(r.summary().contains("n2: no sample in the window"), "{}", r.summary());
        Ok(())
    }

    #[test]
    fn a_run_ending_before_the_bound_is_unknown() -> Result<(), PairingError> {
        let h = history(&[("n1", 110, 9, "b"), ("n2", 120, 8, "b")])?;
        let r = check(&h, &config(10_000));
        assert_eq!(r.valid, Validity::Unknown, "{}", r.summary());
        Ok(())
    }

    #[test]
    fn an_unhealed_fault_is_unknown() -> Result<(), PairingError> {
        let mut h = history(&[("n1", 110, 9, "b")])?;
        h.ops.retain(|o| !matches!(o.op, Op::Stop(_)));
        assert_eq!(check(&h, &config(10)).valid, Validity::Unknown);
        Ok(())
    }

    #[test]
    fn expected_nodes_must_all_report() -> Result<(), PairingError> {
        let h = history(&[("n1", 110, 9, "b"), ("n2", 120, 9, "b"), ("n1", 900, 9, "b")])?;
        let nodes = vec!["n1".to_string(), "n2".to_string(), "n3".to_string()];
        assert_eq!(check(&h, &config(500)).valid, Validity::Valid);
        assert_eq!(check(&h, &Config { bound_ms: 500, nodes }).valid, Validity::Invalid);
        Ok(())
    }
}
