//! The routing table: the immutable snapshot the data plane reads.
//!
//! The control plane builds a new table with [`RoutingTable::build`] whenever
//! the configuration or a backend's health changes, and publishes it with one
//! atomic swap. A connection loads the table once, when it is accepted, and
//! keeps its `Arc<RouteEntry>` to the end: a swap never disturbs connections
//! already running. `build` is a pure function of its inputs (specs, the
//! long-lived per-route and per-backend state, the previous table for ring
//! reuse, and the time), so it is tested without sockets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ferry_client::RouteSpec;
use prometheus::{Histogram, IntCounter, IntGauge};

use super::backend::{BackendState, EjectPolicy};
use super::balance::{Balancer, Candidates};
use crate::telemetry::metrics::Metrics;

/// State of a route that outlives table rebuilds (keyed by route name).
#[derive(Debug)]
pub struct RouteState {
    pub name: String,
    active: AtomicU64,
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

/// One route as the data plane sees it.
#[derive(Debug)]
pub struct RouteEntry {
    pub spec: Arc<RouteSpec>,
    /// The address to bind (`:PORT` resolved against the node's bind address).
    pub listen: SocketAddr,
    pub backends: Vec<Arc<BackendState>>,
    pub state: Arc<RouteState>,
    /// `healthy[i]`: backend `i` took new connections when the table was built.
    pub healthy: Vec<bool>,
    /// No backend was healthy, so every backend of weight > 0 is tried.
    pub panic_mode: bool,
    pub balancer: Balancer,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub eject: EjectPolicy,
}

impl RouteEntry {
    /// Ordered candidates for a connection from `client`.
    pub fn candidates(&self, client: SocketAddr) -> Candidates {
        self.balancer.candidates(client, self.spec.max_connect_attempts as usize, |i| {
            self.backends[i as usize].active()
        })
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
}

/// Every route, by name.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Bumped by every rebuild.
    pub generation: u64,
    routes: HashMap<String, Arc<RouteEntry>>,
}

impl RoutingTable {
    /// Builds generation `generation` from `inputs` at `now_ms`, reusing
    /// `prev`'s hash rings where a route's backends and weights are unchanged.
    pub fn build(generation: u64, inputs: Vec<RouteInput>, prev: &RoutingTable, now_ms: u64) -> Self {
        let routes = inputs
            .into_iter()
            .map(|input| {
                let prev_ring = prev.routes.get(&input.spec.name).and_then(|r| r.balancer.ring());
                let entry = build_route(input, prev_ring, now_ms);
                (entry.spec.name.clone(), Arc::new(entry))
            })
            .collect();
        Self { generation, routes }
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

fn build_route(
    input: RouteInput,
    prev_ring: Option<&Arc<super::balance::HashRing>>,
    now_ms: u64,
) -> RouteEntry {
    let spec = input.spec;
    let weights: Vec<(String, u32)> = spec.backends.iter().map(|b| (b.id.clone(), b.weight)).collect();
    let healthy: Vec<bool> = input.backends.iter().map(|b| b.healthy(now_ms)).collect();
    for (b, h) in input.backends.iter().zip(&healthy) {
        b.set_healthy_gauge(*h);
    }
    let mut mask: Vec<bool> = healthy.iter().zip(&weights).map(|(h, (_, w))| *h && *w > 0).collect();
    let panic_mode = !mask.iter().any(|m| *m);
    if panic_mode {
        // Better to try backends that may be up than to refuse everything.
        mask = weights.iter().map(|(_, w)| *w > 0).collect();
    }
    let balancer = Balancer::build(spec.balance, spec.hash_key, spec.vnodes, &weights, mask, prev_ring);
    RouteEntry {
        listen: input.listen,
        backends: input.backends,
        state: input.state,
        healthy,
        panic_mode,
        balancer,
        connect_timeout: Duration::from_millis(spec.connect_timeout_ms),
        idle_timeout: Duration::from_millis(spec.idle_timeout_ms),
        eject: EjectPolicy { after_failures: spec.eject_after_failures, backoff_ms: spec.eject_backoff_ms },
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
            .map(|b| {
                let addr = b.addr.parse().expect("addr");
                Arc::new(BackendState::new(&spec.name, &b.id, addr, Arc::clone(&notify), metrics))
            })
            .collect();
        RouteInput {
            listen: "127.0.0.1:0".parse().expect("addr"),
            state: Arc::new(RouteState::new(&spec.name, metrics)),
            backends,
            spec,
        }
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
        let t = RoutingTable::build(1, vec![inp], &RoutingTable::default(), 0);
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
        let t = RoutingTable::build(1, vec![inp], &RoutingTable::default(), 50);
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
        let t1 = RoutingTable::build(1, vec![input(Arc::clone(&s), &metrics)], &RoutingTable::default(), 0);
        let t2 = RoutingTable::build(2, vec![input(s, &metrics)], &t1, 0);
        let ring = |t: &RoutingTable| Arc::clone(t.get("h").and_then(|r| r.balancer.ring()).expect("ring"));
        assert!(Arc::ptr_eq(&ring(&t1), &ring(&t2)));
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
