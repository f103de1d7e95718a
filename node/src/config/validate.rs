//! Checking what parsing cannot: values, limits, uniqueness, and the
//! addresses a route may not take.

use std::net::SocketAddr;

use ferry_client::FieldError;
use ferry_client::route::{ReservedAddr, Rules, listen_conflicts, name_problem, validate_routes};

use super::{
    ClusterSection, Config, ConfigErrors, GossipSection, MAX_ADMIN_CONNECTIONS, MAX_ADMIN_TIMEOUT_MS,
    parse_member, parse_seed,
};

impl Config {
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
        if let Some(addr) = self.toxiproxy_addr() {
            self.validate_toxiproxy(addr, &mut errors);
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
        if let Some(addr) = self.toxiproxy_addr() {
            reserved.push(ReservedAddr::new(addr, "the Toxiproxy API address"));
        }
        if let Some(c) = &self.cluster {
            reserved.push(ReservedAddr::new(c.addr, "the cluster address"));
            if let Some(g) = &self.gossip {
                reserved.push(ReservedAddr::new(g.addr(c), "the gossip address"));
            }
        }
        reserved
    }
}

impl Config {
    /// `[chaos] toxiproxy_addr`: cluster mode only (what it writes are
    /// replicated routes and policies), a fixed port (clients are told
    /// it), and none of the node's other addresses.
    fn validate_toxiproxy(&self, addr: SocketAddr, errors: &mut Vec<FieldError>) {
        let mut err = |msg: String| errors.push(FieldError::new("chaos.toxiproxy_addr", msg));
        if self.cluster.is_none() {
            err("requires a [cluster] section: the Toxiproxy API writes chaos policies and routes, \
                 which exist only in cluster mode (a standalone node's routes come from its file)"
                .into());
        }
        if addr.port() == 0 {
            err(format!("must have a fixed port (Toxiproxy clients are told it), got {addr}"));
        }
        let overlaps = |other: SocketAddr| {
            other.port() == addr.port()
                && (other.ip() == addr.ip() || other.ip().is_unspecified() || addr.ip().is_unspecified())
        };
        let mut others = vec![(self.admin.addr, "the admin address")];
        if let Some(c) = &self.cluster {
            others.push((c.addr, "the cluster address"));
        }
        for (other, what) in others {
            if addr.port() != 0 && overlaps(other) {
                err(format!("{addr} collides with {what} {other}"));
            }
        }
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
