//! The replicated cluster config and the pure, deterministic logic that
//! applies commands to it.
//!
//! No I/O and no clock: given the same state, log index and request, every
//! node computes the same new state and the same [`Response`]. [`check`] is
//! the one validator, used by the node before proposing and by apply after
//! commit. Apply never panics on any input, and a rejected command changes
//! nothing but the memory of request ids.
//!
//! Objects are checked under [`Rules::Stored`]: the rules every version of
//! ferry applied. A rule added for new input (the names `.` and `..`, listen
//! port 0) is enforced before proposing, never here: a node that enforced it
//! in apply would reject entries an older node (or itself, before an
//! upgrade, replaying its log) had applied, and the states would diverge.

use std::collections::BTreeMap;

use ferry_client::chaos::ChaosPolicy;
use ferry_client::route::{ListenAddr, MAX_WEIGHT, Rules};
use ferry_client::{FieldError, RouteSpec};
use serde::{Deserialize, Serialize};

use crate::command::{Command, Request, Response, StateError, Target};
use crate::digest::command_digest;
use crate::recent::{RecentRequests, Remembered};

/// The whole replicated config. Self-describing
/// ([`ferry_client::selfdesc`]): a snapshot holds it as a JSON document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ClusterState {
    /// Routes by name.
    pub routes: BTreeMap<String, StoredRoute>,
    /// Chaos policies by name.
    pub chaos: BTreeMap<String, StoredPolicy>,
    /// The config index: the index given to the last change (0 before the
    /// first). Every applied command takes a new one, the larger of its log
    /// entry's index and this one plus 1: the log index itself unless
    /// several commands shared an entry ([`Command::Batch`]), after which the
    /// config index runs ahead of the log. Rejected commands and
    /// Raft-internal entries do not move it.
    pub index: u64,
    /// Recent request ids with their commands' digests and responses.
    pub recent: RecentRequests,
}

ferry_client::self_describing!(ClusterState);

/// A route with the revision of its last change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRoute {
    /// The route as written.
    pub spec: RouteSpec,
    /// Config index of the command that last changed it.
    pub revision: u64,
}

/// A chaos policy with the revision of its last change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredPolicy {
    /// The policy as written.
    pub policy: ChaosPolicy,
    /// Config index of the command that last changed it.
    pub revision: u64,
}

/// Whether `cmd` would be applied to `state`: `Ok` when it would change the
/// config, the rejection otherwise. New input is validated under
/// [`Rules::Input`] before it reaches this (see the module doc).
///
/// Order: the command's own fields (400), then the compare-and-set condition
/// (409), then existence (404), then conflicts with other objects (400).
pub fn check(state: &ClusterState, cmd: &Command) -> Result<(), StateError> {
    let invalid = |errors: Vec<FieldError>| {
        if errors.is_empty() { Ok(()) } else { Err(StateError::Invalid { errors }) }
    };
    if let Command::SeedRoutes { routes } = cmd {
        invalid(ferry_client::route::validate_routes_with(Rules::Stored, routes, "routes"))?;
        // Seeding is for a cluster that never had config: reporting the
        // current index tells the proposer it came too late.
        if state.index != 0 {
            return Err(StateError::CasMismatch { current: state.index });
        }
        return Ok(());
    }
    if let Command::RestoreSnapshot { routes, policies, cas } = cmd {
        invalid(ferry_client::snapshot::validate_config(routes, policies, "routes", "policies"))?;
        match cas {
            Some(expected) if *expected != state.index => {
                return Err(StateError::CasMismatch { current: state.index });
            }
            _ => return Ok(()),
        }
    }
    if let Command::Batch { .. } = cmd {
        // Only a whole entry may be a batch: apply splits it before checking.
        return invalid(vec![FieldError::new("command", "a batch cannot be nested")]);
    }
    match cmd {
        Command::PutRoute { route, .. } => {
            let mut errors = Vec::new();
            route.validate_with(Rules::Stored, "route", &mut errors);
            invalid(errors)?;
        }
        Command::SetBackendWeight { weight, .. } if *weight > MAX_WEIGHT => {
            invalid(vec![FieldError::new(
                "weight",
                format!("must be between 0 and {MAX_WEIGHT}, got {weight}"),
            )])?;
        }
        Command::PutChaosPolicy { policy, .. } => invalid(policy.validate_with(Rules::Stored, "policy"))?,
        _ => {}
    }

    let current = state.revision(cmd.target());
    match cmd.cas() {
        Some(expected) if expected != current => return Err(StateError::CasMismatch { current }),
        _ => {}
    }

    match cmd {
        Command::PutRoute { route, .. } => invalid(listen_conflict(state, route))?,
        Command::DeleteRoute { name, .. } if current == 0 => return Err(not_found_route(name)),
        Command::SetBackendWeight { route, backend, weight, .. } => {
            let stored = state.routes.get(route).ok_or_else(|| not_found_route(route))?;
            let mut spec = stored.spec.clone();
            let b = spec.backends.iter_mut().find(|b| b.id == *backend).ok_or_else(|| {
                StateError::NotFound { what: format!("backend {backend:?} of route {route:?}") }
            })?;
            b.weight = *weight;
            let mut errors = Vec::new();
            spec.validate_with(Rules::Stored, "route", &mut errors);
            invalid(errors)?;
        }
        Command::DeleteChaosPolicy { name, .. } if current == 0 => {
            return Err(StateError::NotFound { what: format!("chaos policy {name:?}") });
        }
        _ => {}
    }
    Ok(())
}

fn not_found_route(name: &str) -> StateError {
    StateError::NotFound { what: format!("route {name:?}") }
}

/// Another route with exactly the same listen string. The node also checks
/// conflicts after resolving addresses against its own bind address, which
/// the replicated state cannot know. Port 0 never conflicts (the OS picks).
fn listen_conflict(state: &ClusterState, route: &RouteSpec) -> Vec<FieldError> {
    if ListenAddr::parse(&route.listen).is_some_and(|l| l.port() == 0) {
        return Vec::new();
    }
    state
        .routes
        .values()
        .filter(|other| other.spec.name != route.name && other.spec.listen == route.listen)
        .map(|other| {
            FieldError::new(
                "route.listen",
                format!("listen address {:?} is already used by route {:?}", route.listen, other.spec.name),
            )
        })
        .take(1)
        .collect()
}

impl ClusterState {
    /// Current revision of the object `target` (0 when it does not exist).
    pub fn revision(&self, target: Target<'_>) -> u64 {
        match target {
            Target::Route(name) => self.routes.get(name).map_or(0, |r| r.revision),
            Target::Chaos(name) => self.chaos.get(name).map_or(0, |p| p.revision),
        }
    }

    /// Applies the request committed at log index `log_index` and returns
    /// its response: a batch's requests one after the other, each as if it
    /// had its own entry. A request id already remembered gets its original
    /// response, or a refusal if it comes with another command, and changes
    /// nothing.
    pub fn apply(&mut self, log_index: u64, req: &Request) -> Response {
        match &req.command {
            Command::Batch { requests } => {
                Response::Batch { responses: requests.iter().map(|r| self.apply_one(log_index, r)).collect() }
            }
            _ => self.apply_one(log_index, req),
        }
    }

    /// Applies one request. A remembered id answers its original response
    /// when the command is the same one (equal digests, or an entry of a
    /// format before digests), and [`StateError::RequestIdReused`] when it is
    /// another: either way nothing changes, the memory included.
    fn apply_one(&mut self, log_index: u64, req: &Request) -> Response {
        let digest = if req.digestless { None } else { req.id.and_then(|_| command_digest(&req.command)) };
        if let Some(seen) = req.id.and_then(|id| self.recent.get(id)) {
            return match (seen.digest, digest) {
                (Some(theirs), Some(ours)) if theirs != ours => {
                    Response::Rejected { error: StateError::RequestIdReused { id: seen.id } }
                }
                _ => seen.response.clone(),
            };
        }
        let response = match check(self, &req.command) {
            Ok(()) => {
                let index = log_index.max(self.index.saturating_add(1));
                self.execute(index, &req.command);
                self.index = index;
                Response::Applied { index, revision: index }
            }
            Err(error) => Response::Rejected { error },
        };
        if let Some(id) = req.id {
            self.recent.insert(Remembered::new(id, digest, response.clone()));
        }
        response
    }

    /// Makes the change of a command that passed [`check`].
    fn execute(&mut self, index: u64, cmd: &Command) {
        match cmd {
            Command::PutRoute { route, .. } => {
                self.routes.insert(route.name.clone(), StoredRoute { spec: route.clone(), revision: index });
            }
            Command::DeleteRoute { name, .. } => {
                self.routes.remove(name);
            }
            Command::SetBackendWeight { route, backend, weight, .. } => {
                if let Some(stored) = self.routes.get_mut(route) {
                    for b in stored.spec.backends.iter_mut().filter(|b| b.id == *backend) {
                        b.weight = *weight;
                    }
                    stored.revision = index;
                }
            }
            Command::PutChaosPolicy { policy, .. } => {
                self.chaos
                    .insert(policy.name.clone(), StoredPolicy { policy: policy.clone(), revision: index });
            }
            Command::DeleteChaosPolicy { name, .. } => {
                self.chaos.remove(name);
            }
            Command::SeedRoutes { routes } => {
                for route in routes {
                    self.routes
                        .insert(route.name.clone(), StoredRoute { spec: route.clone(), revision: index });
                }
            }
            Command::RestoreSnapshot { routes, policies, .. } => {
                self.routes = routes
                    .iter()
                    .map(|r| (r.name.clone(), StoredRoute { spec: r.clone(), revision: index }))
                    .collect();
                self.chaos = policies
                    .iter()
                    .map(|p| (p.name.clone(), StoredPolicy { policy: p.clone(), revision: index }))
                    .collect();
            }
            // Refused by check.
            Command::Batch { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests;
