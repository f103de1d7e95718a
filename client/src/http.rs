//! [`AdminClient`]: a small async client of the admin API (feature `http`),
//! for tools that drive a cluster (jepsen-lite, a CLI).
//!
//! One request per connection (`Connection: close`), a deadline on the
//! whole exchange, JSON bodies typed with [`crate::api`]. Errors keep what a
//! caller needs to know about the outcome of a write: [`ClientError::outcome`]
//! says whether it surely did not happen or may have.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::RouteSpec;
use crate::api::{
    ChaosPolicyStatus, ErrorBody, JoinRequest, JoinResult, Member, RemoveResult, RouteStatus, Status,
    WriteResult,
};
use crate::chaos::ChaosPolicy;

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

/// A client of a cluster's admin API, through one or several of its nodes.
///
/// Requests go to the node that last answered (the first at the start).
/// When a node cannot be connected to, nothing was sent and the next
/// address is tried; a read (`GET`) also moves on when a node accepted but
/// gave no whole answer (timeout, lost connection). A write whose answer
/// was lost is not sent again elsewhere: its outcome is unknown and the
/// caller decides (retry with the same request id). Each try has the
/// whole timeout.
#[derive(Debug)]
pub struct AdminClient {
    addrs: Vec<SocketAddr>,
    /// Index in `addrs` of the node that last answered.
    current: AtomicUsize,
    token: Option<String>,
    timeout: Duration,
}

impl Clone for AdminClient {
    fn clone(&self) -> Self {
        Self {
            addrs: self.addrs.clone(),
            current: AtomicUsize::new(self.current.load(Relaxed)),
            token: self.token.clone(),
            timeout: self.timeout,
        }
    }
}

/// A request as sent by [`AdminClient::send`]: any method, path (with its
/// query), headers and body. For tools and tests that need more than the
/// typed methods: an unusual header, a body that is not valid, the whole
/// answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    pub method: String,
    /// The path and query, as `/v1/routes/web?cas=3`.
    pub path: String,
    /// Extra headers (`Host`, `Connection`, `Content-Length` and the token's
    /// `Authorization` are added).
    pub headers: Vec<(String, String)>,
    /// Sent with `Content-Type: application/json` unless a header sets one.
    pub body: Option<Vec<u8>>,
}

impl RawRequest {
    /// `method path` without a body.
    pub fn new(method: &str, path: impl Into<String>) -> Self {
        Self { method: method.to_string(), path: path.into(), headers: Vec::new(), body: None }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
}

/// A whole answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The node that answered.
    pub addr: SocketAddr,
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// `X-Ferry-Index` (0 if absent).
    pub index: u64,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The answer as a typed result: the body decoded as `T` on a 2xx,
    /// else [`ClientError::Api`] (or `Decode` when the error body is not
    /// the API's).
    pub fn into_result<T: DeserializeOwned>(self) -> Result<Indexed<T>, ClientError> {
        let addr = self.addr;
        if !(200..300).contains(&self.status) {
            let body: ErrorBody = serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode {
                addr,
                message: format!("{} with a body that is not an error: {e}", self.status),
            })?;
            return Err(ClientError::Api { status: self.status, body });
        }
        let value = serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::Decode { addr, message: e.to_string() })?;
        Ok(Indexed { value, index: self.index })
    }
}

impl AdminClient {
    /// A client of the node whose admin API is at `addr`, with a 5 s timeout.
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_addrs(vec![addr])
    }

    /// A client of the nodes at `addrs`, tried in order (see the type).
    /// An empty list is refused at the first request.
    pub fn with_addrs(addrs: Vec<SocketAddr>) -> Self {
        Self { addrs, current: AtomicUsize::new(0), token: None, timeout: Duration::from_secs(5) }
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

    /// The address requests go to first: the node that last answered.
    /// (With no address at all, the unspecified address.)
    pub fn addr(&self) -> SocketAddr {
        self.addrs.get(self.current.load(Relaxed)).copied().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// A client of the node at `addr` alone, with this one's token and
    /// timeout.
    pub fn with_addr(&self, addr: SocketAddr) -> AdminClient {
        AdminClient {
            addrs: vec![addr],
            current: AtomicUsize::new(0),
            token: self.token.clone(),
            timeout: self.timeout,
        }
    }

    /// Every address, in the order given.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The longest wait for one node's whole answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Indexed<Status>, ClientError> {
        self.call("GET", "/v1/status", None, None).await
    }

    /// `GET /v1/status?min_index=N&wait=<ms>ms`: answers once this node's
    /// data plane runs config index `min_index` (`Status::data_index`), or
    /// after `wait` with the index it runs then. The timeout must exceed
    /// `wait`.
    pub async fn status_at(&self, min_index: u64, wait: Duration) -> Result<Indexed<Status>, ClientError> {
        let path = format!("/v1/status?min_index={min_index}&wait={}ms", wait.as_millis());
        self.call("GET", &path, None, None).await
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
        self.call("GET", &blocking(&format!("/v1/routes/{name}"), index, wait, stale), None, None).await
    }

    /// `GET /v1/routes`.
    pub async fn routes(&self, stale: bool) -> Result<Indexed<Vec<RouteStatus>>, ClientError> {
        let q = if stale { "?consistency=stale" } else { "" };
        self.call("GET", &format!("/v1/routes{q}"), None, None).await
    }

    /// `PUT /v1/routes/{name}`.
    pub async fn put_route(&self, route: &RouteSpec, opts: WriteOpts) -> Result<WriteResult, ClientError> {
        let body = json(self.addr(), route)?;
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
        let body = json(self.addr(), &crate::api::WeightRequest { weight })?;
        let path = format!("/v1/routes/{route}/backends/{backend}/weight{}", cas(opts));
        Ok(self.call("PUT", &path, Some(body), opts.request_id).await?.value)
    }

    /// `POST /v1/members/{id}/remove`.
    pub async fn remove_member(&self, id: u64) -> Result<RemoveResult, ClientError> {
        Ok(self.call("POST", &format!("/v1/members/{id}/remove"), None, None).await?.value)
    }

    /// `POST /v1/leave`: the node leaves the cluster and stops.
    pub async fn leave(&self) -> Result<crate::api::LeaveResult, ClientError> {
        Ok(self.call("POST", "/v1/leave", None, None).await?.value)
    }

    /// `GET /v1/routes?index=N&wait=<ms>ms`: a blocking query on the
    /// route list (see [`AdminClient::route_after`]).
    pub async fn routes_after(
        &self,
        index: u64,
        wait: Duration,
        stale: bool,
    ) -> Result<Indexed<Vec<RouteStatus>>, ClientError> {
        self.call("GET", &blocking("/v1/routes", index, wait, stale), None, None).await
    }

    /// `GET /v1/chaos`.
    pub async fn chaos_policies(&self, stale: bool) -> Result<Indexed<Vec<ChaosPolicyStatus>>, ClientError> {
        let q = if stale { "?consistency=stale" } else { "" };
        self.call("GET", &format!("/v1/chaos{q}"), None, None).await
    }

    /// `GET /v1/chaos?index=N&wait=<ms>ms`: a blocking query on the policy
    /// list (see [`AdminClient::route_after`]).
    pub async fn chaos_after(
        &self,
        index: u64,
        wait: Duration,
        stale: bool,
    ) -> Result<Indexed<Vec<ChaosPolicyStatus>>, ClientError> {
        self.call("GET", &blocking("/v1/chaos", index, wait, stale), None, None).await
    }

    /// `GET /v1/chaos/{name}`.
    pub async fn chaos_policy(
        &self,
        name: &str,
        stale: bool,
    ) -> Result<Indexed<ChaosPolicyStatus>, ClientError> {
        let q = if stale { "?consistency=stale" } else { "" };
        self.call("GET", &format!("/v1/chaos/{name}{q}"), None, None).await
    }

    /// `PUT /v1/chaos/{name}`.
    pub async fn put_chaos(&self, policy: &ChaosPolicy, opts: WriteOpts) -> Result<WriteResult, ClientError> {
        let body = json(self.addr(), policy)?;
        let path = format!("/v1/chaos/{}{}", policy.name, cas(opts));
        Ok(self.call("PUT", &path, Some(body), opts.request_id).await?.value)
    }

    /// `DELETE /v1/chaos/{name}`.
    pub async fn delete_chaos(&self, name: &str, opts: WriteOpts) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/chaos/{name}{}", cas(opts));
        Ok(self.call("DELETE", &path, None, opts.request_id).await?.value)
    }

    /// `POST /v1/join`: the node joins the gossip of the members at `addrs`
    /// (`host:port` gossip addresses).
    pub async fn join(&self, addrs: &[String]) -> Result<JoinResult, ClientError> {
        let body = json(self.addr(), &JoinRequest { addrs: addrs.to_vec() })?;
        Ok(self.call("POST", "/v1/join", Some(body), None).await?.value)
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        request_id: Option<u128>,
    ) -> Result<Indexed<T>, ClientError> {
        let mut req = RawRequest::new(method, path);
        req.body = body;
        if let Some(id) = request_id {
            req.headers.push(("X-Ferry-Request-Id".into(), format!("{id:032x}")));
        }
        self.send(&req).await?.into_result()
    }

    /// Sends `req` and returns the whole answer, whatever its status:
    /// an error only when no node gave one (see the type for failover).
    pub async fn send(&self, req: &RawRequest) -> Result<RawResponse, ClientError> {
        let n = self.addrs.len();
        let Some(first) = (n > 0).then(|| self.current.load(Relaxed) % n) else {
            let addr = SocketAddr::from(([0, 0, 0, 0], 0));
            return Err(ClientError::Connect { addr, message: "no admin address given".into() });
        };
        let read = req.method.eq_ignore_ascii_case("GET") || req.method.eq_ignore_ascii_case("HEAD");
        let mut last = None;
        for i in 0..n {
            let at = (first + i) % n;
            let addr = self.addrs[at];
            let exchange = self.exchange(addr, req);
            let answer = match tokio::time::timeout(self.timeout, exchange).await {
                Ok(answer) => answer,
                Err(_) => Err(ClientError::Timeout { addr, timeout: self.timeout }),
            };
            match answer {
                Ok(raw) => {
                    self.current.store(at, Relaxed);
                    return parse(addr, &raw);
                }
                // Nothing was sent: any request may go to the next node.
                Err(e @ ClientError::Connect { .. }) => last = Some(e),
                // Sent, but no answer: only a read may be asked again.
                Err(e @ (ClientError::Timeout { .. } | ClientError::Transport { .. })) if read => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::Connect { addr: self.addrs[first], message: "no answer".into() }))
    }

    async fn exchange(&self, addr: SocketAddr, req: &RawRequest) -> Result<Vec<u8>, ClientError> {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect { addr, message: e.to_string() })?;
        let mut head =
            format!("{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n", req.method, req.path);
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let mut typed = false;
        for (k, v) in &req.headers {
            typed |= k.eq_ignore_ascii_case("content-type");
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = req.body.as_deref().unwrap_or_default();
        if !typed && req.body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        let transport = |e: std::io::Error| ClientError::Transport { addr, message: e.to_string() };
        // A server may answer (413, 400) and close before reading a large
        // body: a failed write is fine as long as an answer comes back.
        let written = s.write_all(&raw).await;
        let mut answer = Vec::new();
        let read = (&mut s).take(MAX_RESPONSE as u64 + 1).read_to_end(&mut answer).await;
        if answer.is_empty() {
            written.map_err(transport)?;
        }
        if let Err(e) = read
            && answer.is_empty()
        {
            return Err(transport(e));
        }
        if answer.len() > MAX_RESPONSE {
            return Err(ClientError::Decode { addr, message: format!("response over {MAX_RESPONSE} bytes") });
        }
        Ok(answer)
    }
}

/// `path?index=N&wait=<ms>ms[&consistency=stale]`.
fn blocking(path: &str, index: u64, wait: Duration, stale: bool) -> String {
    let stale = if stale { "&consistency=stale" } else { "" };
    format!("{path}?index={index}&wait={}ms{stale}", wait.as_millis())
}

fn cas(opts: WriteOpts) -> String {
    opts.cas.map(|c| format!("?cas={c}")).unwrap_or_default()
}

fn json(addr: SocketAddr, value: &impl Serialize) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Decode { addr, message: e.to_string() })
}

/// Parses a whole `Connection: close` response (Content-Length or chunked
/// or read to the end).
fn parse(addr: SocketAddr, raw: &[u8]) -> Result<RawResponse, ClientError> {
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
    let mut headers = Vec::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { continue };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        headers.push((k.clone(), v.to_string()));
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
    Ok(RawResponse { addr, status, headers, index, body })
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

    async fn refused_addr() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    }

    /// A node that accepts and never answers.
    async fn silent_addr() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        (addr, hold)
    }

    #[tokio::test]
    async fn a_refused_address_fails_over_and_the_answering_node_is_kept() {
        let down = refused_addr().await;
        let (up, req) = serve_once(answer("200 OK", r#"{"index":7,"revision":7}"#)).await;
        let c = AdminClient::with_addrs(vec![down, up]);
        let r = c.put_weight("web", "a", 3, WriteOpts::default()).await.expect("answer from the second");
        assert_eq!(r.index, 7);
        assert!(req.await.expect("served").starts_with("PUT /v1/routes/web/backends/a/weight"));
        assert_eq!(c.addr(), up, "the next request goes to the node that answered");

        let c = AdminClient::with_addrs(vec![down, refused_addr().await]);
        let e = c.status().await.expect_err("no node");
        assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
        assert_eq!(e.outcome(), Outcome::NotApplied);
        let e = AdminClient::with_addrs(Vec::new()).status().await.expect_err("no address");
        assert!(e.to_string().contains("no admin address"), "{e}");
    }

    /// A read is asked again elsewhere after a silent node; a write is not
    /// (it may have been applied).
    #[tokio::test]
    async fn only_reads_move_on_after_a_silent_node() {
        let (silent, _hold) = silent_addr().await;
        let (up, _req) = serve_once(answer("200 OK", r#"[]"#)).await;
        let c = AdminClient::with_addrs(vec![silent, up]).with_timeout(Duration::from_millis(200));
        let r = c.members().await.expect("the second node answers the read");
        assert!(r.value.is_empty());

        let (silent, _hold) = silent_addr().await;
        let (up, _req) = serve_once(answer("200 OK", r#"{"index":7,"revision":7}"#)).await;
        let c = AdminClient::with_addrs(vec![silent, up]).with_timeout(Duration::from_millis(200));
        let e = c.delete_route("web", WriteOpts::default()).await.expect_err("not sent twice");
        assert!(matches!(e, ClientError::Timeout { addr, .. } if addr == silent), "{e:?}");
    }

    #[tokio::test]
    async fn send_returns_any_status_with_its_headers() {
        let (addr, req) =
            serve_once(answer("404 Not Found", r#"{"error":{"code":"x","message":"y"}}"#)).await;
        let c = AdminClient::new(addr);
        let r = c
            .send(&RawRequest::new("POST", "/v1/x?y=1").header("X-A", "b").body("{}"))
            .await
            .expect("answer");
        assert_eq!((r.status, r.index, r.header("x-ferry-index")), (404, 7, Some("7")));
        let sent = req.await.expect("served");
        assert!(sent.starts_with("POST /v1/x?y=1 HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains("X-A: b\r\n") && sent.contains("Content-Type: application/json"), "{sent}");
        assert!(matches!(r.into_result::<serde_json::Value>(), Err(ClientError::Api { status: 404, .. })));
    }

    #[tokio::test]
    async fn join_posts_the_gossip_addresses_and_reads_the_result() {
        let (addr, req) = serve_once(answer("200 OK", r#"{"node_id":7,"joined":["127.0.0.2:7946"]}"#)).await;
        let r = AdminClient::new(addr).join(&["n2.example:7946".to_string()]).await;
        assert_eq!(r, Ok(JoinResult { node_id: 7, joined: vec!["127.0.0.2:7946".into()] }));
        let req = req.await.expect("request");
        assert!(req.starts_with("POST /v1/join HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Content-Type: application/json\r\n"), "{req}");
        assert!(req.ends_with(r#"{"addrs":["n2.example:7946"]}"#), "{req}");
    }

    #[tokio::test]
    async fn chaos_and_list_blocking_queries_send_their_paths() {
        let (addr, req) = serve_once(answer("200 OK", "[]")).await;
        let r = AdminClient::new(addr).chaos_after(4, Duration::from_secs(2), false).await;
        assert_eq!(r.map(|r| r.value.len()), Ok(0));
        assert!(req.await.expect("request").starts_with("GET /v1/chaos?index=4&wait=2000ms HTTP/1.1\r\n"));
        let (addr, req) = serve_once(answer("200 OK", "[]")).await;
        let r = AdminClient::new(addr).routes_after(9, Duration::from_millis(300), true).await;
        assert_eq!(r.map(|r| r.index), Ok(7));
        let sent = req.await.expect("request");
        assert!(
            sent.starts_with("GET /v1/routes?index=9&wait=300ms&consistency=stale HTTP/1.1\r\n"),
            "{sent}"
        );

        let policy: ChaosPolicy =
            serde_json::from_str(r#"{"name":"slow","toxics":[{"kind":{"refuse":{}}}]}"#).expect("policy");
        let (addr, req) = serve_once(answer("200 OK", r#"{"index":8,"revision":8}"#)).await;
        let r = AdminClient::new(addr).put_chaos(&policy, WriteOpts { cas: Some(0), request_id: None }).await;
        assert_eq!(r, Ok(WriteResult { index: 8, revision: 8 }));
        let sent = req.await.expect("request");
        assert!(sent.starts_with("PUT /v1/chaos/slow?cas=0 HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains(r#""name":"slow""#), "{sent}");
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
