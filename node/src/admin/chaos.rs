//! `/v1/chaos`: chaos policies, stored and replicated through Raft (cluster
//! mode); each node's data plane enforces them (`dataplane::chaos`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use ferry_client::api::{ChaosPolicyStatus, GossipState};
use ferry_client::chaos::ChaosPolicy;
use ferry_raft_store::Command;

use super::params::Path;
use super::request::{Params, ReadParams, WriteParams, check_body, parse_body, with_index};
use super::routes::commit;
use super::{AdminState, ApiError};
use crate::dataplane::chaos;

/// How long `GET /v1/chaos/{name}` waits for each member's answer about
/// its applied index (the members list it reuses asks for it).
const MEMBER_PROBE: std::time::Duration = std::time::Duration::from_millis(300);

/// `GET /v1/chaos`.
pub async fn list(State(s): State<AdminState>, Params(q): Params<ReadParams>) -> Result<Response, ApiError> {
    let state = s.read_state(&q).await?;
    let all: Vec<ChaosPolicyStatus> = state
        .chaos
        .values()
        .map(|p| ChaosPolicyStatus {
            policy: p.policy.clone(),
            revision: p.revision,
            seed: p.policy.effective_seed(p.revision),
            in_effect_on: None,
        })
        .collect();
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
    let now = crate::dataplane::clock::unix_ms();
    let members = match s.member.as_ref() {
        Some(m) => m.members(MEMBER_PROBE).await,
        None => Vec::new(),
    };
    let live = members.into_iter().filter(|m| m.state.is_none_or(GossipState::is_up)).map(|m| m.name);
    let mut on: Vec<String> = live
        .filter(|node| state.routes.values().any(|r| chaos::in_effect(&p.policy, node, &r.spec, now)))
        .collect();
    on.sort();
    let status = ChaosPolicyStatus {
        policy: p.policy.clone(),
        revision: p.revision,
        seed: p.policy.effective_seed(p.revision),
        in_effect_on: Some(on),
    };
    Ok(with_index(Json(status).into_response(), state.index))
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
