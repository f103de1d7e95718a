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
use tracing::{debug, info};

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
    /// routes whose listener could not be bound.
    ApplyRoutes { routes: Vec<RouteSpec>, reply: oneshot::Sender<Vec<BindError>> },
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

    /// Replaces the routes, publishes the table and reconciles listeners.
    pub fn apply_routes(&mut self, routes: Vec<RouteSpec>) -> Vec<BindError> {
        self.specs = routes.into_iter().map(Arc::new).collect();
        self.publish();
        let errors = self.listeners.reconcile(&self.table.load());
        info!(routes = self.specs.len(), generation = self.table.load().generation, "routes applied");
        errors
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
                    Some(Command::ApplyRoutes { routes, reply }) => {
                        let _ = reply.send(self.apply_routes(routes));
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
