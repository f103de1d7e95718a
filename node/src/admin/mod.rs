//! The admin HTTP API (axum router, ferry's own accept loop over hyper):
//! status, routes with live health, Prometheus metrics, liveness and
//! readiness. Every error, and every 4xx whatever produced it, is JSON:
//! `{"error":{"code":"not_found","message":"…","fields":[…]}}`, with
//! `X-Ferry-Index`.
//!
//! Handlers only read published snapshots (the routing table, bound
//! addresses, atomics) or go through the replica; they never block the
//! data plane.
//!
//! - [`server`]: the accept loop: connection cap, header and body
//!   timeouts, graceful shutdown.
//! - [`service`]: each request's body read within the body timeout.
//! - [`wire_errors`]: hyper's own error answers made JSON.
//! - [`routes`]: `/v1/routes`, reads and (cluster mode) writes.
//! - [`chaos`]: `/v1/chaos` policies (cluster mode).
//! - [`snapshot`]: `/v1/snapshot`, backups and restores of the whole
//!   config (cluster mode).
//! - [`explain`]: a route's choice for a client, and a route change
//!   measured before it is written (`dry-run`).
//! - [`members`]: `/v1/members`, force-leave, `/v1/leave` (cluster mode).
//! - [`params`]: query and path parameters, one rule for every endpoint.
//! - [`request`]: auth, bodies, consistency, blocking queries.
//! - [`toxiproxy`]: the Toxiproxy-compatible API (`[chaos] toxiproxy_addr`),
//!   on its own address, mapped onto routes and chaos policies.
//! - [`binds`]: the listen check before proposing a route, and which nodes
//!   could not bind which route.

pub mod binds;
pub mod chaos;
pub mod explain;
pub mod members;
pub mod params;
pub mod request;
pub mod routes;
pub mod server;
mod service;
pub mod snapshot;
pub mod toxiproxy;
pub mod wire_errors;

pub use server::Limits;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use ferry_client::api::{ErrorBody, Status};
use ferry_client::route::ReservedAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

use crate::control::member::MemberHandle;
use crate::control::replica::Replica;
use crate::dataplane::clock::Clock;
use crate::dataplane::listen_failures::ListenFailures;
use crate::dataplane::table::RoutingTable;
use crate::telemetry::metrics::Metrics;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub node_name: String,
    /// `[cluster] cluster_id` (empty on a standalone node).
    pub cluster_id: String,
    pub started: Instant,
    pub table: Arc<ArcSwap<RoutingTable>>,
    pub bound: Arc<ArcSwap<HashMap<String, SocketAddr>>>,
    /// Routes this node could not bind, and why.
    pub bind_failures: Arc<ArcSwap<ListenFailures>>,
    /// The addresses this node holds for itself (admin, cluster, gossip):
    /// no route may listen on them.
    pub own_addrs: Arc<[ReservedAddr]>,
    pub metrics: Metrics,
    pub draining: Arc<AtomicBool>,
    pub clock: Clock,
    /// Cluster mode: the replica writes and reads go through.
    pub replica: Option<Arc<Replica>>,
    /// Cluster mode: membership (gossip and Raft).
    pub member: Option<MemberHandle>,
    /// Cancelled by `POST /v1/leave`; the node then leaves and stops.
    pub leave: CancellationToken,
    /// Bearer token writes must carry, if configured.
    pub token: Option<String>,
    /// Longest a request may take.
    pub request_timeout: std::time::Duration,
    /// Fault switch `FERRYD_UNSAFE_FAULT=stale-reads`: linearizable reads
    /// skip the read barrier (for jepsen-lite to prove it can fail).
    pub unsafe_stale_reads: bool,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    /// `X-Ferry-Index` to send, when known.
    index: Option<u64>,
}

impl ApiError {
    /// A `status` error with `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody::new(code, message), index: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut r = (self.status, Json(self.body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, 1.into());
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1: a 401 names the scheme it wants.
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        match self.index {
            Some(i) => request::with_index(r, i),
            None => r,
        }
    }
}

/// The router, without a listener (tests call it directly).
///
/// Endpoints with query parameters take them through [`params::Params`];
/// those without any are wrapped in [`params::no_params`], so an unknown
/// parameter is a 400 on every endpoint.
pub fn router(state: AdminState) -> Router {
    let none = || middleware::from_fn(params::no_params);
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/routes", get(routes::list))
        .route("/v1/routes/{name}", get(routes::get).put(routes::put).delete(routes::delete))
        .route("/v1/routes/{name}/backends/{id}/weight", put(routes::put_weight))
        .route("/v1/routes/{name}/explain", get(explain::explain))
        .route("/v1/routes/{name}/dry-run", post(explain::dry_run))
        .route("/v1/members", get(members::list).route_layer(none()))
        .route("/v1/members/{id}/remove", post(members::remove).route_layer(none()))
        .route("/v1/leave", post(members::leave).route_layer(none()))
        .route("/v1/snapshot", get(snapshot::get))
        .route(
            "/v1/snapshot/restore",
            post(snapshot::restore)
                .route_layer(DefaultBodyLimit::max(ferry_client::snapshot::MAX_SNAPSHOT_BYTES + 1)),
        )
        .route("/v1/join", post(members::join).route_layer(none()))
        .route("/v1/chaos", get(chaos::list))
        .route("/v1/chaos/{name}", get(chaos::get).put(chaos::put).delete(chaos::delete))
        .route("/metrics", get(metrics).route_layer(none()))
        .route("/health/live", get(live).route_layer(none()))
        .route("/health/ready", get(ready).route_layer(none()))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(request::MAX_BODY_BYTES + 1))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serves the admin API on `listener` until `stop` fires (see [`server`]).
pub async fn serve(listener: TcpListener, state: AdminState, limits: Limits, stop: CancellationToken) {
    server::serve(listener, state, limits, stop).await;
}

impl AdminState {
    /// The config index answers carry: the applied index in cluster mode,
    /// the routing-table generation on a standalone node.
    pub fn index(&self) -> u64 {
        self.replica.as_ref().map_or_else(|| self.table.load().generation, |r| r.state().index)
    }
}

/// Counts requests by matched path and status, inside a tracing span.
/// Also makes every error JSON and puts `X-Ferry-Index` on every answer.
async fn observe(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let span =
        tracing::info_span!("admin", method = %req.method(), path = %path, status = tracing::field::Empty);
    let mut response = next.run(req).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    // Rejections made by the framework (a body over the limit, ...) come as
    // plain text: every error of this API is JSON.
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json && (response.status().is_client_error() || response.status().is_server_error()) {
        let status = response.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            s if s.is_client_error() => "bad_request",
            _ => "internal",
        };
        let text = axum::body::to_bytes(std::mem::take(response.body_mut()), 4096).await.unwrap_or_default();
        let message = String::from_utf8_lossy(&text).trim().to_string();
        response = ApiError::new(status, code, message).into_response();
    }
    // Every answer tells the config index it reflects.
    if !response.headers().contains_key(request::INDEX_HEADER) {
        response = request::with_index(response, state.index());
    }
    state.metrics.admin_requests_total.with_label_values(&[path.as_str(), response.status().as_str()]).inc();
    response
}

/// Longest `GET /v1/status?min_index=` wait, and its default.
const STATUS_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
const STATUS_DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

impl AdminState {
    /// The config index this node's data plane runs: in cluster mode what
    /// the member feed last applied to the table and listeners, standalone
    /// the table generation.
    pub fn data_index(&self) -> u64 {
        match &self.member {
            Some(m) => *m.data_applied.borrow(),
            None => self.table.load().generation,
        }
    }

    /// Waits until [`Self::data_index`] reaches `min`, at most `wait`.
    async fn wait_data_index(&self, min: u64, wait: std::time::Duration) {
        match &self.member {
            Some(m) => {
                let mut rx = m.data_applied.clone();
                let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i >= min)).await;
            }
            None => {
                // A standalone table changes on reloads: poll.
                let deadline = tokio::time::Instant::now() + wait;
                while self.table.load().generation < min && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }
}

async fn status(
    State(s): State<AdminState>,
    params::Params(q): params::Params<params::StatusParams>,
) -> Result<Response, ApiError> {
    match (q.min_index, q.wait) {
        (Some(min), wait) => {
            s.wait_data_index(min, wait.unwrap_or(STATUS_DEFAULT_WAIT).min(STATUS_MAX_WAIT)).await
        }
        (None, Some(_)) => return Err(ApiError::field("wait", "goes with min_index")),
        (None, None) => {}
    }
    Ok(status_now(&s))
}

fn status_now(s: &AdminState) -> Response {
    let table = s.table.load();
    let index = s.replica.as_ref().map_or(table.generation, |r| r.state().index);
    let body = Json(Status {
        node: s.node_name.clone(),
        version: crate::version::version(),
        uptime_secs: s.started.elapsed().as_secs(),
        draining: s.draining.load(Relaxed),
        routes: table.len(),
        table_generation: table.generation,
        active_connections: table.routes().iter().map(|r| r.state.active()).sum(),
        index,
        raft: s.replica.as_ref().map(|r| r.status()),
        table_digest: table_digest(&table),
        commit: crate::version::COMMIT.to_string(),
        protocol: crate::version::PROTOCOL,
        features: crate::version::features_of(crate::version::PROTOCOL),
        cluster_version: s.member.as_ref().and_then(|m| m.versions.last()),
        data_index: s.data_index(),
    });
    request::with_index(body.into_response(), index)
}

/// FNV-1a 64 of the routes the table was built from (their JSON, by
/// name): equal on two nodes exactly when they route with the same config.
/// Health and load are not part of it.
pub fn table_digest(table: &RoutingTable) -> String {
    use std::hash::Hasher;
    let mut routes = table.routes();
    routes.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let mut h = fnv::FnvHasher::default();
    for r in routes {
        match serde_json::to_vec(&*r.spec) {
            Ok(bytes) => h.write(&bytes),
            Err(e) => warn!(route = %r.spec.name, error = %e, "cannot digest a route"),
        }
        h.write_u8(0);
    }
    format!("{:016x}", h.finish())
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let (body, content_type) = s.metrics.encode();
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn live() -> Json<ferry_client::api::Live> {
    Json(ferry_client::api::Live { status: "ok".into() })
}

/// `/health/ready`: 200 when the node is not draining and, in cluster mode,
/// has applied the cluster's config at least once (it applied a log entry,
/// from a leader or from its own data dir at start), its Raft is running,
/// and it has not had to refuse what a newer peer sent in the last
/// [`UNREADABLE_RECENT`]; 503 with the reason otherwise. Routes this node could not bind are listed in the 200 body
/// (and in `GET /v1/routes`), and do not make it unready: taking it out of
/// rotation would also stop the routes it does serve, and the route is
/// retried.
/// How long a refused frame from a newer peer keeps a node unready: a few
/// of the leader's retries.
const UNREADABLE_RECENT: std::time::Duration = std::time::Duration::from_secs(5);

async fn ready(State(s): State<AdminState>) -> Result<Json<ferry_client::api::Ready>, ApiError> {
    if s.draining.load(Relaxed) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", "the node is shutting down"));
    }
    if let Some(replica) = &s.replica
        && let Err(fatal) = replica.raft().metrics().borrow().running_state.clone()
    {
        let text = fatal.to_string();
        let newer = crate::version::newer_data_hint(&text);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "raft_stopped",
            format!("this node's Raft stopped and it applies no more config: {text}{newer}"),
        ));
    }
    if let Some(replica) = &s.replica
        && let Some(why) = replica.server().unreadable_within(UNREADABLE_RECENT)
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "incompatible",
            format!(
                "this node cannot read what a newer member sends ({why}), so it falls behind the \
                 cluster's config: upgrade it (README, Upgrading)"
            ),
        ));
    }
    if let Some(replica) = &s.replica
        && replica.raft().metrics().borrow().last_applied.is_none()
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_joined",
            "this node has not applied the cluster's config yet: no leader has replicated it here, \
             and its data dir holds none (is it joining, or are its seeds and peers unreachable?)",
        ));
    }
    let failures = s.own_bind_report().failures;
    let bind_failures = failures
        .into_iter()
        .map(|f| ferry_client::api::RouteBindFailure { route: f.route, addr: f.addr, error: f.error })
        .collect();
    Ok(Json(ferry_client::api::Ready { status: "ready".into(), bind_failures }))
}
