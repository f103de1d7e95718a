//! What a fault window did to which nodes, read back from its `start`
//! description, so that checkers can tell the nodes a fault cut off from
//! those it took down.
//!
//! A description is the nemesis's name, then space-separated tokens:
//! - `nAx[nB,nC]`: node A drops every packet from B and from C (a grudge
//!   entry; partitions, one-way partitions and isolations list theirs);
//! - `down=n1,n2`: nodes killed, paused or powered off for the window,
//!   whose connections fail by design;
//! - `loss=P`: links drop packets at random with probability P.
//!
//! Other tokens (`(leader)`, `join`, …) are free text. For the nemeses that
//! take nodes down (`kill`, `pause`, `kill-all`, `power-loss`), a second
//! token that is a bare node list (`kill n1,n2`) also names the nodes down.
//! A name the suite does not know makes the shape unknown, and a checker
//! does not judge what happened under it.

use std::collections::{BTreeMap, BTreeSet};

/// The nemeses whose victims are down for the window.
const DOWN_NEMESES: [&str; 4] = ["kill", "pause", "kill-all", "power-loss"];

/// The nemeses this parser knows (their effect is fully in their tokens).
const KNOWN: [&str; 15] = [
    "partition-random-halves",
    "partition-majorities-ring",
    "bridge",
    "isolate-leader",
    "partition-random-node",
    "partition-one-way",
    "partition-long",
    "packet-loss",
    "lagging-node",
    "bootstrap-partition",
    "membership",
    "kill",
    "pause",
    "kill-all",
    "power-loss",
];

/// The effect of one fault window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultShape {
    /// The nemesis's name (the first word).
    pub nemesis: String,
    /// Node index → nodes whose packets it drops, always.
    pub drops: BTreeMap<usize, BTreeSet<usize>>,
    /// Nodes killed, paused or powered off.
    pub down: BTreeSet<usize>,
    /// Packets are dropped at random (`loss=P`): no link is certain.
    pub lossy: bool,
    /// The name is one this parser knows.
    pub known: bool,
}

impl FaultShape {
    /// Reads a `start` description.
    pub fn parse(description: &str) -> FaultShape {
        let mut words = description.split_whitespace();
        let nemesis = words.next().unwrap_or_default().to_string();
        let mut shape = FaultShape { known: KNOWN.contains(&nemesis.as_str()), ..FaultShape::default() };
        for (k, word) in words.enumerate() {
            if let Some(list) = word.strip_prefix("down=") {
                shape.down.extend(node_list(list).unwrap_or_default());
            } else if word.starts_with("loss=") {
                shape.lossy = true;
            } else if let Some((node, list)) = word.split_once("x[")
                && let (Some(node), Some(list)) = (node_index(node), list.strip_suffix(']'))
                && let Some(enemies) = node_list(list)
            {
                shape.drops.entry(node).or_default().extend(enemies);
            } else if k == 0
                && DOWN_NEMESES.contains(&nemesis.as_str())
                && let Some(nodes) = node_list(word)
            {
                shape.down.extend(nodes);
            }
        }
        shape.nemesis = nemesis;
        shape
    }

    /// Whether node `a` can exchange packets with node `b` both ways (as a
    /// TCP connection needs) under this shape.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        let drops = |x: usize, y: usize| self.drops.get(&x).is_some_and(|e| e.contains(&y));
        a == b || (!drops(a, b) && !drops(b, a))
    }
}

/// `n7` → 7.
fn node_index(word: &str) -> Option<usize> {
    word.strip_prefix('n')?.parse().ok()
}

/// `n1,n2` → {1, 2}; an empty list is empty; anything else is not a list.
fn node_list(list: &str) -> Option<BTreeSet<usize>> {
    list.split(',').filter(|w| !w.is_empty()).map(node_index).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grudges_and_victims_are_read_back() {
        let s = FaultShape::parse("partition-random-halves n1x[n2,n3] n2x[n1] n3x[n1]");
        assert!(s.known && !s.lossy && s.down.is_empty());
        assert!(!s.linked(1, 2) && !s.linked(3, 1) && s.linked(2, 3) && s.linked(1, 1));
        let s = FaultShape::parse("partition-one-way n1x[n2]");
        assert!(!s.linked(1, 2) && !s.linked(2, 1), "one direction is enough to cut TCP");
        assert_eq!(FaultShape::parse("kill n1,n3").down, BTreeSet::from([1, 3]));
        assert_eq!(FaultShape::parse("pause n2").down, BTreeSet::from([2]));
        assert_eq!(FaultShape::parse("kill-all down=n1,n2,n3").down, BTreeSet::from([1, 2, 3]));
        assert_eq!(FaultShape::parse("power-loss n1,n2 (fuse)").down, BTreeSet::from([1, 2]));
        let s = FaultShape::parse("isolate-leader n2 (leader) n2x[n1,n3] n1x[n2] n3x[n2]");
        assert!(s.down.is_empty() && !s.linked(2, 3), "{s:?}");
        assert!(FaultShape::parse("packet-loss loss=0.20").lossy);
        let s = FaultShape::parse("membership join n6, then leave");
        assert!(s.known && s.down.is_empty() && s.drops.is_empty());
    }

    #[test]
    fn unknown_names_and_malformed_tokens_are_not_guessed() {
        let s = FaultShape::parse("earthquake n1,n2");
        assert!(!s.known && s.down.is_empty());
        let s = FaultShape::parse("kill nX,n2 n1x[n2");
        assert!(s.down.is_empty() && s.drops.is_empty(), "{s:?}");
        assert_eq!(FaultShape::parse(""), FaultShape::default());
    }
}
