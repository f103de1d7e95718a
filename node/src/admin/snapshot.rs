//! `/v1/snapshot`: backups of the replicated config (cluster mode).
//!
//! - `GET /v1/snapshot` answers a snapshot file
//!   ([`ferry_client::snapshot`]): every route and chaos policy with its
//!   revision, the config index, the cluster id, this node's name and the
//!   time, under a checksum. A read like the others: linearizable, or
//!   `?consistency=stale` from any node, even one without a quorum.
//! - `POST /v1/snapshot/restore?cas=N` or `?force=true` replaces the whole
//!   config with the body's (a snapshot file) as one Raft command
//!   ([`Command::RestoreSnapshot`]): every route and policy not in it is
//!   removed. A bad file or an invalid route or policy is a 400 naming the
//!   field, and changes nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_client::FieldError;
use ferry_client::snapshot::{MAX_SNAPSHOT_BYTES, Snapshot, SnapshotPolicy, SnapshotRoute};
use ferry_raft_store::{ClusterState, Command};

use super::params::QueryParams;
use super::request::{Params, ReadParams, with_index};
use super::routes::commit;
use super::{AdminState, ApiError};

/// `GET /v1/snapshot`.
pub async fn get(State(s): State<AdminState>, Params(q): Params<ReadParams>) -> Result<Response, ApiError> {
    let state = s.read_state(&q).await?;
    let snapshot = snapshot_of(&state, &s.cluster_id, &s.node_name, crate::dataplane::clock::unix_ms());
    let bytes = snapshot
        .to_bytes()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let mut r = bytes.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(with_index(r, state.index))
}

/// The snapshot of `state`.
pub fn snapshot_of(state: &ClusterState, cluster_id: &str, node: &str, taken_at_ms: u64) -> Snapshot {
    Snapshot {
        cluster_id: cluster_id.to_string(),
        node: node.to_string(),
        taken_at_ms,
        index: state.index,
        routes: state
            .routes
            .values()
            .map(|r| SnapshotRoute { route: r.spec.clone(), revision: r.revision })
            .collect(),
        chaos: state
            .chaos
            .values()
            .map(|p| SnapshotPolicy { policy: p.policy.clone(), revision: p.revision })
            .collect(),
    }
}

/// `?cas=N` or `?force=true` of a restore.
#[derive(Debug, Default)]
pub struct RestoreParams {
    /// The config index the restore replaces.
    pub cas: Option<u64>,
    /// Replace whatever the index.
    pub force: bool,
}

impl QueryParams for RestoreParams {
    const NAMES: &'static [&'static str] = &["cas", "force"];

    fn set(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        if name == "cas" {
            let mut w = super::params::WriteParams::default();
            w.set(name, value)?;
            self.cas = w.cas;
            return Ok(());
        }
        self.force = match value {
            "true" => true,
            "false" => false,
            other => {
                let quoted: String = other.chars().take(64).collect();
                return Err(ApiError::field("force", format!("expected true or false, got {quoted:?}")));
            }
        };
        Ok(())
    }
}

impl RestoreParams {
    /// The restore's condition on the config index (`None`: forced).
    fn condition(&self) -> Result<Option<u64>, ApiError> {
        match (self.cas, self.force) {
            (Some(_), true) => Err(ApiError::field(
                "force",
                "give either cas (the config index to replace) or force, not both",
            )),
            (Some(n), false) => Ok(Some(n)),
            (None, true) => Ok(None),
            (None, false) => Err(ApiError::field(
                "cas",
                "missing: give ?cas=N, the config index the snapshot replaces (X-Ferry-Index of a read), \
                 or ?force=true to replace whatever the cluster holds",
            )),
        }
    }
}

/// `POST /v1/snapshot/restore?cas=N|force=true` with a snapshot file as
/// the body.
pub async fn restore(
    State(s): State<AdminState>,
    Params(q): Params<RestoreParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let replica = s.cluster()?;
    let cas = q.condition()?;
    if body.len() > MAX_SNAPSHOT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a snapshot is limited to {MAX_SNAPSHOT_BYTES} bytes"),
        ));
    }
    let snapshot = Snapshot::from_bytes(&body).map_err(|e| ApiError::fields(e.fields()))?;
    // What only a node can check: no route on an address a member holds
    // for itself (the state machine cannot know the membership).
    let routes = snapshot.route_specs();
    let restored = ClusterState {
        routes: snapshot
            .routes
            .iter()
            .map(|r| {
                let stored = ferry_raft_store::state::StoredRoute { spec: r.route.clone(), revision: 0 };
                (r.route.name.clone(), stored)
            })
            .collect(),
        ..ClusterState::default()
    };
    let problems: Vec<FieldError> = routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let problem = s.listen_problem(r, &restored)?;
            Some(FieldError::new(format!("content.routes[{i}].route.listen"), problem.message))
        })
        .collect();
    if !problems.is_empty() {
        return Err(ApiError::fields(problems));
    }
    tracing::info!(
        from_cluster = %snapshot.cluster_id,
        from_node = %snapshot.node,
        snapshot_index = snapshot.index,
        routes = routes.len(),
        policies = snapshot.chaos.len(),
        ?cas,
        "restoring a snapshot"
    );
    let cmd = Command::RestoreSnapshot { routes, policies: snapshot.policies(), cas };
    commit(&s, replica, &headers, cmd).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::params::parse;

    fn named(e: ApiError) -> String {
        e.body.error.fields.first().map(|f| f.path.clone()).unwrap_or_default()
    }

    #[test]
    fn restore_takes_cas_or_force_and_names_what_is_missing() -> Result<(), ApiError> {
        assert_eq!(parse::<RestoreParams>("cas=7")?.condition()?, Some(7));
        assert_eq!(parse::<RestoreParams>("force=true")?.condition()?, None);
        for (query, field) in [
            ("", "cas"),
            ("force=false", "cas"),
            ("cas=1&force=true", "force"),
            ("force=yes", "force"),
            ("cas=x", "cas"),
            ("index=1", "index"),
        ] {
            let err = parse::<RestoreParams>(query).and_then(|p| p.condition());
            assert_eq!(err.err().map(named).as_deref(), Some(field), "{query:?}");
        }
        Ok(())
    }
}
