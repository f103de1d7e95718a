//! A three-node (or n-node) Raft cluster in-process, on loopback, in the
//! layout the scripts and docs use: node `i` runs on its own address
//! `127.0.N.i` with the SAME admin, cluster and route ports as the others
//! (`[node] bind_addr = 127.0.N.i`, routes listen on `":PORT"`). Each cluster
//! takes its own `N`, so tests running in parallel never share an address,
//! and ports are checked free on every node's address before use.
//!
//! Nodes stop only through [`TestCluster::stop`] (graceful: dropping a
//! `Node` does not stop its Raft tasks); a test ends with
//! [`TestCluster::shutdown`]. Crashes (`kill -9`) need real processes: see
//! `node/tests/cluster_process.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use ferry_client::RouteSpec;
use ferry_client::api::Status;
use ferry_node::{Config, Node};
use serde_json::{Value, json};

use crate::http::{Request, Response};

/// Longest wait for an election or for replication to settle.
pub const SETTLE: Duration = Duration::from_secs(10);

/// How a test cluster is configured.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of nodes (ids 1..=n).
    pub nodes: u64,
    /// `[admin] token_file` contents (the same on every node).
    pub token: Option<String>,
    /// `[admin] request_timeout_ms`.
    pub request_timeout_ms: u64,
    /// `[[routes]]` in every node's file (they seed a new cluster).
    pub seed_routes: Vec<RouteSpec>,
    /// `[cluster] snapshot_logs`.
    pub snapshot_logs: u64,
    /// `[cluster] heartbeat_ms`, also openraft's time limit for one
    /// AppendEntries.
    pub heartbeat_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 3,
            token: None,
            request_timeout_ms: 3_000,
            seed_routes: Vec::new(),
            snapshot_logs: 5_000,
            heartbeat_ms: 50,
        }
    }
}

/// A distinct `127.0.N.0/24` per cluster in this process (N ≥ 1: tests on
/// 127.0.0.1 never collide with a cluster), varied by process id so that
/// two test binaries running at once are unlikely to share one either.
pub fn next_net() -> u8 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = std::process::id().wrapping_mul(7).wrapping_add(SEQ.fetch_add(1, Relaxed));
    (1 + n % 250) as u8
}

/// `127.0.net.id`.
pub fn node_ip(net: u8, id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, net, id as u8))
}

/// `count` distinct ports, each free on every address of `ips` right now
/// (the OS picks one on the first address; the others must accept it too),
/// and never handed out before in this process: a test may take several
/// before binding any (routes whose `listen` must differ).
pub fn free_ports(ips: &[IpAddr], count: usize) -> anyhow::Result<Vec<u16>> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut attempts = 0;
    while ports.len() < count {
        attempts += 1;
        anyhow::ensure!(attempts < 1000, "no port free on all of {ips:?}");
        let first = std::net::TcpListener::bind(SocketAddr::new(ips[0], 0))?;
        let port = first.local_addr()?.port();
        let rest: Result<Vec<_>, _> =
            ips[1..].iter().map(|ip| std::net::TcpListener::bind(SocketAddr::new(*ip, port))).collect();
        held.push(first);
        let fresh = HANDED_OUT.lock().map_err(|_| anyhow::anyhow!("port set poisoned"))?.insert(port);
        if let (true, Ok(rest)) = (fresh, rest) {
            held.extend(rest);
            ports.push(port);
        }
    }
    Ok(ports)
}

/// A running in-process cluster.
#[derive(Debug)]
pub struct TestCluster {
    pub net: u8,
    pub admin_port: u16,
    pub cluster_port: u16,
    configs: Vec<Config>,
    nodes: Vec<Option<Node>>,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts every node and waits until they agree on a leader.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        crate::init_logs();
        let net = next_net();
        let ids: Vec<u64> = (1..=options.nodes).collect();
        let ips: Vec<IpAddr> = ids.iter().map(|id| node_ip(net, *id)).collect();
        let ports = free_ports(&ips, 2)?;
        let (admin_port, cluster_port) = (ports[0], ports[1]);
        let dir = tempfile::Builder::new().prefix("ferry-cluster-").tempdir()?;
        let token_file = match &options.token {
            Some(token) => {
                let path = dir.path().join("token");
                std::fs::write(&path, format!("{token}\n"))?;
                Some(path)
            }
            None => None,
        };
        let members: Vec<String> = ids
            .iter()
            .map(|id| format!("{id}@{}", SocketAddr::new(node_ip(net, *id), cluster_port)))
            .collect();
        let mut configs = Vec::new();
        for &id in &ids {
            let ip = node_ip(net, id);
            let text = format!(
                r#"
[node]
name = "n{id}"
bind_addr = "{ip}"
drain_timeout_ms = 500
workers = 0
data_dir = "{data}"
[admin]
addr = "{admin}"
request_timeout_ms = {timeout}
[cluster]
node_id = {id}
addr = "{cluster}"
cluster_id = "test"
initial_members = {members:?}
heartbeat_ms = {heartbeat_ms}
election_timeout_min_ms = 200
election_timeout_max_ms = 400
snapshot_logs = {snapshot_logs}
"#,
                data = dir.path().join(format!("n{id}")).display(),
                admin = SocketAddr::new(ip, admin_port),
                cluster = SocketAddr::new(ip, cluster_port),
                timeout = options.request_timeout_ms,
                snapshot_logs = options.snapshot_logs,
                heartbeat_ms = options.heartbeat_ms,
            );
            let mut config = Config::parse(&text).map_err(|e| anyhow::anyhow!("test config: {e}"))?;
            config.admin.token_file = token_file.clone();
            config.routes = options.seed_routes.clone();
            configs.push(config.validate().map_err(|e| anyhow::anyhow!("test config: {e}"))?);
        }
        let mut cluster =
            Self { net, admin_port, cluster_port, configs, nodes: ids.iter().map(|_| None).collect(), dir };
        cluster.start_all().await?;
        Ok(cluster)
    }

    /// Node ids, 1..=n.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    /// Node `id`'s own loopback address.
    pub fn ip(&self, id: u64) -> IpAddr {
        node_ip(self.net, id)
    }

    /// Node `id`'s admin API.
    pub fn admin(&self, id: u64) -> SocketAddr {
        SocketAddr::new(self.ip(id), self.admin_port)
    }

    /// Node `id`'s data dir.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    /// The running node `id`.
    pub fn node(&self, id: u64) -> anyhow::Result<&Node> {
        self.nodes
            .get(id as usize - 1)
            .and_then(Option::as_ref)
            .with_context(|| format!("node {id} is not running"))
    }

    /// A port free on every node's address, for a route's `":PORT"`.
    pub fn free_port(&self) -> anyhow::Result<u16> {
        let ips: Vec<IpAddr> = self.ids().iter().map(|id| self.ip(*id)).collect();
        Ok(free_ports(&ips, 1)?[0])
    }

    /// `":PORT"` with a port free on every node's address: a route's
    /// `listen` (port 0 is not one).
    pub fn listen(&self) -> anyhow::Result<String> {
        Ok(format!(":{}", self.free_port()?))
    }

    /// Starts every stopped node (from its data dir) and waits for a leader.
    pub async fn start_all(&mut self) -> anyhow::Result<u64> {
        for id in self.ids() {
            if self.nodes[id as usize - 1].is_none() {
                self.start_node(id).await?;
            }
        }
        self.leader().await
    }

    /// Starts the stopped node `id` from its data dir, without waiting for
    /// anything.
    pub async fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        let slot = self.nodes.get_mut(id as usize - 1).with_context(|| format!("no node {id}"))?;
        anyhow::ensure!(slot.is_none(), "node {id} is running");
        let config = &self.configs[id as usize - 1];
        *slot = Some(Node::start(config).await.with_context(|| format!("starting node {id}"))?);
        Ok(())
    }

    /// Gracefully stops node `id` (its Raft included).
    pub async fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes[id as usize - 1].take().with_context(|| format!("node {id} is not running"))?;
        node.shutdown().await;
        Ok(())
    }

    /// Gracefully stops every running node.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            if self.nodes[id as usize - 1].is_some() {
                self.stop(id).await?;
            }
        }
        Ok(())
    }

    /// Stops everything and removes the data dirs.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_all().await
    }

    /// Sends `req` to node `id`'s admin API.
    pub async fn send(&self, id: u64, req: Request) -> anyhow::Result<Response> {
        req.send(self.admin(id)).await
    }

    /// `GET /v1/status` of node `id`.
    pub async fn status(&self, id: u64) -> anyhow::Result<Status> {
        let r = self.send(id, Request::get("/v1/status")).await?;
        anyhow::ensure!(r.status == 200, "GET /v1/status on node {id}: {} {}", r.status, r.body);
        Ok(serde_json::from_str(&r.body)?)
    }

    /// Waits until every running node names the same leader, which says it
    /// leads, and no other node does. Returns its id.
    pub async fn leader(&self) -> anyhow::Result<u64> {
        let running: Vec<u64> = self.ids().into_iter().filter(|id| self.node(*id).is_ok()).collect();
        crate::eventually(SETTLE, "one leader named by every node", || async {
            let mut leaders = Vec::new();
            let mut named = Vec::new();
            for &id in &running {
                let raft = self.status(id).await.ok()?.raft?;
                if raft.role == ferry_client::api::Role::Leader {
                    leaders.push(id);
                }
                named.push(raft.leader_id?);
            }
            let leader = *named.first()?;
            (leaders == [leader] && named.iter().all(|l| *l == leader)).then_some(leader)
        })
        .await
    }

    /// A running node other than `not`.
    pub fn other_than(&self, not: &[u64]) -> anyhow::Result<u64> {
        self.ids()
            .into_iter()
            .find(|id| !not.contains(id) && self.node(*id).is_ok())
            .context("no other running node")
    }

    /// `PUT /v1/routes/{name}` of `route` through node `id`.
    pub async fn put_route(&self, id: u64, route: &Value) -> anyhow::Result<Response> {
        let name = route["name"].as_str().context("route without a name")?;
        self.send(id, Request::put(format!("/v1/routes/{name}"), route)).await
    }

    /// The config index every node reports, once they all report the same.
    pub async fn index_everywhere(&self) -> anyhow::Result<u64> {
        crate::eventually(SETTLE, "every node at the same config index", || async {
            let mut seen = Vec::new();
            for id in self.ids() {
                seen.push(self.status(id).await.ok()?.index);
            }
            seen.windows(2).all(|w| w[0] == w[1]).then_some(seen[0])
        })
        .await
    }

    /// Waits until every running node has applied config index `index`.
    pub async fn converged(&self, index: u64) -> anyhow::Result<()> {
        crate::eventually(SETTLE, &format!("every node at config index {index}"), || async {
            for id in self.ids() {
                if self.node(id).is_ok() && self.status(id).await.ok()?.index < index {
                    return None;
                }
            }
            Some(())
        })
        .await
    }
}

/// A route body: `listen` on every node, `weighted` over `backends`
/// `(id, addr)` with weight 1.
pub fn route_json(name: &str, listen: &str, backends: &[(&str, SocketAddr)]) -> Value {
    json!({
        "name": name,
        "listen": listen,
        "backends": backends.iter().map(|(id, addr)| json!({"id": id, "addr": addr.to_string()})).collect::<Vec<_>>(),
    })
}
