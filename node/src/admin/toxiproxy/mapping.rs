//! Toxiproxy's objects on ferry's, and back, without I/O: a proxy is a
//! route with one backend `upstream`, a toxic is a chaos policy
//! `<proxy>.<toxic>` scoped to that route with one toxic. Bodies are read
//! as Toxiproxy (Go's `encoding/json`) reads them: keys matched
//! case-insensitively, unknown keys ignored, `null` as absent.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ferry_client::FieldError;
use ferry_client::chaos::{ChaosPolicy, ChaosScope, Direction, Toxic, ToxicKind};
use ferry_client::route::{BackendSpec, RouteSpec};
use serde_json::{Map, Value, json};

/// The id of a proxy's one backend.
pub const UPSTREAM_ID: &str = "upstream";

/// A body problem: the Toxiproxy field it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    /// The field, as Toxiproxy names it (`listen`, `attributes.rate`).
    pub field: String,
    pub message: String,
}

impl BodyError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_string(), message: message.into() }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A JSON object with its keys in lower case (the last of two keys that
/// differ only in case wins).
#[derive(Debug, Clone, Default)]
pub struct Lenient(Map<String, Value>);

impl Lenient {
    /// `value` as an object, or an error naming `what` (`body`, `attributes`).
    pub fn object(value: Value, what: &str) -> Result<Self, BodyError> {
        match value {
            Value::Object(m) => Ok(Self(m.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect())),
            other => Err(BodyError::new(what, format!("expected a JSON object, got {}", kind(&other)))),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// The string at `key`, if present.
    pub fn string(&self, key: &str) -> Result<Option<String>, BodyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(BodyError::new(key, format!("expected a string, got {}", kind(v)))),
        }
    }

    /// The boolean at `key`, if present.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, BodyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(BodyError::new(key, format!("expected true or false, got {}", kind(v)))),
        }
    }

    /// The number at `key`, if present.
    pub fn float(&self, key: &str) -> Result<Option<f64>, BodyError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| BodyError::new(key, format!("expected a number, got {}", kind(v)))),
        }
    }

    /// The whole number ≥ 0 at `key` (`path` names it in errors), if present.
    fn whole(&self, key: &str, path: &str) -> Result<Option<u64>, BodyError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                BodyError::new(path, format!("expected a whole number of at least 0, got {v}"))
            }),
        }
    }

    /// The object at `key`, if present.
    pub fn object_at(&self, key: &str) -> Result<Option<Lenient>, BodyError> {
        self.get(key).cloned().map(|v| Lenient::object(v, key)).transpose()
    }

    /// `other`'s keys over these.
    fn merge(&mut self, other: Lenient) {
        self.0.extend(other.0);
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// === proxies ===

/// The fields of a proxy body; absent ones are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyInput {
    pub name: Option<String>,
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub enabled: Option<bool>,
}

impl ProxyInput {
    /// Reads a proxy body (`toxics` and unknown fields are ignored).
    pub fn read(body: Lenient) -> Result<Self, BodyError> {
        Ok(Self {
            name: body.string("name")?,
            listen: body.string("listen")?,
            upstream: body.string("upstream")?,
            enabled: body.boolean("enabled")?,
        })
    }

    /// Name and upstream, required for a new proxy (Toxiproxy's messages).
    pub fn required(&self) -> Result<(String, String), BodyError> {
        let missing = |f: &str| BodyError::new(f, "missing required field");
        let name = self.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| missing("name"))?;
        let upstream = self.upstream.clone().filter(|u| !u.is_empty()).ok_or_else(|| missing("upstream"))?;
        Ok((name, upstream))
    }
}

/// The port of a Toxiproxy `listen` (`HOST:PORT`, `:PORT`, `[::1]:PORT`);
/// the host is ignored (every node binds its own bind address). Absent or
/// empty: 0, as Toxiproxy picks a port for an empty address.
pub fn listen_port(listen: Option<&str>) -> Result<u16, BodyError> {
    let Some(listen) = listen.filter(|l| !l.is_empty()) else { return Ok(0) };
    let bad = || BodyError::new("listen", format!("invalid listen address {listen:?}: expected HOST:PORT"));
    let (_, port) = listen.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())
}

/// Whether `route` is a proxy: one backend, `upstream`, on no node.
pub fn is_proxy(route: &RouteSpec) -> bool {
    matches!(route.backends.as_slice(), [b] if b.id == UPSTREAM_ID && b.node.is_none())
}

/// The route of proxy `name`: `:port` on every node, one backend.
/// Defaults for the rest; `base` (the current route) keeps its other
/// settings on an update.
pub fn route_of(
    base: Option<&RouteSpec>,
    name: &str,
    port: u16,
    upstream: &str,
    enabled: bool,
) -> Result<RouteSpec, serde_json::Error> {
    let mut route = match base {
        Some(r) => r.clone(),
        None => serde_json::from_value(json!({"name": name, "listen": ":1"}))?,
    };
    route.name = name.to_string();
    route.listen = format!(":{port}");
    route.backends =
        vec![BackendSpec { id: UPSTREAM_ID.into(), addr: upstream.to_string(), weight: 1, node: None }];
    route.enabled = enabled;
    Ok(route)
}

/// The port of a route's `listen` (`:PORT` or `IP:PORT`).
pub fn route_port(route: &RouteSpec) -> Option<u16> {
    route.listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// A proxy's JSON, as this node serves it: `listen` on `bind_ip` for a
/// `:PORT` route.
pub fn proxy_json(route: &RouteSpec, bind_ip: IpAddr, toxics: Vec<Value>) -> Value {
    let listen = match (route.listen.starts_with(':'), route_port(route)) {
        (true, Some(port)) => SocketAddr::new(bind_ip, port).to_string(),
        _ => route.listen.clone(),
    };
    let upstream = route.backends.first().map_or("", |b| b.addr.as_str());
    json!({
        "name": route.name,
        "listen": listen,
        "upstream": upstream,
        "enabled": route.enabled,
        "toxics": toxics,
    })
}

/// Route validation problems named as Toxiproxy's fields (`route.listen`
/// is `listen`, the backend's address `upstream`).
pub fn proxy_field(path: &str) -> String {
    let rest = path.strip_prefix("route.").unwrap_or(path);
    if rest.starts_with("backends") && rest.ends_with(".addr") {
        return "upstream".to_string();
    }
    rest.to_string()
}

// === toxics ===

/// The toxic types ferry maps, as Toxiproxy names them.
pub const TOXIC_TYPES: [&str; 7] =
    ["latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data"];

/// A Toxiproxy toxic.
#[derive(Debug, Clone, PartialEq)]
pub struct ToxicView {
    pub name: String,
    pub kind: ToxicKind,
    pub direction: Direction,
    pub toxicity: f64,
}

/// The policy name of toxic `toxic` of proxy `proxy`.
pub fn policy_name(proxy: &str, toxic: &str) -> String {
    format!("{proxy}.{toxic}")
}

/// The toxic `policy` is for proxy `proxy`, if it follows the pattern: named
/// `<proxy>.<toxic>`, scoped to that route alone (no node, no backend),
/// one toxic of a Toxiproxy type, upstream or downstream, no expiry.
pub fn toxic_of(policy: &ChaosPolicy, proxy: &str) -> Option<ToxicView> {
    let name = policy.name.strip_prefix(proxy)?.strip_prefix('.')?;
    let scope = &policy.scope;
    let scoped = scope.routes.len() == 1
        && scope.routes[0] == proxy
        && scope.nodes.is_empty()
        && scope.backends.is_empty();
    let [toxic] = policy.toxics.as_slice() else { return None };
    let mapped = TOXIC_TYPES.contains(&toxic.kind.name()) && toxic.direction != Direction::Both;
    (scoped && mapped && policy.expires_at.is_none() && !name.is_empty()).then(|| ToxicView {
        name: name.to_string(),
        kind: toxic.kind.clone(),
        direction: toxic.direction,
        toxicity: policy.toxicity,
    })
}

/// Toxiproxy's attributes of a toxic kind.
fn attributes(kind: &ToxicKind) -> Value {
    match *kind {
        ToxicKind::Latency { latency_ms, jitter_ms } => json!({"latency": latency_ms, "jitter": jitter_ms}),
        ToxicKind::Bandwidth { rate_kbps } => json!({"rate": rate_kbps}),
        ToxicKind::SlowClose { delay_ms } => json!({"delay": delay_ms}),
        ToxicKind::Timeout { timeout_ms } | ToxicKind::ResetPeer { timeout_ms } => {
            json!({"timeout": timeout_ms})
        }
        ToxicKind::Slicer { average_size, size_variation, delay_us } => {
            json!({"average_size": average_size, "size_variation": size_variation, "delay": delay_us})
        }
        ToxicKind::LimitData { bytes } => json!({"bytes": bytes}),
        ToxicKind::Refuse {} | ToxicKind::ConnectDelay { .. } => json!({}),
    }
}

fn stream_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Upstream => "upstream",
        Direction::Downstream | Direction::Both => "downstream",
    }
}

impl ToxicView {
    /// The toxic's JSON.
    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind.name(),
            "stream": stream_name(self.direction),
            "toxicity": self.toxicity,
            "attributes": attributes(&self.kind),
        })
    }

    /// A new toxic from a body: `type` required, `stream` `downstream`,
    /// `toxicity` 1.0, `name` `<type>_<stream>`, missing attributes 0.
    pub fn create(body: &Lenient) -> Result<Self, BodyError> {
        let kind_name = body.string("type")?.unwrap_or_default();
        if !TOXIC_TYPES.contains(&kind_name.as_str()) {
            return Err(BodyError::new(
                "type",
                format!("invalid toxic type {kind_name:?} (known: {})", TOXIC_TYPES.join(", ")),
            ));
        }
        let stream = body.string("stream")?.unwrap_or_else(|| "downstream".into());
        let direction = match stream.to_ascii_lowercase().as_str() {
            "upstream" => Direction::Upstream,
            "downstream" => Direction::Downstream,
            _ => {
                return Err(BodyError::new(
                    "stream",
                    format!("stream was invalid, can be either upstream or downstream, got {stream:?}"),
                ));
            }
        };
        let name = body
            .string("name")?
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{kind_name}_{}", stream_name(direction)));
        let toxicity = body.float("toxicity")?.unwrap_or(1.0);
        let attrs = body.object_at("attributes")?.unwrap_or_default();
        let kind = kind_of(&kind_name, &attrs)?;
        Ok(Self { name, kind, direction, toxicity })
    }

    /// This toxic updated by a body, as Toxiproxy updates one: the given
    /// `attributes` merged over the current ones, `toxicity` if given;
    /// name, type and stream stay.
    pub fn update(&self, body: &Lenient) -> Result<Self, BodyError> {
        let mut attrs = Lenient::object(attributes(&self.kind), "attributes")?;
        if let Some(given) = body.object_at("attributes")? {
            attrs.merge(given);
        }
        let kind = kind_of(self.kind.name(), &attrs)?;
        let toxicity = body.float("toxicity")?.unwrap_or(self.toxicity);
        Ok(Self { name: self.name.clone(), kind, direction: self.direction, toxicity })
    }

    /// The policy of this toxic on proxy `proxy`, or its problems named as
    /// Toxiproxy's fields.
    pub fn policy(&self, proxy: &str) -> Result<ChaosPolicy, Vec<BodyError>> {
        let policy = ChaosPolicy {
            name: policy_name(proxy, &self.name),
            toxics: vec![Toxic { direction: self.direction, kind: self.kind.clone() }],
            scope: ChaosScope { routes: vec![proxy.to_string()], nodes: Vec::new(), backends: Vec::new() },
            toxicity: self.toxicity,
            expires_at: None,
            seed: None,
        };
        let errors = policy.validate("policy");
        if errors.is_empty() { Ok(policy) } else { Err(errors.iter().map(|e| self.body_error(e)).collect()) }
    }

    /// A policy validation problem as a toxic's field.
    fn body_error(&self, e: &FieldError) -> BodyError {
        let field = e.path.rsplit('.').next().unwrap_or("");
        let name = match (self.kind.name(), field) {
            (_, "name") => "name".to_string(),
            (_, "toxicity") => "toxicity".to_string(),
            (_, "latency_ms") => "attributes.latency".to_string(),
            (_, "jitter_ms") => "attributes.jitter".to_string(),
            (_, "rate_kbps") => "attributes.rate".to_string(),
            (_, "delay_ms" | "delay_us") => "attributes.delay".to_string(),
            (_, "timeout_ms") => "attributes.timeout".to_string(),
            (_, f) if ["average_size", "size_variation", "bytes"].contains(&f) => format!("attributes.{f}"),
            _ => e.path.clone(),
        };
        let message = if name == "name" {
            format!("{} (the toxic's policy is named {:?})", e.message, e.path)
        } else {
            e.message.clone()
        };
        BodyError { field: name, message }
    }
}

/// The kind `type` with Toxiproxy's `attributes` (missing ones 0).
fn kind_of(kind: &str, attrs: &Lenient) -> Result<ToxicKind, BodyError> {
    let n = |key: &str| attrs.whole(key, &format!("attributes.{key}")).map(Option::unwrap_or_default);
    Ok(match kind {
        "latency" => ToxicKind::Latency { latency_ms: n("latency")?, jitter_ms: n("jitter")? },
        "bandwidth" => ToxicKind::Bandwidth { rate_kbps: n("rate")? },
        "slow_close" => ToxicKind::SlowClose { delay_ms: n("delay")? },
        "timeout" => ToxicKind::Timeout { timeout_ms: n("timeout")? },
        "reset_peer" => ToxicKind::ResetPeer { timeout_ms: n("timeout")? },
        "slicer" => ToxicKind::Slicer {
            average_size: n("average_size")?,
            size_variation: n("size_variation")?,
            delay_us: n("delay")?,
        },
        "limit_data" => ToxicKind::LimitData { bytes: n("bytes")? },
        other => return Err(BodyError::new("type", format!("invalid toxic type {other:?}"))),
    })
}

/// The toxics of proxy `proxy` among `policies`, by policy name order.
pub fn toxics_of<'a>(
    policies: impl IntoIterator<Item = (&'a String, &'a ChaosPolicy, u64)>,
    proxy: &str,
) -> BTreeMap<String, (ToxicView, String, u64)> {
    policies
        .into_iter()
        .filter_map(|(name, p, revision)| {
            toxic_of(p, proxy).map(|t| (t.name.clone(), (t, name.clone(), revision)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenient(v: Value) -> Lenient {
        Lenient::object(v, "body").expect("object")
    }

    #[test]
    fn keys_are_case_insensitive_and_unknown_ones_ignored() -> Result<(), BodyError> {
        let p = ProxyInput::read(lenient(json!({
            "Name": "redis", "LISTEN": "127.0.0.1:0", "upstream": "127.0.0.1:6379",
            "Enabled": false, "toxics": [], "bogus": 1, "listen_x": null
        })))?;
        assert_eq!(p.name.as_deref(), Some("redis"));
        assert_eq!(p.listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(p.enabled, Some(false));
        assert_eq!(
            ProxyInput::read(lenient(json!({"enabled": false})))?.required().map_err(|e| e.field).err(),
            Some("name".into())
        );
        let bad = ProxyInput::read(lenient(json!({"name": 5}))).expect_err("a number is no name");
        assert_eq!(bad.field, "name");
        Ok(())
    }

    #[test]
    fn listen_ports() {
        assert_eq!(listen_port(None), Ok(0));
        assert_eq!(listen_port(Some("")), Ok(0));
        assert_eq!(listen_port(Some("localhost:0")), Ok(0));
        assert_eq!(listen_port(Some("127.0.0.1:26379")), Ok(26379));
        assert_eq!(listen_port(Some("[::1]:8080")), Ok(8080));
        assert_eq!(listen_port(Some(":9000")), Ok(9000));
        for bad in ["127.0.0.1", "host:port", "h:70000"] {
            assert_eq!(listen_port(Some(bad)).map_err(|e| e.field), Err("listen".to_string()), "{bad}");
        }
    }

    #[test]
    fn a_toxic_gets_toxiproxys_defaults_and_maps_onto_one_policy() -> Result<(), BodyError> {
        let t = ToxicView::create(&lenient(json!({"Type": "latency", "attributes": {"Latency": 100}})))?;
        assert_eq!(t.name, "latency_downstream");
        assert_eq!(t.direction, Direction::Downstream);
        assert_eq!(t.toxicity, 1.0);
        assert_eq!(t.kind, ToxicKind::Latency { latency_ms: 100, jitter_ms: 0 });
        let p = t.policy("redis").map_err(|e| e[0].clone())?;
        assert_eq!(p.name, "redis.latency_downstream");
        assert_eq!(p.scope.routes, ["redis"]);
        assert!(!p.uses_protocol_5(), "no new feature: an older node reads it");
        assert_eq!(toxic_of(&p, "redis"), Some(t.clone()));
        assert_eq!(toxic_of(&p, "red"), None, "another proxy's prefix");
        assert_eq!(
            t.json(),
            json!({"name": "latency_downstream", "type": "latency", "stream": "downstream",
                   "toxicity": 1.0, "attributes": {"latency": 100, "jitter": 0}})
        );
        let up = ToxicView::create(&lenient(json!({"type": "bandwidth", "stream": "upstream",
            "toxicity": 0.5, "attributes": {"rate": 100}})))?;
        assert_eq!((up.name.as_str(), up.toxicity), ("bandwidth_upstream", 0.5));
        assert_eq!(up.kind, ToxicKind::Bandwidth { rate_kbps: 100 });
        Ok(())
    }

    #[test]
    fn every_type_maps_its_attributes_both_ways() -> Result<(), BodyError> {
        for (ty, attrs, kind) in [
            (
                "latency",
                json!({"latency": 5, "jitter": 2}),
                ToxicKind::Latency { latency_ms: 5, jitter_ms: 2 },
            ),
            ("bandwidth", json!({"rate": 7}), ToxicKind::Bandwidth { rate_kbps: 7 }),
            ("slow_close", json!({"delay": 9}), ToxicKind::SlowClose { delay_ms: 9 }),
            ("timeout", json!({"timeout": 11}), ToxicKind::Timeout { timeout_ms: 11 }),
            ("reset_peer", json!({"timeout": 13}), ToxicKind::ResetPeer { timeout_ms: 13 }),
            (
                "slicer",
                json!({"average_size": 64, "size_variation": 8, "delay": 10}),
                ToxicKind::Slicer { average_size: 64, size_variation: 8, delay_us: 10 },
            ),
            ("limit_data", json!({"bytes": 1000}), ToxicKind::LimitData { bytes: 1000 }),
        ] {
            let t = ToxicView::create(&lenient(json!({"type": ty, "attributes": attrs.clone()})))?;
            assert_eq!(t.kind, kind, "{ty}");
            assert_eq!(t.json()["attributes"], attrs, "{ty}");
        }
        Ok(())
    }

    #[test]
    fn an_update_merges_attributes_and_keeps_toxicity() -> Result<(), BodyError> {
        let t = ToxicView::create(&lenient(
            json!({"type": "latency", "toxicity": 0.25, "attributes": {"latency": 100, "jitter": 10}}),
        ))?;
        let u = t.update(&lenient(json!({"attributes": {"LATENCY": 300}, "name": "ignored"})))?;
        assert_eq!(u.kind, ToxicKind::Latency { latency_ms: 300, jitter_ms: 10 });
        assert_eq!((u.name.as_str(), u.toxicity), ("latency_downstream", 0.25));
        assert_eq!(t.update(&lenient(json!({"toxicity": 1})))?.toxicity, 1.0);
        Ok(())
    }

    #[test]
    fn bad_toxics_name_the_toxiproxy_field() {
        let err = |v: Value| -> Vec<String> {
            match ToxicView::create(&lenient(v)).map_err(|e| vec![e]).and_then(|t| t.policy("p")) {
                Ok(p) => vec![format!("accepted {p:?}")],
                Err(e) => e.into_iter().map(|e| e.field).collect(),
            }
        };
        assert_eq!(err(json!({"type": "teleport"})), ["type"]);
        assert_eq!(err(json!({})), ["type"]);
        assert_eq!(err(json!({"type": "latency", "stream": "sideways"})), ["stream"]);
        assert_eq!(err(json!({"type": "latency", "attributes": {"latency": -1}})), ["attributes.latency"]);
        assert_eq!(err(json!({"type": "latency", "attributes": {"latency": 1.5}})), ["attributes.latency"]);
        assert_eq!(err(json!({"type": "bandwidth"})), ["attributes.rate"]);
        assert_eq!(err(json!({"type": "latency", "toxicity": 2})), ["toxicity"]);
        assert_eq!(err(json!({"type": "latency", "toxicity": "x"})), ["toxicity"]);
        assert_eq!(err(json!({"type": "latency", "name": "a b"})), ["name"]);
        assert_eq!(
            err(json!({"type": "slicer", "attributes": {"average_size": 0}})),
            ["attributes.average_size"]
        );
    }

    #[test]
    fn policies_off_the_pattern_are_not_toxics() -> Result<(), BodyError> {
        let t = ToxicView::create(&lenient(json!({"type": "latency", "attributes": {"latency": 1}})))?;
        let p = t.policy("web").map_err(|e| e[0].clone())?;
        let mut both = p.clone();
        both.toxics[0].direction = Direction::Both;
        let mut two = p.clone();
        two.toxics.push(two.toxics[0].clone());
        let mut nodes = p.clone();
        nodes.scope.nodes = vec!["n1".into()];
        let mut wide = p.clone();
        wide.scope.routes.clear();
        let mut expiring = p.clone();
        expiring.expires_at = Some(1);
        let mut refuse = p.clone();
        refuse.toxics[0].kind = ToxicKind::Refuse {};
        let mut renamed = p.clone();
        renamed.name = "slow".into();
        for q in [both, two, nodes, wide, expiring, refuse, renamed] {
            assert_eq!(toxic_of(&q, "web"), None, "{q:?}");
        }
        assert!(toxic_of(&p, "web").is_some());
        Ok(())
    }

    #[test]
    fn a_proxy_is_a_route_on_every_node() -> Result<(), serde_json::Error> {
        let r = route_of(None, "redis", 26379, "127.0.0.1:6379", true)?;
        assert_eq!(r.listen, ":26379");
        assert!(is_proxy(&r));
        assert_eq!(
            serde_json::to_value(&r)?["backends"],
            json!([{"id": "upstream", "addr": "127.0.0.1:6379", "weight": 1}])
        );
        let v = proxy_json(&r, "127.0.94.2".parse().expect("ip"), vec![]);
        assert_eq!(
            v,
            json!({"name": "redis", "listen": "127.0.94.2:26379", "upstream": "127.0.0.1:6379",
                   "enabled": true, "toxics": []})
        );
        let mut two = r.clone();
        two.backends.push(two.backends[0].clone());
        assert!(!is_proxy(&two));
        assert_eq!(proxy_field("route.backends[0].addr"), "upstream");
        assert_eq!(proxy_field("route.listen"), "listen");
        Ok(())
    }
}
