//! Response bodies of the admin API (`/v1/...`) and its error body.

use serde::{Deserialize, Serialize};

use crate::RouteSpec;

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The node's name (`[node] name`).
    pub node: String,
    /// ferryd's version: the release and the first 12 hex digits of the git
    /// commit it was built from (`0.1.0+0123456789ab`).
    pub version: String,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// True once SIGTERM/SIGINT started the drain.
    pub draining: bool,
    /// Number of routes in the routing table.
    pub routes: usize,
    /// Generation of the routing table: bumped by every rebuild (config or health change).
    pub table_generation: u64,
    /// Client connections open through this node, all routes.
    pub active_connections: u64,
    /// Cluster mode: the config index this node has applied (the value of
    /// `X-Ferry-Index`); standalone: the table generation.
    #[serde(default)]
    pub index: u64,
    /// Cluster mode: Raft's view of this node; null when standalone.
    #[serde(default)]
    pub raft: Option<RaftStatus>,
    /// A digest (16 hex digits) of the routes this node routes with: two
    /// nodes with the same digest use the same route config.
    #[serde(default)]
    pub table_digest: String,
    /// The full git commit ferryd was built from (`unknown` outside git).
    #[serde(default)]
    pub commit: String,
    /// The cluster protocol this node speaks.
    #[serde(default)]
    pub protocol: u16,
    /// The features this node speaks.
    #[serde(default)]
    pub features: Vec<String>,
    /// Cluster mode: what every voter and learner speaks, from this node's
    /// last probe of them (every 5 s); null when standalone or before the
    /// first probe.
    #[serde(default)]
    pub cluster_version: Option<ClusterVersion>,
    /// The config index this node's data plane runs: its routing table is
    /// published and its listeners bound (or their failures recorded) for
    /// every change up to it. `index` may be ahead while they are. What
    /// `?min_index=` waits for. Standalone: the table generation.
    #[serde(default)]
    pub data_index: u64,
}

/// The cluster version: the lowest cluster protocol among the voters and
/// learners, and the features all of them speak. A write using a feature
/// outside `features` is refused (409 `feature_not_enabled`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterVersion {
    /// The lowest protocol; null while some member's is unknown.
    pub protocol: Option<u16>,
    /// The version of a member speaking that protocol.
    pub version: Option<String>,
    /// The features every member speaks.
    pub features: Vec<String>,
    /// Members whose version is unknown (they did not answer).
    pub unknown: Vec<String>,
}

/// Raft's view of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: Role,
    /// The leader this node knows: its own id exactly when `role` is
    /// `leader`; null while it knows none (an election, or a node outside
    /// the membership).
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The leader's node name, when known.
    #[serde(default)]
    pub leader_name: Option<String>,
    /// On the leader: whether a majority of the voters (itself included)
    /// was heard from within the contact timeout, so writes can commit now.
    /// Null on every other role.
    #[serde(default)]
    pub quorum: Option<bool>,
    /// Every other member of the Raft membership, with the last contact.
    #[serde(default)]
    pub peers: Vec<RaftPeer>,
}

/// Declares a string enum of the API: serialized in lower case, with
/// [`Display`](std::fmt::Display) giving the same text, and `Unknown` for a
/// value a newer server sends that this build does not know (never sent).
macro_rules! api_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vm])* $variant,)*
            /// A value this build does not know (from a newer server).
            #[serde(other)]
            Unknown,
        }

        impl $name {
            /// The API's text for it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Unknown => "unknown",
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

api_enum! {
    /// A node's Raft role.
    Role {
        Leader => "leader",
        Follower => "follower",
        Candidate => "candidate",
        Learner => "learner",
        /// Raft stopped on that node.
        Shutdown => "shutdown",
    }
}

api_enum! {
    /// A member's gossip state, as the answering node sees it.
    GossipState {
        Alive => "alive",
        /// Missed probes; others are asked to confirm.
        Suspect => "suspect",
        /// Declared down by gossip.
        Down => "down",
        /// Left the cluster on purpose.
        Left => "left",
    }
}

impl GossipState {
    /// Alive or suspect: not known to be down or gone.
    pub fn is_up(self) -> bool {
        matches!(self, GossipState::Alive | GossipState::Suspect)
    }
}

api_enum! {
    /// A node's place in the Raft membership.
    RaftMembership {
        /// Votes and counts toward the quorum.
        Voter => "voter",
        /// Receives the log, does not vote.
        Learner => "learner",
        /// Not in the Raft membership.
        None => "none",
    }
}

/// One other Raft member, as this node last heard from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftPeer {
    pub id: u64,
    /// The node name; empty while not known.
    pub name: String,
    /// `voter` or `learner`.
    pub raft: RaftMembership,
    /// Milliseconds since this node last heard from the peer: an answer to
    /// a Raft RPC this node sent it, or an AppendEntries the peer sent as
    /// leader. The leader hears from every member each heartbeat; a
    /// follower hears from its leader only (another follower's value is
    /// from its last election, or null). Null when never heard from since
    /// this node started.
    pub last_contact_ms: Option<u64>,
}

/// One element of `GET /v1/members`: a node known to Raft, to gossip, or
/// to both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node id (below 2^53, exact in JSON).
    pub id: u64,
    pub name: String,
    /// Gossip state as this node sees it: `alive`, `suspect`, `down` or
    /// `left`; null when gossip has not seen the node (or is off).
    pub state: Option<GossipState>,
    /// UDP gossip address; null when gossip has not seen the node.
    pub gossip_addr: Option<String>,
    /// Gossip incarnation: grows with every restart and every rejoin after a
    /// false down; null when gossip has not seen the node.
    pub incarnation: Option<u64>,
    pub cluster_addr: String,
    pub admin_addr: String,
    /// `voter`, `learner` or `none` (not in the Raft membership).
    pub raft: RaftMembership,
    /// How far the node has applied the Raft log; null when it did not
    /// answer (down, or not yet reachable).
    pub applied_index: Option<u64>,
    /// The node's version (`0.1.0+0123456789ab`): from its answer, else as
    /// gossip last advertised it; null when neither is known.
    #[serde(default)]
    pub version: Option<String>,
    /// The node's cluster protocol, from the same source as `version`.
    #[serde(default)]
    pub protocol: Option<u16>,
}

/// The answer to `POST /v1/members/{id}/remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResult {
    pub id: u64,
    /// The log index of the membership without the node.
    pub index: u64,
}

/// The answer to a successful write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The log index of the write (the new config index).
    pub index: u64,
    /// The object's new revision (for the next `?cas=`); equal to `index`.
    pub revision: u64,
}

/// `GET /v1/routes/{name}`, and each element of `GET /v1/routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// The route as configured.
    pub config: RouteSpec,
    /// Cluster mode: the index of the route's last change (for `?cas=`).
    #[serde(default)]
    pub revision: Option<u64>,
    /// False when the route is disabled (`config.enabled`): no node binds
    /// it. Always shown, where `config` leaves an enabled route's out.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// The address this node has bound, or null when it could not bind it
    /// (then it is in `bind_failures`, unless the route is disabled).
    pub listening: Option<String>,
    /// Nodes that could not bind the route's listener, and why: this node,
    /// and in cluster mode every live member, asked over the cluster port
    /// (500 ms). A failed route is retried every 5 s on its node.
    #[serde(default)]
    pub bind_failures: Vec<BindFailure>,
    /// Cluster mode: live members that did not answer that question in
    /// time, so whether they listen is not known.
    #[serde(default)]
    pub bind_unknown: Vec<NodeName>,
    /// Open client connections on this route.
    pub active_connections: u64,
    /// True when no backend is healthy and the route tries all of them.
    pub panic_mode: bool,
    /// Live view of every backend.
    pub backends: Vec<BackendStatus>,
    /// The chaos policies in effect on this route on this node, in the
    /// order their toxics apply.
    #[serde(default)]
    pub chaos: Vec<String>,
}

fn enabled_default() -> bool {
    true
}

/// A node that could not bind a route's listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindFailure {
    /// The node's id; null on a standalone node.
    pub node_id: Option<u64>,
    /// The node's name.
    pub node: String,
    /// The address it tried: `listen`, with `:PORT` on that node's bind
    /// address.
    pub addr: String,
    /// Why, as that node's OS said (`Address already in use`, `Cannot
    /// assign requested address`, ...).
    pub error: String,
}

/// A cluster member, by id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeName {
    pub node_id: u64,
    /// Empty when this node does not know it (a static member that never
    /// answered).
    pub node: String,
}

/// Live view of one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub id: String,
    pub addr: String,
    pub weight: u32,
    /// Takes new connections: not down by active check and not ejected.
    pub healthy: bool,
    /// `up`, `down`, `pending`, `disabled` when the route has no health
    /// check, or `remote` when the backend's node runs its check.
    pub check: String,
    /// Milliseconds left of a passive ejection, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Open connections to this backend.
    pub active_connections: u64,
    /// The addresses this node connects to, in the order it tries them: the
    /// IP of `addr`, or what its host name resolves to (empty while it does
    /// not resolve, and then `healthy` is false). Null when another node
    /// connects to the backend (its `node`), which resolves it.
    #[serde(default)]
    pub resolved: Option<Vec<String>>,
    /// Why the last lookup of `addr`'s host name failed (it may still be
    /// in use: the last good answer is kept through a few failures); null
    /// after a success and for an IP address.
    #[serde(default)]
    pub resolve_error: Option<String>,
}

/// `GET /v1/chaos/{name}`, and each element of `GET /v1/chaos`: a stored
/// chaos policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosPolicyStatus {
    pub policy: crate::chaos::ChaosPolicy,
    /// The index of the policy's last change (for `?cas=`).
    pub revision: u64,
    /// The seed its decisions use (`policy.seed`, or the one derived from
    /// its name and revision).
    pub seed: u64,
    /// `GET /v1/chaos/{name}` only: the nodes whose data plane applies it,
    /// by name: every member not known to be down that is in its scope,
    /// with a route in scope, before `expires_at` by the answering node's
    /// clock (each node runs the same function on the same log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_effect_on: Option<Vec<String>>,
}

/// The body of `PUT /v1/routes/{route}/backends/{backend}/weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightRequest {
    /// 0 to 256; 0 takes no new connections.
    pub weight: u32,
}

/// The answer to `POST /v1/leave` (202): the node is leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveResult {
    pub leaving: bool,
    pub node_id: u64,
}

/// `GET /health/ready`'s 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// `ready`.
    pub status: String,
    /// The routes this node could not bind (it is ready all the same).
    pub bind_failures: Vec<RouteBindFailure>,
}

/// `GET /health/live`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// `ok`.
    pub status: String,
}

/// A route this node could not bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteBindFailure {
    pub route: String,
    /// The address it tried.
    pub addr: String,
    /// The error of its last attempt.
    pub error: String,
}

/// The body of `POST /v1/join`: gossip addresses (`host:port`) of members
/// of the cluster this node should join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub addrs: Vec<String>,
}

/// The answer to `POST /v1/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResult {
    /// The node that was asked to join.
    pub node_id: u64,
    /// The gossip addresses it announced itself to (each name resolved).
    pub joined: Vec<String>,
}

/// The body of every error response: `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Machine-readable code plus a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What went wrong, for programs. Among them:
    /// - 400 `bad_request` (see `fields`), 404 `not_found`, 409
    ///   `cas_mismatch` (see `current`);
    /// - 409 `request_id_reused`: the `X-Ferry-Request-Id` was already used
    ///   for another request (method, path, query or body); nothing was
    ///   applied. A retry must repeat its request exactly.
    /// - 503, with `Retry-After`, when the cluster could not answer:
    ///   `no_leader` (no leader could be asked within the request timeout),
    ///   `leader_changed` (a leader had the write and went away before
    ///   answering: it may or may not have committed), `no_quorum` (the
    ///   leader hears from no majority of voters: a write may still commit),
    ///   `timeout` (the request timeout passed while the leader worked on
    ///   it: it may still commit), `unavailable` (the leader's answer could
    ///   not be read). Retry a write with the same request id.
    pub code: String,
    pub message: String,
    /// `cas_mismatch`: the object's current revision (0: it does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// `bad_request`: every problem, each naming its field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<crate::FieldError>,
}

impl ErrorBody {
    /// An error body with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                current: None,
                fields: Vec::new(),
            },
        }
    }
}
