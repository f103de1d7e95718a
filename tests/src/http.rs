//! Requests to the admin API for tests: [`Request`] builds any method,
//! headers and body and sends it through ferry-client's `AdminClient` (the
//! one HTTP client), keeping the whole answer; [`Raw`] sends what a
//! well-behaved client would not: partial, slow or malformed requests,
//! several on one connection.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use ferry_client::http::{AdminClient, RawRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Default longest wait for a whole exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to send with [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Duration,
}

impl Request {
    /// A request without a body.
    pub fn new(method: &'static str, path: impl Into<String>) -> Self {
        Self { method, path: path.into(), headers: Vec::new(), body: None, timeout: HTTP_TIMEOUT }
    }

    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new("GET", path)
    }

    /// `DELETE path`.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new("DELETE", path)
    }

    /// `PUT path` with `body` as JSON.
    pub fn put(path: impl Into<String>, body: &serde_json::Value) -> Self {
        Self::new("PUT", path).body(body.to_string().into_bytes())
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the raw body (sent with a `Content-Length`).
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    /// Sets the longest wait for the whole exchange.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `METHOD PATH`, for messages.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Sends the request to `addr` through [`AdminClient::send`] and reads
    /// the whole response, whatever its status.
    pub async fn send(&self, addr: SocketAddr) -> anyhow::Result<Response> {
        let mut req = RawRequest::new(self.method, self.path.clone());
        req.headers.clone_from(&self.headers);
        req.body.clone_from(&self.body);
        let r = AdminClient::new(addr)
            .with_timeout(self.timeout)
            .send(&req)
            .await
            .with_context(|| format!("{} on {addr}", self.line()))?;
        Ok(Response {
            status: r.status,
            headers: r.headers,
            body: String::from_utf8_lossy(&r.body).into_owned(),
        })
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// Parses a whole response (its body runs to the end of `raw`, or is
    /// chunked).
    pub fn parse(raw: &[u8]) -> anyhow::Result<Self> {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").context("response without a header end")?;
        let mut lines = head.lines();
        let status_line = lines.next().context("empty response")?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let body = if chunked { dechunk(body)? } else { body.to_string() };
        Ok(Self { status, headers, body })
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// `X-Ferry-Index`, if present and numeric.
    pub fn index(&self) -> Option<u64> {
        self.header("x-ferry-index").and_then(|v| v.parse().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("{} body is not JSON: {}", self.status, self.body))
    }

    /// The body as JSON, failing unless the status is `want`.
    pub fn expect(&self, want: u16) -> anyhow::Result<serde_json::Value> {
        anyhow::ensure!(self.status == want, "expected {want}, got {} {}", self.status, self.body);
        self.json()
    }

    /// `error.code` of an error body, if any.
    pub fn error_code(&self) -> Option<String> {
        self.json().ok()?.pointer("/error/code")?.as_str().map(str::to_string)
    }
}

/// Decodes a chunked body.
fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n").context("truncated chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(tail.get(..size).context("truncated chunk")?);
        rest = tail.get(size + 2..).context("truncated chunk end")?;
    }
}

/// A connection to send raw bytes on and read answers from.
#[derive(Debug)]
pub struct Raw {
    stream: TcpStream,
    /// Read and not yet returned.
    buf: Vec<u8>,
}

impl Raw {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self { stream: TcpStream::connect(addr).await?, buf: Vec::new() })
    }

    /// Sends `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        Ok(self.stream.write_all(bytes).await?)
    }

    /// Reads one answer, framed by its `Content-Length` (no body after a
    /// HEAD request when `head`, nor on a 1xx), within `limit`.
    pub async fn response(&mut self, head: bool, limit: Duration) -> anyhow::Result<Response> {
        tokio::time::timeout(limit, self.next_response(head))
            .await
            .with_context(|| format!("no whole answer within {limit:?}"))?
    }

    async fn next_response(&mut self, head: bool) -> anyhow::Result<Response> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let mut r = Response::parse(&self.buf[..end + 4])?;
                let len = match r.header("content-length") {
                    _ if head || (100..200).contains(&r.status) => 0,
                    Some(n) => n.parse::<usize>()?,
                    None => 0,
                };
                if self.buf.len() >= end + 4 + len {
                    r.body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                    self.buf.drain(..end + 4 + len);
                    return Ok(r);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(
                n > 0,
                "closed after {} bytes: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits until the server closes the connection (end of stream or a
    /// reset), within `limit`; returns what came before that and was not
    /// read yet.
    pub async fn closed(&mut self, limit: Duration) -> anyhow::Result<Vec<u8>> {
        let read_all = async {
            let mut chunk = [0u8; 8192];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(limit, read_all)
            .await
            .with_context(|| format!("the server did not close the connection within {limit:?}"))?;
        Ok(std::mem::take(&mut self.buf))
    }
}
