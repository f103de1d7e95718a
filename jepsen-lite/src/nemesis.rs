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
    /// Two random halves; one drops the other's packets, not the reverse.
    PartitionOneWay,
    /// Two random halves for minutes (`--long-fault-secs`), not seconds.
    PartitionLong,
    /// Every node drops each packet from the other nodes at random.
    PacketLoss,
    /// A follower cut off while writes go on until the leader has purged
    /// its log past it: at heal it must install a snapshot.
    LaggingNode,
    /// Every initial node `kill -9`ed at once, all restarted at heal.
    KillAll,
    /// The cluster forms while a partition is in place (at the start only).
    BootstrapPartition,
    /// Every initial node `kill -9`ed at once and its disk's unsynced
    /// writes dropped (see [`crate::powerfs::model`]); all restarted at heal.
    PowerLoss,
}

impl Nemesis {
    pub const ALL: [Nemesis; 15] = [
        Nemesis::PartitionRandomHalves,
        Nemesis::PartitionMajoritiesRing,
        Nemesis::Bridge,
        Nemesis::IsolateLeader,
        Nemesis::PartitionRandomNode,
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Membership,
        Nemesis::PartitionOneWay,
        Nemesis::PartitionLong,
        Nemesis::PacketLoss,
        Nemesis::LaggingNode,
        Nemesis::KillAll,
        Nemesis::BootstrapPartition,
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
            Nemesis::PartitionOneWay => "partition-one-way",
            Nemesis::PartitionLong => "partition-long",
            Nemesis::PacketLoss => "packet-loss",
            Nemesis::LaggingNode => "lagging-node",
            Nemesis::KillAll => "kill-all",
            Nemesis::BootstrapPartition => "bootstrap-partition",
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

/// How long windows last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a fault lasts.
    pub fault: Duration,
    /// How long a [`Nemesis::PartitionLong`] fault lasts.
    pub long_fault: Duration,
    /// How long the cluster then runs healed.
    pub heal: Duration,
}

/// The windows of a run: `nemeses` cycled in a seeded order until `total`
/// is used up (the last window is cut short to fit).
pub fn schedule(
    nemeses: &[Nemesis],
    timing: Timing,
    total: Duration,
    rng: &mut fastrand::Rng,
) -> Vec<Window> {
    let Timing { heal, .. } = timing;
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
            let fault = if nemesis == Nemesis::PartitionLong { timing.long_fault } else { timing.fault };
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

/// A shuffled ring in which every node reaches itself and a majority
/// (`n / 2 + 1` nodes, itself included), and drops the rest, symmetrically:
/// every node sees a majority, but the majorities differ.
///
/// A node must keep links to `d = n / 2` others. On the ring it keeps its
/// `d / 2` nearest on each side; an odd `d` adds the opposite node when `n`
/// is even (exactly `d` links) and one more on each side when `n` is odd
/// (`d + 1`: an odd number of nodes with an odd degree each cannot exist).
/// The views are arcs shorter than the ring (plus, for 6 nodes, the
/// opposite node), so no two are the same.
///
/// With 3 nodes a majority is 2, and the ring would keep every link; the
/// only shape is one cut link: two nodes see a different 2-node majority
/// each and the third sees all 3 (so it is also a bridge). With 4 nodes it
/// is the 4-cycle: each node drops only the opposite node and sees 3. With
/// 1 or 2 nodes every node must see every node: nothing is dropped.
pub fn majorities_ring(nodes: &[usize], rng: &mut fastrand::Rng) -> Grudge {
    let mut ring = nodes.to_vec();
    rng.shuffle(&mut ring);
    let n = ring.len();
    if n < 3 {
        return Grudge::new();
    }
    if n == 3 {
        return components(&[vec![ring[0]], vec![ring[2]]]);
    }
    let links = n / 2;
    let opposite = links % 2 == 1 && n.is_multiple_of(2);
    let side = if links % 2 == 1 && !opposite { links / 2 + 1 } else { links / 2 };
    let mut g = Grudge::new();
    for (i, &node) in ring.iter().enumerate() {
        let mut friends = BTreeSet::from([node]);
        for step in 1..=side {
            friends.insert(ring[(i + step) % n]);
            friends.insert(ring[(i + n - step) % n]);
        }
        if opposite {
            friends.insert(ring[(i + n / 2) % n]);
        }
        let enemies: BTreeSet<usize> = ring.iter().copied().filter(|x| !friends.contains(x)).collect();
        if !enemies.is_empty() {
            g.insert(node, enemies);
        }
    }
    g
}

/// Two random halves, one of which (the seed decides which) drops every
/// packet from the other, while the other drops nothing.
pub fn one_way(nodes: &[usize], rng: &mut fastrand::Rng) -> Grudge {
    let mut shuffled = nodes.to_vec();
    rng.shuffle(&mut shuffled);
    let (a, b) = shuffled.split_at(nodes.len() / 2);
    let (deaf, heard) = if rng.bool() { (a, b) } else { (b, a) };
    if heard.is_empty() {
        return Grudge::new();
    }
    deaf.iter().map(|&n| (n, heard.iter().copied().collect())).collect()
}

/// The drop probability of a packet-loss window: 10 % to 30 %, in whole
/// percents (a heavy loss that TCP still gets through, slowly).
pub fn loss_probability(rng: &mut fastrand::Rng) -> f64 {
    f64::from(rng.u8(10..=30)) / 100.0
}

/// Every ordered pair of distinct nodes: the links packet loss applies to.
pub fn all_links(nodes: &[usize]) -> Grudge {
    nodes.iter().map(|&n| (n, nodes.iter().copied().filter(|&o| o != n).collect())).collect()
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

    /// Property: for every size from 3 to 9 and many seeds, every node
    /// reaches a majority (itself included), something is dropped, grudges
    /// are symmetric, and no two nodes see the same majority.
    #[test]
    fn every_node_of_the_majorities_ring_sees_a_different_majority() {
        for n in 3..=9usize {
            let nodes: Vec<usize> = (1..=n).collect();
            for seed in 0..50 {
                let mut rng = fastrand::Rng::with_seed(seed);
                let g = majorities_ring(&nodes, &mut rng);
                assert!(!g.is_empty(), "{n} nodes, seed {seed}: nothing dropped");
                for (&a, enemies) in &g {
                    assert!(!enemies.contains(&a), "{n} nodes: n{a} drops itself in {g:?}");
                    for &b in enemies {
                        assert!(
                            !hears(&g, b, a),
                            "{n} nodes, seed {seed}: n{a} drops n{b} but not back: {g:?}"
                        );
                    }
                }
                let views: BTreeSet<BTreeSet<usize>> = nodes.iter().map(|&x| reach(&g, x, &nodes)).collect();
                for &x in &nodes {
                    let v = reach(&g, x, &nodes);
                    assert!(
                        v.contains(&x) && v.len() > n / 2,
                        "{n} nodes, seed {seed}: n{x} sees {v:?} in {g:?}"
                    );
                }
                assert_eq!(views.len(), n, "{n} nodes, seed {seed}: two nodes share a majority: {views:?}");
            }
        }
    }

    #[test]
    fn with_three_nodes_the_ring_cuts_one_link_and_with_four_it_is_a_square() {
        let g = majorities_ring(&[1, 2, 3], &mut fastrand::Rng::with_seed(1));
        let sizes: Vec<usize> = [1, 2, 3].iter().map(|&x| reach(&g, x, &[1, 2, 3]).len()).collect();
        assert_eq!(sizes.iter().filter(|&&s| s == 2).count(), 2, "{g:?}");
        assert_eq!(sizes.iter().filter(|&&s| s == 3).count(), 1, "{g:?}");
        let four = [1, 2, 3, 4];
        let g = majorities_ring(&four, &mut fastrand::Rng::with_seed(1));
        for x in four {
            assert_eq!(g.get(&x).map(BTreeSet::len), Some(1), "each node drops one (the opposite): {g:?}");
        }
        assert!(majorities_ring(&[1, 2], &mut fastrand::Rng::with_seed(1)).is_empty());
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
        let timing = Timing {
            fault: Duration::from_secs(10),
            long_fault: Duration::from_secs(40),
            heal: Duration::from_secs(5),
        };
        let t = Duration::from_secs(400);
        let a = schedule(&all, timing, t, &mut fastrand::Rng::with_seed(42));
        let b = schedule(&all, timing, t, &mut fastrand::Rng::with_seed(42));
        let c = schedule(&all, timing, t, &mut fastrand::Rng::with_seed(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let total: Duration = a.iter().map(|w| w.fault + w.heal).sum();
        assert_eq!(total, t);
        let n = all.len();
        let first: BTreeSet<Nemesis> = a.iter().take(n).map(|w| w.nemesis).collect();
        assert_eq!(first.len(), n, "every nemesis runs once before any runs twice");
        for w in a.iter().take(n) {
            let expected = if w.nemesis == Nemesis::PartitionLong { timing.long_fault } else { timing.fault };
            assert_eq!(w.fault, expected, "{w:?}");
        }
    }

    #[test]
    fn a_one_way_partition_drops_one_direction_only() {
        for seed in 0..20 {
            let g = one_way(&FIVE, &mut fastrand::Rng::with_seed(seed));
            let pairs: Vec<(usize, usize)> =
                g.iter().flat_map(|(&a, es)| es.iter().map(move |&b| (a, b))).collect();
            assert!(pairs.len() == 6, "seed {seed}: 2 × 3 one-way links: {g:?}");
            for (a, b) in pairs {
                assert!(!hears(&g, a, b) && hears(&g, b, a), "seed {seed}: {a} and {b} in {g:?}");
            }
        }
    }

    #[test]
    fn packet_loss_covers_every_link_at_10_to_30_percent() {
        let links = all_links(&[1, 2, 3]);
        assert_eq!(links.values().map(BTreeSet::len).sum::<usize>(), 6);
        assert!(!links[&2].contains(&2));
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..100 {
            let p = loss_probability(&mut rng);
            assert!((0.1..=0.3).contains(&p), "{p}");
        }
    }
}
