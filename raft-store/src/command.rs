//! The replicated commands (the Raft log's payload) and their results.
//!
//! A [`Request`] is what the node proposes; every node applies it to its
//! [`ClusterState`](crate::ClusterState) and gets the same [`Response`]. A
//! rejected command is an ordinary response, not a Raft error: it is
//! committed, answered, and changes nothing.

use ferry_client::chaos::ChaosPolicy;
use ferry_client::{FieldError, RouteSpec};
use serde::{Deserialize, Serialize};

/// A change to the cluster config.
///
/// `cas` on every command: `None` applies unconditionally; `Some(0)` means the
/// object must not exist; `Some(n)` means its current revision (the config
/// index of its last change) must be `n`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Command {
    /// Create or replace the route named `route.name`.
    PutRoute { route: RouteSpec, cas: Option<u64> },
    /// Remove a route.
    DeleteRoute { name: String, cas: Option<u64> },
    /// Change one backend's weight; `cas` is on the route's revision.
    SetBackendWeight { route: String, backend: String, weight: u32, cas: Option<u64> },
    /// Create or replace the chaos policy named `policy.name`.
    PutChaosPolicy { policy: ChaosPolicy, cas: Option<u64> },
    /// Remove a chaos policy.
    DeleteChaosPolicy { name: String, cas: Option<u64> },
    // New variants go last: bincode encodes the variant index.
    /// The routes of the config file that bootstrapped the cluster. Applied
    /// only while the cluster has never had a config change (index 0), so it
    /// takes effect exactly once however often it is proposed.
    SeedRoutes { routes: Vec<RouteSpec> },
    /// Several clients' requests committed as one log entry, applied in
    /// order, each with its own config index, request id and response
    /// ([`Response::Batch`]). The leader forms batches while its previous
    /// entries are still being appended (see the node's write batcher); a
    /// batch never nests and never holds a [`Command::SeedRoutes`].
    Batch { requests: Vec<Request> },
    /// Replaces the whole config with `routes` and `policies` (a snapshot
    /// file's, `POST /v1/snapshot/restore` or `ferryd --restore-snapshot`):
    /// every route and policy not in them is removed, and each of them gets
    /// this command's config index as its revision. `cas` is on the config
    /// index itself: `Some(n)` applies only while it is `n` (`Some(0)`: a
    /// cluster that never had config), `None` unconditionally. Never batched.
    RestoreSnapshot { routes: Vec<RouteSpec>, policies: Vec<ChaosPolicy>, cas: Option<u64> },
}

impl Command {
    /// The object the command changes (its revision is what `cas` compares).
    pub fn target(&self) -> Target<'_> {
        match self {
            Command::PutRoute { route, .. } => Target::Route(&route.name),
            Command::DeleteRoute { name, .. } => Target::Route(name),
            Command::SetBackendWeight { route, .. } => Target::Route(route),
            Command::PutChaosPolicy { policy, .. } => Target::Chaos(&policy.name),
            Command::DeleteChaosPolicy { name, .. } => Target::Chaos(name),
            // No route is named "": the revision compared is always 0.
            Command::SeedRoutes { .. } | Command::Batch { .. } | Command::RestoreSnapshot { .. } => {
                Target::Route("")
            }
        }
    }

    /// The names of the features the command uses: what a node must speak
    /// to apply it (the node's `version::FEATURES` gives the protocol of
    /// each). A command using none can be applied by every node of the
    /// window. A field or variant added to a command, route or policy that
    /// an older node could not read is named here when it is used.
    pub fn features(&self) -> Vec<&'static str> {
        match self {
            Command::Batch { requests } => {
                let mut all: Vec<&'static str> = requests.iter().flat_map(|r| r.command.features()).collect();
                all.sort_unstable();
                all.dedup();
                all
            }
            Command::PutRoute { route, .. } => route_features(std::slice::from_ref(route)),
            Command::SeedRoutes { routes } => route_features(routes),
            Command::RestoreSnapshot { routes, policies, .. } => {
                let mut all = route_features(routes);
                if policies.iter().any(ChaosPolicy::uses_protocol_5) {
                    all.push(CHAOS_TRAFFIC);
                }
                all.push(SNAPSHOT_RESTORE);
                all.sort_unstable();
                all
            }
            Command::PutChaosPolicy { policy, .. } if policy.uses_protocol_5() => vec![CHAOS_TRAFFIC],
            Command::DeleteRoute { .. }
            | Command::SetBackendWeight { .. }
            | Command::PutChaosPolicy { .. }
            | Command::DeleteChaosPolicy { .. } => Vec::new(),
        }
    }

    /// The compare-and-set condition of the command (for
    /// [`Command::RestoreSnapshot`], on the config index).
    pub fn cas(&self) -> Option<u64> {
        match self {
            Command::RestoreSnapshot { cas, .. }
            | Command::PutRoute { cas, .. }
            | Command::DeleteRoute { cas, .. }
            | Command::SetBackendWeight { cas, .. }
            | Command::PutChaosPolicy { cas, .. }
            | Command::DeleteChaosPolicy { cas, .. } => *cas,
            Command::SeedRoutes { .. } | Command::Batch { .. } => None,
        }
    }
}

/// The features the routes `routes` use, in [`Command::features`]' order.
fn route_features(routes: &[RouteSpec]) -> Vec<&'static str> {
    let mut used = Vec::new();
    if routes.iter().any(|r| !r.labels.is_empty()) {
        used.push(ROUTE_LABELS);
    }
    if routes.iter().any(|r| !r.enabled) {
        used.push(ROUTE_ENABLED);
    }
    used
}

/// The feature of a route with `labels`.
pub const ROUTE_LABELS: &str = "route_labels";
/// The feature of a disabled route (`enabled: false`): an older node
/// would bind it (it cannot read the field at all).
pub const ROUTE_ENABLED: &str = "route_enabled";
/// The feature of a chaos policy with a `seed`, a backend scope, direction
/// `both` or a `connect_delay` toxic.
pub const CHAOS_TRAFFIC: &str = "chaos_traffic";

/// The feature of [`Command::RestoreSnapshot`]: a command an older node
/// cannot read.
pub const SNAPSHOT_RESTORE: &str = "snapshot_restore";

/// The object a command changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A route, by name.
    Route(&'a str),
    /// A chaos policy, by name.
    Chaos(&'a str),
}

/// One entry of the Raft log: a command and, optionally, the client's request
/// id. A retry with the same id is answered from memory, not applied twice.
///
/// Self-describing ([`ferry_client::selfdesc`]): in the log, in snapshots and
/// on the cluster port it is a JSON document, so it and everything in it
/// (the command, its route or policy) can gain fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Request {
    /// Client request id for idempotent retries (`None`: no de-duplication).
    pub id: Option<u128>,
    /// The change.
    pub command: Command,
    /// Read from a format before 4, whose command digests were computed from
    /// other bytes: applying it remembers no digest
    /// ([`crate::legacy`]). Never encoded.
    #[serde(skip)]
    pub(crate) digestless: bool,
}

ferry_client::self_describing!(Request, Response);

impl PartialEq for Request {
    /// Equal when the id and the command are: `digestless` is how the request
    /// was read, not what it is.
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.command == other.command
    }
}

impl Request {
    /// A request without a request id.
    pub fn new(command: Command) -> Self {
        Self { id: None, command, digestless: false }
    }

    /// A request carrying the request id `id`.
    pub fn with_id(id: u128, command: Command) -> Self {
        Self { id: Some(id), command, digestless: false }
    }

    /// Whether the request may share a log entry with others: every
    /// command but [`Command::SeedRoutes`] (applied only at config index 0)
    /// and a batch itself, and [`Command::RestoreSnapshot`] (the whole
    /// config, large, and alone in its entry).
    pub fn batchable(&self) -> bool {
        !matches!(
            self.command,
            Command::SeedRoutes { .. } | Command::Batch { .. } | Command::RestoreSnapshot { .. }
        )
    }

    /// The size of the request in the log, in bytes.
    pub fn encoded_len(&self) -> usize {
        crate::codec::encode(self).map_or(usize::MAX, |b| b.len())
    }
}

/// The result of applying one log entry, the same on every node.
/// Self-describing, like [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub enum Response {
    /// The command changed the config.
    Applied {
        /// The new config index, given to this change alone.
        index: u64,
        /// The object's new revision (equal to `index`).
        revision: u64,
    },
    /// The command was refused and changed nothing.
    Rejected {
        /// Why.
        error: StateError,
    },
    /// A Raft-internal entry (blank or membership change) at `index`.
    Internal {
        /// Log index of the entry.
        index: u64,
    },
    // New variants go last: bincode encodes the variant index.
    /// The responses to a [`Command::Batch`], one per request, in order.
    Batch {
        /// The responses.
        responses: Vec<Response>,
    },
}

impl Response {
    /// `Ok(revision)` for an applied command, the error for a rejected one.
    pub fn into_result(self) -> Result<u64, StateError> {
        match self {
            Response::Applied { revision, .. } => Ok(revision),
            Response::Internal { index } => Ok(index),
            Response::Rejected { error } => Err(error),
            Response::Batch { .. } => Err(StateError::Invalid {
                errors: vec![FieldError::new("command", "a batch has one response per request")],
            }),
        }
    }
}

/// Why a command was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
pub enum StateError {
    /// The compare-and-set condition failed; `current` is the object's
    /// revision now (0 when it does not exist). HTTP 409.
    #[error("compare-and-set failed: current revision is {current}")]
    CasMismatch { current: u64 },
    /// The object the command needs does not exist, as `route "web"`. HTTP 404.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The command is invalid; every problem names its field. HTTP 400.
    #[error("invalid: {}", join(errors))]
    Invalid { errors: Vec<FieldError> },
    // New variants go last: bincode encodes the variant index.
    /// The request id is remembered for another command: the id was reused
    /// for a different request. Nothing was applied and nothing is
    /// remembered of this one. HTTP 409. Never stored (the id keeps its
    /// original entry); it crosses the cluster port in the answer to a
    /// forwarded write.
    #[error("request id {id:032x} was already used for another request")]
    RequestIdReused { id: u128 },
}

fn join(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
