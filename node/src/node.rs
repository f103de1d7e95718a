//! The composition root: starts a node from a validated [`Config`] and owns
//! its lifecycle (apply new routes, graceful shutdown).
//!
//! Stopping a cluster node ([`Node::shutdown`]) keeps its place in the
//! cluster: it drains and exits, peers see it down, and it resumes its seat
//! when it restarts from the same data dir (a restart is far more common than
//! a departure). It leaves the cluster first (Raft, then gossip) only when
//! asked to (`POST /v1/leave`) or with `[cluster] leave_on_terminate`.
//!
//! Servers take pre-bound listeners and one shutdown token, so tests run
//! whole nodes in-process on port 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;
use ferry_client::RouteSpec;
use ferry_client::snapshot::Snapshot;
use ferry_raft_store::SyncMode;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigErrors};
use crate::control::member::{Member, MemberError, MemberHandle, MemberServices};
use crate::control::publisher::{Command, Publisher};
use crate::control::registry::Registry;
use crate::control::resolver::SystemResolver;
use crate::dataplane::clock::Clock;
use crate::dataplane::hop::{DEFAULT_MAX_HOPS, HopClient, HopServer, HopServerConfig};
use crate::dataplane::listener::{BindError, ListenerContext, Listeners, WorkerLoads};
use crate::dataplane::peers::{PeerDirectory, SelfNode};
use crate::dataplane::table::RoutingTable;
use crate::dataplane::workers::Workers;
use crate::telemetry::metrics::Metrics;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("admin.addr: cannot listen on {addr}: {source}")]
    Admin { addr: SocketAddr, source: std::io::Error },
    #[error("chaos.toxiproxy_addr: cannot listen on {addr}: {source}")]
    Toxiproxy { addr: SocketAddr, source: std::io::Error },
    #[error("{}", join_lines(.0))]
    Listen(Vec<BindError>),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("node.workers: cannot start the worker threads: {0}")]
    Workers(std::io::Error),
    #[error(transparent)]
    Member(#[from] MemberError),
    #[error("admin.token_file: {0}")]
    Token(String),
    #[error("{UNSAFE_FAULT_ENV}: unknown fault {0:?} (known: {known})", known = Faults::NAMES.join(", "))]
    UnsafeFault(String),
}

/// The fault switch: a comma-separated list of faults ([`Faults`]) that
/// turn a guarantee off, for jepsen-lite's proof that its checkers catch the
/// violation. Never set it otherwise.
pub const UNSAFE_FAULT_ENV: &str = "FERRYD_UNSAFE_FAULT";

/// The faults [`UNSAFE_FAULT_ENV`] turns on; all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// `stale-reads`: linearizable reads skip the read barrier and may
    /// serve stale state.
    pub stale_reads: bool,
    /// `no-write-deadline`: the leader proposes writes whatever their
    /// deadline, and timed-out cluster connections are closed, not aborted
    /// (the behaviour before issue 22): a write answered 503 may take
    /// effect any time later.
    pub no_write_deadline: bool,
    /// `skip-sync`: the Raft log store skips its fdatasync, so an
    /// acknowledged write may be lost when every node loses power.
    pub skip_sync: bool,
}

impl Faults {
    /// Every fault's name, as the switch spells it.
    pub const NAMES: [&'static str; 3] = ["stale-reads", "no-write-deadline", "skip-sync"];

    /// Parses the switch's value: names separated by commas (blanks around
    /// them ignored; empty: none). An unknown name is an error naming it.
    pub fn parse(value: &str) -> Result<Self, StartError> {
        let mut faults = Faults::default();
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "stale-reads" => faults.stale_reads = true,
                "no-write-deadline" => faults.no_write_deadline = true,
                "skip-sync" => faults.skip_sync = true,
                other => return Err(StartError::UnsafeFault(other.to_string())),
            }
        }
        Ok(faults)
    }

    /// Reads [`UNSAFE_FAULT_ENV`] (unset: none) and warns of each fault on.
    pub fn from_env() -> Result<Self, StartError> {
        let faults = match std::env::var(UNSAFE_FAULT_ENV) {
            Ok(v) => Self::parse(&v)?,
            Err(std::env::VarError::NotPresent) => Faults::default(),
            Err(std::env::VarError::NotUnicode(v)) => {
                return Err(StartError::UnsafeFault(v.to_string_lossy().into_owned()));
            }
        };
        if faults.stale_reads {
            warn!("{UNSAFE_FAULT_ENV}=stale-reads: linearizable reads are NOT linearizable on this node");
        }
        if faults.no_write_deadline {
            warn!(
                "{UNSAFE_FAULT_ENV}=no-write-deadline: writes are proposed past their deadline; a write \
                 answered 503 may take effect at any later time"
            );
        }
        if faults.skip_sync {
            warn!("{UNSAFE_FAULT_ENV}=skip-sync: the Raft log is NOT synced; a power loss may lose writes");
        }
        Ok(faults)
    }
}

/// Reads `[admin] token_file` (checked by validation too; read again here,
/// before anything is bound, for the value).
fn admin_token(config: &Config) -> Result<Option<String>, StartError> {
    config.admin.read_token().map_err(StartError::Token)
}

/// Why new routes were not (fully) applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Nothing changed.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// These routes could not be bound, and nothing changed.
    #[error("{}", join_lines(.0))]
    Bind(Vec<BindError>),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Stopped,
    /// In cluster mode routes change through the admin API only.
    #[error(
        "cluster mode: [[routes]] in the file only seed a new cluster; change routes through the admin API"
    )]
    ClusterMode,
}

fn join_lines(errors: &[BindError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open at the drain deadline, closed by force.
    pub forced: usize,
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    admin_addr: SocketAddr,
    bind_addr: std::net::IpAddr,
    table: Arc<ArcSwap<RoutingTable>>,
    bound: Arc<ArcSwap<HashMap<String, SocketAddr>>>,
    commands: mpsc::Sender<Command>,
    tracker: TaskTracker,
    /// Client connections per worker (what the drain reports).
    loads: Arc<WorkerLoads>,
    hard_stop: CancellationToken,
    admin_stop: CancellationToken,
    admin_task: JoinHandle<()>,
    /// The Toxiproxy-compatible API (`[chaos] toxiproxy_addr`), stopped
    /// with the admin API.
    toxiproxy_task: Option<JoinHandle<()>>,
    draining: Arc<AtomicBool>,
    drain: Duration,
    metrics: Metrics,
    workers: Workers,
    member: Option<Member>,
    /// The cluster port's hop server, told to refuse new hops on shutdown.
    hops: Option<HopServer>,
    leave: CancellationToken,
    leave_timeout: Duration,
    /// `[cluster] leave_on_terminate`: leave on every shutdown.
    leave_on_terminate: bool,
}

impl Node {
    /// Binds the admin API and every route listener, then serves. Fails,
    /// leaving nothing running, if any of them cannot be bound.
    pub async fn start(config: &Config) -> Result<Node, StartError> {
        Self::start_with(config, None).await
    }

    /// [`Node::start`] for `ferryd --restore-snapshot`: a cluster node
    /// whose new cluster takes `restore` (verified) as its first config
    /// instead of the file's routes (see `control::member`).
    pub async fn start_with(config: &Config, restore: Option<Snapshot>) -> Result<Node, StartError> {
        let faults = Faults::from_env()?;
        let token = admin_token(config)?;
        let metrics = Metrics::new()?;
        let clock = Clock::new();
        let table = Arc::new(ArcSwap::from_pointee(RoutingTable::default()));
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let drain = Duration::from_millis(config.node.drain_timeout_ms);
        let changed = Arc::new(Notify::new());
        let workers = Workers::start(config.node.workers).map_err(StartError::Workers)?;
        let cluster_id = config.cluster.as_ref().map(|c| c.cluster_id.clone()).unwrap_or_default();
        // A standalone node knows no node, not even itself; a cluster node
        // gets its directory once its member (and id) is up.
        let peers = Arc::new(PeerDirectory::default());
        let loads = Arc::new(WorkerLoads::new(workers.handles().len(), config.node.worker_balance, &metrics));
        let listeners = Listeners::new(ListenerContext {
            table: Arc::clone(&table),
            tracker: tracker.clone(),
            clock,
            hard_stop: hard_stop.clone(),
            drain,
            copy_mode: config.node.copy,
            runtimes: workers.handles().to_vec(),
            reuse_port: workers.dedicated(),
            hops: Arc::new(HopClient::new(cluster_id.clone(), &metrics)),
            loads: Arc::clone(&loads),
        });
        let bound = listeners.bound();
        let bind_failures = listeners.failures();
        let registry = Registry::new(metrics.clone(), Arc::clone(&changed), config.node.bind_addr);
        let mut publisher =
            Publisher::new(registry, listeners, Arc::clone(&table), peers, clock, metrics.clone())
                .with_resolver(Arc::new(SystemResolver::new()), config.node.resolve_settings());

        let admin_listener = tokio::net::TcpListener::bind(config.admin.addr)
            .await
            .map_err(|source| StartError::Admin { addr: config.admin.addr, source })?;
        let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.addr);
        let toxiproxy_listener = match config.toxiproxy_addr() {
            None => None,
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Toxiproxy { addr, source })?,
            ),
        };

        let (commands, rx) = mpsc::channel(16);
        let mut hop_server = None;
        let member = match &config.cluster {
            None => {
                let errors = publisher.apply_routes(config.routes.clone(), true).await;
                if !errors.is_empty() {
                    hard_stop.cancel();
                    return Err(StartError::Listen(errors));
                }
                None
            }
            Some(_) => {
                let hops = HopServer::new(
                    HopServerConfig {
                        table: Arc::clone(&table),
                        cluster_id: cluster_id.clone(),
                        clock,
                        copy_mode: config.node.copy,
                        max_hops: DEFAULT_MAX_HOPS,
                    },
                    &metrics,
                );
                hop_server = Some(hops.clone());
                let failures = Arc::clone(&bind_failures);
                let sync = if faults.skip_sync { SyncMode::Skip } else { SyncMode::Fdatasync };
                let services = MemberServices { hops, bind_failures: failures, faults, restore };
                let member =
                    Member::start(config, sync, admin_addr, commands.clone(), &metrics, services).await?;
                // Serve what this node last applied, from disk, before any
                // peer answers: traffic does not wait for a quorum. A route
                // this node cannot bind is reported (logged, in the API and
                // the metrics) and retried, not fatal: the cluster may fix it.
                let me = SelfNode { id: member.handle.node_id, name: config.node.name.clone() };
                publisher
                    .set_peers(Arc::new(match &member.handle.gossip {
                        Some(g) => crate::control::gossip::peer_directory(me, &g.view()),
                        None => PeerDirectory::alone(me),
                    }))
                    .await;
                let routes = member.replica.state().routes.values().map(|r| r.spec.clone()).collect();
                publisher.apply_routes(routes, false).await;
                Some(member)
            }
        };
        tokio::spawn(publisher.run(rx, changed));

        let draining = Arc::new(AtomicBool::new(false));
        let admin_stop = CancellationToken::new();
        let leave = CancellationToken::new();
        let state = AdminState {
            node_name: config.node.name.clone(),
            cluster_id: cluster_id.clone(),
            started: std::time::Instant::now(),
            table: Arc::clone(&table),
            bound: Arc::clone(&bound),
            bind_failures,
            own_addrs: config.reserved_addrs(admin_addr).into(),
            metrics: metrics.clone(),
            draining: Arc::clone(&draining),
            clock,
            replica: member.as_ref().map(|m| Arc::clone(&m.replica)),
            member: member.as_ref().map(|m| m.handle.clone()),
            leave: leave.clone(),
            token,
            request_timeout: Duration::from_millis(config.admin.request_timeout_ms),
            unsafe_stale_reads: faults.stale_reads,
        };
        let limits = admin::Limits::from(&config.admin);
        let toxiproxy_task = toxiproxy_listener.map(|listener| {
            let state = admin::toxiproxy::ToxiState { admin: state.clone(), bind_ip: config.node.bind_addr };
            tokio::spawn(admin::toxiproxy::serve(listener, state, admin_stop.clone()))
        });
        let admin_task = tokio::spawn(admin::serve(admin_listener, state, limits, admin_stop.clone()));
        info!(node = %config.node.name, admin = %admin_addr, routes = config.routes.len(), "ferryd started");
        Ok(Node {
            admin_addr,
            bind_addr: config.node.bind_addr,
            table,
            bound,
            commands,
            tracker,
            loads,
            hard_stop,
            admin_stop,
            admin_task,
            toxiproxy_task,
            draining,
            drain,
            metrics,
            workers,
            member,
            hops: hop_server,
            leave,
            leave_timeout: Duration::from_millis(config.admin.request_timeout_ms),
            leave_on_terminate: config.cluster.as_ref().is_some_and(|c| c.leave_on_terminate),
        })
    }

    /// Completes when `POST /v1/leave` asked this node to leave the cluster
    /// and stop; the owner then calls [`Node::shutdown`].
    pub async fn leave_requested(&self) {
        self.leave.cancelled().await;
    }

    /// The cluster membership handle (cluster mode).
    pub fn member(&self) -> Option<&MemberHandle> {
        self.member.as_ref().map(|m| &m.handle)
    }

    /// Address of the admin API.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The address route `name` is bound to, if it is listening.
    pub fn route_addr(&self, name: &str) -> Option<SocketAddr> {
        self.bound.load().get(name).copied()
    }

    /// The current routing table.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// This node's replica of the cluster config (cluster mode).
    pub fn replica(&self) -> Option<&Arc<crate::control::replica::Replica>> {
        self.member.as_ref().map(|m| &m.replica)
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Validates `routes` and, if valid, makes them the node's routes: new
    /// connections use them; running ones are untouched.
    pub async fn apply_routes(&self, routes: Vec<RouteSpec>) -> Result<(), ApplyError> {
        if self.member.is_some() {
            return Err(ApplyError::ClusterMode);
        }
        let mut errors = ferry_client::route::validate_routes(&routes, "routes");
        let reserved = [ferry_client::route::ReservedAddr::new(self.admin_addr, "the admin address")];
        errors.extend(ferry_client::route::listen_conflicts(&routes, "routes", self.bind_addr, &reserved));
        if !errors.is_empty() {
            return Err(ApplyError::Invalid(ConfigErrors(errors)));
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::ApplyRoutes { routes, all_or_nothing: true, reply })
            .await
            .map_err(|_| ApplyError::Stopped)?;
        let errors = rx.await.map_err(|_| ApplyError::Stopped)?;
        if errors.is_empty() { Ok(()) } else { Err(ApplyError::Bind(errors)) }
    }

    /// Makes `peers` the node's view of the cluster: which backends are its
    /// own, which peers' are reachable and how (see `dataplane::peers`).
    /// The routing table is rebuilt shortly after, unless nothing changed;
    /// `table().peers()` shows when.
    pub async fn set_peers(&self, peers: Arc<PeerDirectory>) -> Result<(), ApplyError> {
        self.commands.send(Command::SetPeers { peers }).await.map_err(|_| ApplyError::Stopped)
    }

    /// Stops accepting, lets open connections finish for the drain period,
    /// closes the rest, then stops the admin API and Raft. A cluster node
    /// leaves the cluster first only after `POST /v1/leave` or with
    /// `[cluster] leave_on_terminate`; otherwise it keeps its place (see the
    /// module doc).
    pub async fn shutdown(self) -> ShutdownReport {
        self.shutdown_or(std::future::pending()).await
    }

    /// [`Node::shutdown`], with the drain cut short when `cut_short` completes
    /// (a second SIGTERM).
    pub async fn shutdown_or(self, cut_short: impl std::future::Future<Output = ()>) -> ShutdownReport {
        self.draining.store(true, Relaxed);
        if let Some(member) = &self.member {
            if self.leave.is_cancelled() || self.leave_on_terminate {
                // Leave before the listeners close: peers stop sending this
                // node traffic and Raft stops counting on it while it drains.
                info!(node = %member.replica.label(), "leaving the cluster, then draining");
                step("leave the cluster", member.handle.leave(self.leave_timeout)).await;
            } else {
                info!(
                    node = %member.replica.label(),
                    "stopping without leaving the cluster: peers see this node down until it restarts \
                     (POST /v1/leave or [cluster] leave_on_terminate = true leave it)"
                );
            }
        }
        if let Some(hops) = &self.hops {
            hops.stop_accepting();
        }
        let (reply, rx) = oneshot::channel();
        step("stop accepting", async {
            if self.commands.send(Command::StopAccepting { reply }).await.is_ok() {
                let _ = rx.await;
            }
        })
        .await;
        self.tracker.close();
        let open = self.loads.open_connections();
        info!(open_connections = open, drain_ms = self.drain.as_millis() as u64, "draining");
        let mut forced = 0;
        let drained = tokio::select! {
            r = tokio::time::timeout(self.drain, self.tracker.wait()) => r.is_ok(),
            () = cut_short => false,
        };
        if !drained {
            forced = self.loads.open_connections();
            warn!(connections = forced, "drain deadline reached: closing the remaining connections");
            self.hard_stop.cancel();
            step("close the remaining connections", self.tracker.wait()).await;
        }
        self.hard_stop.cancel();
        self.admin_stop.cancel();
        let _ = step("stop the admin API", self.admin_task).await;
        if let Some(task) = self.toxiproxy_task {
            let _ = step("stop the Toxiproxy-compatible API", task).await;
        }
        if let Some(member) = self.member {
            step("stop Raft", member.shutdown()).await;
        }
        let mut workers = self.workers;
        // Joining blocks: keep it off the runtime's worker threads.
        let _ = step("stop the worker threads", tokio::task::spawn_blocking(move || workers.stop())).await;
        info!("ferryd stopped");
        ShutdownReport { forced }
    }
}

/// How long a shutdown step may take before [`step`] warns about it.
const SLOW_STEP: Duration = Duration::from_secs(5);

/// Awaits one step of a shutdown, logging a warning that names it every
/// [`SLOW_STEP`] it is still waiting: a stuck shutdown says where it is.
async fn step<T>(name: &'static str, fut: impl std::future::Future<Output = T>) -> T {
    let started = tokio::time::Instant::now();
    let mut fut = std::pin::pin!(fut);
    loop {
        match tokio::time::timeout(SLOW_STEP, &mut fut).await {
            Ok(v) => {
                debug!(step = name, ms = started.elapsed().as_millis() as u64, "shutdown step done");
                return v;
            }
            Err(_) => warn!(
                step = name,
                waited_ms = started.elapsed().as_millis() as u64,
                "shutdown step still waiting"
            ),
        }
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;

    #[test]
    fn the_fault_switch_takes_a_comma_separated_list_and_names_an_unknown_fault() {
        assert_eq!(Faults::parse("").ok(), Some(Faults::default()));
        assert_eq!(Faults::parse(" , ").ok(), Some(Faults::default()));
        let all = Faults::parse("stale-reads, no-write-deadline,skip-sync").ok();
        assert_eq!(all, Some(Faults { stale_reads: true, no_write_deadline: true, skip_sync: true }));
        let one = Faults::parse("no-write-deadline").ok();
        assert_eq!(one, Some(Faults { no_write_deadline: true, ..Faults::default() }));
        let err = Faults::parse("stale-reads,no-deadline").map(|_| ()).expect_err("unknown");
        let text = err.to_string();
        assert!(text.contains("FERRYD_UNSAFE_FAULT") && text.contains("\"no-deadline\""), "{text}");
        assert!(text.contains("stale-reads, no-write-deadline, skip-sync"), "{text}");
    }
}
