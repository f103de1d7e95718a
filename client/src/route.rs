//! The route schema: what a `[[routes]]` table in `ferryd.toml` and a route
//! body on the admin API both contain, with its defaults and its validation.
//!
//! Validation is a pure function returning every problem at once, each naming
//! the field path (`routes[1].backends[0].addr: invalid address "x": …`),
//! so the file loader, the API and the CLI report the same messages.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::FieldError;
use crate::addr::BackendAddr;
pub use crate::listen::{
    ListenAddr, ReservedAddr, cluster_listen_conflict, listen_conflicts, reserved_conflict,
};
pub use crate::name::{Rules, name_problem, valid_name, valid_stored_name};

/// Largest backend weight (HAProxy's range is 0..=256 as well).
pub const MAX_WEIGHT: u32 = 256;
/// Largest `max_connect_attempts`.
pub const MAX_CONNECT_ATTEMPTS: u32 = 16;
/// Largest number of hash-ring points a route may ask for (sum of weight × vnodes).
pub const MAX_RING_POINTS: u64 = 20_000;

/// How a route picks a backend for a new client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin, as nginx.
    #[default]
    Weighted,
    /// Consistent hashing of `hash_key` over a ring of weighted virtual nodes.
    ConsistentHash,
    /// Fewest active connections relative to weight.
    LeastConnections,
    /// Each backend in turn, ignoring weights.
    RoundRobin,
    /// A weighted random backend.
    Random,
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// The client's IP address: one client sticks to one backend.
    #[default]
    ClientIp,
    /// The client's IP address and port: each connection hashes on its own.
    ClientAddr,
}

/// One route: a listener and the backends it forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique route name: `[A-Za-z0-9_.-]`, 1 to 64 characters.
    pub name: String,
    /// Listen address, `IP:PORT`, or `:PORT` for the node's bind address.
    pub listen: String,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub hash_key: HashKey,
    /// Ring points per unit of weight (consistent_hash only).
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// Distinct backends tried for one client connection.
    #[serde(default = "default_max_connect_attempts")]
    pub max_connect_attempts: u32,
    /// Consecutive connect failures that eject a backend (0 disables ejection).
    #[serde(default = "default_eject_after_failures")]
    pub eject_after_failures: u32,
    /// First ejection period; it doubles on each ejection in a row, up to 64×.
    #[serde(default = "default_eject_backoff_ms")]
    pub eject_backoff_ms: u64,
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
    /// Operators' key/value metadata (owner, ticket, environment): stored,
    /// replicated and returned as written; routing ignores it. At most
    /// [`MAX_LABELS`]; keys are 1 to 63 of `a-z 0-9 _ - . /`, values at
    /// most [`MAX_LABEL_VALUE`] bytes. The feature `route_labels`
    /// (protocol 4): refused while a member runs an older ferry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// False: the route stays in the config and the routing table, but no
    /// node binds its listener, and its open connections are closed at
    /// once (a Toxiproxy proxy's `enabled: false`). Left out of the JSON
    /// when true, so an enabled route reads the same to an older node; a
    /// disabled one is the feature `route_enabled` (protocol 5).
    #[serde(default = "default_enabled", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

/// Most labels on one route.
pub const MAX_LABELS: usize = 32;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 256;

/// One backend of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Unique within the route.
    pub id: String,
    /// `IP:PORT` or `HOST:PORT` of the backend (as seen from the owning
    /// node when `node` is set); see [`BackendAddr`].
    pub addr: String,
    /// Relative share of traffic, 0 ..= 256; 0 takes no new connections.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The node whose local service this backend is: a node name, or a
    /// decimal node id (a value of digits only is always an id). Other nodes
    /// reach it through that node (a peer hop); `None`: every node connects
    /// to `addr` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What a backend's `node` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeRef<'a> {
    /// A node id (the value was digits only).
    Id(u64),
    /// A node name.
    Name(&'a str),
}

impl<'a> NodeRef<'a> {
    /// Parses a backend's `node`: digits only is a node id (> 0), anything
    /// else a node name; `None` when it is neither valid id nor valid name.
    /// Names are read as stored ([`Rules::Stored`]): validation refuses new
    /// `.` and `..`.
    pub fn parse(s: &'a str) -> Option<Self> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse::<u64>().ok().filter(|id| *id > 0).map(NodeRef::Id);
        }
        valid_stored_name(s).then_some(NodeRef::Name(s))
    }
}

/// Active TCP-connect health check for every backend of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    #[serde(default = "default_check_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passing checks that bring a down backend up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failing checks that take an up backend down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_vnodes() -> u32 {
    100
}
fn default_connect_timeout_ms() -> u64 {
    1_000
}
fn default_idle_timeout_ms() -> u64 {
    300_000
}
fn default_max_connections() -> u64 {
    10_000
}
fn default_max_connect_attempts() -> u32 {
    3
}
fn default_eject_after_failures() -> u32 {
    3
}
fn default_eject_backoff_ms() -> u64 {
    1_000
}
fn default_enabled() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn default_weight() -> u32 {
    1
}
fn default_check_interval_ms() -> u64 {
    1_000
}
fn default_check_timeout_ms() -> u64 {
    500
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    2
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        Self {
            interval_ms: default_check_interval_ms(),
            timeout_ms: default_check_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

impl RouteSpec {
    /// Every problem with this route as new input (an API body, a config
    /// file), paths prefixed by `path` (for example `routes[1]`).
    pub fn validate(&self, path: &str, errors: &mut Vec<FieldError>) {
        self.validate_with(Rules::Input, path, errors);
    }

    /// Every problem with this route under `rules` (see [`Rules`]).
    pub fn validate_with(&self, rules: Rules, path: &str, errors: &mut Vec<FieldError>) {
        let mut err = |field: &str, msg: String| errors.push(FieldError::new(format!("{path}.{field}"), msg));
        if let Some(msg) = name_problem("name", &self.name, rules) {
            err("name", msg);
        }
        match ListenAddr::parse(&self.listen) {
            None => {
                err("listen", format!("invalid listen address {:?}: expected IP:PORT or :PORT", self.listen))
            }
            // The OS would pick a port no client knows, and another on each node.
            Some(l) if l.port() == 0 && rules == Rules::Input => err(
                "listen",
                format!(
                    "invalid listen address {:?}: port 0 is not a listen port (clients must know it)",
                    self.listen
                ),
            ),
            Some(_) => {}
        }
        if self.connect_timeout_ms == 0 {
            err("connect_timeout_ms", "must be greater than 0".into());
        }
        if self.idle_timeout_ms == 0 {
            err("idle_timeout_ms", "must be greater than 0".into());
        }
        if self.max_connections == 0 {
            err("max_connections", "must be greater than 0".into());
        }
        if self.max_connect_attempts == 0 || self.max_connect_attempts > MAX_CONNECT_ATTEMPTS {
            err(
                "max_connect_attempts",
                format!("must be between 1 and {MAX_CONNECT_ATTEMPTS}, got {}", self.max_connect_attempts),
            );
        }
        if self.eject_after_failures > 0 && self.eject_backoff_ms == 0 {
            err("eject_backoff_ms", "must be greater than 0 when eject_after_failures is set".into());
        }
        if self.balance == Balance::ConsistentHash {
            if self.vnodes == 0 {
                err("vnodes", "must be greater than 0".into());
            }
            // Saturating: out-of-range weights must produce errors, not an overflow panic.
            let points = self
                .backends
                .iter()
                .map(|b| u64::from(b.weight).saturating_mul(u64::from(self.vnodes)))
                .fold(0u64, u64::saturating_add);
            if points > MAX_RING_POINTS {
                err(
                    "vnodes",
                    format!(
                        "the ring would hold {points} points (sum of weight x vnodes); the limit is {MAX_RING_POINTS}"
                    ),
                );
            }
        }
        if self.backends.is_empty() {
            err("backends", "a route needs at least one backend".into());
        } else if self.backends.iter().all(|b| b.weight == 0) {
            err("backends", "every backend has weight 0: at least one must take traffic".into());
        }
        let mut ids = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let bpath = format!("{path}.backends[{i}]");
            if let Some(msg) = name_problem("id", &b.id, rules) {
                errors.push(FieldError::new(format!("{bpath}.id"), msg));
            } else if !ids.insert(b.id.as_str()) {
                errors
                    .push(FieldError::new(format!("{bpath}.id"), format!("duplicate backend id {:?}", b.id)));
            }
            if let Err(msg) = BackendAddr::parse(&b.addr) {
                errors.push(FieldError::new(format!("{bpath}.addr"), msg));
            }
            if b.weight > MAX_WEIGHT {
                errors.push(FieldError::new(
                    format!("{bpath}.weight"),
                    format!("must be between 0 and {MAX_WEIGHT}, got {}", b.weight),
                ));
            }
            let bad_node = |n: &&str| match NodeRef::parse(n) {
                None => true,
                Some(NodeRef::Name(name)) => rules == Rules::Input && !valid_name(name),
                Some(NodeRef::Id(_)) => false,
            };
            if let Some(node) = b.node.as_deref().filter(bad_node) {
                errors.push(FieldError::new(
                    format!("{bpath}.node"),
                    format!(
                        "invalid node {node:?}: a node name (1 to 64 of A-Z a-z 0-9 _ - ., not . or ..) or a node id (digits, > 0)"
                    ),
                ));
            }
        }
        if self.labels.len() > MAX_LABELS {
            errors.push(FieldError::new(
                format!("{path}.labels"),
                format!("at most {MAX_LABELS} labels, got {}", self.labels.len()),
            ));
        }
        for (key, value) in &self.labels {
            let valid_key = !key.is_empty()
                && key.len() <= 63
                && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-./".contains(&b));
            if !valid_key {
                errors.push(FieldError::new(
                    format!("{path}.labels"),
                    format!("invalid label key {key:?}: 1 to 63 of a-z 0-9 _ - . /"),
                ));
            }
            if value.len() > MAX_LABEL_VALUE {
                errors.push(FieldError::new(
                    format!("{path}.labels.{key}"),
                    format!("at most {MAX_LABEL_VALUE} bytes, got {}", value.len()),
                ));
            }
        }
        if let Some(hc) = &self.health_check {
            let hpath = format!("{path}.health_check");
            let mut herr =
                |field: &str, msg: &str| errors.push(FieldError::new(format!("{hpath}.{field}"), msg));
            if hc.interval_ms == 0 {
                herr("interval_ms", "must be greater than 0");
            }
            if hc.timeout_ms == 0 {
                herr("timeout_ms", "must be greater than 0");
            }
            if hc.rise == 0 {
                herr("rise", "must be greater than 0");
            }
            if hc.fall == 0 {
                herr("fall", "must be greater than 0");
            }
        }
    }
}

/// Every problem with a set of new routes (a config file): each route on
/// its own, then duplicate names. Paths are `{prefix}[i]`. Listen-address
/// conflicts depend on the node's bind address, so the node checks them
/// (see [`listen_conflicts`]).
pub fn validate_routes(routes: &[RouteSpec], prefix: &str) -> Vec<FieldError> {
    validate_routes_with(Rules::Input, routes, prefix)
}

/// [`validate_routes`] under `rules` (see [`Rules`]).
pub fn validate_routes_with(rules: Rules, routes: &[RouteSpec], prefix: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut names = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let path = format!("{prefix}[{i}]");
        r.validate_with(rules, &path, &mut errors);
        if !names.insert(r.name.as_str()) {
            errors
                .push(FieldError::new(format!("{path}.name"), format!("duplicate route name {:?}", r.name)));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, listen: &str) -> RouteSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "listen": listen,
            "backends": [{"id": "a", "addr": "127.0.0.1:9001"}]
        }))
        .expect("valid route json")
    }

    fn messages(routes: &[RouteSpec]) -> Vec<String> {
        let bind = std::net::IpAddr::from([127, 0, 0, 1]);
        let mut errors = validate_routes(routes, "routes");
        let admin = "127.0.0.1:7948".parse().expect("addr");
        errors.extend(listen_conflicts(
            routes,
            "routes",
            bind,
            &[ReservedAddr::new(admin, "the admin address")],
        ));
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn labels_are_checked_and_left_out_of_json_when_empty() {
        let mut r = route("a", "127.0.0.1:7000");
        let json = serde_json::to_value(&r).expect("json");
        assert!(json.get("labels").is_none(), "{json}");
        r.labels.insert("team".into(), "edge".into());
        r.labels.insert("a/b.c_d-1".into(), String::new());
        assert!(messages(&[r.clone()]).is_empty());
        r.labels.insert("Bad".into(), "x".into());
        r.labels.insert("long".into(), "x".repeat(MAX_LABEL_VALUE + 1));
        assert_eq!(
            messages(&[r.clone()]),
            vec![
                "routes[0].labels: invalid label key \"Bad\": 1 to 63 of a-z 0-9 _ - . /".to_string(),
                format!(
                    "routes[0].labels.long: at most {MAX_LABEL_VALUE} bytes, got {}",
                    MAX_LABEL_VALUE + 1
                ),
            ]
        );
        let mut many = route("a", "127.0.0.1:7000");
        many.labels = (0..=MAX_LABELS).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(messages(&[many]), vec![format!("routes[0].labels: at most {MAX_LABELS} labels, got 33")]);
    }

    #[test]
    fn listen_conflicts_are_found_after_resolving() {
        let msgs = messages(&[route("a", "127.0.0.1:7000"), route("b", ":7000"), route("c", "0.0.0.0:7000")]);
        assert_eq!(
            msgs,
            vec![
                "routes[1].listen: \":7000\" collides with routes[0].listen \"127.0.0.1:7000\" (127.0.0.1:7000)",
                "routes[2].listen: \"0.0.0.0:7000\" collides with routes[0].listen \"127.0.0.1:7000\" (127.0.0.1:7000)",
            ]
        );
        let msgs = messages(&[route("a", "0.0.0.0:7948")]);
        assert_eq!(
            msgs,
            vec!["routes[0].listen: \"0.0.0.0:7948\" collides with the admin address 127.0.0.1:7948"]
        );
        assert!(messages(&[route("a", "127.0.0.1:7000"), route("b", "127.0.0.2:7000")]).is_empty());
    }

    #[test]
    fn defaults_fill_a_minimal_route() {
        let r = route("web", "127.0.0.1:7000");
        assert_eq!(r.balance, Balance::Weighted);
        assert_eq!(r.connect_timeout_ms, 1_000);
        assert_eq!(r.max_connect_attempts, 3);
        assert_eq!(r.backends[0].weight, 1);
        assert!(messages(&[r]).is_empty());
    }

    #[test]
    fn each_class_of_bad_route_names_its_field() {
        let mut r = route("web", "127.0.0.1:7000");
        r.backends.push(BackendSpec { id: "a".into(), addr: "x".into(), weight: 0, node: None });
        r.backends[0].weight = 0;
        r.connect_timeout_ms = 0;
        r.idle_timeout_ms = 0;
        let msgs = messages(&[r.clone(), r]);
        let expect = [
            "routes[0].connect_timeout_ms: must be greater than 0",
            "routes[0].idle_timeout_ms: must be greater than 0",
            "routes[0].backends: every backend has weight 0: at least one must take traffic",
            "routes[0].backends[1].id: duplicate backend id \"a\"",
            "routes[0].backends[1].addr: invalid address \"x\": the port is missing (expected IP:PORT or HOST:PORT)",
            "routes[1].name: duplicate route name \"web\"",
            "routes[1].listen: duplicate listen address \"127.0.0.1:7000\"",
        ];
        for e in expect {
            assert!(msgs.iter().any(|m| m == e), "missing {e:?} in {msgs:#?}");
        }
    }

    /// Port 0 was accepted: the OS picked a port no client knew, and
    /// another one on every node.
    #[test]
    fn listen_port_zero_is_refused_as_input_and_kept_when_stored() {
        let msgs = messages(&[route("a", "127.0.0.1:0"), route("b", ":0")]);
        assert_eq!(
            msgs,
            vec![
                "routes[0].listen: invalid listen address \"127.0.0.1:0\": port 0 is not a listen port (clients must know it)",
                "routes[1].listen: invalid listen address \":0\": port 0 is not a listen port (clients must know it)",
            ]
        );
        let mut errors = Vec::new();
        route("a", "127.0.0.1:0").validate_with(Rules::Stored, "route", &mut errors);
        assert!(errors.is_empty(), "a stored route keeps the rules it was written under: {errors:?}");
    }

    #[test]
    fn backends_may_be_host_names_with_a_port() {
        let mut r = route("web", "127.0.0.1:7000");
        let b =
            |id: &str, addr: &str| BackendSpec { id: id.into(), addr: addr.into(), weight: 1, node: None };
        r.backends = vec![
            b("name", "db-1.internal:5432"),
            b("v6", "[::1]:80"),
            b("bare", "host"),
            b("zero", "host:0"),
            b("under", "a_b:80"),
        ];
        assert_eq!(
            messages(&[r]),
            vec![
                "routes[0].backends[2].addr: invalid address \"host\": the port is missing (expected IP:PORT or HOST:PORT)",
                "routes[0].backends[3].addr: port 0 is not a backend port",
                "routes[0].backends[4].addr: invalid host name \"a_b\" in \"a_b:80\": use letters, digits, hyphens and dots",
            ]
        );
    }

    /// `.` and `..` were accepted, and only `%2E%2E` reached them.
    #[test]
    fn dot_names_are_refused_as_input_and_kept_when_stored() {
        let mut r = route("..", "127.0.0.1:7000");
        r.backends[0].id = ".".into();
        r.backends[0].node = Some("..".into());
        assert_eq!(
            messages(&[r.clone()]),
            vec![
                "routes[0].name: invalid name \"..\": \".\" and \"..\" are reserved (no URL path can name them)",
                "routes[0].backends[0].id: invalid id \".\": \".\" and \"..\" are reserved (no URL path can name them)",
                "routes[0].backends[0].node: invalid node \"..\": a node name (1 to 64 of A-Z a-z 0-9 _ - ., not . or ..) or a node id (digits, > 0)",
            ]
        );
        let mut errors = Vec::new();
        r.validate_with(Rules::Stored, "route", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(validate_routes_with(Rules::Stored, &[r], "routes"), vec![]);
    }

    #[test]
    fn ring_size_is_bounded() {
        let mut r = route("web", "127.0.0.1:7000");
        r.balance = Balance::ConsistentHash;
        r.backends[0].weight = 256;
        r.vnodes = 1000;
        assert!(messages(&[r])[0].starts_with("routes[0].vnodes: the ring would hold 256000 points"));
    }

    #[test]
    fn backend_node_is_a_name_or_an_id() {
        assert_eq!(NodeRef::parse("n2"), Some(NodeRef::Name("n2")));
        assert_eq!(NodeRef::parse("7"), Some(NodeRef::Id(7)));
        assert_eq!(NodeRef::parse("n-2.b_c"), Some(NodeRef::Name("n-2.b_c")));
        for bad in ["", "0", "00", "18446744073709551616", "n 2", &"x".repeat(65)] {
            assert!(NodeRef::parse(bad).is_none(), "{bad:?}");
        }
        let mut r = route("web", "127.0.0.1:7000");
        let ok = |node: &str| BackendSpec {
            id: format!("id-{}", node.replace('@', "-")),
            addr: "127.0.0.1:9".into(),
            weight: 1,
            node: Some(node.into()),
        };
        r.backends.extend([ok("n2"), ok("12"), ok("0"), ok("b@d")]);
        assert_eq!(
            messages(&[r]),
            vec![
                "routes[0].backends[3].node: invalid node \"0\": a node name (1 to 64 of A-Z a-z 0-9 _ - ., not . or ..) or a node id (digits, > 0)",
                "routes[0].backends[4].node: invalid node \"b@d\": a node name (1 to 64 of A-Z a-z 0-9 _ - ., not . or ..) or a node id (digits, > 0)",
            ]
        );
    }

    #[test]
    fn backend_node_is_omitted_from_json_only_when_absent() -> Result<(), serde_json::Error> {
        let mut r = route("web", "127.0.0.1:7000");
        let json = serde_json::to_value(&r)?;
        assert_eq!(
            json["backends"][0],
            serde_json::json!({"id": "a", "addr": "127.0.0.1:9001", "weight": 1})
        );
        r.backends[0].node = Some("n2".into());
        let json = serde_json::to_value(&r)?;
        assert_eq!(json["backends"][0]["node"], "n2");
        assert_eq!(serde_json::from_value::<RouteSpec>(json)?, r);
        Ok(())
    }

    /// An enabled route serializes exactly as before the field existed,
    /// so an older node reads it; a disabled one carries `enabled: false`.
    #[test]
    fn enabled_is_left_out_of_json_unless_false() -> Result<(), serde_json::Error> {
        let mut r = route("web", "127.0.0.1:7000");
        assert!(r.enabled, "a route is enabled by default");
        let json = serde_json::to_value(&r)?;
        assert!(json.get("enabled").is_none(), "{json}");
        r.enabled = false;
        let json = serde_json::to_value(&r)?;
        assert_eq!(json["enabled"], false);
        assert_eq!(serde_json::from_value::<RouteSpec>(json)?, r);
        Ok(())
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_value::<RouteSpec>(serde_json::json!({
            "name": "a", "listen": ":1", "bogus": 1
        }))
        .expect_err("unknown field must fail");
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
    }
}
