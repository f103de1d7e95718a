//! Leaders only move forward (no split brain), from `/v1/status` samples.
//!
//! **Property.** A leader is identified by openraft's leader id, the pair
//! (term, leader's node id), ordered by term and then node id. openraft 0.9
//! (without its `single-term-leader` feature, as ferry builds it) may elect
//! several leaders in one term, one per node id, each superseding the lower
//! ones; what it guarantees is that a node's vote never goes back. So: no
//! node names a leader id lower than one it named in a sample that
//! completed before this one began. A sample names a leader:
//! - when its `role` is `leader`: the sampled node itself (its `node_id`, or
//!   else the `leader_id` it reports);
//! - when it reports a `leader_id` (a follower's view of its term's leader),
//!   unless [`Config::self_claims_only`].
//!
//! Terms that had more than one leader are counted, for information. Without
//! any `ok` sample the verdict is unknown.

use std::collections::{BTreeMap, BTreeSet};

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

/// A node that went back to an older leader.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub node: String,
    /// The leader id (term, node id) named first, and the lower one after.
    pub from: (u64, u64),
    pub to: (u64, u64),
    /// The two samples, for humans: `n2 at 3.201s: leader 7 (self)`.
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
    /// Terms in which samples named more than one leader (allowed).
    pub terms_with_several_leaders: usize,
    pub conflicts: Vec<Conflict>,
}

impl Report for LeadersReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let mut s = format!("{} samples, {} terms with a leader", self.samples, self.terms_with_leader);
        if self.terms_with_several_leaders > 0 {
            s.push_str(&format!(
                ", {} with more than one (ordered by node id, as openraft allows)",
                self.terms_with_several_leaders
            ));
        }
        for c in &self.conflicts {
            s.push_str(&format!(
                "\n{} went back from leader (term {}, node {}) to (term {}, node {}):",
                c.node, c.from.0, c.from.1, c.to.0, c.to.1
            ));
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

/// One sample naming a leader.
struct Named {
    invoke: u64,
    complete: u64,
    leader: (u64, u64),
    op: usize,
    evidence: String,
}

/// Checks the status samples of `history`.
pub fn check(history: &History, config: &Config) -> LeadersReport {
    let mut by_node: BTreeMap<&str, Vec<Named>> = BTreeMap::new();
    let mut terms: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut samples = 0;
    for op in &history.ops {
        let (Op::Status(Some(s)), Outcome::Ok) = (&op.op, op.outcome) else { continue };
        samples += 1;
        let complete = op.complete_ns.unwrap_or(op.invoke_ns);
        let at = secs(complete);
        let is_leader = s.role.as_deref() == Some("leader");
        let named = if is_leader {
            s.node_id.or(s.leader_id).map(|l| (l, format!("{} at {at}: leader {l} (self)", s.node)))
        } else if !config.self_claims_only {
            s.leader_id.map(|l| (l, format!("{} at {at}: follows leader {l}", s.node)))
        } else {
            None
        };
        if let Some((leader, evidence)) = named {
            terms.entry(s.term).or_default().insert(leader);
            by_node.entry(s.node.as_str()).or_default().push(Named {
                invoke: op.invoke_ns,
                complete,
                leader: (s.term, leader),
                op: op.id,
                evidence,
            });
        }
    }
    let mut conflicts = Vec::new();
    for (node, named) in &by_node {
        // Compare each sample with the highest leader id of the samples that
        // completed before it began (real-time order, as concurrent samples
        // of one node may be answered in any order).
        let mut by_invoke: Vec<&Named> = named.iter().collect();
        by_invoke.sort_by_key(|n| n.invoke);
        let mut by_complete: Vec<&Named> = named.iter().collect();
        by_complete.sort_by_key(|n| n.complete);
        let mut done = 0;
        let mut highest: Option<&Named> = None;
        for n in by_invoke {
            while done < by_complete.len() && by_complete[done].complete < n.invoke {
                if highest.is_none_or(|h| by_complete[done].leader > h.leader) {
                    highest = Some(by_complete[done]);
                }
                done += 1;
            }
            if let Some(h) = highest.filter(|h| n.leader < h.leader) {
                conflicts.push(Conflict {
                    node: (*node).to_owned(),
                    from: h.leader,
                    to: n.leader,
                    evidence: vec![h.evidence.clone(), n.evidence.clone()],
                    samples: vec![h.op, n.op],
                });
            }
        }
    }
    let valid = if !conflicts.is_empty() {
        Validity::Invalid
    } else if samples == 0 {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    LeadersReport {
        valid,
        samples,
        terms_with_leader: terms.len(),
        terms_with_several_leaders: terms.values().filter(|l| l.len() > 1).count(),
        conflicts,
    }
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
    fn two_leaders_of_one_term_in_node_id_order_are_valid() -> Result<(), PairingError> {
        // openraft: (4, n1) then (4, n2), which supersedes it.
        let h = history(&[
            sample(1, "leader", 4, Some(1)),
            sample(3, "follower", 4, Some(1)),
            sample(2, "leader", 4, Some(2)),
            sample(3, "follower", 4, Some(2)),
            sample(1, "follower", 4, Some(2)),
        ])?;
        let r = check(&h, &Config::default());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
        assert_eq!((r.terms_with_leader, r.terms_with_several_leaders), (1, 1));
        Ok(())
    }

    #[test]
    fn a_node_going_back_to_an_older_leader_is_found() -> Result<(), PairingError> {
        let h = history(&[
            sample(3, "follower", 4, Some(2)),
            sample(1, "leader", 4, Some(1)),
            sample(3, "follower", 4, Some(1)),
        ])?;
        let r = check(&h, &Config::default());
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(
            (r.conflicts[0].node.as_str(), r.conflicts[0].from, r.conflicts[0].to),
            ("n3", (4, 2), (4, 1))
        );
        assert!(
            r.summary().contains("n3 went back from leader (term 4, node 2) to (term 4, node 1)"),
            "{}",
            r.summary()
        );
        assert_eq!(r.cited_ops(), vec![0, 2]);
        // A lower term after a higher one is a regression too; the leader
        // itself counts unless only self claims do.
        let h = history(&[sample(2, "follower", 5, Some(1)), sample(2, "leader", 4, Some(2))])?;
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
