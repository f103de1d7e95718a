//! The chaos-policy schema: Toxiproxy-style faults (latency, bandwidth,
//! slow_close, timeout, reset_peer, slicer, limit_data, plus refuse) that the
//! cluster stores and replicates for routes and nodes, with validation that
//! names every bad field.
//!
//! One type serves the admin API and the Raft log, both JSON (the log's
//! entries are self-describing: see `selfdesc`). The toxic kind is an
//! externally tagged enum (`{"latency": {"latency_ms": 100, "jitter_ms":
//! 10}}`), as it was when the log was positional. Fields added since
//! protocol 4 (`seed`, `scope.backends`, direction `both`, `connect_delay`)
//! are omitted when unused, so a policy that does not use them reads the
//! same to an older node; one that does is the feature `chaos_traffic`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::FieldError;
use crate::route::{Rules, name_problem};

/// Most toxics one policy may hold.
pub const MAX_TOXICS: usize = 16;
/// Longest delay a toxic may inject, in milliseconds (one hour).
pub const MAX_DELAY_MS: u64 = 3_600_000;
/// Longest slicer delay between slices, in microseconds (one second).
pub const MAX_SLICER_DELAY_US: u64 = 1_000_000;
/// Most names one scope list may hold.
pub const MAX_SCOPE_NAMES: usize = 256;
/// Largest seed: 2^53 - 1, the largest integer every JSON reader keeps exact.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// A named set of faults applied to some routes on some nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosPolicy {
    /// Unique policy name: `[A-Za-z0-9_.-]`, 1 to 64 characters.
    pub name: String,
    /// The faults, applied in order.
    pub toxics: Vec<Toxic>,
    /// Where the policy applies; empty lists mean everywhere.
    #[serde(default)]
    pub scope: ChaosScope,
    /// Share of connections the policy affects, 0.0 ..= 1.0.
    #[serde(default = "default_toxicity")]
    pub toxicity: f64,
    /// When the policy stops applying, in Unix milliseconds; `null` = never.
    /// Stored as given: the nodes compare it with their clocks, the
    /// replicated state never does (apply must be deterministic).
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Seeds every random decision the policy makes (whether a connection
    /// is hit, jitter, slice sizes), with the connection's node, route and
    /// ordinal: the same seed and connection sequence give the same
    /// decisions. At most 2^53 - 1, so that JSON numbers keep it exact.
    /// Absent, the policy uses [`ChaosPolicy::effective_seed`], derived
    /// from its name and revision (both in the log), which the API shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// One fault and the direction of traffic it affects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toxic {
    /// Which way of the connection the toxic acts on.
    #[serde(default)]
    pub direction: Direction,
    /// The fault itself.
    pub kind: ToxicKind,
}

/// The faults, as Toxiproxy's toxics plus `refuse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToxicKind {
    /// Delay every chunk by `latency_ms` ± `jitter_ms`.
    Latency {
        latency_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
    },
    /// Limit throughput to `rate_kbps` units of 1,000 bytes per second
    /// (Toxiproxy's `rate`): 100 is 100,000 bytes/s.
    Bandwidth { rate_kbps: u64 },
    /// Delay the close of the connection by `delay_ms`.
    SlowClose { delay_ms: u64 },
    /// Stop all data and close after `timeout_ms` (0: hold the connection open
    /// without data until the client gives up).
    Timeout { timeout_ms: u64 },
    /// Reset the connection (TCP RST) after `timeout_ms`.
    ResetPeer {
        #[serde(default)]
        timeout_ms: u64,
    },
    /// Cut data into slices of `average_size` ± `size_variation` bytes,
    /// `delay_us` apart.
    Slicer {
        average_size: u64,
        #[serde(default)]
        size_variation: u64,
        #[serde(default)]
        delay_us: u64,
    },
    /// Close the connection after `bytes` bytes have passed.
    LimitData { bytes: u64 },
    /// Refuse new connections (closed right after accept).
    Refuse {},
    /// Hold each new connection `delay_ms` before connecting to its
    /// backend (handshake latency). Acts on the connection, whatever its
    /// `direction`.
    ConnectDelay { delay_ms: u64 },
}

/// Which way of a proxied connection a toxic affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client to backend.
    Upstream,
    /// Backend to client.
    #[default]
    Downstream,
    /// Each way, independently.
    Both,
}

impl Direction {
    /// Whether the toxic acts on the client-to-backend way.
    pub fn upstream(self) -> bool {
        matches!(self, Direction::Upstream | Direction::Both)
    }

    /// Whether the toxic acts on the backend-to-client way.
    pub fn downstream(self) -> bool {
        matches!(self, Direction::Downstream | Direction::Both)
    }
}

/// Routes, nodes and backends a policy applies to. An empty list means all
/// of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChaosScope {
    /// Route names.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Node names.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Backend ids: the policy hits only connections to these backends (of
    /// whichever route in scope has them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
}

fn default_toxicity() -> f64 {
    1.0
}

impl ToxicKind {
    /// The snake_case name of the kind, as in the JSON tag.
    pub fn name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
            ToxicKind::Refuse {} => "refuse",
            ToxicKind::ConnectDelay { .. } => "connect_delay",
        }
    }

    /// Problems with this kind's parameters; `path` names the kind
    /// (for example `policy.toxics[0].kind.latency`).
    fn validate(&self, path: &str, errors: &mut Vec<FieldError>) {
        let mut err = |field: &str, msg: String| errors.push(FieldError::new(format!("{path}.{field}"), msg));
        let delay = |v: u64| v > MAX_DELAY_MS;
        match *self {
            ToxicKind::Latency { latency_ms, jitter_ms } => {
                if delay(latency_ms) {
                    err("latency_ms", format!("must be at most {MAX_DELAY_MS}, got {latency_ms}"));
                }
                if delay(jitter_ms) {
                    err("jitter_ms", format!("must be at most {MAX_DELAY_MS}, got {jitter_ms}"));
                }
            }
            ToxicKind::Bandwidth { rate_kbps: 0 } => {
                err("rate_kbps", "must be greater than 0 (use timeout to stop data)".into());
            }
            ToxicKind::SlowClose { delay_ms } | ToxicKind::ConnectDelay { delay_ms } if delay(delay_ms) => {
                err("delay_ms", format!("must be at most {MAX_DELAY_MS}, got {delay_ms}"));
            }
            ToxicKind::Timeout { timeout_ms } | ToxicKind::ResetPeer { timeout_ms } if delay(timeout_ms) => {
                err("timeout_ms", format!("must be at most {MAX_DELAY_MS}, got {timeout_ms}"));
            }
            ToxicKind::Slicer { average_size, size_variation, delay_us } => {
                if average_size == 0 {
                    err("average_size", "must be greater than 0".into());
                }
                if size_variation >= average_size.max(1) {
                    err(
                        "size_variation",
                        format!("must be less than average_size ({average_size}), got {size_variation}"),
                    );
                }
                if delay_us > MAX_SLICER_DELAY_US {
                    err("delay_us", format!("must be at most {MAX_SLICER_DELAY_US}, got {delay_us}"));
                }
            }
            _ => {}
        }
    }
}

impl ChaosPolicy {
    /// Whether the policy uses what protocol 5 added (the feature
    /// `chaos_traffic`): a seed, a backend scope, direction `both` or
    /// `connect_delay`. An older node cannot read such a policy.
    pub fn uses_protocol_5(&self) -> bool {
        self.seed.is_some()
            || !self.scope.backends.is_empty()
            || self
                .toxics
                .iter()
                .any(|t| t.direction == Direction::Both || matches!(t.kind, ToxicKind::ConnectDelay { .. }))
    }

    /// The seed the policy's decisions use: `seed`, or one derived from the
    /// name and `revision` (the index of the write that stored it), so that
    /// every node decides alike without a seed in the log. A policy written
    /// again without a seed gets another.
    pub fn effective_seed(&self, revision: u64) -> u64 {
        self.seed.unwrap_or_else(|| {
            // FNV-1a 64 of the name, then the revision mixed in (SplitMix64's finaliser).
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in self.name.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            let mut z = h ^ revision.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) & MAX_SEED
        })
    }

    /// Whether the policy applies on node `node` to route `route`
    /// (its scope; not its expiry or toxicity).
    pub fn in_scope(&self, node: &str, route: &str) -> bool {
        let has = |names: &[String], n: &str| names.is_empty() || names.iter().any(|x| x == n);
        has(&self.scope.nodes, node) && has(&self.scope.routes, route)
    }

    /// Every problem with this policy as new input (an API body), paths
    /// prefixed by `path` (for example `policy`). An empty list means the
    /// policy is valid.
    pub fn validate(&self, path: &str) -> Vec<FieldError> {
        self.validate_with(Rules::Input, path)
    }

    /// Every problem with this policy under `rules` (see [`Rules`]).
    pub fn validate_with(&self, rules: Rules, path: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(msg) = name_problem("name", &self.name, rules) {
            errors.push(FieldError::new(format!("{path}.name"), msg));
        }
        if self.toxics.is_empty() {
            errors.push(FieldError::new(format!("{path}.toxics"), "a policy needs at least one toxic"));
        } else if self.toxics.len() > MAX_TOXICS {
            errors.push(FieldError::new(
                format!("{path}.toxics"),
                format!("at most {MAX_TOXICS} toxics, got {}", self.toxics.len()),
            ));
        }
        for (i, t) in self.toxics.iter().enumerate() {
            t.kind.validate(&format!("{path}.toxics[{i}].kind.{}", t.kind.name()), &mut errors);
        }
        if !(0.0..=1.0).contains(&self.toxicity) {
            errors.push(FieldError::new(
                format!("{path}.toxicity"),
                format!("must be between 0.0 and 1.0, got {}", self.toxicity),
            ));
        }
        if let Some(seed) = self.seed.filter(|s| *s > MAX_SEED) {
            errors.push(FieldError::new(
                format!("{path}.seed"),
                format!("must be at most {MAX_SEED} (2^53 - 1, exact in JSON), got {seed}"),
            ));
        }
        let scopes = [
            ("routes", &self.scope.routes),
            ("nodes", &self.scope.nodes),
            ("backends", &self.scope.backends),
        ];
        for (field, names) in scopes {
            if names.len() > MAX_SCOPE_NAMES {
                errors.push(FieldError::new(
                    format!("{path}.scope.{field}"),
                    format!("at most {MAX_SCOPE_NAMES} names, got {}", names.len()),
                ));
            }
            let mut seen = HashSet::new();
            for (i, n) in names.iter().enumerate() {
                let npath = format!("{path}.scope.{field}[{i}]");
                if let Some(msg) = name_problem("name", n, rules) {
                    errors.push(FieldError::new(npath, msg));
                } else if !seen.insert(n.as_str()) {
                    errors.push(FieldError::new(npath, format!("duplicate name {n:?}")));
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> ChaosPolicy {
        serde_json::from_value(json).expect("valid policy json")
    }

    #[test]
    fn json_shape_and_defaults() {
        let p = policy(serde_json::json!({
            "name": "slow",
            "toxics": [
                {"kind": {"latency": {"latency_ms": 100}}},
                {"direction": "upstream", "kind": {"refuse": {}}}
            ]
        }));
        assert_eq!(p.toxicity, 1.0);
        assert_eq!(p.scope, ChaosScope::default());
        assert_eq!(p.expires_at, None);
        assert_eq!(p.toxics[0].direction, Direction::Downstream);
        assert_eq!(p.toxics[0].kind, ToxicKind::Latency { latency_ms: 100, jitter_ms: 0 });
        assert_eq!(p.toxics[1].kind, ToxicKind::Refuse {});
        assert!(p.validate("policy").is_empty());
        let back = serde_json::to_value(&p).expect("serialize");
        assert_eq!(back["toxics"][1]["kind"], serde_json::json!({"refuse": {}}));
        assert_eq!(back["toxics"][0]["kind"]["latency"]["jitter_ms"], 0);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        for bad in [
            serde_json::json!({"name": "a", "toxics": [], "bogus": 1}),
            serde_json::json!({"name": "a", "toxics": [{"kind": {"latency": {"latency_ms": 1, "x": 2}}}]}),
            serde_json::json!({"name": "a", "toxics": [{"kind": {"teleport": {}}}]}),
        ] {
            assert!(serde_json::from_value::<ChaosPolicy>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_class_of_bad_policy_names_its_field() {
        let p = policy(serde_json::json!({
            "name": "bad name",
            "toxicity": 1.5,
            "scope": {"routes": ["web", "web"], "nodes": [""]},
            "toxics": [
                {"kind": {"bandwidth": {"rate_kbps": 0}}},
                {"kind": {"slicer": {"average_size": 10, "size_variation": 10}}},
                {"kind": {"latency": {"latency_ms": 3600001}}}
            ]
        }));
        let msgs: Vec<String> = p.validate("policy").iter().map(ToString::to_string).collect();
        let expect = [
            "policy.name: invalid name \"bad name\": use 1 to 64 of A-Z a-z 0-9 _ - .",
            "policy.toxics[0].kind.bandwidth.rate_kbps: must be greater than 0 (use timeout to stop data)",
            "policy.toxics[1].kind.slicer.size_variation: must be less than average_size (10), got 10",
            "policy.toxics[2].kind.latency.latency_ms: must be at most 3600000, got 3600001",
            "policy.toxicity: must be between 0.0 and 1.0, got 1.5",
            "policy.scope.routes[1]: duplicate name \"web\"",
            "policy.scope.nodes[0]: invalid name \"\": use 1 to 64 of A-Z a-z 0-9 _ - .",
        ];
        assert_eq!(msgs, expect);
        // `.` and `..` cannot be a URL path segment: refused as new input,
        // kept when stored (the rules it was written under).
        let dots = policy(serde_json::json!({
            "name": "..", "scope": {"routes": ["."]}, "toxics": [{"kind": {"refuse": {}}}]
        }));
        let paths: Vec<String> = dots.validate("policy").into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["policy.name", "policy.scope.routes[0]"]);
        assert!(dots.validate_with(Rules::Stored, "policy").is_empty());
        let empty = policy(serde_json::json!({"name": "e", "toxics": []}));
        assert_eq!(empty.validate("p")[0].path, "p.toxics");
        let nan = ChaosPolicy { toxicity: f64::NAN, ..empty };
        assert!(nan.validate("p").iter().any(|e| e.path == "p.toxicity"));
    }

    /// What protocol 5 added is omitted when unused (an older node reads
    /// such a policy as before) and named by `uses_protocol_5` when used.
    #[test]
    fn protocol_5_fields_are_omitted_unused_and_flagged_used() {
        let plain = policy(serde_json::json!({"name": "p", "toxics": [{"kind": {"refuse": {}}}]}));
        let json = serde_json::to_value(&plain).expect("serialize");
        assert!(json.get("seed").is_none() && json["scope"].get("backends").is_none(), "{json}");
        assert!(!plain.uses_protocol_5());
        for used in [
            serde_json::json!({"name": "p", "seed": 7, "toxics": [{"kind": {"refuse": {}}}]}),
            serde_json::json!({"name": "p", "scope": {"backends": ["b"]}, "toxics": [{"kind": {"refuse": {}}}]}),
            serde_json::json!({"name": "p", "toxics": [{"direction": "both", "kind": {"refuse": {}}}]}),
            serde_json::json!({"name": "p", "toxics": [{"kind": {"connect_delay": {"delay_ms": 5}}}]}),
        ] {
            let p = policy(used.clone());
            assert!(p.uses_protocol_5(), "{used}");
            assert!(p.validate("policy").is_empty(), "{used}");
        }
        let big = policy(
            serde_json::json!({"name": "p", "seed": MAX_SEED + 1, "toxics": [{"kind": {"refuse": {}}}]}),
        );
        assert_eq!(big.validate("policy")[0].path, "policy.seed");
        let dup = policy(
            serde_json::json!({"name": "p", "scope": {"backends": ["b", "b"]}, "toxics": [{"kind": {"refuse": {}}}]}),
        );
        assert_eq!(dup.validate("policy")[0].path, "policy.scope.backends[1]");
        assert!(Direction::Both.upstream() && Direction::Both.downstream());
        assert!(!Direction::Upstream.downstream() && !Direction::Downstream.upstream());
    }
}
