//! `ferryd.toml`: the node's configuration file, its defaults and its
//! validation.
//!
//! The file format is a contract (outside checks rely on it): sections may be
//! extended, never renamed. Unknown fields are errors. Every problem is
//! reported at once, one line each, naming the field path, before anything is
//! bound; CLI flags override the file before validation.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use ferry_client::FieldError;
use ferry_client::route::{ReservedAddr, RouteSpec, Rules, listen_conflicts, name_problem, validate_routes};
use serde::{Deserialize, Serialize};
use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::dataplane::copy::CopyMode;
use crate::telemetry::tracing::LogFormat;

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
    /// Standalone: the node's routes. Cluster mode: the routes that seed a
    /// new cluster, written once when it is first initialized.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
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
    /// Members to join: `HOST` or `HOST:PORT` (port 7946 by default), tried
    /// with backoff until one answers.
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
    if let Ok(addr) = s.parse::<SocketAddr>() {
        // Port 0 reaches nobody (it was accepted for an IP, not a name).
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(format!("expected an address a member listens on, got {s:?}"));
        }
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), GOSSIP_PORT));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("invalid port {p:?} in {s:?}"))?),
        None => (s, GOSSIP_PORT),
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid || port == 0 {
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

/// What [`Config::parse_all`] made of a file: the configuration as far as it
/// could be read (a value with a problem left out, so its default, or a
/// stand-in for a required one, takes its place), and every problem.
#[derive(Debug)]
pub struct Parsed {
    /// `None` when the file could not be read or parsed as TOML at all.
    pub config: Option<Config>,
    /// Parse problems, in the order of the file.
    pub problems: Vec<FieldError>,
}

impl Parsed {
    /// The configuration, if the file had no problem.
    pub fn into_result(self) -> Result<Config, ConfigErrors> {
        match self.config {
            Some(c) if self.problems.is_empty() => Ok(c),
            _ => Err(ConfigErrors(self.problems)),
        }
    }

    /// `config`, changed by `edit` (flag overrides), then validated: every
    /// parse problem and every validation problem at once. A validation
    /// problem at or under a field that had a parse problem is left out: it
    /// is about the stand-in, and the parse problem already names the field.
    pub fn validate(self, edit: impl FnOnce(&mut Config) -> Vec<FieldError>) -> Result<Config, ConfigErrors> {
        let Some(mut config) = self.config else { return Err(ConfigErrors(self.problems)) };
        let mut problems = self.problems;
        let parsed_clean = problems.is_empty();
        let mut more = edit(&mut config);
        match config.validate() {
            Ok(config) if parsed_clean && more.is_empty() => return Ok(config),
            Ok(_) => {}
            Err(ConfigErrors(e)) => more.extend(e),
        }
        more.retain(|m| !problems.iter().any(|p| is_at_or_under(&m.path, &p.path)));
        problems.extend(more);
        Err(ConfigErrors(problems))
    }
}

/// Whether field path `path` is `parent` or inside it (`a.b` and `a[0]`
/// are inside `a`; `ab` is not).
fn is_at_or_under(path: &str, parent: &str) -> bool {
    !parent.is_empty()
        && path.strip_prefix(parent).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
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

    /// Reads `path` and parses as much of it as it can: [`Config::parse_all`].
    pub fn read_all(path: &Path) -> Parsed {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_all(&text),
            Err(e) => Parsed {
                config: None,
                problems: vec![FieldError::new("", format!("cannot read {}: {e}", path.display()))],
            },
        }
    }

    /// Parses TOML text, without validating it, reporting every problem
    /// rather than the first. A syntax error is one line and nothing else
    /// can be read. Otherwise every unknown field, wrongly typed value and
    /// missing required field is reported, one line each naming the field
    /// path and the line (see [`parse_part`]), and what parsed is still
    /// returned, so that validation can report the file's other problems
    /// in the same run ([`Parsed::validate`]).
    pub fn parse_all(text: &str) -> Parsed {
        let mut root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(e) => return Parsed { config: None, problems: vec![toml_error("", &e, text)] },
        };
        let mut errors = Vec::new();
        // Each route on its own: a problem in one hides none in another.
        let routes = match root.get_mut().remove("routes") {
            None => Some(Vec::new()),
            Some(value) => parse_routes(value, text, &mut errors),
        };
        let (config, e) = parse_part::<Config>(root, "", text);
        errors.extend(e);
        // In the order of the file.
        errors.sort_by_key(|(at, _)| *at);
        Parsed {
            // A route that could not be read at all leaves the others
            // unchecked: their paths would name the wrong index.
            config: config.map(|c| Config { routes: routes.unwrap_or_default(), ..c }),
            problems: errors.into_iter().map(|(_, e)| e).collect(),
        }
    }

    /// Checks everything that parsing cannot: values, uniqueness, limits.
    pub fn validate(self) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        if self.node.workers > 256 {
            errors.push(FieldError::new(
                "node.workers",
                format!("must be at most 256, got {}", self.node.workers),
            ));
        }
        if self.node.drain_timeout_ms == 0 {
            errors.push(FieldError::new("node.drain_timeout_ms", "must be greater than 0"));
        }
        if self.node.resolve_interval_ms == 0 {
            errors.push(FieldError::new("node.resolve_interval_ms", "must be greater than 0"));
        }
        if self.node.resolve_timeout_ms == 0 {
            errors.push(FieldError::new("node.resolve_timeout_ms", "must be greater than 0"));
        }
        if let Some(msg) = name_problem("name", &self.node.name, Rules::Input) {
            errors.push(FieldError::new("node.name", msg));
        }
        if let Some(ep) = &self.telemetry.otlp_endpoint
            && let Err(e) = crate::telemetry::tracing::check_otlp_endpoint(ep)
        {
            errors.push(FieldError::new("telemetry.otlp_endpoint", e));
        }
        if let Err(e) = self.admin.read_token() {
            errors.push(FieldError::new("admin.token_file", e));
        }
        // Upper bounds keep deadlines (now + timeout) and the connection
        // semaphore far from overflow.
        for (field, value, max) in [
            ("admin.request_timeout_ms", self.admin.request_timeout_ms, MAX_ADMIN_TIMEOUT_MS),
            ("admin.header_timeout_ms", self.admin.header_timeout_ms, MAX_ADMIN_TIMEOUT_MS),
            ("admin.body_timeout_ms", self.admin.body_timeout_ms, MAX_ADMIN_TIMEOUT_MS),
            ("admin.max_connections", self.admin.max_connections as u64, MAX_ADMIN_CONNECTIONS),
        ] {
            if value == 0 {
                errors.push(FieldError::new(field, "must be greater than 0"));
            } else if value > max {
                errors.push(FieldError::new(field, format!("must be at most {max}, got {value}")));
            }
        }
        if let Some(c) = &self.cluster {
            validate_cluster(c, self.gossip.is_some(), &mut errors);
            if self.node.data_dir.is_none() {
                errors.push(FieldError::new("node.data_dir", "is required with [cluster]"));
            }
            // Peers learn it (gossip, the Raft membership, /v1/members) and
            // keep it across this node's restarts: a port the OS picks anew
            // at every start would be stale after the first.
            if self.admin.addr.port() == 0 {
                errors.push(FieldError::new(
                    "admin.addr",
                    format!(
                        "must have a fixed port in cluster mode (peers advertise it), got {}",
                        self.admin.addr
                    ),
                ));
            }
            let (a, b) = (c.addr, self.admin.addr);
            if a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
            {
                errors.push(FieldError::new(
                    "cluster.addr",
                    format!("{a} collides with the admin address {b}"),
                ));
            }
        }
        match (&self.gossip, &self.cluster) {
            (Some(_), None) => errors.push(FieldError::new("gossip", "requires a [cluster] section")),
            (Some(g), Some(c)) => validate_gossip(g, c, self.admin.addr, &mut errors),
            (None, _) => {}
        }
        errors.extend(validate_routes(&self.routes, "routes"));
        let reserved = self.reserved_addrs(self.admin.addr);
        errors.extend(listen_conflicts(&self.routes, "routes", self.node.bind_addr, &reserved));
        if errors.is_empty() { Ok(self) } else { Err(ConfigErrors(errors)) }
    }

    /// The addresses this node holds for itself, with its admin API on
    /// `admin`: no route may listen on them. The admin address, and with
    /// `[cluster]` the cluster address, and with `[gossip]` the gossip
    /// address (UDP, so a TCP route could bind its port; a route there is
    /// refused all the same, as the mistake it almost surely is).
    pub fn reserved_addrs(&self, admin: SocketAddr) -> Vec<ReservedAddr> {
        let mut reserved = vec![ReservedAddr::new(admin, "the admin address")];
        if let Some(c) = &self.cluster {
            reserved.push(ReservedAddr::new(c.addr, "the cluster address"));
            if let Some(g) = &self.gossip {
                reserved.push(ReservedAddr::new(g.addr(c), "the gossip address"));
            }
        }
        reserved
    }

    /// [`Config::read`] then [`Config::validate`].
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        Self::read(path)?.validate()
    }
}

fn validate_gossip(g: &GossipSection, c: &ClusterSection, admin: SocketAddr, errors: &mut Vec<FieldError>) {
    let mut err = |field: &str, msg: String| errors.push(FieldError::new(format!("gossip.{field}"), msg));
    let addr = g.addr(c);
    if addr.port() == 0 || addr.ip().is_unspecified() {
        err("addr", format!("must be a concrete IP:PORT peers can reach, got {addr}"));
    }
    if addr == admin {
        err("addr", format!("{addr} is also the admin address"));
    }
    for (i, seed) in g.join.iter().enumerate() {
        if let Err(e) = parse_seed(seed) {
            err(&format!("join[{i}]"), e);
        }
    }
    if !c.initial_members.is_empty() && (g.bootstrap_expect > 0) {
        err("bootstrap_expect", "conflicts with [cluster] initial_members: choose one way to form".into());
    }
    if c.initial_members.is_empty() && g.bootstrap_expect == 0 && g.join.is_empty() {
        err(
            "join",
            "give the members to join, or bootstrap_expect to form a new cluster (or [cluster] initial_members)"
                .into(),
        );
    }
    if g.bootstrap_expect > 9 {
        err("bootstrap_expect", format!("must be at most 9 (voters), got {}", g.bootstrap_expect));
    }
    if let Err(e) = g.gossip_config(&c.cluster_id).validate() {
        for issue in e.0 {
            err(issue.field, issue.message);
        }
    }
}

fn validate_cluster(c: &ClusterSection, gossip: bool, errors: &mut Vec<FieldError>) {
    let mut err = |field: &str, msg: String| errors.push(FieldError::new(format!("cluster.{field}"), msg));
    if c.node_id == 0 && !c.initial_members.is_empty() {
        err("node_id", "is required with initial_members".into());
    }
    if c.addr.port() == 0 || c.addr.ip().is_unspecified() {
        err("addr", format!("must be a concrete IP:PORT peers can reach, got {}", c.addr));
    }
    if c.max_voters == 0 || c.max_voters > 9 || c.max_voters.is_multiple_of(2) {
        err("max_voters", format!("must be odd, 1 to 9, got {}", c.max_voters));
    }
    if c.dead_node_timeout_ms < 1_000 {
        err("dead_node_timeout_ms", format!("must be at least 1000, got {}", c.dead_node_timeout_ms));
    }
    if let Some(msg) = name_problem("name", &c.cluster_id, Rules::Input) {
        err("cluster_id", msg);
    }
    if c.heartbeat_ms == 0 {
        err("heartbeat_ms", "must be greater than 0".into());
    }
    // openraft sends an idle heartbeat every 1.5 heartbeat_ms: a follower
    // must miss about two before it campaigns.
    if c.election_timeout_min_ms < c.heartbeat_ms.saturating_mul(3) {
        err(
            "election_timeout_min_ms",
            format!("must be at least 3 x heartbeat_ms ({})", c.heartbeat_ms.saturating_mul(3)),
        );
    }
    if c.election_timeout_max_ms <= c.election_timeout_min_ms {
        err(
            "election_timeout_max_ms",
            format!("must be greater than election_timeout_min_ms ({})", c.election_timeout_min_ms),
        );
    }
    if c.snapshot_logs < 10 {
        err("snapshot_logs", format!("must be at least 10, got {}", c.snapshot_logs));
    }
    let mut ids = std::collections::HashSet::new();
    let mut has_self = false;
    for (i, m) in c.initial_members.iter().enumerate() {
        match parse_member(m) {
            Ok((id, addr)) => {
                if !ids.insert(id) {
                    err(&format!("initial_members[{i}]"), format!("duplicate node id {id}"));
                }
                if id == c.node_id {
                    has_self = true;
                    if addr != c.addr {
                        err(
                            &format!("initial_members[{i}]"),
                            format!("node {id} is this node, whose addr is {}", c.addr),
                        );
                    }
                }
            }
            Err(e) => err(&format!("initial_members[{i}]"), e),
        }
    }
    if c.initial_members.is_empty() {
        if !gossip {
            err(
                "initial_members",
                "list every initial voter as ID@IP:PORT, this node included (or form the cluster through [gossip])"
                    .into(),
            );
        }
    } else if !has_self && c.node_id != 0 {
        err("initial_members", format!("must include this node ({}@{})", c.node_id, c.addr));
    }
    if c.leave_on_terminate && !gossip {
        err(
            "leave_on_terminate",
            "needs [gossip]: a static membership (initial_members) has no leave; a stopped node keeps its place"
                .into(),
        );
    }
}

/// A problem and where it is in the file (byte offset), to report them in order.
type Located = (usize, FieldError);

/// Most problems reported for one part of the file (a route, or the rest).
const MAX_PART_ERRORS: usize = 64;

/// `[[routes]]`, each route parsed on its own (problems pushed to
/// `errors`); `None` if a route could not be read at all.
fn parse_routes(
    value: Spanned<DeValue<'_>>,
    text: &str,
    errors: &mut Vec<Located>,
) -> Option<Vec<RouteSpec>> {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        let msg = format!("expected an array of tables ([[routes]]){}", at(span.clone(), text));
        errors.push((span.start, FieldError::new("routes", msg)));
        return None;
    };
    let mut routes = Some(Vec::with_capacity(items.len()));
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let span = item.span();
        let (route, e) = match item.into_inner() {
            DeValue::Table(t) => parse_part::<RouteSpec>(Spanned::new(span, t), &path, text),
            other => (
                None,
                vec![(
                    span.start,
                    FieldError::new(
                        path,
                        format!("expected a table, got {}{}", other.type_str(), at(span.clone(), text)),
                    ),
                )],
            ),
        };
        errors.extend(e);
        match (route, &mut routes) {
            (Some(route), Some(routes)) => routes.push(route),
            _ => routes = None,
        }
    }
    routes
}

/// Deserializes `table` as a `T`, reporting every problem rather than the
/// first: after each error the offending key is taken out of the table
/// and the rest deserialized again. A required field that is missing, or
/// was taken out, is reported once, and a placeholder of each TOML type in
/// turn stands in for it until one deserializes. Returns the value (with
/// defaults and placeholders where problems were, for validation to look
/// at the rest) unless it stopped early on a problem it cannot take out
/// (a wrongly typed array element), and the problems. Paths are prefixed
/// with `prefix`.
fn parse_part<T: serde::de::DeserializeOwned>(
    mut table: Spanned<DeTable<'_>>,
    prefix: &str,
    text: &str,
) -> (Option<T>, Vec<Located>) {
    let mut errors = Vec::new();
    // Path (as printed) of every key taken out, with its table's segments.
    let mut removed: Vec<(String, Vec<Segment>, String)> = Vec::new();
    // Path of every placeholder put in, and the next kind to try.
    let mut placeholders: Vec<(String, usize)> = Vec::new();
    for _ in 0..MAX_PART_ERRORS * 4 {
        let e = match serde_path_to_error::deserialize::<_, T>(toml::de::Deserializer::from(table.clone())) {
            Ok(value) => return (Some(value), errors),
            Err(e) => e,
        };
        let rel = e.path().to_string();
        let rel = if rel == "." { String::new() } else { rel };
        let message = e.inner().message();
        // A placeholder of the wrong type, or a required field taken out:
        // (re)place it.
        let missing = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`'));
        let retry = placeholders.iter().position(|(p, _)| *p == rel).or_else(|| {
            let field = missing?;
            let path = join_path(&rel, field);
            if !removed.iter().any(|(p, _, k)| k == field && *p == path) {
                // Missing from the file: report it, then stand a
                // placeholder in as for a field taken out.
                let span = e.inner().span();
                let pos = span.as_ref().map_or(0, |s| s.start);
                let line = span.map_or_else(String::new, |s| at(s, text));
                errors.push((pos, FieldError::new(join_path(prefix, &path), format!("is required{line}"))));
                removed.push((path.clone(), e.path().iter().cloned().collect(), field.to_string()));
            }
            placeholders.push((path, 0));
            Some(placeholders.len() - 1)
        });
        if let Some(i) = retry {
            let (path, kind) = &mut placeholders[i];
            let Some((_, parents, key)) = removed.iter().find(|(p, _, _)| *p == *path) else { break };
            let Some(value) = placeholder(*kind) else { break };
            *kind += 1;
            let parents: Vec<&Segment> = parents.iter().collect();
            match table_at(table.get_mut(), &parents) {
                Some(t) => t.insert(Spanned::new(0..0, key.clone().into()), Spanned::new(0..0, value)),
                None => break,
            };
            continue;
        }
        if errors.len() == MAX_PART_ERRORS {
            break;
        }
        let pos = e.inner().span().map_or(0, |s| s.start);
        errors.push((pos, toml_error(&join_path(prefix, &rel), e.inner(), text)));
        let segments: Vec<&Segment> = e.path().iter().collect();
        let Some((Segment::Map { key }, parents)) = segments.split_last() else { break };
        if table_at(table.get_mut(), parents).and_then(|t| t.remove(key.as_str())).is_none() {
            break;
        }
        removed.push((rel.clone(), parents.iter().map(|s| (*s).clone()).collect(), key.clone()));
    }
    (None, errors)
}

/// `a.b` from `a` and `b`; `a[0]` from `a` and `[0]`.
fn join_path(prefix: &str, rel: &str) -> String {
    match (prefix.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if rel.starts_with('[') => format!("{prefix}{rel}"),
        (false, false) => format!("{prefix}.{rel}"),
    }
}

/// Stand-ins for a required field, one of each TOML type its value may be.
fn placeholder(kind: usize) -> Option<DeValue<'static>> {
    Some(match kind {
        0 => DeValue::String("".into()),
        1 => DeValue::Boolean(false),
        2 => DeValue::Array(Default::default()),
        3 => DeValue::Table(DeTable::new()),
        _ => return None,
    })
}

/// The table at `path` under `table`, if there is one.
fn table_at<'t, 'i>(table: &'t mut DeTable<'i>, path: &[&Segment]) -> Option<&'t mut DeTable<'i>> {
    match path.split_first() {
        None => Some(table),
        Some((Segment::Map { key }, rest)) => value_table_at(table.get_mut(key.as_str())?.get_mut(), rest),
        Some(_) => None,
    }
}

fn value_table_at<'t, 'i>(value: &'t mut DeValue<'i>, path: &[&Segment]) -> Option<&'t mut DeTable<'i>> {
    match (value, path.split_first()) {
        (DeValue::Table(t), _) => table_at(t, path),
        (DeValue::Array(a), Some((Segment::Seq { index }, rest))) => {
            value_table_at(a.get_mut(*index)?.get_mut(), rest)
        }
        _ => None,
    }
}

/// ` (line L, column C)` of the byte range `span` in `text`.
fn at(span: std::ops::Range<usize>, text: &str) -> String {
    let before = text.get(..span.start.min(text.len())).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
    format!(" (line {line}, column {col})")
}

/// A parse error as one line: `path: message (line L, column C)`. A
/// message that does not show the value it is about (`invalid socket
/// address syntax`, `duplicate key`) gets it quoted from the file.
fn toml_error(path: &str, e: &toml::de::Error, text: &str) -> FieldError {
    let mut msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return FieldError::new(path, msg) };
    let value = text.get(span.clone()).map(str::trim).unwrap_or("");
    let bare = value.trim_matches(['"', '\'']);
    let shown = msg.contains(&format!("\"{bare}\"")) || msg.contains(&format!("`{bare}`"));
    if !value.is_empty() && value.len() <= 80 && !value.contains('\n') && !shown {
        if msg == "duplicate key" {
            msg = format!("duplicate key `{bare}`");
        } else {
            msg = format!("{msg}: {value}");
        }
    }
    FieldError::new(path, format!("{msg}{}", at(span, text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "n1"
[admin]
addr = "127.0.0.1:7948"

[[routes]]
name = "web"
listen = "127.0.0.1:7000"
balance = "weighted"
hash_key = "client_ip"
connect_timeout_ms = 1000
idle_timeout_ms = 300000
max_connections = 10000
max_connect_attempts = 3
  [[routes.backends]]
  id = "a"
  addr = "127.0.0.1:9001"
  weight = 3
  [routes.health_check]
  interval_ms = 1000
  timeout_ms = 500
  rise = 2
  fall = 2
"#;

    /// Every problem of `text`, as `ferryd --check-config` reports them.
    fn errors(text: &str) -> Vec<String> {
        match Config::parse_all(text).validate(|_| Vec::new()) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_contract_example_parses() -> Result<(), ConfigErrors> {
        let c = Config::parse(GOOD)?.validate()?;
        assert_eq!(c.node.name, "n1");
        assert_eq!(c.routes[0].backends[0].weight, 3);
        assert_eq!(c.routes[0].health_check.map(|h| h.fall), Some(2));
        Ok(())
    }

    #[test]
    fn unknown_field_names_its_path_and_line() {
        let text = GOOD.replace("  weight = 3", "  weight = 3\n  wieght = 4");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("routes[0].backends[0]"), "{e:?}");
        assert!(e[0].contains("unknown field `wieght`"), "{e:?}");
        assert!(e[0].contains("line 20"), "{e:?}");
    }

    /// Parsing stopped at the first problem before: a file with several
    /// got one line.
    #[test]
    fn every_unknown_field_and_bad_type_is_reported_once() {
        let text = GOOD
            .replace("name = \"n1\"", "name = \"n1\"\nnmae = \"x\"")
            .replace("  weight = 3", "  weight = \"heavy\"\n  wieght = 4")
            .replace("connect_timeout_ms = 1000", "connect_timeout_ms = \"1s\"")
            + "\n[[routes]]\nname = \"b\"\nlisten = 7\nbalanse = \"random\"\n";
        let e = errors(&text);
        let has = |prefix: &str, text: &str| e.iter().any(|l| l.starts_with(prefix) && l.contains(text));
        assert!(has("node.nmae: unknown field `nmae`", "(line 4,"), "{e:#?}");
        assert!(has("routes[0].connect_timeout_ms: invalid type: string \"1s\"", "line"), "{e:#?}");
        assert!(has("routes[0].backends[0].weight: invalid type: string \"heavy\"", "line"), "{e:#?}");
        assert!(has("routes[0].backends[0].wieght: unknown field `wieght`", "line"), "{e:#?}");
        assert!(has("routes[1].listen: invalid type: integer `7`", "line"), "{e:#?}");
        assert!(has("routes[1].balanse: unknown field `balanse`", "line"), "{e:#?}");
        // A validation problem, reported with the parse problems since
        // they no longer hide it.
        assert!(has("routes[1].backends: a route needs at least one backend", ""), "{e:#?}");
        assert_eq!(e.len(), 7, "one line per problem: {e:#?}");
        let lines: Vec<usize> =
            e.iter().filter_map(|l| l.rsplit_once("(line ")?.1.split_once(',')?.0.parse().ok()).collect();
        assert!(lines.is_sorted() && lines.len() == 6, "in the order of the file: {e:#?}");
    }

    #[test]
    fn a_bad_required_field_is_not_reported_again_as_missing_and_hides_nothing() {
        let e = errors(&GOOD.replace("  addr = \"127.0.0.1:9001\"", "  addr = 9001\n  port = 1"));
        assert!(e[0].starts_with("routes[0].backends[0].addr: invalid type: integer `9001`"), "{e:#?}");
        assert!(e[1].starts_with("routes[0].backends[0].port: unknown field `port`"), "{e:#?}");
        assert_eq!(e.len(), 2, "{e:#?}");
        let e = errors("[[routes]]\nname = 1\nlisten = []\nbackends = 2\nx = 1");
        assert_eq!(e.len(), 4, "{e:#?}");
        let e = errors("routes = 3");
        assert_eq!(e, ["routes: expected an array of tables ([[routes]]) (line 1, column 10)"]);
        let e = errors("routes = [1]");
        assert_eq!(e, ["routes[0]: expected a table, got integer (line 1, column 11)"]);
    }

    #[test]
    fn parse_problems_hide_no_validation_problem() {
        // Before, the two parse problems were reported alone, and the three
        // validation problems only once they were fixed.
        let text = GOOD
            .replace("name = \"n1\"", "name = \"n 1\"\ndrain_timeout_ms = \"x\"")
            .replace("connect_timeout_ms = 1000", "connect_timeout_ms = 0")
            .replace("weight = 3", "weight = 999\n  colour = 1");
        let e = errors(&text);
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(e[0].starts_with("node.drain_timeout_ms: invalid type: string \"x\""), "{e:#?}");
        assert!(e[1].starts_with("routes[0].backends[0].colour: unknown field `colour`"), "{e:#?}");
        assert!(e[2].starts_with("node.name: invalid name \"n 1\""), "{e:#?}");
        assert_eq!(e[3], "routes[0].connect_timeout_ms: must be greater than 0");
        assert_eq!(e[4], "routes[0].backends[0].weight: must be between 0 and 256, got 999");
    }

    #[test]
    fn a_problem_about_a_stand_in_is_not_reported() {
        // `listen` and `backends` are missing or wrongly typed: the stand-ins
        // put in their place must not add "no backends" or a bad address.
        let e = errors("[[routes]]\nname = \"web\"\nbackends = 2\nconnect_timeout_ms = 0");
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].starts_with("routes[0].listen: is required (line 1, column 1)"), "{e:#?}");
        assert!(e[1].starts_with("routes[0].backends: invalid type: integer `2`"), "{e:#?}");
        assert_eq!(e[2], "routes[0].connect_timeout_ms: must be greater than 0");
    }

    #[test]
    fn messages_quote_the_value_or_key_they_are_about() {
        let e = errors("[admin]\naddr = \"x\"");
        assert_eq!(e, ["admin.addr: invalid socket address syntax: \"x\" (line 2, column 8)"]);
        let e = errors("[node]\nbind_addr = \"1.2.3\"");
        assert_eq!(e, ["node.bind_addr: invalid IP address syntax: \"1.2.3\" (line 2, column 13)"]);
        let e = errors("[node]\nname = \"a\"\nname = \"b\"");
        assert_eq!(e, ["duplicate key `name` (line 3, column 1)"]);
    }

    #[test]
    fn bad_enum_value_names_the_field() {
        let e = errors(&GOOD.replace("\"weighted\"", "\"fastest\""));
        assert!(e[0].starts_with("routes[0].balance: unknown variant `fastest`"), "{e:?}");
    }

    #[test]
    fn worker_balance_takes_its_two_names_and_nothing_else() -> Result<(), ConfigErrors> {
        assert_eq!(Config::parse(GOOD)?.validate()?.node.worker_balance, WorkerBalance::LeastConnections);
        let kernel = GOOD.replace("[node]\n", "[node]\nworker_balance = \"kernel\"\n");
        assert_eq!(Config::parse(&kernel)?.validate()?.node.worker_balance, WorkerBalance::Kernel);
        let e = errors(&GOOD.replace("[node]\n", "[node]\nworker_balance = \"round_robin\"\n"));
        assert!(e[0].starts_with("node.worker_balance: unknown variant `round_robin`"), "{e:?}");
        Ok(())
    }

    #[test]
    fn backends_take_host_names_and_resolution_settings_are_per_node() -> Result<(), ConfigErrors> {
        let c = Config::parse(&GOOD.replace("127.0.0.1:9001", "db-1.internal:5432"))?.validate()?;
        assert_eq!(c.routes[0].backends[0].addr, "db-1.internal:5432");
        assert_eq!((c.node.resolve_interval_ms, c.node.resolve_timeout_ms), (10_000, 2_000));
        let set = GOOD.replace("[node]\n", "[node]\nresolve_interval_ms = 500\nresolve_timeout_ms = 100\n");
        let c = Config::parse(&set)?.validate()?;
        assert_eq!(
            c.node.resolve_settings(),
            crate::control::resolver::ResolveSettings {
                interval: std::time::Duration::from_millis(500),
                timeout: std::time::Duration::from_millis(100),
            }
        );
        let zero = GOOD.replace("[node]\n", "[node]\nresolve_interval_ms = 0\nresolve_timeout_ms = 0\n");
        assert_eq!(
            errors(&zero),
            vec![
                "node.resolve_interval_ms: must be greater than 0",
                "node.resolve_timeout_ms: must be greater than 0"
            ]
        );
        let e = errors(&GOOD.replace("127.0.0.1:9001", "db-1.internal"));
        assert_eq!(
            e,
            vec![
                "routes[0].backends[0].addr: invalid address \"db-1.internal\": the port is missing (expected IP:PORT or HOST:PORT)"
            ]
        );
        let e = errors(&GOOD.replace("127.0.0.1:9001", "db-1.internal:0"));
        assert_eq!(e, vec!["routes[0].backends[0].addr: port 0 is not a backend port"]);
        Ok(())
    }

    #[test]
    fn bad_address_is_one_line_naming_the_backend() {
        let e = errors(&GOOD.replace("127.0.0.1:9001", "x"));
        assert_eq!(
            e,
            vec![
                "routes[0].backends[0].addr: invalid address \"x\": the port is missing (expected IP:PORT or HOST:PORT)"
            ]
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        let text = GOOD
            .replace("connect_timeout_ms = 1000", "connect_timeout_ms = 0")
            .replace("weight = 3", "weight = 0");
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.contains(&"routes[0].connect_timeout_ms: must be greater than 0".to_string()));
    }

    #[test]
    fn route_on_the_admin_address_is_refused() {
        let e = errors(&GOOD.replace("127.0.0.1:7000", "127.0.0.1:7948"));
        assert_eq!(
            e,
            vec!["routes[0].listen: \"127.0.0.1:7948\" collides with the admin address 127.0.0.1:7948"]
        );
    }

    /// Only the admin address was refused: a route on the cluster or
    /// gossip port passed `--check-config` and failed at start (or, in a
    /// cluster, on every node).
    #[test]
    fn routes_on_the_nodes_own_cluster_or_gossip_address_are_refused() {
        let routes = "[[routes]]\nname = \"a\"\nlisten = \"127.0.0.4:7947\"\n[[routes.backends]]\nid = \"a\"\naddr = \"127.0.0.1:9001\"\n\
                      [[routes]]\nname = \"b\"\nlisten = \":7946\"\n[[routes.backends]]\nid = \"a\"\naddr = \"127.0.0.1:9001\"\n\
                      [[routes]]\nname = \"c\"\nlisten = \"0.0.0.0:7948\"\n[[routes.backends]]\nid = \"a\"\naddr = \"127.0.0.1:9001\"\n";
        let e = errors(&format!("{GOSSIP}{routes}"));
        assert_eq!(
            e,
            vec![
                "routes[0].listen: \"127.0.0.4:7947\" collides with the cluster address 127.0.0.4:7947",
                "routes[1].listen: \":7946\" collides with the gossip address 127.0.0.4:7946",
                "routes[2].listen: \"0.0.0.0:7948\" collides with the admin address 127.0.0.1:7948",
            ]
        );
        // Standalone, the same ports are free.
        assert_eq!(errors(&routes.replace("0.0.0.0:7948", "0.0.0.0:7949")), Vec::<String>::new());
    }

    #[test]
    fn a_cluster_node_needs_a_fixed_admin_port_apart_from_its_cluster_address() {
        let e = errors(&CLUSTER.replace("[cluster]", "[admin]\naddr = \"127.0.0.2:0\"\n[cluster]"));
        assert_eq!(
            e,
            vec!["admin.addr: must have a fixed port in cluster mode (peers advertise it), got 127.0.0.2:0"]
        );
        let e = errors(&CLUSTER.replace("[cluster]", "[admin]\naddr = \"0.0.0.0:7947\"\n[cluster]"));
        assert_eq!(e, vec!["cluster.addr: 127.0.0.2:7947 collides with the admin address 0.0.0.0:7947"]);
    }

    #[test]
    fn dot_names_and_listen_port_zero_are_refused() {
        let e =
            errors(&GOOD.replace("name = \"n1\"", "name = \"..\"").replace("127.0.0.1:7000", "127.0.0.1:0"));
        assert_eq!(
            e,
            vec![
                "node.name: invalid name \"..\": \".\" and \"..\" are reserved (no URL path can name them)",
                "routes[0].listen: invalid listen address \"127.0.0.1:0\": port 0 is not a listen port (clients must know it)",
            ]
        );
        let e = errors(&GOOD.replace("name = \"web\"", "name = \".\""));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("routes[0].name: invalid name \".\""), "{e:?}");
    }

    #[test]
    fn port_only_listen_conflicts_with_the_same_resolved_address() {
        let text = GOOD.replace("[admin]", "bind_addr = \"127.0.0.1\"\n[admin]")
            + "[[routes]]\nname = \"b\"\nlisten = \":7000\"\n[[routes.backends]]\nid = \"a\"\naddr = \"127.0.0.1:9001\"\n";
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("routes[1].listen: \":7000\" collides with routes[0].listen"), "{e:?}");
    }

    const CLUSTER: &str = r#"
[node]
name = "n2"
data_dir = "/tmp/ferry-n2"
[cluster]
node_id = 2
addr = "127.0.0.2:7947"
initial_members = ["1@127.0.0.1:7947", "2@127.0.0.2:7947", "3@127.0.0.3:7947"]
"#;

    #[test]
    fn cluster_section_parses_with_defaults() -> Result<(), ConfigErrors> {
        let c = Config::parse(CLUSTER)?.validate()?;
        let cluster = c.cluster.expect("cluster section");
        assert_eq!(cluster.cluster_id, "ferry");
        assert_eq!(cluster.members().len(), 3);
        assert_eq!(cluster.members()[1], (2, "127.0.0.2:7947".parse().expect("addr")));
        Ok(())
    }

    #[test]
    fn cluster_problems_name_their_fields() {
        let text = CLUSTER
            .replace("data_dir = \"/tmp/ferry-n2\"\n", "")
            .replace("\"3@127.0.0.3:7947\"", "\"3@nowhere\", \"1@127.0.0.9:1\"")
            .replace("2@127.0.0.2:7947\"", "2@127.0.0.5:7947\"");
        let e = errors(&format!("{text}election_timeout_min_ms = 299\n"));
        for want in [
            "cluster.election_timeout_min_ms: must be at least 3 x heartbeat_ms (300)",
            "cluster.initial_members[1]: node 2 is this node, whose addr is 127.0.0.2:7947",
            "cluster.initial_members[2]: invalid socket address \"nowhere\" in \"3@nowhere\"",
            "cluster.initial_members[3]: duplicate node id 1",
            "node.data_dir: is required with [cluster]",
        ] {
            assert!(e.iter().any(|l| l == want), "missing {want:?} in {e:#?}");
        }
    }

    const GOSSIP: &str = r#"
[node]
data_dir = "/tmp/ferry-g"
[cluster]
addr = "127.0.0.4:7947"
[gossip]
join = ["127.0.0.1", "127.0.0.2:8946", "ferry-1.example:7946"]
"#;

    #[test]
    fn gossip_section_defaults_its_address_from_the_cluster_ip() -> Result<(), ConfigErrors> {
        let c = Config::parse(GOSSIP)?.validate()?;
        let (cluster, gossip) = (c.cluster.expect("cluster"), c.gossip.expect("gossip"));
        assert_eq!(cluster.node_id, 0, "random id");
        assert_eq!(gossip.addr(&cluster), "127.0.0.4:7946".parse().expect("addr"));
        assert_eq!(gossip.profile, ferry_gossip::Profile::Lan);
        assert_eq!((cluster.max_voters, cluster.dead_node_timeout_ms), (5, 60_000));
        assert!(!cluster.leave_on_terminate, "a stopped node keeps its place by default");
        Ok(())
    }

    #[test]
    fn leave_on_terminate_needs_gossip() -> Result<(), ConfigErrors> {
        let c =
            Config::parse(&GOSSIP.replace("[gossip]", "leave_on_terminate = true\n[gossip]"))?.validate()?;
        assert!(c.cluster.expect("cluster").leave_on_terminate);
        let e = errors(&format!("{CLUSTER}leave_on_terminate = true\n"));
        let want = "cluster.leave_on_terminate: needs [gossip]";
        assert!(e.iter().any(|l| l.starts_with(want)), "missing {want:?} in {e:#?}");
        Ok(())
    }

    #[test]
    fn seeds_take_a_host_and_an_optional_port() {
        assert_eq!(parse_seed("10.0.0.1"), Ok(("10.0.0.1".into(), 7946)));
        assert_eq!(parse_seed("10.0.0.1:9"), Ok(("10.0.0.1".into(), 9)));
        assert_eq!(parse_seed("[::1]:9"), Ok(("::1".into(), 9)));
        assert_eq!(parse_seed("node-2.lan"), Ok(("node-2.lan".into(), 7946)));
        assert!(parse_seed("a b").is_err());
        // Port 0 and an unspecified IP reach nobody: accepted before for an IP.
        for bad in ["10.0.0.1:0", "node-2.lan:0", "0.0.0.0:7946", "[::]:7946"] {
            assert!(parse_seed(bad).is_err(), "{bad:?}");
        }
        assert!(parse_member("1@127.0.0.1:0").is_err());
        assert!(parse_member("1@0.0.0.0:7947").is_err());
        assert_eq!(parse_member("1@127.0.0.1:7947"), Ok((1, "127.0.0.1:7947".parse().expect("addr"))));
        assert!(parse_seed("host:x").is_err());
        assert!(parse_seed("").is_err());
    }

    #[test]
    fn gossip_problems_name_their_fields() {
        let text = GOSSIP.replace("\"127.0.0.1\", ", "\"bad seed\", ")
            + "bootstrap_expect = 11\nprobe_period_ms = 0\n";
        let text = text.replace("addr = \"127.0.0.4:7947\"", "addr = \"127.0.0.4:7947\"\nmax_voters = 4");
        let e = errors(&text);
        for want in [
            "gossip.join[0]: expected HOST or HOST:PORT, got \"bad seed\"",
            "gossip.bootstrap_expect: must be at most 9 (voters), got 11",
            "cluster.max_voters: must be odd, 1 to 9, got 4",
        ] {
            assert!(e.iter().any(|l| l == want), "missing {want:?} in {e:#?}");
        }
        assert!(e.iter().any(|l| l.starts_with("gossip.probe_period_ms")), "{e:#?}");
    }

    #[test]
    fn gossip_needs_a_way_to_form_or_join_and_a_cluster_section() {
        let e = errors(
            &GOSSIP.replace("join = [\"127.0.0.1\", \"127.0.0.2:8946\", \"ferry-1.example:7946\"]", ""),
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("gossip.join: give the members to join"), "{e:?}");
        let e = errors("[gossip]\nbootstrap_expect = 1\n");
        assert_eq!(e, vec!["gossip: requires a [cluster] section"]);
        let e = errors(&format!("{CLUSTER}[gossip]\nbootstrap_expect = 3\n"));
        assert_eq!(
            e,
            vec!["gossip.bootstrap_expect: conflicts with [cluster] initial_members: choose one way to form"]
        );
        let e = errors(&CLUSTER.replace("node_id = 2\n", ""));
        assert!(e.contains(&"cluster.node_id: is required with initial_members".to_string()), "{e:?}");
    }

    #[test]
    fn otlp_endpoint_must_be_plain_http() {
        let e = errors("[telemetry]\notlp_endpoint = \"https://collector:4317\"");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("telemetry.otlp_endpoint: expected an http:// URL"), "{e:?}");
        assert!(errors("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"").is_empty());
        assert!(errors("[telemetry]\notlp_endpoint = \"\"").is_empty(), "empty: export nothing");
        let e = errors("[telemetry]\notlp_endpoint = \"http://bad host:1\"");
        assert!(e[0].starts_with("telemetry.otlp_endpoint: invalid URL \"http://bad host:1\""), "{e:?}");
    }

    /// Before, these were found by `Node::start` after the route
    /// listeners were bound: `--check-config` said ok and `--config` exited 1.
    #[test]
    fn an_unreadable_or_empty_token_file_is_a_config_error() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("ferry-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (empty, good, missing) = (dir.join("empty"), dir.join("good"), dir.join("missing"));
        std::fs::write(&empty, " \n")?;
        std::fs::write(&good, "s3cret\n")?;
        let with =
            |p: &std::path::Path| errors(&format!("[admin]\ntoken_file = {:?}", p.display().to_string()));
        assert_eq!(with(&empty), [format!("admin.token_file: {} is empty", empty.display())]);
        let e = with(&missing);
        assert!(
            e.len() == 1 && e[0].starts_with(&format!("admin.token_file: cannot read {}", missing.display())),
            "{e:?}"
        );
        assert!(with(&good).is_empty());
        let mut admin = Config::default().admin;
        admin.token_file = Some(good);
        assert_eq!(admin.read_token()?, Some("s3cret".to_string()), "trimmed");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn admin_timeouts_and_connection_cap_are_positive_and_bounded() -> Result<(), ConfigErrors> {
        let c = Config::parse("")?.validate()?;
        let a = &c.admin;
        assert_eq!((a.header_timeout_ms, a.body_timeout_ms, a.max_connections), (10_000, 10_000, 512));
        let text = "[admin]\nheader_timeout_ms = 0\nbody_timeout_ms = 0\nmax_connections = 0\nrequest_timeout_ms = 0";
        assert_eq!(
            errors(text),
            [
                "admin.request_timeout_ms: must be greater than 0",
                "admin.header_timeout_ms: must be greater than 0",
                "admin.body_timeout_ms: must be greater than 0",
                "admin.max_connections: must be greater than 0",
            ]
        );
        let text = "[admin]\nheader_timeout_ms = 9223372036854775807\nmax_connections = 100000";
        assert_eq!(
            errors(text),
            [
                "admin.header_timeout_ms: must be at most 3600000, got 9223372036854775807",
                "admin.max_connections: must be at most 65536, got 100000",
            ]
        );
        assert!(
            errors("[admin]\nheader_timeout_ms = 250\nbody_timeout_ms = 3600000\nmax_connections = 1")
                .is_empty()
        );
        Ok(())
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = errors("[node\nname = 1");
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("line 1"), "{e:?}");
    }

    #[test]
    fn empty_file_is_a_node_without_routes() -> Result<(), ConfigErrors> {
        let c = Config::parse("")?.validate()?;
        assert!(c.routes.is_empty());
        assert_eq!(c.node.copy, CopyMode::Userspace, "the benchmark's fastest mode is the default");
        assert_eq!(c.admin.addr, default_admin_addr());
        Ok(())
    }
}
