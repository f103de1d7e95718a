//! The routing table: the immutable snapshot the data plane reads.
//!
//! The control plane builds a new table with [`RoutingTable::build`] whenever
//! the configuration or a backend's health changes, and publishes it with one
//! atomic swap. A connection loads the table once, when it is accepted, and
//! keeps its `Arc<RouteEntry>` to the end: a swap never disturbs connections
//! already running. `build` is a pure function of its inputs (specs, the
//! long-lived per-route and per-backend state, the previous table for ring
//! reuse, the peer directory, and the time), so it is tested without sockets.
//!
//! # Backends pinned to a node
//! A backend whose `node` names this node is a plain local backend. One that
//! names another node is reached through that node (a peer hop) and is placed
//! by the node's membership state: `Alive`, a normal candidate; `Suspect`,
//! tried after every other candidate; `Down`, `Left` or unknown, never tried,
//! not even in panic mode. The hash ring holds every backend whatever its
//! node's state, so a failed node moves only the keys it held.
//!
//! # Backends addressed by a host name
//! The control plane resolves names (`control::names`) and hands the
//! addresses in as [`Resolved`]; the table holds them, so a connection
//! reads its backend's addresses from the entry it already holds and never
//! resolves. A local backend without an address (its name does not
//! resolve) is unhealthy and, like an unreachable node's, not tried even in
//! panic mode. The ring is keyed by backend id, so a new answer moves no key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use ferry_client::{BackendSpec, HealthCheckSpec, RouteSpec};
use prometheus::{Histogram, IntCounter, IntGauge};

use ferry_client::route::MAX_CONNECT_ATTEMPTS;

use super::backend::{BackendState, EjectPolicy};
use super::balance::{Balancer, Candidates};
use super::chaos::{ChaosCell, ChaosMetrics, RouteChaos};
use super::peers::{Owner, PeerDirectory, PeerState};
use crate::telemetry::metrics::Metrics;

/// State of a route that outlives table rebuilds (keyed by route name).
#[derive(Debug)]
pub struct RouteState {
    pub name: String,
    active: AtomicU64,
    /// Connections accepted on this route by this node: the next one's
    /// ordinal, for its chaos decisions.
    ordinals: AtomicU64,
    /// The chaos policies in effect on the route, as they change.
    pub chaos: ChaosCell,
    pub chaos_metrics: ChaosMetrics,
    /// The balancer's rotation, kept across table rebuilds.
    cursor: Arc<AtomicUsize>,
    pub m: RouteMetrics,
}

/// Metric handles of one route, resolved once (no label lookup per connection).
#[derive(Debug)]
pub struct RouteMetrics {
    pub active: IntGauge,
    pub bytes_up: IntCounter,
    pub bytes_down: IntCounter,
    pub connect_seconds: Histogram,
    pub failovers: IntCounter,
    pub rejected_max_connections: IntCounter,
    pub rejected_no_backend: IntCounter,
    pub idle_timeouts: IntCounter,
}

impl RouteState {
    /// Fresh state for route `name`.
    pub fn new(name: &str, metrics: &Metrics) -> Self {
        let rejected = |reason: &str| metrics.proxy_rejected_total.with_label_values(&[name, reason]);
        Self {
            name: name.to_string(),
            active: AtomicU64::new(0),
            ordinals: AtomicU64::new(0),
            chaos: ChaosCell::default(),
            chaos_metrics: ChaosMetrics::new(metrics),
            cursor: Arc::default(),
            m: RouteMetrics {
                active: metrics.proxy_active_connections.with_label_values(&[name]),
                bytes_up: metrics.proxy_bytes_total.with_label_values(&[name, "upstream"]),
                bytes_down: metrics.proxy_bytes_total.with_label_values(&[name, "downstream"]),
                connect_seconds: metrics.proxy_connect_seconds.with_label_values(&[name]),
                failovers: metrics.proxy_failovers_total.with_label_values(&[name]),
                rejected_max_connections: rejected("max_connections"),
                rejected_no_backend: rejected("no_backend"),
                idle_timeouts: metrics.proxy_idle_timeouts_total.with_label_values(&[name]),
            },
        }
    }

    /// The ordinal of a new connection: 0, 1, 2, ... in accept order.
    pub fn next_ordinal(&self) -> u64 {
        self.ordinals.fetch_add(1, Relaxed)
    }

    /// The ordinal the next connection will get, without taking it.
    pub fn peek_ordinal(&self) -> u64 {
        self.ordinals.load(Relaxed)
    }

    /// Open client connections on this route.
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Admits one more client connection if fewer than `max` are open.
    pub fn try_admit(self: &Arc<Self>, max: u64) -> Option<RouteGuard> {
        if self.active.fetch_add(1, Relaxed) >= max {
            self.active.fetch_sub(1, Relaxed);
            self.m.rejected_max_connections.inc();
            return None;
        }
        self.m.active.inc();
        Some(RouteGuard(Arc::clone(self)))
    }
}

/// An admitted client connection; releases its slot on drop.
#[derive(Debug)]
pub struct RouteGuard(Arc<RouteState>);

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
        self.0.m.active.dec();
    }
}

/// Where the connections to one backend go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Straight to the backend's address.
    Local,
    /// Through the owning peer's cluster port (a peer hop).
    Peer {
        /// The owner's node id.
        node: u64,
        /// The owner's cluster port.
        addr: SocketAddr,
        /// The owner is suspect: tried after every other candidate.
        suspect: bool,
    },
    /// Owned by a node that is down, has left, or is unknown: never tried.
    Unreachable,
}

/// A backend's addresses as this node resolved them when the table was
/// built.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    /// Tried in turn by a connection (and by the active check). The one
    /// address of an IP literal, or the answer for a host name: empty when
    /// it does not resolve, and for a backend another node connects to.
    pub addrs: Arc<[SocketAddr]>,
    /// Why the last lookup of the backend's host name failed; `None` after
    /// a success and for an IP literal.
    pub error: Option<Arc<str>>,
}

/// One route as the data plane sees it.
#[derive(Debug)]
pub struct RouteEntry {
    pub spec: Arc<RouteSpec>,
    /// The address to bind (`:PORT` resolved against the node's bind address).
    pub listen: SocketAddr,
    pub backends: Vec<Arc<BackendState>>,
    /// `targets[i]`: how backend `i` is reached.
    pub targets: Vec<Target>,
    /// `resolved[i]`: where backend `i` is, for a [`Target::Local`] one.
    pub resolved: Vec<Resolved>,
    /// Some target is a suspect peer.
    has_suspect: bool,
    pub state: Arc<RouteState>,
    /// `healthy[i]`: backend `i` took new connections when the table was
    /// built (false for an unreachable target, and for a local one without
    /// an address).
    pub healthy: Vec<bool>,
    /// No backend was healthy, so every backend of weight > 0 is tried.
    pub panic_mode: bool,
    pub balancer: Balancer,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub eject: EjectPolicy,
    /// The chaos policies in effect on this route of this node when the
    /// table was built.
    pub chaos: Arc<RouteChaos>,
}

impl RouteEntry {
    /// Ordered candidates for a connection from `client`; backends of a
    /// suspect peer come after every other.
    pub fn candidates(&self, client: SocketAddr) -> Candidates {
        self.candidates_at(client, self.balancer.next_turn())
    }

    /// [`RouteEntry::candidates`] at turn `turn` (see
    /// [`Balancer::next_turn`]), taking nothing: what `explain` shows,
    /// with the turn of [`Balancer::peek_turn`].
    pub fn candidates_at(&self, client: SocketAddr, turn: u64) -> Candidates {
        let max = self.spec.max_connect_attempts as usize;
        let active = |i: u32| self.backends[i as usize].active();
        if !self.has_suspect {
            return self.balancer.candidates_at(client, max, active, turn);
        }
        let all = self.balancer.candidates_at(client, MAX_CONNECT_ATTEMPTS as usize, active, turn);
        all.deferring(|i| self.deferred(i as usize), max)
    }

    /// Backend `i` is tried after every other candidate (its node is suspect).
    pub fn deferred(&self, i: usize) -> bool {
        matches!(self.targets.get(i), Some(Target::Peer { suspect: true, .. }))
    }

    /// The index of the backend with id `id`.
    pub fn backend_index(&self, id: &str) -> Option<usize> {
        self.spec.backends.iter().position(|b| b.id == id)
    }
}

/// What the builder needs to know of one route.
#[derive(Debug)]
pub struct RouteInput {
    pub spec: Arc<RouteSpec>,
    pub listen: SocketAddr,
    pub state: Arc<RouteState>,
    /// One per `spec.backends`, same order.
    pub backends: Vec<Arc<BackendState>>,
    /// One per `spec.backends`, same order: where the local ones are.
    pub resolved: Vec<Resolved>,
    /// The chaos policies in effect on the route on this node.
    pub chaos: Arc<RouteChaos>,
}

/// Every route, by name.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Bumped by every rebuild.
    pub generation: u64,
    routes: HashMap<String, Arc<RouteEntry>>,
    /// The directory the table was built with.
    peers: Arc<PeerDirectory>,
}

impl RoutingTable {
    /// Builds generation `generation` from `inputs` and `peers` at `now_ms`,
    /// reusing `prev`'s hash rings where a route's backends and weights are
    /// unchanged.
    pub fn build(
        generation: u64,
        inputs: Vec<RouteInput>,
        prev: &RoutingTable,
        peers: &Arc<PeerDirectory>,
        now_ms: u64,
    ) -> Self {
        let routes = inputs
            .into_iter()
            .map(|input| {
                let prev_ring = prev.routes.get(&input.spec.name).and_then(|r| r.balancer.ring());
                let entry = build_route(input, prev_ring, peers, now_ms);
                (entry.spec.name.clone(), Arc::new(entry))
            })
            .collect();
        Self { generation, routes, peers: Arc::clone(peers) }
    }

    /// The peer directory the table was built with.
    pub fn peers(&self) -> &Arc<PeerDirectory> {
        &self.peers
    }

    /// The route called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<RouteEntry>> {
        self.routes.get(name)
    }

    /// Every route, sorted by name.
    pub fn routes(&self) -> Vec<&Arc<RouteEntry>> {
        let mut v: Vec<_> = self.routes.values().collect();
        v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        v
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True without routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// When the earliest running ejection ends (the table must be rebuilt then).
    pub fn next_ejection_end(&self, now_ms: u64) -> Option<u64> {
        self.routes.values().flat_map(|r| r.backends.iter()).filter_map(|b| b.ejected_until(now_ms)).min()
    }
}

/// How this node reaches a backend pinned to `node` (or not pinned).
pub fn target(node: Option<&str>, peers: &PeerDirectory) -> Target {
    let Some(node) = node else { return Target::Local };
    match peers.owner(node) {
        Owner::Me => Target::Local,
        Owner::Peer(p) => match p.state {
            PeerState::Alive => Target::Peer { node: p.id, addr: p.cluster_addr, suspect: false },
            PeerState::Suspect => Target::Peer { node: p.id, addr: p.cluster_addr, suspect: true },
            PeerState::Down | PeerState::Left => Target::Unreachable,
        },
        Owner::Unknown => Target::Unreachable,
    }
}

/// What a backend's long-lived state (health, ejection, connections) is
/// kept by: a change to any of it starts the backend afresh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub(crate) route: String,
    pub(crate) id: String,
    /// As configured: `IP:PORT` or `HOST:PORT`.
    pub(crate) addr: String,
    /// The active check, when this node runs one (local backends only).
    pub(crate) check: Option<HealthCheckSpec>,
    /// Served by this node (not pinned to another).
    pub(crate) local: bool,
}

impl BackendKey {
    /// The key of backend `b` of route `spec`, served by this node when
    /// `local`.
    pub fn of(spec: &RouteSpec, b: &BackendSpec, local: bool) -> Self {
        BackendKey {
            route: spec.name.clone(),
            id: b.id.clone(),
            addr: b.addr.clone(),
            check: spec.health_check.filter(|_| local),
            local,
        }
    }
}

/// Whether a backend reached as `t`, with `resolved` addresses, can be
/// connected at all: a local backend needs an address, a peer's owner has
/// its own, an unreachable node's never.
pub fn reachable(t: Target, resolved: &Resolved) -> bool {
    match t {
        Target::Local => !resolved.addrs.is_empty(),
        Target::Peer { .. } => true,
        Target::Unreachable => false,
    }
}

/// Which backends `(id, weight)` the balancer may pick, given which are
/// `healthy` and which `reachable`, and whether that is panic mode: the
/// healthy ones of weight > 0; when there is none, every reachable one of
/// weight > 0 (better to try backends that may be up than to refuse
/// everything, but a backend on a down or unknown node, or without an
/// address, cannot be reached at all).
pub fn eligibility(weights: &[(String, u32)], healthy: &[bool], reachable: &[bool]) -> (Vec<bool>, bool) {
    let mask: Vec<bool> = healthy.iter().zip(weights).map(|(h, (_, w))| *h && *w > 0).collect();
    if mask.iter().any(|m| *m) {
        return (mask, false);
    }
    (weights.iter().zip(reachable).map(|((_, w), r)| *r && *w > 0).collect(), true)
}

fn build_route(
    input: RouteInput,
    prev_ring: Option<&Arc<super::balance::HashRing>>,
    peers: &PeerDirectory,
    now_ms: u64,
) -> RouteEntry {
    let spec = input.spec;
    let weights: Vec<(String, u32)> = spec.backends.iter().map(|b| (b.id.clone(), b.weight)).collect();
    let targets: Vec<Target> = spec.backends.iter().map(|b| target(b.node.as_deref(), peers)).collect();
    let reachable: Vec<bool> = targets.iter().zip(&input.resolved).map(|(t, r)| reachable(*t, r)).collect();
    let healthy: Vec<bool> =
        input.backends.iter().zip(&reachable).map(|(b, r)| *r && b.healthy(now_ms)).collect();
    for (b, h) in input.backends.iter().zip(&healthy) {
        b.set_healthy_gauge(*h);
    }
    let (mask, panic_mode) = eligibility(&weights, &healthy, &reachable);
    let cursor = Arc::clone(&input.state.cursor);
    let balancer =
        Balancer::build(spec.balance, spec.hash_key, spec.vnodes, &weights, mask, prev_ring, cursor);
    let has_suspect = targets.iter().any(|t| matches!(t, Target::Peer { suspect: true, .. }));
    RouteEntry {
        listen: input.listen,
        backends: input.backends,
        targets,
        resolved: input.resolved,
        has_suspect,
        state: input.state,
        healthy,
        panic_mode,
        balancer,
        connect_timeout: Duration::from_millis(spec.connect_timeout_ms),
        idle_timeout: Duration::from_millis(spec.idle_timeout_ms),
        eject: EjectPolicy { after_failures: spec.eject_after_failures, backoff_ms: spec.eject_backoff_ms },
        chaos: input.chaos,
        spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::backend::ConnectResult;
    use tokio::sync::Notify;

    fn spec(json: serde_json::Value) -> Arc<RouteSpec> {
        Arc::new(serde_json::from_value(json).expect("route json"))
    }

    fn input(spec: Arc<RouteSpec>, metrics: &Metrics) -> RouteInput {
        let notify = Arc::new(Notify::new());
        let backends = spec
            .backends
            .iter()
            .map(|b| Arc::new(BackendState::new(&spec.name, &b.id, &b.addr, Arc::clone(&notify), metrics)))
            .collect();
        RouteInput {
            listen: "127.0.0.1:0".parse().expect("addr"),
            state: Arc::new(RouteState::new(&spec.name, metrics)),
            backends,
            resolved: resolved_literals(&spec),
            chaos: Arc::default(),
            spec,
        }
    }

    /// `addr` (an IP literal) as its own answer.
    fn resolved_literals_one(addr: &str) -> Resolved {
        Resolved { addrs: Arc::from([addr.parse().expect("addr")]), error: None }
    }

    /// The one address of each backend, for specs whose addresses are IP
    /// literals; a host name gets none.
    fn resolved_literals(spec: &RouteSpec) -> Vec<Resolved> {
        let one =
            |addr: &str| addr.parse::<SocketAddr>().map(|_| resolved_literals_one(addr)).unwrap_or_default();
        spec.backends.iter().map(|b| one(&b.addr)).collect()
    }

    fn standalone() -> Arc<PeerDirectory> {
        Arc::new(PeerDirectory::default())
    }

    fn web() -> Arc<RouteSpec> {
        spec(serde_json::json!({
            "name": "web", "listen": "127.0.0.1:0", "balance": "round_robin",
            "backends": [{"id": "a", "addr": "127.0.0.1:1"}, {"id": "b", "addr": "127.0.0.1:2"},
                         {"id": "z", "addr": "127.0.0.1:3", "weight": 0}]
        }))
    }

    #[test]
    fn unhealthy_backends_are_not_candidates() {
        let metrics = Metrics::new().expect("metrics");
        let inp = input(web(), &metrics);
        inp.backends[0].set_check_up(false);
        let t = RoutingTable::build(1, vec![inp], &RoutingTable::default(), &standalone(), 0);
        let r = t.get("web").expect("route");
        assert!(!r.panic_mode);
        assert_eq!(r.healthy, vec![false, true, true]);
        for i in 0..4u16 {
            assert_eq!(r.candidates(SocketAddr::from(([127, 0, 0, 1], i))).as_slice(), &[1]);
        }
    }

    #[test]
    fn panic_mode_tries_every_weighted_backend() {
        let metrics = Metrics::new().expect("metrics");
        let inp = input(web(), &metrics);
        let policy = EjectPolicy { after_failures: 1, backoff_ms: 100 };
        for b in &inp.backends {
            b.record_connect(ConnectResult::Refused, 0, policy);
        }
        let t = RoutingTable::build(1, vec![inp], &RoutingTable::default(), &standalone(), 50);
        let r = t.get("web").expect("route");
        assert!(r.panic_mode);
        let mut c = r.candidates(SocketAddr::from(([127, 0, 0, 1], 1))).as_slice().to_vec();
        c.sort_unstable();
        assert_eq!(c, vec![0, 1], "weight 0 stays out even in panic mode");
        assert_eq!(t.next_ejection_end(50), Some(100));
        assert_eq!(t.next_ejection_end(100), None);
    }

    #[test]
    fn ring_survives_a_health_rebuild() {
        let metrics = Metrics::new().expect("metrics");
        let s = spec(serde_json::json!({
            "name": "h", "listen": "127.0.0.1:0", "balance": "consistent_hash",
            "backends": [{"id": "a", "addr": "127.0.0.1:1"}, {"id": "b", "addr": "127.0.0.1:2"}]
        }));
        let none = standalone();
        let t1 =
            RoutingTable::build(1, vec![input(Arc::clone(&s), &metrics)], &RoutingTable::default(), &none, 0);
        let t2 = RoutingTable::build(2, vec![input(s, &metrics)], &t1, &none, 0);
        let ring = |t: &RoutingTable| Arc::clone(t.get("h").and_then(|r| r.balancer.ring()).expect("ring"));
        assert!(Arc::ptr_eq(&ring(&t1), &ring(&t2)));
    }

    /// Before, every rebuild (any health change anywhere) started the
    /// rotation again at the first backend.
    #[test]
    fn round_robin_and_weighted_carry_their_rotation_across_rebuilds() {
        let metrics = Metrics::new().expect("metrics");
        for balance in ["round_robin", "weighted"] {
            let s = spec(serde_json::json!({
                "name": "rr", "listen": "127.0.0.1:0", "balance": balance,
                "backends": [{"id": "a", "addr": "127.0.0.1:1"}, {"id": "b", "addr": "127.0.0.1:2"},
                             {"id": "c", "addr": "127.0.0.1:3"}]
            }));
            let first = input(s, &metrics);
            let (state, backends, spec) =
                (Arc::clone(&first.state), first.backends.clone(), Arc::clone(&first.spec));
            let mut table = RoutingTable::build(1, vec![first], &RoutingTable::default(), &standalone(), 0);
            let mut picks = Vec::new();
            for generation in 2..8 {
                let client = SocketAddr::from(([127, 0, 0, 1], 1));
                picks.push(table.get("rr").expect("route").candidates(client).as_slice()[0]);
                // One pick per table: a rebuild between every two connections.
                let again = RouteInput {
                    spec: Arc::clone(&spec),
                    listen: "127.0.0.1:0".parse().expect("addr"),
                    state: Arc::clone(&state),
                    backends: backends.clone(),
                    resolved: resolved_literals(&spec),
                    chaos: Arc::default(),
                };
                table = RoutingTable::build(generation, vec![again], &table, &standalone(), 0);
            }
            assert_eq!(picks, [0, 1, 2, 0, 1, 2], "{balance}");
        }
    }

    fn directory(states: &[(u64, &str, PeerState)]) -> Arc<PeerDirectory> {
        use crate::dataplane::peers::{Peer, SelfNode};
        let peers = states.iter().map(|&(id, name, state)| Peer {
            id,
            name: name.into(),
            state,
            cluster_addr: SocketAddr::from(([127, 0, 0, id as u8], 7947)),
        });
        Arc::new(PeerDirectory::new(SelfNode { id: 1, name: "n1".into() }, peers))
    }

    fn pinned() -> Arc<RouteSpec> {
        let b = |id: &str, port: u16, node: Option<&str>| serde_json::json!({"id": id, "addr": format!("127.0.0.1:{port}"), "node": node});
        spec(serde_json::json!({
            "name": "p", "listen": "127.0.0.1:0", "balance": "round_robin", "max_connect_attempts": 16,
            "backends": [b("l", 1, None), b("me", 2, Some("n1")), b("p2", 3, Some("n2")),
                         b("p3", 4, Some("3")), b("p4", 5, Some("n4")), b("p5", 6, Some("n5")),
                         b("p9", 7, Some("n9")), b("myid", 8, Some("1"))]
        }))
    }

    #[test]
    fn pinned_backends_follow_their_node() {
        let metrics = Metrics::new().expect("metrics");
        let peers = directory(&[
            (2, "n2", PeerState::Alive),
            (3, "n3", PeerState::Suspect),
            (4, "n4", PeerState::Down),
            (5, "n5", PeerState::Left),
        ]);
        let t = RoutingTable::build(1, vec![input(pinned(), &metrics)], &RoutingTable::default(), &peers, 0);
        let r = t.get("p").expect("route");
        let addr = |id: u8| SocketAddr::from(([127, 0, 0, id], 7947));
        assert_eq!(
            r.targets,
            vec![
                Target::Local,
                Target::Local,
                Target::Peer { node: 2, addr: addr(2), suspect: false },
                Target::Peer { node: 3, addr: addr(3), suspect: true },
                Target::Unreachable,
                Target::Unreachable,
                Target::Unreachable,
                Target::Local,
            ]
        );
        assert_eq!(r.healthy, vec![true, true, true, true, false, false, false, true]);
        for port in 0..12u16 {
            let c = r.candidates(SocketAddr::from(([10, 0, 0, 1], port)));
            let c = c.as_slice();
            // Down, left and unknown nodes are never tried; the suspect one last.
            assert_eq!(c.len(), 5, "{c:?}");
            assert_eq!(c.last(), Some(&3), "{c:?}");
        }
        // Suspect last even when the list is cut short.
        let mut s = (*pinned()).clone();
        s.max_connect_attempts = 2;
        let t = RoutingTable::build(2, vec![input(Arc::new(s), &metrics)], &t, &peers, 0);
        let r = t.get("p").expect("route");
        for port in 0..12u16 {
            let c = r.candidates(SocketAddr::from(([10, 0, 0, 1], port)));
            assert!(!c.as_slice().contains(&3), "{:?}", c.as_slice());
        }
    }

    #[test]
    fn panic_mode_never_tries_unreachable_nodes() {
        let metrics = Metrics::new().expect("metrics");
        let peers = directory(&[(2, "n2", PeerState::Alive), (4, "n4", PeerState::Down)]);
        let inp = input(pinned(), &metrics);
        for b in &inp.backends {
            b.set_check_up(false);
        }
        let t = RoutingTable::build(1, vec![inp], &RoutingTable::default(), &peers, 0);
        let r = t.get("p").expect("route");
        assert!(r.panic_mode);
        let mut c = r.candidates(SocketAddr::from(([10, 0, 0, 1], 1))).as_slice().to_vec();
        c.sort_unstable();
        assert_eq!(c, vec![0, 1, 2, 7]);
    }

    #[test]
    fn standalone_never_tries_pinned_backends_of_others() {
        let metrics = Metrics::new().expect("metrics");
        let t = RoutingTable::build(
            1,
            vec![input(pinned(), &metrics)],
            &RoutingTable::default(),
            &standalone(),
            0,
        );
        let r = t.get("p").expect("route");
        let mut c = r.candidates(SocketAddr::from(([10, 0, 0, 1], 1))).as_slice().to_vec();
        c.sort_unstable();
        assert_eq!(c, vec![0], "only the unpinned backend");
    }

    /// Consistent hash over backends on three peers: a key stays on one
    /// peer, and when a peer goes down only the keys it held move.
    #[test]
    fn consistent_hash_moves_only_the_keys_of_a_failed_peer() {
        let metrics = Metrics::new().expect("metrics");
        let s = spec(serde_json::json!({
            "name": "h", "listen": "127.0.0.1:0", "balance": "consistent_hash",
            "backends": [{"id": "a", "addr": "127.0.0.1:1", "node": "n2"},
                         {"id": "b", "addr": "127.0.0.1:1", "node": "n3"},
                         {"id": "c", "addr": "127.0.0.1:1", "node": "n4"}]
        }));
        let up = directory(&[
            (2, "n2", PeerState::Alive),
            (3, "n3", PeerState::Alive),
            (4, "n4", PeerState::Alive),
        ]);
        let down = directory(&[
            (2, "n2", PeerState::Alive),
            (3, "n3", PeerState::Down),
            (4, "n4", PeerState::Alive),
        ]);
        let t1 =
            RoutingTable::build(1, vec![input(Arc::clone(&s), &metrics)], &RoutingTable::default(), &up, 0);
        let t2 = RoutingTable::build(2, vec![input(s, &metrics)], &t1, &down, 0);
        let (r1, r2) = (t1.get("h").expect("route"), t2.get("h").expect("route"));
        let mut moved = 0;
        for i in 0..3_000u32 {
            let client = SocketAddr::from((i.to_be_bytes(), 1));
            let before = r1.candidates(client).as_slice()[0];
            assert_eq!(before, r1.candidates(client).as_slice()[0], "stable");
            let after = r2.candidates(client).as_slice()[0];
            if before == 1 {
                assert_ne!(after, 1);
                // Where the ring walk sends it: the next candidate of before.
                assert_eq!(after, r1.candidates(client).as_slice()[1]);
                moved += 1;
            } else {
                assert_eq!(before, after, "a key of a live peer moved");
            }
        }
        assert!(moved > 500, "{moved}");
    }

    /// A local backend without an address (its name does not resolve) is
    /// unhealthy and never tried, not even in panic mode; the route stays.
    #[test]
    fn a_backend_without_an_address_is_never_tried() {
        let metrics = Metrics::new().expect("metrics");
        let s = spec(serde_json::json!({
            "name": "n", "listen": "127.0.0.1:0", "balance": "round_robin",
            "backends": [{"id": "a", "addr": "127.0.0.1:1"}, {"id": "gone", "addr": "gone.invalid:80"}]
        }));
        let mut inp = input(s, &metrics);
        inp.resolved = vec![resolved_literals_one("127.0.0.1:1"), Resolved::default()];
        let (state, backends, spec) = (Arc::clone(&inp.state), inp.backends.clone(), Arc::clone(&inp.spec));
        let t = RoutingTable::build(1, vec![inp], &RoutingTable::default(), &standalone(), 0);
        let r = t.get("n").expect("route");
        assert_eq!((r.healthy.clone(), r.panic_mode), (vec![true, false], false));
        assert_eq!(metrics.backend_healthy.with_label_values(&["n", "gone"]).get(), 0);
        for port in 0..4u16 {
            assert_eq!(r.candidates(SocketAddr::from(([10, 0, 0, 1], port))).as_slice(), &[0]);
        }
        // Panic mode: the other backend is down too; the one without an
        // address is still not tried.
        backends[0].set_check_up(false);
        let again = RouteInput {
            spec,
            listen: "127.0.0.1:0".parse().expect("addr"),
            state,
            backends,
            resolved: vec![resolved_literals_one("127.0.0.1:1"), Resolved::default()],
            chaos: Arc::default(),
        };
        let t = RoutingTable::build(2, vec![again], &t, &standalone(), 0);
        let r = t.get("n").expect("route");
        assert!(r.panic_mode);
        assert_eq!(r.candidates(SocketAddr::from(([10, 0, 0, 1], 1))).as_slice(), &[0]);
    }

    /// The ring is keyed by backend id: a new answer for a host name moves
    /// no key.
    #[test]
    fn a_new_answer_moves_no_consistent_hash_key() {
        let metrics = Metrics::new().expect("metrics");
        let s = spec(serde_json::json!({
            "name": "h", "listen": "127.0.0.1:0", "balance": "consistent_hash",
            "backends": [{"id": "a", "addr": "a.example:80"}, {"id": "b", "addr": "b.example:80"},
                         {"id": "c", "addr": "c.example:80"}]
        }));
        let with = |addrs: [&str; 3]| {
            let mut inp = input(Arc::clone(&s), &metrics);
            inp.resolved = addrs.iter().map(|a| resolved_literals_one(a)).collect();
            inp
        };
        let t1 = RoutingTable::build(
            1,
            vec![with(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])],
            &RoutingTable::default(),
            &standalone(),
            0,
        );
        let t2 = RoutingTable::build(
            2,
            vec![with(["10.0.1.1:80", "10.0.0.3:80", "10.0.0.2:80"])],
            &t1,
            &standalone(),
            0,
        );
        let (r1, r2) = (t1.get("h").expect("route"), t2.get("h").expect("route"));
        assert!(Arc::ptr_eq(r1.balancer.ring().expect("ring"), r2.balancer.ring().expect("ring")));
        for i in 0..2_000u32 {
            let client = SocketAddr::from((i.to_be_bytes(), 1));
            assert_eq!(r1.candidates(client).as_slice(), r2.candidates(client).as_slice(), "{client}");
        }
        assert_eq!(r2.resolved[0].addrs.as_ref(), &["10.0.1.1:80".parse::<SocketAddr>().expect("addr")]);
    }

    #[test]
    fn max_connections_admits_exactly_max() {
        let metrics = Metrics::new().expect("metrics");
        let st = Arc::new(RouteState::new("r", &metrics));
        let g1 = st.try_admit(2);
        let g2 = st.try_admit(2);
        assert!(g1.is_some() && g2.is_some());
        assert!(st.try_admit(2).is_none());
        assert_eq!(st.m.rejected_max_connections.get(), 1);
        drop(g1);
        assert!(st.try_admit(2).is_some());
    }
}
