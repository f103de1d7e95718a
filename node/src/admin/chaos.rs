//! `/v1/chaos`: chaos policies, stored and replicated through Raft (cluster
//! mode); each node's data plane enforces them (`dataplane::chaos`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use ferry_client::chaos::ChaosPolicy;
use ferry_raft_store::Command;
use serde::Serialize;

use super::params::Path;
use super::request::{Params, ReadParams, WriteParams, check_body, parse_body, with_index};
use super::routes::commit;
use super::{AdminState, ApiError};

/// A stored policy and its revision.
#[derive(Debug, Serialize)]
struct PolicyStatus<'a> {
    policy: &'a ChaosPolicy,
    revision: u64,
}

/// `GET /v1/chaos`.
pub async fn list(State(s): State<AdminState>, Params(q): Params<ReadParams>) -> Result<Response, ApiError> {
    let state = s.read_state(&q).await?;
    let all: Vec<PolicyStatus<'_>> =
        state.chaos.values().map(|p| PolicyStatus { policy: &p.policy, revision: p.revision }).collect();
    Ok(with_index(Json(all).into_response(), state.index))
}

/// `GET /v1/chaos/{name}`.
pub async fn get(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Params(q): Params<ReadParams>,
) -> Result<Response, ApiError> {
    let state = s.read_state(&q).await?;
    let p = state.chaos.get(&name).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no chaos policy named {name:?}"))
    })?;
    Ok(with_index(
        Json(PolicyStatus { policy: &p.policy, revision: p.revision }).into_response(),
        state.index,
    ))
}

/// `PUT /v1/chaos/{name}?cas=N`.
pub async fn put(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Params(q): Params<WriteParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let replica = s.cluster()?;
    let policy: ChaosPolicy = parse_body(&body)?;
    check_body("policy", &policy.name, &name, policy.validate("policy"))?;
    commit(&s, replica, &headers, Command::PutChaosPolicy { policy, cas: q.cas }).await
}

/// `DELETE /v1/chaos/{name}?cas=N`.
pub async fn delete(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Params(q): Params<WriteParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let replica = s.cluster()?;
    commit(&s, replica, &headers, Command::DeleteChaosPolicy { name, cas: q.cas }).await
}
