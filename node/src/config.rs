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
use ferry_client::route::{RouteSpec, listen_conflicts, validate_routes};
use serde::{Deserialize, Serialize};

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
    /// Standalone: the node's routes. Cluster mode: the routes that seed a
    /// new cluster, written once when it is first initialized.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// `[cluster]`: this node's place in a Raft cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's Raft id (> 0), unique in the cluster.
    pub node_id: u64,
    /// The cluster port: Raft RPCs and forwarded writes; bound and advertised.
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
    let addr = addr.parse().map_err(|_| format!("invalid socket address {addr:?} in {s:?}"))?;
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
    /// How connections move bytes: `userspace` (read/write) or `splice`
    /// (zero-copy through a kernel pipe).
    #[serde(default)]
    pub copy: CopyMode,
    /// Data-plane worker threads, each with its own event loop and its own
    /// `SO_REUSEPORT` listener per route; 0 runs the data plane on the
    /// node's main runtime. Default: one per CPU.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Where cluster state (the Raft log and state machine) is kept;
    /// required with `[cluster]`.
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
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
}

fn default_request_timeout_ms() -> u64 {
    5_000
}

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// `text` or `json` logs on stderr.
    #[serde(default)]
    pub log_format: LogFormat,
    /// OTLP gRPC collector, e.g. `http://127.0.0.1:4317`. When unset,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is used; when both are unset traces are
    /// not exported.
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
            data_dir: None,
        }
    }
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            addr: default_admin_addr(),
            token_file: None,
            request_timeout_ms: default_request_timeout_ms(),
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
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![FieldError::new("", format!("cannot read {}: {e}", path.display()))])
        })?;
        Self::parse(&text)
    }

    /// Parses TOML text, without validating it. A syntax or type error names
    /// the field path and the line.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigErrors(vec![toml_error("", &e, text)]))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            ConfigErrors(vec![toml_error(&path, e.inner(), text)])
        })
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
        if !ferry_client::route::valid_name(&self.node.name) {
            errors.push(FieldError::new(
                "node.name",
                format!("invalid name {:?}: use 1 to 64 of A-Z a-z 0-9 _ - .", self.node.name),
            ));
        }
        if let Some(ep) = &self.telemetry.otlp_endpoint
            && !ep.starts_with("http://")
        {
            // ferryd is built without TLS for the exporter (lean build): say
            // so at load instead of failing when the exporter starts.
            errors.push(FieldError::new(
                "telemetry.otlp_endpoint",
                format!("expected an http:// URL (OTLP over TLS is not built in), got {ep:?}"),
            ));
        }
        if self.admin.request_timeout_ms == 0 {
            errors.push(FieldError::new("admin.request_timeout_ms", "must be greater than 0"));
        }
        if let Some(c) = &self.cluster {
            validate_cluster(c, &mut errors);
            if self.node.data_dir.is_none() {
                errors.push(FieldError::new("node.data_dir", "is required with [cluster]"));
            }
        }
        errors.extend(validate_routes(&self.routes, "routes"));
        errors.extend(listen_conflicts(&self.routes, "routes", self.node.bind_addr, Some(self.admin.addr)));
        if errors.is_empty() { Ok(self) } else { Err(ConfigErrors(errors)) }
    }

    /// [`Config::read`] then [`Config::validate`].
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        Self::read(path)?.validate()
    }
}

fn validate_cluster(c: &ClusterSection, errors: &mut Vec<FieldError>) {
    let mut err = |field: &str, msg: String| errors.push(FieldError::new(format!("cluster.{field}"), msg));
    if c.node_id == 0 {
        err("node_id", "must be greater than 0".into());
    }
    if !ferry_client::route::valid_name(&c.cluster_id) {
        err("cluster_id", format!("invalid name {:?}: use 1 to 64 of A-Z a-z 0-9 _ - .", c.cluster_id));
    }
    if c.heartbeat_ms == 0 {
        err("heartbeat_ms", "must be greater than 0".into());
    }
    if c.election_timeout_min_ms <= c.heartbeat_ms {
        err("election_timeout_min_ms", format!("must be greater than heartbeat_ms ({})", c.heartbeat_ms));
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
        err("initial_members", "list every initial voter as ID@IP:PORT, this node included".into());
    } else if !has_self && c.node_id != 0 {
        err("initial_members", format!("must include this node ({}@{})", c.node_id, c.addr));
    }
}

/// A parse error as one line: `path: message (line L, column C)`.
fn toml_error(path: &str, e: &toml::de::Error, text: &str) -> FieldError {
    let mut msg = e.message().trim().replace('\n', " ");
    if let Some(span) = e.span() {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
        msg = format!("{msg} (line {line}, column {col})");
    }
    FieldError::new(path, msg)
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

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text).and_then(Config::validate) {
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

    #[test]
    fn bad_enum_value_names_the_field() {
        let e = errors(&GOOD.replace("\"weighted\"", "\"fastest\""));
        assert!(e[0].starts_with("routes[0].balance: unknown variant `fastest`"), "{e:?}");
    }

    #[test]
    fn bad_address_is_one_line_naming_the_backend() {
        let e = errors(&GOOD.replace("127.0.0.1:9001", "x"));
        assert_eq!(e, vec!["routes[0].backends[0].addr: invalid socket address \"x\""]);
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
        let e = errors(&format!("{text}election_timeout_min_ms = 50\n"));
        for want in [
            "cluster.election_timeout_min_ms: must be greater than heartbeat_ms (100)",
            "cluster.initial_members[1]: node 2 is this node, whose addr is 127.0.0.2:7947",
            "cluster.initial_members[2]: invalid socket address \"nowhere\" in \"3@nowhere\"",
            "cluster.initial_members[3]: duplicate node id 1",
            "node.data_dir: is required with [cluster]",
        ] {
            assert!(e.iter().any(|l| l == want), "missing {want:?} in {e:#?}");
        }
    }

    #[test]
    fn otlp_endpoint_must_be_plain_http() {
        let e = errors("[telemetry]\notlp_endpoint = \"https://collector:4317\"");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("telemetry.otlp_endpoint: expected an http:// URL"), "{e:?}");
        assert!(errors("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"").is_empty());
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
        assert_eq!(c.admin.addr, default_admin_addr());
        Ok(())
    }
}
