//! What every admin request shares: the bearer token, bounded JSON bodies
//! parsed with field paths, the read barrier and blocking waits, and the
//! mapping of cluster answers to HTTP. Query and path parameters are in
//! [`super::params`] (re-exported here).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use ferry_client::FieldError;
use ferry_client::api::WriteResult;
use ferry_raft_store::{ClusterState, StateError};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

pub use super::params::{Params, ReadParams, WriteParams};
use super::{AdminState, ApiError};
use crate::control::replica::{Replica, ReplicaError};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest blocking query, and its default.
const MAX_WAIT: Duration = Duration::from_secs(600);
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Header carrying the config index on every response.
pub const INDEX_HEADER: &str = "x-ferry-index";
/// Header carrying a client's request id, for idempotent retries.
pub const REQUEST_ID_HEADER: &str = "x-ferry-request-id";

impl ApiError {
    /// A 400 listing every problem, each naming its field.
    pub fn bad_request(fields: Vec<FieldError>) -> Self {
        let message = fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message);
        e.body.error.fields = fields;
        e
    }

    /// A 400 naming every field of `fields`.
    pub fn fields(fields: Vec<FieldError>) -> Self {
        Self::bad_request(fields)
    }

    /// A 400 naming `path`.
    pub fn field(path: &str, message: impl Into<String>) -> Self {
        Self::bad_request(vec![FieldError::new(path, message)])
    }
}

/// The one place cluster failures become HTTP answers: every 503 code says
/// what happened (README, "Errors"), and every 503 carries `Retry-After`.
impl From<ReplicaError> for ApiError {
    fn from(e: ReplicaError) -> Self {
        let unavailable = |code| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string());
        match &e {
            ReplicaError::NoLeader(_) => unavailable("no_leader"),
            ReplicaError::LeaderChanged(_) => unavailable("leader_changed"),
            ReplicaError::NoQuorum(_) => unavailable("no_quorum"),
            ReplicaError::Timeout(_) => unavailable("timeout"),
            ReplicaError::DeadlineExceeded(_) => unavailable("deadline_exceeded"),
            ReplicaError::Unavailable(_) => unavailable("unavailable"),
            ReplicaError::Fatal(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
            ReplicaError::Refused(_) => ApiError::new(StatusCode::CONFLICT, "refused", e.to_string()),
            ReplicaError::FeatureNotEnabled(_) => {
                ApiError::new(StatusCode::CONFLICT, "feature_not_enabled", e.to_string())
            }
        }
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::CasMismatch { current } => {
                let mut err = ApiError::new(
                    StatusCode::CONFLICT,
                    "cas_mismatch",
                    format!("compare-and-set failed: the current revision is {current}"),
                );
                err.body.error.current = Some(current);
                err
            }
            StateError::NotFound { what } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
            }
            StateError::RequestIdReused { id } => ApiError::new(
                StatusCode::CONFLICT,
                "request_id_reused",
                format!(
                    "request id {id:032x} (X-Ferry-Request-Id) was already used for another request: \
                     a retry must repeat the method, path, query and body exactly; send a new id for a \
                     new request. Nothing was applied"
                ),
            ),
            // The state machine names fields under "route." or "policy.";
            // the API names them from the body's root, as for every 400.
            StateError::Invalid { errors } => ApiError::bad_request(
                errors
                    .into_iter()
                    .map(|e| {
                        let path = e.path.strip_prefix("route.").or_else(|| e.path.strip_prefix("policy."));
                        FieldError::new(path.unwrap_or(&e.path), e.message)
                    })
                    .collect(),
            ),
        }
    }
}

impl AdminState {
    /// The replica, or 409 on a standalone node.
    pub fn cluster(&self) -> Result<&Replica, ApiError> {
        self.replica.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "standalone",
                "this node runs standalone (no [cluster] section): its routes come from its config file",
            )
        })
    }

    /// 401 unless the request carries the configured bearer token.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.token else { return Ok(()) };
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| bearer_token(v.as_bytes())).unwrap_or(b"");
        if constant_time_eq(given, expected.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "writes need Authorization: Bearer <token>",
            ))
        }
    }

    /// The deadline of a request that starts now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    /// The state a read serves: after a blocking wait if `index` is given,
    /// then through the read barrier unless `consistency=stale`.
    pub async fn read_state(&self, params: &ReadParams) -> Result<std::sync::Arc<ClusterState>, ApiError> {
        let replica = self.cluster()?;
        let (stale, wait) = params.check()?;
        if let Some(after) = params.index {
            let wait = wait.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
            let mut rx = replica.subscribe();
            // At the timeout the answer is the current state, index unchanged.
            let _ = tokio::time::timeout(wait, rx.wait_for(|s| s.index > after)).await;
        }
        if !stale && !self.unsafe_stale_reads {
            replica.read_barrier(self.deadline()).await?;
        }
        Ok(replica.state())
    }
}

/// Compares without an early exit, so timing tells nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// The token of `Authorization: Bearer <token>`. The scheme is
/// case-insensitive and may be followed by several spaces (RFC 9110
/// §11.1, §11.4); the token itself is compared exactly.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    let end = rest.iter().rposition(|b| *b != b' ' && *b != b'\t')?;
    rest.get(start..=end)
}

/// Parses a JSON body, naming the field of the first problem: a value's
/// path (`backends[0].addr`), a missing or repeated field by its own path
/// (`backends[0].weight`), and `body` for what is about the body as a whole
/// (malformed JSON, not an object, or data after the value).
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is limited to {MAX_BODY_BYTES} bytes"),
        ));
    }
    // serde reads a struct from an array too, by position (`[5]` as
    // `{"weight": 5}`); every body of this API is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::field("body", "expected a JSON object, got an array"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| ApiError::field(&body_error_path(&e), e.inner().to_string()))?;
    // One JSON value and nothing after it but whitespace: `{"weight":1}x`
    // or `{"weight":1}{"weight":2}` are refused, not half read.
    de.end().map_err(|e| ApiError::field("body", format!("{e} after the JSON value")))?;
    Ok(value)
}

/// The field a body error is about (see [`parse_body`]).
fn body_error_path(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    if !e.inner().is_data() {
        // Syntax, end of input, I/O: the body is not JSON.
        return "body".to_string();
    }
    let path = e.path().to_string();
    let path = if path == "." || path.contains('?') { None } else { Some(path) };
    // serde names the missing or repeated field in its message only:
    // "missing field `weight`", "duplicate field `weight`".
    let message = e.inner().to_string();
    let named = ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field);
    match (path, named) {
        (Some(p), Some(f)) => format!("{p}.{f}"),
        (None, Some(f)) => f.to_string(),
        (Some(p), None) => p,
        (None, None) => "body".to_string(),
    }
}

/// A named body (route, policy) must name the object of its path, and be
/// valid. `errors` come from its validator run with the prefix the state
/// machine uses (`route`, `policy`).
pub fn check_body(
    kind: &str,
    body_name: &str,
    path_name: &str,
    errors: Vec<FieldError>,
) -> Result<(), ApiError> {
    if body_name != path_name {
        return Err(ApiError::field(
            "name",
            format!("{body_name:?} differs from the {kind} in the path, {path_name:?}"),
        ));
    }
    if errors.is_empty() {
        return Ok(());
    }
    // Paths come prefixed as the state machine's ("route.", "policy."): the
    // conversion names them from the body's root, as for rejections in apply.
    Err(ferry_raft_store::StateError::Invalid { errors }.into())
}

/// The client's request id: up to 32 hex digits (dashes allowed, as in a UUID).
pub fn request_id(headers: &HeaderMap) -> Result<Option<u128>, ApiError> {
    let Some(v) = headers.get(REQUEST_ID_HEADER) else { return Ok(None) };
    let hex: String = v.to_str().unwrap_or("").chars().filter(|c| *c != '-').collect();
    if hex.is_empty() || hex.len() > 32 {
        return Err(ApiError::field(REQUEST_ID_HEADER, "expected 1 to 32 hex digits"));
    }
    u128::from_str_radix(&hex, 16)
        .map(Some)
        .map_err(|_| ApiError::field(REQUEST_ID_HEADER, "expected 1 to 32 hex digits"))
}

/// A 200 write answer with its index header.
pub fn written(index: u64, revision: u64) -> Response {
    with_index(Json(WriteResult { index, revision }).into_response(), index)
}

/// Sets `X-Ferry-Index`.
pub fn with_index(mut r: Response, index: u64) -> Response {
    r.headers_mut().insert(INDEX_HEADER, index.into());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
    }

    #[test]
    fn cluster_failures_map_to_codes_that_say_what_happened() {
        let cases = [
            (ReplicaError::NoLeader("x".into()), 503, "no_leader"),
            (ReplicaError::LeaderChanged("x".into()), 503, "leader_changed"),
            (ReplicaError::DeadlineExceeded("x".into()), 503, "deadline_exceeded"),
            (ReplicaError::FeatureNotEnabled("x".into()), 409, "feature_not_enabled"),
            (ReplicaError::NoQuorum("x".into()), 503, "no_quorum"),
            (ReplicaError::Timeout("x".into()), 503, "timeout"),
            (ReplicaError::Unavailable("x".into()), 503, "unavailable"),
            (ReplicaError::Fatal("x".into()), 500, "internal"),
            (ReplicaError::Refused("x".into()), 409, "refused"),
        ];
        for (e, status, code) in cases {
            let message = e.to_string();
            let r = ApiError::from(e).into_response();
            assert_eq!(
                (r.status().as_u16(), r.headers().contains_key(header::RETRY_AFTER)),
                (status, status == 503)
            );
            let body = r.into_body();
            let bytes = futures_bytes(body);
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json body");
            assert_eq!(v["error"]["code"], code, "{message}");
            assert_eq!(v["error"]["message"], message.as_str());
        }
    }

    fn futures_bytes(body: axum::body::Body) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(axum::body::to_bytes(body, 1 << 16)).expect("body")
    }

    #[test]
    fn request_ids() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h).ok(), Some(None));
        h.insert(REQUEST_ID_HEADER, "0192e7a6-7b6c-7d4e-8f00-000000000001".parse().expect("header"));
        assert!(matches!(request_id(&h), Ok(Some(_))));
        h.insert(REQUEST_ID_HEADER, "xyz".parse().expect("header"));
        assert!(request_id(&h).is_err());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_exact() {
        for (value, token) in [
            ("Bearer s3cret", Some("s3cret")),
            ("bearer s3cret", Some("s3cret")),
            ("BEARER s3cret", Some("s3cret")),
            ("bEaReR   s3cret ", Some("s3cret")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearers3cret", None),
            ("Basic s3cret", None),
            ("s3cret", None),
        ] {
            assert_eq!(bearer_token(value.as_bytes()), token.map(str::as_bytes), "{value:?}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read through Debug only
    struct Weight {
        weight: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read through Debug only
    struct Outer {
        name: String,
        items: Vec<Weight>,
    }

    /// The field path a body error names.
    fn path_of<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        match parse_body::<T>(&Bytes::copy_from_slice(body.as_bytes())) {
            Ok(v) => format!("accepted {v:?}"),
            Err(e) => e.body.error.fields.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(","),
        }
    }

    #[test]
    fn body_errors_name_the_field() {
        for (body, path) in [
            (r#"{"weight":1}garbage"#, "body"),
            (r#"{"weight":1}{"weight":2}"#, "body"),
            ("{\"weight\":1} \n\t x", "body"),
            (r#"{"weight":"#, "body"),
            (r#"{"weight":1"#, "body"),
            ("", "body"),
            ("not json", "body"),
            ("[1]", "body"),
            ("{}", "weight"),
            (r#"{"weight":1,"weight":2}"#, "weight"),
            (r#"{"weight":"heavy"}"#, "weight"),
            (r#"{"weight":1,"bogus":2}"#, "bogus"),
        ] {
            assert_eq!(path_of::<Weight>(body), path, "{body:?}");
        }
        assert!(
            path_of::<Weight>("{\"weight\":1}\n  ").starts_with("accepted"),
            "trailing whitespace is fine"
        );
        assert_eq!(path_of::<Outer>(r#"{"name":"a","items":[{}]}"#), "items[0].weight");
        assert_eq!(path_of::<Outer>(r#"{"name":"a","items":[{"weight":1,"weight":1}]}"#), "items[0].weight");
        assert_eq!(path_of::<Outer>(r#"{"items":[]}"#), "name");
        assert_eq!(path_of::<Outer>(r#"{"name":"a","items":[{"weight":-1}]}"#), "items[0].weight");
    }
}
