//! The Toxiproxy endpoints. Each reads the replicated state through the
//! read barrier (as a linearizable `/v1` read) and writes with
//! compare-and-set on the revisions it read: a write that loses a race is
//! read and tried again ([`ATTEMPTS`]), never applied over a change it did
//! not see. A change of several objects (a proxy and its toxics, `/reset`,
//! `/populate`) is one Raft entry ([`Command::Batch`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_client::RouteSpec;
use ferry_raft_store::{ClusterState, Command, Request, StateError, StoredRoute};
use serde_json::{Value, json};

use super::mapping::{
    BodyError, Lenient, ProxyInput, ToxicView, is_proxy, listen_port, policy_name, proxy_field, proxy_json,
    route_of, route_port, toxic_of, toxics_of,
};
use super::{ToxiError, ToxiState, free_port};
use crate::admin::ApiError;
use crate::admin::request::ReadParams;

/// Reads and writes of one request when its compare-and-set keeps losing.
const ATTEMPTS: usize = 5;

/// The outcome of a write: applied, or the first rejection.
type Outcome = Result<(), StateError>;

impl ToxiState {
    /// The state through the read barrier.
    async fn read(&self) -> Result<Arc<ClusterState>, ToxiError> {
        Ok(self.admin.read_state(&ReadParams::default()).await?)
    }

    /// Proposes `cmds` as one entry (a batch when there are several), each
    /// with its own request id, and returns the first rejection.
    async fn write(&self, cmds: Vec<Command>) -> Result<Outcome, ToxiError> {
        let replica = self.admin.cluster()?;
        let mut requests: Vec<Request> =
            cmds.into_iter().map(|c| Request::with_id(fastrand::u128(1..), c)).collect();
        let req = match requests.len() {
            0 => return Ok(Ok(())),
            1 => requests.remove(0),
            _ => Request::with_id(fastrand::u128(1..), Command::Batch { requests }),
        };
        let started = std::time::Instant::now();
        let answer = replica.write(req, self.admin.deadline()).await;
        self.admin.metrics.raft_write_seconds.observe(started.elapsed().as_secs_f64());
        Ok(match answer.map_err(ApiError::from)? {
            ferry_raft_store::Response::Batch { responses } => responses
                .into_iter()
                .map(ferry_raft_store::Response::into_result)
                .find_map(Result::err)
                .map_or(Ok(()), Err),
            single => single.into_result().map(|_| ()),
        })
    }

    /// Proxy `name` (404 unless it is a route that is a proxy).
    fn proxy<'a>(&self, state: &'a ClusterState, name: &str) -> Result<&'a StoredRoute, ToxiError> {
        state.routes.get(name).filter(|r| is_proxy(&r.spec)).ok_or_else(|| ToxiError::proxy_not_found(name))
    }

    /// A proxy's JSON with its toxics.
    fn proxy_json(&self, state: &ClusterState, route: &RouteSpec) -> Value {
        let toxics =
            toxics_of(policies(state), &route.name).into_values().map(|(t, _, _)| t.json()).collect();
        proxy_json(route, self.bind_ip, toxics)
    }

    /// 400 when `route` is not a valid new route here (its fields named
    /// as the proxy's: `listen`, `upstream`).
    fn check_route(&self, route: &RouteSpec, state: &ClusterState) -> Result<(), ToxiError> {
        let mut errors = Vec::new();
        route.validate("route", &mut errors);
        if errors.is_empty() {
            errors.extend(self.admin.listen_problem(route, state));
        }
        match errors.first() {
            None => Ok(()),
            Some(e) => Err(ToxiError::bad_request(&BodyError {
                field: proxy_field(&e.path),
                message: e.message.clone(),
            })),
        }
    }

    /// A port for `route` free here and used by no other route, nor by
    /// `also` (ports picked earlier in the same request).
    fn pick_port(&self, route: &RouteSpec, state: &ClusterState, also: &[u16]) -> Result<u16, ToxiError> {
        free_port(self.bind_ip, |port| {
            let mut probe = route.clone();
            probe.listen = format!(":{port}");
            also.contains(&port) || self.admin.listen_problem(&probe, state).is_some()
        })
    }
}

/// Every policy with its name and revision.
fn policies(state: &ClusterState) -> impl Iterator<Item = (&String, &ferry_client::chaos::ChaosPolicy, u64)> {
    state.chaos.iter().map(|(n, p)| (n, &p.policy, p.revision))
}

/// Deletes of every toxic of proxy `proxy`, at the revisions in `state`.
fn delete_toxics(state: &ClusterState, proxy: &str) -> Vec<Command> {
    toxics_of(policies(state), proxy)
        .into_values()
        .map(|(_, name, revision)| Command::DeleteChaosPolicy { name, cas: Some(revision) })
        .collect()
}

/// A rejected write as Toxiproxy would answer it; `conflict` is the 409's
/// message.
fn rejected(e: StateError, conflict: &str) -> ToxiError {
    match e {
        StateError::CasMismatch { .. } | StateError::RequestIdReused { .. } => {
            ToxiError::new(StatusCode::CONFLICT, conflict)
        }
        StateError::NotFound { what } => ToxiError::new(StatusCode::NOT_FOUND, format!("{what} not found")),
        StateError::Invalid { errors } => match errors.first() {
            Some(f) => ToxiError::bad_request(&BodyError {
                field: proxy_field(f.path.strip_prefix("policy.").unwrap_or(&f.path)),
                message: f.message.clone(),
            }),
            None => ToxiError::new(StatusCode::BAD_REQUEST, "bad request body"),
        },
    }
}

fn lost_races() -> ToxiError {
    ToxiError::new(
        StatusCode::CONFLICT,
        format!("the config kept changing under this request ({ATTEMPTS} attempts); nothing was applied"),
    )
}

/// A JSON body read leniently (see `mapping`).
fn body(bytes: &Bytes) -> Result<Value, ToxiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ToxiError::bad_request(&BodyError { field: "body".into(), message: e.to_string() }))
}

fn object(bytes: &Bytes) -> Result<Lenient, ToxiError> {
    Lenient::object(body(bytes)?, "body").map_err(|e| ToxiError::bad_request(&e))
}

fn bad(e: BodyError) -> ToxiError {
    ToxiError::bad_request(&e)
}

// === /version, /reset, /populate ===

/// `GET /version`.
pub async fn version() -> Json<Value> {
    Json(json!({"version": format!("ferry-{}", crate::version::version())}))
}

/// `POST /reset`: every proxy enabled, every toxic removed, in one entry.
pub async fn reset(State(s): State<ToxiState>) -> Result<StatusCode, ToxiError> {
    for _ in 0..ATTEMPTS {
        let state = s.read().await?;
        let mut cmds = Vec::new();
        for stored in state.routes.values().filter(|r| is_proxy(&r.spec)) {
            if !stored.spec.enabled {
                let route = RouteSpec { enabled: true, ..stored.spec.clone() };
                cmds.push(Command::PutRoute { route, cas: Some(stored.revision) });
            }
            cmds.extend(delete_toxics(&state, &stored.spec.name));
        }
        match s.write(cmds).await? {
            Ok(()) => return Ok(StatusCode::NO_CONTENT),
            Err(StateError::CasMismatch { .. } | StateError::NotFound { .. }) => continue,
            Err(e) => return Err(rejected(e, "conflict")),
        }
    }
    Err(lost_races())
}

/// `POST /populate` with an array of proxies: each created, or replaced
/// when its upstream or listen port differs (port 0 keeps the current
/// one), in one entry. 201 `{"proxies": [...]}`.
pub async fn populate(State(s): State<ToxiState>, bytes: Bytes) -> Result<Response, ToxiError> {
    let Value::Array(items) = body(&bytes)? else {
        return Err(bad(BodyError { field: "body".into(), message: "expected an array of proxies".into() }));
    };
    let mut inputs: Vec<(String, String, u16, Option<bool>)> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |e: BodyError| bad(BodyError { field: format!("[{i}].{}", e.field), message: e.message });
        let input = ProxyInput::read(Lenient::object(item, "").map_err(at)?).map_err(at)?;
        let (name, upstream) = input.required().map_err(at)?;
        let port = listen_port(input.listen.as_deref()).map_err(at)?;
        if inputs.iter().any(|(n, ..)| *n == name) {
            return Err(at(BodyError { field: "name".into(), message: format!("duplicate proxy {name:?}") }));
        }
        inputs.push((name, upstream, port, input.enabled));
    }
    'attempt: for _ in 0..ATTEMPTS {
        let state = s.read().await?;
        let (mut cmds, mut routes, mut picked) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (name, upstream, port, enabled)) in inputs.iter().enumerate() {
            let at = |e: ToxiError| ToxiError { message: format!("proxy [{i}]: {}", e.message), ..e };
            let current = state.routes.get(name);
            if current.is_some_and(|r| !is_proxy(&r.spec)) {
                return Err(at(not_a_proxy(name)));
            }
            let current = current.filter(|r| is_proxy(&r.spec));
            let same = current.is_some_and(|r| {
                r.spec.backends[0].addr == *upstream && (*port == 0 || route_port(&r.spec) == Some(*port))
            });
            if let (true, Some(r)) = (same, current) {
                routes.push(r.spec.clone());
                continue;
            }
            let enabled = enabled.unwrap_or(true);
            let mut route = route_of(None, name, *port, upstream, enabled).map_err(internal)?;
            if *port == 0 {
                let port = s.pick_port(&route, &state, &picked).map_err(at)?;
                route.listen = format!(":{port}");
            }
            if let Some(p) = route_port(&route).filter(|p| routes.iter().any(|r| route_port(r) == Some(*p))) {
                return Err(at(bad(BodyError {
                    field: "listen".into(),
                    message: format!("port {p} is used twice"),
                })));
            }
            picked.extend(route_port(&route));
            s.check_route(&route, &state).map_err(at)?;
            if let Some(r) = current {
                cmds.extend(delete_toxics(&state, name));
                cmds.push(Command::PutRoute { route: route.clone(), cas: Some(r.revision) });
            } else {
                cmds.push(Command::PutRoute { route: route.clone(), cas: Some(0) });
            }
            routes.push(route);
        }
        match s.write(cmds).await? {
            Ok(()) => {
                let state = s.read().await?;
                let proxies: Vec<Value> = routes.iter().map(|r| s.proxy_json(&state, r)).collect();
                return Ok((StatusCode::CREATED, Json(json!({"proxies": proxies}))).into_response());
            }
            Err(StateError::CasMismatch { .. }) => continue 'attempt,
            Err(e) => return Err(rejected(e, "proxy already exists")),
        }
    }
    Err(lost_races())
}

fn not_a_proxy(name: &str) -> ToxiError {
    ToxiError::new(
        StatusCode::CONFLICT,
        format!("proxy already exists: {name:?} is a ferry route that is not a proxy (see /v1/routes)"),
    )
}

fn internal(e: impl std::fmt::Display) -> ToxiError {
    ToxiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

// === proxies ===

/// `GET /proxies`: every proxy by name.
pub async fn list_proxies(State(s): State<ToxiState>) -> Result<Json<Value>, ToxiError> {
    let state = s.read().await?;
    let all: serde_json::Map<String, Value> = state
        .routes
        .values()
        .filter(|r| is_proxy(&r.spec))
        .map(|r| (r.spec.name.clone(), s.proxy_json(&state, &r.spec)))
        .collect();
    Ok(Json(Value::Object(all)))
}

/// `POST /proxies`: 201 with the proxy; `listen` port 0 (or none) picks a
/// port free on this node, the same on every node.
pub async fn create_proxy(State(s): State<ToxiState>, bytes: Bytes) -> Result<Response, ToxiError> {
    let input = ProxyInput::read(object(&bytes)?).map_err(bad)?;
    let (name, upstream) = input.required().map_err(bad)?;
    let port = listen_port(input.listen.as_deref()).map_err(bad)?;
    let state = s.read().await?;
    match state.routes.get(&name) {
        Some(r) if is_proxy(&r.spec) => {
            return Err(ToxiError::new(StatusCode::CONFLICT, "proxy already exists"));
        }
        Some(_) => return Err(not_a_proxy(&name)),
        None => {}
    }
    let mut route =
        route_of(None, &name, port, &upstream, input.enabled.unwrap_or(true)).map_err(internal)?;
    if port == 0 {
        route.listen = format!(":{}", s.pick_port(&route, &state, &[])?);
    }
    s.check_route(&route, &state)?;
    s.write(vec![Command::PutRoute { route: route.clone(), cas: Some(0) }])
        .await?
        .map_err(|e| rejected(e, "proxy already exists"))?;
    Ok((StatusCode::CREATED, Json(proxy_json(&route, s.bind_ip, Vec::new()))).into_response())
}

/// `GET /proxies/{proxy}`.
pub async fn get_proxy(
    State(s): State<ToxiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ToxiError> {
    let state = s.read().await?;
    let route = s.proxy(&state, &name)?;
    Ok(Json(s.proxy_json(&state, &route.spec)))
}

/// `POST|PATCH /proxies/{proxy}`: the fields given change, the others
/// stay. `enabled: false` stops every node's listener and closes the
/// proxy's connections; a new listen port or upstream takes effect at once
/// for new connections.
pub async fn update_proxy(
    State(s): State<ToxiState>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ToxiError> {
    let input = ProxyInput::read(object(&bytes)?).map_err(bad)?;
    for _ in 0..ATTEMPTS {
        let state = s.read().await?;
        let current = s.proxy(&state, &name)?;
        let spec = &current.spec;
        let upstream = input.upstream.clone().unwrap_or_else(|| spec.backends[0].addr.clone());
        let enabled = input.enabled.unwrap_or(spec.enabled);
        let port = match input.listen.as_deref() {
            None => route_port(spec).unwrap_or(0),
            Some(l) => listen_port(Some(l)).map_err(bad)?,
        };
        let mut route = route_of(Some(spec), &name, port, &upstream, enabled).map_err(internal)?;
        if port == 0 {
            route.listen = format!(":{}", s.pick_port(&route, &state, &[])?);
        }
        if route == *spec {
            return Ok(Json(s.proxy_json(&state, spec)));
        }
        s.check_route(&route, &state)?;
        match s.write(vec![Command::PutRoute { route: route.clone(), cas: Some(current.revision) }]).await? {
            Ok(()) => return Ok(Json(s.proxy_json(&state, &route))),
            Err(StateError::CasMismatch { .. }) => continue,
            Err(e) => return Err(rejected(e, "conflict")),
        }
    }
    Err(lost_races())
}

/// `DELETE /proxies/{proxy}`: the route and its toxics, in one entry. 204.
pub async fn delete_proxy(
    State(s): State<ToxiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ToxiError> {
    for _ in 0..ATTEMPTS {
        let state = s.read().await?;
        let current = s.proxy(&state, &name)?;
        let mut cmds = delete_toxics(&state, &name);
        cmds.push(Command::DeleteRoute { name: name.clone(), cas: Some(current.revision) });
        match s.write(cmds).await? {
            Ok(()) => return Ok(StatusCode::NO_CONTENT),
            Err(StateError::CasMismatch { .. }) => continue,
            Err(e) => return Err(rejected(e, "conflict")),
        }
    }
    Err(lost_races())
}

// === toxics ===

/// The toxic `toxic` of proxy `proxy` in `state`, with its policy revision.
fn find_toxic(state: &ClusterState, proxy: &str, toxic: &str) -> Result<(ToxicView, u64), ToxiError> {
    state
        .chaos
        .get(&policy_name(proxy, toxic))
        .and_then(|p| toxic_of(&p.policy, proxy).filter(|t| t.name == toxic).map(|t| (t, p.revision)))
        .ok_or_else(|| ToxiError::toxic_not_found(toxic))
}

/// `GET /proxies/{proxy}/toxics`: an array.
pub async fn list_toxics(
    State(s): State<ToxiState>,
    Path(proxy): Path<String>,
) -> Result<Json<Value>, ToxiError> {
    let state = s.read().await?;
    s.proxy(&state, &proxy)?;
    let toxics: Vec<Value> =
        toxics_of(policies(&state), &proxy).into_values().map(|(t, _, _)| t.json()).collect();
    Ok(Json(Value::Array(toxics)))
}

/// `POST /proxies/{proxy}/toxics`: 200 with the toxic (Toxiproxy's code).
pub async fn create_toxic(
    State(s): State<ToxiState>,
    Path(proxy): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ToxiError> {
    let body = object(&bytes)?;
    let state = s.read().await?;
    s.proxy(&state, &proxy)?;
    let toxic = ToxicView::create(&body).map_err(bad)?;
    let policy = toxic.policy(&proxy).map_err(|e| bad(e[0].clone()))?;
    if state.chaos.contains_key(&policy.name) {
        return Err(ToxiError::new(StatusCode::CONFLICT, "toxic already exists"));
    }
    s.write(vec![Command::PutChaosPolicy { policy, cas: Some(0) }])
        .await?
        .map_err(|e| rejected(e, "toxic already exists"))?;
    Ok(Json(toxic.json()))
}

/// `GET /proxies/{proxy}/toxics/{toxic}`.
pub async fn get_toxic(
    State(s): State<ToxiState>,
    Path((proxy, toxic)): Path<(String, String)>,
) -> Result<Json<Value>, ToxiError> {
    let state = s.read().await?;
    s.proxy(&state, &proxy)?;
    Ok(Json(find_toxic(&state, &proxy, &toxic)?.0.json()))
}

/// `POST|PATCH /proxies/{proxy}/toxics/{toxic}`: `attributes` merged,
/// `toxicity` if given. 200 with the toxic.
pub async fn update_toxic(
    State(s): State<ToxiState>,
    Path((proxy, toxic)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ToxiError> {
    let body = object(&bytes)?;
    for _ in 0..ATTEMPTS {
        let state = s.read().await?;
        s.proxy(&state, &proxy)?;
        let (current, revision) = find_toxic(&state, &proxy, &toxic)?;
        let updated = current.update(&body).map_err(bad)?;
        let policy = updated.policy(&proxy).map_err(|e| bad(e[0].clone()))?;
        match s.write(vec![Command::PutChaosPolicy { policy, cas: Some(revision) }]).await? {
            Ok(()) => return Ok(Json(updated.json())),
            Err(StateError::CasMismatch { .. }) => continue,
            Err(e) => return Err(rejected(e, "conflict")),
        }
    }
    Err(lost_races())
}

/// `DELETE /proxies/{proxy}/toxics/{toxic}`: 204.
pub async fn delete_toxic(
    State(s): State<ToxiState>,
    Path((proxy, toxic)): Path<(String, String)>,
) -> Result<StatusCode, ToxiError> {
    for _ in 0..ATTEMPTS {
        let state = s.read().await?;
        s.proxy(&state, &proxy)?;
        let (_, revision) = find_toxic(&state, &proxy, &toxic)?;
        let name = policy_name(&proxy, &toxic);
        match s.write(vec![Command::DeleteChaosPolicy { name, cas: Some(revision) }]).await? {
            Ok(()) => return Ok(StatusCode::NO_CONTENT),
            Err(StateError::CasMismatch { .. }) => continue,
            Err(e) => return Err(rejected(e, "conflict")),
        }
    }
    Err(lost_races())
}
