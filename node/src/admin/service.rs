//! What each request on an admin connection goes through before and after
//! the router: its whole body is read within `[admin] body_timeout_ms` and
//! the body limit (so handlers never wait on a slow client), and every
//! answer leaves with a known length and `X-Ferry-Index`, which
//! [`super::wire_errors`] relies on to tell the router's answers from
//! hyper's own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tower_service::Service;

use super::ApiError;
use super::request::{INDEX_HEADER, MAX_BODY_BYTES, with_index};
use super::server::Shared;
use super::wire_errors::{Exchange, error_response};

/// Serves one request: reads its body, then runs the router.
pub(super) async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    exchange: Arc<Exchange>,
    peer: SocketAddr,
) -> Result<Response, Infallible> {
    exchange.request(req.method() == Method::HEAD);
    let (parts, body) = req.into_parts();
    // A snapshot to restore is the one body that may be larger.
    let limit = if parts.uri.path() == "/v1/snapshot/restore" {
        ferry_client::snapshot::MAX_SNAPSHOT_BYTES
    } else {
        MAX_BODY_BYTES
    };
    let body = match read_body(body, &parts.headers, &shared, peer, limit).await {
        Ok(body) => body,
        Err(answer) => return Ok(finish(answer, &shared)),
    };
    let mut router = shared.router.clone();
    // A router is always ready; asked anyway, as the Service contract wants.
    let call = async {
        std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut router, cx)).await?;
        router.call(Request::from_parts(parts, Body::from(body))).await
    };
    let answer = match call.await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    Ok(finish(sized(answer).await, &shared))
}

/// The whole body, or the answer to send instead: 413 over the limit, 408
/// when it does not arrive within the body timeout (the connection is
/// then closed), 400 when the client broke it off.
async fn read_body(
    body: Incoming,
    headers: &axum::http::HeaderMap,
    shared: &Shared,
    peer: SocketAddr,
    limit: usize,
) -> Result<axum::body::Bytes, Response> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is limited to {limit} bytes"),
        )
        .into_response()
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        // Refused before a byte of it is read.
        return Err(too_large());
    }
    let read = Limited::new(body, limit).collect();
    match tokio::time::timeout(shared.limits.body_timeout, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => {
            Err(closing(ApiError::field("body", format!("could not be read: {e}")).into_response()))
        }
        Err(_) => {
            shared.rejected("body_timeout", peer);
            let e = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms ([admin] body_timeout_ms)",
                    shared.limits.body_timeout.as_millis()
                ),
            );
            Err(closing(e.into_response()))
        }
    }
}

/// Asks hyper to close the connection after this answer.
fn closing(mut r: Response) -> Response {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The answer with its body in one piece, so hyper sends a
/// `Content-Length` (every body of this API is small and whole anyway).
async fn sized(r: Response) -> Response {
    use axum::body::HttpBody;
    if r.body().size_hint().exact().is_some() {
        return r;
    }
    let (parts, body) = r.into_parts();
    match body.collect().await {
        Ok(b) => Response::from_parts(parts, Body::from(b.to_bytes())),
        Err(e) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("answer body failed: {e}"))
                .into_response()
        }
    }
}

/// Puts `X-Ferry-Index` on an answer made outside the router, and counts
/// it as the router counts its own.
fn finish(r: Response, shared: &Shared) -> Response {
    if r.headers().contains_key(INDEX_HEADER) {
        return r;
    }
    shared.state.metrics.admin_requests_total.with_label_values(&["unmatched", r.status().as_str()]).inc();
    with_index(r, shared.state.index())
}

/// The bytes that replace hyper's own answer to a request head it could
/// not parse (see [`super::wire_errors`]).
pub(super) fn parse_error_answer(shared: &Shared, status: u16) -> Vec<u8> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let (code, field, message) = match status {
        StatusCode::URI_TOO_LONG => ("uri_too_long", "uri", "the request target is too long".to_string()),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("headers_too_large", "headers", "too many request headers, or too large".to_string())
        }
        s => ("bad_request", "request", format!("not a valid HTTP/1.1 request ({s})")),
    };
    shared.state.metrics.admin_requests_total.with_label_values(&["unmatched", status.as_str()]).inc();
    let mut body = ApiError::new(status, code, message.clone()).body;
    body.error.fields = vec![ferry_client::FieldError::new(field, message)];
    let json = serde_json::to_vec(&body).unwrap_or_default();
    error_response(status, &json, shared.state.index())
}
