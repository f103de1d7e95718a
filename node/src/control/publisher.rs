//! The table publisher: the one task that turns (configured routes, backend
//! health) into a new routing table, swaps it in, and reconciles listeners.
//!
//! Inputs: `Command`s (a new set of routes from a reload or the Raft log; a
//! new peer directory from membership; stop accepting at shutdown), health
//! transitions (a `Notify` woken by checks and ejections), the end of the
//! earliest ejection, the answers for backend host names, and, while a
//! route could not be bound, a retry every [`BIND_RETRY`] (a route from
//! the Raft log stays in the table whether or not this node can bind it;
//! see `dataplane::listen_failures`).
//! The data plane never waits on this task: it only reads the last table.
//!
//! # Host names
//! Names are resolved here, never by a connection. A name new to this node
//! (a new route, a changed `addr`, a backend that became this node's) is
//! looked up before the table that uses it is published, all new names in
//! parallel and each within `resolve_timeout_ms`, so a route is served
//! resolved from its first connection (Envoy warms a DNS cluster the same
//! way). Every name is looked up again every `resolve_interval_ms` on tasks
//! of its own, while this task goes on; an answer that changes the
//! addresses or the error rebuilds the table, the same answer does not
//! (`control::names` has the hold rule).

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ferry_client::{HostPort, RouteSpec};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::names::{self, Names};
use super::registry::Registry;
use super::resolver::{Answer, Lookups, Resolve, ResolveSettings, SystemResolver};
use crate::dataplane::chaos::{self, PolicyInput};
use crate::dataplane::clock::{Clock, unix_ms};
use crate::dataplane::listen_failures::BIND_RETRY;
use crate::dataplane::listener::{BindError, Listeners};
use crate::dataplane::peers::PeerDirectory;
use crate::dataplane::table::RoutingTable;
use crate::telemetry::metrics::Metrics;

/// A request to the publisher.
#[derive(Debug)]
pub enum Command {
    /// Replace the configured routes (already validated); replies with the
    /// routes whose listener could not be bound. With `all_or_nothing` (a
    /// reload or an admin change on a standalone node) a route that cannot
    /// be bound rejects the whole set and nothing changes; without it (a
    /// committed Raft entry, which must be applied) the others are applied.
    ApplyRoutes { routes: Vec<RouteSpec>, all_or_nothing: bool, reply: oneshot::Sender<Vec<BindError>> },
    /// Replace the peer directory (membership changed); the table is
    /// rebuilt when it differs from the current one.
    SetPeers { peers: Arc<PeerDirectory> },
    /// Replace the chaos policies (a committed Raft entry changed them);
    /// the table is rebuilt when they differ.
    SetChaos { policies: Vec<PolicyInput> },
    /// Stop every listener (shutdown); replies when done.
    StopAccepting { reply: oneshot::Sender<()> },
    /// Replies once every command sent before it is applied (the table
    /// published, the listeners bound).
    Barrier { reply: oneshot::Sender<()> },
}

/// Owns the registry and the listeners; see the module doc.
#[derive(Debug)]
pub struct Publisher {
    registry: Registry,
    listeners: Listeners,
    table: Arc<ArcSwap<RoutingTable>>,
    specs: Vec<Arc<RouteSpec>>,
    peers: Arc<PeerDirectory>,
    clock: Clock,
    metrics: Metrics,
    /// What each backend host name resolves to.
    names: Names,
    /// The periodic lookups running.
    lookups: Lookups,
    resolver: Arc<dyn Resolve>,
    settings: ResolveSettings,
    /// When to bind the routes that failed again (`None`: none failed).
    retry_binds: Option<tokio::time::Instant>,
    /// Every chaos policy of the cluster, with its revision.
    chaos: Vec<PolicyInput>,
    /// The policies in effect on this node at the last publish, with the
    /// routes they act on.
    chaos_in_effect: BTreeMap<String, Vec<String>>,
}

impl Publisher {
    /// A publisher with no routes yet and the directory `peers`, resolving
    /// with the system resolver and the default settings.
    pub fn new(
        registry: Registry,
        listeners: Listeners,
        table: Arc<ArcSwap<RoutingTable>>,
        peers: Arc<PeerDirectory>,
        clock: Clock,
        metrics: Metrics,
    ) -> Self {
        let resolver: Arc<dyn Resolve> = Arc::new(SystemResolver::new());
        let settings = ResolveSettings::default();
        Self {
            registry,
            listeners,
            table,
            specs: Vec::new(),
            peers,
            clock,
            metrics,
            names: Names::default(),
            lookups: Lookups::new(Arc::clone(&resolver), settings.timeout),
            resolver,
            settings,
            retry_binds: None,
            chaos: Vec::new(),
            chaos_in_effect: BTreeMap::new(),
        }
    }

    /// Resolves host names with `resolver` and `settings` (`[node]
    /// resolve_interval_ms`, `resolve_timeout_ms`). Call before any route
    /// is applied.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>, settings: ResolveSettings) -> Self {
        self.lookups = Lookups::new(Arc::clone(&resolver), settings.timeout);
        self.resolver = resolver;
        self.settings = settings;
        self
    }

    /// Replaces the peer directory and republishes if it changed.
    pub async fn set_peers(&mut self, peers: Arc<PeerDirectory>) {
        if *peers == *self.peers {
            return;
        }
        self.peers = peers;
        // A backend may have become this node's own: its name is ours to resolve.
        let failed = self.resolve_new().await;
        self.publish();
        self.count_failures(&failed);
        self.forget_names();
        info!(peers = self.peers.peers().len(), generation = self.table.load().generation, "peers applied");
    }

    /// Replaces the routes, publishes the table and reconciles listeners;
    /// returns the routes that could not be bound. New and moved routes are
    /// bound before anything changes, so with `all_or_nothing` a route that
    /// cannot be bound leaves the table and every listener as they were.
    /// Host names new to this node are looked up before the table that
    /// uses them is published (at most `resolve_timeout_ms`).
    pub async fn apply_routes(&mut self, routes: Vec<RouteSpec>, all_or_nothing: bool) -> Vec<BindError> {
        let plan = self.listeners.plan(&self.listens(&routes));
        if all_or_nothing && !plan.errors.is_empty() {
            info!(routes = routes.len(), "routes rejected: a listener cannot be bound; nothing changed");
            return plan.errors;
        }
        let previous = std::mem::replace(&mut self.specs, routes.into_iter().map(Arc::new).collect());
        let failed = self.resolve_new().await;
        self.publish();
        self.count_failures(&failed);
        let errors = self.listeners.commit(plan);
        if all_or_nothing && !errors.is_empty() {
            // A route moving onto an address one of its own stopping
            // listeners held is bound only after that listener stopped, and
            // that bind failed (another socket holds an overlapping address,
            // or took the port in between): put the previous routes back,
            // so that a rejected change is still no change.
            self.specs = previous;
            self.publish();
            let plan = self.listeners.plan(&self.listens(self.specs.iter().map(AsRef::as_ref)));
            for e in self.listeners.commit(plan) {
                warn!("restoring the previous routes: {e}");
            }
            self.binds_changed();
            info!(
                routes = self.specs.len(),
                "routes rejected: a listener cannot be bound; the previous routes are back"
            );
            self.forget_names();
            return errors;
        }
        self.forget_names();
        self.binds_changed();
        info!(routes = self.specs.len(), generation = self.table.load().generation, "routes applied");
        errors
    }

    /// Looks up, in parallel, the host names the current routes use that
    /// this node does not know yet, and records the answers; returns those
    /// that failed (counted once the table has their backends).
    async fn resolve_new(&mut self) -> Vec<HostPort> {
        let wanted = names::wanted(self.specs.iter().map(AsRef::as_ref), &self.peers);
        let new = self.names.start_new(&wanted);
        if new.is_empty() {
            return Vec::new();
        }
        let mut lookups = Lookups::new(Arc::clone(&self.resolver), self.settings.timeout);
        for name in new {
            lookups.spawn(name);
        }
        let mut failed = Vec::new();
        while let Some((name, answer)) = lookups.next().await {
            if answer.is_err() {
                failed.push(name.clone());
            }
            self.record(&name, answer);
        }
        failed
    }

    /// Records an answer for `name`; true when the table must be rebuilt.
    fn record(&mut self, name: &HostPort, answer: Answer) -> bool {
        let interval_ms = self.settings.interval.as_millis() as u64;
        let changed = self.names.record(name, answer, self.clock.now_ms(), interval_ms);
        if changed {
            let now = self.names.resolved(name);
            match (&now.error, now.addrs.is_empty()) {
                (None, _) => info!(name = %name, addrs = ?now.addrs, "host name resolved"),
                (Some(e), false) => {
                    warn!(name = %name, error = %e, addrs = ?now.addrs, "host name lookup failed; keeping its last answer")
                }
                (Some(e), true) => {
                    warn!(name = %name, error = %e, "host name does not resolve; its backends are unhealthy")
                }
            }
        }
        changed
    }

    fn count_failures(&self, failed: &[HostPort]) {
        for name in failed {
            self.registry.count_resolve_failure(name);
        }
    }

    /// Forgets the names the current routes no longer use.
    fn forget_names(&mut self) {
        let wanted = names::wanted(self.specs.iter().map(AsRef::as_ref), &self.peers);
        self.names.retain(&wanted);
    }

    /// Starts the lookups that are due.
    fn start_due_lookups(&mut self) {
        for name in self.names.start_due(self.clock.now_ms()) {
            self.lookups.spawn(name);
        }
    }

    /// A periodic lookup ended: records it, and rebuilds if it changed.
    fn lookup_done(&mut self, name: HostPort, answer: Answer) {
        let failed = answer.is_err();
        if self.record(&name, answer) {
            self.publish();
        }
        if failed {
            self.registry.count_resolve_failure(&name);
        }
    }

    /// Binds the routes that are not listening again (their table entries
    /// are already there).
    fn retry_binds(&mut self) {
        let plan = self.listeners.plan(&self.listens(self.specs.iter().map(AsRef::as_ref)));
        self.listeners.commit(plan);
        self.binds_changed();
    }

    /// After a commit: `ferry_route_bind_failures` of every route, and the
    /// next retry while any failed.
    fn binds_changed(&mut self) {
        let failures = self.listeners.failures().load_full();
        for spec in &self.specs {
            let failed = i64::from(failures.contains_key(&spec.name));
            self.metrics.route_bind_failures.with_label_values(&[&spec.name]).set(failed);
        }
        self.retry_binds = (!failures.is_empty()).then(|| tokio::time::Instant::now() + BIND_RETRY);
    }

    /// `(name, listen address)` of each enabled route, for the listeners:
    /// a disabled route keeps its table entry and binds nothing (the
    /// listeners close its connections at once, see `Listeners::commit`).
    fn listens<'a>(
        &self,
        routes: impl IntoIterator<Item = &'a RouteSpec>,
    ) -> Vec<(String, std::net::SocketAddr)> {
        routes
            .into_iter()
            .filter(|r| r.enabled)
            .map(|r| (r.name.clone(), self.registry.listen_addr(r)))
            .collect()
    }

    /// Builds and swaps in a new table from the current routes, health and
    /// chaos policies, then tells each route's connections of a change in
    /// its policies.
    fn publish(&mut self) {
        let prev = self.table.load_full();
        let mut inputs = self.registry.inputs(&self.specs, &self.peers, &self.names);
        let node = self.peers.me().map_or("", |m| m.name.as_str());
        let now = unix_ms();
        for input in &mut inputs {
            input.chaos = Arc::new(chaos::resolve(&self.chaos, node, &input.spec, now, &self.metrics));
        }
        let next = RoutingTable::build(prev.generation + 1, inputs, &prev, &self.peers, self.clock.now_ms());
        self.metrics.table_generation.set(next.generation as i64);
        debug!(generation = next.generation, "routing table published");
        let next = Arc::new(next);
        self.table.store(Arc::clone(&next));
        let mut in_effect: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for route in next.routes() {
            route.state.chaos.set(&route.chaos);
            for p in &route.chaos.policies {
                in_effect.entry(p.name.clone()).or_default().push(route.spec.name.clone());
            }
        }
        for (name, routes) in &in_effect {
            if self.chaos_in_effect.get(name) != Some(routes) {
                info!(policy = %name, routes = ?routes, "chaos policy in effect on this node");
            }
        }
        for name in self.chaos_in_effect.keys().filter(|n| !in_effect.contains_key(*n)) {
            info!(policy = %name, "chaos policy no longer in effect on this node");
        }
        self.metrics.chaos_policies_active.set(in_effect.len() as i64);
        self.chaos_in_effect = in_effect;
    }

    /// Replaces the chaos policies and republishes if they changed.
    fn set_chaos(&mut self, policies: Vec<PolicyInput>) {
        if policies != self.chaos {
            self.chaos = policies;
            self.publish();
        }
    }

    /// Serves commands and health changes until the command channel closes.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>, changed: Arc<Notify>) {
        loop {
            let next_end = self.table.load().next_ejection_end(self.clock.now_ms());
            let wake = next_end.map(|ms| self.clock.instant(ms));
            let resolve = self.names.next_due().map(|ms| self.clock.instant(ms));
            let looking_up = !self.lookups.is_empty();
            let retry = self.retry_binds;
            // The next chaos expiry, on the wall clock policies are written in.
            let expiry = chaos::next_expiry(&self.chaos, unix_ms()).map(|at| {
                tokio::time::Instant::now() + std::time::Duration::from_millis(at.saturating_sub(unix_ms()))
            });
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::ApplyRoutes { routes, all_or_nothing, reply }) => {
                        let _ = reply.send(self.apply_routes(routes, all_or_nothing).await);
                    }
                    Some(Command::SetPeers { peers }) => self.set_peers(peers).await,
                    Some(Command::SetChaos { policies }) => self.set_chaos(policies),
                    Some(Command::StopAccepting { reply }) => {
                        self.listeners.stop_accepting();
                        self.binds_changed();
                        let _ = reply.send(());
                    }
                    Some(Command::Barrier { reply }) => {
                        let _ = reply.send(());
                    }
                    None => return,
                },
                () = changed.notified() => self.publish(),
                () = sleep_until_opt(wake), if wake.is_some() => self.publish(),
                () = sleep_until_opt(resolve), if resolve.is_some() => self.start_due_lookups(),
                Some((name, answer)) = self.lookups.next(), if looking_up => self.lookup_done(name, answer),
                () = sleep_until_opt(retry), if retry.is_some() => self.retry_binds(),
                () = sleep_until_opt(expiry), if expiry.is_some() => self.publish(),
            }
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
#[path = "publisher/resolution_tests.rs"]
mod resolution_tests;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::dataplane::hop::HopClient;
    use crate::dataplane::listener::{ListenerContext, WorkerLoads};

    fn route(name: &str) -> RouteSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "listen": "127.0.0.1:0", "balance": "round_robin",
            "backends": [{"id": "a", "addr": "127.0.0.1:1"}]
        }))
        .expect("route json")
    }

    /// A publisher of a standalone node (no peers) in a test, on the
    /// current runtime, and what reads its output.
    pub(super) struct Harness {
        pub(super) publisher: Publisher,
        pub(super) table: Arc<ArcSwap<RoutingTable>>,
        pub(super) bound: Arc<ArcSwap<std::collections::HashMap<String, std::net::SocketAddr>>>,
        pub(super) tracker: TaskTracker,
        pub(super) changed: Arc<Notify>,
        pub(super) metrics: Metrics,
    }

    /// A publisher with no routes (see [`Harness`]).
    pub(super) fn harness() -> Harness {
        let metrics = Metrics::new().expect("metrics");
        let (table, tracker) = (Arc::new(ArcSwap::from_pointee(RoutingTable::default())), TaskTracker::new());
        let listeners = Listeners::new(ListenerContext {
            table: Arc::clone(&table),
            tracker: tracker.clone(),
            clock: Clock::new(),
            hard_stop: CancellationToken::new(),
            drain: Duration::from_secs(30),
            copy_mode: Default::default(),
            runtimes: vec![tokio::runtime::Handle::current()],
            reuse_port: false,
            hops: Arc::new(HopClient::new("test", &metrics)),
            loads: Arc::new(WorkerLoads::new(1, Default::default(), &metrics)),
        });
        let bound = listeners.bound();
        let changed = Arc::new(Notify::new());
        let registry = Registry::new(metrics.clone(), Arc::clone(&changed), "127.0.0.1".parse().expect("ip"));
        let publisher = Publisher::new(
            registry,
            listeners,
            Arc::clone(&table),
            Arc::default(),
            Clock::new(),
            metrics.clone(),
        );
        Harness { publisher, table, bound, tracker, changed, metrics }
    }

    /// A node that is shutting down still applies the routes its Raft log
    /// delivers. Before the listeners were closed for good, a route applied
    /// after `StopAccepting` bound a new listener whose accept loop never
    /// ended, and the shutdown drain waited for it forever (a hang seen in
    /// `cluster_api`, where a follower applied a route as it was stopped).
    #[tokio::test]
    async fn routes_applied_after_stop_accepting_bind_nothing_and_the_drain_ends() {
        let Harness { publisher, table, bound, tracker, changed, .. } = harness();
        let (commands, rx) = mpsc::channel(4);
        let running = tokio::spawn(publisher.run(rx, changed));

        let apply = |routes: Vec<RouteSpec>| {
            let commands = commands.clone();
            async move {
                let (reply, done) = oneshot::channel();
                commands
                    .send(Command::ApplyRoutes { routes, all_or_nothing: true, reply })
                    .await
                    .expect("publisher runs");
                done.await.expect("publisher replies")
            }
        };
        assert!(apply(vec![route("a")]).await.is_empty());
        let first = *bound.load().get("a").expect("route a listens");
        let (reply, done) = oneshot::channel();
        commands.send(Command::StopAccepting { reply }).await.expect("publisher runs");
        done.await.expect("publisher replies");
        assert!(bound.load().is_empty(), "nothing listens after StopAccepting");

        // A late update: the table follows it, no listener does.
        assert!(apply(vec![route("a"), route("b")]).await.is_empty(), "a late update reports no error");
        assert_eq!(table.load().routes().len(), 2, "the table still follows the routes");
        assert!(bound.load().is_empty(), "a late update binds nothing: {:?}", bound.load());
        assert!(std::net::TcpStream::connect(first).is_err(), "{first} still accepts");
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("every accept loop ended after StopAccepting");
        drop(commands);
        running.await.expect("the publisher ends when its commands close");
    }
}
