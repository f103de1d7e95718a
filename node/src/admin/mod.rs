//! The admin HTTP API (axum): status, routes with live health, Prometheus
//! metrics, liveness and readiness. Every error is JSON:
//! `{"error":{"code":"not_found","message":"…"}}`.
//!
//! Handlers only read published snapshots (the routing table, bound
//! addresses, atomics); they never block the data plane.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use ferry_client::api::{BackendStatus, ErrorBody, RouteStatus, Status};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

use crate::dataplane::clock::Clock;
use crate::dataplane::table::{RouteEntry, RoutingTable};
use crate::telemetry::metrics::Metrics;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub node_name: String,
    pub started: Instant,
    pub table: Arc<ArcSwap<RoutingTable>>,
    pub bound: Arc<ArcSwap<HashMap<String, SocketAddr>>>,
    pub metrics: Metrics,
    pub draining: Arc<AtomicBool>,
    pub clock: Clock,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// A `status` error with `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody::new(code, message) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The router, without a listener (tests call it directly).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/routes", get(routes))
        .route("/v1/routes/{name}", get(route))
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serves the admin API on `listener` until `stop` fires.
pub async fn serve(listener: TcpListener, state: AdminState, stop: CancellationToken) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        warn!(error = %e, "admin server failed");
    }
}

/// Counts requests by matched path and status, inside a tracing span.
async fn observe(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let span =
        tracing::info_span!("admin", method = %req.method(), path = %path, status = tracing::field::Empty);
    let response = next.run(req).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    state.metrics.admin_requests_total.with_label_values(&[path.as_str(), response.status().as_str()]).inc();
    response
}

async fn status(State(s): State<AdminState>) -> Json<Status> {
    let table = s.table.load();
    Json(Status {
        node: s.node_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: s.started.elapsed().as_secs(),
        draining: s.draining.load(Relaxed),
        routes: table.len(),
        table_generation: table.generation,
        active_connections: table.routes().iter().map(|r| r.state.active()).sum(),
    })
}

async fn routes(State(s): State<AdminState>) -> Json<Vec<RouteStatus>> {
    let (table, bound) = (s.table.load(), s.bound.load());
    Json(table.routes().iter().map(|r| route_status(r, &bound, s.clock)).collect())
}

async fn route(State(s): State<AdminState>, Path(name): Path<String>) -> Result<Json<RouteStatus>, ApiError> {
    let (table, bound) = (s.table.load(), s.bound.load());
    let r = table.get(&name).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route named {name:?}"))
    })?;
    Ok(Json(route_status(r, &bound, s.clock)))
}

fn route_status(r: &RouteEntry, bound: &HashMap<String, SocketAddr>, clock: Clock) -> RouteStatus {
    let now = clock.now_ms();
    let check = r.spec.health_check.is_some();
    RouteStatus {
        config: (*r.spec).clone(),
        listening: bound.get(&r.spec.name).map(ToString::to_string),
        active_connections: r.state.active(),
        panic_mode: r.panic_mode,
        backends: r
            .backends
            .iter()
            .zip(&r.spec.backends)
            .map(|(b, spec)| BackendStatus {
                id: b.id.clone(),
                addr: b.addr.to_string(),
                weight: spec.weight,
                healthy: b.healthy(now),
                check: match (check, b.check_up()) {
                    (false, _) => "disabled",
                    (true, true) => "up",
                    (true, false) => "down",
                }
                .to_string(),
                ejected_for_ms: b.ejected_for(now),
                active_connections: b.active(),
            })
            .collect(),
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let (body, content_type) = s.metrics.encode();
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready when not draining and every route has its listener.
async fn ready(State(s): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    if s.draining.load(Relaxed) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", "the node is shutting down"));
    }
    let (table, bound) = (s.table.load(), s.bound.load());
    let missing: Vec<&str> =
        table.routes().iter().map(|r| r.spec.name.as_str()).filter(|n| !bound.contains_key(*n)).collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_listening",
            format!("routes without a listener: {}", missing.join(", ")),
        ));
    }
    Ok(Json(serde_json::json!({"status": "ready"})))
}
