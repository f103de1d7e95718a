//! At most one leader per term (no split brain), from `/v1/status` samples.
//!
//! **Property.** Across every `ok` `status` sample of the run, no Raft term
//! has two different leaders. A sample names a leader of its `term`:
//! - when its `role` is `leader`: the sampled node itself (its `node_id`, or
//!   else the `leader_id` it reports);
//! - when it reports a `leader_id` (a follower's view of its term's leader),
//!   unless [`Config::self_claims_only`].
//!
//! Without any `ok` sample the verdict is unknown.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Report, Validity};
use crate::history::Op;
use crate::operation::{History, Outcome, secs};

/// The checker's name in `results.json`.
pub const NAME: &str = "leaders";

/// Which samples name leaders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Count only nodes that say they are the leader, not followers' views.
    pub self_claims_only: bool,
}

/// A term with more than one leader.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub term: u64,
    pub leaders: Vec<u64>,
    /// One sample per leader, for humans: `n2 at 3.201s: leader 7 (self)`.
    pub evidence: Vec<String>,
    /// The op ids of those samples.
    pub samples: Vec<usize>,
}

/// The checker's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct LeadersReport {
    pub valid: Validity,
    /// `ok` status samples.
    pub samples: usize,
    /// Terms in which some sample named a leader.
    pub terms_with_leader: usize,
    pub conflicts: Vec<Conflict>,
}

impl Report for LeadersReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let mut s = format!("{} samples, {} terms with a leader", self.samples, self.terms_with_leader);
        for c in &self.conflicts {
            s.push_str(&format!("\nterm {} has {} leaders:", c.term, c.leaders.len()));
            for e in &c.evidence {
                s.push_str(&format!("\n  {e}"));
            }
        }
        s
    }

    fn cited_ops(&self) -> Vec<usize> {
        self.conflicts.iter().flat_map(|c| c.samples.iter().copied()).collect()
    }
}

/// Checks the status samples of `history`.
pub fn check(history: &History, config: &Config) -> LeadersReport {
    // term -> leader -> (first sample naming it, description)
    let mut terms: BTreeMap<u64, BTreeMap<u64, (usize, String)>> = BTreeMap::new();
    let mut samples = 0;
    for op in &history.ops {
        let (Op::Status(Some(s)), Outcome::Ok) = (&op.op, op.outcome) else { continue };
        samples += 1;
        let at = secs(op.complete_ns.unwrap_or(op.invoke_ns));
        let is_leader = s.role.as_deref() == Some("leader");
        let named = if is_leader {
            s.node_id.or(s.leader_id).map(|l| (l, format!("{} at {at}: leader {l} (self)", s.node)))
        } else if !config.self_claims_only {
            s.leader_id.map(|l| (l, format!("{} at {at}: follows leader {l}", s.node)))
        } else {
            None
        };
        if let Some((leader, evidence)) = named {
            terms.entry(s.term).or_default().entry(leader).or_insert((op.id, evidence));
        }
    }
    let conflicts: Vec<Conflict> = terms
        .iter()
        .filter(|(_, leaders)| leaders.len() > 1)
        .map(|(term, leaders)| Conflict {
            term: *term,
            leaders: leaders.keys().copied().collect(),
            evidence: leaders.values().map(|(_, e)| e.clone()).collect(),
            samples: leaders.values().map(|(id, _)| *id).collect(),
        })
        .collect();
    let valid = if !conflicts.is_empty() {
        Validity::Invalid
    } else if samples == 0 {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    LeadersReport { valid, samples, terms_with_leader: terms.len(), conflicts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, StatusSample};
    use crate::operation::PairingError;

    fn sample(node_id: u64, role: &str, term: u64, leader_id: Option<u64>) -> StatusSample {
        StatusSample {
            node: format!("n{node_id}"),
            node_id: Some(node_id),
            role: Some(role.to_string()),
            term,
            leader_id,
            applied_index: Some(1),
            table_digest: None,
        }
    }

    fn history(samples: &[StatusSample]) -> Result<History, PairingError> {
        let mut events = Vec::new();
        for (i, s) in samples.iter().enumerate() {
            let t = i as u64 * 10;
            events.push(Event::invoke(100, &s.node, Op::Status(None), t));
            events.push(Event::ok(100, &s.node, Op::Status(Some(s.clone())), t + 1));
        }
        History::from_events(events)
    }

    #[test]
    fn one_leader_per_term_across_elections_is_valid() -> Result<(), PairingError> {
        let h = history(&[
            sample(1, "leader", 1, Some(1)),
            sample(2, "follower", 1, Some(1)),
            sample(3, "candidate", 2, None),
            sample(3, "leader", 3, Some(3)),
            sample(1, "follower", 3, Some(3)),
        ])?;
        let r = check(&h, &Config::default());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
        assert_eq!((r.samples, r.terms_with_leader), (5, 2));
        Ok(())
    }

    #[test]
    fn two_leaders_in_one_term_are_found() -> Result<(), PairingError> {
        let h = history(&[sample(1, "leader", 4, Some(1)), sample(2, "leader", 4, Some(2))])?;
        let r = check(&h, &Config::default());
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!((r.conflicts[0].term, r.conflicts[0].leaders.clone()), (4, vec![1, 2]));
        assert!(r.summary().contains("term 4 has 2 leaders"), "{}", r.summary());
        assert_eq!(r.cited_ops(), vec![0, 1]);
        Ok(())
    }

    #[test]
    fn a_follower_naming_another_leader_counts_unless_only_self_claims_do() -> Result<(), PairingError> {
        let h = history(&[sample(1, "leader", 4, Some(1)), sample(2, "follower", 4, Some(3))])?;
        assert_eq!(check(&h, &Config::default()).valid, Validity::Invalid);
        assert_eq!(check(&h, &Config { self_claims_only: true }).valid, Validity::Valid);
        Ok(())
    }

    #[test]
    fn without_samples_the_verdict_is_unknown() -> Result<(), PairingError> {
        let h = History::from_events(vec![
            Event::invoke(100, "n1", Op::Status(None), 0),
            Event::fail(100, "n1", Op::Status(None), 1, "connection refused"),
        ])?;
        assert_eq!(check(&h, &Config::default()).valid, Validity::Unknown);
        Ok(())
    }
}
