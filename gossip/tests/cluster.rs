//! Gossip over real UDP on 127.0.0.1: formation, crash detection, graceful
//! leave, restart with a new incarnation, foreign clusters and broadcasts.
//! Every scenario uses the `fast` profile and bounded waits.

mod support;

use std::time::Duration;

use anyhow::Result;
use ferry_gossip::{GossipConfig, MemberEvent, MemberState};
use support::{TestNode, all_alive, cluster, poll_until, wait_all};
use tokio::sync::broadcast::Receiver;
use tokio::time::Instant;

/// The bound for the fast profile.
const FAST_DETECTION: Duration = Duration::from_millis(1500);

fn drain(rx: &mut Receiver<MemberEvent>) -> Vec<MemberEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

async fn converge(n: u64) -> Result<()> {
    let started = Instant::now();
    let nodes = cluster(n, &GossipConfig::fast("converge")).await?;
    eprintln!("{n} nodes converged in {:?}", started.elapsed());
    // Identity metadata travels with membership.
    let view = nodes[0].handle.view();
    let last = view.get(n).map(|m| m.identity.clone());
    assert_eq!(last, Some(nodes[n as usize - 1].identity.clone()));
    assert_eq!(view.counts().alive, n as usize);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge() -> Result<()> {
    converge(3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge() -> Result<()> {
    converge(5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_is_seen_down_by_every_survivor_within_the_bound() -> Result<()> {
    let nodes = cluster(5, &GossipConfig::fast("crash")).await?;
    let (survivors, victim) = nodes.split_at(4);
    let mut events: Vec<_> = survivors.iter().map(|n| n.handle.events()).collect();

    victim[0].kill().await;
    let killed = Instant::now();
    wait_all(survivors, killed + Duration::from_secs(5), "node 5 down", |v| {
        v.state_of(5) == Some(MemberState::Down)
    })
    .await?;
    let detected = killed.elapsed();
    eprintln!("crash of 1 in 5 seen down by all 4 survivors after {detected:?}");
    assert!(detected < FAST_DETECTION, "detection took {detected:?}");

    // Suspicion is reported before the verdict, at least by the prober.
    let suspected_first = events.iter_mut().any(|rx| {
        let evs = drain(rx);
        let suspect = evs.iter().position(|e| matches!(e, MemberEvent::Suspect(id) if id.id == 5));
        let down = evs.iter().position(|e| matches!(e, MemberEvent::Down(id) if id.id == 5));
        matches!((suspect, down), (Some(s), Some(d)) if s < d)
    });
    assert!(suspected_first, "no survivor reported node 5 suspect before down");
    let probe_failures: u64 = survivors.iter().map(|n| n.handle.stats().snapshot().probe_failures).sum();
    assert!(probe_failures > 0);
    for node in survivors {
        let counts = node.handle.view().counts();
        assert_eq!((counts.alive, counts.down), (4, 1), "node {}", node.id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_is_seen_as_left_promptly() -> Result<()> {
    let nodes = cluster(3, &GossipConfig::fast("leave")).await?;
    let started = Instant::now();
    nodes[2].handle.leave().await?;
    wait_all(&nodes[..2], started + Duration::from_secs(3), "node 3 left", |v| {
        v.state_of(3) == Some(MemberState::Left)
    })
    .await?;
    let seen = started.elapsed();
    eprintln!("graceful leave seen by both peers after {seen:?}");
    assert!(seen < Duration::from_millis(500), "leave took {seen:?}");
    assert_eq!(nodes[2].handle.view().local().map(|m| m.state), Some(MemberState::Left));
    assert!(nodes[2].handle.join(vec![nodes[0].addr()]).await.is_err(), "a left node cannot rejoin");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_rejoins_with_a_new_incarnation() -> Result<()> {
    let config = GossipConfig::fast("restart");
    let mut nodes = cluster(3, &config).await?;
    let old = nodes[2].identity.clone();
    nodes[2].kill().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    wait_all(&nodes[..2], deadline, "node 3 down", |v| v.state_of(3) == Some(MemberState::Down)).await?;

    let mut events = nodes[0].handle.events();
    let restarted = Instant::now();
    nodes[2] = TestNode::start(3, &config, old.gossip_addr.port()).await?;
    let new = nodes[2].identity.clone();
    assert!(new.incarnation > old.incarnation);
    nodes[2].handle.join(vec![nodes[0].addr()]).await?;
    wait_all(&nodes, restarted + Duration::from_secs(5), "node 3 back", |v| {
        all_alive(v, 3) && v.get(3).map(|m| m.identity.incarnation) == Some(new.incarnation)
    })
    .await?;
    eprintln!("restarted node alive again everywhere after {:?}", restarted.elapsed());
    let evs = drain(&mut events);
    assert!(evs.contains(&MemberEvent::Renamed { old, new: new.clone() }), "{evs:?}");
    assert!(evs.contains(&MemberEvent::Up(new)), "{evs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_of_another_cluster_is_ignored() -> Result<()> {
    let nodes = cluster(2, &GossipConfig::fast("alpha")).await?;
    let stranger = TestNode::start(99, &GossipConfig::fast("beta"), 0).await?;
    stranger.handle.join(vec![nodes[0].addr()]).await?;
    nodes[1].handle.join(vec![stranger.addr()]).await?;
    let deadline = Instant::now() + Duration::from_secs(3);
    poll_until(deadline, "foreign packets counted on both sides", || {
        nodes[0].handle.stats().snapshot().dropped_foreign_cluster > 0
            && stranger.handle.stats().snapshot().dropped_foreign_cluster > 0
    })
    .await?;
    for node in &nodes {
        assert_eq!(node.handle.view().get(99), None, "node {} sees the stranger", node.id);
        assert_eq!(node.handle.view().counts().alive, 2);
    }
    assert_eq!(stranger.handle.view().members.len(), 1, "the stranger sees only itself");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_broadcast_reaches_every_member() -> Result<()> {
    let nodes = cluster(3, &GossipConfig::fast("broadcast")).await?;
    let mut receivers: Vec<_> = nodes[1..].iter().map(|n| n.handle.broadcasts()).collect();
    nodes[0].handle.broadcast(b"applied_index=42".to_vec()).await?;
    for rx in &mut receivers {
        let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await??;
        assert_eq!((got.origin, &got.data[..]), (1, &b"applied_index=42"[..]));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_fast_cluster_has_no_false_downs() -> Result<()> {
    let nodes = cluster(5, &GossipConfig::fast("idle")).await?;
    let mut events: Vec<_> = nodes.iter().map(|n| n.handle.events()).collect();
    // The property is "nothing happens for a while", so this waits on time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (node, rx) in nodes.iter().zip(&mut events) {
        let downs: Vec<_> = drain(rx).into_iter().filter(|e| matches!(e, MemberEvent::Down(_))).collect();
        assert!(downs.is_empty(), "node {}: false downs {downs:?}", node.id);
        assert!(all_alive(&node.handle.view(), 5));
    }
    Ok(())
}
