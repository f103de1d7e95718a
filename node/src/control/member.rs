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

use arc_swap::ArcSwap;
use ferry_client::RouteSpec;
use ferry_client::api::{GossipState, RaftMembership};
use ferry_client::snapshot::Snapshot;
use ferry_gossip::GossipHandle;
use ferry_raft_store::election::Election;
use ferry_raft_store::types::Raft;
use ferry_raft_store::{
    Command, DiskSync, NodeId, NodeInfo, RaftTimers, Request, Response, StateError, SyncMode, raft_config,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::autopilot::AutopilotConfig;
use super::publisher::Command as PublisherCommand;
use super::raft_watch::RaftWatch;
use super::replica::{Replica, ReplicaParts};
use crate::cluster::contacts::Contacts;
use crate::cluster::message::{MembershipChange, Message};
use crate::cluster::network::{Network, TransportPreVoter};
use crate::cluster::server::{ClusterServer, ServerConfig, serve};
use crate::cluster::stats::TransportStats;
use crate::cluster::transport::{Transport, TransportConfig};
use crate::cluster::versions::Versions;
use crate::config::Config;
use crate::dataplane::chaos::PolicyInput;
use crate::dataplane::hop::HopServer;
use crate::dataplane::listen_failures::ListenFailures;
use crate::telemetry::metrics::Metrics;

/// A learner must be alive in gossip this long before autopilot promotes it.
const AUTOPILOT_STABILIZATION: Duration = Duration::from_secs(2);

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
    #[error("cluster.node_id: {0}")]
    NodeId(#[from] super::node_id::NodeIdError),
    #[error(transparent)]
    Gossip(#[from] super::gossip::GossipStartError),
}

/// A running cluster member.
#[derive(Debug)]
pub struct Member {
    pub handle: MemberHandle,
    pub replica: Arc<Replica>,
    pub stats: Arc<TransportStats>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// What the admin API and shutdown need of a member; cheap to clone.
#[derive(Debug, Clone)]
pub struct MemberHandle {
    pub node_id: NodeId,
    pub replica: Arc<Replica>,
    /// Gossip, when the node has a `[gossip]` section.
    pub gossip: Option<GossipHandle>,
    pub(crate) transport: Arc<Transport>,
    /// What every member speaks.
    pub versions: Versions,
    /// The config index this node's data plane runs: its routing table is
    /// published and its listeners bound (or their failure recorded) for
    /// every entry up to it.
    pub data_applied: tokio::sync::watch::Receiver<u64>,
    /// This node's admin address.
    pub admin_addr: std::net::SocketAddr,
    /// The announcements of the last `POST /v1/join`.
    pub api_join: ApiJoin,
}

/// At most one `POST /v1/join` keeps announcing: a new one stops the last,
/// so repeated calls naming seeds that never answer do not pile up loops.
/// All stop with the node.
#[derive(Debug, Clone)]
pub struct ApiJoin {
    node_stop: CancellationToken,
    current: Arc<std::sync::Mutex<CancellationToken>>,
}

impl ApiJoin {
    fn new(node_stop: &CancellationToken) -> Self {
        Self {
            node_stop: node_stop.clone(),
            current: Arc::new(std::sync::Mutex::new(node_stop.child_token())),
        }
    }

    /// Stops the last join's announcements; the token for the next one's.
    pub fn renew(&self) -> CancellationToken {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        current.cancel();
        *current = self.node_stop.child_token();
        current.clone()
    }
}

/// What the cluster port serves besides Raft, and the faults switched on.
#[derive(Debug)]
pub struct MemberServices {
    /// Peer hops to backends this node owns.
    pub hops: HopServer,
    /// The routes this node could not bind, told to peers that ask.
    pub bind_failures: Arc<ArcSwap<ListenFailures>>,
    /// The fault switch ([`crate::node::Faults`]).
    pub faults: crate::node::Faults,
    /// `ferryd --restore-snapshot`: the verified snapshot to make this new
    /// cluster's first config, instead of the file's routes.
    pub restore: Option<Snapshot>,
}

impl Member {
    /// Opens storage, starts Raft and the cluster server, bootstraps when
    /// this node is the lowest initial member of an uninitialized cluster,
    /// and starts feeding applied routes to `publisher`. The cluster port
    /// serves what `services` holds. `sync` says whether the Raft store
    /// syncs sled's files after its flush (`SyncMode::Skip` only for the
    /// fault switch).
    pub async fn start(
        config: &Config,
        sync: SyncMode,
        admin_addr: std::net::SocketAddr,
        publisher: mpsc::Sender<PublisherCommand>,
        metrics: &Metrics,
        services: MemberServices,
    ) -> Result<Member, MemberError> {
        let MemberServices { hops, bind_failures, faults, restore } = services;
        let cluster =
            config.cluster.as_ref().ok_or_else(|| MemberError::Raft("no [cluster] section".into()))?;
        let data_dir =
            config.node.data_dir.clone().ok_or_else(|| MemberError::Storage("is required".into()))?;
        let node_id = super::node_id::resolve(&data_dir, cluster.node_id)?;
        let (db, disk_sync) = open_db(&data_dir.join("raft"), sync, metrics).await?;
        let (log, sm) =
            ferry_raft_store::open(&db, &disk_sync).map_err(|e| MemberError::Storage(e.to_string()))?;
        let watch = sm.watch();
        let stats = Arc::new(TransportStats::default());
        let transport_config =
            TransportConfig { abort_unfinished: !faults.no_write_deadline, ..TransportConfig::default() };
        let transport = Arc::new(Transport::new(&cluster.cluster_id, transport_config, Arc::clone(&stats)));
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
        // A peer not heard from for an election timeout's upper bound is
        // unreachable: by then a follower would have stopped waiting for it.
        let contacts = Arc::new(Contacts::new(Duration::from_millis(cluster.election_timeout_max_ms)));
        let network = Network::new(node_id, Arc::clone(&transport)).with_contacts(Arc::clone(&contacts));
        let raft =
            Raft::new(node_id, Arc::new(raft_config), network, log.clone(), sm).await.map_err(|e| {
                let text = e.to_string();
                MemberError::Raft(format!("{text}{}", crate::version::newer_data_hint(&text)))
            })?;
        let election = Election::new(raft.clone(), log, timers);

        let versions = Versions::new(node_id, &config.node.name, raft.clone(), Arc::clone(&transport));
        let listener = TcpListener::bind(cluster.addr)
            .await
            .map_err(|source| MemberError::Listen { addr: cluster.addr, source })?;
        let stop = CancellationToken::new();
        let bootstrap_expect = config.gossip.as_ref().map_or(0, |g| g.bootstrap_expect);
        let server = ClusterServer::new(
            raft.clone(),
            cluster.cluster_id.clone(),
            Arc::clone(&stats),
            ServerConfig {
                write_timeout: Duration::from_millis(config.admin.request_timeout_ms),
                quorum_timeout: Duration::from_millis(cluster.election_timeout_max_ms),
                check_deadlines: !faults.no_write_deadline,
                ..ServerConfig::default()
            },
        )
        .with_identity(config.node.name.clone(), u32::try_from(bootstrap_expect).unwrap_or(u32::MAX))
        .with_admin_addr(admin_addr)
        .with_hops(hops)
        .with_bind_failures(bind_failures)
        .with_election(Arc::clone(&election))
        .with_contacts(Arc::clone(&contacts))
        .with_versions(versions.clone());
        let mut tasks = vec![
            tokio::spawn(serve(listener, server.clone(), stop.child_token())),
            tokio::spawn(election.run(
                TransportPreVoter::new(Arc::clone(&transport)).with_contacts(Arc::clone(&contacts)),
                stop.child_token().cancelled_owned(),
            )),
        ];
        let replica = Arc::new(Replica::new(ReplicaParts {
            node_id,
            name: config.node.name.clone(),
            raft: raft.clone(),
            watch,
            server,
            transport: Arc::clone(&transport),
            contacts,
        }));
        info!(node_id, node = %config.node.name, cluster_addr = %cluster.addr, "cluster member starting");

        let gossip = match &config.gossip {
            Some(section) => Some(
                super::gossip::start(
                    section,
                    cluster,
                    node_id,
                    &config.node.name,
                    admin_addr,
                    metrics,
                    &stop,
                )
                .await?,
            ),
            None => None,
        };

        let fresh = !raft.is_initialized().await.map_err(|e| MemberError::Raft(e.to_string()))?;
        let lowest = cluster.members().iter().map(|(id, _)| *id).min();
        if let Some(g) = &gossip {
            let me = crate::dataplane::peers::SelfNode { id: node_id, name: config.node.name.clone() };
            tasks.push(tokio::spawn(super::gossip::feed_peers(
                g.clone(),
                me,
                publisher.clone(),
                stop.clone(),
            )));
            if fresh && bootstrap_expect > 0 {
                let (replica, g, transport, stop) =
                    (Arc::clone(&replica), g.clone(), Arc::clone(&transport), stop.clone());
                // A restoring node seeds the snapshot instead (below).
                let routes = if restore.is_some() { Vec::new() } else { config.routes.clone() };
                tasks.push(tokio::spawn(async move {
                    let outcome = super::bootstrap::run(
                        bootstrap_expect,
                        Arc::clone(&replica),
                        g,
                        transport,
                        stop.clone(),
                    )
                    .await;
                    if outcome == super::bootstrap::Outcome::Initialized && !routes.is_empty() {
                        seed(replica, routes, stop).await;
                    }
                }));
            }
            let cfg = AutopilotConfig {
                max_voters: cluster.max_voters,
                dead_node_timeout: Duration::from_millis(cluster.dead_node_timeout_ms),
                stabilization: AUTOPILOT_STABILIZATION,
            };
            tasks.push(tokio::spawn(super::autopilot::run(
                raft.clone(),
                g.clone(),
                cfg,
                metrics.clone(),
                stop.clone(),
            )));
        }
        if fresh && lowest == Some(node_id) {
            let members: BTreeMap<u64, NodeInfo> = cluster
                .members()
                .into_iter()
                .map(|(id, addr)| {
                    let me = id == node_id;
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
            if !config.routes.is_empty() && restore.is_none() {
                tasks.push(tokio::spawn(seed(Arc::clone(&replica), config.routes.clone(), stop.clone())));
            }
        }
        if let Some(snapshot) = restore {
            if !config.routes.is_empty() {
                warn!(
                    routes = config.routes.len(),
                    "--restore-snapshot: the config file's [[routes]] are not seeded; the snapshot's are"
                );
            }
            tasks.push(tokio::spawn(restore_seed(Arc::clone(&replica), snapshot, stop.clone())));
        }
        let (data_applied_tx, data_applied) = tokio::sync::watch::channel(0);
        tasks.push(tokio::spawn(feed(replica.subscribe(), publisher, data_applied_tx, stop.clone())));
        let watch = RaftWatch {
            replica: Arc::clone(&replica),
            stats: Arc::clone(&stats),
            metrics: metrics.clone(),
            gossip: gossip.clone(),
            transport: Arc::clone(&transport),
        };
        tasks.push(tokio::spawn(super::raft_watch::run(watch, stop.clone())));
        tasks.push(tokio::spawn(versions.clone().run(stop.child_token())));
        let handle = MemberHandle {
            node_id,
            replica: Arc::clone(&replica),
            gossip,
            transport,
            versions,
            data_applied,
            admin_addr,
            api_join: ApiJoin::new(&stop),
        };
        Ok(Member { handle, replica, stats, stop, tasks })
    }

    /// Stops gossip, the cluster port and Raft.
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

impl MemberHandle {
    /// Leaves the cluster on purpose (shutdown with `[gossip]`): asks the
    /// leader to remove this node from Raft when the voters left behind keep
    /// a live majority, then tells gossip, so peers see it `left` rather
    /// than `down`. Without gossip (static membership) nothing is done: such
    /// a node keeps its place for when it restarts.
    pub async fn leave(&self, timeout: Duration) {
        let Some(gossip) = &self.gossip else { return };
        let deadline = tokio::time::Instant::now() + timeout;
        let m = self.replica.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let is_member = membership.get_node(&self.node_id).is_some();
        let view = gossip.view();
        let live_others = voters
            .iter()
            .filter(|&&v| v != self.node_id && view.state_of(v).is_some_and(ferry_gossip::MemberState::is_up))
            .count();
        let remaining = voters.len() - usize::from(voters.contains(&self.node_id));
        let node = self.replica.label();
        if !is_member {
            info!(%node, "leave: not a Raft member");
        } else if remaining == 0 {
            warn!(%node, "leave: this node is the last voter; it stays in the Raft membership");
        } else if voters.contains(&self.node_id) && live_others <= remaining / 2 {
            warn!(
                %node,
                voters = voters.len(),
                live_others, "leave: removing this voter would leave no live majority; it stays a voter"
            );
        } else {
            let change = MembershipChange::Remove { node_id: self.node_id };
            match self.replica.change_membership(change, deadline).await {
                Ok(index) => info!(%node, index, "leave: removed from the Raft membership"),
                Err(e) => warn!(%node, error = %e, "leave: could not leave the Raft membership"),
            }
        }
        match gossip.leave().await {
            Ok(()) => info!(%node, "leave: left the gossip cluster"),
            Err(e) => warn!(%node, error = %e, "leave: gossip leave failed"),
        }
    }

    /// Every member of the cluster this node knows of, from Raft and
    /// gossip, with the applied index of the live ones (asked over the
    /// cluster port, each within `probe_timeout`).
    pub async fn members(&self, probe_timeout: Duration) -> Vec<ferry_client::api::Member> {
        let m = self.replica.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let view = self.gossip.as_ref().map(GossipHandle::view);
        let mut rows: BTreeMap<NodeId, ferry_client::api::Member> = BTreeMap::new();
        for (id, info) in membership.nodes() {
            rows.insert(
                *id,
                ferry_client::api::Member {
                    name: info.name.clone(),
                    cluster_addr: info.cluster_addr.clone(),
                    admin_addr: info.admin_addr.clone(),
                    ..member_row(
                        *id,
                        if voters.contains(id) { RaftMembership::Voter } else { RaftMembership::Learner },
                    )
                },
            );
        }
        for status in view.iter().flat_map(|v| v.members.values()) {
            let i = &status.identity;
            let row = rows.entry(i.id).or_insert_with(|| member_row(i.id, RaftMembership::None));
            row.name.clone_from(&i.name);
            row.state = Some(gossip_state(status.state));
            row.gossip_addr = Some(i.gossip_addr.to_string());
            row.incarnation = Some(i.incarnation);
            row.cluster_addr = i.cluster_addr.to_string();
            row.admin_addr = i.admin_addr.to_string();
            // What gossip last advertised; a live node's own answer wins.
            if i.meta.protocol > 0 {
                row.version = Some(i.meta.version.clone());
                row.protocol = Some(i.meta.protocol);
            }
        }
        let mut probes = tokio::task::JoinSet::new();
        for row in rows.values_mut() {
            let up = row.state.is_none_or(GossipState::is_up);
            if row.id == self.node_id {
                row.applied_index = m.last_applied.map(|l| l.index);
                row.admin_addr = self.admin_addr.to_string();
            } else if up && !row.cluster_addr.is_empty() {
                let (id, addr, transport) = (row.id, row.cluster_addr.clone(), Arc::clone(&self.transport));
                probes.spawn(async move {
                    match transport.call_timeout(&addr, &Message::NodeStatus, probe_timeout).await {
                        Ok(Message::NodeStatusResult(s)) if s.node_id == id => (id, Some(s)),
                        _ => (id, None),
                    }
                });
            }
        }
        while let Some(joined) = probes.join_next().await {
            if let Ok((id, Some(status))) = joined
                && let Some(row) = rows.get_mut(&id)
            {
                row.applied_index = status.applied_index;
                if row.admin_addr.is_empty() {
                    row.admin_addr.clone_from(&status.admin_addr);
                }
                if let Some(v) = status.node_version() {
                    row.version = Some(v.version);
                    row.protocol = Some(v.protocol);
                }
                self.replica.contacts().learn_name(id, &status.name);
            }
        }
        for row in rows.values_mut() {
            if row.id == self.node_id {
                row.version = Some(crate::version::version());
                row.protocol = Some(crate::version::PROTOCOL);
            }
        }
        // A static membership records only the first node's name: fill in
        // the names learnt since (status probes, this one included).
        for row in rows.values_mut().filter(|r| r.name.is_empty()) {
            if let Some(name) = self.replica.name_of(&m, row.id) {
                row.name = name;
            }
        }
        rows.into_values().collect()
    }
}

/// The API's name for a gossip state.
fn gossip_state(state: ferry_gossip::MemberState) -> GossipState {
    use ferry_gossip::MemberState as S;
    match state {
        S::Alive => GossipState::Alive,
        S::Suspect => GossipState::Suspect,
        S::Down => GossipState::Down,
        S::Left => GossipState::Left,
    }
}

/// A `/v1/members` row knowing only the id and the Raft role.
fn member_row(id: NodeId, raft: RaftMembership) -> ferry_client::api::Member {
    ferry_client::api::Member {
        id,
        name: String::new(),
        state: None,
        gossip_addr: None,
        incarnation: None,
        cluster_addr: String::new(),
        admin_addr: String::new(),
        raft,
        applied_index: None,
        version: None,
        protocol: None,
    }
}

/// Opens sled in `dir` and the handle that syncs its files, which reports
/// each sync's duration in `ferry_raft_log_sync_seconds`.
async fn open_db(
    dir: &Path,
    sync: SyncMode,
    metrics: &Metrics,
) -> Result<(sled::Db, Arc<DiskSync>), MemberError> {
    let dir = dir.to_path_buf();
    std::fs::create_dir_all(&dir)
        .map_err(|e| MemberError::Storage(format!("cannot create {}: {e}", dir.display())))?;
    let histogram = metrics.raft_log_sync_seconds.clone();
    tokio::task::spawn_blocking(move || {
        let db = ferry_raft_store::open_db(&dir, DB_LOCK_WAIT)?;
        let disk_sync = DiskSync::open(&dir, sync)?
            .with_observer(Box::new(move |took| histogram.observe(took.as_secs_f64())));
        Ok::<_, ferry_raft_store::StoreError>((db, Arc::new(disk_sync)))
    })
    .await
    .map_err(|e| MemberError::Storage(e.to_string()))?
    .map_err(|e| MemberError::Storage(e.to_string()))
}

/// Proposes the file's routes to a cluster this node just initialized. The
/// state machine applies `SeedRoutes` only while the cluster has never had
/// a config change, so retries, restarts and a re-initialized node 1 never
/// bring back a route deleted through the API.
async fn seed(replica: Arc<Replica>, routes: Vec<RouteSpec>, stop: CancellationToken) {
    let req = seed_request(routes);
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

/// The seed write of `routes`. Its request id is the digest of the
/// command: the same on every attempt and node for the same routes, so a
/// retry is answered, not refused as seeding a cluster that has config; and
/// another set of routes (an edited file, another node's file) gets another
/// id, so it is refused for the cluster's config (`CasMismatch`) rather than
/// answered with an earlier seed's success or refused as a reused id.
fn seed_request(routes: Vec<RouteSpec>) -> Request {
    let cmd = Command::SeedRoutes { routes };
    // A command always encodes; the constant only keeps the id defined.
    let id = ferry_raft_store::digest::command_digest(&cmd).unwrap_or(SEED_REQUEST_ID);
    Request::with_id(id, cmd)
}

/// `ferryd --restore-snapshot`: proposes the snapshot as the new cluster's
/// first config, through whichever node leads, once a leader is known.
///
/// The restore applies only to a cluster that never had config (a
/// compare-and-set on config index 0), so a node started with the flag
/// that joins a live cluster by mistake changes nothing. One exception: a
/// config that is only the routes another node's config file seeded (no
/// policy, every route of the same revision, which is the config index) is
/// replaced: the node that initializes the new cluster may seed its file
/// before this node's restore arrives. Anything else is logged as an error
/// and left alone. Retries carry the same request id (the command's
/// digest), so the restore applies once.
async fn restore_seed(replica: Arc<Replica>, snapshot: Snapshot, stop: CancellationToken) {
    let (routes, policies) = (snapshot.route_specs(), snapshot.policies());
    let mut cas = 0;
    loop {
        let cmd =
            Command::RestoreSnapshot { routes: routes.clone(), policies: policies.clone(), cas: Some(cas) };
        let id = ferry_raft_store::digest::command_digest(&cmd).unwrap_or(SEED_REQUEST_ID);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let outcome = tokio::select! {
            r = replica.write(Request::with_id(id, cmd), deadline) => r,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(Response::Applied { index, .. }) => {
                return info!(
                    index,
                    routes = routes.len(),
                    policies = policies.len(),
                    from_cluster = %snapshot.cluster_id,
                    snapshot_index = snapshot.index,
                    "restored the snapshot: it is this cluster's config"
                );
            }
            Ok(Response::Rejected { error: StateError::CasMismatch { current } }) => {
                match seeded_only(&replica, current, &stop).await {
                    Some(true) => {
                        info!(index = current, "replacing the routes a config file seeded with the snapshot");
                        cas = current;
                    }
                    Some(false) => {
                        return tracing::error!(
                            index = current,
                            "--restore-snapshot: the cluster already has config, so the snapshot was NOT \
                             restored (a restore at start seeds only a new cluster; replace a live \
                             cluster's config with POST /v1/snapshot/restore)"
                        );
                    }
                    None => return,
                }
            }
            Ok(other) => {
                return tracing::error!(response = ?other, "--restore-snapshot: the restore was refused");
            }
            Err(e) => {
                info!(error = %e, "waiting for a leader to restore the snapshot");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Whether the cluster's config at index `current` is only a file's seed
/// (see [`restore_seed`]), once this node has applied it; `None` when
/// stopped first.
async fn seeded_only(replica: &Replica, current: u64, stop: &CancellationToken) -> Option<bool> {
    let mut rx = replica.subscribe();
    let applied = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| s.index >= current));
    let state = tokio::select! {
        s = applied => match s {
            Ok(Ok(s)) => s.clone(),
            _ => {
                tracing::error!(index = current, "--restore-snapshot: this node never applied the cluster's config");
                return None;
            }
        },
        () = stop.cancelled() => return None,
    };
    Some(
        state.index == current
            && state.chaos.is_empty()
            && state.routes.values().all(|r| r.revision == current),
    )
}

/// The seed's request id should its command not encode.
const SEED_REQUEST_ID: u128 = 0x5eed_f3ff_0000_0000_0000_0000_0000_0001;

/// Republishes the routing table whenever the applied routes change, and
/// tells `applied` each config index once the data plane runs it.
async fn feed(
    mut rx: tokio::sync::watch::Receiver<Arc<ferry_raft_store::ClusterState>>,
    publisher: mpsc::Sender<PublisherCommand>,
    applied: tokio::sync::watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut last: Option<Vec<RouteSpec>> = None;
    let mut last_chaos: Option<Vec<PolicyInput>> = None;
    loop {
        let (index, routes, chaos): (u64, Vec<RouteSpec>, Vec<PolicyInput>) = {
            let state = rx.borrow_and_update();
            let routes = state.routes.values().map(|r| r.spec.clone()).collect();
            let chaos = state
                .chaos
                .values()
                .map(|p| PolicyInput { policy: p.policy.clone(), revision: p.revision })
                .collect();
            (state.index, routes, chaos)
        };
        // Policies first: a route and a policy for it written together
        // then start together.
        if last_chaos.as_ref() != Some(&chaos) {
            let cmd = PublisherCommand::SetChaos { policies: chaos.clone() };
            if publisher.send(cmd).await.is_err() {
                return;
            }
            last_chaos = Some(chaos);
            if last.as_ref() == Some(&routes) {
                // The publisher applies commands in order: the barrier's
                // answer says the policies are in the table.
                let (reply, done) = oneshot::channel();
                if publisher.send(PublisherCommand::Barrier { reply }).await.is_err() {
                    return;
                }
                let _ = done.await;
            }
        }
        if last.as_ref() != Some(&routes) {
            let (reply, done) = oneshot::channel();
            if publisher
                .send(PublisherCommand::ApplyRoutes { routes: routes.clone(), all_or_nothing: false, reply })
                .await
                .is_err()
            {
                return;
            }
            // Routes that cannot be bound are logged (once), reported and
            // retried by the publisher.
            let _ = done.await;
            last = Some(routes);
        }
        applied.send_replace(index);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's id follows its routes: retries of one seed share it, and
    /// another file's routes get another (it used to be one constant, so a
    /// different seed was answered as the first one).
    #[test]
    fn a_seed_request_id_is_the_same_for_the_same_routes_only() {
        let routes = |listen: &str| -> Vec<RouteSpec> {
            let r = serde_json::json!({"name": "web", "listen": listen, "backends": [{"id": "a", "addr": "127.0.0.1:9"}]});
            serde_json::from_value(r).into_iter().collect()
        };
        let (a, again, b) =
            (seed_request(routes(":7000")), seed_request(routes(":7000")), seed_request(routes(":7001")));
        assert_eq!(a, again);
        assert!(a.id.is_some() && a.id != b.id, "{:?} {:?}", a.id, b.id);
    }
}
