//! `GET /v1/routes/{name}/explain` and `POST /v1/routes/{name}/dry-run`:
//! why a connection goes where it goes, and where connections would go
//! after a route change. Both answer from the answering node's routing
//! table, computed by the functions its data plane picks with.

use serde::{Deserialize, Serialize};

use crate::chaos::Toxic;
use crate::route::{Balance, HashKey};

/// `GET /v1/routes/{name}/explain?client=IP[:PORT]`: the backends this
/// node would try, in order, for a new connection from `client`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explain {
    pub route: String,
    /// The answering node (`[node] name`): the order is this node's.
    pub node: String,
    /// The client as read (`IP:PORT`; port 0 when none was given).
    pub client: String,
    pub balance: Balance,
    /// True when the order depends on the client and the table only
    /// (consistent_hash): the same client gets it until the table changes.
    /// False for weighted, round_robin, least_connections and random,
    /// whose order also depends on the route's rotation, the load or a
    /// draw: `order` says what was shown.
    pub deterministic: bool,
    /// How the order was chosen, in words.
    pub order: String,
    /// consistent_hash: the key hashed and its point on the ring.
    pub hash: Option<ExplainHash>,
    /// Distinct backends one connection tries at most.
    pub max_connect_attempts: u32,
    /// No backend was healthy when the table was built, so every reachable
    /// backend of weight > 0 is a candidate.
    pub panic_mode: bool,
    /// Every backend of the route: the candidates first, in the order they
    /// are tried (`attempt` 1, 2, …), then the others with the reason they
    /// are not tried.
    pub backends: Vec<ExplainBackend>,
    /// The chaos policies in effect on the route on this node.
    pub chaos: Vec<ExplainChaos>,
    /// The route's connection ordinal on this node that the next accepted
    /// connection gets (chaos decisions are a function of it).
    pub next_connection: u64,
    /// The config index this node had applied when it answered (the
    /// table generation on a standalone node), as `X-Ferry-Index`.
    pub index: u64,
    /// The generation of the routing table the answer was computed from.
    pub table_generation: u64,
}

/// The consistent-hash key of a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainHash {
    /// The route's `hash_key`.
    pub key: HashKey,
    /// What is hashed: the client's IP (`client_ip`; an IPv4-mapped IPv6
    /// address as its IPv4 address) or IP and port (`client_addr`).
    pub input: String,
    /// The key's point on the ring, 0 ..= 2^64 - 1.
    pub point: u64,
    /// The first backend clockwise from the point whatever its health:
    /// the key's backend whenever that one is eligible. Null when no
    /// backend has points (every weight is 0).
    pub ring_owner: Option<String>,
}

/// One backend of an explained route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainBackend {
    pub id: String,
    pub addr: String,
    pub weight: u32,
    /// Its place in the order tried, from 1; null when it is not tried.
    pub attempt: Option<u32>,
    /// Why it is not tried, or why a candidate is where it is (panic
    /// mode, a suspect node); null for a plain candidate.
    pub reason: Option<String>,
    /// Who connects to it.
    pub owner: ExplainOwner,
    /// The active check: `up`, `down`, `disabled` (the route has none) or
    /// `remote` (its owner runs it).
    pub check: String,
    /// Milliseconds of passive ejection left, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// It took new connections when the table was built.
    pub healthy: bool,
    /// Connections to it open through this node.
    pub active_connections: u64,
    /// Not consistent_hash: its share of new connections' first pick with
    /// the table as it is (see [`DryRun`]); null when not eligible and for
    /// consistent_hash.
    pub share: Option<f64>,
    /// The chaos policies that act on connections to it.
    pub chaos: Vec<String>,
}

/// The node that connects to a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainOwner {
    /// This node connects to it itself (not pinned, or pinned here).
    pub local: bool,
    /// The backend's `node`, as configured; null when not pinned.
    pub node: Option<String>,
    /// The owner's node id, when known (this node's own id in cluster mode).
    pub node_id: Option<u64>,
    /// The owner's name, when known.
    pub node_name: Option<String>,
    /// The owner's gossip state as this node sees it (`alive`, `suspect`,
    /// `down`, `left`); null for this node itself and for an unknown node.
    pub state: Option<String>,
}

/// A chaos policy in effect on the explained route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainChaos {
    pub policy: String,
    /// The index of the write that stored it.
    pub revision: u64,
    /// Share of connections it hits.
    pub toxicity: f64,
    /// The seed of its decisions (the policy's `seed`, or the one derived
    /// from its name and revision).
    pub seed: u64,
    /// The backends it acts on; null: every backend.
    pub backends: Option<Vec<String>>,
    pub toxics: Vec<Toxic>,
    /// Whether it hits the next connection (`next_connection`) if that
    /// connection goes to the first candidate: the decision is a pure
    /// function of the seed, this node, the route, the ordinal and the
    /// backend. Null when it does not act on the first candidate, or there
    /// is none.
    pub hits_next: Option<bool>,
}

/// `POST /v1/routes/{name}/dry-run` with a route body: where new
/// connections would go if the route were written, against this node's
/// current table and health. Nothing is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRun {
    pub route: String,
    /// The answering node: health and peers are as it sees them.
    pub node: String,
    /// The route as it is in this node's table; null when it has no such
    /// route (then every key or connection is new).
    pub before: Option<DryRunSide>,
    /// The route as the body would make it.
    pub after: DryRunSide,
    /// Fraction of the key space whose backend changes (to another backend,
    /// to none, or from none), when both sides hash (consistent_hash) or
    /// the route is new; null otherwise (a connection of the other modes
    /// has no backend of its own to move from).
    pub moved: Option<f64>,
    /// Every backend of either side: those of `before` in its order, then
    /// the new ones.
    pub backends: Vec<DryRunBackend>,
    /// As in [`Explain`].
    pub index: u64,
    pub table_generation: u64,
}

/// What a share is a share of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareOf {
    /// consistent_hash: of the hash space, exactly (arc lengths on the
    /// ring): the share of client keys, for keys spread evenly.
    KeySpace,
    /// The other modes: of new connections' first pick.
    NewConnections,
}

/// One side (before or after) of a dry run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRunSide {
    pub balance: Balance,
    pub share_of: ShareOf,
    /// No backend healthy: every reachable one of weight > 0 is used.
    pub panic_mode: bool,
    /// Share that no backend takes (no backend is eligible): 0 or 1.
    pub unassigned: f64,
}

/// One backend in a dry run. Shares are fractions (0 ..= 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRunBackend {
    pub id: String,
    /// Its share now; null when it is not a backend of the route now.
    pub before: Option<f64>,
    /// Its share after; null when the body removes it.
    pub after: Option<f64>,
    /// Fraction of the key space it holds now and would lose (when
    /// `moved` is given).
    pub moved_away: Option<f64>,
    /// Fraction of the key space it would gain (when `moved` is given).
    pub moved_in: Option<f64>,
    /// It takes new connections now (as far as health goes); a new
    /// backend is taken as healthy, as the node starts it.
    pub healthy: bool,
}

#[cfg(feature = "http")]
impl crate::http::AdminClient {
    /// `GET /v1/routes/{route}/explain?client=CLIENT` (`IP` or `IP:PORT`).
    pub async fn explain(
        &self,
        route: &str,
        client: &str,
    ) -> Result<crate::http::Indexed<Explain>, crate::http::ClientError> {
        let client = query_value(client);
        self.call("GET", &format!("/v1/routes/{route}/explain?client={client}"), None, None).await
    }

    /// `POST /v1/routes/{name}/dry-run` with `route` as the body.
    pub async fn dry_run(
        &self,
        route: &crate::RouteSpec,
    ) -> Result<crate::http::Indexed<DryRun>, crate::http::ClientError> {
        let body = serde_json::to_vec(route)
            .map_err(|e| crate::http::ClientError::Decode { addr: self.addr(), message: e.to_string() })?;
        self.call("POST", &format!("/v1/routes/{}/dry-run", route.name), Some(body), None).await
    }
}

/// `value` percent-encoded for a query string (`[`, `]`, `:` and the
/// rest of an IPv6 address pass through `%XX`).
#[cfg(feature = "http")]
fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("127.0.0.1:80"), "127.0.0.1%3A80");
        assert_eq!(query_value("[::1]:80"), "%5B%3A%3A1%5D%3A80");
        assert_eq!(query_value("a b&c"), "a%20b%26c");
    }
}
