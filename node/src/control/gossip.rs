//! Gossip in the node: binds the UDP socket, starts the `ferry-gossip`
//! driver with this node's identity, keeps trying the `join` seeds until
//! every one is a member, and exports the gossip metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ferry_gossip::{Gossip, GossipHandle, MemberState, MemberView, NodeIdentity, NodeMeta};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::publisher::Command as PublisherCommand;
use super::resolver::{self, Lookups, Resolve, SystemResolver};
use crate::config::{ClusterSection, GossipSection, parse_seed};
use crate::dataplane::peers::{Peer, PeerDirectory, PeerState, SelfNode};
use crate::telemetry::metrics::Metrics;

/// First and longest pause between join attempts.
const JOIN_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// Why gossip did not start.
#[derive(Debug, thiserror::Error)]
pub enum GossipStartError {
    #[error("gossip.addr: cannot listen on {addr} (udp): {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("gossip: {0}")]
    Start(#[from] ferry_gossip::GossipError),
}

/// Starts gossip for node `node_id` and the tasks that join and export
/// metrics; everything stops with `stop`.
pub async fn start(
    section: &GossipSection,
    cluster: &ClusterSection,
    node_id: u64,
    name: &str,
    admin_addr: SocketAddr,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Result<GossipHandle, GossipStartError> {
    let addr = section.addr(cluster);
    let socket = UdpSocket::bind(addr).await.map_err(|source| GossipStartError::Bind { addr, source })?;
    let meta = NodeMeta { version: crate::version::version(), protocol: crate::version::PROTOCOL };
    let identity = NodeIdentity::new(node_id, name, addr, cluster.addr, admin_addr).with_meta(meta);
    let config = section.gossip_config(&cluster.cluster_id);
    let handle = Gossip::start(config, identity, socket, stop.child_token())?;
    if !section.join.is_empty() {
        tokio::spawn(join(handle.clone(), section.join.clone(), stop.clone()));
    }
    tokio::spawn(export_metrics(handle.clone(), metrics.clone(), stop.clone()));
    Ok(handle)
}

/// The data plane's view of the members: state and cluster address of
/// every member but this node.
pub fn peer_directory(me: SelfNode, view: &MemberView) -> PeerDirectory {
    let peers = view.members.values().filter(|m| m.identity.id != view.local_id).map(|m| Peer {
        id: m.identity.id,
        name: m.identity.name.clone(),
        state: match m.state {
            MemberState::Alive => PeerState::Alive,
            MemberState::Suspect => PeerState::Suspect,
            MemberState::Down => PeerState::Down,
            MemberState::Left => PeerState::Left,
        },
        cluster_addr: m.identity.cluster_addr,
    });
    PeerDirectory::new(me, peers)
}

/// Sends the publisher a new peer directory on every view change (the
/// publisher ignores one that did not change).
pub async fn feed_peers(
    handle: GossipHandle,
    me: SelfNode,
    publisher: mpsc::Sender<PublisherCommand>,
    stop: CancellationToken,
) {
    let mut view = handle.subscribe();
    loop {
        let peers = Arc::new(peer_directory(me.clone(), &view.borrow_and_update()));
        if publisher.send(PublisherCommand::SetPeers { peers }).await.is_err() {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            r = view.changed() => if r.is_err() { return },
        }
    }
}

/// Whether any member besides this node is up.
pub fn has_peers(view: &MemberView) -> bool {
    view.up().any(|m| m.identity.id != view.local_id)
}

/// Announces this node to the seeds, with backoff, until every seed is a
/// member that is up; then returns. Names are resolved on every attempt,
/// so a seed that comes up later (or moves) is found.
///
/// Once another member answered, only the seeds not yet up in the view are
/// announced to: a partition while the nodes start can split the seeds
/// into groups that each joined among themselves, and without this the
/// groups never learn of each other (members only re-announce to members
/// they once knew), so `bootstrap_expect` is never met after the heal.
async fn join(handle: GossipHandle, seeds: Vec<String>, stop: CancellationToken) {
    let mut view = handle.subscribe();
    let mut backoff = JOIN_BACKOFF.0;
    let mut attempt = 0u32;
    let mut joined = false;
    loop {
        attempt += 1;
        let resolver: Arc<dyn Resolve> = Arc::new(SystemResolver::new());
        let addrs = resolve(resolver, &seeds, handle.identity().gossip_addr, SEED_LOOKUP_TIMEOUT).await;
        let (peers, unmet) = {
            let v = view.borrow_and_update();
            (has_peers(&v), unmet_seeds(&addrs, &v))
        };
        if peers && !joined {
            joined = true;
            info!(attempts = attempt - 1, "joined the gossip cluster");
        }
        if peers && unmet.is_empty() {
            return info!(seeds = addrs.len(), "every join seed is a member");
        }
        let targets = if peers { unmet } else { addrs };
        if targets.is_empty() {
            warn!(seeds = ?seeds, "join: no seed address could be resolved");
        } else if let Err(e) = handle.join(targets.clone()).await {
            return warn!(error = %e, "join: gossip stopped");
        }
        if attempt == 1 || attempt.is_power_of_two() {
            let what =
                if joined { "announcing to the seeds not met yet" } else { "joining the gossip cluster" };
            info!(seeds = ?targets, attempt, "{what}");
        }
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = &mut wait => break,
                r = view.changed() => {
                    if r.is_err() { return }
                    // The first member answered: look again at once.
                    if !joined && has_peers(&view.borrow_and_update()) {
                        break;
                    }
                }
            }
        }
        backoff = (backoff * 2).min(JOIN_BACKOFF.1);
    }
}

/// `POST /v1/join`: announces this node to `seeds` now, keeps announcing
/// in the background as a `join` seed list does (until every seed is a
/// member, `stop` fires, or gossip stops), and waits up to `wait` for one
/// of them to be a member that is up. Returns the seeds' resolved
/// addresses and those met; an error when none of them resolves.
pub async fn join_now(
    handle: &GossipHandle,
    seeds: Vec<String>,
    wait: Duration,
    stop: CancellationToken,
) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>), String> {
    let resolver: Arc<dyn Resolve> = Arc::new(SystemResolver::new());
    let own = handle.identity().gossip_addr;
    let addrs = resolve(resolver, &seeds, own, SEED_LOOKUP_TIMEOUT.min(wait)).await;
    if addrs.is_empty() {
        return Err(format!(
            "none of {seeds:?} resolves to a gossip address other than this node's own ({own})"
        ));
    }
    let mut view = handle.subscribe();
    handle.join(addrs.clone()).await.map_err(|e| format!("gossip stopped: {e}"))?;
    // The announcements go on in the background: UDP may lose the first.
    tokio::spawn(join(handle.clone(), seeds, stop));
    let met = |v: &MemberView| -> Vec<SocketAddr> {
        let unmet = unmet_seeds(&addrs, v);
        addrs.iter().copied().filter(|a| !unmet.contains(a)).collect()
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let now = met(&view.borrow_and_update());
        if !now.is_empty() {
            return Ok((addrs, now));
        }
        match tokio::time::timeout_at(deadline, view.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err("gossip stopped".into()),
            Err(_) => return Ok((addrs, Vec::new())),
        }
    }
}

/// The seed addresses that no member up in `view` gossips from.
fn unmet_seeds(addrs: &[SocketAddr], view: &MemberView) -> Vec<SocketAddr> {
    addrs.iter().copied().filter(|a| !view.up().any(|m| m.identity.gossip_addr == *a)).collect()
}

/// Longest wait for one seed's name: a seed whose lookup hangs must not
/// hold up the join through the others.
const SEED_LOOKUP_TIMEOUT: Duration = Duration::from_millis(resolver::DEFAULT_TIMEOUT_MS);

/// The gossip addresses of `seeds` (but `own`, and of `own`'s family):
/// names looked up in parallel, each within `timeout`.
async fn resolve(
    resolver: Arc<dyn Resolve>,
    seeds: &[String],
    own: SocketAddr,
    timeout: Duration,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let mut lookups = Lookups::new(resolver, timeout);
    for seed in seeds {
        let Ok((host, port)) = parse_seed(seed) else { continue };
        match host.parse::<IpAddr>() {
            Ok(ip) => out.push(SocketAddr::new(ip, port)),
            Err(_) => lookups.spawn(ferry_client::HostPort { host, port }),
        }
    }
    while let Some((name, answer)) = lookups.next().await {
        match answer {
            Ok(addrs) => out.extend(addrs),
            Err(e) => warn!(seed = %name, error = %e, "join: cannot resolve seed"),
        }
    }
    out.retain(|a| *a != own && a.is_ipv4() == own.is_ipv4());
    out.sort_unstable();
    out.dedup();
    out
}

/// Keeps `ferry_gossip_*` current: member counts on every view change,
/// packet counters every second.
async fn export_metrics(handle: GossipHandle, m: Metrics, stop: CancellationToken) {
    let stats = handle.stats();
    let mut view = handle.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_packets = [0u64; 8];
    let mut last_probe_failures = 0u64;
    for (direction, result, _) in stats.snapshot().packet_rows() {
        m.gossip_packets_total.with_label_values(&[direction, result]);
    }
    loop {
        let counts = view.borrow_and_update().counts();
        for state in MemberState::ALL {
            m.gossip_members.with_label_values(&[state.as_str()]).set(counts.get(state) as i64);
        }
        let s = stats.snapshot();
        for ((direction, result, now), last) in s.packet_rows().into_iter().zip(&mut last_packets) {
            if now > *last {
                m.gossip_packets_total.with_label_values(&[direction, result]).inc_by(now - *last);
                *last = now;
            }
        }
        if s.probe_failures > last_probe_failures {
            m.gossip_probe_failures_total.inc_by(s.probe_failures - last_probe_failures);
            last_probe_failures = s.probe_failures;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
            r = view.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::resolver::Lookup;
    use ferry_gossip::MemberStatus;

    fn member(id: u64, port: u16, state: MemberState) -> (u64, MemberStatus) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let identity = NodeIdentity::new(id, format!("n{id}"), addr, addr, addr);
        (id, MemberStatus { identity, state, since: std::time::Instant::now(), since_unix_ms: 0 })
    }

    /// A node that met one seed went on announcing to the others until
    /// each is up: it stopped at the first, and a partition at start left
    /// two groups of seeds that never met.
    #[test]
    fn seeds_are_met_only_when_a_member_up_gossips_from_them() {
        let view = MemberView {
            local_id: 1,
            version: 1,
            members: [
                member(1, 7001, MemberState::Alive),
                member(2, 7002, MemberState::Alive),
                member(3, 7003, MemberState::Suspect),
                member(4, 7004, MemberState::Down),
            ]
            .into(),
        };
        let seeds: Vec<SocketAddr> = (7002..=7005).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
        let unmet = unmet_seeds(&seeds, &view);
        assert_eq!(unmet, vec![seeds[2], seeds[3]], "the down member and the unknown seed");
        assert!(unmet_seeds(&seeds[..2], &view).is_empty());
    }

    /// Answers `up.example` and never answers `hung.example`.
    #[derive(Debug)]
    struct OneHung;

    impl Resolve for OneHung {
        fn lookup(&self, host: &str, port: u16) -> Lookup {
            let up = host == "up.example";
            Box::pin(async move {
                if up {
                    Ok(vec![SocketAddr::from(([127, 0, 0, 2], port))])
                } else {
                    std::future::pending().await
                }
            })
        }
    }

    /// Seeds were looked up one after the other with no time limit: one
    /// whose lookup hung held up the join through every other seed.
    #[tokio::test(start_paused = true)]
    async fn a_hung_seed_lookup_holds_up_no_other_seed() {
        let own = SocketAddr::from(([127, 0, 0, 1], 7946));
        let seeds =
            ["hung.example".to_string(), "up.example:7000".into(), "127.0.0.3".into(), "127.0.0.1".into()];
        let started = tokio::time::Instant::now();
        let timeout = Duration::from_millis(2_000);
        let got =
            tokio::time::timeout(Duration::from_secs(60), resolve(Arc::new(OneHung), &seeds, own, timeout))
                .await
                .expect("resolving the seeds ended");
        assert_eq!(started.elapsed(), timeout);
        let want: Vec<SocketAddr> =
            vec![SocketAddr::from(([127, 0, 0, 2], 7000)), SocketAddr::from(([127, 0, 0, 3], 7946))];
        assert_eq!(got, want, "the other seeds, without this node itself");
    }
}
