//! `GET /v1/routes/{name}/explain?client=IP[:PORT]` and `POST
//! /v1/routes/{name}/dry-run`: this node's routing table, asked rather
//! than changed (`dataplane::explain` computes both). Both work standalone
//! and in cluster mode, need no token (they write nothing and show what
//! `GET /v1/routes` shows, plus the hash), and read this node's table as
//! it is: no read barrier.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use ferry_client::{FieldError, RouteSpec};

use super::params::{NoParams, Params, Path, QueryParams};
use super::request::{check_body, parse_body, with_index};
use super::{AdminState, ApiError};
use crate::dataplane::explain;

/// `?client=IP[:PORT]` of explain.
#[derive(Debug, Default)]
pub struct ExplainParams {
    pub client: Option<String>,
}

impl QueryParams for ExplainParams {
    const NAMES: &'static [&'static str] = &["client"];

    fn set(&mut self, _: &str, value: &str) -> Result<(), ApiError> {
        self.client = Some(value.to_string());
        Ok(())
    }
}

/// The client address of `?client=`: `IP:PORT`, `[IPv6]:PORT`, or an IP
/// alone (port 0, which only `hash_key = "client_addr"` reads).
pub fn parse_client(value: Option<&str>) -> Result<SocketAddr, ApiError> {
    let Some(v) = value else {
        return Err(ApiError::field("client", "required: the client address to explain, as IP or IP:PORT"));
    };
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(v);
    bare.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)).map_err(|_| {
        let quoted: String = v.chars().take(64).collect();
        ApiError::field("client", format!("expected IP or IP:PORT ([IPv6]:PORT), got {quoted:?}"))
    })
}

/// `GET /v1/routes/{name}/explain?client=IP[:PORT]`.
pub async fn explain(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Params(q): Params<ExplainParams>,
) -> Result<Response, ApiError> {
    let client = parse_client(q.client.as_deref())?;
    let table = s.table.load();
    let index = s.index();
    let entry = table.get(&name).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route named {name:?} on this node"))
    })?;
    let body = explain::explain(&table, entry, client, s.clock.now_ms(), &s.node_name, index);
    Ok(with_index(Json(body).into_response(), index))
}

/// `POST /v1/routes/{name}/dry-run` with a route body, validated as `PUT
/// /v1/routes/{name}` validates it (the same field errors).
pub async fn dry_run(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Params(NoParams): Params<NoParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let route: RouteSpec = parse_body(&body)?;
    let mut errors: Vec<FieldError> = Vec::new();
    route.validate("route", &mut errors);
    if errors.is_empty()
        && let Some(replica) = &s.replica
    {
        errors.extend(s.listen_problem(&route, &replica.state()));
    }
    check_body("route", &route.name, &name, errors)?;
    let table = s.table.load();
    let index = s.index();
    let body = explain::dry_run(&table, &route, s.clock.now_ms(), &s.node_name, index);
    Ok(with_index(Json(body).into_response(), index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: ApiError) -> String {
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let bytes = rt.block_on(axum::body::to_bytes(r.into_body(), 1 << 16)).expect("body");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        v["error"]["fields"][0]["path"].as_str().unwrap_or_default().to_string()
    }

    #[test]
    fn client_addresses() {
        let ok = |v: &str| parse_client(Some(v)).ok().map(|a| a.to_string());
        assert_eq!(ok("127.0.0.5:4000").as_deref(), Some("127.0.0.5:4000"));
        assert_eq!(ok("127.0.0.5").as_deref(), Some("127.0.0.5:0"));
        assert_eq!(ok("[::1]:80").as_deref(), Some("[::1]:80"));
        assert_eq!(ok("::1").as_deref(), Some("[::1]:0"));
        assert_eq!(ok("[::1]").as_deref(), Some("[::1]:0"));
        for bad in ["", "x", "127.0.0.1:", "127.0.0.1:99999", "1.2.3", "host:80"] {
            assert_eq!(parse_client(Some(bad)).err().map(field).as_deref(), Some("client"), "{bad:?}");
        }
        assert_eq!(parse_client(None).err().map(field).as_deref(), Some("client"));
    }
}
