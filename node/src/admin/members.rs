//! `/v1/members` (cluster mode): who is in the cluster, force-leave of a
//! dead member, and a graceful leave of this node.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use ferry_client::FieldError;
use ferry_client::api::{JoinRequest, JoinResult, LeaveResult, RemoveResult};
use tokio::time::Instant;

use super::params::Path;
use super::request::parse_body;
use super::{AdminState, ApiError};
use crate::cluster::message::MembershipChange;
use crate::config::parse_seed;
use crate::control::member::MemberHandle;

/// Longest wait for one member's applied index.
const STATUS_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

impl AdminState {
    /// The membership handle, or 409 on a standalone node.
    fn membership(&self) -> Result<&MemberHandle, ApiError> {
        self.cluster()?;
        self.member.as_ref().ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "standalone", "no cluster"))
    }
}

/// `GET /v1/members`: every node Raft or gossip knows, by id.
pub async fn list(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let member = s.membership()?;
    let timeout = STATUS_PROBE_TIMEOUT.min(s.request_timeout);
    Ok(Json(member.members(timeout).await).into_response())
}

/// `POST /v1/members/{id}/remove`: removes a member that is down (or was
/// never started) from the Raft membership: the operator's answer to a node
/// that will not come back, before autopilot's `dead_node_timeout`.
pub async fn remove(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let member = s.membership()?;
    // Digits only: `+5` is not node 5.
    let digits = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    let id: u64 = digits.then(|| id.parse().ok()).flatten().filter(|&id| id > 0).ok_or_else(|| {
        ApiError::field("id", format!("expected a node id (a positive integer), got {id:?}"))
    })?;
    if id == member.node_id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "is_self",
            "this is the node answering: use POST /v1/leave on it to make it leave",
        ));
    }
    let in_raft = {
        let m = member.replica.raft().metrics().borrow().clone();
        m.membership_config.membership().get_node(&id).is_some()
    };
    if !in_raft {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("node {id} is not a Raft member"),
        ));
    }
    if let Some(state) = member.gossip.as_ref().and_then(|g| g.view().state_of(id))
        && state.is_up()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "member_alive",
            format!(
                "node {id} is {} in gossip: autopilot would add it back; stop it, or POST /v1/leave on it",
                state.as_str()
            ),
        ));
    }
    let deadline = Instant::now() + s.request_timeout;
    let index = member.replica.change_membership(MembershipChange::Remove { node_id: id }, deadline).await?;
    Ok(Json(RemoveResult { id, index }).into_response())
}

/// Longest `POST /v1/join` waits for a seed to answer.
const JOIN_WAIT: Duration = Duration::from_secs(5);

/// `POST /v1/join` `{"addrs": ["HOST[:PORT]", ...]}`: this node joins the
/// gossip cluster of those seeds (as `consul join`): for a node whose
/// `join` seeds were wrong or down, or to merge two groups. Answers 200
/// once a seed is a member that is up (`joined` lists those), 503
/// `join_pending` when none answered within 5 s (the node keeps
/// announcing to them until the next `POST /v1/join`).
pub async fn join(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let member = s.membership()?;
    let Some(gossip) = member.gossip.as_ref() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "static_membership",
            "this node has no [gossip] section: its membership is static (initial_members)",
        ));
    };
    let req: JoinRequest = parse_body(&body)?;
    if req.addrs.is_empty() {
        return Err(ApiError::field("addrs", "give at least one gossip address (HOST[:PORT]) to join"));
    }
    let errors: Vec<FieldError> = req
        .addrs
        .iter()
        .enumerate()
        .filter_map(|(i, a)| parse_seed(a).err().map(|e| FieldError::new(format!("addrs[{i}]"), e)))
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::bad_request(errors));
    }
    let wait = JOIN_WAIT.min(s.request_timeout);
    let (tried, met) = crate::control::gossip::join_now(gossip, req.addrs, wait, member.api_join.renew())
        .await
        .map_err(|e| ApiError::field("addrs", e))?;
    if met.is_empty() {
        let tried: Vec<String> = tried.iter().map(ToString::to_string).collect();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "join_pending",
            format!(
                "no seed answered within {}ms (announced to {}); this node keeps announcing to them",
                wait.as_millis(),
                tried.join(", ")
            ),
        ));
    }
    let joined = met.iter().map(ToString::to_string).collect();
    Ok(Json(JoinResult { node_id: member.node_id, joined }).into_response())
}

/// `POST /v1/leave`: this node leaves the cluster (Raft, then gossip),
/// drains its connections and exits, as on SIGTERM. Answers 202 at once.
pub async fn leave(State(s): State<AdminState>, headers: HeaderMap) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let member = s.membership()?;
    if member.gossip.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "static_membership",
            "this node has no [gossip] section: its membership is static (initial_members); stop it instead",
        ));
    }
    s.leave.cancel();
    Ok((StatusCode::ACCEPTED, Json(LeaveResult { leaving: true, node_id: member.node_id })).into_response())
}
