//! Nemeses (Jepsen's names) and the fault schedule.
//!
//! A run alternates fault and heal windows: each window picks the next
//! nemesis of the list (in a seeded random order), applies it for the fault
//! time, heals, and waits for the heal time. Everything random (order,
//! victims, partition shapes) comes from one seeded generator, so the same
//! `--seed` and the same options replay the same schedule; only
//! `isolate-leader` also depends on which node leads at that moment.
//!
//! Partitions are *grudges* (see [`crate::net::Grudge`]): node → nodes whose
//! packets it drops. The shapes are pure functions, tested below.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::net::Grudge;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nemesis {
    /// Two halves that cannot talk to each other (the smaller one a minority).
    PartitionRandomHalves,
    /// Every node sees a majority, but no two see the same one (a ring).
    PartitionMajoritiesRing,
    /// Two halves joined by one node that talks to both.
    Bridge,
    /// The current leader cut off from everyone.
    IsolateLeader,
    /// One random node cut off from everyone.
    PartitionRandomNode,
    /// A minority `kill -9`ed, restarted from its data dir at heal.
    Kill,
    /// A minority `SIGSTOP`ed, `SIGCONT`ed at heal.
    Pause,
    /// A node joins, or the last one that joined leaves.
    Membership,
    /// Every initial node `kill -9`ed at once and its disk's unsynced
    /// writes dropped (see [`crate::powerfs::model`]); all restarted at heal.
    PowerLoss,
}

impl Nemesis {
    pub const ALL: [Nemesis; 9] = [
        Nemesis::PartitionRandomHalves,
        Nemesis::PartitionMajoritiesRing,
        Nemesis::Bridge,
        Nemesis::IsolateLeader,
        Nemesis::PartitionRandomNode,
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Membership,
        Nemesis::PowerLoss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::PartitionRandomHalves => "partition-random-halves",
            Nemesis::PartitionMajoritiesRing => "partition-majorities-ring",
            Nemesis::Bridge => "bridge",
            Nemesis::IsolateLeader => "isolate-leader",
            Nemesis::PartitionRandomNode => "partition-random-node",
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Membership => "membership",
            Nemesis::PowerLoss => "power-loss",
        }
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nemesis {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Nemesis::ALL.into_iter().find(|n| n.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Nemesis::ALL.iter().map(|n| n.name()).collect();
            format!("unknown nemesis {s:?}: expected one of {}", names.join(", "))
        })
    }
}

/// One fault window of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub nemesis: Nemesis,
    /// How long the fault lasts.
    pub fault: Duration,
    /// How long the cluster then runs healed.
    pub heal: Duration,
}

/// The windows of a run: `nemeses` cycled in a seeded order until `total`
/// is used up (the last window is cut short to fit).
pub fn schedule(
    nemeses: &[Nemesis],
    fault: Duration,
    heal: Duration,
    total: Duration,
    rng: &mut fastrand::Rng,
) -> Vec<Window> {
    let mut out = Vec::new();
    if nemeses.is_empty() {
        return out;
    }
    let mut order: Vec<Nemesis> = nemeses.to_vec();
    let mut used = Duration::ZERO;
    while used < total {
        rng.shuffle(&mut order);
        for &nemesis in &order {
            if used >= total {
                break;
            }
            let fault = fault.min(total - used);
            let heal = heal.min(total - used - fault);
            used += fault + heal;
            out.push(Window { nemesis, fault, heal });
        }
    }
    out
}

/// Every node of a component drops the nodes of every other component.
pub fn components(parts: &[Vec<usize>]) -> Grudge {
    let mut g = Grudge::new();
    for (i, part) in parts.iter().enumerate() {
        let others: BTreeSet<usize> =
            parts.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, p)| p.iter().copied()).collect();
        for &node in part {
            if !others.is_empty() {
                g.insert(node, others.clone());
            }
        }
    }
    g
}

/// Two random halves (the first one the smaller for an odd count).
pub fn random_halves(nodes: &[usize], rng: &mut fastrand::Rng) -> Grudge {
    let mut shuffled = nodes.to_vec();
    rng.shuffle(&mut shuffled);
    let (a, b) = shuffled.split_at(nodes.len() / 2);
    components(&[a.to_vec(), b.to_vec()])
}

/// `node` cut off from all the others.
pub fn isolate(node: usize, nodes: &[usize]) -> Grudge {
    let rest: Vec<usize> = nodes.iter().copied().filter(|&n| n != node).collect();
    components(&[vec![node], rest])
}

/// Two halves and a bridge node that both halves (and only it) reach.
pub fn bridge(nodes: &[usize], rng: &mut fastrand::Rng) -> Grudge {
    let mut shuffled = nodes.to_vec();
    rng.shuffle(&mut shuffled);
    let Some((&bridge, rest)) = shuffled.split_first() else { return Grudge::new() };
    let (a, b) = rest.split_at(rest.len() / 2);
    let mut g = components(&[a.to_vec(), b.to_vec()]);
    g.retain(|n, _| *n != bridge);
    g
}

/// A shuffled ring in which every node reaches itself and the
/// `nodes.len() / 2` nearest nodes around it (a majority), and drops the
/// rest: every node sees a majority, but the majorities differ.
pub fn majorities_ring(nodes: &[usize], rng: &mut fastrand::Rng) -> Grudge {
    let mut ring = nodes.to_vec();
    rng.shuffle(&mut ring);
    let n = ring.len();
    let reach = n / 2; // self + reach nodes = a majority
    let mut g = Grudge::new();
    for (i, &node) in ring.iter().enumerate() {
        let mut friends = BTreeSet::from([node]);
        for k in 1..=reach {
            // Alternate sides: +1, -1, +2, -2, ...
            let step = k.div_ceil(2);
            let j = if k % 2 == 1 { (i + step) % n } else { (i + n - step) % n };
            friends.insert(ring[j]);
        }
        let enemies: BTreeSet<usize> = ring.iter().copied().filter(|x| !friends.contains(x)).collect();
        if !enemies.is_empty() {
            g.insert(node, enemies);
        }
    }
    // Make it symmetric: if a drops b, b drops a.
    let pairs: Vec<(usize, usize)> = g.iter().flat_map(|(&a, es)| es.iter().map(move |&b| (a, b))).collect();
    for (a, b) in pairs {
        g.entry(b).or_default().insert(a);
    }
    g
}

/// `count` distinct random nodes of `nodes`.
pub fn pick(nodes: &[usize], count: usize, rng: &mut fastrand::Rng) -> Vec<usize> {
    let mut shuffled = nodes.to_vec();
    rng.shuffle(&mut shuffled);
    shuffled.truncate(count);
    shuffled.sort_unstable();
    shuffled
}

/// Whether `node` can hear `from` under `g`.
pub fn hears(g: &Grudge, node: usize, from: usize) -> bool {
    !g.get(&node).is_some_and(|e| e.contains(&from))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: [usize; 5] = [1, 2, 3, 4, 5];

    /// The nodes `node` can talk with both ways.
    fn reach(g: &Grudge, node: usize, nodes: &[usize]) -> BTreeSet<usize> {
        nodes.iter().copied().filter(|&o| hears(g, node, o) && hears(g, o, node)).collect()
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for n in Nemesis::ALL {
            assert_eq!(n.name().parse::<Nemesis>(), Ok(n));
        }
        let e = "partition".parse::<Nemesis>().expect_err("unknown");
        assert!(e.contains("partition-random-halves") && e.contains("membership"), "{e}");
    }

    #[test]
    fn halves_split_into_a_minority_and_a_majority_that_cannot_talk() {
        let mut rng = fastrand::Rng::with_seed(7);
        let g = random_halves(&FIVE, &mut rng);
        let sizes: BTreeSet<usize> = FIVE.iter().map(|&n| reach(&g, n, &FIVE).len()).collect();
        assert_eq!(sizes, BTreeSet::from([2, 3]), "{g:?}");
    }

    #[test]
    fn every_node_of_the_majorities_ring_sees_a_different_majority() {
        for seed in 0..20 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let g = majorities_ring(&FIVE, &mut rng);
            let views: BTreeSet<BTreeSet<usize>> = FIVE.iter().map(|&n| reach(&g, n, &FIVE)).collect();
            for v in &views {
                assert!(v.len() >= 3, "seed {seed}: a node sees a minority {v:?} in {g:?}");
            }
            assert_eq!(views.len(), 5, "seed {seed}: two nodes share a majority: {views:?}");
        }
    }

    #[test]
    fn the_bridge_node_talks_to_both_halves_which_do_not_talk_to_each_other() {
        let mut rng = fastrand::Rng::with_seed(3);
        let g = bridge(&FIVE, &mut rng);
        let bridge = FIVE.iter().copied().find(|&n| reach(&g, n, &FIVE).len() == 5).expect("a bridge node");
        for &n in FIVE.iter().filter(|&&n| n != bridge) {
            assert_eq!(reach(&g, n, &FIVE).len(), 3, "node {n} in {g:?}");
        }
    }

    #[test]
    fn an_isolated_node_hears_nobody_and_nobody_hears_it() {
        let g = isolate(2, &FIVE);
        assert_eq!(reach(&g, 2, &FIVE), BTreeSet::from([2]));
        assert_eq!(reach(&g, 1, &FIVE), BTreeSet::from([1, 3, 4, 5]));
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_windows_fit_the_run() {
        let all = Nemesis::ALL;
        let (f, h, t) = (Duration::from_secs(10), Duration::from_secs(5), Duration::from_secs(200));
        let a = schedule(&all, f, h, t, &mut fastrand::Rng::with_seed(42));
        let b = schedule(&all, f, h, t, &mut fastrand::Rng::with_seed(42));
        let c = schedule(&all, f, h, t, &mut fastrand::Rng::with_seed(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let total: Duration = a.iter().map(|w| w.fault + w.heal).sum();
        assert_eq!(total, t);
        let first: BTreeSet<Nemesis> = a.iter().take(all.len()).map(|w| w.nemesis).collect();
        assert_eq!(first.len(), all.len(), "every nemesis runs once before any runs twice");
    }
}
