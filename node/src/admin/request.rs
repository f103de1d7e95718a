//! What every admin request shares: query parameters (`?cas=`,
//! `?consistency=`, `?index=&wait=`), the bearer token, bounded JSON bodies
//! parsed with field paths, the read barrier and blocking waits, and the
//! mapping of cluster answers to HTTP.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use ferry_client::FieldError;
use ferry_client::api::WriteResult;
use ferry_raft_store::{ClusterState, StateError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

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

/// Query parameters; a bad query string is a JSON 400 naming the problem.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::field("query", e.body_text()))
    }
}

/// `?consistency=…&index=…&wait=…` of a read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// `linearizable` (default) or `stale`.
    pub consistency: Option<String>,
    /// Blocking query: answer once the config index passes this.
    pub index: Option<u64>,
    /// Blocking query: longest wait, e.g. `30s`, `500ms`, `5m`.
    pub wait: Option<String>,
}

impl ReadParams {
    /// Checks the values: whether the read may be stale, and the wait given.
    /// A standalone node (whose reads are all local) checks them too, so a
    /// bad value is refused whatever the mode.
    pub fn check(&self) -> Result<(bool, Option<Duration>), ApiError> {
        let stale = match self.consistency.as_deref() {
            None | Some("linearizable") => false,
            Some("stale") => true,
            Some(other) => {
                return Err(ApiError::field(
                    "consistency",
                    format!("expected linearizable or stale, got {other:?}"),
                ));
            }
        };
        let wait = match &self.wait {
            None => None,
            Some(_) if self.index.is_none() => return Err(ApiError::field("wait", "goes with index")),
            Some(w) => Some(parse_duration(w).ok_or_else(|| {
                ApiError::field("wait", format!("expected a duration like 30s, 500ms or 5m, got {w:?}"))
            })?),
        };
        Ok((stale, wait))
    }
}

/// `?cas=N` of a write.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteParams {
    /// Expected revision; 0 = must not exist.
    pub cas: Option<u64>,
}

impl ApiError {
    fn bad_request(fields: Vec<FieldError>) -> Self {
        let message = fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message);
        e.body.error.fields = fields;
        e
    }

    /// A 400 naming `path`.
    pub fn field(path: &str, message: impl Into<String>) -> Self {
        Self::bad_request(vec![FieldError::new(path, message)])
    }
}

impl From<ReplicaError> for ApiError {
    fn from(e: ReplicaError) -> Self {
        match e {
            ReplicaError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
            }
            ReplicaError::Timeout(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", e.to_string())
            }
            ReplicaError::Fatal(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
            ReplicaError::Refused(_) => ApiError::new(StatusCode::CONFLICT, "refused", e.to_string()),
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
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
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

/// `30s`, `500ms`, `5m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// Parses a JSON body, naming the field of the first problem.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is limited to {MAX_BODY_BYTES} bytes"),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::field(if path == "." { "" } else { &path }, e.inner().to_string())
    })
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
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
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
}
