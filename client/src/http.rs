//! [`AdminClient`]: a small async client of the admin API (feature `http`),
//! for tools that drive a cluster (jepsen-lite, a CLI).
//!
//! One request per connection (`Connection: close`), a deadline on the
//! whole exchange, JSON bodies typed with [`crate::api`]. Errors keep what a
//! caller needs to know about the outcome of a write: [`ClientError::outcome`]
//! says whether it surely did not happen or may have.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::RouteSpec;
use crate::api::{ErrorBody, Member, RemoveResult, RouteStatus, Status, WriteResult};

/// Largest response read (a route list of a big cluster fits easily).
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Why a request got no successful answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be opened: nothing was sent.
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    /// The request was (maybe) sent but no whole answer came back.
    #[error("{addr}: {message}")]
    Transport { addr: SocketAddr, message: String },
    /// No whole answer within the timeout.
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    /// The server answered with an error status.
    #[error("{status} {}: {}", .body.error.code, .body.error.message)]
    Api { status: u16, body: ErrorBody },
    /// The answer could not be understood.
    #[error("{addr}: bad answer: {message}")]
    Decode { addr: SocketAddr, message: String },
}

/// What an error says about whether a write took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not take effect (refused, or never sent).
    NotApplied,
    /// It may have taken effect (timeout, lost connection, 503, 5xx).
    Unknown,
}

impl ClientError {
    /// Whether the write behind this error surely did not happen. A 4xx is
    /// a refusal (validation, CAS, auth); a 503 may come after the write
    /// reached a leader that then lost its quorum, so it is unknown.
    pub fn outcome(&self) -> Outcome {
        match self {
            ClientError::Connect { .. } => Outcome::NotApplied,
            ClientError::Api { status, .. } if (400..500).contains(status) => Outcome::NotApplied,
            _ => Outcome::Unknown,
        }
    }

    /// The API error code (`cas_mismatch`, `unavailable`, …), if the server
    /// answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }
}

/// A successful answer and its `X-Ferry-Index`.
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed<T> {
    pub value: T,
    /// The config index the answering node had applied (0 if absent).
    pub index: u64,
}

/// `?cas=` and `X-Ferry-Request-Id` of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOpts {
    pub cas: Option<u64>,
    pub request_id: Option<u128>,
}

/// A client of one node's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
}

impl AdminClient {
    /// A client of the node whose admin API is at `addr`, with a 5 s timeout.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, token: None, timeout: Duration::from_secs(5) }
    }

    /// Sends `Authorization: Bearer token` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The longest wait for a whole exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Indexed<Status>, ClientError> {
        self.call("GET", "/v1/status", None, None).await
    }

    /// `GET /v1/members`.
    pub async fn members(&self) -> Result<Indexed<Vec<Member>>, ClientError> {
        self.call("GET", "/v1/members", None, None).await
    }

    /// `GET /v1/routes/{name}`; `stale` reads this node's applied state
    /// instead of a linearizable read.
    pub async fn route(&self, name: &str, stale: bool) -> Result<Indexed<RouteStatus>, ClientError> {
        let q = if stale { "?consistency=stale" } else { "" };
        self.call("GET", &format!("/v1/routes/{name}{q}"), None, None).await
    }

    /// `GET /v1/routes/{name}?index=N&wait=<ms>ms`: a blocking query. The
    /// node answers once its config index passes `index`, or after `wait`
    /// with the index unchanged; `stale` serves its applied state then,
    /// without the read barrier. The client's timeout must exceed `wait`.
    pub async fn route_after(
        &self,
        name: &str,
        index: u64,
        wait: Duration,
        stale: bool,
    ) -> Result<Indexed<RouteStatus>, ClientError> {
        let stale = if stale { "&consistency=stale" } else { "" };
        let path = format!("/v1/routes/{name}?index={index}&wait={}ms{stale}", wait.as_millis());
        self.call("GET", &path, None, None).await
    }

    /// `GET /v1/routes`.
    pub async fn routes(&self, stale: bool) -> Result<Indexed<Vec<RouteStatus>>, ClientError> {
        let q = if stale { "?consistency=stale" } else { "" };
        self.call("GET", &format!("/v1/routes{q}"), None, None).await
    }

    /// `PUT /v1/routes/{name}`.
    pub async fn put_route(&self, route: &RouteSpec, opts: WriteOpts) -> Result<WriteResult, ClientError> {
        let body = json(self.addr, route)?;
        let path = format!("/v1/routes/{}{}", route.name, cas(opts));
        Ok(self.call("PUT", &path, Some(body), opts.request_id).await?.value)
    }

    /// `DELETE /v1/routes/{name}`.
    pub async fn delete_route(&self, name: &str, opts: WriteOpts) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/routes/{name}{}", cas(opts));
        Ok(self.call("DELETE", &path, None, opts.request_id).await?.value)
    }

    /// `PUT /v1/routes/{route}/backends/{backend}/weight`.
    pub async fn put_weight(
        &self,
        route: &str,
        backend: &str,
        weight: u32,
        opts: WriteOpts,
    ) -> Result<WriteResult, ClientError> {
        let body = json(self.addr, &serde_json::json!({ "weight": weight }))?;
        let path = format!("/v1/routes/{route}/backends/{backend}/weight{}", cas(opts));
        Ok(self.call("PUT", &path, Some(body), opts.request_id).await?.value)
    }

    /// `POST /v1/members/{id}/remove`.
    pub async fn remove_member(&self, id: u64) -> Result<RemoveResult, ClientError> {
        Ok(self.call("POST", &format!("/v1/members/{id}/remove"), None, None).await?.value)
    }

    /// `POST /v1/leave`: the node leaves the cluster and stops.
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("POST", "/v1/leave", None, None).await.map(|_| ())
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        request_id: Option<u128>,
    ) -> Result<Indexed<T>, ClientError> {
        let exchange = self.exchange(method, path, body.as_deref(), request_id);
        let raw = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout { addr: self.addr, timeout: self.timeout })??;
        let response = parse(self.addr, &raw)?;
        if !(200..300).contains(&response.status) {
            let body: ErrorBody =
                serde_json::from_slice(&response.body).map_err(|e| ClientError::Decode {
                    addr: self.addr,
                    message: format!("{} with a body that is not an error: {e}", response.status),
                })?;
            return Err(ClientError::Api { status: response.status, body });
        }
        let value = serde_json::from_slice(&response.body)
            .map_err(|e| ClientError::Decode { addr: self.addr, message: e.to_string() })?;
        Ok(Indexed { value, index: response.index })
    }

    /// As [`AdminClient::call`], but the successful answer's body is
    /// returned as it came, not decoded (a snapshot file's bytes).
    pub(crate) async fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        request_id: Option<u128>,
    ) -> Result<Indexed<Vec<u8>>, ClientError> {
        let exchange = self.exchange(method, path, body.as_deref(), request_id);
        let raw = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout { addr: self.addr, timeout: self.timeout })??;
        let response = parse(self.addr, &raw)?;
        if !(200..300).contains(&response.status) {
            let body: ErrorBody =
                serde_json::from_slice(&response.body).map_err(|e| ClientError::Decode {
                    addr: self.addr,
                    message: format!("{} with a body that is not an error: {e}", response.status),
                })?;
            return Err(ClientError::Api { status: response.status, body });
        }
        Ok(Indexed { value: response.body, index: response.index })
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        request_id: Option<u128>,
    ) -> Result<Vec<u8>, ClientError> {
        let addr = self.addr;
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect { addr, message: e.to_string() })?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(id) = request_id {
            head.push_str(&format!("X-Ferry-Request-Id: {id:032x}\r\n"));
        }
        let body = body.unwrap_or_default();
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()));
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        let transport = |e: std::io::Error| ClientError::Transport { addr, message: e.to_string() };
        s.write_all(&raw).await.map_err(transport)?;
        let mut answer = Vec::new();
        (&mut s).take(MAX_RESPONSE as u64 + 1).read_to_end(&mut answer).await.map_err(transport)?;
        if answer.len() > MAX_RESPONSE {
            return Err(ClientError::Decode { addr, message: format!("response over {MAX_RESPONSE} bytes") });
        }
        Ok(answer)
    }
}

fn cas(opts: WriteOpts) -> String {
    opts.cas.map(|c| format!("?cas={c}")).unwrap_or_default()
}

fn json(addr: SocketAddr, value: &impl Serialize) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Decode { addr, message: e.to_string() })
}

struct Response {
    status: u16,
    index: u64,
    body: Vec<u8>,
}

/// Parses a whole `Connection: close` response (Content-Length or chunked
/// or read to the end).
fn parse(addr: SocketAddr, raw: &[u8]) -> Result<Response, ClientError> {
    let bad = |message: String| ClientError::Decode { addr, message };
    if raw.is_empty() {
        return Err(ClientError::Transport { addr, message: "connection closed without an answer".into() });
    }
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers".into()))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let (mut index, mut length, mut chunked) = (0, None, false);
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { continue };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        // A value that does not parse is a bad answer, not a 0 or a body
        // read to the end.
        let number = |v: &str| {
            let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
            digits.then(|| v.parse::<u64>().ok()).flatten().ok_or_else(|| bad(format!("bad {k} {v:?}")))
        };
        match k.as_str() {
            "x-ferry-index" => index = number(v)?,
            "content-length" => {
                length = Some(usize::try_from(number(v)?).map_err(|_| bad(format!("bad {k} {v:?}")))?)
            }
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("truncated chunked body".into()))?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| ClientError::Transport { addr, message: "truncated body".into() })?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, index, body })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..eol]).ok()?.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers one connection with `answer` after reading the
    /// request head, and hands the request back.
    fn answer(status: &str, body: &str) -> String {
        format!("HTTP/1.1 {status}\r\nx-ferry-index: 7\r\ncontent-length: {}\r\n\r\n{body}", body.len())
    }

    async fn serve_once(answer: String) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = vec![0; 4096];
            let n = s.read(&mut buf).await.expect("read");
            s.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_write_sends_cas_and_request_id_and_reads_the_result() {
        let (addr, req) = serve_once(answer("200 OK", r#"{"index":7,"revision":7}"#)).await;
        let c = AdminClient::new(addr).with_token("s3cret");
        let r = c.put_weight("web", "a", 5, WriteOpts { cas: Some(6), request_id: Some(0xabc) }).await;
        assert_eq!(r, Ok(WriteResult { index: 7, revision: 7 }));
        let req = req.await.expect("request");
        assert!(req.starts_with("PUT /v1/routes/web/backends/a/weight?cas=6 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("X-Ferry-Request-Id: 00000000000000000000000000000abc\r\n"), "{req}");
        assert!(req.contains("Authorization: Bearer s3cret\r\n"), "{req}");
        assert!(req.ends_with(r#"{"weight":5}"#), "{req}");
    }

    #[tokio::test]
    async fn a_blocking_query_sends_index_wait_and_consistency() {
        let route = r#"{"config":{"name":"web","listen":":80"},"revision":6,"listening":null,"active_connections":0,"panic_mode":false,"backends":[]}"#;
        let (addr, req) = serve_once(answer("200 OK", route)).await;
        let r = AdminClient::new(addr).route_after("web", 5, Duration::from_millis(1500), true).await;
        let r = r.expect("a route");
        assert_eq!((r.index, r.value.revision), (7, Some(6)));
        let req = req.await.expect("request");
        assert!(
            req.starts_with("GET /v1/routes/web?index=5&wait=1500ms&consistency=stale HTTP/1.1\r\n"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn an_error_body_becomes_an_api_error_with_its_outcome() {
        let body = r#"{"error":{"code":"cas_mismatch","message":"revision is 9","current":9}}"#;
        let (addr, _req) = serve_once(answer("409 Conflict", body)).await;
        let e = AdminClient::new(addr).delete_route("web", WriteOpts::default()).await.expect_err("409");
        assert_eq!(e.code(), Some("cas_mismatch"));
        assert_eq!(e.outcome(), Outcome::NotApplied);
        let ClientError::Api { body, .. } = e else { panic!("not an API error") };
        assert_eq!(body.error.current, Some(9));

        let body = r#"{"error":{"code":"timeout","message":"no answer"}}"#;
        let (addr, _req) = serve_once(answer("503 Service Unavailable", body)).await;
        let e = AdminClient::new(addr).delete_route("web", WriteOpts::default()).await.expect_err("503");
        assert_eq!(e.outcome(), Outcome::Unknown, "a 503 write may still commit");
    }

    #[tokio::test]
    async fn refused_connect_is_not_applied_and_silence_is_unknown() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let e = AdminClient::new(addr).status().await.expect_err("refused");
        assert_eq!(e.outcome(), Outcome::NotApplied, "{e}");

        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let _hold = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let c = AdminClient::new(addr).with_timeout(Duration::from_millis(100));
        let e = c.put_weight("web", "a", 1, WriteOpts::default()).await.expect_err("timeout");
        assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
        assert_eq!(e.outcome(), Outcome::Unknown);
    }

    #[test]
    fn chunked_and_truncated_bodies() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let r = parse(
            addr,
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
        );
        assert_eq!(r.map(|r| r.body).ok(), Some(b"{\"a\":1}".to_vec()));
        let r = parse(addr, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}");
        assert!(matches!(r, Err(ClientError::Transport { .. })));
        assert!(matches!(parse(addr, b"garbage"), Err(ClientError::Decode { .. })));
    }

    /// Before, an index that did not parse read as 0, and a bad length as
    /// "read to the end".
    #[test]
    fn headers_that_do_not_parse_are_a_bad_answer() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let ok = parse(addr, b"HTTP/1.1 200 OK\r\nX-Ferry-Index: 12\r\ncontent-length: 2\r\n\r\n{}");
        assert_eq!(ok.map(|r| (r.index, r.body)).ok(), Some((12, b"{}".to_vec())));
        for head in ["x-ferry-index: 12abc", "x-ferry-index: -1", "content-length: 2x", "content-length: +2"]
        {
            let raw = format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\n{{}}");
            let r = parse(addr, raw.as_bytes());
            assert!(
                matches!(&r, Err(ClientError::Decode { message, .. }) if message.contains("bad")),
                "{head}"
            );
        }
    }
}
