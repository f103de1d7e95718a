//! This node as a member of a Raft cluster: opens its storage, serves the
//! cluster port, joins or bootstraps the cluster, seeds the file's routes
//! into a brand-new cluster once, and feeds every applied change to the
//! routing-table publisher.
//!
//! Traffic stays available without quorum ("static stability"): the
//! publisher gets the routes of the state this node last applied, which is
//! loaded from disk at start, so a node that cannot reach its peers keeps
//! forwarding with what it knew.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_client::RouteSpec;
use ferry_raft_store::types::Raft;
use ferry_raft_store::{Command, NodeInfo, RaftTimers, Request, Response, StateError, raft_config};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::publisher::Command as PublisherCommand;
use super::replica::Replica;
use crate::cluster::hop::HopServer;
use crate::cluster::network::Network;
use crate::cluster::server::{ClusterServer, ServerConfig, serve};
use crate::cluster::stats::TransportStats;
use crate::cluster::transport::{Transport, TransportConfig};
use crate::config::{ClusterSection, Config};
use crate::telemetry::metrics::Metrics;

/// How long opening the data dir may wait for a previous owner's lock.
const DB_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Why this node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("node.data_dir: {0}")]
    Storage(String),
    #[error("cluster.addr: cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("raft: {0}")]
    Raft(String),
}

/// A running cluster member.
#[derive(Debug)]
pub struct Member {
    pub replica: Arc<Replica>,
    pub stats: Arc<TransportStats>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Member {
    /// Opens storage, starts Raft and the cluster server, bootstraps when
    /// this node is the lowest initial member of an uninitialized cluster,
    /// and starts feeding applied routes to `publisher`. The cluster port
    /// serves peer hops with `hops`.
    pub async fn start(
        config: &Config,
        cluster: &ClusterSection,
        admin_addr: std::net::SocketAddr,
        publisher: mpsc::Sender<PublisherCommand>,
        metrics: &Metrics,
        hops: HopServer,
    ) -> Result<Member, MemberError> {
        let data_dir =
            config.node.data_dir.clone().ok_or_else(|| MemberError::Storage("is required".into()))?;
        let db = open_db(&data_dir.join("raft")).await?;
        let (log, sm) = ferry_raft_store::open(&db).map_err(|e| MemberError::Storage(e.to_string()))?;
        let watch = sm.watch();
        let stats = Arc::new(TransportStats::default());
        let transport =
            Arc::new(Transport::new(&cluster.cluster_id, TransportConfig::default(), Arc::clone(&stats)));
        let timers = RaftTimers {
            heartbeat_ms: cluster.heartbeat_ms,
            election_timeout_min_ms: cluster.election_timeout_min_ms,
            election_timeout_max_ms: cluster.election_timeout_max_ms,
        };
        let mut raft_config =
            raft_config(&cluster.cluster_id, timers).map_err(|e| MemberError::Raft(e.to_string()))?;
        if cluster.snapshot_logs != ferry_raft_store::config::SNAPSHOT_LOGS_SINCE_LAST {
            let n = cluster.snapshot_logs;
            raft_config.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(n);
            raft_config.max_in_snapshot_log_to_keep = raft_config.max_in_snapshot_log_to_keep.min(n / 5);
            raft_config.replication_lag_threshold = n * 2;
            raft_config = raft_config.validate().map_err(|e| MemberError::Raft(e.to_string()))?;
        }
        let network = Network::new(cluster.node_id, Arc::clone(&transport));
        let raft = Raft::new(cluster.node_id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| MemberError::Raft(e.to_string()))?;

        let listener = TcpListener::bind(cluster.addr)
            .await
            .map_err(|source| MemberError::Listen { addr: cluster.addr, source })?;
        let stop = CancellationToken::new();
        let server = ClusterServer::new(
            raft.clone(),
            cluster.cluster_id.clone(),
            Arc::clone(&stats),
            ServerConfig::default(),
        )
        .with_hops(hops);
        let mut tasks = vec![tokio::spawn(serve(listener, server.clone(), stop.child_token()))];
        let replica = Arc::new(Replica::new(cluster.node_id, raft.clone(), watch, server, transport));
        let raft_for_metrics = raft.clone();

        let fresh = !raft.is_initialized().await.map_err(|e| MemberError::Raft(e.to_string()))?;
        let lowest = cluster.members().iter().map(|(id, _)| *id).min();
        if fresh && lowest == Some(cluster.node_id) {
            let members: BTreeMap<u64, NodeInfo> = cluster
                .members()
                .into_iter()
                .map(|(id, addr)| {
                    let me = id == cluster.node_id;
                    let info = NodeInfo {
                        name: if me { config.node.name.clone() } else { String::new() },
                        cluster_addr: addr.to_string(),
                        admin_addr: if me { admin_addr.to_string() } else { String::new() },
                    };
                    (id, info)
                })
                .collect();
            info!(members = members.len(), "initializing a new cluster");
            if let Err(e) = raft.initialize(members).await {
                warn!(error = %e, "cluster initialization refused (already initialized?)");
            }
            if !config.routes.is_empty() {
                tasks.push(tokio::spawn(seed(Arc::clone(&replica), config.routes.clone(), stop.clone())));
            }
        }
        tasks.push(tokio::spawn(feed(replica.subscribe(), publisher, stop.clone())));
        tasks.push(tokio::spawn(export_metrics(
            raft_for_metrics,
            Arc::clone(&stats),
            metrics.clone(),
            stop.clone(),
        )));
        Ok(Member { replica, stats, stop, tasks })
    }

    /// Stops serving the cluster port and shuts Raft down.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.replica.raft().shutdown().await {
            warn!(error = %e, "raft shutdown");
        }
    }
}

async fn open_db(dir: &Path) -> Result<sled::Db, MemberError> {
    let dir = dir.to_path_buf();
    std::fs::create_dir_all(&dir)
        .map_err(|e| MemberError::Storage(format!("cannot create {}: {e}", dir.display())))?;
    tokio::task::spawn_blocking(move || ferry_raft_store::open_db(&dir, DB_LOCK_WAIT))
        .await
        .map_err(|e| MemberError::Storage(e.to_string()))?
        .map_err(|e| MemberError::Storage(e.to_string()))
}

/// Proposes the file's routes to a cluster this node just initialized. The
/// state machine applies `SeedRoutes` only while the cluster has never had
/// a config change, so retries, restarts and a re-initialized node 1 never
/// bring back a route deleted through the API.
async fn seed(replica: Arc<Replica>, routes: Vec<RouteSpec>, stop: CancellationToken) {
    let req = Request::with_id(SEED_REQUEST_ID, Command::SeedRoutes { routes });
    loop {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let outcome = tokio::select! {
            r = replica.write(req.clone(), deadline) => r,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(Response::Applied { index, .. }) => {
                return info!(index, "seeded the routes of the config file");
            }
            Ok(Response::Rejected { error: StateError::CasMismatch { current } }) => {
                return info!(
                    index = current,
                    "the cluster already has config: routes of the file not seeded"
                );
            }
            Ok(other) => return warn!(response = ?other, "seeding the routes of the config file was refused"),
            Err(e) => {
                info!(error = %e, "waiting for a leader to seed routes");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The request id of the seed write: the same on every attempt and node.
const SEED_REQUEST_ID: u128 = 0x5eed_f3ff_0000_0000_0000_0000_0000_0001;

/// Keeps the Raft and cluster-transport metrics current.
async fn export_metrics(raft: Raft, stats: Arc<TransportStats>, m: Metrics, stop: CancellationToken) {
    let mut rx = raft.metrics();
    let (mut leader, mut snapshot) = (None, None);
    let mut refused = [0u64; 4];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        {
            let r = rx.borrow_and_update();
            m.raft_term.set(r.current_term as i64);
            m.raft_applied_index.set(r.last_applied.map_or(0, |l| l.index) as i64);
            m.raft_is_leader.set(i64::from(r.current_leader == Some(r.id)));
            if r.current_leader.is_some() && r.current_leader != leader {
                if leader.is_some() {
                    m.raft_leader_changes_total.inc();
                }
                leader = r.current_leader;
            }
            if r.snapshot != snapshot {
                if r.snapshot.is_some() {
                    m.raft_snapshots_total.inc();
                }
                snapshot = r.snapshot;
            }
        }
        let s = stats.snapshot();
        let now = [s.refused_cluster_id, s.refused_version, s.malformed, s.oversized];
        for ((reason, new), old) in
            ["cluster_id", "version", "malformed", "oversized"].iter().zip(now).zip(&mut refused)
        {
            if new > *old {
                m.cluster_refused_total.with_label_values(&[reason]).inc_by(new - *old);
                *old = new;
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Republishes the routing table whenever the applied routes change.
async fn feed(
    mut rx: tokio::sync::watch::Receiver<Arc<ferry_raft_store::ClusterState>>,
    publisher: mpsc::Sender<PublisherCommand>,
    stop: CancellationToken,
) {
    let mut last: Option<Vec<RouteSpec>> = None;
    loop {
        let routes: Vec<RouteSpec> = rx.borrow_and_update().routes.values().map(|r| r.spec.clone()).collect();
        if last.as_ref() != Some(&routes) {
            let (reply, done) = oneshot::channel();
            if publisher.send(PublisherCommand::ApplyRoutes { routes: routes.clone(), reply }).await.is_err()
            {
                return;
            }
            if let Ok(errors) = done.await {
                for e in errors {
                    warn!("{e}");
                }
            }
            last = Some(routes);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}
