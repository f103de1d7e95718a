//! The table publisher: the one task that turns (configured routes, backend
//! health) into a new routing table, swaps it in, and reconciles listeners.
//!
//! Inputs: `Command`s (a new set of routes from a reload or the Raft log; a
//! new peer directory from membership; stop accepting at shutdown), health
//! transitions (a `Notify` woken by checks and ejections), and the end of
//! the earliest ejection.
//! The data plane never waits on this task: it only reads the last table.

use std::sync::Arc;

use arc_swap::ArcSwap;
use ferry_client::RouteSpec;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::registry::Registry;
use crate::dataplane::clock::Clock;
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
    /// Stop every listener (shutdown); replies when done.
    StopAccepting { reply: oneshot::Sender<()> },
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
}

impl Publisher {
    /// A publisher with no routes yet and the directory `peers`.
    pub fn new(
        registry: Registry,
        listeners: Listeners,
        table: Arc<ArcSwap<RoutingTable>>,
        peers: Arc<PeerDirectory>,
        clock: Clock,
        metrics: Metrics,
    ) -> Self {
        Self { registry, listeners, table, specs: Vec::new(), peers, clock, metrics }
    }

    /// Replaces the peer directory and republishes if it changed.
    pub fn set_peers(&mut self, peers: Arc<PeerDirectory>) {
        if *peers == *self.peers {
            return;
        }
        self.peers = peers;
        self.publish();
        info!(peers = self.peers.peers().len(), generation = self.table.load().generation, "peers applied");
    }

    /// Replaces the routes, publishes the table and reconciles listeners;
    /// returns the routes that could not be bound. New and moved routes are
    /// bound before anything changes, so with `all_or_nothing` a route that
    /// cannot be bound leaves the table and every listener as they were.
    pub fn apply_routes(&mut self, routes: Vec<RouteSpec>, all_or_nothing: bool) -> Vec<BindError> {
        let plan = self.listeners.plan(&self.listens(&routes));
        if all_or_nothing && !plan.errors.is_empty() {
            info!(routes = routes.len(), "routes rejected: a listener cannot be bound; nothing changed");
            return plan.errors;
        }
        let previous = std::mem::replace(&mut self.specs, routes.into_iter().map(Arc::new).collect());
        self.publish();
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
            info!(
                routes = self.specs.len(),
                "routes rejected: a listener cannot be bound; the previous routes are back"
            );
            return errors;
        }
        info!(routes = self.specs.len(), generation = self.table.load().generation, "routes applied");
        errors
    }

    /// `(name, listen address)` of each route, for the listeners.
    fn listens<'a>(
        &self,
        routes: impl IntoIterator<Item = &'a RouteSpec>,
    ) -> Vec<(String, std::net::SocketAddr)> {
        routes.into_iter().map(|r| (r.name.clone(), self.registry.listen_addr(r))).collect()
    }

    /// Builds and swaps in a new table from the current routes and health.
    fn publish(&mut self) {
        let prev = self.table.load_full();
        let inputs = self.registry.inputs(&self.specs, &self.peers);
        let next = RoutingTable::build(prev.generation + 1, inputs, &prev, &self.peers, self.clock.now_ms());
        self.metrics.table_generation.set(next.generation as i64);
        debug!(generation = next.generation, "routing table published");
        self.table.store(Arc::new(next));
    }

    /// Serves commands and health changes until the command channel closes.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>, changed: Arc<Notify>) {
        loop {
            let next_end = self.table.load().next_ejection_end(self.clock.now_ms());
            let wake = next_end.map(|ms| self.clock.instant(ms));
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::ApplyRoutes { routes, all_or_nothing, reply }) => {
                        let _ = reply.send(self.apply_routes(routes, all_or_nothing));
                    }
                    Some(Command::SetPeers { peers }) => self.set_peers(peers),
                    Some(Command::StopAccepting { reply }) => {
                        self.listeners.stop_accepting();
                        let _ = reply.send(());
                    }
                    None => return,
                },
                () = changed.notified() => self.publish(),
                () = sleep_until_opt(wake), if wake.is_some() => self.publish(),
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
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::cluster::hop::HopClient;
    use crate::dataplane::listener::{ListenerContext, WorkerLoads};

    fn route(name: &str) -> RouteSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "listen": "127.0.0.1:0", "balance": "round_robin",
            "backends": [{"id": "a", "addr": "127.0.0.1:1"}]
        }))
        .expect("route json")
    }

    /// A node that is shutting down still applies the routes its Raft log
    /// delivers. Before the listeners were closed for good, a route applied
    /// after `StopAccepting` bound a new listener whose accept loop never
    /// ended, and the shutdown drain waited for it forever (a hang seen in
    /// `cluster_api`, where a follower applied a route as it was stopped).
    #[tokio::test]
    async fn routes_applied_after_stop_accepting_bind_nothing_and_the_drain_ends() {
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
        let publisher =
            Publisher::new(registry, listeners, Arc::clone(&table), Arc::default(), Clock::new(), metrics);
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
