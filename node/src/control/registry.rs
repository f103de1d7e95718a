//! The registry of long-lived data-plane state: one `RouteState` per route
//! name and one `BackendState` per (route, backend id, configured address,
//! health-check settings). It hands the same `Arc`s to every table build,
//! creates state (and the health-check task) for new entries, and retires
//! state that a new configuration no longer names: its check stops and its
//! metric series go.
//!
//! A backend pinned to another node gets no active check here: its owner
//! checks it, and this node follows the owner's membership state instead.
//!
//! A backend's addresses are not part of its identity: a host name's new
//! answer keeps the backend's health, ejection and connection counts, and
//! reaches its check task on a watch channel.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ferry_client::{BackendAddr, HostPort, ListenAddr, RouteSpec};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{Notify, watch};

use super::names::Names;
use crate::dataplane::backend::BackendState;
use crate::dataplane::checker;
use crate::dataplane::peers::PeerDirectory;
use crate::dataplane::table::{BackendKey, Resolved, RouteInput, RouteState};
use crate::telemetry::metrics::Metrics;

/// One backend's long-lived state and what feeds it.
#[derive(Debug)]
struct Held {
    state: Arc<BackendState>,
    /// The addresses its check connects to.
    addrs: watch::Sender<Arc<[SocketAddr]>>,
    /// The host name this node resolves for it, with its metric handles.
    name: Option<(HostPort, ResolveMetrics)>,
}

/// `ferry_backend_resolve_failures_total` and
/// `ferry_backend_resolved_addresses` of one backend.
#[derive(Debug)]
struct ResolveMetrics {
    failures: IntCounter,
    addresses: IntGauge,
}

/// Long-lived state, owned by the publisher task.
#[derive(Debug)]
pub struct Registry {
    metrics: Metrics,
    /// Woken by every health transition.
    changed: Arc<Notify>,
    bind_addr: IpAddr,
    routes: HashMap<String, Arc<RouteState>>,
    backends: HashMap<BackendKey, Held>,
}

impl Registry {
    /// An empty registry; `changed` is notified on health transitions.
    pub fn new(metrics: Metrics, changed: Arc<Notify>, bind_addr: IpAddr) -> Self {
        Self { metrics, changed, bind_addr, routes: HashMap::new(), backends: HashMap::new() }
    }

    /// The table-builder inputs for `specs` (which must be valid), creating
    /// and retiring state so that the registry holds exactly what they name.
    /// `peers` says which backends are local (and so actively checked and
    /// resolved here); `names` holds what their host names resolve to.
    pub fn inputs(
        &mut self,
        specs: &[Arc<RouteSpec>],
        peers: &PeerDirectory,
        names: &Names,
    ) -> Vec<RouteInput> {
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
            let mut resolved = Vec::with_capacity(spec.backends.len());
            for b in &spec.backends {
                let local = peers.is_local(b.node.as_deref());
                // Every backend gets an entry, so `backends[i]` stays
                // `spec.backends[i]`; an address that does not parse
                // (validation keeps them out) is one without an address.
                let (here, name) = match BackendAddr::parse(&b.addr) {
                    _ if !local => (Resolved::default(), None),
                    Ok(BackendAddr::Ip(addr)) => (Resolved { addrs: Arc::from([addr]), error: None }, None),
                    Ok(BackendAddr::Name(name)) => (names.resolved(&name), Some(name)),
                    Err(e) => (Resolved { addrs: Arc::default(), error: Some(Arc::from(e)) }, None),
                };
                let key = BackendKey::of(spec, b, local);
                let held = self.backends.entry(key.clone()).or_insert_with(|| {
                    let state = Arc::new(BackendState::new(
                        &spec.name,
                        &b.id,
                        &b.addr,
                        Arc::clone(&self.changed),
                        &self.metrics,
                    ));
                    let (addrs, watched) = watch::channel(Arc::clone(&here.addrs));
                    if let Some(check) = key.check {
                        let result = |r: &str| {
                            self.metrics.health_checks_total.with_label_values(&[&spec.name, &b.id, r])
                        };
                        checker::spawn(Arc::clone(&state), check, watched, result("pass"), result("fail"));
                    }
                    let name = name.map(|n| {
                        let labels = [spec.name.as_str(), b.id.as_str()];
                        let metrics = ResolveMetrics {
                            failures: self.metrics.backend_resolve_failures_total.with_label_values(&labels),
                            addresses: self.metrics.backend_resolved_addresses.with_label_values(&labels),
                        };
                        (n, metrics)
                    });
                    Held { state, addrs, name }
                });
                held.addrs.send_if_modified(|current| {
                    let modified = *current != here.addrs;
                    if modified {
                        *current = Arc::clone(&here.addrs);
                    }
                    modified
                });
                if let Some((_, m)) = &held.name {
                    m.addresses.set(here.addrs.len() as i64);
                }
                backends.push(Arc::clone(&held.state));
                resolved.push(here);
                live_backends.insert(key);
            }
            let listen = self.listen_addr(spec);
            let chaos = Arc::default();
            inputs.push(RouteInput { spec: Arc::clone(spec), listen, state, backends, resolved, chaos });
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

    /// Counts a failed lookup of `name` on every backend addressed by it.
    pub fn count_resolve_failure(&self, name: &HostPort) {
        for held in self.backends.values() {
            if let Some((n, m)) = &held.name
                && n == name
            {
                m.failures.inc();
            }
        }
    }

    fn retire(&mut self, live_routes: &HashSet<String>, live_backends: &HashSet<BackendKey>) {
        let stale: Vec<BackendKey> =
            self.backends.keys().filter(|k| !live_backends.contains(*k)).cloned().collect();
        for key in stale {
            if let Some(b) = self.backends.remove(&key) {
                b.state.cancel.cancel();
                // The same id may live on under a new address or check.
                let same = |k: &&BackendKey| k.route == key.route && k.id == key.id;
                match live_backends.iter().find(same) {
                    None => self.metrics.remove_backend(&key.route, &key.id),
                    // Now an IP literal, or resolved by another node.
                    Some(k) if b.name.is_some() && self.backends.get(k).is_some_and(|h| h.name.is_none()) => {
                        self.metrics.remove_backend_resolution(&key.route, &key.id)
                    }
                    Some(_) => {}
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
            b.state.cancel.cancel();
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
        let inputs = registry.inputs(&[Arc::new(spec)], &peers, &Names::default());
        assert_eq!(inputs[0].backends.len(), 4);
        assert_eq!(checked_backends(&metrics), vec!["mine", "plain"]);
    }

    /// A host name's new answer keeps the backend's state (health,
    /// ejection, connections); only another configured address replaces it.
    /// Before, a backend whose address did not parse was skipped, which
    /// shifted every later backend's state by one.
    #[tokio::test]
    async fn a_new_answer_keeps_the_backend_state() {
        use crate::control::resolver::ResolveError;
        let metrics = Metrics::new().expect("metrics");
        let mut registry = Registry::new(metrics.clone(), Arc::new(Notify::new()), [127, 0, 0, 1].into());
        let spec = |addr: &str| {
            let spec: RouteSpec = serde_json::from_value(serde_json::json!({
                "name": "r", "listen": "127.0.0.1:0",
                "backends": [{"id": "db", "addr": addr}, {"id": "ip", "addr": "127.0.0.1:2"}]
            }))
            .expect("route");
            vec![Arc::new(spec)]
        };
        let db = HostPort { host: "db.example".into(), port: 80 };
        let mut names = Names::default();
        names.start_new(&[db.clone()].into_iter().collect());
        names.record(&db, Ok(vec!["10.0.0.1:80".parse().expect("addr")]), 0, 10);
        let peers = PeerDirectory::default();
        let first = registry.inputs(&spec("db.example:80"), &peers, &names);
        names.record(&db, Err(ResolveError::Empty), 10, 10);
        names.record(&db, Ok(vec!["10.0.0.2:80".parse().expect("addr")]), 20, 10);
        let second = registry.inputs(&spec("db.example:80"), &peers, &names);
        assert!(Arc::ptr_eq(&first[0].backends[0], &second[0].backends[0]));
        assert_eq!(
            second[0].resolved[0].addrs.as_ref(),
            &["10.0.0.2:80".parse::<SocketAddr>().expect("addr")]
        );
        let third = registry.inputs(&spec("db-2.example:80"), &peers, &names);
        assert!(!Arc::ptr_eq(&first[0].backends[0], &third[0].backends[0]), "a new addr is a new backend");
        assert!(third[0].resolved[0].addrs.is_empty(), "a name not resolved yet has no address");
        assert!(Arc::ptr_eq(&first[0].backends[1], &third[0].backends[1]));
        // An address that does not parse (validation keeps them out) still
        // has its place: `backends[i]` is `spec.backends[i]`.
        let bad = registry.inputs(&spec("x"), &peers, &names);
        assert_eq!(bad[0].backends.len(), 2);
        assert_eq!((bad[0].backends[0].id.as_str(), bad[0].backends[1].id.as_str()), ("db", "ip"));
        assert!(bad[0].resolved[0].addrs.is_empty() && bad[0].resolved[0].error.is_some());
    }
}
