//! `/v1/routes`: the routes with their live health, and, in cluster mode,
//! writes through Raft (PUT, DELETE, backend weight) with compare-and-set.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use ferry_client::api::{BackendStatus, RouteStatus};
use ferry_client::{FieldError, RouteSpec};
use ferry_raft_store::{Command, Request};
use tracing::Instrument;

use super::binds::RouteBinds;
use super::params::Path;
use super::request::{
    Params, ReadParams, WriteParams, check_body, parse_body, request_id, with_index, written,
};
use super::{AdminState, ApiError};
use crate::dataplane::table::{RoutingTable, Target};

/// `GET /v1/routes`.
pub async fn list(State(s): State<AdminState>, Params(q): Params<ReadParams>) -> Result<Response, ApiError> {
    if s.replica.is_none() {
        q.check()?;
        let (table, binds) = (s.table.load(), s.route_binds().await);
        let routes: Vec<RouteStatus> =
            table.routes().iter().map(|r| s.status_of(&r.spec, None, &table, &binds)).collect();
        return Ok(with_index(Json(routes).into_response(), table.generation));
    }
    let (state, binds) = s.read_with_binds(&q).await?;
    let table = s.table.load();
    let routes: Vec<RouteStatus> =
        state.routes.values().map(|r| s.status_of(&r.spec, Some(r.revision), &table, &binds)).collect();
    Ok(with_index(Json(routes).into_response(), state.index))
}

/// `GET /v1/routes/{name}`.
pub async fn get(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Params(q): Params<ReadParams>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route named {name:?}"));
    if s.replica.is_none() {
        q.check()?;
        let (table, binds) = (s.table.load(), s.route_binds().await);
        let r = table.get(&name).ok_or_else(not_found)?;
        let status = s.status_of(&r.spec, None, &table, &binds);
        return Ok(with_index(Json(status).into_response(), table.generation));
    }
    let (state, binds) = s.read_with_binds(&q).await?;
    let table = s.table.load();
    let stored = state.routes.get(&name).ok_or_else(|| with_index_err(not_found(), state.index))?;
    Ok(with_index(
        Json(s.status_of(&stored.spec, Some(stored.revision), &table, &binds)).into_response(),
        state.index,
    ))
}

/// `PUT /v1/routes/{name}?cas=N`.
pub async fn put(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Params(q): Params<WriteParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let replica = s.cluster()?;
    let route: RouteSpec = parse_body(&body)?;
    let mut errors: Vec<FieldError> = Vec::new();
    route.validate("route", &mut errors);
    if errors.is_empty() {
        errors.extend(s.listen_problem(&route, &replica.state()));
    }
    check_body("route", &route.name, &name, errors)?;
    let cmd = Command::PutRoute { route, cas: q.cas };
    commit(&s, replica, &headers, cmd).await
}

/// `DELETE /v1/routes/{name}?cas=N`.
pub async fn delete(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Params(q): Params<WriteParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let replica = s.cluster()?;
    commit(&s, replica, &headers, Command::DeleteRoute { name, cas: q.cas }).await
}

/// `PUT /v1/routes/{name}/backends/{id}/weight` with `{"weight": N}`.
pub async fn put_weight(
    State(s): State<AdminState>,
    Path((route, backend)): Path<(String, String)>,
    Params(q): Params<WriteParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let replica = s.cluster()?;
    let ferry_client::api::WeightRequest { weight } = parse_body(&body)?;
    if weight > ferry_client::route::MAX_WEIGHT {
        return Err(ApiError::field(
            "weight",
            format!("must be between 0 and {}, got {weight}", ferry_client::route::MAX_WEIGHT),
        ));
    }
    commit(&s, replica, &headers, Command::SetBackendWeight { route, backend, weight, cas: q.cas }).await
}

/// Proposes `cmd` (with the client's request id) and maps the answer.
pub async fn commit(
    s: &AdminState,
    replica: &crate::control::replica::Replica,
    headers: &HeaderMap,
    cmd: Command,
) -> Result<Response, ApiError> {
    let span = tracing::info_span!(
        "raft_write",
        command = cmd_name(&cmd),
        target = cmd_target(&cmd),
        index = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    // Without the client's id the write still gets one: the replica may
    // send it twice (the leader stepped down after appending it, and the
    // next leader committed it), and the id makes the second attempt return
    // the first one's answer instead of applying again or failing its CAS.
    let id = request_id(headers)?.unwrap_or_else(|| fastrand::u128(1..));
    let req = Request::with_id(id, cmd);
    // Sent back on every answer: after a 503 the client can retry with it.
    let echo = |mut r: Response| {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{id:032x}")) {
            r.headers_mut().insert(super::request::REQUEST_ID_HEADER, v);
        }
        r
    };
    let started = std::time::Instant::now();
    let answer = replica.write(req, s.deadline()).instrument(span.clone()).await;
    match &answer {
        Ok(ferry_raft_store::Response::Applied { index, .. }) => {
            span.record("index", index);
            span.record("outcome", "applied");
        }
        Ok(_) => {
            span.record("outcome", "rejected");
        }
        Err(e) => {
            span.record("outcome", tracing::field::display(e));
        }
    }
    s.metrics.raft_write_seconds.observe(started.elapsed().as_secs_f64());
    let result = match answer {
        Err(e) => Err(ApiError::from(e)),
        Ok(ferry_raft_store::Response::Applied { index, revision }) => Ok(written(index, revision)),
        Ok(ferry_raft_store::Response::Rejected { error }) => {
            Err(with_index_err(error.into(), replica.state().index))
        }
        Ok(ferry_raft_store::Response::Internal { .. } | ferry_raft_store::Response::Batch { .. }) => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "unexpected answer to a write"))
        }
    };
    Ok(echo(result.unwrap_or_else(IntoResponse::into_response)))
}

fn cmd_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::PutRoute { .. } => "put_route",
        Command::DeleteRoute { .. } => "delete_route",
        Command::SetBackendWeight { .. } => "set_backend_weight",
        Command::PutChaosPolicy { .. } => "put_chaos_policy",
        Command::DeleteChaosPolicy { .. } => "delete_chaos_policy",
        Command::SeedRoutes { .. } => "seed_routes",
        Command::Batch { .. } => "batch",
        Command::RestoreSnapshot { .. } => "restore_snapshot",
    }
}

fn cmd_target(cmd: &Command) -> String {
    match cmd.target() {
        ferry_raft_store::Target::Route(n) | ferry_raft_store::Target::Chaos(n) => n.to_string(),
    }
}

fn with_index_err(mut e: ApiError, index: u64) -> ApiError {
    e.index = Some(index);
    e
}

impl AdminState {
    /// A route's config (and revision) with this node's live view of it,
    /// and which nodes could not bind it (`binds`).
    fn status_of(
        &self,
        spec: &RouteSpec,
        revision: Option<u64>,
        table: &RoutingTable,
        binds: &RouteBinds,
    ) -> RouteStatus {
        let now = self.clock.now_ms();
        let bound = self.bound.load();
        let live = table.get(&spec.name).filter(|r| *r.spec == *spec);
        let backends = spec
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let state = live.and_then(|r| r.backends.get(i));
                let target = live.and_then(|r| r.targets.get(i)).copied();
                let local = target.is_none_or(|t| t == Target::Local);
                let resolved = live.and_then(|r| r.resolved.get(i)).filter(|_| local);
                let reachable = match target {
                    Some(Target::Unreachable) => false,
                    // A backend of this node needs an address.
                    Some(Target::Local) => resolved.is_some_and(|r| !r.addrs.is_empty()),
                    _ => true,
                };
                BackendStatus {
                    id: b.id.clone(),
                    addr: b.addr.clone(),
                    weight: b.weight,
                    healthy: reachable && state.is_some_and(|st| st.healthy(now)),
                    check: match (spec.health_check.is_some(), state.map(|st| st.check_up())) {
                        (false, _) => "disabled",
                        // Another node owns it and runs its check.
                        (true, _) if !local => "remote",
                        (true, Some(true)) => "up",
                        (true, Some(false)) => "down",
                        (true, None) => "pending",
                    }
                    .to_string(),
                    ejected_for_ms: state.and_then(|st| st.ejected_for(now)),
                    active_connections: state.map_or(0, |st| st.active()),
                    resolved: resolved.map(|r| r.addrs.iter().map(ToString::to_string).collect()),
                    resolve_error: resolved.and_then(|r| r.error.as_deref().map(str::to_string)),
                }
            })
            .collect();
        RouteStatus {
            config: spec.clone(),
            revision,
            enabled: spec.enabled,
            listening: bound.get(&spec.name).map(ToString::to_string),
            bind_failures: binds.failures(&spec.name),
            bind_unknown: binds.unknown.clone(),
            active_connections: live.map_or(0, |r| r.state.active()),
            panic_mode: live.is_some_and(|r| r.panic_mode),
            backends,
            chaos: table.get(&spec.name).map(|r| r.chaos.names()).unwrap_or_default(),
        }
    }
}
