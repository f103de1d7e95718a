//! The in-memory simulation: at N = 100 a crash and a join reach every
//! member, in a number of probe rounds that stays small; at N = 5 a long
//! partition heals into one cluster within seconds.

use std::time::Duration;

use ferry_gossip::GossipConfig;
use ferry_gossip::sim::SimCluster;

fn config(n: u32) -> GossipConfig {
    GossipConfig { expected_members: n, ..GossipConfig::fast("sim") }
}

#[test]
fn crash_among_100_reaches_every_member() {
    let mut sim = SimCluster::new(100, &config(100), 7);
    sim.run_for(Duration::from_secs(1));
    let report = sim.measure_crash(42, Duration::from_secs(10));
    eprintln!("crash: {report:?}");
    assert_eq!(report.reached, report.expected, "{report:?}");
    assert_eq!(report.expected, 99);
    assert!(report.rounds < 30.0, "{report:?}");
}

#[test]
fn join_among_100_reaches_every_member() {
    let mut sim = SimCluster::new(100, &config(100), 11);
    sim.run_for(Duration::from_secs(1));
    let report = sim.measure_join(Duration::from_secs(10));
    eprintln!("join: {report:?}");
    assert_eq!(report.reached, report.expected, "{report:?}");
    assert_eq!(report.expected, 100);
}

#[test]
fn falsely_downed_member_renews_its_identity_and_rejoins() {
    let mut sim = SimCluster::new(10, &config(10), 3);
    sim.run_for(Duration::from_secs(1));
    let before = sim.identity(4).cloned().expect("member 4");
    sim.set_isolated(4, true);
    sim.run_for(Duration::from_secs(3));
    assert!(
        (0..10)
            .filter(|i| *i != 4)
            .all(|o| matches!(sim.seen_by(o, before.id), Some((_, foca::State::Down)))),
        "the isolated member is down everywhere"
    );
    sim.set_isolated(4, false);
    let healed = sim.now();
    let mut rejoined = false;
    for _ in 0..100 {
        sim.run_for(Duration::from_millis(100));
        let now = sim.identity(4).cloned().expect("member 4");
        rejoined = now.incarnation > before.incarnation
            && (0..10)
                .filter(|i| *i != 4)
                .all(|o| sim.seen_by(o, before.id) == Some((now.clone(), foca::State::Alive)));
        if rejoined {
            eprintln!("rejoined {:?} after healing", sim.now() - healed);
            break;
        }
    }
    assert!(rejoined, "member 4 did not rejoin with a renewed identity");
}

/// How long after a heal every member holds every other member's current
/// identity alive, or `None` within `limit`.
fn converged_after(sim: &mut SimCluster, limit: Duration) -> Option<Duration> {
    let start = sim.now();
    let n = sim.len();
    while sim.now() - start < limit {
        let all = (0..n).all(|o| {
            (0..n).filter(|s| *s != o).all(|s| {
                let current = sim.identity(s).cloned().expect("member");
                sim.seen_by(o, current.id) == Some((current, foca::State::Alive))
            })
        });
        if all {
            return Some(sim.now() - start);
        }
        sim.run_for(Duration::from_millis(100));
    }
    None
}

/// Two members cut off from three for 90 s: each side holds the other down,
/// and after the heal each tells the other so, so every member renews its
/// identity at once. Without re-announcing ([`ferry_gossip::reannounce`])
/// every seed stayed split for good (each member dropped gossip addressed to
/// the others' old identities, and foca runs no timers after a renewal).
#[test]
fn a_long_partition_heals_into_one_cluster_within_seconds() {
    let mut worst = Duration::ZERO;
    let mut stuck = Vec::new();
    for seed in 0..40 {
        let mut sim = SimCluster::new(5, &config(5), seed);
        sim.run_for(Duration::from_secs(2));
        for i in [0, 1] {
            sim.set_side(i, 1);
        }
        sim.run_for(Duration::from_secs(90));
        for i in [0, 1] {
            sim.set_side(i, 0);
        }
        match converged_after(&mut sim, Duration::from_secs(30)) {
            Some(d) => worst = worst.max(d),
            None => stuck.push(seed),
        }
    }
    eprintln!("worst {worst:?}, stuck seeds {stuck:?}");
    assert!(stuck.is_empty(), "stuck seeds {stuck:?}");
    assert!(worst < Duration::from_secs(5), "worst {worst:?}");
}
