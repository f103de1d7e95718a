//! `ferryd.toml`: the node's configuration file, its defaults and its
//! validation.
//!
//! The file format is a contract (outside checks rely on it): sections may be
//! extended, never renamed. Unknown fields are errors. Every problem is
//! reported at once, one line each, naming the field path, before anything is
//! bound; CLI flags override the file before validation.
//!
//! - this module: the sections, their defaults, and reading a file;
//! - [`parse`]: TOML parsed leniently, one problem hiding no other;
//! - [`validate`]: what parsing cannot check.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use ferry_client::FieldError;
use ferry_client::route::RouteSpec;
use serde::{Deserialize, Serialize};

use crate::dataplane::copy::CopyMode;
use crate::telemetry::tracing::LogFormat;

mod parse;
#[cfg(test)]
mod tests;
mod validate;

pub use parse::Parsed;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// Raft cluster membership; without it the node runs standalone, its
    /// routes coming from this file.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// SWIM gossip: membership, failure detection, dynamic join
    /// (`bootstrap_expect`, `join`); requires `[cluster]`.
    #[serde(default)]
    pub gossip: Option<GossipSection>,
    /// Chaos settings; requires `[cluster]` (chaos policies are replicated).
    #[serde(default)]
    pub chaos: Option<ChaosSection>,
    /// Standalone: the node's routes. Cluster mode: the routes that seed a
    /// new cluster, written once when it is first initialized.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// `[chaos]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSection {
    /// Where to serve the Toxiproxy-compatible API (`admin::toxiproxy`),
    /// e.g. `127.0.0.1:8474`, Toxiproxy's own port. Unset: not served.
    #[serde(default)]
    pub toxiproxy_addr: Option<SocketAddr>,
}

impl Config {
    /// `[chaos] toxiproxy_addr`, if set.
    pub fn toxiproxy_addr(&self) -> Option<SocketAddr> {
        self.chaos.as_ref().and_then(|c| c.toxiproxy_addr)
    }
}

/// `[cluster]`: this node's place in a Raft cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's Raft id, unique in the cluster and never reused. 0 (the
    /// default): a random id created on first start and kept in
    /// `<data_dir>/node_id`. Required with `initial_members`.
    #[serde(default)]
    pub node_id: u64,
    /// The cluster port: Raft RPCs, forwarded writes, peer hops; bound and
    /// advertised.
    #[serde(default = "default_cluster_addr")]
    pub addr: SocketAddr,
    /// Name shared by every node; messages of another cluster are refused.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: String,
    /// `"ID@IP:PORT"` of every initial voter, this node included. The lowest
    /// id initializes the cluster; the others wait for it.
    #[serde(default)]
    pub initial_members: Vec<String>,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_election_timeout_min_ms")]
    pub election_timeout_min_ms: u64,
    #[serde(default = "default_election_timeout_max_ms")]
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log before it) every this many
    /// applied entries.
    #[serde(default = "default_snapshot_logs")]
    pub snapshot_logs: u64,
    /// Autopilot (with `[gossip]`): most voters; further members stay
    /// learners. Odd, 1 ..= 9.
    #[serde(default = "default_max_voters")]
    pub max_voters: usize,
    /// Autopilot: a voter that gossip has held down this long is removed from
    /// Raft, when the remaining voters keep a quorum.
    #[serde(default = "default_dead_node_timeout_ms")]
    pub dead_node_timeout_ms: u64,
    /// SIGTERM/SIGINT make the node leave the cluster (Raft, then gossip)
    /// before it drains and exits, as `POST /v1/leave` does. Default false:
    /// a stopped node keeps its place, peers see it down, and it resumes on
    /// restart from the same data dir.
    #[serde(default)]
    pub leave_on_terminate: bool,
}

/// `[gossip]`: SWIM membership over UDP.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipSection {
    /// UDP address, bound and advertised. Default: the IP of
    /// `[cluster] addr`, port 7946.
    #[serde(default)]
    pub addr: Option<SocketAddr>,
    /// Members to join: `HOST` or `HOST:PORT` (port 7946 by default),
    /// announced to with backoff (up to 30 s) until each one is a member
    /// (a partition at start may have split them into groups).
    #[serde(default)]
    pub join: Vec<String>,
    /// Form a new cluster once this many members (this node included) see
    /// each other and none has Raft state; 0: never form one, only join.
    #[serde(default)]
    pub bootstrap_expect: usize,
    /// `lan` (memberlist's LAN timings) or `fast` (sub-second detection on
    /// loopback and quiet LANs).
    #[serde(default)]
    pub profile: ferry_gossip::Profile,
    /// Overrides of the profile's timings.
    #[serde(default)]
    pub probe_period_ms: Option<u64>,
    #[serde(default)]
    pub probe_rtt_ms: Option<u64>,
    #[serde(default)]
    pub suspect_to_down_ms: Option<u64>,
}

/// The default gossip port.
pub const GOSSIP_PORT: u16 = 7946;
/// The default cluster port.
pub const CLUSTER_PORT: u16 = 7947;

impl GossipSection {
    /// The gossip address: `addr`, or the cluster IP with port 7946.
    pub fn addr(&self, cluster: &ClusterSection) -> SocketAddr {
        self.addr.unwrap_or_else(|| SocketAddr::new(cluster.addr.ip(), GOSSIP_PORT))
    }

    /// The protocol settings for the gossip crate.
    pub fn gossip_config(&self, cluster_id: &str) -> ferry_gossip::GossipConfig {
        ferry_gossip::GossipConfig {
            cluster_id: cluster_id.to_string(),
            profile: self.profile,
            probe_period_ms: self.probe_period_ms,
            probe_rtt_ms: self.probe_rtt_ms,
            suspect_to_down_ms: self.suspect_to_down_ms,
            ..ferry_gossip::GossipConfig::default()
        }
    }
}

/// Parses a join seed: `HOST` or `HOST:PORT`, IPv6 as `[::1]:PORT`. Names
/// are resolved when joining, not here.
pub fn parse_seed(s: &str) -> Result<(String, u16), String> {
    // An IP literal with or without a port; a port 0 or an unspecified IP
    // reaches nobody.
    let ip = s.parse::<SocketAddr>().ok().or_else(|| Some(SocketAddr::new(s.parse().ok()?, GOSSIP_PORT)));
    if let Some(addr) = ip {
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(format!("expected an address a member listens on, got {s:?}"));
        }
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("invalid port {p:?} in {s:?}"))?),
        None => (s, GOSSIP_PORT),
    };
    // The same host-name rules as a backend's address.
    if ferry_client::addr::check_host_name(host).is_err() || port == 0 {
        return Err(format!("expected HOST or HOST:PORT, got {s:?}"));
    }
    Ok((host.to_string(), port))
}

impl ClusterSection {
    /// The initial members as (id, cluster address); valid after `validate`.
    pub fn members(&self) -> Vec<(u64, SocketAddr)> {
        self.initial_members.iter().filter_map(|m| parse_member(m).ok()).collect()
    }
}

/// Parses `"ID@IP:PORT"`.
pub fn parse_member(s: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = s.split_once('@').ok_or_else(|| format!("expected ID@IP:PORT, got {s:?}"))?;
    let id: u64 = id.parse().map_err(|_| format!("invalid node id {id:?} in {s:?}"))?;
    if id == 0 {
        return Err(format!("node id 0 is reserved, in {s:?}"));
    }
    let addr: SocketAddr = addr.parse().map_err(|_| format!("invalid socket address {addr:?} in {s:?}"))?;
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(format!("{addr} is no address a peer can reach, in {s:?}"));
    }
    Ok((id, addr))
}

fn default_cluster_id() -> String {
    "ferry".to_string()
}
fn default_heartbeat_ms() -> u64 {
    100
}
fn default_election_timeout_min_ms() -> u64 {
    500
}
fn default_snapshot_logs() -> u64 {
    ferry_raft_store::config::SNAPSHOT_LOGS_SINCE_LAST
}
fn default_election_timeout_max_ms() -> u64 {
    1_000
}
fn default_cluster_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], CLUSTER_PORT))
}
fn default_max_voters() -> usize {
    5
}
fn default_dead_node_timeout_ms() -> u64 {
    60_000
}

impl ClusterSection {
    /// A section with every default: a random node id, 127.0.0.1:7947.
    pub fn with_defaults() -> Self {
        Self {
            node_id: 0,
            addr: default_cluster_addr(),
            cluster_id: default_cluster_id(),
            initial_members: Vec::new(),
            heartbeat_ms: default_heartbeat_ms(),
            election_timeout_min_ms: default_election_timeout_min_ms(),
            election_timeout_max_ms: default_election_timeout_max_ms(),
            snapshot_logs: default_snapshot_logs(),
            max_voters: default_max_voters(),
            dead_node_timeout_ms: default_dead_node_timeout_ms(),
            leave_on_terminate: false,
        }
    }
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Node name, unique in a cluster; defaults to the host name.
    #[serde(default = "default_name")]
    pub name: String,
    /// Address that `:PORT` route listeners bind.
    #[serde(default = "default_bind_addr")]
    pub bind_addr: IpAddr,
    /// How long a removed listener's connections, or all connections at
    /// shutdown, may keep flowing before they are closed.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// How connections move bytes: `userspace` (read/write, the default),
    /// `splice` (through a kernel pipe), or `auto` (userspace, splice once a
    /// direction is bulk).
    #[serde(default)]
    pub copy: CopyMode,
    /// Data-plane worker threads, each with its own event loop and its own
    /// `SO_REUSEPORT` listener per route; 0 runs the data plane on the
    /// node's main runtime. Default: one per CPU.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Which worker serves a new connection: `least_connections` (the
    /// default: the one whose `SO_REUSEPORT` socket the kernel's address
    /// hash chose, unless it serves two or more connections more than the
    /// least loaded worker, which then gets it) or `kernel` (the hash
    /// alone).
    #[serde(default)]
    pub worker_balance: WorkerBalance,
    /// Where cluster state (the Raft log and state machine) is kept;
    /// required with `[cluster]`.
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
    /// How often each backend host name is looked up again (HAProxy's
    /// `hold valid`). A per-node setting: the replicated routes do not
    /// carry it.
    #[serde(default = "default_resolve_interval_ms")]
    pub resolve_interval_ms: u64,
    /// Longest wait for one lookup; a hung resolver never holds up the
    /// other names.
    #[serde(default = "default_resolve_timeout_ms")]
    pub resolve_timeout_ms: u64,
}

impl NodeSection {
    /// How backend host names are resolved.
    pub fn resolve_settings(&self) -> crate::control::resolver::ResolveSettings {
        crate::control::resolver::ResolveSettings {
            interval: std::time::Duration::from_millis(self.resolve_interval_ms),
            timeout: std::time::Duration::from_millis(self.resolve_timeout_ms),
        }
    }
}

/// `[node] worker_balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerBalance {
    /// The kernel's `SO_REUSEPORT` hash alone: no hand-offs. A few
    /// long-lived connections may land unevenly, and under churn one worker
    /// may wait idle while the other has a queue.
    Kernel,
    /// Hand a new connection to the worker with the fewest connections when
    /// the accepting one serves two or more more. A hand-off costs a
    /// wake-up of the other worker (accepted sockets are registered only
    /// where they are served).
    #[default]
    LeastConnections,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the admin HTTP API.
    #[serde(default = "default_admin_addr")]
    pub addr: SocketAddr,
    /// A file holding the bearer token that writes must carry
    /// (`Authorization: Bearer TOKEN`); unset: writes need no token.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Longest an API request may take (writes and linearizable reads
    /// answer 503 past it, never hang).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest wait for a whole request head, and for the next request on
    /// an idle keep-alive connection; the connection is then closed.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Longest wait for a whole request body once its head has arrived;
    /// then 408 and the connection is closed.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Most admin connections open at once; one more gets a 503 and is
    /// closed at once.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
}

/// Longest `[admin]` timeout accepted: an hour.
pub const MAX_ADMIN_TIMEOUT_MS: u64 = 3_600_000;
/// Most `[admin] max_connections` accepted.
pub const MAX_ADMIN_CONNECTIONS: u64 = 65_536;

fn default_request_timeout_ms() -> u64 {
    5_000
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_admin_max_connections() -> usize {
    512
}

impl AdminSection {
    /// The bearer token of `token_file`: the whole file, trimmed; `None`
    /// without a file. An unreadable or empty file is an error.
    pub fn read_token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.token_file else { return Ok(None) };
        let token =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(Some(token.to_string()))
    }
}

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// `text` or `json` logs on stderr.
    #[serde(default)]
    pub log_format: LogFormat,
    /// OTLP gRPC collector, e.g. `http://127.0.0.1:4317`. When unset,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is used; when both are unset, or this is
    /// `""`, traces are not exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

fn default_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferry".to_string())
}
fn default_bind_addr() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}
fn default_workers() -> usize {
    crate::dataplane::workers::default_count()
}
fn default_drain_timeout_ms() -> u64 {
    30_000
}
fn default_resolve_interval_ms() -> u64 {
    crate::control::resolver::DEFAULT_INTERVAL_MS
}
fn default_resolve_timeout_ms() -> u64 {
    crate::control::resolver::DEFAULT_TIMEOUT_MS
}
fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7948))
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: default_name(),
            bind_addr: default_bind_addr(),
            drain_timeout_ms: default_drain_timeout_ms(),
            copy: CopyMode::default(),
            workers: default_workers(),
            worker_balance: WorkerBalance::default(),
            data_dir: None,
            resolve_interval_ms: default_resolve_interval_ms(),
            resolve_timeout_ms: default_resolve_timeout_ms(),
        }
    }
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            addr: default_admin_addr(),
            token_file: None,
            request_timeout_ms: default_request_timeout_ms(),
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            max_connections: default_admin_max_connections(),
        }
    }
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<FieldError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and parses `path`, without validating it.
    pub fn read(path: &Path) -> Result<Self, ConfigErrors> {
        Self::read_all(path).into_result()
    }

    /// Parses TOML text, without validating it; see [`Config::parse_all`].
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        Self::parse_all(text).into_result()
    }

    /// [`Config::read`] then [`Config::validate`].
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        Self::read(path)?.validate()
    }
}
