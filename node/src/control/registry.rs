//! The registry of long-lived data-plane state: one `RouteState` per route
//! name and one `BackendState` per (route, backend id, address, health-check
//! settings). It hands the same `Arc`s to every table build, creates state
//! (and the health-check task) for new entries, and retires state that a new
//! configuration no longer names: its check stops and its metric series go.
//!
//! A backend pinned to another node gets no active check here: its owner
//! checks it, and this node follows the owner's membership state instead.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ferry_client::{HealthCheckSpec, ListenAddr, RouteSpec};
use tokio::sync::Notify;

use crate::dataplane::backend::BackendState;
use crate::dataplane::checker;
use crate::dataplane::peers::PeerDirectory;
use crate::dataplane::table::{RouteInput, RouteState};
use crate::telemetry::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BackendKey {
    route: String,
    id: String,
    addr: SocketAddr,
    /// The active check, when this node runs one (local backends only).
    check: Option<HealthCheckSpec>,
    /// Served by this node (not pinned to another).
    local: bool,
}

/// Long-lived state, owned by the publisher task.
#[derive(Debug)]
pub struct Registry {
    metrics: Metrics,
    /// Woken by every health transition.
    changed: Arc<Notify>,
    bind_addr: IpAddr,
    routes: HashMap<String, Arc<RouteState>>,
    backends: HashMap<BackendKey, Arc<BackendState>>,
}

impl Registry {
    /// An empty registry; `changed` is notified on health transitions.
    pub fn new(metrics: Metrics, changed: Arc<Notify>, bind_addr: IpAddr) -> Self {
        Self { metrics, changed, bind_addr, routes: HashMap::new(), backends: HashMap::new() }
    }

    /// The table-builder inputs for `specs` (which must be valid), creating
    /// and retiring state so that the registry holds exactly what they name.
    /// `peers` says which backends are local (and so actively checked here).
    pub fn inputs(&mut self, specs: &[Arc<RouteSpec>], peers: &PeerDirectory) -> Vec<RouteInput> {
        let mut live_routes = HashSet::new();
        let mut live_backends = HashSet::new();
        let mut inputs = Vec::with_capacity(specs.len());
        for spec in specs {
            live_routes.insert(spec.name.clone());
            let state = Arc::clone(
                self.routes
                    .entry(spec.name.clone())
                    .or_insert_with(|| Arc::new(RouteState::new(&spec.name, &self.metrics))),
            );
            let mut backends = Vec::with_capacity(spec.backends.len());
            for b in &spec.backends {
                // Validated: the address parses.
                let Ok(addr) = b.addr.parse::<SocketAddr>() else { continue };
                let local = peers.is_local(b.node.as_deref());
                let check = spec.health_check.filter(|_| local);
                let key = BackendKey { route: spec.name.clone(), id: b.id.clone(), addr, check, local };
                let backend = self.backends.entry(key.clone()).or_insert_with(|| {
                    let backend = Arc::new(BackendState::new(
                        &spec.name,
                        &b.id,
                        addr,
                        Arc::clone(&self.changed),
                        &self.metrics,
                    ));
                    if let Some(check) = check {
                        let result = |r: &str| {
                            self.metrics.health_checks_total.with_label_values(&[&spec.name, &b.id, r])
                        };
                        checker::spawn(Arc::clone(&backend), check, result("pass"), result("fail"));
                    }
                    backend
                });
                backends.push(Arc::clone(backend));
                live_backends.insert(key);
            }
            let listen = self.listen_addr(spec);
            inputs.push(RouteInput { spec: Arc::clone(spec), listen, state, backends });
        }
        self.retire(&live_routes, &live_backends);
        inputs
    }

    /// The address `spec` listens on: its `listen` resolved against the
    /// node's bind address (validated specs always parse).
    pub fn listen_addr(&self, spec: &RouteSpec) -> SocketAddr {
        ListenAddr::parse(&spec.listen)
            .map_or(SocketAddr::new(self.bind_addr, 0), |l| l.resolve(self.bind_addr))
    }

    fn retire(&mut self, live_routes: &HashSet<String>, live_backends: &HashSet<BackendKey>) {
        let stale: Vec<BackendKey> =
            self.backends.keys().filter(|k| !live_backends.contains(*k)).cloned().collect();
        for key in stale {
            if let Some(b) = self.backends.remove(&key) {
                b.cancel.cancel();
                // The same id may live on under a new address or check.
                if !live_backends.iter().any(|k| k.route == key.route && k.id == key.id) {
                    self.metrics.remove_backend(&key.route, &key.id);
                }
            }
        }
        self.routes.retain(|name, _| {
            let keep = live_routes.contains(name);
            if !keep {
                self.metrics.remove_route(name);
            }
            keep
        });
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for b in self.backends.values() {
            b.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::peers::{Peer, PeerState, SelfNode};

    fn checked_backends(metrics: &Metrics) -> Vec<String> {
        use prometheus::core::Collector;
        let mut ids: Vec<String> = metrics
            .health_checks_total
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().iter())
            .filter_map(|m| {
                m.get_label().iter().find(|l| l.name() == "backend").map(|l| l.value().to_string())
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Only backends this node serves get an active check: a backend pinned
    /// to another node is checked by its owner.
    #[tokio::test]
    async fn checks_only_local_backends() {
        let metrics = Metrics::new().expect("metrics");
        let mut registry = Registry::new(metrics.clone(), Arc::new(Notify::new()), [127, 0, 0, 1].into());
        let spec: RouteSpec = serde_json::from_value(serde_json::json!({
            "name": "r", "listen": "127.0.0.1:0", "health_check": {"interval_ms": 60000},
            "backends": [{"id": "plain", "addr": "127.0.0.1:1"},
                         {"id": "mine", "addr": "127.0.0.1:2", "node": "n1"},
                         {"id": "theirs", "addr": "127.0.0.1:3", "node": "n2"},
                         {"id": "nobody", "addr": "127.0.0.1:4", "node": "n9"}]
        }))
        .expect("route");
        let peers = PeerDirectory::new(
            SelfNode { id: 1, name: "n1".into() },
            [Peer {
                id: 2,
                name: "n2".into(),
                state: PeerState::Alive,
                cluster_addr: "127.0.0.2:1".parse().expect("addr"),
            }],
        );
        let inputs = registry.inputs(&[Arc::new(spec)], &peers);
        assert_eq!(inputs[0].backends.len(), 4);
        assert_eq!(checked_backends(&metrics), vec!["mine", "plain"]);
    }
}
