//! A Toxiproxy-compatible HTTP API (`[chaos] toxiproxy_addr`, cluster mode
//! only), so suites written against Toxiproxy's clients drive a ferry
//! cluster: a proxy is a replicated route listening on `:PORT` on every
//! node, a toxic a replicated chaos policy `<proxy>.<toxic>` scoped to it
//! ([`mapping`]). Served by every node; writes go through Raft like
//! `/v1/routes` and `/v1/chaos`, so a toxic added on one node acts on all.
//!
//! What Toxiproxy's clients rely on is kept: its paths, status codes (201
//! new proxy, 200 new toxic, 204 deletes, 404, 409), error bodies
//! `{"error": "...", "status": N}`, lenient bodies, `listen` port 0,
//! default toxic names, partial updates, `403` for browsers. Where ferry
//! differs, README ("Toxiproxy-compatible API") says.
//!
//! Writes need no token: bind it to an address only test clients reach.

mod handlers;
pub mod mapping;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::{AdminState, ApiError};
use mapping::BodyError;

/// What the handlers read: the admin API's state and this node's bind
/// address (where `:PORT` proxies listen here, and where a port is picked).
#[derive(Debug, Clone)]
pub struct ToxiState {
    pub admin: AdminState,
    pub bind_ip: IpAddr,
}

/// A Toxiproxy error answer: `{"error": "...", "status": N}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToxiError {
    status: StatusCode,
    message: String,
}

impl ToxiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad_request(e: &BodyError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}"))
    }

    fn proxy_not_found(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("proxy not found: {name:?}"))
    }

    fn toxic_not_found(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("toxic not found: {name:?}"))
    }
}

/// The admin API's errors (cluster answers: 503 no leader, ...) keep their
/// status and message.
impl From<ApiError> for ToxiError {
    fn from(e: ApiError) -> Self {
        let mut message = e.body.error.message;
        for f in &e.body.error.fields {
            message = format!("{message} ({}: {})", f.path, f.message);
        }
        Self::new(e.status, message)
    }
}

impl IntoResponse for ToxiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.message, "status": self.status.as_u16()});
        // Toxiproxy writes it with http.Error: plain text, JSON inside.
        let mut r = (self.status, body.to_string()).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    }
}

/// The router, without a listener.
pub fn router(state: ToxiState) -> Router {
    Router::new()
        .route("/version", get(handlers::version))
        .route("/reset", post(handlers::reset))
        .route("/populate", post(handlers::populate))
        .route("/proxies", get(handlers::list_proxies).post(handlers::create_proxy))
        .route(
            "/proxies/{proxy}",
            get(handlers::get_proxy)
                .post(handlers::update_proxy)
                .patch(handlers::update_proxy)
                .delete(handlers::delete_proxy),
        )
        .route("/proxies/{proxy}/toxics", get(handlers::list_toxics).post(handlers::create_toxic))
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(handlers::get_toxic)
                .post(handlers::update_toxic)
                .patch(handlers::update_toxic)
                .delete(handlers::delete_toxic),
        )
        .fallback(|| async { ToxiError::new(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            ToxiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(DefaultBodyLimit::max(super::request::MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Longest a request may run once the server is asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Serves the API on `listener` until `stop` fires; requests in flight
/// then get [`STOP_GRACE`] to finish.
pub async fn serve(listener: TcpListener, state: ToxiState, stop: CancellationToken) {
    let addr = listener.local_addr().ok();
    info!(addr = ?addr, "Toxiproxy-compatible API listening");
    let graceful = stop.clone();
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(graceful.cancelled_owned());
    let stopped = async {
        stop.cancelled().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        r = server.into_future() => {
            if let Err(e) = r {
                warn!(error = %e, "the Toxiproxy-compatible API stopped");
            }
        }
        () = stopped => warn!("the Toxiproxy-compatible API stopped with requests in flight"),
    }
}

/// Header Toxiproxy puts on every answer.
const REQUEST_ID_HEADER: &str = "x-toxiproxy-request-id";

/// Refuses browsers (403, as Toxiproxy: a page must not reconfigure a test
/// proxy), tags every answer with a request id, counts it in
/// `ferry_admin_requests_total` (path prefixed `toxiproxy:`) and logs
/// it in a span.
async fn observe(State(state): State<ToxiState>, req: Request, next: Next) -> Response {
    let path = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let browser =
        req.headers().get(header::USER_AGENT).is_some_and(|ua| ua.as_bytes().starts_with(b"Mozilla/"));
    let id = format!("{:016x}", fastrand::u64(..));
    let span = tracing::info_span!("toxiproxy", method = %req.method(), path = %path, request_id = %id);
    let mut response = if browser {
        ToxiError::new(StatusCode::FORBIDDEN, "User agent not allowed").into_response()
    } else {
        next.run(req).instrument(span).await
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let label = format!("toxiproxy:{path}");
    state
        .admin
        .metrics
        .admin_requests_total
        .with_label_values(&[label.as_str(), response.status().as_str()])
        .inc();
    response
}

/// Where a port 0 proxy listens: a port free on this node's bind address
/// right now and used by no route, the same on every node (it is written
/// into the route). Another node may hold it already: that node then
/// reports a bind failure for the route, as for any route.
fn free_port(bind_ip: IpAddr, taken: impl Fn(u16) -> bool) -> Result<u16, ToxiError> {
    for _ in 0..32 {
        let port = std::net::TcpListener::bind(SocketAddr::new(bind_ip, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| {
                ToxiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot pick a port on {bind_ip}: {e}"),
                )
            })?
            .port();
        if !taken(port) {
            return Ok(port);
        }
    }
    Err(ToxiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("no free port found on {bind_ip}")))
}
